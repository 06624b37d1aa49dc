/**
 * The Google destination: canonical events → Google Data Manager API conversion events
 * (`POST https://datamanager.googleapis.com/v1/events:ingest`), or — `mode: "ads_api"`, for accounts that still have
 * access — Google Ads API click conversions (`POST https://googleads.googleapis.com/v26/customers/{id}:
 * uploadClickConversions`, see the "Google Ads API mode" section below).
 *
 * `transform` is pure and returns the exact wire event plus the conversion action it goes to. `send` groups a batch
 * by conversion action (one `destinations` entry per request), authenticates with an OAuth access token (refresh
 * token grant, cached — see `OAuth`), and reads every documented answer: a fail-fast 400 whose `BadRequest`
 * field violations name events rejects only those events and resends the rest; 401 refreshes the token once;
 * 403 pauses the destination; 429 and 5xx are retryable (`Retry-After` / `RetryInfo` honoured). A `{ requestId }`
 * answer means "received": processing is asynchronous, so `send` polls `requestStatus:retrieve` for a bounded time
 * and records the final status per event.
 *
 * `audiences` (plugin API 1.2, data_manager mode only): audience changes → Customer Match user list members through
 * `audienceMembers:ingest` (adds) and `audienceMembers:remove` (removes), hashed like the events' user data, with the
 * same token handling, error classification and status polling (see the "Audiences" section below).
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Clock, Config, ConfigError, Duration, Effect, Either, Option, ParseResult, Redacted, Schema } from "effect"
import * as OAuth from "./OAuth.js"
import * as GoogleAdsSandbox from "./Sandbox.js"

type DeliveryEvent = Destination.DeliveryEvent
type Outcome = Destination.Outcome
type ResponseInfo = Destination.ResponseInfo
type SendError = Destination.SendError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** The Data Manager API version this plugin speaks. Bump only with a new major. */
export const DATA_MANAGER_API_VERSION = "v1"
/** The Google Ads API version of `ads_api` mode (the latest active version in 2026-12; each lives about a year). */
export const ADS_API_VERSION = "v26"
/** Default Google Ads API base (`<base>/v26/customers/{id}:uploadClickConversions`). */
export const DEFAULT_ADS_API_BASE = "https://googleads.googleapis.com"
/** OAuth scope the refresh token needs in `ads_api` mode. */
export const ADS_API_SCOPE = "https://www.googleapis.com/auth/adwords"
/** `UploadClickConversionsRequest`: at most 2000 conversions. */
export const MAX_CONVERSIONS_PER_UPLOAD = 2000
/** At most 5 `userIdentifiers` per click conversion. */
export const MAX_ADS_USER_IDENTIFIERS = 5
/** A `TOO_RECENT_EVENT` row (click less than 6 h old) is retried after this long. */
export const TOO_RECENT_RETRY_MS = 3_600_000
/** Default API base (the version is appended: `<base>/v1/events:ingest`). */
export const DEFAULT_API_BASE = "https://datamanager.googleapis.com"
/** Google's OAuth token endpoint. */
export const DEFAULT_TOKEN_URL = OAuth.DEFAULT_TOKEN_URL
/** OAuth scope requested for the refresh token. */
export const SCOPE = OAuth.SCOPE

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-google-ads"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.2.0"

/** `IngestEventsRequest`: at most 2000 events. */
export const MAX_EVENTS_PER_REQUEST = 2000
/** At most 10 user identifiers per event's `userData`. */
export const MAX_USER_IDENTIFIERS = 10
/** Google Ads' longest (and default) click-through conversion window. */
export const DEFAULT_CLICK_THROUGH_WINDOW_DAYS = 90
/** Longest response excerpt kept in an outcome or error. */
export const MAX_BODY_EXCERPT = 2000
/** Most ingest requests one `send` call makes (resends after field violations included). */
export const MAX_REQUESTS_PER_SEND = 32
/** How long `send` waits for a final request status by default. */
export const DEFAULT_STATUS_POLL_TIMEOUT_MS = 20_000
/** First wait between two status polls (doubled each time, at most `MAX_STATUS_POLL_INTERVAL_MS`). */
export const DEFAULT_STATUS_POLL_INTERVAL_MS = 500
export const MAX_STATUS_POLL_INTERVAL_MS = 5_000

const DAY_MS = 86_400_000

/** `Event.eventSource` values. */
export const EVENT_SOURCES = ["WEB", "APP", "IN_STORE", "PHONE", "OTHER"] as const
export type EventSource = (typeof EVENT_SOURCES)[number]

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

/** A Google Ads customer id: `123-456-7890` or `1234567890` in, `1234567890` out. */
export const AccountId = Schema.transformOrFail(Schema.String, Schema.String, {
  strict: true,
  decode: (s, _, ast) => {
    const digits = s.trim().replace(/[-\s]/g, "")
    return /^\d{10}$/.test(digits)
      ? ParseResult.succeed(digits)
      : ParseResult.fail(
        new ParseResult.Type(
          ast,
          s,
          `expected a 10-digit Google Ads customer id ("1234567890" or "123-456-7890"), got ${JSON.stringify(s)}`
        )
      )
  },
  encode: ParseResult.succeed
}).annotations({ identifier: "GoogleAdsAccountId" })

const ConversionActionId = Schema.String.pipe(
  Schema.pattern(/^\d{1,19}$/, { message: () => "a conversion action id is a number (digits only)" })
)

/** Which Google API the instance speaks. */
export const MODES = ["data_manager", "ads_api"] as const
export type Mode = (typeof MODES)[number]

/**
 * An instance's settings. The client secret, the refresh token and the developer token are `Redacted` once decoded.
 * `data_manager` mode needs `operatingAccountId`; `ads_api` mode needs `customerId` and `developerToken`.
 */
