/**
 * Durable trait sync: TrackLayer's state out to a destination's user-state capability (Amplitude Identify).
 *
 * One subscription (`$traits:<destination>`) reads the log in order behind the projector. For every person an event
 * touched it computes the synced view — the allowlisted durable traits plus the derived states of the config
 * (`meta_eligible`, `high_match_quality`, audience membership, …) — compares it with the values last accepted by
 * the destination (`tl_trait_sync`), and sends only what changed: `$set` for new or changed values, `$unset` for
 * values that are gone. Unchanged traits send nothing. An erased person is never synced again (their updates are
 * recorded `dropped: erased`): an Identify after the deletion would re-create them at the destination. The synced
 * values, the delivery records and the cursor are written in one transaction after the destination accepted, so a
 * crash resends at most one page.
 */
import type { HttpClient } from "@effect/platform"
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Duration, Effect, Either, Layer } from "effect"
import * as Consent from "./Consent.js"
import { resolveDestinations } from "./Delivery.js"
import { type Outcome, type PersonState, RetryableError, type UserStateUpdate } from "./Destination.js"
import { EventStore, origin, type StoredEvent } from "./EventStore.js"
import { IdentityGraph, type Resolved } from "./Identity.js"
import { ERASURE_LOCK } from "./internal/locks.js"
import { Leases } from "./Lease.js"
import { Projector } from "./Projector.js"
import { type ResolvedConfig, TrackLayerConfig, type TraitSyncConfig } from "./TrackLayerConfig.js"
import { Vault } from "./Vault.js"

/** The subscription row of the sync of destination `id`. */
export const subscriptionOf = (id: string) => `$traits:${id}`
/** The destination name its delivery records are kept under (shown by explain). */
export const recordsOf = (id: string) => `${id}:identify`

/** Where the sync stands (for `GET /v1/destinations`). */
export interface TraitSyncHealth {
  readonly destination: string
  readonly synced: number
  readonly lastError?: string
}

export class TraitSync extends Context.Tag("@tracklayer/core/TraitSync")<TraitSync, {
  readonly enabled: boolean
}>() {}

/** The synced view of one person: allowlisted traits, then derived states (a derived rule that throws is left out). */
export const view = (config: TraitSyncConfig, person: PersonState): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const name of config.sync) {
    const v = person.traits[name]
    if (v !== undefined && v !== null) out[name] = v
  }
  for (const [name, rule] of Object.entries(config.derived ?? {})) {
    const v = Either.try(() => rule(person))
    if (Either.isRight(v) && v.right !== undefined && v.right !== null) out[name] = v.right
  }
  return out
}

/** JSON with object keys sorted: the last synced values come back from jsonb, which orders keys its own way. */
const canonical = (u: unknown): string => {
  if (Array.isArray(u)) return `[${u.map(canonical).join(",")}]`
  if (typeof u === "object" && u !== null) {
    const o = u as Record<string, unknown>
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")}}`
  }
  return JSON.stringify(u) ?? "null"
}

/** What changed between the last synced values and now (pure). */
export const diff = (
  previous: Readonly<Record<string, unknown>>,
  next: Readonly<Record<string, unknown>>
): { readonly set: Record<string, unknown>; readonly unset: Array<string> } => {
  const set: Record<string, unknown> = {}
  // Compared as stored: through JSON (Dates, undefined members), then with object keys in one order.
  const stored = (u: unknown) => {
    const json = JSON.stringify(u)
    return json === undefined ? undefined : canonical(JSON.parse(json))
  }
  for (const [k, v] of Object.entries(next)) if (stored(previous[k]) !== stored(v)) set[k] = v
  const unset = Object.keys(previous).filter((k) => !Object.hasOwn(next, k)).sort()
  return { set, unset }
}

/** The record of an update not sent because its person was erased (shown by explain, like delivery's drops). */
const erasedRecord = (id: string, e: StoredEvent, erasureId: string): Record<string, unknown> => ({
  destination: recordsOf(id),
  position: e.position,
  event_id: e.eventId,
  attempt: 1,
  outcome: "dropped",
  reason: `erased: the person was erased (${erasureId})`,
  status: null,
  response: null,
  duration_ms: null
})

/** The sync key of an event's person: its user id, else its device id. */
const syncKeyOf = (e: StoredEvent): string | undefined =>
  e.event.user_id !== undefined
    ? `user:${e.event.user_id}`
    : e.event.device_id !== undefined
    ? `device:${e.event.device_id}`
    : undefined

