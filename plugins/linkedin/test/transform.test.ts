import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Either } from "effect"
import { LinkedIn } from "../src/index.js"
import {
  deliveryEvent,
  leadOf,
  LI_FAT_ID,
  OPS_EMAIL_SHA256,
  RULES,
  SECOND_EMAIL_SHA256,
  settings,
  T0
} from "./fixtures.js"

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  /** The exact wire element, or the skip expected. */
  readonly expected: LinkedIn.ConversionEvent | { readonly skip: string; readonly detail: string }
}

/** `ops@acme-corp.example` (normalised from every spelling below) → its SHA-256, computed with sha256sum. */
const opsEmail = { idType: "SHA256_EMAIL", idValue: OPS_EMAIL_SHA256 } as const
const fatId = { idType: "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", idValue: LI_FAT_ID } as const
const danaAtAcme = { firstName: "Dana", lastName: "Whitfield", companyName: "Acme Corp", countryCode: "US" } as const

const cases: ReadonlyArray<Case> = [
  {
    scenario: "usr_9001 qualified_lead: email hash, li_fat_id, names, company, country; no value → no conversionValue",
    input: leadOf(),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001004",
      conversionHappenedAt: 1777017600000,
      eventId: "evt_lead_9001",
      user: { userIds: [opsEmail, fatId], userInfo: danaAtAcme }
    }
  },
  {
    scenario: "qualified_lead with a value: amount as a decimal string with one decimal kept (4800 → \"4800.0\")",
    input: leadOf({ properties: { company: "Acme Corp", value: 4800, currency: "USD" } }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001004",
      conversionHappenedAt: 1777017600000,
      conversionValue: { currencyCode: "USD", amount: "4800.0" },
      eventId: "evt_lead_9001",
      user: { userIds: [opsEmail, fatId], userInfo: danaAtAcme }
    }
  },
  {
    scenario: "purchase 49.9 EUR: eventId is the order id (dedup key); rule given as a bare id becomes the URN",
    input: deliveryEvent({
      name: "purchase",
      eventId: "evt_p1",
      dedupKey: "ord_1001",
      timestamp: T0 + 250,
      identity: { emails: ["  Ops@ACME-Corp.example "] },
      properties: { value: 49.9, currency: "EUR", order_id: "ord_1001" }
    }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001001",
      conversionHappenedAt: 1777017600250,
      conversionValue: { currencyCode: "EUR", amount: "49.9" },
      eventId: "ord_1001",
      user: { userIds: [opsEmail] }
    }
  },
  {
    scenario: "purchase of 0.1 + 0.2: no float artefacts (\"0.3\")",
    input: deliveryEvent({
      name: "purchase",
      dedupKey: "ord_2",
      identity: { clickIds: { li_fat_id: LI_FAT_ID } },
      properties: { value: 0.1 + 0.2, currency: "GBP", order_id: "ord_2" }
    }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001001",
      conversionHappenedAt: 1777017600000,
      conversionValue: { currencyCode: "GBP", amount: "0.3" },
      eventId: "ord_2",
      user: { userIds: [fatId] }
    }
  },
  {
    scenario: "every email of the person; an existing hash (upper case) passes through lowercased, duplicates dropped",
    input: deliveryEvent({
      name: "sign_up",
      eventId: "evt_su_1",
      identity: {
        emails: ["ops@acme-corp.example", "Second@Acme-Corp.example"],
        emailSha256: [OPS_EMAIL_SHA256.toUpperCase(), SECOND_EMAIL_SHA256]
      },
      user: { email_sha256: OPS_EMAIL_SHA256 }
    }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001002",
      conversionHappenedAt: 1777017600000,
      eventId: "evt_su_1",
      user: { userIds: [opsEmail, { idType: "SHA256_EMAIL", idValue: SECOND_EMAIL_SHA256 }] }
    }
  },
  {
    scenario: "li_fat_id from the event's click ids when the identity graph has none; an unusable email is left out",
    input: deliveryEvent({
      name: "start_trial",
      eventId: "evt_st_1",
      identity: { emails: ["not-an-email"] },
      context: { click_ids: { li_fat_id: LI_FAT_ID } }
    }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001003",
      conversionHappenedAt: 1777017600000,
      eventId: "evt_st_1",
      user: { userIds: [fatId] }
    }
  },
  {
    scenario: "no identifier but first + last name + company: sent on userInfo alone; country name → code; job title",
    input: deliveryEvent({
      name: "qualified_lead",
      eventId: "evt_lead_2",
      user: { first_name: " Dana ", last_name: "Whitfield", country: "United States" },
      user_properties: { company: "Acme Corp", job_title: "Head of Operations" }
    }),
    expected: {
      conversion: "urn:lla:llaPartnerConversion:7001004",
      conversionHappenedAt: 1777017600000,
      eventId: "evt_lead_2",
      user: {
        userIds: [],
        userInfo: {
          firstName: "Dana",
          lastName: "Whitfield",
          companyName: "Acme Corp",
          title: "Head of Operations",
          countryCode: "US"
        }
      }
    }
  },
  {
    scenario: "names without company and no identifier: invalid, the detail says what is missing",
    input: deliveryEvent({ name: "qualified_lead", user: { first_name: "Dana", last_name: "Whitfield" } }),
    expected: {
      skip: "invalid",
      detail:
        "LinkedIn needs an email or li_fat_id, or first name + last name + company: no usable email or li_fat_id, " +
        "and no company"
    }
  },
  {
    scenario: "nothing at all: invalid",
    input: deliveryEvent({ name: "sign_up", identity: { userId: "usr_1", emails: ["n/a"] } }),
    expected: {
      skip: "invalid",
      detail:
        "LinkedIn needs an email or li_fat_id, or first name + last name + company: no usable email or li_fat_id, " +
        "and no first name, last name, company"
    }
  },
  {
    scenario: "an event without a conversion rule: not_mapped, naming the mapped events",
    input: leadOf({ name: "view_pricing" }),
    expected: {
      skip: "not_mapped",
      detail:
        "no LinkedIn conversion rule for \"view_pricing\" (conversionRules maps purchase, qualified_lead, sign_up, " +
        "start_trial, subscription_renewed)"
    }
  },
  {
    scenario: "with no conversion rules configured every event is not_mapped",
    input: leadOf(),
    settings: { conversionRules: {} },
    expected: {
      skip: "not_mapped",
      detail: "no LinkedIn conversion rule for \"qualified_lead\" (conversionRules maps no events)"
    }
  },
  {
    scenario: "a negative value (refund-like) cannot be a LinkedIn amount: invalid",
    input: leadOf({ name: "purchase", properties: { value: -10, currency: "USD", order_id: "ord_3" } }),
    expected: { skip: "invalid", detail: "value -10 cannot be sent as a LinkedIn amount (must be ≥ 0)" }
  },
  {
    scenario: "a value without a currency: invalid",
    input: leadOf({ name: "purchase", properties: { value: 10 } }),
    expected: { skip: "invalid", detail: "a value needs an ISO 4217 currency, got null" }
  }
]

