/**
 * The sandbox's contract, checked over HTTP with plain `fetch` (independently of the plugin): bearer tokens, the
 * contacts batch upsert (idProperty, all-or-nothing vs multi-status), behavioural events (definitions, dedup), the
 * rate-limit headers and both 429 policies, control endpoints and `env`.
 */
import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { HubSpotSandbox } from "../src/index.js"

const TOKEN = HubSpotSandbox.SANDBOX_ACCESS_TOKEN

const RATE_HEADERS = [
  "x-hubspot-ratelimit-daily",
  "x-hubspot-ratelimit-daily-remaining",
  "x-hubspot-ratelimit-interval-milliseconds",
  "x-hubspot-ratelimit-max",
  "x-hubspot-ratelimit-remaining"
]

interface Answer {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: Record<string, unknown>
}

const call = (url: string, body: unknown, token: string | null = TOKEN) =>
  Effect.promise(async (): Promise<Answer> => {
    const r = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token !== null ? { authorization: `Bearer ${token}` } : {})
      },
      body: JSON.stringify(body)
    })
    const text = await r.text()
    return {
      status: r.status,
      headers: Object.fromEntries(RATE_HEADERS.flatMap((k) => {
        const v = r.headers.get(k)
        return v === null ? [] : [[k, v]]
      })),
      body: text === "" ? {} : JSON.parse(text) as Record<string, unknown>
    }
  })

/** Drops the generated correlation id and timestamps so bodies compare exactly. */
const stable = (body: Record<string, unknown>) => {
  const { completedAt: _c, correlationId: _i, requestedAt: _r, startedAt: _s, ...rest } = body
  return rest
}

const input = (email: string, properties: Record<string, string>, trace?: string) => ({
  id: email,
  idProperty: "email",
  properties,
  ...(trace !== undefined ? { objectWriteTraceId: trace } : {})
})

const occurrence = (overrides: Record<string, unknown> = {}) => ({
  eventName: "pe5550001_qualified_lead",
  email: "ops@acme-corp.example",
  occurredAt: "2026-04-24T08:00:00.000Z",
  properties: { value: 4800, currency: "USD" },
  uuid: "b7432306-acea-5b53-9526-733902a9f478",
  ...overrides
})

const AUTH_MESSAGE = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can " +
  "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"

