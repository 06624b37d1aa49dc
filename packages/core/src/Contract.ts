/**
 * The canonical event contract, v1: the wire shape every producer sends to `POST /v1/events`.
 *
 * `EventWire` is the structural schema of one event (it is what `docs/event-contract.schema.json` is generated
 * from). `decodeEvent` checks an unknown value against it, applies the rules JSON Schema cannot say (at least one
 * identifier, timestamp range) and returns the normalised `CanonicalEvent` or a list of `{ path, message }` errors.
 */
import { Either, ParseResult, Schema } from "effect"

/** The contract version written beside every stored event (upcasters key on it). */
export const CONTRACT_VERSION = 1

/** At most this many events per request. */
export const MAX_EVENTS_PER_REQUEST = 500
/** At most this many bytes per request body (1 MiB). */
export const MAX_REQUEST_BYTES = 1024 * 1024

/** An optional field that must be absent or valid (never `undefined`). */
const opt = <S extends Schema.Schema.All>(s: S) => Schema.optionalWith(s, { exact: true })

const NonEmpty = (max: number) => Schema.String.pipe(Schema.minLength(1), Schema.maxLength(max))

/**
 * Title and description for the published JSON Schema. Set on the property signature, so they replace the generated
 * `maxLength(…)` titles there without changing the decoder's error messages.
 */
const doc = (title: string, description: string) => ({ title, description })

/** 64 lowercase hex characters: a SHA-256 the producer already computed. */
export const Sha256Hex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/),
  Schema.annotations({
    identifier: "Sha256Hex",
    title: "SHA-256 (hex)",
    description: "a SHA-256 digest as 64 lowercase hex characters"
  })
)

/** ISO 8601 with a `Z` or `±hh:mm` offset, or epoch milliseconds. */
export const TimestampWire = Schema.Union(
  Schema.String.pipe(
    Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/),
    Schema.annotations({
      title: "ISO 8601 date-time",
      description: "ISO 8601 date-time with offset, e.g. 2026-04-24T08:00:00Z"
    })
  ),
  Schema.Number.pipe(
    Schema.int(),
    Schema.annotations({ title: "Epoch milliseconds", description: "epoch milliseconds" })
  )
).annotations({ identifier: "Timestamp" })

/** Personal data about the user; raw values are normalised and hashed per destination. */
export const UserWire = Schema.Struct({
  email: opt(NonEmpty(320)).annotations(
    doc("Email", "Raw email address; normalised and hashed per destination. An identifier.")
  ),
  phone: opt(NonEmpty(64)).annotations(
    doc(
      "Phone",
      "Raw phone number, ideally E.164 (+4915123456789); normalised and hashed per destination. An identifier."
    )
  ),
  email_sha256: opt(Sha256Hex).annotations(
    doc("Email SHA-256", "SHA-256 of the trimmed, lower-cased email, if you hash it yourself. An identifier.")
  ),
  phone_sha256: opt(Sha256Hex).annotations(
    doc("Phone SHA-256", "SHA-256 of the phone number's digits with country code (4915123456789). An identifier.")
  ),
  first_name: opt(NonEmpty(256)).annotations(doc("First name", "Given name.")),
  last_name: opt(NonEmpty(256)).annotations(doc("Last name", "Family name.")),
  city: opt(NonEmpty(256)).annotations(doc("City", "City name.")),
  region: opt(NonEmpty(256)).annotations(doc("Region", "State or region, code or name (BE, CA).")),
  postal_code: opt(NonEmpty(32)).annotations(doc("Postal code", "Postal or ZIP code.")),
  country: opt(NonEmpty(64)).annotations(doc("Country", "Country, ideally an ISO 3166-1 alpha-2 code (DE).")),
  date_of_birth: opt(NonEmpty(32)).annotations(doc("Date of birth", "Date of birth as YYYY-MM-DD.")),
  gender: opt(NonEmpty(32)).annotations(doc("Gender", "Gender as the producer records it (f, m, …)."))
}).annotations({
  identifier: "User",
  title: "User",
  description: "Personal data about the user, sent raw; normalised and hashed per destination."
})

/** An experiment the user was exposed to; carried through to destinations. */
export const ExperimentWire = Schema.Struct({
  experiment_key: Schema.propertySignature(NonEmpty(256)).annotations(doc("Experiment key", "The experiment's key.")),
  variant: Schema.propertySignature(NonEmpty(256)).annotations(doc("Variant", "The variant the user saw."))
}).annotations({
  identifier: "Experiment",
  title: "Experiment",
  description: "An experiment the user was exposed to."
})

