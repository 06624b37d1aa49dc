/**
 * The LinkedIn destination: canonical events → LinkedIn Conversions API (`POST /rest/conversionEvents`,
 * `X-RestLi-Method: BATCH_CREATE`), and audience membership → DMP segment users (`POST /rest/dmpSegments/{id}/users`,
 * `BATCH_CREATE` of `ADD` / `REMOVE` elements).
 *
 * `transform` is pure and returns the exact wire element: the conversion rule URN mapped from the event name, the
 * event time in epoch milliseconds, the amount as a decimal string (left out without a value), our dedup key as
 * `eventId`, SHA-256 emails and the `li_fat_id` click id as `userIds`, and names / company / job title / country as
 * `userInfo`. `send` authenticates with OAuth 2.0 (refresh token → cached access token, refreshed before expiry; a
 * 401 refreshes once and retries), makes one BATCH_CREATE per batch and maps every per-element status to an
 * outcome; whole-request answers become typed errors. No secret is ever echoed in an outcome or an error.
 *
 * `audiences` (plugin API 1.2): `member` is pure and gives the person's `SHA256_EMAIL` ids; `send` makes one
 * BATCH_CREATE on the segment's users with `action` `ADD` or `REMOVE`, with the same token handling and answers.
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Clock, Config, Duration, Effect, Either, Option, Redacted, Schema } from "effect"
import * as OAuth from "./internal/oauth.js"
import * as LinkedInSandbox from "./Sandbox.js"

type DeliveryEvent = Destination.DeliveryEvent
type Outcome = Destination.Outcome
type ResponseInfo = Destination.ResponseInfo
type SendError = Destination.SendError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** The Marketing API version sent as `LinkedIn-Version` (YYYYMM). Bump deliberately, with a CHANGELOG entry. */
export const LINKEDIN_API_VERSION = "202609"
/** Rest.li protocol version LinkedIn requires on every call. */
export const RESTLI_PROTOCOL_VERSION = "2.0.0"
/** Default API base (the endpoint is `<apiBase>/conversionEvents`). */
export const DEFAULT_API_BASE = "https://api.linkedin.com/rest"
/** Default OAuth 2.0 token endpoint. */
export const DEFAULT_TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"
/** Prefix of a conversion rule URN. */
export const CONVERSION_URN_PREFIX = "urn:lla:llaPartnerConversion:"

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-linkedin"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.2.0"

/** Most conversion events in one BATCH_CREATE (LinkedIn Conversions FAQ: up to 5,000 per batch). */
export const MAX_EVENTS_PER_REQUEST = 5000
/** Most DMP segment users in one BATCH_CREATE (the partner-documented 5,000; LinkedIn's page states no figure). */
export const MAX_SEGMENT_USERS_PER_REQUEST = 5000
/** How old an event LinkedIn accepts (conversionHappenedAt within the last 90 days). */
export const WINDOW_DAYS = 90
/** Pause after a 429 without `Retry-After` (LinkedIn's limits are per minute and per day). */
export const DEFAULT_THROTTLE_PAUSE_MS = 60_000
/** Longest response excerpt kept in an outcome or error. */
export const MAX_BODY_EXCERPT = 2000

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

const RULE_ID = /^\d+$/
const RULE_URN = /^urn:lla:llaPartnerConversion:(\d+)$/

/** A conversion rule URN from either its numeric id (`104906`) or the URN itself. */
export const ConversionRule = Schema.transform(
  Schema.String.pipe(
    Schema.filter((s) => RULE_ID.test(s.trim()) || RULE_URN.test(s.trim()), {
      message: (issue) =>
        `expected a conversion rule id (digits) or urn:lla:llaPartnerConversion:<id>, got ${
          JSON.stringify(issue.actual)
        }`
    })
  ),
  Schema.String.pipe(Schema.pattern(RULE_URN)),
  {
    strict: true,
    decode: (s) => (RULE_ID.test(s.trim()) ? `${CONVERSION_URN_PREFIX}${s.trim()}` : s.trim()),
    encode: (urn) => urn
  }
).annotations({ identifier: "ConversionRule" })