export const Settings = Schema.Struct({
  /** `data_manager` (default): Data Manager API; `ads_api`: Google Ads API `UploadClickConversions`. */
  mode: Schema.optionalWith(Schema.Literal(...MODES), { default: () => "data_manager" as const }),
  /** The Google Ads account that receives the conversions (10 digits; hyphens are removed). `data_manager` mode. */
  operatingAccountId: Schema.optionalWith(AccountId, { exact: true }),
  /** The manager account the credentials log in through, when it is not the operating account. */
  loginAccountId: Schema.optionalWith(AccountId, { exact: true }),
  /** Canonical event name → conversion action id (`productDestinationId`). Unmapped events are not sent. */
  conversionActions: Schema.optionalWith(Schema.Record({ key: Schema.String, value: ConversionActionId }), {
    default: () => ({})
  }),
  /** OAuth client id. */
  clientId: Schema.NonEmptyString.annotations({ message: () => "the Google OAuth client id must not be empty" }),
  /** OAuth client secret. (The message never repeats the value.) */
  clientSecret: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the Google OAuth client secret must not be empty" })
  ),
  /** OAuth refresh token with the `datamanager` scope. */
  refreshToken: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the Google OAuth refresh token must not be empty" })
  ),
  /** API base, `https://datamanager.googleapis.com` (default) or a sandbox. */
  apiBase: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_API_BASE }),
  /** OAuth token endpoint, `https://oauth2.googleapis.com/token` (default) or a sandbox. */
  tokenUrl: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_TOKEN_URL }),
  /** Test mode: Google validates each request and stores nothing. */
  validateOnly: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** The conversion actions' click-through window, 1–90 days (default 90). */
  clickThroughWindowDays: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 90)), {
    default: () => DEFAULT_CLICK_THROUGH_WINDOW_DAYS
  }),
  /** `eventSource` for every event; `auto` (default): `WEB` when a page URL or user agent is known, else `OTHER`. */
  eventSource: Schema.optionalWith(Schema.Literal("auto", ...EVENT_SOURCES), { default: () => "auto" as const }),
  /** The consent purpose that decides `adPersonalization` when an event states it (default `personalisation`). */
  personalisationPurpose: Schema.optionalWith(Schema.NonEmptyString, { default: () => "personalisation" }),
  /** Events per request (Google: at most 2000). */
  maxEventsPerRequest: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, MAX_EVENTS_PER_REQUEST)), {
    default: () => MAX_EVENTS_PER_REQUEST
  }),
  /** `ads_api` mode: the customer the conversions are uploaded to (10 digits; hyphens are removed). */
  customerId: Schema.optionalWith(AccountId, { exact: true }),
  /** `ads_api` mode: the manager account sent as `login-customer-id`, when it is not the customer. */
  loginCustomerId: Schema.optionalWith(AccountId, { exact: true }),
  /** `ads_api` mode: the Google Ads API developer token (header `developer-token`). */
  developerToken: Schema.optionalWith(
    Schema.Redacted(
      Schema.NonEmptyString.annotations({ message: () => "the Google Ads developer token must not be empty" })
    ),
    { exact: true }
  ),
  /** `ads_api` mode: API base, `https://googleads.googleapis.com` (default) or a sandbox. */
  adsApiBase: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_ADS_API_BASE }),
  /** How long `send` polls `requestStatus:retrieve` for a final status (0: do not poll). */
  statusPollTimeoutMs: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 120_000)), {
    default: () => DEFAULT_STATUS_POLL_TIMEOUT_MS
  }),
  /** First wait between polls (doubled each time, at most 5 s). */
  statusPollIntervalMs: Schema.optionalWith(Schema.Int.pipe(Schema.between(10, 10_000)), {
    default: () => DEFAULT_STATUS_POLL_INTERVAL_MS
  })
}).pipe(
  Schema.filter((s) => {
    if (s.mode === "data_manager") {
      return s.operatingAccountId !== undefined ||
        "operatingAccountId (GOOGLE_ADS_OPERATING_ACCOUNT_ID) is required in data_manager mode"
    }
    if (s.customerId === undefined) return "customerId (GOOGLE_ADS_CUSTOMER_ID) is required in ads_api mode"
    if (s.developerToken === undefined) {
      return "developerToken (GOOGLE_ADS_DEVELOPER_TOKEN) is required in ads_api mode"
    }
    return true
  }),
  Schema.annotations({ identifier: "GoogleAdsSettings" })
)
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv` (encoded settings; the env vars win where both are given). */
export interface EnvOptions {
  /** Config namespace (default `GOOGLE_ADS`): `GOOGLE_ADS_CLIENT_ID`, … */
  readonly namespace?: string
  /** `<namespace>_MODE` wins. */
  readonly mode?: Mode
  readonly operatingAccountId?: string
  /** `ads_api` mode (`<namespace>_CUSTOMER_ID`, `_LOGIN_CUSTOMER_ID`, `_ADS_API_BASE` win). */
  readonly customerId?: string
  readonly loginCustomerId?: string
  readonly adsApiBase?: string
  readonly loginAccountId?: string
  /** Canonical event → conversion action id; `<namespace>_CONVERSION_ACTIONS` entries are laid over it. */
  readonly conversionActions?: Readonly<Record<string, string>>
  readonly apiBase?: string
  readonly tokenUrl?: string
  readonly validateOnly?: boolean
  readonly clickThroughWindowDays?: number
  readonly eventSource?: "auto" | EventSource
  readonly personalisationPurpose?: string
  readonly maxEventsPerRequest?: number
  readonly statusPollTimeoutMs?: number
  readonly statusPollIntervalMs?: number
}

/** Reads `purchase=123,sign_up=456` (or a JSON object) into a mapping; a malformed entry is an error naming it. */
export const parseConversionActions = (text: string): Either.Either<Record<string, string>, string> => {
  const t = text.trim()
  if (t === "") return Either.right({})
  if (t.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(t)
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
        const out: Record<string, string> = {}
        for (const [k, v] of Object.entries(parsed)) out[k] = String(v)
        return Either.right(out)
      }
    } catch {
      // fall through
    }
    return Either.left("expected a JSON object of event name → conversion action id")
  }
  const out: Record<string, string> = {}
  for (const entry of t.split(",")) {
    const [name, id, ...rest] = entry.split("=").map((s) => s.trim())
    if (name === undefined || name === "" || id === undefined || id === "" || rest.length > 0) {
      return Either.left(`expected event=conversionActionId pairs separated by commas, got ${JSON.stringify(entry)}`)
    }
    out[name] = id
  }
  return Either.right(out)
}

/**
 * The instance's settings read through `Config`, in their encoded form: `GOOGLE_ADS_CLIENT_ID`,
 * `GOOGLE_ADS_CLIENT_SECRET` (secret), `GOOGLE_ADS_REFRESH_TOKEN` (secret), `GOOGLE_ADS_OPERATING_ACCOUNT_ID`, and
 * optional `GOOGLE_ADS_LOGIN_ACCOUNT_ID`, `GOOGLE_ADS_CONVERSION_ACTIONS`, `GOOGLE_ADS_API_BASE`,
 * `GOOGLE_ADS_TOKEN_URL`, `GOOGLE_ADS_VALIDATE_ONLY`; everything else comes from `options`.
 *
 * `GOOGLE_ADS_MODE=ads_api` (or `options.mode`) selects the Google Ads API mode: then `GOOGLE_ADS_CUSTOMER_ID` and
 * `GOOGLE_ADS_DEVELOPER_TOKEN` (secret) are required instead of the operating account, and
 * `GOOGLE_ADS_LOGIN_CUSTOMER_ID`, `GOOGLE_ADS_ADS_API_BASE` are optional.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { namespace = "GOOGLE_ADS", ...rest } = options
  const optionalString = (name: string, description: string) =>
    Config.option(Config.string(name).pipe(Config.withDescription(description)))
  const config = Config.all({
    clientId: Config.string("CLIENT_ID").pipe(Config.withDescription("Google OAuth client id")),
    clientSecret: Config.redacted("CLIENT_SECRET").pipe(Config.withDescription("Google OAuth client secret")),
    refreshToken: Config.redacted("REFRESH_TOKEN").pipe(
      Config.withDescription(`Google OAuth refresh token with the scope ${SCOPE} (ads_api mode: ${ADS_API_SCOPE})`)
    ),
    mode: Config.option(
      Config.literal(...MODES)("MODE").pipe(
        Config.withDescription("data_manager (default) or ads_api (Google Ads API UploadClickConversions)")
      )
    ),
    operatingAccountId: optionalString(
      "OPERATING_ACCOUNT_ID",
      "Google Ads account receiving the conversions (10 digits)"
    ),
    loginAccountId: optionalString("LOGIN_ACCOUNT_ID", "Google Ads manager account used to log in (10 digits)"),
    customerId: optionalString("CUSTOMER_ID", "ads_api mode: Google Ads customer receiving the conversions"),
    loginCustomerId: optionalString("LOGIN_CUSTOMER_ID", "ads_api mode: manager account sent as login-customer-id"),
    developerToken: Config.option(
      Config.redacted("DEVELOPER_TOKEN").pipe(Config.withDescription("ads_api mode: Google Ads API developer token"))
    ),
    adsApiBase: optionalString("ADS_API_BASE", `ads_api mode: Google Ads API base (default ${DEFAULT_ADS_API_BASE})`),
    conversionActions: optionalString(
      "CONVERSION_ACTIONS",
      "Canonical event → conversion action id, as purchase=123,sign_up=456 or a JSON object"
    ).pipe(
      Config.mapOrFail((o) => {
        if (Option.isNone(o)) return Either.right(Option.none<Record<string, string>>())
        return Either.match(parseConversionActions(o.value), {
          onLeft: (message) => Either.left(ConfigError.InvalidData([], message)),
          onRight: (m) => Either.right(Option.some(m))
        })
      })
    ),
    apiBase: optionalString("API_BASE", `Data Manager API base (default ${DEFAULT_API_BASE})`),
    tokenUrl: optionalString("TOKEN_URL", `OAuth token endpoint (default ${DEFAULT_TOKEN_URL})`),
    validateOnly: Config.option(
      Config.boolean("VALIDATE_ONLY").pipe(Config.withDescription("Validate requests only; Google stores nothing"))
    )
  })
  const path = (name: string) => (namespace === "" ? [name] : [namespace, name])
  const variable = (name: string) => (namespace === "" ? name : `${namespace}_${name}`)
  const missing = (name: string) =>
    ConfigError.MissingData(path(name), `Expected ${variable(name)} to exist (required in this mode)`)
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.mapOrFail((env): Either.Either<unknown, ConfigError.ConfigError> => {
      const mode = Option.getOrElse(env.mode, () => rest.mode ?? "data_manager")
      // The variables a mode cannot work without are reported as missing, like the OAuth ones.
      if (mode === "data_manager" && Option.isNone(env.operatingAccountId) && rest.operatingAccountId === undefined) {
        return Either.left(missing("OPERATING_ACCOUNT_ID"))
      }
      if (mode === "ads_api" && Option.isNone(env.customerId) && rest.customerId === undefined) {
        return Either.left(missing("CUSTOMER_ID"))
      }
      if (mode === "ads_api" && Option.isNone(env.developerToken)) return Either.left(missing("DEVELOPER_TOKEN"))
      return Either.right({
        ...rest,
        mode,
        clientId: env.clientId.trim(),
        // Schema.Redacted decodes from the plain string, so the encoded object carries it.
        clientSecret: Redacted.value(env.clientSecret).trim(),
        refreshToken: Redacted.value(env.refreshToken).trim(),
        ...(Option.isSome(env.operatingAccountId) ? { operatingAccountId: env.operatingAccountId.value } : {}),
        ...(Option.isSome(env.loginAccountId) ? { loginAccountId: env.loginAccountId.value } : {}),
        ...(Option.isSome(env.customerId) ? { customerId: env.customerId.value } : {}),
        ...(Option.isSome(env.loginCustomerId) ? { loginCustomerId: env.loginCustomerId.value } : {}),
        ...(Option.isSome(env.developerToken)
          ? { developerToken: Redacted.value(env.developerToken.value).trim() }
          : {}),
        ...(Option.isSome(env.adsApiBase) ? { adsApiBase: env.adsApiBase.value } : {}),
        conversionActions: {
          ...rest.conversionActions,
          ...(Option.isSome(env.conversionActions) ? env.conversionActions.value : {})
        },
        ...(Option.isSome(env.apiBase) ? { apiBase: env.apiBase.value } : {}),
        ...(Option.isSome(env.tokenUrl) ? { tokenUrl: env.tokenUrl.value } : {}),
        ...(Option.isSome(env.validateOnly) ? { validateOnly: env.validateOnly.value } : {})
      })
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Wire payload and transform
// ---------------------------------------------------------------------------------------------------------------

/** Google's consent value. */
export type ConsentStatus = "CONSENT_GRANTED" | "CONSENT_DENIED"

/** One `UserIdentifier`: exactly one of the three, hashed (HEX encoding) except `regionCode` and `postalCode`. */
export type UserIdentifier =
  | { readonly emailAddress: string }
  | { readonly phoneNumber: string }
  | {
    readonly address: {
      readonly givenName: string
      readonly familyName: string
      readonly regionCode: string
      readonly postalCode: string
    }
  }

/** One Data Manager `Event` exactly as sent. */
export interface DataManagerEvent {
  /** The TrackLayer dedup key: Google deduplicates on it, and treats a changed value as an adjustment. */
  readonly transactionId: string
  /** RFC 3339, UTC. */
  readonly eventTimestamp: string
  readonly eventSource: EventSource
  readonly conversionValue?: number
  /** ISO 4217, sent with `conversionValue`. */
  readonly currency?: string
  /** At most one of the three. */
  readonly adIdentifiers?: { readonly gclid: string } | { readonly gbraid: string } | { readonly wbraid: string }
  readonly userData?: { readonly userIdentifiers: ReadonlyArray<UserIdentifier> }
  readonly consent: { readonly adUserData: ConsentStatus; readonly adPersonalization: ConsentStatus }
}

/** `data_manager` mode: the wire event and the conversion action (`productDestinationId`) it goes to. */
export interface DataManagerPayload {
  readonly productDestinationId: string
  readonly event: DataManagerEvent
  readonly conversion?: never
}

/** Google Ads API `ConsentStatus`. */
export type AdsConsentStatus = "GRANTED" | "DENIED"

/** One Google Ads API `UserIdentifier` (REST JSON names): exactly one hashed field, SHA-256 lowercase hex. */
export type AdsUserIdentifier = { readonly hashedEmail: string } | { readonly hashedPhoneNumber: string }

/** One Google Ads API `ClickConversion` exactly as sent (REST JSON field names). */
export interface ClickConversion {
  /** Exactly one of the three, or none with user identifiers (enhanced conversions for leads). */
  readonly gclid?: string
  readonly gbraid?: string
  readonly wbraid?: string
  /** `customers/{customerId}/conversionActions/{id}`. */
  readonly conversionAction: string
  /** `yyyy-mm-dd hh:mm:ss+00:00` (UTC). */
  readonly conversionDateTime: string
  readonly conversionValue?: number
  readonly currencyCode?: string
  /** The TrackLayer dedup key: unique per conversion action; a resend answers `ORDER_ID_ALREADY_IN_USE`. */
  readonly orderId: string
  /** At most 5. */
  readonly userIdentifiers?: ReadonlyArray<AdsUserIdentifier>
  readonly consent: { readonly adUserData: AdsConsentStatus }
}

/** `ads_api` mode: one click conversion. */
export interface AdsApiPayload {
  readonly conversion: ClickConversion
  readonly productDestinationId?: never
  readonly event?: never
}

/** What `transform` produces: a Data Manager event (default mode) or a Google Ads API click conversion. */
export type Payload = DataManagerPayload | AdsApiPayload

/** True for a payload of `ads_api` mode. */
export const isAdsApiPayload = (p: Payload): p is AdsApiPayload => p.conversion !== undefined

const skip = (reason: Destination.SkipReason["reason"], detail: string) =>
  Either.left(new Destination.SkipReason({ reason, detail }))

const CLICK_ID_ORDER = ["gclid", "gbraid", "wbraid"] as const

const days = (ms: number) => Math.round((ms / DAY_MS) * 10) / 10

/** The click id sent: gclid before gbraid before wbraid (never two), with when it was first seen. */
const clickIdOf = (event: DeliveryEvent) => {
  const own = event.event.context?.click_ids ?? {}
  for (const name of CLICK_ID_ORDER) {
    const value = own[name] ?? event.identity.clickIds[name]
    if (value !== undefined && value.trim() !== "") {
      const seenAt = event.identity.clickIds[name] === value ? event.identity.clickIdsSeenAt?.[name] : undefined
      return { name, value: value.trim(), seenAt }
    }
  }
  return undefined
}

/** What hashed user identifiers are built from (raw values are normalised and hashed with `Pii.Google`). */
export interface IdentifierSources {
  /** Raw email addresses. */
  readonly emails: ReadonlyArray<string>
  /** Email digests received already hashed (the generic trim + lowercase form). */
  readonly emailSha256: ReadonlyArray<string>
  /** Raw phone numbers (E.164, or national with `country`). */
  readonly phones: ReadonlyArray<string>
  /** ISO country of the person: the calling code for national phone numbers, and the address's region. */
  readonly country?: string | undefined
  readonly firstName?: string | undefined
  readonly lastName?: string | undefined
  readonly postalCode?: string | undefined
}

/**
 * Up to 10 hashed user identifiers: emails, then phones, then the address (only when it is complete). Shared by
 * conversion events (`userData`) and audience members, so both hash exactly alike.
 */
export const hashedIdentifiers = (sources: IdentifierSources): ReadonlyArray<UserIdentifier> => {
  const out: Array<UserIdentifier> = []
  const seen = new Set<string>()
  const add = (key: string, id: UserIdentifier) => {
    if (seen.has(key) || out.length >= MAX_USER_IDENTIFIERS) return
    seen.add(key)
    out.push(id)
  }
  // Digests of the trimmed, lower-cased form of the raw emails: the same address hashed the generic way, which
  // differs from Google's for Gmail addresses with dots or a +tag. Those are not sent twice.
  const genericDigests = new Set(
    sources.emails.map((e) => Pii.LinkedIn.email(e)?.hash).filter((h) => h !== undefined)
  )
  for (const raw of sources.emails) {
    const h = Pii.Google.email(raw)
    if (h !== undefined) add(`e:${h.hash}`, { emailAddress: h.hash })
  }
  for (const digest of sources.emailSha256) {
    const d = digest.trim().toLowerCase()
    if (Pii.isSha256(d) && !genericDigests.has(d)) add(`e:${d}`, { emailAddress: d })
  }
  // `phoneSha256` is the digest of digits without `+`; Google hashes E.164 with `+`, so only raw phones are used.
  for (const raw of sources.phones) {
    const h = Pii.Google.phone(raw, { defaultCountry: sources.country })
    if (h !== undefined) add(`p:${h.hash}`, { phoneNumber: h.hash })
  }
  const givenName = Pii.Google.givenName(sources.firstName)
  const familyName = Pii.Google.familyName(sources.lastName)
  const regionCode = Pii.Google.regionCode(sources.country)
  const postalCode = Pii.Google.postalCode(sources.postalCode)
  if (givenName !== undefined && familyName !== undefined && regionCode !== undefined && postalCode !== undefined) {
    add("a", { address: { givenName: givenName.hash, familyName: familyName.hash, regionCode, postalCode } })
  }
  return out
}

/** Up to 10 hashed user identifiers of an event: the person's and this event's emails and phones, its address. */
export const userIdentifiersOf = (event: DeliveryEvent): ReadonlyArray<UserIdentifier> => {
  const user = event.event.user
  return hashedIdentifiers({
    emails: [...event.identity.emails, ...(user?.email !== undefined ? [user.email] : [])],
    emailSha256: [...event.identity.emailSha256, ...(user?.email_sha256 !== undefined ? [user.email_sha256] : [])],
    phones: [...event.identity.phones, ...(user?.phone !== undefined ? [user.phone] : [])],
    country: user?.country,
    firstName: user?.first_name,
    lastName: user?.last_name,
    postalCode: user?.postal_code
  })
}

const statusOf = (granted: boolean): ConsentStatus => (granted ? "CONSENT_GRANTED" : "CONSENT_DENIED")

/**
 * Per-event consent: `adUserData` from `advertising`; `adPersonalization` from `advertising` and, when the event
 * states it, the personalisation purpose. An event reaches this destination only with `advertising` granted, so
 * an absent answer counts as granted.
 */
export const consentOf = (event: DeliveryEvent, settings: Settings): DataManagerEvent["consent"] =>
  consentStatuses(event.consent, settings)

/** Purpose → granted, as Google's `{ adUserData, adPersonalization }` (an absent answer counts as granted). */
const consentStatuses = (
  consent: Readonly<Record<string, boolean>> | undefined,
  settings: Settings
): DataManagerEvent["consent"] => {
  const advertising = consent?.advertising ?? true
  const personalisation = consent?.[settings.personalisationPurpose] ?? true
  return { adUserData: statusOf(advertising), adPersonalization: statusOf(advertising && personalisation) }
}

const eventSourceOf = (event: DeliveryEvent, settings: Settings): EventSource => {
  if (settings.eventSource !== "auto") return settings.eventSource
  const c = event.event.context
  return c?.page_url !== undefined || c?.user_agent !== undefined ? "WEB" : "OTHER"
}

/** Pure: the exact payload for one stored event in the instance's mode, or why it is skipped. */
export const transform = (event: DeliveryEvent, settings: Settings): Either.Either<Payload, Destination.SkipReason> =>
  settings.mode === "ads_api" ? transformAdsApi(event, settings) : transformDataManager(event, settings)

/** Pure: the exact Data Manager event for one stored event (and its conversion action), or why it is skipped. */
export const transformDataManager = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<DataManagerPayload, Destination.SkipReason> => {
  const productDestinationId = settings.conversionActions[event.name]
  if (productDestinationId === undefined) {
    return skip("not_mapped", `event "${event.name}" has no conversion action in conversionActions`)
  }
  const windowMs = settings.clickThroughWindowDays * DAY_MS
  // `transform` has no clock: the event's age is judged when TrackLayer received it (the router applies the
  // plugin's static 90-day window against the clock).
  if (event.receivedAt - event.timestamp > windowMs) {
    return skip(
      "window",
      `the event is ${days(event.receivedAt - event.timestamp)} days older than its receipt; ` +
        `the click-through window is ${settings.clickThroughWindowDays} days`
    )
  }
  const properties = event.event.properties ?? {}
  const value = properties.value
  const currency = properties.currency
  let money: { conversionValue: number; currency: string } | undefined
  if (typeof value === "number" && Number.isFinite(value)) {
    if (value < 0) return skip("invalid", `conversionValue must not be negative (value ${value})`)
    if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) {
      return skip("invalid", `value ${value} has no ISO 4217 currency`)
    }
    money = { conversionValue: value, currency }
  }
  const click = clickIdOf(event)
  const clickExpired = click?.seenAt !== undefined && event.timestamp - click.seenAt > windowMs
  const identifiers = userIdentifiersOf(event)
  if ((click === undefined || clickExpired) && identifiers.length === 0) {
    if (clickExpired) {
      return skip(
        "window",
        `the ${click!.name} click was ${days(event.timestamp - click!.seenAt!)} days before the conversion; ` +
          `the click-through window is ${settings.clickThroughWindowDays} days, and there is no user identifier`
      )
    }
    return skip(
      "invalid",
      "Google needs a click id (gclid, gbraid or wbraid) or a user identifier (email, phone, or name with " +
        "country and postal code); the person has none"
    )
  }
  const adIdentifiers = click !== undefined && !clickExpired
    ? ({ [click.name]: click.value } as unknown as NonNullable<DataManagerEvent["adIdentifiers"]>)
    : undefined
  return Either.right({
    productDestinationId,
    event: {
      transactionId: event.dedupKey,
      eventTimestamp: new Date(event.timestamp).toISOString(),
      eventSource: eventSourceOf(event, settings),
      ...(money !== undefined ? money : {}),
      ...(adIdentifiers !== undefined ? { adIdentifiers } : {}),
      ...(identifiers.length > 0 ? { userData: { userIdentifiers: identifiers } } : {}),
      consent: consentOf(event, settings)
    }
  })
}

/** `2026-04-24 08:00:00+00:00`: the Google Ads API date-time format, in UTC. */
export const adsDateTime = (epochMs: number): string => {
  const iso = new Date(epochMs).toISOString() // 2026-04-24T08:00:00.000Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}+00:00`
}

