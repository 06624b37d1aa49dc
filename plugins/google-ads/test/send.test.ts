/**
 * `GoogleAds.send` against the real sandbox over HTTP (127.0.0.1, free port): OAuth, fail-fast errors, status polling.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope } from "effect"
import { GoogleAds, GoogleAdsOAuth, GoogleAdsSandbox } from "../src/index.js"
import { deliveryEvent, GRANTED, prepare, preparedRaw, settings, SHA, T0, wire } from "./fixtures.js"

/** Starts a sandbox in the test's scope and decodes settings pointing at it (fast status polling). */
const sandbox = (options: GoogleAdsSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  GoogleAdsSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: settings({
        clientId: sb.credentials.clientId,
        clientSecret: sb.credentials.clientSecret,
        refreshToken: sb.credentials.refreshToken,
        apiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl,
        statusPollIntervalMs: 20,
        ...extra
      })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const bodyOf = (o: Destination.Outcome | undefined) => JSON.parse(o?.response?.body ?? "null")
const reasonOf = (o: Destination.Outcome | undefined) => (o?._tag === "Rejected" ? o.reason : undefined)

const purchase = (i: number, extra: Parameters<typeof deliveryEvent>[0] = {}) =>
  deliveryEvent({
    eventId: `evt_${i}`,
    dedupKey: `ord_${i}`,
    timestamp: T0 + i * 1000,
    identity: { emails: ["cloudysanfrancisco@gmail.com"], clickIds: { gclid: `gclid-${i}` } },
    properties: { value: 100 + i, currency: "USD" },
    ...extra
  })

afterEach(() => GoogleAdsOAuth.clearCache())

describe("GoogleAds.send against the sandbox", () => {
  it.scopedLive("200 → polls requestStatus until SUCCESS: all Accepted; the sandbox stores the exact events", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 2 })
      const batch = prepare([purchase(1), purchase(2), purchase(3)], s)
      const outcomes = yield* GoogleAds.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const body = bodyOf(outcomes[0])
      assert.strictEqual(body.requestStatus, "SUCCESS")
      assert.strictEqual(body.recordCount, "3")
      assert.match(body.requestId, /^[0-9a-f-]{36}$/)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => e.transaction_id), ["ord_1", "ord_2", "ord_3"])
      assert.deepStrictEqual(stored.map((e) => e.event), batch.map((p) => p.payload.event as unknown))
      assert.deepStrictEqual(stored.map((e) => e.operating_account_id), ["1234567890", "1234567890", "1234567890"])
      assert.deepStrictEqual(stored[0]!.event.userData, {
        userIdentifiers: [{ emailAddress: SHA["cloudysanfrancisco@gmail.com"] }]
      })
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.status_polls, 3) // PROCESSING, PROCESSING, SUCCESS
      assert.strictEqual(stats.token_requests, 1)
      assert.deepStrictEqual(stats.responses, { "200": 1 })
    })))

  it.scopedLive("one request per conversion action; outcomes stay in batch order", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([
        purchase(1),
        deliveryEvent({ name: "sign_up", dedupKey: "evt_su", identity: { clickIds: { gclid: "g-su" } } }),
        purchase(2)
      ], s)
      const outcomes = yield* GoogleAds.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.product_destination_id, e.transaction_id]), [
        ["7000000001", "ord_1"],
        ["7000000001", "ord_2"],
        ["7000000002", "evt_su"]
      ])
      assert.strictEqual((yield* sb.client.stats()).ingest_requests, 2)
    })))

  it.scopedLive("access tokens are cached across sends and refreshed before expiry", () =>
    run(Effect.gen(function*() {
      // 1 s tokens: refreshed after half their lifetime.
      const { sb, settings: s } = yield* sandbox({ tokenTtlSeconds: 1, processingPolls: 0 })
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      yield* GoogleAds.send(prepare([purchase(2)], s), s)
      assert.strictEqual((yield* sb.client.stats()).token_requests, 1)
      yield* Effect.sleep("600 millis")
      const outcomes = yield* GoogleAds.send(prepare([purchase(3)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 2)
      assert.deepStrictEqual(stats.responses, { "200": 3 }) // never a 401: refreshed before expiry
    })))

  it.scopedLive("401 → the cached token is dropped, a fresh one fetched, the request retried once", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      yield* sb.client.expireTokens()
      const outcomes = yield* GoogleAds.send(prepare([purchase(2)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 2)
      assert.deepStrictEqual(stats.responses, { "200": 2, "401": 1 })
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.transaction_id), ["ord_1", "ord_2"])
    })))

  it.scopedLive("a second 401 (token refused even fresh) → AuthFailedError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 401, count: 2 })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s))
      assert.isTrue(Either.isLeft(r))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(e?.status, 401)
      assert.include(e?.message ?? "", "Google refused a freshly issued access token")
      assert.strictEqual((yield* sb.client.stats()).token_requests, 2)
    })))

  it.scopedLive("invalid_grant (wrong refresh token) → AuthFailedError; no secret in the error", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { refreshToken: "1//wrong-refresh-token-xyz" })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(e?.status, 400)
      assert.strictEqual(
        e?.message,
        "Google refused the OAuth credentials (invalid_grant: Bad Request): check clientId, clientSecret and " +
          "refreshToken"
      )
      const text = JSON.stringify(e)
      assert.notInclude(text, "wrong-refresh-token")
      assert.notInclude(text, sb.credentials.clientSecret)
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.token_errors, { invalid_grant: 1 })
      assert.strictEqual(stats.ingest_requests, 0)
    })))

  it.scopedLive("invalid_client (wrong client secret) → AuthFailedError", () =>
    run(Effect.gen(function*() {
      const { settings: s } = yield* sandbox({}, { clientSecret: "not-the-secret" })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(e?.status, 401)
      assert.include(e?.message ?? "", "invalid_client")
      assert.notInclude(JSON.stringify(e), "not-the-secret")
    })))

  it.scopedLive("400 with field violations: the named events Rejected with the description, the rest resent", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      const batch = preparedRaw([
        wire(0),
        wire(1, { userData: { userIdentifiers: [{ emailAddress: "jane.doe@example.com" }] } }),
        wire(2),
        wire(3, { currency: "usd" }),
        wire(4, { adIdentifiers: { gbraid: "gb", wbraid: "wb" } })
      ])
      const outcomes = yield* GoogleAds.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Accepted", "Rejected", "Rejected"])
      assert.deepStrictEqual(outcomes.map(reasonOf), [
        undefined,
        "events[1].userData.userIdentifiers[0].emailAddress: The SHA256 encoded value is malformed.",
        undefined,
        "events[3].currency: The currency must be an ISO 4217 code.",
        "events[4].adIdentifiers: At most one of gclid, gbraid and wbraid may be set."
      ])
      assert.strictEqual(outcomes[1]?.response?.status, 400)
      assert.strictEqual(outcomes[0]?.response?.status, 200)
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.transaction_id), ["ord_0", "ord_2"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "400": 1, "200": 1 })
      assert.deepStrictEqual(stats.rejected, {
        INVALID_SHA256_FORMAT: 1,
        INVALID_CURRENCY_CODE: 1,
        INVALID_ARGUMENT: 1
      })
    })))

  it.scopedLive("400 whose violations name no event → PayloadInvalidError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        body: {
          error: {
            code: 400,
            message: "There was a problem with the request.",
            status: "INVALID_ARGUMENT",
            details: [{
              "@type": "type.googleapis.com/google.rpc.BadRequest",
              fieldViolations: [{
                field: "destinations[0].productDestinationId",
                description: "Conversion action ID is not valid."
              }]
            }]
          }
        }
      })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1), purchase(2)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "PayloadInvalidError")
      assert.strictEqual(e?.status, 400)
      assert.strictEqual(
        e?.message,
        "Google Data Manager API refused the request (400): INVALID_ARGUMENT: There was a problem with the request."
      )
      assert.strictEqual((yield* sb.client.stats()).ingest_requests, 1)
    })))

  it.scopedLive("429 RESOURCE_EXHAUSTED (300/min quota) → RetryableError with the Retry-After delay", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ rateLimitPerMinute: 1, processingPolls: 0 })
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(2)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "RetryableError")
      assert.strictEqual(e?.status, 429)
      const after = e?._tag === "RetryableError" ? e.retryAfterMs ?? 0 : 0
      assert.isTrue(after >= 59_000 && after <= 60_000, `retryAfterMs ${after}`)
      assert.include(e?.message ?? "", "RESOURCE_EXHAUSTED")
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "200": 1, "429": 1 })
    })))

  it.scopedLive("503 UNAVAILABLE → RetryableError honouring Retry-After", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 503, retryAfter: 7 })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "RetryableError")
      assert.strictEqual(e?._tag === "RetryableError" ? e.retryAfterMs : undefined, 7000)
      assert.strictEqual(e?.message, "Google Data Manager API answered 503: UNAVAILABLE: Injected fault.")
    })))

  it.scopedLive("403 PERMISSION_DENIED → AuthFailedError naming the account", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 403 })
      const r = yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s))
      const e = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.include(e?.message ?? "", "Google denied access to account 1234567890 (403 PERMISSION_DENIED")
    })))

  it.scopedLive("final status FAILED → every event Rejected with the error counts", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 1 })
      yield* sb.client.setFaults({
        requestStatus: "FAILED",
        errorCounts: [{ reason: "INVALID_CONVERSION_ACTION_ID", recordCount: 2 }]
      })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1), purchase(2)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Rejected", "Rejected"])
      const requestId = bodyOf(outcomes[0]).requestId
      assert.strictEqual(
        reasonOf(outcomes[0]),
        `Google failed the request ${requestId} (FAILED: INVALID_CONVERSION_ACTION_ID × 2)`
      )
    })))

  it.scopedLive("final status PARTIAL_SUCCESS → Accepted, with Google's per-request counts in the excerpt", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      yield* sb.client.setFaults({
        requestStatus: "PARTIAL_SUCCESS",
        errorCounts: [{ reason: "INVALID_GCLID", recordCount: 1 }]
      })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1), purchase(2)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted"])
      const body = bodyOf(outcomes[1])
      assert.strictEqual(body.requestStatus, "PARTIAL_SUCCESS")
      assert.strictEqual(body.recordCount, "2")
      assert.deepStrictEqual(body.errorCounts, [{ reason: "INVALID_GCLID", recordCount: "1" }])
    })))

  it.scopedLive("still PROCESSING at the poll bound → Accepted with \"accepted; processing\"", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 1000 }, { statusPollTimeoutMs: 150 })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      const body = bodyOf(outcomes[0])
      assert.strictEqual(body.requestStatus, "PROCESSING")
      assert.match(body.note, /^accepted; processing \(still PROCESSING after \d+ ms\)$/)
      const polls = (yield* sb.client.stats()).status_polls
      assert.isTrue(polls >= 2 && polls <= 5, `polls ${polls}`) // 20, 40, 80 ms waits within 150 ms
    })))

  it.scopedLive("validateOnly: Accepted noting validate only; nothing stored, no status polling", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { validateOnly: true })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.strictEqual(bodyOf(outcomes[0]).note, "validate only: Google stored nothing")
      assert.strictEqual(bodyOf(outcomes[0]).validateOnly, true)
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.validate_only_requests, 1)
      assert.strictEqual(stats.status_polls, 0)
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("resending a transactionId: same value is a duplicate, a new value an adjustment", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      const adjusted = purchase(1, {
        eventId: "evt_later",
        properties: { value: 80, currency: "USD" },
        adjustment: { of: "evt_1", previousValue: 101, previousCurrency: "USD" }
      })
      const outcomes = yield* GoogleAds.send(prepare([adjusted], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.transaction_id, e.kind, e.event.conversionValue]), [
        ["ord_1", "new", 101],
        ["ord_1", "adjustment", 80]
      ])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.duplicates, 1)
      assert.strictEqual(stats.adjustments, 1)
    })))

  it.scopedLive("secrets and access tokens never appear in outcomes", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1)], s), s)
      const text = JSON.stringify(outcomes)
      assert.notInclude(text, sb.credentials.clientSecret)
      assert.notInclude(text, sb.credentials.refreshToken)
      assert.notInclude(text, "ya29.")
      assert.deepStrictEqual(outcomes[0]?._tag, "Accepted")
      assert.deepStrictEqual((yield* sb.client.events())[0]?.event.consent, GRANTED)
    })))
})
