/**
 * Trait sync through Amplitude's Identify API: the pure identification mapping, `Amplitude.plugin.userState`
 * against the sandbox over HTTP, the `traits` option of `destination()`, and the sandbox's own `POST /identify`.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Destination } from "@tracklayer/core"
import { ConfigProvider, Effect, Either, Schema, type Scope } from "effect"
import { Amplitude, AmplitudeSandbox } from "../src/index.js"
import { deliveryEvent, settings } from "./fixtures.js"

const KEY = AmplitudeSandbox.SANDBOX_API_KEY

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const userState = Amplitude.plugin.userState!

/** One trait update (nothing set or unset unless given). */
const update = (fields: Partial<Destination.UserStateUpdate>): Destination.UserStateUpdate => ({
  position: "1",
  set: {},
  unset: [],
  ...fields
})

/** Starts a sandbox in the test's scope and decodes settings pointing at it. */
const sandbox = (options: AmplitudeSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  AmplitudeSandbox.start(options).pipe(
    Effect.map((sb) => ({ sb, settings: settings({ apiKey: sb.apiKey, endpoint: sb.endpoint, ...extra }) }))
  )

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const identifications = (stored: ReadonlyArray<AmplitudeSandbox.StoredIdentify>) => stored.map((s) => s.identification)

/** `{ a: { a: … } }`, `depth` levels. */
const nested = (depth: number): unknown => (depth === 0 ? "leaf" : { a: nested(depth - 1) })

describe("Amplitude identify mapping", () => {
  it("the identify URL comes from the endpoint setting: US, EU, sandbox, proxies", () => {
    assert.strictEqual(Amplitude.identifyEndpoint(Amplitude.DEFAULT_ENDPOINT), "https://api2.amplitude.com/identify")
    assert.strictEqual(Amplitude.identifyEndpoint(Amplitude.EU_ENDPOINT), "https://api.eu.amplitude.com/identify")
    assert.strictEqual(Amplitude.DEFAULT_IDENTIFY_ENDPOINT, "https://api2.amplitude.com/identify")
    assert.strictEqual(Amplitude.EU_IDENTIFY_ENDPOINT, "https://api.eu.amplitude.com/identify")
    assert.strictEqual(Amplitude.identifyEndpoint("http://127.0.0.1:4010/2/httpapi"), "http://127.0.0.1:4010/identify")
    assert.strictEqual(
      Amplitude.identifyEndpoint("https://proxy.example.com/amplitude/2/httpapi/"),
      "https://proxy.example.com/amplitude/identify"
    )
    assert.strictEqual(
      Amplitude.identifyEndpoint("https://proxy.example.com/events"),
      "https://proxy.example.com/identify"
    )
  })

  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly input: Destination.UserStateUpdate
    readonly settings?: Record<string, unknown>
    readonly expected: Either.Either<Amplitude.AmplitudeIdentification, string>
  }> = [
    {
      scenario: "set and unset: $set with the values, $unset with \"-\"",
      input: update({ userId: "usr_8421", set: { plan: "pro", seats: 12 }, unset: ["trial_ends_at"] }),
      expected: Either.right({
        user_id: "usr_8421",
        user_properties: { $set: { plan: "pro", seats: 12 }, $unset: { trial_ends_at: "-" } }
      })
    },
    {
      scenario: "only set: no $unset operation",
      input: update({ userId: "usr_8421", deviceId: "web_91f3", set: { meta_eligible: true } }),
      expected: Either.right({
        user_id: "usr_8421",
        device_id: "web_91f3",
        user_properties: { $set: { meta_eligible: true } }
      })
    },
    {
      scenario: "only unset, device only: no $set operation",
      input: update({ deviceId: "web_91f3", unset: ["plan", "region"] }),
      expected: Either.right({ device_id: "web_91f3", user_properties: { $unset: { plan: "-", region: "-" } } })
    },
    {
      scenario: "a null value is an unset; a key both set and unset is set (the newer value)",
      input: update({ userId: "usr_8421", set: { plan: "team", region: null }, unset: ["plan"] }),
      expected: Either.right({
        user_id: "usr_8421",
        user_properties: { $set: { plan: "team" }, $unset: { region: "-" } }
      })
    },
    {
      scenario: "strings cut to 1024 characters, nested ones too",
      input: update({ userId: "usr_8421", set: { note: "n".repeat(2000), tags: ["t".repeat(1030)] } }),
      expected: Either.right({
        user_id: "usr_8421",
        user_properties: { $set: { note: "n".repeat(1024), tags: ["t".repeat(1024)] } }
      })
    },
    {
      scenario: "a refused user id is dropped; the device id remains",
      input: update({ userId: "Anonymous", deviceId: "web_91f3", set: { plan: "pro" } }),
      expected: Either.right({ device_id: "web_91f3", user_properties: { $set: { plan: "pro" } } })
    },
    {
      scenario: "an id shorter than minIdLength is dropped",
      input: update({ userId: "u_42", deviceId: "web_91f3", set: { plan: "pro" } }),
      expected: Either.right({ device_id: "web_91f3", user_properties: { $set: { plan: "pro" } } })
    },
    {
      scenario: "a lower minIdLength keeps a short id",
      input: update({ userId: "u_42", set: { plan: "pro" } }),
      settings: { minIdLength: 3 },
      expected: Either.right({ user_id: "u_42", user_properties: { $set: { plan: "pro" } } })
    },
    {
      scenario: "nothing to change: no user_properties at all",
      input: update({ userId: "usr_8421" }),
      expected: Either.right({ user_id: "usr_8421" })
    },
    {
      scenario: "no usable id: skipped as invalid, naming both",
      input: update({ userId: "null", set: { plan: "pro" } }),
      expected: Either.left(
        "Amplitude needs a valid user_id or device_id: user_id \"null\" is refused by Amplitude; device_id absent"
      )
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      const result = Amplitude.identification(c.input, settings(c.settings))
      assert.deepStrictEqual(
        Either.mapLeft(result, (skip) => `${skip.reason}: ${skip.detail}`),
        Either.mapLeft(c.expected, (detail) => `invalid: ${detail}`)
      )
    })
  }

  it("the form body: api_key, identification as a JSON array, options only for ids under 5 characters", () => {
    assert.strictEqual(
      Amplitude.identifyForm("k-1", [{
        user_id: "usr_8421",
        user_properties: { $set: { plan: "pro" }, $unset: { trial: "-" } }
      }]),
      "api_key=k-1&identification=%5B%7B%22user_id%22%3A%22usr_8421%22%2C%22user_properties%22%3A%7B%22%24set%22" +
        "%3A%7B%22plan%22%3A%22pro%22%7D%2C%22%24unset%22%3A%7B%22trial%22%3A%22-%22%7D%7D%7D%5D"
    )
    assert.strictEqual(
      Amplitude.identifyForm("k-1", [{ user_id: "u_42", user_properties: { $set: { plan: "pro team" } } }]),
      "api_key=k-1&identification=%5B%7B%22user_id%22%3A%22u_42%22%2C%22user_properties%22%3A%7B%22%24set%22%3A" +
        "%7B%22plan%22%3A%22pro+team%22%7D%7D%7D%5D&options=%7B%22min_id_length%22%3A4%7D"
    )
  })

  it("the plugin offers userState (plugin API ^1.2.0): 1000 identifications and 300,000 JSON bytes per request", () => {
    assert.strictEqual(Amplitude.plugin.pluginApi, "^1.2.0")
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, Amplitude.plugin.pluginApi))
    assert.deepStrictEqual(userState.limits, { maxEventsPerRequest: 1000, maxBytesPerRequest: 300_000 })
    assert.strictEqual(userState.send, Amplitude.sendUserState)
    assert.strictEqual(Amplitude.IDENTIFY_THROTTLE_PAUSE_MS, 15_000)
  })
})