/** Up to 5 hashed identifiers for a click conversion: emails, then phones (the address is not sent). */
export const adsUserIdentifiersOf = (event: DeliveryEvent): ReadonlyArray<AdsUserIdentifier> =>
  userIdentifiersOf(event).flatMap((id): ReadonlyArray<AdsUserIdentifier> =>
    "emailAddress" in id
      ? [{ hashedEmail: id.emailAddress }]
      : "phoneNumber" in id
      ? [{ hashedPhoneNumber: id.phoneNumber }]
      : []
  ).slice(0, MAX_ADS_USER_IDENTIFIERS)

/** Pure: the exact Google Ads API `ClickConversion` for one stored event, or why it is skipped. */
export const transformAdsApi = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<AdsApiPayload, Destination.SkipReason> => {
  const actionId = settings.conversionActions[event.name]
  if (actionId === undefined) {
    return skip("not_mapped", `event "${event.name}" has no conversion action in conversionActions`)
  }
  if (event.adjustment !== undefined) {
    // A resent orderId is ORDER_ID_ALREADY_IN_USE: a changed value needs UploadConversionAdjustments (RESTATEMENT).
    return skip(
      "invalid",
      `a changed value of order "${event.dedupKey}" is an adjustment; ads_api mode does not send adjustments ` +
        "(UploadConversionAdjustments is not implemented)"
    )
  }
  const windowMs = settings.clickThroughWindowDays * DAY_MS
  if (event.receivedAt - event.timestamp > windowMs) {
    return skip(
      "window",
      `the event is ${days(event.receivedAt - event.timestamp)} days older than its receipt; ` +
        `the click-through window is ${settings.clickThroughWindowDays} days`
    )
  }
  const properties = event.event.properties ?? {}
  const value = properties.value
  const currency = properties.currency
  let money: { conversionValue: number; currencyCode: string } | undefined
  if (typeof value === "number" && Number.isFinite(value)) {
    if (value < 0) return skip("invalid", `conversionValue must not be negative (value ${value})`)
    if (typeof currency !== "string" || !/^[A-Z]{3}$/.test(currency)) {
      return skip("invalid", `value ${value} has no ISO 4217 currency`)
    }
    money = { conversionValue: value, currencyCode: currency }
  }
  const click = clickIdOf(event)
  const clickExpired = click?.seenAt !== undefined && event.timestamp - click.seenAt > windowMs
  const identifiers = adsUserIdentifiersOf(event)
  if (click === undefined || clickExpired) {
    if (clickExpired) {
      return skip(
        "window",
        `the ${click!.name} click was ${days(event.timestamp - click!.seenAt!)} days before the conversion; ` +
          `the click-through window is ${settings.clickThroughWindowDays} days`
      )
    }
    if (identifiers.length === 0) {
      return skip(
        "invalid",
        "a click conversion needs a click id (gclid, gbraid or wbraid) or, for enhanced conversions for leads, a " +
          "hashed email or phone; the person has none"
      )
    }
  }
  return Either.right({
    conversion: {
      ...(click !== undefined ? { [click.name]: click.value } : {}),
      conversionAction: `customers/${settings.customerId ?? ""}/conversionActions/${actionId}`,
      conversionDateTime: adsDateTime(event.timestamp),
      ...(money !== undefined ? money : {}),
      orderId: event.dedupKey,
      ...(identifiers.length > 0 ? { userIdentifiers: identifiers } : {}),
      consent: { adUserData: (event.consent?.advertising ?? true) ? "GRANTED" : "DENIED" }
    }
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------------------------

/** The `IngestEventsRequest` body for events going to one conversion action. */
export const requestBody = (
  productDestinationId: string,
  events: ReadonlyArray<DataManagerEvent>,
  settings: Settings
) => ({
  destinations: [{
    operatingAccount: { accountType: "GOOGLE_ADS", accountId: settings.operatingAccountId ?? "" },
    ...(settings.loginAccountId !== undefined
      ? { loginAccount: { accountType: "GOOGLE_ADS", accountId: settings.loginAccountId } }
      : {}),
    productDestinationId
  }],
  events,
  encoding: "HEX",
  ...(settings.validateOnly ? { validateOnly: true } : {})
})

/** Milliseconds to wait from a `Retry-After` header (delay-seconds or HTTP-date), or undefined. */
export const parseRetryAfter = (header: string | undefined, nowMs: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)
const recordOf = (u: unknown): Record<string, unknown> => (isRecord(u) ? u : {})
const arrayOf = (u: unknown): ReadonlyArray<unknown> => (Array.isArray(u) ? u : [])
const stringOf = (u: unknown): string | undefined => (typeof u === "string" ? u : undefined)

/** A google.rpc `Status` as the REST API returns it under `error`. */
export interface RpcStatus {
  readonly code: number | undefined
  readonly status: string | undefined
  readonly message: string | undefined
  /** `BadRequest.fieldViolations` (`reason`: the `ErrorReason`, when Google names one). */
  readonly fieldViolations: ReadonlyArray<
    { readonly field: string; readonly description: string; readonly reason?: string }
  >
  /** `RetryInfo.retryDelay` in ms. */
  readonly retryDelayMs: number | undefined
  /** `ErrorInfo.reason`. */
  readonly reason: string | undefined
}

/** Reads a google.rpc Status error body (`{ error: { code, status, message, details[] } }`). */
export const parseRpcStatus = (json: unknown): RpcStatus => {
  const error = recordOf(recordOf(json).error)
  const fieldViolations: Array<{ field: string; description: string; reason?: string }> = []
  let retryDelayMs: number | undefined
  let reason: string | undefined
  for (const d of arrayOf(error.details)) {
    const detail = recordOf(d)
    const type = stringOf(detail["@type"]) ?? ""
    if (type.endsWith("google.rpc.BadRequest")) {
      for (const v of arrayOf(detail.fieldViolations)) {
        const fv = recordOf(v)
        const why = stringOf(fv.reason)
        fieldViolations.push({
          field: stringOf(fv.field) ?? "",
          description: stringOf(fv.description) ?? "",
          ...(why !== undefined ? { reason: why } : {})
        })
      }
    } else if (type.endsWith("google.rpc.RetryInfo")) {
      const m = /^(\d+(?:\.\d+)?)s$/.exec(stringOf(detail.retryDelay) ?? "")
      if (m !== null) retryDelayMs = Math.round(Number(m[1]) * 1000)
    } else if (type.endsWith("google.rpc.ErrorInfo")) {
      reason = stringOf(detail.reason)
    }
  }
  return {
    code: typeof error.code === "number" ? error.code : undefined,
    status: stringOf(error.status),
    message: stringOf(error.message),
    fieldViolations,
    retryDelayMs,
    reason
  }
}

/** The event index a field violation names (`events[3].conversionValue` → 3), or undefined. */
export const violationIndex = (field: string): number | undefined => {
  const m = /^events\[(\d+)\]/.exec(field.trim())
  return m === null ? undefined : Number(m[1])
}

interface Reply {
  readonly status: number
  readonly json: unknown
  readonly retryAfterMs: number | undefined
  readonly info: ResponseInfo
}

interface SendContext {
  readonly settings: Settings
  /** Access tokens used in this send, and the developer token (redacted from every excerpt). */
  readonly tokens: Array<string>
  /** Ingest requests left in this `send` call. */
  budget: number
}

const excerpt = (text: string, ctx: SendContext): string =>
  OAuth.redact(text, ctx.settings, ctx.tokens).slice(0, MAX_BODY_EXCERPT)

const url = (settings: Settings, path: string) =>
  `${settings.apiBase.replace(/\/+$/, "")}/${DATA_MANAGER_API_VERSION}/${path}`

const transportError = (ctx: SendContext) => (error: HttpClientError.HttpClientError) =>
  new Destination.RetryableError({ message: excerpt(`Google Data Manager request failed: ${error.message}`, ctx) })

/** One HTTP exchange with a bearer token; a 401 invalidates the cached token and retries once with a fresh one. */
const authorized = (
  build: (token: string) => HttpClientRequest.HttpClientRequest,
  ctx: SendContext
): Effect.Effect<Reply, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const once = (token: string) =>
      Effect.gen(function*() {
        if (!ctx.tokens.includes(token)) ctx.tokens.push(token)
        const response = yield* client.execute(build(token)).pipe(Effect.mapError(transportError(ctx)))
        const text = yield* response.text.pipe(Effect.mapError(transportError(ctx)))
        const now = yield* Clock.currentTimeMillis
        let json: unknown = undefined
        try {
          json = JSON.parse(text)
        } catch {
          // Gateways answer 502/504 with HTML; the status alone decides then.
        }
        return {
          status: response.status,
          json,
          retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
          info: { status: response.status, body: excerpt(text, ctx) }
        } satisfies Reply
      })
    const first = yield* OAuth.accessToken(ctx.settings)
    const reply = yield* once(first)
    if (reply.status !== 401) return reply
    // A refused developer token is not cured by a fresh access token.
    const devTokenCodes = adsFailureOf(reply.json).filter((e) => e.code.startsWith("DEVELOPER_TOKEN"))
    if (devTokenCodes.length > 0) {
      return yield* new Destination.AuthFailedError({
        message: excerpt(
          `Google refused the developer token (401 ${devTokenCodes.map((e) => e.code).join(", ")}): check ` +
            `developerToken (GOOGLE_ADS_DEVELOPER_TOKEN)`,
          ctx
        ),
        status: reply.status,
        body: reply.info.body
      })
    }
    OAuth.invalidate(ctx.settings, first)
    const fresh = yield* OAuth.accessToken(ctx.settings, { force: true })
    const again = yield* once(fresh)
    if (again.status !== 401) return again
    return yield* new Destination.AuthFailedError({
      message: excerpt(
        `Google refused a freshly issued access token (401 ${rpcText(again)}): check that the refresh token has ` +
          `the scope ${ctx.settings.mode === "ads_api" ? ADS_API_SCOPE : SCOPE}`,
        ctx
      ),
      status: again.status,
      body: again.info.body
    })
  })

const rpcText = (reply: Reply): string => {
  const s = parseRpcStatus(reply.json)
  const parts = [s.status, s.message].filter((p) => p !== undefined && p !== "")
  return parts.length > 0 ? parts.join(": ") : reply.info.body.slice(0, 200)
}

const ingest = (productDestinationId: string, events: ReadonlyArray<DataManagerEvent>, ctx: SendContext) =>
  Effect.gen(function*() {
    ctx.budget -= 1
    const body = JSON.stringify(requestBody(productDestinationId, events, ctx.settings))
    yield* Effect.annotateCurrentSpan({ "google_ads.events": events.length, "google_ads.request_bytes": body.length })
    const reply = yield* authorized(
      (token) =>
        HttpClientRequest.post(url(ctx.settings, "events:ingest")).pipe(
          HttpClientRequest.bearerToken(token),
          HttpClientRequest.bodyText(body, "application/json"),
          HttpClientRequest.acceptJson
        ),
      ctx
    )
    yield* Effect.annotateCurrentSpan("http.status", reply.status)
    return reply
  }).pipe(Effect.withSpan("GoogleAds.ingest"))

/** The final (or last known) status of an ingest request, as TrackLayer records it. */
export interface RequestOutcome {
  readonly requestStatus: "SUCCESS" | "PARTIAL_SUCCESS" | "FAILED" | "PROCESSING" | "UNKNOWN"
  /**
   * Records in the request as Google counted them: `eventsIngestionStatus.recordCount`, or for audience requests
   * `audienceMembersIngestionStatus.userDataIngestionStatus` / `audienceMembersRemovalStatus.userDataRemovalStatus`.
   */
  readonly recordCount?: string
  /** Audience requests: user identifiers Google counted. */
  readonly userIdentifierCount?: string
  /** Audience ingestion: `uploadMatchRateRange` (`MATCH_RATE_RANGE_41_TO_50`, …), when Google reports one. */
  readonly matchRateRange?: string
  /** `errorInfo.errorCounts`: reason → records. */
  readonly errorCounts: ReadonlyArray<{ readonly reason: string; readonly recordCount: string }>
  readonly note?: string
}

/** Reads the first destination's status of a `requestStatus:retrieve` answer. */
export const parseRequestStatus = (json: unknown): RequestOutcome => {
  const first = recordOf(arrayOf(recordOf(json).requestStatusPerDestination)[0])
  const status = stringOf(first.requestStatus)
  const requestStatus = status === "SUCCESS" || status === "PARTIAL_SUCCESS" || status === "FAILED" ||
      status === "PROCESSING"
    ? status
    : "UNKNOWN"
  const audience = recordOf(
    recordOf(first.audienceMembersIngestionStatus).userDataIngestionStatus ??
      recordOf(first.audienceMembersRemovalStatus).userDataRemovalStatus
  )
  const recordCount = recordOf(first.eventsIngestionStatus).recordCount ?? audience.recordCount
  const userIdentifierCount = audience.userIdentifierCount
  const matchRateRange = stringOf(audience.uploadMatchRateRange)
  const errorCounts = arrayOf(recordOf(first.errorInfo).errorCounts).map((c) => ({
    reason: stringOf(recordOf(c).reason) ?? "UNKNOWN",
    recordCount: String(recordOf(c).recordCount ?? "?")
  }))
  return {
    requestStatus,
    ...(recordCount !== undefined ? { recordCount: String(recordCount) } : {}),
    ...(userIdentifierCount !== undefined ? { userIdentifierCount: String(userIdentifierCount) } : {}),
    ...(matchRateRange !== undefined ? { matchRateRange } : {}),
    errorCounts
  }
}

/** Polls `requestStatus:retrieve` until a final status or `statusPollTimeoutMs`; never fails (the events are in). */
const pollStatus = (requestId: string, ctx: SendContext): Effect.Effect<RequestOutcome, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const timeout = ctx.settings.statusPollTimeoutMs
    if (timeout === 0) return { requestStatus: "PROCESSING", errorCounts: [], note: "status not polled" } as const
    const start = yield* Clock.currentTimeMillis
    let delay = ctx.settings.statusPollIntervalMs
    for (;;) {
      const reply = yield* authorized(
        (token) =>
          HttpClientRequest.get(url(ctx.settings, "requestStatus:retrieve")).pipe(
            HttpClientRequest.setUrlParam("requestId", requestId),
            HttpClientRequest.bearerToken(token),
            HttpClientRequest.acceptJson
          ),
        ctx
      )
      if (reply.status !== 200) {
        return {
          requestStatus: "UNKNOWN",
          errorCounts: [],
          note: `status unavailable: requestStatus:retrieve answered ${reply.status} ${rpcText(reply)}`
        } satisfies RequestOutcome
      }
      const outcome = parseRequestStatus(reply.json)
      if (outcome.requestStatus !== "PROCESSING" && outcome.requestStatus !== "UNKNOWN") return outcome
      const now = yield* Clock.currentTimeMillis
      if (now - start + delay > timeout) {
        return { ...outcome, note: `still ${outcome.requestStatus} after ${now - start} ms` }
      }
      yield* Effect.sleep(Duration.millis(delay))
      delay = Math.min(delay * 2, MAX_STATUS_POLL_INTERVAL_MS)
    }
  }).pipe(
    Effect.catchAll((e) =>
      Effect.succeed(
        { requestStatus: "UNKNOWN", errorCounts: [], note: `status unavailable: ${e.message}` } satisfies RequestOutcome
      )
    ),
    Effect.withSpan("GoogleAds.pollStatus")
  )

