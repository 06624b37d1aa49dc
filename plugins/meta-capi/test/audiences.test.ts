/**
 * `MetaCapi.audiences` (plugin API 1.2): member rows with the normalised values and their SHA-256 (the `SHA` table in
 * fixtures.ts, computed with `printf '%s' VALUE | sha256sum`), and `send` against the real sandbox over HTTP: add
 * then remove (membership read back), the sandbox's validation errors mapped to outcomes, the 10,000-row limit.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope } from "effect"
import { MetaCapi, MetaCapiSandbox } from "../src/index.js"
import { settings, SHA, T0 } from "./fixtures.js"

const AUDIENCE = MetaCapiSandbox.SANDBOX_AUDIENCE_ID
const AUDIENCE_2 = MetaCapiSandbox.SANDBOX_AUDIENCE_ID_2
const TOKEN = MetaCapiSandbox.SANDBOX_ACCESS_TOKEN

/** One person entering (`add`) or leaving (`remove`) an audience. */
const change = (
  op: "add" | "remove",
  identity: Partial<Destination.Identity>,
  { audienceId = AUDIENCE, i = 0 }: { readonly audienceId?: string; readonly i?: number } = {}
): Destination.AudienceChange => ({
  position: String(100 + i),
  eventId: `evt_cohort_${i}`,
  audienceId,
  audience: { key: "cohort_7781", name: "Trial power users" },
  op,
  identity: {
    personKey: `person_${i}`,
    emails: [],
    phones: [],
    emailSha256: [],
    phoneSha256: [],
    clickIds: {},
    ...identity
  },
  consent: { advertising: true },
  at: T0
})

/** Jane: Jane.Doe@Example.com and (650)555-1212 with the country trait US. */
const JANE: Partial<Destination.Identity> = {
  userId: "usr_8421",
  emails: ["Jane.Doe@Example.com"],
  phones: ["(650)555-1212"],
  traits: { country: "US", plan: "pro" }
}
/** John: John_Smith@gmail.com only. */
const JOHN: Partial<Destination.Identity> = { emails: ["John_Smith@gmail.com"] }

const s0 = settings()

const prepare = (
  changes: ReadonlyArray<Destination.AudienceChange>
): ReadonlyArray<Destination.PreparedMember<MetaCapi.MetaAudienceMember>> =>
  changes.map((c) => ({ change: c, member: Either.getOrThrow(MetaCapi.audiences.member(c, s0)) }))

/** Prepared members from raw rows (to send what `member` would never produce). */
const preparedRaw = (
  rows: ReadonlyArray<MetaCapi.MetaAudienceMember>,
  op: "add" | "remove" = "add",
  audienceId = AUDIENCE
): ReadonlyArray<Destination.PreparedMember<MetaCapi.MetaAudienceMember>> =>
  rows.map((member, i) => ({ change: change(op, {}, { audienceId, i }), member }))

const sandbox = (options: MetaCapiSandbox.SandboxOptions = {}) =>
  MetaCapiSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: settings({ accessToken: sb.accessToken, pixelId: sb.pixelId, endpoint: sb.endpoint })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const bodyOf = (o: Destination.Outcome) => JSON.parse(o.response?.body ?? "null")

/** A raw users-edge request (form-encoded, as Meta documents it). */
const usersRaw = (
  sb: MetaCapiSandbox.Sandbox,
  method: "POST" | "DELETE" | "GET",
  params: Record<string, unknown>,
  audienceId = AUDIENCE
) =>
  Effect.gen(function*() {
    const form = new URLSearchParams()
    for (const [k, v] of Object.entries(params)) form.set(k, typeof v === "string" ? v : JSON.stringify(v))
    const url = `${sb.url}/v27.0/${audienceId}/users`
    const base = method === "POST"
      ? HttpClientRequest.post(url)
      : method === "DELETE"
      ? HttpClientRequest.del(url)
      : HttpClientRequest.get(url)
    const request = method === "GET"
      ? base
      : base.pipe(HttpClientRequest.bodyText(form.toString(), "application/x-www-form-urlencoded"))
    const response = yield* (yield* HttpClient.HttpClient).execute(request)
    return { status: response.status, body: JSON.parse(yield* response.text) as any }
  }).pipe(Effect.orDie)

/** A Graph error without its generated trace id. */
const errorOf = (body: any) => {
  const { fbtrace_id, ...rest } = body.error
  assert.match(fbtrace_id, /^SbxTrace\d{6}$/)
  return rest
}

