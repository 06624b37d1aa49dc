/**
 * The append-only event log in PostgreSQL/PGlite, and subscriptions that read it in order.
 *
 * Log order is (tx, position): `tx` is the appending transaction's id (`pg_current_xact_id()`). A reader only reads
 * rows whose `tx` is below the oldest transaction still in flight (`pg_snapshot_xmin(pg_current_snapshot())`); all
 * such transactions are finished, so that prefix of the log is final and no event that commits later can sort
 * before the reader's cursor. Concurrent appends therefore never cause a skipped event.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Effect, Layer } from "effect"
import { createHash } from "node:crypto"
import { type CanonicalEvent, CONTRACT_VERSION } from "./Contract.js"
import type { StartFrom } from "./Destination.js"
import type { AudienceBatch } from "./Source.js"
import { Vault } from "./Vault.js"

/** A position in log order. */
export interface Cursor {
  readonly tx: string
  readonly position: string
}

/** Advisory-lock key space of event ids (two-key form, apart from the single-key locks in internal/locks.ts). */
const ID_LOCK_SPACE = 7_462_002

/** The cursor before the first event. */
export const origin: Cursor = { tx: "0", position: "0" }

/** An event to append. */
export interface NewEvent {
  readonly eventId: string
  readonly name: string
  readonly routable: boolean
  readonly partitionKey: number
  readonly personKey: string
  readonly dedupKey: string
  /** The business key, when the event has one (then it is also the dedup key). */
  readonly businessKey?: string
  readonly event: CanonicalEvent
}

/** A later report of a business key with another amount: what it adjusts and the amount before. */
export interface Adjustment {
  /** The event id of the first report of the key. */
  readonly of: string
  readonly previousValue: number | null
  readonly previousCurrency: string | null
}

/** The amount of an event, as compared between reports of one business key. */
const amountOf = (e: NewEvent): string => {
  const p = e.event.properties ?? {}
  const value = typeof p["value"] === "number" ? p["value"] : null
  const currency = typeof p["currency"] === "string" ? p["currency"] : null
  return JSON.stringify([value, currency])
}

/** The event name of an audience membership change in the log. */
export const AUDIENCE_EVENT = "$audience"

/** The properties of an audience event (its body's `properties`). */
export interface AudienceProperties {
  readonly audience_key: string
  readonly audience_name: string
  readonly member: boolean
  readonly source: string
  readonly message_id: string
}

/** The audience membership change an audience event carries, or undefined for other events. */
export const audienceOf = (e: StoredEvent): AudienceProperties | undefined =>
  e.kind === "audience" ? (e.event.properties as unknown as AudienceProperties) : undefined

/** A stored event. */
export interface StoredEvent {
  /**
   * `track` for events from producers; `identity` for identity-graph changes; `consent` for consent updates;
   * `audience` for inbound audience membership changes.
   */
  readonly kind: string
  readonly tx: string
  readonly position: string
  readonly eventId: string
  readonly name: string
  readonly routable: boolean
  readonly partitionKey: number
  readonly personKey: string
  readonly dedupKey: string
  readonly duplicateOf: string | null
  /** Set when this event adjusts an earlier report of its business key (another amount). */
  readonly adjustment: Adjustment | null
  readonly occurredAt: Date
  readonly receivedAt: Date
  readonly contractVersion: number
  readonly event: CanonicalEvent
}

interface Row {
  readonly kind: string
  readonly tx: string
  readonly position: string
  readonly event_id: string
  readonly event_name: string
  readonly routable: boolean
  readonly partition_key: number
  readonly person_key: string
  readonly dedup_key: string
  readonly duplicate_of: string | null
  readonly adjustment: Adjustment | null
  readonly occurred_at: Date
  readonly received_at: Date
  readonly contract_version: number
  readonly body: CanonicalEvent
}

const fromRow = (r: Row): StoredEvent => ({
  kind: r.kind,
  tx: r.tx,
  position: r.position,
  eventId: r.event_id,
  name: r.event_name,
  routable: r.routable,
  partitionKey: r.partition_key,
  personKey: r.person_key,
  dedupKey: r.dedup_key,
  duplicateOf: r.duplicate_of,
  adjustment: r.adjustment,
  occurredAt: r.occurred_at,
  receivedAt: r.received_at,
  contractVersion: r.contract_version,
  event: r.body
})

