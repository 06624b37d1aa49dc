/**
 * `HubSpot.send` against the real sandbox over HTTP (127.0.0.1, free port): contact upserts merged per email,
 * multi-status rows mapped back to their events, behavioural events, splits of refused requests, rate limits,
 * authentication and server errors.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope, TestClock } from "effect"
import { HubSpot, HubSpotSandbox } from "../src/index.js"
import { deliveryEvent, leadOf, OPS_EMAIL, prepare, preparedRaw, settings, T0, UUID_OF, wire } from "./fixtures.js"

/** Starts a sandbox in the test's scope and decodes settings pointing at it. */
const sandbox = (options: HubSpotSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  HubSpotSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: settings({ accessToken: sb.accessToken, endpoint: sb.url, portalId: sb.portalId, ...extra })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const reasons = (outcomes: ReadonlyArray<Destination.Outcome>) =>
  outcomes.map((o) => (o._tag === "Accepted" ? "Accepted" : `${o._tag}: ${o.reason}`))
const failureOf = <A>(result: Either.Either<A, Destination.SendError>) =>
  Either.isLeft(result) ? result.left : undefined

const propertyError = (problems: ReadonlyArray<{ message: string; error: string; name: string }>) =>
  `Property values were not valid: ${
    JSON.stringify(problems.map((p) => ({
      isValid: false,
      message: p.message,
      error: p.error,
      name: p.name,
      localizedErrorMessage: p.message
    })))
  }`

describe("HubSpot.send against the sandbox", () => {
  it.scopedLive("contacts merged per email, then the behavioural events: every event Accepted, stored exactly", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const now = Date.now()
      const batch = prepare([
        leadOf({ timestamp: now - 60_000 }),
        leadOf({
          name: "purchase",
          eventId: "evt_p1",
          dedupKey: "ord_1001",
          timestamp: now - 30_000,
          identity: { emails: [OPS_EMAIL], traits: { plan: "pro", last_paid_at: "2026-04-02" } },
          properties: { value: 49.9, currency: "EUR", order_id: "ord_1001" }
        }),
        deliveryEvent({
          name: "view_pricing",
          identity: { emails: ["dana@acme-corp.example"], traits: { plan: "free" } }
        })
      ], s)
      const outcomes = yield* HubSpot.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const first = outcomes[0]!
      assert.deepStrictEqual(first._tag === "Accepted" ? first.response : undefined, { status: 204, body: "" })
      const contacts = yield* sb.client.contacts()
      assert.deepStrictEqual(
        contacts.map((c) => [c.email, c.properties.tl_plan, c.properties.lifecyclestage, c.properties.tl_last_paid_at]),
        [[OPS_EMAIL, "pro", "lead", "1775088000000"], ["dana@acme-corp.example", "free", undefined, undefined]]
      )
      const events = yield* sb.client.events()
      assert.deepStrictEqual(events.map((e) => [e.eventName, e.uuid]), [
        ["pe5550001_qualified_lead", UUID_OF.evt_lead_9001],
        ["pe5550001_purchase", UUID_OF.ord_1001]
      ])
      assert.deepStrictEqual(events.map((e) => e.occurrence as unknown), [
        batch[0]!.payload.event,
        batch[1]!.payload.event
      ])
      const stats = yield* sb.client.stats()
      // One upsert for the two emails (the person's two events merged), one events batch.
      assert.deepStrictEqual(stats.responses, { "200": 1, "204": 1 })
      assert.strictEqual(stats.contacts_created, 2)
    })))

  it.scopedLive("207 multi-status: each refused row → its events Rejected with HubSpot's message, emails masked", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* HubSpot.send(
        preparedRaw([
          wire(0),
          wire(1, { properties: { tl_favourite_colour: "teal" } }),
          wire(2, { properties: { lifecyclestage: "trialist" } }),
          wire(3, { properties: { tl_last_paid_at: "1775140200000" } }),
          { contact: { id: "not-an-email", idProperty: "email", properties: {} } },
          wire(5, {}, false)
        ]),
        s
      )
      assert.deepStrictEqual(reasons(outcomes), [
        "Accepted",
        `Rejected: HubSpot refused the contact upsert: ${
          propertyError([{
            message: "Property \"tl_favourite_colour\" does not exist",
            error: "PROPERTY_DOESNT_EXIST",
            name: "tl_favourite_colour"
          }])
        } (VALIDATION_ERROR)`,
        `Rejected: HubSpot refused the contact upsert: ${
          propertyError([{
            message: "trialist was not one of the allowed options: [subscriber, lead, marketingqualifiedlead, " +
              "salesqualifiedlead, opportunity, customer, evangelist, other]",
            error: "INVALID_OPTION",
            name: "lifecyclestage"
          }])
        } (VALIDATION_ERROR)`,
        `Rejected: HubSpot refused the contact upsert: ${
          propertyError([{
            message: "1775140200000 is at 14:30:0.0 UTC, not midnight!",
            error: "INVALID_DATE",
            name: "tl_last_paid_at"
          }])
        } (VALIDATION_ERROR)`,
        `Rejected: HubSpot refused the contact upsert: ${
          propertyError([{ message: "Email address not-an-email is invalid", error: "INVALID_EMAIL", name: "email" }])
        } (VALIDATION_ERROR)`,
        "Accepted"
      ])
      const rejected = outcomes[1]!
      assert.strictEqual(rejected._tag === "Rejected" ? rejected.response?.status : undefined, 207)
      // Only the written rows' behavioural events were sent.
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.occurrence.email), ["c0@acme-corp.example"])
      assert.deepStrictEqual((yield* sb.client.contacts()).map((c) => c.email), [
        "c0@acme-corp.example",
        "c5@acme-corp.example"
      ])
      assert.isFalse(JSON.stringify(outcomes.slice(1, 4)).includes("c1@acme-corp.example"))
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "207": 1, "204": 1 })
    })))

  it.scopedLive("a refused events batch (400) is split until the bad occurrence is alone; the others are stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* HubSpot.send(
        preparedRaw([
          wire(0),
          wire(1),
          wire(2, { event: { eventName: "pe5550001_demo_booked" } }),
          wire(3)
        ]),
        s
      )
      assert.deepStrictEqual(reasons(outcomes), [
        "Accepted",
        "Accepted",
        "Rejected: HubSpot refused the behavioural event: Invalid input: inputs[0].eventName: Event definition not " +
        "found for eventName pe5550001_demo_booked in portal 5550001 (VALIDATION_ERROR)",
        "Accepted"
      ])
      assert.deepStrictEqual((yield* sb.client.events()).map((e) => e.occurrence.email), [
        "c0@acme-corp.example",
        "c1@acme-corp.example",
        "c3@acme-corp.example"
      ])
      // upsert; events batch of 4 (400); halves [0,1] (204) and [2,3] (400); [2] (400) and [3] (204).
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "200": 1, "400": 3, "204": 2 })
    })))

  it.scopedLive("a whole-request 400 on the upsert is split too: the rows are written in halves", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        target: "contacts",
        status: 400,
        body: { status: "error", message: "Invalid input JSON", category: "VALIDATION_ERROR" }
      })
      const outcomes = yield* HubSpot.send(preparedRaw([wire(0, {}, false), wire(1, {}, false), wire(2, {}, false)]), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      assert.strictEqual((yield* sb.client.contacts()).length, 3)
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "400": 1, "200": 2 })
    })))

  it.scopedLive("resending a batch: contacts updated, not duplicated; occurrences deduplicated by uuid", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([leadOf({ timestamp: Date.now() - 5_000 })], s)
      assert.deepStrictEqual(tags(yield* HubSpot.send(batch, s)), ["Accepted"])
      assert.deepStrictEqual(tags(yield* HubSpot.send(batch, s)), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(
        [stats.contacts_created, stats.contacts_updated, stats.events_stored, stats.duplicates],
        [1, 1, 1, 1]
      )
    })))

  it.scopedLive("ten-second window full (429 TEN_SECONDLY_ROLLING): RetryableError after the window's interval", () =>
    run(Effect.gen(function*() {
      // One request per 7 s window: the upsert passes, the events batch right after it is throttled.
      const { sb, settings: s } = yield* sandbox({ tenSecondlyMax: 1, intervalMs: 7_000 })
      const error = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
      assert.deepStrictEqual(error?._tag === "RetryableError" ? [error.retryAfterMs, error.status] : [], [7_000, 429])
      assert.strictEqual(
        error?.message,
        "HubSpot behavioural events answered 429: You have reached your ten_secondly_rolling limit. (RATE_LIMITS, " +
          "TEN_SECONDLY_ROLLING); TEN_SECONDLY_ROLLING window full (1 requests per window)"
      )
      assert.strictEqual((yield* sb.client.events()).length, 0)
      assert.deepStrictEqual((yield* sb.client.stats()).rate_limited, { TEN_SECONDLY_ROLLING: 1 })
    })))

  it.scopedLive("another 429 policy (SECONDLY) is a window limit: the interval header, else Retry-After, else 10 s", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ intervalMs: 4_000 })
      const body = { status: "error", message: "You have reached your secondly limit.", policyName: "SECONDLY" }
      const waits: Array<number | undefined> = []
      for (
        const fault of [{ retryAfter: 3 }, { retryAfter: 3, omitRateLimitHeaders: true }, {
          omitRateLimitHeaders: true
        }]
      ) {
        yield* sb.client.setFaults({ status: 429, body, ...fault })
        const error = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
        waits.push(error?._tag === "RetryableError" ? error.retryAfterMs : undefined)
      }
      assert.deepStrictEqual(waits, [4_000, 3_000, 10_000])
    })))

  it.scoped("daily limit exhausted (429 DAILY): RetryableError until midnight in the account's time zone", () =>
    run(Effect.gen(function*() {
      // The send reads its clock (TestClock: 2026-04-24T08:00:00Z); the sandbox runs on real time.
      yield* TestClock.setTime(T0)
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ exhaustDaily: true })
      const newYork = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
      assert.deepStrictEqual(newYork?._tag === "RetryableError" ? [newYork.retryAfterMs, newYork.status] : [], [
        72_000_000,
        429
      ])
      assert.strictEqual(
        newYork?.message,
        "HubSpot contacts upsert answered 429: You have reached your daily limit. (RATE_LIMITS, DAILY); daily limit " +
          "reached: paused until midnight America/New_York (2026-04-25T04:00:00.000Z)"
      )
      const berlin = failureOf(
        yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), { ...s, dailyResetTimeZone: "Europe/Berlin" }))
      )
      assert.strictEqual(berlin?._tag === "RetryableError" ? berlin.retryAfterMs : -1, 50_400_000)
      assert.strictEqual((yield* sb.client.contacts()).length, 0)
      assert.deepStrictEqual((yield* sb.client.stats()).rate_limited, { DAILY: 2 })
    })))

  it.scopedLive("401 (token refused): AuthFailedError with HubSpot's message, the token never echoed", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { accessToken: "pat-na1-revoked" })
      const error = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
      assert.strictEqual(error?._tag, "AuthFailedError")
      assert.strictEqual(error?.status, 401)
      assert.strictEqual(
        error?.message,
        "HubSpot contacts upsert answered 401: Authentication credentials not found. This API supports OAuth 2.0 " +
          "authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/" +
          "oauth-overview (INVALID_AUTHENTICATION); check the private app access token"
      )
      assert.isFalse(JSON.stringify(error).includes("pat-na1-revoked"))
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "401": 1 })
    })))

  it.scopedLive("403 (missing scope) on the events: AuthFailedError naming the scopes", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ target: "events", status: 403 })
      const error = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
      assert.deepStrictEqual([error?._tag, error?.status], ["AuthFailedError", 403])
      assert.include(
        error?.message ?? "",
        "(MISSING_SCOPES); the private app needs the crm.objects.contacts.write and analytics.behavioral_events.send scopes"
      )
    })))

  it.scopedLive("5xx (500 JSON, 502 HTML, 503 down with Retry-After): RetryableError, nothing stored", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const seen: Array<unknown> = []
      for (const status of [500, 502]) {
        yield* sb.client.setFaults({ status })
        const error = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
        seen.push([error?._tag, error?.status])
      }
      yield* sb.client.setFaults({ down: true, retryAfter: 30 })
      const down = failureOf(yield* Effect.either(HubSpot.send(preparedRaw([wire(0)]), s)))
      seen.push([down?._tag, down?.status, down?._tag === "RetryableError" ? down.retryAfterMs : undefined])
      assert.deepStrictEqual(seen, [["RetryableError", 500], ["RetryableError", 502], ["RetryableError", 503, 30_000]])
      assert.strictEqual((yield* sb.client.contacts()).length, 0)
    })))

  it.scopedLive("more contacts than maxEventsPerRequest: several upserts and event batches, outcomes in order", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { maxEventsPerRequest: 2 })
      const outcomes = yield* HubSpot.send(
        preparedRaw([wire(0), wire(1), wire(2, { properties: { nope: "x" } }), wire(3), wire(4)]),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Rejected", "Accepted", "Accepted"])
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "200": 2, "207": 1, "204": 2 })
      assert.strictEqual((yield* sb.client.events()).length, 4)
    })))
})
