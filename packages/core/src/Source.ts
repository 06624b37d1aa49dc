/**
 * Source plugins (plugin API 1.2): inbound data other than `POST /v1/events`. A source receives HTTP requests at
 * `POST /v1/sources/<instance id>`, authenticates them itself (a shared secret in a header, compared in constant
 * time) and turns each into audience membership batches. The core appends each batch durably to the log as
 * `audience` events (one per member, idempotent by the batch's message id) before answering 200, and the projector
 * and delivery take it from there (docs/cohort-exchange.md).
 */
import type { SqlError } from "@effect/sql"
import type { Config } from "effect"
import { Context, Effect, Either, Layer, ParseResult, Predicate, Schema } from "effect"
import { checkValues } from "./Contract.js"
import { EventStore } from "./EventStore.js"
import { ConfigError, TrackLayerConfig } from "./TrackLayerConfig.js"

/** One inbound audience batch: members entering or leaving one audience. */
export interface AudienceBatch {
  /**
   * The message's dedup id (Amplitude's `message_id`, or a digest of the message when the sender gives none). A
   * batch whose id was already stored is answered 200 and not stored again.
   */
  readonly messageId: string
  /** The audience as the source names it: a stable key (Amplitude cohort id) and a display name. */
  readonly audience: { readonly key: string; readonly name: string }
  /** Epoch ms when the source computed the membership. */
  readonly at: number
  /** The members and, for each, whether they are in the audience now. */
  readonly members: ReadonlyArray<{ readonly userId: string; readonly member: boolean }>
}

/** Why an inbound request was refused (the gateway answers `status` with this message, naming `field`). */
export class SourceRequestError extends Schema.TaggedError<SourceRequestError>()("SourceRequestError", {
  status: Schema.Literal(400, 401, 413),
  field: Schema.String,
  message: Schema.String
}) {}

/** One inbound HTTP request as a source sees it. */
export interface SourceRequest {
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string | undefined>>
  /** The raw body (already within `maxBodyBytes`). */
  readonly body: string
}

/** A source plugin (the value a source plugin package exports). */
export interface SourcePlugin<S = any> {
  /** Package name, e.g. `@tracklayer/plugin-amplitude-cohorts`. */
  readonly name: string
  readonly version: string
  /** The plugin-API versions it supports, as a range: `^1.2.0`. */
  readonly pluginApi: string
  /** Decodes settings; secrets as `Redacted`. */
  readonly settings: Schema.Schema<S, any>
  /** Largest body accepted (bytes); larger requests get 413. */
  readonly maxBodyBytes: number
  /** Authenticates and parses one request (pure apart from reading the clock for a default time). */
  readonly receive: (
    request: SourceRequest,
    settings: S
  ) => Either.Either<ReadonlyArray<AudienceBatch>, SourceRequestError>
  /**
   * The environment that configures this source in `tracklayer serve --sandbox`, given the generated shared secret
   * (kept in `.tracklayer/sandbox.json`), e.g. `{ AMPLITUDE_COHORTS_SECRET: secret }`.
   */
  readonly sandboxEnv?: (secret: string) => Readonly<Record<string, string>>
}

/** A configured source: a plugin, an instance id (its URL path), and its settings read through `Config`. */
export interface SourceInstance<S = any> {
  readonly id: string
  readonly plugin: SourcePlugin<S>
  readonly settings: Config.Config<unknown>
}

/** Builds a source instance (type helper for config modules). */
export const instance = <S>(i: SourceInstance<S>): SourceInstance<S> => i

// ---------------------------------------------------------------------------------------------------------------------
// The sources service: validates each source's settings at startup and stores what they receive.
// ---------------------------------------------------------------------------------------------------------------------

/** What `receive` answered: how many member changes were new, and how many were already stored. */
export interface Received {
  readonly source: string
  readonly batches: number
  readonly members: number
  readonly stored: number
  readonly duplicates: number
}

/** The configured sources. */
export class Sources extends Context.Tag("@tracklayer/core/Sources")<Sources, {
  /** Source id → the plugin (for the body limit). */
  readonly plugins: ReadonlyMap<string, SourcePlugin>
  /** Authenticates, parses and durably appends one inbound request. */
  readonly receive: (
    id: string,
    request: SourceRequest
  ) => Effect.Effect<Received, SourceRequestError | SqlError.SqlError>
}>() {}

