import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Either } from "effect"
import { Amplitude } from "../src/index.js"
import { deliveryEvent, settings, T0 } from "./fixtures.js"

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  /** The exact wire event, or the skip detail expected. */
  readonly expected: Amplitude.AmplitudeEvent | { readonly skip: string }
}

const long = (c: string, n: number) => c.repeat(n)

const cases: ReadonlyArray<Case> = [
  {
    scenario: "purchase with revenue; dedup key is the order id; user properties filtered by the allowlist",
    input: deliveryEvent({
      name: "purchase",
      eventId: "evt_5c1f0e",
      dedupKey: "ord_1001",
      user_id: "usr_8421",
      device_id: "web_91f3",
      identity: { userId: "usr_8421", deviceId: "web_91f3" },
      properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      user_properties: { plan: "pro", country: "DE", email: "jane.doe@example.com", favourite_colour: "teal" },
      context: { source: "server", ip: "203.0.113.7", user_agent: "Mozilla/5.0 (X11; Linux x86_64)" }
    }),
    expected: {
      event_type: "purchase",
      user_id: "usr_8421",
      device_id: "web_91f3",
      time: 1777017600000,
      insert_id: "ord_1001",
      event_properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      user_properties: { plan: "pro", country: "DE" },
      price: 129,
      quantity: 1,
      revenue: 129,
      revenueType: "purchase",
      ip: "203.0.113.7",
      library: "tracklayer"
    }
  },
  {
    scenario: "purchase of several units: revenue is the order value, price left out, productId kept",
    input: deliveryEvent({
      name: "purchase",
      dedupKey: "ord_2002",
      user_id: "usr_8421",
      properties: { value: 100, currency: "EUR", order_id: "ord_2002", quantity: 3, product_id: "sku_seat" }
    }),
    expected: {
      event_type: "purchase",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "ord_2002",
      event_properties: { value: 100, currency: "EUR", order_id: "ord_2002", quantity: 3, product_id: "sku_seat" },
      quantity: 3,
      revenue: 100,
      revenueType: "purchase",
      productId: "sku_seat",
      library: "tracklayer"
    }
  },
  {
    scenario: "view_pricing with one experiment: plain experiment_key / variant, no revenue",
    input: deliveryEvent({
      name: "view_pricing",
      eventId: "evt_pricing_1",
      device_id: "web_91f3",
      properties: { plan: "pro" },
      context: { experiments: [{ experiment_key: "paywall_copy", variant: "b" }] }
    }),
    expected: {
      event_type: "view_pricing",
      device_id: "web_91f3",
      time: 1777017600000,
      insert_id: "evt_pricing_1",
      event_properties: { plan: "pro", experiment_key: "paywall_copy", variant: "b" },
      library: "tracklayer"
    }
  },
  {
    scenario: "view_pricing with two experiments: first as plain keys, all in `experiments`",
    input: deliveryEvent({
      name: "view_pricing",
      eventId: "evt_pricing_2",
      user_id: "usr_8421",
      context: {
        experiments: [{ experiment_key: "paywall_copy", variant: "b" }, {
          experiment_key: "annual_toggle",
          variant: "on"
        }]
      }
    }),
    expected: {
      event_type: "view_pricing",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "evt_pricing_2",
      event_properties: {
        experiment_key: "paywall_copy",
        variant: "b",
        experiments: [{ experiment_key: "paywall_copy", variant: "b" }, {
          experiment_key: "annual_toggle",
          variant: "on"
        }]
      },
      library: "tracklayer"
    }
  },
  {
    scenario: "refund: negative price and revenue, revenueType refund",
    input: deliveryEvent({
      name: "refund",
      eventId: "evt_refund_1",
      dedupKey: "refund:ord_1001",
      user_id: "usr_8421",
      properties: { value: 49.9, currency: "EUR", order_id: "ord_1001" }
    }),
    expected: {
      event_type: "refund",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "refund:ord_1001",
      event_properties: { value: 49.9, currency: "EUR", order_id: "ord_1001" },
      price: -49.9,
      quantity: 1,
      revenue: -49.9,
      revenueType: "refund",
      library: "tracklayer"
    }
  },
  {
    scenario: "subscription_renewed: revenueType renewal",
    input: deliveryEvent({
      name: "subscription_renewed",
      dedupKey: "subscription_renewed:sub_9:2026-04",
      user_id: "usr_8421",
      properties: { value: 19, currency: "USD", subscription_id: "sub_9", period: "2026-04" }
    }),
    expected: {
      event_type: "subscription_renewed",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "subscription_renewed:sub_9:2026-04",
      event_properties: { value: 19, currency: "USD", subscription_id: "sub_9", period: "2026-04" },
      price: 19,
      quantity: 1,
      revenue: 19,
      revenueType: "renewal",
      library: "tracklayer"
    }
  },
  {
    scenario: "qualified_lead with a value: pipeline value stays a property, no revenue",
    input: deliveryEvent({
      name: "qualified_lead",
      eventId: "evt_lead",
      user_id: "usr_8421",
      properties: { value: 5000, currency: "USD", company: "Acme" }
    }),
    expected: {
      event_type: "qualified_lead",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "evt_lead",
      event_properties: { value: 5000, currency: "USD", company: "Acme" },
      library: "tracklayer"
    }
  },
  {
    scenario: "the identity graph's user id wins over the event's",
    input: deliveryEvent({ eventId: "evt_id", user_id: "anon_session_user", identity: { userId: "usr_canonical" } }),
    expected: {
      event_type: "view_pricing",
      user_id: "usr_canonical",
      time: 1777017600000,
      insert_id: "evt_id",
      library: "tracklayer"
    }
  },
  {
    scenario: "refused user_id (\"null\") is dropped, the valid device_id is kept",
    input: deliveryEvent({ eventId: "evt_null", user_id: "null", device_id: "web_91f3" }),
    expected: {
      event_type: "view_pricing",
      device_id: "web_91f3",
      time: 1777017600000,
      insert_id: "evt_null",
      library: "tracklayer"
    }
  },
  {
    scenario: "refused ids are matched trimmed and case-insensitively; all-zero UUID device refused",
    input: deliveryEvent({
      eventId: "evt_case",
      user_id: "  Anonymous ",
      device_id: "00000000-0000-0000-0000-000000000000",
      identity: { deviceId: "dev_real_1" }
    }),
    expected: {
      event_type: "view_pricing",
      device_id: "dev_real_1",
      time: 1777017600000,
      insert_id: "evt_case",
      library: "tracklayer"
    }
  },
  {
    scenario: "neither id valid: skipped as invalid",
    input: deliveryEvent({ user_id: "undefined", device_id: "0" }),
    expected: {
      skip: "Amplitude needs a valid user_id or device_id: user_id \"undefined\" is refused by Amplitude; " +
        "device_id \"0\" is refused by Amplitude"
    }
  },
  {
    scenario: "ids shorter than minIdLength (default 5) are not padded but dropped",
    input: deliveryEvent({ user_id: "u42", device_id: "{}" }),
    expected: {
      skip: "Amplitude needs a valid user_id or device_id: user_id \"u42\" is shorter than minIdLength 5; " +
        "device_id \"{}\" is refused by Amplitude"
    }
  },
  {
    scenario: "minIdLength 1 keeps a short id (send then sets options.min_id_length)",
    input: deliveryEvent({ eventId: "evt_short", user_id: "u42" }),
    settings: { minIdLength: 1 },
    expected: {
      event_type: "view_pricing",
      user_id: "u42",
      time: 1777017600000,
      insert_id: "evt_short",
      library: "tracklayer"
    }
  },
  {
    scenario: "custom allowlist; user_properties omitted when nothing is allowed",
    input: deliveryEvent({
      eventId: "evt_allow",
      user_id: "usr_8421",
      user_properties: { email: "x@example.com", age: 31 }
    }),
    settings: { userPropertiesAllowlist: ["plan"] },
    expected: {
      event_type: "view_pricing",
      user_id: "usr_8421",
      time: 1777017600000,
      insert_id: "evt_allow",
      library: "tracklayer"
    }
  },
  {
    scenario: "strings longer than 1024 are cut to 1024, nested ones too, without splitting a surrogate pair",
    input: deliveryEvent({
      eventId: "evt_long",
      user_id: "usr_8421",
      timestamp: T0 + 123.7,
      properties: {
        note: long("x", 1500),
        nested: { list: [long("y", 1100), 7] },
        emoji: long("a", 1023) + "😀" + "tail",
        exact: long("z", 1024)
      },
      user_properties: { plan: long("p", 2000) }
    }),
    expected: {
      event_type: "view_pricing",
      user_id: "usr_8421",
      time: 1777017600123,
      insert_id: "evt_long",
      event_properties: {
        note: long("x", 1024),
        nested: { list: [long("y", 1024), 7] },
        emoji: long("a", 1023),
        exact: long("z", 1024)
      },
      user_properties: { plan: long("p", 1024) },
      library: "tracklayer"
    }
  },
  {
    scenario: "experiment metadata from context overrides same-named properties",
    input: deliveryEvent({
      eventId: "evt_override",
      device_id: "web_91f3",
      properties: { variant: "stale" },
      context: { experiments: [{ experiment_key: "paywall_copy", variant: "a" }] }
    }),
    expected: {
      event_type: "view_pricing",
      device_id: "web_91f3",
      time: 1777017600000,
      insert_id: "evt_override",
      event_properties: { variant: "a", experiment_key: "paywall_copy" },
      library: "tracklayer"
    }
  }
]

