/**
 * receive(): exact bodies in, exact audience batches (or exact refusals) out.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Source from "@tracklayer/core/Source"
import { Either } from "effect"
import { AmplitudeCohorts } from "../src/index.js"
import { DOC_WEBHOOK, request, settings, SHARED, T0 } from "./fixtures.js"

const S = settings()
/** The retry window T0 falls in: 1777017600000 / 600000 = 2961696. */
const WINDOW = 2961696

const ok = (
  body: unknown,
  s: AmplitudeCohorts.Settings = S,
  headers?: Record<string, string | undefined>
): ReadonlyArray<Source.AudienceBatch> => {
  const result = AmplitudeCohorts.receiveAt(request(body, headers), s, T0)
  if (Either.isLeft(result)) assert.fail(`refused: ${result.left.message}`)
  return result.right
}

const refused = (
  body: unknown,
  s: AmplitudeCohorts.Settings = S,
  headers?: Record<string, string | undefined>
): { readonly status: number; readonly field: string; readonly message: string } => {
  const result = AmplitudeCohorts.receiveAt(request(body, headers), s, T0)
  if (Either.isRight(result)) return assert.fail(`accepted: ${JSON.stringify(result.right)}`)
  const { field, message, status } = result.left
  assert.strictEqual(result.left._tag, "SourceRequestError")
  return { status, field, message }
}

