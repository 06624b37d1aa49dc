import { assert, describe, it } from "@effect/vitest"
import Ajv from "ajv"
import { Either, FastCheck, JSONSchema } from "effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { render, SCHEMA_PATH } from "../scripts/gen-json-schema.js"
import { type CanonicalEvent, decodeEvent, type FieldError, PublishedEnvelope } from "../src/Contract.js"

const NOW = Date.UTC(2026, 3, 24, 12)
const T0 = Date.UTC(2026, 3, 24, 8)

/** The full example of EVENT-CONTRACT.md. */
const fullExample = {
  event_id: "evt_5c1f0e",
  event: "purchase",
  timestamp: "2026-04-24T08:00:00Z",
  user_id: "usr_8421",
  device_id: "web_91f3",
  user: {
    email: "Jane.Doe@Example.com",
    phone: "+49 151 23456789",
    first_name: "Jane",
    last_name: "Doe",
    city: "Berlin",
    region: "BE",
    postal_code: "10115",
    country: "DE",
    date_of_birth: "1990-02-17",
    gender: "f"
  },
  context: {
    source: "server",
    ip: "203.0.113.7",
    user_agent: "Mozilla/5.0 (X11; Linux x86_64)",
    page_url: "https://shop.example.com/checkout/complete",
    click_ids: { fbc: "fb.1.1713950000000.AbCdEf", fbp: "fb.1.1713940000000.123456789", gclid: "Cj0KCQ-test" },
    experiments: [{ experiment_key: "paywall_copy", variant: "b" }]
  },
  consent: { analytics: true, advertising: true, crm: false },
  properties: { value: 129, currency: "USD", order_id: "ord_1001" },
  user_properties: { plan: "pro", country: "DE" }
}

const minimal = { event_id: "evt_1", event: "sign_up", timestamp: "2026-04-24T08:00:00Z", user_id: "usr_1" }

const readSchemaFile = () => readFileSync(SCHEMA_PATH, "utf8")

describe("docs/event-contract.schema.json", () => {
  it("is exactly the schema generated from PublishedEnvelope (run `npm run gen:schema` when this fails)", () => {
    const text = readSchemaFile()
    assert.strictEqual(text, render())
    assert.deepStrictEqual(JSON.parse(text), JSON.parse(JSON.stringify(JSONSchema.make(PublishedEnvelope))))
    assert.isTrue(text.endsWith("}\n"))
  })

  it("lives at docs/event-contract.schema.json, titled for producers", () => {
    assert.strictEqual(
      SCHEMA_PATH,
      fileURLToPath(new URL("../../../docs/event-contract.schema.json", import.meta.url))
    )
    const schema = JSON.parse(readSchemaFile())
    const event = schema.$defs.Event
    assert.strictEqual(schema.$ref, "#/$defs/TrackLayerEventBatch")
    assert.strictEqual(event.properties.event_id.title, "Event ID")
    assert.strictEqual(event.properties.event_id.maxLength, 128)
    assert.strictEqual(schema.$defs.User.properties.email.title, "Email")
    assert.strictEqual(schema.$defs.TrackLayerEventBatch.properties.events.maxItems, 500)
    // No generated filter names ("maxLength(128)", "int") left as titles.
    const titles = [...titlesOf(schema)].filter((t) => /^[a-zA-Z]+\(.*\)$|^int$/.test(t))
    assert.deepStrictEqual(titles, [])
  })

  it("`gen-json-schema --check` exits 0 when the file is current and 1, naming the fix, when it differs", () => {
    const script = fileURLToPath(new URL("../scripts/gen-json-schema.ts", import.meta.url))
    const dir = mkdtempSync(join(tmpdir(), "tl-schema-"))
    const current = join(dir, "current.json")
    const stale = join(dir, "stale.json")
    writeFileSync(current, render())
    writeFileSync(stale, render().replace("\"maxLength\": 128", "\"maxLength\": 64"))
    const run = (path: string) =>
      spawnSync(process.execPath, ["--import", "tsx", script, "--check", path], {
        cwd: fileURLToPath(new URL("../../..", import.meta.url)),
        encoding: "utf8"
      })
    const ok = run(current)
    assert.strictEqual(ok.status, 0)
    assert.match(ok.stdout, /current\.json is up to date\n$/)
    const bad = run(stale)
    assert.strictEqual(bad.status, 1)
    assert.include(bad.stderr, "stale.json differs from the schema generated from Contract.PublishedEnvelope")
    assert.include(bad.stderr, "Run `npm run gen:schema`")
    assert.strictEqual(readFileSync(stale, "utf8").includes("\"maxLength\": 64"), true, "--check never writes")
    const missing = run(join(dir, "absent.json"))
    assert.strictEqual(missing.status, 1)
    assert.include(missing.stderr, "absent.json is missing")
  })

  it("accepts the documented example and rejects what the decoder rejects structurally", () => {
    const validate = new Ajv({ allErrors: true }).compile(JSON.parse(readSchemaFile()))
    assert.isTrue(validate({ events: [fullExample] }))
    assert.isTrue(validate({ events: [{ ...minimal, timestamp: T0 }] }))
    const errorsOf = (body: unknown) => {
      assert.isFalse(validate(body))
      return (validate.errors ?? []).map((e) => `${e.dataPath} ${e.keyword} ${JSON.stringify(e.params)}`)
    }
    assert.deepStrictEqual(errorsOf({ events: [{ ...minimal, foo: 1 }] }), [
      ".events[0] additionalProperties {\"additionalProperty\":\"foo\"}"
    ])
    assert.deepStrictEqual(errorsOf({ events: [{ ...minimal, user: { email_sha256: "A".repeat(64) } }] }), [
      ".events[0].user.email_sha256 pattern {\"pattern\":\"^[0-9a-f]{64}$\"}"
    ])
    assert.isFalse(validate({ events: [] }))
    assert.isFalse(validate({ events: [{ ...minimal, timestamp: "2026-04-24T08:00:00" }] }))
  })
})

