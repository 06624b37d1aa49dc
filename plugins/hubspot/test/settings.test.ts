import { assert, describe, it } from "@effect/vitest"
import { Destination } from "@tracklayer/core"
import { ConfigProvider, Effect, Either, Exit, Redacted, Schema } from "effect"
import pkg from "../package.json" with { type: "json" }
import { HubSpot } from "../src/index.js"

const decode = Schema.decodeUnknownEither(HubSpot.Settings)
const base = { accessToken: "pat-abc-123", portalId: "1234567" }
const fromEnv = (env: Record<string, string>, options?: HubSpot.EnvOptions) =>
  HubSpot.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )
/** The first error message of a failed decode (as ParseResult's tree formatter prints it). */
const failure = (u: unknown): string => {
  const r = decode(u)
  return Either.isLeft(r) ? String(r.left.message) : ""
}

describe("HubSpot.Settings", () => {
  it("fills the documented defaults and redacts the token", () => {
    const result = decode(base)
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    const s = result.right
    assert.strictEqual(s.endpoint, "https://api.hubapi.com")
    assert.strictEqual(s.dailyResetTimeZone, "America/New_York")
    assert.strictEqual(s.maxEventsPerRequest, 100)
    assert.deepStrictEqual(s.events, {
      qualified_lead: "qualified_lead",
      purchase: "purchase",
      start_trial: "start_trial",
      sign_up: "sign_up",
      subscription_renewed: "subscription_renewed"
    })
    assert.deepStrictEqual(s.properties, {
      plan: { name: "tl_plan", type: "string" },
      lifecycle_stage: { name: "lifecyclestage", type: "string" },
      workspace_size: { name: "tl_workspace_size", type: "number" },
      acquisition_channel: { name: "tl_acquisition_channel", type: "string" },
      last_paid_at: { name: "tl_last_paid_at", type: "date" },
      country: { name: "country", type: "string" }
    })
    assert.strictEqual(HubSpot.contactsUrlOf(s), "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert")
    assert.strictEqual(HubSpot.eventsUrlOf(s), "https://api.hubapi.com/events/v3/send/batch")
    assert.strictEqual(HubSpot.eventNameOf("purchase", s), "pe1234567_purchase")
    assert.isUndefined(HubSpot.eventNameOf("view_pricing", s))
    assert.strictEqual(Redacted.value(s.accessToken), "pat-abc-123")
    const shown = `${String(s.accessToken)} ${JSON.stringify(s)}`
    assert.isFalse(shown.includes("pat-abc-123"))
  })

  it("events: short and fully-qualified names; properties with types; both encode back", () => {
    const result = decode({
      ...base,
      events: { purchase: "pe1234567_order_paid", sign_up: "account_created" },
      properties: { plan: "tl_plan", renewed_at: "tl_renewed_at:datetime", beta: "tl_beta:bool" }
    })
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    assert.strictEqual(HubSpot.eventNameOf("purchase", result.right), "pe1234567_order_paid")
    assert.strictEqual(HubSpot.eventNameOf("sign_up", result.right), "pe1234567_account_created")
    assert.deepStrictEqual(result.right.properties.renewed_at, { name: "tl_renewed_at", type: "datetime" })
    const encoded = Schema.encodeSync(HubSpot.Settings)(result.right)
    assert.deepStrictEqual(encoded.properties, {
      plan: "tl_plan",
      renewed_at: "tl_renewed_at:datetime",
      beta: "tl_beta:bool"
    })
  })

  it("contacts only: events {} needs no portalId; fully-qualified names need none either", () => {
    assert.isTrue(Either.isRight(decode({ accessToken: "pat-x", events: {} })))
    const fq = decode({ accessToken: "pat-x", events: { purchase: "pe42_purchase" } })
    assert.strictEqual(Either.isRight(fq) ? HubSpot.eventNameOf("purchase", fq.right) : "", "pe42_purchase")
  })

  it("bad input is refused with a message naming the field", () => {
    assert.include(failure({ portalId: "1" }), "accessToken")
    assert.include(failure({ ...base, accessToken: "" }), "the HubSpot access token must not be empty")
    assert.include(failure({ accessToken: "pat-x" }), "portalId (the Hub ID) is required")
    assert.include(failure({ ...base, portalId: "12a" }), "the HubSpot portalId (Hub ID) must be digits, got \"12a\"")
    const mismatch = failure({ ...base, events: { purchase: "pe999_purchase" } })
    assert.include(mismatch, "[\"events\"][\"purchase\"]")
    assert.include(mismatch, "\"pe999_purchase\" belongs to portal 999, but portalId is 1234567")
    assert.include(failure({ ...base, events: { purchase: "Order Paid" } }), "expected a HubSpot event name")
    const badProperty = failure({ ...base, properties: { plan: "TL Plan" } })
    assert.include(badProperty, "[\"properties\"]")
    assert.include(badProperty, "[\"plan\"]")
    assert.include(badProperty, "expected a HubSpot contact property name")
    assert.include(failure({ ...base, properties: { plan: "tl_plan:json" } }), "got \"tl_plan:json\"")
    assert.include(
      failure({ ...base, dailyResetTimeZone: "Mars/Olympus" }),
      "expected an IANA time zone such as America/New_York, got \"Mars/Olympus\""
    )
    assert.include(failure({ ...base, endpoint: "api.hubapi.com" }), "expected an http(s) URL, got \"api.hubapi.com\"")
    assert.include(failure({ ...base, maxEventsPerRequest: 101 }), "maxEventsPerRequest")
    assert.isFalse(JSON.stringify(decode({ ...base, portalId: "x" })).includes("pat-abc-123"))
  })
})

