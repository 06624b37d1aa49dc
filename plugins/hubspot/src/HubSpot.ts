/**
 * The HubSpot CRM destination: canonical events → a contact upsert by email (`POST /crm/v3/objects/contacts/batch/
 * upsert`) with the person's mapped durable traits, plus a custom behavioural event (`POST /events/v3/send/batch`)
 * for the canonical events mapped to one; audience membership as a contact property (plugin API 1.2); erasure as
 * HubSpot's GDPR delete of the person's contacts (`POST /crm/v3/objects/contacts/gdpr-delete`, plugin API 1.1).
 *
 * `transform` is pure: one payload holds the contact upsert input and, when the event is mapped, the behavioural
 * event (fully-qualified `pe<portalId>_<name>`, ISO 8601 `occurredAt`, the event's properties and experiment
 * metadata, and a UUID v5 of the dedup key as `uuid` so a resend is deduplicated). `send` merges the upserts per
 * email, tags each input with an `objectWriteTraceId` so HubSpot's multi-status answer (207) names the failed rows,
 * then sends the behavioural events of the rows that succeeded. A whole request that HubSpot refuses (400) is split
 * in halves until the offending rows are found. Rate limits are read from the `X-HubSpot-RateLimit-*` headers and
 * the 429 body's `policyName`: the ten-second window pauses for the interval, the daily limit until midnight in the
 * account's time zone. The access token never appears in an outcome, an error or an excerpt; emails are masked there.
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import { Clock, Config, Duration, Effect, Either, Option, Redacted, Schema } from "effect"
import { createHash } from "node:crypto"
import * as HubSpotSandbox from "./Sandbox.js"

type DeliveryEvent = Destination.DeliveryEvent
type Outcome = Destination.Outcome
type ResponseInfo = Destination.ResponseInfo
type SendError = Destination.SendError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** The HubSpot API generation the paths below belong to. Bump deliberately (date-based versions), with a CHANGELOG note. */
export const HUBSPOT_API_VERSION = "v3"
/** Contacts batch upsert, relative to `endpoint`. */
export const CONTACTS_UPSERT_PATH = `/crm/${HUBSPOT_API_VERSION}/objects/contacts/batch/upsert`
/** Permanently delete a contact (GDPR-compliant), relative to `endpoint`. */
export const GDPR_DELETE_PATH = `/crm/${HUBSPOT_API_VERSION}/objects/contacts/gdpr-delete`
/** Custom behavioural events, batch send, relative to `endpoint`. */
export const EVENTS_BATCH_PATH = `/events/${HUBSPOT_API_VERSION}/send/batch`
/** Default API base. */
export const DEFAULT_ENDPOINT = "https://api.hubapi.com"
/** HubSpot resets daily limits at midnight in the account's time zone; this is the default account time zone. */
export const DEFAULT_DAILY_RESET_TIME_ZONE = "America/New_York"

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-hubspot"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.1.0"

/** HubSpot CRM batch endpoints take at most 100 inputs per request. */
export const MAX_EVENTS_PER_REQUEST = 100
/** Pause after a ten-second-window 429 when neither `X-HubSpot-RateLimit-Interval-Milliseconds` nor `Retry-After` says. */
export const DEFAULT_INTERVAL_MS = 10_000
/** HubSpot asks to wait at least 2 s after a 423 (record locked). */
export const LOCKED_PAUSE_MS = 2_000
/** Custom event properties: at most 50 per occurrence, names ≤ 50 characters, values ≤ 50 (URL / referrer ≤ 200). */
export const MAX_EVENT_PROPERTIES = 50
export const MAX_EVENT_PROPERTY_NAME = 50
export const MAX_EVENT_PROPERTY_VALUE = 50
export const MAX_EVENT_URL_PROPERTY_VALUE = 200
/** Longest response excerpt kept in an outcome or error. */
export const MAX_BODY_EXCERPT = 2000
/** Attempts of one GDPR delete on a ten-second-window 429, a 423 or a 5xx (a daily-limit 429 is not waited out). */
export const DELETION_ATTEMPTS = 3
/** The longest pause between two attempts of a GDPR delete. */
export const MAX_DELETION_PAUSE_MS = 10_000
/** Most HTTP requests one `send` makes (chunks and splits of a refused request included). */
export const MAX_REQUESTS_PER_SEND = 64
/** The namespace of the UUID v5 that turns a dedup key into a behavioural event `uuid` (fixed forever). */
export const EVENT_UUID_NAMESPACE = "6f1d7a4e-2b1c-4c5e-9a0f-3d8e5b7c9a12"

/** Canonical event → behavioural event (short names are expanded to `pe<portalId>_<name>`), by default. */
export const DEFAULT_EVENTS: Readonly<Record<string, string>> = {
  qualified_lead: "qualified_lead",
  purchase: "purchase",
  start_trial: "start_trial",
  sign_up: "sign_up",
  subscription_renewed: "subscription_renewed"
}

/** How a trait value is written into a contact property. */
export type PropertyType = "string" | "number" | "bool" | "date" | "datetime"

/** A contact property a trait is written to. */
export interface PropertyTarget {
  readonly name: string
  readonly type: PropertyType
}

/** TrackLayer trait → HubSpot contact property, by default (encoded form: `name` or `name:type`). */
export const DEFAULT_PROPERTIES_ENCODED: Readonly<Record<string, string>> = {
  plan: "tl_plan",
  lifecycle_stage: "lifecyclestage",
  workspace_size: "tl_workspace_size:number",
  acquisition_channel: "tl_acquisition_channel",
  last_paid_at: "tl_last_paid_at:date",
  country: "country"
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
  }, { message: (issue) => `expected an http(s) URL, got ${JSON.stringify(issue.actual)}` }),
  Schema.annotations({ identifier: "HttpUrl" })
)