/** An instance's settings. The client secret and refresh token are `Redacted` once decoded. */
export const Settings = Schema.Struct({
  /** OAuth client id of the LinkedIn developer application. */
  clientId: Schema.NonEmptyString.annotations({ message: () => "the LinkedIn client id must not be empty" }),
  /** OAuth client secret. (The message never repeats the value.) */
  clientSecret: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the LinkedIn client secret must not be empty" })
  ),
  /** Programmatic refresh token of a member with a role on the ad account (scope `rw_conversions`). */
  refreshToken: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the LinkedIn refresh token must not be empty" })
  ),
  /** Canonical event name → conversion rule (id or URN). Events not listed are not sent. */
  conversionRules: Schema.optionalWith(Schema.Record({ key: Schema.String, value: ConversionRule }), {
    default: () => ({})
  }),
  /** API base, `https://api.linkedin.com/rest` (default) or a sandbox. */
  apiBase: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_API_BASE }),
  /** OAuth token endpoint, `https://www.linkedin.com/oauth/v2/accessToken` (default) or a sandbox. */
  tokenUrl: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_TOKEN_URL }),
  /** Conversion events per request (LinkedIn: at most 5000). */
  maxEventsPerRequest: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, MAX_EVENTS_PER_REQUEST)), {
    default: () => MAX_EVENTS_PER_REQUEST
  })
}).annotations({ identifier: "LinkedInSettings" })
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv`. */
export interface EnvOptions {
  /** Config namespace (default `LINKEDIN`): `<namespace>_CLIENT_ID`, `<namespace>_CLIENT_SECRET`, … */
  readonly namespace?: string
  /** Canonical event → conversion rule id or URN; `<namespace>_CONVERSION_RULES` entries override these. */
  readonly conversionRules?: Readonly<Record<string, string>>
  /** API base used when `<namespace>_API_BASE` is not set. */
  readonly apiBase?: string
  /** Token endpoint used when `<namespace>_TOKEN_URL` is not set. */
  readonly tokenUrl?: string
  readonly maxEventsPerRequest?: number
}

/** Parses `purchase=104906,sign_up=urn:lla:llaPartnerConversion:104907` (whitespace around entries ignored). */
export const parseConversionRules = (text: string): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const entry of text.split(/[,\n]/)) {
    const t = entry.trim()
    if (t === "") continue
    const eq = t.indexOf("=")
    // A malformed entry is kept as is so the settings schema reports it with the whole value.
    if (eq <= 0) out[t] = ""
    else out[t.slice(0, eq).trim()] = t.slice(eq + 1).trim()
  }
  return out
}

/**
 * The instance's settings read through `Config`, in their encoded form: `LINKEDIN_CLIENT_ID`,
 * `LINKEDIN_CLIENT_SECRET` (secret), `LINKEDIN_REFRESH_TOKEN` (secret), optional `LINKEDIN_API_BASE`,
 * `LINKEDIN_TOKEN_URL` and `LINKEDIN_CONVERSION_RULES` (`event=ruleId,…`); everything else from `options`.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { conversionRules, namespace = "LINKEDIN", ...rest } = options
  const config = Config.all({
    clientId: Config.string("CLIENT_ID").pipe(Config.withDescription("LinkedIn developer application client id")),
    clientSecret: Config.redacted("CLIENT_SECRET").pipe(
      Config.withDescription("LinkedIn developer application client secret")
    ),
    refreshToken: Config.redacted("REFRESH_TOKEN").pipe(
      Config.withDescription("LinkedIn programmatic refresh token (member with rw_conversions on the ad account)")
    ),
    apiBase: Config.option(
      Config.string("API_BASE").pipe(Config.withDescription(`LinkedIn REST API base (default ${DEFAULT_API_BASE})`))
    ),
    tokenUrl: Config.option(
      Config.string("TOKEN_URL").pipe(
        Config.withDescription(`LinkedIn OAuth token endpoint (default ${DEFAULT_TOKEN_URL})`)
      )
    ),
    rules: Config.option(
      Config.string("CONVERSION_RULES").pipe(
        Config.withDescription("Canonical event → conversion rule id, as event=id pairs separated by commas")
      )
    )
  })
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.map(({ apiBase, clientId, clientSecret, refreshToken, rules, tokenUrl }): unknown => {
      const fromEnv = Option.isSome(rules) ? parseConversionRules(rules.value) : {}
      const merged = { ...conversionRules, ...fromEnv }
      return {
        ...rest,
        clientId: clientId.trim(),
        // Schema.Redacted decodes from the plain string, so the encoded object carries it.
        clientSecret: Redacted.value(clientSecret).trim(),
        refreshToken: Redacted.value(refreshToken).trim(),
        ...(Object.keys(merged).length > 0 ? { conversionRules: merged } : {}),
        ...(Option.isSome(apiBase) ? { apiBase: apiBase.value } : {}),
        ...(Option.isSome(tokenUrl) ? { tokenUrl: tokenUrl.value } : {})
      }
    })
  )
}

/** `<apiBase>/conversionEvents`. */
export const endpointOf = (settings: Settings): string => `${settings.apiBase.replace(/\/+$/, "")}/conversionEvents`

// ---------------------------------------------------------------------------------------------------------------
// Wire payload and transform
// ---------------------------------------------------------------------------------------------------------------

/** `user.userIds[].idType` values this plugin sends. */
export type IdType = "SHA256_EMAIL" | "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID"

export interface UserId {
  readonly idType: IdType
  readonly idValue: string
}

export interface UserInfo {
  readonly firstName?: string
  readonly lastName?: string
  readonly companyName?: string
  readonly title?: string
  /** ISO 3166-1 alpha-2, upper case. */
  readonly countryCode?: string
}

/** One conversion event exactly as sent in `elements`. */
export interface ConversionEvent {
  /** `urn:lla:llaPartnerConversion:<rule id>`. */
  readonly conversion: string
  /** Epoch milliseconds. */
  readonly conversionHappenedAt: number
  /** Only when the event has a value. `amount` is a decimal string (`"49.9"`, `"129.0"`). */
  readonly conversionValue?: { readonly currencyCode: string; readonly amount: string }
  /** The TrackLayer dedup key (deduplicates with the Insight Tag and with our own retries). */
  readonly eventId: string
  readonly user: { readonly userIds: ReadonlyArray<UserId>; readonly userInfo?: UserInfo }
}

/**
 * An amount as LinkedIn's decimal string: at most six decimals, trailing zeros removed but one decimal kept, as in
 * LinkedIn's examples (`129` → `"129.0"`, `49.9` → `"49.9"`, `0.1 + 0.2` → `"0.3"`). Undefined for negative,
 * non-finite or absurdly large amounts (≥ 10^15, beyond exact float precision).
 */
export const formatAmount = (value: number): string | undefined => {
  if (!Number.isFinite(value) || value < 0 || value >= 1e15) return undefined
  const [whole, fraction = ""] = value.toFixed(6).split(".")
  const trimmed = fraction.replace(/0+$/, "")
  return `${whole}.${trimmed === "" ? "0" : trimmed}`
}

const text = (u: unknown): string | undefined => {
  if (typeof u !== "string") return undefined
  const t = u.trim()
  return t === "" ? undefined : t
}

const recordOf = (u: unknown): Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>) : {}

/**
 * `SHA256_EMAIL` ids of emails, in order (raw emails normalised and hashed; existing hashes passed through: LinkedIn's
 * normalisation, trim + lowercase, is the one TrackLayer's join keys were made with), deduplicated.
 */
const sha256EmailIds = (values: ReadonlyArray<string>): ReadonlyArray<UserId & { readonly idType: "SHA256_EMAIL" }> => {
  const seen = new Set<string>()
  const out: Array<UserId & { readonly idType: "SHA256_EMAIL" }> = []
  for (const v of values) {
    const h = Pii.LinkedIn.email(v)?.hash
    if (h === undefined || seen.has(h)) continue
    seen.add(h)
    out.push({ idType: "SHA256_EMAIL", idValue: h })
  }
  return out
}

/** SHA-256 email ids of the person: every email of the identity and of the event, deduplicated. */
const emailIds = (event: DeliveryEvent): ReadonlyArray<UserId> => {
  const user = event.event.user
  return sha256EmailIds([
    ...event.identity.emails,
    ...(user?.email !== undefined ? [user.email] : []),
    ...event.identity.emailSha256,
    ...(user?.email_sha256 !== undefined ? [user.email_sha256] : [])
  ])
}

const userInfoOf = (event: DeliveryEvent): UserInfo => {
  const e = event.event
  const properties = recordOf(e.properties)
  const traits = recordOf(e.user_properties)
  const firstName = text(e.user?.first_name)
  const lastName = text(e.user?.last_name)
  const companyName = text(properties.company) ?? text(traits.company)
  const title = text(properties.job_title) ?? text(traits.job_title) ?? text(traits.title)
  const countryCode = e.user?.country !== undefined ? Pii.Google.regionCode(e.user.country) : undefined
  return {
    ...(firstName !== undefined ? { firstName } : {}),
    ...(lastName !== undefined ? { lastName } : {}),
    ...(companyName !== undefined ? { companyName } : {}),
    ...(title !== undefined ? { title } : {}),
    ...(countryCode !== undefined ? { countryCode } : {})
  }
}

const invalid = (detail: string) => Either.left(new Destination.SkipReason({ reason: "invalid", detail }))

/** Pure: the exact conversion event for one stored event, or why it is skipped. */
export const transform = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<ConversionEvent, Destination.SkipReason> => {
  const conversion = settings.conversionRules[event.name]
  if (conversion === undefined) {
    return Either.left(
      new Destination.SkipReason({
        reason: "not_mapped",
        detail: `no LinkedIn conversion rule for "${event.name}" (conversionRules maps ${
          Object.keys(settings.conversionRules).sort().join(", ") || "no events"
        })`
      })
    )
  }
  const fatId = text(event.identity.clickIds.li_fat_id) ?? text(event.event.context?.click_ids?.li_fat_id)
  const userIds: ReadonlyArray<UserId> = [
    ...emailIds(event),
    ...(fatId !== undefined ? [{ idType: "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID" as const, idValue: fatId }] : [])
  ]
  const userInfo = userInfoOf(event)
  if (
    userIds.length === 0 &&
    (userInfo.firstName === undefined || userInfo.lastName === undefined || userInfo.companyName === undefined)
  ) {
    const missing = [
      userInfo.firstName === undefined ? "first name" : undefined,
      userInfo.lastName === undefined ? "last name" : undefined,
      userInfo.companyName === undefined ? "company" : undefined
    ].filter((x) => x !== undefined)
    return invalid(
      `LinkedIn needs an email or li_fat_id, or first name + last name + company: no usable email or li_fat_id, ` +
        `and no ${missing.join(", ")}`
    )
  }
  const properties = recordOf(event.event.properties)
  let conversionValue: ConversionEvent["conversionValue"]
  if (properties.value !== undefined && properties.value !== null) {
    const value = properties.value
    const currency = properties.currency
    if (typeof value !== "number") return invalid(`value must be a number, got ${JSON.stringify(value)}`)
    if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) {
      return invalid(`a value needs an ISO 4217 currency, got ${JSON.stringify(currency ?? null)}`)
    }
    const amount = formatAmount(value)
    if (amount === undefined) return invalid(`value ${value} cannot be sent as a LinkedIn amount (must be ≥ 0)`)
    conversionValue = { currencyCode: currency, amount }
  }
  return Either.right({
    conversion,
    conversionHappenedAt: Math.round(event.timestamp),
    ...(conversionValue !== undefined ? { conversionValue } : {}),
    eventId: event.dedupKey,
    user: { userIds, ...(Object.keys(userInfo).length > 0 ? { userInfo } : {}) }
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------------------------

/** `Retry-After` as milliseconds (seconds or an HTTP date), or undefined. */
export const parseRetryAfter = (header: string | undefined, nowMs: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

const credentialsOf = (settings: Settings): OAuth.Credentials => ({
  tokenUrl: settings.tokenUrl,
  clientId: settings.clientId,
  clientSecret: settings.clientSecret,
  refreshToken: settings.refreshToken
})

interface Reply {
  readonly status: number
  readonly json: Record<string, unknown>
  readonly text: string
  readonly retryAfterMs: number | undefined
  readonly info: ResponseInfo
}

interface SendContext {
  readonly settings: Settings
  readonly credentials: OAuth.Credentials
  /** Secrets that must never leave the plugin (grows with every access token used). */
  readonly secrets: Array<string>
}

const redact = (ctx: SendContext, s: string): string => OAuth.redactAll(s, ctx.secrets)
const excerpt = (ctx: SendContext, s: string): string => redact(ctx, s).slice(0, MAX_BODY_EXCERPT)

/** Where a BATCH_CREATE goes: the Conversions API, or the users of one DMP segment. */
type Target =
  | { readonly kind: "conversions"; readonly url: string }
  | { readonly kind: "segment"; readonly url: string; readonly segmentId: string }

const post = Effect.fn("LinkedIn.post")(function*(
  target: Target,
  elements: ReadonlyArray<unknown>,
  token: string,
  ctx: SendContext
) {
  const body = JSON.stringify({ elements })
  yield* Effect.annotateCurrentSpan({ "linkedin.elements": elements.length, "linkedin.request_bytes": body.length })
  const transport = (e: HttpClientError.HttpClientError) =>
    new Destination.RetryableError({ message: excerpt(ctx, `LinkedIn request failed: ${e.message}`) })
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post(target.url).pipe(
      HttpClientRequest.setHeaders({
        Authorization: `Bearer ${token}`,
        "LinkedIn-Version": LINKEDIN_API_VERSION,
        "X-Restli-Protocol-Version": RESTLI_PROTOCOL_VERSION,
        "X-RestLi-Method": "BATCH_CREATE"
      }),
      HttpClientRequest.bodyText(body, "application/json"),
      HttpClientRequest.acceptJson
    )
  ).pipe(Effect.mapError(transport))
  const text = yield* response.text.pipe(Effect.mapError(transport))
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
    text,
    retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
    info: { status: response.status, body: excerpt(ctx, text) }
  } satisfies Reply
})

/** `message` (and `code` / `serviceErrorCode`) of a Rest.li error object. */
const errorText = (u: unknown): string => {
  const e = recordOf(u)
  const message = typeof e.message === "string" ? e.message : undefined
  const code = typeof e.code === "string" ? e.code : undefined
  const service = typeof e.serviceErrorCode === "number" ? e.serviceErrorCode : undefined
  const tags = [code, service !== undefined ? `serviceErrorCode ${service}` : undefined].filter((x) => x)
  return `${message ?? "no message"}${tags.length > 0 ? ` (${tags.join(", ")})` : ""}`
}

/** Per-element statuses → outcomes, in request order. */
const perElement = (
  elements: ReadonlyArray<unknown>,
  answered: ReadonlyArray<unknown>,
  reply: Reply,
  ctx: SendContext
): ReadonlyArray<Outcome> =>
  elements.map((_, i) => {
    if (i >= answered.length) {
      // Resending is safe: LinkedIn deduplicates on eventId.
      return Destination.Retry(`LinkedIn answered no status for element ${i}`, undefined, reply.info)
    }
    const element = recordOf(answered[i])
    const info: ResponseInfo = { status: reply.status, body: excerpt(ctx, JSON.stringify(element)) }
    const status = typeof element.status === "number" ? element.status : undefined
    if (status !== undefined && status >= 200 && status < 300) return Destination.Accepted(info)
    // The Rest.li error is nested in `error`; some answers put message/code on the element itself.
    const reason = redact(ctx, `${status ?? "?"} ${errorText(element.error ?? element)}`)
    if (status === undefined || status === 429 || status === 408 || status >= 500) {
      return Destination.Retry(`LinkedIn element ${reason}`, reply.retryAfterMs, info)
    }
    return Destination.Rejected(reason, info)
  })

/** Classifies one answer: per-element outcomes, or a typed error for the whole request. */
const classify = (
  target: Target,
  elements: ReadonlyArray<unknown>,
  reply: Reply,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError> => {
  const s = reply.status
  const fields = { status: s, body: reply.info.body }
  const answered = reply.json.elements
  if (Array.isArray(answered) && ((s >= 200 && s < 300) || s === 400 || s === 207)) {
    return Effect.succeed(perElement(elements, answered, reply, ctx))
  }
  if (s >= 200 && s < 300) return Effect.succeed(elements.map(() => Destination.Accepted(reply.info)))
  const what = excerpt(ctx, `LinkedIn answered ${s}: ${errorText(reply.json)}`)
  if (s === 401 || s === 403) {
    return Effect.fail(
      new Destination.AuthFailedError({
        message: s === 401 ?
          `${what}; the access token was refused again after a refresh` :
          target.kind === "conversions" ?
          `${what}; the member needs rw_conversions and a role on the ad account` :
          `${what}; the member needs rw_dmp_segments and a role other than VIEWER on the segment's ad account`,
        ...fields
      })
    )
  }
  if (s === 404 && target.kind === "segment") {
    // An unknown segment is a routing problem an operator must fix (or a segment created seconds ago): drop nothing.
    return Effect.fail(
      new Destination.AuthFailedError({
        message: `${what}; DMP segment ${target.segmentId} was not found at ${target.url} (check the audience ` +
          "routing; LinkedIn takes about 5 seconds to make a new segment available)",
        ...fields
      })
    )
  }
  if (s === 404 || s === 405 || s === 426) {
    // A wrong endpoint or an API version LinkedIn no longer serves: an operator must act; drop nothing.
    return Effect.fail(
      new Destination.AuthFailedError({
        message: `${what}; check apiBase (${target.url}) and LinkedIn-Version ${LINKEDIN_API_VERSION}`,
        ...fields
      })
    )
  }
  if (s === 429) {
    return Effect.fail(
      new Destination.RetryableError({
        message: what,
        retryAfterMs: reply.retryAfterMs ?? DEFAULT_THROTTLE_PAUSE_MS,
        ...fields
      })
    )
  }
  if (s === 408 || s >= 500) {
    return Effect.fail(
      new Destination.RetryableError({
        message: what,
        ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
        ...fields
      })
    )
  }
  return Effect.fail(new Destination.PayloadInvalidError({ message: what, ...fields }))
}

