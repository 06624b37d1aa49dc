/**
 * The audience capability (plugin API 1.2): Customer Match user list members through the Data Manager API —
 * `member` payloads (hashing shared with conversions), and `send` against the real sandbox over HTTP
 * (`audienceMembers:ingest` / `:remove`, membership read back, validation, limits, error classification).
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { afterEach, assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import * as CoreDestination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Effect, Either, type Scope } from "effect"
import { GoogleAds, GoogleAdsOAuth, GoogleAdsSandbox } from "../src/index.js"
import { settings, SHA, T0 } from "./fixtures.js"

/** Hashes computed with `printf '%s' VALUE | sha256sum` (never by the code under test). */
const GMAIL = SHA["cloudysanfrancisco@gmail.com"]
const PHONE = SHA["+18005550100"]
const JANE = SHA["jane.doe@example.com"]
const DE_PHONE = SHA["+4915123456789"]
/** `printf '%s' cloudysanfrancisco@gmail.com | openssl dgst -sha256 -binary | base64` */
const GMAIL_BASE64 = "Ij69pvaImxSUVRupAtnTgdry9kK64FWIjpY0PVPp+cQ="

const GRANTED = { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_GRANTED" } as const
const NO_PERSONALISATION = { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_DENIED" } as const
const DENIED = { adUserData: "CONSENT_DENIED", adPersonalization: "CONSENT_DENIED" } as const

const USER_LIST = GoogleAdsSandbox.SANDBOX_USER_LISTS[0]!

interface ChangeInput {
  readonly op?: "add" | "remove"
  readonly audienceId?: string
  readonly identity?: Partial<Destination.Identity>
  readonly consent?: Record<string, boolean>
  readonly eventId?: string
}

/** One audience change as the core hands it to the plugin. */
const change = (input: ChangeInput = {}): Destination.AudienceChange => ({
  position: "7",
  eventId: input.eventId ?? "evt_aud_1",
  audienceId: input.audienceId ?? USER_LIST,
  audience: { key: "cohort_42", name: "Power users" },
  op: input.op ?? "add",
  identity: {
    personKey: "person_1",
    emails: [],
    phones: [],
    emailSha256: [],
    phoneSha256: [],
    clickIds: {},
    ...input.identity
  },
  consent: input.consent ?? { advertising: true, personalisation: true },
  at: T0
})

/** A hashed field: the raw value, the normalised string Google hashes, and its SHA-256 (from `sha256sum`). */
interface HashedField {
  readonly rule: "email" | "phone"
  readonly raw: string
  readonly normalized: string
  readonly sha256: string
}

interface Case {
  readonly scenario: string
  readonly input: Destination.AudienceChange
  readonly settings?: Record<string, unknown>
  readonly hashed?: ReadonlyArray<HashedField>
  readonly expected:
    | GoogleAds.AudienceMember
    | { readonly skip: Destination.SkipReason["reason"]; readonly detail: string }
}

const cases: ReadonlyArray<Case> = [
  {
    scenario: "add: Gmail address with dots and +tag → Google's form; formatted phone → E.164; consent granted",
    input: change({
      identity: { emails: ["  Cloudy.SanFrancisco+promo@GMAIL.com "], phones: ["+1 (800) 555-0100"] }
    }),
    hashed: [
      {
        rule: "email",
        raw: "  Cloudy.SanFrancisco+promo@GMAIL.com ",
        normalized: "cloudysanfrancisco@gmail.com",
        sha256: GMAIL
      },
      { rule: "phone", raw: "+1 (800) 555-0100", normalized: "+18005550100", sha256: PHONE }
    ],
    expected: {
      userData: { userIdentifiers: [{ emailAddress: GMAIL }, { phoneNumber: PHONE }] },
      consent: GRANTED
    }
  },
  {
    scenario: "add: personalisation denied → adPersonalization DENIED, adUserData GRANTED",
    input: change({
      identity: { emails: ["Jane.Doe@Example.com"] },
      consent: { advertising: true, personalisation: false }
    }),
    hashed: [{ rule: "email", raw: "Jane.Doe@Example.com", normalized: "jane.doe@example.com", sha256: JANE }],
    expected: { userData: { userIdentifiers: [{ emailAddress: JANE }] }, consent: NO_PERSONALISATION }
  },
  {
    scenario: "add: advertising denied → both DENIED (as for conversion events)",
    input: change({ identity: { emails: ["jane.doe@example.com"] }, consent: { advertising: false } }),
    expected: { userData: { userIdentifiers: [{ emailAddress: JANE }] }, consent: DENIED }
  },
  {
    scenario: "add: personalisationPurpose setting decides adPersonalization; a purpose not stated counts as granted",
    input: change({
      identity: { emails: ["jane.doe@example.com"] },
      consent: { advertising: true, personalisation: false, ads_personalised: true }
    }),
    settings: { personalisationPurpose: "ads_personalised" },
    expected: { userData: { userIdentifiers: [{ emailAddress: JANE }] }, consent: GRANTED }
  },
  {
    scenario: "remove: identifiers only — RemoveAudienceMembersRequest has no consent",
    input: change({
      op: "remove",
      identity: { emails: ["cloudy.sanfrancisco@gmail.com"], phones: ["+18005550100"] },
      consent: { advertising: false }
    }),
    hashed: [{
      rule: "email",
      raw: "cloudy.sanfrancisco@gmail.com",
      normalized: "cloudysanfrancisco@gmail.com",
      sha256: GMAIL
    }],
    expected: { userData: { userIdentifiers: [{ emailAddress: GMAIL }, { phoneNumber: PHONE }] } }
  },
  {
    scenario: "pre-hashed emails: the generic digest of a dotted Gmail address is not sent again; another is kept",
    input: change({
      identity: {
        emails: ["Cloudy.SanFrancisco@gmail.com"],
        emailSha256: [SHA["cloudy.sanfrancisco@gmail.com"], JANE.toUpperCase()]
      }
    }),
    expected: {
      userData: { userIdentifiers: [{ emailAddress: GMAIL }, { emailAddress: JANE }] },
      consent: GRANTED
    }
  },
  {
    scenario: "E.164 phone only (no country is known for an audience change: a national number is left out)",
    input: change({ identity: { phones: ["+49 151 23456789", "0151 23456789"] } }),
    hashed: [{ rule: "phone", raw: "+49 151 23456789", normalized: "+4915123456789", sha256: DE_PHONE }],
    expected: { userData: { userIdentifiers: [{ phoneNumber: DE_PHONE }] }, consent: GRANTED }
  },
  {
    scenario: "no email and no phone → skipped invalid",
    input: change({ identity: { userId: "usr_1", phoneSha256: [SHA["18005550100"]] } }),
    expected: {
      skip: "invalid",
      detail: "Customer Match needs an email address or a phone number with its country code; the person has none"
    }
  },
  {
    scenario: "only a national phone number (no country to read it with) → skipped invalid",
    input: change({ identity: { phones: ["0151 23456789"] } }),
    expected: {
      skip: "invalid",
      detail: "Customer Match needs an email address or a phone number with its country code; the person has none"
    }
  },
  {
    scenario: "an audience id that is no user list id → skipped invalid naming it",
    input: change({ audienceId: "Power users", identity: { emails: ["jane.doe@example.com"] } }),
    expected: {
      skip: "invalid",
      detail: "the Google audience id must be a user list id (digits), got \"Power users\": check the audience " +
        "routing (audiences[].destinations) in the config"
    }
  },
  {
    scenario: "ads_api mode → skipped not_mapped: audiences go through the Data Manager API only",
    input: change({ identity: { emails: ["jane.doe@example.com"] } }),
    settings: { mode: "ads_api", customerId: "1234567890", developerToken: "dev-token-x" },
    expected: {
      skip: "not_mapped",
      detail: "Google audiences (Customer Match user lists) are sent through the Data Manager API only: this " +
        "destination is in ads_api mode; route the audience to a destination in data_manager mode (with " +
        "operatingAccountId)"
    }
  }
]

const hashWith = (f: HashedField) => (f.rule === "email" ? Pii.Google.email(f.raw) : Pii.Google.phone(f.raw))

describe("GoogleAds.audiences.member", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = GoogleAds.audiences.member(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        const left = Either.getLeft(result)
        assert.strictEqual(left._tag === "Some" ? left.value.reason : undefined, c.expected.skip)
        assert.strictEqual(left._tag === "Some" ? left.value.detail : undefined, c.expected.detail)
      } else {
        assert.deepStrictEqual(Either.getOrThrow(result), c.expected)
      }
      for (const f of c.hashed ?? []) {
        const h = hashWith(f)
        assert.strictEqual(h?.normalized, f.normalized, `${f.rule} ${JSON.stringify(f.raw)} normalised`)
        assert.strictEqual(h?.hash, f.sha256, `${f.rule} ${JSON.stringify(f.raw)} SHA-256`)
      }
    })
  }

  it("at most 10 user identifiers per member (emails first)", () => {
    const emails = Array.from({ length: 12 }, (_, i) => `user${i}@example.com`)
    const m = Either.getOrThrow(
      GoogleAds.audiences.member(change({ identity: { emails, phones: ["+18005550100"] } }), settings())
    )
    assert.strictEqual(m.userData.userIdentifiers.length, 10)
    assert.deepStrictEqual(m.userData.userIdentifiers[0], { emailAddress: SHA["user0@example.com"] })
    assert.deepStrictEqual(m.userData.userIdentifiers[9], { emailAddress: SHA["user9@example.com"] })
  })

  it("a member's identifiers are exactly the conversion event's for the same person", () => {
    const identity = { emails: ["Cloudy.SanFrancisco+promo@gmail.com"], phones: ["+18005550100"] }
    const m = Either.getOrThrow(GoogleAds.audiences.member(change({ identity }), settings()))
    assert.deepStrictEqual(
      m.userData.userIdentifiers,
      GoogleAds.hashedIdentifiers({ emails: identity.emails, emailSha256: [], phones: identity.phones })
    )
    assert.deepStrictEqual(m.userData.userIdentifiers, [{ emailAddress: GMAIL }, { phoneNumber: PHONE }])
  })
})

