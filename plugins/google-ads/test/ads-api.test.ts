/**
 * Google Ads API mode (`mode: "ads_api"`, `UploadClickConversions`): settings, the exact `ClickConversion` payloads,
 * and `send` against the real sandbox over HTTP (partial failure rows mapped by index, resends, click age, the
 * "not allowlisted" refusal, the developer token kept secret).
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import * as Pii from "@tracklayer/core/Pii"
import { ConfigProvider, Effect, Either, Redacted, Schema, type Scope } from "effect"
import { GoogleAds, GoogleAdsOAuth, GoogleAdsSandbox } from "../src/index.js"
import { DAY, deliveryEvent, settings, SHA, T0, TEST_SECRETS } from "./fixtures.js"

const DEV_TOKEN = "test-developer-token-0001"
const ADS = { mode: "ads_api", customerId: "123-456-7890", developerToken: DEV_TOKEN }
const adsSettings = (extra: Record<string, unknown> = {}) => settings({ ...ADS, ...extra })

/** Hashes computed with `printf '%s' VALUE | sha256sum`. */
const SHA_EXTRA = {
  "user1@example.com": "b36a83701f1c3191e19722d6f90274bc1b5501fe69ebf33313e440fe4b0fe210",
  "user2@example.com": "2b3b2b9ce842ab8b6a6c614cb1f9604bb8a0d502d1af49c526b72b10894e95b5",
  "user3@example.com": "898628e28890f937bdf009391def42879c401a4bcf1b5fd24e738d9f5da8cbbb",
  "user4@example.com": "40d71d3f998c168e7a254e75c0a1020185cfc67ab52790be92502835953fc41d"
} as const

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const bodyOf = (o: Destination.Outcome | undefined) => JSON.parse(o?.response?.body ?? "null")
const reasonOf = (o: Destination.Outcome | undefined) => (o?._tag === "Accepted" ? undefined : o?.reason)
const leftOf = <A, E>(r: Either.Either<A, E>) =>
  Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))

afterEach(() => GoogleAdsOAuth.clearCache())

// ---------------------------------------------------------------------------------------------------------------

