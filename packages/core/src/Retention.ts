/**
 * Retention: log rows of a kind older than its configured retention (by event time) are deleted, with their
 * delivery records and payloads, once nothing still needs them — every subscription's cursor (the projector's
 * included) is past them and no retry references them. It is the one exception to the append-only log, and the
 * projections computed from the deleted rows stay (a full replay afterwards starts from the oldest kept event).
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Duration, Effect, Layer } from "effect"
import { TrackLayerConfig } from "./TrackLayerConfig.js"

/** How often the purge runs. */
export const PURGE_INTERVAL = Duration.hours(1)
/** Rows deleted per statement (keeps each transaction short). */
export const PURGE_BATCH = 5000

/** What one purge deleted, per kind. */
export type PurgeReport = Readonly<Record<string, number>>

/** The retention service. */
export class Retention extends Context.Tag("@tracklayer/core/Retention")<Retention, {
  /** Runs one purge now (the background job calls it every hour). */
  readonly purge: Effect.Effect<PurgeReport, SqlError.SqlError>
}>() {}

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = yield* TrackLayerConfig

  const purge = Effect.gen(function*() {
    const report: Record<string, number> = {}
    const kinds = Object.entries(config.retention)
    if (kinds.length === 0) return report
    // The lowest cursor of all subscriptions: rows above it may still be read.
    const cursors = yield* sql<{ tx: string; position: string }>`
      SELECT cursor_tx::text AS tx, cursor_pos::text AS position FROM tl_subscriptions`
    if (cursors.length === 0) return report
    const low = cursors.reduce((a, b) => {
      const d = BigInt(a.tx) - BigInt(b.tx)
      return d < 0n || (d === 0n && BigInt(a.position) <= BigInt(b.position)) ? a : b
    })
    for (const [kind, retention] of kinds) {
      const cutoff = new Date(Date.now() - Duration.toMillis(retention!))
      let total = 0
      while (true) {
        const deleted = yield* sql.withTransaction(Effect.gen(function*() {
          const rows = yield* sql<{ position: string }>`
            DELETE FROM tl_log WHERE position IN (
              SELECT position FROM tl_log
              WHERE kind = ${kind} AND occurred_at < ${cutoff}
                AND (tx, position) <= (${low.tx}::xid8, ${low.position}::bigint)
                AND NOT EXISTS (SELECT 1 FROM tl_retry_queue q WHERE q.position = tl_log.position)
              LIMIT ${PURGE_BATCH})
            RETURNING position::text AS position`
          if (rows.length > 0) {
            const positions = rows.map((r) => r.position)
            yield* sql`DELETE FROM tl_delivery_records WHERE position IN ${sql.in(positions)}`
            yield* sql`DELETE FROM tl_delivery_payloads WHERE position IN ${sql.in(positions)}`
          }
          return rows.length
        }))
        total += deleted
        if (deleted < PURGE_BATCH) break
      }
      report[kind] = total
      if (total > 0) {
        yield* Effect.logInfo(`retention: deleted ${total} ${kind} events older than ${Duration.format(retention!)}`)
      }
    }
    return report
  }).pipe(Effect.withSpan("Retention.purge"))

  if (Object.keys(config.retention).length > 0) {
    yield* purge.pipe(
      Effect.catchAllCause((cause) => Effect.logError("retention: purge failed; next attempt in an hour", cause)),
      Effect.zipRight(Effect.sleep(PURGE_INTERVAL)),
      Effect.forever,
      Effect.forkScoped
    )
  }
  return Retention.of({ purge })
})

/** Retention, purging in the background every hour when `retention` is configured. */
export const layer = Layer.scoped(Retention, make)
