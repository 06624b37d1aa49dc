import { assert, describe, it } from "@effect/vitest"
import { Destination } from "@tracklayer/core"
import { ConfigError, ConfigProvider, Effect, Either, Redacted, Schema } from "effect"
import pkg from "../package.json" with { type: "json" }
import { Amplitude } from "../src/index.js"

const decode = Schema.decodeUnknownEither(Amplitude.Settings)
const fromEnv = (env: Record<string, string>, options?: Amplitude.EnvOptions) =>
  Amplitude.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )

describe("Amplitude.Settings", () => {
  it("fills the documented defaults and redacts the key", () => {
    const result = decode({ apiKey: "key-123456" })
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    const s = result.right
    assert.strictEqual(s.endpoint, "https://api2.amplitude.com/2/httpapi")
    assert.strictEqual(s.minIdLength, 5)
    assert.strictEqual(s.maxEventsPerRequest, 2000)
    assert.deepStrictEqual(s.userPropertiesAllowlist, [
      "plan",
      "lifecycle_stage",
      "region",
      "signup_date",
      "workspace_size",
      "acquisition_channel",
      "ltv_band",
      "last_paid_at",
      "country"
    ])
    assert.deepStrictEqual(s.revenueTypes, { purchase: "purchase", subscription_renewed: "renewal", refund: "refund" })
    assert.strictEqual(Redacted.value(s.apiKey), "key-123456")
    assert.isFalse(String(s.apiKey).includes("key-123456"))
    assert.isFalse(JSON.stringify(s).includes("key-123456"))
  })

  it("refuses an empty key, a non-URL endpoint, minIdLength 0 and more than 2000 events per request", () => {
    assert.isTrue(Either.isLeft(decode({ apiKey: "" })))
    assert.isTrue(Either.isLeft(decode({})))
    assert.isTrue(Either.isLeft(decode({ apiKey: "k", endpoint: "api2.amplitude.com" })))
    assert.isTrue(Either.isLeft(decode({ apiKey: "k", endpoint: "ftp://api2.amplitude.com/2/httpapi" })))
    assert.isTrue(Either.isLeft(decode({ apiKey: "k", minIdLength: 0 })))
    assert.isTrue(Either.isLeft(decode({ apiKey: "k", minIdLength: 2.5 })))
    assert.isTrue(Either.isLeft(decode({ apiKey: "k", maxEventsPerRequest: 2001 })))
    assert.isTrue(Either.isRight(decode({ apiKey: "k", endpoint: Amplitude.EU_ENDPOINT, minIdLength: 1 })))
  })
})

describe("Amplitude.settingsFromEnv", () => {
  it.effect("reads AMPLITUDE_API_KEY and AMPLITUDE_ENDPOINT into the encoded settings", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        AMPLITUDE_API_KEY: " env-key-42 ",
        AMPLITUDE_ENDPOINT: "https://api.eu.amplitude.com/2/httpapi"
      }, { userPropertiesAllowlist: ["plan"], minIdLength: 3 })
      assert.deepStrictEqual(encoded, {
        apiKey: "env-key-42",
        endpoint: "https://api.eu.amplitude.com/2/httpapi",
        userPropertiesAllowlist: ["plan"],
        minIdLength: 3
      })
      const settings = yield* Schema.decodeUnknown(Amplitude.Settings)(encoded)
      assert.strictEqual(Redacted.value(settings.apiKey), "env-key-42")
      assert.strictEqual(settings.minIdLength, 3)
    }))

  it.effect("without AMPLITUDE_ENDPOINT the option (or the schema default) applies", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* fromEnv({ AMPLITUDE_API_KEY: "k1" }), { apiKey: "k1" })
      assert.deepStrictEqual(yield* fromEnv({ AMPLITUDE_API_KEY: "k1" }, { endpoint: Amplitude.EU_ENDPOINT }), {
        apiKey: "k1",
        endpoint: "https://api.eu.amplitude.com/2/httpapi"
      })
    }))

  it.effect("a namespace selects other variables (a second Amplitude project)", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({ AMPLITUDE_API_KEY: "us", AMPLITUDE_EU_API_KEY: "eu" }, {
        namespace: "AMPLITUDE_EU"
      })
      assert.deepStrictEqual(encoded, { apiKey: "eu" })
    }))

  it.effect("a missing key is a missing-data ConfigError at AMPLITUDE / API_KEY", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ AMPLITUDE_ENDPOINT: "https://example.com/2/httpapi" }))
      assert.isTrue(ConfigError.isMissingDataOnly(error))
      assert.isTrue(String(error).includes("AMPLITUDE.API_KEY"), String(error))
    }))
})

