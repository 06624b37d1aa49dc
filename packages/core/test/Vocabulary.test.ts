import { assert, describe, it } from "@effect/vitest"
import { Either } from "effect"
import type { FieldError } from "../src/Contract.js"
import { businessKeyOf, canonical, decodeProperties, type EventDefinition } from "../src/Vocabulary.js"

const def = (name: string): EventDefinition => {
  const d = canonical[name]
  if (d === undefined) return assert.fail(`"${name}" is not in the canonical vocabulary`)
  return d
}

const decoded = (name: string, properties: Record<string, unknown> | undefined) => {
  const r = decodeProperties(def(name), properties)
  if (Either.isLeft(r)) return assert.fail(`expected valid properties, got ${JSON.stringify(r.left)}`)
  return r.right
}

const errors = (name: string, properties: Record<string, unknown> | undefined): ReadonlyArray<FieldError> => {
  const r = decodeProperties(def(name), properties)
  if (Either.isRight(r)) return assert.fail(`expected errors, got ${JSON.stringify(r.right)}`)
  return r.left
}

describe("Vocabulary.canonical", () => {
  it("names the seven canonical events; three have business keys", () => {
    assert.deepStrictEqual(Object.keys(canonical).sort(), [
      "purchase",
      "qualified_lead",
      "refund",
      "sign_up",
      "start_trial",
      "subscription_renewed",
      "view_pricing"
    ])
    assert.deepStrictEqual(
      Object.entries(canonical).filter(([, d]) => d.businessKey !== undefined).map(([n]) => n).sort(),
      ["purchase", "refund", "subscription_renewed"]
    )
  })
})