/** An internal property name: a lower-case letter, then lower-case letters, digits or underscores. */
export const INTERNAL_NAME = /^[a-z][a-z0-9_]*$/
const FULLY_QUALIFIED = /^pe(\d+)_([a-z][a-z0-9_]*)$/
const PROPERTY_TARGET = /^([a-z][a-z0-9_]*)(?::(string|number|bool|date|datetime))?$/

/** A behavioural event name: fully qualified (`pe1234567_qualified_lead`) or short (`qualified_lead`). */
export const EventName = Schema.String.pipe(
  Schema.filter((s) => FULLY_QUALIFIED.test(s) || INTERNAL_NAME.test(s), {
    message: (issue) =>
      `expected a HubSpot event name, pe<portalId>_<name> or <name> (lower-case letters, digits, underscores), got ${
        JSON.stringify(issue.actual)
      }`
  })
).annotations({ identifier: "HubSpotEventName" })

/** A contact property target: `tl_plan` or `tl_last_paid_at:date` (types string, number, bool, date, datetime). */
export const PropertyTargetFromString = Schema.transform(
  Schema.String.pipe(
    Schema.filter((s) => PROPERTY_TARGET.test(s), {
      message: (issue) =>
        `expected a HubSpot contact property name (lower-case letters, digits, underscores), optionally with ` +
        `:string, :number, :bool, :date or :datetime, got ${JSON.stringify(issue.actual)}`
    })
  ),
  Schema.Struct({
    name: Schema.String,
    type: Schema.Literal("string", "number", "bool", "date", "datetime")
  }),
  {
    strict: true,
    decode: (s) => {
      const m = PROPERTY_TARGET.exec(s)!
      return { name: m[1]!, type: (m[2] ?? "string") as PropertyType }
    },
    encode: (t) => (t.type === "string" ? t.name : `${t.name}:${t.type}`)
  }
).annotations({ identifier: "HubSpotPropertyTarget" })

const isTimeZone = (tz: string): boolean => {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz })
    return true
  } catch {
    return false
  }
}

/** An IANA time zone name (`America/New_York`, `Europe/Berlin`, `UTC`). */
export const TimeZone = Schema.String.pipe(
  Schema.filter((s) => s.trim() !== "" && isTimeZone(s), {
    message: (issue) => `expected an IANA time zone such as America/New_York, got ${JSON.stringify(issue.actual)}`
  })
).annotations({ identifier: "TimeZone" })

const decodeDefaultProperties = (): Readonly<Record<string, PropertyTarget>> =>
  Schema.decodeUnknownSync(Schema.Record({ key: Schema.String, value: PropertyTargetFromString }))(
    DEFAULT_PROPERTIES_ENCODED
  )

/** The decoded default trait mapping. */
export const DEFAULT_PROPERTIES: Readonly<Record<string, PropertyTarget>> = decodeDefaultProperties()

const SettingsFields = Schema.Struct({
  /** Private app access token (scopes `crm.objects.contacts.write`, `analytics.behavioral_events.send`). */
  accessToken: Schema.Redacted(
    Schema.NonEmptyString.annotations({ message: () => "the HubSpot access token must not be empty" })
  ),
  /** API base (default `https://api.hubapi.com`), or a sandbox. */
  endpoint: Schema.optionalWith(HttpUrl, { default: () => DEFAULT_ENDPOINT }),
  /** The HubSpot account id (Hub ID): expands short event names to `pe<portalId>_<name>`. */
  portalId: Schema.optionalWith(
    Schema.String.pipe(
      Schema.pattern(/^\d{1,15}$/, {
        message: (issue) => `the HubSpot portalId (Hub ID) must be digits, got ${JSON.stringify(issue.actual)}`
      })
    ),
    { exact: true }
  ),
  /** Canonical event → behavioural event name; events not listed get a contact upsert only. `{}` sends none. */
  events: Schema.optionalWith(Schema.Record({ key: Schema.String, value: EventName }), {
    default: () => DEFAULT_EVENTS
  }),
  /** TrackLayer trait → contact property (`name` or `name:type`). */
  properties: Schema.optionalWith(Schema.Record({ key: Schema.String, value: PropertyTargetFromString }), {
    default: () => DEFAULT_PROPERTIES
  }),
  /** The HubSpot account's time zone: a daily-limit 429 pauses delivery until midnight there. */
  dailyResetTimeZone: Schema.optionalWith(TimeZone, { default: () => DEFAULT_DAILY_RESET_TIME_ZONE }),
  /** Contacts (and events) per request (HubSpot: at most 100). */
  maxEventsPerRequest: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, MAX_EVENTS_PER_REQUEST)), {
    default: () => MAX_EVENTS_PER_REQUEST
  })
})