/** The event store. */
export class EventStore extends Context.Tag("@tracklayer/core/EventStore")<EventStore, {
  /**
   * Appends in one transaction. Returns the event ids that were new; the others were already stored
   * (idempotency by `event_id`, enforced by a unique index, safe under concurrency). An event whose business key
   * was claimed by another event is stored with `duplicateOf` set to that event's id.
   */
  readonly append: (events: ReadonlyArray<NewEvent>) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
  /** Appends consent updates (kind `consent`); returns the update ids that were new. */
  readonly appendConsent: (
    updates: ReadonlyArray<CanonicalEvent>
  ) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
  /**
   * Appends inbound audience batches (kind `audience`, one event per member, id `<message id>:<user id>`) in one
   * transaction. Returns how many member events were new (0 for a batch already stored: a retried webhook).
   */
  readonly appendAudience: (
    batches: ReadonlyArray<AudienceBatch>,
    source: string
  ) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Reads up to `limit` events after `cursor`, in log order, never past an in-flight transaction, and never past
   * `upTo` when given (delivery reads only what the identity/consent projection has already folded in).
   */
  readonly readAfter: (
    cursor: Cursor,
    limit: number,
    upTo?: Cursor
  ) => Effect.Effect<ReadonlyArray<StoredEvent>, SqlError.SqlError>
  /** Loads events by position (for retries). */
  readonly byPositions: (
    positions: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyArray<StoredEvent>, SqlError.SqlError>
  /** Finds a tracked event (or an audience event, `<message id>:<user id>`) by its id. */
  readonly byEventId: (eventId: string) => Effect.Effect<StoredEvent | undefined, SqlError.SqlError>
  /** The cursor a new subscription starts from. */
  readonly startCursor: (from: StartFrom) => Effect.Effect<Cursor, SqlError.SqlError>
}>() {}

const cols =
  `kind, tx::text AS tx, position::text AS position, event_id, event_name, routable, partition_key, person_key,
  dedup_key, duplicate_of, adjustment, occurred_at, received_at, contract_version, body`

/** The id a row's personal fields are sealed under (consent update ids are their own namespace). */
const sealId = (kind: string, eventId: string) => (kind === "consent" ? `consent:${eventId}` : eventId)

/** Builds the store on the current SQL client. */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const vault = yield* Vault
  /** Rows → events, personal fields decrypted (left out where the person was erased). */
  const decode = (rows: ReadonlyArray<Row>) =>
    Effect.map(
      vault.openEvents(rows.map((r) => ({ eventId: sealId(r.kind, r.event_id), body: r.body }))),
      (events) => rows.map((r, i) => fromRow({ ...r, body: events[i]! }))
    )

  /** Claims business keys; returns key → the event id that owns it (this event's own id when it is first). */
  /**
   * Claims business keys in order and marks each later report of a key: the same amount is a duplicate of the
   * first report; another amount is an adjustment of it (and becomes the key's current amount). Events already in
   * the log (a retried batch) claim nothing. Keys are locked in sorted order, so concurrent batches serialise on
   * them without deadlocks.
   */
  const claimKeys = (events: ReadonlyArray<NewEvent>) =>
    Effect.gen(function*() {
      const marks = new Map<string, { duplicateOf?: string; adjustment?: Adjustment }>()
      const candidates = events.filter((e) => e.businessKey !== undefined)
      if (candidates.length === 0) return marks
      const existing = new Set(
        (yield* sql<{ event_id: string }>`SELECT event_id FROM tl_log
          WHERE kind = 'track' AND event_id IN ${sql.in(candidates.map((e) => e.eventId))}`).map((r) => r.event_id)
      )
      const claims = candidates.filter((e) => !existing.has(e.eventId))
      if (claims.length === 0) return marks
      const firstOf = new Map<string, NewEvent>()
      for (const e of claims) if (!firstOf.has(e.businessKey!)) firstOf.set(e.businessKey!, e)
      const keys = [...firstOf.keys()].sort()
      yield* sql`INSERT INTO tl_business_keys ${
        sql.insert(keys.map((k) => ({
          business_key: k,
          event_id: firstOf.get(k)!.eventId,
          last_event_id: firstOf.get(k)!.eventId,
          amount: amountOf(firstOf.get(k)!)
        })))
      } ON CONFLICT (business_key) DO NOTHING`
      const rows = yield* sql<
        { business_key: string; event_id: string; last_event_id: string | null; amount: string | null }
      >`
        SELECT business_key, event_id, last_event_id, amount FROM tl_business_keys
        WHERE business_key IN ${sql.in(keys)} ORDER BY business_key FOR UPDATE`
      const state = new Map(rows.map((r) => [r.business_key, { ...r }]))
      const changed = new Set<string>()
      for (const e of claims) {
        const r = state.get(e.businessKey!)!
        if (r.event_id === e.eventId) continue
        const amount = amountOf(e)
        // (A key claimed before amounts were recorded has none: treat a repeat as a duplicate.)
        if (r.amount === null || r.amount === amount) {
          marks.set(e.eventId, { duplicateOf: r.event_id })
        } else {
          const [previousValue, previousCurrency] = JSON.parse(r.amount ?? "[null,null]") as [
            number | null,
            string | null
          ]
          marks.set(e.eventId, { adjustment: { of: r.event_id, previousValue, previousCurrency } })
          r.amount = amount
          r.last_event_id = e.eventId
          changed.add(r.business_key)
        }
      }
      for (const k of changed) {
        const r = state.get(k)!
        yield* sql`UPDATE tl_business_keys SET amount = ${r.amount}, last_event_id = ${r.last_event_id}
          WHERE business_key = ${k}`
      }
      return marks
    })