describe("docs/event-contract.md", () => {
  const md = readFileSync(fileURLToPath(new URL("../../../docs/event-contract.md", import.meta.url)), "utf8")
  const blocks = [...md.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!)

  it("links the JSON Schema", () => {
    assert.include(md, "](./event-contract.schema.json)")
  })

  it("its request example is the EVENT-CONTRACT.md example, valid for the schema and the decoder", () => {
    const request = JSON.parse(blocks[0]!)
    assert.deepStrictEqual(request, { events: [fullExample] })
    const validate = new Ajv().compile(JSON.parse(readSchemaFile()))
    assert.isTrue(validate(request))
    assert.strictEqual(decodeOk(request.events[0]).timestamp, T0)
  })

  it("its smallest event is valid", () => {
    const smallest = JSON.parse(blocks[1]!)
    assert.deepStrictEqual(Object.keys(smallest), ["event_id", "event", "timestamp", "device_id"])
    assert.strictEqual(decodeOk(smallest).timestamp, T0)
  })
})

/** Every `title` in a JSON Schema document. */
function* titlesOf(node: unknown): Generator<string> {
  if (Array.isArray(node)) {
    for (const n of node) yield* titlesOf(n)
  } else if (typeof node === "object" && node !== null) {
    for (const [k, v] of Object.entries(node)) {
      if (k === "title" && typeof v === "string") yield v
      else yield* titlesOf(v)
    }
  }
}

const decodeOk = (input: unknown): CanonicalEvent => {
  const r = decodeEvent(input, NOW)
  if (Either.isLeft(r)) assert.fail(`expected a valid event, got ${JSON.stringify(r.left)}`)
  return r.right
}

const decodeErrors = (input: unknown): ReadonlyArray<FieldError> => {
  const r = decodeEvent(input, NOW)
  if (Either.isRight(r)) assert.fail(`expected errors, got ${JSON.stringify(r.right)}`)
  return r.left
}

