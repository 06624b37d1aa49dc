/**
 * Delivery: one subscription per destination instance. Each reads the log in order from its cursor, routes every
 * event (mapping, consent, dedup, window), transforms it, batches to the destination's limits, sends, classifies
 * each event's outcome, and writes the delivery records, the retry queue and the new cursor in one transaction.
 *
 * A crash between a send and its records means a resend after restart (at-least-once); the destination dedup key
 * makes that effectively once. A destination whose requests fail backs off as a whole and stops reading the log,
 * so its backlog stays on disk; the other destinations and ingest are unaffected (separate fibers).
 */
import type { HttpClient } from "@effect/platform"
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Duration, Effect, Either, Layer, ParseResult, Ref, Schedule, Schema } from "effect"
import { randomUUID } from "node:crypto"
import * as Audiences from "./Audiences.js"
import * as Consent from "./Consent.js"
import {
  type AudienceChange,
  type DeliveryEvent,
  type DestinationInstance,
  type Identity,
  type Outcome,
  type Prepared,
  RetryableError,
  type SendError
} from "./Destination.js"
import { audienceOf, type Cursor, EventStore, type StoredEvent } from "./EventStore.js"
import { IdentityGraph, type Resolved } from "./Identity.js"
import { ERASURE_LOCK } from "./internal/locks.js"
import { Leases } from "./Lease.js"
import { Projector } from "./Projector.js"
import { ConfigError, type ResolvedConfig, TrackLayerConfig } from "./TrackLayerConfig.js"
import { Vault } from "./Vault.js"

/** Where one destination stands. */
export interface DestinationHealth {
  readonly destination: string
  readonly plugin: string
  readonly pluginVersion: string
  /** `running`; `backoff` after a failed request; `paused` after an authentication failure. */
  readonly state: "running" | "backoff" | "paused"
  readonly reason?: string
  readonly lastError?: string
  readonly lastSuccessAt?: string
  readonly resumeAt?: string
  readonly sent: number
  readonly accepted: number
  readonly rejected: number
  readonly dropped: number
  readonly retried: number
  /** The gateway process delivering this destination now (scale-out), and whether it is this one. */
  readonly leaseHolder?: string
  readonly thisProcess?: boolean
}

/** The delivery service: its subscriptions run in the background while the layer is alive. */
export class Delivery extends Context.Tag("@tracklayer/core/Delivery")<Delivery, {
  readonly health: Effect.Effect<ReadonlyArray<DestinationHealth>>
  /** Destination id → its instance (settings already validated). */
  readonly instances: ReadonlyMap<string, DestinationInstance>
  /** Destination id → the instance with its validated settings (for preview). */
  readonly resolved: ReadonlyMap<string, ResolvedDestination>
  /**
   * Starts a replay of history to a destination (or resumes the unfinished one with the same options). It runs in
   * the background beside live delivery; `replay` reports its progress.
   */
  readonly startReplay: (
    destination: string,
    options: ReplayOptions
  ) => Effect.Effect<ReplayStatus, ConfigError | SqlError.SqlError>
  readonly replay: (id: string) => Effect.Effect<ReplayStatus | undefined, SqlError.SqlError>
  readonly replays: (destination?: string) => Effect.Effect<ReadonlyArray<ReplayStatus>, SqlError.SqlError>
  /** Pauses a running replay (it resumes where it stopped when started again). */
  readonly pauseReplay: (id: string) => Effect.Effect<ReplayStatus | undefined, SqlError.SqlError>
  /**
   * Re-queues a destination's dead-lettered events (those whose reason contains `reason`, when given) for a new
   * round of attempts. Returns how many.
   */
  readonly redrive: (destination: string, reason?: string) => Effect.Effect<number, ConfigError | SqlError.SqlError>
}>() {}

/** Why a replay's `events` may not be empty. */
export const EMPTY_EVENTS = "must name at least one event; omit it to replay every event"

/** What to replay. */
export interface ReplayOptions {
  /** Only events at or after this event time. */
  readonly since?: Date
  /** Only events before this event time. */
  readonly until?: Date
  /** Only these canonical event names (at least one; leave it out to replay every event). */
  readonly events?: ReadonlyArray<string>
  /** Count and show sample payloads; send nothing. */
  readonly dryRun?: boolean
}

/** A replay's progress. */
export interface ReplayStatus {
  readonly replay_id: string
  readonly destination: string
  readonly state: "running" | "paused" | "done" | "failed"
  readonly dry_run: boolean
  readonly since: string | null
  readonly until: string | null
  readonly events: ReadonlyArray<string> | null
  /** Tracked events in the replayed range (when it was created). */
  readonly total: number
  readonly counts: ReplayCounts
  /** Events read per second so far, and the estimated seconds left. */
  readonly rate: number
  readonly eta_seconds: number | null
  /** Up to 5 payloads (dry run). */
  readonly samples: ReadonlyArray<{ readonly event_id: string; readonly payload: unknown }>
  readonly error: string | null
  readonly created_at: string
  readonly finished_at: string | null
}

/** Running totals of a replay. */
export interface ReplayCounts {
  /**
   * Tracked events of the range read from the log and evaluated (not skipped): `routed + dropped`. Every event
   * of the range read so far is `read + already` (what the CLI and the gateway log show as read).
   */
  readonly read: number
  /** Skipped: already delivered (or queued) at this destination by live delivery or an earlier replay. */
  readonly already: number
  readonly routed: number
  readonly dropped: number
  readonly droppedBy: Readonly<Record<string, number>>
  readonly sent: number
  readonly accepted: number
  readonly rejected: number
  readonly retried: number
}

const zeroCounts: ReplayCounts = {
  read: 0,
  already: 0,
  routed: 0,
  dropped: 0,
  droppedBy: {},
  sent: 0,
  accepted: 0,
  rejected: 0,
  retried: 0
}

const addCounts = (a: ReplayCounts, b: Partial<ReplayCounts>): ReplayCounts => {
  const droppedBy: Record<string, number> = { ...a.droppedBy }
  for (const [k, v] of Object.entries(b.droppedBy ?? {})) droppedBy[k] = (droppedBy[k] ?? 0) + v
  return {
    read: a.read + (b.read ?? 0),
    already: a.already + (b.already ?? 0),
    routed: a.routed + (b.routed ?? 0),
    dropped: a.dropped + (b.dropped ?? 0),
    droppedBy,
    sent: a.sent + (b.sent ?? 0),
    accepted: a.accepted + (b.accepted ?? 0),
    rejected: a.rejected + (b.rejected ?? 0),
    retried: a.retried + (b.retried ?? 0)
  }
}

interface ReplayRow {
  readonly replay_id: string
  readonly destination: string
  readonly since: Date | null
  readonly until: Date | null
  readonly events: ReadonlyArray<string> | null
  readonly dry_run: boolean
  readonly state: ReplayStatus["state"]
  readonly cursor_tx: string
  readonly cursor_pos: string
  readonly end_tx: string
  readonly end_pos: string
  readonly total: string | number
  readonly counts: unknown
  readonly samples: unknown
  readonly error: string | null
  readonly created_at: Date
  readonly updated_at: Date
  readonly finished_at: Date | null
}

const replayCols = `replay_id, destination, since, until, events, dry_run, state, cursor_tx::text AS cursor_tx,
  cursor_pos::text AS cursor_pos, end_tx::text AS end_tx, end_pos::text AS end_pos, total, counts, samples, error,
  created_at, updated_at, finished_at`

const json = <A>(v: unknown, fallback: A): A => (typeof v === "string" ? JSON.parse(v) : v ?? fallback) as A