describe("cohort webhooks", () => {
  it("Amplitude's documented example → one batch keyed by cohort id, at computed_time in ms", () => {
    assert.deepStrictEqual(ok(DOC_WEBHOOK), [{
      messageId: "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
      audience: { key: "7khm89cz", name: "My Test Cohort" },
      at: 1692206763000,
      members: [
        { userId: "user_one@example.com", member: true },
        { userId: "user_two@example.com", member: true },
        { userId: "user_three@example.com", member: true }
      ]
    }])
  })

  it("a leave batch with user_properties: every member false, the properties not carried", () => {
    const body = {
      cohort_name: "Churn risk",
      cohort_id: "a1b2c3d4",
      in_cohort: false,
      computed_time: "1777017600",
      message_id: "0d9c5a1e-7f3b-4c2a-9e8d-1f2e3d4c5b6a::leave::2",
      users: [
        { user_id: "usr_8421", user_properties: { plan: "pro", country: "DE" } },
        { user_id: "usr_9000", user_properties: {} }
      ]
    }
    assert.deepStrictEqual(ok(body), [{
      messageId: "0d9c5a1e-7f3b-4c2a-9e8d-1f2e3d4c5b6a::leave::2",
      audience: { key: "a1b2c3d4", name: "Churn risk" },
      at: T0,
      members: [{ userId: "usr_8421", member: false }, { userId: "usr_9000", member: false }]
    }])
  })

  it("an empty users list is one batch without members", () => {
    assert.deepStrictEqual(ok({ ...DOC_WEBHOOK, users: [] }), [{
      messageId: DOC_WEBHOOK.message_id,
      audience: { key: "7khm89cz", name: "My Test Cohort" },
      at: 1692206763000,
      members: []
    }])
  })

  const badBodies: ReadonlyArray<{
    readonly scenario: string
    readonly body: unknown
    readonly field: string
    readonly message: string
  }> = [
    {
      scenario: "a user without user_id (Amplitude sends no anonymous users)",
      body: { ...DOC_WEBHOOK, users: [{ user_id: "a" }, { user_id: "b" }, { user_id: "c" }, { device_id: "d" }] },
      field: "users[3].user_id",
      message: "users[3].user_id: is missing"
    },
    {
      scenario: "an empty user_id",
      body: { ...DOC_WEBHOOK, users: [{ user_id: "a" }, { user_id: "" }] },
      field: "users[1].user_id",
      message: "users[1].user_id: expected a non-empty user id (Amplitude does not send anonymous users)"
    },
    {
      scenario: "a numeric user_id",
      body: { ...DOC_WEBHOOK, users: [{ user_id: 42 }] },
      field: "users[0].user_id",
      message: "users[0].user_id: Expected string, actual 42"
    },
    {
      scenario: "computed_time as a number",
      body: { ...DOC_WEBHOOK, computed_time: 1692206763 },
      field: "computed_time",
      message: "computed_time: Expected string, actual 1692206763"
    },
    {
      scenario: "computed_time as an ISO date",
      body: { ...DOC_WEBHOOK, computed_time: "2023-08-16T17:26:03Z" },
      field: "computed_time",
      message: "computed_time: expected Unix epoch seconds as a string of digits (\"1692206763\")"
    },
    {
      scenario: "in_cohort as a string",
      body: { ...DOC_WEBHOOK, in_cohort: "true" },
      field: "in_cohort",
      message: "in_cohort: Expected boolean, actual \"true\""
    },
    {
      scenario: "no message_id",
      body: { ...DOC_WEBHOOK, message_id: undefined },
      field: "message_id",
      message: "message_id: is missing"
    },
    {
      scenario: "an empty cohort_id",
      body: { ...DOC_WEBHOOK, cohort_id: "" },
      field: "cohort_id",
      message: "cohort_id: expected a non-empty cohort id"
    },
    {
      scenario: "users not a list",
      body: { ...DOC_WEBHOOK, users: { user_id: "a" } },
      field: "users",
      message: "users: expected a list of users ([{ user_id, user_properties? }])"
    },
    {
      scenario: "user_properties not an object",
      body: { ...DOC_WEBHOOK, users: [{ user_id: "a", user_properties: "plan=pro" }] },
      field: "users[0].user_properties",
      message: "users[0].user_properties: expected an object of user properties"
    }
  ]
  for (const { body, field, message, scenario } of badBodies) {
    it(`400 naming the field: ${scenario}`, () => {
      assert.deepStrictEqual(refused(body), { status: 400, field, message })
    })
  }

  it("accepts a 100,000-user batch (about 3 MB) and keeps every member in order", () => {
    const users = Array.from({ length: 100_000 }, (_, i) => ({ user_id: `usr_${String(i).padStart(6, "0")}` }))
    const body = JSON.stringify({ ...DOC_WEBHOOK, users })
    assert.isTrue(body.length > 2_500_000 && body.length < AmplitudeCohorts.MAX_BODY_BYTES)
    const batches = ok(body)
    assert.strictEqual(batches.length, 1)
    const members = batches[0]!.members
    assert.strictEqual(members.length, 100_000)
    assert.deepStrictEqual(members[0], { userId: "usr_000000", member: true })
    assert.deepStrictEqual(members[99_999], { userId: "usr_099999", member: true })
    assert.deepStrictEqual(members[54_321], { userId: "usr_054321", member: true })
  })

  it("a bad user deep in a 100,000-user batch is named by its index", () => {
    const users: Array<Record<string, unknown>> = Array.from({ length: 100_000 }, (_, i) => ({ user_id: `u${i}` }))
    users[77_777] = { user_id: null }
    assert.deepStrictEqual(refused({ ...DOC_WEBHOOK, users }), {
      status: 400,
      field: "users[77777].user_id",
      message: "users[77777].user_id: Expected string, actual null"
    })
  })

  it("maxUsersPerBatch: a larger message is 413 naming users", () => {
    const s = settings({ maxUsersPerBatch: 2 })
    assert.deepStrictEqual(refused(DOC_WEBHOOK, s), {
      status: 413,
      field: "users",
      message: "users: 3 users in one message, more than maxUsersPerBatch 2"
    })
    assert.strictEqual(ok({ ...DOC_WEBHOOK, users: DOC_WEBHOOK.users.slice(0, 2) }, s)[0]!.members.length, 2)
  })
})

