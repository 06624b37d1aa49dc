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
import { SqlClient } from "@effect/sql"
import { Context, Duration, Effect, Either, Layer, ParseResult, Ref, Schedule, Schema } from "effect"
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
}

/** The delivery service: its subscriptions run in the background while the layer is alive. */
export class Delivery extends Context.Tag("@tracklayer/core/Delivery")<Delivery, {
  readonly health: Effect.Effect<ReadonlyArray<DestinationHealth>>
  /** Destination id → its instance (settings already validated). */
  readonly instances: ReadonlyMap<string, DestinationInstance>
  /** Destination id → the instance with its validated settings (for preview). */
  readonly resolved: ReadonlyMap<string, ResolvedDestination>
}>() {}

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

/** Runs one destination's subscription until interrupted. */
const runSubscription = (
  d: ResolvedDestination,
  config: ResolvedConfig,
  stateRef: Ref.Ref<State>
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const store = yield* EventStore
    const graph = yield* IdentityGraph
    const projector = yield* Projector
    const vault = yield* Vault
    const { instance, settings } = d
    const plugin = instance.plugin
    const id = instance.id
    const opts = config.delivery
    const batchSize = plugin.limits.maxEventsPerRequest
    const audience = plugin.audiences
    const audienceRoutes = Audiences.routesFor(config.audiences, id, instance.purposes ?? plugin.purposes)
    const routeKeys = new Set(audienceRoutes.map((r) => r.key))

    const startFrom = yield* store.startCursor(instance.startFrom ?? "end")
    yield* sql`INSERT INTO tl_subscriptions (destination, plugin, cursor_tx, cursor_pos, start_tx, start_pos)
      VALUES (${id}, ${plugin.name}, ${startFrom.tx}::xid8, ${startFrom.position}::bigint,
        ${startFrom.tx}::xid8, ${startFrom.position}::bigint)
      ON CONFLICT (destination) DO NOTHING`

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
    const process = (events: ReadonlyArray<StoredEvent>, previous: ReadonlyMap<string, RetryRow>, advanceTo?: Cursor) =>
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

        const attemptOf = (e: StoredEvent) => (previous.get(e.position)?.attempts ?? 0) + 1
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
            record(e, "dropped", reasonText(decision))
            done.push(e.position)
            dropped++
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
            record(e, "dropped", `${t.left.reason}: ${t.left.detail}`)
            done.push(e.position)
            dropped++
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
          if (records.length > 0) yield* sql`INSERT INTO tl_delivery_records ${sql.insert(records)}`
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
        return { sent, work: events.length }
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

    const loop = step.pipe(
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
    return yield* loop
  }).pipe(Effect.annotateLogs({ destination: d.instance.id }))

/** Builds delivery: validates settings, then runs every subscription in the background. */
export const make = Effect.gen(function*() {
  const config = yield* TrackLayerConfig
  const resolved = yield* resolveDestinations(config)
  const states = new Map<string, Ref.Ref<State>>()
  for (const d of resolved) {
    const ref = yield* Ref.make(initialState)
    states.set(d.instance.id, ref)
    yield* runSubscription(d, config, ref).pipe(
      Effect.tapErrorCause((cause) =>
        Effect.logError(`destination ${d.instance.id}: subscription failed to start; retrying in 1 s`, cause)
      ),
      Effect.retry(Schedule.spaced(Duration.seconds(1))),
      Effect.forkScoped
    )
  }
  const health = Effect.forEach(
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
        ...(s.resumeAt !== undefined && s.state !== "running" ? { resumeAt: new Date(s.resumeAt).toISOString() } : {}),
        sent: s.sent,
        accepted: s.accepted,
        rejected: s.rejected,
        dropped: s.dropped,
        retried: s.retried
      }))
  )
  return Delivery.of({
    health,
    instances: new Map(resolved.map((d) => [d.instance.id, d.instance])),
    resolved: new Map(resolved.map((d) => [d.instance.id, d]))
  })
})

/** Delivery for the configured destinations (needs an HttpClient for the plugins). */
export const layer: Layer.Layer<
  Delivery,
  ConfigError,
  TrackLayerConfig | EventStore | IdentityGraph | Projector | Vault | SqlClient.SqlClient | HttpClient.HttpClient
> = Layer.scoped(Delivery, make)
