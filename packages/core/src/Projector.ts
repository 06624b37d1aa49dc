/**
 * The projector: one subscription that folds the log, in order, into the current-state tables (identity graph,
 * consent choices). It is the only writer of those tables, so there are no races between concurrent ingests, and
 * replaying the log from the start rebuilds them. Delivery reads only events the projector has already folded in,
 * so a destination always sees the identity and consent that include the event itself.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Duration, Effect, Layer } from "effect"
import { audienceOf, type Cursor, EventStore, origin, type StoredEvent } from "./EventStore.js"
import { identifiersOf, IdentityGraph } from "./Identity.js"
import { purgeErasedIn } from "./internal/erasure.js"
import { Leases } from "./Lease.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"
import { Vault } from "./Vault.js"

/** The lease of the projector (one process folds the log at a time). */
export const PROJECTOR_LEASE = "projector"

/** The subscription row of the projector in `tl_subscriptions`. */
export const PROJECTION = "$projection"

/** The projector service. */
export class Projector extends Context.Tag("@tracklayer/core/Projector")<Projector, {
  /** How far the projection has folded the log. */
  readonly cursor: Effect.Effect<Cursor, SqlError.SqlError>
}>() {}

/** Consent choices carried by events: inline consent on a tracked event, or a consent update. */
export const consentChoicesOf = (e: StoredEvent) => {
  const choices = e.event.consent
  if (choices === undefined) return []
  const [primary] = identifiersOf(e.event)
  if (primary === undefined) return []
  return Object.entries(choices).map(([purpose, granted]) => ({
    identifier: primary.key,
    purpose,
    granted,
    at: new Date(e.event.timestamp),
    source: e.kind === "consent" ? "update" : "event",
    log_tx: e.tx,
    log_position: e.position
  }))
}

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const store = yield* EventStore
  const identity = yield* IdentityGraph
  const config = yield* TrackLayerConfig
  const vault = yield* Vault
  const leases = yield* Leases

  yield* sql`INSERT INTO tl_subscriptions (destination, plugin, cursor_tx, cursor_pos, start_tx, start_pos)
    VALUES (${PROJECTION}, 'core', ${origin.tx}::xid8, ${origin.position}::bigint, ${origin.tx}::xid8, ${origin.position}::bigint)
    ON CONFLICT (destination) DO NOTHING`

  const cursor = Effect.map(
    sql<Cursor>`SELECT cursor_tx::text AS tx, cursor_pos::text AS position FROM tl_subscriptions
      WHERE destination = ${PROJECTION}`,
    (rows) => rows[0] ?? origin
  )

  const step = Effect.gen(function*() {
    const from = yield* cursor
    const events = yield* store.readAfter(from, 1000)
    if (events.length === 0) return 0
    const last = events[events.length - 1]!
    yield* sql.withTransaction(Effect.gen(function*() {
      // One projector across gateway processes: only the lease holder folds (Lease.ts).
      yield* leases.fence(PROJECTOR_LEASE)
      yield* identity.project(events)
      const choices = events.flatMap((e) => (e.kind === "track" || e.kind === "consent" ? consentChoicesOf(e) : []))
      if (choices.length > 0) yield* sql`INSERT INTO tl_consent_choices ${sql.insert(choices)}`
      const traits = new Map<string, { identifier: string; key: string; value: string; at: Date }>()
      for (const e of events) {
        if (e.kind !== "track") continue
        const [primary] = identifiersOf(e.event)
        // The latest page URL and user agent are kept per person too (reserved `$context.` keys), so a
        // destination can tell a website conversion from a server one even when the event itself has no context.
        const context: Record<string, unknown> = {}
        if (e.event.context?.page_url !== undefined) context["$context.page_url"] = e.event.context.page_url
        if (e.event.context?.user_agent !== undefined) context["$context.user_agent"] = e.event.context.user_agent
        for (const [key, value] of [...Object.entries(e.event.user_properties ?? {}), ...Object.entries(context)]) {
          if (primary === undefined || value === undefined) continue
          const id = `${primary.key}\u0000${key}`
          const prev = traits.get(id)
          if (!prev || prev.at.getTime() <= e.event.timestamp) {
            traits.set(id, {
              identifier: primary.key,
              key,
              value: JSON.stringify(value),
              at: new Date(e.event.timestamp)
            })
          }
        }
      }
      // Trait values are personal data: sealed under their identifier's key (dropped when it was erased).
      const sealedTraits = yield* vault.sealTraits([...traits.values()])
      if (sealedTraits.length > 0) {
        // Latest by event time wins, whatever order the events arrive in.
        yield* sql`INSERT INTO tl_traits ${sql.insert(sealedTraits)}
          ON CONFLICT (identifier, key) DO UPDATE SET value = EXCLUDED.value, at = EXCLUDED.at
          WHERE tl_traits.at <= EXCLUDED.at`
      }
      // Audience membership: latest by the source's computed time, whatever order the batches arrive in.
      const members = new Map<
        string,
        { audience_key: string; identifier: string; audience_name: string; member: boolean; at: Date }
      >()
      for (const e of events) {
        const a = audienceOf(e)
        if (a === undefined || e.event.user_id === undefined) continue
        const row = {
          audience_key: a.audience_key,
          identifier: `user:${e.event.user_id}`,
          audience_name: a.audience_name,
          member: a.member,
          at: new Date(e.event.timestamp)
        }
        const id = `${row.audience_key}\u0000${row.identifier}`
        const prev = members.get(id)
        if (!prev || prev.at.getTime() <= row.at.getTime()) members.set(id, row)
      }
      if (members.size > 0) {
        yield* sql`INSERT INTO tl_audience_members ${sql.insert([...members.values()])}
          ON CONFLICT (audience_key, identifier) DO UPDATE SET member = EXCLUDED.member, at = EXCLUDED.at,
            audience_name = EXCLUDED.audience_name
          WHERE tl_audience_members.at <= EXCLUDED.at`
      }
      yield* purgeErasedIn(events)
      yield* sql`UPDATE tl_subscriptions SET cursor_tx = ${last.tx}::xid8, cursor_pos = ${last.position}::bigint,
        updated_at = now() WHERE destination = ${PROJECTION}`
    }))
    return events.length
  })

  const loop = step.pipe(
    Effect.catchAllCause((cause) =>
      Effect.logError("projector: step failed; retrying", cause).pipe(
        Effect.zipRight(Effect.sleep(Duration.seconds(1))),
        Effect.as(1)
      )
    ),
    Effect.flatMap((n) => (n === 0 ? Effect.sleep(config.delivery.pollInterval) : Effect.void)),
    Effect.forever
  )
  yield* Effect.forkScoped(leases.hold(PROJECTOR_LEASE, loop))

  return Projector.of({ cursor })
})

/** The projector, running in the background while the layer is alive. */
export const layer = Layer.scoped(Projector, make)
