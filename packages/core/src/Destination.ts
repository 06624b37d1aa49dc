/**
 * Plugin API v1: a destination is data plus two functions.
 *
 * - `settings`: a Schema decoding the instance's settings (secrets as `Redacted`), read through `Config`.
 * - `purposes`, `limits`, `window`: what the router and batcher need to know.
 * - `transform(event, settings)`: pure; the exact wire payload for one event, or a typed skip.
 * - `send(batch, settings)`: one request; per-event outcomes, or a typed error for the whole request.
 * - `sandbox`: a local server that behaves like the vendor's documented API, for tests and demos.
 * - `deletePerson` (optional, plugin API 1.1): forwards an erasure (`DELETE /v1/people/:id`) to the destination.
 * - `audiences` (optional, plugin API 1.2): adds and removes people in a destination-side audience (custom
 *   audience, user list, segment, CRM property), fed by the cohort exchange.
 * - `userState` (optional, plugin API 1.2): receives durable trait changes (`$set` / `$unset`) for people.
 *
 * Versions: 1.0.0 initial; 1.1.0 adds the optional `deletePerson` capability (backwards compatible: a plugin built
 * for `^1.0.0` still loads, and is reported as not offering deletion); 1.2.0 adds the optional `audiences` and
 * `userState` capabilities and `Identity.traits` (backwards compatible).
 */
import type { HttpClient } from "@effect/platform"
import type { Config, Duration, Effect, Either, Scope } from "effect"
import { Schema } from "effect"
import type { CanonicalEvent } from "./Contract.js"

/** The plugin-API version this core implements. Plugins declare the range they support. */
export const PLUGIN_API_VERSION = "1.2.0"

/** Everything known about a person's identifiers when an event is shaped (grows with the identity graph). */
export interface Identity {
  readonly personKey: string
  /** The person in the identity graph, when the event is attributed to one. */
  readonly personId?: string
  readonly userId?: string
  readonly deviceId?: string
  readonly emails: ReadonlyArray<string>
  readonly phones: ReadonlyArray<string>
  readonly emailSha256: ReadonlyArray<string>
  readonly phoneSha256: ReadonlyArray<string>
  /** Click id name → value (`fbc`, `gclid`, `li_fat_id`, …). */
  readonly clickIds: Readonly<Record<string, string>>
  /** Click id name → epoch ms when it was first seen (the click time, for ids that do not embed it). */
  readonly clickIdsSeenAt?: Readonly<Record<string, number>>
  /** The latest page URL and user agent seen for the person (from this or earlier events). */
  readonly lastContext?: { readonly pageUrl?: string; readonly userAgent?: string }
  /**
   * The person's durable traits (`user_properties`), latest value per key by event time, as known when the event
   * is shaped (plugin API 1.2). A CRM maps these onto contact properties.
   */
  readonly traits?: Readonly<Record<string, unknown>>
}

/** One stored event as a destination sees it. */
export interface DeliveryEvent {
  /** Position in the log (stable, opaque). */
  readonly position: string
  readonly eventId: string
  readonly name: string
  /** The destination dedup key: the business key when the event has one, else the event id. */
  readonly dedupKey: string
  /** Epoch ms of the event. */
  readonly timestamp: number
  /** Epoch ms when TrackLayer stored it. */
  readonly receivedAt: number
  /** The normalised event (properties decoded by the vocabulary). */
  readonly event: CanonicalEvent
  readonly identity: Identity
  /**
   * Every configured consent purpose → whether it is granted for this event (at event time and still now). Plugins
   * that pass consent on (Google `adUserData` / `adPersonalization`) read it here.
   */
  readonly consent?: Readonly<Record<string, boolean>>
  /**
   * Set when this event is a later report of its business key with another amount (an order's value changed, a
   * partial refund). Only plugins with `supportsAdjustments` receive such events.
   */
  readonly adjustment?: {
    readonly of: string
    readonly previousValue: number | null
    readonly previousCurrency: string | null
  }
}

/** Why `transform` produced nothing for an event. */
export class SkipReason extends Schema.Class<SkipReason>("SkipReason")({
  reason: Schema.Literal("not_mapped", "consent", "duplicate", "window", "invalid"),
  detail: Schema.String
}) {}

/** A transformed event ready to send. */
export interface Prepared<P> {
  readonly event: DeliveryEvent
  readonly payload: P
}