describe("ads_api settings", () => {
  const base = { clientId: "cid", ...TEST_SECRETS }
  const decode = (u: unknown) => Schema.decodeUnknownEither(GoogleAds.Settings)(u)
  const messageOf = (u: unknown) => leftOf(decode(u))?.message ?? ""

  it("mode defaults to data_manager; ads_api decodes customer ids to 10 digits and redacts the developer token", () => {
    assert.strictEqual(Either.getOrThrow(decode({ ...base, operatingAccountId: "1234567890" })).mode, "data_manager")
    const s = Either.getOrThrow(decode({ ...base, ...ADS, loginCustomerId: "987-654-3210" }))
    assert.strictEqual(s.mode, "ads_api")
    assert.strictEqual(s.customerId, "1234567890")
    assert.strictEqual(s.loginCustomerId, "9876543210")
    assert.strictEqual(s.adsApiBase, "https://googleads.googleapis.com")
    assert.strictEqual(Redacted.value(s.developerToken!), DEV_TOKEN)
    assert.notInclude(`${JSON.stringify(s)} ${String(s.developerToken)}`, DEV_TOKEN)
    assert.strictEqual(GoogleAds.ADS_API_VERSION, "v26")
  })

  it("each mode names the setting it cannot work without", () => {
    assert.include(messageOf(base), "operatingAccountId (GOOGLE_ADS_OPERATING_ACCOUNT_ID) is required in data_manager")
    assert.include(
      messageOf({ ...base, mode: "ads_api", developerToken: DEV_TOKEN }),
      "customerId (GOOGLE_ADS_CUSTOMER_ID) is required in ads_api mode"
    )
    assert.include(
      messageOf({ ...base, mode: "ads_api", customerId: "1234567890" }),
      "developerToken (GOOGLE_ADS_DEVELOPER_TOKEN) is required in ads_api mode"
    )
    const empty = messageOf({ ...ADS, ...base, developerToken: "" })
    assert.include(empty, "the Google Ads developer token must not be empty")
  })

  const fromEnv = (env: Record<string, string>, options: GoogleAds.EnvOptions = {}) =>
    GoogleAds.settingsFromEnv(options).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
    )
  const oauthEnv = { GOOGLE_ADS_CLIENT_ID: "cid", GOOGLE_ADS_CLIENT_SECRET: "sec", GOOGLE_ADS_REFRESH_TOKEN: "rt" }

  it.effect("GOOGLE_ADS_MODE=ads_api reads the customer, login customer, developer token and API base", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        ...oauthEnv,
        GOOGLE_ADS_MODE: "ads_api",
        GOOGLE_ADS_CUSTOMER_ID: "123-456-7890",
        GOOGLE_ADS_LOGIN_CUSTOMER_ID: "9876543210",
        GOOGLE_ADS_DEVELOPER_TOKEN: ` ${DEV_TOKEN} `,
        GOOGLE_ADS_ADS_API_BASE: "http://127.0.0.1:9999",
        GOOGLE_ADS_CONVERSION_ACTIONS: "purchase=111"
      })
      const s = Either.getOrThrow(Schema.decodeUnknownEither(GoogleAds.Settings)(encoded))
      assert.strictEqual(s.mode, "ads_api")
      assert.strictEqual(s.customerId, "1234567890")
      assert.strictEqual(s.loginCustomerId, "9876543210")
      assert.strictEqual(s.operatingAccountId, undefined)
      assert.strictEqual(Redacted.value(s.developerToken!), DEV_TOKEN)
      assert.strictEqual(s.adsApiBase, "http://127.0.0.1:9999")
      assert.deepStrictEqual(s.conversionActions, { purchase: "111" })
    }))

  it.effect("a missing variable of the selected mode is a config error naming it", () =>
    Effect.gen(function*() {
      const noToken = leftOf(
        yield* Effect.either(fromEnv({ ...oauthEnv, GOOGLE_ADS_CUSTOMER_ID: "1234567890" }, { mode: "ads_api" }))
      )
      assert.include(String(noToken), "Expected GOOGLE_ADS_DEVELOPER_TOKEN to exist")
      const noAccount = leftOf(yield* Effect.either(fromEnv(oauthEnv)))
      assert.include(String(noAccount), "Expected GOOGLE_ADS_OPERATING_ACCOUNT_ID to exist")
      // The env var wins over options.mode.
      const dm = yield* fromEnv({
        ...oauthEnv,
        GOOGLE_ADS_MODE: "data_manager",
        GOOGLE_ADS_OPERATING_ACCOUNT_ID: "1234567890"
      }, {
        mode: "ads_api"
      })
      assert.strictEqual((dm as { mode: string }).mode, "data_manager")
    }))
})

// ---------------------------------------------------------------------------------------------------------------

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  readonly hashed?: ReadonlyArray<{ readonly raw: string; readonly normalized: string; readonly sha256: string }>
  readonly expected: GoogleAds.ClickConversion | {
    readonly skip: Destination.SkipReason["reason"]
    readonly detail: string
  }
}

const ACTION = "customers/1234567890/conversionActions/7000000001"

