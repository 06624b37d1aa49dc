import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Either } from "effect"
import { HubSpot } from "../src/index.js"
import { deliveryEvent, leadOf, OPS_EMAIL, PORTAL, settings, T0, UUID_OF } from "./fixtures.js"

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  /** The exact payload, or the skip expected. */
  readonly expected: HubSpot.Payload | { readonly skip: string; readonly detail: string }
}

const ISO_T0 = "2026-04-24T08:00:00.000Z"
/** `printf '%s' 2026-04-02` → 2026-04-02T00:00:00Z in epoch ms (python: datetime(2026,4,2,tzinfo=utc)). */
const APRIL_2_MIDNIGHT_UTC = "1775088000000"

const cases: ReadonlyArray<Case> = [
  {
    scenario: "usr_9001 qualified_lead: contact upsert with the mapped traits, behavioural event with its properties",
    input: leadOf(),
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: { tl_plan: "team", lifecyclestage: "lead", tl_workspace_size: "42", country: "US" }
      },
      event: {
        eventName: `pe${PORTAL}_qualified_lead`,
        email: OPS_EMAIL,
        occurredAt: ISO_T0,
        properties: { company: "Acme Corp", value: 4800, currency: "USD" },
        uuid: UUID_OF.evt_lead_9001!
      }
    }
  },
  {
    scenario:
      "purchase: uuid from the order id (dedup key), first experiment first, email normalised, date trait at midnight UTC",
    input: deliveryEvent({
      name: "purchase",
      eventId: "evt_p1",
      dedupKey: "ord_1001",
      timestamp: T0 + 250,
      identity: {
        emails: ["  Ops@ACME-Corp.example "],
        traits: { plan: "pro", acquisition_channel: "paid_search", last_paid_at: "2026-04-02T15:30:00+02:00" }
      },
      properties: { value: 49.9, currency: "EUR", order_id: "ord_1001", plan: "pro" },
      context: {
        experiments: [
          { experiment_key: "pricing_page_v2", variant: "b" },
          { experiment_key: "onboarding_checklist", variant: "control" }
        ]
      }
    }),
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: { tl_plan: "pro", tl_acquisition_channel: "paid_search", tl_last_paid_at: APRIL_2_MIDNIGHT_UTC }
      },
      event: {
        eventName: `pe${PORTAL}_purchase`,
        email: OPS_EMAIL,
        occurredAt: "2026-04-24T08:00:00.250Z",
        properties: {
          experiment_key: "pricing_page_v2",
          variant: "b",
          value: 49.9,
          currency: "EUR",
          order_id: "ord_1001",
          plan: "pro"
        },
        uuid: UUID_OF.ord_1001!
      }
    }
  },
  {
    scenario: "subscription_renewed: the business key (subscription + period) is the uuid's name",
    input: deliveryEvent({
      name: "subscription_renewed",
      eventId: "evt_r1",
      dedupKey: "subscription_renewed:sub_77:2026-04",
      identity: { emails: [OPS_EMAIL] },
      properties: { subscription_id: "sub_77", period: "2026-04", value: 49, currency: "EUR" }
    }),
    expected: {
      contact: { id: OPS_EMAIL, idProperty: "email", properties: {} },
      event: {
        eventName: `pe${PORTAL}_subscription_renewed`,
        email: OPS_EMAIL,
        occurredAt: ISO_T0,
        properties: { subscription_id: "sub_77", period: "2026-04", value: 49, currency: "EUR" },
        uuid: UUID_OF["subscription_renewed:sub_77:2026-04"]!
      }
    }
  },
  {
    scenario: "identity traits first, the event's own user_properties for traits the identity does not have",
    input: deliveryEvent({
      name: "sign_up",
      eventId: "evt_signup_1",
      identity: { emails: [OPS_EMAIL], traits: { plan: "team" } },
      user_properties: { plan: "pro", country: "DE" },
      properties: { method: "google" }
    }),
    expected: {
      contact: { id: OPS_EMAIL, idProperty: "email", properties: { tl_plan: "team", country: "DE" } },
      event: {
        eventName: `pe${PORTAL}_sign_up`,
        email: OPS_EMAIL,
        occurredAt: ISO_T0,
        properties: { method: "google" },
        uuid: UUID_OF.evt_signup_1!
      }
    }
  },
  {
    scenario: "the event's own user.email wins over the identity's emails",
    input: deliveryEvent({
      name: "view_pricing",
      identity: { emails: ["other@acme-corp.example"], traits: { plan: "team" } },
      user: { email: " Dana@Acme-Corp.example" }
    }),
    expected: { contact: { id: "dana@acme-corp.example", idProperty: "email", properties: { tl_plan: "team" } } }
  },
  {
    scenario: "an invalid identity email is passed over for the next one",
    input: deliveryEvent({
      name: "view_pricing",
      identity: { emails: ["not-an-email", OPS_EMAIL], traits: { country: "US" } }
    }),
    expected: { contact: { id: OPS_EMAIL, idProperty: "email", properties: { country: "US" } } }
  },
  {
    scenario: "an event without a behavioural event but with traits: contact upsert only",
    input: deliveryEvent({ name: "view_pricing", identity: { emails: [OPS_EMAIL], traits: { plan: "team" } } }),
    expected: { contact: { id: OPS_EMAIL, idProperty: "email", properties: { tl_plan: "team" } } }
  },
  {
    scenario: "events {}: a purchase is a contact upsert only",
    input: leadOf({ name: "purchase", dedupKey: "ord_1001" }),
    settings: { events: {} },
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: { tl_plan: "team", lifecyclestage: "lead", tl_workspace_size: "42", country: "US" }
      }
    }
  },
  {
    scenario: "trait values: null clears, arrays join with ;, unusable numbers and impossible dates are left out",
    input: deliveryEvent({
      name: "view_pricing",
      identity: {
        emails: [OPS_EMAIL],
        traits: {
          plan: ["team", "sso"],
          lifecycle_stage: null,
          workspace_size: "12 seats",
          last_paid_at: "2026-02-30",
          acquisition_channel: { source: "ads" },
          country: "US"
        }
      }
    }),
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: { tl_plan: "team;sso", lifecyclestage: "", country: "US" }
      }
    }
  },
  {
    scenario: "typed properties: epoch-ms date → its UTC day at midnight, bool, datetime in epoch ms, numeric strings",
    input: deliveryEvent({
      name: "view_pricing",
      identity: {
        emails: [OPS_EMAIL],
        traits: { last_paid_at: 1775140200000, beta: true, renewed_at: "2026-04-02T00:00:00Z", seats: " 12 " }
      }
    }),
    settings: {
      properties: {
        last_paid_at: "tl_last_paid_at:date",
        beta: "tl_beta:bool",
        renewed_at: "tl_renewed_at:datetime",
        seats: "tl_seats:number"
      }
    },
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: {
          tl_last_paid_at: APRIL_2_MIDNIGHT_UTC,
          tl_beta: "true",
          tl_renewed_at: APRIL_2_MIDNIGHT_UTC,
          tl_seats: "12"
        }
      }
    }
  },
  {
    scenario: "event properties: names made HubSpot-safe, values cut to 50 (URLs 200), objects and arrays left out",
    input: deliveryEvent({
      name: "qualified_lead",
      identity: { emails: [OPS_EMAIL] },
      properties: {
        "Order ID": "o-1",
        "2fa": true,
        nested: { a: 1 },
        list: [1, 2],
        note: "n".repeat(60),
        page_url: `https://acme-corp.example/${"p".repeat(250)}`,
        "": "dropped",
        "__": "dropped too",
        ratio: Number.NaN
      }
    }),
    expected: {
      contact: { id: OPS_EMAIL, idProperty: "email", properties: {} },
      event: {
        eventName: `pe${PORTAL}_qualified_lead`,
        email: OPS_EMAIL,
        occurredAt: ISO_T0,
        properties: {
          order_id: "o-1",
          p_2fa: true,
          note: "n".repeat(50),
          page_url: `https://acme-corp.example/${"p".repeat(200 - 26)}`
        },
        uuid: UUID_OF.evt_lead_9001!
      }
    }
  },
  {
    scenario: "fully-qualified event names are sent as configured",
    input: leadOf(),
    settings: { events: { qualified_lead: `pe${PORTAL}_sql_reached` } },
    expected: {
      contact: {
        id: OPS_EMAIL,
        idProperty: "email",
        properties: { tl_plan: "team", lifecyclestage: "lead", tl_workspace_size: "42", country: "US" }
      },
      event: {
        eventName: `pe${PORTAL}_sql_reached`,
        email: OPS_EMAIL,
        occurredAt: ISO_T0,
        properties: { company: "Acme Corp", value: 4800, currency: "USD" },
        uuid: UUID_OF.evt_lead_9001!
      }
    }
  },
  {
    scenario: "no email known for the person → invalid",
    input: leadOf({ identity: { userId: "usr_9001", emails: ["not-an-email"], traits: { plan: "team" } } }),
    expected: {
      skip: "invalid",
      detail:
        "no email known for this person: HubSpot contacts are upserted by email (no usable user.email or identity email)"
    }
  },
  {
    scenario: "neither a behavioural event nor a trait to write → not_mapped",
    input: deliveryEvent({ name: "view_pricing", identity: { emails: [OPS_EMAIL] } }),
    expected: {
      skip: "not_mapped",
      detail: "no HubSpot behavioural event for \"view_pricing\" (events maps purchase, qualified_lead, sign_up, " +
        "start_trial, subscription_renewed) and no mapped trait to write (properties maps acquisition_channel, " +
        "country, last_paid_at, lifecycle_stage, plan, workspace_size)"
    }
  }
]