  const append = Effect.fn("EventStore.append")(function*(events: ReadonlyArray<NewEvent>) {
    if (events.length === 0) return new Set<string>()
    // Personal fields are encrypted under the person's key before they reach the log (Vault.ts).
    return yield* sql.withTransaction(appendInTx(yield* vault.sealEvents(events)))
  })

  /**
   * Locks the event ids about to be inserted, in sorted order. Two concurrent batches that share ids (a client
   * retrying while the first attempt is still running) would otherwise wait on each other's unique-index entries
   * in opposite orders and deadlock; with the ids locked in one order the second simply waits, then finds them.
   */
  const lockIds = (ids: ReadonlyArray<string>) =>
    sql`SELECT pg_advisory_xact_lock(${ID_LOCK_SPACE}, hashtext(id)) FROM unnest(${
      [...new Set(ids)].sort()
    }::text[]) AS id`

  const appendInTx = (events: ReadonlyArray<NewEvent>) =>
    Effect.gen(function*() {
      yield* lockIds(events.map((e) => e.eventId))
      const marks = yield* claimKeys(events)
      const rows = events.map((e) => ({
        kind: "track",
        event_id: e.eventId,
        event_name: e.name,
        routable: e.routable,
        partition_key: e.partitionKey,
        person_key: e.personKey,
        dedup_key: e.dedupKey,
        duplicate_of: marks.get(e.eventId)?.duplicateOf ?? null,
        adjustment: marks.get(e.eventId)?.adjustment ? JSON.stringify(marks.get(e.eventId)!.adjustment) : null,
        occurred_at: new Date(e.event.timestamp),
        contract_version: CONTRACT_VERSION,
        body: JSON.stringify(e.event)
      }))
      const inserted = yield* sql<{ event_id: string }>`
      INSERT INTO tl_log ${sql.insert(rows)}
      ON CONFLICT (event_id) WHERE kind = 'track' DO NOTHING
      RETURNING event_id`
      return new Set(inserted.map((r) => r.event_id))
    })

  const readAfter = Effect.fn("EventStore.readAfter")(function*(cursor: Cursor, limit: number, upTo?: Cursor) {
    const rows = upTo === undefined
      ? yield* sql<Row>`
      SELECT ${sql.literal(cols)} FROM tl_log
      WHERE (tx, position) > (${cursor.tx}::xid8, ${cursor.position}::bigint)
        AND tx < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY tl_log.tx, tl_log.position
      LIMIT ${limit}`
      : yield* sql<Row>`
      SELECT ${sql.literal(cols)} FROM tl_log
      WHERE (tx, position) > (${cursor.tx}::xid8, ${cursor.position}::bigint)
        AND (tx, position) <= (${upTo.tx}::xid8, ${upTo.position}::bigint)
        AND tx < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY tl_log.tx, tl_log.position
      LIMIT ${limit}`
    return yield* decode(rows)
  })

  const byPositions = Effect.fn("EventStore.byPositions")(function*(positions: ReadonlyArray<string>) {
    if (positions.length === 0) return []
    const rows = yield* sql<Row>`
      SELECT ${sql.literal(cols)} FROM tl_log WHERE position IN ${
      sql.in(positions)
    } ORDER BY tl_log.tx, tl_log.position`
    return yield* decode(rows)
  })

  const byEventId = Effect.fn("EventStore.byEventId")(function*(eventId: string) {
    const rows = yield* sql<Row>`
      SELECT ${sql.literal(cols)} FROM tl_log WHERE event_id = ${eventId} AND kind IN ('track', 'audience')
      ORDER BY kind = 'track' DESC LIMIT 1`
    return (yield* decode(rows))[0]
  })

