/**
 * `MetaCapi.transform`: canonical event (+ identity) → exact wire event. Every hashed field is written as
 * `SHA["<normalised value>"]`, the table in fixtures.ts computed with `printf '%s' VALUE | sha256sum`.
 */
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Either } from "effect"
import { MetaCapi } from "../src/index.js"
import { deliveryEvent, janeDoe, settings, SHA, T0 } from "./fixtures.js"

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  /** The exact wire event, or the skip expected. */
  readonly expected: MetaCapi.MetaServerEvent | { readonly skip: string; readonly detail: string }
}

const UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15"
const T0_SECONDS = 1777017600

const cases: ReadonlyArray<Case> = [
  {
    scenario: "fixture person usr_8421, website purchase: em from Jane.Doe@Example.com, dedup key = order id",
    input: janeDoe({
      name: "purchase",
      eventId: "evt_5c1f0e",
      dedupKey: "ord_1001",
      properties: { value: 129, currency: "USD", order_id: "ord_1001", quantity: 2, product_id: "sku_seat" },
      context: { ip: "203.0.113.7", user_agent: UA, page_url: "https://shop.example.com/checkout/done" }
    }),
    expected: {
      event_name: "Purchase",
      event_time: T0_SECONDS,
      event_id: "ord_1001",
      action_source: "website",
      event_source_url: "https://shop.example.com/checkout/done",
      user_data: {
        em: [SHA["jane.doe@example.com"]],
        external_id: SHA["usr_8421"],
        client_ip_address: "203.0.113.7",
        client_user_agent: UA
      },
      custom_data: {
        value: 129,
        currency: "USD",
        order_id: "ord_1001",
        content_ids: ["sku_seat"],
        contents: [{ id: "sku_seat", quantity: 2 }],
        content_type: "product"
      },
      data_processing_options: []
    }
  },
  {
    scenario: "DESTINATIONS.md vectors: John_Smith@gmail.com, (650)555-1212 with US, Mary, Valéry",
    input: deliveryEvent({
      name: "sign_up",
      eventId: "evt_signup_1",
      user: {
        email: "John_Smith@gmail.com",
        phone: "(650)555-1212",
        country: "US",
        first_name: "Mary",
        last_name: "Valéry"
      },
      identity: { emails: ["John_Smith@gmail.com"], phones: ["(650)555-1212"] }
    }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_signup_1",
      action_source: "system_generated",
      user_data: {
        em: [SHA["john_smith@gmail.com"]],
        ph: [SHA["16505551212"]],
        fn: SHA["mary"],
        ln: SHA["valéry"],
        country: SHA["us"]
      },
      data_processing_options: []
    }
  },
  {
    scenario: "all of the person's emails and phones; join-key hashes deduplicated with the raw ones",
    input: janeDoe({
      name: "start_trial",
      eventId: "evt_trial_1",
      identity: {
        emails: ["Jane.Doe@Example.com", " jane@WORK.example "],
        // The identity graph's join keys: the first is Jane.Doe@Example.com's, the second a phone seen hashed only.
        emailSha256: [SHA["jane.doe@example.com"]],
        phoneSha256: [SHA["4915123456789"].toUpperCase()]
      }
    }),
    expected: {
      event_name: "StartTrial",
      event_time: T0_SECONDS,
      event_id: "evt_trial_1",
      action_source: "system_generated",
      user_data: {
        em: [SHA["jane.doe@example.com"], SHA["jane@work.example"]],
        ph: [SHA["4915123456789"]],
        external_id: SHA["usr_8421"]
      },
      data_processing_options: []
    }
  },
  {
    scenario: "every user field normalised and hashed; national phone takes user.country",
    input: deliveryEvent({
      name: "qualified_lead",
      eventId: "evt_lead_1",
      user_id: " User 123 ",
      user: {
        first_name: " Jane ",
        last_name: "DOE",
        phone: "650 555 1212",
        city: "San Francisco",
        region: "California",
        postal_code: "94035-1234",
        country: "United States",
        date_of_birth: "12/31/1990",
        gender: "Female"
      },
      properties: { value: 500, currency: "eur", company: "Acme" }
    }),
    expected: {
      event_name: "Lead",
      event_time: T0_SECONDS,
      event_id: "evt_lead_1",
      action_source: "system_generated",
      user_data: {
        ph: [SHA["16505551212"]],
        fn: SHA["jane"],
        ln: SHA["doe"],
        db: SHA["19901231"],
        ge: SHA["f"],
        ct: SHA["sanfrancisco"],
        st: SHA["ca"],
        zp: SHA["94035"],
        country: SHA["us"],
        external_id: SHA["user123"]
      },
      custom_data: { value: 500, currency: "EUR" },
      data_processing_options: []
    }
  },
  {
    scenario: "fbc passed through unhashed with fbp; ip + user agent without page URL → system_generated",
    input: janeDoe({
      name: "sign_up",
      eventId: "evt_signup_2",
      identity: {
        clickIds: {
          fbc: "fb.1.1776900000000.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
          fbp: "fb.1.1776800000000.1098115397",
          fbclid: "ignored-when-fbc-is-known"
        }
      },
      context: { ip: "2001:db8::7", user_agent: UA }
    }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_signup_2",
      action_source: "system_generated",
      user_data: {
        em: [SHA["jane.doe@example.com"]],
        external_id: SHA["usr_8421"],
        client_ip_address: "2001:db8::7",
        client_user_agent: UA,
        fbc: "fb.1.1776900000000.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
        fbp: "fb.1.1776800000000.1098115397"
      },
      data_processing_options: []
    }
  },
  {
    scenario: "only fbclid known: fbc built with the click time (first seen), not the event or send time",
    input: deliveryEvent({
      name: "start_trial",
      eventId: "evt_trial_2",
      device_id: "web_91f3",
      timestamp: T0,
      identity: { clickIds: { fbclid: "IwAR0abcDEF" }, clickIdsSeenAt: { fbclid: 1776931200123 } }
    }),
    expected: {
      event_name: "StartTrial",
      event_time: T0_SECONDS,
      event_id: "evt_trial_2",
      action_source: "system_generated",
      user_data: { fbc: "fb.1.1776931200123.IwAR0abcDEF" },
      data_processing_options: []
    }
  },
  {
    scenario: "subscription_renewed → Subscribe: subscription_id in user_data (clear), money in custom_data",
    input: janeDoe({
      name: "subscription_renewed",
      eventId: "evt_renew_1",
      dedupKey: "subscription_renewed:sub_9:2026-04",
      timestamp: T0 + 999,
      properties: { value: 19.5, currency: "USD", subscription_id: "sub_9", period: "2026-04" }
    }),
    expected: {
      event_name: "Subscribe",
      event_time: T0_SECONDS,
      event_id: "subscription_renewed:sub_9:2026-04",
      action_source: "system_generated",
      user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"], subscription_id: "sub_9" },
      custom_data: { value: 19.5, currency: "USD" },
      data_processing_options: []
    }
  },
  {
    scenario: "LDU region US/CA: a Californian's event carries [\"LDU\"], country 1, state 1000",
    settings: { lduRegions: [{ country: "US", state: "CA" }] },
    input: janeDoe({ eventId: "evt_ldu_1", user: { country: "us", region: "California" } }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_ldu_1",
      action_source: "system_generated",
      user_data: {
        em: [SHA["jane.doe@example.com"]],
        st: SHA["ca"],
        country: SHA["us"],
        external_id: SHA["usr_8421"]
      },
      data_processing_options: ["LDU"],
      data_processing_options_country: 1,
      data_processing_options_state: 1000
    }
  },
  {
    scenario: "LDU region US (whole country): a Texan's event → country 1, state 0 (Meta geolocates)",
    settings: { lduRegions: [{ country: "us" }] },
    input: janeDoe({ eventId: "evt_ldu_2", user: { country: "US", region: "TX" } }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_ldu_2",
      action_source: "system_generated",
      user_data: {
        em: [SHA["jane.doe@example.com"]],
        st: SHA["tx"],
        country: SHA["us"],
        external_id: SHA["usr_8421"]
      },
      data_processing_options: ["LDU"],
      data_processing_options_country: 1,
      data_processing_options_state: 0
    }
  },
  {
    scenario: "outside the LDU regions: data_processing_options [] is still sent",
    settings: { lduRegions: [{ country: "US", state: "CA" }] },
    input: janeDoe({ eventId: "evt_ldu_3", user: { country: "DE" } }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_ldu_3",
      action_source: "system_generated",
      user_data: { em: [SHA["jane.doe@example.com"]], country: SHA["de"], external_id: SHA["usr_8421"] },
      data_processing_options: []
    }
  },
  {
    scenario: "lduWhenLocationUnknown: no country → LDU with country 0, state 0",
    settings: { lduRegions: [{ country: "US", state: "CA" }], lduWhenLocationUnknown: true },
    input: janeDoe({ eventId: "evt_ldu_4" }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_ldu_4",
      action_source: "system_generated",
      user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"] },
      data_processing_options: ["LDU"],
      data_processing_options_country: 0,
      data_processing_options_state: 0
    }
  },
  {
    scenario: "custom mapping and action source per event; a page URL that is not http(s) is not sent",
    settings: { eventMapping: { view_pricing: "ViewContent" }, actionSources: { view_pricing: "chat" } },
    input: janeDoe({
      name: "view_pricing",
      eventId: "evt_vp_1",
      user: { email_sha256: SHA["jane.doe@example.com"].toUpperCase() },
      context: { page_url: "javascript:alert(1)", user_agent: UA }
    }),
    expected: {
      event_name: "ViewContent",
      event_time: T0_SECONDS,
      event_id: "evt_vp_1",
      action_source: "chat",
      user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"], client_user_agent: UA },
      data_processing_options: []
    }
  },
  {
    scenario: "one experiment in context.experiments → custom_data experiment_key and variant (custom properties)",
    input: janeDoe({
      name: "purchase",
      eventId: "evt_exp_1",
      dedupKey: "ord_2002",
      properties: { value: 49, currency: "EUR", order_id: "ord_2002" },
      context: { experiments: [{ experiment_key: "checkout_redesign", variant: "treatment" }] }
    }),
    expected: {
      event_name: "Purchase",
      event_time: T0_SECONDS,
      event_id: "ord_2002",
      action_source: "system_generated",
      user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"] },
      custom_data: {
        value: 49,
        currency: "EUR",
        order_id: "ord_2002",
        experiment_key: "checkout_redesign",
        variant: "treatment"
      },
      data_processing_options: []
    }
  },
  {
    scenario: "several experiments → the first as experiment_key/variant plus all of them as experiments",
    input: janeDoe({
      name: "sign_up",
      eventId: "evt_exp_2",
      context: {
        experiments: [
          { experiment_key: "onboarding_v2", variant: "control" },
          { experiment_key: "pricing_page", variant: "annual_first" }
        ]
      }
    }),
    expected: {
      event_name: "CompleteRegistration",
      event_time: T0_SECONDS,
      event_id: "evt_exp_2",
      action_source: "system_generated",
      user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"] },
      custom_data: {
        experiment_key: "onboarding_v2",
        variant: "control",
        experiments: [
          { experiment_key: "onboarding_v2", variant: "control" },
          { experiment_key: "pricing_page", variant: "annual_first" }
        ]
      },
      data_processing_options: []
    }
  },
  {
    scenario: "unmapped event → not_mapped naming the event",
    input: janeDoe({ name: "view_pricing" }),
    expected: { skip: "not_mapped", detail: "\"view_pricing\" has no Meta event in eventMapping" }
  },
  {
    scenario: "no customer information parameter (device id only) → invalid",
    input: deliveryEvent({ name: "sign_up", device_id: "web_91f3", context: { user_agent: UA } }),
    expected: {
      skip: "invalid",
      detail: "no usable customer information for Meta: needs email, phone, user id, fbc/fbp, subscription_id, " +
        "IP address with user agent, or first + last name with zip (or city + state)"
    }
  },
  {
    scenario: "website configured but no user agent → invalid (not silently re-labelled)",
    settings: { actionSources: { sign_up: "website" } },
    input: janeDoe({ context: { page_url: "https://app.example.com/welcome" } }),
    expected: {
      skip: "invalid",
      detail: "action_source website needs context.page_url (http/https) and context.user_agent; sign_up lacks " +
        "user_agent"
    }
  },
  {
    scenario: "an event mapped to Purchase without value/currency → invalid",
    settings: { eventMapping: { sign_up: "Purchase" } },
    input: janeDoe({}),
    expected: { skip: "invalid", detail: "Meta Purchase events need properties.value and properties.currency" }
  }
]

describe("MetaCapi.transform", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = MetaCapi.transform(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result), JSON.stringify(result))
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left.reason, c.expected.skip)
          assert.strictEqual(result.left.detail, c.expected.detail)
        }
      } else {
        assert.deepStrictEqual(Either.getOrThrow(result), c.expected)
        // The wire order of keys is part of the exact payload.
        assert.strictEqual(JSON.stringify(Either.getOrThrow(result)), JSON.stringify(c.expected))
      }
    })
  }

  it("event_time is whole seconds (floor), never milliseconds", () => {
    const out = Either.getOrThrow(MetaCapi.transform(janeDoe({ timestamp: 1777017600999 }), settings()))
    assert.strictEqual(out.event_time, 1777017600)
  })
})
