/**
 * `MetaCapi.send` against the real sandbox over HTTP (127.0.0.1, free port): every documented answer.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, type Scope } from "effect"
import { MetaCapi, MetaCapiSandbox } from "../src/index.js"
import { janeDoe, prepare, preparedRaw, settings, SHA, wire } from "./fixtures.js"

/** Starts a sandbox in the test's scope and decodes settings pointing at it. */
const sandbox = (options: MetaCapiSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  MetaCapiSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: settings({ accessToken: sb.accessToken, pixelId: sb.pixelId, endpoint: sb.endpoint, ...extra })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const eventIds = (events: ReadonlyArray<MetaCapiSandbox.StoredEvent>) => events.map((e) => e.event.event_id)
const HOUR = 3_600_000

describe("MetaCapi.send against the sandbox", () => {
  it.scopedLive("200: every event Accepted; the sandbox stores the exact payloads with the test event code", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { testEventCode: "TEST4242" })
      const now = Date.now()
      const batch = prepare([
        janeDoe({
          name: "purchase",
          dedupKey: "ord_1001",
          timestamp: now - HOUR,
          properties: { value: 129, currency: "USD", order_id: "ord_1001" }
        }),
        janeDoe({ name: "sign_up", eventId: "evt_2", timestamp: now - 2 * HOUR })
      ], s)
      const outcomes = yield* MetaCapi.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted"])
      const first = outcomes[0]!
      assert.strictEqual(first._tag === "Accepted" ? first.response?.status : 0, 200)
      const body = JSON.parse(first._tag === "Accepted" ? first.response?.body ?? "" : "")
      assert.deepStrictEqual(body, { events_received: 2, messages: [], fbtrace_id: "SbxTrace000001" })
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(eventIds(stored), ["ord_1001", "evt_2"])
      assert.deepStrictEqual(
        stored.map((e) => e.event),
        batch.map((p) => p.payload as unknown as Record<string, unknown>)
      )
      assert.deepStrictEqual(stored.map((e) => [e.pixel_id, e.api_version, e.test_event_code]), [
        ["1234567890123456", "v27.0", "TEST4242"],
        ["1234567890123456", "v27.0", "TEST4242"]
      ])
      assert.deepStrictEqual((stored[0]!.event.user_data as Record<string, unknown>).em, [SHA["jane.doe@example.com"]])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 1 })
      assert.strictEqual(stats.test_events, 2)
    })))

  it.scopedLive("event_id + event_name dedup: the same batch sent twice is Accepted twice and stored once", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([
        janeDoe({
          name: "purchase",
          dedupKey: "ord_7",
          timestamp: Date.now() - HOUR,
          properties: { value: 1, currency: "EUR", order_id: "ord_7" }
        })
      ], s)
      assert.deepStrictEqual(tags(yield* MetaCapi.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(tags(yield* MetaCapi.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["ord_7"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.duplicates, 1)
      assert.strictEqual(stats.events_accepted, 2)
    })))

  it.scopedLive("7-day window at send time: the stale event is Rejected locally, the rest goes out", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const now = Date.now()
      const batch = preparedRaw([
        wire(0, {}, now - HOUR),
        wire(1, {}, now - 7 * 24 * HOUR - HOUR),
        wire(2, {}, now - 6 * 24 * HOUR)
      ])
      const outcomes = yield* MetaCapi.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Accepted"])
      const rejected = outcomes[1]!
      assert.strictEqual(
        rejected._tag === "Rejected" ? rejected.reason : "",
        "event_time is 7.0 days old at send time; Meta accepts up to 7 days"
      )
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_0", "evt_2"])
      assert.strictEqual((yield* sb.client.stats()).requests, 1)
    })))

  it.scopedLive("an event in the future is held back (Retry until its time), not sent", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const now = Date.now()
      const outcomes = yield* MetaCapi.send(preparedRaw([wire(0, {}, now + 10 * 60_000), wire(1, {}, now)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Retry", "Accepted"])
      const held = outcomes[0]!
      assert.isTrue(held._tag === "Retry" && held.afterMs! > 590_000 && held.afterMs! <= 600_000, JSON.stringify(held))
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_1"])
    })))

  it.scopedLive("one invalid event among many: Meta fails the whole request; halves isolate it, the rest accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const unhashed = wire(2, { user_data: { em: ["jane.doe@example.com"] } })
      const outcomes = yield* MetaCapi.send(preparedRaw([wire(0), wire(1), unhashed, wire(3)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Rejected", "Accepted"])
      const rejected = outcomes[2]!
      assert.isTrue(
        rejected._tag === "Rejected" &&
          rejected.reason.startsWith("Meta refused the event: Unhashed customer information (code 100/2804007"),
        JSON.stringify(rejected)
      )
      assert.strictEqual(rejected._tag === "Rejected" ? rejected.response?.status : 0, 400)
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_0", "evt_1", "evt_3"])
      // [0..3] 400 → [0,1] 200, [2,3] 400 → [2] 400, [3] 200
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "400": 3, "200": 2 })
    })))

  it.scopedLive("code 100 naming an event in error_data.event_index: that one Rejected, the rest resent at once", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        body: {
          error: {
            message: "Invalid parameter",
            type: "OAuthException",
            code: 100,
            error_subcode: 2804019,
            error_user_title: "Server-side API parameter error",
            error_data: { event_index: 1 },
            fbtrace_id: "AbC1"
          }
        }
      })
      const outcomes = yield* MetaCapi.send(preparedRaw([wire(0), wire(1), wire(2)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Accepted"])
      assert.strictEqual(
        outcomes[1]!._tag === "Rejected" ? outcomes[1]!.reason : "",
        "Meta refused the event: Server-side API parameter error (code 100/2804019, fbtrace_id AbC1)"
      )
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_0", "evt_2"])
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "400": 1, "200": 1 })
    })))

  it.scopedLive("a single invalid event → PayloadInvalidError with Meta's code, subcode and title", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const error = yield* Effect.flip(
        MetaCapi.send(preparedRaw([wire(0, { action_source: "website" })]), s)
      )
      assert.strictEqual(error._tag, "PayloadInvalidError")
      assert.strictEqual(error.status, 400)
      assert.strictEqual(
        error.message,
        "Meta refused the event: Server-side API parameter error (code 100/2804019, fbtrace_id SbxTrace000001)"
      )
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("codes 1, 2 and is_transient → RetryableError without a pause of our own", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      for (const code of [1, 2]) {
        yield* sb.client.setFaults({ code })
        const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
        assert.strictEqual(error._tag, "RetryableError")
        assert.strictEqual(error.status, 500)
        assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : -1, undefined)
        assert.isTrue(error.message.startsWith("Meta transient error: "), error.message)
      }
      yield* sb.client.setFaults({
        code: 100,
        subcode: 99,
        body: { error: { message: "Temporary", code: 100, is_transient: true, fbtrace_id: "T" } }
      })
      const transient = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(transient._tag, "RetryableError")
      assert.strictEqual(transient.message, "Meta transient error: Temporary (code 100, fbtrace_id T)")
    })))

  it.scopedLive("throttling codes 4, 17, 32, 341, 613, 80004 → RetryableError with a 60 s back-off", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      for (const code of [4, 17, 32, 341, 613, 80004]) {
        yield* sb.client.setFaults({ code })
        const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
        assert.strictEqual(error._tag, "RetryableError", `code ${code}`)
        assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : 0, 60_000, `code ${code}`)
        assert.isTrue(error.message.startsWith("Meta rate limit: "), error.message)
      }
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("throttled with Retry-After, or with x-business-use-case-usage: the hint decides the pause", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ code: 17, retryAfter: 7 })
      const withHeader = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(withHeader._tag === "RetryableError" ? withHeader.retryAfterMs : 0, 7000)
      yield* sb.client.setFaults({ code: 80004, regainAccessMinutes: 3 })
      const withUsage = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(withUsage._tag === "RetryableError" ? withUsage.retryAfterMs : 0, 180_000)
    })))

  it.scopedLive("the sandbox's own rate limit (code 17) is read as throttling", () =>
    run(Effect.gen(function*() {
      const { settings: s } = yield* sandbox({ rateLimit: 1 })
      assert.deepStrictEqual(tags(yield* MetaCapi.send(preparedRaw([wire(0)]), s)), ["Accepted"])
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(1)]), s))
      assert.strictEqual(error._tag, "RetryableError")
      assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : 0, 60_000)
    })))

  it.scopedLive("bad token (190) → AuthFailedError; the token is in no message, body or outcome", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const token = "EAAB-wrong-token-5f2a9c71"
      const s = settings({ accessToken: token, pixelId: sb.pixelId, endpoint: sb.endpoint })
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(error.status, 400)
      assert.strictEqual(
        error.message,
        "Meta refused the access token or pixel: Invalid OAuth access token - Cannot parse access token " +
          "(code 190, fbtrace_id SbxTrace000001)"
      )
      assert.isFalse(JSON.stringify(error).includes(token))
      assert.isFalse(String(error).includes(token))
      assert.deepStrictEqual((yield* sb.client.stats()).rejected, { "190 invalid access token": 1 })
    })))

  it.scopedLive("an answer that echoes the token is redacted in the error and its body", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        body: {
          error: { message: "Bad token test-token-x access_token=sandbox-meta-token", code: 190, fbtrace_id: "X" }
        }
      })
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.isFalse(JSON.stringify(error).includes("sandbox-meta-token"))
      assert.strictEqual(
        error.body,
        "{\"error\":{\"message\":\"Bad token test-token-x access_token=[redacted]\",\"code\":190,\"fbtrace_id\":\"X\"}}"
      )
    })))

  it.scopedLive("permission errors (10, 200, 102) and an unknown pixel (100/33) → AuthFailedError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      for (const code of [10, 200, 102]) {
        yield* sb.client.setFaults({ code })
        const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
        assert.strictEqual(error._tag, "AuthFailedError", `code ${code}`)
      }
      const unknown = settings({ accessToken: sb.accessToken, pixelId: "999", endpoint: sb.endpoint })
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), unknown))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.isTrue(error.message.includes("(code 100/33, "), error.message)
    })))

  it.scopedLive("5xx without a Graph body (HTML 502) → RetryableError with the status and Retry-After", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 502, body: "<html><body>502 Bad Gateway</body></html>", retryAfter: 12 })
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "RetryableError")
      assert.strictEqual(error.status, 502)
      assert.strictEqual(error.message, "Meta answered 502")
      assert.strictEqual(error._tag === "RetryableError" ? error.retryAfterMs : 0, 12_000)
      // The fault is used up: the next send goes through.
      assert.deepStrictEqual(tags(yield* MetaCapi.send(preparedRaw([wire(0)]), s)), ["Accepted"])
    })))

  it.scopedLive("a 500 that did ingest is safe to retry: the resend is deduplicated by event_id", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = preparedRaw([wire(0), wire(1)])
      yield* sb.client.setFaults({ code: 2, ingest: true })
      const failed = yield* Effect.flip(MetaCapi.send(batch, s))
      assert.strictEqual(failed._tag, "RetryableError")
      assert.deepStrictEqual(tags(yield* MetaCapi.send(batch, s)), ["Accepted", "Accepted"])
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_0", "evt_1"])
      assert.strictEqual((yield* sb.client.stats()).duplicates, 2)
    })))

  it.scopedLive("transport error (nothing listening) → RetryableError", () =>
    run(Effect.gen(function*() {
      const port = yield* Effect.scoped(MetaCapiSandbox.start().pipe(Effect.map((sb) => sb.port)))
      const s = settings({ endpoint: `http://127.0.0.1:${port}` })
      const error = yield* Effect.flip(MetaCapi.send(preparedRaw([wire(0)]), s))
      assert.strictEqual(error._tag, "RetryableError")
      assert.strictEqual(error.status, undefined)
      assert.isTrue(error.message.startsWith("Meta request failed: "), error.message)
      assert.isFalse(error.message.includes("test-token-EAAB-0001"))
    })))

  it.scopedLive("batches above maxEventsPerRequest go out as several requests; a later failure is per-event Retry", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      yield* sb.client.setFaults({ code: 2, skip: 1 })
      const outcomes = yield* MetaCapi.send(preparedRaw([wire(0), wire(1), wire(2), wire(3), wire(4)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Retry", "Retry", "Accepted"])
      assert.deepStrictEqual(eventIds(yield* sb.client.events()), ["evt_0", "evt_1", "evt_4"])
      assert.strictEqual((yield* sb.client.stats()).requests, 3)
    })))
})