describe("MetaCapi.audiences.member", () => {
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly identity: Partial<Destination.Identity>
    readonly expected: MetaCapi.MetaAudienceMember | { readonly skip: string }
  }> = [
    {
      scenario: "email + national phone with country trait US → [sha256(jane.doe@example.com), sha256(16505551212)]",
      identity: JANE,
      expected: [SHA["jane.doe@example.com"], SHA["16505551212"]]
    },
    {
      scenario: "email only → the phone column is \"\" (Meta matches a multi-key row on the keys it has)",
      identity: JOHN,
      expected: [SHA["john_smith@gmail.com"], ""]
    },
    {
      scenario: "international phone only: +49 151 23456789 → 4915123456789",
      identity: { phones: ["+49 151 23456789"] },
      expected: ["", SHA["4915123456789"]]
    },
    {
      scenario: "several emails and phones: the first of each (raw ones before join-key hashes)",
      identity: {
        emails: ["John_Smith@gmail.com", "jane.doe@example.com"],
        emailSha256: [SHA["jane@work.example"]],
        phones: ["+49 151 23456789", "+1 650 555 1212"]
      },
      expected: [SHA["john_smith@gmail.com"], SHA["4915123456789"]]
    },
    {
      scenario: "join keys only (upper-case hex): passed through lower-cased",
      identity: {
        emailSha256: [SHA["jane.doe@example.com"].toUpperCase()],
        phoneSha256: [SHA["16505551212"].toUpperCase()]
      },
      expected: [SHA["jane.doe@example.com"], SHA["16505551212"]]
    },
    {
      scenario: "a phone without a country trait is taken to carry its calling code (Meta's rule): 6505551212",
      identity: { emails: ["Jane.Doe@Example.com"], phones: ["(650)555-1212"] },
      // printf '%s' 6505551212 | sha256sum
      expected: [SHA["jane.doe@example.com"], "5eed6d50c9a69704a9a72b4af7d14d04d33e4460039e101b525f5d4f8a106a38"]
    },
    {
      scenario: "neither email nor usable phone → invalid",
      identity: { userId: "usr_1", deviceId: "web_91f3", phones: ["555-1212"], emails: ["not-an-email"] },
      expected: { skip: "invalid" }
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      const result = MetaCapi.audiences.member(change("add", c.identity), s0)
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result))
        if (Either.isLeft(result)) {
          assert.strictEqual(result.left.reason, "invalid")
          assert.strictEqual(
            result.left.detail,
            "no email or phone usable for a Meta custom audience (an email address, or a phone number with its " +
              "country code or a country trait)"
          )
        }
      } else {
        assert.deepStrictEqual(Either.getOrThrow(result), c.expected)
      }
    })
  }

  it("the capability: schema [EMAIL, PHONE], 10,000 rows and 2,000,000 bytes per request; plugin API ^1.2.0", () => {
    assert.deepStrictEqual(MetaCapi.AUDIENCE_SCHEMA, ["EMAIL", "PHONE"])
    assert.deepStrictEqual(MetaCapi.plugin.audiences?.limits, {
      maxEventsPerRequest: 10_000,
      maxBytesPerRequest: 2_000_000
    })
    assert.strictEqual(MetaCapi.plugin.audiences, MetaCapi.audiences)
    assert.strictEqual(MetaCapi.plugin.pluginApi, "^1.2.0")
    assert.strictEqual(
      MetaCapi.audienceUsersUrl(s0, "23850000000000001"),
      "https://graph.facebook.com/v27.0/23850000000000001/users"
    )
  })

  it("the wire body: payload {schema, data} and session as JSON, then the token (never in the URL)", () => {
    const body = new URLSearchParams(
      MetaCapi.audienceFormBody(
        { schema: MetaCapi.AUDIENCE_SCHEMA, data: [[SHA["jane.doe@example.com"], ""]] },
        { session_id: 1777017600000123, batch_seq: 1, last_batch_flag: true, estimated_num_total: 1 },
        "tok-1"
      )
    )
    assert.deepStrictEqual([...body.keys()], ["payload", "session", "access_token"])
    assert.strictEqual(
      body.get("payload"),
      `{"schema":["EMAIL","PHONE"],"data":[["${SHA["jane.doe@example.com"]}",""]]}`
    )
    assert.strictEqual(
      body.get("session"),
      "{\"session_id\":1777017600000123,\"batch_seq\":1,\"last_batch_flag\":true,\"estimated_num_total\":1}"
    )
    assert.strictEqual(body.get("access_token"), "tok-1")
  })
})

