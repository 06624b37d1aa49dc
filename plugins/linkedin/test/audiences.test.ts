/**
 * `LinkedIn.audiences` (plugin API 1.2): member payloads with the normalised email and its SHA-256
 * (`printf '%s' VALUE | sha256sum`), and `send` against the real sandbox over HTTP: add then remove (membership read
 * back), the sandbox's per-element and whole-request answers mapped to outcomes, the batch limit.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope } from "effect"
import { LinkedIn, LinkedInSandbox } from "../src/index.js"
import * as OAuth from "../src/internal/oauth.js"
import { OPS_EMAIL_SHA256, SECOND_EMAIL_SHA256, settings, T0 } from "./fixtures.js"

const SEGMENT = LinkedInSandbox.SANDBOX_SEGMENT_ID
const SEGMENT_2 = LinkedInSandbox.SANDBOX_SEGMENT_ID_2
/** `printf '%s' dana@whitfield.example | sha256sum` */
const DANA_SHA256 = "574675e342a6a5892a29fd6aa4a0c7dd43f261566d28c034880851e64d5a3d98"

/** One person entering (`add`) or leaving (`remove`) a segment. */
const change = (
  op: "add" | "remove",
  identity: Partial<Destination.Identity>,
  { audienceId = SEGMENT, i = 0 }: { readonly audienceId?: string; readonly i?: number } = {}
): Destination.AudienceChange => ({
  position: String(200 + i),
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

/** The fixture person: " Ops@ACME-Corp.example " (→ ops@acme-corp.example) and second@acme-corp.example. */
const OPS: Partial<Destination.Identity> = {
  userId: "usr_9001",
  emails: [" Ops@ACME-Corp.example ", "second@acme-corp.example"],
  emailSha256: [OPS_EMAIL_SHA256.toUpperCase()],
  phones: ["+1 650 555 1212"],
  clickIds: { li_fat_id: "a1b2c3d4-e5f6-7890-abcd-ef0123456789" }
}

const s0 = settings()

const prepare = (
  changes: ReadonlyArray<Destination.AudienceChange>
): ReadonlyArray<Destination.PreparedMember<LinkedIn.SegmentMember>> =>
  changes.map((c) => ({ change: c, member: Either.getOrThrow(LinkedIn.audiences.member(c, s0)) }))

/** Prepared members from raw payloads (to send what `member` would never produce). */
const preparedRaw = (
  members: ReadonlyArray<LinkedIn.SegmentMember>,
  op: "add" | "remove" = "add",
  audienceId = SEGMENT
): ReadonlyArray<Destination.PreparedMember<LinkedIn.SegmentMember>> =>
  members.map((member, i) => ({ change: change(op, {}, { audienceId, i }), member }))

const sha = (idValue: string) => ({ idType: "SHA256_EMAIL" as const, idValue })

const sandbox = (options: LinkedInSandbox.SandboxOptions = {}) =>
  LinkedInSandbox.start(options).pipe(
    Effect.tap(() => Effect.sync(OAuth.clearCache)),
    Effect.map((sb) => ({
      sb,
      settings: settings({
        clientId: sb.clientId,
        clientSecret: sb.clientSecret,
        refreshToken: sb.refreshToken,
        apiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl
      })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const reasons = (outcomes: ReadonlyArray<Destination.Outcome>) =>
  outcomes.map((o) => (o._tag === "Accepted" ? "Accepted" : `${o._tag}: ${o.reason}`))

const call = (url: string, init: RequestInit) =>
  Effect.promise(async () => {
    const r = await fetch(url, init)
    return { status: r.status, body: await r.json() as any }
  })

/** A raw BATCH_CREATE on a segment's users with a token from the sandbox's token endpoint. */
const usersRaw = (sb: LinkedInSandbox.Sandbox, elements: ReadonlyArray<unknown>, segmentId = SEGMENT) =>
  Effect.gen(function*() {
    const token = yield* call(sb.tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        client_id: sb.clientId,
        client_secret: sb.clientSecret,
        refresh_token: sb.refreshToken
      }).toString()
    })
    return yield* call(`${sb.apiBase}/dmpSegments/${segmentId}/users`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${String(token.body.access_token)}`,
        "content-type": "application/json",
        "linkedin-version": "202609",
        "x-restli-protocol-version": "2.0.0",
        "x-restli-method": "BATCH_CREATE"
      },
      body: JSON.stringify({ elements })
    })
  })

describe("LinkedIn.audiences.member", () => {
  it("every email of the person as SHA256_EMAIL: \" Ops@ACME-Corp.example \" → ops@acme-corp.example; deduplicated", () => {
    assert.deepStrictEqual(Either.getOrThrow(LinkedIn.audiences.member(change("add", OPS), s0)), {
      userIds: [sha(OPS_EMAIL_SHA256), sha(SECOND_EMAIL_SHA256)]
    })
  })

  it("a join-key hash alone is passed through lower-cased", () => {
    assert.deepStrictEqual(
      Either.getOrThrow(LinkedIn.audiences.member(change("add", { emailSha256: [DANA_SHA256.toUpperCase()] }), s0)),
      { userIds: [sha(DANA_SHA256)] }
    )
  })

  it("no email (phone, user id and li_fat_id only) → invalid: LinkedIn matches segment users on emails", () => {
    const result = LinkedIn.audiences.member(
      change("add", { userId: "usr_1", phones: ["+1 650 555 1212"], emails: ["not-an-email"] }),
      s0
    )
    assert.isTrue(Either.isLeft(result))
    if (Either.isLeft(result)) {
      assert.strictEqual(result.left.reason, "invalid")
      assert.strictEqual(
        result.left.detail,
        "no email usable for a LinkedIn DMP segment (LinkedIn matches segment users on SHA-256 emails)"
      )
    }
  })

  it("the capability: 5,000 users and 4,000,000 bytes per request; plugin API ^1.2.0; the users URL", () => {
    assert.deepStrictEqual(LinkedIn.plugin.audiences?.limits, {
      maxEventsPerRequest: 5000,
      maxBytesPerRequest: 4_000_000
    })
    assert.strictEqual(LinkedIn.plugin.audiences, LinkedIn.audiences)
    assert.strictEqual(LinkedIn.plugin.pluginApi, "^1.2.0")
    assert.strictEqual(
      LinkedIn.segmentUsersUrl(s0, "30500001"),
      "https://api.linkedin.com/rest/dmpSegments/30500001/users"
    )
  })
})

describe("LinkedIn.audiences.send against the sandbox", () => {
  it.scopedLive("add then remove: ADD elements then REMOVE; per-element 201 → Accepted; membership read back", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const added = yield* LinkedIn.audiences.send(
        prepare([change("add", OPS, { i: 0 }), change("add", { emailSha256: [DANA_SHA256] }, { i: 1 })]),
        s
      )
      assert.deepStrictEqual(reasons(added), ["Accepted", "Accepted"])
      assert.deepStrictEqual(added[0]!.response, { status: 200, body: "{\"status\":201}" })
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [
        OPS_EMAIL_SHA256,
        SECOND_EMAIL_SHA256,
        DANA_SHA256
      ])
      assert.deepStrictEqual(yield* sb.client.segment(SEGMENT), {
        id: SEGMENT,
        users: [
          { userIds: [sha(OPS_EMAIL_SHA256), sha(SECOND_EMAIL_SHA256)] },
          { userIds: [sha(DANA_SHA256)] }
        ]
      })

      // The fixture person leaves; only one of their emails is known now: the user goes as a whole.
      const removed = yield* LinkedIn.audiences.send(
        prepare([change("remove", { emails: ["second@acme-corp.example"] }, { i: 2 })]),
        s
      )
      assert.deepStrictEqual(reasons(removed), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [DANA_SHA256])
      // LinkedIn answers 201 when removing someone who is not in the segment (by design).
      assert.deepStrictEqual(reasons(yield* LinkedIn.audiences.send(prepare([change("remove", OPS)]), s)), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT_2), [])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(
        [stats.segment_requests, stats.segment_responses, stats.segment_elements_accepted, stats.token_requests],
        [3, { "200": 3 }, 4, 1]
      )
      assert.strictEqual(stats.requests, 0)
    })))

  it.scopedLive("an element the sandbox refuses is Rejected with LinkedIn's message; the others Accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* LinkedIn.audiences.send(
        preparedRaw([
          { userIds: [sha(OPS_EMAIL_SHA256)] },
          { userIds: [sha("ops@acme-corp.example")] },
          { userIds: [sha(DANA_SHA256.toUpperCase())] }
        ]),
        s
      )
      assert.deepStrictEqual(reasons(outcomes), [
        "Accepted",
        "Rejected: 400 /elements/1/userIds/0/idValue :: SHA256_EMAIL must be a SHA-256 hash, not an email " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)",
        "Rejected: 400 /elements/2/userIds/0/idValue :: SHA256_EMAIL must be 64 lowercase hex characters " +
        "(FIELD_VALUE_INVALID, serviceErrorCode 100)"
      ])
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [OPS_EMAIL_SHA256])
    })))

  it.scopedLive("an unknown segment (404) → AuthFailedError naming it; nothing is dropped", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const error = yield* Effect.flip(LinkedIn.audiences.send(prepare([change("add", OPS, { audienceId: "999" })]), s))
      assert.strictEqual(error._tag, "AuthFailedError")
      assert.strictEqual(error.status, 404)
      assert.strictEqual(
        error.message,
        "LinkedIn answered 404: DmpSegment with id 999 does not exist (NOT_FOUND); DMP segment 999 was not found at " +
          `${sb.apiBase}/dmpSegments/999/users (check the audience routing; LinkedIn takes about 5 seconds to make a ` +
          "new segment available)"
      )
    })))

  it.scopedLive("a segment id that is not digits is Rejected without a request", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const outcomes = yield* LinkedIn.audiences.send(prepare([change("add", OPS, { audienceId: "trial-users" })]), s)
      assert.deepStrictEqual(outcomes, [
        {
          _tag: "Rejected",
          reason:
            "LinkedIn DMP segment ids are digits; \"trial-users\" is not one (check the audience routing in the " +
            "config)"
        }
      ])
      assert.strictEqual((yield* sb.client.stats()).segment_requests, 0)
    })))

  it.scopedLive("revoked token: 401 → refresh once, retry once → Accepted; 403 → AuthFailedError (rw_dmp_segments)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      assert.deepStrictEqual(reasons(yield* LinkedIn.audiences.send(prepare([change("add", OPS)]), s)), ["Accepted"])
      yield* sb.client.revokeTokens()
      const again = yield* LinkedIn.audiences.send(prepare([change("remove", OPS)]), s)
      assert.deepStrictEqual(reasons(again), ["Accepted"])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual([stats.token_requests, stats.segment_responses], [2, { "200": 2, "401": 1 }])
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [])
      yield* sb.client.setFaults({ status: 403 })
      const forbidden = yield* Effect.flip(LinkedIn.audiences.send(prepare([change("add", OPS)]), s))
      assert.strictEqual(forbidden._tag, "AuthFailedError")
      assert.strictEqual(
        forbidden.message,
        "LinkedIn answered 403: Injected fault 403; the member needs rw_dmp_segments and a role other than VIEWER on " +
          "the segment's ad account"
      )
      assert.isFalse(JSON.stringify(forbidden).includes("sandbox-li-at-"))
    })))

  it.scopedLive("429 with Retry-After and 503 → RetryableError; nothing changes", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({ status: 429, retryAfter: 7 })
      const limited = yield* Effect.flip(LinkedIn.audiences.send(prepare([change("add", OPS)]), s))
      assert.deepStrictEqual(
        [limited._tag, limited._tag === "RetryableError" ? limited.retryAfterMs : 0, limited.status],
        ["RetryableError", 7000, 429]
      )
      yield* sb.client.setFaults({ down: true })
      const down = yield* Effect.flip(LinkedIn.audiences.send(prepare([change("add", OPS)]), s))
      assert.deepStrictEqual([down._tag, down.message], [
        "RetryableError",
        "LinkedIn answered 503: Service Unavailable"
      ])
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [])
    })))

  it.scopedLive("a batch over the sandbox's element limit is refused (400): every change rejected", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.configure({ maxSegmentElements: 2 })
      const error = yield* Effect.flip(
        LinkedIn.audiences.send(
          prepare([
            change("add", OPS, { i: 0 }),
            change("add", { emailSha256: [DANA_SHA256] }, { i: 1 }),
            change("add", { emails: ["second@acme-corp.example"] }, { i: 2 })
          ]),
          s
        )
      )
      assert.strictEqual(error._tag, "PayloadInvalidError")
      assert.strictEqual(error.message, "LinkedIn answered 400: /elements :: at most 2 elements per batch, got 3")
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [])
    })))
})

describe("LinkedInSandbox DMP segment users over raw HTTP", () => {
  it.scopedLive("5,001 elements → 400; 5,000 are taken", () =>
    Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const element = { action: "ADD", userIds: [sha(OPS_EMAIL_SHA256)] }
      const over = yield* usersRaw(sb, Array.from({ length: 5001 }, () => element))
      assert.deepStrictEqual(over, {
        status: 400,
        body: { status: 400, message: "/elements :: at most 5000 elements per batch, got 5001" }
      })
      const ok = yield* usersRaw(sb, Array.from({ length: 5000 }, () => element))
      assert.deepStrictEqual([ok.status, ok.body.elements.length, ok.body.elements[4999]], [200, 5000, { status: 201 }])
    }).pipe(Effect.provide(FetchHttpClient.layer)))

  it.scopedLive("per-element checks: action, idType, SHA512_EMAIL length, no identifier; names alone are taken", () =>
    Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const answer = yield* usersRaw(sb, [
        { action: "UPSERT", userIds: [sha(OPS_EMAIL_SHA256)] },
        { action: "ADD", userIds: [{ idType: "PHONE", idValue: "16505551212" }] },
        { action: "ADD", userIds: [{ idType: "SHA512_EMAIL", idValue: OPS_EMAIL_SHA256 }] },
        { action: "ADD", userIds: [] },
        { action: "ADD", firstName: "Dana", lastName: "Whitfield" }
      ])
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(answer.body.elements.map((e: any) => e.error?.message ?? e.status), [
        "/elements/0/action :: expected ADD or REMOVE, got \"UPSERT\"",
        "/elements/1/userIds/0/idType :: expected SHA256_EMAIL, SHA512_EMAIL or GOOGLE_AID",
        "/elements/2/userIds/0/idValue :: SHA512_EMAIL must be 128 lowercase hex characters",
        "/elements/3/userIds :: at least one userIds entry, or firstName and lastName, is required",
        201
      ])
      const unknown = yield* usersRaw(sb, [{ action: "ADD", userIds: [sha(OPS_EMAIL_SHA256)] }], "42")
      assert.deepStrictEqual(unknown, {
        status: 404,
        body: { status: 404, code: "NOT_FOUND", message: "DmpSegment with id 42 does not exist" }
      })
      assert.deepStrictEqual(yield* sb.client.segmentMembers(SEGMENT), [])
    }).pipe(Effect.provide(FetchHttpClient.layer)))
})