const countsText = (o: RequestOutcome) =>
  o.errorCounts.length === 0 ? "no error counts" : o.errorCounts.map((c) => `${c.reason} × ${c.recordCount}`).join(", ")

/** Outcomes for the records (events or audience members) of a request Google answered `{ requestId }`. */
const onReceived = (events: ReadonlyArray<unknown>, reply: Reply, ctx: SendContext) =>
  Effect.gen(function*() {
    const requestId = stringOf(recordOf(reply.json).requestId) ?? ""
    if (ctx.settings.validateOnly) {
      const info = {
        status: reply.status,
        body: JSON.stringify({ requestId, validateOnly: true, note: "validate only: Google stored nothing" })
      }
      return events.map(() => Destination.Accepted(info))
    }
    const outcome = yield* pollStatus(requestId, ctx)
    const summary = { requestId, ...outcome }
    const info = { status: reply.status, body: excerpt(JSON.stringify(summary), ctx) }
    switch (outcome.requestStatus) {
      case "FAILED":
        return events.map(() =>
          Destination.Rejected(`Google failed the request ${requestId} (FAILED: ${countsText(outcome)})`, info)
        )
      case "PROCESSING":
      case "UNKNOWN":
        return events.map(() =>
          Destination.Accepted({
            status: reply.status,
            body: excerpt(JSON.stringify({ ...summary, note: `accepted; processing (${outcome.note ?? ""})` }), ctx)
          })
        )
      default:
        // SUCCESS, or PARTIAL_SUCCESS: Google reports counts per request, not which events failed.
        return events.map(() => Destination.Accepted(info))
    }
  })