describe("MetaCapi.audiences.send against the sandbox", () => {
  it.scopedLive("add then remove: POST adds the rows, DELETE removes the person; membership read back", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const added = yield* MetaCapi.audiences.send(
        prepare([change("add", JANE, { i: 0 }), change("add", JOHN, { i: 1 })]),
        s
      )
      assert.deepStrictEqual(tags(added), ["Accepted", "Accepted"])
      const answer = bodyOf(added[0]!)
      assert.strictEqual(added[0]!.response?.status, 200)
      assert.match(answer.session_id, /^\d{16,}$/)
      assert.deepStrictEqual(answer, {
        audience_id: AUDIENCE,
        session_id: answer.session_id,
        num_received: 2,
        num_invalid_entries: 0,
        invalid_entry_samples: {}
      })
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [
        [SHA["jane.doe@example.com"], SHA["16505551212"]],
        [SHA["john_smith@gmail.com"], ""]
      ])
      const audience = yield* sb.client.audience(AUDIENCE)
      assert.deepStrictEqual([audience.schema, audience.data_source], [
        ["EMAIL", "PHONE"],
        "FILE_IMPORTED.MULTI_HASHES"
      ])

      // Jane leaves; only her email is known now: Meta matches the person on any key of the row.
      const removed = yield* MetaCapi.audiences.send(
        prepare([change("remove", { emails: ["jane.doe@example.com"] }, { i: 2 })]),
        s
      )
      assert.deepStrictEqual(tags(removed), ["Accepted"])
      assert.strictEqual(bodyOf(removed[0]!).num_received, 1)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [[SHA["john_smith@gmail.com"], ""]])
      // Removing someone who is not in the audience is not an error.
      assert.deepStrictEqual(tags(yield* MetaCapi.audiences.send(prepare([change("remove", JANE)]), s)), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [[SHA["john_smith@gmail.com"], ""]])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE_2), [])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(
        [stats.audience_requests, stats.audience_responses, stats.audience_rows_received, stats.requests],
        [3, { "200": 3 }, 4, 0]
      )
    })))

  it.scopedLive("each send is its own upload session: num_received counts that session's rows", () =>
    run(Effect.gen(function*() {
      const { settings: s } = yield* sandbox()
      const first = yield* MetaCapi.audiences.send(prepare([change("add", JANE)]), s)
      const second = yield* MetaCapi.audiences.send(prepare([change("add", JOHN)]), s)
      assert.deepStrictEqual([bodyOf(first[0]!).num_received, bodyOf(second[0]!).num_received], [1, 1])
      assert.notStrictEqual(bodyOf(first[0]!).session_id, bodyOf(second[0]!).session_id)
    })))

  it.scopedLive("rows with bad hashes are num_invalid_entries: cannot be mapped to rows, so all stay Accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* MetaCapi.audiences.send(
        preparedRaw([["jane.doe@example.com", ""], [SHA["john_smith@gmail.com"], ""]]),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted"])
      assert.deepStrictEqual(bodyOf(outcomes[1]!), {
        audience_id: AUDIENCE,
        session_id: bodyOf(outcomes[1]!).session_id,
        num_received: 2,
        num_invalid_entries: 1,
        invalid_entry_samples: { "jane.doe@example.com": "EMAIL is not a SHA-256 (64 lowercase hex characters)" }
      })
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [[SHA["john_smith@gmail.com"], ""]])
      assert.strictEqual((yield* sb.client.stats()).audience_rows_invalid, 1)
    })))

  it.scopedLive("Meta received fewer rows than sent → every row Retry (adding or removing again is harmless)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 200,
        body: { audience_id: AUDIENCE, session_id: "1", num_received: 1, num_invalid_entries: 0 }
      })
      const outcomes = yield* MetaCapi.audiences.send(prepare([change("add", JANE), change("add", JOHN, { i: 1 })]), s)
      assert.deepStrictEqual(tags(outcomes), ["Retry", "Retry"])
      const first = outcomes[0]!
      // The session id is generated per send (epoch ms × 1000 + a random 0–999).
      assert.match(first._tag === "Retry" ? first.reason : "", /^Meta received 1 of the 2 rows sent in session \d{16}$/)
      assert.strictEqual(first.response?.status, 200)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [])
    })))

  it.scopedLive("an unknown audience (Graph 100/33) → AuthFailedError naming it; nothing changes", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const error = yield* Effect.flip(
        MetaCapi.audiences.send(prepare([change("add", JANE, { audienceId: "999" })]), s)
      )
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(error.status, 400)
      assert.strictEqual(
        error.message,
        "Meta refused the access token or custom audience 999: Unsupported post request. Object with ID '999' does " +
          "not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read " +
          "the Graph API documentation at https://developers.facebook.com/docs/graph-api (code 100/33, fbtrace_id " +
          "SbxTrace000001)"
      )
      const removal = yield* Effect.flip(
        MetaCapi.audiences.send(prepare([change("remove", JANE, { audienceId: "999" })]), s)
      )
      assert.isTrue(removal.message.includes("Unsupported delete request."), removal.message)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [])
    })))

  it.scopedLive("an audience id that is not digits is Rejected without a request", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* MetaCapi.audiences.send(prepare([change("add", JANE, { audienceId: "trial_users" })]), s)
      assert.deepStrictEqual(outcomes, [
        {
          _tag: "Rejected",
          reason:
            "Meta custom audience ids are digits; \"trial_users\" is not one (check the audience routing in the config)"
        }
      ])
      assert.strictEqual((yield* sb.client.stats()).audience_requests, 0)
    })))

  it.scopedLive("bad token (190) → AuthFailedError; the token is in no message or body", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const token = "EAAB-wrong-aud-7c1e"
      const s = settings({ accessToken: token, pixelId: sb.pixelId, endpoint: sb.endpoint })
      const error = yield* Effect.flip(MetaCapi.audiences.send(prepare([change("add", JANE)]), s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(
        error.message,
        `Meta refused the access token or custom audience ${AUDIENCE}: Invalid OAuth access token - Cannot parse ` +
          "access token (code 190, fbtrace_id SbxTrace000001)"
      )
      assert.isFalse(JSON.stringify(error).includes(token))
    })))

  it.scopedLive("a second data source in one audience (Graph 2650) → PayloadInvalidError: every row rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      // Someone uploaded single-key email hashes to this audience before.
      const raw = yield* usersRaw(sb, "POST", {
        payload: { schema: "EMAIL_SHA256", data: [SHA["jane@work.example"]] },
        access_token: TOKEN
      }, AUDIENCE_2)
      assert.strictEqual(raw.status, 200)
      const error = yield* Effect.flip(
        MetaCapi.audiences.send(prepare([change("add", JANE, { audienceId: AUDIENCE_2 })]), s)
      )
      assert.strictEqual(error._tag, "PayloadInvalidError")
      assert.strictEqual(
        error.message,
        "Meta refused the custom audience request: (#2650) Failed to update the custom audience: This audience was " +
          "created from data source FILE_IMPORTED.HASHES_OR_USER_IDS, which does not support data source " +
          "FILE_IMPORTED.MULTI_HASHES. (code 2650, fbtrace_id SbxTrace000001)"
      )
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE_2), [[SHA["jane@work.example"]]])
    })))

  it.scopedLive("throttling (17 from the rate limit, 80003 custom-audience limit) and code 2 → RetryableError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ rateLimit: 1 })
      assert.deepStrictEqual(tags(yield* MetaCapi.audiences.send(prepare([change("add", JANE)]), s)), ["Accepted"])
      const limited = yield* Effect.flip(MetaCapi.audiences.send(prepare([change("add", JOHN)]), s))
      assert.strictEqual(limited._tag, "RetryableError")
      assert.strictEqual(limited._tag === "RetryableError" ? limited.retryAfterMs : 0, 60_000)
      yield* sb.client.configure({ rateLimit: 0 })
      yield* sb.client.setFaults({ code: 80003, regainAccessMinutes: 4 })
      const audienceLimit = yield* Effect.flip(MetaCapi.audiences.send(prepare([change("add", JOHN)]), s))
      assert.strictEqual(audienceLimit._tag, "RetryableError")
      assert.strictEqual(audienceLimit._tag === "RetryableError" ? audienceLimit.retryAfterMs : 0, 240_000)
      assert.strictEqual(
        audienceLimit.message,
        "Meta rate limit: Injected error (code 80003, fbtrace_id SbxTrace000002)"
      )
      yield* sb.client.setFaults({ code: 2 })
      const transient = yield* Effect.flip(MetaCapi.audiences.send(prepare([change("remove", JANE)]), s))
      assert.strictEqual(transient._tag, "RetryableError")
      assert.strictEqual(transient.status, 500)
      yield* sb.client.setFaults({ status: 502, body: "<html>502 Bad Gateway</html>" })
      const gateway = yield* Effect.flip(MetaCapi.audiences.send(prepare([change("remove", JANE)]), s))
      assert.deepStrictEqual([gateway._tag, gateway.message], ["RetryableError", "Meta answered 502"])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [
        [SHA["jane.doe@example.com"], SHA["16505551212"]]
      ])
    })))

  it.scopedLive("a batch over the request limit is refused by the sandbox (code 100): every row rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.configure({ maxAudienceRowsPerRequest: 2 })
      const error = yield* Effect.flip(
        MetaCapi.audiences.send(
          prepare([change("add", JANE, { i: 0 }), change("add", JOHN, { i: 1 }), change("add", JANE, { i: 2 })]),
          s
        )
      )
      assert.strictEqual(error._tag, "PayloadInvalidError")
      assert.strictEqual(
        error.message,
        "Meta refused the custom audience request: Too many users (code 100, fbtrace_id SbxTrace000001)"
      )
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [])
    })))
})