describe("decodeProperties", () => {
  const valid: ReadonlyArray<{
    scenario: string
    event: string
    input: Record<string, unknown> | undefined
    expected: Record<string, unknown>
  }> = [
    {
      scenario: "purchase: numeric string value becomes a number, currency upper-cased",
      event: "purchase",
      input: { value: "49.90", currency: "eur", order_id: "ord_1001" },
      expected: { value: 49.9, currency: "EUR", order_id: "ord_1001" }
    },
    {
      scenario: "purchase: unknown property keys are preserved",
      event: "purchase",
      input: { value: 129, currency: "USD", order_id: "ord_1001", coupon: "SPRING", items: [{ sku: "a" }] },
      expected: { value: 129, currency: "USD", order_id: "ord_1001", coupon: "SPRING", items: [{ sku: "a" }] }
    },
    {
      scenario: "purchase: value 0 is allowed",
      event: "purchase",
      input: { value: 0, currency: "USD", order_id: "ord_0" },
      expected: { value: 0, currency: "USD", order_id: "ord_0" }
    },
    {
      scenario: "subscription_renewed without money",
      event: "subscription_renewed",
      input: { subscription_id: "sub_77", period: "2026-04" },
      expected: { subscription_id: "sub_77", period: "2026-04" }
    },
    {
      scenario: "sign_up with no properties at all",
      event: "sign_up",
      input: undefined,
      expected: {}
    }
  ]
  for (const c of valid) {
    it(c.scenario, () => {
      assert.deepStrictEqual(decoded(c.event, c.input), c.expected)
    })
  }

  const invalid: ReadonlyArray<{
    scenario: string
    event: string
    input: Record<string, unknown>
    expected: ReadonlyArray<FieldError>
  }> = [
    {
      scenario: "purchase: value without currency (currency is required)",
      event: "purchase",
      input: { value: 10, order_id: "ord_1" },
      expected: [{ path: "properties.currency", message: "is missing" }]
    },
    {
      scenario: "qualified_lead: value without currency (the pair filter)",
      event: "qualified_lead",
      input: { value: 10 },
      expected: [{ path: "properties.currency", message: "value and currency must be given together" }]
    },
    {
      scenario: "subscription_renewed: currency without value",
      event: "subscription_renewed",
      input: { currency: "usd", subscription_id: "sub_77", period: "2026-04" },
      expected: [{ path: "properties.value", message: "value and currency must be given together" }]
    },
    {
      scenario: "purchase: negative value",
      event: "purchase",
      input: { value: -1, currency: "USD", order_id: "ord_1" },
      expected: [{ path: "properties.value", message: "expected a finite amount ≥ 0" }]
    },
    {
      scenario: "purchase: negative numeric string",
      event: "purchase",
      input: { value: "-5.00", currency: "USD", order_id: "ord_1" },
      expected: [{ path: "properties.value", message: "expected a finite amount ≥ 0" }]
    },
    {
      scenario: "purchase: non-numeric string value",
      event: "purchase",
      input: { value: "abc", currency: "USD", order_id: "ord_1" },
      expected: [
        { path: "properties.value", message: "Expected number, actual \"abc\"" },
        { path: "properties.value", message: "expected a number or a decimal string like \"49.90\"" }
      ]
    },
    {
      scenario: "purchase: hexadecimal string value (Number() would read it as 16)",
      event: "purchase",
      input: { value: "0x10", currency: "USD", order_id: "ord_1" },
      expected: [
        { path: "properties.value", message: "Expected number, actual \"0x10\"" },
        { path: "properties.value", message: "expected a number or a decimal string like \"49.90\"" }
      ]
    },
    {
      scenario: "purchase: exponent string value",
      event: "purchase",
      input: { value: "1e3", currency: "USD", order_id: "ord_1" },
      expected: [
        { path: "properties.value", message: "Expected number, actual \"1e3\"" },
        { path: "properties.value", message: "expected a number or a decimal string like \"49.90\"" }
      ]
    },
    {
      scenario: "purchase: currency that is not three letters",
      event: "purchase",
      input: { value: 1, currency: "EURO", order_id: "ord_1" },
      expected: [{ path: "properties.currency", message: "expected a 3-letter ISO 4217 currency code" }]
    },
    {
      scenario: "purchase: missing order_id",
      event: "purchase",
      input: { value: 1, currency: "USD" },
      expected: [{ path: "properties.order_id", message: "is missing" }]
    },
    {
      scenario: "start_trial: trial_days must be a positive integer",
      event: "start_trial",
      input: { trial_days: 0 },
      expected: [{ path: "properties.trial_days", message: "Expected a positive number, actual 0" }]
    }
  ]
  for (const c of invalid) {
    it(`rejects ${c.scenario}`, () => {
      assert.deepStrictEqual(errors(c.event, c.input), c.expected)
    })
  }
})

describe("businessKeyOf", () => {
  const cases: ReadonlyArray<{
    scenario: string
    event: string
    properties: Record<string, unknown>
    expected: string | undefined
  }> = [
    {
      scenario: "purchase: the order id itself (no prefix, so a pixel using it as event id dedups)",
      event: "purchase",
      properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      expected: "ord_1001"
    },
    {
      scenario: "subscription_renewed: name, subscription and period",
      event: "subscription_renewed",
      properties: { subscription_id: "sub_77", period: "2026-04" },
      expected: "subscription_renewed:sub_77:2026-04"
    },
    {
      scenario: "refund: prefixed, so it never collides with the purchase of the same order",
      event: "refund",
      properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      expected: "refund:ord_1001"
    },
    { scenario: "purchase without order_id", event: "purchase", properties: { value: 1 }, expected: undefined },
    {
      scenario: "subscription_renewed with an empty period",
      event: "subscription_renewed",
      properties: { subscription_id: "sub_77", period: "" },
      expected: undefined
    },
    {
      scenario: "an event without a business key",
      event: "sign_up",
      properties: { method: "google" },
      expected: undefined
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      assert.strictEqual(businessKeyOf(c.event, def(c.event), c.properties), c.expected)
    })
  }

  it("an event outside the vocabulary has no business key", () => {
    assert.strictEqual(businessKeyOf("custom_thing", undefined, { order_id: "ord_1" }), undefined)
  })
})