describe("Amplitude.plugin.userState against the sandbox", () => {
  it.scopedLive("200: one request, every update Accepted; the sandbox saw the exact identifications and applied them", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* userState.send([
        update({ userId: "usr_8421", set: { plan: "pro", seats: 12 }, unset: ["trial_ends_at"] }),
        update({ deviceId: "web_91f3", set: { region: "emea" } }),
        update({ userId: "usr_5150", deviceId: "web_77aa", set: { meta_eligible: true } })
      ], s)
      assert.deepStrictEqual(outcomes, [
        Destination.Accepted({ status: 200, body: "success" }),
        Destination.Accepted({ status: 200, body: "success" }),
        Destination.Accepted({ status: 200, body: "success" })
      ])
      const stored = yield* sb.client.identifies()
      assert.deepStrictEqual(stored.map((x) => [x.seq, x.applied]), [[1, true], [2, true], [3, true]])
      assert.deepStrictEqual(identifications(stored), [
        { user_id: "usr_8421", user_properties: { $set: { plan: "pro", seats: 12 }, $unset: { trial_ends_at: "-" } } },
        { device_id: "web_91f3", user_properties: { $set: { region: "emea" } } },
        { user_id: "usr_5150", device_id: "web_77aa", user_properties: { $set: { meta_eligible: true } } }
      ])
      // One request: every identification carries the same arrival time.
      assert.strictEqual(new Set(stored.map((x) => x.received_at)).size, 1)
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), { plan: "pro", seats: 12 })

      // A later change: $unset removes, $set overwrites.
      const later = yield* userState.send([update({ userId: "usr_8421", set: { seats: 15 }, unset: ["plan"] })], s)
      assert.deepStrictEqual(tags(later), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), { seats: 15 })
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_5150"), { meta_eligible: true })
      assert.deepStrictEqual(identifications(yield* sb.client.identifies())[3], {
        user_id: "usr_8421",
        user_properties: { $set: { seats: 15 }, $unset: { plan: "-" } }
      })
    })))

  it.scopedLive("no usable id → Rejected and not sent; nothing to change → Accepted and not sent; the rest sent", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* userState.send([
        update({ userId: "undefined", set: { plan: "pro" } }),
        update({ userId: "usr_8421" }),
        update({ userId: "usr_5150", set: { plan: "team" } })
      ], s)
      assert.deepStrictEqual(outcomes, [
        Destination.Rejected(
          "Amplitude needs a valid user_id or device_id: user_id \"undefined\" is refused by Amplitude; device_id absent"
        ),
        Destination.Accepted(),
        Destination.Accepted({ status: 200, body: "success" })
      ])
      assert.deepStrictEqual(identifications(yield* sb.client.identifies()), [
        { user_id: "usr_5150", user_properties: { $set: { plan: "team" } } }
      ])
      // A batch with nothing to send makes no request.
      const none = yield* userState.send([update({ deviceId: "abc", set: { plan: "pro" } })], s)
      assert.deepStrictEqual(tags(none), ["Rejected"])
      assert.strictEqual((yield* sb.client.identifies()).length, 1)
      assert.deepStrictEqual(yield* userState.send([], s), [])
    })))

  it.scopedLive("ids under 5 characters (minIdLength lowered) travel with options.min_id_length and are accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { minIdLength: 3 })
      const outcomes = yield* userState.send([update({ userId: "u_42", set: { plan: "pro" } })], s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.userProperties("u_42"), { plan: "pro" })
    })))

  it.scopedLive("a wrong api key is AuthFailedError (400 invalid_api_key); the key never appears in it", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { apiKey: "wrong-key-0001" })
      const result = yield* Effect.either(userState.send([update({ userId: "usr_8421", set: { plan: "pro" } })], s))
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.strictEqual(result.left._tag, "AuthFailedError")
      assert.strictEqual(result.left.message, "Amplitude refused the api key (400): invalid_api_key")
      assert.deepStrictEqual([result.left.status, result.left.body], [400, "invalid_api_key"])
      assert.notInclude(JSON.stringify(result.left), "wrong-key-0001")
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
    })))

  it.scopedLive("a refused identification (nesting over 40) is PayloadInvalidError with Amplitude's text", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const result = yield* Effect.either(
        userState.send([
          update({ userId: "usr_5150", set: { plan: "team" } }),
          update({ userId: "usr_8421", set: { deep: nested(45) } })
        ], s)
      )
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.strictEqual(result.left._tag, "PayloadInvalidError")
      const text = "invalid_identification: identification 1: user_properties holds a string over 1024 characters " +
        "or nests over 40"
      assert.strictEqual(result.left.message, `Amplitude refused the identify request (400): ${text}`)
      assert.deepStrictEqual([result.left.status, result.left.body], [400, text])
      // The whole request was refused: nothing applied.
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_5150"), {})
    })))

  it.scopedLive("429 → RetryableError after 15 s, or after Retry-After; nothing applied", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = [update({ userId: "usr_8421", set: { plan: "pro" } })]
      yield* sb.client.setFaults({ target: "identify", status: 429 })
      const first = yield* Effect.either(userState.send(batch, s))
      assert.isTrue(Either.isLeft(first))
      if (Either.isRight(first)) return
      assert.strictEqual(first.left._tag, "RetryableError")
      if (first.left._tag !== "RetryableError") return
      assert.strictEqual(first.left.retryAfterMs, 15_000)
      assert.strictEqual(first.left.status, 429)
      assert.deepStrictEqual(JSON.parse(first.left.body!), {
        code: 429,
        error: "Too many requests for some devices and users",
        eps_threshold: 30,
        throttled_devices: {},
        throttled_users: { usr_8421: 1 },
        throttled_events: [0]
      })
      assert.strictEqual(
        first.left.message,
        "Amplitude throttled the identify request (429): Too many requests for some devices and users"
      )
      yield* sb.client.setFaults({ target: "identify", status: 429, retryAfter: 7 })
      const second = yield* Effect.either(userState.send(batch, s))
      assert.deepStrictEqual(
        Either.isLeft(second) && second.left._tag === "RetryableError" ? second.left.retryAfterMs : undefined,
        7000
      )
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
      // The fault is spent: the retry goes through.
      assert.deepStrictEqual(tags(yield* userState.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), { plan: "pro" })
    })))

  it.scopedLive("5xx, an outage and a dead endpoint are RetryableError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = [update({ userId: "usr_8421", set: { plan: "pro" } })]
      const failure = (faults: AmplitudeSandbox.Faults) =>
        sb.client.setFaults(faults).pipe(
          Effect.zipRight(Effect.flip(userState.send(batch, s))),
          Effect.map((e) => [e._tag, e.status, e._tag === "RetryableError" ? e.retryAfterMs : undefined])
        )
      assert.deepStrictEqual(yield* failure({ target: "identify", status: 500 }), ["RetryableError", 500, undefined])
      assert.deepStrictEqual(yield* failure({ target: "identify", status: 502, retryAfter: 3 }), [
        "RetryableError",
        502,
        3000
      ])
      assert.deepStrictEqual(yield* failure({ down: true }), ["RetryableError", 503, undefined])
      yield* sb.client.clearFaults()
      const dead = yield* Effect.scoped(sandbox()).pipe(Effect.map((x) => x.settings))
      const error = yield* Effect.flip(userState.send(batch, dead))
      assert.strictEqual(error._tag, "RetryableError")
      assert.match(error.message, /^Amplitude Identify API request failed: /)
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
    })))

  it.scopedLive("a wrong endpoint base (404) is AuthFailedError naming the identify URL", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const s = settings({ apiKey: sb.apiKey, endpoint: `${sb.url}/nested/2/httpapi` })
      const error = yield* Effect.flip(userState.send([update({ userId: "usr_8421", set: { plan: "pro" } })], s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(
        error.message,
        `Amplitude Identify API answered 404: check the endpoint setting (identify URL ${sb.url}/nested/identify)`
      )
      assert.strictEqual(error.status, 404)
    })))

  it.scopedLive("with a rejected update already in the batch, a 503 becomes per-update Retry (no error)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ target: "identify", status: 503 })
      const outcomes = yield* userState.send([
        update({ userId: "-1", set: { plan: "pro" } }),
        update({ userId: "usr_8421", set: { plan: "pro" } })
      ], s)
      assert.deepStrictEqual(tags(outcomes), ["Rejected", "Retry"])
      const retry = outcomes[1]!
      assert.deepStrictEqual(
        retry._tag === "Retry" ? [retry.reason, retry.response?.status] : undefined,
        ["Amplitude Identify API answered 503: Service Unavailable", 503]
      )
    })))

  it.scopedLive("1001 updates: two requests of 1000 and 1; a 429 on the second only retries that update", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = Array.from(
        { length: 1001 },
        (_, i) => update({ userId: `usr_${String(i).padStart(4, "0")}`, set: { rank: i } })
      )
      yield* sb.client.setFaults({ target: "identify", status: 429, skip: 1 })
      const outcomes = yield* userState.send(batch, s)
      assert.strictEqual(outcomes.filter((o) => o._tag === "Accepted").length, 1000)
      const last = outcomes[1000]!
      assert.deepStrictEqual(last._tag === "Retry" ? [last._tag, last.afterMs, last.response?.status] : last, [
        "Retry",
        15_000,
        429
      ])
      const stored = yield* sb.client.identifies()
      assert.strictEqual(stored.length, 1000)
      assert.deepStrictEqual(stored[999]!.identification, {
        user_id: "usr_0999",
        user_properties: { $set: { rank: 999 } }
      })
    })))

  it.scopedLive("413 splits the request in halves; one identification still too large is Rejected", () =>
    run(Effect.gen(function*() {
      // Bodies: updates 0–2 together are 684 bytes, update 3 alone 260, update 4 alone 860.
      const { sb, settings: s } = yield* sandbox({ maxBodyBytes: 700 })
      const batch = [0, 1, 2, 3, 4].map((i) =>
        update({ userId: `usr_000${i}`, set: { note: "x".repeat(i === 4 ? 700 : 100) } })
      )
      const outcomes = yield* userState.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted", "Accepted", "Rejected"])
      const rejected = outcomes[4]!
      assert.deepStrictEqual(rejected._tag === "Rejected" ? [rejected.reason, rejected.response?.status] : rejected, [
        "payload too large (413)",
        413
      ])
      const stored = yield* sb.client.identifies()
      assert.deepStrictEqual(stored.map((x) => x.identification.user_id), [
        "usr_0000",
        "usr_0001",
        "usr_0002",
        "usr_0003"
      ])
      // Updates 0–2 arrived in one request, update 3 in another.
      assert.strictEqual(new Set(stored.slice(0, 3).map((x) => x.received_at)).size, 1)
    })))
})

