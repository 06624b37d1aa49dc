/**
 * The Amplitude cohorts source: Amplitude cohort membership → audience batches (`POST /v1/sources/<instance id>`).
 *
 * Two bodies are accepted. The Cohort Webhooks destination posts one message per enter or leave batch
 * (`{ cohort_name, cohort_id, in_cohort, computed_time, message_id, users }`), which becomes one batch deduplicated
 * on `message_id`. Property-based cohort syncs set a user property per cohort (`"[Amplitude] <name>: <id>"` or
 * `"[Amplitude] <name> (<id>)"`, true or false), which becomes one batch per cohort id. Amplitude authenticates
 * with a custom header carrying a shared secret; it is compared in constant time before the body is read.
 */
import * as Source from "@tracklayer/core/Source"
import { Config, Either, Option, ParseResult, Redacted, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"

type AudienceBatch = Source.AudienceBatch
type SourceRequest = Source.SourceRequest
type SourceRequestError = Source.SourceRequestError

// ---------------------------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------------------------

/** Package name (matches package.json). */
export const PLUGIN_NAME = "@tracklayer/plugin-amplitude-cohorts"
/** Package version (matches package.json; a test keeps them equal). */
export const PLUGIN_VERSION = "0.1.0"

/** The header carrying the shared secret unless the settings name another. */
export const DEFAULT_HEADER = "x-tracklayer-secret"
/** Shortest shared secret accepted. */
export const MIN_SECRET_LENGTH = 16
/** Largest body accepted: 16 MiB (a 100,000-user webhook with user properties fits). */
export const MAX_BODY_BYTES = 16 * 1024 * 1024
/** Headers Amplitude sets itself on every webhook request: they cannot carry the secret. */
export const RESERVED_HEADERS: ReadonlyArray<string> = ["content-type", "user-agent", "content-length", "host"]
/** Longest error message returned to the sender (a schema message may quote a large value). */
export const MAX_MESSAGE_LENGTH = 500

/** `"[Amplitude] <cohort name>: <cohort id>"` (Amplitude's partner cohort-sync trait). */
export const COLON_TRAIT = /^\[Amplitude\] (.+): ([^\s:()]+)$/s
/** `"[Amplitude] <cohort name> (<cohort id>)"` (the other spelling seen in practice). */
export const PARENTHESES_TRAIT = /^\[Amplitude\] (.+) \(([^\s:()]+)\)$/s

// ---------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------

const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** An HTTP header name (RFC 9110 token), decoded to lower case; never one Amplitude sets itself. */
export const HeaderName = Schema.transform(
  Schema.String.pipe(
    Schema.pattern(HEADER_TOKEN, {
      message: () => "the header must be an HTTP header name (letters, digits, - and _; no spaces or colons)"
    }),
    Schema.filter((h) =>
      RESERVED_HEADERS.includes(h.toLowerCase())
        ? `the header must not be ${h.toLowerCase()}: Amplitude sets it on every request`
        : true
    )
  ),
  Schema.String,
  { strict: true, decode: (h) => h.toLowerCase(), encode: (h) => h }
).annotations({ identifier: "HeaderName" })

/** An instance's settings. The secret is `Redacted` once decoded. */
export const Settings = Schema.Struct({
  /** The shared secret Amplitude sends in `header` (one of the webhook's custom headers). Never repeated. */
  secret: Schema.Redacted(
    Schema.String.pipe(
      Schema.minLength(MIN_SECRET_LENGTH, {
        message: () => `the secret must be at least ${MIN_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)`
      })
    )
  ),
  /** The custom header carrying the secret (default `x-tracklayer-secret`), compared in lower case. */
  header: Schema.optionalWith(HeaderName, { default: () => DEFAULT_HEADER }),
  /** Most users one message may carry; a larger message is refused with 413 (default: only the body limit). */
  maxUsersPerBatch: Schema.optionalWith(
    Schema.Int.pipe(
      Schema.greaterThanOrEqualTo(1, { message: () => "maxUsersPerBatch must be an integer of at least 1" })
    ),
    { exact: true }
  )
}).annotations({ identifier: "AmplitudeCohortsSettings" })
export type Settings = typeof Settings.Type

/** Non-secret options for `settingsFromEnv`. */
export interface EnvOptions {
  /** Config namespace; env vars are `<namespace>_SECRET` and `<namespace>_HEADER` (default `AMPLITUDE_COHORTS`). */
  readonly namespace?: string
  /** Header used when `<namespace>_HEADER` is not set. */
  readonly header?: string
  readonly maxUsersPerBatch?: number
}

/**
 * The instance's settings read through `Config`, in their encoded form: `AMPLITUDE_COHORTS_SECRET` (secret) and
 * optional `AMPLITUDE_COHORTS_HEADER`; everything else comes from `options`.
 */
export const settingsFromEnv = (options: EnvOptions = {}): Config.Config<unknown> => {
  const { header, namespace = "AMPLITUDE_COHORTS", ...rest } = options
  const config = Config.all({
    secret: Config.redacted("SECRET").pipe(
      Config.withDescription(
        `Shared secret Amplitude sends in a custom webhook header (at least ${MIN_SECRET_LENGTH} characters)`
      )
    ),
    header: Config.option(
      Config.string("HEADER").pipe(
        Config.withDescription(`Name of the custom header carrying the secret (default ${DEFAULT_HEADER})`)
      )
    )
  })
  return (namespace === "" ? config : Config.nested(config, namespace)).pipe(
    Config.map(({ header: fromEnv, secret }): unknown => {
      const name = Option.isSome(fromEnv) && fromEnv.value.trim() !== "" ? fromEnv.value.trim() : header
      return {
        ...rest,
        // Schema.Redacted decodes from the plain string, so the encoded object carries it.
        secret: Redacted.value(secret).trim(),
        ...(name !== undefined ? { header: name } : {})
      }
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Wire bodies
// ---------------------------------------------------------------------------------------------------------------

const UserId = Schema.String.pipe(
  Schema.minLength(1, { message: () => "expected a non-empty user id (Amplitude does not send anonymous users)" })
)
const Properties = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** One user of a cohort webhook. */
export const WebhookUser = Schema.Struct({
  user_id: UserId,
  /** Up to 50 user properties chosen in the sync; carried by Amplitude, not used here. */
  user_properties: Schema.optional(Properties.annotations({ message: () => "expected an object of user properties" }))
})

/** The Cohort Webhooks default payload (one enter or leave batch). */
export const CohortWebhook = Schema.Struct({
  cohort_name: Schema.String,
  cohort_id: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty cohort id" })),
  in_cohort: Schema.Boolean,
  /** Unix epoch seconds, as a string (`"1692206763"`). */
  computed_time: Schema.String.pipe(
    Schema.pattern(/^\d{1,12}$/, {
      message: () => "expected Unix epoch seconds as a string of digits (\"1692206763\")"
    })
  ),
  message_id: Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty message id" })),
  users: Schema.Array(WebhookUser).annotations({
    message: () => "expected a list of users ([{ user_id, user_properties? }])"
  })
}).annotations({ identifier: "CohortWebhook" })
export type CohortWebhook = typeof CohortWebhook.Type

/** An identify-style entry with Amplitude user properties: `{ user_id, user_properties }`. */
export const PropertiesEntry = Schema.Struct({ user_id: UserId, user_properties: Properties }).annotations({
  message: () => "expected { user_id, user_properties } (or { userId, traits })"
})

/** An identify call as Amplitude's property-based cohort sync documents it: `{ type: "identify", userId, traits }`. */
export const IdentifyEntry = Schema.Struct({
  type: Schema.optional(Schema.Literal("identify")),
  userId: UserId,
  traits: Properties
}).annotations({ message: () => "expected { type: \"identify\", userId, traits }" })

const MessageId = Schema.String.pipe(Schema.minLength(1, { message: () => "expected a non-empty message id" }))

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/** A path as a reader writes it: `users[3].user_id`, `[0].user_properties["[Amplitude] X: 1"]`; empty → `body`. */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string => {
  const out = path.reduce<string>((acc, key) => {
    if (typeof key === "number") return `${acc}[${key}]`
    const name = String(key)
    if (IDENTIFIER.test(name)) return acc === "" ? name : `${acc}.${name}`
    return `${acc}[${JSON.stringify(name)}]`
  }, "")
  return out === "" ? "body" : out
}

const clip = (s: string): string => (s.length <= MAX_MESSAGE_LENGTH ? s : `${s.slice(0, MAX_MESSAGE_LENGTH - 1)}…`)

const badRequest = (path: ReadonlyArray<PropertyKey>, message: string): SourceRequestError => {
  const field = formatPath(path)
  return new Source.SourceRequestError({ status: 400, field, message: clip(`${field}: ${message}`) })
}

/** Decodes `input` with `schema`; the first problem becomes a 400 naming its full path (after `prefix`). */
const decodeAt = <A, I>(
  schema: Schema.Schema<A, I>,
  input: unknown,
  prefix: ReadonlyArray<PropertyKey>
): Either.Either<A, SourceRequestError> =>
  Schema.decodeUnknownEither(schema, { errors: "first", onExcessProperty: "ignore" })(input).pipe(
    Either.mapLeft((error) => {
      const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
      return badRequest([...prefix, ...(issue?.path ?? [])], issue?.message ?? "invalid")
    })
  )

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const sha256 = (s: string): Buffer => createHash("sha256").update(s, "utf8").digest()

/** JSON with object keys sorted at every level: the same message, however it is spaced or ordered. */
export const canonicalJson = (u: unknown): string => {
  if (Array.isArray(u)) return `[${u.map(canonicalJson).join(",")}]`
  if (isObject(u)) {
    const keys = Object.keys(u).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(u[k])}`).join(",")}}`
  }
  return JSON.stringify(u) ?? "null"
}

/** How long an identical identify-style message without `message_id` counts as a retry (Amplitude retries for ~4 min). */
export const RETRY_WINDOW_MS = 10 * 60 * 1000

/**
 * The dedup id of an identify-style message without `message_id`: SHA-256 of canonical body, newline, cohort id,
 * then the retry window it arrived in (`:<window>`). A retry of the same message within the window is stored once;
 * the same body in a later window (a member who left and entered again) is a new message. A retry that crosses a
 * window boundary is stored twice, which is harmless: delivery sends only what changes membership.
 */
export const digestMessageId = (body: unknown, cohortId: string, now: number): string =>
  `sha256:${sha256(`${canonicalJson(body)}\n${cohortId}`).toString("hex")}:${Math.floor(now / RETRY_WINDOW_MS)}`

/** The cohort a user-property key names, or undefined when it is not a cohort trait. */
export const cohortOfTrait = (key: string): { readonly id: string; readonly name: string } | undefined => {
  const m = COLON_TRAIT.exec(key) ?? PARENTHESES_TRAIT.exec(key)
  return m === null ? undefined : { name: m[1]!, id: m[2]! }
}

/** A trait's membership value: true / false, or the strings "true" / "false" (any case). */
const membershipOf = (value: unknown): boolean | undefined => {
  if (typeof value === "boolean") return value
  if (typeof value === "string") {
    const v = value.trim().toLowerCase()
    if (v === "true") return true
    if (v === "false") return false
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------------------------

/** Checks the secret header in constant time: both sides are SHA-256 digests, so even the length does not leak. */
export const authenticate = (
  request: SourceRequest,
  settings: Settings
): Either.Either<void, SourceRequestError> => {
  const header = settings.header.toLowerCase()
  const presented = request.headers[header]
  if (presented === undefined || presented === "") {
    return Either.left(
      new Source.SourceRequestError({ status: 401, field: header, message: `the ${header} header is missing` })
    )
  }
  const matches = timingSafeEqual(sha256(presented), sha256(Redacted.value(settings.secret)))
  return matches
    ? Either.void
    : Either.left(
      new Source.SourceRequestError({ status: 401, field: header, message: `the ${header} header is not the secret` })
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Bodies → audience batches
// ---------------------------------------------------------------------------------------------------------------

const tooMany = (field: string, count: number, max: number): SourceRequestError =>
  new Source.SourceRequestError({
    status: 413,
    field,
    message: `${field}: ${count} users in one message, more than maxUsersPerBatch ${max}`
  })

/** A cohort webhook → one batch. */
export const fromWebhook = (
  body: unknown,
  settings: Settings
): Either.Either<ReadonlyArray<AudienceBatch>, SourceRequestError> =>
  Either.gen(function*() {
    const message = yield* decodeAt(CohortWebhook, body, [])
    const max = settings.maxUsersPerBatch
    if (max !== undefined && message.users.length > max) {
      return yield* Either.left(tooMany("users", message.users.length, max))
    }
    return [{
      messageId: message.message_id,
      audience: { key: message.cohort_id, name: message.cohort_name },
      at: Number(message.computed_time) * 1000,
      members: message.users.map((u) => ({ userId: u.user_id, member: message.in_cohort }))
    }]
  })

interface Collected {
  readonly name: string
  readonly members: Map<string, { readonly member: boolean; readonly path: ReadonlyArray<PropertyKey> }>
}

/**
 * Identify-style cohort traits → one batch per cohort id, in order of first appearance. Keys that are not cohort
 * traits are ignored; a cohort trait whose value is not true/false is refused, and so is a user given both values
 * for one cohort in the same message.
 */
export const fromTraits = (
  body: unknown,
  settings: Settings,
  now: number
): Either.Either<ReadonlyArray<AudienceBatch>, SourceRequestError> =>
  Either.gen(function*() {
    let entries: ReadonlyArray<unknown>
    let prefix: ReadonlyArray<PropertyKey>
    let field: string
    let messageId: string | undefined
    if (Array.isArray(body)) {
      entries = body
      prefix = []
      field = "body"
    } else {
      const object = body as Record<string, unknown>
      if (object.message_id !== undefined) messageId = yield* decodeAt(MessageId, object.message_id, ["message_id"])
      if ("batch" in object) {
        if (!Array.isArray(object.batch)) return yield* Either.left(badRequest(["batch"], "expected an array"))
        entries = object.batch
        prefix = ["batch"]
        field = "batch"
      } else {
        entries = [object]
        prefix = []
        field = "body"
      }
    }
    const max = settings.maxUsersPerBatch
    if (max !== undefined && entries.length > max) return yield* Either.left(tooMany(field, entries.length, max))

    const cohorts = new Map<string, Collected>()
    for (const [i, entry] of entries.entries()) {
      const at = Array.isArray(body) || prefix.length > 0 ? [...prefix, i] : prefix
      const segmentStyle = isObject(entry) && ("traits" in entry || "userId" in entry || entry.type === "identify")
      let userId: string
      let properties: Readonly<Record<string, unknown>>
      let propertiesField: string
      if (segmentStyle) {
        const decoded = yield* decodeAt(IdentifyEntry, entry, at)
        userId = decoded.userId
        properties = decoded.traits
        propertiesField = "traits"
      } else {
        const decoded = yield* decodeAt(PropertiesEntry, entry, at)
        userId = decoded.user_id
        properties = decoded.user_properties
        propertiesField = "user_properties"
      }
      for (const [key, value] of Object.entries(properties)) {
        const cohort = cohortOfTrait(key)
        if (cohort === undefined) continue
        const path = [...at, propertiesField, key]
        const member = membershipOf(value)
        if (member === undefined) {
          return yield* Either.left(
            badRequest(
              path,
              `expected true or false (or "true" / "false"), got ${clip(JSON.stringify(value) ?? "undefined")}`
            )
          )
        }
        const collected = cohorts.get(cohort.id) ?? { name: cohort.name, members: new Map() }
        cohorts.set(cohort.id, collected)
        const previous = collected.members.get(userId)
        if (previous !== undefined && previous.member !== member) {
          return yield* Either.left(
            badRequest(
              path,
              `user ${JSON.stringify(userId)} is both in and out of cohort ${cohort.id} (see ${
                formatPath(previous.path)
              })`
            )
          )
        }
        if (previous === undefined) collected.members.set(userId, { member, path })
      }
    }
    const several = cohorts.size > 1
    return [...cohorts].map(([id, { members, name }]): AudienceBatch => ({
      // One message can name several cohorts; each batch needs its own dedup id.
      messageId: messageId === undefined ? digestMessageId(body, id, now) : several ? `${messageId}::${id}` : messageId,
      audience: { key: id, name },
      at: now,
      members: [...members].map(([userId, { member }]) => ({ userId, member }))
    }))
  })

const WEBHOOK_KEYS = ["cohort_id", "cohort_name", "in_cohort", "computed_time", "users"]
const TRAIT_KEYS = ["batch", "user_id", "user_properties", "userId", "traits", "type"]

/** Authenticates and parses one request, with `now` (epoch ms) as the time of identify-style batches. */
export const receiveAt = (
  request: SourceRequest,
  settings: Settings,
  now: number
): Either.Either<ReadonlyArray<AudienceBatch>, SourceRequestError> =>
  Either.gen(function*() {
    yield* authenticate(request, settings)
    const bytes = Buffer.byteLength(request.body, "utf8")
    if (bytes > MAX_BODY_BYTES) {
      return yield* Either.left(
        new Source.SourceRequestError({
          status: 413,
          field: "body",
          message: `body: ${bytes} bytes, more than ${MAX_BODY_BYTES}`
        })
      )
    }
    let body: unknown
    try {
      body = JSON.parse(request.body)
    } catch (e) {
      return yield* Either.left(badRequest([], `not JSON (${e instanceof Error ? e.message : String(e)})`))
    }
    if (isObject(body) && WEBHOOK_KEYS.some((k) => k in body)) return yield* fromWebhook(body, settings)
    if (Array.isArray(body) || (isObject(body) && TRAIT_KEYS.some((k) => k in body))) {
      return yield* fromTraits(body, settings, now)
    }
    return yield* Either.left(
      badRequest(
        [],
        "expected an Amplitude cohort webhook ({ cohort_name, cohort_id, in_cohort, computed_time, message_id, users })" +
          " or cohort traits ({ user_id, user_properties } or { userId, traits }: one, an array, or { batch: [...] })"
      )
    )
  })

/** Authenticates and parses one request (identify-style batches are timed now). */
export const receive = (
  request: SourceRequest,
  settings: Settings
): Either.Either<ReadonlyArray<AudienceBatch>, SourceRequestError> => receiveAt(request, settings, Date.now())

// ---------------------------------------------------------------------------------------------------------------
// Plugin and instance
// ---------------------------------------------------------------------------------------------------------------

/** The Amplitude cohorts source plugin (plugin API 1.2). */
export const plugin: Source.SourcePlugin<Settings> = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  pluginApi: "^1.2.0",
  settings: Settings,
  maxBodyBytes: MAX_BODY_BYTES,
  receive,
  // `serve --sandbox` generates the shared secret; the stand-in for Amplitude is a sender
  // (`AmplitudeCohortsSandbox.sender`), not a server to point at.
  sandboxEnv: (secret) => ({ AMPLITUDE_COHORTS_SECRET: secret })
}

/** Options of `source`. */
export interface SourceOptions {
  /** Instance id, the URL path `/v1/sources/<id>` (default `amplitude-cohorts`). */
  readonly id?: string
  /** Encoded settings (default `settingsFromEnv()`). */
  readonly settings?: Config.Config<unknown>
}

/** A configured Amplitude cohorts source instance for `tracklayer.config.ts`. */
export const source = (options: SourceOptions = {}): Source.SourceInstance<Settings> =>
  Source.instance({
    id: options.id ?? "amplitude-cohorts",
    plugin,
    settings: options.settings ?? settingsFromEnv()
  })
