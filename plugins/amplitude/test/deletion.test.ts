/**
 * Forwarding erasures: `Amplitude.plugin.deletePerson` against the sandbox's User Privacy API over HTTP, the settings
 * it needs, and the sandbox's own validation of `POST /api/2/deletions/users`.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { ConfigProvider, Effect, Either, Redacted, type Scope } from "effect"
import { Amplitude, AmplitudeSandbox, AmplitudeUserPrivacy } from "../src/index.js"
import { settings } from "./fixtures.js"

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const identity = (userId?: string): Destination.Identity => ({
  personKey: userId !== undefined ? `user:${userId}` : "device:web_91f3",
  personId: "per_0123456789abcdef0123",
  ...(userId !== undefined ? { userId } : {}),
  deviceId: "web_91f3",
  emails: ["Jane.Doe@Example.com"],
  phones: [],
  emailSha256: [],
  phoneSha256: [],
  clickIds: {}
})

const request = (userId?: string, requester = "dpo@example.com"): Destination.DeletionRequest => ({
  erasureId: "era_test",
  requester,
  identity: identity(userId),
  deviceIds: ["web_91f3"]
})

const deletePerson = Amplitude.plugin.deletePerson!

/** Settings pointing both APIs at the sandbox, with its secret key unless `secretKey` is given. */
const sandboxSettings = (sb: AmplitudeSandbox.Sandbox, extra: Record<string, unknown> = {}) =>
  settings({
    apiKey: sb.apiKey,
    endpoint: sb.endpoint,
    deletionEndpoint: sb.deletionEndpoint,
    secretKey: sb.secretKey,
    ...extra
  })

describe("Amplitude deletion settings", () => {
  it("secretKey is optional and redacted; the deletion endpoint defaults to Amplitude's US User Privacy API", () => {
    const plain = settings()
    assert.strictEqual(plain.secretKey, undefined)
    assert.strictEqual(plain.deletionEndpoint, "https://amplitude.com/api/2/deletions/users")
    const s = settings({ secretKey: "secret-0001", deletionEndpoint: AmplitudeUserPrivacy.EU_DELETION_ENDPOINT })
    assert.strictEqual(Redacted.value(s.secretKey!), "secret-0001")
    assert.strictEqual(String(s.secretKey), "<redacted>")
    assert.strictEqual(s.deletionEndpoint, "https://analytics.eu.amplitude.com/api/2/deletions/users")
  })

  it("settingsFromEnv reads AMPLITUDE_SECRET_KEY and AMPLITUDE_DELETION_ENDPOINT when set", () => {
    const read = (env: Record<string, string>) =>
      Effect.runSync(
        Amplitude.settingsFromEnv().pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
        )
      )
    assert.deepStrictEqual(read({ AMPLITUDE_API_KEY: "k-000001" }), { apiKey: "k-000001" })
    assert.deepStrictEqual(
      read({
        AMPLITUDE_API_KEY: "k-000001",
        AMPLITUDE_SECRET_KEY: " s-000001 ",
        AMPLITUDE_DELETION_ENDPOINT: "http://127.0.0.1:9/api/2/deletions/users"
      }),
      { apiKey: "k-000001", secretKey: "s-000001", deletionEndpoint: "http://127.0.0.1:9/api/2/deletions/users" }
    )
  })

  it("the body is { user_ids, requester, ignore_invalid_id: \"True\" } with Basic api_key:secret_key", () => {
    assert.deepStrictEqual(AmplitudeUserPrivacy.deletionBody(["usr_8421"], "dpo@example.com"), {
      user_ids: ["usr_8421"],
      requester: "dpo@example.com",
      ignore_invalid_id: "True"
    })
    // base64("key:secret")
    assert.strictEqual(AmplitudeUserPrivacy.basicAuth("key", "secret"), "Basic a2V5OnNlY3JldA==")
  })
})

