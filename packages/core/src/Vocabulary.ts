/**
 * The operator's event vocabulary: each canonical event name with its typed property schema and, where it has
 * one, its business key (the properties that identify "the same thing reported twice", e.g. `order_id`).
 */
import { Either, Schema } from "effect"
import { type FieldError, fieldErrors } from "./Contract.js"

/** How an event's business key is built from its properties. */
export interface BusinessKey {
  /** Property names whose values, joined with `:`, form the key. */
  readonly properties: ReadonlyArray<string>
  /**
   * Prefix the key with the event name. Off for `purchase`, so the dedup key is the `order_id` string itself and a
   * browser pixel that used the order id as its event id deduplicates with the server event.
   */
  readonly prefixWithEventName: boolean
}

/** One canonical event. */
export interface EventDefinition {
  readonly description: string
  /** Decodes `properties`; unknown keys are kept. Its output replaces the raw properties (e.g. `"49.90"` → 49.9). */
  readonly properties: Schema.Schema<Record<string, unknown>, Record<string, unknown>>
  readonly businessKey?: BusinessKey
}

/** Event name → definition. */
export type Vocabulary = Readonly<Record<string, EventDefinition>>

/** Money amount: a finite number ≥ 0, or a numeric string converted to one. */
export const Money = Schema.Union(
  Schema.Number,
  // Only plain decimals ("49.90"): not "0x10", "1e3" or " 12 ", which Number() would also read.
  Schema.compose(
    Schema.String.pipe(
      Schema.pattern(/^-?\d+(\.\d+)?$/, { message: () => "expected a number or a decimal string like \"49.90\"" })
    ),
    Schema.NumberFromString
  )
).pipe(
  Schema.filter((n) => Number.isFinite(n) && n >= 0, { message: () => "expected a finite amount ≥ 0" }),
  Schema.annotations({ identifier: "Money" })
)

/** ISO 4217 currency code, case-insensitive on input, upper case after decoding. */
export const Currency = Schema.transform(
  Schema.String.pipe(Schema.pattern(/^[A-Za-z]{3}$/, { message: () => "expected a 3-letter ISO 4217 currency code" })),
  Schema.String,
  { strict: true, decode: (s) => s.toUpperCase(), encode: (s) => s }
).annotations({ identifier: "Currency" })

const Id = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256))
const opt = <S extends Schema.Schema.All>(s: S) => Schema.optionalWith(s, { exact: true })

/** `value` and `currency` go together: an amount without a currency is ambiguous. */
const moneyPair = <A extends { readonly value?: number; readonly currency?: string }>(s: Schema.Schema<A, any>) =>
  s.pipe(Schema.filter((p) =>
    (p.value === undefined) === (p.currency === undefined) ||
    { path: [p.value === undefined ? "value" : "currency"], message: "value and currency must be given together" }
  ))

/** Widens a struct schema to the `EventDefinition.properties` type (unknown keys preserved on decode). */
const props = <A, I>(s: Schema.Schema<A, I>) =>
  s as unknown as Schema.Schema<Record<string, unknown>, Record<string, unknown>>

/** The canonical vocabulary shipped with TrackLayer; operators extend or replace it in `tracklayer.config.ts`. */
export const canonical: Vocabulary = {
  view_pricing: {
    description: "A visitor viewed the pricing page.",
    properties: props(Schema.Struct({ plan: opt(Schema.String) }))
  },
  sign_up: {
    description: "An account was created.",
    properties: props(Schema.Struct({ method: opt(Schema.String) }))
  },
  start_trial: {
    description: "A trial started.",
    properties: props(Schema.Struct({
      trial_plan: opt(Schema.String),
      trial_days: opt(Schema.Number.pipe(Schema.int(), Schema.positive()))
    }))
  },
  purchase: {
    description: "A paid order. One per order_id; a later report with another value is an adjustment.",
    properties: props(moneyPair(Schema.Struct({
      value: Money,
      currency: Currency,
      order_id: Id,
      quantity: opt(Schema.Number.pipe(Schema.int(), Schema.positive())),
      product_id: opt(Schema.String)
    }))),
    businessKey: { properties: ["order_id"], prefixWithEventName: false }
  },
  subscription_renewed: {
    description: "A subscription renewed for a billing period. One per subscription_id + period.",
    properties: props(moneyPair(Schema.Struct({
      value: opt(Money),
      currency: opt(Currency),
      subscription_id: Id,
      period: Id
    }))),
    businessKey: { properties: ["subscription_id", "period"], prefixWithEventName: true }
  },
  qualified_lead: {
    description: "A lead passed qualification (B2B).",
    properties: props(moneyPair(Schema.Struct({
      value: opt(Money),
      currency: opt(Currency),
      company: opt(Schema.String),
      workspace_size: opt(Schema.Number.pipe(Schema.int(), Schema.nonNegative()))
    })))
  },
  refund: {
    description: "An order was refunded (in full or in part). One per order_id.",
    properties: props(moneyPair(Schema.Struct({ value: Money, currency: Currency, order_id: Id }))),
    businessKey: { properties: ["order_id"], prefixWithEventName: true }
  }
}

/** Decodes an event's properties against its definition, keeping unknown keys. */
export const decodeProperties = (
  definition: EventDefinition,
  properties: Record<string, unknown> | undefined
): Either.Either<Record<string, unknown>, ReadonlyArray<FieldError>> =>
  Schema.decodeUnknownEither(definition.properties, { errors: "all", onExcessProperty: "preserve" })(
    properties ?? {}
  ).pipe(Either.mapLeft((e) => fieldErrors(e, ["properties"])))

/** The business key of an event, or undefined when its definition has none. */
export const businessKeyOf = (
  name: string,
  definition: EventDefinition | undefined,
  properties: Record<string, unknown>
): string | undefined => {
  const bk = definition?.businessKey
  if (!bk) return undefined
  const parts = bk.properties.map((p) => properties[p])
  if (parts.some((p) => p === undefined || p === null || p === "")) return undefined
  const key = parts.map(String).join(":")
  return bk.prefixWithEventName ? `${name}:${key}` : key
}
