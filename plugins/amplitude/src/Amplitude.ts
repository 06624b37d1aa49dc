/**
 * The Amplitude destination: canonical events → Amplitude HTTP API v2 (`POST /2/httpapi`).
 *
 * `transform` is pure and returns the exact wire event. `send` makes one request per batch and reads every
 * documented answer: a 400 drops only the listed events and resends the rest, a 413 splits the batch, a 429 pauses
 * only the throttled users and devices, 5xx and transport errors are retryable (safe: every event carries our dedup
 * key as `insert_id`). The api key travels in the request body, so no request is ever echoed and every response
 * excerpt is redacted before it reaches an outcome or an error.
 *
 * `userState` (plugin API 1.2) syncs durable traits through the Identify API (`POST /identify`, form-encoded), as
 * `$set` / `$unset` operations; an instance configured with `traits` sends no `user_properties` on its events.
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import { Clock, Config, Effect, Either, Option, Redacted, Schema } from "effect"
import * as AmplitudeSandbox from "./Sandbox.js"
import * as UserPrivacy from "./UserPrivacy.js"

type DeliveryEvent = Destination.DeliveryEvent
type Outcome = Destination.Outcome
type ResponseInfo = Destination.ResponseInfo
type SendError = Destination.SendError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** The Amplitude ingestion API version this plugin speaks (HTTP API v2). Bump only with a new major. */
export const AMPLITUDE_HTTP_API = "2"
/** Default (US) endpoint. */
export const DEFAULT_ENDPOINT = `https://api2.amplitude.com/${AMPLITUDE_HTTP_API}/httpapi`
/** EU data-residency endpoint. */
export const EU_ENDPOINT = `https://api.eu.amplitude.com/${AMPLITUDE_HTTP_API}/httpapi`
/** Default (US) Identify API endpoint (derived from `DEFAULT_ENDPOINT` by `identifyEndpoint`). */
export const DEFAULT_IDENTIFY_ENDPOINT = "https://api2.amplitude.com/identify"
/** EU data-residency Identify API endpoint (derived from `EU_ENDPOINT` by `identifyEndpoint`). */
export const EU_IDENTIFY_ENDPOINT = "https://api.eu.amplitude.com/identify"

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-amplitude"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.2.0"
/** Value of the `library` field on every event. */
export const LIBRARY = "tracklayer"

/** Amplitude's limit for any string value. */
export const MAX_STRING_LENGTH = 1024
/** Amplitude's own default `min_id_length`; below it the request must say `options.min_id_length`. */
export const AMPLITUDE_DEFAULT_MIN_ID_LENGTH = 5
/** How long a user/device throttled by a 429 is paused (Amplitude: "stop sending for ~30 s"). */
export const THROTTLE_PAUSE_MS = 30_000
/** How long a user/device over its daily quota is paused (the quota is a rolling 24 h in one-hour steps). */
export const DAILY_QUOTA_PAUSE_MS = 3_600_000
/** Longest response excerpt kept in an outcome or error. */
export const MAX_BODY_EXCERPT = 2000
/** Most HTTP requests one `send` call makes (follow-ups after 400/429 and 413 splits included). */
export const MAX_REQUESTS_PER_SEND = 64
/** How long to wait after an Identify API 429 (Amplitude: "pause … for 15 seconds before retrying"). */
export const IDENTIFY_THROTTLE_PAUSE_MS = 15_000
/** Identifications per Identify API request (Amplitude documents none; half the HTTP API's 2000 events). */
export const MAX_IDENTIFICATIONS_PER_REQUEST = 1000
/** Form-encoded bytes per Identify API request: under the 1 MB Amplitude allows its ingestion requests. */
export const MAX_IDENTIFY_BODY_BYTES = 900_000
/** The value `$unset` takes for each property (Amplitude's example: `{"$unset": {"oldProperty": "-"}}`). */
export const UNSET_VALUE = "-"

/** IDs Amplitude always refuses (compared trimmed and case-insensitively). */
export const BLOCKED_IDS: ReadonlyArray<string> = [
  "anonymous",
  "nil",
  "none",
  "null",
  "n/a",
  "na",
  "undefined",
  "unknown",
  "0",
  "-1",
  "lmy47d",
  "{}",
  "",
  "00000000-0000-0000-0000-000000000000"
]

/** User properties sent by default: durable state only, never event-scoped or personal data. */
export const DEFAULT_USER_PROPERTIES_ALLOWLIST: ReadonlyArray<string> = [
  "plan",
  "lifecycle_stage",
  "region",
  "signup_date",
  "workspace_size",
  "acquisition_channel",
  "ltv_band",
  "last_paid_at",
  "country"
]

/** Canonical event → Amplitude `revenueType`. Only these events carry revenue fields; `refund` is negative. */
export const DEFAULT_REVENUE_TYPES: Readonly<Record<string, string>> = {
  purchase: "purchase",
  subscription_renewed: "renewal",
  refund: "refund"
}

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

const HttpUrl = Schema.String.pipe(
  Schema.filter((s) => {
    try {
      const u = new URL(s)
      return u.protocol === "https:" || u.protocol === "http:"
    } catch {
      return false
    }
  }, { message: () => "expected an http(s) URL" }),
  Schema.annotations({ identifier: "HttpUrl" })
)

