import { assert, describe, it } from "@effect/vitest"
import { Destination } from "@tracklayer/core"
import { ConfigError, ConfigProvider, Duration, Effect, Either, Redacted, Schema } from "effect"
import pkg from "../package.json" with { type: "json" }
import { MetaCapi } from "../src/index.js"

const decode = Schema.decodeUnknownEither(MetaCapi.Settings)
const fromEnv = (env: Record<string, string>, options?: MetaCapi.EnvOptions) =>
  MetaCapi.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )

describe("MetaCapi.Settings", () => {
  it("fills the documented defaults and redacts the token", () => {
    const s = Either.getOrThrow(decode({ pixelId: "1234567890123456", accessToken: "EAAB-secret-1" }))
    assert.strictEqual(s.endpoint, "https://graph.facebook.com")
    assert.deepStrictEqual(s.eventMapping, {
      purchase: "Purchase",
      sign_up: "CompleteRegistration",
      start_trial: "StartTrial",
      qualified_lead: "Lead",
      subscription_renewed: "Subscribe"
    })
    assert.deepStrictEqual(s.actionSources, {})
    assert.deepStrictEqual(s.lduRegions, [])
    assert.strictEqual(s.lduWhenLocationUnknown, false)
    assert.strictEqual(s.maxEventsPerRequest, 1000)
    assert.strictEqual(s.testEventCode, undefined)
    assert.strictEqual(Redacted.value(s.accessToken), "EAAB-secret-1")
    assert.isFalse(String(s.accessToken).includes("EAAB-secret-1"))
    assert.isFalse(JSON.stringify(s).includes("EAAB-secret-1"))
    assert.strictEqual(MetaCapi.eventsUrl(s), "https://graph.facebook.com/v27.0/1234567890123456/events")
  })

  it("refuses a non-numeric pixel, an empty token, a bad action source, a bad LDU region, > 1000 events", () => {
    const ok = { pixelId: "1", accessToken: "t" }
    assert.isTrue(Either.isRight(decode(ok)))
    assert.isTrue(Either.isLeft(decode({ ...ok, pixelId: "px_1" })))
    assert.isTrue(Either.isLeft(decode({ ...ok, accessToken: "" })))
    assert.isTrue(Either.isLeft(decode({ ...ok, actionSources: { purchase: "web" } })))
    assert.isTrue(Either.isLeft(decode({ ...ok, lduRegions: [{ country: "USA" }] })))
    assert.isTrue(Either.isLeft(decode({ ...ok, lduRegions: [{ country: "US", state: "California" }] })))
    assert.isTrue(Either.isLeft(decode({ ...ok, maxEventsPerRequest: 1001 })))
    assert.isTrue(Either.isLeft(decode({ ...ok, endpoint: "graph.facebook.com" })))
  })
})

describe("MetaCapi.settingsFromEnv", () => {
  it.effect("reads META_ACCESS_TOKEN, META_PIXEL_ID, META_ENDPOINT, META_TEST_EVENT_CODE", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        META_ACCESS_TOKEN: " EAAB-env ",
        META_PIXEL_ID: "1234567890123456",
        META_ENDPOINT: "http://127.0.0.1:4010",
        META_TEST_EVENT_CODE: "TEST77"
      }, { lduRegions: [{ country: "US", state: "CA" }] })
      assert.deepStrictEqual(encoded, {
        lduRegions: [{ country: "US", state: "CA" }],
        pixelId: "1234567890123456",
        accessToken: "EAAB-env",
        endpoint: "http://127.0.0.1:4010",
        testEventCode: "TEST77"
      })
      const s = yield* Schema.decodeUnknown(MetaCapi.Settings)(encoded)
      assert.strictEqual(MetaCapi.eventsUrl(s), "http://127.0.0.1:4010/v27.0/1234567890123456/events")
    }))

  it.effect("without optional variables: no endpoint, test code from options", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* fromEnv({ META_ACCESS_TOKEN: "t", META_PIXEL_ID: "1" }), {
        pixelId: "1",
        accessToken: "t"
      })
      assert.deepStrictEqual(yield* fromEnv({ META_ACCESS_TOKEN: "t", META_PIXEL_ID: "1" }, { testEventCode: "T1" }), {
        pixelId: "1",
        accessToken: "t",
        testEventCode: "T1"
      })
    }))

  it.effect("a missing token is a missing-data ConfigError at META.ACCESS_TOKEN", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ META_PIXEL_ID: "1" }))
      assert.isTrue(ConfigError.isMissingDataOnly(error))
      assert.isTrue(String(error).includes("META.ACCESS_TOKEN"), String(error))
    }))
})