/** One request (two when LinkedIn refuses the cached token: refresh once, then retry once). */
const exchange = (
  target: Target,
  elements: ReadonlyArray<unknown>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const token = yield* OAuth.accessToken(ctx.credentials)
    ctx.secrets.push(token)
    const reply = yield* post(target, elements, token, ctx)
    if (reply.status !== 401) return yield* classify(target, elements, reply, ctx)
    yield* OAuth.invalidate(ctx.credentials, token)
    const fresh = yield* OAuth.accessToken(ctx.credentials)
    ctx.secrets.push(fresh)
    return yield* classify(target, elements, yield* post(target, elements, fresh, ctx), ctx)
  })

/** `exchange` for a later chunk: request-level failures become per-event outcomes (auth failures still stop). */
const exchangeRest = (target: Target, elements: ReadonlyArray<unknown>, ctx: SendContext) => {
  const info = (e: { readonly status?: number | undefined; readonly body?: string | undefined }) =>
    e.status !== undefined ? { status: e.status, body: e.body ?? "" } : undefined
  return exchange(target, elements, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) => Effect.succeed(elements.map(() => Destination.Retry(e.message, e.retryAfterMs, info(e)))),
      PayloadInvalidError: (e) => Effect.succeed(elements.map(() => Destination.Rejected(e.message, info(e))))
    })
  )
}