/** An instance's settings. The api key is `Redacted` once decoded. */
export const Settings = Schema.Struct({
  /** Amplitude project API key. (The message never repeats the value.) */
  apiKey: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the Amplitude api key must not be empty" })
  ),
  /** `https://api2.amplitude.com/2/httpapi` (default) or the EU endpoint, or a sandbox. */
  endpoint: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_ENDPOINT }),
  /** Shortest `user_id`/`device_id` accepted; shorter ids are dropped (below 5 the request says so). */
  minIdLength: Schema.optionalWith(Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)), { default: () => 5 }),
  /** The only `user_properties` keys sent. */
  userPropertiesAllowlist: Schema.optionalWith(Schema.Array(Schema.String), {
    default: () => DEFAULT_USER_PROPERTIES_ALLOWLIST
  }),
  /** Events per HTTP request (Amplitude: at most 2000). */
  maxEventsPerRequest: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 2000)), { default: () => 2000 }),
  /** Canonical event name → `revenueType`; events listed here with a numeric `value` carry revenue. */
  revenueTypes: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), {
    default: () => DEFAULT_REVENUE_TYPES
  }),
  /** Project secret key: only for forwarding erasures (User Privacy API, Basic auth `api_key:secret_key`). */
  secretKey: Schema.optionalWith(
    Schema.Redacted(Schema.NonEmptyString.annotations({ message: () => "the Amplitude secret key must not be empty" })),
    { exact: true }
  ),
  /** User Privacy API endpoint (default US; EU: `UserPrivacy.EU_DELETION_ENDPOINT`), or a sandbox. */
  deletionEndpoint: Schema.optionalWith(HttpUrl, { default: () => UserPrivacy.DEFAULT_DELETION_ENDPOINT })
}).annotations({ identifier: "AmplitudeSettings" })
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv`. */
export interface EnvOptions {
  /** Config namespace; env vars are `<namespace>_API_KEY` and `<namespace>_ENDPOINT` (default `AMPLITUDE`). */
  readonly namespace?: string
  /** Endpoint used when `<namespace>_ENDPOINT` is not set (e.g. `EU_ENDPOINT`). */
  readonly endpoint?: string
  readonly minIdLength?: number
  readonly userPropertiesAllowlist?: ReadonlyArray<string>
  readonly maxEventsPerRequest?: number
  readonly revenueTypes?: Readonly<Record<string, string>>
  /** User Privacy API endpoint used when `<namespace>_DELETION_ENDPOINT` is not set. */
  readonly deletionEndpoint?: string
}

/**
 * The instance's settings read through `Config`, in their encoded form: `AMPLITUDE_API_KEY` (secret) and optional
 * `AMPLITUDE_ENDPOINT`; everything else comes from `options`.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { namespace = "AMPLITUDE", ...rest } = options
  const config = Config.all({
    apiKey: Config.redacted("API_KEY").pipe(
      Config.withDescription("Amplitude project API key, sent as api_key to the HTTP API v2")
    ),
    endpoint: Config.option(
      Config.string("ENDPOINT").pipe(
        Config.withDescription(`Amplitude HTTP API v2 endpoint (default ${DEFAULT_ENDPOINT}; EU: ${EU_ENDPOINT})`)
      )
    ),
    secretKey: Config.option(
      Config.redacted("SECRET_KEY").pipe(
        Config.withDescription("Amplitude project secret key; set it to forward erasures to the User Privacy API")
      )
    ),
    deletionEndpoint: Config.option(
      Config.string("DELETION_ENDPOINT").pipe(
        Config.withDescription(
          `Amplitude User Privacy API endpoint (default ${UserPrivacy.DEFAULT_DELETION_ENDPOINT}; ` +
            `EU: ${UserPrivacy.EU_DELETION_ENDPOINT})`
        )
      )
    )
  })
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.map(({ apiKey, deletionEndpoint, endpoint, secretKey }): unknown => ({
      ...rest,
      // Schema.Redacted decodes from the plain string, so the encoded object carries it.
      apiKey: Redacted.value(apiKey).trim(),
      ...(Option.isSome(endpoint) ? { endpoint: endpoint.value } : {}),
      ...(Option.isSome(secretKey) ? { secretKey: Redacted.value(secretKey.value).trim() } : {}),
      ...(Option.isSome(deletionEndpoint) ? { deletionEndpoint: deletionEndpoint.value } : {})
    }))
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Wire payload and transform
// ---------------------------------------------------------------------------------------------------------------

/** One event exactly as sent to Amplitude (HTTP API v2). Amplitude's integer `event_id` is never set. */
export interface AmplitudeEvent {
  readonly event_type: string
  readonly user_id?: string
  readonly device_id?: string
  /** Epoch milliseconds (integer). */
  readonly time: number
  /** The TrackLayer dedup key; Amplitude ignores a repeat within 7 days. */
  readonly insert_id: string
  readonly event_properties?: Readonly<Record<string, unknown>>
  readonly user_properties?: Readonly<Record<string, unknown>>
  readonly price?: number
  readonly quantity?: number
  readonly revenue?: number
  readonly productId?: string
  readonly revenueType?: string
  readonly ip?: string
  readonly library: string
}

/** Why an id is not usable, or undefined when it is. */
export const idProblem = (id: string | undefined, minIdLength: number): string | undefined => {
  if (id === undefined) return "absent"
  const normalised = id.trim().toLowerCase()
  if (BLOCKED_IDS.includes(normalised)) return `${JSON.stringify(id)} is refused by Amplitude`
  if (id.length < minIdLength) return `${JSON.stringify(id)} is shorter than minIdLength ${minIdLength}`
  if (id.length > MAX_STRING_LENGTH) return `longer than ${MAX_STRING_LENGTH} characters`
  return undefined
}

const firstValid = (candidates: ReadonlyArray<string | undefined>, minIdLength: number): string | undefined =>
  candidates.find((c) => c !== undefined && idProblem(c, minIdLength) === undefined)

/** Cuts a string to Amplitude's 1024-character limit without splitting a surrogate pair. */
export const truncate = (s: string, max: number = MAX_STRING_LENGTH): string => {
  if (s.length <= max) return s
  const code = s.charCodeAt(max - 1)
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) && Object.getPrototypeOf(u) === Object.prototype

/** Truncates every string inside a JSON value. */
const truncateDeep = (u: unknown): unknown => {
  if (typeof u === "string") return truncate(u)
  if (Array.isArray(u)) return u.map(truncateDeep)
  if (isPlainObject(u)) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(u)) out[k] = truncateDeep(v)
    return out
  }
  return u
}

const experimentProperties = (event: DeliveryEvent): Record<string, unknown> => {
  const experiments = event.event.context?.experiments ?? []
  const first = experiments[0]
  if (first === undefined) return {}
  const plain = { experiment_key: first.experiment_key, variant: first.variant }
  if (experiments.length === 1) return plain
  return {
    ...plain,
    experiments: experiments.map((x) => ({ experiment_key: x.experiment_key, variant: x.variant }))
  }
}

type Revenue = Pick<AmplitudeEvent, "price" | "quantity" | "revenue" | "productId" | "revenueType">

/**
 * Revenue fields. `value` is the amount of the whole order (as for every destination), so `revenue` is `value`;
 * with one unit `price` = `value`. With several units `price` is left out: Amplitude would compute
 * `price × quantity` and a divided price rarely multiplies back to the exact amount.
 */
const revenueOf = (name: string, properties: Readonly<Record<string, unknown>>, settings: Settings): Revenue => {
  const revenueType = settings.revenueTypes[name]
  const value = properties.value
  if (revenueType === undefined || typeof value !== "number" || !Number.isFinite(value)) return {}
  const amount = value === 0 ? 0 : revenueType === "refund" ? -Math.abs(value) : value
  const q = properties.quantity
  const quantity = typeof q === "number" && Number.isInteger(q) && q > 0 ? q : 1
  const p = properties.product_id
  const productId = typeof p === "string" && p !== "" ? truncate(p) : typeof p === "number" ? String(p) : undefined
  return {
    ...(quantity === 1 ? { price: amount } : {}),
    quantity,
    revenue: amount,
    revenueType,
    ...(productId !== undefined ? { productId } : {})
  }
}

/** `event_type` of the revenue correction sent when an order's amount changes (a later report of its key). */
export const ADJUSTMENT_EVENT_TYPE = "revenue_correction"

/**
 * Revenue of a correction: the difference between the new and the previous amount (for a money event, in one
 * currency). With a change of currency there is no meaningful difference: the correction carries no revenue.
 */
const correctionOf = (
  name: string,
  properties: Readonly<Record<string, unknown>>,
  adjustment: NonNullable<DeliveryEvent["adjustment"]>,
  settings: Settings
): Revenue => {
  const revenueType = settings.revenueTypes[name]
  const value = properties.value
  const currency = properties.currency
  if (
    revenueType === undefined || typeof value !== "number" || adjustment.previousValue === null ||
    (adjustment.previousCurrency !== null && currency !== adjustment.previousCurrency)
  ) return {}
  const sign = revenueType === "refund" ? -1 : 1
  const delta = Math.round((value - adjustment.previousValue) * 1e6) / 1e6 * sign
  return { price: delta, quantity: 1, revenue: delta, revenueType: "correction" }
}

/** Pure: the exact Amplitude event for one stored event, or why it is skipped. */
export const transform = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<AmplitudeEvent, Destination.SkipReason> => {
  const e = event.event
  // The identity graph's canonical user id wins; the device is the one this event happened on.
  const userId = firstValid([event.identity.userId, e.user_id], settings.minIdLength)
  const deviceId = firstValid([e.device_id, event.identity.deviceId], settings.minIdLength)
  if (userId === undefined && deviceId === undefined) {
    const u = idProblem(event.identity.userId ?? e.user_id, settings.minIdLength)
    const d = idProblem(e.device_id ?? event.identity.deviceId, settings.minIdLength)
    return Either.left(
      new Destination.SkipReason({
        reason: "invalid",
        detail: `Amplitude needs a valid user_id or device_id: user_id ${u}; device_id ${d}`
      })
    )
  }
  const properties = e.properties ?? {}
  const eventProperties = { ...(truncateDeep(properties) as Record<string, unknown>), ...experimentProperties(event) }
  // An empty allowlist (always so when the instance syncs traits through the Identify API) sends no user_properties.
  const userProperties: Record<string, unknown> = {}
  for (const key of settings.userPropertiesAllowlist) {
    const v = e.user_properties?.[key]
    if (v !== undefined && v !== null) userProperties[key] = truncateDeep(v)
  }
  const ip = e.context?.ip
  if (event.adjustment !== undefined) {
    return Either.right({
      event_type: ADJUSTMENT_EVENT_TYPE,
      ...(userId !== undefined ? { user_id: userId } : {}),
      ...(deviceId !== undefined ? { device_id: deviceId } : {}),
      time: Math.trunc(event.timestamp),
      // One correction per adjusting report, stable across retries and replays.
      insert_id: `${event.dedupKey}:adjustment:${event.eventId}`,
      event_properties: {
        ...eventProperties,
        adjusted_event: event.name,
        adjusts_event_id: event.adjustment.of,
        previous_value: event.adjustment.previousValue,
        previous_currency: event.adjustment.previousCurrency
      },
      ...correctionOf(event.name, properties, event.adjustment, settings),
      ...(ip !== undefined ? { ip } : {}),
      library: LIBRARY
    })
  }
  return Either.right({
    event_type: event.name,
    ...(userId !== undefined ? { user_id: userId } : {}),
    ...(deviceId !== undefined ? { device_id: deviceId } : {}),
    time: Math.trunc(event.timestamp),
    insert_id: event.dedupKey,
    ...(Object.keys(eventProperties).length > 0 ? { event_properties: eventProperties } : {}),
    ...(Object.keys(userProperties).length > 0 ? { user_properties: userProperties } : {}),
    ...revenueOf(event.name, properties, settings),
    ...(ip !== undefined ? { ip } : {}),
    library: LIBRARY
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------------------------

/**
 * `options.min_id_length` for a request (events or identifications): the shortest id in it, when below Amplitude's
 * default of 5.
 */
export const minIdLengthOption = (
  events: ReadonlyArray<{ readonly user_id?: string | undefined; readonly device_id?: string | undefined }>
): { readonly min_id_length: number } | undefined => {
  let shortest = Number.POSITIVE_INFINITY
  for (const e of events) {
    if (e.user_id !== undefined) shortest = Math.min(shortest, e.user_id.length)
    if (e.device_id !== undefined) shortest = Math.min(shortest, e.device_id.length)
  }
  return shortest < AMPLITUDE_DEFAULT_MIN_ID_LENGTH ? { min_id_length: Math.max(1, shortest) } : undefined
}

/** Milliseconds to wait from a `Retry-After` header (delay-seconds or HTTP-date), or undefined. */
export const parseRetryAfter = (header: string | undefined, nowMs: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

/**
 * Removes the api key from a text. Amplitude echoes the key in `Invalid API key: <key>`, so whatever follows that
 * phrase is redacted too, even when it is not our key.
 */
export const redact = (text: string, apiKey: string): string => {
  let out = text
  const forms = new Set([apiKey, apiKey.trim(), JSON.stringify(apiKey).slice(1, -1)])
  for (const form of forms) if (form.length > 0) out = out.split(form).join("[redacted]")
  return out.replace(/(invalid api[ _-]?key\s*:?\s*)[^"\\\s,}<]+/gi, "$1[redacted]")
}

/** A redacted response body cut to `MAX_BODY_EXCERPT` characters. */
export const excerpt = (text: string, apiKey: string): string => truncate(redact(text, apiKey), MAX_BODY_EXCERPT)

interface Reply {
  readonly status: number
  readonly json: Record<string, unknown>
  readonly retryAfterMs: number | undefined
  readonly info: ResponseInfo
}

interface SendContext {
  readonly settings: Settings
  readonly apiKey: string
  /** Requests left in this `send` call. */
  budget: number
}

const recordOf = (u: unknown): Record<string, unknown> => (isPlainObject(u) ? u : {})
const indexesOf = (u: unknown): ReadonlyArray<number> =>
  Array.isArray(u) ? u.filter((n): n is number => typeof n === "number" && Number.isInteger(n)) : []
const keysOf = (u: unknown): ReadonlySet<string> => new Set(Object.keys(recordOf(u)))
const stringOf = (u: unknown): string | undefined => (typeof u === "string" ? u : undefined)
const numberOf = (u: unknown): number | undefined => (typeof u === "number" ? u : undefined)

const transportError = (ctx: SendContext) => (error: HttpClientError.HttpClientError) =>
  new Destination.RetryableError({ message: excerpt(`Amplitude request failed: ${error.message}`, ctx.apiKey) })

const post = Effect.fn("Amplitude.post")(function*(events: ReadonlyArray<AmplitudeEvent>, ctx: SendContext) {
  ctx.budget -= 1
  const options = minIdLengthOption(events)
  const body = JSON.stringify({ api_key: ctx.apiKey, events, ...(options !== undefined ? { options } : {}) })
  yield* Effect.annotateCurrentSpan({ "amplitude.events": events.length, "amplitude.request_bytes": body.length })
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post(ctx.settings.endpoint).pipe(
      HttpClientRequest.bodyText(body, "application/json"),
      HttpClientRequest.acceptJson
    )
  ).pipe(Effect.mapError(transportError(ctx)))
  const text = yield* response.text.pipe(Effect.mapError(transportError(ctx)))
  const now = yield* Clock.currentTimeMillis
  yield* Effect.annotateCurrentSpan("http.status", response.status)
  let json: Record<string, unknown> = {}
  try {
    json = recordOf(JSON.parse(text))
  } catch {
    // Gateways answer 502/504 with HTML; the status alone decides then.
  }
  return {
    status: response.status,
    json,
    retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
    info: { status: response.status, body: excerpt(text, ctx.apiKey) }
  } satisfies Reply
})

const errorText = (reply: Reply): string => {
  const error = stringOf(reply.json.error)
  return error === undefined ? reply.info.body.slice(0, 200) : error
}

/** Sends `events` and classifies the answer; a whole-request failure is an error. */
const exchange = (
  events: ReadonlyArray<AmplitudeEvent>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const reply = yield* post(events, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    if (s >= 200 && s < 300) return events.map(() => Destination.Accepted(reply.info))
    if (s === 400) return yield* onInvalid(events, reply, ctx)
    if (s === 413) return yield* onTooLarge(events, reply, ctx)
    if (s === 429) return yield* onThrottled(events, reply, ctx)
    if (s === 401 || s === 403) {
      return yield* new Destination.AuthFailedError({ message: `Amplitude refused the credentials (${s})`, ...fields })
    }
    if (s === 404 || s === 405) {
      // A wrong endpoint is an operator problem like a wrong key: pause the destination, drop nothing.
      return yield* new Destination.AuthFailedError({
        message: `Amplitude endpoint answered ${s}: check the endpoint setting (${ctx.settings.endpoint})`,
        ...fields
      })
    }
    if (s === 408 || s >= 500) {
      return yield* new Destination.RetryableError({
        message: excerpt(`Amplitude answered ${s}: ${errorText(reply)}`, ctx.apiKey),
        ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
        ...fields
      })
    }
    return yield* new Destination.PayloadInvalidError({
      message: excerpt(`Amplitude answered ${s}: ${errorText(reply)}`, ctx.apiKey),
      ...fields
    })
  })

/**
 * Like `exchange`, for follow-up requests made after part of the batch already has an outcome: whole-request
 * failures become per-event outcomes (auth failures still stop the send; the batch is then retried as a whole,
 * which `insert_id` makes safe).
 */
const exchangeRest = (
  events: ReadonlyArray<AmplitudeEvent>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> => {
  if (events.length === 0) return Effect.succeed([])
  if (ctx.budget <= 0) {
    return Effect.succeed(
      events.map(() => Destination.Retry(`not sent: more than ${MAX_REQUESTS_PER_SEND} requests in one send`))
    )
  }
  const info = (e: { readonly status?: number | undefined; readonly body?: string | undefined }) =>
    e.status !== undefined ? { status: e.status, body: e.body ?? "" } : undefined
  return exchange(events, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) => Effect.succeed(events.map(() => Destination.Retry(e.message, e.retryAfterMs, info(e)))),
      PayloadInvalidError: (e) => Effect.succeed(events.map(() => Destination.Rejected(e.message, info(e))))
    })
  )
}

/** Resends the events at `rest` (indexes into `events`) and writes their outcomes into `outcomes`. */
const resend = (
  events: ReadonlyArray<AmplitudeEvent>,
  rest: ReadonlyArray<number>,
  outcomes: Array<Outcome | undefined>,
  ctx: SendContext
) =>
  exchangeRest(rest.map((i) => events[i]!), ctx).pipe(
    Effect.map((resent) => {
      rest.forEach((i, k) => (outcomes[i] = resent[k]))
      return outcomes as ReadonlyArray<Outcome>
    })
  )

const onInvalid = (events: ReadonlyArray<AmplitudeEvent>, reply: Reply, ctx: SendContext) =>
  Effect.gen(function*() {
    const json = reply.json
    const reasons = new Map<number, Map<string, Array<string>>>()
    const add = (index: number, kind: string, field: string) => {
      if (index < 0 || index >= events.length) return
      const byKind = reasons.get(index) ?? new Map<string, Array<string>>()
      byKind.set(kind, [...(byKind.get(kind) ?? []), field])
      reasons.set(index, byKind)
    }
    const addFields = (map: unknown, kind: string) => {
      for (const [field, list] of Object.entries(recordOf(map))) for (const i of indexesOf(list)) add(i, kind, field)
    }
    addFields(json.events_with_invalid_fields, "invalid field")
    addFields(json.events_with_missing_fields, "missing field")
    addFields(json.events_with_invalid_id_lengths, "invalid id length")
    for (const i of indexesOf(json.silenced_events)) add(i, "silenced", "device_id")
    const throttled = new Set(indexesOf(json.throttled_events).filter((i) => i >= 0 && i < events.length))
    const missingField = stringOf(json.missing_field)
    const error = errorText(reply)
    const fields = { status: reply.status, body: reply.info.body }
    // Amplitude reports a bad key only in text ("Invalid API key: …" or missing_field "api_key"); the official
    // SDKs classify it the same way.
    if (missingField === "api_key" || (reasons.size === 0 && throttled.size === 0 && /api[ _-]?key/i.test(error))) {
      return yield* new Destination.AuthFailedError({
        message: redact(`Amplitude refused the api key (400): ${error}`, ctx.apiKey),
        ...fields
      })
    }
    if (missingField !== undefined || (reasons.size === 0 && throttled.size === 0)) {
      return yield* new Destination.PayloadInvalidError({
        message: excerpt(`Amplitude refused the request (400): ${error}`, ctx.apiKey),
        ...fields
      })
    }
    const outcomes: Array<Outcome | undefined> = []
    const rest: Array<number> = []
    events.forEach((_, i) => {
      const byKind = reasons.get(i)
      if (byKind !== undefined) {
        const reason = [...byKind].map(([kind, fs]) => `${kind}: ${fs.join(", ")}`).join("; ")
        outcomes[i] = Destination.Rejected(reason, reply.info)
      } else if (throttled.has(i)) {
        outcomes[i] = Destination.Retry("throttled by Amplitude", reply.retryAfterMs ?? THROTTLE_PAUSE_MS, reply.info)
      } else {
        rest.push(i)
      }
    })
    return yield* resend(events, rest, outcomes, ctx)
  })

const onTooLarge = (events: ReadonlyArray<AmplitudeEvent>, reply: Reply, ctx: SendContext) =>
  Effect.gen(function*() {
    if (events.length === 1) return [Destination.Rejected("payload too large", reply.info)]
    const middle = Math.ceil(events.length / 2)
    const left = yield* exchangeRest(events.slice(0, middle), ctx)
    const right = yield* exchangeRest(events.slice(middle), ctx)
    return [...left, ...right]
  })

const onThrottled = (events: ReadonlyArray<AmplitudeEvent>, reply: Reply, ctx: SendContext) =>
  Effect.gen(function*() {
    const json = reply.json
    const users = keysOf(json.throttled_users)
    const devices = keysOf(json.throttled_devices)
    const indexes = new Set(indexesOf(json.throttled_events))
    const quotaUsers = keysOf(json.exceeded_daily_quota_users)
    const quotaDevices = keysOf(json.exceeded_daily_quota_devices)
    const pause = reply.retryAfterMs ?? THROTTLE_PAUSE_MS
    const eps = numberOf(json.eps_threshold)
    const throttledReason = `throttled by Amplitude (429${eps !== undefined ? `, eps_threshold ${eps}` : ""})`
    const has = (set: ReadonlySet<string>, id: string | undefined) => id !== undefined && set.has(id)
    const outcomes: Array<Outcome | undefined> = []
    const rest: Array<number> = []
    events.forEach((e, i) => {
      if (has(quotaUsers, e.user_id) || has(quotaDevices, e.device_id)) {
        outcomes[i] = Destination.Retry(
          "daily quota exceeded at Amplitude (429)",
          Math.max(DAILY_QUOTA_PAUSE_MS, reply.retryAfterMs ?? 0),
          reply.info
        )
      } else if (indexes.has(i) || has(users, e.user_id) || has(devices, e.device_id)) {
        outcomes[i] = Destination.Retry(throttledReason, pause, reply.info)
      } else {
        rest.push(i)
      }
    })
    if (rest.length === events.length) {
      // Nothing in the answer names an event of this request: the whole request is throttled.
      return yield* new Destination.RetryableError({
        message: excerpt(`Amplitude answered 429: ${errorText(reply)}`, ctx.apiKey),
        retryAfterMs: pause,
        status: reply.status,
        body: reply.info.body
      })
    }
    return yield* resend(events, rest, outcomes, ctx)
  })

const chunk = <A>(as: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < as.length; i += size) out.push(as.slice(i, i + size))
  return out
}

/**
 * Sends one batch: one request (more only to resend what a 400/429 did not refuse, to split after a 413, or when
 * the batch exceeds `maxEventsPerRequest`). One outcome per prepared event, in order.
 */
export const send = Effect.fn("Amplitude.send")(function*(
  batch: ReadonlyArray<Destination.Prepared<AmplitudeEvent>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("amplitude.batch_size", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  const ctx: SendContext = { settings, apiKey: Redacted.value(settings.apiKey), budget: MAX_REQUESTS_PER_SEND }
  const chunks = chunk(batch.map((p) => p.payload), settings.maxEventsPerRequest)
  const outcomes: Array<Outcome> = []
  for (const [i, events] of chunks.entries()) {
    // Until something was delivered, a whole-request failure is the batch's failure.
    outcomes.push(...(yield* (i === 0 ? exchange(events, ctx) : exchangeRest(events, ctx))))
  }
  return outcomes as ReadonlyArray<Outcome>
})

// ---------------------------------------------------------------------------------------------------------------
// User state: trait sync through the Identify API (plugin API 1.2)
// ---------------------------------------------------------------------------------------------------------------

/**
 * The Identify API endpoint for an HTTP API endpoint: `…/2/httpapi` becomes `…/identify` on the same base (so the EU
 * endpoint gives the EU Identify API and a sandbox its own); any other path gives `<origin>/identify`.
 */
export const identifyEndpoint = (endpoint: string): string => {
  const url = new URL(endpoint)
  const base = /\/2\/httpapi\/?$/.test(url.pathname) ? url.pathname.replace(/\/2\/httpapi\/?$/, "") : ""
  return `${url.origin}${base}/identify`
}

/** One identification exactly as sent to the Identify API: ids and `$set` / `$unset` operations only. */
export interface AmplitudeIdentification {
  readonly user_id?: string
  readonly device_id?: string
  /** Omitted when nothing changes; an empty operation is omitted. */
  readonly user_properties?: {
    readonly $set?: Readonly<Record<string, unknown>>
    readonly $unset?: Readonly<Record<string, typeof UNSET_VALUE>>
  }
}

/** Sets an own property (also for keys like `__proto__`, which plain assignment would not store). */
const setOwn = (target: Record<string, unknown>, key: string, value: unknown) =>
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })

/**
 * Pure: the identification for one trait update, or why it cannot be sent (`invalid`: no usable user_id or
 * device_id, by the same rules as events). Values are cut to 1024 characters; a `null` value is an unset; a key
 * both set and unset is set (the newer value).
 */
export const identification = (
  update: Destination.UserStateUpdate,
  settings: Settings
): Either.Either<AmplitudeIdentification, Destination.SkipReason> => {
  const userId = idProblem(update.userId, settings.minIdLength) === undefined ? update.userId : undefined
  const deviceId = idProblem(update.deviceId, settings.minIdLength) === undefined ? update.deviceId : undefined
  if (userId === undefined && deviceId === undefined) {
    return Either.left(
      new Destination.SkipReason({
        reason: "invalid",
        detail: `Amplitude needs a valid user_id or device_id: user_id ${
          idProblem(update.userId, settings.minIdLength)
        }; device_id ${idProblem(update.deviceId, settings.minIdLength)}`
      })
    )
  }
  const $set: Record<string, unknown> = {}
  const $unset: Record<string, typeof UNSET_VALUE> = {}
  for (const [key, value] of Object.entries(update.set)) {
    if (value === undefined || value === null) setOwn($unset, key, UNSET_VALUE)
    else setOwn($set, key, truncateDeep(value))
  }
  for (const key of update.unset) if (!Object.hasOwn($set, key)) setOwn($unset, key, UNSET_VALUE)
  const hasSet = Object.keys($set).length > 0
  const hasUnset = Object.keys($unset).length > 0
  return Either.right({
    ...(userId !== undefined ? { user_id: userId } : {}),
    ...(deviceId !== undefined ? { device_id: deviceId } : {}),
    ...(hasSet || hasUnset
      ? { user_properties: { ...(hasSet ? { $set } : {}), ...(hasUnset ? { $unset } : {}) } }
      : {})
  })
}

/**
 * The exact form body of one Identify API request: `api_key`, `identification` (always a JSON array) and, when an
 * id is shorter than Amplitude's default of 5, `options` with `min_id_length` (as for events).
 */
export const identifyForm = (apiKey: string, identifications: ReadonlyArray<AmplitudeIdentification>): string => {
  const form = new URLSearchParams()
  form.set("api_key", apiKey)
  form.set("identification", JSON.stringify(identifications))
  const options = minIdLengthOption(identifications)
  if (options !== undefined) form.set("options", JSON.stringify(options))
  return form.toString()
}

/** Form-encoded length of one identification inside the `identification` array (with its comma). */
const formLength = (i: AmplitudeIdentification): number =>
  new URLSearchParams({ x: JSON.stringify(i) }).toString().length - 2 + 3

/** Splits into requests of at most `MAX_IDENTIFICATIONS_PER_REQUEST` and about `MAX_IDENTIFY_BODY_BYTES`. */
const identifyChunks = <A extends { readonly identification: AmplitudeIdentification }>(
  items: ReadonlyArray<A>
): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  let current: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const size = formLength(item.identification)
    if (
      current.length > 0 &&
      (current.length >= MAX_IDENTIFICATIONS_PER_REQUEST || bytes + size > MAX_IDENTIFY_BODY_BYTES)
    ) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += size
  }
  if (current.length > 0) out.push(current)
  return out
}

interface IdentifyContext {
  readonly settings: Settings
  readonly apiKey: string
  readonly url: string
  /** Requests left in this `send` call. */
  budget: number
}

const postIdentify = Effect.fn("Amplitude.identify")(
  function*(identifications: ReadonlyArray<AmplitudeIdentification>, ctx: IdentifyContext) {
    ctx.budget -= 1
    const body = identifyForm(ctx.apiKey, identifications)
    yield* Effect.annotateCurrentSpan({
      "amplitude.identifications": identifications.length,
      "amplitude.request_bytes": body.length
    })
    const transport = (error: HttpClientError.HttpClientError) =>
      new Destination.RetryableError({
        message: excerpt(`Amplitude Identify API request failed: ${error.message}`, ctx.apiKey)
      })
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(
      HttpClientRequest.post(ctx.url).pipe(HttpClientRequest.bodyText(body, "application/x-www-form-urlencoded"))
    ).pipe(Effect.mapError(transport))
    const text = yield* response.text.pipe(Effect.mapError(transport))
    const now = yield* Clock.currentTimeMillis
    yield* Effect.annotateCurrentSpan("http.status", response.status)
    let json: Record<string, unknown> = {}
    try {
      json = recordOf(JSON.parse(text))
    } catch {
      // The Identify API answers in plain text (`success`, `missing_event`, …); gateways in HTML.
    }
    return {
      status: response.status,
      json,
      retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
      info: { status: response.status, body: excerpt(text, ctx.apiKey) }
    } satisfies Reply
  }
)

/** Sends one Identify API request and classifies the answer; a whole-request failure is an error. */
const identifyExchange = (
  identifications: ReadonlyArray<AmplitudeIdentification>,
  ctx: IdentifyContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const reply = yield* postIdentify(identifications, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    const error = errorText(reply)
    if (s >= 200 && s < 300) return identifications.map(() => Destination.Accepted(reply.info))
    if (s === 413) {
      if (identifications.length === 1) return [Destination.Rejected("payload too large (413)", reply.info)]
      const middle = Math.ceil(identifications.length / 2)
      const left = yield* identifyRest(identifications.slice(0, middle), ctx)
      const right = yield* identifyRest(identifications.slice(middle), ctx)
      return [...left, ...right]
    }
    if (s === 400 && /api[ _-]?key/i.test(error)) {
      // Amplitude reports a missing or unknown key only in text (`invalid_api_key`), as for the HTTP API.
      return yield* new Destination.AuthFailedError({
        message: redact(`Amplitude refused the api key (400): ${error}`, ctx.apiKey),
        ...fields
      })
    }
    if (s === 400) {
      return yield* new Destination.PayloadInvalidError({
        message: excerpt(`Amplitude refused the identify request (400): ${error}`, ctx.apiKey),
        ...fields
      })
    }
    if (s === 429) {
      return yield* new Destination.RetryableError({
        message: excerpt(`Amplitude throttled the identify request (429): ${error}`, ctx.apiKey),
        retryAfterMs: reply.retryAfterMs ?? IDENTIFY_THROTTLE_PAUSE_MS,
        ...fields
      })
    }
    if (s === 401 || s === 403) {
      return yield* new Destination.AuthFailedError({ message: `Amplitude refused the credentials (${s})`, ...fields })
    }
    if (s === 404 || s === 405) {
      return yield* new Destination.AuthFailedError({
        message: `Amplitude Identify API answered ${s}: check the endpoint setting (identify URL ${ctx.url})`,
        ...fields
      })
    }
    if (s === 408 || s >= 500) {
      return yield* new Destination.RetryableError({
        message: excerpt(`Amplitude Identify API answered ${s}: ${error}`, ctx.apiKey),
        ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
        ...fields
      })
    }
    return yield* new Destination.PayloadInvalidError({
      message: excerpt(`Amplitude Identify API answered ${s}: ${error}`, ctx.apiKey),
      ...fields
    })
  })

/**
 * Like `identifyExchange`, once part of the batch already has an outcome: whole-request failures become
 * per-update outcomes (an auth failure still stops the send; resending a trait change is harmless).
 */
const identifyRest = (
  identifications: ReadonlyArray<AmplitudeIdentification>,
  ctx: IdentifyContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> => {
  if (identifications.length === 0) return Effect.succeed([])
  if (ctx.budget <= 0) {
    return Effect.succeed(
      identifications.map(() => Destination.Retry(`not sent: more than ${MAX_REQUESTS_PER_SEND} requests in one send`))
    )
  }
  const info = (e: { readonly status?: number | undefined; readonly body?: string | undefined }) =>
    e.status !== undefined ? { status: e.status, body: e.body ?? "" } : undefined
  return identifyExchange(identifications, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) =>
        Effect.succeed(identifications.map(() => Destination.Retry(e.message, e.retryAfterMs, info(e)))),
      PayloadInvalidError: (e) => Effect.succeed(identifications.map(() => Destination.Rejected(e.message, info(e))))
    })
  )
}

/**
 * `userState.send`: one Identify API request for the batch (more only beyond 1000 identifications or about 900 KB,
 * or to split after a 413), one identification per update. An update without a usable id is `Rejected` and not
 * sent; one that changes nothing is `Accepted` and not sent. One outcome per update, in order.
 */
export const sendUserState = Effect.fn("Amplitude.userState.send")(function*(
  batch: ReadonlyArray<Destination.UserStateUpdate>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("amplitude.batch_size", batch.length)
  const outcomes: Array<Outcome | undefined> = batch.map(() => undefined)
  const pending: Array<{ readonly index: number; readonly identification: AmplitudeIdentification }> = []
  batch.forEach((update, index) => {
    const result = identification(update, settings)
    if (Either.isLeft(result)) outcomes[index] = Destination.Rejected(result.left.detail)
    else if (result.right.user_properties === undefined) outcomes[index] = Destination.Accepted()
    else pending.push({ index, identification: result.right })
  })
  const ctx: IdentifyContext = {
    settings,
    apiKey: Redacted.value(settings.apiKey),
    url: identifyEndpoint(settings.endpoint),
    budget: MAX_REQUESTS_PER_SEND
  }
  for (const [i, chunk] of identifyChunks(pending).entries()) {
    const identifications = chunk.map((p) => p.identification)
    // Until some update has an outcome, a whole-request failure is the batch's failure.
    const first = i === 0 && pending.length === batch.length
    const results = yield* (first ? identifyExchange(identifications, ctx) : identifyRest(identifications, ctx))
    chunk.forEach((p, k) => (outcomes[p.index] = results[k]))
  }
  return outcomes as ReadonlyArray<Outcome>
})

/**
 * Requests of the user-state capability: 1000 identifications, and 300,000 bytes of JSON — form encoding turns
 * quotes, braces and non-ASCII characters into `%XX`, so the body stays under Amplitude's 1 MB (`sendUserState`
 * also splits by the encoded size).
 */
export const userStateLimits: Destination.Limits = {
  maxEventsPerRequest: MAX_IDENTIFICATIONS_PER_REQUEST,
  maxBytesPerRequest: 300_000
}

/** The user-state capability (plugin API 1.2): durable traits as Identify API `$set` / `$unset`. */
export const userState: Destination.UserStateCapability<Settings> = { limits: userStateLimits, send: sendUserState }

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/** Request limits: at most 2000 events and under 1 MB per request (the envelope needs the rest). */
export const limits: Destination.Limits = { maxEventsPerRequest: 2000, maxBytesPerRequest: 900_000 }

/** The Amplitude destination plugin (plugin API v1.2). */
export const plugin: Destination.DestinationPlugin<Settings, AmplitudeEvent> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  pluginApi: "^1.2.0",
  settings: Settings,
  purposes: ["analytics"],
  limits,
  // No `window`: Amplitude accepts events of any age.
  transform,
  send,
  supportsAdjustments: true,
  // Erasures go to the User Privacy API (needs the secretKey setting).
  deletePerson: UserPrivacy.deletePerson,
  // Durable traits go to the Identify API (same api key and endpoint base).
  userState,
  sandbox: (options) => AmplitudeSandbox.start(options)
}

/** Options of `destination`. */
export interface DestinationOptions {
  /** Instance id (default `amplitude`). */
  readonly id?: string
  /** Canonical event names routed here (default: all). */
  readonly events?: ReadonlyArray<string>
  readonly startFrom?: Destination.StartFrom
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
  /** Consent purposes this instance needs (default `["analytics"]`). */
  readonly purposes?: ReadonlyArray<string>
  /**
   * Trait sync through the Identify API (the core's `traits` option: allowlisted traits and derived states, sent
   * only when they change). When given, the instance's events carry no `user_properties` of their own:
   * `userPropertiesAllowlist` is forced to `[]`.
   */
  readonly traits?: Destination.TraitSyncOptions
}

/** A configured Amplitude instance; `traits` is set when the instance syncs traits (plugin API 1.2). */
export type AmplitudeInstance = Destination.DestinationInstance<Settings, AmplitudeEvent>

/** Encoded settings with `userPropertiesAllowlist: []` (trait changes then travel only through Identify). */
const withoutEventUserProperties = (settings: Config.Config<unknown>): Config.Config<unknown> =>
  settings.pipe(
    Config.map((encoded): unknown => isPlainObject(encoded) ? { ...encoded, userPropertiesAllowlist: [] } : encoded)
  )

/** A configured Amplitude destination instance for `tracklayer.config.ts`. */
export const destination = (options: DestinationOptions = {}): AmplitudeInstance => {
  const settings = options.settings ?? settingsFromEnv()
  const instance = Destination.instance({
    id: options.id ?? "amplitude",
    plugin,
    settings: options.traits !== undefined ? withoutEventUserProperties(settings) : settings,
    ...(options.events !== undefined ? { events: options.events } : {}),
    ...(options.startFrom !== undefined ? { startFrom: options.startFrom } : {}),
    ...(options.purposes !== undefined ? { purposes: options.purposes } : {})
  })
  return options.traits !== undefined ? { ...instance, traits: options.traits } : instance
}