describe("MetaCapiSandbox users edge over raw HTTP", () => {
  it.scopedLive("10,001 rows in one request → 400 code 100 \"Too many users\"; nothing stored", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const data = Array.from({ length: 10_001 }, () => [SHA["jane.doe@example.com"], ""])
      const answer = yield* usersRaw(sb, "POST", { payload: { schema: ["EMAIL", "PHONE"], data }, access_token: TOKEN })
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(errorOf(answer.body), {
        message: "Invalid parameter",
        type: "OAuthException",
        code: 100,
        is_transient: false,
        error_user_title: "Too many users",
        error_user_msg: "payload.data can have at most 10000 entries per request, got 10001"
      })
      const ok = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "PHONE"], data: data.slice(0, 10_000) },
        access_token: TOKEN
      })
      assert.deepStrictEqual([ok.status, ok.body.num_received], [200, 10_000])
      // 10,000 identical rows are one person.
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [[SHA["jane.doe@example.com"], ""]])
    })))

  it.scopedLive("shape checks: payload missing, rows not matching the schema, unknown key, bad session", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const missing = yield* usersRaw(sb, "POST", { access_token: TOKEN })
      assert.deepStrictEqual(errorOf(missing.body), {
        message: "(#100) Missing required parameter: payload",
        type: "OAuthException",
        code: 100
      })
      const mismatch = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "PHONE"], data: [[SHA["jane.doe@example.com"]]] },
        access_token: TOKEN
      })
      assert.deepStrictEqual([mismatch.status, errorOf(mismatch.body)], [400, {
        message: "(#100) Data is missing or does not match schema:",
        type: "OAuthException",
        code: 100
      }])
      const unknown = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "SHOE_SIZE"], data: [[SHA["jane.doe@example.com"], "42"]] },
        access_token: TOKEN
      })
      assert.strictEqual(errorOf(unknown.body).error_user_msg, "Unknown schema key: SHOE_SIZE")
      const session = yield* usersRaw(sb, "POST", {
        payload: { schema: "EMAIL_SHA256", data: [SHA["jane.doe@example.com"]] },
        session: { session_id: -4, batch_seq: 1, last_batch_flag: true },
        access_token: TOKEN
      })
      assert.strictEqual(errorOf(session.body).error_user_title, "Invalid session")
      const get = yield* usersRaw(sb, "GET", {})
      assert.strictEqual(errorOf(get.body).message, "Unsupported get request.")
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [])
    })))

  it.scopedLive("DELETE (or POST with method=DELETE) removes; a session accumulates num_received", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const row = (email: string) => [SHA[email as keyof typeof SHA], ""]
      const session = (seq: number) => ({ session_id: 4242, batch_seq: seq, last_batch_flag: seq === 2 })
      const one = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "PHONE"], data: [row("jane.doe@example.com")] },
        session: session(1),
        access_token: TOKEN
      })
      const two = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "PHONE"], data: [row("john_smith@gmail.com"), row("jane@work.example")] },
        session: session(2),
        access_token: TOKEN
      })
      assert.deepStrictEqual([one.body.session_id, one.body.num_received, two.body.num_received], ["4242", 1, 3])
      const deleted = yield* usersRaw(sb, "DELETE", {
        payload: { schema: ["EMAIL", "PHONE"], data: [row("john_smith@gmail.com")] },
        access_token: TOKEN
      })
      assert.strictEqual(deleted.status, 200)
      const viaPost = yield* usersRaw(sb, "POST", {
        payload: { schema: ["EMAIL", "PHONE"], data: [row("jane@work.example")] },
        method: "DELETE",
        access_token: TOKEN
      })
      assert.strictEqual(viaPost.status, 200)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(AUDIENCE), [row("jane.doe@example.com")])
    })))
})
