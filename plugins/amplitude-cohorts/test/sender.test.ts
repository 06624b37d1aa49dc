/**
 * The sender ("Amplitude") against a local node:http receiver that runs the plugin's receive() and stores batches
 * once per message id, as the gateway does.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type * as Source from "@tracklayer/core/Source"
import { Effect, Either, type Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { AmplitudeCohorts, AmplitudeCohortsSandbox } from "../src/index.js"
import { settings, SHARED } from "./fixtures.js"

interface Received {
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
  /** What the receiver answered (or would have, for a request answered after the sender gave up). */
  readonly status: number
  /** For an accepted request: each batch's message id and whether it was new (`stored`) or a `duplicate`. */
  readonly results: ReadonlyArray<readonly [string, "stored" | "duplicate"]>
}

interface ReceiverOptions {
  /** Status forced for the n-th request (0-based) instead of what receive() says. */
  readonly statuses?: Readonly<Record<number, number>>
  /** Delay before answering the n-th request, in ms. */
  readonly delays?: Readonly<Record<number, number>>
  readonly settings?: AmplitudeCohorts.Settings
}

interface Receiver {
  readonly url: string
  readonly received: Array<Received>
  readonly stored: Map<string, Source.AudienceBatch>
}

/** A receiver on 127.0.0.1 for the test's scope. */
const receiver = (options: ReceiverOptions = {}): Effect.Effect<Receiver, never, Scope.Scope> =>
  Effect.gen(function*() {
    const s = options.settings ?? settings()
    const received: Array<Received> = []
    const stored = new Map<string, Source.AudienceBatch>()
    const timers = new Set<ReturnType<typeof setTimeout>>()
    const server = Http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        const n = received.length
        const body = Buffer.concat(chunks).toString("utf8")
        const headers: Record<string, string | undefined> = {}
        for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(", ") : v
        const result = AmplitudeCohorts.receive({ headers, body }, s)
        let status = Either.isRight(result) ? 200 : result.left.status
        const results: Array<readonly [string, "stored" | "duplicate"]> = []
        const forced = options.statuses?.[n]
        if (forced !== undefined) status = forced
        else if (Either.isRight(result)) {
          for (const batch of result.right) {
            results.push([batch.messageId, stored.has(batch.messageId) ? "duplicate" : "stored"])
            if (!stored.has(batch.messageId)) stored.set(batch.messageId, batch)
          }
        }
        received.push({ headers: req.headers, body, status, results })
        const answer = () => {
          if (res.destroyed) return
          res.writeHead(status, { "content-type": "application/json" })
          res.end(JSON.stringify(Either.isLeft(result) ? { error: result.left.message } : { ok: true }))
        }
        const delay = options.delays?.[n] ?? 0
        if (delay <= 0) return answer()
        const timer = setTimeout(() => {
          timers.delete(timer)
          answer()
        }, delay)
        timers.add(timer)
      })
    })
    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const t of timers) clearTimeout(t)
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    return { url: `http://127.0.0.1:${port}/v1/sources/amplitude-cohorts`, received, stored }
  })

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const COHORT = { id: "7khm89cz", name: "My Test Cohort" }
const STEM = "9baaa88f-9d46-4ee5-a946-be0c6aea0046"

