import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Redacted, Schema } from "effect"
import { GoogleAds } from "../src/index.js"
import { TEST_SECRETS } from "./fixtures.js"

const base = {
  operatingAccountId: "1234567890",
  clientId: "cid.apps.googleusercontent.com",
  ...TEST_SECRETS
}

const decode = (u: unknown) => Schema.decodeUnknownEither(GoogleAds.Settings)(u)

const fromEnv = (env: Record<string, string>, options: GoogleAds.EnvOptions = {}) =>
  GoogleAds.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )

describe("GoogleAds.Settings", () => {
  it("defaults: Google endpoints, HEX-only, 90-day window, no mapping, 2000 events, 20 s status polling", () => {
    const s = Either.getOrThrow(decode(base))
    assert.strictEqual(s.apiBase, "https://datamanager.googleapis.com")
    assert.strictEqual(s.tokenUrl, "https://oauth2.googleapis.com/token")
    assert.strictEqual(s.validateOnly, false)
    assert.strictEqual(s.clickThroughWindowDays, 90)
    assert.deepStrictEqual(s.conversionActions, {})
    assert.strictEqual(s.maxEventsPerRequest, 2000)
    assert.strictEqual(s.statusPollTimeoutMs, 20_000)
    assert.strictEqual(s.eventSource, "auto")
    assert.strictEqual(s.personalisationPurpose, "personalisation")
  })

  it("hyphenated account ids are normalised to 10 digits", () => {
    const s = Either.getOrThrow(
      decode({ ...base, operatingAccountId: "123-456-7890", loginAccountId: " 987 654 3210 " })
    )
    assert.strictEqual(s.operatingAccountId, "1234567890")
    assert.strictEqual(s.loginAccountId, "9876543210")
  })

  it("a wrong account id is refused with a clear message", () => {
    const r = decode({ ...base, operatingAccountId: "123-456-789" })
    assert.isTrue(Either.isLeft(r))
    assert.include(
      String(Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value.message : ""))),
      "expected a 10-digit Google Ads customer id (\"1234567890\" or \"123-456-7890\"), got \"123-456-789\""
    )
  })

  it("conversion action ids must be numeric", () => {
    const r = decode({ ...base, conversionActions: { purchase: "AW-123/abc" } })
    assert.isTrue(Either.isLeft(r))
    assert.include(
      String(Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value.message : ""))),
      "a conversion action id is a number (digits only)"
    )
  })

  it("secrets are Redacted and never printed", () => {
    const s = Either.getOrThrow(decode(base))
    assert.strictEqual(Redacted.value(s.clientSecret), TEST_SECRETS.clientSecret)
    assert.strictEqual(Redacted.value(s.refreshToken), TEST_SECRETS.refreshToken)
    const printed = `${String(s.clientSecret)} ${JSON.stringify(s)} ${String(s.refreshToken)}`
    assert.notInclude(printed, TEST_SECRETS.clientSecret)
    assert.notInclude(printed, TEST_SECRETS.refreshToken)
  })

  it("a secret's decoding error does not repeat it", () => {
    const r = decode({ ...base, clientSecret: "" })
    const message = Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value.message : ""))
    assert.include(message, "the Google OAuth client secret must not be empty")
  })
})

describe("GoogleAds.settingsFromEnv", () => {
  it.effect("reads GOOGLE_ADS_* and merges the conversion actions (env entries win)", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        GOOGLE_ADS_CLIENT_ID: "cid",
        GOOGLE_ADS_CLIENT_SECRET: "sec",
        GOOGLE_ADS_REFRESH_TOKEN: "rt",
        GOOGLE_ADS_OPERATING_ACCOUNT_ID: "123-456-7890",
        GOOGLE_ADS_API_BASE: "http://127.0.0.1:9999",
        GOOGLE_ADS_TOKEN_URL: "http://127.0.0.1:9999/token",
        GOOGLE_ADS_VALIDATE_ONLY: "true",
        GOOGLE_ADS_CONVERSION_ACTIONS: "purchase=111, sign_up=222"
      }, { conversionActions: { purchase: "999", start_trial: "333" }, clickThroughWindowDays: 30 })
      const s = Either.getOrThrow(decode(encoded))
      assert.strictEqual(s.clientId, "cid")
      assert.strictEqual(Redacted.value(s.clientSecret), "sec")
      assert.strictEqual(Redacted.value(s.refreshToken), "rt")
      assert.strictEqual(s.operatingAccountId, "1234567890")
      assert.strictEqual(s.apiBase, "http://127.0.0.1:9999")
      assert.strictEqual(s.tokenUrl, "http://127.0.0.1:9999/token")
      assert.strictEqual(s.validateOnly, true)
      assert.strictEqual(s.clickThroughWindowDays, 30)
      assert.deepStrictEqual(s.conversionActions, { purchase: "111", sign_up: "222", start_trial: "333" })
    }))

  it.effect("a missing refresh token is a config error naming the variable", () =>
    Effect.gen(function*() {
      const r = yield* Effect.either(fromEnv({
        GOOGLE_ADS_CLIENT_ID: "cid",
        GOOGLE_ADS_CLIENT_SECRET: "sec",
        GOOGLE_ADS_OPERATING_ACCOUNT_ID: "1234567890"
      }))
      assert.isTrue(Either.isLeft(r))
      const message = String(Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : "")))
      assert.include(message, "GOOGLE_ADS.REFRESH_TOKEN")
      assert.notInclude(message, "CLIENT_ID")
    }))

  it("parseConversionActions: pairs, JSON, and a malformed entry", () => {
    assert.deepStrictEqual(Either.getOrThrow(GoogleAds.parseConversionActions("purchase=1,sign_up=2")), {
      purchase: "1",
      sign_up: "2"
    })
    assert.deepStrictEqual(Either.getOrThrow(GoogleAds.parseConversionActions("{\"purchase\": 7}")), { purchase: "7" })
    assert.deepStrictEqual(
      Either.getLeft(GoogleAds.parseConversionActions("purchase")).pipe((o) => (o._tag === "Some" ? o.value : "")),
      "expected event=conversionActionId pairs separated by commas, got \"purchase\""
    )
  })
})