/** Where the event came from and how it was captured. */
export const ContextWire = Schema.Struct({
  source: opt(NonEmpty(64)).annotations(doc("Source", "Where the event was captured: server, web, ios, …")),
  ip: opt(NonEmpty(64)).annotations(doc("IP address", "The end user's IP address (IPv4 or IPv6).")),
  user_agent: opt(NonEmpty(1024)).annotations(doc("User agent", "The end user's browser or app user agent.")),
  page_url: opt(NonEmpty(4096)).annotations(doc("Page URL", "URL of the page where the event happened.")),
  click_ids: opt(Schema.Record({ key: Schema.String, value: NonEmpty(1024).annotations({ title: "Click ID" }) }))
    .annotations(doc(
      "Click IDs",
      "Click identifiers by name (fbc, fbp, fbclid, gclid, gbraid, wbraid, li_fat_id, ttclid, …); " +
        "destinations read the ones they know."
    )),
  experiments: opt(Schema.Array(ExperimentWire).pipe(Schema.maxItems(50))).annotations(
    doc("Experiments", "Experiments the user was exposed to (at most 50).")
  )
}).annotations({
  identifier: "Context",
  title: "Context",
  description: "Where the event came from and how it was captured."
})

/** One event exactly as producers send it. */
export const EventWire = Schema.Struct({
  event_id: Schema.propertySignature(
    NonEmpty(128).annotations({ description: "the idempotency key, 1–128 characters" })
  ).annotations(doc(
    "Event ID",
    "Unique id of this event, 1–128 characters: the idempotency key. Resending the same event_id is answered " +
      "\"duplicate\" and stored once."
  )),
  event: Schema.propertySignature(
    NonEmpty(128).annotations({ description: "a name in the operator's vocabulary" })
  ).annotations(doc("Event name", "A name in the operator's vocabulary (purchase, sign_up, …).")),
  timestamp: Schema.propertySignature(TimestampWire).annotations(doc(
    "Timestamp",
    "When the event happened: ISO 8601 with offset (Z, +01:00 or +0100) or epoch milliseconds; " +
      "not before 2000-01-01T00:00:00Z and at most 24 hours in the future."
  )),
  user_id: opt(NonEmpty(1024)).annotations(doc("User ID", "Your stable id of the signed-in user. An identifier.")),
  device_id: opt(NonEmpty(1024)).annotations(
    doc("Device ID", "Anonymous id of the device or browser. An identifier.")
  ),
  user: opt(UserWire),
  context: opt(ContextWire),
  consent: opt(Schema.Record({ key: Schema.String, value: Schema.Boolean })).annotations(doc(
    "Consent",
    "Consent per purpose (analytics, advertising, crm): true granted, false refused. Without an answer, analytics " +
      "counts as granted and every other purpose as not granted."
  )),
  properties: opt(Schema.Record({ key: Schema.String, value: Schema.Unknown })).annotations(doc(
    "Properties",
    "Event properties, typed by the event's definition in the vocabulary (purchase: value, currency, order_id). " +
      "value may be a numeric string; currency is ISO 4217. Unknown keys are kept."
  )),
  user_properties: opt(Schema.Record({ key: Schema.String, value: Schema.Unknown })).annotations(
    doc("User properties", "Traits of the user (plan, country, …). Any keys.")
  )
}).annotations({
  identifier: "Event",
  title: "Event",
  description: "One canonical event. Requires at least one identifier: user_id, device_id, user.email, user.phone, " +
    "user.email_sha256 or user.phone_sha256."
})
export type EventWire = typeof EventWire.Type

/** The request body of `POST /v1/events`. Each element is validated on its own, so the envelope accepts any value. */
export const EnvelopeWire = Schema.Struct({
  events: Schema.Array(Schema.Unknown).pipe(Schema.minItems(1), Schema.maxItems(MAX_EVENTS_PER_REQUEST))
})

/** The JSON Schema published for producers (envelope with fully typed events). */
export const PublishedEnvelope = Schema.Struct({
  events: Schema.propertySignature(
    Schema.Array(EventWire).pipe(Schema.minItems(1), Schema.maxItems(MAX_EVENTS_PER_REQUEST))
  ).annotations(doc(
    "Events",
    `1–${MAX_EVENTS_PER_REQUEST} events (and at most 1 MiB per request). Each event is validated on its own: ` +
      "an invalid one is rejected, the rest are stored."
  ))
}).annotations({
  identifier: "TrackLayerEventBatch",
  title: "TrackLayer canonical event batch (contract v1)",
  description: "Body of POST /v1/events."
})