describe("Amplitude.plugin.deletePerson against the sandbox", () => {
  it.scopedLive("accepted: the sandbox records the user id and requester; the outcome names the job", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const outcome = yield* deletePerson(request("usr_8421"), sandboxSettings(sb))
      assert.strictEqual(outcome._tag, "Deleted")
      const deletions = yield* sb.client.deletions()
      assert.strictEqual(deletions.length, 1)
      const d = deletions[0]!
      assert.deepStrictEqual(
        { user_ids: d.user_ids, amplitude_ids: d.amplitude_ids, requester: d.requester, ignore: d.ignore_invalid_id },
        { user_ids: ["usr_8421"], amplitude_ids: [], requester: "dpo@example.com", ignore: "True" }
      )
      assert.match(d.day, /^\d{4}-\d{2}-\d{2}$/)
      if (outcome._tag !== "Deleted") return
      assert.strictEqual(outcome.detail, `Amplitude deletion job for user_id usr_8421 (staging) scheduled for ${d.day}`)
      assert.strictEqual(outcome.response?.status, 200)
      assert.strictEqual(JSON.parse(outcome.response!.body).user_ids[0].user_id, "usr_8421")
    })))

  it.scopedLive("without a secret key: \"deletion not configured\", and nothing is sent", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const s = settings({ apiKey: sb.apiKey, endpoint: sb.endpoint, deletionEndpoint: sb.deletionEndpoint })
      const outcome = yield* deletePerson(request("usr_8421"), s)
      assert.strictEqual(outcome._tag, "NotConfigured")
      assert.match(
        outcome._tag === "NotConfigured" ? outcome.detail : "",
        /^deletion not configured: set the Amplitude secretKey/
      )
      assert.strictEqual((yield* sb.client.deletions()).length, 0)
    })))

  it.scopedLive("a wrong secret key is AuthFailedError (401) and never echoes either key", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const result = yield* Effect.either(
        deletePerson(request("usr_8421"), sandboxSettings(sb, { secretKey: "wrong-secret" }))
      )
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.strictEqual(result.left._tag, "AuthFailedError")
      assert.strictEqual(result.left.status, 401)
      assert.notInclude(JSON.stringify(result.left), "wrong-secret")
      assert.strictEqual((yield* sb.client.deletions()).length, 0)
    })))

  it.scopedLive("a person without a user_id is Rejected with the reason (Amplitude deletes by user_id)", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const outcome = yield* deletePerson(request(undefined), sandboxSettings(sb))
      assert.strictEqual(outcome._tag, "Rejected")
      assert.match(outcome._tag === "Rejected" ? outcome.reason : "", /has no user_id \(device ids: web_91f3\)/)
      assert.strictEqual((yield* sb.client.deletions()).length, 0)
    })))

  it.scopedLive("one request per second: a second erasure within the second is answered 429, waited for, then accepted", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const s = sandboxSettings(sb)
      const started = Date.now()
      const first = yield* deletePerson(request("usr_0001"), s)
      const second = yield* deletePerson(request("usr_0002"), s)
      assert.deepStrictEqual([first._tag, second._tag], ["Deleted", "Deleted"])
      assert.isAtLeast(Date.now() - started, 900)
      assert.deepStrictEqual((yield* sb.client.deletions()).map((d) => d.user_ids), [["usr_0001"], ["usr_0002"]])
    })))

  it.effect("5xx is RetryableError; the excerpt never carries the keys", () =>
    Effect.gen(function*() {
      const s = settings({ apiKey: "api-key-0001", secretKey: "secret-0001" })
      const seen: Array<{ url: string; auth: string | undefined }> = []
      const fake = HttpClient.make((req) =>
        Effect.sync(() => {
          seen.push({ url: req.url, auth: req.headers["authorization"] })
          return HttpClientResponse.fromWeb(
            req,
            new Response(JSON.stringify({ error: "upstream down for api-key-0001 / secret-0001" }), { status: 503 })
          )
        })
      )
      const result = yield* Effect.either(
        deletePerson(request("usr_8421"), s).pipe(Effect.provideService(HttpClient.HttpClient, fake))
      )
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.strictEqual(result.left._tag, "RetryableError")
      assert.strictEqual(result.left.status, 503)
      assert.strictEqual(result.left.body, "{\"error\":\"upstream down for [redacted] / [redacted]\"}")
      assert.deepStrictEqual(seen, [{
        url: "https://amplitude.com/api/2/deletions/users",
        auth: "Basic " + Buffer.from("api-key-0001:secret-0001").toString("base64")
      }])
    }))
})

describe("the sandbox's User Privacy API", () => {
  const raw = (sb: AmplitudeSandbox.Sandbox, body: string, contentType: string, auth?: string) =>
    Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      const response = yield* client.execute(
        HttpClientRequest.post(sb.deletionEndpoint).pipe(
          HttpClientRequest.bodyText(body, contentType),
          HttpClientRequest.setHeader("authorization", auth ?? AmplitudeUserPrivacy.basicAuth(sb.apiKey, sb.secretKey))
        )
      )
      return { status: response.status, body: (yield* response.json) as Record<string, unknown> }
    }).pipe(Effect.orDie)

  it.scopedLive("validates ids (at least one, at most 100), accepts form bodies, and needs Basic auth", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start({ deletionRateLimit: false })
      const none = yield* raw(sb, JSON.stringify({ requester: "x" }), "application/json")
      assert.deepStrictEqual(none, {
        status: 400,
        body: { error: "Request missing required field: user_ids or amplitude_ids" }
      })
      const many = Array.from({ length: 101 }, (_, i) => `u_${i}`)
      assert.strictEqual((yield* raw(sb, JSON.stringify({ user_ids: many }), "application/json")).status, 400)
      const form = yield* raw(sb, "user_ids=usr_1&user_ids=usr_2&requester=ops", "application/x-www-form-urlencoded")
      assert.strictEqual(form.status, 200)
      assert.strictEqual(form.body.status, "staging")
      const unauthorised = yield* raw(
        sb,
        JSON.stringify({ user_ids: ["usr_3"] }),
        "application/json",
        "Basic Zm9vOmJhcg=="
      )
      assert.strictEqual(unauthorised.status, 401)
      assert.deepStrictEqual((yield* sb.client.deletions()).map((d) => [d.user_ids, d.requester]), [[
        ["usr_1", "usr_2"],
        "ops"
      ]])
    })))
})