  // Everything in transactions that finished before now is behind this cursor; anything in flight or later is ahead.
  const endCursor = Effect.map(
    sql<{ xmin: string }>`SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin`,
    (rows): Cursor => ({ tx: rows[0]!.xmin, position: "0" })
  )

  const startCursor = (from: StartFrom): Effect.Effect<Cursor, SqlError.SqlError> => {
    if (from === "beginning") return Effect.succeed(origin)
    if (from === "end") return endCursor
    return sql<{ tx: string; position: string }>`
      SELECT tx::text AS tx, position::text AS position FROM tl_log
      WHERE received_at >= ${from.since} ORDER BY tl_log.tx, tl_log.position LIMIT 1`.pipe(
      Effect.flatMap(([first]) =>
        first ? Effect.succeed({ tx: first.tx, position: String(BigInt(first.position) - 1n) }) : endCursor
      ),
      Effect.withSpan("EventStore.startCursor")
    )
  }

  const appendConsent = Effect.fn("EventStore.appendConsent")(function*(updates: ReadonlyArray<CanonicalEvent>) {
    if (updates.length === 0) return new Set<string>()
    // A consent update may carry an email or phone: sealed like an event's (Vault.ts).
    const sealed = yield* vault.sealEvents(
      updates.map((u) => ({ eventId: sealId("consent", u.event_id), personKey: "consent", event: u }))
    )
    const rows = sealed.map(({ event: u }) => {
      const personKey = u.user_id !== undefined
        ? `user:${u.user_id}`
        : u.device_id !== undefined
        ? `device:${u.device_id}`
        : "consent"
      return {
        kind: "consent",
        event_id: u.event_id,
        event_name: "consent_update",
        routable: false,
        partition_key: 0,
        person_key: personKey,
        dedup_key: u.event_id,
        occurred_at: new Date(u.timestamp),
        contract_version: CONTRACT_VERSION,
        body: JSON.stringify(u)
      }
    })
    const inserted = yield* sql.withTransaction(Effect.zipRight(
      lockIds(updates.map((u) => u.event_id)),
      sql<{ event_id: string }>`
      INSERT INTO tl_log ${
        sql.insert(rows)
      } ON CONFLICT (event_id) WHERE kind = 'consent' DO NOTHING RETURNING event_id`
    ))
    return new Set(inserted.map((r) => r.event_id))
  })

  const appendAudience = Effect.fn("EventStore.appendAudience")(
    function*(batches: ReadonlyArray<AudienceBatch>, source: string) {
      const rows = batches.flatMap((b) =>
        b.members.map((m) => {
          const eventId = `${b.messageId}:${m.userId}`
          const personKey = `user:${m.userId}`
          const properties: AudienceProperties = {
            audience_key: b.audience.key,
            audience_name: b.audience.name,
            member: m.member,
            source,
            message_id: b.messageId
          }
          return {
            kind: "audience",
            event_id: eventId,
            event_name: AUDIENCE_EVENT,
            routable: false,
            partition_key: createHash("sha256").update(personKey, "utf8").digest().readUInt32BE(0) >>> 1,
            person_key: personKey,
            dedup_key: eventId,
            occurred_at: new Date(b.at),
            contract_version: CONTRACT_VERSION,
            body: JSON.stringify({
              event_id: eventId,
              event: AUDIENCE_EVENT,
              timestamp: b.at,
              user_id: m.userId,
              properties
            })
          }
        })
      )
      if (rows.length === 0) return 0
      // Same-id rows in one request (a user listed twice) would conflict with each other: keep the last.
      const unique = [...new Map(rows.map((r) => [r.event_id, r])).values()]
      let inserted = 0
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* lockIds(batches.map((b) => `audience:${b.messageId}`))
        // Large cohorts: insert in slices so one statement stays well under the driver's parameter limit.
        for (let i = 0; i < unique.length; i += 2000) {
          const done = yield* sql<{ event_id: string }>`INSERT INTO tl_log ${sql.insert(unique.slice(i, i + 2000))}
            ON CONFLICT (event_id) WHERE kind = 'audience' DO NOTHING RETURNING event_id`
          inserted += done.length
        }
      }))
      return inserted
    }
  )

  return EventStore.of({ append, appendConsent, appendAudience, readAfter, byPositions, byEventId, startCursor })
})

/** The store on the current SQL client. */
export const layer = Layer.effect(EventStore, make)