/** One validation problem, addressed by its path inside the event (`properties.value`). */
export interface FieldError {
  readonly path: string
  readonly message: string
}

/** A decoded, normalised event (before vocabulary checks). */
export interface CanonicalEvent extends Omit<EventWire, "timestamp"> {
  /** Epoch milliseconds. */
  readonly timestamp: number
}

/** Oldest timestamp accepted (2000-01-01T00:00:00Z). */
export const MIN_TIMESTAMP_MS = Date.UTC(2000, 0, 1)
/** How far in the future a timestamp may be (clock skew allowance). */
export const MAX_FUTURE_SKEW_MS = 24 * 60 * 60 * 1000

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join("")

/** Turns a ParseError into `{ path, message }` list, with paths prefixed by `prefix`. */
export const fieldErrors = (error: ParseResult.ParseError, prefix: ReadonlyArray<PropertyKey> = []) =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((issue): FieldError => ({
    path: formatPath([...prefix, ...issue.path]) || "(event)",
    message: issue._tag === "Unexpected" ? "unknown field" : issue.message
  }))

const decodeWire = Schema.decodeUnknownEither(EventWire, { errors: "all", onExcessProperty: "error" })

const parseTimestamp = (t: string | number): number => {
  if (typeof t === "number") return t
  // `Date.parse` rolls impossible days over (2026-02-30 → 2026-03-02): refuse them instead.
  const [y, m, d] = t.slice(0, 10).split("-").map(Number) as [number, number, number]
  if (new Date(Date.UTC(y, m - 1, d)).getUTCDate() !== d) return NaN
  // Accept `+hhmm` as well as `+hh:mm`.
  const normalised = t.replace(/([+-]\d{2})(\d{2})$/, "$1:$2")
  return Date.parse(normalised)
}

/** Validates and normalises one wire event. `now` bounds future timestamps. */
/** Deepest nesting accepted inside an event (objects and arrays). */
export const MAX_DEPTH = 32
/** Longest string value accepted anywhere in an event. */
export const MAX_STRING_LENGTH = 8192

/**
 * Values PostgreSQL cannot store or that no producer means: a NUL character or a lone UTF-16 surrogate in any
 * string or key, nesting deeper than MAX_DEPTH, or a string longer than MAX_STRING_LENGTH. Walks iteratively, so
 * even absurdly deep input cannot overflow the stack. Returns the first problem's path.
 */
export const checkValues = (input: unknown): FieldError | undefined => {
  const stack: Array<{ value: unknown; path: ReadonlyArray<PropertyKey>; depth: number }> = [{
    value: input,
    path: [],
    depth: 0
  }]
  // A NUL, or a high surrogate not followed by a low one, or a low one not preceded by a high one.
  // eslint-disable-next-line no-control-regex -- matching NUL is the point: PostgreSQL cannot store it in text
  const bad = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
  const problem = (s: string) =>
    bad.test(s)
      ? "contains a NUL character or an unpaired UTF-16 surrogate"
      : s.length > MAX_STRING_LENGTH
      ? `is ${s.length} characters long; at most ${MAX_STRING_LENGTH} are accepted`
      : undefined
  while (stack.length > 0) {
    const { depth, path, value } = stack.pop()!
    if (typeof value === "string") {
      const p = problem(value)
      if (p) return { path: formatPath(path) || "(event)", message: p }
    } else if (typeof value === "object" && value !== null) {
      if (depth >= MAX_DEPTH) {
        return { path: formatPath(path) || "(event)", message: `is nested deeper than ${MAX_DEPTH} levels` }
      }
      const entries: Array<[PropertyKey, unknown]> = Array.isArray(value)
        ? value.map((v, i) => [i, v])
        : Object.entries(value)
      for (const [k, v] of entries) {
        if (typeof k === "string") {
          const p = problem(k)
          if (p) return { path: formatPath([...path, k]), message: `key ${p}` }
        }
        stack.push({ value: v, path: [...path, k], depth: depth + 1 })
      }
    }
  }
  return undefined
}