describe("MetaCapi.plugin", () => {
  it("declares name, version (= package.json), plugin API 1.2, purposes, window, limits; no adjustments", () => {
    const p = MetaCapi.plugin
    assert.strictEqual(p.name, pkg.name)
    assert.strictEqual(p.version, pkg.version)
    assert.strictEqual(p.pluginApi, "^1.2.0")
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, p.pluginApi))
    assert.deepStrictEqual(p.purposes, ["advertising"])
    assert.deepStrictEqual(p.limits, { maxEventsPerRequest: 1000, maxBytesPerRequest: 1_000_000 })
    assert.strictEqual(Duration.toMillis(p.window!), 7 * 86_400_000)
    assert.strictEqual(p.supportsAdjustments, undefined)
    assert.strictEqual(MetaCapi.META_GRAPH_API_VERSION, "v27.0")
  })

  it("destination() builds an instance with id `meta` reading settings from the environment", () => {
    const d = MetaCapi.destination()
    assert.strictEqual(d.id, "meta")
    assert.strictEqual(d.plugin, MetaCapi.plugin)
    assert.isFalse("events" in d)
    const custom = MetaCapi.destination({ id: "meta-eu", events: ["purchase"], startFrom: "beginning" })
    assert.deepStrictEqual([custom.id, custom.events, custom.startFrom], ["meta-eu", ["purchase"], "beginning"])
  })
})

describe("MetaCapi response helpers", () => {
  it("classify: by code, never by text", () => {
    const table: ReadonlyArray<[MetaCapi.GraphError, number, MetaCapi.ErrorClass]> = [
      [{ code: 1 }, 500, "transient"],
      [{ code: 2 }, 503, "transient"],
      [{ code: 100, is_transient: true }, 400, "transient"],
      [{ code: 4 }, 400, "throttled"],
      [{ code: 17 }, 400, "throttled"],
      [{ code: 32 }, 400, "throttled"],
      [{ code: 341 }, 400, "throttled"],
      [{ code: 613 }, 400, "throttled"],
      [{ code: 80004 }, 400, "throttled"],
      [{ code: 190, error_subcode: 463 }, 400, "auth"],
      [{ code: 102 }, 400, "auth"],
      [{ code: 10 }, 403, "auth"],
      [{ code: 200 }, 403, "auth"],
      [{ code: 294 }, 403, "auth"],
      [{ code: 100, error_subcode: 33 }, 400, "auth"],
      [{ code: 100, error_subcode: 2804003 }, 400, "invalid"],
      [{ message: "no code" }, 502, "transient"],
      [{ message: "no code" }, 400, "invalid"]
    ]
    for (const [error, status, expected] of table) {
      assert.strictEqual(MetaCapi.classify(error, status), expected, JSON.stringify(error))
    }
  })

  it("redact removes the token in every encoding and any access_token value", () => {
    const token = "EAAB/secret+1"
    assert.strictEqual(MetaCapi.redact("a EAAB/secret+1 b", token), "a [redacted] b")
    assert.strictEqual(MetaCapi.redact("x=EAAB%2Fsecret%2B1", token), "x=[redacted]")
    assert.strictEqual(MetaCapi.redact("?access_token=someone-elses&y=1", token), "?access_token=[redacted]&y=1")
    assert.strictEqual(MetaCapi.redact("{\"access_token\":\"abc\"}", token), "{\"access_token\":\"[redacted]\"}")
  })

  it("parseBusinessUseCaseUsage reads the longest estimated_time_to_regain_access (minutes → ms)", () => {
    const header = JSON.stringify({
      "1": [{ type: "ads_management", estimated_time_to_regain_access: 2 }],
      "2": [{ type: "custom_audience", estimated_time_to_regain_access: 5 }]
    })
    assert.strictEqual(MetaCapi.parseBusinessUseCaseUsage(header), 300_000)
    assert.strictEqual(
      MetaCapi.parseBusinessUseCaseUsage("{\"1\":[{\"estimated_time_to_regain_access\":0}]}"),
      undefined
    )
    assert.strictEqual(MetaCapi.parseBusinessUseCaseUsage("not json"), undefined)
  })

  it("formBody carries data as JSON, the test code and the token (the URL never does)", () => {
    const s = Schema.decodeUnknownSync(MetaCapi.Settings)({ pixelId: "1", accessToken: "tok&en", testEventCode: "T9" })
    const body = new URLSearchParams(MetaCapi.formBody([], s, "tok&en"))
    assert.deepStrictEqual([...body.keys()], ["data", "test_event_code", "access_token"])
    assert.strictEqual(body.get("data"), "[]")
    assert.strictEqual(body.get("access_token"), "tok&en")
    assert.isFalse(MetaCapi.eventsUrl(s).includes("tok"))
  })
})