describe("the shared secret", () => {
  it("401 naming the header when it is missing or empty", () => {
    for (const headers of [{}, { "x-tracklayer-secret": "" }, { "x-other": SHARED }]) {
      assert.deepStrictEqual(refused(DOC_WEBHOOK, S, headers), {
        status: 401,
        field: "x-tracklayer-secret",
        message: "the x-tracklayer-secret header is missing"
      })
    }
  })

  it("401 naming the header when it is wrong: same length, shorter, longer, different case", () => {
    const wrong = [
      "fake.cohort.hook.value.02", // same length, last character differs
      "fake.cohort.hook", // a prefix
      `${SHARED}0`, // one more character
      SHARED.toUpperCase()
    ]
    for (const value of wrong) {
      assert.deepStrictEqual(refused(DOC_WEBHOOK, S, { "x-tracklayer-secret": value }), {
        status: 401,
        field: "x-tracklayer-secret",
        message: "the x-tracklayer-secret header is not the secret"
      }, value)
    }
  })

  it("the secret is checked before the body: a wrong secret with a non-JSON body is 401", () => {
    assert.strictEqual(refused("not json", S, { "x-tracklayer-secret": "nope" }).status, 401)
  })

  it("a configured header name is used (compared in lower case, as headers arrive)", () => {
    const s = settings({ header: "X-Amplitude-Hook" })
    assert.strictEqual(ok(DOC_WEBHOOK, s, { "x-amplitude-hook": SHARED }).length, 1)
    assert.deepStrictEqual(refused(DOC_WEBHOOK, s), {
      status: 401,
      field: "x-amplitude-hook",
      message: "the x-amplitude-hook header is missing"
    })
  })

  it("no refusal repeats the secret", () => {
    const results = [
      refused(DOC_WEBHOOK, S, { "x-tracklayer-secret": "fake.cohort.hook.value.02" }),
      refused({ ...DOC_WEBHOOK, users: [{}] })
    ]
    for (const r of results) assert.notInclude(JSON.stringify(r), SHARED)
  })
})