describe("decodeEvent", () => {
  it("decodes the full example and normalises the timestamp to epoch ms", () => {
    const e = decodeOk(fullExample)
    assert.strictEqual(e.timestamp, Date.UTC(2026, 3, 24, 8))
    assert.deepStrictEqual(e, { ...fullExample, timestamp: T0 })
  })

  const validTimestamps: ReadonlyArray<{ scenario: string; timestamp: string | number; expected: number }> = [
    { scenario: "epoch milliseconds", timestamp: T0, expected: T0 },
    { scenario: "+01:00 offset", timestamp: "2026-04-24T09:00:00+01:00", expected: T0 },
    { scenario: "+0100 offset", timestamp: "2026-04-24T09:00:00+0100", expected: T0 },
    { scenario: "-05:30 offset", timestamp: "2026-04-24T02:30:00-05:30", expected: T0 },
    { scenario: "fractional seconds", timestamp: "2026-04-24T08:00:00.250Z", expected: T0 + 250 },
    { scenario: "without seconds", timestamp: "2026-04-24T08:00Z", expected: T0 },
    { scenario: "exactly 2000-01-01", timestamp: "2000-01-01T00:00:00Z", expected: Date.UTC(2000, 0, 1) },
    { scenario: "24 h ahead (the skew limit)", timestamp: NOW + 86_400_000, expected: NOW + 86_400_000 },
    { scenario: "29 February in a leap year", timestamp: "2024-02-29T00:00:00Z", expected: Date.UTC(2024, 1, 29) }
  ]
  for (const c of validTimestamps) {
    it(`timestamp: ${c.scenario}`, () => {
      assert.strictEqual(decodeOk({ ...minimal, timestamp: c.timestamp }).timestamp, c.expected)
    })
  }

  const rejected: ReadonlyArray<{ scenario: string; input: unknown; expected: ReadonlyArray<FieldError> }> = [
    {
      scenario: "ISO timestamp without offset",
      input: { ...minimal, timestamp: "2026-04-24T08:00:00" },
      expected: [
        {
          path: "timestamp",
          message: "Expected ISO 8601 date-time with offset, e.g. 2026-04-24T08:00:00Z, actual \"2026-04-24T08:00:00\""
        },
        { path: "timestamp", message: "Expected number, actual \"2026-04-24T08:00:00\"" }
      ]
    },
    {
      scenario: "timestamp before 2000",
      input: { ...minimal, timestamp: "1999-12-31T23:59:59Z" },
      expected: [{ path: "timestamp", message: "before 2000-01-01T00:00:00Z" }]
    },
    {
      scenario: "timestamp more than 24 h in the future",
      input: { ...minimal, timestamp: NOW + 86_400_001 },
      expected: [{ path: "timestamp", message: "more than 24 hours in the future" }]
    },
    {
      scenario: "impossible calendar day (30 February)",
      input: { ...minimal, timestamp: "2026-02-30T08:00:00Z" },
      expected: [{ path: "timestamp", message: "not a valid date-time" }]
    },
    {
      scenario: "month 13",
      input: { ...minimal, timestamp: "2026-13-01T08:00:00Z" },
      expected: [{ path: "timestamp", message: "not a valid date-time" }]
    },
    {
      scenario: "fractional epoch milliseconds",
      input: { ...minimal, timestamp: 1.5 },
      expected: [
        { path: "timestamp", message: "Expected string, actual 1.5" },
        { path: "timestamp", message: "Expected epoch milliseconds, actual 1.5" }
      ]
    },
    {
      scenario: "unknown top-level field",
      input: { ...minimal, foo: 1 },
      expected: [{ path: "foo", message: "unknown field" }]
    },
    {
      scenario: "unknown field inside user",
      input: { ...minimal, user: { email: "a@b.c", mail: "a@b.c" } },
      expected: [{ path: "user.mail", message: "unknown field" }]
    },
    {
      scenario: "unknown field inside an experiment",
      input: { ...minimal, context: { experiments: [{ experiment_key: "k", variant: "v", arm: "x" }] } },
      expected: [{ path: "context.experiments[0].arm", message: "unknown field" }]
    },
    {
      scenario: "no identifier at all",
      input: { event_id: "evt_1", event: "sign_up", timestamp: T0, user: { first_name: "Jane" } },
      expected: [{
        path: "user_id",
        message: "at least one identifier is required: user_id, device_id, user.email, user.phone, " +
          "user.email_sha256 or user.phone_sha256"
      }]
    },
    {
      scenario: "email_sha256 in upper case",
      input: { ...minimal, user: { email_sha256: "A".repeat(64) } },
      expected: [{
        path: "user.email_sha256",
        message: `Expected a SHA-256 digest as 64 lowercase hex characters, actual "${"A".repeat(64)}"`
      }]
    },
    {
      scenario: "phone_sha256 of 63 characters",
      input: { ...minimal, user: { phone_sha256: "a".repeat(63) } },
      expected: [{
        path: "user.phone_sha256",
        message: `Expected a SHA-256 digest as 64 lowercase hex characters, actual "${"a".repeat(63)}"`
      }]
    },
    {
      scenario: "event_id of 129 characters",
      input: { ...minimal, event_id: "e".repeat(129) },
      expected: [{
        path: "event_id",
        message: `Expected the idempotency key, 1–128 characters, actual "${"e".repeat(129)}"`
      }]
    },
    {
      scenario: "empty event_id",
      input: { ...minimal, event_id: "" },
      expected: [{ path: "event_id", message: "Expected a string at least 1 character(s) long, actual \"\"" }]
    },
    {
      scenario: "null user_id",
      input: { ...minimal, user_id: null },
      expected: [{ path: "user_id", message: "Expected string, actual null" }]
    },
    {
      scenario: "missing required fields",
      input: { user_id: "usr_1" },
      expected: [
        { path: "event_id", message: "is missing" },
        { path: "event", message: "is missing" },
        { path: "timestamp", message: "is missing" }
      ]
    },
    {
      scenario: "consent that is not a boolean",
      input: { ...minimal, consent: { advertising: "yes" } },
      expected: [{ path: "consent.advertising", message: "Expected boolean, actual \"yes\"" }]
    },
    {
      scenario: "not an object",
      input: "purchase",
      expected: [{ path: "(event)", message: "Expected Event, actual \"purchase\"" }]
    }
  ]
  for (const c of rejected) {
    it(`rejects: ${c.scenario}`, () => {
      assert.deepStrictEqual(decodeErrors(c.input), c.expected)
    })
  }

  it("accepts a 128-character event_id", () => {
    assert.strictEqual(decodeOk({ ...minimal, event_id: "e".repeat(128) }).event_id, "e".repeat(128))
  })

  it("keeps unknown keys inside properties and user_properties", () => {
    const e = decodeOk({
      ...minimal,
      properties: { coupon: "SPRING", nested: { a: [1, 2] } },
      user_properties: { favourite_colour: "teal", seats: 3 }
    })
    assert.deepStrictEqual(e.properties, { coupon: "SPRING", nested: { a: [1, 2] } })
    assert.deepStrictEqual(e.user_properties, { favourite_colour: "teal", seats: 3 })
  })

  const identifiers: ReadonlyArray<{ scenario: string; input: Record<string, unknown> }> = [
    { scenario: "device_id", input: { device_id: "web_1" } },
    { scenario: "user.email", input: { user: { email: "a@example.com" } } },
    { scenario: "user.phone", input: { user: { phone: "+4915123456789" } } },
    { scenario: "user.email_sha256", input: { user: { email_sha256: "a".repeat(64) } } },
    { scenario: "user.phone_sha256", input: { user: { phone_sha256: "0".repeat(64) } } }
  ]
  for (const c of identifiers) {
    it(`accepts ${c.scenario} as the only identifier`, () => {
      const e = decodeOk({ event_id: "evt_1", event: "sign_up", timestamp: T0, ...c.input })
      assert.strictEqual(e.user_id, undefined)
      assert.strictEqual(e.event_id, "evt_1")
    })
  }

  it("never throws on arbitrary JSON: Right, or a non-empty Left of errors with a path and a message", () => {
    // Arbitrary JSON values, plus near-events (valid base with arbitrary fields overridden) to reach deeper rules.
    const nearEvent = FastCheck.record({
      event_id: FastCheck.oneof(FastCheck.string(), FastCheck.jsonValue()),
      event: FastCheck.string(),
      timestamp: FastCheck.oneof(
        FastCheck.integer(),
        FastCheck.date({ noInvalidDate: true }).map((d) => d.toISOString()),
        FastCheck.string()
      ),
      user_id: FastCheck.oneof(FastCheck.string(), FastCheck.jsonValue()),
      user: FastCheck.dictionary(FastCheck.constantFrom("email", "phone", "email_sha256", "x"), FastCheck.jsonValue()),
      properties: FastCheck.jsonValue()
    }, { requiredKeys: [] })
    FastCheck.assert(
      FastCheck.property(FastCheck.oneof(FastCheck.jsonValue(), nearEvent), (input) => {
        const r = decodeEvent(input, NOW)
        if (Either.isRight(r)) {
          assert.isTrue(Number.isFinite(r.right.timestamp))
          return
        }
        assert.isAbove(r.left.length, 0)
        for (const e of r.left) {
          assert.isString(e.path)
          assert.isString(e.message)
          assert.isAbove(e.path.length, 0)
          assert.isAbove(e.message.length, 0)
        }
      }),
      { numRuns: 500 }
    )
  })
})