/** Builds the service: a bad setting fails startup with the field it is in. */
export const make = Effect.gen(function*() {
  const config = yield* TrackLayerConfig
  const store = yield* EventStore
  const resolved = new Map<string, { plugin: SourcePlugin; settings: unknown }>()
  for (const [i, s] of config.sources.entries()) {
    const raw = yield* s.settings.pipe(
      Effect.mapError((e) =>
        new ConfigError({
          field: `sources[${i}] (${s.id}).settings`,
          detail: String(e).replace(
            /at ([A-Za-z0-9_.]+):/g,
            (_, p: string) => `at ${p.replaceAll(".", "_")} (environment variable):`
          )
        })
      )
    )
    const settings = yield* Schema.decodeUnknown(s.plugin.settings, { errors: "all", onExcessProperty: "error" })(raw)
      .pipe(
        Effect.mapError((e) => {
          const issues = ParseResult.ArrayFormatter.formatErrorSync(e)
          const first = issues[0]
          return new ConfigError({
            field: `sources[${i}] (${s.id}).settings${first ? "." + first.path.join(".") : ""}`,
            detail: issues.map((x) => `${x.path.join(".") || "(settings)"}: ${x.message}`).join("; ")
          })
        })
      )
    resolved.set(s.id, { plugin: s.plugin, settings })
  }
  const receive = (id: string, request: SourceRequest) =>
    Effect.gen(function*() {
      const s = resolved.get(id)
      if (s === undefined) {
        return yield* new SourceRequestError({ status: 400, field: "source", message: `no source "${id}"` })
      }
      const batches = yield* Either.try(() => s.plugin.receive(request, s.settings)).pipe(
        Either.flatMap((x) => x),
        Either.mapLeft((e) =>
          // By tag, not instanceof: a config module loaded through tsx may hold another copy of the class.
          Predicate.isTagged(e, "SourceRequestError")
            ? new SourceRequestError({
              status: (e as SourceRequestError).status,
              field: (e as SourceRequestError).field,
              message: (e as SourceRequestError).message
            })
            : new SourceRequestError({
              status: 400,
              field: "body",
              message: `could not read the request: ${String(e)}`
            })
        )
      )
      // The same rules as the event contract for what reaches the log (ids are identifiers there too).
      const invalid = checkBatches(batches)
      if (invalid !== undefined) return yield* invalid
      const members = batches.reduce((n, b) => n + b.members.length, 0)
      const stored = yield* store.appendAudience(batches, id)
      return { source: id, batches: batches.length, members, stored, duplicates: members - stored }
    })
  return Sources.of({ plugins: new Map([...resolved].map(([k, v]) => [k, v.plugin])), receive })
})

/**
 * Checks what a source plugin parsed before it is stored: ids non-empty and at most 1024 characters (like
 * `user_id` in events), names at most 1024, and no NUL or unpaired surrogate anywhere (PostgreSQL cannot store
 * them). The field is named as the sender wrote it (`users[3].user_id`).
 */
export const checkBatches = (batches: ReadonlyArray<AudienceBatch>): SourceRequestError | undefined => {
  const bad = (field: string, message: string) =>
    new SourceRequestError({ status: 400, field, message: `${field}: ${message}` })
  const check = (field: string, v: string, blankOk = false) => {
    const p = checkValues(v)
    if (p !== undefined) return bad(field, p.message)
    if (!blankOk && v.trim() === "") return bad(field, "must not be empty or blank")
    if (v.length > 1024) return bad(field, `is ${v.length} characters long; at most 1024 are accepted`)
    return undefined
  }
  for (const b of batches) {
    const e = check("message_id", b.messageId) ?? check("cohort_id", b.audience.key) ??
      check("cohort_name", b.audience.name, true)
    if (e !== undefined) return e
    for (const [i, m] of b.members.entries()) {
      const u = check(`users[${i}].user_id`, m.userId)
      if (u !== undefined) return u
    }
  }
  return undefined
}

/** The sources of the config (needs the event store). */
export const layer = Layer.effect(Sources, make)