/** An instance's settings. The access token is `Redacted` once decoded. */
export const Settings = SettingsFields.pipe(
  Schema.filter((s) => {
    for (const [canonical, name] of Object.entries(s.events)) {
      const m = FULLY_QUALIFIED.exec(name)
      if (m === null && s.portalId === undefined) {
        return {
          path: ["portalId"],
          message: `portalId (the Hub ID) is required to expand the short event name "${name}" (events.${canonical}) ` +
            `to pe<portalId>_${name}: set HUBSPOT_PORTAL_ID, or give fully-qualified names`
        }
      }
      if (m !== null && s.portalId !== undefined && m[1] !== s.portalId) {
        return {
          path: ["events", canonical],
          message: `"${name}" belongs to portal ${m[1]}, but portalId is ${s.portalId}`
        }
      }
    }
    return true
  })
).annotations({ identifier: "HubSpotSettings" })
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv`. */
export interface EnvOptions {
  /** Config namespace (default `HUBSPOT`): `<namespace>_ACCESS_TOKEN`, `_ENDPOINT`, `_PORTAL_ID`. */
  readonly namespace?: string
  /** Canonical event → behavioural event name (replaces the defaults). */
  readonly events?: Readonly<Record<string, string>>
  /** Trait → contact property, `name` or `name:type` (replaces the defaults). */
  readonly properties?: Readonly<Record<string, string>>
  readonly dailyResetTimeZone?: string
  /** Portal id used when `<namespace>_PORTAL_ID` is not set. */
  readonly portalId?: string
  /** Endpoint used when `<namespace>_ENDPOINT` is not set. */
  readonly endpoint?: string
  readonly maxEventsPerRequest?: number
}

/**
 * The instance's settings read through `Config`, in their encoded form: `HUBSPOT_ACCESS_TOKEN` (secret), optional
 * `HUBSPOT_ENDPOINT` (base URL, e.g. the sandbox) and `HUBSPOT_PORTAL_ID`; everything else comes from `options`.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { endpoint: endpointDefault, namespace = "HUBSPOT", portalId: portalDefault, ...rest } = options
  const config = Config.all({
    accessToken: Config.redacted("ACCESS_TOKEN").pipe(
      Config.withDescription("HubSpot private app access token (contacts write, behavioural events send)")
    ),
    endpoint: Config.option(
      Config.string("ENDPOINT").pipe(Config.withDescription(`HubSpot API base URL (default ${DEFAULT_ENDPOINT})`))
    ),
    portalId: Config.option(
      Config.string("PORTAL_ID").pipe(Config.withDescription("HubSpot account id (Hub ID), for pe<portalId>_ names"))
    )
  })
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.map(({ accessToken, endpoint, portalId }): unknown => {
      const portal = Option.isSome(portalId) && portalId.value.trim() !== "" ? portalId.value.trim() : portalDefault
      const base = Option.isSome(endpoint) && endpoint.value.trim() !== "" ? endpoint.value.trim() : endpointDefault
      return {
        ...rest,
        // Schema.Redacted decodes from the plain string, so the encoded object carries it.
        accessToken: Redacted.value(accessToken).trim(),
        ...(base !== undefined ? { endpoint: base } : {}),
        ...(portal !== undefined ? { portalId: portal } : {})
      }
    })
  )
}

const baseOf = (settings: Settings): string => settings.endpoint.replace(/\/+$/, "")

/** The full URL of the contacts batch upsert. */
export const contactsUrlOf = (settings: Settings): string => `${baseOf(settings)}${CONTACTS_UPSERT_PATH}`
/** The full URL of the GDPR delete of a contact. */
export const gdprDeleteUrlOf = (settings: Settings): string => `${baseOf(settings)}${GDPR_DELETE_PATH}`
/** The full URL of the behavioural events batch send. */
export const eventsUrlOf = (settings: Settings): string => `${baseOf(settings)}${EVENTS_BATCH_PATH}`

/** The fully-qualified behavioural event name for a canonical event, or undefined when it is not mapped. */
export const eventNameOf = (canonical: string, settings: Settings): string | undefined => {
  const name = settings.events[canonical]
  if (name === undefined) return undefined
  return FULLY_QUALIFIED.test(name) ? name : `pe${settings.portalId}_${name}`
}

// ---------------------------------------------------------------------------------------------------------------
// Wire payload and transform
// ---------------------------------------------------------------------------------------------------------------

/** One contact upsert input exactly as sent in `inputs` (the `objectWriteTraceId` is added at send time). */
export interface ContactUpsertInput {
  /** The contact's email (trimmed, lower-cased). */
  readonly id: string
  readonly idProperty: "email"
  /** Contact property → value; HubSpot takes strings (`""` clears a property). */
  readonly properties: Readonly<Record<string, string>>
}

/** One custom behavioural event occurrence exactly as sent in `inputs`. */
export interface BehavioralEvent {
  /** `pe<portalId>_<name>`. */
  readonly eventName: string
  readonly email: string
  /** ISO 8601 (UTC, milliseconds). */
  readonly occurredAt: string
  readonly properties: Readonly<Record<string, string | number | boolean>>
  /** UUID v5 of the dedup key: HubSpot accepts the first occurrence with a uuid and rejects later ones. */
  readonly uuid: string
}

/** What one event sends: the contact upsert and, when the event is mapped, its behavioural event. */
export interface Payload {
  readonly contact: ContactUpsertInput
  readonly event?: BehavioralEvent
}

const EMAIL = /^[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+$/u

/** Trimmed and lower-cased (HubSpot matches contacts on the exact value); undefined unless it looks like one. */
export const normalizeEmail = (raw: unknown): string | undefined => {
  if (typeof raw !== "string") return undefined
  const v = raw.normalize("NFC").trim().toLowerCase()
  return EMAIL.test(v) ? v : undefined
}

const recordOf = (u: unknown): Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>) : {}

const emailOf = (event: DeliveryEvent): string | undefined => {
  const own = normalizeEmail(event.event.user?.email)
  if (own !== undefined) return own
  for (const e of event.identity.emails) {
    const v = normalizeEmail(e)
    if (v !== undefined) return v
  }
  return undefined
}

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})/

/** Epoch ms of midnight UTC of a calendar date (HubSpot's form for date properties), or undefined. */
export const midnightUtc = (value: unknown): number | undefined => {
  if (typeof value === "string") {
    const m = ISO_DATE.exec(value.trim())
    if (m === null) return undefined
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])]
    const ms = Date.UTC(y, mo - 1, d)
    const check = new Date(ms)
    // 2026-02-30 rolls over in Date.UTC: refuse it instead of writing another day.
    return check.getUTCMonth() === mo - 1 && check.getUTCDate() === d ? ms : undefined
  }
  if (typeof value === "number" && Number.isFinite(value)) {
    const t = new Date(value)
    return Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate())
  }
  return undefined
}

const scalarText = (u: unknown): string | undefined => {
  if (typeof u === "string") return u
  if (typeof u === "number") return Number.isFinite(u) ? String(u) : undefined
  if (typeof u === "boolean") return u ? "true" : "false"
  return undefined
}

/**
 * A trait value as a HubSpot property value for `type`, or undefined when it cannot be written (the property is
 * then left out). `null` clears the property (`""`).
 */
export const propertyValue = (value: unknown, type: PropertyType): string | undefined => {
  if (value === null) return ""
  switch (type) {
    case "string": {
      // Multiple checkboxes take `a;b;c`.
      if (Array.isArray(value)) {
        const parts = value.map(scalarText)
        return parts.every((p) => p !== undefined) ? parts.join(";") : undefined
      }
      return scalarText(value)
    }
    case "number": {
      if (typeof value === "number") return Number.isFinite(value) ? String(value) : undefined
      if (typeof value === "string" && /^-?\d+(\.\d+)?$/.test(value.trim())) return value.trim()
      return undefined
    }
    case "bool": {
      if (typeof value === "boolean") return value ? "true" : "false"
      if (value === "true" || value === "false") return value
      return undefined
    }
    case "date": {
      const ms = midnightUtc(value)
      return ms === undefined ? undefined : String(ms)
    }
    case "datetime": {
      if (typeof value === "number" && Number.isFinite(value)) return String(Math.round(value))
      if (typeof value === "string") {
        const ms = Date.parse(value.trim())
        return Number.isNaN(ms) ? undefined : String(ms)
      }
      return undefined
    }
  }
}

/** The mapped traits of the person (identity traits first, then the event's own `user_properties`). */
const contactProperties = (event: DeliveryEvent, settings: Settings): Record<string, string> => {
  const traits = recordOf(event.identity.traits)
  const own = recordOf(event.event.user_properties)
  const out: Record<string, string> = {}
  for (const [trait, target] of Object.entries(settings.properties)) {
    const value = Object.hasOwn(traits, trait) ? traits[trait] : Object.hasOwn(own, trait) ? own[trait] : undefined
    if (value === undefined) continue
    const written = propertyValue(value, target.type)
    if (written !== undefined) out[target.name] = written
  }
  return out
}

/** Cuts a string to at most `n` UTF-16 units without splitting a surrogate pair. */
const cut = (s: string, n: number): string => {
  if (s.length <= n) return s
  const head = s.slice(0, n)
  const last = head.charCodeAt(head.length - 1)
  return last >= 0xd800 && last <= 0xdbff ? head.slice(0, -1) : head
}

/** An event property name HubSpot accepts: lower case, `[a-z0-9_]`, starting with a letter, ≤ 50 characters. */
export const eventPropertyName = (key: string): string | undefined => {
  let name = key.trim().toLowerCase().replace(/[^a-z0-9_]+/g, "_")
  if (name === "" || /^_+$/.test(name)) return undefined
  if (!/^[a-z]/.test(name)) name = `p_${name}`
  return name.slice(0, MAX_EVENT_PROPERTY_NAME)
}

const eventPropertyValue = (name: string, value: unknown): string | number | boolean | undefined => {
  if (typeof value === "string") {
    const limit = /url|referrer/.test(name) ? MAX_EVENT_URL_PROPERTY_VALUE : MAX_EVENT_PROPERTY_VALUE
    return cut(value, limit)
  }
  if (typeof value === "number") return Number.isFinite(value) ? value : undefined
  if (typeof value === "boolean") return value
  return undefined
}

/** Experiment metadata (the first experiment) first, then the event's scalar properties; at most 50. */
const eventProperties = (event: DeliveryEvent): Record<string, string | number | boolean> => {
  const out: Record<string, string | number | boolean> = {}
  let count = 0
  const add = (key: string, value: unknown) => {
    if (count >= MAX_EVENT_PROPERTIES) return
    const name = eventPropertyName(key)
    if (name === undefined || Object.hasOwn(out, name)) return
    const v = eventPropertyValue(name, value)
    if (v === undefined) return
    out[name] = v
    count += 1
  }
  const first = event.event.context?.experiments?.[0]
  if (first !== undefined) {
    add("experiment_key", first.experiment_key)
    add("variant", first.variant)
  }
  for (const [k, v] of Object.entries(recordOf(event.event.properties))) add(k, v)
  return out
}

const hexToBytes = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex.replace(/-/g, ""), "hex"))

/** RFC 4122 UUID version 5 (SHA-1) of `name` in `namespace`. */
export const uuidV5 = (name: string, namespace: string = EVENT_UUID_NAMESPACE): string => {
  const hash = createHash("sha1").update(hexToBytes(namespace)).update(name, "utf8").digest()
  const b = Uint8Array.from(hash.subarray(0, 16))
  b[6] = (b[6]! & 0x0f) | 0x50
  b[8] = (b[8]! & 0x3f) | 0x80
  const hex = Buffer.from(b).toString("hex")
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

const skip = (reason: "not_mapped" | "invalid", detail: string) =>
  Either.left(new Destination.SkipReason({ reason, detail }))

/** Pure: the exact payload for one stored event, or why it is skipped. */
export const transform = (
  event: DeliveryEvent,
  settings: Settings
): Either.Either<Payload, Destination.SkipReason> => {
  const email = emailOf(event)
  if (email === undefined) {
    return skip(
      "invalid",
      "no email known for this person: HubSpot contacts are upserted by email (no usable user.email or identity email)"
    )
  }
  const properties = contactProperties(event, settings)
  const eventName = eventNameOf(event.name, settings)
  if (eventName === undefined && Object.keys(properties).length === 0) {
    return skip(
      "not_mapped",
      `no HubSpot behavioural event for "${event.name}" (events maps ${
        Object.keys(settings.events).sort().join(", ") || "no events"
      }) and no mapped trait to write (properties maps ${Object.keys(settings.properties).sort().join(", ") || "none"})`
    )
  }
  const contact: ContactUpsertInput = { id: email, idProperty: "email", properties }
  if (eventName === undefined) return Either.right({ contact })
  return Either.right({
    contact,
    event: {
      eventName,
      email,
      occurredAt: new Date(Math.round(event.timestamp)).toISOString(),
      properties: eventProperties(event),
      uuid: uuidV5(event.dedupKey)
    }
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------------------------

/** The `X-HubSpot-RateLimit-*` headers of one answer (absent ones undefined). */
export interface RateLimit {
  readonly daily?: number
  readonly dailyRemaining?: number
  readonly intervalMs?: number
  readonly max?: number
  readonly remaining?: number
}

/** Reads the rate-limit headers (lower-cased names, as `@effect/platform` gives them). */
export const parseRateLimit = (headers: Readonly<Record<string, string | undefined>>): RateLimit => {
  const num = (name: string) => {
    const v = headers[name]
    if (v === undefined || !/^\d+$/.test(v.trim())) return undefined
    return Number(v.trim())
  }
  const out: { -readonly [K in keyof RateLimit]: RateLimit[K] } = {}
  const daily = num("x-hubspot-ratelimit-daily")
  const dailyRemaining = num("x-hubspot-ratelimit-daily-remaining")
  const intervalMs = num("x-hubspot-ratelimit-interval-milliseconds")
  const max = num("x-hubspot-ratelimit-max")
  const remaining = num("x-hubspot-ratelimit-remaining")
  if (daily !== undefined) out.daily = daily
  if (dailyRemaining !== undefined) out.dailyRemaining = dailyRemaining
  if (intervalMs !== undefined) out.intervalMs = intervalMs
  if (max !== undefined) out.max = max
  if (remaining !== undefined) out.remaining = remaining
  return out
}

/** `Retry-After` as milliseconds (seconds or an HTTP date), or undefined. */
export const parseRetryAfter = (header: string | undefined, nowMs: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs)
}

const wallClock = (t: number, timeZone: string) => {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric"
  }).formatToParts(new Date(t))
  const get = (type: Intl.DateTimeFormatPartTypes) => Number(parts.find((p) => p.type === type)?.value ?? "0")
  return { y: get("year"), m: get("month"), d: get("day"), h: get("hour"), mi: get("minute"), s: get("second") }
}

/** The zone's offset from UTC at instant `t`, in ms (wall clock − UTC). */
const offsetAt = (t: number, timeZone: string): number => {
  const w = wallClock(t, timeZone)
  return Date.UTC(w.y, w.m - 1, w.d, w.h, w.mi, w.s) - Math.floor(t / 1000) * 1000
}

/** The instant of the next midnight after `now` in `timeZone` (DST-aware). */
export const nextMidnight = (now: number, timeZone: string): number => {
  const w = wallClock(now, timeZone)
  const target = Date.UTC(w.y, w.m - 1, w.d + 1)
  const guess = target - offsetAt(now, timeZone)
  // The offset at the target may differ from now's (a DST change today): correct once with the target's offset.
  return target - offsetAt(guess, timeZone)
}

/** Milliseconds from `now` until HubSpot resets daily limits (midnight in the account's time zone). */
export const msUntilDailyReset = (now: number, timeZone: string): number =>
  Math.max(0, nextMidnight(now, timeZone) - now)

// ---------------------------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------------------------

interface Reply {
  readonly status: number
  readonly json: Record<string, unknown>
  readonly rateLimit: RateLimit
  readonly retryAfterMs: number | undefined
  readonly now: number
  readonly info: ResponseInfo
}

interface SendContext {
  readonly settings: Settings
  readonly token: string
  /** Requests left in this call. */
  budget: number
}

const EMAIL_IN_TEXT = /[^\s@"'<>(),;:[\]\\]+@[^\s@"'<>(),;:[\]\\]+\.[^\s@"'<>(),;:[\]\\]+/g

/** Masks emails (`o***@acme-corp.example`) and the token in text kept in outcomes and errors. */
export const scrub = (text: string, token: string): string => {
  const noToken = token.length > 0 ? text.split(token).join("[redacted]") : text
  return noToken.replace(EMAIL_IN_TEXT, (e) => {
    const at = e.lastIndexOf("@")
    return `${e.slice(0, 1)}***${e.slice(at)}`
  })
}

const excerpt = (text: string, ctx: SendContext): string => cut(scrub(text, ctx.token), MAX_BODY_EXCERPT)

const post = Effect.fn("HubSpot.post")(function*(url: string, body: unknown, ctx: SendContext) {
  ctx.budget -= 1
  const text = JSON.stringify(body)
  yield* Effect.annotateCurrentSpan({
    "hubspot.url": url.replace(/^https?:\/\/[^/]+/, ""),
    "hubspot.bytes": text.length
  })
  const transport = (e: HttpClientError.HttpClientError) =>
    new Destination.RetryableError({ message: excerpt(`HubSpot request failed: ${e.message}`, ctx) })
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post(url).pipe(
      HttpClientRequest.bearerToken(ctx.token),
      HttpClientRequest.bodyText(text, "application/json"),
      HttpClientRequest.acceptJson
    )
  ).pipe(Effect.mapError(transport))
  const answer = yield* response.text.pipe(Effect.mapError(transport))
  const now = yield* Clock.currentTimeMillis
  const rateLimit = parseRateLimit(response.headers)
  yield* Effect.annotateCurrentSpan({
    "http.status": response.status,
    ...(rateLimit.remaining !== undefined ? { "hubspot.ratelimit.remaining": rateLimit.remaining } : {}),
    ...(rateLimit.dailyRemaining !== undefined ? { "hubspot.ratelimit.daily_remaining": rateLimit.dailyRemaining } : {})
  })
  let json: Record<string, unknown> = {}
  try {
    json = recordOf(JSON.parse(answer))
  } catch {
    // 204 has no body; gateways answer 502/504 with HTML: the status alone decides then.
  }
  return {
    status: response.status,
    json,
    rateLimit,
    retryAfterMs: parseRetryAfter(response.headers["retry-after"], now),
    now,
    info: { status: response.status, body: excerpt(answer, ctx) }
  } satisfies Reply
})

/** `message` (and `category`, `policyName`) of a HubSpot error body. */
const errorText = (json: Record<string, unknown>): string => {
  const message = typeof json.message === "string" ? json.message : "no message"
  const tags = [json.category, json.policyName].filter((x): x is string => typeof x === "string" && x !== "")
  return `${message}${tags.length > 0 ? ` (${[...new Set(tags)].join(", ")})` : ""}`
}

/** A typed error for a whole-request answer that is not a success, a multi-status or a 400. */
const requestError = (reply: Reply, label: string, ctx: SendContext): SendError => {
  const s = reply.status
  const fields = { status: s, body: reply.info.body }
  const what = excerpt(`HubSpot ${label} answered ${s}: ${errorText(reply.json)}`, ctx)
  if (s === 401) {
    return new Destination.AuthFailedError({ message: `${what}; check the private app access token`, ...fields })
  }
  if (s === 403) {
    return new Destination.AuthFailedError({
      message:
        `${what}; the private app needs the crm.objects.contacts.write and analytics.behavioral_events.send scopes`,
      ...fields
    })
  }
  if (s === 404 || s === 405) {
    // A wrong endpoint: an operator must act; drop nothing.
    return new Destination.AuthFailedError({ message: `${what}; check endpoint (${ctx.settings.endpoint})`, ...fields })
  }
  if (s === 429) {
    const policy = typeof reply.json.policyName === "string" ? reply.json.policyName : undefined
    const daily = policy === "DAILY" || (policy === undefined && reply.rateLimit.dailyRemaining === 0)
    if (daily) {
      const tz = ctx.settings.dailyResetTimeZone
      const wait = msUntilDailyReset(reply.now, tz)
      return new Destination.RetryableError({
        message: `${what}; daily limit reached: paused until midnight ${tz} (${
          new Date(reply.now + wait).toISOString()
        })`,
        retryAfterMs: wait,
        ...fields
      })
    }
    return new Destination.RetryableError({
      message: `${what}; ${policy ?? "rolling"} window full${
        reply.rateLimit.max !== undefined ? ` (${reply.rateLimit.max} requests per window)` : ""
      }`,
      retryAfterMs: reply.rateLimit.intervalMs ?? reply.retryAfterMs ?? DEFAULT_INTERVAL_MS,
      ...fields
    })
  }
  if (s === 408 || s === 423 || s === 477 || s >= 500) {
    const after = s === 423 ? Math.max(LOCKED_PAUSE_MS, reply.retryAfterMs ?? 0) : reply.retryAfterMs
    return new Destination.RetryableError({
      message: what,
      ...(after !== undefined ? { retryAfterMs: after } : {}),
      ...fields
    })
  }
  return new Destination.PayloadInvalidError({ message: what, ...fields })
}

/** What HubSpot said about one row (a contact input or an event occurrence). */
type Row =
  | { readonly _tag: "ok"; readonly info: ResponseInfo }
  | { readonly _tag: "refused"; readonly reason: string; readonly info: ResponseInfo }
  | { readonly _tag: "unsent"; readonly reason: string }

const notSent = (n: number): ReadonlyArray<Row> =>
  Array.from(
    { length: n },
    () => ({ _tag: "unsent", reason: `not sent: more than ${MAX_REQUESTS_PER_SEND} requests in one send` })
  )

/**
 * Sends `rows` with `exchange`; when HubSpot refuses the whole request (400) with several rows, sends the halves
 * separately until each refused row is alone (HubSpot names no row in a whole-request 400).
 */
const withSplits = <A>(
  rows: ReadonlyArray<A>,
  ctx: SendContext,
  exchange: (rows: ReadonlyArray<A>) => Effect.Effect<ReadonlyArray<Row> | Reply, SendError, HttpClient.HttpClient>,
  label: string
): Effect.Effect<ReadonlyArray<Row>, SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    if (rows.length === 0) return []
    if (ctx.budget <= 0) return notSent(rows.length)
    const result = yield* exchange(rows)
    if (Array.isArray(result)) return result as ReadonlyArray<Row>
    const reply = result as Reply
    if (rows.length === 1) {
      return [{
        _tag: "refused",
        reason: excerpt(`HubSpot refused the ${label}: ${errorText(reply.json)}`, ctx),
        info: reply.info
      }]
    }
    const middle = Math.ceil(rows.length / 2)
    const left = yield* withSplits(rows.slice(0, middle), ctx, exchange, label)
    const right = yield* withSplits(rows.slice(middle), ctx, exchange, label)
    return [...left, ...right]
  })

const traceIdsOf = (error: unknown): ReadonlyArray<string> => {
  const ids = recordOf(recordOf(error).context).objectWriteTraceId
  return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === "string") : []
}

/** One contacts batch upsert: per-row results (200, 207), the reply of a whole-request 400, or an error. */
const upsertOnce = (inputs: ReadonlyArray<ContactUpsertInput>, ctx: SendContext) =>
  Effect.gen(function*() {
    const body = { inputs: inputs.map((input, i) => ({ ...input, objectWriteTraceId: String(i) })) }
    const reply = yield* post(contactsUrlOf(ctx.settings), body, ctx)
    if (reply.status === 400) return reply
    if (reply.status !== 200 && reply.status !== 201 && reply.status !== 207) {
      return yield* requestError(reply, "contacts upsert", ctx)
    }
    const failed = new Map<string, string>()
    const errors = Array.isArray(reply.json.errors) ? reply.json.errors : []
    for (const e of errors) {
      const text = errorText(recordOf(e))
      for (const id of traceIdsOf(e)) failed.set(id, text)
    }
    const results = Array.isArray(reply.json.results) ? reply.json.results.map(recordOf) : []
    const byTrace = new Map(results.map((r) => [String(r.objectWriteTraceId ?? ""), r]))
    return inputs.map((_, i): Row => {
      const error = failed.get(String(i))
      if (error !== undefined) {
        return {
          _tag: "refused",
          reason: excerpt(`HubSpot refused the contact upsert: ${error}`, ctx),
          info: {
            status: reply.status,
            body: excerpt(JSON.stringify(errors.find((e) => traceIdsOf(e).includes(String(i)))), ctx)
          }
        }
      }
      const result = byTrace.get(String(i)) ?? (errors.length === 0 ? results[i] : undefined)
      return {
        _tag: "ok",
        info: {
          status: reply.status,
          body: result !== undefined ? excerpt(JSON.stringify(result), ctx) : reply.info.body
        }
      }
    })
  })

/** One behavioural events batch: 204 → every row ok; the reply of a 400; or an error. */
const eventsOnce = (events: ReadonlyArray<BehavioralEvent>, ctx: SendContext) =>
  Effect.gen(function*() {
    const reply = yield* post(eventsUrlOf(ctx.settings), { inputs: events }, ctx)
    if (reply.status === 400) return reply
    if (reply.status < 200 || reply.status >= 300) return yield* requestError(reply, "behavioural events", ctx)
    return events.map((): Row => ({ _tag: "ok", info: reply.info }))
  })

/** Merges inputs with the same email (later properties win); `slot[i]` is the merged row of input `i`. */
const mergeByEmail = (inputs: ReadonlyArray<ContactUpsertInput>) => {
  const merged: Array<ContactUpsertInput> = []
  const index = new Map<string, number>()
  const slot = inputs.map((input) => {
    const at = index.get(input.id)
    if (at === undefined) {
      index.set(input.id, merged.length)
      merged.push(input)
      return merged.length - 1
    }
    const prev = merged[at]!
    merged[at] = { ...prev, properties: { ...prev.properties, ...input.properties } }
    return at
  })
  return { merged, slot }
}

/** Upserts contacts (merged per email, in requests of `maxEventsPerRequest`); one row result per input. */
const upsertContacts = (inputs: ReadonlyArray<ContactUpsertInput>, ctx: SendContext) =>
  Effect.gen(function*() {
    const { merged, slot } = mergeByEmail(inputs)
    const rows: Array<Row> = []
    for (let i = 0; i < merged.length; i += ctx.settings.maxEventsPerRequest) {
      const chunk = merged.slice(i, i + ctx.settings.maxEventsPerRequest)
      rows.push(...(yield* withSplits(chunk, ctx, (c) => upsertOnce(c, ctx), "contact upsert")))
    }
    return slot.map((k) => rows[k]!)
  })

const outcomeOf = (row: Row): Outcome =>
  row._tag === "ok"
    ? Destination.Accepted(row.info)
    : row._tag === "refused"
    ? Destination.Rejected(row.reason, row.info)
    : Destination.Retry(row.reason)

/**
 * Sends one batch: the contact upserts (merged per email), then the behavioural events of the events whose contact
 * was written. A refused row is Rejected with HubSpot's message; a whole-request failure (auth, rate limit, 5xx)
 * fails the send — resending is safe: upserts are idempotent and events carry a stable `uuid`.
 */
export const send = Effect.fn("HubSpot.send")(function*(
  batch: ReadonlyArray<Destination.Prepared<Payload>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("hubspot.batch_size", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  const ctx: SendContext = { settings, token: Redacted.value(settings.accessToken), budget: MAX_REQUESTS_PER_SEND }
  const contactRows = yield* upsertContacts(batch.map((p) => p.payload.contact), ctx)
  const withEvent = batch
    .map((p, i) => ({ i, event: p.payload.event }))
    .filter((x): x is { i: number; event: BehavioralEvent } => x.event !== undefined && contactRows[x.i]!._tag === "ok")
  const eventRows: Array<Row | undefined> = batch.map(() => undefined)
  for (let k = 0; k < withEvent.length; k += settings.maxEventsPerRequest) {
    const chunk = withEvent.slice(k, k + settings.maxEventsPerRequest)
    const rows = yield* withSplits(chunk.map((x) => x.event), ctx, (c) => eventsOnce(c, ctx), "behavioural event")
    chunk.forEach((x, j) => (eventRows[x.i] = rows[j]))
  }
  return batch.map((_, i) => outcomeOf(eventRows[i] ?? contactRows[i]!)) as ReadonlyArray<Outcome>
})

// ---------------------------------------------------------------------------------------------------------------
// Audiences (plugin API 1.2)
// ---------------------------------------------------------------------------------------------------------------

/** Pure: the contact upsert that records one audience change (`<audienceId>` = "true" on add, "false" on remove). */
export const member = (
  change: Destination.AudienceChange,
  _settings: Settings
): Either.Either<ContactUpsertInput, Destination.SkipReason> => {
  if (!INTERNAL_NAME.test(change.audienceId)) {
    return skip(
      "invalid",
      `audienceId "${change.audienceId}" is not a HubSpot contact property name (lower-case letters, digits, underscores)`
    )
  }
  let email: string | undefined
  for (const e of change.identity.emails) {
    email = normalizeEmail(e)
    if (email !== undefined) break
  }
  if (email === undefined) {
    return skip("invalid", "no email known for this person: HubSpot audience properties are set on contacts by email")
  }
  return Either.right({
    id: email,
    idProperty: "email",
    properties: { [change.audienceId]: change.op === "add" ? "true" : "false" }
  })
}

/** Sends one audience batch (same property, same operation) as contact upserts; one outcome per change. */
export const sendMembers = Effect.fn("HubSpot.sendMembers")(function*(
  batch: ReadonlyArray<Destination.PreparedMember<ContactUpsertInput>>,
  settings: Settings
) {
  yield* Effect.annotateCurrentSpan("hubspot.members", batch.length)
  if (batch.length === 0) return [] as ReadonlyArray<Outcome>
  const ctx: SendContext = { settings, token: Redacted.value(settings.accessToken), budget: MAX_REQUESTS_PER_SEND }
  const rows = yield* upsertContacts(batch.map((m) => m.member), ctx)
  return rows.map(outcomeOf) as ReadonlyArray<Outcome>
})

// ---------------------------------------------------------------------------------------------------------------
// Erasure (plugin API 1.1)
// ---------------------------------------------------------------------------------------------------------------

/** The JSON body of one GDPR delete by email, as HubSpot documents it. */
export interface GdprDeleteBody {
  readonly objectId: string
  readonly idProperty: "email"
}

/** The GDPR delete body for one (normalised) email. */
export const gdprDeleteBody = (email: string): GdprDeleteBody => ({ objectId: email, idProperty: "email" })

/**
 * `deletePerson`: HubSpot's GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`, `{ objectId: <email>,
 * idProperty: "email" }`, 204 without a body) for every email known for the person. HubSpot permanently deletes the
 * contact with that email, its audience properties included, or, when no contact has it, blocklists the email.
 * A ten-second-window 429, a 423 or a 5xx is tried again (three attempts, pauses of at most 10 s); a daily-limit 429
 * and the rest fail the forward (`DELETE` the person again to retry, when TrackLayer still knows an email: the raw
 * emails are gone after the erasure, so a retry is refused "no email known"). No email → refused, nothing is sent.
 * Emails are never written into the answer (it is stored): only how many contacts were deleted.
 */
