/**
 * Bad input, fuzzed: random JSON, envelopes of broken events (wrong types, huge strings, 1000-level nesting, lone
 * surrogates, NUL), invalid UTF-8, a 10 MB body and a slow-loris body against `POST /v1/events`, `POST /v1/consent`
 * and `POST /v1/sources/amplitude-cohorts` of a real in-process gateway. Every answer is a 2xx or a 4xx with
 * `{ error: { code, message } }` (or per-item results naming the field), never a 5xx; the gateway stays healthy; and
 * every row in the log decodes with the contract's own decoder. Fixed seeds and bounded counts keep it CI-sized.
 */
import { describe, expect, it } from "@effect/vitest"
import { Contract, EventStore, Vault } from "@tracklayer/core"
import { AmplitudeCohorts } from "@tracklayer/plugin-amplitude-cohorts"
import { Config, Effect, Either, FastCheck as fc, Layer } from "effect"
import { afterAll, beforeAll } from "vitest"
import { type Harness, startHarness, TEST_MASTER_KEY, WRITE_KEY } from "../support/harness.js"
import { rawRequest, sleep } from "./raw.js"

const SEED = 20260424
const RUNS = 200
const COHORT_SECRET = "tl-fuzz-cohort-hook-01"
// Short, so the slow-loris case ends well inside the test's budget (production default: 30 s).
const REQUEST_TIMEOUT_MS = 2000

type Answer = { readonly status: number; readonly json: any; readonly text: string }