describe("Amplitude.destination({ traits })", () => {
  const read = (config: Amplitude.AmplitudeInstance["settings"]) =>
    Effect.runSync(
      config.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["AMPLITUDE_API_KEY", "k-000001"]]), { pathDelim: "_" })
        )
      )
    )
  const purchase = deliveryEvent({
    name: "purchase",
    user_id: "usr_8421",
    properties: { value: 129, currency: "USD" },
    user_properties: { plan: "pro", country: "DE" }
  })

  it("traits are passed through on the instance; without them the instance has none", () => {
    const traits = { sync: ["plan", "lifecycle_stage"] }
    const synced = Amplitude.destination({ id: "amplitude-sync", traits, startFrom: "beginning" })
    assert.strictEqual(synced.traits, traits)
    assert.deepStrictEqual([synced.id, synced.startFrom, synced.plugin], [
      "amplitude-sync",
      "beginning",
      Amplitude.plugin
    ])
    assert.isFalse("traits" in Amplitude.destination())
  })

  it("with traits the settings force userPropertiesAllowlist to [] and events carry no user_properties", () => {
    const options = { userPropertiesAllowlist: ["plan", "country"] }
    const synced = read(
      Amplitude.destination({ traits: { sync: ["plan"] }, settings: Amplitude.settingsFromEnv(options) }).settings
    )
    assert.deepStrictEqual(synced, { apiKey: "k-000001", userPropertiesAllowlist: [] })
    const s = Schema.decodeUnknownSync(Amplitude.Settings)(synced)
    const payload = Either.getOrThrow(Amplitude.transform(purchase, s))
    assert.isFalse("user_properties" in payload)
    assert.deepStrictEqual(payload.event_properties, { value: 129, currency: "USD" })

    // The same settings without traits keep the allowlist, and the event keeps its user_properties.
    const plain = read(Amplitude.destination({ settings: Amplitude.settingsFromEnv(options) }).settings)
    assert.deepStrictEqual(plain, { apiKey: "k-000001", userPropertiesAllowlist: ["plan", "country"] })
    const kept = Either.getOrThrow(Amplitude.transform(purchase, Schema.decodeUnknownSync(Amplitude.Settings)(plain)))
    assert.deepStrictEqual(kept.user_properties, { plan: "pro", country: "DE" })
  })

  it("an empty allowlist sends no user_properties even when the event has some", () => {
    const payload = Either.getOrThrow(Amplitude.transform(purchase, settings({ userPropertiesAllowlist: [] })))
    assert.isFalse("user_properties" in payload)
  })
})

