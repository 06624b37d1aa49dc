/**
 * `LinkedIn.send` against the real sandbox over HTTP (127.0.0.1, free port): OAuth refresh and caching, per-element
 * statuses and whole-request answers.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, Exit, Scope } from "effect"
import { LinkedIn, LinkedInSandbox } from "../src/index.js"
import * as OAuth from "../src/internal/oauth.js"
import { leadOf, OPS_EMAIL_SHA256, prepare, preparedRaw, settings, wire } from "./fixtures.js"

/** Starts a sandbox in the test's scope, forgets cached tokens, and decodes settings pointing at it. */
const sandbox = (options: LinkedInSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  LinkedInSandbox.start(options).pipe(
    Effect.tap(() => Effect.sync(OAuth.clearCache)),
    Effect.map((sb) => ({
      sb,
      settings: settings({
        clientId: sb.clientId,
        clientSecret: sb.clientSecret,
        refreshToken: sb.refreshToken,
        apiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl,
        ...extra
      })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const reasons = (outcomes: ReadonlyArray<Destination.Outcome>) =>
  outcomes.map((o) => (o._tag === "Accepted" ? "Accepted" : `${o._tag}: ${o.reason}`))
const recent = (ms: number) => Date.now() - ms

/** Fails the test if any secret (or any sandbox access token) appears in `u`. */
const assertNoSecrets = (u: unknown) => {
  const text = JSON.stringify(u)
  for (
    const secret of [LinkedInSandbox.SANDBOX_CLIENT_SECRET, LinkedInSandbox.SANDBOX_REFRESH_TOKEN, "sandbox-li-at-"]
  ) {
    assert.isFalse(text.includes(secret), `secret ${secret} leaked: ${text}`)
  }
}

describe("LinkedIn.send against the sandbox", () => {
  it.scopedLive("200: every element 201 → Accepted; the sandbox stores the exact payloads; one token call", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([
        leadOf({ timestamp: recent(3_600_000) }),
        leadOf({
          name: "purchase",
          eventId: "evt_p",
          dedupKey: "ord_1001",
          timestamp: recent(60_000),
          properties: { value: 49.9, currency: "EUR", order_id: "ord_1001" }
        })
      ], s)
      const outcomes = yield* LinkedIn.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted"])
      const first = outcomes[0]!
      assert.deepStrictEqual(first._tag === "Accepted" ? first.response : undefined, {
        status: 200,
        body: "{\"status\":201}"
      })
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.rule, e.event_id]), [["7001004", "evt_lead_9001"], [
        "7001001",
        "ord_1001"
      ]])
      assert.deepStrictEqual(stored.map((e) => e.element), batch.map((p) => p.payload as unknown))
      assert.deepStrictEqual(
        (stored[1]!.element as { conversionValue: unknown }).conversionValue,
        { currencyCode: "EUR", amount: "49.9" }
      )
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 1 })
      assert.strictEqual(stats.token_requests, 1)
      assertNoSecrets(outcomes)
    })))

  it.scopedLive("per-element failures: only those Rejected with LinkedIn's message; the others stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const inSeconds = Math.floor(Date.now() / 1000)
      const outcomes = yield* LinkedIn.send(
        preparedRaw([
          wire(0),
          wire(1, { user: { userIds: [{ idType: "SHA256_EMAIL", idValue: "ops@acme-corp.example" }] } }),
          wire(2, { conversion: "urn:lla:llaPartnerConversion:999" }),
          wire(3, { conversionHappenedAt: inSeconds }),
          wire(4, {}, 100 * 86_400_000),
          wire(5, { conversionValue: { currencyCode: "USD", amount: "12,50" } }),
          wire(6, { user: { userIds: [{ idType: "SHA256_EMAIL", idValue: OPS_EMAIL_SHA256.toUpperCase() }] } }),
          wire(7, { user: { userIds: [] } }),
          wire(8)
        ]),
        s
      )
      assert.deepStrictEqual(reasons(outcomes), [
        "Accepted",
        "Rejected: 400 /elements/1/user/userIds/0/idValue :: SHA256_EMAIL must be a SHA-256 hash, not an email " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Rejected: 400 /elements/2/conversion :: conversion rule 999 does not exist (FIELD_VALUE_INVALID, " +
        "serviceErrorCode 100)",
        `Rejected: 400 /elements/3/conversionHappenedAt :: ${inSeconds} looks like seconds; expected epoch milliseconds (FIELD_VALUE_INVALID, serviceErrorCode 100)`,
        "Rejected: 400 /elements/4/conversionHappenedAt :: conversion happened more than 90 days ago " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Rejected: 400 /elements/5/conversionValue/amount :: expected a non-negative decimal string, got \"12,50\" " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Rejected: 400 /elements/6/user/userIds/0/idValue :: SHA256_EMAIL must be 64 lowercase hex characters " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Rejected: 400 /elements/7/user :: at least one userIds entry, or userInfo firstName, lastName and " +
        "companyName, is required (FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Accepted"
      ])
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.event_id), ["lead_0", "lead_8"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.rejected, {
        "unhashed email": 1,
        "unknown conversion rule": 1,
        "conversionHappenedAt in seconds": 1,
        "conversionHappenedAt too old": 1,
        "invalid amount": 1,
        "invalid SHA256_EMAIL": 1,
        "no user identifier": 1
      })
    })))

  it.scopedLive("the access token is cached across sends and refreshed before it expires", () =>
    run(Effect.gen(function*() {
      // 2 s tokens: refreshed from 1.8 s on (a tenth of the lifetime before expiry).
      const { sb, settings: s } = yield* sandbox({ accessTokenTtlSeconds: 2 })
      for (let i = 0; i < 3; i++) {
        assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(i)]), s)), ["Accepted"])
      }
      assert.strictEqual((yield* sb.client.stats()).token_requests, 1)
      yield* Effect.sleep("1900 millis")
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(10)]), s)), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 2)
      assert.strictEqual(stats.tokens_issued, 2)
      // The refresh happened before the old token expired: LinkedIn never answered 401.
      assert.deepStrictEqual(stats.responses, { "200": 4 })
    })))

  it.scopedLive("concurrent sends share one token refresh", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const all = yield* Effect.all(
        [0, 1, 2, 3, 4].map((i) => LinkedIn.send(preparedRaw([wire(i)]), s)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(all.map(tags), [["Accepted"], ["Accepted"], ["Accepted"], ["Accepted"], ["Accepted"]])
      assert.strictEqual((yield* sb.client.stats()).token_requests, 1)
    })))

  it.scopedLive("401 (token revoked): the cached token is dropped, refreshed once and the request retried", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(0)]), s)), ["Accepted"])
      yield* sb.client.revokeTokens()
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(1)]), s)), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 2, "401": 1 })
      assert.strictEqual(stats.token_requests, 2)
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.event_id), ["lead_0", "lead_1"])
    })))

  it.scopedLive("401 again after the refresh: AuthFailedError (destination paused), nothing stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 401, count: 2 })
      const exit = yield* Effect.exit(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause : undefined
      const failure = error !== undefined && error._tag === "Fail" ? error.error : undefined
      assert.strictEqual(failure?._tag, "AuthFailedError")
      assert.strictEqual(
        failure?.message,
        "LinkedIn answered 401: Invalid access token (INVALID_ACCESS_TOKEN, serviceErrorCode 65600); " +
          "the access token was refused again after a refresh"
      )
      assert.strictEqual(failure?.status, 401)
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 2)
      assert.deepStrictEqual(stats.responses, { "401": 2 })
      assert.strictEqual((yield* sb.client.events()).length, 0)
      assertNoSecrets(failure)
    })))

  it.scopedLive("a refused refresh token (400 invalid_grant): AuthFailedError without any secret", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { refreshToken: "sandbox-linkedin-wrong-refresh" })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) {
        assert.strictEqual(result.left._tag, "AuthFailedError")
        assert.strictEqual(
          result.left.message,
          "LinkedIn refused the token refresh (400, invalid_grant: The provided authorization grant or refresh " +
            "token is invalid, expired or revoked)"
        )
        assert.strictEqual(result.left.status, 400)
        assert.isFalse(JSON.stringify(result.left).includes("sandbox-linkedin-wrong-refresh"))
        assertNoSecrets(result.left)
      }
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.token_responses, { "400": 1 })
      assert.strictEqual(stats.requests, 0)
    })))

  it.scopedLive("a wrong client secret (401 invalid_client): AuthFailedError", () =>
    run(Effect.gen(function*() {
      const { settings: s } = yield* sandbox({}, { clientSecret: "not-the-secret" })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(
        Either.isLeft(result) ? [result.left._tag, result.left.message] : [],
        ["AuthFailedError", "LinkedIn refused the token refresh (401, invalid_client: Client authentication failed)"]
      )
      assert.isFalse(JSON.stringify(result).includes("not-the-secret"))
    })))

  it.scopedLive("token endpoint 503: RetryableError (not a pause)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ target: "token", status: 503, retryAfter: 3 })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(Either.isLeft(result) ? [result.left._tag, result.left.status] : [], [
        "RetryableError",
        503
      ])
      // The next send refreshes successfully.
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(0)]), s)), ["Accepted"])
    })))

  it.scopedLive("403: AuthFailedError naming the missing permission", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 403,
        body: { status: 403, serviceErrorCode: 100, code: "ACCESS_DENIED", message: "Not enough permissions" }
      })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(Either.isLeft(result) ? [result.left._tag, result.left.message] : [], [
        "AuthFailedError",
        "LinkedIn answered 403: Not enough permissions (ACCESS_DENIED, serviceErrorCode 100); the member needs " +
        "rw_conversions and a role on the ad account"
      ])
    })))

  it.scopedLive("429 with Retry-After: RetryableError after that long; without it, 60 s", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 429, retryAfter: 7 })
      const first = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(
        Either.isLeft(first) && first.left._tag === "RetryableError"
          ? [first.left.retryAfterMs, first.left.status]
          : [],
        [7000, 429]
      )
      yield* sb.client.setFaults({ status: 429 })
      const second = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(
        Either.isLeft(second) && second.left._tag === "RetryableError"
          ? [second.left.retryAfterMs, second.left.message]
          : [],
        [
          60_000,
          "LinkedIn answered 429: Resource level throttle APPLICATION MINUTE limit for calls to this resource is " +
          "reached. (TOO_MANY_REQUESTS)"
        ]
      )
      assert.strictEqual((yield* sb.client.events()).length, 0)
    })))

  it.scopedLive("the sandbox's own rate limit: the request over the per-minute limit gets 429", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ rateLimitPerMinute: 2 })
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(0)]), s)), ["Accepted"])
      assert.deepStrictEqual(tags(yield* LinkedIn.send(preparedRaw([wire(1)]), s)), ["Accepted"])
      const third = yield* Effect.either(LinkedIn.send(preparedRaw([wire(2)]), s))
      assert.strictEqual(Either.isLeft(third) ? third.left._tag : "", "RetryableError")
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "200": 2, "429": 1 })
    })))

  it.scopedLive("5xx (500 JSON, 502 HTML, 503 down): RetryableError, nothing stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const statuses: Array<number | undefined> = []
      for (const status of [500, 502]) {
        yield* sb.client.setFaults({ status })
        const r = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
        assert.strictEqual(Either.isLeft(r) ? r.left._tag : "", "RetryableError")
        statuses.push(Either.isLeft(r) ? r.left.status : undefined)
      }
      yield* sb.client.setFaults({ down: true, retryAfter: 30 })
      const down = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(
        Either.isLeft(down) && down.left._tag === "RetryableError" ? [down.left.status, down.left.retryAfterMs] : [],
        [503, 30_000]
      )
      assert.deepStrictEqual(statuses, [500, 502])
      assert.strictEqual((yield* sb.client.events()).length, 0)
    })))

  it.scopedLive("400 without element statuses: PayloadInvalidError with LinkedIn's message", () =>
    run(Effect.gen(function*() {
      // The sandbox's own whole-request 400: more elements in one request than it allows.
      const { sb, settings: s } = yield* sandbox({ maxElements: 1 }, { maxEventsPerRequest: 2 })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0), wire(1)]), s))
      assert.deepStrictEqual(Either.isLeft(result) ? [result.left._tag, result.left.message, result.left.status] : [], [
        "PayloadInvalidError",
        "LinkedIn answered 400: /elements :: at most 1 elements per batch, got 2",
        400
      ])
      assert.strictEqual((yield* sb.client.events()).length, 0)
    })))

  it.scopedLive("element statuses replayed: 201, element 500 → Retry, element 400 → Rejected, missing → Retry", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        body: {
          elements: [
            { status: 201 },
            { status: 500, error: { status: 500, message: "Internal error" } },
            { status: 400, error: { status: 400, code: "INVALID_ARGUMENT", message: "eventId too long" } }
          ]
        }
      })
      const outcomes = yield* LinkedIn.send(preparedRaw([wire(0), wire(1), wire(2), wire(3)]), s)
      assert.deepStrictEqual(reasons(outcomes), [
        "Accepted",
        "Retry: LinkedIn element 500 Internal error",
        "Rejected: 400 eventId too long (INVALID_ARGUMENT)",
        "Retry: LinkedIn answered no status for element 3"
      ])
    })))

  it.scopedLive("the same eventId twice: both Accepted, stored once (dedup)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([leadOf({ timestamp: recent(5_000) })], s)
      assert.deepStrictEqual(tags(yield* LinkedIn.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(tags(yield* LinkedIn.send(batch, s)), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.elements_stored, 1)
      assert.strictEqual(stats.duplicates, 1)
    })))

  it.scopedLive("a batch above maxEventsPerRequest goes out as several requests, outcomes in order", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      const outcomes = yield* LinkedIn.send(
        preparedRaw([wire(0), wire(1), wire(2, { conversion: "urn:lla:llaPartnerConversion:1" }), wire(3), wire(4)]),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Rejected", "Accepted", "Accepted"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 3 })
      assert.strictEqual(stats.token_requests, 1)
    })))

  it.scopedLive("headers: the pinned LinkedIn-Version is one the sandbox serves; an inactive one pauses (426)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      assert.strictEqual(LinkedIn.LINKEDIN_API_VERSION, "202609")
      yield* sb.client.configure({ activeVersions: ["202701"] })
      const result = yield* Effect.either(LinkedIn.send(preparedRaw([wire(0)]), s))
      assert.deepStrictEqual(Either.isLeft(result) ? [result.left._tag, result.left.status] : [], [
        "AuthFailedError",
        426
      ])
      assert.strictEqual(
        Either.isLeft(result) ? result.left.message : "",
        `LinkedIn answered 426: Requested version 202609 is not active (NONEXISTENT_VERSION); check apiBase ` +
          `(${sb.apiBase}/conversionEvents) and LinkedIn-Version 202609`
      )
    })))
})