describe("bad input (fuzz)", () => {
  let h: Harness
  let run = 0

  beforeAll(async () => {
    // Read by the server layer when it is built (TRACKLAYER_REQUEST_TIMEOUT); this file runs in its own process.
    process.env["TRACKLAYER_REQUEST_TIMEOUT"] = `${REQUEST_TIMEOUT_MS} millis`
    // Hundreds of requests a second from one key are the point here, not the rate limit (security.test.ts).
    process.env["TRACKLAYER_RATE_LIMIT"] = "0"
    h = await startHarness({
      config: {
        sources: [
          AmplitudeCohorts.source({ id: "amplitude-cohorts", settings: Config.succeed({ secret: COHORT_SECRET }) })
        ]
      }
    })
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  const send = async (
    path: string,
    body: string | Uint8Array,
    headers: Record<string, string> = { authorization: `Bearer ${WRITE_KEY}` }
  ): Promise<Answer> => {
    const res = await fetch(`${h.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : new Blob([new Uint8Array(body)])
    })
    const text = await res.text()
    let json: unknown = undefined
    try {
      json = JSON.parse(text)
    } catch { /* checked below */ }
    return { status: res.status, json, text }
  }
  const cohorts = (body: string | Uint8Array, secret = COHORT_SECRET) =>
    send("/v1/sources/amplitude-cohorts", body, { "x-tracklayer-secret": secret })

  /** A 4xx is `{ error: { code, message } }` with both non-empty; nothing is ever a 5xx. */
  const expectRefusalOrOk = (a: Answer) => {
    expect(a.status < 500, `status ${a.status}: ${a.text.slice(0, 300)}`).toBe(true)
    if (a.status >= 400) {
      expect(a.status).toBeGreaterThanOrEqual(400)
      expect(Object.keys(a.json ?? {})).toEqual(["error"])
      expect(typeof a.json.error.code).toBe("string")
      expect(a.json.error.code).toMatch(/^[a-z_]+$/)
      expect(typeof a.json.error.message).toBe("string")
      expect(a.json.error.message.length).toBeGreaterThan(0)
    } else {
      expect(a.status).toBe(200)
    }
  }

  /**
   * Per-item results: one per input, in order; an item the contract's own decoder refuses is `rejected` with
   * `{ path, message }` errors, the first of them at the decoder's first path.
   */
  const expectResults = (
    a: Answer,
    inputs: ReadonlyArray<unknown>,
    decode: (input: unknown) => Either.Either<unknown, ReadonlyArray<Contract.FieldError>>
  ) => {
    expectRefusalOrOk(a)
    if (a.status !== 200) return
    expect(a.json.results.length).toBe(inputs.length)
    a.json.results.forEach((r: any, i: number) => {
      expect(["accepted", "duplicate", "rejected"]).toContain(r.status)
      const expected = decode(inputs[i])
      if (Either.isLeft(expected)) {
        expect(r.status).toBe("rejected")
        expect(r.errors.map((e: any) => e.path)).toContain(expected.left[0]!.path)
      }
      if (r.status === "rejected") {
        expect(r.errors.length).toBeGreaterThan(0)
        for (const e of r.errors) {
          expect(typeof e.path).toBe("string")
          expect(e.path.length).toBeGreaterThan(0)
          expect(typeof e.message).toBe("string")
          expect(e.message.length).toBeGreaterThan(0)
        }
      }
    })
  }

  // ----------------------------------------------------------------------------------------------------------------
  // Generators
  // ----------------------------------------------------------------------------------------------------------------

  const nest = (levels: number, leaf: unknown, asArray: boolean): unknown => {
    let v = leaf
    for (let i = 0; i < levels; i++) v = asArray ? [v] : { a: v }
    return v
  }

  /** Values no field expects: wrong types, huge strings, deep nesting, NUL, lone surrogates. */
  const nasty: fc.Arbitrary<unknown> = fc.oneof(
    fc.constantFrom<unknown>(
      null,
      true,
      0,
      -1,
      1.5,
      "",
      " ",
      [],
      {},
      "a\u0000b",
      "\u0000",
      "\uD800",
      "x\uDC00y",
      "\uDBFF\uDBFF",
      "ok\uD83D\uDE00", // a valid pair: fine wherever a string is
      "x".repeat(9000),
      "é".repeat(100_000),
      nest(1000, "deep", false),
      nest(1000, 1, true),
      { "\u0000": 1 },
      { "\uDFFF": "x" },
      { ["k".repeat(10_000)]: 1 },
      Array.from({ length: 2000 }, (_, i) => i)
    ),
    fc.jsonValue({ maxDepth: 3 }),
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.string({ unit: fc.constantFrom("\u0000", "\uD800", "\uDC00", "a", "\u00e9"), maxLength: 8 })
  )

  const FIELDS = [
    "event_id",
    "event",
    "timestamp",
    "user_id",
    "device_id",
    "user",
    "user.email",
    "user.phone",
    "user.email_sha256",
    "context",
    "context.ip",
    "context.click_ids",
    "context.click_ids.gclid",
    "context.experiments",
    "consent",
    "consent.analytics",
    "properties",
    "properties.value",
    "properties.currency",
    "properties.order_id",
    "properties.anything",
    "user_properties",
    "user_properties.plan",
    "extra_field"
  ]

  const setPath = (target: Record<string, any>, path: string, value: unknown) => {
    const parts = path.split(".")
    let o = target
    for (const p of parts.slice(0, -1)) {
      if (typeof o[p] !== "object" || o[p] === null || Array.isArray(o[p])) o[p] = {}
      o = o[p]
    }
    o[parts.at(-1)!] = value
  }

  /** A valid event (a purchase or a sign-up) with 0–3 fields replaced by nasty values. */
  const mutatedEvent = (prefix: string) =>
    fc.record({
      purchase: fc.boolean(),
      n: fc.nat(1_000_000),
      mutations: fc.array(fc.tuple(fc.constantFrom(...FIELDS), nasty), { maxLength: 3 })
    }).map(({ mutations, n, purchase }) => {
      const e: Record<string, any> = {
        event_id: `${prefix}_${run}_${n}`,
        event: purchase ? "purchase" : "sign_up",
        timestamp: new Date(Date.now() - 60_000).toISOString(),
        user_id: `usr_fz_${n % 50}`,
        user: { email: `fz${n % 50}@example.com` },
        ...(purchase ? { properties: { value: 10, currency: "EUR", order_id: `ord_fz_${run}_${n}` } } : {})
      }
      for (const [path, value] of mutations) setPath(e, path, value)
      return e
    })

  const decodeEvent = (input: unknown) => Contract.decodeEvent(input, Date.now())
  const decodeConsent = (input: unknown) =>
    Contract.decodeConsentUpdate(input, Date.now(), ["analytics", "advertising", "crm", "personalisation"], () => "x")

  const params = (seed: number) => ({ seed, numRuns: RUNS, endOnFailure: true })

  // ----------------------------------------------------------------------------------------------------------------
  // POST /v1/events
  // ----------------------------------------------------------------------------------------------------------------

  it("POST /v1/events: any JSON body is answered 200 or a 4xx with a clear error, never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.record({ events: fc.jsonValue({ maxDepth: 4 }) })),
        async (body) => {
          run++
          const a = await send("/v1/events", JSON.stringify(body))
          expectRefusalOrOk(a)
          const events = (body as { events?: unknown } | null)?.events
          if (a.status === 200) expectResults(a, events as ReadonlyArray<unknown>, decodeEvent)
          // Only a well-formed envelope can be a 200.
          if (!(Array.isArray(events) && events.length > 0 && Object.keys(body as object).length === 1)) {
            expect(a.status).toBe(400)
          }
        }
      ),
      params(SEED)
    )
  }, 60_000)

  it("POST /v1/events: envelopes of broken events get one result each, naming the field", async () => {
    let accepted = 0
    await fc.assert(
      fc.asyncProperty(fc.array(mutatedEvent("fz"), { minLength: 1, maxLength: 5 }), async (events) => {
        run++
        const a = await send("/v1/events", JSON.stringify({ events }))
        expectResults(a, events, decodeEvent)
        accepted += a.status === 200 ? a.json.results.filter((r: any) => r.status === "accepted").length : 0
      }),
      params(SEED + 1)
    )
    // The generator keeps some events intact: the property is not vacuous.
    expect(accepted).toBeGreaterThan(20)
  }, 60_000)

  it("POST /v1/events: specific hostile bodies", async () => {
    const ok = { event_id: "fz_ok_1", event: "sign_up", timestamp: new Date().toISOString(), user_id: "u1" }
    const cases: ReadonlyArray<{ scenario: string; body: string; status: number; code?: string; message?: RegExp }> = [
      { scenario: "empty body", body: "", status: 400, code: "malformed_json" },
      { scenario: "not JSON", body: "{events:", status: 400, code: "malformed_json" },
      { scenario: "a bare string", body: "\"events\"", status: 400, code: "bad_request" },
      {
        scenario: "100,000 levels of arrays",
        body: `{"events":${"[".repeat(100_000)}${"]".repeat(100_000)}}`,
        status: 200
      },
      {
        scenario: "100,000 levels of objects inside an event",
        body: JSON.stringify({ events: [{ ...ok, event_id: "fz_deep_1" }] }).replace(
          /}]}$/,
          `,"properties":${"{\"a\":".repeat(100_000)}1${"}".repeat(100_000)}}]}`
        ),
        status: 200
      },
      {
        scenario: "escaped NUL and lone surrogate",
        body: `{"events":[{"event_id":"fz_esc\\u0000","event":"sign_up","timestamp":"${ok.timestamp}",` +
          `"user_id":"\\ud800"}]}`,
        status: 200
      },
      {
        scenario: "a number beyond double range (JSON.parse reads Infinity; it would be stored as null)",
        body: JSON.stringify({ events: [{ ...ok, event_id: "fz_inf_1" }] }).replace(
          /}]}$/,
          `,"properties":{"n":-1e400}}]}`
        ),
        status: 400,
        code: "bad_request",
        message: /^events\[0\]\.properties\.n: a number beyond the range of a double \(±1\.8e308\)$/
      },
      { scenario: "501 events", body: JSON.stringify({ events: Array.from({ length: 501 }, () => ok) }), status: 413 },
      { scenario: "an unknown top-level field", body: JSON.stringify({ events: [ok], x: 1 }), status: 400 }
    ]
    for (const c of cases) {
      const a = await send("/v1/events", c.body)
      expect({ scenario: c.scenario, status: a.status }).toEqual({ scenario: c.scenario, status: c.status })
      expectRefusalOrOk(a)
      if (c.code !== undefined) expect(a.json.error.code).toBe(c.code)
      if (c.message !== undefined) expect(a.json.error.message).toMatch(c.message)
      if (a.status === 200) {
        expect(a.json.results.every((r: any) => r.status === "rejected")).toBe(true)
      }
    }
    const deep = await send("/v1/events", cases[4]!.body)
    expect(deep.json.results).toEqual([{
      event_id: "fz_deep_1",
      status: "rejected",
      errors: [{
        path: `properties${".a".repeat(Contract.MAX_DEPTH - 1)}`,
        message: `is nested deeper than ${Contract.MAX_DEPTH} levels`
      }]
    }])
  }, 60_000)

  it("invalid UTF-8 anywhere in a body is a 400 saying so, on every endpoint", async () => {
    const INVALID: ReadonlyArray<ReadonlyArray<number>> = [
      [0xff],
      [0x80],
      [0xc0, 0xaf], // overlong "/"
      [0xed, 0xa0, 0x80], // an encoded surrogate
      [0xf8, 0x88, 0x80, 0x80, 0x80],
      [0xe2, 0x82] // truncated
    ]
    const valid = JSON.stringify({
      events: [{ event_id: "fz_utf8", event: "sign_up", timestamp: new Date().toISOString(), user_id: "u_é" }]
    })
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...INVALID),
        fc.nat(valid.length),
        fc.constantFrom("/v1/events", "/v1/consent", "/v1/sources/amplitude-cohorts"),
        async (bad, at, path) => {
          const bytes = Buffer.from(valid, "utf8")
          // Cut at a character boundary (before an ASCII byte or a lead byte) so only `bad` is invalid.
          let cut = Math.min(at, bytes.length)
          while (cut < bytes.length && (bytes[cut]! & 0xc0) === 0x80) cut++
          const body = Buffer.concat([bytes.subarray(0, cut), Buffer.from(bad), bytes.subarray(cut)])
          const a = path.startsWith("/v1/sources") ? await cohorts(body) : await send(path, body)
          expectRefusalOrOk(a)
          expect(a.status).toBe(400)
          expect(a.json.error).toEqual({ code: "bad_request", message: "request body is not valid UTF-8" })
        }
      ),
      params(SEED + 2)
    )
  }, 60_000)

  // ----------------------------------------------------------------------------------------------------------------
  // POST /v1/consent
  // ----------------------------------------------------------------------------------------------------------------

  it("POST /v1/consent: random and broken updates get one result each, naming the field", async () => {
    const update = fc.record({
      n: fc.nat(1_000_000),
      mutations: fc.array(
        fc.tuple(
          fc.constantFrom("update_id", "timestamp", "user_id", "user", "user.email", "consent", "consent.advertising"),
          nasty
        ),
        { maxLength: 3 }
      )
    }).map(({ mutations, n }) => {
      const u: Record<string, any> = {
        update_id: `cu_fz_${run}_${n}`,
        user_id: `usr_fz_${n % 50}`,
        consent: { advertising: n % 2 === 0 }
      }
      for (const [path, value] of mutations) setPath(u, path, value)
      return u
    })
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          { weight: 4, arbitrary: fc.array(update, { minLength: 1, maxLength: 5 }).map((updates) => ({ updates })) },
          { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) }
        ),
        async (body) => {
          run++
          const a = await send("/v1/consent", JSON.stringify(body))
          const updates = (body as { updates?: unknown } | null)?.updates
          if (Array.isArray(updates)) expectResults(a, updates, decodeConsent)
          else {
            expectRefusalOrOk(a)
            expect(a.status).toBe(400)
          }
        }
      ),
      params(SEED + 3)
    )
  }, 60_000)

  // ----------------------------------------------------------------------------------------------------------------
  // POST /v1/sources/amplitude-cohorts
  // ----------------------------------------------------------------------------------------------------------------

  it(
    "POST /v1/sources/amplitude-cohorts: random webhooks are stored or refused with a 4xx naming the field",
    async () => {
      const webhook = fc.record({
        n: fc.nat(1_000_000),
        users: fc.array(
          fc.oneof(
            { weight: 3, arbitrary: fc.stringMatching(/^u_[a-z0-9]{1,8}$/) },
            { weight: 1, arbitrary: nasty }
          ),
          { maxLength: 4 }
        ),
        mutations: fc.array(
          fc.tuple(
            fc.constantFrom("cohort_id", "cohort_name", "in_cohort", "computed_time", "message_id", "users", "extra"),
            nasty
          ),
          { maxLength: 2 }
        )
      }).map(({ mutations, n, users }) => {
        const w: Record<string, any> = {
          cohort_name: "Fuzz cohort",
          cohort_id: `coh_fz_${n % 5}`,
          in_cohort: n % 2 === 0,
          computed_time: String(Math.floor(Date.now() / 1000)),
          message_id: `msg_fz_${run}_${n}`,
          users: users.map((user_id) => ({ user_id }))
        }
        for (const [path, value] of mutations) setPath(w, path, value)
        return w
      })
      let stored = 0
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            { weight: 4, arbitrary: webhook },
            { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
            {
              weight: 1,
              arbitrary: fc.record({
                user_id: fc.oneof(fc.constant("u_tr"), nasty),
                user_properties: fc.dictionary(
                  fc.oneof(fc.constant("[Amplitude] Fuzz: coh_tr"), fc.string({ maxLength: 8 })),
                  nasty,
                  { maxKeys: 3 }
                )
              })
            }
          ),
          async (body) => {
            run++
            const a = await cohorts(JSON.stringify(body))
            expectRefusalOrOk(a)
            if (a.status === 200) {
              expect(Object.keys(a.json).sort()).toEqual(["batches", "duplicates", "members", "source", "stored"])
              stored += a.json.stored
            }
          }
        ),
        params(SEED + 4)
      )
      expect(stored).toBeGreaterThan(20)
    },
    60_000
  )

  it("POST /v1/sources/amplitude-cohorts: values the store cannot hold are a 400 naming the field, not a 503", async () => {
    const webhook = (users: ReadonlyArray<unknown>, extra: object = {}) => ({
      cohort_name: "Fuzz cohort",
      cohort_id: "coh_fz_x",
      in_cohort: true,
      computed_time: String(Math.floor(Date.now() / 1000)),
      message_id: `msg_fz_x_${run++}`,
      users,
      ...extra
    })
    const longId = Array.from({ length: 500 }, (_, i) => (i * 2654435761 >>> 0).toString(16).padStart(8, "0")).join("")
    const cases: ReadonlyArray<{ scenario: string; body: string; status: number; message?: string | RegExp }> = [
      {
        scenario: "a NUL in a user id",
        body: JSON.stringify(webhook([{ user_id: "u_1" }, { user_id: "u\u0000x" }])),
        status: 400,
        message: "users[1].user_id: contains a NUL character or an unpaired UTF-16 surrogate"
      },
      {
        scenario: "a lone surrogate in the cohort name",
        body: JSON.stringify(webhook([{ user_id: "u_1" }], { cohort_name: "a\uDC00" })),
        status: 400,
        message: "cohort_name: contains a NUL character or an unpaired UTF-16 surrogate"
      },
      {
        // Longer than a B-tree index entry may be (about 2,700 bytes): it must be refused, not fail the store.
        scenario: "a 4,000-character user id (incompressible)",
        body: JSON.stringify(webhook([{ user_id: longId }])),
        status: 400,
        message: "users[0].user_id: is 4000 characters long; at most 1024 are accepted"
      },
      {
        // The plugin digests the body recursively (canonicalJson): refused as a whole, the gateway unharmed.
        scenario: "100,000 levels of nesting in cohort traits (no message id: the body is digested)",
        body: `{"user_id":"u_deep","user_properties":{"[Amplitude] Deep: coh_deep":true,"x":${"[".repeat(100_000)}${
          "]".repeat(100_000)
        }}}`,
        status: 400,
        message: /^body: /
      }
    ]
    for (const c of cases) {
      const a = await cohorts(c.body)
      expect({ scenario: c.scenario, status: a.status, text: a.text.slice(0, 300) }).toMatchObject({
        scenario: c.scenario,
        status: c.status
      })
      expectRefusalOrOk(a)
      if (typeof c.message === "string") expect(a.json.error).toEqual({ code: "bad_request", message: c.message })
      if (c.message instanceof RegExp) expect(a.json.error.message).toMatch(c.message)
    }
  })

  it("POST /v1/sources/amplitude-cohorts: a missing or wrong secret is a 401 before the body is looked at", async () => {
    const body = JSON.stringify({ cohort_id: "c" })
    expect((await cohorts(body, "tl-fuzz-not-the-secret")).json).toEqual({
      error: { code: "unauthorized", message: "x-tracklayer-secret: the x-tracklayer-secret header is not the secret" }
    })
    const none = await send("/v1/sources/amplitude-cohorts", body, {})
    expect(none.status).toBe(401)
    expect(none.json.error.code).toBe("unauthorized")
  })

  // ----------------------------------------------------------------------------------------------------------------
  // Size and time
  // ----------------------------------------------------------------------------------------------------------------

  const head = (path: string, headers: ReadonlyArray<string>) =>
    [`POST ${path} HTTP/1.1`, "Host: 127.0.0.1", `Authorization: Bearer ${WRITE_KEY}`, ...headers].join("\r\n")
  const TEN_MB = 10 * 1024 * 1024

  it("a declared 10 MB body is a 413 before the body is read, and the connection is closed", async () => {
    const a = await rawRequest(
      h.url,
      head("/v1/events", ["Content-Type: application/json", `Content-Length: ${TEN_MB}`]),
      async (write) => {
        await write("{\"events\":[")
        await write(Buffer.alloc(64 * 1024, 0x20))
      },
      10_000
    )
    expect(a.gaveUp).toBe(false)
    expect(a.status).toBe(413)
    expect(JSON.parse(a.body)).toEqual({
      error: {
        code: "payload_too_large",
        message: `request body is ${TEN_MB} bytes; the limit is ${Contract.MAX_REQUEST_BYTES} bytes (1 MiB)`
      }
    })
    expect(a.headers["connection"]).toBe("close")
    expect(a.closed).toBe(true)
  })

  it("a chunked 10 MB body is a 413 once 1 MiB is read; the rest is never sent", async () => {
    for (const path of ["/v1/events", "/v1/consent"]) {
      const a = await rawRequest(
        h.url,
        head(path, ["Content-Type: application/json", "Transfer-Encoding: chunked"]),
        async (write, answered) => {
          const chunk = Buffer.alloc(64 * 1024, 0x20)
          for (let total = 0; total < TEN_MB && !answered(); total += chunk.length) {
            await write(`${chunk.length.toString(16)}\r\n`)
            await write(chunk)
            await write("\r\n")
          }
        },
        30_000
      )
      expect(a.gaveUp).toBe(false)
      expect(a.status).toBe(413)
      expect(JSON.parse(a.body)).toEqual({
        error: {
          code: "payload_too_large",
          message: `request body exceeds the limit of ${Contract.MAX_REQUEST_BYTES} bytes (1 MiB)`
        }
      })
      expect(a.sent).toBeLessThan(TEN_MB)
      expect(a.headers["connection"]).toBe("close")
    }
    // The same through fetch, streaming: the client reads the 413 (not a connection reset).
    const chunk = new Uint8Array(64 * 1024).fill(0x20)
    let pulled = 0
    const res = await fetch(`${h.url}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${WRITE_KEY}`, "content-type": "application/json" },
      body: new ReadableStream({
        pull: (c) => {
          if (pulled >= TEN_MB) return c.close()
          pulled += chunk.length
          c.enqueue(chunk)
        }
      }),
      duplex: "half"
    } as RequestInit)
    expect(res.status).toBe(413)
    expect(((await res.json()) as any).error.code).toBe("payload_too_large")
  }, 60_000)

  it("a slow-loris body (1 byte per 200 ms) is cut off by the request timeout; the gateway keeps serving", async () => {
    const body = JSON.stringify({
      events: [{ event_id: "fz_loris", event: "sign_up", timestamp: new Date().toISOString(), user_id: "u" }]
    })
    // At 1 byte per 200 ms the whole body would take body.length / 5 seconds; the timeout is 2 s.
    expect(body.length / 5).toBeGreaterThan(15)
    const slow = (path: string, headers: ReadonlyArray<string>) =>
      rawRequest(
        h.url,
        head(path, ["Content-Type: application/json", ...headers]),
        async (write, answered) => {
          for (let i = 0; i < body.length && !answered(); i++) {
            await write(body[i]!)
            await sleep(200)
          }
        },
        45_000
      )
    const [declared, chunked] = await Promise.all([
      slow("/v1/events", [`Content-Length: ${body.length}`]),
      slow("/v1/sources/amplitude-cohorts", [`X-Tracklayer-Secret: ${COHORT_SECRET}`, `Content-Length: ${body.length}`])
    ])
    for (const a of [declared, chunked]) {
      expect(a.gaveUp).toBe(false)
      expect(a.closed).toBe(true)
      // Cut off long before the body was complete; if anything was answered, it is the timeout.
      expect(a.sent).toBeLessThan(body.length)
      if (a.status !== undefined) expect(a.status).toBe(408)
    }
    // Slow headers are cut off too (headersTimeout).
    const headers = await rawRequest(
      h.url,
      "GET /healthz HTTP/1.1",
      async () => {},
      45_000
    )
    expect(headers.gaveUp).toBe(false)
    expect(headers.closed).toBe(true)
    const health = await fetch(`${h.url}/healthz`)
    expect(health.status).toBe(200)
  }, 60_000)

  // ----------------------------------------------------------------------------------------------------------------
  // Afterwards
  // ----------------------------------------------------------------------------------------------------------------

  it("afterwards the gateway is healthy and every stored row is a well-formed event", async () => {
    const health = await fetch(`${h.url}/healthz`)
    expect(health.status).toBe(200)
    expect(((await health.json()) as any).status).toBe("ok")
    const stored = await h.sql(
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        return yield* store.readAfter(EventStore.origin, 1_000_000)
      }).pipe(
        Effect.provide(
          EventStore.layer.pipe(Layer.provide(Vault.layer), Layer.provide(Vault.layerMasterKey(TEST_MASTER_KEY)))
        )
      )
    )
    const kinds = new Map<string, number>()
    for (const e of stored) kinds.set(e.kind, (kinds.get(e.kind) ?? 0) + 1)
    // All three endpoints stored something (the fuzzers keep valid items among the broken ones).
    // (identity rows are the projector's record of merges: { identifier, from, to, cause }.)
    expect([...kinds.keys()].sort()).toEqual(["audience", "consent", "identity", "track"])
    const now = Date.now()
    const logged = new Set(stored.filter((e) => e.kind !== "identity").map((e) => e.eventId))
    const malformed = stored.flatMap((e) => {
      if (e.kind === "identity") {
        const b = e.event as unknown as Record<string, unknown>
        const ok = Object.keys(b).sort().join() === "cause,from,identifier,to" && typeof b["identifier"] === "string" &&
          logged.has(b["cause"] as string)
        return ok ? [] : [{ kind: e.kind, eventId: e.eventId, problems: [JSON.stringify(b).slice(0, 200)] }]
      }
      const decoded = Contract.decodeEvent(e.event, now)
      const problems = [
        ...(Either.isLeft(decoded) ? decoded.left.map((x) => `${x.path}: ${x.message}`) : []),
        ...(e.event.event_id === e.eventId ? [] : ["event_id differs from its column"]),
        ...(e.event.timestamp === e.occurredAt.getTime() ? [] : ["timestamp differs from occurred_at"]),
        ...(JSON.stringify(e.event).length <= Contract.MAX_REQUEST_BYTES ? [] : ["larger than a request"])
      ]
      return problems.length > 0 ? [{ kind: e.kind, eventId: e.eventId.slice(0, 80), problems }] : []
    })
    expect(malformed).toEqual([])
  }, 60_000)
})