/** What the destination said about one HTTP exchange (excerpt only; never secrets). */
export interface ResponseInfo {
  readonly status: number
  readonly body: string
}

/** Per-event outcome of a send. */
export type Outcome =
  | { readonly _tag: "Accepted"; readonly response?: ResponseInfo }
  | { readonly _tag: "Rejected"; readonly reason: string; readonly response?: ResponseInfo }
  | { readonly _tag: "Retry"; readonly reason: string; readonly afterMs?: number; readonly response?: ResponseInfo }

export const Accepted = (response?: ResponseInfo): Outcome =>
  response ? { _tag: "Accepted", response } : { _tag: "Accepted" }
export const Rejected = (reason: string, response?: ResponseInfo): Outcome =>
  response ? { _tag: "Rejected", reason, response } : { _tag: "Rejected", reason }
export const Retry = (reason: string, afterMs?: number, response?: ResponseInfo): Outcome => ({
  _tag: "Retry",
  reason,
  ...(afterMs !== undefined ? { afterMs } : {}),
  ...(response ? { response } : {})
})

/** The whole request failed and may succeed later (429, 5xx, timeout, connection error). */
export class RetryableError extends Schema.TaggedError<RetryableError>()("RetryableError", {
  message: Schema.String,
  retryAfterMs: Schema.optional(Schema.Number),
  status: Schema.optional(Schema.Number),
  body: Schema.optional(Schema.String)
}) {}

/** Credentials refused: the destination is paused until an operator fixes them. Nothing is dropped. */
export class AuthFailedError extends Schema.TaggedError<AuthFailedError>()("AuthFailedError", {
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  body: Schema.optional(Schema.String)
}) {}

/** The request itself is invalid; resending it cannot help. Every event in it is rejected. */
export class PayloadInvalidError extends Schema.TaggedError<PayloadInvalidError>()("PayloadInvalidError", {
  message: Schema.String,
  status: Schema.optional(Schema.Number),
  body: Schema.optional(Schema.String)
}) {}

export type SendError = RetryableError | AuthFailedError | PayloadInvalidError

/** An erasure forwarded to a destination (plugin API 1.1). */
export interface DeletionRequest {
  /** TrackLayer's id of the erasure (for the destination's audit trail). */
  readonly erasureId: string
  /** Who asked for it, as given to `DELETE /v1/people/:id?requester=…` (default `tracklayer`). */
  readonly requester: string
  /**
   * The person's identifiers as known just before their keys were destroyed. Raw emails and phones are included
   * (in memory only, never stored): a destination that deletes by email needs them. Empty when the erasure is
   * forwarded again later (then only ids are known).
   */
  readonly identity: Identity
  /** Every device id of the person (`identity.deviceId` is only the latest). */
  readonly deviceIds: ReadonlyArray<string>
}

/** What a destination said about a forwarded erasure. */
export type DeletionOutcome =
  /** The destination accepted the deletion (it may carry it out later; `detail` says when, if it said). */
  | { readonly _tag: "Deleted"; readonly detail: string; readonly response?: ResponseInfo }
  /** The plugin can delete, but this instance lacks what it needs (e.g. a secret key). */
  | { readonly _tag: "NotConfigured"; readonly detail: string }
  /** The destination refused (or nothing can be deleted there, e.g. no id it knows). Not retried. */
  | { readonly _tag: "Rejected"; readonly reason: string; readonly response?: ResponseInfo }

/**
 * One person entering or leaving an audience at one destination (plugin API 1.2). The core decides the operation by
 * comparing what the destination should hold (member of the cohort now, and the audience's consent purposes
 * granted now) with what TrackLayer last told it, so a retried webhook, a replay or a consent withdrawal produce
 * exactly the adds and removes needed.
 */
export interface AudienceChange {
  /** Log position of the event that caused the change (audience event or consent change). */
  readonly position: string
  readonly eventId: string
  /** The destination's own audience id, from the audience routing in the config (custom audience id, user list id, DMP segment id, CRM property). */
  readonly audienceId: string
  /** The audience as its source names it (Amplitude: cohort id and name). */
  readonly audience: { readonly key: string; readonly name: string }
  readonly op: "add" | "remove"
  /** Everything known about the person (hashed and raw emails/phones, ids, traits). */
  readonly identity: Identity
  /** Each configured purpose → granted now. */
  readonly consent: Readonly<Record<string, boolean>>
  /** Epoch ms of the membership change at the source (or of the consent change). */
  readonly at: number
}

