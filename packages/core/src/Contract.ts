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

/** 64 lowercase hex characters: a SHA-256 the producer already computed. */
export const Sha256Hex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/),
  Schema.annotations({ identifier: "Sha256Hex", description: "a SHA-256 digest as 64 lowercase hex characters" })
)

/** ISO 8601 with a `Z` or `±hh:mm` offset, or epoch milliseconds. */
export const TimestampWire = Schema.Union(
  Schema.String.pipe(
    Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/),
    Schema.annotations({ description: "ISO 8601 date-time with offset, e.g. 2026-04-24T08:00:00Z" })
  ),
  Schema.Number.pipe(Schema.int(), Schema.annotations({ description: "epoch milliseconds" }))
).annotations({ identifier: "Timestamp" })

/** Personal data about the user; raw values are normalised and hashed per destination. */
export const UserWire = Schema.Struct({
  email: opt(NonEmpty(320)),
  phone: opt(NonEmpty(64)),
  email_sha256: opt(Sha256Hex),
  phone_sha256: opt(Sha256Hex),
  first_name: opt(NonEmpty(256)),
  last_name: opt(NonEmpty(256)),
  city: opt(NonEmpty(256)),
  region: opt(NonEmpty(256)),
  postal_code: opt(NonEmpty(32)),
  country: opt(NonEmpty(64)),
  date_of_birth: opt(NonEmpty(32)),
  gender: opt(NonEmpty(32))
}).annotations({ identifier: "User" })

/** An experiment the user was exposed to; carried through to destinations. */
export const ExperimentWire = Schema.Struct({
  experiment_key: NonEmpty(256),
  variant: NonEmpty(256)
}).annotations({ identifier: "Experiment" })

/** Where the event came from and how it was captured. */
export const ContextWire = Schema.Struct({
  source: opt(NonEmpty(64)),
  ip: opt(NonEmpty(64)),
  user_agent: opt(NonEmpty(1024)),
  page_url: opt(NonEmpty(4096)),
  click_ids: opt(Schema.Record({ key: Schema.String, value: NonEmpty(1024) })),
  experiments: opt(Schema.Array(ExperimentWire).pipe(Schema.maxItems(50)))
}).annotations({ identifier: "Context" })

/** One event exactly as producers send it. */
export const EventWire = Schema.Struct({
  event_id: NonEmpty(128).annotations({ description: "the idempotency key, 1–128 characters" }),
  event: NonEmpty(128).annotations({ description: "a name in the operator's vocabulary" }),
  timestamp: TimestampWire,
  user_id: opt(NonEmpty(1024)),
  device_id: opt(NonEmpty(1024)),
  user: opt(UserWire),
  context: opt(ContextWire),
  consent: opt(Schema.Record({ key: Schema.String, value: Schema.Boolean })),
  properties: opt(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  user_properties: opt(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
}).annotations({
  identifier: "Event",
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
  events: Schema.Array(EventWire).pipe(Schema.minItems(1), Schema.maxItems(MAX_EVENTS_PER_REQUEST))
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
  // Accept `+hhmm` as well as `+hh:mm`.
  const normalised = t.replace(/([+-]\d{2})(\d{2})$/, "$1:$2")
  return Date.parse(normalised)
}

/** Validates and normalises one wire event. `now` bounds future timestamps. */
export const decodeEvent = (
  input: unknown,
  now: number
): Either.Either<CanonicalEvent, ReadonlyArray<FieldError>> => {
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