export const deletePerson = Effect.fn("HubSpot.deletePerson")(function*(
  request: Destination.DeletionRequest,
  settings: Settings
) {
  const emails = [
    ...new Set(request.identity.emails.map(normalizeEmail).filter((e): e is string => e !== undefined))
  ]
  if (emails.length === 0) {
    return {
      _tag: "Rejected",
      reason: "no email known for this person: HubSpot's GDPR delete finds the contact by email; delete the contact " +
        "in HubSpot by hand (Contacts → the contact → Actions → Delete, with \"Permanently delete\")"
    } satisfies Destination.DeletionOutcome
  }
  const ctx: SendContext = { settings, token: Redacted.value(settings.accessToken), budget: MAX_REQUESTS_PER_SEND }
  let info: ResponseInfo | undefined
  for (const email of emails) {
    for (let attempt = 1;; attempt++) {
      const reply = yield* post(gdprDeleteUrlOf(settings), gdprDeleteBody(email), ctx)
      if (reply.status >= 200 && reply.status < 300) {
        info = reply.info
        break
      }
      if (reply.status === 400) {
        return {
          _tag: "Rejected",
          reason: excerpt(`HubSpot refused the GDPR delete: ${errorText(reply.json)}`, ctx),
          response: reply.info
        } satisfies Destination.DeletionOutcome
      }
      const error = requestError(reply, "GDPR delete", ctx)
      const pause = error._tag === "RetryableError" ? error.retryAfterMs ?? 1_000 : undefined
      if (pause !== undefined && pause <= MAX_DELETION_PAUSE_MS && attempt < DELETION_ATTEMPTS) {
        yield* Effect.sleep(Duration.millis(pause))
        continue
      }
      return yield* error
    }
  }
  const n = emails.length
  return {
    _tag: "Deleted",
    detail: `HubSpot GDPR delete of the contact${n === 1 ? "" : "s"} with the person's ${
      n === 1 ? "email" : `${n} emails`
    }: permanently deleted (an email no contact had is blocklisted)`,
    ...(info !== undefined ? { response: info } : {})
  } satisfies Destination.DeletionOutcome
})

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/**
 * Request limits: 100 contacts per upsert (HubSpot's batch limit; the behavioural events of a batch go in one
 * request too). HubSpot documents no body-size limit; 3 MB bounds memory well above 100 typical payloads.
 */