describe("GoogleAds audience request bodies", () => {
  const member = { userData: { userIdentifiers: [{ emailAddress: GMAIL }] }, consent: GRANTED }

  it("ingest: one destination (user list), HEX, member consent, Customer Match terms accepted", () => {
    assert.deepStrictEqual(
      GoogleAds.audienceIngestBody("8000000001", [member], settings({ loginAccountId: "987-654-3210" })),
      {
        destinations: [{
          operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
          loginAccount: { accountType: "GOOGLE_ADS", accountId: "9876543210" },
          productDestinationId: "8000000001"
        }],
        audienceMembers: [member],
        encoding: "HEX",
        termsOfService: { customerMatchTermsOfServiceStatus: "ACCEPTED" }
      }
    )
  })

  it("remove: no termsOfService and no consent fields; validateOnly only when set", () => {
    const removal = { userData: member.userData }
    assert.deepStrictEqual(GoogleAds.audienceRemoveBody("8000000001", [removal], settings({ validateOnly: true })), {
      destinations: [{
        operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
        productDestinationId: "8000000001"
      }],
      audienceMembers: [removal],
      encoding: "HEX",
      validateOnly: true
    })
  })

  it("field violations name members by proto path or JSON name", () => {
    assert.strictEqual(
      GoogleAds.memberViolationIndex("audience_members.audience_members[3].user_data.user_identifiers"),
      3
    )
    assert.strictEqual(GoogleAds.memberViolationIndex("audienceMembers[12].userData"), 12)
    assert.strictEqual(GoogleAds.memberViolationIndex("audience_members"), undefined)
    assert.strictEqual(GoogleAds.memberViolationIndex("destinations[0].product_destination_id"), undefined)
  })

  it("memberProblem: what Google would refuse, checked before sending", () => {
    assert.strictEqual(GoogleAds.memberProblem(member), undefined)
    assert.strictEqual(
      GoogleAds.memberProblem({ userData: { userIdentifiers: [{ emailAddress: "jane.doe@example.com" }] } }),
      "userData.userIdentifiers[0].emailAddress: not a SHA-256 digest in lowercase hex (64 characters)"
    )
    assert.strictEqual(
      GoogleAds.memberProblem({ userData: { userIdentifiers: [] } }),
      "userData.userIdentifiers: at least one identifier is required"
    )
    assert.strictEqual(
      GoogleAds.memberProblem({
        userData: { userIdentifiers: Array.from({ length: 11 }, () => ({ emailAddress: GMAIL })) }
      }),
      "userData.userIdentifiers: at most 10 identifiers per member (got 11)"
    )
    assert.strictEqual(
      GoogleAds.memberProblem({ userData: { userIdentifiers: [{ emailAddress: GMAIL, phoneNumber: PHONE }] } }),
      "userData.userIdentifiers[0]: exactly one of emailAddress, phoneNumber and address must be set"
    )
    assert.strictEqual(
      GoogleAds.memberProblem({ ...member, consent: { adUserData: "GRANTED" } }),
      "consent.adUserData: must be CONSENT_GRANTED or CONSENT_DENIED"
    )
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Against the sandbox

const sandbox = (options: GoogleAdsSandbox.SandboxOptions = {}, extra: Record<string, unknown> = {}) =>
  GoogleAdsSandbox.start(options).pipe(
    Effect.map((sb) => ({
      sb,
      settings: settings({
        clientId: sb.credentials.clientId,
        clientSecret: sb.credentials.clientSecret,
        refreshToken: sb.credentials.refreshToken,
        apiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl,
        statusPollIntervalMs: 20,
        ...extra
      })
    }))
  )

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const tags = (outcomes: ReadonlyArray<Destination.Outcome>) => outcomes.map((o) => o._tag)
const bodyOf = (o: Destination.Outcome | undefined) => JSON.parse(o?.response?.body ?? "null")
const reasonOf = (o: Destination.Outcome | undefined) => (o?._tag === "Rejected" ? o.reason : undefined)
const failure = <A, E>(r: Either.Either<A, E>) =>
  Either.getLeft(r).pipe((o) => (o._tag === "Some" ? o.value : undefined))

/** Prepares changes that must produce a member. */
const prepare = (
  changes: ReadonlyArray<Destination.AudienceChange>,
  s: GoogleAds.Settings
): ReadonlyArray<Destination.PreparedMember<GoogleAds.AudienceMember>> =>
  changes.map((c) => ({ change: c, member: Either.getOrThrow(GoogleAds.audiences.member(c, s)) }))

const alice = (op: "add" | "remove" = "add", extra: ChangeInput = {}) =>
  change({
    op,
    eventId: `evt_alice_${op}`,
    identity: { emails: ["Cloudy.SanFrancisco+promo@gmail.com"], phones: ["+18005550100"] },
    ...extra
  })
const jane = (op: "add" | "remove" = "add", extra: ChangeInput = {}) =>
  change({ op, eventId: `evt_jane_${op}`, identity: { emails: ["jane.doe@example.com"] }, ...extra })

const call = (request: HttpClientRequest.HttpClientRequest) =>
  HttpClient.HttpClient.pipe(
    Effect.flatMap((c) => c.execute(request)),
    Effect.flatMap((r) => Effect.map(r.json, (body) => ({ status: r.status, body: body as any }))),
    Effect.orDie
  )

const bearerOf = (sb: GoogleAdsSandbox.Sandbox) =>
  call(
    HttpClientRequest.post(sb.tokenUrl).pipe(HttpClientRequest.bodyUrlParams({
      client_id: sb.credentials.clientId,
      client_secret: sb.credentials.clientSecret,
      refresh_token: sb.credentials.refreshToken,
      grant_type: "refresh_token"
    }))
  ).pipe(Effect.map((t) => t.body.access_token as string))

const raw = (sb: GoogleAdsSandbox.Sandbox, method: "ingest" | "remove", body: unknown, bearer: string) =>
  call(
    HttpClientRequest.post(`${sb.apiBase}/v1/audienceMembers:${method}`).pipe(
      HttpClientRequest.bodyUnsafeJson(body),
      HttpClientRequest.bearerToken(bearer)
    )
  )

const destination = (userListId = USER_LIST) => ({
  operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
  productDestinationId: userListId
})
const TERMS = { customerMatchTermsOfServiceStatus: "ACCEPTED" }
const emailMember = (hash: string) => ({ userData: { userIdentifiers: [{ emailAddress: hash }] } })

afterEach(() => GoogleAdsOAuth.clearCache())

describe("GoogleAds.audiences.send against the sandbox", () => {
  it.scopedLive("add then remove: ingest and remove requests, membership of the user list read back", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const added = prepare([alice(), jane("add", { consent: { advertising: true, personalisation: false } })], s)
      const addOutcomes = yield* GoogleAds.audiences.send(added, s)
      assert.deepStrictEqual(tags(addOutcomes), ["Accepted", "Accepted"])
      const summary = bodyOf(addOutcomes[0])
      assert.strictEqual(summary.requestStatus, "SUCCESS")
      assert.strictEqual(summary.recordCount, "2")
      assert.strictEqual(summary.userIdentifierCount, "3")
      assert.match(summary.requestId, /^[0-9a-f-]{36}$/)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [
        { emailAddress: GMAIL },
        { phoneNumber: PHONE },
        { emailAddress: JANE }
      ])

      const removeOutcomes = yield* GoogleAds.audiences.send(prepare([alice("remove")], s), s)
      assert.deepStrictEqual(tags(removeOutcomes), ["Accepted"])
      assert.strictEqual(bodyOf(removeOutcomes[0]).recordCount, "1")
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [{ emailAddress: JANE }])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(GoogleAdsSandbox.SANDBOX_USER_LISTS[1]!), [])

      // The exact wire members: consent per member on ingest (Jane's personalisation denied), none on remove.
      const requests = yield* sb.client.audienceRequests()
      assert.deepStrictEqual(requests.map((r) => [r.op, r.user_list_id, r.operating_account_id, r.terms_of_service]), [
        ["ingest", USER_LIST, "1234567890", "ACCEPTED"],
        ["remove", USER_LIST, "1234567890", null]
      ])
      assert.deepStrictEqual(requests[0]!.members, [
        { userData: { userIdentifiers: [{ emailAddress: GMAIL }, { phoneNumber: PHONE }] }, consent: GRANTED },
        { userData: { userIdentifiers: [{ emailAddress: JANE }] }, consent: NO_PERSONALISATION }
      ])
      assert.deepStrictEqual(requests[1]!.members, [
        { userData: { userIdentifiers: [{ emailAddress: GMAIL }, { phoneNumber: PHONE }] } }
      ])
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.audience_responses, { "200": 2 })
      assert.strictEqual(stats.audience_members_ingested, 2)
      assert.strictEqual(stats.audience_members_removed, 1)
      assert.strictEqual(stats.token_requests, 1)
      assert.strictEqual(stats.ingest_requests, 0) // no conversion events were sent
    })))

  it.scopedLive("adding the same person twice keeps one copy of each identifier", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      yield* GoogleAds.audiences.send(prepare([jane()], s), s)
      yield* GoogleAds.audiences.send(prepare([jane()], s), s)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [{ emailAddress: JANE }])
      assert.strictEqual((yield* sb.client.stats()).audience_members_ingested, 2)
    })))

  it.scopedLive("a mixed batch is sent as one request per operation and user list; outcomes stay in order", () =>
    run(Effect.gen(function*() {
      const other = GoogleAdsSandbox.SANDBOX_USER_LISTS[1]!
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      yield* GoogleAds.audiences.send(prepare([jane("add", { audienceId: other })], s), s)
      const outcomes = yield* GoogleAds.audiences.send(
        prepare([alice(), jane("remove", { audienceId: other }), jane()], s),
        s
      )
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Accepted", "Accepted"])
      const requests = yield* sb.client.audienceRequests()
      assert.deepStrictEqual(requests.map((r) => [r.op, r.user_list_id, r.members.length]), [
        ["ingest", other, 1],
        ["ingest", USER_LIST, 2],
        ["remove", other, 1]
      ])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(other), [])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [
        { emailAddress: GMAIL },
        { phoneNumber: PHONE },
        { emailAddress: JANE }
      ])
    })))

  it.scopedLive("requestStatus reports the audience request: ingestion and removal counts per destination", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox({ processingPolls: 0 })
      const bearer = yield* bearerOf(sb)
      const members = [
        { userData: { userIdentifiers: [{ emailAddress: GMAIL }, { phoneNumber: PHONE }] } },
        emailMember(JANE)
      ]
      const ingest = yield* raw(sb, "ingest", {
        destinations: [destination()],
        audienceMembers: members,
        encoding: "HEX",
        termsOfService: TERMS
      }, bearer)
      assert.strictEqual(ingest.status, 200)
      const status = (requestId: string) =>
        call(
          HttpClientRequest.get(`${sb.apiBase}/v1/requestStatus:retrieve`).pipe(
            HttpClientRequest.setUrlParam("requestId", requestId),
            HttpClientRequest.bearerToken(bearer)
          )
        )
      const s1 = yield* status(ingest.body.requestId)
      assert.deepStrictEqual(s1.body, {
        requestStatusPerDestination: [{
          destination: destination(),
          requestStatus: "SUCCESS",
          audienceMembersIngestionStatus: { userDataIngestionStatus: { recordCount: "2", userIdentifierCount: "3" } }
        }]
      })
      const removal = yield* raw(sb, "remove", {
        destinations: [destination()],
        audienceMembers: [emailMember(JANE)],
        encoding: "HEX"
      }, bearer)
      const s2 = yield* status(removal.body.requestId)
      assert.deepStrictEqual(s2.body.requestStatusPerDestination[0].audienceMembersRemovalStatus, {
        userDataRemovalStatus: { recordCount: "1", userIdentifierCount: "1" }
      })
    })))

  it.scopedLive("members Google would refuse are rejected before sending; the rest of the batch goes through", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      const good = prepare([alice(), jane()], s)
      const batch: ReadonlyArray<Destination.PreparedMember<GoogleAds.AudienceMember>> = [
        good[0]!,
        { change: jane(), member: { userData: { userIdentifiers: [{ emailAddress: "jane.doe@example.com" }] } } },
        { change: jane("add", { audienceId: "abc" }), member: good[1]!.member },
        good[1]!
      ]
      const outcomes = yield* GoogleAds.audiences.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Rejected", "Accepted"])
      assert.strictEqual(
        reasonOf(outcomes[1]),
        "userData.userIdentifiers[0].emailAddress: not a SHA-256 digest in lowercase hex (64 characters)"
      )
      assert.strictEqual(
        reasonOf(outcomes[2]),
        "the Google audience id must be a user list id (digits), got \"abc\": check the audience routing " +
          "(audiences[].destinations) in the config"
      )
      const requests = yield* sb.client.audienceRequests()
      assert.strictEqual(requests.length, 1)
      assert.strictEqual(requests[0]!.members.length, 2)
      assert.deepStrictEqual((yield* sb.client.stats()).audience_responses, { "200": 1 })
    })))

  it.scopedLive("a 400 naming members: those Rejected with Google's reason, the others resent and Accepted", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      // Google's documented answers: plain text → INVALID_HEX_ENCODING; hex but no digest → INVALID_SHA256_FORMAT
      // on the member, without a description.
      yield* sb.client.setFaults({
        status: 400,
        body: {
          error: {
            code: 400,
            message: "There was a problem with the request.",
            status: "INVALID_ARGUMENT",
            details: [
              {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                reason: "INVALID_ARGUMENT",
                domain: "datamanager.googleapis.com"
              },
              {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                fieldViolations: [
                  {
                    field: "audience_members.audience_members[1].user_data.user_identifiers",
                    description: "Email is not hex encoded.",
                    reason: "INVALID_HEX_ENCODING"
                  },
                  { field: "audience_members.audience_members[2]", reason: "INVALID_SHA256_FORMAT" }
                ]
              }
            ]
          }
        }
      })
      const batch = prepare([
        alice(),
        jane(),
        change({ eventId: "evt_3", identity: { phones: ["+4915123456789"] } })
      ], s)
      const outcomes = yield* GoogleAds.audiences.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted", "Rejected", "Rejected"])
      assert.deepStrictEqual(outcomes.map(reasonOf), [
        undefined,
        "audience_members.audience_members[1].user_data.user_identifiers: Email is not hex encoded. " +
        "(INVALID_HEX_ENCODING)",
        "audience_members.audience_members[2]: INVALID_SHA256_FORMAT"
      ])
      assert.strictEqual(outcomes[1]?.response?.status, 400)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [
        { emailAddress: GMAIL },
        { phoneNumber: PHONE }
      ])
      assert.deepStrictEqual((yield* sb.client.stats()).audience_responses, { "400": 1, "200": 1 })
    })))

  it.scopedLive("unknown user list → 404 NOT_FOUND → PayloadInvalidError naming it; known once created", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([jane("add", { audienceId: "8999999999" })], s)
      const e = failure(yield* Effect.either(GoogleAds.audiences.send(batch, s)))
      assert.strictEqual(e?._tag, "PayloadInvalidError")
      assert.strictEqual(e?.status, 404)
      assert.strictEqual(
        e?.message,
        "Google has no user list 8999999999 in account 1234567890 (404 NOT_FOUND: User list 8999999999 was not " +
          "found in account 1234567890.): check the audience routing (the user list id) and the operating account"
      )
      assert.deepStrictEqual((yield* sb.client.stats()).rejected, { INVALID_USER_LIST_ID: 1 })
      yield* sb.client.createUserLists(["8999999999"])
      const outcomes = yield* GoogleAds.audiences.send(batch, s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.deepStrictEqual(yield* sb.client.audienceMembers("8999999999"), [{ emailAddress: JANE }])
    })))

  it.scopedLive("more members than the sandbox's per-request limit → 400 TOO_MANY_AUDIENCE_MEMBERS → invalid", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ maxAudienceMembersPerRequest: 2 })
      const e = failure(yield* Effect.either(GoogleAds.audiences.send(prepare([alice(), jane(), jane()], s), s)))
      assert.strictEqual(e?._tag, "PayloadInvalidError")
      assert.strictEqual(
        e?.message,
        "Google Data Manager API refused the audience request (400): INVALID_ARGUMENT: There was a problem with " +
          "the request. — audience_members: Maximum number of audience members allowed per request is 2. " +
          "(TOO_MANY_AUDIENCE_MEMBERS)"
      )
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [])
    })))

  it.scopedLive("Customer Match terms not signed → AuthFailedError (the operator must accept them)", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      yield* sb.client.setFaults({
        status: 400,
        body: {
          error: {
            code: 400,
            message: "There was a problem with the request.",
            status: "INVALID_ARGUMENT",
            details: [{
              "@type": "type.googleapis.com/google.rpc.ErrorInfo",
              reason: "TERMS_AND_CONDITIONS_NOT_SIGNED",
              domain: "datamanager.googleapis.com"
            }]
          }
        }
      })
      const e = failure(yield* Effect.either(GoogleAds.audiences.send(prepare([jane()], s), s)))
      assert.strictEqual(e?._tag, "AuthFailedError")
      assert.strictEqual(
        e?.message,
        `Google refused the Customer Match upload to user list ${USER_LIST}: the Customer Match terms of service ` +
          "are not accepted for account 1234567890 (400 INVALID_ARGUMENT: There was a problem with the request.): " +
          "accept them in the Google Ads account"
      )
    })))

  it.scopedLive("429 RESOURCE_EXHAUSTED (quota shared with events) → RetryableError with the Retry-After delay", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ rateLimitPerMinute: 1, processingPolls: 0 })
      yield* GoogleAds.audiences.send(prepare([jane()], s), s)
      const e = failure(yield* Effect.either(GoogleAds.audiences.send(prepare([alice()], s), s)))
      assert.strictEqual(e?._tag, "RetryableError")
      assert.strictEqual(e?.status, 429)
      const after = e?._tag === "RetryableError" ? e.retryAfterMs ?? 0 : 0
      assert.isTrue(after >= 59_000 && after <= 60_000, `retryAfterMs ${after}`)
      assert.include(e?.message ?? "", "Google Data Manager API answered 429: RESOURCE_EXHAUSTED: Quota exceeded")
      assert.deepStrictEqual((yield* sb.client.stats()).audience_responses, { "200": 1, "429": 1 })
    })))

  it.scopedLive("503 → RetryableError; 403 → AuthFailedError; 401 twice → AuthFailedError", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox()
      const batch = prepare([jane()], s)
      yield* sb.client.setFaults({ status: 503, retryAfter: 7 })
      const unavailable = failure(yield* Effect.either(GoogleAds.audiences.send(batch, s)))
      assert.strictEqual(unavailable?._tag, "RetryableError")
      assert.strictEqual(unavailable?._tag === "RetryableError" ? unavailable.retryAfterMs : undefined, 7000)
      assert.strictEqual(unavailable?.message, "Google Data Manager API answered 503: UNAVAILABLE: Injected fault.")

      yield* sb.client.setFaults({ status: 403 })
      const denied = failure(yield* Effect.either(GoogleAds.audiences.send(batch, s)))
      assert.strictEqual(denied?._tag, "AuthFailedError")
      assert.strictEqual(
        denied?.message,
        `Google denied access to user list ${USER_LIST} of account 1234567890 (403 PERMISSION_DENIED: Injected ` +
          "fault.): check the account ids and that the OAuth user can manage the account and its user lists"
      )

      yield* sb.client.setFaults({ status: 401, count: 2 })
      const refused = failure(yield* Effect.either(GoogleAds.audiences.send(batch, s)))
      assert.strictEqual(refused?._tag, "AuthFailedError")
      assert.include(refused?.message ?? "", "Google refused a freshly issued access token (401")
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [])
    })))

  it.scopedLive("final status FAILED → every member Rejected with Google's error counts", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 1 })
      yield* sb.client.setFaults({
        requestStatus: "FAILED",
        errorCounts: [{ reason: "PROCESSING_ERROR_REASON_INVALID_DATA", recordCount: 2 }]
      })
      const outcomes = yield* GoogleAds.audiences.send(prepare([alice(), jane()], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Rejected", "Rejected"])
      const requestId = bodyOf(outcomes[0]).requestId
      assert.strictEqual(
        reasonOf(outcomes[1]),
        `Google failed the request ${requestId} (FAILED: PROCESSING_ERROR_REASON_INVALID_DATA × 2)`
      )
    })))

  it.scopedLive("validateOnly: Accepted noting validate only; the user list is unchanged", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({}, { validateOnly: true })
      const outcomes = yield* GoogleAds.audiences.send(prepare([jane()], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      assert.strictEqual(bodyOf(outcomes[0]).note, "validate only: Google stored nothing")
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [])
      assert.deepStrictEqual(yield* sb.client.audienceRequests(), [])
      assert.strictEqual((yield* sb.client.stats()).validate_only_requests, 1)
    })))

  it.scopedLive("ads_api mode: nothing is sent; every change Rejected saying audiences need data_manager mode", () =>
    run(Effect.gen(function*() {
      const { sb, settings: dm } = yield* sandbox()
      const batch = prepare([jane()], dm)
      const s = settings({
        mode: "ads_api",
        customerId: "1234567890",
        developerToken: "dev-token-x",
        apiBase: sb.apiBase,
        tokenUrl: sb.tokenUrl
      })
      const outcomes = yield* GoogleAds.audiences.send(batch, s)
      assert.deepStrictEqual(outcomes.map(reasonOf), [
        "Google audiences are sent through the Data Manager API only; this destination is now in ads_api mode"
      ])
      assert.strictEqual((yield* sb.client.stats()).audience_requests, 0)
    })))

  it.scopedLive("secrets and access tokens never appear in outcomes", () =>
    run(Effect.gen(function*() {
      const { sb, settings: s } = yield* sandbox({ processingPolls: 0 })
      const outcomes = yield* GoogleAds.audiences.send(prepare([jane()], s), s)
      assert.deepStrictEqual(tags(outcomes), ["Accepted"])
      const text = JSON.stringify(outcomes)
      assert.notInclude(text, sb.credentials.clientSecret)
      assert.notInclude(text, sb.credentials.refreshToken)
      assert.notInclude(text, "ya29.")
    })))
})

