/**
 * `Amplitude.send` against the real sandbox over HTTP (127.0.0.1, free port): every documented answer.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Scope } from "effect"
import { Amplitude, AmplitudeSandbox } from "../src/index.js"
import { deliveryEvent, prepare, preparedRaw, settings, T0, wire } from "./fixtures.js"

/** Starts a sandbox in the test's scope and decodes settings pointing at it. */
const sandbox = (options: AmplitudeSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  AmplitudeSandbox.start(options).pipe(
    Effect.map((sb) => ({ sb, settings: settings({ apiKey: sb.apiKey, endpoint: sb.endpoint, ...extra }) }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const insertIds = (events: ReadonlyArray<AmplitudeSandbox.StoredEvent>) => events.map((e) => e.insert_id)

describe("Amplitude.send against the sandbox", () => {
  it.scopedLive("200: every event Accepted with the response excerpt; the sandbox stores the exact payloads", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([
        deliveryEvent({
          name: "purchase",
          dedupKey: "ord_1001",
          user_id: "usr_8421",
          properties: { value: 129, currency: "USD", order_id: "ord_1001" }
        }),
        deliveryEvent({ eventId: "evt_2", device_id: "web_91f3" }),
        deliveryEvent({ eventId: "evt_3", user_id: "usr_8421", timestamp: T0 + 5 })
      ], s)
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const first = outcomes[0]!
      assert.strictEqual(first._tag === "Accepted" ? first.response?.status : undefined, 200)
      const body = JSON.parse(first._tag === "Accepted" ? first.response?.body ?? "" : "")
      assert.strictEqual(body.code, 200)
      assert.strictEqual(body.events_ingested, 3)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(insertIds(stored), ["ord_1001", "evt_2", "evt_3"])
      assert.deepStrictEqual(
        stored.map((e) => e.event),
        batch.map((p) => p.payload as unknown as Record<string, unknown>)
      )
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 1 })
    })))

  it.scopedLive("400 with invalid indexes: only those Rejected (naming the field), the rest resent and accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = preparedRaw([
        wire(0),
        wire(1, { time: T0 + 0.5 }),
        wire(2),
        wire(3, { event_type: "[Amplitude] Revenue" }),
        wire(4, { event_properties: { note: "x".repeat(1025) } })
      ])
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Accepted", "Rejected", "Rejected"])
      assert.deepStrictEqual(
        outcomes.map((o) => (o._tag === "Rejected" ? o.reason : null)),
        [null, "invalid field: time", null, "invalid field: event_type", "invalid field: event_properties"]
      )
      // The rejection carries the 400 answer; the accepted ones the 200 of the resend.
      assert.strictEqual(outcomes[1]!._tag === "Rejected" ? outcomes[1]!.response?.status : 0, 400)
      assert.strictEqual(outcomes[0]!._tag === "Accepted" ? outcomes[0]!.response?.status : 0, 200)
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0", "ins_2"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "400": 1, "200": 1 })
      assert.deepStrictEqual(stats.rejected, {
        "invalid field: time": 1,
        "invalid field: event_type": 1,
        "invalid field: event_properties": 1
      })
    })))

  it.scopedLive("400 for missing and refused fields: reasons name every field", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const { user_id: _, ...noIds } = wire(3)
      const batch = preparedRaw([wire(0), wire(1, { event_type: "" }), wire(2, { user_id: "null" }), noIds, wire(4)])
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(
        outcomes.map((o) => (o._tag === "Rejected" ? o.reason : o._tag)),
        [
          "Accepted",
          "missing field: event_type",
          "invalid field: user_id",
          "missing field: user_id, device_id",
          "Accepted"
        ]
      )
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0", "ins_4"])
    })))

  it.scopedLive("400 replayed from the docs: silenced events Rejected, throttled ones Retry, id lengths Rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        count: 1,
        body: {
          code: 400,
          eps_threshold: 100,
          error: "Events silenced for device_id",
          exceeded_daily_quota_devices: {},
          silenced_devices: ["silenced_device_id_1"],
          silenced_events: [1],
          throttled_devices: { throttled_device_id_1: 120 },
          throttled_events: [2],
          events_with_invalid_id_lengths: { device_id: [3] }
        }
      })
      const outcomes = yield* Amplitude.send(preparedRaw([wire(0), wire(1), wire(2), wire(3), wire(4)]), s)
      assert.deepStrictEqual(
        outcomes.map((o) => (o._tag === "Accepted" ? "Accepted" : `${o._tag}: ${o.reason}`)),
        [
          "Accepted",
          "Rejected: silenced: device_id",
          "Retry: throttled by Amplitude",
          "Rejected: invalid id length: device_id",
          "Accepted"
        ]
      )
      assert.strictEqual(outcomes[2]!._tag === "Retry" ? outcomes[2]!.afterMs : 0, 30_000)
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0", "ins_4"])
    })))

  it.scopedLive("429 replayed from the docs: daily-quota users pause an hour, throttled 30 s, the rest resent", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 429,
        count: 1,
        body: {
          code: 429,
          error: "Too many requests for some devices and users",
          eps_threshold: 1000,
          throttled_devices: { "C8F9E604-F01A-4BD9-95C6-8E5357DF265D": 4000 },
          throttled_users: { "datamonster@amplitude.com": 4000 },
          exceeded_daily_quota_users: { "datanom@amplitude.com": 500200 },
          exceeded_daily_quota_devices: { "A1A1A000-F01A-4BD9-95C6-8E5357DF265D": 500900 },
          throttled_events: [3]
        }
      })
      const batch = preparedRaw([
        wire(0, { user_id: "datamonster@amplitude.com" }),
        wire(1, { user_id: "datanom@amplitude.com" }),
        wire(2, { device_id: "A1A1A000-F01A-4BD9-95C6-8E5357DF265D" }),
        wire(3),
        wire(4, { device_id: "C8F9E604-F01A-4BD9-95C6-8E5357DF265D" }),
        wire(5)
      ])
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(
        outcomes.map((o) => (o._tag === "Retry" ? o.afterMs : o._tag)),
        [30_000, 3_600_000, 3_600_000, 30_000, 30_000, "Accepted"]
      )
      assert.strictEqual(
        outcomes[0]!._tag === "Retry" ? outcomes[0]!.reason : "",
        "throttled by Amplitude (429, eps_threshold 1000)"
      )
      assert.strictEqual(
        outcomes[1]!._tag === "Retry" ? outcomes[1]!.reason : "",
        "daily quota exceeded at Amplitude (429)"
      )
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_5"])
    })))

  it.scopedLive("429 naming no event of the request → RetryableError for the whole batch (30 s)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 429, count: 1, body: { code: 429, error: "Too many requests" } })
      const error = yield* Effect.flip(Amplitude.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "RetryableError")
      assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : 0, 30_000)
      assert.strictEqual(error.message, "Amplitude answered 429: Too many requests")
    })))

  it.scopedLive("short ids are sent as is with options.min_id_length (no padding)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { minIdLength: 1 })
      const batch = prepare([
        deliveryEvent({ eventId: "evt_a", user_id: "u42" }),
        deliveryEvent({ eventId: "evt_b", user_id: "usr_8421" })
      ], s)
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted"])
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => e.event.user_id), ["u42", "usr_8421"])
    })))

  it.scopedLive("413: the batch is split in halves until it fits; all accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ throttle: false })
      // 30 events of ~45 kB: ~1.35 MB together (over 1 MB), ~675 kB per half.
      const bulky = Object.fromEntries(Array.from({ length: 45 }, (_, k) => [`p${k}`, "v".repeat(1000)]))
      const batch = preparedRaw(Array.from({ length: 30 }, (_, i) => wire(i, { event_properties: bulky })))
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(new Set(tags(outcomes)), new Set(["Accepted"]))
      assert.strictEqual(outcomes.length, 30)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(insertIds(stored), Array.from({ length: 30 }, (_, i) => `ins_${i}`))
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "413": 1, "200": 2 })
    })))

  it.scopedLive("413 on a single event that is still too large: that event Rejected `payload too large`", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const huge = Object.fromEntries(Array.from({ length: 1100 }, (_, k) => [`p${k}`, "v".repeat(1000)]))
      const batch = preparedRaw([wire(0), wire(1, { event_properties: huge })])
      const outcomes = yield* Amplitude.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected"])
      const rejected = outcomes[1]!
      assert.strictEqual(rejected._tag === "Rejected" ? rejected.reason : "", "payload too large")
      assert.strictEqual(rejected._tag === "Rejected" ? rejected.response?.status : 0, 413)
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0"])
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "413": 2, "200": 1 })
    })))

  it.scopedLive("429 throttle: the throttled user's events Retry after 30 s, the others are resent and accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const hot = Array.from({ length: 31 }, (_, i) => wire(i, { user_id: "user_hot_1" }))
      const calm = [
        wire(100, { user_id: "user_calm_1" }),
        wire(101, { device_id: "dev_calm_1", user_id: "user_calm_2" })
      ]
      const batch = preparedRaw([...hot.slice(0, 10), ...calm, ...hot.slice(10)])
      const outcomes = yield* Amplitude.send(batch, s)
      outcomes.forEach((o, i) => {
        if (i === 10 || i === 11) {
          assert.strictEqual(o._tag, "Accepted")
        } else {
          assert.strictEqual(o._tag, "Retry")
          if (o._tag === "Retry") {
            assert.strictEqual(o.afterMs, 30_000)
            assert.strictEqual(o.reason, "throttled by Amplitude (429, eps_threshold 30)")
            assert.strictEqual(o.response?.status, 429)
          }
        }
      })
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_100", "ins_101"])
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "429": 1, "200": 1 })
    })))

  it.scopedLive("429 with Retry-After: the throttled events wait what the header says", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 429, count: 1, retryAfter: 7 })
      const outcomes = yield* Amplitude.send(preparedRaw([wire(0), wire(1)]), s)
      assert.deepStrictEqual(outcomes.map((o) => (o._tag === "Retry" ? o.afterMs : o._tag)), [7000, 7000])
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("500, 502 (HTML body) and 504 → RetryableError with the status; 503 honours Retry-After", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = preparedRaw([wire(0)])
      for (const status of [500, 502, 504] as const) {
        yield* sb.client.setFaults({ status, count: 1 })
        const error = yield* Effect.flip(Amplitude.send(batch, s))
        assert.strictEqual(error._tag, "RetryableError")
        assert.strictEqual(error.status, status)
        assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : -1, undefined)
      }
      yield* sb.client.setFaults({ status: 503, count: 1, retryAfter: 12 })
      const unavailable = yield* Effect.flip(Amplitude.send(batch, s))
      assert.strictEqual(unavailable._tag, "RetryableError")
      assert.strictEqual(unavailable.status, 503)
      assert.strictEqual(unavailable._tag === "RetryableError" ? unavailable.retryAfterMs : -1, 12_000)
      assert.strictEqual(unavailable.message, "Amplitude answered 503: Service Unavailable")
      // The faults are used up: the next send goes through.
      assert.deepStrictEqual(tags(yield* Amplitude.send(batch, s)), ["Accepted"])
    })))

  it.scopedLive("sandbox down (503) → RetryableError; a 500 that did ingest is safe to retry (stored once)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = preparedRaw([wire(0), wire(1)])
      yield* sb.client.setFaults({ down: true })
      const down = yield* Effect.flip(Amplitude.send(batch, s))
      assert.strictEqual(down._tag, "RetryableError")
      assert.strictEqual(down.status, 503)
      yield* sb.client.setFaults({ down: false, status: 500, count: 1, ingest: true })
      const failed = yield* Effect.flip(Amplitude.send(batch, s))
      assert.strictEqual(failed.status, 500)
      assert.deepStrictEqual(tags(yield* Amplitude.send(batch, s)), ["Accepted", "Accepted"])
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0", "ins_1"])
      assert.strictEqual((yield* sb.client.stats()).duplicates, 2)
    })))

  it.scopedLive("bad api key → AuthFailedError; neither message nor body contains the key", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const key = "wrong-key-5f2a9c71"
      const s = settings({ apiKey: key, endpoint: sb.endpoint })
      const error = yield* Effect.flip(Amplitude.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(error.status, 400)
      assert.strictEqual(error.message, "Amplitude refused the api key (400): Invalid API key: [redacted]")
      assert.strictEqual(error.body, "{\"code\":400,\"error\":\"Invalid API key: [redacted]\"}")
      assert.isFalse(JSON.stringify(error).includes(key))
      assert.isFalse(String(error).includes(key))
      assert.deepStrictEqual((yield* sb.client.stats()).rejected, { "invalid api key": 1 })
    })))

  it.scopedLive("a 400 without event indexes and without an api-key error → PayloadInvalidError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 400, count: 1 })
      const error = yield* Effect.flip(Amplitude.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "PayloadInvalidError")
      assert.strictEqual(error.message, "Amplitude refused the request (400): Injected fault")
    })))

  it.scopedLive("transport error (nothing listening) → RetryableError", () =>
    run(Effect.gen(function*() {
      // Start and stop a sandbox to get a port that is certainly closed.
      const port = yield* Effect.scoped(AmplitudeSandbox.start().pipe(Effect.map((sb) => sb.port)))
      const s = settings({ endpoint: `http://127.0.0.1:${port}/2/httpapi` })
      const error = yield* Effect.flip(Amplitude.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "RetryableError")
      assert.strictEqual(error.status, undefined)
      assert.isTrue(error.message.startsWith("Amplitude request failed: "), error.message)
    })))

  it.scopedLive("insert_id dedup: the same events sent twice are Accepted twice and stored once", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([
        deliveryEvent({
          name: "purchase",
          dedupKey: "ord_1001",
          user_id: "usr_8421",
          properties: { value: 1, currency: "USD", order_id: "ord_1001" }
        })
      ], s)
      assert.deepStrictEqual(tags(yield* Amplitude.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(tags(yield* Amplitude.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ord_1001"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.duplicates, 1)
      assert.strictEqual(stats.events_accepted, 2)
      assert.strictEqual(stats.events_stored, 1)
    })))

  it.scopedLive("batches above maxEventsPerRequest go out as several requests", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      const outcomes = yield* Amplitude.send(preparedRaw([wire(0), wire(1), wire(2), wire(3), wire(4)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted", "Accepted", "Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.requests, 3)
      assert.strictEqual(stats.events_stored, 5)
    })))

  it.scopedLive("a failure after part of the batch was delivered becomes per-event Retry, not a batch error", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      // Second request (second chunk) answers 503 with Retry-After.
      yield* sb.client.setFaults({ status: 503, count: 1, skip: 1, retryAfter: 5 })
      const outcomes = yield* Amplitude.send(preparedRaw([wire(0), wire(1), wire(2)]), s)
      assert.deepStrictEqual(outcomes.map((o) => (o._tag === "Retry" ? o.afterMs : o._tag)), [
        "Accepted",
        "Accepted",
        5000
      ])
      const retry = outcomes[2]!
      assert.strictEqual(retry._tag === "Retry" ? retry.response?.status : 0, 503)
      assert.deepStrictEqual(insertIds(yield* sb.client.events()), ["ins_0", "ins_1"])
    })))

  it.scopedLive("400 then a 503 on the resend: listed event Rejected, the others Retry", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 503, count: 1, skip: 1, retryAfter: 5 })
      const outcomes = yield* Amplitude.send(preparedRaw([wire(0), wire(1, { time: 0.5 }), wire(2)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Retry", "Rejected", "Retry"])
      assert.deepStrictEqual(outcomes.map((o) => (o._tag === "Retry" ? o.afterMs : null)), [5000, null, 5000])
      assert.deepStrictEqual(yield* sb.client.events(), [])
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "400": 1, "503": 1 })
    })))
})