interface Answer {
  readonly status: number
  readonly contentType: string | undefined
  readonly body: string
}

/** Sends a raw request to the sandbox's Identify API. */
const raw = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(request)
    return {
      status: response.status,
      contentType: response.headers["content-type"],
      body: yield* response.text
    } satisfies Answer
  }).pipe(Effect.orDie)

/** POSTs form fields (form-encoded unless another content type is given). */
const postForm = (
  sb: AmplitudeSandbox.Sandbox,
  fields: Record<string, string>,
  contentType = "application/x-www-form-urlencoded"
) =>
  raw(
    HttpClientRequest.post(sb.identifyEndpoint).pipe(
      HttpClientRequest.bodyText(new URLSearchParams(fields).toString(), contentType)
    )
  )

/** POSTs an identification (JSON-encoded unless a string) with the sandbox key. */
const identify = (sb: AmplitudeSandbox.Sandbox, identification: unknown, extra: Record<string, string> = {}) =>
  postForm(sb, {
    api_key: KEY,
    identification: typeof identification === "string" ? identification : JSON.stringify(identification),
    ...extra
  }).pipe(Effect.map((a) => [a.status, a.body] as const))

describe("the sandbox's Identify API", () => {
  it.scopedLive("200 `success` (text); plain properties are $set; every documented operation is applied", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      assert.strictEqual(sb.identifyEndpoint, `${sb.url}/identify`)
      const first = yield* postForm(sb, {
        api_key: KEY,
        identification: JSON.stringify({ user_id: "usr_8421", user_properties: { plan: "pro", tags: ["a"] } })
      })
      assert.deepStrictEqual(first, { status: 200, contentType: "text/plain; charset=utf-8", body: "success" })
      assert.deepStrictEqual(
        yield* identify(sb, [{
          user_id: "usr_8421",
          user_properties: {
            $setOnce: { plan: "free", first_seen: "2026-04-24" },
            $add: { logins: 2, credits: "3" },
            $append: { tags: "b" },
            $prepend: { history: ["x", "y"] },
            $postInsert: { tags: ["a", "c"] },
            $preInsert: { tags: "z" }
          }
        }, {
          user_id: "usr_8421",
          user_properties: { $add: { logins: 1 }, $remove: { tags: "a" }, $unset: { plan: "-" } }
        }]),
        [200, "success"]
      )
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), {
        tags: ["z", "b", "c"],
        first_seen: "2026-04-24",
        logins: 3,
        credits: 3,
        history: ["x", "y"]
      })
      assert.deepStrictEqual((yield* sb.client.identifies()).map((x) => x.seq), [1, 2, 3])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_unknown"), {})
    })))

  it.scopedLive("api key, identification and options are validated; a refused request applies nothing", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const ok = { user_id: "usr_8421", user_properties: { $set: { plan: "pro" } } }
      assert.deepStrictEqual(
        (yield* postForm(sb, { identification: JSON.stringify(ok) })).body,
        "invalid_api_key"
      )
      assert.deepStrictEqual(
        yield* postForm(sb, { api_key: "not-the-key", identification: JSON.stringify(ok) }).pipe(
          Effect.map((a) => [a.status, a.body])
        ),
        [400, "invalid_api_key"]
      )
      assert.deepStrictEqual((yield* postForm(sb, { api_key: KEY })).body, "missing_event")
      for (const broken of ["{", "[]", "5", "\"text\""]) {
        assert.deepStrictEqual(yield* identify(sb, broken), [400, "missing_event"], broken)
      }
      const refused = (i: number, problem: string) =>
        [400, `invalid_identification: identification ${i}: ${problem}`] as const
      assert.deepStrictEqual(
        yield* identify(sb, [ok, { user_properties: { $set: { plan: "pro" } } }]),
        refused(1, "user_id or device_id required")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "usr_8421", user_properties: { $set: { plan: "pro" }, seats: 3 } }),
        refused(0, "user_properties mixes operations ($set) with plain properties (seats)")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "usr_8421", user_properties: { $increment: { seats: 1 } } }),
        refused(0, "unknown user property operation $increment")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "usr_8421", user_properties: { $unset: ["plan"] } }),
        refused(0, "$unset must be an object")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "NULL", user_properties: { plan: "pro" } }),
        refused(0, "user_id \"NULL\" is refused")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "usr_8421", user_properties: { note: "x".repeat(1025) } }),
        refused(0, "user_properties holds a string over 1024 characters or nests over 40")
      )
      // Ids under min_id_length (default 5) are removed, as the HTTP API does: refused when no id is left.
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "abcd", user_properties: { plan: "pro" } }),
        refused(0, "user_id shorter than min_id_length 5, and no other id")
      )
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "abcd", user_properties: { plan: "x" } }, { options: "{\"min_id_length\":0}" }),
        [400, "invalid_options: options must be a JSON object; min_id_length a positive integer"]
      )
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), {})

      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "abcd", user_properties: { plan: "team" } }, {
          options: "{\"min_id_length\":4}"
        }),
        [200, "success"]
      )
      assert.deepStrictEqual(yield* sb.client.userProperties("abcd"), { plan: "team" })
      // A short user id next to a valid device id: the properties go to the device.
      assert.deepStrictEqual(
        yield* identify(sb, { user_id: "efgh", device_id: "web_91f3", user_properties: { plan: "pro" } }),
        [200, "success"]
      )
      const device = yield* raw(HttpClientRequest.get(`${sb.url}/__sandbox/user-properties?device_id=web_91f3`))
      assert.deepStrictEqual(JSON.parse(device.body), {
        user_id: null,
        device_id: "web_91f3",
        user_properties: { plan: "pro" }
      })
    })))

  it.scopedLive("form-data, GET query strings and JSON bodies: only form fields are read", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const identification = JSON.stringify({ user_id: "usr_8421", user_properties: { plan: "pro" } })
      const boundary = "tlboundary42"
      const multipart = [
        `--${boundary}`,
        "Content-Disposition: form-data; name=\"api_key\"",
        "",
        KEY,
        `--${boundary}`,
        "Content-Disposition: form-data; name=\"identification\"",
        "",
        identification,
        `--${boundary}--`,
        ""
      ].join("\r\n")
      const viaMultipart = yield* raw(
        HttpClientRequest.post(sb.identifyEndpoint).pipe(
          HttpClientRequest.bodyText(multipart, `multipart/form-data; boundary=${boundary}`)
        )
      )
      assert.deepStrictEqual([viaMultipart.status, viaMultipart.body], [200, "success"])
      const query = new URLSearchParams({
        api_key: KEY,
        identification: JSON.stringify({ user_id: "usr_5150", user_properties: { plan: "team" } })
      })
      const viaGet = yield* raw(HttpClientRequest.get(`${sb.identifyEndpoint}?${query}`))
      assert.deepStrictEqual([viaGet.status, viaGet.body], [200, "success"])
      const viaJson = yield* raw(
        HttpClientRequest.post(sb.identifyEndpoint).pipe(
          HttpClientRequest.bodyText(JSON.stringify({ api_key: KEY, identification }), "application/json")
        )
      )
      assert.deepStrictEqual([viaJson.status, viaJson.body], [400, "invalid_api_key"])
      const viaPut = yield* raw(HttpClientRequest.put(sb.identifyEndpoint))
      assert.strictEqual(viaPut.status, 405)
      assert.deepStrictEqual(
        (yield* sb.client.identifies()).map((x) => x.identification.user_id),
        ["usr_8421", "usr_5150"]
      )
    })))

  it.scopedLive("413 for more than 2000 identifications or a body of 1,000,000 bytes or more", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const many = (n: number) =>
        Array.from({ length: n }, (_, i) => ({ user_id: `usr_${i}_0000`, user_properties: { $set: { rank: i } } }))
      const tooMany = yield* postForm(sb, { api_key: KEY, identification: JSON.stringify(many(2001)) })
      assert.deepStrictEqual([tooMany.status, JSON.parse(tooMany.body)], [413, {
        code: 413,
        error: "Payload too large"
      }])
      assert.deepStrictEqual(yield* identify(sb, many(2000)), [200, "success"])
      const big = [{ user_id: "usr_8421", user_properties: { $set: { blob: Array(1000).fill("y".repeat(1000)) } } }]
      assert.strictEqual((yield* identify(sb, big))[0], 413)
      assert.strictEqual((yield* sb.client.identifies()).length, 2000)
    })))

  it.scopedLive("over propertyUpdatesPerHour for a user, updates are dropped silently (200, applied: false)", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start({ propertyUpdatesPerHour: 2 })
      const set = (n: number) => ({ user_id: "usr_8421", user_properties: { $set: { step: n } } })
      assert.deepStrictEqual(yield* identify(sb, [set(1), set(2), set(3)]), [200, "success"])
      assert.deepStrictEqual((yield* sb.client.identifies()).map((x) => x.applied), [true, true, false])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), { step: 2 })
      yield* sb.client.configure({ propertyUpdatesPerHour: 1800 })
      assert.deepStrictEqual(yield* identify(sb, [set(4)]), [200, "success"])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), { step: 4 })
    })))

  it.scopedLive("faults target the Identify API apart from the HTTP API; down stops both; reset forgets identifies", () =>
    run(Effect.gen(function*() {
      const sb = yield* AmplitudeSandbox.start()
      const one = { user_id: "usr_8421", device_id: "web_91f3", user_properties: { $set: { plan: "pro" } } }
      const ingest = () =>
        raw(
          HttpClientRequest.post(sb.endpoint).pipe(
            HttpClientRequest.bodyUnsafeJson({
              api_key: KEY,
              events: [{ event_type: "view_pricing", user_id: "usr_8421", time: 1777017600000 }]
            })
          )
        ).pipe(Effect.map((a) => a.status))
      yield* sb.client.setFaults({ target: "identify", status: 429, retryAfter: 15 })
      assert.strictEqual(yield* ingest(), 200)
      const throttled = yield* postForm(sb, { api_key: KEY, identification: JSON.stringify([one]) })
      assert.strictEqual(throttled.status, 429)
      assert.deepStrictEqual(JSON.parse(throttled.body), {
        code: 429,
        error: "Too many requests for some devices and users",
        eps_threshold: 30,
        throttled_devices: { web_91f3: 1 },
        throttled_users: { usr_8421: 1 },
        throttled_events: [0]
      })
      assert.deepStrictEqual(yield* identify(sb, [one]), [200, "success"])
      yield* sb.client.setFaults({ down: true })
      assert.deepStrictEqual(yield* identify(sb, [one]), [
        503,
        JSON.stringify({ code: 503, error: "Service Unavailable" })
      ])
      assert.strictEqual(yield* ingest(), 503)
      const badTarget = yield* raw(
        HttpClientRequest.post(`${sb.url}/__sandbox/faults`).pipe(
          HttpClientRequest.bodyUnsafeJson({ target: "batch", status: 500 })
        )
      )
      assert.strictEqual(badTarget.status, 400)
      assert.strictEqual((yield* sb.client.identifies()).length, 1)
      yield* sb.client.reset()
      assert.deepStrictEqual(yield* sb.client.identifies(), [])
      assert.deepStrictEqual(yield* sb.client.userProperties("usr_8421"), {})
      assert.deepStrictEqual(yield* identify(sb, [one]), [200, "success"])
    })))
})