const toStatus = (r: ReplayRow): ReplayStatus => {
  const counts = { ...zeroCounts, ...json<Partial<ReplayCounts>>(r.counts, {}) }
  const total = Number(r.total)
  const end = (r.finished_at ?? new Date()).getTime()
  const seconds = Math.max(0.001, (end - r.created_at.getTime()) / 1000)
  const rate = Math.round(((counts.read + counts.already) / seconds) * 10) / 10
  const left = Math.max(0, total - counts.read - counts.already)
  return {
    replay_id: r.replay_id,
    destination: r.destination,
    state: r.state,
    dry_run: r.dry_run,
    since: r.since?.toISOString() ?? null,
    until: r.until?.toISOString() ?? null,
    events: r.events,
    total,
    counts,
    rate,
    eta_seconds: r.state === "done" ? 0 : rate > 0 ? Math.round(left / rate) : null,
    samples: json(r.samples, []),
    error: r.error,
    created_at: r.created_at.toISOString(),
    finished_at: r.finished_at?.toISOString() ?? null
  }
}

/** A destination with validated settings. */
export interface ResolvedDestination {
  readonly instance: DestinationInstance
  readonly settings: unknown
}

/** Reads and validates each destination's settings; a bad value fails with the field it is in. */
export const resolveDestinations = (config: ResolvedConfig, only?: string) =>
  Effect.forEach(
    config.destinations.flatMap((
      instance,
      i
    ) => (only === undefined || instance.id === only ? [[instance, i] as const] : [])),
    ([instance, i]) =>
      Effect.gen(function*() {
        const raw = yield* instance.settings.pipe(
          Effect.mapError((e) =>
            new ConfigError({
              field: `destinations[${i}] (${instance.id}).settings`,
              // Config paths print as A.B; in the environment they are A_B.
              detail: String(e).replace(
                /at ([A-Za-z0-9_.]+):/g,
                (_, p: string) => `at ${p.replaceAll(".", "_")} (environment variable):`
              )
            })
          )
        )
        const settings = yield* Schema.decodeUnknown(instance.plugin.settings, {
          errors: "all",
          onExcessProperty: "error"
        })(
          raw
        ).pipe(
          Effect.mapError((e) => {
            const issues = ParseResult.ArrayFormatter.formatErrorSync(e)
            const first = issues[0]
            return new ConfigError({
              field: `destinations[${i}] (${instance.id}).settings${first ? "." + first.path.join(".") : ""}`,
              detail: issues.map((x) => `${x.path.join(".") || "(settings)"}: ${x.message}`).join("; ")
            })
          })
        )
        return { instance, settings } satisfies ResolvedDestination
      })
  )

/** The identity a destination sees for an event (the event's own identifiers; the identity graph extends it). */
export const identityOf = (e: StoredEvent): Identity => {
  const ev = e.event
  const u = ev.user
  return {
    personKey: e.personKey,
    ...(ev.user_id !== undefined ? { userId: ev.user_id } : {}),
    ...(ev.device_id !== undefined ? { deviceId: ev.device_id } : {}),
    emails: u?.email !== undefined ? [u.email] : [],
    phones: u?.phone !== undefined ? [u.phone] : [],
    emailSha256: u?.email_sha256 !== undefined ? [u.email_sha256] : [],
    phoneSha256: u?.phone_sha256 !== undefined ? [u.phone_sha256] : [],
    clickIds: ev.context?.click_ids ?? {}
  }
}

/** The view of a stored event that plugins receive. */
export const toDeliveryEvent = (e: StoredEvent, identity: Identity = identityOf(e)): DeliveryEvent => ({
  position: e.position,
  eventId: e.eventId,
  name: e.name,
  dedupKey: e.dedupKey,
  timestamp: e.event.timestamp,
  receivedAt: e.receivedAt.getTime(),
  event: e.event,
  identity,
  ...(e.adjustment !== null ? { adjustment: e.adjustment } : {})
})

const amountText = (value: unknown, currency: unknown) =>
  typeof value === "number" ? `${value}${typeof currency === "string" ? ` ${currency}` : ""}` : "no value"

/** A person's consent changes, as the projector recorded them. */
export type ConsentHistory = ReadonlyArray<Consent.ConsentChange>

/** Each configured purpose → granted for this event, at event time and still now (what plugins pass on). */
export const effectiveConsent = (
  policy: Consent.ConsentPolicy,
  e: StoredEvent,
  history: ConsentHistory
): Readonly<Record<string, boolean>> => {
  const stateAtEvent = Consent.stateAsOf(history, e.event.timestamp)
  const stateNow = Consent.stateAsOf(history)
  return Object.fromEntries(policy.purposes.map((purpose) => [
    purpose,
    Consent.decide(policy, {
      purposes: [purpose],
      eventAt: e.event.timestamp,
      eventChoices: e.event.consent,
      stateAtEvent,
      stateNow,
      country: e.event.user?.country,
      source: e.event.context?.source
    }).granted
  ]))
}

/** Why an event is not routed to a destination (`purpose` is set for consent). */
export interface RouteDecision {
  readonly reason: "not_mapped" | "consent" | "duplicate" | "window" | "erased"
  readonly purpose?: string
  readonly detail: string
}

/** The delivery-log reason of a routing decision: `consent (advertising): …`, `duplicate: …`. */
export const reasonText = (d: RouteDecision): string =>
  `${d.reason}${d.purpose !== undefined ? ` (${d.purpose})` : ""}: ${d.detail}`

/** Why an event is not sent to a destination, in the documented order; undefined when it is routed. */
export const routeDecision = (
  d: ResolvedDestination,
  e: StoredEvent,
  now: number,
  policy: Consent.ConsentPolicy = Consent.defaultPolicy,
  history: ConsentHistory = []
): RouteDecision | undefined => {
  if (!e.routable) return { reason: "not_mapped", detail: `"${e.name}" is not in the vocabulary (stored, not routed)` }
  if (d.instance.events !== undefined && !d.instance.events.includes(e.name)) {
    return { reason: "not_mapped", detail: `"${e.name}" is not among the events routed to ${d.instance.id}` }
  }
  const consent = Consent.decide(policy, {
    purposes: d.instance.purposes ?? d.instance.plugin.purposes,
    eventAt: e.event.timestamp,
    eventChoices: e.event.consent,
    stateAtEvent: Consent.stateAsOf(history, e.event.timestamp),
    stateNow: Consent.stateAsOf(history),
    country: e.event.user?.country,
    source: e.event.context?.source
  })
  if (!consent.granted) return { reason: "consent", purpose: consent.purpose, detail: consent.detail }
  if (e.duplicateOf !== null) return { reason: "duplicate", detail: `duplicate of ${e.duplicateOf}` }
  if (e.adjustment !== null && d.instance.plugin.supportsAdjustments !== true) {
    return {
      reason: "duplicate",
      detail:
        `adjustment of ${e.adjustment.of} (${
          amountText(e.adjustment.previousValue, e.adjustment.previousCurrency)
        } → ` +
        `${
          amountText(e.event.properties?.["value"], e.event.properties?.["currency"])
        }); ${d.instance.id} does not take adjustments`
    }
  }
  const window = d.instance.plugin.window
  if (window !== undefined && now - e.event.timestamp > Duration.toMillis(window)) {
    const days = ((now - e.event.timestamp) / 86_400_000).toFixed(1)
    return {
      reason: "window",
      detail: `event is ${days} days old; ${d.instance.id} accepts events up to ${Duration.format(window)} old`
    }
  }
  return undefined
}

/** Splits prepared events into requests within the destination's count and byte limits. */
export const chunk = <T extends { readonly bytes: number }>(
  prepared: ReadonlyArray<T>,
  maxEvents: number,
  maxBytes: number
): ReadonlyArray<ReadonlyArray<T>> => {
  const out: Array<Array<T>> = []
  let cur: Array<T> = []
  let bytes = 0
  for (const p of prepared) {
    if (cur.length > 0 && (cur.length >= maxEvents || bytes + p.bytes > maxBytes)) {
      out.push(cur)
      cur = []
      bytes = 0
    }
    cur.push(p)
    bytes += p.bytes
  }
  if (cur.length > 0) out.push(cur)
  return out
}