/** Sends `events` (one conversion action) and classifies the answer; a whole-request failure is an error. */
const exchange = (
  productDestinationId: string,
  events: ReadonlyArray<DataManagerEvent>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const reply = yield* ingest(productDestinationId, events, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    if (s >= 200 && s < 300) return yield* onReceived(events, reply, ctx)
    const rpc = parseRpcStatus(reply.json)
    if (s === 400) return yield* onInvalid(productDestinationId, events, reply, rpc, ctx)
    if (s === 403) {
      return yield* new Destination.AuthFailedError({
        message: excerpt(
          `Google denied access to account ${ctx.settings.operatingAccountId} (403 ${rpcText(reply)}): check the ` +
            `account ids and that the OAuth user can manage the account`,
          ctx
        ),
        ...fields
      })
    }
    if (s === 404 || s === 405) {
      // A wrong API base is an operator problem like a wrong credential: pause, drop nothing.
      return yield* new Destination.AuthFailedError({
        message: `Google Data Manager API answered ${s}: check the apiBase setting (${ctx.settings.apiBase})`,
        ...fields
      })
    }
    if (s === 408 || s === 429 || s >= 500) {
      const retryAfterMs = reply.retryAfterMs ?? rpc.retryDelayMs
      return yield* new Destination.RetryableError({
        message: excerpt(`Google Data Manager API answered ${s}: ${rpcText(reply)}`, ctx),
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        ...fields
      })
    }
    return yield* new Destination.PayloadInvalidError({
      message: excerpt(`Google Data Manager API refused the request (${s}): ${rpcText(reply)}`, ctx),
      ...fields
    })
  })

/**
 * Like `exchange`, for requests made after part of the batch already has an outcome: whole-request failures become
 * per-event outcomes (auth failures still stop the send; `transactionId` makes resending the batch safe).
 */
const exchangeRest = (
  productDestinationId: string,
  events: ReadonlyArray<DataManagerEvent>,
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
  return exchange(productDestinationId, events, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) => Effect.succeed(events.map(() => Destination.Retry(e.message, e.retryAfterMs, info(e)))),
      PayloadInvalidError: (e) => Effect.succeed(events.map(() => Destination.Rejected(e.message, info(e))))
    })
  )
}

/** A fail-fast 400: reject the events the field violations name, resend the rest. */
const onInvalid = (
  productDestinationId: string,
  events: ReadonlyArray<DataManagerEvent>,
  reply: Reply,
  rpc: RpcStatus,
  ctx: SendContext
) =>
  Effect.gen(function*() {
    const reasons = new Map<number, Array<string>>()
    let unindexed = 0
    for (const v of rpc.fieldViolations) {
      const i = violationIndex(v.field)
      if (i === undefined || i >= events.length) {
        unindexed += 1
        continue
      }
      reasons.set(i, [...(reasons.get(i) ?? []), `${v.field}: ${v.description}`])
    }
    // A violation of the request itself (destinations, encoding) would fail every resend too.
    if (reasons.size === 0 || unindexed > 0) {
      return yield* new Destination.PayloadInvalidError({
        message: excerpt(`Google Data Manager API refused the request (400): ${rpcText(reply)}`, ctx),
        status: reply.status,
        body: reply.info.body
      })
    }
    const outcomes: Array<Outcome | undefined> = []
    const rest: Array<number> = []
    events.forEach((_, i) => {
      const r = reasons.get(i)
      if (r !== undefined) outcomes[i] = Destination.Rejected(excerpt(r.join("; "), ctx), reply.info)
      else rest.push(i)
    })
    const resent = yield* exchangeRest(productDestinationId, rest.map((i) => events[i]!), ctx)
    rest.forEach((i, k) => (outcomes[i] = resent[k]))
    return outcomes as ReadonlyArray<Outcome>
  })

// ---------------------------------------------------------------------------------------------------------------
// Google Ads API mode: UploadClickConversions
// ---------------------------------------------------------------------------------------------------------------

/** One `GoogleAdsError` of a `GoogleAdsFailure` (REST JSON), reduced to what TrackLayer uses. */
export interface AdsError {
  /** The enum value of the one-of `errorCode` (`ORDER_ID_ALREADY_IN_USE`). */
  readonly code: string
  /** The one-of's field name (`conversionUploadError`). */
  readonly kind: string
  readonly message: string
  /** The row: `location.fieldPathElements[]` entry named `conversions`, its `index`. */
  readonly index: number | undefined
}