const cases: ReadonlyArray<Case> = [
  {
    scenario: "DESTINATIONS.md vectors: hashedEmail + hashedPhoneNumber, gclid, value, orderId = dedup key, UTC",
    input: deliveryEvent({
      dedupKey: "ord_1001",
      identity: { emails: ["cloudysanfrancisco@gmail.com"], phones: ["+18005550100"], clickIds: { gclid: "Cj0KCQ-1" } },
      properties: { value: 49.5, currency: "USD", order_id: "ord_1001" },
      context: { page_url: "https://shop.example.com/thanks" }
    }),
    hashed: [
      {
        raw: "cloudysanfrancisco@gmail.com",
        normalized: "cloudysanfrancisco@gmail.com",
        sha256: SHA["cloudysanfrancisco@gmail.com"]
      },
      { raw: "+18005550100", normalized: "+18005550100", sha256: SHA["+18005550100"] }
    ],
    expected: {
      gclid: "Cj0KCQ-1",
      conversionAction: ACTION,
      conversionDateTime: "2026-04-24 08:00:00+00:00",
      conversionValue: 49.5,
      currencyCode: "USD",
      orderId: "ord_1001",
      userIdentifiers: [{ hashedEmail: SHA["cloudysanfrancisco@gmail.com"] }, {
        hashedPhoneNumber: SHA["+18005550100"]
      }],
      consent: { adUserData: "GRANTED" }
    }
  },
  {
    scenario: "date-time: milliseconds dropped, converted to UTC with +00:00; no value → no value fields",
    input: deliveryEvent({
      name: "sign_up",
      dedupKey: "evt_su_1",
      timestamp: Date.parse("2026-04-24T23:59:59.999+02:00"),
      identity: { clickIds: { gclid: "gclid-su" } }
    }),
    expected: {
      gclid: "gclid-su",
      conversionAction: "customers/1234567890/conversionActions/7000000002",
      conversionDateTime: "2026-04-24 21:59:59+00:00",
      orderId: "evt_su_1",
      consent: { adUserData: "GRANTED" }
    }
  },
  {
    scenario: "gbraid and wbraid known: only gbraid is sent (both is an error at Google); ad_user_data denied",
    input: deliveryEvent({
      dedupKey: "ord_2",
      identity: { clickIds: { wbraid: "wb-1", gbraid: "gb-1" } },
      consent: { advertising: false }
    }),
    expected: {
      gbraid: "gb-1",
      conversionAction: ACTION,
      conversionDateTime: "2026-04-24 08:00:00+00:00",
      orderId: "ord_2",
      consent: { adUserData: "DENIED" }
    }
  },
  {
    scenario: "no click id: Gmail dots/+tag normalised, hashed email only (enhanced conversions for leads)",
    input: deliveryEvent({ dedupKey: "ord_3", identity: { emails: ["Cloudy.SanFrancisco+promo@GMAIL.com"] } }),
    hashed: [{
      raw: "Cloudy.SanFrancisco+promo@GMAIL.com",
      normalized: "cloudysanfrancisco@gmail.com",
      sha256: SHA["cloudysanfrancisco@gmail.com"]
    }],
    expected: {
      conversionAction: ACTION,
      conversionDateTime: "2026-04-24 08:00:00+00:00",
      orderId: "ord_3",
      userIdentifiers: [{ hashedEmail: SHA["cloudysanfrancisco@gmail.com"] }],
      consent: { adUserData: "GRANTED" }
    }
  },
  {
    scenario: "at most 5 user identifiers (emails first); the address is not sent in this mode",
    input: deliveryEvent({
      dedupKey: "ord_4",
      identity: {
        emails: Array.from({ length: 7 }, (_, i) => `user${i}@example.com`),
        phones: ["+18005550100"],
        clickIds: { gclid: "g4" }
      },
      user: { first_name: "Jane", last_name: "Doe", country: "DE", postal_code: "10115" }
    }),
    hashed: [
      { raw: "user0@example.com", normalized: "user0@example.com", sha256: SHA["user0@example.com"] },
      { raw: "user4@example.com", normalized: "user4@example.com", sha256: SHA_EXTRA["user4@example.com"] }
    ],
    expected: {
      gclid: "g4",
      conversionAction: ACTION,
      conversionDateTime: "2026-04-24 08:00:00+00:00",
      orderId: "ord_4",
      userIdentifiers: [
        { hashedEmail: SHA["user0@example.com"] },
        { hashedEmail: SHA_EXTRA["user1@example.com"] },
        { hashedEmail: SHA_EXTRA["user2@example.com"] },
        { hashedEmail: SHA_EXTRA["user3@example.com"] },
        { hashedEmail: SHA_EXTRA["user4@example.com"] }
      ],
      consent: { adUserData: "GRANTED" }
    }
  },
  {
    scenario: "unmapped event → not_mapped",
    input: deliveryEvent({ name: "page_view", identity: { clickIds: { gclid: "g" } } }),
    expected: { skip: "not_mapped", detail: "event \"page_view\" has no conversion action in conversionActions" }
  },
  {
    scenario: "neither a click id nor an email or phone → invalid",
    input: deliveryEvent({ user: { first_name: "Jane", last_name: "Doe", country: "DE", postal_code: "10115" } }),
    expected: {
      skip: "invalid",
      detail:
        "a click conversion needs a click id (gclid, gbraid or wbraid) or, for enhanced conversions for leads, a " +
        "hashed email or phone; the person has none"
    }
  },
  {
    scenario: "an adjustment (changed value of a sent order) is not sent in this mode",
    input: deliveryEvent({
      dedupKey: "ord_1001",
      identity: { clickIds: { gclid: "g" } },
      properties: { value: 80, currency: "USD" },
      adjustment: { of: "evt_1", previousValue: 100, previousCurrency: "USD" }
    }),
    expected: {
      skip: "invalid",
      detail: "a changed value of order \"ord_1001\" is an adjustment; ads_api mode does not send adjustments " +
        "(UploadConversionAdjustments is not implemented)"
    }
  },
  {
    scenario: "click older than a 30-day click-through window → window",
    input: deliveryEvent({
      identity: {
        clickIds: { gclid: "old" },
        clickIdsSeenAt: { gclid: T0 - 31 * DAY },
        emails: ["jane.doe@example.com"]
      }
    }),
    settings: { clickThroughWindowDays: 30 },
    expected: {
      skip: "window",
      detail: "the gclid click was 31 days before the conversion; the click-through window is 30 days"
    }
  }
]

