/** The retention purge deletes old log rows only once nothing needs them. */
import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { EventStore, Retention, TrackLayerConfig, Vault, Vocabulary } from "@tracklayer/core"
import { TestStore } from "@tracklayer/testkit"
import { Effect, Layer } from "effect"

const config = TrackLayerConfig.resolve({
  vocabulary: Vocabulary.canonical,
  destinations: [],
  retention: { track: "400 days" }
}) as TrackLayerConfig.ResolvedConfig

const Live = Layer.mergeAll(EventStore.layer, Retention.layer).pipe(
  Layer.provideMerge(Layer.orDie(Vault.layerEphemeral)),
  Layer.provideMerge(Layer.succeed(TrackLayerConfig.TrackLayerConfig, config)),
  Layer.provideMerge(TestStore.layer)
)

const DAY = 86_400_000
const ev = (id: string, ageDays: number): EventStore.NewEvent => ({
  eventId: id,
  name: "sign_up",
  routable: true,
  partitionKey: 1,
  personKey: "user:u_ret",
  dedupKey: id,
  event: { event_id: id, event: "sign_up", timestamp: Date.now() - ageDays * DAY, user_id: "u_ret" }
})

describe("Retention.purge", () => {
  it.layer(Live, { timeout: 120_000 })((it) => {
    it.effect("deletes events older than the retention that every cursor has passed and no retry holds", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const retention = yield* Retention.Retention
        const sql = yield* SqlClient.SqlClient
        yield* store.append([ev("ret_old_1", 500), ev("ret_old_retry", 450), ev("ret_new", 10)])
        yield* store.append([ev("ret_old_ahead", 420)]) // old by event time, but no cursor has passed it yet
        const stored = yield* Effect.forEach(
          ["ret_old_1", "ret_old_retry", "ret_new", "ret_old_ahead"],
          (id) => Effect.map(store.byEventId(id), (s) => s!)
        )
        const [old1, oldRetry, , ahead] = stored
        // One subscription has read up to the third event; the old one waiting for a retry must stay.
        yield* sql`INSERT INTO tl_subscriptions (destination, plugin, cursor_tx, cursor_pos, start_tx, start_pos)
          VALUES ('ret_dest', 'test', ${stored[2]!.tx}::xid8, ${stored[2]!.position}::bigint, '0'::xid8, 0)`
        yield* sql`INSERT INTO tl_retry_queue (destination, position, event_id, attempts, kind, next_attempt_at, last_reason)
          VALUES ('ret_dest', ${oldRetry!.position}::bigint, 'ret_old_retry', 1, 'event', now(), 'throttled')`
        yield* sql`INSERT INTO tl_delivery_records (destination, position, event_id, attempt, outcome)
          VALUES ('ret_dest', ${old1!.position}::bigint, 'ret_old_1', 1, 'accepted')`
        const report = yield* retention.purge
        assert.deepStrictEqual(report, { track: 1 })
        assert.strictEqual(yield* store.byEventId("ret_old_1"), undefined)
        assert.strictEqual((yield* store.byEventId("ret_old_retry"))?.eventId, "ret_old_retry")
        assert.strictEqual((yield* store.byEventId("ret_new"))?.eventId, "ret_new")
        assert.strictEqual((yield* store.byEventId("ret_old_ahead"))?.position, ahead!.position)
        const records = yield* sql<
          { n: number }
        >`SELECT count(*)::int AS n FROM tl_delivery_records WHERE event_id = 'ret_old_1'`
        assert.strictEqual(records[0]!.n, 0)
        // Nothing else to do on a second run.
        assert.deepStrictEqual(yield* retention.purge, { track: 0 })
      }))
  })
})
