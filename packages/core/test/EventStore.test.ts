import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { EventStore, Vault } from "@tracklayer/core"
import { TestStore } from "@tracklayer/testkit"
import { Chunk, Effect, Fiber, Layer, Ref, TestServices } from "effect"

const StoreLive = EventStore.layer.pipe(
  Layer.provideMerge(Layer.orDie(Vault.layerEphemeral)),
  Layer.provideMerge(TestStore.layer)
)

const ev = (id: string, user = "usr_1"): EventStore.NewEvent => ({
  eventId: id,
  name: "sign_up",
  routable: true,
  partitionKey: 7,
  personKey: `user:${user}`,
  dedupKey: id,
  event: { event_id: id, event: "sign_up", timestamp: Date.UTC(2026, 3, 20), user_id: user }
})

/** Reads everything currently readable after `cursor`, page by page. */
const drain = (store: EventStore.EventStore["Type"], cursor: Ref.Ref<EventStore.Cursor>, seen: Array<string>) =>
  Effect.gen(function*() {
    while (true) {
      const page = yield* store.readAfter(yield* Ref.get(cursor), 50)
      if (page.length === 0) return
      for (const e of page) seen.push(e.eventId)
      const last = page[page.length - 1]!
      yield* Ref.set(cursor, { tx: last.tx, position: last.position })
    }
  })

describe("EventStore", () => {
  it.layer(StoreLive, { timeout: 120_000 })((it) => {
    it.effect("append is idempotent by event_id and returns only the new ids", () =>
      TestServices.provideLive(Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const first = yield* store.append([ev("idem_1"), ev("idem_2")])
        assert.deepStrictEqual([...first].sort(), ["idem_1", "idem_2"])
        const second = yield* store.append([ev("idem_2"), ev("idem_3")])
        assert.deepStrictEqual([...second], ["idem_3"])
        const stored = yield* store.byEventId("idem_2")
        assert.strictEqual(stored?.name, "sign_up")
        assert.strictEqual(stored?.event.user_id, "usr_1")
        assert.strictEqual(stored?.contractVersion, 1)
      })))

    it.effect("a reader never skips an event whose transaction commits after a later position is visible", () =>
      TestServices.provideLive(Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const sql = yield* SqlClient.SqlClient
        const cursor = yield* Ref.make(yield* store.startCursor("end"))
        const seen: Array<string> = []
        // A slow writer takes a position first and commits last.
        const slow = yield* sql.withTransaction(
          Effect.zipRight(store.append([ev("slow_1")]), Effect.sleep("300 millis"))
        ).pipe(Effect.fork)
        yield* Effect.sleep("50 millis")
        yield* store.append([ev("fast_1")])
        yield* drain(store, cursor, seen)
        yield* Fiber.join(slow)
        yield* drain(store, cursor, seen)
        assert.deepStrictEqual([...seen].sort(), ["fast_1", "slow_1"])
      })))

    it.effect("many concurrent writers: a concurrent subscriber sees every event exactly once", () =>
      TestServices.provideLive(Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const sql = yield* SqlClient.SqlClient
        const cursor = yield* Ref.make(yield* store.startCursor("end"))
        const seen: Array<string> = []
        const writers = 16
        const perWriter = 25
        const done = yield* Ref.make(false)
        const reader = yield* Effect.gen(function*() {
          while (!(yield* Ref.get(done))) {
            yield* drain(store, cursor, seen)
            yield* Effect.sleep("5 millis")
          }
          yield* drain(store, cursor, seen)
        }).pipe(Effect.fork)
        yield* Effect.forEach(
          Chunk.range(0, writers - 1),
          (w) =>
            Effect.forEach(Chunk.range(0, perWriter - 1), (i) =>
              // Every third append holds its transaction open a little, so commits land out of position order.
              sql.withTransaction(
                Effect.zipRight(
                  store.append([ev(`w${w}_${i}_a`, `u${w}`), ev(`w${w}_${i}_b`, `u${w}`)]),
                  i % 3 === 0 ? Effect.sleep("3 millis") : Effect.void
                )
              )),
          { concurrency: "unbounded" }
        )
        yield* Ref.set(done, true)
        yield* Fiber.join(reader)
        const expected = writers * perWriter * 2
        assert.strictEqual(seen.length, expected)
        assert.strictEqual(new Set(seen).size, expected)
        // Within one writer (one person) the log order is the append order.
        const w3 = seen.filter((id) => id.startsWith("w3_"))
        assert.deepStrictEqual(w3.slice(0, 4), ["w3_0_a", "w3_0_b", "w3_1_a", "w3_1_b"])
      })))
  })
})