type RecordRow = {
  destination: string
  position: string
  event_id: string
  attempt: number
  outcome: "accepted" | "rejected" | "dropped" | "retry" | "dead_letter"
  reason: string | null
  status: number | null
  response: string | null
  duration_ms: number | null
}

interface RetryRow {
  readonly position: string
  readonly eventId: string
  readonly attempts: number
  readonly kind: "event" | "request" | "auth"
  readonly nextAt: Date
  readonly reason: string
  /** When the event first failed (absent for an event failing now for the first time). */
  readonly firstFailedAt?: Date
}

interface State {
  readonly state: "running" | "backoff" | "paused"
  readonly reason?: string
  readonly lastError?: string
  readonly lastSuccessAt?: number
  readonly resumeAt?: number
  readonly failures: number
  readonly sent: number
  readonly accepted: number
  readonly rejected: number
  readonly dropped: number
  readonly retried: number
}

const initialState: State = { state: "running", failures: 0, sent: 0, accepted: 0, rejected: 0, dropped: 0, retried: 0 }

const excerpt = (s: string | undefined) => (s === undefined ? null : s.length > 2000 ? s.slice(0, 2000) + "…" : s)

/** What one page of processing did (replay progress adds these up). */
export interface PageCounts {
  readonly read: number
  readonly routed: number
  readonly sent: number
  readonly accepted: number
  readonly rejected: number
  readonly dropped: number
  readonly retried: number
  /** Dropped events by reason category (`consent`, `window`, `not_mapped`, `duplicate`, `invalid`, `erased`). */
  readonly droppedBy: Readonly<Record<string, number>>
}

/** An event's latest delivery record at a destination. */
interface LatestRecord {
  readonly attempt: number
  readonly outcome: RecordRow["outcome"]
  readonly reason: string | null
}

/**
 * How `process` runs: a dry run sends and writes nothing; `commit` runs inside the page's transaction. `before`
 * (replay): each event's latest record at this destination. A new record gets the next attempt number, and an
 * event dropped again for the same reason is counted as dropped but not recorded again (see `sameDrop`).
 */
interface ProcessMode {
  readonly dryRun?: boolean
  readonly commit?: (counts: PageCounts) => Effect.Effect<void, SqlError.SqlError>
  readonly before?: ReadonlyMap<string, LatestRecord>
}

/** The category of a delivery-log reason: `consent (advertising): …` → `consent`. */
export const reasonCategory = (reason: string): string => /^[a-z_]+/.exec(reason)?.[0] ?? "other"

/**
 * Whether a drop repeats the recorded one: the same reason text, or both `window` (whose detail is the event's age
 * at the time of the decision, which changes by itself).
 */
const sameDrop = (recorded: string, now: string): boolean =>
  recorded === now || (reasonCategory(recorded) === "window" && reasonCategory(now) === "window")

const countReasons = (records: ReadonlyArray<{ outcome: string; reason: string | null }>) => {
  const out: Record<string, number> = {}
  for (const r of records) {
    if (r.outcome !== "dropped" || r.reason === null) continue
    const c = reasonCategory(r.reason)
    out[c] = (out[c] ?? 0) + 1
  }
  return out
}

/**
 * What lets a destination's steps stop gracefully: each step (live or replay) holds one of two permits while it
 * reads, sends and records; `stop` keeps new steps from starting and waits for those in flight.
 */
class Gate {
  stopping = false
  constructor(readonly semaphore: Effect.Semaphore) {}
  /** Runs `step` unless stopping (then waits to be interrupted). */
  run<A, E, R>(step: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.suspend(() => (this.stopping ? Effect.never : this.semaphore.withPermits(1)(step)))
  }
  readonly stop = Effect.suspend(() => {
    this.stopping = true
    return this.semaphore.take(2)
  })
}

/** The lease name of a destination's delivery (Lease.ts). */
export const leaseOf = (id: string) => `delivery:${id}`