/** The errors of every `GoogleAdsFailure` in a google.rpc Status `details` (a partial failure or a request error). */
const adsErrorsOfStatus = (status: unknown): ReadonlyArray<AdsError> =>
  arrayOf(recordOf(status).details).flatMap((d) =>
    arrayOf(recordOf(d).errors).map((raw): AdsError => {
      const e = recordOf(raw)
      const [kind = "unknown", code = "UNKNOWN"] = Object.entries(recordOf(e.errorCode))
        .map(([k, v]) => [k, String(v)] as const)[0] ?? []
      const element = arrayOf(recordOf(e.location).fieldPathElements)
        .map(recordOf)
        .find((f) => f.fieldName === "conversions")
      const index = element === undefined ? undefined : Number(element.index ?? 0)
      return {
        code,
        kind,
        message: stringOf(e.message) ?? "",
        index: index !== undefined && Number.isInteger(index) ? index : undefined
      }
    })
  )

/** The `GoogleAdsFailure` errors of an error body (`{ error: { details: [{ errors }] } }`). */
export const adsFailureOf = (json: unknown): ReadonlyArray<AdsError> => adsErrorsOfStatus(recordOf(json).error)

/** The row errors of an `UploadClickConversionsResponse` (`partialFailureError`). */
export const partialFailureOf = (json: unknown): ReadonlyArray<AdsError> =>
  adsErrorsOfStatus(recordOf(json).partialFailureError)

/** A resend of something Google already has: counted as delivered. */
export const ALREADY_DELIVERED_CODES: ReadonlySet<string> = new Set([
  "ORDER_ID_ALREADY_IN_USE",
  "CLICK_CONVERSION_ALREADY_EXISTS"
])
/** Worth sending again later (the click, or the conversion action, is too new). */
export const RETRY_LATER_CODES: ReadonlySet<string> = new Set(["TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"])
/** The account may not use offline click-conversion import any more. */
export const NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"

const adsUrl = (settings: Settings) =>
  `${settings.adsApiBase.replace(/\/+$/, "")}/${ADS_API_VERSION}/customers/${settings.customerId ?? ""}` +
  ":uploadClickConversions"

const errorsText = (errors: ReadonlyArray<AdsError>) =>
  errors.map((e) => (e.message !== "" ? `${e.code}: ${e.message}` : e.code)).join("; ")

const notAllowlisted = (ctx: SendContext, status: number, body: string) =>
  new Destination.AuthFailedError({
    message: `Google Ads API: customer ${ctx.settings.customerId ?? ""} is not allowlisted for click-conversion ` +
      `import (${NOT_ALLOWLISTED}): Google stopped accepting new adopters on 2026-06-15 — switch this destination ` +
      `to the Data Manager mode (mode "data_manager", GOOGLE_ADS_MODE=data_manager, with operatingAccountId)`,
    status,
    body
  })

/** The `UploadClickConversionsRequest` body. */
export const uploadRequestBody = (conversions: ReadonlyArray<ClickConversion>, settings: Settings) => ({
  conversions,
  partialFailure: true,
  ...(settings.validateOnly ? { validateOnly: true } : {})
})

/** Per-row outcomes of a 200 answer: partial failure errors mapped to their rows by `conversions` index. */
const onUploaded = (
  conversions: ReadonlyArray<ClickConversion>,
  reply: Reply,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError> =>
  Effect.gen(function*() {
    const json = recordOf(reply.json)
    const errors = partialFailureOf(json)
    if (errors.some((e) => e.code === NOT_ALLOWLISTED)) {
      return yield* notAllowlisted(ctx, reply.status, reply.info.body)
    }
    const results = arrayOf(json.results)
    const jobId = json.jobId !== undefined ? String(json.jobId) : undefined
    const byRow = new Map<number, Array<AdsError>>()
    const unindexed: Array<AdsError> = []
    for (const e of errors) {
      if (e.index === undefined || e.index >= conversions.length) unindexed.push(e)
      else byRow.set(e.index, [...(byRow.get(e.index) ?? []), e])
    }
    const info = (extra: Record<string, unknown>) => ({
      status: reply.status,
      body: excerpt(JSON.stringify({ ...(jobId !== undefined ? { jobId } : {}), ...extra }), ctx)
    })
    return conversions.map((c, i): Outcome => {
      const rowErrors = byRow.get(i) ?? []
      if (rowErrors.length > 0) {
        const text = excerpt(`${errorsText(rowErrors)} (conversions[${i}], orderId ${c.orderId})`, ctx)
        if (rowErrors.every((e) => ALREADY_DELIVERED_CODES.has(e.code))) {
          return Destination.Accepted(info({
            orderId: c.orderId,
            alreadyDelivered: rowErrors.map((e) => e.code).join(","),
            note: "Google already has this conversion (a resend)"
          }))
        }
        if (rowErrors.every((e) => RETRY_LATER_CODES.has(e.code) || ALREADY_DELIVERED_CODES.has(e.code))) {
          return Destination.Retry(text, TOO_RECENT_RETRY_MS, info({ orderId: c.orderId, errors: rowErrors }))
        }
        return Destination.Rejected(text, info({ orderId: c.orderId, errors: rowErrors }))
      }
      if (ctx.settings.validateOnly) {
        return Destination.Accepted(
          info({ orderId: c.orderId, validateOnly: true, note: "validate only: stored nothing" })
        )
      }
      const result = recordOf(results[i])
      // An empty result is a row Google did not process; with errors that name no row, that is the reason.
      if (Object.keys(result).length === 0 && unindexed.length > 0) {
        return Destination.Rejected(
          excerpt(`${errorsText(unindexed)} (conversions[${i}])`, ctx),
          info({
            orderId: c.orderId,
            errors: unindexed
          })
        )
      }
      return Destination.Accepted(info({ orderId: c.orderId, result }))
    })
  })

/** One upload and its classification; a whole-request failure is an error. */
const upload = (
  conversions: ReadonlyArray<ClickConversion>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    ctx.budget -= 1
    const s = ctx.settings
    const body = JSON.stringify(uploadRequestBody(conversions, s))
    yield* Effect.annotateCurrentSpan({
      "google_ads.conversions": conversions.length,
      "google_ads.request_bytes": body.length
    })
    const developerToken = s.developerToken !== undefined ? Redacted.value(s.developerToken) : ""
    const reply = yield* authorized(
      (token) =>
        HttpClientRequest.post(adsUrl(s)).pipe(
          HttpClientRequest.bearerToken(token),
          HttpClientRequest.setHeader("developer-token", developerToken),
          s.loginCustomerId !== undefined
            ? HttpClientRequest.setHeader("login-customer-id", s.loginCustomerId)
            : (r) => r,
          HttpClientRequest.bodyText(body, "application/json"),
          HttpClientRequest.acceptJson
        ),
      ctx
    )
    yield* Effect.annotateCurrentSpan("http.status", reply.status)
    const status = reply.status
    const fields = { status, body: reply.info.body }
    if (status >= 200 && status < 300) return yield* onUploaded(conversions, reply, ctx)
    const failure = adsFailureOf(reply.json)
    if (failure.some((e) => e.code === NOT_ALLOWLISTED)) return yield* notAllowlisted(ctx, status, reply.info.body)
    const text = failure.length > 0 ? errorsText(failure) : rpcText(reply)
    if (status === 401 || status === 403) {
      return yield* new Destination.AuthFailedError({
        message: excerpt(
          `Google Ads API refused access to customer ${s.customerId ?? ""} (${status} ${text}): check ` +
            "developerToken, loginCustomerId and that the OAuth user can manage the customer",
          ctx
        ),
        ...fields
      })
    }
    if (status === 404 || status === 405) {
      return yield* new Destination.AuthFailedError({
        message: `Google Ads API answered ${status}: check adsApiBase (${s.adsApiBase}) and the API version ` +
          `(${ADS_API_VERSION})`,
        ...fields
      })
    }
    if (status === 408 || status === 429 || status >= 500) {
      const retryAfterMs = reply.retryAfterMs ?? parseRpcStatus(reply.json).retryDelayMs
      return yield* new Destination.RetryableError({
        message: excerpt(`Google Ads API answered ${status}: ${text}`, ctx),
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        ...fields
      })
    }
    return yield* new Destination.PayloadInvalidError({
      message: excerpt(`Google Ads API refused the upload (${status}): ${text}`, ctx),
      ...fields
    })
  }).pipe(Effect.withSpan("GoogleAds.uploadClickConversions"))

/** Sends click conversions in requests of at most `maxEventsPerRequest`; one outcome per prepared entry, in order. */
const sendAdsApi = (
  batch: ReadonlyArray<Destination.Prepared<AdsApiPayload>>,
  settings: Settings
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const ctx: SendContext = {
      settings,
      tokens: settings.developerToken !== undefined ? [Redacted.value(settings.developerToken)] : [],
      budget: MAX_REQUESTS_PER_SEND
    }
    const size = Math.min(settings.maxEventsPerRequest, MAX_CONVERSIONS_PER_UPLOAD)
    const outcomes: Array<Outcome> = []
    for (let start = 0; start < batch.length; start += size) {
      const part = batch.slice(start, start + size).map((p) => p.payload.conversion)
      const result = start === 0
        ? yield* upload(part, ctx)
        // Once part of the batch has an outcome, later whole-request failures become per-row outcomes (auth
        // failures still stop the send; orderId makes resending harmless).
        : yield* upload(part, ctx).pipe(
          Effect.catchTags({
            RetryableError: (e) =>
              Effect.succeed(part.map(() => Destination.Retry(e.message, e.retryAfterMs, respInfo(e)))),
            PayloadInvalidError: (e) => Effect.succeed(part.map(() => Destination.Rejected(e.message, respInfo(e))))
          })
        )
      result.forEach((o, k) => (outcomes[start + k] = o))
    }
    return outcomes as ReadonlyArray<Outcome>
  })

const respInfo = (e: { readonly status?: number | undefined; readonly body?: string | undefined }) =>
  e.status !== undefined ? { status: e.status, body: e.body ?? "" } : undefined

/**
 * Sends one batch: one request per conversion action (more to resend what a 400 did not name, or when a group
 * exceeds `maxEventsPerRequest`), then polls each request's status. One outcome per prepared event, in order.
 */