describe("Amplitude.transform", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = Amplitude.transform(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result))
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left.reason, "invalid")
          assert.strictEqual(result.left.detail, c.expected.skip)
        }
        return
      }
      assert.isTrue(Either.isRight(result), Either.isLeft(result) ? result.left.detail : "")
      if (Either.isRight(result)) {
        assert.deepStrictEqual(result.right, c.expected)
        // The wire form is exactly the value: no undefined fields, no string event_id.
        assert.deepStrictEqual(JSON.parse(JSON.stringify(result.right)), c.expected)
        assert.isFalse("event_id" in result.right)
      }
    })
  }

  it("is pure: the same input gives the same payload and does not touch the input", () => {
    const input = deliveryEvent({ user_id: "usr_8421", properties: { note: long("x", 2000) } })
    const before = JSON.stringify(input)
    const a = Amplitude.transform(input, settings())
    const b = Amplitude.transform(input, settings())
    assert.deepStrictEqual(a, b)
    assert.strictEqual(JSON.stringify(input), before)
  })
})

describe("Amplitude.minIdLengthOption", () => {
  it("is the shortest id when below 5, never below 1, absent otherwise", () => {
    const e = (user_id?: string, device_id?: string): Amplitude.AmplitudeEvent => ({
      event_type: "x",
      time: 1,
      insert_id: "i",
      library: "tracklayer",
      ...(user_id !== undefined ? { user_id } : {}),
      ...(device_id !== undefined ? { device_id } : {})
    })
    assert.deepStrictEqual(Amplitude.minIdLengthOption([e("usr_8421"), e(undefined, "dev_12345")]), undefined)
    assert.deepStrictEqual(Amplitude.minIdLengthOption([e("usr_8421"), e("u42")]), { min_id_length: 3 })
    assert.deepStrictEqual(Amplitude.minIdLengthOption([e("usr_8421", "d1")]), { min_id_length: 2 })
    assert.deepStrictEqual(Amplitude.minIdLengthOption([e("")]), { min_id_length: 1 })
    assert.deepStrictEqual(Amplitude.minIdLengthOption([e("abcd")]), { min_id_length: 4 })
  })
})