/** Runs the sync of one destination until interrupted. */
const run = (config: ResolvedConfig, t: TraitSyncConfig) =>
  Effect.gen(function*() {
    const [d] = yield* resolveDestinations(config, t.destination)
    const capability = d!.instance.plugin.userState!
    const settings = d!.settings
    const id = t.destination
    const sub = subscriptionOf(id)
    const purposes = d!.instance.purposes ?? d!.instance.plugin.purposes
    const sql = yield* SqlClient.SqlClient
    const store = yield* EventStore
    const graph = yield* IdentityGraph
    const projector = yield* Projector
    const vault = yield* Vault
    const leases = yield* Leases
    const opts = config.delivery

    // Everything already known is synced once (the cursor starts at the beginning of the log).
    const register = sql`INSERT INTO tl_subscriptions (destination, plugin, cursor_tx, cursor_pos, start_tx, start_pos)
    VALUES (${sub}, ${d!.instance.plugin.name}, ${origin.tx}::xid8, ${origin.position}::bigint,
      ${origin.tx}::xid8, ${origin.position}::bigint)
    ON CONFLICT (destination) DO NOTHING`

    let failures = 0

    const step = Effect.gen(function*() {
      const [cursor] = yield* sql<{ tx: string; position: string }>`
      SELECT cursor_tx::text AS tx, cursor_pos::text AS position FROM tl_subscriptions WHERE destination = ${sub}`
      const events = yield* store.readAfter(cursor ?? origin, 1000, yield* projector.cursor)
      if (events.length === 0) return 0
      const last = events[events.length - 1]!
      // The latest event of each person in the page.
      const latest = new Map<string, StoredEvent>()
      for (const e of events) {
        if (e.kind !== "track" && e.kind !== "consent" && e.kind !== "audience") continue
        const key = syncKeyOf(e)
        if (key !== undefined) latest.set(key, e)
      }
      const updates: Array<{ key: string; update: UserStateUpdate; next: Record<string, unknown>; e: StoredEvent }> = []
      const records: Array<Record<string, unknown>> = []
      const resolved: ReadonlyMap<string, Resolved> = latest.size === 0 ?
        new Map() :
        yield* graph.resolve([...latest.values()])
      if (latest.size > 0) {
        // An erased person is never synced again (docs/privacy.md): an Identify after the deletion would re-create
        // them at the destination. Erased = a tombstone on the sync key, the event's person key or any of their keys.
        const keysOf = (key: string, e: StoredEvent) => [key, e.personKey, ...(resolved.get(e.position)?.keys ?? [])]
        const erased = yield* vault.erasures([...new Set([...latest].flatMap(([key, e]) => keysOf(key, e)))])
        for (const [key, e] of latest) {
          const by = erased.size === 0 ? undefined : keysOf(key, e).map((k) => erased.get(k)).find((x) => x)
          if (by === undefined) continue
          latest.delete(key)
          records.push(erasedRecord(id, e, by))
        }
      }
      if (latest.size > 0) {
        const allKeys = [...new Set([...resolved.values()].flatMap((r) => r.keys))]
        const choices = yield* sql<
          { identifier: string; purpose: string; granted: boolean; at: Date; source: Consent.ChoiceSource }
        >`SELECT identifier, purpose, granted, at, source FROM tl_consent_choices WHERE identifier = ANY(${allKeys}::text[])`
        const memberships = yield* sql<{ identifier: string; audience_key: string }>`
        SELECT identifier, audience_key FROM tl_audience_members WHERE identifier = ANY(${allKeys}::text[]) AND member`
        const syncKeys = [...latest.keys()]
        const previous = new Map(
          (yield* sql<{ identifier: string; traits: Record<string, unknown> }>`
          SELECT identifier, traits FROM tl_trait_sync WHERE destination = ${id} AND identifier = ANY(${syncKeys}::text[])`)
            .map((r) => [r.identifier, typeof r.traits === "string" ? JSON.parse(r.traits) : r.traits])
        )
        const now = Date.now()
        for (const [key, e] of latest) {
          const r = resolved.get(e.position)
          const keys = new Set(r?.keys ?? [key])
          const state = Consent.stateAsOf(
            choices.filter((c) => keys.has(c.identifier)).map((c) => ({
              choices: { [c.purpose]: c.granted },
              at: c.at.getTime(),
              source: c.source
            }))
          )
          const identity = r?.identity
          const traits = identity?.traits ?? {}
          const country = traits["country"]
          const person: PersonState = {
            ...(identity?.userId !== undefined ? { userId: identity.userId } : {}),
            ...(identity?.deviceId !== undefined ? { deviceId: identity.deviceId } : {}),
            traits,
            consent: Object.fromEntries(config.consent.purposes.map((purpose) => [
              purpose,
              Consent.decide(config.consent, {
                purposes: [purpose],
                eventAt: now,
                stateAtEvent: state,
                stateNow: state,
                country: typeof country === "string" ? country : undefined,
                source: undefined
              }).granted
            ])),
            identifiers: {
              emails: identity?.emailSha256.length ?? 0,
              phones: identity?.phoneSha256.length ?? 0,
              clickIds: Object.keys(identity?.clickIds ?? {}).sort()
            },
            audiences: [...new Set(memberships.filter((m) => keys.has(m.identifier)).map((m) => m.audience_key))].sort()
          }
          // Traits go only where the person's events may go: the destination's purposes granted now.
          if (!purposes.every((p) => person.consent[p] === true)) continue
          const next = view(t, person)
          const change = diff(previous.get(key) ?? {}, next)
          if (Object.keys(change.set).length === 0 && change.unset.length === 0) continue
          const userId = key.startsWith("user:") ? key.slice(5) : undefined
          const deviceId = key.startsWith("device:") ? key.slice(7) : identity?.deviceId
          updates.push({
            key,
            e,
            next,
            update: {
              position: e.position,
              ...(userId !== undefined ? { userId } : {}),
              ...(deviceId !== undefined ? { deviceId } : {}),
              set: change.set,
              unset: change.unset
            }
          })
        }
      }
      const accepted: Array<{ destination: string; identifier: string; traits: string }> = []
      const payloads: Array<
        { destination: string; position: string; event_id: string; dedup_key: string; payload: string }
      > = []
      for (let i = 0; i < updates.length; i += capability.limits.maxEventsPerRequest) {
        const batch = updates.slice(i, i + capability.limits.maxEventsPerRequest)
        const started = Date.now()
        const result = yield* capability.send(batch.map((u) => u.update), settings).pipe(
          Effect.timeoutFail({
            duration: opts.requestTimeout,
            onTimeout: () => new RetryableError({ message: `timed out after ${Duration.format(opts.requestTimeout)}` })
          }),
          Effect.catchAllDefect((defect) =>
            Effect.fail(new RetryableError({ message: `plugin failed: ${String(defect)}` }))
          ),
          Effect.either
        )
        const ms = Date.now() - started
        if (Either.isLeft(result) && result.left._tag !== "PayloadInvalidError") {
          // Nothing is written: the page is read again after the backoff (updates already accepted re-send the
          // same values, which Identify applies idempotently).
          failures++
          const error = result.left
          const wait = Math.max(
            error._tag === "RetryableError" ? error.retryAfterMs ?? 0 : 0,
            Math.min(Duration.toMillis(opts.maxBackoff), Duration.toMillis(opts.initialBackoff) * 2 ** (failures - 1))
          )
          yield* (error._tag === "AuthFailedError" ? Effect.logError : Effect.logWarning)(
            `trait sync to ${id} ${
              error._tag === "AuthFailedError" ? "paused: authentication failed" : "backing off"
            }: ` +
              `${error.message}; next attempt in ${wait} ms`
          )
          yield* Effect.sleep(Duration.millis(wait))
          return 1
        }
        const outcomes: ReadonlyArray<Outcome> = Either.isRight(result)
          ? result.right
          : batch.map(() => ({ _tag: "Rejected", reason: `invalid request: ${result.left.message}` }))
        const retry = outcomes.find((o) => o._tag === "Retry")
        if (retry !== undefined && retry._tag === "Retry") {
          // One update to try again: the page is read again after the backoff (nothing written yet).
          failures++
          const wait = Math.max(
            retry.afterMs ?? 0,
            Math.min(Duration.toMillis(opts.maxBackoff), Duration.toMillis(opts.initialBackoff) * 2 ** (failures - 1))
          )
          yield* Effect.logWarning(`trait sync to ${id} backing off: ${retry.reason}; next attempt in ${wait} ms`)
          yield* Effect.sleep(Duration.millis(wait))
          return 1
        }
        batch.forEach((u, j) => {
          const o: Outcome = outcomes[j] ?? { _tag: "Rejected", reason: "destination returned no outcome" }
          const payload = JSON.stringify({ set: u.update.set, unset: u.update.unset })
          payloads.push({
            destination: recordsOf(id),
            position: u.e.position,
            event_id: u.e.eventId,
            dedup_key: `${u.key}@${u.e.position}`,
            payload
          })
          records.push({
            destination: recordsOf(id),
            position: u.e.position,
            event_id: u.e.eventId,
            attempt: 1,
            outcome: o._tag === "Accepted" ? "accepted" : "rejected",
            reason: o._tag === "Accepted" ?
              `identify ${u.key}: ${
                [...Object.keys(u.update.set).map((k) => `$set ${k}`), ...u.update.unset.map((k) => `$unset ${k}`)]
                  .join(
                    ", "
                  )
              }` :
              o.reason,
            status: o.response?.status ?? null,
            response: o.response?.body?.slice(0, 2000) ?? null,
            duration_ms: ms
          })
          if (o._tag === "Accepted") {
            accepted.push({ destination: id, identifier: u.key, traits: JSON.stringify(u.next) })
          }
        })
      }
      failures = 0
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* leases.fence(sub)
        // An erasure committed while this step was sending wins: nothing is kept about its person (internal/locks.ts).
        yield* sql`SELECT pg_advisory_xact_lock_shared(${ERASURE_LOCK})`
        const erasedNow = accepted.length === 0 ? new Map<string, string>() : yield* vault.erasures(
          [...new Set(updates.flatMap((u) => [u.key, u.e.personKey]))]
        )
        const gone = new Set(
          updates.filter((u) => erasedNow.has(u.key) || erasedNow.has(u.e.personKey)).map((u) => u.key)
        )
        const keep = accepted.filter((a) => !gone.has(a.identifier))
        if (keep.length > 0) {
          yield* sql`INSERT INTO tl_trait_sync ${sql.insert(keep)}
          ON CONFLICT (destination, identifier) DO UPDATE SET traits = EXCLUDED.traits, at = now()`
        }
        if (payloads.length > 0) {
          // Trait values are personal data: sealed under the person's key like every payload (Vault.ts).
          const sealed = yield* vault.sealPayloads(payloads, updates.map((u) => u.e))
          yield* sql`INSERT INTO tl_delivery_payloads ${sql.insert(sealed)} ON CONFLICT DO NOTHING`
        }
        if (records.length > 0) {
          yield* sql`INSERT INTO tl_delivery_records ${sql.insert(records.map((r) => ({ ...r, owner: leases.owner })))}`
        }
        yield* sql`UPDATE tl_subscriptions SET cursor_tx = ${last.tx}::xid8, cursor_pos = ${last.position}::bigint,
        updated_at = now() WHERE destination = ${sub}`
      }))
      return events.length
    })

    let registered = false
    return yield* leases.hold(
      sub,
      Effect.suspend((): Effect.Effect<unknown, SqlError.SqlError> =>
        registered ? Effect.void : Effect.tap(register, () => (registered = true))
      ).pipe(
        Effect.zipRight(step),
        Effect.catchAllCause((cause) =>
          Effect.logError(`trait sync to ${id}: step failed; retrying`, cause).pipe(
            Effect.zipRight(Effect.sleep(Duration.seconds(1))),
            Effect.as(1)
          )
        ),
        Effect.flatMap((n) => (n === 0 ? Effect.sleep(opts.pollInterval) : Effect.void)),
        Effect.forever,
        Effect.annotateLogs({ destination: id })
      )
    )
  })