describe("GoogleAds.transform in ads_api mode", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = GoogleAds.transform(c.input, adsSettings(c.settings))
      if ("skip" in c.expected) {
        const left = leftOf(result)
        assert.strictEqual(left?.reason, c.expected.skip)
        assert.strictEqual(left?.detail, c.expected.detail)
      } else {
        assert.deepStrictEqual(Either.getOrThrow(result), { conversion: c.expected })
      }
      for (const h of c.hashed ?? []) {
        const got = h.raw.startsWith("+") ? Pii.Google.phone(h.raw) : Pii.Google.email(h.raw)
        assert.strictEqual(got?.normalized, h.normalized)
        assert.strictEqual(got?.hash, h.sha256)
      }
    })
  }

  it("the same event in data_manager mode still gives the Data Manager payload", () => {
    const event = deliveryEvent({ dedupKey: "ord_9", identity: { clickIds: { gclid: "g9" } } })
    const dm = Either.getOrThrow(GoogleAds.transform(event, settings()))
    assert.deepStrictEqual(dm, Either.getOrThrow(GoogleAds.transformDataManager(event, settings())))
    assert.strictEqual(GoogleAds.isAdsApiPayload(dm), false)
    assert.strictEqual(GoogleAds.isAdsApiPayload(Either.getOrThrow(GoogleAds.transform(event, adsSettings()))), true)
  })

  it("adsDateTime formats epoch ms as yyyy-mm-dd hh:mm:ss+00:00", () => {
    assert.strictEqual(GoogleAds.adsDateTime(Date.parse("2026-01-02T03:04:05.678Z")), "2026-01-02 03:04:05+00:00")
  })
})

// ---------------------------------------------------------------------------------------------------------------

const sandbox = (options: GoogleAdsSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  GoogleAdsSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: adsSettings({
        clientId: sb.credentials.clientId,
        clientSecret: sb.credentials.clientSecret,
        refreshToken: sb.credentials.refreshToken,
        developerToken: sb.developerToken,
        adsApiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl,
        ...extra
      })
    }))
  )

const purchase = (i: number, extra: Parameters<typeof deliveryEvent>[0] = {}) =>
  deliveryEvent({
    eventId: `evt_${i}`,
    dedupKey: `ord_${i}`,
    timestamp: T0 + i * 1000,
    identity: { emails: ["cloudysanfrancisco@gmail.com"], clickIds: { gclid: `gclid-${i}` } },
    properties: { value: 100 + i, currency: "USD" },
    ...extra
  })

const prepare = (events: ReadonlyArray<Destination.DeliveryEvent>, s: GoogleAds.Settings) =>
  events.map((event) => ({ event, payload: Either.getOrThrow(GoogleAds.transform(event, s)) }))

/** Prepared entries from raw click conversions (what `transform` would never produce). */
const raw = (conversions: ReadonlyArray<Record<string, unknown>>) =>
  conversions.map((c, i) => ({
    event: deliveryEvent({ eventId: `evt_${i}` }),
    payload: { conversion: c as unknown as GoogleAds.ClickConversion }
  }))