describe("GoogleAdsSandbox audience endpoints (raw requests)", () => {
  it.scopedLive("a request larger than 10,000 members is refused TOO_MANY_AUDIENCE_MEMBERS; 10,000 pass", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const bearer = yield* bearerOf(sb)
      const body = (n: number) => ({
        destinations: [destination()],
        audienceMembers: Array.from({ length: n }, () => emailMember(JANE)),
        encoding: "HEX",
        termsOfService: TERMS,
        validateOnly: true
      })
      const tooMany = yield* raw(sb, "ingest", body(10_001), bearer)
      assert.strictEqual(tooMany.status, 400)
      assert.deepStrictEqual(tooMany.body.error.details[1].fieldViolations, [{
        field: "audience_members",
        description: "Maximum number of audience members allowed per request is 10,000.",
        reason: "TOO_MANY_AUDIENCE_MEMBERS"
      }])
      const atLimit = yield* raw(sb, "ingest", body(10_000), bearer)
      assert.strictEqual(atLimit.status, 200)
      assert.match(atLimit.body.requestId, /^[0-9a-f-]{36}$/)
    })))

  it.scopedLive("validation: terms of service on ingest, hashes in the declared encoding, ≤ 10 identifiers", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const bearer = yield* bearerOf(sb)
      const r = yield* raw(sb, "ingest", {
        destinations: [destination()],
        audienceMembers: [
          emailMember(GMAIL),
          emailMember("jane.doe@example.com"),
          emailMember("abcd"),
          { userData: { userIdentifiers: Array.from({ length: 11 }, () => ({ phoneNumber: PHONE })) } },
          { userData: { userIdentifiers: [{ emailAddress: GMAIL }] }, consent: { adUserData: "GRANTED" } }
        ],
        encoding: "HEX"
      }, bearer)
      assert.strictEqual(r.status, 400)
      assert.strictEqual(r.body.error.status, "INVALID_ARGUMENT")
      assert.deepStrictEqual(r.body.error.details[1].fieldViolations, [
        {
          field: "terms_of_service.customer_match_terms_of_service_status",
          description: "Required terms and conditions are not accepted.",
          reason: "TERMS_AND_CONDITIONS_NOT_SIGNED"
        },
        {
          field: "audience_members.audience_members[1].user_data.user_identifiers",
          description: "Email is not hex encoded.",
          reason: "INVALID_HEX_ENCODING"
        },
        { field: "audience_members.audience_members[2]", reason: "INVALID_SHA256_FORMAT" },
        {
          field: "audience_members.audience_members[3].user_data.user_identifiers",
          description: "Maximum number of user identifiers allowed per audience member is 10.",
          reason: "TOO_MANY_USER_IDENTIFIERS"
        },
        {
          field: "audience_members.audience_members[4].consent.ad_user_data",
          description: "Enum value cannot be used.",
          reason: "INVALID_ENUM_VALUE"
        }
      ])
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [])
    })))

  it.scopedLive("BASE64 encoding: a base64 digest is accepted (and is the same identifier as its hex form)", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const bearer = yield* bearerOf(sb)
      const ingest = yield* raw(sb, "ingest", {
        destinations: [destination()],
        audienceMembers: [emailMember(GMAIL_BASE64)],
        encoding: "BASE64",
        termsOfService: TERMS
      }, bearer)
      assert.strictEqual(ingest.status, 200)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [{ emailAddress: GMAIL_BASE64 }])
      const hexDigestInBase64 = yield* raw(sb, "ingest", {
        destinations: [destination()],
        audienceMembers: [emailMember(GMAIL)],
        encoding: "BASE64",
        termsOfService: TERMS
      }, bearer)
      assert.strictEqual(hexDigestInBase64.status, 400)
      assert.deepStrictEqual(hexDigestInBase64.body.error.details[1].fieldViolations, [
        { field: "audience_members.audience_members[0]", reason: "INVALID_SHA256_FORMAT" }
      ])
      const removal = yield* raw(sb, "remove", {
        destinations: [destination()],
        audienceMembers: [emailMember(GMAIL)],
        encoding: "HEX"
      }, bearer)
      assert.strictEqual(removal.status, 200)
      assert.deepStrictEqual(yield* sb.client.audienceMembers(USER_LIST), [])
    })))

  it.scopedLive("remove takes no termsOfService or consent: unknown fields are refused like Google's JSON parser", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox()
      const bearer = yield* bearerOf(sb)
      const r = yield* raw(sb, "remove", {
        destinations: [destination()],
        audienceMembers: [emailMember(JANE)],
        encoding: "HEX",
        termsOfService: TERMS
      }, bearer)
      assert.strictEqual(r.status, 400)
      assert.strictEqual(
        r.body.error.message,
        "Invalid JSON payload received. Unknown name \"termsOfService\": Cannot find field."
      )
    })))

  it.scopedLive("unknown user list → 404 NOT_FOUND with ErrorInfo INVALID_USER_LIST_ID", () =>
    run(Effect.gen(function*() {
      const { sb } = yield* sandbox({ userLists: ["123"] })
      const bearer = yield* bearerOf(sb)
      const r = yield* raw(sb, "ingest", {
        destinations: [destination(USER_LIST)],
        audienceMembers: [emailMember(JANE)],
        encoding: "HEX",
        termsOfService: TERMS
      }, bearer)
      assert.deepStrictEqual(r, {
        status: 404,
        body: {
          error: {
            code: 404,
            message: `User list ${USER_LIST} was not found in account 1234567890.`,
            status: "NOT_FOUND",
            details: [{
              "@type": "type.googleapis.com/google.rpc.ErrorInfo",
              reason: "INVALID_USER_LIST_ID",
              domain: "datamanager.googleapis.com",
              metadata: { user_list_id: USER_LIST, operating_account_id: "1234567890" }
            }]
          }
        }
      })
    })))
})

describe("GoogleAds.plugin audiences capability", () => {
  it("declares plugin API ^1.2.0 and the audience limits (10,000 members per request)", () => {
    assert.strictEqual(GoogleAds.plugin.pluginApi, "^1.2.0")
    assert.isTrue(CoreDestination.satisfies(CoreDestination.PLUGIN_API_VERSION, GoogleAds.plugin.pluginApi))
    assert.isFalse(CoreDestination.satisfies("1.1.0", GoogleAds.plugin.pluginApi))
    assert.strictEqual(GoogleAds.plugin.audiences, GoogleAds.audiences)
    assert.deepStrictEqual(GoogleAds.plugin.audiences?.limits, {
      maxEventsPerRequest: 10_000,
      maxBytesPerRequest: 5_000_000
    })
    assert.strictEqual(GoogleAds.plugin.version, "0.2.0")
  })
})