export const make = Effect.gen(function*() {
  const config = yield* TrackLayerConfig
  for (const t of config.traitSync) {
    // Settings are validated before the gateway starts (a bad one fails startup like delivery's).
    yield* resolveDestinations(config, t.destination)
    yield* Effect.forkScoped(run(config, t))
  }
  return TraitSync.of({ enabled: config.traitSync.length > 0 })
})

/** The trait sync of each destination configured with `traits` (a no-op without one). */
export const layer: Layer.Layer<
  TraitSync,
  import("./TrackLayerConfig.js").ConfigError,
  | TrackLayerConfig
  | EventStore
  | IdentityGraph
  | Projector
  | Vault
  | Leases
  | SqlClient.SqlClient
  | HttpClient.HttpClient
> = Layer.scoped(TraitSync, make)

/**
 * A derived state: the person can be matched by an ad platform under `purpose` — the purpose is granted now and a
 * hashed email or phone is known (e.g. `meta_eligible: TraitSync.eligible("advertising")`).
 */
export const eligible = (purpose: string) => (person: PersonState): boolean =>
  person.consent[purpose] === true && (person.identifiers.emails > 0 || person.identifiers.phones > 0)

/** A derived state: the person is a member of audience `key` now (a cohort received from elsewhere). */
export const inAudience = (key: string) => (person: PersonState): boolean => person.audiences.includes(key)