export const send = Effect.fn("GoogleAds.send")(function*(
  batch: ReadonlyArray<Destination.Prepared<Payload>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("google_ads.batch_size", batch.length)
  yield* Effect.annotateCurrentSpan("google_ads.mode", settings.mode)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  // Payloads prepared in the other mode (the mode was switched while events waited) are refused, not resent.
  const wrongMode = (p: Payload) => isAdsApiPayload(p) !== (settings.mode === "ads_api")
  if (batch.some((p) => wrongMode(p.payload))) {
    const ok = batch.flatMap((p, i) => (wrongMode(p.payload) ? [] : [i]))
    const sent = yield* sendSameMode(ok.map((i) => batch[i]!), settings)
    const outcomes: Array<Outcome> = batch.map((p) =>
      Destination.Rejected(
        `payload prepared for ${isAdsApiPayload(p.payload) ? "ads_api" : "data_manager"} mode; the destination ` +
          `is now in ${settings.mode} mode`
      )
    )
    ok.forEach((i, k) => (outcomes[i] = sent[k]!))
    return outcomes as ReadonlyArray<Outcome>
  }
  return yield* sendSameMode(batch, settings)
})

const sendSameMode = (
  batch: ReadonlyArray<Destination.Prepared<Payload>>,
  settings: Settings
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  settings.mode === "ads_api"
    ? sendAdsApi(batch as ReadonlyArray<Destination.Prepared<AdsApiPayload>>, settings)
    : sendDataManager(batch, settings)

const sendDataManager = (
  batch: ReadonlyArray<Destination.Prepared<Payload>>,
  settings: Settings
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    if (batch.length === 0) return [] as ReadonlyArray<Outcome>
    const ctx: SendContext = { settings, tokens: [], budget: MAX_REQUESTS_PER_SEND }
    const groups = new Map<string, Array<number>>()
    batch.forEach((p, i) => {
      const id = (p.payload as DataManagerPayload).productDestinationId
      const g = groups.get(id) ?? []
      g.push(i)
      groups.set(id, g)
    })
    const outcomes: Array<Outcome> = []
    let first = true
    for (const [productDestinationId, indexes] of groups) {
      for (let start = 0; start < indexes.length; start += settings.maxEventsPerRequest) {
        const part = indexes.slice(start, start + settings.maxEventsPerRequest)
        const events = part.map((i) => (batch[i]!.payload as DataManagerPayload).event)
        // Until something was delivered, a whole-request failure is the batch's failure.
        const result = yield* (first ? exchange : exchangeRest)(productDestinationId, events, ctx)
        first = false
        part.forEach((i, k) => (outcomes[i] = result[k]!))
      }
    }
    return outcomes as ReadonlyArray<Outcome>
  })

// ---------------------------------------------------------------------------------------------------------------
// Audiences (plugin API 1.2): Customer Match user lists, `audienceMembers:ingest` / `audienceMembers:remove`
// ---------------------------------------------------------------------------------------------------------------

/** `IngestAudienceMembersRequest` / `RemoveAudienceMembersRequest`: at most 10,000 audience members. */
export const MAX_AUDIENCE_MEMBERS_PER_REQUEST = 10_000

/** One Data Manager `AudienceMember` exactly as sent: user-provided data, and consent when it is added. */
export interface AudienceMember {
  /** Hashed like conversion events' `userData` (emails and phones; the change carries no address). */
  readonly userData: { readonly userIdentifiers: ReadonlyArray<UserIdentifier> }
  /** Sent on ingest only: `RemoveAudienceMembersRequest` has no consent, and a removal needs none. */
  readonly consent?: DataManagerEvent["consent"]
}

/** A Google Ads user list id (the audience destination's `productDestinationId`): an int64, digits. */
const USER_LIST_ID = /^\d{1,19}$/

const userListIdProblem = (audienceId: string): string | undefined =>
  USER_LIST_ID.test(audienceId)
    ? undefined
    : `the Google audience id must be a user list id (digits), got ${JSON.stringify(audienceId)}: check the ` +
      "audience routing (audiences[].destinations) in the config"

/**
 * Pure: the `AudienceMember` for one audience change, or why it is skipped. The person's emails (raw and
 * pre-hashed) and phones are normalised and hashed exactly as for conversion events (`hashedIdentifiers`); an add
 * carries the member's consent from `change.consent` (as `consentOf` does for events). `ads_api` mode has no
 * audience path: every change is skipped `not_mapped` saying so.
 */
export const audienceMember = (
  change: Destination.AudienceChange,
  settings: Settings
): Either.Either<AudienceMember, Destination.SkipReason> => {
  if (settings.mode !== "data_manager") {
    return skip(
      "not_mapped",
      "Google audiences (Customer Match user lists) are sent through the Data Manager API only: this destination " +
        "is in ads_api mode; route the audience to a destination in data_manager mode (with operatingAccountId)"
    )
  }
  const badId = userListIdProblem(change.audienceId)
  if (badId !== undefined) return skip("invalid", badId)
  const identity = change.identity
  // An audience change has no event: no country for national phone numbers, no address.
  const identifiers = hashedIdentifiers({
    emails: identity.emails,
    emailSha256: identity.emailSha256,
    phones: identity.phones
  })
  if (identifiers.length === 0) {
    return skip(
      "invalid",
      "Customer Match needs an email address or a phone number with its country code; the person has none"
    )
  }
  return Either.right({
    userData: { userIdentifiers: identifiers },
    ...(change.op === "add" ? { consent: consentStatuses(change.consent, settings) } : {})
  })
}

const HEX_SHA256 = /^[0-9a-f]{64}$/
const CONSENT_STATUSES: ReadonlySet<unknown> = new Set(["CONSENT_GRANTED", "CONSENT_DENIED"])

/**
 * Why Google would refuse this member, or undefined. Checked before sending: the Data Manager API fails the whole
 * request for one bad member, so a malformed one (a payload prepared by another version, say) is rejected alone.
 */
export const memberProblem = (member: unknown): string | undefined => {
  const m = recordOf(member)
  const ids = recordOf(m.userData).userIdentifiers
  if (!Array.isArray(ids) || ids.length === 0) return "userData.userIdentifiers: at least one identifier is required"
  if (ids.length > MAX_USER_IDENTIFIERS) {
    return `userData.userIdentifiers: at most ${MAX_USER_IDENTIFIERS} identifiers per member (got ${ids.length})`
  }
  for (const [j, raw] of ids.entries()) {
    const id = recordOf(raw)
    const at = `userData.userIdentifiers[${j}]`
    const kinds = Object.keys(id)
    if (kinds.length !== 1 || !["emailAddress", "phoneNumber", "address"].includes(kinds[0]!)) {
      return `${at}: exactly one of emailAddress, phoneNumber and address must be set`
    }
    const kind = kinds[0]!
    if (kind !== "address") {
      if (typeof id[kind] !== "string" || !HEX_SHA256.test(id[kind])) {
        return `${at}.${kind}: not a SHA-256 digest in lowercase hex (64 characters)`
      }
      continue
    }
    const address = recordOf(id.address)
    for (const name of ["givenName", "familyName"]) {
      const v = address[name]
      if (typeof v !== "string" || !HEX_SHA256.test(v)) {
        return `${at}.address.${name}: not a SHA-256 digest in lowercase hex (64 characters)`
      }
    }
    if (typeof address.regionCode !== "string" || !/^[A-Z]{2}$/.test(address.regionCode)) {
      return `${at}.address.regionCode: not an ISO 3166-1 alpha-2 code`
    }
    if (typeof address.postalCode !== "string" || address.postalCode.trim() === "") {
      return `${at}.address.postalCode: required`
    }
  }
  if (m.consent !== undefined) {
    const c = recordOf(m.consent)
    for (const k of ["adUserData", "adPersonalization"]) {
      if (c[k] !== undefined && !CONSENT_STATUSES.has(c[k])) {
        return `consent.${k}: must be CONSENT_GRANTED or CONSENT_DENIED`
      }
    }
  }
  return undefined
}

const audienceDestination = (userListId: string, settings: Settings) => ({
  operatingAccount: { accountType: "GOOGLE_ADS", accountId: settings.operatingAccountId ?? "" },
  ...(settings.loginAccountId !== undefined
    ? { loginAccount: { accountType: "GOOGLE_ADS", accountId: settings.loginAccountId } }
    : {}),
  productDestinationId: userListId
})

/**
 * The `IngestAudienceMembersRequest` body: one user list, HEX encoding, member-level consent (no request-level
 * consent), and the Customer Match terms of service accepted (Google requires it for every Customer Match upload).
 */
export const audienceIngestBody = (
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  settings: Settings
) => ({
  destinations: [audienceDestination(userListId, settings)],
  audienceMembers: members,
  encoding: "HEX",
  termsOfService: { customerMatchTermsOfServiceStatus: "ACCEPTED" },
  ...(settings.validateOnly ? { validateOnly: true } : {})
})

/** The `RemoveAudienceMembersRequest` body: it has no `consent` and no `termsOfService` fields. */
export const audienceRemoveBody = (
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  settings: Settings
) => ({
  destinations: [audienceDestination(userListId, settings)],
  audienceMembers: members,
  encoding: "HEX",
  ...(settings.validateOnly ? { validateOnly: true } : {})
})

/**
 * The audience member a field violation names, or undefined: Google writes proto paths
 * (`audience_members.audience_members[3].user_data.user_identifiers`); the JSON name is read too.
 */
export const memberViolationIndex = (field: string): number | undefined => {
  const m = /(?:^|\.)audience_?members\[(\d+)\]/i.exec(field.trim())
  return m === null ? undefined : Number(m[1])
}

/** The Customer Match terms are not accepted for the account: an operator must act (nothing is dropped). */
const TERMS_NOT_SIGNED = "TERMS_AND_CONDITIONS_NOT_SIGNED"

const violationText = (v: RpcStatus["fieldViolations"][number]) => {
  const what = v.description !== "" ? v.description : v.reason ?? "invalid"
  const why = v.description !== "" && v.reason !== undefined ? ` (${v.reason})` : ""
  return `${v.field}: ${what}${why}`
}

type AudienceOp = Destination.AudienceChange["op"]