const rawConversion = (i: number, overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  gclid: `gclid-${i}`,
  conversionAction: ACTION,
  conversionDateTime: GoogleAds.adsDateTime(T0 + i * 1000),
  conversionValue: 10 + i,
  currencyCode: "USD",
  orderId: `ord_${i}`,
  consent: { adUserData: "GRANTED" },
  ...overrides
})

describe("GoogleAds.send in ads_api mode against the sandbox", () => {
  it.scopedLive("200: all Accepted; the sandbox stores the exact conversions with the headers' customer ids", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { loginCustomerId: "9876543210" })
      const batch = prepare([purchase(1), purchase(2), purchase(3)], s)
      const outcomes = yield* GoogleAds.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const body = bodyOf(outcomes[1])
      assert.strictEqual(body.orderId, "ord_2")
      assert.deepStrictEqual(body.result, {
        gclid: "gclid-2",
        conversionAction: ACTION,
        conversionDateTime: "2026-04-24 08:00:02+00:00"
      })
      assert.match(body.jobId, /^\d+$/)
      const stored = yield* sb.client.conversions()
      assert.deepStrictEqual(stored.map((c) => c.conversion), batch.map((p) => p.payload.conversion as unknown))
      assert.deepStrictEqual(stored[0]!.conversion.userIdentifiers, [{
        hashedEmail: SHA["cloudysanfrancisco@gmail.com"]
      }])
      assert.deepStrictEqual(stored.map((c) => [c.customer_id, c.login_customer_id, c.api_version]), [
        ["1234567890", "9876543210", "v26"],
        ["1234567890", "9876543210", "v26"],
        ["1234567890", "9876543210", "v26"]
      ])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.upload_requests, 1)
      assert.deepStrictEqual(stats.upload_responses, { "200": 1 })
      assert.strictEqual(stats.conversions_stored, 3)
      assert.strictEqual(stats.ingest_requests, 0) // nothing went to the Data Manager API
    })))

  it.scopedLive("partialFailureError rows are mapped to their conversions by index; the others are Accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* GoogleAds.send(
        raw([
          rawConversion(0),
          rawConversion(1, { gclid: "not a gclid!" }),
          rawConversion(2),
          rawConversion(3, { gclid: undefined, gbraid: "gb", wbraid: "wb" }),
          rawConversion(4, { conversionDateTime: "2026-04-24 08:00:04" }),
          rawConversion(5, { userIdentifiers: [{ hashedEmail: "jane.doe@example.com" }] })
        ]),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Accepted", "Rejected", "Rejected", "Rejected"])
      assert.deepStrictEqual(outcomes.map(reasonOf), [
        undefined,
        "UNPARSEABLE_GCLID: The imported gclid could not be decoded. (conversions[1], orderId ord_1)",
        undefined,
        "GBRAID_WBRAID_BOTH_SET: Both gbraid and wbraid are set; set only one. (conversions[3], orderId ord_3)",
        "INVALID_FIELD_VALUES_IN_DATE_TIME: conversion_date_time must be yyyy-mm-dd hh:mm:ss+|-hh:mm (the timezone " +
        "offset is required). (conversions[4], orderId ord_4)",
        "INVALID_USER_IDENTIFIER: A user identifier must set exactly one of hashed_email and hashed_phone_number, " +
        "SHA-256 hex. (conversions[5], orderId ord_5)"
      ])
      assert.strictEqual(outcomes[1]?.response?.status, 200)
      assert.deepStrictEqual(bodyOf(outcomes[1]).errors, [{
        code: "UNPARSEABLE_GCLID",
        kind: "conversionUploadError",
        message: "The imported gclid could not be decoded.",
        index: 1
      }])
      assert.deepStrictEqual((yield* sb.client.conversions()).map((c) => c.conversion.orderId), ["ord_0", "ord_2"])
      assert.deepStrictEqual((yield* sb.client.stats()).conversion_errors, {
        UNPARSEABLE_GCLID: 1,
        GBRAID_WBRAID_BOTH_SET: 1,
        INVALID_FIELD_VALUES_IN_DATE_TIME: 1,
        INVALID_USER_IDENTIFIER: 1
      })
    })))

  it.scopedLive("a resend: ORDER_ID_ALREADY_IN_USE → Accepted as already delivered; stored once", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      const again = yield* GoogleAds.send(prepare([purchase(1), purchase(2)], s), s)
      assert.deepStrictEqual(tags(again), ["Accepted", "Accepted"])
      assert.strictEqual(bodyOf(again[0]).alreadyDelivered, "ORDER_ID_ALREADY_IN_USE")
      assert.strictEqual(bodyOf(again[0]).note, "Google already has this conversion (a resend)")
      assert.strictEqual(bodyOf(again[1]).alreadyDelivered, undefined)
      assert.deepStrictEqual((yield* sb.client.conversions()).map((c) => c.conversion.orderId), ["ord_1", "ord_2"])
    })))

  it.scopedLive("same click and date-time under another orderId: CLICK_CONVERSION_ALREADY_EXISTS → Accepted", () =>
    run(Effect.gen(function*() {
      const { settings: s } = yield* sandbox()
      yield* GoogleAds.send(raw([rawConversion(1)]), s)
      const outcomes = yield* GoogleAds.send(raw([rawConversion(1, { orderId: "ord_other" })]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.strictEqual(bodyOf(outcomes[0]).alreadyDelivered, "CLICK_CONVERSION_ALREADY_EXISTS")
    })))

  it.scopedLive("DUPLICATE_ORDER_ID within one request → the second row Rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* GoogleAds.send(raw([rawConversion(1), rawConversion(2, { orderId: "ord_1" })]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected"])
      assert.strictEqual(
        reasonOf(outcomes[1]),
        "DUPLICATE_ORDER_ID: The order ID is used twice in this request. (conversions[1], orderId ord_1)"
      )
      assert.strictEqual((yield* sb.client.conversions()).length, 1)
    })))

  it.scopedLive("click < 6 h old: TOO_RECENT_EVENT → Retry after 1 h; precedes/expired clicks → Rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const now = Date.now()
      yield* sb.client.registerClicks({ "g-recent": now - 3_600_000, "g-late": now, "g-old": now - 100 * DAY })
      const at = (t: number) => GoogleAds.adsDateTime(t)
      const outcomes = yield* GoogleAds.send(
        raw([
          rawConversion(0, { gclid: "g-recent", conversionDateTime: at(now - 60_000) }),
          rawConversion(1, { gclid: "g-late", conversionDateTime: at(now - 60_000) }),
          rawConversion(2, { gclid: "g-old", conversionDateTime: at(now - 60_000) })
        ]),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Retry", "Rejected", "Rejected"])
      const retry = outcomes[0]
      assert.strictEqual(retry?._tag === "Retry" ? retry.afterMs : undefined, 3_600_000)
      assert.strictEqual(
        reasonOf(retry),
        "TOO_RECENT_EVENT: The click occurred less than 6 hours ago; import it later. (conversions[0], orderId ord_0)"
      )
      assert.match(reasonOf(outcomes[1]) ?? "", /^CONVERSION_PRECEDES_EVENT: /)
      assert.match(reasonOf(outcomes[2]) ?? "", /^EXPIRED_EVENT: /)
      assert.deepStrictEqual(yield* sb.client.conversions(), [])
    })))

  it.scopedLive("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE → AuthFailedError telling to switch to Data Manager", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ notAllowlisted: true })
      const e = leftOf(yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s)))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(e?.status, 403)
      assert.strictEqual(
        e?.message,
        "Google Ads API: customer 1234567890 is not allowlisted for click-conversion import " +
          "(CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE): Google stopped accepting new adopters on 2026-06-15 — switch " +
          "this destination to the Data Manager mode (mode \"data_manager\", GOOGLE_ADS_MODE=data_manager, with " +
          "operatingAccountId)"
      )
      assert.deepStrictEqual((yield* sb.client.stats()).conversion_errors, {
        CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE: 1
      })
    })))

  it.scopedLive("a wrong developer token → AuthFailedError without a token refresh; the token never echoed", () =>
    run(Effect.gen(function*() {
      const wrong = "wrong-developer-token-xyz"
      const { sb, settings: s } = yield* sandbox({}, { developerToken: wrong })
      const e = leftOf(yield* Effect.either(GoogleAds.send(prepare([purchase(1)], s), s)))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(e?.status, 401)
      assert.strictEqual(
        e?.message,
        "Google refused the developer token (401 DEVELOPER_TOKEN_INVALID): check developerToken " +
          "(GOOGLE_ADS_DEVELOPER_TOKEN)"
      )
      // The sandbox echoes the offending token (as Google does); the plugin redacts it.
      assert.include(e?.body ?? "", "The developer token is not valid: [redacted]")
      assert.notInclude(JSON.stringify(e), wrong)
      assert.strictEqual((yield* sb.client.stats()).token_requests, 1)
    })))

  it.scopedLive("the developer token, OAuth secrets and access tokens never appear in outcomes or errors", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* GoogleAds.send(raw([rawConversion(0), rawConversion(1, { gclid: "bad gclid" })]), s)
      yield* sb.client.setFaults({ status: 503 })
      const e = leftOf(yield* Effect.either(GoogleAds.send(raw([rawConversion(2)]), s)))
      assert.strictEqual(e?._tag, "RetryableError")
      const text = JSON.stringify([outcomes, e])
      for (const secret of [sb.developerToken, sb.credentials.clientSecret, sb.credentials.refreshToken, "ya29."]) {
        assert.notInclude(text, secret)
      }
    })))

  it.scopedLive("401 (expired access token) → one refresh, then the upload succeeds", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      yield* sb.client.expireTokens()
      assert.deepStrictEqual(tags(yield* GoogleAds.send(prepare([purchase(2)], s), s)), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 2)
      assert.deepStrictEqual(stats.upload_responses, { "200": 2, "401": 1 })
    })))

  it.scopedLive("429 / 503 → RetryableError with Retry-After", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ rateLimitPerMinute: 1 })
      yield* GoogleAds.send(prepare([purchase(1)], s), s)
      const quota = leftOf(yield* Effect.either(GoogleAds.send(prepare([purchase(2)], s), s)))
      assert.strictEqual(quota?._tag, "RetryableError")
      assert.strictEqual(quota?.status, 429)
      assert.include(quota?.message ?? "", "Google Ads API answered 429: RESOURCE_EXHAUSTED")
      yield* sb.client.configure({ rateLimitPerMinute: 0 })
      yield* sb.client.setFaults({ status: 503, retryAfter: 7 })
      const down = leftOf(yield* Effect.either(GoogleAds.send(prepare([purchase(3)], s), s)))
      assert.strictEqual(down?._tag === "RetryableError" ? down.retryAfterMs : undefined, 7000)
    })))

  it.scopedLive("validateOnly: Accepted noting validate only; nothing stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { validateOnly: true })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.strictEqual(bodyOf(outcomes[0]).validateOnly, true)
      assert.deepStrictEqual(yield* sb.client.conversions(), [])
      assert.strictEqual((yield* sb.client.stats()).validate_only_requests, 1)
    })))

  it.scopedLive("maxEventsPerRequest splits uploads; outcomes stay in batch order", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      const outcomes = yield* GoogleAds.send(prepare([purchase(1), purchase(2), purchase(3)], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      assert.strictEqual((yield* sb.client.stats()).upload_requests, 2)
      assert.deepStrictEqual(outcomes.map((o) => bodyOf(o).orderId), ["ord_1", "ord_2", "ord_3"])
    })))

  it.scopedLive("a Data Manager payload left from before a mode switch is Rejected, the rest sent", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const dm = { event: purchase(9), payload: Either.getOrThrow(GoogleAds.transform(purchase(9), settings())) }
      const outcomes = yield* GoogleAds.send([dm, ...prepare([purchase(1)], s)], s)
      assert.deepStrictEqual(tags(outcomes), ["Rejected", "Accepted"])
      assert.strictEqual(
        reasonOf(outcomes[0]),
        "payload prepared for data_manager mode; the destination is now in ads_api mode"
      )
      assert.strictEqual((yield* sb.client.conversions()).length, 1)
    })))
})