describe("HubSpotSandbox", () => {
  it.scopedLive("env points settingsFromEnv at the sandbox; a missing or unknown token is 401 as at HubSpot", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      assert.deepStrictEqual(sb.env, {
        HUBSPOT_ACCESS_TOKEN: "pat-na1-sandbox",
        HUBSPOT_ENDPOINT: sb.url,
        HUBSPOT_PORTAL_ID: "5550001"
      })
      const upsert = `${sb.url}/crm/v3/objects/contacts/batch/upsert`
      for (const token of [null, "pat-na1-other"]) {
        const a = yield* call(upsert, { inputs: [input("ops@acme-corp.example", {})] }, token)
        assert.deepStrictEqual([a.status, stable(a.body)], [
          401,
          { status: "error", message: AUTH_MESSAGE, category: "INVALID_AUTHENTICATION" }
        ])
        assert.match(String(a.body.correlationId), /^[0-9a-f-]{36}$/)
      }
    }))

  it.scopedLive("upsert: 200 with results and the rate-limit headers; an update keeps the contact id", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const upsert = `${sb.url}/crm/v3/objects/contacts/batch/upsert`
      const first = yield* call(upsert, { inputs: [input("ops@acme-corp.example", { tl_plan: "team" }, "0")] })
      assert.strictEqual(first.status, 200)
      assert.deepStrictEqual(first.headers, {
        "x-hubspot-ratelimit-daily": "250000",
        "x-hubspot-ratelimit-daily-remaining": "249999",
        "x-hubspot-ratelimit-interval-milliseconds": "10000",
        "x-hubspot-ratelimit-max": "100",
        "x-hubspot-ratelimit-remaining": "99"
      })
      const result = (first.body.results as Array<Record<string, unknown>>)[0]!
      assert.deepStrictEqual([first.body.status, result.id, result.new, result.objectWriteTraceId], [
        "COMPLETE",
        "1001",
        true,
        "0"
      ])
      const second = yield* call(upsert, { inputs: [input("ops@acme-corp.example", { lifecyclestage: "customer" })] })
      const updated = (second.body.results as Array<Record<string, unknown>>)[0]!
      assert.deepStrictEqual([updated.id, updated.new], ["1001", false])
      const contacts = yield* sb.client.contacts().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual(
        contacts.map((c) => [c.id, c.email, c.properties.tl_plan, c.properties.lifecyclestage]),
        [["1001", "ops@acme-corp.example", "team", "customer"]]
      )
    }))

  it.scopedLive("upsert: invalid rows without objectWriteTraceIds refuse the whole batch (400), nothing written", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const a = yield* call(`${sb.url}/crm/v3/objects/contacts/batch/upsert`, {
        inputs: [input("a@acme-corp.example", { tl_plan: "team" }), input("b@acme-corp.example", { tl_nope: "x" })]
      })
      assert.deepStrictEqual([a.status, stable(a.body)], [400, {
        status: "error",
        message:
          "Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"tl_nope\\\" does not " +
          "exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"tl_nope\",\"localizedErrorMessage\":\"Property " +
          "\\\"tl_nope\\\" does not exist\"}]",
        category: "VALIDATION_ERROR"
      }])
      const stats = yield* sb.client.stats().pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual(stats.contacts_created, 0)
    }))

  it.scopedLive("upsert: with objectWriteTraceIds, 207 multi-status names each failed row; valid rows are written", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const a = yield* call(`${sb.url}/crm/v3/objects/contacts/batch/upsert`, {
        inputs: [
          input("a@acme-corp.example", { tl_plan: "team" }, "t-a"),
          input("b@acme-corp.example", { tl_last_paid_at: "2026-04-02", tl_workspace_size: "ten" }, "t-b"),
          input("c@acme-corp.example", { hs_object_id: "5" }, "t-c")
        ]
      })
      assert.strictEqual(a.status, 207)
      assert.deepStrictEqual([a.body.status, a.body.numErrors], ["COMPLETE", 2])
      assert.deepStrictEqual(
        (a.body.results as Array<Record<string, unknown>>).map((r) => r.objectWriteTraceId),
        ["t-a"]
      )
      const errors = a.body.errors as Array<Record<string, unknown>>
      assert.deepStrictEqual(errors.map((e) => [e.status, e.category, e.context]), [
        ["error", "VALIDATION_ERROR", { objectWriteTraceId: ["t-b"] }],
        ["error", "VALIDATION_ERROR", { objectWriteTraceId: ["t-c"] }]
      ])
      assert.deepStrictEqual(errors[0]!.errors, [{
        message: "ten is not a valid number.",
        code: "INVALID_INTEGER",
        context: { propertyName: ["tl_workspace_size"] }
      }])
      assert.deepStrictEqual(errors[1]!.errors, [{
        message: "hs_object_id is a read only property; its value cannot be set.",
        code: "READ_ONLY_VALUE",
        context: { propertyName: ["hs_object_id"] }
      }])
      const contacts = yield* sb.client.contacts().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual(contacts.map((c) => c.email), ["a@acme-corp.example"])
    }))

  it.scopedLive("upsert: idProperty, duplicate ids and the 100-input limit are checked for the whole request", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const upsert = `${sb.url}/crm/v3/objects/contacts/batch/upsert`
      const messages: Array<[number, unknown]> = []
      for (
        const body of [
          { inputs: [{ id: "a@acme-corp.example", properties: {} }] },
          { inputs: [{ id: "a@acme-corp.example", idProperty: "firstname", properties: {} }] },
          { inputs: [input("a@acme-corp.example", {}), input("A@acme-corp.example", {})] },
          { inputs: Array.from({ length: 101 }, (_, i) => input(`c${i}@acme-corp.example`, {})) },
          { inputs: [] }
        ]
      ) {
        const a = yield* call(upsert, body)
        messages.push([a.status, a.body.message])
      }
      assert.deepStrictEqual(messages, [
        [400, "inputs[0]: idProperty is required to upsert by a unique property value"],
        [400, "inputs[0]: firstname is not a unique property of contacts usable as idProperty (use email)"],
        [400, "Duplicate IDs found in batch input: [a@acme-corp.example]. IDs must be unique"],
        [400, "Batch input too large: 101 inputs, the limit is 100"],
        [400, "Invalid input JSON: inputs must be a non-empty array"]
      ])
      // The query parameter form of idProperty is accepted too.
      const viaQuery = yield* call(`${upsert}?idProperty=email`, {
        inputs: [{ id: "q@acme-corp.example", properties: {} }]
      })
      assert.strictEqual(viaQuery.status, 200)
    }))

  it.scopedLive("events: 204 for known definitions; a batch with one bad occurrence is refused whole; uuid dedup", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const single = yield* call(`${sb.url}/events/v3/send`, occurrence())
      assert.deepStrictEqual([single.status, single.body], [204, {}])
      const refused = yield* call(`${sb.url}/events/v3/send/batch`, {
        inputs: [
          occurrence({ uuid: "00000000-0000-5000-8000-000000000001" }),
          occurrence({ eventName: "pe5550001_unknown_thing" }),
          occurrence({ email: undefined })
        ]
      })
      assert.deepStrictEqual([refused.status, stable(refused.body)], [400, {
        status: "error",
        message: "Invalid input: inputs[1].eventName: Event definition not found for eventName " +
          "pe5550001_unknown_thing in portal 5550001; inputs[2].email: One of email, utk or objectId is required to " +
          "associate the occurrence",
        category: "VALIDATION_ERROR",
        errors: [
          {
            message: "Event definition not found for eventName pe5550001_unknown_thing in portal 5550001",
            in: "inputs[1].eventName",
            code: "400"
          },
          {
            message: "One of email, utk or objectId is required to associate the occurrence",
            in: "inputs[2].email",
            code: "400"
          }
        ]
      }])
      // The same uuid again (in a batch): accepted, not recorded twice.
      const again = yield* call(`${sb.url}/events/v3/send/batch`, {
        inputs: [
          occurrence(),
          occurrence({ uuid: "9e210afd-083e-5696-a413-58e67e4372bc", eventName: "pe5550001_sign_up" })
        ]
      })
      assert.strictEqual(again.status, 204)
      const events = yield* sb.client.events().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual(events.map((e) => [e.eventName, e.uuid]), [
        ["pe5550001_qualified_lead", "b7432306-acea-5b53-9526-733902a9f478"],
        ["pe5550001_sign_up", "9e210afd-083e-5696-a413-58e67e4372bc"]
      ])
      const stats = yield* sb.client.stats().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual([stats.events_received, stats.events_stored, stats.duplicates], [6, 2, 1])
    }))

  it.scopedLive("events: property limits (50 characters, names) and identifiers are validated", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const send = (o: Record<string, unknown>) =>
        call(`${sb.url}/events/v3/send`, o).pipe(Effect.map((a) => [a.status, a.body.message]))
      assert.deepStrictEqual(yield* send(occurrence({ properties: { note: "n".repeat(51) } })), [
        400,
        "Invalid input: properties.note: Value is longer than 50 characters"
      ])
      assert.deepStrictEqual(yield* send(occurrence({ properties: { page_url: "u".repeat(200) } })), [204, undefined])
      assert.deepStrictEqual(yield* send(occurrence({ properties: { "Order ID": "1" } })), [
        400,
        "Invalid input: properties.Order ID: Property names must start with a letter and contain only lowercase " +
        "letters a-z, numbers 0-9 and underscores (at most 50 characters)"
      ])
      assert.deepStrictEqual(yield* send(occurrence({ uuid: "ord_1001" })), [
        400,
        "Invalid input: uuid: \"ord_1001\" is not a valid UUID"
      ])
      assert.deepStrictEqual(yield* send(occurrence({ eventName: "pe9_qualified_lead" })), [
        400,
        "Invalid input: eventName: Event definition not found for eventName pe9_qualified_lead in portal 5550001"
      ])
    }))

  it.scopedLive("rate limits: the ten-second window (TEN_SECONDLY_ROLLING) and the daily limit (DAILY) with headers", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start({ tenSecondlyMax: 2, intervalMs: 60_000 })
      const send = () => call(`${sb.url}/events/v3/send`, occurrence({ uuid: undefined }))
      assert.deepStrictEqual([(yield* send()).status, (yield* send()).status], [204, 204])
      const throttled = yield* send()
      assert.deepStrictEqual([throttled.status, stable(throttled.body)], [429, {
        status: "error",
        message: "You have reached your ten_secondly_rolling limit.",
        category: "RATE_LIMITS",
        errorType: "RATE_LIMIT",
        policyName: "TEN_SECONDLY_ROLLING"
      }])
      assert.deepStrictEqual(
        [
          throttled.headers["x-hubspot-ratelimit-remaining"],
          throttled.headers["x-hubspot-ratelimit-interval-milliseconds"]
        ],
        ["0", "60000"]
      )
      const resetAt = Date.now() + 2_000
      yield* sb.client.setFaults({ exhaustDaily: true, dailyResetAt: resetAt }).pipe(
        Effect.provide(FetchHttpClient.layer)
      )
      const daily = yield* send()
      assert.deepStrictEqual([daily.status, daily.body.policyName, daily.body.message], [
        429,
        "DAILY",
        "You have reached your daily limit."
      ])
      assert.strictEqual(daily.headers["x-hubspot-ratelimit-daily-remaining"], "0")
      yield* sb.client.configure({ tenSecondlyMax: 100 }).pipe(Effect.provide(FetchHttpClient.layer))
      // After the reset the daily limit lets requests through again.
      yield* Effect.sleep("2200 millis")
      assert.strictEqual((yield* send()).status, 204)
      const stats = yield* sb.client.stats().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual(stats.rate_limited, { TEN_SECONDLY_ROLLING: 1, DAILY: 1 })
    }))

  it.scopedLive("a daily limit counted by the sandbox itself: the request past it gets the DAILY 429", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start({ dailyLimit: 1, timeZone: "Europe/Berlin" })
      const send = () => call(`${sb.url}/events/v3/send`, occurrence({ uuid: undefined }))
      const ok = yield* send()
      assert.deepStrictEqual([ok.status, ok.headers["x-hubspot-ratelimit-daily-remaining"]], [204, "0"])
      const over = yield* send()
      assert.deepStrictEqual([over.status, over.body.policyName], [429, "DAILY"])
    }))

  it.scopedLive("reset forgets contacts, events, stats and faults", () =>
    Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      yield* call(`${sb.url}/events/v3/send`, occurrence())
      yield* sb.client.setFaults({ status: 500, count: 5 }).pipe(Effect.provide(FetchHttpClient.layer))
      yield* sb.client.reset().pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual((yield* call(`${sb.url}/events/v3/send`, occurrence())).status, 204)
      const events = yield* sb.client.events().pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual(events.length, 1)
      const stats = yield* sb.client.stats().pipe(Effect.provide(FetchHttpClient.layer))
      assert.deepStrictEqual(stats.responses, { "204": 1 })
    }))
})