/**
 * Sends one batch as BATCH_CREATE (several requests only when it exceeds `maxEventsPerRequest`). One outcome per
 * prepared event, in order.
 */
export const send = Effect.fn("LinkedIn.send")(function*(
  batch: ReadonlyArray<Destination.Prepared<ConversionEvent>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("linkedin.batch_size", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  const credentials = credentialsOf(settings)
  const ctx: SendContext = { settings, credentials, secrets: [...OAuth.secretsOf(credentials)] }
  const payloads = batch.map((p) => p.payload)
  const outcomes: Array<Outcome> = []
  for (let i = 0; i < payloads.length; i += settings.maxEventsPerRequest) {
    const chunk = payloads.slice(i, i + settings.maxEventsPerRequest)
    // Until something was delivered, a whole-request failure is the batch's failure.
    const target: Target = { kind: "conversions", url: endpointOf(settings) }
    outcomes.push(...(yield* (i === 0 ? exchange(target, chunk, ctx) : exchangeRest(target, chunk, ctx))))
  }
  return outcomes as ReadonlyArray<Outcome>
})

// ---------------------------------------------------------------------------------------------------------------
// Audiences (plugin API 1.2): DMP segment users
// ---------------------------------------------------------------------------------------------------------------

/** One person as a DMP segment user (the audience member payload): their `SHA256_EMAIL` ids. */
export interface SegmentMember {
  readonly userIds: ReadonlyArray<{ readonly idType: "SHA256_EMAIL"; readonly idValue: string }>
}

/** One element of the BATCH_CREATE on `/dmpSegments/{id}/users`, exactly as sent. */
export interface SegmentUserElement extends SegmentMember {
  readonly action: "ADD" | "REMOVE"
}

const SEGMENT_ID = /^\d{1,20}$/

/** `<apiBase>/dmpSegments/<segment id>/users`. */
export const segmentUsersUrl = (settings: Settings, segmentId: string): string =>
  `${settings.apiBase.replace(/\/+$/, "")}/dmpSegments/${encodeURIComponent(segmentId)}/users`

/**
 * Pure: the person's `SHA256_EMAIL` ids (every email known for them, raw ones normalised with `Pii.LinkedIn` as for
 * conversions, join-key hashes passed through, deduplicated). No email → skipped `invalid`: hashed emails are the
 * only person identifier TrackLayer has that LinkedIn matches segment users on.
 */
export const audienceMember = (
  change: Destination.AudienceChange,
  _settings: Settings
): Either.Either<SegmentMember, Destination.SkipReason> => {
  const userIds = sha256EmailIds([...change.identity.emails, ...change.identity.emailSha256])
  if (userIds.length === 0) {
    return invalid("no email usable for a LinkedIn DMP segment (LinkedIn matches segment users on SHA-256 emails)")
  }
  return Either.right({ userIds })
}

/**
 * Sends one batch of audience changes as BATCH_CREATE on `/dmpSegments/{id}/users`: `add` → elements with
 * `action: "ADD"`, `remove` → `"REMOVE"`, at most 5,000 per request, with the conversions' OAuth handling (refresh
 * and one retry on 401) and answers (per-element statuses; 404 on the segment → `AuthFailedError`). A segment id that
 * is not digits is `Rejected` without a request. One outcome per change, in order.
 */
export const sendAudience = Effect.fn("LinkedIn.sendAudience")(function*(
  batch: ReadonlyArray<Destination.PreparedMember<SegmentMember>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("linkedin.batch_size", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  const credentials = credentialsOf(settings)
  const ctx: SendContext = { settings, credentials, secrets: [...OAuth.secretsOf(credentials)] }
  const outcomes: Array<Outcome | undefined> = batch.map(() => undefined)
  // The core gives one segment and one operation per batch; a mixed batch is still grouped correctly.
  const groups = new Map<string, Array<number>>()
  batch.forEach((p, i) => {
    const key = `${p.change.op}\u0000${p.change.audienceId}`
    groups.set(key, [...(groups.get(key) ?? []), i])
  })
  let delivered = false
  for (const indexes of groups.values()) {
    const { audienceId: segmentId, op } = batch[indexes[0]!]!.change
    if (!SEGMENT_ID.test(segmentId)) {
      const reason = `LinkedIn DMP segment ids are digits; ${
        JSON.stringify(segmentId)
      } is not one (check the audience routing in the config)`
      indexes.forEach((i) => (outcomes[i] = Destination.Rejected(reason)))
      delivered = true
      continue
    }
    const target: Target = { kind: "segment", url: segmentUsersUrl(settings, segmentId), segmentId }
    const action = op === "add" ? "ADD" : "REMOVE"
    for (let k = 0; k < indexes.length; k += MAX_SEGMENT_USERS_PER_REQUEST) {
      const part = indexes.slice(k, k + MAX_SEGMENT_USERS_PER_REQUEST)
      const elements: ReadonlyArray<SegmentUserElement> = part.map((i) => ({
        action,
        userIds: batch[i]!.member.userIds
      }))
      // Until something has an outcome, a whole-request failure is the batch's failure.
      const result = yield* (delivered ? exchangeRest(target, elements, ctx) : exchange(target, elements, ctx))
      part.forEach((i, j) => (outcomes[i] = result[j]))
      delivered = true
    }
  }
  return outcomes as ReadonlyArray<Outcome>
})

/**
 * Audience request limits: 5,000 users per BATCH_CREATE (as partners document it; LinkedIn's page gives none) and
 * 4,000,000 bytes (an element with one id is about 110 bytes).
 */
export const audienceLimits: Destination.Limits = {
  maxEventsPerRequest: MAX_SEGMENT_USERS_PER_REQUEST,
  maxBytesPerRequest: 4_000_000
}

/** The audience capability (plugin API 1.2): LinkedIn DMP segments. */
export const audiences: Destination.AudienceCapability<Settings, SegmentMember> = {
  limits: audienceLimits,
  member: audienceMember,
  send: sendAudience
}

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/**
 * Request limits: 5000 events (LinkedIn's batch limit). LinkedIn documents no body-size limit; 4 MB keeps a full
 * batch of typical elements (~400–700 bytes) in one request while bounding memory.
 */
export const limits: Destination.Limits = { maxEventsPerRequest: MAX_EVENTS_PER_REQUEST, maxBytesPerRequest: 4_000_000 }

/** The LinkedIn destination plugin (plugin API 1.2: conversions and DMP segment audiences). */
export const plugin: Destination.DestinationPlugin<Settings, ConversionEvent> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  // 1.2: the optional `audiences` capability.
  pluginApi: "^1.2.0",
  settings: Settings,
  purposes: ["advertising"],
  limits,
  window: Duration.days(WINDOW_DAYS),
  transform,
  send,
  audiences,
  sandbox: (options) => LinkedInSandbox.start(options)
}

/** Options of `destination`. */
export interface DestinationOptions {
  /** Instance id (default `linkedin`). */
  readonly id?: string
  /** Canonical event names routed here (default: all; unmapped ones are skipped as `not_mapped`). */
  readonly events?: ReadonlyArray<string>
  readonly startFrom?: Destination.StartFrom
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
  /** Consent purposes this instance needs (default `["advertising"]`). */
  readonly purposes?: ReadonlyArray<string>
}

/** A configured LinkedIn destination instance for `tracklayer.config.ts`. */
export const destination = (
  options: DestinationOptions = {}
): Destination.DestinationInstance<Settings, ConversionEvent> =>
  Destination.instance({
    id: options.id ?? "linkedin",
    plugin,
    settings: options.settings ?? settingsFromEnv(),
    ...(options.events !== undefined ? { events: options.events } : {}),
    ...(options.startFrom !== undefined ? { startFrom: options.startFrom } : {}),
    ...(options.purposes !== undefined ? { purposes: options.purposes } : {})
  })