describe("HubSpot.transform", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = HubSpot.transform(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result))
        if (Either.isLeft(result)) {
          assert.deepStrictEqual({ skip: result.left.reason, detail: result.left.detail }, c.expected)
        }
      } else {
        assert.deepStrictEqual(Either.getOrUndefined(result), c.expected)
      }
    })
  }

  it("keeps at most 50 event properties, the experiment metadata first", () => {
    const properties = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`p${String(i).padStart(2, "0")}`, i]))
    const result = HubSpot.transform(
      deliveryEvent({
        identity: { emails: [OPS_EMAIL] },
        properties,
        context: { experiments: [{ experiment_key: "exp", variant: "a" }] }
      }),
      settings()
    )
    const sent = Either.isRight(result) ? result.right.event?.properties ?? {} : {}
    assert.strictEqual(Object.keys(sent).length, 50)
    assert.deepStrictEqual(Object.keys(sent).slice(0, 3), ["experiment_key", "variant", "p00"])
    assert.strictEqual(Object.keys(sent).at(-1), "p47")
  })
})

describe("HubSpot helpers", () => {
  it("uuidV5 matches Python's uuid.uuid5 for the same namespace and name (UTF-8)", () => {
    for (const [key, uuid] of Object.entries(UUID_OF)) assert.strictEqual(HubSpot.uuidV5(key), uuid)
  })

  it("midnightUtc: the calendar date as written; epoch ms → its UTC day", () => {
    assert.strictEqual(HubSpot.midnightUtc("2026-04-02"), 1775088000000)
    assert.strictEqual(HubSpot.midnightUtc("2026-04-02T23:30:00-05:00"), 1775088000000)
    assert.strictEqual(HubSpot.midnightUtc(1775140200000), 1775088000000)
    assert.isUndefined(HubSpot.midnightUtc("2026-02-30"))
    assert.isUndefined(HubSpot.midnightUtc("April 2"))
  })

  it("msUntilDailyReset: midnight in the account's time zone, DST-aware (vectors from Python zoneinfo)", () => {
    assert.strictEqual(HubSpot.msUntilDailyReset(T0, "America/New_York"), 72_000_000)
    assert.strictEqual(HubSpot.msUntilDailyReset(T0, "Europe/Berlin"), 50_400_000)
    assert.strictEqual(HubSpot.msUntilDailyReset(T0, "UTC"), 57_600_000)
    assert.strictEqual(HubSpot.msUntilDailyReset(T0, "Asia/Kolkata"), 37_800_000)
    // 2026-03-08 01:00 EST: the day loses an hour at 02:00.
    assert.strictEqual(HubSpot.msUntilDailyReset(Date.UTC(2026, 2, 8, 6), "America/New_York"), 79_200_000)
    // 2026-11-01 01:00 EDT: the day gains an hour.
    assert.strictEqual(HubSpot.msUntilDailyReset(Date.UTC(2026, 10, 1, 5), "America/New_York"), 86_400_000)
    assert.strictEqual(HubSpot.msUntilDailyReset(Date.UTC(2026, 2, 29, 0, 30), "Europe/Berlin"), 77_400_000)
  })

  it("parseRateLimit reads the X-HubSpot-RateLimit-* headers; scrub masks emails and the token", () => {
    assert.deepStrictEqual(
      HubSpot.parseRateLimit({
        "x-hubspot-ratelimit-daily": "250000",
        "x-hubspot-ratelimit-daily-remaining": "0",
        "x-hubspot-ratelimit-interval-milliseconds": "10000",
        "x-hubspot-ratelimit-max": "100",
        "x-hubspot-ratelimit-remaining": "97"
      }),
      { daily: 250000, dailyRemaining: 0, intervalMs: 10000, max: 100, remaining: 97 }
    )
    assert.deepStrictEqual(HubSpot.parseRateLimit({ "x-hubspot-ratelimit-max": "n/a" }), {})
    assert.strictEqual(
      HubSpot.scrub("Email address dana@acme-corp.example is invalid (token pat-xyz)", "pat-xyz"),
      "Email address d***@acme-corp.example is invalid (token [redacted])"
    )
  })
})