export const limits: Destination.Limits = { maxEventsPerRequest: MAX_EVENTS_PER_REQUEST, maxBytesPerRequest: 3_000_000 }

/** The audience capability: membership as a boolean contact property. */
export const audiences: Destination.AudienceCapability<Settings, ContactUpsertInput> = {
  limits,
  member,
  send: sendMembers
}

/** The HubSpot CRM destination plugin (plugin API 1.2: audiences; 1.1: erasure by GDPR delete). */
export const plugin: Destination.DestinationPlugin<Settings, Payload> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  pluginApi: "^1.2.0",
  settings: Settings,
  purposes: ["crm"],
  limits,
  transform,
  send,
  deletePerson,
  audiences,
  sandbox: (options) => HubSpotSandbox.start(options)
}

/** Options of `destination`. */
export interface DestinationOptions {
  /** Instance id (default `hubspot`). */
  readonly id?: string
  /** Canonical event names routed here (default: all). */
  readonly events?: ReadonlyArray<string>
  readonly startFrom?: Destination.StartFrom
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
  /** Consent purposes this instance needs (default `["crm"]`). */
  readonly purposes?: ReadonlyArray<string>
}

/** A configured HubSpot destination instance for `tracklayer.config.ts`. */
export const destination = (options: DestinationOptions = {}): Destination.DestinationInstance<Settings, Payload> =>
  Destination.instance({
    id: options.id ?? "hubspot",
    plugin,
    settings: options.settings ?? settingsFromEnv(),
    ...(options.events !== undefined ? { events: options.events } : {}),
    ...(options.startFrom !== undefined ? { startFrom: options.startFrom } : {}),
    ...(options.purposes !== undefined ? { purposes: options.purposes } : {})
  })