const audienceRequest = (
  op: AudienceOp,
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  ctx: SendContext
) =>
  Effect.gen(function*() {
    ctx.budget -= 1
    const body = JSON.stringify(
      op === "add"
        ? audienceIngestBody(userListId, members, ctx.settings)
        : audienceRemoveBody(userListId, members, ctx.settings)
    )
    yield* Effect.annotateCurrentSpan({
      "google_ads.audience_members": members.length,
      "google_ads.request_bytes": body.length
    })
    const reply = yield* authorized(
      (token) =>
        HttpClientRequest.post(url(ctx.settings, op === "add" ? "audienceMembers:ingest" : "audienceMembers:remove"))
          .pipe(
            HttpClientRequest.bearerToken(token),
            HttpClientRequest.bodyText(body, "application/json"),
            HttpClientRequest.acceptJson
          ),
      ctx
    )
    yield* Effect.annotateCurrentSpan("http.status", reply.status)
    return reply
  }).pipe(Effect.withSpan(op === "add" ? "GoogleAds.audienceMembers.ingest" : "GoogleAds.audienceMembers.remove"))

/** Sends members of one user list and classifies the answer; a whole-request failure is an error. */
const audienceExchange = (
  op: AudienceOp,
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const reply = yield* audienceRequest(op, userListId, members, ctx)
    const s = reply.status
    const fields = { status: s, body: reply.info.body }
    if (s >= 200 && s < 300) return yield* onReceived(members, reply, ctx)
    const rpc = parseRpcStatus(reply.json)
    const account = ctx.settings.operatingAccountId ?? ""
    if (rpc.reason === TERMS_NOT_SIGNED || rpc.fieldViolations.some((v) => v.reason === TERMS_NOT_SIGNED)) {
      return yield* new Destination.AuthFailedError({
        message: excerpt(
          `Google refused the Customer Match upload to user list ${userListId}: the Customer Match terms of service ` +
            `are not accepted for account ${account} (${s} ${rpcText(reply)}): accept them in the Google Ads account`,
          ctx
        ),
        ...fields
      })
    }
    if (s === 400) return yield* onInvalidMembers(op, userListId, members, reply, rpc, ctx)
    if (s === 403) {
      return yield* new Destination.AuthFailedError({
        message: excerpt(
          `Google denied access to user list ${userListId} of account ${account} (403 ${rpcText(reply)}): check the ` +
            "account ids and that the OAuth user can manage the account and its user lists",
          ctx
        ),
        ...fields
      })
    }
    // A Data Manager 404 (an ErrorInfo names the reason) is the user list; a bare 404 is a wrong API base.
    if (s === 404 && rpc.reason !== undefined) {
      return yield* new Destination.PayloadInvalidError({
        message: excerpt(
          `Google has no user list ${userListId} in account ${account} (404 ${rpcText(reply)}): check the audience ` +
            "routing (the user list id) and the operating account",
          ctx
        ),
        ...fields
      })
    }
    if (s === 404 || s === 405) {
      return yield* new Destination.AuthFailedError({
        message: `Google Data Manager API answered ${s}: check the apiBase setting (${ctx.settings.apiBase})`,
        ...fields
      })
    }
    if (s === 408 || s === 429 || s >= 500) {
      const retryAfterMs = reply.retryAfterMs ?? rpc.retryDelayMs
      return yield* new Destination.RetryableError({
        message: excerpt(`Google Data Manager API answered ${s}: ${rpcText(reply)}`, ctx),
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
        ...fields
      })
    }
    return yield* new Destination.PayloadInvalidError({
      message: excerpt(`Google Data Manager API refused the audience request (${s}): ${rpcText(reply)}`, ctx),
      ...fields
    })
  })

/** Like `audienceExchange`, once part of the batch has an outcome: whole-request failures become outcomes. */
const audienceExchangeRest = (
  op: AudienceOp,
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  ctx: SendContext
): Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient> => {
  if (members.length === 0) return Effect.succeed([])
  if (ctx.budget <= 0) {
    return Effect.succeed(
      members.map(() => Destination.Retry(`not sent: more than ${MAX_REQUESTS_PER_SEND} requests in one send`))
    )
  }
  // Adding or removing a member twice leaves the same list, so a retry is harmless.
  return audienceExchange(op, userListId, members, ctx).pipe(
    Effect.catchTags({
      RetryableError: (e) =>
        Effect.succeed(members.map(() => Destination.Retry(e.message, e.retryAfterMs, respInfo(e)))),
      PayloadInvalidError: (e) => Effect.succeed(members.map(() => Destination.Rejected(e.message, respInfo(e))))
    })
  )
}

/** A fail-fast 400: reject the members the field violations name, resend the rest. */
const onInvalidMembers = (
  op: AudienceOp,
  userListId: string,
  members: ReadonlyArray<AudienceMember>,
  reply: Reply,
  rpc: RpcStatus,
  ctx: SendContext
) =>
  Effect.gen(function*() {
    const reasons = new Map<number, Array<string>>()
    let unindexed = 0
    for (const v of rpc.fieldViolations) {
      const i = memberViolationIndex(v.field)
      if (i === undefined || i >= members.length) {
        unindexed += 1
        continue
      }
      reasons.set(i, [...(reasons.get(i) ?? []), violationText(v)])
    }
    // A violation of the request itself (destinations, encoding, the member count) would fail every resend too.
    if (reasons.size === 0 || unindexed > 0) {
      const named = rpc.fieldViolations.map(violationText).join("; ")
      return yield* new Destination.PayloadInvalidError({
        message: excerpt(
          `Google Data Manager API refused the audience request (400): ${rpcText(reply)}` +
            (named !== "" ? ` — ${named}` : ""),
          ctx
        ),
        status: reply.status,
        body: reply.info.body
      })
    }
    const outcomes: Array<Outcome | undefined> = []
    const rest: Array<number> = []
    members.forEach((_, i) => {
      const r = reasons.get(i)
      if (r !== undefined) outcomes[i] = Destination.Rejected(excerpt(r.join("; "), ctx), reply.info)
      else rest.push(i)
    })
    const resent = yield* audienceExchangeRest(op, userListId, rest.map((i) => members[i]!), ctx)
    rest.forEach((i, k) => (outcomes[i] = resent[k]))
    return outcomes as ReadonlyArray<Outcome>
  })

/**
 * Sends one batch of audience changes: `audienceMembers:ingest` for adds, `audienceMembers:remove` for removes, one
 * request per user list (and per 10,000 members), then polls each request's status like `send`. Members that
 * Google would refuse are rejected before sending. One outcome per change, in order.
 */
export const sendAudience = Effect.fn("GoogleAds.audiences.send")(function*(
  batch: ReadonlyArray<Destination.PreparedMember<AudienceMember>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("google_ads.batch_size", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  if (settings.mode !== "data_manager") {
    return batch.map(() =>
      Destination.Rejected(
        "Google audiences are sent through the Data Manager API only; this destination is now in ads_api mode"
      )
    )
  }
  const ctx: SendContext = { settings, tokens: [], budget: MAX_REQUESTS_PER_SEND }
  const outcomes: Array<Outcome> = []
  // The core sends one user list and one operation per batch; grouping keeps a mixed batch correct anyway.
  const groups = new Map<string, { op: AudienceOp; userListId: string; indexes: Array<number> }>()
  let decided = false
  batch.forEach((p, i) => {
    const problem = userListIdProblem(p.change.audienceId) ?? memberProblem(p.member)
    if (problem !== undefined) {
      outcomes[i] = Destination.Rejected(problem)
      decided = true
      return
    }
    const key = `${p.change.op}\n${p.change.audienceId}`
    const group = groups.get(key) ?? { op: p.change.op, userListId: p.change.audienceId, indexes: [] }
    group.indexes.push(i)
    groups.set(key, group)
  })
  for (const { indexes, op, userListId } of groups.values()) {
    for (let start = 0; start < indexes.length; start += MAX_AUDIENCE_MEMBERS_PER_REQUEST) {
      const part = indexes.slice(start, start + MAX_AUDIENCE_MEMBERS_PER_REQUEST)
      const members = part.map((i) => batch[i]!.member)
      // Until something has an outcome, a whole-request failure is the batch's failure.
      const result = yield* (decided ? audienceExchangeRest : audienceExchange)(op, userListId, members, ctx)
      decided = true
      part.forEach((i, k) => (outcomes[i] = result[k]!))
    }
  }
  return outcomes as ReadonlyArray<Outcome>
})

/** Audience request limits: 10,000 members per request; 5 MB keeps requests reasonable (Google states none). */
export const audienceLimits: Destination.Limits = {
  maxEventsPerRequest: MAX_AUDIENCE_MEMBERS_PER_REQUEST,
  maxBytesPerRequest: 5_000_000
}

/** The audience capability (plugin API 1.2): Customer Match user lists through the Data Manager API. */
export const audiences: Destination.AudienceCapability<Settings, AudienceMember> = {
  limits: audienceLimits,
  member: audienceMember,
  send: sendAudience
}

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/** Request limits: 2000 events per request; bytes are not limited by Google, 5 MB keeps requests reasonable. */
export const limits: Destination.Limits = { maxEventsPerRequest: MAX_EVENTS_PER_REQUEST, maxBytesPerRequest: 5_000_000 }

/** The Google Data Manager destination plugin (plugin API 1.2: conversions, and audiences in data_manager mode). */
export const plugin: Destination.DestinationPlugin<Settings, Payload> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  pluginApi: "^1.2.0",
  settings: Settings,
  purposes: ["advertising"],
  limits,
  // The longest click-through window; a shorter `clickThroughWindowDays` is applied in `transform`.
  window: Duration.days(DEFAULT_CLICK_THROUGH_WINDOW_DAYS),
  transform,
  send,
  // Resending a transactionId with another value is an adjustment at Google.
  supportsAdjustments: true,
  audiences,
  sandbox: (options) => GoogleAdsSandbox.start(options)
}

/** Options of `destination`. */
export interface DestinationOptions {
  /** Instance id (default `google-ads`). */
  readonly id?: string
  /** Canonical event names routed here (default: all; only mapped ones are sent). */
  readonly events?: ReadonlyArray<string>
  readonly startFrom?: Destination.StartFrom
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
  /** Consent purposes this instance needs (default `["advertising"]`). */
  readonly purposes?: ReadonlyArray<string>
}

/** A configured Google Data Manager destination instance for `tracklayer.config.ts`. */
export const destination = (options: DestinationOptions = {}): Destination.DestinationInstance<Settings, Payload> =>
  Destination.instance({
    id: options.id ?? "google-ads",
    plugin,
    settings: options.settings ?? settingsFromEnv(),
    ...(options.events !== undefined ? { events: options.events } : {}),
    ...(options.startFrom !== undefined ? { startFrom: options.startFrom } : {}),
    ...(options.purposes !== undefined ? { purposes: options.purposes } : {})
  })
