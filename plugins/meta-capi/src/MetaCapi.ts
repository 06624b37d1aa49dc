/**
 * The Meta Conversions API destination: canonical events → `POST https://graph.facebook.com/{version}/{pixel}/events`,
 * and audience membership → the Custom Audience users edge (`POST` / `DELETE /{version}/{audience id}/users`).
 *
 * `transform` is pure and returns the exact wire event (`user_data` normalised and hashed with `Pii.Meta`, times in
 * seconds, the dedup key as `event_id`). `send` filters what Meta would refuse for the whole request (an event older
 * than 7 days fails every event of its request), posts one form-encoded request per batch as Meta documents it
 * (`data`, `access_token`, `test_event_code`), and reads every documented error: transient codes and throttling are
 * retryable, token and permission errors pause the destination, an invalid parameter is narrowed down to the event(s)
 * that cause it by splitting the request. The access token never appears in a URL, an outcome, an error or an excerpt.
 *
 * `audiences` (plugin API 1.2): `member` is pure and gives one `["EMAIL", "PHONE"]` row of SHA-256 hashes per person
 * (normalised with `Pii.Meta`, as `user_data`); `send` adds (`POST`) or removes (`DELETE`) the rows of one audience in
 * requests of at most 10,000, with the same token and the same Graph error classes as the events edge.
 */
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Clock, Config, Duration, Effect, Either, Option, Random, Redacted, Schema } from "effect"
import * as MetaCapiSandbox from "./Sandbox.js"

type DeliveryEvent = Destination.DeliveryEvent
type Outcome = Destination.Outcome
type ResponseInfo = Destination.ResponseInfo
type SendError = Destination.SendError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** The Graph API version this plugin speaks (v27.0, released 2026-11-04). Bump deliberately, with a CHANGELOG note. */
export const META_GRAPH_API_VERSION = "v27.0"
/** Graph API base URL (the version and pixel id are appended). */
export const DEFAULT_ENDPOINT = "https://graph.facebook.com"

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-meta-capi"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.2.0"

/** Meta: at most 1000 events in `data`. */
export const MAX_EVENTS_PER_REQUEST = 1000
/** How old an event Meta accepts (by `event_time`): 7 days. */
export const WINDOW = Duration.days(7)
/** Events this close to the 7-day limit at send time are refused locally (clock skew between us and Meta). */
export const WINDOW_MARGIN_MS = 60_000
/** Events further in the future than this at send time are held back (Retry) instead of sent. */
export const MAX_FUTURE_SKEW_MS = 60_000
/** Pause after a throttling error when Meta gives no hint (Retry-After or `x-business-use-case-usage`). */
export const THROTTLE_BACKOFF_MS = 60_000
/** Longest response excerpt kept in an outcome or error. */
export const MAX_BODY_EXCERPT = 2000
/** Most HTTP requests one `send` call makes (invalid-parameter splits and chunks included). */
export const MAX_REQUESTS_PER_SEND = 64

/** Canonical event → Meta standard event, by default. Events not listed are not sent. */
export const DEFAULT_EVENT_MAPPING: Readonly<Record<string, string>> = {
  purchase: "Purchase",
  sign_up: "CompleteRegistration",
  start_trial: "StartTrial",
  qualified_lead: "Lead",
  subscription_renewed: "Subscribe"
}

/** `action_source` values Meta accepts. */
export const ACTION_SOURCES = [
  "website",
  "app",
  "email",
  "phone_call",
  "chat",
  "physical_store",
  "system_generated",
  "business_messaging",
  "other"
] as const
export type ActionSource = (typeof ACTION_SOURCES)[number]

/** Meta: at most 10,000 users per request to a Custom Audience's users edge. */
export const MAX_AUDIENCE_MEMBERS_PER_REQUEST = 10_000
/**
 * The multi-key schema of every audience row this plugin sends: SHA-256 of the normalised email and phone. One schema
 * for every upload, since Meta refuses to mix data sources in one audience (single-key hashes vs multi-key rows).
 */
export const AUDIENCE_SCHEMA = ["EMAIL", "PHONE"] as const

/** Meta's code for the United States in `data_processing_options_country`; 0 asks Meta to geolocate. */
export const LDU_COUNTRY_US = 1
/** Meta's code for California in `data_processing_options_state`; 0 asks Meta to geolocate. */
export const LDU_STATE_CALIFORNIA = 1000

/**
 * Graph error codes that mean "back off": app, user, page, account, custom-audience (80003) and ads-account (80004)
 * rate limits.
 */
export const THROTTLE_CODES: ReadonlyArray<number> = [4, 17, 32, 341, 613, 80003, 80004]
/** Graph error codes that mean "retry": unknown error, service unavailable. */
export const TRANSIENT_CODES: ReadonlyArray<number> = [1, 2]
/** Graph error codes that mean the token or its permissions are wrong: pause the destination. */
export const AUTH_CODES: ReadonlyArray<number> = [102, 104, 190, 3, 10]

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

/** A region whose people's events carry Limited Data Use: an ISO 3166-1 alpha-2 country and, optionally, a state. */
export const LduRegion = Schema.Struct({
  country: Schema.String.pipe(
    Schema.pattern(/^[A-Za-z]{2}$/, { message: () => "expected an ISO 3166-1 alpha-2 country code (US)" })
  ),
  state: Schema.optionalWith(
    Schema.String.pipe(Schema.pattern(/^[A-Za-z]{2}$/, { message: () => "expected a two-letter state code (CA)" })),
    { exact: true }
  )
}).annotations({ identifier: "LduRegion" })
export type LduRegion = typeof LduRegion.Type

