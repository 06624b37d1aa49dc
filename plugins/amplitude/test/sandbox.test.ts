/**
 * The sandbox alone, over raw HTTP: it must answer as Amplitude's HTTP API v2 documents, whatever the client.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { AmplitudeSandbox } from "../src/index.js"
import { T0 } from "./fixtures.js"

const KEY = AmplitudeSandbox.SANDBOX_API_KEY

interface Answer {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: any
}

/** POSTs a raw body to the sandbox's ingestion endpoint. */
const postRaw = (sb: AmplitudeSandbox.Sandbox, body: string, contentType = "application/json") =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(
      HttpClientRequest.post(sb.endpoint).pipe(HttpClientRequest.bodyText(body, contentType))
    )
    const text = yield* response.text
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {
      // HTML answers stay text
    }
    return { status: response.status, headers: response.headers, body: parsed } as Answer
  }).pipe(Effect.orDie)

const post = (sb: AmplitudeSandbox.Sandbox, body: unknown) => postRaw(sb, JSON.stringify(body))

const event = (i: number, fields: Record<string, unknown> = {}) => ({
  event_type: "view_pricing",
  user_id: `user_${String(i).padStart(4, "0")}`,
  time: T0 + i,
  insert_id: `ins_${i}`,
  ...fields
})

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