describe("LinkedIn.transform", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = LinkedIn.transform(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result), "expected a skip")
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left.reason, c.expected.skip)
          assert.strictEqual(result.left.detail, c.expected.detail)
        }
      } else {
        assert.isTrue(Either.isRight(result), Either.isLeft(result) ? result.left.detail : "")
        if (Either.isRight(result)) assert.deepStrictEqual(result.right, c.expected)
      }
    })
  }

  it("the wire JSON has no conversionValue key at all without a value, and keeps the user's raw email out", () => {
    const json = JSON.stringify(Either.getOrThrow(LinkedIn.transform(leadOf(), settings())))
    assert.isFalse(json.includes("conversionValue"))
    assert.isFalse(json.includes("ops@acme-corp.example"))
    assert.isTrue(json.includes(OPS_EMAIL_SHA256))
  })

  it("uses the rules from settings: the same event under another rule id", () => {
    const s = settings({ conversionRules: { ...RULES, qualified_lead: "123456789" } })
    const out = Either.getOrThrow(LinkedIn.transform(leadOf(), s))
    assert.strictEqual(out.conversion, "urn:lla:llaPartnerConversion:123456789")
  })
})

describe("LinkedIn.formatAmount", () => {
  const table: ReadonlyArray<readonly [number, string | undefined]> = [
    [49.9, "49.9"],
    [129, "129.0"],
    [0, "0.0"],
    [100.05, "100.05"],
    [1500, "1500.0"],
    [0.1 + 0.2, "0.3"],
    [19.999999999, "20.0"],
    [1234.5678, "1234.5678"],
    [0.000001, "0.000001"],
    [999999999.99, "999999999.99"],
    [-0.01, undefined],
    [Number.NaN, undefined],
    [Number.POSITIVE_INFINITY, undefined],
    [1e15, undefined]
  ]
  for (const [value, expected] of table) {
    it(`${value} → ${expected === undefined ? "unusable" : JSON.stringify(expected)}`, () => {
      assert.strictEqual(LinkedIn.formatAmount(value), expected)
    })
  }
})