/** An instance's settings. The access token is `Redacted` once decoded. */
export const Settings = Schema.Struct({
  /** The pixel (dataset) id: digits. */
  pixelId: Schema.String.pipe(Schema.pattern(/^\d{1,32}$/, { message: () => "the Meta pixel id must be digits" })),
  /** System-user access token. (The message never repeats the value.) */
  accessToken: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the Meta access token must not be empty" })
  ),
  /** Graph API base URL (default `https://graph.facebook.com`), or a sandbox. */
  endpoint: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_ENDPOINT }),
  /** Events Manager "Test events" code: every request carries it (events go to the test tool, not to ads). */
  testEventCode: Schema.optionalWith(Schema.NonEmptyString, { exact: true }),
  /** Canonical event name → Meta event name. */
  eventMapping: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.NonEmptyString }), {
    default: () => DEFAULT_EVENT_MAPPING
  }),
  /** Canonical event name → `action_source`; events not listed choose automatically (see `actionSourceOf`). */
  actionSources: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.Literal(...ACTION_SOURCES) }), {
    default: () => ({})
  }),
  /** Regions whose events are sent with `data_processing_options: ["LDU"]`. */
  lduRegions: Schema.optionalWith(Schema.Array(LduRegion), { default: () => [] }),
  /** Also mark events without a known country as LDU (Meta geolocates them: country 0, state 0). */
  lduWhenLocationUnknown: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Events per HTTP request (Meta: at most 1000). */
  maxEventsPerRequest: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, MAX_EVENTS_PER_REQUEST)), {
    default: () => MAX_EVENTS_PER_REQUEST
  })
}).annotations({ identifier: "MetaCapiSettings" })
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv`. */
export interface EnvOptions {
  /** Config namespace; env vars are `<namespace>_ACCESS_TOKEN`, `_PIXEL_ID`, `_ENDPOINT`, `_TEST_EVENT_CODE`. */
  readonly namespace?: string
  readonly eventMapping?: Readonly<Record<string, string>>
  readonly actionSources?: Readonly<Record<string, ActionSource>>
  readonly lduRegions?: ReadonlyArray<LduRegion>
  readonly lduWhenLocationUnknown?: boolean
  readonly maxEventsPerRequest?: number
  /** Test event code used when `<namespace>_TEST_EVENT_CODE` is not set. */
  readonly testEventCode?: string
}

/**
 * The instance's settings read through `Config`, in their encoded form: `META_ACCESS_TOKEN` (secret),
 * `META_PIXEL_ID`, optional `META_ENDPOINT` (base URL, e.g. the sandbox) and `META_TEST_EVENT_CODE`; everything else
 * comes from `options`.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { namespace = "META", testEventCode, ...rest } = options
  const config = Config.all({
    accessToken: Config.redacted("ACCESS_TOKEN").pipe(
      Config.withDescription("Meta system-user access token for the Conversions API")
    ),
    pixelId: Config.string("PIXEL_ID").pipe(Config.withDescription("Meta pixel (dataset) id")),
    endpoint: Config.option(
      Config.string("ENDPOINT").pipe(Config.withDescription(`Graph API base URL (default ${DEFAULT_ENDPOINT})`))
    ),
    testEventCode: Config.option(
      Config.string("TEST_EVENT_CODE").pipe(
        Config.withDescription("Events Manager test event code: events go to Test Events only")
      )
    )
  })
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.map(({ accessToken, endpoint, pixelId, testEventCode: fromEnv }): unknown => {
      const code = Option.isSome(fromEnv) && fromEnv.value.trim() !== "" ? fromEnv.value.trim() : testEventCode
      return {
        ...rest,
        pixelId: pixelId.trim(),
        // Schema.Redacted decodes from the plain string, so the encoded object carries it.
        accessToken: Redacted.value(accessToken).trim(),
        ...(Option.isSome(endpoint) ? { endpoint: endpoint.value } : {}),
        ...(code !== undefined ? { testEventCode: code } : {})
      }
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Wire payload and transform
// ---------------------------------------------------------------------------------------------------------------

/** `user_data` exactly as sent: contact fields SHA-256 (64 lowercase hex), technical ids in clear. */
export interface MetaUserData {
  readonly em?: ReadonlyArray<string>
  readonly ph?: ReadonlyArray<string>
  readonly fn?: string
  readonly ln?: string
  readonly db?: string
  readonly ge?: string
  readonly ct?: string
  readonly st?: string
  readonly zp?: string
  readonly country?: string
  readonly external_id?: string
  readonly client_ip_address?: string
  readonly client_user_agent?: string
  readonly fbc?: string
  readonly fbp?: string
  readonly subscription_id?: string
}

export interface MetaContent {
  readonly id: string
  readonly quantity: number
}

/** An experiment the person was exposed to, as sent in `custom_data.experiments`. */
export interface MetaExperiment {
  readonly experiment_key: string
  readonly variant: string
}

export interface MetaCustomData {
  readonly value?: number
  readonly currency?: string
  readonly order_id?: string
  readonly content_ids?: ReadonlyArray<string>
  readonly contents?: ReadonlyArray<MetaContent>
  readonly content_type?: "product"
  /** Custom properties: the first experiment of `context.experiments`. */
  readonly experiment_key?: string
  readonly variant?: string
  /** Custom property: every experiment, only when there are several. */
  readonly experiments?: ReadonlyArray<MetaExperiment>
}

/** One server event exactly as sent in `data`. */
export interface MetaServerEvent {
  readonly event_name: string
  /** Unix seconds (integer). */
  readonly event_time: number
  /** The TrackLayer dedup key (Meta dedups `event_id` + `event_name` within 48 h, with the pixel too). */
  readonly event_id: string
  readonly action_source: ActionSource
  readonly event_source_url?: string
  readonly user_data: MetaUserData
  readonly custom_data?: MetaCustomData
  /** `[]` or `["LDU"]`; always sent. */
  readonly data_processing_options: ReadonlyArray<"LDU">
  readonly data_processing_options_country?: number
  readonly data_processing_options_state?: number
}

const skip = (reason: Destination.SkipReason["reason"], detail: string) =>
  Either.left(new Destination.SkipReason({ reason, detail }))

const str = (u: unknown): string | undefined => (typeof u === "string" && u.trim() !== "" ? u : undefined)

const uniq = (xs: ReadonlyArray<string>): ReadonlyArray<string> => [...new Set(xs)]

const httpUrl = (s: string | undefined): string | undefined => {
  if (s === undefined) return undefined
  try {
    const u = new URL(s)
    return u.protocol === "https:" || u.protocol === "http:" ? s : undefined
  } catch {
    return undefined
  }
}

/** `fbc` as Meta documents it: `fb.<subdomain index>.<click time ms>.<fbclid>`. */
const FBC = /^fb\.\d\.\d{13}\.\S+$/
/** `fbp`: `fb.<subdomain index>.<creation time ms>.<random>`. */
const FBP = /^fb\.\d\.\d{13}\.\S+$/

/**
 * `fbc` for an event: the `fbc` cookie value when known (passed through unhashed), else built from a bare `fbclid`
 * with its click time (when it was first seen; the event time when unknown) — never the send time.
 */
export const fbcOf = (event: DeliveryEvent): string | undefined => {
  const ids = event.identity.clickIds
  const fbc = str(ids.fbc)?.trim()
  if (fbc !== undefined && FBC.test(fbc)) return fbc
  const fbclid = str(ids.fbclid)?.trim()
  if (fbclid === undefined || /\s/.test(fbclid)) return undefined
  const clickedAt = event.identity.clickIdsSeenAt?.fbclid ?? event.timestamp
  return `fb.1.${Math.trunc(clickedAt)}.${fbclid}`
}

/** Emails hashed as Meta `em` / `EMAIL`: raw ones normalised, join-key hashes passed through; deduplicated. */
const emailHashes = (raw: ReadonlyArray<string>, hashes: ReadonlyArray<string>): ReadonlyArray<string> =>
  uniq([
    ...raw.flatMap((e) => Pii.Meta.email(e)?.hash ?? []),
    // TrackLayer's email join key is NFC + trim + lowercase, i.e. Meta's `em` normalisation: usable as is.
    ...hashes.filter((h) => Pii.isSha256(h)).map((h) => h.trim().toLowerCase())
  ])

/** Phones hashed as Meta `ph` / `PHONE` (E.164 digits without `+`; national numbers take `country`). */
const phoneHashes = (
  raw: ReadonlyArray<string>,
  hashes: ReadonlyArray<string>,
  country: string | undefined
): ReadonlyArray<string> => {
  const options = country !== undefined ? { defaultCountry: country } : undefined
  return uniq([
    ...raw.flatMap((p) => Pii.Meta.phone(p, options)?.hash ?? []),
    // The phone join key is the E.164 digits without `+`, i.e. Meta's `ph` normalisation.
    ...hashes.filter((h) => Pii.isSha256(h)).map((h) => h.trim().toLowerCase())
  ])
}

/** The person's emails hashed as Meta `em`. */
const emailsOf = (event: DeliveryEvent): ReadonlyArray<string> => {
  const u = event.event.user
  return emailHashes(
    [...(u?.email !== undefined ? [u.email] : []), ...event.identity.emails],
    [...(u?.email_sha256 !== undefined ? [u.email_sha256] : []), ...event.identity.emailSha256]
  )
}

/** The person's phones hashed as Meta `ph`; national numbers take `user.country`. */
const phonesOf = (event: DeliveryEvent): ReadonlyArray<string> => {
  const u = event.event.user
  return phoneHashes(
    [...(u?.phone !== undefined ? [u.phone] : []), ...event.identity.phones],
    [...(u?.phone_sha256 !== undefined ? [u.phone_sha256] : []), ...event.identity.phoneSha256],
    u?.country
  )
}

/**
 * The page URL and user agent for an event: its own, else the latest seen for the person (the issue's "from this
 * or earlier events"), so a server-side purchase after a web sign-up is still a website conversion.
 */
export const browserContextOf = (event: DeliveryEvent): { readonly pageUrl?: string; readonly userAgent?: string } => {
  const ctx = event.event.context
  const last = event.identity.lastContext
  const pageUrl = httpUrl(str(ctx?.page_url)) ?? httpUrl(str(last?.pageUrl))
  const userAgent = str(ctx?.user_agent) ?? str(last?.userAgent)
  return { ...(pageUrl !== undefined ? { pageUrl } : {}), ...(userAgent !== undefined ? { userAgent } : {}) }
}

/** `user_data` for an event, keys in a fixed order. */
export const userDataOf = (event: DeliveryEvent): MetaUserData => {
  const u = event.event.user
  const ctx = event.event.context
  const em = emailsOf(event)
  const ph = phonesOf(event)
  const hash = (f: (raw: Pii.Input) => Pii.Hashed | undefined, raw: Pii.Input) => f(raw)?.hash
  const userId = event.identity.userId ?? event.event.user_id
  const fields: Record<string, unknown> = {
    em: em.length > 0 ? em : undefined,
    ph: ph.length > 0 ? ph : undefined,
    fn: hash(Pii.Meta.firstName, u?.first_name),
    ln: hash(Pii.Meta.lastName, u?.last_name),
    db: hash(Pii.Meta.dateOfBirth, u?.date_of_birth),
    ge: hash(Pii.Meta.gender, u?.gender),
    ct: hash(Pii.Meta.city, u?.city),
    st: hash(Pii.Meta.state, u?.region),
    zp: hash(Pii.Meta.zip, u?.postal_code),
    country: hash(Pii.Meta.country, u?.country),
    external_id: hash(Pii.Meta.externalId, userId),
    client_ip_address: str(ctx?.ip)?.trim(),
    client_user_agent: browserContextOf(event).userAgent,
    fbc: fbcOf(event),
    fbp: ((v) => (v !== undefined && FBP.test(v) ? v : undefined))(str(event.identity.clickIds.fbp)?.trim()),
    subscription_id: str(event.event.properties?.subscription_id)
  }
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as MetaUserData
}

/**
 * Whether `user_data` holds a combination Meta can match on (Graph API v13+ refuses events without one): any of
 * `em`, `ph`, `external_id`, `fbc`, `fbp`, `subscription_id`; or `client_ip_address` with `client_user_agent`; or
 * `fn` + `ln` with `zp` or `ct` + `st`.
 */
export const hasCustomerInformation = (u: MetaUserData): boolean =>
  u.em !== undefined || u.ph !== undefined || u.external_id !== undefined || u.fbc !== undefined ||
  u.fbp !== undefined || u.subscription_id !== undefined ||
  (u.client_ip_address !== undefined && u.client_user_agent !== undefined) ||
  (u.fn !== undefined && u.ln !== undefined && (u.zp !== undefined || (u.ct !== undefined && u.st !== undefined)))

/**
 * Experiment metadata as `custom_data` custom properties, as the Amplitude plugin sends it: the first experiment of
 * `context.experiments` as `experiment_key` / `variant`, and all of them as `experiments` when there are several.
 */
const experimentsOf = (
  event: DeliveryEvent
): Pick<MetaCustomData, "experiment_key" | "variant" | "experiments"> => {
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

/**
 * `custom_data`: money as a number with its currency, the order id, the product as `content_ids` / `contents`, and
 * experiment metadata (`experiment_key`, `variant`, `experiments`) as custom properties.
 */
export const customDataOf = (event: DeliveryEvent): MetaCustomData | undefined => {
  const p = event.event.properties ?? {}
  const value = typeof p.value === "number" && Number.isFinite(p.value) ? p.value : undefined
  const currency = str(p.currency)?.toUpperCase()
  const orderId = str(p.order_id) ?? (typeof p.order_id === "number" ? String(p.order_id) : undefined)
  const productId = str(p.product_id) ?? (typeof p.product_id === "number" ? String(p.product_id) : undefined)
  const q = p.quantity
  const quantity = typeof q === "number" && Number.isInteger(q) && q > 0 ? q : 1
  const fields: Record<string, unknown> = {
    // A value only goes with its currency (the vocabulary requires both; Meta ignores one without the other).
    value: value !== undefined && currency !== undefined ? value : undefined,
    currency: value !== undefined && currency !== undefined ? currency : undefined,
    order_id: orderId,
    content_ids: productId !== undefined ? [productId] : undefined,
    contents: productId !== undefined ? [{ id: productId, quantity }] : undefined,
    content_type: productId !== undefined ? "product" : undefined,
    ...experimentsOf(event)
  }
  const out = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined))
  return Object.keys(out).length > 0 ? (out as MetaCustomData) : undefined
}

/**
 * The `action_source`: the one configured for the canonical event, else `website` when a page URL (http/https) and
 * a user agent are known for the person (from this or earlier events), else `system_generated`.
 */
export const actionSourceOf = (event: DeliveryEvent, settings: Settings): ActionSource => {
  const configured = settings.actionSources[event.name]
  if (configured !== undefined) return configured
  const b = browserContextOf(event)
  return b.pageUrl !== undefined && b.userAgent !== undefined ? "website" : "system_generated"
}

/** LDU fields for an event, from the operator's regions and the person's country and state. */
export const dataProcessingOf = (
  event: DeliveryEvent,
  settings: Settings
): Pick<
  MetaServerEvent,
  "data_processing_options" | "data_processing_options_country" | "data_processing_options_state"
> => {
  const u = event.event.user
  const country = u?.country !== undefined ? Pii.Meta.rules.country(u.country) : undefined
  const state = u?.region !== undefined ? Pii.Meta.rules.state(u.region) : undefined
  const ldu = (c: number, s: number) => ({
    data_processing_options: ["LDU"] as const,
    data_processing_options_country: c,
    data_processing_options_state: s
  })
  if (country === undefined) return settings.lduWhenLocationUnknown ? ldu(0, 0) : { data_processing_options: [] }
  const inRegion = settings.lduRegions.some((r) =>
    r.country.toLowerCase() === country && (r.state === undefined || r.state.toLowerCase() === state)
  )
  if (!inRegion) return { data_processing_options: [] }
  // Meta accepts 1 (US) or 0 (geolocate) as country, 1000 (California) or 0 (geolocate) as state.
  return ldu(country === "us" ? LDU_COUNTRY_US : 0, country === "us" && state === "ca" ? LDU_STATE_CALIFORNIA : 0)
}

/** Pure: the exact Meta server event for one stored event, or why it is skipped. */
export const transform = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<MetaServerEvent, Destination.SkipReason> => {
  const eventName = settings.eventMapping[event.name]
  if (eventName === undefined) {
    return skip("not_mapped", `"${event.name}" has no Meta event in eventMapping`)
  }
  const actionSource = actionSourceOf(event, settings)
  const browser = browserContextOf(event)
  const url = browser.pageUrl
  if (actionSource === "website" && (url === undefined || browser.userAgent === undefined)) {
    // Only reachable when `website` is configured explicitly: Meta refuses website events without both, and
    // sending the event as another source would misreport where it happened (action_source must be accurate).
    return skip(
      "invalid",
      `action_source website needs context.page_url (http/https) and context.user_agent; ${event.name} lacks ${
        [url === undefined ? "page_url" : [], browser.userAgent === undefined ? "user_agent" : []].flat().join(
          " and "
        )
      }`
    )
  }
  const userData = userDataOf(event)
  if (!hasCustomerInformation(userData)) {
    return skip(
      "invalid",
      "no usable customer information for Meta: needs email, phone, user id, fbc/fbp, subscription_id, " +
        "IP address with user agent, or first + last name with zip (or city + state)"
    )
  }
  const customData = customDataOf(event)
  if (eventName === "Purchase" && (customData?.value === undefined || customData.currency === undefined)) {
    return skip("invalid", "Meta Purchase events need properties.value and properties.currency")
  }
  return Either.right({
    event_name: eventName,
    event_time: Math.floor(event.timestamp / 1000),
    event_id: event.dedupKey,
    action_source: actionSource,
    ...(actionSource === "website" && url !== undefined ? { event_source_url: url } : {}),
    user_data: userData,
    ...(customData !== undefined ? { custom_data: customData } : {}),
    ...dataProcessingOf(event, settings)
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------------------------

/** The events endpoint for these settings (no token: it travels in the form body). */
export const eventsUrl = (settings: Settings): string =>
  `${settings.endpoint.replace(/\/+$/, "")}/${META_GRAPH_API_VERSION}/${settings.pixelId}/events`

/** Milliseconds to wait from a `Retry-After` header (delay-seconds or HTTP-date), or undefined. */
export const parseRetryAfter = (header: string | undefined, nowMs: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

/**
 * Milliseconds until access is regained according to Meta's `x-business-use-case-usage` header
 * (`{ "<business id>": [{ estimated_time_to_regain_access: <minutes>, … }] }`), or undefined.
 */
export const parseBusinessUseCaseUsage = (header: string | undefined): number | undefined => {
  if (header === undefined) return undefined
  try {
    const parsed: unknown = JSON.parse(header)
    if (!isRecord(parsed)) return undefined
    const minutes = Object.values(parsed).flatMap((v) => (Array.isArray(v) ? v : []))
      .map((u) => (isRecord(u) ? u.estimated_time_to_regain_access : undefined))
      .filter((m): m is number => typeof m === "number" && Number.isFinite(m) && m > 0)
    return minutes.length > 0 ? Math.max(...minutes) * 60_000 : undefined
  } catch {
    return undefined
  }
}

/** Removes the access token from a text (plain, JSON-escaped, URL-encoded) and any `access_token=…` value. */
export const redact = (text: string, token: string): string => {
  let out = text
  const forms = new Set([token, token.trim(), JSON.stringify(token).slice(1, -1), encodeURIComponent(token)])
  for (const form of forms) if (form.length > 0) out = out.split(form).join("[redacted]")
  return out.replace(/(access_token["']?\s*[=:]\s*["']?)[^"'&\s,}]+/gi, "$1[redacted]")
}

/** Cuts a string without splitting a surrogate pair. */
const truncate = (s: string, max: number): string => {
  if (s.length <= max) return s
  const code = s.charCodeAt(max - 1)
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max)
}

/** A redacted response body cut to `MAX_BODY_EXCERPT` characters. */
export const excerpt = (text: string, token: string): string => truncate(redact(text, token), MAX_BODY_EXCERPT)

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The `error` object of a Graph API answer. */
export interface GraphError {
  readonly message?: string
  readonly type?: string
  readonly code?: number
  readonly error_subcode?: number
  readonly error_user_title?: string
  readonly error_user_msg?: string
  readonly fbtrace_id?: string
  readonly is_transient?: boolean
  readonly error_data?: unknown
}

const graphErrorOf = (json: Record<string, unknown>): GraphError | undefined =>
  isRecord(json.error) ? (json.error as GraphError) : undefined

/** How a Graph API error is handled. */
export type ErrorClass = "auth" | "throttled" | "transient" | "invalid"

/** Classifies a Graph API error by its code (never by its text). */
export const classify = (error: GraphError, status: number): ErrorClass => {
  const code = error.code
  if (code !== undefined && THROTTLE_CODES.includes(code)) return "throttled"
  if (code !== undefined && (AUTH_CODES.includes(code) || (code >= 200 && code <= 299))) return "auth"
  // 100/33: the pixel does not exist or the token may not use it: an operator problem, like a bad token.
  if (code === 100 && error.error_subcode === 33) return "auth"
  if (error.is_transient === true || (code !== undefined && TRANSIENT_CODES.includes(code))) return "transient"
  if (code === undefined) return status >= 500 ? "transient" : "invalid"
  return "invalid"
}

/** A short description of a Graph error: code, subcode, title and trace id (no token, no echoed values). */
export const describeError = (error: GraphError): string => {
  const code = `${error.code ?? "?"}${error.error_subcode !== undefined ? `/${error.error_subcode}` : ""}`
  const title = error.error_user_title ?? error.message ?? "error"
  return `${title} (code ${code}${error.fbtrace_id !== undefined ? `, fbtrace_id ${error.fbtrace_id}` : ""})`
}

interface Reply {
  readonly status: number
  readonly json: Record<string, unknown>
  readonly retryAfterMs: number | undefined
  readonly usageMs: number | undefined
  readonly info: ResponseInfo
}

interface SendContext {
  readonly settings: Settings
  readonly token: string
  /** Requests left in this `send` call. */
  budget: number
}

const transportError = (ctx: SendContext) => (error: HttpClientError.HttpClientError) =>
  new Destination.RetryableError({ message: excerpt(`Meta request failed: ${error.message}`, ctx.token) })

/** The form body Meta documents: `data` (JSON array), `access_token`, `test_event_code`. */
export const formBody = (events: ReadonlyArray<MetaServerEvent>, settings: Settings, token: string): string => {
  const form = new URLSearchParams()
  form.set("data", JSON.stringify(events))
  if (settings.testEventCode !== undefined) form.set("test_event_code", settings.testEventCode)
  form.set("access_token", token)
  return form.toString()
}

/** Reads an answer: status, JSON body (when it is JSON), back-off hints, and a redacted excerpt. */
const readReply = (response: HttpClientResponse.HttpClientResponse, ctx: SendContext) =>
  Effect.gen(function*() {
    const text = yield* response.text.pipe(Effect.mapError(transportError(ctx)))
    const now = yield* Clock.currentTimeMillis
    yield* Effect.annotateCurrentSpan("http.status", response.status)
    let json: Record<string, unknown> = {}
    try {
      const parsed: unknown = JSON.parse(text)
      if (isRecord(parsed)) json = parsed
    } catch {
      // Gateways answer 502/504 with HTML; the status alone decides then.
    }
    return {
      status: response.status,
      json,
      retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
      usageMs: parseBusinessUseCaseUsage(response.headers["x-business-use-case-usage"]),
      info: { status: response.status, body: excerpt(text, ctx.token) }
    } satisfies Reply
  })

/** One form-encoded Graph API request (POST or DELETE) and its answer, read and redacted. */
const graphRequest = (method: "POST" | "DELETE", url: string, body: string, ctx: SendContext) =>
  Effect.gen(function*() {
    ctx.budget -= 1
    const client = yield* HttpClient.HttpClient
    const request = method === "POST" ? HttpClientRequest.post(url) : HttpClientRequest.del(url)
    const response = yield* client.execute(
      request.pipe(
        HttpClientRequest.bodyText(body, "application/x-www-form-urlencoded"),
        HttpClientRequest.acceptJson
      )
    ).pipe(Effect.mapError(transportError(ctx)))
    return yield* readReply(response, ctx)
  })

const post = Effect.fn("MetaCapi.post")(function*(events: ReadonlyArray<MetaServerEvent>, ctx: SendContext) {
  const body = formBody(events, ctx.settings, ctx.token)
  yield* Effect.annotateCurrentSpan({ "meta.events": events.length, "meta.request_bytes": body.length })
  return yield* graphRequest("POST", eventsUrl(ctx.settings), body, ctx)
})

/** Index of the offending event when Meta names one in `error_data` (`{ event_index }`), else undefined. */
const eventIndexOf = (error: GraphError, n: number): number | undefined => {
  let data: unknown = error.error_data
  if (typeof data === "string") {
    try {
      data = JSON.parse(data)
    } catch {
      return undefined
    }
  }
  const i = isRecord(data) ? data.event_index : undefined
  return typeof i === "number" && Number.isInteger(i) && i >= 0 && i < n ? i : undefined
}

/** Sends `events` and classifies the answer; a whole-request failure is an error. */
const exchange = (
  events: ReadonlyArray<MetaServerEvent>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const reply = yield* post(events, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    const error = graphErrorOf(reply.json)
    if (s >= 200 && s < 300 && error === undefined) return events.map(() => Destination.Accepted(reply.info))
    if (error === undefined) {
      // No Graph error object: decide on the status alone.
      if (s === 404 || s === 405 || s === 401 || s === 403) {
        return yield* new Destination.AuthFailedError({
          message: `Meta answered ${s}: check the endpoint (${eventsUrl(ctx.settings)}) and the access token`,
          ...fields
        })
      }
      if (s === 413 && events.length > 1) return yield* split(events, ctx)
      if (s === 408 || s === 429 || s >= 500) {
        return yield* new Destination.RetryableError({
          message: `Meta answered ${s}`,
          ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
          ...fields
        })
      }
      return yield* new Destination.PayloadInvalidError({ message: `Meta answered ${s}`, ...fields })
    }
    const what = describeError(error)
    switch (classify(error, s)) {
      case "auth":
        return yield* new Destination.AuthFailedError({
          message: excerpt(`Meta refused the access token or pixel: ${what}`, ctx.token),
          ...fields
        })
      case "throttled":
        return yield* new Destination.RetryableError({
          message: excerpt(`Meta rate limit: ${what}`, ctx.token),
          retryAfterMs: reply.retryAfterMs ?? reply.usageMs ?? THROTTLE_BACKOFF_MS,
          ...fields
        })
      case "transient":
        return yield* new Destination.RetryableError({
          message: excerpt(`Meta transient error: ${what}`, ctx.token),
          ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
          ...fields
        })
      case "invalid":
        return yield* onInvalid(events, reply, error, ctx)
    }
  })

/**
 * Like `exchange`, for follow-up requests made after part of the batch already has an outcome: whole-request
 * failures become per-event outcomes (auth failures still stop the send; resending is safe thanks to `event_id`).
 */
const exchangeRest = (
  events: ReadonlyArray<MetaServerEvent>,
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

/** Sends the two halves separately (Meta fails a whole request for one bad event, and names no index). */
const split = (events: ReadonlyArray<MetaServerEvent>, ctx: SendContext) =>
  Effect.gen(function*() {
    const middle = Math.ceil(events.length / 2)
    const left = yield* exchangeRest(events.slice(0, middle), ctx)
    const right = yield* exchangeRest(events.slice(middle), ctx)
    return [...left, ...right] as ReadonlyArray<Outcome>
  })

const onInvalid = (events: ReadonlyArray<MetaServerEvent>, reply: Reply, error: GraphError, ctx: SendContext) =>
  Effect.gen(function*() {
    const reason = excerpt(`Meta refused the event: ${describeError(error)}`, ctx.token)
    const index = eventIndexOf(error, events.length)
    if (index !== undefined) {
      const rest = events.filter((_, i) => i !== index)
      const resent = yield* exchangeRest(rest, ctx)
      const outcomes: Array<Outcome> = []
      let k = 0
      events.forEach((_, i) => outcomes.push(i === index ? Destination.Rejected(reason, reply.info) : resent[k++]!))
      return outcomes as ReadonlyArray<Outcome>
    }
    if (events.length === 1) {
      return yield* new Destination.PayloadInvalidError({
        message: reason,
        status: reply.status,
        body: reply.info.body
      })
    }
    return yield* split(events, ctx)
  })

const chunk = <A>(as: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < as.length; i += size) out.push(as.slice(i, i + size))
  return out
}

/**
 * Sends one batch: events already older than 7 days (minus a minute) are Rejected and events more than a minute
 * in the future are held back (Retry) without a request, since either would fail the whole request at Meta; the
 * rest goes out in requests of `maxEventsPerRequest`. One outcome per prepared event, in order.
 */
export const send = Effect.fn("MetaCapi.send")(function*(
  batch: ReadonlyArray<Destination.Prepared<MetaServerEvent>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("meta.batch_size", batch.length)
  const now = yield* Clock.currentTimeMillis
  const ctx: SendContext = { settings, token: Redacted.value(settings.accessToken), budget: MAX_REQUESTS_PER_SEND }
  const outcomes: Array<Outcome | undefined> = batch.map(() => undefined)
  const sendable: Array<number> = []
  const oldest = now - Duration.toMillis(WINDOW) + WINDOW_MARGIN_MS
  batch.forEach((p, i) => {
    const at = p.payload.event_time * 1000
    if (at < oldest) {
      const days = ((now - at) / 86_400_000).toFixed(1)
      outcomes[i] = Destination.Rejected(`event_time is ${days} days old at send time; Meta accepts up to 7 days`)
    } else if (at > now + MAX_FUTURE_SKEW_MS) {
      outcomes[i] = Destination.Retry("event_time is in the future; held back until then", at - now)
    } else {
      sendable.push(i)
    }
  })
  const chunks = chunk(sendable, settings.maxEventsPerRequest)
  let delivered = sendable.length < batch.length
  for (const indexes of chunks) {
    const events = indexes.map((i) => batch[i]!.payload)
    // Until something has an outcome, a whole-request failure is the batch's failure.
    const result = yield* (delivered ? exchangeRest(events, ctx) : exchange(events, ctx))
    indexes.forEach((i, k) => (outcomes[i] = result[k]))
    delivered = true
  }
  return outcomes as ReadonlyArray<Outcome>
})

// ---------------------------------------------------------------------------------------------------------------
// Audiences (plugin API 1.2): the Custom Audience users edge
// ---------------------------------------------------------------------------------------------------------------

/** One audience row in `AUDIENCE_SCHEMA` order: SHA-256 of the email and of the phone, `""` where unknown. */
export type MetaAudienceMember = readonly [email: string, phone: string]

/** The `payload` parameter of the users edge. */
export interface MetaAudiencePayload {
  readonly schema: typeof AUDIENCE_SCHEMA
  readonly data: ReadonlyArray<MetaAudienceMember>
}

/** The `session` parameter of the users edge: one session per `send`, one `batch_seq` per request. */
export interface MetaAudienceSession {
  readonly session_id: number
  readonly batch_seq: number
  readonly last_batch_flag: boolean
  readonly estimated_num_total: number
}

const AUDIENCE_ID = /^\d{1,32}$/

/** The users edge of a Custom Audience (no token: it travels in the form body). */
export const audienceUsersUrl = (settings: Settings, audienceId: string): string =>
  `${settings.endpoint.replace(/\/+$/, "")}/${META_GRAPH_API_VERSION}/${encodeURIComponent(audienceId)}/users`

/**
 * Pure: the audience row of one person — the first of their email hashes and the first of their phone hashes,
 * normalised and hashed with `Pii.Meta` as for `user_data` (join-key hashes passed through; a national phone number
 * takes the person's `country` trait, and without one is taken to carry its calling code, as Meta's formatter does),
 * `""` for a key that is unknown: Meta matches a multi-key row on the keys it has. Neither known → skipped `invalid`.
 */
export const audienceMember = (
  change: Destination.AudienceChange,
  _settings: Settings
): Either.Either<MetaAudienceMember, Destination.SkipReason> => {
  const identity = change.identity
  const country = str(identity.traits?.country)
  const email = emailHashes(identity.emails, identity.emailSha256)[0]
  const phone = phoneHashes(identity.phones, identity.phoneSha256, country)[0]
  if (email === undefined && phone === undefined) {
    return skip(
      "invalid",
      "no email or phone usable for a Meta custom audience (an email address, or a phone number with its " +
        "country code or a country trait)"
    )
  }
  return Either.right([email ?? "", phone ?? ""])
}

/** The form body of the users edge, as Meta documents it: `payload` and `session` (JSON), `access_token`. */
export const audienceFormBody = (
  payload: MetaAudiencePayload,
  session: MetaAudienceSession,
  token: string
): string => {
  const form = new URLSearchParams()
  form.set("payload", JSON.stringify(payload))
  form.set("session", JSON.stringify(session))
  form.set("access_token", token)
  return form.toString()
}

const countOf = (u: unknown): number | undefined =>
  typeof u === "number" && Number.isFinite(u) ? u : typeof u === "string" && /^\d+$/.test(u) ? Number(u) : undefined

/** What one users-edge request is: its method, audience, session and how many rows the session has received. */
interface AudienceRequest {
  readonly method: "POST" | "DELETE"
  readonly audienceId: string
  readonly rows: ReadonlyArray<MetaAudienceMember>
  readonly session: MetaAudienceSession
  /** Rows sent in this session, this request included (`num_received` counts per session). */
  readonly sessionRows: number
}

/**
 * Sends one request of rows. 2xx: every row `Accepted`, unless Meta received fewer rows than the session sent (then
 * every row `Retry`: adding or removing again is harmless). `num_invalid_entries` cannot be mapped to rows (Meta
 * names no index, and its count is approximate): the rows stay `Accepted`, the answer (with the count and samples) is
 * in each outcome's response, and a warning is logged. Errors are classified as for the events edge.
 */
const audienceExchange = (
  request: AudienceRequest,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const { audienceId, method, rows, session } = request
    const url = audienceUsersUrl(ctx.settings, audienceId)
    const body = audienceFormBody({ schema: AUDIENCE_SCHEMA, data: rows }, session, ctx.token)
    yield* Effect.annotateCurrentSpan({
      "meta.audience_id": audienceId,
      "meta.audience_op": method,
      "meta.rows": rows.length,
      "meta.request_bytes": body.length
    })
    const reply = yield* graphRequest(method, url, body, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    const error = graphErrorOf(reply.json)
    if (s >= 200 && s < 300 && error === undefined) {
      const received = countOf(reply.json.num_received)
      const invalid = countOf(reply.json.num_invalid_entries) ?? 0
      if (invalid > 0) {
        // Counts only: the samples are hashes of people's data and stay in the (redacted) response excerpt.
        yield* Effect.logWarning("Meta counted invalid entries in a custom audience request").pipe(
          Effect.annotateLogs({
            "meta.audience_id": audienceId,
            "meta.num_invalid_entries": invalid,
            "meta.rows": rows.length
          })
        )
      }
      if (received !== undefined && received < request.sessionRows) {
        return rows.map(() =>
          Destination.Retry(
            `Meta received ${received} of the ${request.sessionRows} rows sent in session ${session.session_id}`,
            undefined,
            reply.info
          )
        )
      }
      return rows.map(() => Destination.Accepted(reply.info))
    }
    if (error === undefined) {
      if (s === 404 || s === 405 || s === 401 || s === 403) {
        return yield* new Destination.AuthFailedError({
          message: `Meta answered ${s}: check the endpoint (${url}) and the access token`,
          ...fields
        })
      }
      if (s === 408 || s === 429 || s >= 500) {
        return yield* new Destination.RetryableError({
          message: `Meta answered ${s}`,
          ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
          ...fields
        })
      }
      return yield* new Destination.PayloadInvalidError({ message: `Meta answered ${s}`, ...fields })
    }
    const what = describeError(error)
    switch (classify(error, s)) {
      case "auth":
        return yield* new Destination.AuthFailedError({
          message: excerpt(`Meta refused the access token or custom audience ${audienceId}: ${what}`, ctx.token),
          ...fields
        })
      case "throttled":
        return yield* new Destination.RetryableError({
          message: excerpt(`Meta rate limit: ${what}`, ctx.token),
          retryAfterMs: reply.retryAfterMs ?? reply.usageMs ?? THROTTLE_BACKOFF_MS,
          ...fields
        })
      case "transient":
        return yield* new Destination.RetryableError({
          message: excerpt(`Meta transient error: ${what}`, ctx.token),
          ...(reply.retryAfterMs !== undefined ? { retryAfterMs: reply.retryAfterMs } : {}),
          ...fields
        })
      case "invalid":
        return yield* new Destination.PayloadInvalidError({
          message: excerpt(`Meta refused the custom audience request: ${what}`, ctx.token),
          ...fields
        })
    }
  })

/** `audienceExchange` once part of the batch has an outcome: whole-request failures become per-row outcomes. */
const audienceExchangeRest = (request: AudienceRequest, ctx: SendContext) => {
  const info = (e: { readonly status?: number | undefined; readonly body?: string | undefined }) =>
    e.status !== undefined ? { status: e.status, body: e.body ?? "" } : undefined
  return audienceExchange(request, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) =>
        Effect.succeed(request.rows.map(() => Destination.Retry(e.message, e.retryAfterMs, info(e)))),
      PayloadInvalidError: (e) => Effect.succeed(request.rows.map(() => Destination.Rejected(e.message, info(e))))
    })
  )
}

/**
 * Sends one batch of audience changes: `add` → `POST`, `remove` → `DELETE` on `/{version}/{audience id}/users`, in
 * requests of at most 10,000 rows sharing one upload session (a fresh `session_id` per audience and `send`). The core
 * gives one audience and one operation per batch; a mixed batch is still grouped correctly. An audience id that is
 * not digits is `Rejected` without a request. One outcome per change, in order.
 */
export const sendAudience = Effect.fn("MetaCapi.sendAudience")(function*(
  batch: ReadonlyArray<Destination.PreparedMember<MetaAudienceMember>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("meta.batch_size", batch.length)
  const ctx: SendContext = { settings, token: Redacted.value(settings.accessToken), budget: MAX_REQUESTS_PER_SEND }
  const outcomes: Array<Outcome | undefined> = batch.map(() => undefined)
  const groups = new Map<string, Array<number>>()
  batch.forEach((p, i) => {
    const key = `${p.change.op}\u0000${p.change.audienceId}`
    groups.set(key, [...(groups.get(key) ?? []), i])
  })
  let delivered = false
  for (const indexes of groups.values()) {
    const { audienceId, op } = batch[indexes[0]!]!.change
    if (!AUDIENCE_ID.test(audienceId)) {
      const reason = `Meta custom audience ids are digits; ${
        JSON.stringify(audienceId)
      } is not one (check the audience routing in the config)`
      indexes.forEach((i) => (outcomes[i] = Destination.Rejected(reason)))
      delivered = true
      continue
    }
    // A positive 64-bit integer unique within the ad account: epoch microseconds-ish stays below 2^53 until 2255.
    const sessionId = (yield* Clock.currentTimeMillis) * 1000 + (yield* Random.nextIntBetween(0, 1000))
    const parts = chunk(indexes, MAX_AUDIENCE_MEMBERS_PER_REQUEST)
    let sessionRows = 0
    for (const [k, part] of parts.entries()) {
      const rows = part.map((i) => batch[i]!.member)
      sessionRows += rows.length
      const request: AudienceRequest = {
        method: op === "add" ? "POST" : "DELETE",
        audienceId,
        rows,
        session: {
          session_id: sessionId,
          batch_seq: k + 1,
          last_batch_flag: k === parts.length - 1,
          estimated_num_total: indexes.length
        },
        sessionRows
      }
      const result = yield* (delivered ? audienceExchangeRest(request, ctx) : audienceExchange(request, ctx))
      part.forEach((i, j) => (outcomes[i] = result[j]))
      delivered = true
    }
  }
  return outcomes as ReadonlyArray<Outcome>
})

/**
 * Audience request limits: 10,000 rows (Meta's documented maximum per request). A row is about 135 bytes of JSON
 * (two 64-character hashes), so 10,000 rows are about 1.35 MB; 2 MB of rows bounds a request without splitting it.
 */
export const audienceLimits: Destination.Limits = {
  maxEventsPerRequest: MAX_AUDIENCE_MEMBERS_PER_REQUEST,
  maxBytesPerRequest: 2_000_000
}

/** The audience capability (plugin API 1.2): Meta Custom Audiences. */
export const audiences: Destination.AudienceCapability<Settings, MetaAudienceMember> = {
  limits: audienceLimits,
  member: audienceMember,
  send: sendAudience
}

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/**
 * Request limits: 1000 events (Meta's documented maximum). Meta documents no byte limit; 1 MB of JSON events
 * (about 1.5–3 MB once form-encoded) keeps requests well inside what the Graph API takes.
 */
export const limits: Destination.Limits = { maxEventsPerRequest: MAX_EVENTS_PER_REQUEST, maxBytesPerRequest: 1_000_000 }

/** The Meta Conversions API destination plugin (plugin API 1.2: events and Custom Audiences). */
export const plugin: Destination.DestinationPlugin<Settings, MetaServerEvent> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  // 1.2: the optional `audiences` capability.
  pluginApi: "^1.2.0",
  settings: Settings,
  purposes: ["advertising"],
  limits,
  window: WINDOW,
  transform,
  send,
  // No `supportsAdjustments`: Meta has no adjustment API; the core drops adjustments with the reason.
  audiences,
  sandbox: (options) => MetaCapiSandbox.start(options)
}

/** Options of `destination`. */
export interface DestinationOptions {
  /** Instance id (default `meta`). */
  readonly id?: string
  /** Canonical event names routed here (default: all; unmapped ones are skipped as `not_mapped`). */
  readonly events?: ReadonlyArray<string>
  readonly startFrom?: Destination.StartFrom
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
  /** Consent purposes this instance needs (default `["advertising"]`). */
  readonly purposes?: ReadonlyArray<string>
}

/** A configured Meta Conversions API destination instance for `tracklayer.config.ts`. */
export const destination = (
  options: DestinationOptions = {}
): Destination.DestinationInstance<Settings, MetaServerEvent> =>
  Destination.instance({
    id: options.id ?? "meta",
    plugin,
    settings: options.settings ?? settingsFromEnv(),
    ...(options.events !== undefined ? { events: options.events } : {}),
    ...(options.startFrom !== undefined ? { startFrom: options.startFrom } : {}),
    ...(options.purposes !== undefined ? { purposes: options.purposes } : {})
  })