describe("bodies that are neither", () => {
  it("400 naming body when it is not JSON", () => {
    const r = refused("{\"cohort_id\": ")
    assert.strictEqual(r.status, 400)
    assert.strictEqual(r.field, "body")
    assert.match(r.message, /^body: not JSON \(/)
  })

  it("400 naming body for an empty body, a number, and an object of neither shape", () => {
    const expected = "body: expected an Amplitude cohort webhook " +
      "({ cohort_name, cohort_id, in_cohort, computed_time, message_id, users }) or cohort traits " +
      "({ user_id, user_properties } or { userId, traits }: one, an array, or { batch: [...] })"
    assert.strictEqual(refused("").field, "body")
    assert.deepStrictEqual(refused(42), { status: 400, field: "body", message: expected })
    assert.deepStrictEqual(refused({ event_type: "x" }), { status: 400, field: "body", message: expected })
  })
})

describe("identify-style cohort traits", () => {
  const COLON = "[Amplitude] Churn risk: 7khm89cz"
  const PARENS = "[Amplitude] Churn risk (7khm89cz)"

  it("one { user_id, user_properties } with the colon spelling; the id is a digest of the canonical body", () => {
    // canonical body + "\n" + cohort id:
    // {"user_id":"usr_8421","user_properties":{"[Amplitude] Churn risk: 7khm89cz":true}}\n7khm89cz
    const body = { user_id: "usr_8421", user_properties: { [COLON]: true } }
    assert.strictEqual(
      AmplitudeCohorts.canonicalJson(body),
      "{\"user_id\":\"usr_8421\",\"user_properties\":{\"[Amplitude] Churn risk: 7khm89cz\":true}}"
    )
    assert.deepStrictEqual(ok(body), [{
      messageId: `sha256:891a8fd5c298eb288c09e71ef133f588aab22fc3669969da5ff8a1534528d287:${WINDOW}`,
      audience: { key: "7khm89cz", name: "Churn risk" },
      at: T0,
      members: [{ userId: "usr_8421", member: true }]
    }])
  })

  it("an identical retry, spaced and ordered differently, has the same digest", () => {
    const retry =
      "{ \"user_properties\": { \"[Amplitude] Churn risk: 7khm89cz\": true },\n  \"user_id\": \"usr_8421\" }"
    assert.strictEqual(
      ok(retry)[0]!.messageId,
      `sha256:891a8fd5c298eb288c09e71ef133f588aab22fc3669969da5ff8a1534528d287:${WINDOW}`
    )
    // A different value is a different message.
    assert.notStrictEqual(
      ok({ user_id: "usr_8421", user_properties: { [COLON]: false } })[0]!.messageId,
      `sha256:891a8fd5c298eb288c09e71ef133f588aab22fc3669969da5ff8a1534528d287:${WINDOW}`
    )
  })

  it("the same body in a later retry window is a new message (a member who left and entered again)", () => {
    const body = { user_id: "usr_8421", user_properties: { [COLON]: true } }
    const later = AmplitudeCohorts.receiveAt(request(body), S, T0 + AmplitudeCohorts.RETRY_WINDOW_MS)
    assert.deepStrictEqual(
      later._tag === "Right" ? later.right[0]!.messageId : later,
      `sha256:891a8fd5c298eb288c09e71ef133f588aab22fc3669969da5ff8a1534528d287:${WINDOW + 1}`
    )
  })

  it("an array with both spellings and true / \"true\" / false / \"False\" values", () => {
    const body = [
      { user_id: "usr_1", user_properties: { [COLON]: true } },
      { user_id: "usr_2", user_properties: { [PARENS]: "true" } },
      { user_id: "usr_3", user_properties: { [PARENS]: false } },
      { user_id: "usr_4", user_properties: { [COLON]: "False" } }
    ]
    const batches = ok(body)
    assert.deepStrictEqual(batches.map((b) => ({ ...b, messageId: b.messageId.slice(0, 7) })), [{
      messageId: "sha256:",
      audience: { key: "7khm89cz", name: "Churn risk" },
      at: T0,
      members: [
        { userId: "usr_1", member: true },
        { userId: "usr_2", member: true },
        { userId: "usr_3", member: false },
        { userId: "usr_4", member: false }
      ]
    }])
    assert.match(batches[0]!.messageId, /^sha256:[0-9a-f]{64}:\d+$/)
  })

  it("Amplitude's documented { batch: [{ type: identify, traits, userId, context }] } with a message_id", () => {
    const context = { integration: { name: "Amplitude Cohort Sync", version: "1.0.0" } }
    const body = {
      message_id: "msg_20260424_01",
      batch: [
        { type: "identify", traits: { [COLON]: true }, userId: "usr_1", context },
        { type: "identify", traits: { [COLON]: false }, userId: "usr_2", context }
      ]
    }
    assert.deepStrictEqual(ok(body), [{
      messageId: "msg_20260424_01",
      audience: { key: "7khm89cz", name: "Churn risk" },
      at: T0,
      members: [{ userId: "usr_1", member: true }, { userId: "usr_2", member: false }]
    }])
  })

  it("a single { type: identify, userId, traits } (Amplitude's single update)", () => {
    const body = { type: "identify", traits: { "[Amplitude] Trial users (x9y8z7)": "true" }, userId: "usr_1" }
    const batches = ok(body)
    assert.deepStrictEqual(batches[0]!.audience, { key: "x9y8z7", name: "Trial users" })
    assert.deepStrictEqual(batches[0]!.members, [{ userId: "usr_1", member: true }])
  })

  it("keys that are not cohort traits are ignored (other properties, [Amplitude] Cohorts, no id)", () => {
    const body = {
      user_id: "usr_1",
      user_properties: {
        plan: "pro",
        "[Amplitude] Cohorts": ["Churn risk"],
        "[Amplitude] Country": "DE",
        "Churn risk: 7khm89cz": true,
        "[Amplitude] Churn risk:": true,
        "[Amplitude] Power users: pw42": true
      }
    }
    const batches = ok(body)
    assert.deepStrictEqual(batches.map((b) => [b.audience, b.members]), [[
      { key: "pw42", name: "Power users" },
      [{ userId: "usr_1", member: true }]
    ]])
    assert.deepStrictEqual(ok({ user_id: "usr_1", user_properties: { plan: "pro" } }), [])
    assert.deepStrictEqual(ok([]), [])
  })

  it("a cohort name containing \": \" and parentheses keeps them; the id is the last part", () => {
    const batches = ok([
      { user_id: "usr_1", user_properties: { "[Amplitude] EU: active (30d): ab12cd34": true } },
      { user_id: "usr_2", user_properties: { "[Amplitude] Paid (annual) (ef56gh78)": true } }
    ])
    assert.deepStrictEqual(batches.map((b) => b.audience), [
      { key: "ab12cd34", name: "EU: active (30d)" },
      { key: "ef56gh78", name: "Paid (annual)" }
    ])
  })

  it("several cohorts in one message: one batch each, in order, message ids suffixed with the cohort id", () => {
    const body = {
      message_id: "msg_7",
      batch: [
        { userId: "usr_1", traits: { [COLON]: true, "[Amplitude] Power users (pw42)": false } },
        { userId: "usr_2", traits: { "[Amplitude] Power users: pw42": true } }
      ]
    }
    assert.deepStrictEqual(ok(body), [
      {
        messageId: "msg_7::7khm89cz",
        audience: { key: "7khm89cz", name: "Churn risk" },
        at: T0,
        members: [{ userId: "usr_1", member: true }]
      },
      {
        messageId: "msg_7::pw42",
        audience: { key: "pw42", name: "Power users" },
        at: T0,
        members: [{ userId: "usr_1", member: false }, { userId: "usr_2", member: true }]
      }
    ])
  })

  it("without message_id each cohort's digest differs (it includes the cohort id)", () => {
    const batches = ok({ user_id: "usr_1", user_properties: { [COLON]: true, "[Amplitude] Power users: pw42": true } })
    assert.strictEqual(batches.length, 2)
    assert.notStrictEqual(batches[0]!.messageId, batches[1]!.messageId)
  })

  it("the same user twice with the same value is one member", () => {
    const batches = ok([
      { user_id: "usr_1", user_properties: { [COLON]: true } },
      { user_id: "usr_1", user_properties: { [PARENS]: "true" } }
    ])
    assert.deepStrictEqual(batches[0]!.members, [{ userId: "usr_1", member: true }])
  })

  const badTraits: ReadonlyArray<{
    readonly scenario: string
    readonly body: unknown
    readonly field: string
    readonly message: string
  }> = [
    {
      scenario: "an entry without user_id (anonymous users are not sent)",
      body: [{ user_id: "usr_1", user_properties: {} }, { device_id: "d1", user_properties: { [COLON]: true } }],
      field: "[1].user_id",
      message: "[1].user_id: is missing"
    },
    {
      scenario: "an identify call without userId",
      body: { batch: [{ type: "identify", traits: { [COLON]: true }, userId: "u" }, { type: "identify", traits: {} }] },
      field: "batch[1].userId",
      message: "batch[1].userId: is missing"
    },
    {
      scenario: "a cohort trait that is neither true nor false",
      body: [{ user_id: "usr_1", user_properties: { [PARENS]: 1 } }],
      field: "[0].user_properties[\"[Amplitude] Churn risk (7khm89cz)\"]",
      message: "[0].user_properties[\"[Amplitude] Churn risk (7khm89cz)\"]: " +
        "expected true or false (or \"true\" / \"false\"), got 1"
    },
    {
      scenario: "a single object whose trait is \"yes\"",
      body: { userId: "usr_1", traits: { [COLON]: "yes" } },
      field: "traits[\"[Amplitude] Churn risk: 7khm89cz\"]",
      message:
        "traits[\"[Amplitude] Churn risk: 7khm89cz\"]: expected true or false (or \"true\" / \"false\"), got \"yes\""
    },
    {
      scenario: "one user both in and out of a cohort",
      body: [
        { user_id: "usr_1", user_properties: { [COLON]: true } },
        { user_id: "usr_1", user_properties: { [PARENS]: false } }
      ],
      field: "[1].user_properties[\"[Amplitude] Churn risk (7khm89cz)\"]",
      message: "[1].user_properties[\"[Amplitude] Churn risk (7khm89cz)\"]: user \"usr_1\" is both in and out of " +
        "cohort 7khm89cz (see [0].user_properties[\"[Amplitude] Churn risk: 7khm89cz\"])"
    },
    {
      scenario: "batch that is not a list",
      body: { batch: { userId: "u" } },
      field: "batch",
      message: "batch: expected an array"
    },
    {
      scenario: "an empty message_id",
      body: { message_id: "", user_id: "usr_1", user_properties: {} },
      field: "message_id",
      message: "message_id: expected a non-empty message id"
    },
    {
      scenario: "an array entry that is not an object",
      body: ["usr_1"],
      field: "[0]",
      message: "[0]: expected { user_id, user_properties } (or { userId, traits })"
    }
  ]
  for (const { body, field, message, scenario } of badTraits) {
    it(`400 naming the field: ${scenario}`, () => {
      assert.deepStrictEqual(refused(body), { status: 400, field, message })
    })
  }

  it("maxUsersPerBatch applies to the entries: 413 naming body or batch", () => {
    const s = settings({ maxUsersPerBatch: 1 })
    const entries = [
      { user_id: "usr_1", user_properties: { [COLON]: true } },
      { user_id: "usr_2", user_properties: { [COLON]: true } }
    ]
    assert.deepStrictEqual(refused(entries, s), {
      status: 413,
      field: "body",
      message: "body: 2 users in one message, more than maxUsersPerBatch 1"
    })
    assert.deepStrictEqual(refused({ batch: entries }, s), {
      status: 413,
      field: "batch",
      message: "batch: 2 users in one message, more than maxUsersPerBatch 1"
    })
  })

  it("receive() times identify-style batches with the clock", () => {
    const before = Date.now()
    const result = AmplitudeCohorts.receive(request({ user_id: "usr_1", user_properties: { [COLON]: true } }), S)
    const after = Date.now()
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    const at = result.right[0]!.at
    assert.isTrue(at >= before && at <= after, String(at))
  })
})

describe("helpers", () => {
  it("formatPath writes paths as a reader would", () => {
    assert.strictEqual(AmplitudeCohorts.formatPath([]), "body")
    assert.strictEqual(AmplitudeCohorts.formatPath(["users", 3, "user_id"]), "users[3].user_id")
    assert.strictEqual(AmplitudeCohorts.formatPath([0, "user_properties", "a b"]), "[0].user_properties[\"a b\"]")
  })

  it("cohortOfTrait reads both spellings", () => {
    assert.deepStrictEqual(AmplitudeCohorts.cohortOfTrait("[Amplitude] My Test Cohort: 7khm89cz"), {
      name: "My Test Cohort",
      id: "7khm89cz"
    })
    assert.deepStrictEqual(AmplitudeCohorts.cohortOfTrait("[Amplitude] My Test Cohort (7khm89cz)"), {
      name: "My Test Cohort",
      id: "7khm89cz"
    })
    assert.strictEqual(AmplitudeCohorts.cohortOfTrait("[Amplitude] Cohorts"), undefined)
    assert.strictEqual(AmplitudeCohorts.cohortOfTrait("amplitude_My Test Cohort_7khm89cz"), undefined)
  })
})