/** An audience change with the member payload the plugin built for it. */
export interface PreparedMember<M> {
  readonly change: AudienceChange
  readonly member: M
}

/** The audience capability of a destination plugin (plugin API 1.2). */
export interface AudienceCapability<S = any, M = any> {
  /** Members per request and bytes per request. */
  readonly limits: Limits
  /**
   * Pure: the member payload for one change (hashed identifiers in the destination's schema), or why it is
   * skipped (`invalid` when no usable identifier is known).
   */
  readonly member: (change: AudienceChange, settings: S) => Either.Either<M, SkipReason>
  /**
   * Sends one request. Every change in `batch` has the same `audienceId` and the same `op` (the core groups them).
   * Returns one outcome per change, in order.
   */
  readonly send: (
    batch: ReadonlyArray<PreparedMember<M>>,
    settings: S
  ) => Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient>
}

/** Durable trait changes for one person (plugin API 1.2), as computed against the last synced values. */
export interface UserStateUpdate {
  /** Log position of the latest event that changed these traits. */
  readonly position: string
  readonly userId?: string
  readonly deviceId?: string
  /** Traits whose value changed (or is new). */
  readonly set: Readonly<Record<string, unknown>>
  /** Traits that no longer have a value. */
  readonly unset: ReadonlyArray<string>
}

/** The user-state capability (plugin API 1.2): Amplitude's Identify API. */
export interface UserStateCapability<S = any> {
  readonly limits: Limits
  /** Sends one request of updates; one outcome per update, in order. */
  readonly send: (
    batch: ReadonlyArray<UserStateUpdate>,
    settings: S
  ) => Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient>
}

/** Request limits the batcher honours. */
export interface Limits {
  readonly maxEventsPerRequest: number
  /** Bytes of the JSON-encoded payloads in one request. */
  readonly maxBytesPerRequest: number
}

/** A running sandbox: where it listens and the environment that points the plugin's settings at it. */
export interface SandboxHandle {
  readonly url: string
  /** Config keys → values, laid over the process environment in `serve --sandbox`. */
  readonly env: Readonly<Record<string, string>>
}

/** A destination plugin (the value a plugin package exports). */
export interface DestinationPlugin<S = any, P = any> {
  /** Package name, e.g. `@tracklayer/plugin-amplitude`. */
  readonly name: string
  /** The package's own semver version. */
  readonly version: string
  /** The plugin-API versions it supports, as a range: `^1.0.0`. */
  readonly pluginApi: string
  /** Decodes settings; secrets as `Redacted`. */
  readonly settings: Schema.Schema<S, any>
  /** Consent purposes that must all be granted. */
  readonly purposes: ReadonlyArray<string>
  readonly limits: Limits
  /** Whether `transform` handles `DeliveryEvent.adjustment` (else adjustments are dropped with the reason). */
  readonly supportsAdjustments?: boolean
  /** Oldest event the destination accepts (by event time), or undefined for no limit. */
  readonly window?: Duration.Duration
  /** Pure: the wire payload for one event, or why it is skipped. */
  readonly transform: (event: DeliveryEvent, settings: S) => Either.Either<P, SkipReason>
  /** Sends one batch (already within `limits`). Returns one outcome per prepared event, in order. */
  readonly send: (
    batch: ReadonlyArray<Prepared<P>>,
    settings: S
  ) => Effect.Effect<ReadonlyArray<Outcome>, SendError, HttpClient.HttpClient>
  /**
   * Optional (plugin API 1.1): asks the destination to delete everything it holds about a person. A `SendError` is
   * recorded as a failed forward (`RetryableError`, `AuthFailedError`) or a refusal (`PayloadInvalidError`).
   */
  readonly deletePerson?: (
    request: DeletionRequest,
    settings: S
  ) => Effect.Effect<DeletionOutcome, SendError, HttpClient.HttpClient>
  /** Optional (plugin API 1.2): audience membership adds and removes. */
  readonly audiences?: AudienceCapability<S>
  /** Optional (plugin API 1.2): durable trait sync (`$set` / `$unset` only when a value changes). */
  readonly userState?: UserStateCapability<S>
  /** Starts the plugin's sandbox on a free loopback port (or `port`). */
  readonly sandbox?: (options: { readonly port?: number }) => Effect.Effect<SandboxHandle, never, Scope.Scope>
}