describe("Amplitude sandbox", () => {
  it.scopedLive("200 answers { code, events_ingested, payload_size_bytes, server_upload_time } and stores in order", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const body = JSON.stringify({ api_key: KEY, events: [event(1), event(2, { device_id: "dev_00002" })] })
      const before = Date.now()
      const answer = yield* postRaw(sb, body)
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(Object.keys(answer.body), [
        "code",
        "events_ingested",
        "payload_size_bytes",
        "server_upload_time"
      ])
      assert.strictEqual(answer.body.code, 200)
      assert.strictEqual(answer.body.events_ingested, 2)
      assert.strictEqual(answer.body.payload_size_bytes, Buffer.byteLength(body))
      assert.isTrue(answer.body.server_upload_time >= before && answer.body.server_upload_time <= Date.now())
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.seq, e.insert_id]), [[1, "ins_1"], [2, "ins_2"]])
      assert.deepStrictEqual(stored[1]!.event, event(2, { device_id: "dev_00002" }))
    })))

  it.scopedLive("every always-refused id is an invalid field (trimmed, case-insensitive); nothing is stored", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const refused = [
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "0",
        "-1",
        "lmy47d",
        "{}",
        "",
        "00000000-0000-0000-0000-000000000000",
        " NULL ",
        "Anonymous",
        "LMY47D"
      ]
      const events = [
        ...refused.map((id, i) => event(i, { user_id: id, device_id: "dev_valid_1" })),
        event(100, { device_id: "None" })
      ]
      const answer = yield* post(sb, { api_key: KEY, events })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(answer.body, {
        code: 400,
        error: "Invalid field values on some events",
        events_with_invalid_fields: {
          user_id: refused.map((_, i) => i),
          device_id: [refused.length]
        }
      })
      assert.deepStrictEqual(yield* sb.client.events(), [])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.rejected, { "invalid field: user_id": 17, "invalid field: device_id": 1 })
    })))

  it.scopedLive("min_id_length: short ids are removed; an event left without id is refused; options lower it", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const short = yield* post(sb, { api_key: KEY, events: [event(0), event(1, { user_id: "abcd" })] })
      assert.strictEqual(short.status, 400)
      assert.deepStrictEqual(short.body, {
        code: 400,
        error: "Invalid field values on some events",
        events_with_invalid_id_lengths: { user_id: [1] }
      })
      // With a valid device id the short user id is only dropped.
      const dropped = yield* post(sb, { api_key: KEY, events: [event(2, { user_id: "abcd", device_id: "dev_00002" })] })
      assert.strictEqual(dropped.status, 200)
      // options.min_id_length keeps it.
      const kept = yield* post(sb, {
        api_key: KEY,
        events: [event(3, { user_id: "abcd" })],
        options: { min_id_length: 4 }
      })
      assert.strictEqual(kept.status, 200)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.event.user_id ?? null, e.event.device_id ?? null]), [
        [null, "dev_00002"],
        ["abcd", null]
      ])
      const badOption = yield* post(sb, { api_key: KEY, events: [event(4)], options: { min_id_length: 0 } })
      assert.strictEqual(badOption.status, 400)
    })))

  it.scopedLive("event_id and time must be integers; event_type and an id are required; strings ≤ 1024", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const events = [
        event(0, { event_id: 7 }),
        event(1, { event_id: "evt_5c1f0e" }),
        event(2, { event_id: 1.5 }),
        event(3, { time: 1.5 }),
        event(4, { time: "2026-04-24T08:00:00Z" }),
        { user_id: "user_0005", time: T0 },
        { event_type: "x", insert_id: "ins_6" },
        event(7, { event_properties: { note: "x".repeat(1025) } }),
        event(8, { event_properties: { note: "x".repeat(1024) }, user_properties: { plan: ["y".repeat(1025)] } }),
        event(9, { event_type: "[Amplitude] Start Session" }),
        event(10, { quantity: 1.5, price: "9.99" })
      ]
      const answer = yield* post(sb, { api_key: KEY, events })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(answer.body, {
        code: 400,
        error: "Invalid field values on some events",
        events_with_invalid_fields: {
          event_id: [1, 2],
          time: [3, 4],
          event_properties: [7],
          user_properties: [8],
          event_type: [9],
          quantity: [10],
          price: [10]
        },
        events_with_missing_fields: { event_type: [5], user_id: [6], device_id: [6] }
      })
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("api key: missing → missing_field, wrong → \"Invalid API key: <key>\" (echoed, as Amplitude does)", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const missing = yield* post(sb, { events: [event(0)] })
      assert.deepStrictEqual([missing.status, missing.body], [400, {
        code: 400,
        error: "Request missing required field",
        missing_field: "api_key"
      }])
      const wrong = yield* post(sb, { api_key: "not-the-key", events: [event(0)] })
      assert.deepStrictEqual([wrong.status, wrong.body], [400, { code: 400, error: "Invalid API key: not-the-key" }])
      const noEvents = yield* post(sb, { api_key: KEY })
      assert.deepStrictEqual(noEvents.body, {
        code: 400,
        error: "Request missing required field",
        missing_field: "events"
      })
      const notJson = yield* postRaw(sb, "{", "application/json")
      assert.deepStrictEqual([notJson.status, notJson.body], [400, { code: 400, error: "Invalid JSON request body" }])
      const form = yield* postRaw(sb, JSON.stringify({ api_key: KEY, events: [event(0)] }), "text/plain")
      assert.strictEqual(form.status, 400)
    })))

  it.scopedLive("configured api keys replace the default one", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start({ apiKeys: ["project-a-key", "project-b-key"] })
      assert.strictEqual(sb.apiKey, "project-a-key")
      assert.deepStrictEqual(sb.env, {
        AMPLITUDE_API_KEY: "project-a-key",
        AMPLITUDE_ENDPOINT: `${sb.url}/2/httpapi`,
        AMPLITUDE_SECRET_KEY: "sandbox-amplitude-secret",
        AMPLITUDE_DELETION_ENDPOINT: `${sb.url}/api/2/deletions/users`
      })
      assert.strictEqual((yield* post(sb, { api_key: "project-b-key", events: [event(0)] })).status, 200)
      assert.strictEqual((yield* post(sb, { api_key: KEY, events: [event(1)] })).status, 400)
    })))

  it.scopedLive("413 for more than 2000 events or a body of 1,000,000 bytes or more", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start({ throttle: false })
      const many = yield* post(sb, { api_key: KEY, events: Array.from({ length: 2001 }, (_, i) => event(i)) })
      assert.deepStrictEqual([many.status, many.body], [413, { code: 413, error: "Payload too large" }])
      const exactly2000 = yield* post(sb, { api_key: KEY, events: Array.from({ length: 2000 }, (_, i) => event(i)) })
      assert.strictEqual(exactly2000.status, 200)
      const props: Record<string, string> = {}
      const big = { api_key: KEY, events: [event(0, { event_properties: props })] }
      for (let k = 0; JSON.stringify(big).length < 1_000_000; k++) props[`p${k}`] = "v".repeat(1000)
      const large = yield* post(sb, big)
      assert.strictEqual(large.status, 413)
      assert.strictEqual((yield* sb.client.events()).length, 2000)
    })))

  it.scopedLive("throttling: over 30 events/s for a user → 429 with the documented body, nothing ingested", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const events = [
        ...Array.from({ length: 31 }, (_, i) => event(i, { user_id: "user_throttled" })),
        event(99, { device_id: "dev_fine_1" })
      ]
      const answer = yield* post(sb, { api_key: KEY, events })
      assert.strictEqual(answer.status, 429)
      assert.deepStrictEqual(answer.body, {
        code: 429,
        error: "Too many requests for some devices and users",
        eps_threshold: 30,
        throttled_devices: {},
        throttled_users: { user_throttled: 31 },
        throttled_events: Array.from({ length: 31 }, (_, i) => i)
      })
      assert.deepStrictEqual(yield* sb.client.events(), [])
      // 30 in a window pass; one more in the same second does not.
      const thirty = yield* post(sb, {
        api_key: KEY,
        events: Array.from({ length: 30 }, (_, i) => event(i, { user_id: "user_steady", device_id: "dev_steady" }))
      })
      assert.strictEqual(thirty.status, 200)
      const one = yield* post(sb, {
        api_key: KEY,
        events: [event(40, { user_id: "user_other", device_id: "dev_steady" })]
      })
      assert.strictEqual(one.status, 429)
      assert.deepStrictEqual(one.body.throttled_devices, { dev_steady: 31 })
      assert.deepStrictEqual(one.body.throttled_users, {})
      // Disabled at runtime.
      yield* sb.client.configure({ throttle: false })
      assert.strictEqual((yield* post(sb, { api_key: KEY, events })).status, 200)
    })))

  it.scopedLive("insert_id dedup per device_id when present, else per user_id; duplicates count as ingested", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const a = event(0, { insert_id: "same", device_id: "dev_a_0001" })
      const b = event(1, { insert_id: "same", device_id: "dev_b_0001" })
      const c = event(2, { insert_id: "same", user_id: "user_c_001" })
      const first = yield* post(sb, { api_key: KEY, events: [a, b, c, a] })
      assert.strictEqual(first.body.events_ingested, 4)
      const second = yield* post(sb, { api_key: KEY, events: [c, b] })
      assert.strictEqual(second.body.events_ingested, 2)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.event.device_id ?? e.event.user_id]), [
        ["dev_a_0001"],
        ["dev_b_0001"],
        ["user_c_001"]
      ])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.duplicates, 3)
      assert.strictEqual(stats.events_accepted, 6)
      assert.strictEqual(stats.events_stored, 3)
    })))

  it.scopedLive("faults: count, Retry-After, HTML gateway errors, down, delay; reset clears everything", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const body = { api_key: KEY, events: [event(0)] }
      yield* sb.client.setFaults({ status: 502, count: 2, retryAfter: 3 })
      const f1 = yield* post(sb, body)
      const f2 = yield* post(sb, body)
      assert.deepStrictEqual([f1.status, f2.status], [502, 502])
      assert.strictEqual(f1.headers["retry-after"], "3")
      assert.strictEqual(f1.headers["content-type"], "text/html")
      assert.isTrue(String(f1.body).includes("502 Bad Gateway"))
      assert.strictEqual((yield* post(sb, body)).status, 200)
      yield* sb.client.setFaults({ down: true, retryAfter: "Thu, 01 Jan 2026 00:00:05 GMT" })
      const down = yield* post(sb, body)
      assert.deepStrictEqual([down.status, down.body], [503, { code: 503, error: "Service Unavailable" }])
      assert.strictEqual(down.headers["retry-after"], "Thu, 01 Jan 2026 00:00:05 GMT")
      yield* sb.client.setFaults({ down: false, delayMs: 150 })
      const started = Date.now()
      assert.strictEqual((yield* post(sb, { api_key: KEY, events: [event(1)] })).status, 200)
      assert.isTrue(Date.now() - started >= 140)
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 2, "502": 2, "503": 1 })
      assert.strictEqual(stats.requests, 5)
      yield* sb.client.reset()
      assert.deepStrictEqual(yield* sb.client.events(), [])
      const cleared = yield* sb.client.stats()
      assert.deepStrictEqual([cleared.requests, cleared.duplicates, cleared.rejected], [0, 0, {}])
      // Delay cleared too: the dedup state is gone, so event 0 is stored again.
      assert.strictEqual((yield* post(sb, body)).status, 200)
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.insert_id), ["ins_0"])
    })))

  it.scopedLive("the plugin's sandbox hook binds a free loopback port and its env points settings at it", () =>
    run(Effect.gen(function*() {
      const { Amplitude } = yield* Effect.promise(() => import("../src/index.js"))
      const handle = yield* Amplitude.plugin.sandbox!({})
      assert.match(handle.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.deepStrictEqual(handle.env, {
        AMPLITUDE_API_KEY: "sandbox-amplitude-key",
        AMPLITUDE_ENDPOINT: `${handle.url}/2/httpapi`,
        AMPLITUDE_SECRET_KEY: "sandbox-amplitude-secret",
        AMPLITUDE_DELETION_ENDPOINT: `${handle.url}/api/2/deletions/users`
      })
      const client = yield* HttpClient.HttpClient
      const info = yield* client.get(`${handle.url}/__sandbox`).pipe(Effect.flatMap((r) => r.json), Effect.orDie)
      assert.strictEqual((info as { sandbox: string }).sandbox, "amplitude-http-api-v2")
    })))

  it.scopedLive("closing the scope stops the server", () =>
    run(Effect.gen(function*() {
      const url = yield* Effect.scoped(AmplitudeSandbox.start().pipe(Effect.map((sb) => sb.url)))
      const client = yield* HttpClient.HttpClient
      const result = yield* client.get(`${url}/__sandbox/stats`).pipe(Effect.either)
      assert.strictEqual(result._tag, "Left")
    })))
})
