/**
 * Leases: background work that must run in one process at a time when several gateway processes share one
 * PostgreSQL (the projector, each destination's delivery, each trait sync) runs while this process holds the work's
 * lease in `tl_leases`. A lease is taken when it is free or expired, renewed every third of its time-to-live, and
 * released on shutdown; a process that dies stops renewing, so another takes the work over once the lease expires
 * (`delivery.leaseTtl`, default 15 s). Work whose lease is lost is interrupted, and every commit of leased work checks
 * the lease in its own transaction (`fence`), so two processes never commit the same work at once: a send that was
 * in flight when the lease moved is resent by the new holder and absorbed by the destination's dedup key.
 *
 * On PGlite there is one process (the data directory is locked), so every lease is simply held: the leases a killed
 * predecessor left behind are cleared at start instead of being waited for.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Data, Duration, Effect, Layer, Option, Ref } from "effect"
import { randomBytes } from "node:crypto"
import * as os from "node:os"
import { Store } from "./Database.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"

/** The lease was lost (expired and taken by another process) while its work was running. */
export class LeaseLost extends Data.TaggedError("LeaseLost")<{ readonly name: string }> {}

/** Who holds a lease, for `GET /v1/destinations`. */
export interface LeaseInfo {
  readonly name: string
  readonly owner: string
  readonly expiresAt: string
}

export class Leases extends Context.Tag("@tracklayer/core/Leases")<Leases, {
  /** This process's owner id (`host:pid:random`). */
  readonly owner: string
  /**
   * Runs `work` (which never ends on its own) whenever this process holds lease `name`: waits while another process
   * holds it, interrupts `work` when the lease is lost, and releases it when interrupted (shutdown).
   */
  readonly hold: <E, R>(name: string, work: Effect.Effect<never, E, R>) => Effect.Effect<never, never, R>
  /** Fails the current transaction with `LeaseLost` unless this process holds `name` (call inside the commit). */
  readonly fence: (name: string) => Effect.Effect<void, LeaseLost | SqlError.SqlError>
  /** Whether this process holds `name` now (as of its last renewal). */
  readonly holds: (name: string) => Effect.Effect<boolean>
  /** Every lease row. */
  readonly list: Effect.Effect<ReadonlyArray<LeaseInfo>, SqlError.SqlError>
}>() {}

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = yield* TrackLayerConfig
  const ttl = config.delivery.leaseTtl
  const ttlMs = Duration.toMillis(ttl)
  const owner = `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`
  const held = yield* Ref.make(new Set<string>())
  // PGlite's data directory is locked to this process (Database.ts): any lease row there is a dead process's (a
  // `kill -9` leaves them until they expire), and waiting for it would only delay the restart by `leaseTtl`.
  const store = yield* Effect.serviceOption(Store)
  if (Option.isSome(store) && store.value.kind === "pglite") {
    yield* sql`DELETE FROM tl_leases`.pipe(
      Effect.catchAllCause((c) => Effect.logWarning("leases: clearing the leases of a previous process failed", c))
    )
  }

  /** Takes the lease if it is free, expired or already ours; true when we hold it afterwards. */
  const acquire = (name: string) =>
    Effect.map(
      sql<{ owner: string }>`INSERT INTO tl_leases (name, owner, expires_at, acquired_at)
        VALUES (${name}, ${owner}, now() + ${`${ttlMs} milliseconds`}::interval, now())
        ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at,
          acquired_at = CASE WHEN tl_leases.owner = EXCLUDED.owner THEN tl_leases.acquired_at ELSE now() END
        WHERE tl_leases.owner = EXCLUDED.owner OR tl_leases.expires_at < now()
        RETURNING owner`,
      (rows) => rows.length > 0
    )

  const renew = (name: string) =>
    Effect.map(
      sql<{ owner: string }>`UPDATE tl_leases SET expires_at = now() + ${`${ttlMs} milliseconds`}::interval
        WHERE name = ${name} AND owner = ${owner} AND expires_at > now() RETURNING owner`,
      (rows) => rows.length > 0
    )

  const release = (name: string) =>
    sql`DELETE FROM tl_leases WHERE name = ${name} AND owner = ${owner}`.pipe(
      Effect.zipRight(Ref.update(held, (s) => (s.delete(name), s))),
      Effect.catchAllCause((c) => Effect.logWarning(`lease ${name}: release failed`, c))
    )

  /** Completes when the lease is lost (a renewal found it gone or expired). */
  const keep = (name: string) =>
    Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(Duration.millis(Math.max(50, Math.floor(ttlMs / 3))))
        const ok = yield* renew(name).pipe(Effect.catchAll(() => Effect.succeed(false)))
        if (!ok) {
          // One more try: a failed renewal (store unreachable) before expiry is not yet a loss.
          const again = yield* renew(name).pipe(Effect.catchAll(() => Effect.succeed(false)))
          if (!again) return
        }
      }
    })

  const hold = <E, R>(name: string, work: Effect.Effect<never, E, R>): Effect.Effect<never, never, R> =>
    Effect.gen(function*() {
      let waitingLogged = false
      while (true) {
        const ok = yield* acquire(name).pipe(
          Effect.tapErrorCause((c) => Effect.logWarning(`lease ${name}: acquire failed`, c)),
          Effect.catchAllCause(() => Effect.succeed(false))
        )
        if (!ok) {
          if (!waitingLogged) yield* Effect.logDebug(`lease ${name}: held by another process; standing by`)
          waitingLogged = true
          yield* Effect.sleep(Duration.millis(Math.max(50, Math.floor(ttlMs / 3 + Math.random() * ttlMs / 6))))
          continue
        }
        waitingLogged = false
        yield* Ref.update(held, (s) => new Set(s).add(name))
        yield* Effect.logDebug(`lease ${name}: acquired by ${owner}`)
        // The work runs until the lease is lost; then it is interrupted and we go back to waiting.
        yield* Effect.raceFirst(
          Effect.catchAllCause(work, (c) => Effect.logError(`lease ${name}: work failed`, c)),
          keep(name)
        )
        yield* Ref.update(held, (s) => {
          const n = new Set(s)
          n.delete(name)
          return n
        })
        yield* Effect.logWarning(`lease ${name}: lost; another process may have taken over`)
      }
    }).pipe(Effect.onInterrupt(() => release(name))) as Effect.Effect<never, never, R>

  const fence = (name: string) =>
    Effect.flatMap(
      sql<{ owner: string }>`SELECT owner FROM tl_leases WHERE name = ${name} AND owner = ${owner}
        AND expires_at > now() FOR SHARE`,
      (rows) => (rows.length > 0 ? Effect.void : Effect.fail(new LeaseLost({ name })))
    )

  const holds = (name: string) => Effect.map(Ref.get(held), (s) => s.has(name))

  const list = Effect.map(
    sql<{ name: string; owner: string; expires_at: Date }>`SELECT name, owner, expires_at FROM tl_leases ORDER BY name`,
    (rows) => rows.map((r) => ({ name: r.name, owner: r.owner, expiresAt: r.expires_at.toISOString() }))
  )

  return Leases.of({ owner, hold, fence, holds, list })
})

export const layer = Layer.effect(Leases, make)