/** Where a new destination starts reading the log. */
export type StartFrom = "end" | "beginning" | { readonly since: Date }

/** A configured destination: a plugin, an instance id, and its settings read through `Config`. */
export interface DestinationInstance<S = any, P = any> {
  readonly id: string
  readonly plugin: DestinationPlugin<S, P>
  /** The raw settings (encoded form of `plugin.settings`), read from the environment through `Config`. */
  readonly settings: Config.Config<unknown>
  /** Canonical event names routed here (default: every event in the vocabulary). */
  readonly events?: ReadonlyArray<string>
  /** Consent purposes this instance needs (default: the plugin's); e.g. an analytics tool also used for ads. */
  readonly purposes?: ReadonlyArray<string>
  /** Where the subscription starts when it is created (default `"end"`). */
  readonly startFrom?: StartFrom
  /**
   * History to replay when the destination is first added: live delivery starts at `startFrom` (default the end
   * of the log) and the events from `replayFrom` up to there are replayed beside it, resumably (docs/replay.md).
   */
  readonly replayFrom?: "beginning" | { readonly since: Date }
  /**
   * Durable trait sync to this destination's `userState` capability (plugin API 1.2): the allowlisted traits and
   * derived states, sent only when a value changes (docs/cohort-exchange.md).
   */
  readonly traits?: TraitSyncOptions
}

/** What a derived trait rule sees about a person (docs/cohort-exchange.md#derived-states). */
export interface PersonState {
  readonly userId?: string
  readonly deviceId?: string
  /** Durable traits, latest value by event time. */
  readonly traits: Readonly<Record<string, unknown>>
  /** Each configured purpose → granted now. */
  readonly consent: Readonly<Record<string, boolean>>
  /** How many distinct emails / phones (hashed forms) and which click id names are known. */
  readonly identifiers: {
    readonly emails: number
    readonly phones: number
    readonly clickIds: ReadonlyArray<string>
  }
  /** Keys of the audiences the person is a member of now. */
  readonly audiences: ReadonlyArray<string>
}

/** Trait sync options of a destination instance. */
export interface TraitSyncOptions {
  /** Durable traits synced as they are (`plan`, `lifecycle_stage`, …). */
  readonly sync: ReadonlyArray<string>
  /** Derived user properties: name → rule over the person's state (`meta_eligible`, `high_match_quality`, …). */
  readonly derived?: Readonly<Record<string, (person: PersonState) => unknown>>
}

/** Builds an instance (type helper for config modules). */
export const instance = <S, P>(i: DestinationInstance<S, P>): DestinationInstance<S, P> => i

/** True when `version` satisfies a `^x.y.z`, `~x.y.z`, `x.y.z` or `>=x.y.z <a.b.c` range. */
export const satisfies = (version: string, range: string): boolean => {
  const parse = (v: string) => v.trim().replace(/^v/, "").split(".").map((n) => Number.parseInt(n, 10))
  const cmp = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => {
    for (let i = 0; i < 3; i++) {
      const d = (a[i] ?? 0) - (b[i] ?? 0)
      if (d !== 0) return d
    }
    return 0
  }
  const v = parse(version)
  return range.split("||").some((alt) =>
    alt.trim().split(/\s+/).every((part) => {
      const m = /^(\^|~|>=|<=|>|<|=)?(.+)$/.exec(part)
      if (!m) return false
      const op = m[1] ?? "="
      const r = parse(m[2]!)
      if ([...r, ...v].some((n) => Number.isNaN(n))) return false
      switch (op) {
        case "^":
          // The left-most non-zero number may not change: ^1.2.3 < 2.0.0, ^0.2.3 < 0.3.0, ^0.0.3 < 0.0.4.
          return cmp(v, r) >= 0 && (r[0]! > 0 || r.length === 1
            ? v[0] === r[0]
            : r[1]! > 0 || r.length === 2
            ? v[0] === 0 && v[1] === r[1]
            : v[0] === 0 && v[1] === 0 && v[2] === r[2])
        case "~":
          return cmp(v, r) >= 0 && v[0] === r[0] && v[1] === r[1]
        case ">=":
          return cmp(v, r) >= 0
        case "<=":
          return cmp(v, r) <= 0
        case ">":
          return cmp(v, r) > 0
        case "<":
          return cmp(v, r) < 0
        default:
          return cmp(v, r) === 0
      }
    })
  )
}
