import { assert, describe, it } from "@effect/vitest"
import { Destination } from "@tracklayer/core"
import { ConfigProvider, Duration, Effect, Either, Exit, Redacted, Schema } from "effect"
import pkg from "../package.json" with { type: "json" }
import { LinkedIn } from "../src/index.js"

const decode = Schema.decodeUnknownEither(LinkedIn.Settings)
const base = { clientId: "cid-1", clientSecret: "secret-123456", refreshToken: "refresh-abcdef" }
const fromEnv = (env: Record<string, string>, options?: LinkedIn.EnvOptions) =>
  LinkedIn.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )

describe("LinkedIn.Settings", () => {
  it("fills the documented defaults and redacts the secrets", () => {
    const result = decode(base)
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    const s = result.right
    assert.strictEqual(s.apiBase, "https://api.linkedin.com/rest")
    assert.strictEqual(s.tokenUrl, "https://www.linkedin.com/oauth/v2/accessToken")
    assert.strictEqual(s.maxEventsPerRequest, 5000)
    assert.deepStrictEqual(s.conversionRules, {})
    assert.strictEqual(LinkedIn.endpointOf(s), "https://api.linkedin.com/rest/conversionEvents")
    assert.strictEqual(Redacted.value(s.clientSecret), "secret-123456")
    assert.strictEqual(Redacted.value(s.refreshToken), "refresh-abcdef")
    const shown = `${String(s.clientSecret)} ${JSON.stringify(s)}`
    assert.isFalse(shown.includes("secret-123456"))
    assert.isFalse(shown.includes("refresh-abcdef"))
  })

  it("conversion rules: a bare id or the URN, both decoded to the URN", () => {
    const result = decode({
      ...base,
      conversionRules: { purchase: " 104906 ", sign_up: "urn:lla:llaPartnerConversion:77" }
    })
    assert.deepStrictEqual(Either.isRight(result) ? result.right.conversionRules : undefined, {
      purchase: "urn:lla:llaPartnerConversion:104906",
      sign_up: "urn:lla:llaPartnerConversion:77"
    })
  })

  it("refuses empty secrets, a malformed rule, a non-URL endpoint and more than 5000 events per request", () => {
    assert.isTrue(Either.isLeft(decode({ ...base, clientSecret: "" })))
    assert.isTrue(Either.isLeft(decode({ ...base, refreshToken: "" })))
    assert.isTrue(Either.isLeft(decode({ clientSecret: "s", refreshToken: "r" })))
    assert.isTrue(Either.isLeft(decode({ ...base, conversionRules: { purchase: "urn:li:conversion:1" } })))
    assert.isTrue(Either.isLeft(decode({ ...base, conversionRules: { purchase: "abc" } })))
    assert.isTrue(Either.isLeft(decode({ ...base, apiBase: "api.linkedin.com" })))
    assert.isTrue(Either.isLeft(decode({ ...base, maxEventsPerRequest: 5001 })))
    const bad = decode({ ...base, clientSecret: "", conversionRules: { purchase: "abc" } })
    assert.isFalse(JSON.stringify(bad).includes("secret-123456"))
  })
})

describe("LinkedIn.settingsFromEnv", () => {
  it.effect("reads LINKEDIN_* into the encoded settings; LINKEDIN_CONVERSION_RULES overrides the options", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        LINKEDIN_CLIENT_ID: " cid ",
        LINKEDIN_CLIENT_SECRET: " sec ",
        LINKEDIN_REFRESH_TOKEN: "ref",
        LINKEDIN_API_BASE: "http://127.0.0.1:9/rest",
        LINKEDIN_TOKEN_URL: "http://127.0.0.1:9/oauth/v2/accessToken",
        LINKEDIN_CONVERSION_RULES: "purchase=104906, qualified_lead = urn:lla:llaPartnerConversion:104907"
      }, { conversionRules: { purchase: "1", sign_up: "2" } })
      assert.deepStrictEqual(encoded, {
        clientId: "cid",
        clientSecret: "sec",
        refreshToken: "ref",
        conversionRules: {
          purchase: "104906",
          sign_up: "2",
          qualified_lead: "urn:lla:llaPartnerConversion:104907"
        },
        apiBase: "http://127.0.0.1:9/rest",
        tokenUrl: "http://127.0.0.1:9/oauth/v2/accessToken"
      })
      const s = yield* Schema.decodeUnknown(LinkedIn.Settings)(encoded)
      assert.strictEqual(s.conversionRules.purchase, "urn:lla:llaPartnerConversion:104906")
    }))

  it.effect("a missing secret is a config error naming the variable", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(fromEnv({ LINKEDIN_CLIENT_ID: "cid", LINKEDIN_CLIENT_SECRET: "s" }))
      assert.isTrue(Exit.isFailure(exit))
      assert.isTrue(String(Exit.isFailure(exit) ? exit.cause : "").includes("REFRESH_TOKEN"))
    }))

  it("parseConversionRules keeps malformed entries for the schema to report", () => {
    assert.deepStrictEqual(LinkedIn.parseConversionRules("purchase=1,\nsign_up=2,,oops"), {
      purchase: "1",
      sign_up: "2",
      oops: ""
    })
  })
})

describe("LinkedIn.plugin", () => {
  it("declares its package, plugin API, purposes, window, limits; no adjustments", () => {
    const p = LinkedIn.plugin
    assert.strictEqual(p.name, pkg.name)
    assert.strictEqual(p.version, pkg.version)
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, p.pluginApi))
    assert.deepStrictEqual(p.purposes, ["advertising"])
    assert.strictEqual(Duration.toMillis(p.window!), 90 * 86_400_000)
    assert.deepStrictEqual(p.limits, { maxEventsPerRequest: 5000, maxBytesPerRequest: 4_000_000 })
    assert.isUndefined(p.supportsAdjustments)
  })

  it("destination() builds an instance with id linkedin by default", () => {
    const d = LinkedIn.destination({ events: ["purchase"] })
    assert.strictEqual(d.id, "linkedin")
    assert.deepStrictEqual(d.events, ["purchase"])
    assert.strictEqual(d.plugin, LinkedIn.plugin)
  })
})