describe("HubSpot.settingsFromEnv", () => {
  it.effect("reads HUBSPOT_* into the encoded settings; the options fill the rest", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        HUBSPOT_ACCESS_TOKEN: " pat-env ",
        HUBSPOT_ENDPOINT: "http://127.0.0.1:9",
        HUBSPOT_PORTAL_ID: " 777 "
      }, { events: { purchase: "order_paid" }, dailyResetTimeZone: "Europe/Berlin", portalId: "1" })
      assert.deepStrictEqual(encoded, {
        events: { purchase: "order_paid" },
        dailyResetTimeZone: "Europe/Berlin",
        accessToken: "pat-env",
        endpoint: "http://127.0.0.1:9",
        portalId: "777"
      })
      const s = yield* Schema.decodeUnknown(HubSpot.Settings)(encoded)
      assert.strictEqual(HubSpot.eventNameOf("purchase", s), "pe777_order_paid")
      assert.strictEqual(s.dailyResetTimeZone, "Europe/Berlin")
    }))

  it.effect("without HUBSPOT_PORTAL_ID the options' portalId is used; a custom namespace reads its own variables", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({ EU_HUBSPOT_ACCESS_TOKEN: "pat-eu" }, { namespace: "EU_HUBSPOT", portalId: "55" })
      assert.deepStrictEqual(encoded, { accessToken: "pat-eu", portalId: "55" })
    }))

  it.effect("a missing token is a config error naming the variable", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(fromEnv({ HUBSPOT_PORTAL_ID: "1" }))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "HUBSPOT.ACCESS_TOKEN")
    }))
})

describe("HubSpot.plugin", () => {
  it("declares its package, plugin API, purpose, limits and the audience capability", () => {
    const p = HubSpot.plugin
    assert.strictEqual(p.name, pkg.name)
    assert.strictEqual(p.version, pkg.version)
    assert.strictEqual(p.pluginApi, "^1.2.0")
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, p.pluginApi))
    assert.deepStrictEqual(p.purposes, ["crm"])
    assert.deepStrictEqual(p.limits, { maxEventsPerRequest: 100, maxBytesPerRequest: 3_000_000 })
    assert.deepStrictEqual(p.audiences?.limits, { maxEventsPerRequest: 100, maxBytesPerRequest: 3_000_000 })
    assert.isUndefined(p.window)
    assert.isUndefined(p.supportsAdjustments)
    assert.isUndefined(p.userState)
  })

  it("destination() builds an instance with id hubspot by default", () => {
    const d = HubSpot.destination({ events: ["purchase"] })
    assert.strictEqual(d.id, "hubspot")
    assert.deepStrictEqual(d.events, ["purchase"])
    assert.strictEqual(d.plugin, HubSpot.plugin)
  })
})