// ---------------------------------------------------------------------------------------------------------------

describe("GoogleAdsSandbox uploadClickConversions contract", () => {
  const post = (sb: GoogleAdsSandbox.Sandbox, body: unknown, headers: Record<string, string>) =>
    HttpClient.HttpClient.pipe(
      Effect.flatMap((c) =>
        c.execute(
          HttpClientRequest.post(`${sb.apiBase}/v26/customers/1234567890:uploadClickConversions`).pipe(
            HttpClientRequest.bodyUnsafeJson(body),
            HttpClientRequest.setHeaders(headers)
          )
        )
      ),
      Effect.flatMap((r) => Effect.map(r.json, (b) => ({ status: r.status, body: b as any }))),
      Effect.orDie
    )
  const bearer = (sb: GoogleAdsSandbox.Sandbox) =>
    HttpClient.HttpClient.pipe(
      Effect.flatMap((c) =>
        c.execute(
          HttpClientRequest.post(sb.tokenUrl).pipe(HttpClientRequest.bodyUrlParams({
            client_id: sb.credentials.clientId,
            client_secret: sb.credentials.clientSecret,
            refresh_token: sb.credentials.refreshToken,
            grant_type: "refresh_token"
          }))
        )
      ),
      Effect.flatMap((r) => r.json),
      Effect.map((b) => `Bearer ${(b as { access_token: string }).access_token}`),
      Effect.orDie
    )

  it.scopedLive("developer token required; partialFailure required; at most 2000 (configurable) conversions", () =>
    run(Effect.gen(function*() {
      const sb = yield* GoogleAdsSandbox.start()
      const authorization = yield* bearer(sb)
      const missing = yield* post(sb, { conversions: [rawConversion(0)], partialFailure: true }, { authorization })
      assert.strictEqual(missing.status, 401)
      assert.deepStrictEqual(missing.body.error.details[0].errors[0].errorCode, {
        authenticationError: "DEVELOPER_TOKEN_PARAMETER_MISSING"
      })
      assert.strictEqual(
        missing.body.error.details[0]["@type"],
        "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"
      )
      const headers = { authorization, "developer-token": sb.developerToken }
      const noPartial = yield* post(sb, { conversions: [rawConversion(0)] }, headers)
      assert.strictEqual(noPartial.status, 400)
      assert.strictEqual(noPartial.body.error.status, "INVALID_ARGUMENT")
      yield* sb.client.configure({ maxConversionsPerUpload: 2 })
      const tooMany = yield* post(sb, {
        conversions: [rawConversion(0), rawConversion(1), rawConversion(2)],
        partialFailure: true
      }, headers)
      assert.strictEqual(tooMany.status, 400)
      assert.deepStrictEqual(tooMany.body.error.details[0].errors[0].errorCode, {
        conversionUploadError: "TOO_MANY_CONVERSIONS_IN_REQUEST"
      })
      yield* sb.client.configure({ maxConversionsPerUpload: 2000 })
      const ok = yield* post(sb, {
        conversions: [
          rawConversion(0),
          rawConversion(1, { conversionAction: "customers/5555555555/conversionActions/1" }),
          rawConversion(2, {
            userIdentifiers: Array.from({ length: 6 }, () => ({ hashedEmail: SHA["cloudysanfrancisco@gmail.com"] }))
          })
        ],
        partialFailure: true
      }, headers)
      assert.strictEqual(ok.status, 200)
      assert.deepStrictEqual(ok.body.results[1], {})
      assert.strictEqual(ok.body.partialFailureError.code, 3)
      assert.deepStrictEqual(
        ok.body.partialFailureError.details[0].errors.map((e: any) => [
          Object.values(e.errorCode)[0],
          e.location.fieldPathElements
        ]),
        [
          ["NO_CONVERSION_ACTION_FOUND", [{ fieldName: "conversions", index: 1 }, { fieldName: "conversion_action" }]],
          ["TOO_MANY", [{ fieldName: "conversions", index: 2 }, { fieldName: "user_identifiers" }]]
        ]
      )
      assert.match(ok.body.jobId, /^\d+$/)
    })))
})