export const decodeEvent = (
  input: unknown,
  now: number
): Either.Either<CanonicalEvent, ReadonlyArray<FieldError>> => {
  const valueProblem = checkValues(input)
  if (valueProblem) return Either.left([valueProblem])
  const decoded = decodeWire(input)
  if (Either.isLeft(decoded)) return Either.left(fieldErrors(decoded.left))
  const wire = decoded.right
  const errors: Array<FieldError> = []
  const timestamp = parseTimestamp(wire.timestamp)
  if (!Number.isFinite(timestamp)) {
    errors.push({ path: "timestamp", message: "not a valid date-time" })
  } else if (timestamp < MIN_TIMESTAMP_MS) {
    errors.push({ path: "timestamp", message: "before 2000-01-01T00:00:00Z" })
  } else if (timestamp > now + MAX_FUTURE_SKEW_MS) {
    errors.push({ path: "timestamp", message: "more than 24 hours in the future" })
  }
  const u = wire.user
  if (
    wire.user_id === undefined && wire.device_id === undefined && u?.email === undefined &&
    u?.phone === undefined && u?.email_sha256 === undefined && u?.phone_sha256 === undefined
  ) {
    errors.push({
      path: "user_id",
      message: "at least one identifier is required: user_id, device_id, user.email, user.phone, " +
        "user.email_sha256 or user.phone_sha256"
    })
  }
  if (errors.length > 0) return Either.left(errors)
  return Either.right({ ...wire, timestamp })
}

/** Per-event result of an ingest request. */
export const EventResult = Schema.Struct({
  event_id: Schema.NullOr(Schema.String),
  status: Schema.Literal("accepted", "duplicate", "rejected"),
  errors: opt(Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String })))
})
export type EventResult = typeof EventResult.Type

/** Response body of `POST /v1/events`. */
export const IngestResponse = Schema.Struct({ results: Schema.Array(EventResult) })
export type IngestResponse = typeof IngestResponse.Type

/** One consent update (`POST /v1/consent`): a person's choices, identified like an event. */
export const ConsentUpdateWire = Schema.Struct({
  update_id: opt(NonEmpty(128).annotations({ description: "idempotency key; a repeat is answered `duplicate`" })),
  timestamp: opt(TimestampWire),
  user_id: opt(NonEmpty(1024)),
  device_id: opt(NonEmpty(1024)),
  user: opt(UserWire),
  consent: Schema.Record({ key: Schema.String, value: Schema.Boolean })
}).annotations({ identifier: "ConsentUpdate" })

/** At most this many consent updates per request. */
export const MAX_CONSENT_UPDATES = 500

const decodeConsentWire = Schema.decodeUnknownEither(ConsentUpdateWire, { errors: "all", onExcessProperty: "error" })

/**
 * Validates one consent update and turns it into a canonical event named `consent_update` (stored in the log with
 * kind `consent`). `purposes` are the configured ones; `newId` names updates sent without an `update_id`.
 */
export const decodeConsentUpdate = (
  input: unknown,
  now: number,
  purposes: ReadonlyArray<string>,
  newId: () => string
): Either.Either<CanonicalEvent, ReadonlyArray<FieldError>> => {
  const valueProblem = checkValues(input)
  if (valueProblem) return Either.left([valueProblem])
  const decoded = decodeConsentWire(input)
  if (Either.isLeft(decoded)) return Either.left(fieldErrors(decoded.left))
  const w = decoded.right
  const errors: Array<FieldError> = []
  const timestamp = w.timestamp === undefined ? now : parseTimestamp(w.timestamp)
  if (!Number.isFinite(timestamp) || timestamp < MIN_TIMESTAMP_MS || timestamp > now + MAX_FUTURE_SKEW_MS) {
    errors.push({ path: "timestamp", message: "not a valid date-time within 2000-01-01 and 24 hours from now" })
  }
  const names = Object.keys(w.consent)
  if (names.length === 0) errors.push({ path: "consent", message: "names no purpose" })
  for (const p of names) {
    if (!purposes.includes(p)) {
      errors.push({ path: `consent.${p}`, message: `"${p}" is not a consent purpose; known: ${purposes.join(", ")}` })
    }
  }
  const u = w.user
  if (
    w.user_id === undefined && w.device_id === undefined && u?.email === undefined && u?.phone === undefined &&
    u?.email_sha256 === undefined && u?.phone_sha256 === undefined
  ) {
    errors.push({
      path: "user_id",
      message: "at least one identifier is required: user_id, device_id, user.email, user.phone, " +
        "user.email_sha256 or user.phone_sha256"
    })
  }
  if (errors.length > 0) return Either.left(errors)
  const { update_id, timestamp: _t, ...rest } = w
  return Either.right({ ...rest, event_id: update_id ?? newId(), event: "consent_update", timestamp })
}