describe("AmplitudeCohortsSandbox.sender", () => {
  it.scopedLive("posts Amplitude's default payload with Amplitude's headers and the secret header", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED })
      const deliveries = yield* amplitude.enter(COHORT, ["user_one@example.com", "user_two@example.com"], {
        messageId: STEM,
        computedTime: 1692206763,
        userProperties: { "user_two@example.com": { country: "US" } }
      })
      assert.strictEqual(r.received.length, 1)
      const got = r.received[0]!
      assert.strictEqual(got.headers["content-type"], "application/json")
      assert.strictEqual(got.headers["user-agent"], "Amplitude/Webhook/1.0")
      assert.strictEqual(got.headers["x-tracklayer-secret"], SHARED)
      assert.strictEqual(
        got.body,
        "{\"cohort_name\":\"My Test Cohort\",\"cohort_id\":\"7khm89cz\",\"in_cohort\":true," +
          "\"computed_time\":\"1692206763\",\"message_id\":\"9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0\"," +
          "\"users\":[{\"user_id\":\"user_one@example.com\"}," +
          "{\"user_id\":\"user_two@example.com\",\"user_properties\":{\"country\":\"US\"}}]}"
      )
      assert.strictEqual(got.status, 200)
      assert.deepStrictEqual([...r.stored.values()], [{
        messageId: `${STEM}::enter::0`,
        audience: { key: "7khm89cz", name: "My Test Cohort" },
        at: 1692206763000,
        members: [
          { userId: "user_one@example.com", member: true },
          { userId: "user_two@example.com", member: true }
        ]
      }])
      assert.strictEqual(deliveries.length, 1)
      const d = deliveries[0]!
      assert.strictEqual(d.messageId, `${STEM}::enter::0`)
      assert.strictEqual(d.body, got.body)
      assert.isTrue(d.delivered)
      assert.deepStrictEqual(d.attempts.map((a) => [a.attempt, a.status, a.outcome, a.duplicate]), [
        [1, 200, "accepted", false]
      ])
      assert.isTrue(Number.isInteger(d.attempts[0]!.ms) && d.attempts[0]!.ms >= 0)
    })))

  it.scopedLive("a custom header name and extra headers are sent", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver({ settings: settings({ header: "X-Amplitude-Hook" }) })
      const amplitude = AmplitudeCohortsSandbox.sender({
        url: r.url,
        header: "X-Amplitude-Hook",
        secret: SHARED,
        headers: { "X-Env": "staging" }
      })
      const [d] = yield* amplitude.leave(COHORT, ["usr_1"], { messageId: STEM, computedTime: 1777017600 })
      assert.isTrue(d!.delivered)
      assert.strictEqual(r.received[0]!.headers["x-amplitude-hook"], SHARED)
      assert.strictEqual(r.received[0]!.headers["x-env"], "staging")
      assert.isUndefined(r.received[0]!.headers["x-tracklayer-secret"])
      assert.deepStrictEqual([...r.stored.values()][0]!.members, [{ userId: "usr_1", member: false }])
    })))

  it.scopedLive("retries after 500 and 503 until a 200; the message is stored once", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver({ statuses: { 0: 500, 1: 503 } })
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED, backoffMs: 5 })
      const [d] = yield* amplitude.enter(COHORT, ["usr_1", "usr_2"], { messageId: STEM })
      assert.isTrue(d!.delivered)
      assert.deepStrictEqual(d!.attempts.map((a) => [a.attempt, a.status, a.outcome]), [
        [1, 500, "refused"],
        [2, 503, "refused"],
        [3, 200, "accepted"]
      ])
      assert.deepStrictEqual(r.received.map((x) => x.status), [500, 503, 200])
      assert.strictEqual(new Set(r.received.map((x) => x.body)).size, 1)
      assert.deepStrictEqual(r.received[2]!.results, [[`${STEM}::enter::0`, "stored"]])
      assert.deepStrictEqual([...r.stored.keys()], [`${STEM}::enter::0`])
      assert.deepStrictEqual(amplitude.attempts().map((a) => a.status), [500, 503, 200])
    })))

  it.scopedLive("an answer slower than the timeout is retried; the receiver dedupes the resent message", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver({ delays: { 0: 1500 } })
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED, timeoutMs: 200, backoffMs: 5 })
      const [d] = yield* amplitude.enter(COHORT, ["usr_1"], { messageId: STEM })
      assert.isTrue(d!.delivered)
      assert.deepStrictEqual(d!.attempts.map((a) => [a.attempt, a.status, a.outcome]), [
        [1, null, "timeout"],
        [2, 200, "accepted"]
      ])
      // The slow first request had been received and stored: the retry is a duplicate, stored once.
      assert.deepStrictEqual(r.received.map((x) => x.results), [
        [[`${STEM}::enter::0`, "stored"]],
        [[`${STEM}::enter::0`, "duplicate"]]
      ])
      assert.strictEqual(r.stored.size, 1)
    })))

  it.scopedLive("retryDuplicate posts a delivered message a second time on purpose", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED, retryDuplicate: true })
      const [d] = yield* amplitude.enter(COHORT, ["usr_1", "usr_2"], { messageId: STEM })
      assert.deepStrictEqual(d!.attempts.map((a) => [a.attempt, a.status, a.outcome, a.duplicate]), [
        [1, 200, "accepted", false],
        [2, 200, "accepted", true]
      ])
      assert.strictEqual(r.received.length, 2)
      assert.strictEqual(r.received[0]!.body, r.received[1]!.body)
      assert.deepStrictEqual(r.received.map((x) => x.results), [
        [[`${STEM}::enter::0`, "stored"]],
        [[`${STEM}::enter::0`, "duplicate"]]
      ])
      assert.strictEqual(r.stored.size, 1)
    })))

  it.scopedLive("splits users into messages of batchSize with ::enter::<n> / ::leave::<n> ids", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED, batchSize: 2 })
      const entered = yield* amplitude.enter(COHORT, ["u1", "u2", "u3", "u4", "u5"], { messageId: STEM })
      const left = yield* amplitude.leave(COHORT, ["u2"], { messageId: "b7e0" })
      assert.deepStrictEqual([...entered, ...left].map((d) => [d.messageId, d.delivered]), [
        [`${STEM}::enter::0`, true],
        [`${STEM}::enter::1`, true],
        [`${STEM}::enter::2`, true],
        ["b7e0::leave::0", true]
      ])
      assert.deepStrictEqual(
        [...r.stored.values()].map((b) => [b.messageId, b.members.map((m) => `${m.userId}:${m.member}`)]),
        [
          [`${STEM}::enter::0`, ["u1:true", "u2:true"]],
          [`${STEM}::enter::1`, ["u3:true", "u4:true"]],
          [`${STEM}::enter::2`, ["u5:true"]],
          ["b7e0::leave::0", ["u2:false"]]
        ]
      )
    })))

  it.scopedLive("generated message ids are <uuid>::enter::<n>, new per sync", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED })
      const [a] = yield* amplitude.enter(COHORT, ["u1"])
      const [b] = yield* amplitude.enter(COHORT, ["u1"])
      const pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}::enter::0$/
      assert.match(a!.messageId!, pattern)
      assert.match(b!.messageId!, pattern)
      assert.notStrictEqual(a!.messageId, b!.messageId)
      assert.strictEqual(r.stored.size, 2)
      const computed = JSON.parse(a!.body).computed_time
      assert.match(computed, /^\d{10}$/)
    })))

  it.scopedLive("a wrong secret is refused with 401 on every attempt; the message is not delivered", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({
        url: r.url,
        secret: "fake.cohort.hook.value.99",
        maxAttempts: 3,
        backoffMs: 5
      })
      const [d] = yield* amplitude.enter(COHORT, ["u1"], { messageId: STEM })
      assert.isFalse(d!.delivered)
      assert.deepStrictEqual(d!.attempts.map((a) => [a.status, a.outcome]), [
        [401, "refused"],
        [401, "refused"],
        [401, "refused"]
      ])
      assert.strictEqual(r.stored.size, 0)
    })))

  it.scopedLive("identifyTraits: Amplitude's identify batch (colon spelling) with a message id", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED })
      const d = yield* amplitude.identifyTraits(COHORT, ["usr_1", "usr_2"], { messageId: "msg_1" })
      assert.isTrue(d.delivered)
      assert.deepStrictEqual(JSON.parse(d.body), {
        message_id: "msg_1",
        batch: ["usr_1", "usr_2"].map((userId) => ({
          type: "identify",
          traits: { "[Amplitude] My Test Cohort: 7khm89cz": true },
          userId,
          context: { integration: { name: "Amplitude Cohort Sync", version: "1.0.0" } }
        }))
      })
      const [batch] = [...r.stored.values()]
      assert.strictEqual(batch!.messageId, "msg_1")
      assert.deepStrictEqual(batch!.audience, { key: "7khm89cz", name: "My Test Cohort" })
      assert.deepStrictEqual(batch!.members, [{ userId: "usr_1", member: true }, { userId: "usr_2", member: true }])
    })))

  it.scopedLive("identifyTraits: user_properties list, parentheses spelling, \"false\" strings, digest ids", () =>
    run(Effect.gen(function*() {
      const r = yield* receiver()
      const amplitude = AmplitudeCohortsSandbox.sender({ url: r.url, secret: SHARED, retryDuplicate: true })
      const d = yield* amplitude.identifyTraits(COHORT, ["usr_1"], {
        format: "user_properties",
        spelling: "parentheses",
        stringValues: true,
        inCohort: false
      })
      assert.strictEqual(
        d.body,
        "[{\"user_id\":\"usr_1\",\"user_properties\":{\"[Amplitude] My Test Cohort (7khm89cz)\":\"false\"}}]"
      )
      assert.strictEqual(d.messageId, undefined)
      // No message_id: both postings get the same digest, so the second is a duplicate.
      const ids = r.received.map((x) => x.results)
      assert.strictEqual(ids.length, 2)
      assert.match(ids[0]![0]![0], /^sha256:[0-9a-f]{64}:\d+$/)
      assert.deepStrictEqual(ids[1], [[ids[0]![0]![0], "duplicate"]])
      assert.deepStrictEqual([...r.stored.values()][0]!.members, [{ userId: "usr_1", member: false }])
    })))

  it("traitName writes both spellings", () => {
    assert.strictEqual(AmplitudeCohortsSandbox.traitName(COHORT), "[Amplitude] My Test Cohort: 7khm89cz")
    assert.strictEqual(
      AmplitudeCohortsSandbox.traitName(COHORT, "parentheses"),
      "[Amplitude] My Test Cohort (7khm89cz)"
    )
  })
})