describe("Amplitude.plugin", () => {
  it("declares name, version (= package.json), plugin API, purposes and limits", () => {
    const p = Amplitude.plugin
    assert.strictEqual(p.name, pkg.name)
    assert.strictEqual(p.version, pkg.version)
    assert.strictEqual(p.pluginApi, "^1.2.0")
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, p.pluginApi))
    assert.deepStrictEqual(p.purposes, ["analytics"])
    assert.deepStrictEqual(p.limits, { maxEventsPerRequest: 2000, maxBytesPerRequest: 900_000 })
    assert.strictEqual(p.window, undefined)
    assert.strictEqual(Amplitude.AMPLITUDE_HTTP_API, "2")
    assert.strictEqual(Amplitude.DEFAULT_ENDPOINT, "https://api2.amplitude.com/2/httpapi")
    assert.strictEqual(Amplitude.EU_ENDPOINT, "https://api.eu.amplitude.com/2/httpapi")
  })

  it("destination() builds an instance with id `amplitude` reading settings from the environment", () => {
    const d = Amplitude.destination()
    assert.strictEqual(d.id, "amplitude")
    assert.strictEqual(d.plugin, Amplitude.plugin)
    assert.isFalse("events" in d)
    assert.isFalse("startFrom" in d)
    const custom = Amplitude.destination({ id: "amplitude-eu", events: ["purchase"], startFrom: "beginning" })
    assert.deepStrictEqual([custom.id, custom.events, custom.startFrom], ["amplitude-eu", ["purchase"], "beginning"])
  })
})

describe("Amplitude response helpers", () => {
  const now = Date.UTC(2026, 0, 1, 0, 0, 0)

  it("parseRetryAfter reads delay-seconds and HTTP-dates", () => {
    assert.strictEqual(Amplitude.parseRetryAfter("120", now), 120_000)
    assert.strictEqual(Amplitude.parseRetryAfter(" 1.5 ", now), 1500)
    assert.strictEqual(Amplitude.parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000)
    assert.strictEqual(Amplitude.parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now), 0)
    assert.strictEqual(Amplitude.parseRetryAfter("soon", now), undefined)
    assert.strictEqual(Amplitude.parseRetryAfter(undefined, now), undefined)
  })

  it("redact removes the key anywhere and whatever follows `Invalid API key:`", () => {
    assert.strictEqual(
      Amplitude.redact("{\"code\":400,\"error\":\"Invalid API key: abc123secret\"}", "abc123secret"),
      "{\"code\":400,\"error\":\"Invalid API key: [redacted]\"}"
    )
    assert.strictEqual(
      Amplitude.redact("{\"error\":\"Invalid API key: someone-elses-key\"}", "mine"),
      "{\"error\":\"Invalid API key: [redacted]\"}"
    )
    assert.strictEqual(Amplitude.redact("echo k3y-xyz and k3y-xyz", "k3y-xyz"), "echo [redacted] and [redacted]")
  })

  it("excerpt redacts first, then cuts to 2000 characters", () => {
    const key = "k".repeat(10) + "-tail"
    const text = "a".repeat(1995) + key + "b".repeat(100)
    const out = Amplitude.excerpt(text, key)
    assert.strictEqual(out.length, 2000)
    assert.strictEqual(out, "a".repeat(1995) + "[reda")
    assert.isFalse(out.includes("kkkkk"))
  })
})