/** Runs one destination's subscription until interrupted. */
const runSubscription = (
  d: ResolvedDestination,
  config: ResolvedConfig,
  stateRef: Ref.Ref<State>,
  gate: Gate
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const store = yield* EventStore
    const graph = yield* IdentityGraph
    const projector = yield* Projector
    const vault = yield* Vault
    const leases = yield* Leases
    const { instance, settings } = d
    const plugin = instance.plugin
    const id = instance.id
    const opts = config.delivery
    const batchSize = plugin.limits.maxEventsPerRequest
    const audience = plugin.audiences
    const audienceRoutes = Audiences.routesFor(config.audiences, id, instance.purposes ?? plugin.purposes)
    const routeKeys = new Set(audienceRoutes.map((r) => r.key))

    const startFrom = yield* store.startCursor(instance.startFrom ?? "end")
    const created =
      yield* sql`INSERT INTO tl_subscriptions (destination, plugin, cursor_tx, cursor_pos, start_tx, start_pos)
      VALUES (${id}, ${plugin.name}, ${startFrom.tx}::xid8, ${startFrom.position}::bigint,
        ${startFrom.tx}::xid8, ${startFrom.position}::bigint)
      ON CONFLICT (destination) DO NOTHING RETURNING destination`
    // A destination added with `replayFrom`: live delivery starts at its start point, and history from
    // `replayFrom` up to there is replayed beside it (once: only when the subscription is created).
    const replayFrom = instance.replayFrom
    if (created.length > 0 && replayFrom !== undefined) {
      const r = yield* createReplay(
        sql,
        id,
        replayFrom === "beginning" ? {} : { since: replayFrom.since },
        null,
        startFrom
      )
      yield* Effect.logInfo(`destination ${id} added with replayFrom: replay ${r.replay_id} of ${r.total} events`)
    }

    const loadCursor = Effect.map(
      sql<{ tx: string; position: string }>`
        SELECT cursor_tx::text AS tx, cursor_pos::text AS position FROM tl_subscriptions WHERE destination = ${id}`,
      (rows): Cursor => rows[0]!
    )

    const backoffMs = (attempt: number) => {
      const base = Math.min(
        Duration.toMillis(opts.maxBackoff),
        Duration.toMillis(opts.initialBackoff) * 2 ** Math.max(0, attempt - 1)
      )
      return Math.round(base * (0.8 + Math.random() * 0.4))
    }

    /** Each event's consent history: the choices recorded under any identifier of its person. */
    const consentHistories = (events: ReadonlyArray<StoredEvent>, identities: ReadonlyMap<string, Resolved>) =>
      Effect.gen(function*() {
        const keys = [...new Set([...identities.values()].flatMap((r) => r.keys))]
        const rows = keys.length === 0 ? [] : yield* sql<{
          identifier: string
          purpose: string
          granted: boolean
          at: Date
          source: Consent.ChoiceSource
        }>`SELECT identifier, purpose, granted, at, source FROM tl_consent_choices WHERE identifier = ANY(${keys}::text[])`
        const out = new Map<string, ConsentHistory>()
        for (const e of events) {
          const mine = new Set(identities.get(e.position)?.keys ?? [])
          out.set(
            e.position,
            rows.filter((r) => mine.has(r.identifier)).map((r) => ({
              choices: { [r.purpose]: r.granted },
              at: r.at.getTime(),
              source: r.source
            }))
          )
        }
        return out
      })

    /** Routes, transforms, sends and records a set of events (new from the log, or due retries). */
    const process = (
      events: ReadonlyArray<StoredEvent>,
      previous: ReadonlyMap<string, RetryRow>,
      advanceTo?: Cursor,
      mode: ProcessMode = {}
    ) =>
      Effect.gen(function*() {
        const now = Date.now()
        const records: Array<RecordRow> = []
        const retries: Array<RetryRow> = []
        const done: Array<string> = []
        const payloads: Array<
          { destination: string; position: string; event_id: string; dedup_key: string; payload: string }
        > = []
        const prepared: Array<Prepared<unknown> & { bytes: number; stored: StoredEvent }> = []
        let dropped = 0
        // Drops that repeat the event's latest record (replay): counted, not recorded again.
        const repeated: Array<{ outcome: string; reason: string | null }> = []

        const attemptOf = (e: StoredEvent) =>
          (previous.get(e.position)?.attempts ?? mode.before?.get(e.position)?.attempt ?? 0) + 1
        const record = (
          e: StoredEvent,
          outcome: RecordRow["outcome"],
          reason: string | null,
          extra: Partial<Pick<RecordRow, "status" | "response" | "duration_ms">> = {}
        ) =>
          records.push({
            destination: id,
            position: e.position,
            event_id: e.eventId,
            attempt: attemptOf(e),
            outcome,
            reason,
            status: extra.status ?? null,
            response: extra.response ?? null,
            duration_ms: extra.duration_ms ?? null
          })
        const drop = (e: StoredEvent, reason: string) => {
          const last = mode.before?.get(e.position)
          if (last?.outcome === "dropped" && last.reason !== null && sameDrop(last.reason, reason)) {
            repeated.push({ outcome: "dropped", reason })
          } else {
            record(e, "dropped", reason)
          }
          done.push(e.position)
          dropped++
        }

        // Only tracked events are routed; identity and consent records just move the cursor on.
        const tracked = events.filter((e) => e.kind === "track")
        const identities = yield* graph.resolve(tracked)
        const histories = yield* consentHistories(tracked, identities)
        // Events of an erased person are never sent again, whatever else applies (docs/privacy.md).
        const erasedBy = yield* vault.erasedEvents(tracked, identities)
        for (const e of tracked) {
          const decision = erasedBy.has(e.position)
            ? { reason: "erased" as const, detail: `the person was erased (${erasedBy.get(e.position)})` }
            : routeDecision(d, e, now, config.consent, histories.get(e.position))
          if (decision) {
            drop(e, reasonText(decision))
            continue
          }
          const de = {
            ...toDeliveryEvent(e, identities.get(e.position)?.identity),
            consent: effectiveConsent(config.consent, e, histories.get(e.position) ?? [])
          }
          const t = Either.try(() => plugin.transform(de, settings)).pipe(
            Either.flatMap((x) => x),
            Either.mapLeft((err) =>
              err && typeof err === "object" && "reason" in err && "detail" in err
                ? (err as { reason: string; detail: string })
                : { reason: "invalid", detail: `transform failed: ${String(err)}` }
            )
          )
          if (Either.isLeft(t)) {
            drop(e, `${t.left.reason}: ${t.left.detail}`)
            continue
          }
          const json = JSON.stringify(t.right)
          payloads.push({
            destination: id,
            position: e.position,
            event_id: e.eventId,
            dedup_key: e.dedupKey,
            payload: json
          })
          prepared.push({ event: de, payload: t.right, bytes: json.length, stored: e })
        }

        if (mode.dryRun === true) {
          // Nothing is sent or written: the counts and a few payloads say what a replay would do.
          return {
            sent: 0,
            work: events.length,
            routed: prepared.length,
            accepted: 0,
            rejected: 0,
            dropped,
            retried: 0,
            droppedBy: countReasons([...records, ...repeated]),
            samples: prepared.slice(0, 5).map((p) => ({ event_id: p.event.eventId, payload: p.payload }))
          }
        }
        let requestFailure: { error: SendError; kind: "request" | "auth" } | undefined
        let sent = 0, accepted = 0, rejected = 0, retried = 0
        const retryLater = (e: StoredEvent, kind: RetryRow["kind"], reason: string, afterMs: number | undefined) => {
          const attempts = attemptOf(e)
          retries.push({
            position: e.position,
            eventId: e.eventId,
            attempts,
            kind,
            nextAt: new Date(now + Math.max(afterMs ?? 0, backoffMs(attempts))),
            reason
          })
          retried++
        }

        for (const batch of chunk(prepared, plugin.limits.maxEventsPerRequest, plugin.limits.maxBytesPerRequest)) {
          if (requestFailure) {
            for (const p of batch) {
              record(p.stored, "retry", `not sent: ${requestFailure.error.message}`)
              retryLater(p.stored, requestFailure.kind, requestFailure.error.message, undefined)
            }
            continue
          }
          const started = Date.now()
          const result = yield* plugin.send(batch, settings).pipe(
            Effect.timeoutFail({
              duration: opts.requestTimeout,
              onTimeout: () =>
                new RetryableError({ message: `timed out after ${Duration.format(opts.requestTimeout)}` })
            }),
            Effect.catchAllDefect((defect) =>
              Effect.fail(new RetryableError({ message: `plugin ${plugin.name} failed: ${String(defect)}` }))
            ),
            Effect.either
          )
          const ms = Date.now() - started
          sent += batch.length
          if (Either.isLeft(result)) {
            const error = result.left
            const extra = { status: error.status ?? null, response: excerpt(error.body), duration_ms: ms }
            if (error._tag === "PayloadInvalidError") {
              for (const p of batch) record(p.stored, "rejected", `invalid request: ${error.message}`, extra)
              for (const p of batch) done.push(p.stored.position)
              rejected += batch.length
              continue
            }
            const kind = error._tag === "AuthFailedError" ? "auth" : "request"
            requestFailure = { error, kind }
            for (const p of batch) {
              record(p.stored, "retry", error.message, extra)
              retryLater(
                p.stored,
                kind,
                error.message,
                error._tag === "RetryableError" ? error.retryAfterMs : undefined
              )
            }
            continue
          }
          const outcomes = result.right
          batch.forEach((p, i) => {
            const o: Outcome = outcomes[i] ??
              { _tag: "Retry", reason: "destination returned no outcome for this event" }
            const extra = { status: o.response?.status ?? null, response: excerpt(o.response?.body), duration_ms: ms }
            switch (o._tag) {
              case "Accepted":
                record(p.stored, "accepted", null, extra)
                done.push(p.stored.position)
                accepted++
                break
              case "Rejected":
                record(p.stored, "rejected", o.reason, extra)
                done.push(p.stored.position)
                rejected++
                break
              case "Retry":
                record(p.stored, "retry", o.reason, extra)
                retryLater(p.stored, "event", o.reason, o.afterMs)
                break
            }
          })
        }

        // Audiences: inbound audience events and consent updates, reconciled against what this destination holds.
        const syncWrites: Array<{ destination: string; audience_key: string; identifier: string; member: boolean }> = []
        const audienceEvents = audience === undefined || audienceRoutes.length === 0 ? [] : events.filter((e) => {
          const a = audienceOf(e)
          return a !== undefined ? routeKeys.has(a.audience_key) : e.kind === "consent"
        })
        if (audienceEvents.length > 0 && audience !== undefined) {
          const aIdentities = yield* graph.resolve(audienceEvents)
          const aHistories = yield* consentHistories(audienceEvents, aIdentities)
          const allKeys = [...new Set([...aIdentities.values()].flatMap((r) => r.keys))]
          const memberships = yield* sql<Audiences.Membership>`
            SELECT audience_key, identifier, audience_name, member FROM tl_audience_members
            WHERE identifier = ANY(${allKeys}::text[]) AND audience_key = ANY(${[...routeKeys]}::text[])`
          const synced = yield* sql<Audiences.Synced>`
            SELECT audience_key, identifier, member FROM tl_audience_sync
            WHERE destination = ${id} AND identifier = ANY(${allKeys}::text[])
              AND audience_key = ANY(${[...routeKeys]}::text[])`
          // Changes already planned in this step (two events of one person in one page plan once).
          const planned = new Set<string>()
          const items: Array<{ e: StoredEvent; change: AudienceChange; identifier: string; member: unknown }> = []
          const perEvent = new Map<string, { changes: number; skipped: Array<string>; notes: Array<string> }>()
          for (const e of audienceEvents) {
            const resolved = aIdentities.get(e.position)
            const keys = new Set(resolved?.keys ?? [e.personKey])
            const history = aHistories.get(e.position) ?? []
            const stateNow = Consent.stateAsOf(history)
            const traitsCountry = resolved?.identity.traits?.["country"]
            const grant = (purposes: ReadonlyArray<string>) =>
              Consent.decide(config.consent, {
                purposes,
                eventAt: now,
                stateAtEvent: stateNow,
                stateNow,
                country: typeof traitsCountry === "string" ? traitsCountry : undefined,
                source: undefined
              })
            const a = audienceOf(e)
            const p = Audiences.plan({
              destination: id,
              routes: audienceRoutes,
              ...(a !== undefined ? { only: a.audience_key } : {}),
              memberships: memberships.filter((m) => keys.has(m.identifier)),
              synced: synced.filter((x) => keys.has(x.identifier)),
              grant: (purposes) => {
                const g = grant(purposes)
                return g.granted ? { granted: true, detail: "granted" } : g
              }
            })
            const mine = { changes: 0, skipped: [] as Array<string>, notes: p.notes.map((n) => reasonText(n)) }
            perEvent.set(e.position, mine)
            for (const c of p.changes) {
              const k = `${c.route.key}\u0000${c.identifier}`
              if (planned.has(k)) continue
              planned.add(k)
              const change: AudienceChange = {
                position: e.position,
                eventId: e.eventId,
                audienceId: c.route.audienceId,
                audience: { key: c.route.key, name: c.name },
                op: c.op,
                identity: resolved?.identity ?? identityOf(e),
                consent: Object.fromEntries(
                  config.consent.purposes.map((purpose) => [purpose, grant([purpose]).granted])
                ),
                at: e.event.timestamp
              }
              const m = Either.try(() => audience.member(change, settings)).pipe(
                Either.flatMap((x) => x),
                Either.mapLeft((err) =>
                  err && typeof err === "object" && "reason" in err && "detail" in err
                    ? `${String(err.reason)}: ${String(err.detail)}`
                    : `invalid: member failed: ${String(err)}`
                )
              )
              if (Either.isLeft(m)) {
                mine.skipped.push(`${c.op} ${c.identifier} ${c.route.key}: ${m.left}`)
                continue
              }
              mine.changes++
              items.push({ e, change, identifier: c.identifier, member: m.right })
            }
          }
          // Per event: the outcomes of its changes.
          const results = new Map<string, Array<{ item: (typeof items)[number]; outcome: Outcome; ms: number }>>()
          const groups = new Map<string, Array<(typeof items)[number] & { bytes: number }>>()
          for (const it of items) {
            const g = `${it.change.audienceId}\u0000${it.change.op}`
            groups.set(g, [...(groups.get(g) ?? []), { ...it, bytes: JSON.stringify(it.member).length }])
          }
          for (const group of groups.values()) {
            for (const batch of chunk(group, audience.limits.maxEventsPerRequest, audience.limits.maxBytesPerRequest)) {
              if (requestFailure) {
                for (const it of batch) {
                  results.set(it.e.position, [...(results.get(it.e.position) ?? []), {
                    item: it,
                    outcome: { _tag: "Retry", reason: `not sent: ${requestFailure.error.message}` },
                    ms: 0
                  }])
                }
                continue
              }
              const started = Date.now()
              const result = yield* audience.send(
                batch.map((it) => ({ change: it.change, member: it.member })),
                settings
              )
                .pipe(
                  Effect.timeoutFail({
                    duration: opts.requestTimeout,
                    onTimeout: () =>
                      new RetryableError({ message: `timed out after ${Duration.format(opts.requestTimeout)}` })
                  }),
                  Effect.catchAllDefect((defect) =>
                    Effect.fail(new RetryableError({ message: `plugin ${plugin.name} failed: ${String(defect)}` }))
                  ),
                  Effect.either
                )
              const ms = Date.now() - started
              sent += batch.length
              const outcomes: ReadonlyArray<Outcome> = Either.isRight(result)
                ? result.right
                : batch.map(() => {
                  const error = result.left
                  const response = { status: error.status ?? 0, body: error.body ?? "" }
                  return error._tag === "PayloadInvalidError"
                    ? { _tag: "Rejected", reason: `invalid request: ${error.message}`, response }
                    : {
                      _tag: "Retry",
                      reason: error.message,
                      ...(error._tag === "RetryableError" && error.retryAfterMs !== undefined
                        ? { afterMs: error.retryAfterMs }
                        : {}),
                      response
                    }
                })
              if (Either.isLeft(result) && result.left._tag !== "PayloadInvalidError") {
                requestFailure = {
                  error: result.left,
                  kind: result.left._tag === "AuthFailedError" ? "auth" : "request"
                }
              }
              batch.forEach((it, i) => {
                const outcome = outcomes[i] ??
                  { _tag: "Retry", reason: "destination returned no outcome for this member" }
                results.set(it.e.position, [...(results.get(it.e.position) ?? []), { item: it, outcome, ms }])
                if (outcome._tag === "Accepted") {
                  syncWrites.push({
                    destination: id,
                    audience_key: it.change.audience.key,
                    identifier: it.identifier,
                    member: it.change.op === "add"
                  })
                }
              })
            }
          }
          // One record per event: accepted when every change went through, else retry / rejected with the reasons.
          for (const e of audienceEvents) {
            const mine = perEvent.get(e.position)!
            const rs = results.get(e.position) ?? []
            const describe = (r: (typeof rs)[number]) =>
              `${r.item.change.op} ${r.item.identifier} ${
                r.item.change.op === "add" ? "to" : "from"
              } ${r.item.change.audience.key} (${r.item.change.audienceId})`
            if (rs.length > 0) {
              payloads.push({
                destination: id,
                position: e.position,
                event_id: e.eventId,
                dedup_key: e.dedupKey,
                payload: JSON.stringify(rs.map((r) => ({
                  op: r.item.change.op,
                  audienceId: r.item.change.audienceId,
                  member: r.item.member
                })))
              })
            }
            const last = rs[rs.length - 1]
            const extra = {
              status: last?.outcome.response?.status ?? null,
              response: excerpt(last?.outcome.response?.body),
              duration_ms: last?.ms ?? null
            }
            const retry = rs.find((r) => r.outcome._tag === "Retry")
            const rejectedHere = rs.filter((r) => r.outcome._tag === "Rejected")
            if (retry !== undefined && retry.outcome._tag === "Retry") {
              record(e, "retry", `${describe(retry)}: ${retry.outcome.reason}`, extra)
              retryLater(
                e,
                requestFailure ? requestFailure.kind : "event",
                retry.outcome.reason,
                retry.outcome.afterMs
              )
            } else if (rejectedHere.length > 0) {
              record(
                e,
                "rejected",
                rejectedHere.map((r) => `${describe(r)}: ${r.outcome._tag === "Rejected" ? r.outcome.reason : ""}`)
                  .join("; "),
                extra
              )
              rejected++
              done.push(e.position)
            } else if (rs.length > 0) {
              record(e, "accepted", rs.map(describe).join("; "), extra)
              accepted += rs.length
              done.push(e.position)
            } else if (mine.skipped.length > 0) {
              record(e, "dropped", mine.skipped.join("; "))
              dropped++
              done.push(e.position)
            } else if (e.kind === "audience") {
              // Nothing to change (already in / out, or no consent): recorded so explain says why.
              record(e, "dropped", mine.notes.join("; ") || `duplicate: nothing to change at ${id}`)
              dropped++
              done.push(e.position)
            } else {
              done.push(e.position)
            }
          }
        }

        // Dead-letter what has failed for too long. Auth failures never dead-letter: the destination is paused.
        const keep: Array<RetryRow> = []
        for (const r of retries) {
          const tooMany = r.kind === "event" && r.attempts >= opts.maxAttempts
          const firstFailed = previous.get(r.position)?.firstFailedAt
          const tooOld = r.kind !== "auth" && firstFailed !== undefined &&
            now - firstFailed.getTime() > Duration.toMillis(opts.maxRetryAge)
          if (tooMany || tooOld) {
            records.push({
              destination: id,
              position: r.position,
              event_id: r.eventId,
              attempt: r.attempts,
              outcome: "dead_letter",
              reason: tooMany ?
                `gave up after ${r.attempts} attempts: ${r.reason}` :
                `gave up after ${Duration.format(opts.maxRetryAge)}: ${r.reason}`,
              status: null,
              response: null,
              duration_ms: null
            })
            done.push(r.position)
          } else {
            keep.push(r)
          }
        }

        yield* sql.withTransaction(Effect.gen(function*() {
          // Only the lease holder commits (another process may have taken over while this one was sending).
          yield* leases.fence(leaseOf(id))
          // An erasure committed while this step was sending wins: its events are not queued again.
          yield* sql`SELECT pg_advisory_xact_lock_shared(${ERASURE_LOCK})`
          if (keep.length > 0) {
            const waiting = new Set(keep.map((r) => r.position))
            const erasedNow = yield* vault.erasedEvents(tracked.filter((e) => waiting.has(e.position)), identities)
            if (erasedNow.size > 0) {
              for (let i = keep.length - 1; i >= 0; i--) {
                const r = keep[i]!
                const erasure = erasedNow.get(r.position)
                if (erasure === undefined) continue
                keep.splice(i, 1)
                done.push(r.position)
                records.push({
                  destination: id,
                  position: r.position,
                  event_id: r.eventId,
                  attempt: r.attempts,
                  outcome: "dropped",
                  reason: `erased: the person was erased (${erasure})`,
                  status: null,
                  response: null,
                  duration_ms: null
                })
              }
            }
          }
          if (payloads.length > 0) {
            yield* sql`INSERT INTO tl_delivery_payloads ${
              sql.insert(yield* vault.sealPayloads(payloads, events))
            } ON CONFLICT DO NOTHING`
          }
          if (records.length > 0) {
            yield* sql`INSERT INTO tl_delivery_records ${
              sql.insert(records.map((r) => ({ ...r, owner: leases.owner })))
            }`
          }
          if (syncWrites.length > 0) {
            yield* sql`INSERT INTO tl_audience_sync ${
              sql.insert(
                [...new Map(syncWrites.map((w) => [`${w.audience_key}\u0000${w.identifier}`, w])).values()]
              )
            } ON CONFLICT (destination, audience_key, identifier) DO UPDATE SET member = EXCLUDED.member, at = now()`
          }
          if (done.length > 0) {
            yield* sql`DELETE FROM tl_retry_queue WHERE destination = ${id} AND position IN ${sql.in(done)}`
          }
          if (keep.length > 0) {
            yield* sql`INSERT INTO tl_retry_queue ${
              sql.insert(keep.map((r) => ({
                destination: id,
                position: r.position,
                event_id: r.eventId,
                attempts: r.attempts,
                kind: r.kind,
                next_attempt_at: r.nextAt,
                last_reason: r.reason
              })))
            } ON CONFLICT (destination, position) DO UPDATE SET attempts = EXCLUDED.attempts, kind = EXCLUDED.kind,
              next_attempt_at = EXCLUDED.next_attempt_at, last_reason = EXCLUDED.last_reason`
          }
          if (mode.commit !== undefined) {
            yield* mode.commit({
              read: events.length,
              routed: prepared.length,
              sent,
              accepted,
              rejected,
              dropped,
              retried,
              droppedBy: countReasons([...records, ...repeated])
            })
          }
          if (advanceTo) {
            yield* sql`UPDATE tl_subscriptions SET cursor_tx = ${advanceTo.tx}::xid8,
              cursor_pos = ${advanceTo.position}::bigint, updated_at = now() WHERE destination = ${id}`
          }
        }))

        const at = Date.now()
        yield* Ref.update(stateRef, (s): State => {
          const counts = {
            sent: s.sent + sent,
            accepted: s.accepted + accepted,
            rejected: s.rejected + rejected,
            dropped: s.dropped + dropped,
            retried: s.retried + retried
          }
          if (requestFailure) {
            const failures = s.failures + 1
            const retryAfter = requestFailure.error._tag === "RetryableError"
              ? requestFailure.error.retryAfterMs
              : undefined
            const wait = Math.max(retryAfter ?? 0, backoffMs(failures))
            return {
              ...s,
              ...counts,
              state: requestFailure.kind === "auth" ? "paused" : "backoff",
              reason: requestFailure.kind === "auth"
                ? "the destination refused the credentials or the endpoint (see lastError)"
                : "requests failing",
              lastError: requestFailure.error.message,
              resumeAt: at + wait,
              failures
            }
          }
          const ok = sent > 0 ? { lastSuccessAt: at } : {}
          const { reason: _r, resumeAt: _u, ...rest } = s
          return { ...rest, ...counts, ...ok, state: "running", failures: sent > 0 ? 0 : s.failures }
        })
        if (requestFailure) {
          const s = yield* Ref.get(stateRef)
          yield* (requestFailure.kind === "auth" ? Effect.logError : Effect.logWarning)(
            `destination ${id} ${requestFailure.kind === "auth" ? "paused: authentication failed" : "backing off"}: ` +
              `${requestFailure.error.message}; next attempt at ${new Date(s.resumeAt ?? at).toISOString()}`
          ).pipe(Effect.annotateLogs({ destination: id }))
        }
        return {
          sent,
          work: events.length,
          routed: prepared.length,
          accepted,
          rejected,
          dropped,
          retried,
          droppedBy: countReasons([...records, ...repeated]),
          samples: [] as ReadonlyArray<{ event_id: string; payload: unknown }>
        }
      })

    /** Due retries first (oldest position first), then new events from the log. Returns how much work was done. */
    const step = Effect.gen(function*() {
      const s = yield* Ref.get(stateRef)
      if (s.resumeAt !== undefined && s.state !== "running" && Date.now() < s.resumeAt) {
        yield* Effect.sleep(Duration.millis(Math.min(s.resumeAt - Date.now(), 1000)))
        return 1
      }
      const due = yield* sql<{
        position: string
        event_id: string
        attempts: number
        kind: RetryRow["kind"]
        next_attempt_at: Date
        first_failed_at: Date
        last_reason: string
      }>`SELECT position::text AS position, event_id, attempts, kind, next_attempt_at, first_failed_at, last_reason
        FROM tl_retry_queue WHERE destination = ${id} AND next_attempt_at <= now()
        ORDER BY tl_retry_queue.position LIMIT ${batchSize}`
      if (due.length > 0) {
        const previous = new Map(due.map((r) => [
          r.position,
          {
            position: r.position,
            eventId: r.event_id,
            attempts: r.attempts,
            kind: r.kind,
            nextAt: r.next_attempt_at,
            reason: r.last_reason,
            firstFailedAt: r.first_failed_at
          } satisfies RetryRow
        ]))
        const events = yield* store.byPositions(due.map((r) => r.position))
        yield* process(events, previous)
        return due.length
      }
      // While requests are failing, the backlog stays in the log: nothing new is read until the events already
      // waiting for a retry have gone through (they are the probe that tells the destination is back).
      if (s.state !== "running") {
        const [waiting] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM tl_retry_queue WHERE destination = ${id} AND kind <> 'event'`
        if ((waiting?.n ?? 0) > 0) {
          yield* Effect.sleep(opts.pollInterval)
          return 1
        }
      }
      const cursor = yield* loadCursor
      const events = yield* store.readAfter(cursor, batchSize, yield* projector.cursor)
      if (events.length === 0) return 0
      const last = events[events.length - 1]!
      yield* process(events, new Map(), { tx: last.tx, position: last.position })
      return events.length
    })

    /** One page of the oldest running replay of this destination; how much work was done. */
    const replayStep = Effect.gen(function*() {
      const s = yield* Ref.get(stateRef)
      if (s.resumeAt !== undefined && s.state !== "running" && Date.now() < s.resumeAt) {
        yield* Effect.sleep(Duration.millis(Math.min(s.resumeAt - Date.now(), 1000)))
        return 1
      }
      const [r] = yield* sql<ReplayRow>`SELECT ${sql.literal(replayCols)} FROM tl_replays
        WHERE destination = ${id} AND state = 'running' ORDER BY created_at LIMIT 1`
      if (r === undefined) return 0
      const events = yield* store.readAfter(
        { tx: r.cursor_tx, position: r.cursor_pos },
        batchSize,
        { tx: r.end_tx, position: r.end_pos }
      )
      const counts = { ...zeroCounts, ...json<Partial<ReplayCounts>>(r.counts, {}) }
      if (events.length === 0) {
        yield* sql`UPDATE tl_replays SET state = 'done', finished_at = now(), updated_at = now()
          WHERE replay_id = ${r.replay_id} AND state = 'running'`
        // `read` as the CLI shows it: every tracked event of the range read from the log, the skipped ones included.
        yield* Effect.logInfo(
          `replay ${r.replay_id} to ${id} done: ${counts.read + counts.already} read ` +
            `(${counts.already} already delivered), ${counts.routed} routed, ${counts.dropped} dropped, ` +
            `${counts.sent} sent, ${counts.accepted} accepted, ${counts.rejected} rejected, ` +
            `${counts.retried} retried`
        )
        return 1
      }
      const last = events[events.length - 1]!
      const wanted = events.filter((e) =>
        e.kind === "track" &&
        (r.since === null || e.event.timestamp >= r.since.getTime()) &&
        (r.until === null || e.event.timestamp < r.until.getTime()) &&
        (r.events === null || r.events.includes(e.name))
      )
      // Events live delivery (or an earlier replay) sent here, or is still trying to, are not sent again. Events
      // only dropped before (not mapped then, no consent then, …) are routed again, as live delivery would today;
      // one dropped again for the reason of its latest record is not recorded again (`before`, in `process`).
      const handled = wanted.length === 0 ? new Set<string>() : new Set(
        (yield* sql<{ position: string }>`
          SELECT position::text AS position FROM tl_delivery_records
          WHERE destination = ${id} AND outcome IN ('accepted', 'rejected', 'dead_letter')
            AND position IN ${sql.in(wanted.map((e) => e.position))}
          UNION SELECT position::text AS position FROM tl_retry_queue
          WHERE destination = ${id} AND position IN ${sql.in(wanted.map((e) => e.position))}`).map((x) => x.position)
      )
      const todo = wanted.filter((e) => !handled.has(e.position))
      const advance = (page: Partial<ReplayCounts>, samples?: ReadonlyArray<unknown>) =>
        sql`UPDATE tl_replays SET cursor_tx = ${last.tx}::xid8, cursor_pos = ${last.position}::bigint,
          counts = ${
          JSON.stringify(addCounts(counts, { ...page, read: wanted.length - handled.size, already: handled.size }))
        }::jsonb,
          ${samples !== undefined ? sql`samples = ${JSON.stringify(samples)}::jsonb,` : sql``}
          updated_at = now() WHERE replay_id = ${r.replay_id}`
      if (r.dry_run) {
        const res = todo.length === 0 ? undefined : yield* process(todo, new Map(), undefined, { dryRun: true })
        const samples = [...json<Array<unknown>>(r.samples, []), ...(res?.samples ?? [])].slice(0, 5)
        yield* advance(res ? { routed: res.routed, dropped: res.dropped, droppedBy: res.droppedBy } : {}, samples)
      } else if (todo.length === 0) {
        yield* advance({})
      } else {
        const before = new Map(
          (yield* sql<{ position: string; attempt: number; outcome: RecordRow["outcome"]; reason: string | null }>`
            SELECT DISTINCT ON (position) position::text AS position, attempt, outcome, reason
            FROM tl_delivery_records
            WHERE destination = ${id} AND position IN ${sql.in(todo.map((e) => e.position))}
            ORDER BY position, id DESC`).map((x) => [x.position, x] as const)
        )
        yield* process(todo, new Map(), undefined, {
          before,
          commit: (page) =>
            advance({
              routed: page.routed,
              dropped: page.dropped,
              droppedBy: page.droppedBy,
              sent: page.sent,
              accepted: page.accepted,
              rejected: page.rejected,
              retried: page.retried
            })
        })
      }
      return events.length
    })

    // Replays run beside live delivery: a short pause between pages keeps the live path (and ingest, on the one
    // PGlite connection) from waiting behind a long history.
    const replayLoop = gate.run(replayStep).pipe(
      Effect.catchAllCause((cause) =>
        Effect.logError(`destination ${id}: replay step failed; retrying`, cause).pipe(
          Effect.zipRight(Effect.sleep(Duration.seconds(1))),
          Effect.as(1)
        )
      ),
      Effect.flatMap((work) => Effect.sleep(work === 0 ? Duration.seconds(1) : Duration.millis(5))),
      Effect.forever
    )

    const loop = gate.run(step).pipe(
      Effect.catchAllCause((cause) =>
        Effect.logError(`destination ${id}: delivery step failed; retrying`, cause).pipe(
          Effect.annotateLogs({ destination: id }),
          Effect.zipRight(Effect.sleep(Duration.seconds(1))),
          Effect.as(1)
        )
      ),
      Effect.flatMap((work) => (work === 0 ? Effect.sleep(opts.pollInterval) : Effect.void)),
      Effect.forever
    )
    // Live delivery and replays of this destination run in the process holding its lease (one at a time).
    return yield* leases.hold(leaseOf(id), Effect.raceFirst(loop, replayLoop))
  }).pipe(Effect.annotateLogs({ destination: d.instance.id }))

/** Builds delivery: validates settings, then runs every subscription in the background. */
export const make = Effect.gen(function*() {
  const config = yield* TrackLayerConfig
  const resolved = yield* resolveDestinations(config)
  const states = new Map<string, Ref.Ref<State>>()
  // Each step (live or replay) holds a permit of its destination's gate while it reads, sends and records.
  const gates: Array<Gate> = []
  for (const d of resolved) {
    const ref = yield* Ref.make(initialState)
    states.set(d.instance.id, ref)
    const gate = new Gate(yield* Effect.makeSemaphore(2))
    gates.push(gate)
    yield* runSubscription(d, config, ref, gate).pipe(
      Effect.tapErrorCause((cause) =>
        Effect.logError(`destination ${d.instance.id}: subscription failed to start; retrying in 1 s`, cause)
      ),
      Effect.retry(Schedule.spaced(Duration.seconds(1))),
      Effect.forkScoped
    )
  }
  // Graceful stop: added after the forks, so it runs before they are interrupted. Taking every permit waits for the
  // steps in flight to finish — their batches sent and recorded, so nothing is resent after a restart — and keeps
  // new ones from starting. Bounded: a step stuck longer than a request timeout (plus slack) is interrupted.
  yield* Effect.addFinalizer(() =>
    Effect.forEach(gates, (g) => g.stop, { concurrency: "unbounded", discard: true }).pipe(
      // Finalizers are uninterruptible; the wait must not be, or the timeout could not end it.
      Effect.interruptible,
      Effect.timeout(Duration.sum(config.delivery.requestTimeout, Duration.seconds(5))),
      Effect.ignore
    )
  )

  const leases = yield* Leases
  const health = Effect.flatMap(
    leases.list.pipe(Effect.orElseSucceed((): ReadonlyArray<{ name: string; owner: string }> => [])),
    (held) =>
      Effect.forEach(
        resolved,
        (d) =>
          Effect.map(Ref.get(states.get(d.instance.id)!), (s): DestinationHealth => ({
            destination: d.instance.id,
            plugin: d.instance.plugin.name,
            pluginVersion: d.instance.plugin.version,
            state: s.state,
            ...(s.reason !== undefined ? { reason: s.reason } : {}),
            ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
            ...(s.lastSuccessAt !== undefined ? { lastSuccessAt: new Date(s.lastSuccessAt).toISOString() } : {}),
            ...(s.resumeAt !== undefined && s.state !== "running"
              ? { resumeAt: new Date(s.resumeAt).toISOString() }
              : {}),
            sent: s.sent,
            accepted: s.accepted,
            rejected: s.rejected,
            dropped: s.dropped,
            retried: s.retried,
            ...((h) => h === undefined ? {} : { leaseHolder: h.owner, thisProcess: h.owner === leases.owner })(
              held.find((l) => l.name === leaseOf(d.instance.id))
            )
          }))
      )
  )
  const sql = yield* SqlClient.SqlClient
  const known = (destination: string) =>
    resolved.some((d) => d.instance.id === destination)
      ? Effect.void
      : Effect.fail(
        new ConfigError({
          field: "destination",
          detail: `"${destination}" is not a configured destination (${
            resolved.map((d) => d.instance.id).join(", ") || "none"
          })`
        })
      )
  const replay = (replayId: string) =>
    Effect.map(
      sql<ReplayRow>`SELECT ${sql.literal(replayCols)} FROM tl_replays WHERE replay_id = ${replayId}`,
      (rows) => (rows[0] ? toStatus(rows[0]) : undefined)
    )
  const startReplay = (destination: string, options: ReplayOptions) =>
    Effect.gen(function*() {
      yield* known(destination)
      // An empty list is not "no limit": it would replay every event, the opposite of what was asked.
      if (options.events !== undefined && options.events.length === 0) {
        return yield* new ConfigError({ field: "events", detail: EMPTY_EVENTS })
      }
      for (const e of options.events ?? []) {
        if (!Object.hasOwn(config.vocabulary, e)) {
          return yield* new ConfigError({ field: "events", detail: `"${e}" is not in the vocabulary` })
        }
      }
      if (options.since !== undefined && options.until !== undefined && options.since >= options.until) {
        return yield* new ConfigError({ field: "until", detail: "must be after since" })
      }
      const events = options.events !== undefined ? [...options.events].sort() : null
      const dryRun = options.dryRun === true
      // The unfinished replay with the same options is resumed (a crash or Ctrl-C does not start over).
      const [same] = yield* sql<{ replay_id: string }>`SELECT replay_id FROM tl_replays
        WHERE destination = ${destination} AND state IN ('running', 'paused') AND dry_run = ${dryRun}
          AND since IS NOT DISTINCT FROM ${options.since ?? null}::timestamptz
          AND until IS NOT DISTINCT FROM ${options.until ?? null}::timestamptz
          AND events IS NOT DISTINCT FROM ${events}::text[]
        ORDER BY created_at LIMIT 1`
      if (same !== undefined) {
        yield* sql`UPDATE tl_replays SET state = 'running', updated_at = now() WHERE replay_id = ${same.replay_id}`
        return (yield* replay(same.replay_id))!
      }
      return yield* createReplay(sql, destination, { ...options, dryRun }, events)
    })
  const replays = (destination?: string) =>
    Effect.map(
      destination === undefined
        ? sql<ReplayRow>`SELECT ${sql.literal(replayCols)} FROM tl_replays ORDER BY created_at DESC LIMIT 100`
        : sql<ReplayRow>`SELECT ${sql.literal(replayCols)} FROM tl_replays WHERE destination = ${destination}
          ORDER BY created_at DESC LIMIT 100`,
      (rows) => rows.map(toStatus)
    )
  const pauseReplay = (replayId: string) =>
    Effect.zipRight(
      sql`UPDATE tl_replays SET state = 'paused', updated_at = now() WHERE replay_id = ${replayId} AND state = 'running'`,
      replay(replayId)
    )
  const redrive = (destination: string, reason?: string) =>
    Effect.gen(function*() {
      yield* known(destination)
      // Dead-lettered = the latest record of the event at this destination is a dead letter.
      const rows = yield* sql<{ position: string; event_id: string }>`
        SELECT position::text AS position, event_id FROM (
          SELECT DISTINCT ON (position) position, event_id, outcome, reason FROM tl_delivery_records
          WHERE destination = ${destination} ORDER BY position, id DESC
        ) latest
        WHERE outcome = 'dead_letter' AND (${reason ?? null}::text IS NULL OR strpos(reason, ${reason ?? ""}) > 0)`
      if (rows.length === 0) return 0
      yield* sql`INSERT INTO tl_retry_queue ${
        sql.insert(rows.map((r) => ({
          destination,
          position: r.position,
          event_id: r.event_id,
          attempts: 0,
          kind: "event",
          next_attempt_at: new Date(),
          last_reason: "redriven after being dead-lettered"
        })))
      } ON CONFLICT (destination, position) DO NOTHING`
      yield* Effect.logInfo(`redrive: ${rows.length} dead-lettered events of ${destination} queued again`)
      return rows.length
    })
  return Delivery.of({
    health,
    instances: new Map(resolved.map((d) => [d.instance.id, d.instance])),
    resolved: new Map(resolved.map((d) => [d.instance.id, d])),
    startReplay,
    replay,
    replays,
    pauseReplay,
    redrive
  })
})

/** Creates a replay from the start of its range up to where live delivery of the destination stands now. */
const createReplay = (
  sql: SqlClient.SqlClient,
  destination: string,
  options: ReplayOptions,
  events: ReadonlyArray<string> | null,
  end?: Cursor
) =>
  Effect.gen(function*() {
    const [live] = yield* sql<{ tx: string; position: string }>`
      SELECT cursor_tx::text AS tx, cursor_pos::text AS position FROM tl_subscriptions WHERE destination = ${destination}`
    const until = end ?? live ?? { tx: "0", position: "0" }
    const [count] = yield* sql<{ n: string }>`SELECT count(*)::text AS n FROM tl_log
      WHERE kind = 'track' AND (tx, position) <= (${until.tx}::xid8, ${until.position}::bigint)
        AND (${options.since ?? null}::timestamptz IS NULL OR occurred_at >= ${options.since ?? null}::timestamptz)
        AND (${options.until ?? null}::timestamptz IS NULL OR occurred_at < ${options.until ?? null}::timestamptz)
        AND (${events}::text[] IS NULL OR event_name = ANY(${events}::text[]))`
    const replayId = `rpl_${randomUUID().replaceAll("-", "").slice(0, 20)}`
    yield* sql`INSERT INTO tl_replays ${
      sql.insert({
        replay_id: replayId,
        destination,
        since: options.since ?? null,
        until: options.until ?? null,
        events,
        dry_run: options.dryRun === true,
        state: "running",
        cursor_tx: "0",
        cursor_pos: "0",
        end_tx: until.tx,
        end_pos: until.position,
        total: count?.n ?? "0"
      } as never)
    }`
    const [row] = yield* sql<ReplayRow>`SELECT ${sql.literal(replayCols)} FROM tl_replays WHERE replay_id = ${replayId}`
    return toStatus(row!)
  })

/** Delivery for the configured destinations (needs an HttpClient for the plugins). */
export const layer: Layer.Layer<
  Delivery,
  ConfigError,
  | TrackLayerConfig
  | EventStore
  | IdentityGraph
  | Projector
  | Vault
  | Leases
  | SqlClient.SqlClient
  | HttpClient.HttpClient
> = Layer.scoped(Delivery, make)
