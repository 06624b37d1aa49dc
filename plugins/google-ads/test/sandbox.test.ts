/**
 * The sandbox's contract, spoken to directly over HTTP (raw requests the plugin would never make).
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { GoogleAdsSandbox } from "../src/index.js"
import { SHA, wire } from "./fixtures.js"

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const call = (request: HttpClientRequest.HttpClientRequest) =>
  HttpClient.HttpClient.pipe(
    Effect.flatMap((c) => c.execute(request)),
    Effect.flatMap((r) => Effect.map(r.json, (body) => ({ status: r.status, body: body as any }))),
    Effect.orDie
  )

const token = (sb: GoogleAdsSandbox.Sandbox, params: Record<string, string> = {}) =>
  call(
    HttpClientRequest.post(sb.tokenUrl).pipe(HttpClientRequest.bodyUrlParams({
      client_id: sb.credentials.clientId,
      client_secret: sb.credentials.clientSecret,
      refresh_token: sb.credentials.refreshToken,
      grant_type: "refresh_token",
      ...params
    }))
  )

const ingest = (sb: GoogleAdsSandbox.Sandbox, body: unknown, bearer?: string) =>
  call(
    HttpClientRequest.post(`${sb.apiBase}/v1/events:ingest`).pipe(
      HttpClientRequest.bodyUnsafeJson(body),
      bearer !== undefined ? HttpClientRequest.bearerToken(bearer) : (r) => r
    )
  )

const destination = {
  operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
  productDestinationId: "7"
}

const withToken = (options: GoogleAdsSandbox.SandboxOptions = {}) =>
  Effect.gen(function*() {
    const sb = yield* GoogleAdsSandbox.start(options)
    const t = yield* token(sb)
    return { sb, bearer: t.body.access_token as string }
  })

describe("GoogleAdsSandbox", () => {
  it.scopedLive("token endpoint: issues expiring tokens; refuses a wrong grant type, client or refresh token", () =>
    run(Effect.gen(function*() {
      const sb = yield* GoogleAdsSandbox.start({ tokenTtlSeconds: 120 })
      const ok = yield* token(sb)
      assert.strictEqual(ok.status, 200)
      assert.match(ok.body.access_token, /^ya29\.sandbox-[0-9a-f]{24}$/)
      assert.strictEqual(ok.body.expires_in, 120)
      assert.strictEqual(ok.body.token_type, "Bearer")
      assert.deepStrictEqual((yield* token(sb, { grant_type: "password" })).body, {
        error: "unsupported_grant_type",
        error_description: "Invalid grant_type: password"
      })
      const badClient = yield* token(sb, { client_secret: "nope" })
      assert.deepStrictEqual([badClient.status, badClient.body.error], [401, "invalid_client"])
      const badGrant = yield* token(sb, { refresh_token: "nope" })
      assert.deepStrictEqual(badGrant, {
        status: 400,
        body: { error: "invalid_grant", error_description: "Bad Request" }
      })
      const stats = yield* sb.client.stats()
      assert.strictEqual(stats.token_requests, 4)
      assert.strictEqual(stats.tokens_issued, 1)
    })))

  it.scopedLive("ingest without a valid bearer token → 401 UNAUTHENTICATED (google.rpc Status)", () =>
    run(Effect.gen(function*() {
      const sb = yield* GoogleAdsSandbox.start()
      const r = yield* ingest(sb, { destinations: [destination], events: [wire(0)] }, "ya29.made-up")
      assert.strictEqual(r.status, 401)
      assert.strictEqual(r.body.error.code, 401)
      assert.strictEqual(r.body.error.status, "UNAUTHENTICATED")
      assert.strictEqual(r.body.error.details[0].reason, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
    })))

  it.scopedLive("request-level violations: hyphenated account id, missing conversion action, missing encoding", () =>
    run(Effect.gen(function*() {
      const { bearer, sb } = yield* withToken()
      const r = yield* ingest(sb, {
        destinations: [{ operatingAccount: { accountType: "GOOGLE_ADS", accountId: "123-456-7890" } }],
        events: [wire(0, { userData: { userIdentifiers: [{ emailAddress: SHA["jane.doe@example.com"] }] } })]
      }, bearer)
      assert.strictEqual(r.status, 400)
      assert.strictEqual(r.body.error.status, "INVALID_ARGUMENT")
      assert.strictEqual(r.body.error.details[1]["@type"], "type.googleapis.com/google.rpc.BadRequest")
      assert.deepStrictEqual(r.body.error.details[1].fieldViolations, [
        {
          field: "destinations[0].operatingAccount.accountId",
          description: "The account ID must be 10 digits without hyphens."
        },
        { field: "destinations[0].productDestinationId", description: "Required field is missing." },
        { field: "encoding", description: "Encoding is required when user data is sent." }
      ])
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("event violations: RFC 3339, transactionId, unhashed phone, address fields, >10 identifiers", () =>
    run(Effect.gen(function*() {
      const { bearer, sb } = yield* withToken()
      const eleven = Array.from({ length: 11 }, () => ({ emailAddress: SHA["jane.doe@example.com"] }))
      const r = yield* ingest(sb, {
        destinations: [destination],
        encoding: "HEX",
        events: [
          wire(0, { eventTimestamp: "2026-04-24 08:00:00", transactionId: "" }),
          wire(1, {
            userData: {
              userIdentifiers: [
                { phoneNumber: "+18005550100" },
                { address: { givenName: SHA.jane, familyName: "doe", regionCode: "de", postalCode: "10115" } }
              ]
            }
          }),
          wire(2, { userData: { userIdentifiers: eleven } }),
          wire(3, { conversionValue: 5, currency: undefined }),
          wire(4, { adIdentifiers: undefined })
        ]
      }, bearer)
      assert.strictEqual(r.status, 400)
      assert.deepStrictEqual(r.body.error.details[1].fieldViolations.map((v: { field: string }) => v.field), [
        "events[0].eventTimestamp",
        "events[0].transactionId",
        "events[1].userData.userIdentifiers[0].phoneNumber",
        "events[1].userData.userIdentifiers[1].address.familyName",
        "events[1].userData.userIdentifiers[1].address.regionCode",
        "events[2].userData.userIdentifiers",
        "events[3].currency",
        "events[4].adIdentifiers"
      ])
    })))

  it.scopedLive("more than 2000 events → 400 on `events`; requestStatus of an unknown id → 404", () =>
    run(Effect.gen(function*() {
      const { bearer, sb } = yield* withToken()
      const r = yield* ingest(sb, {
        destinations: [destination],
        encoding: "HEX",
        events: Array.from({ length: 2001 }, (_, i) => wire(i))
      }, bearer)
      assert.deepStrictEqual(r.body.error.details[1].fieldViolations, [
        { field: "events", description: "Maximum number of events allowed per request is 2000." }
      ])
      const s = yield* call(
        HttpClientRequest.get(`${sb.apiBase}/v1/requestStatus:retrieve?requestId=nope`).pipe(
          HttpClientRequest.bearerToken(bearer)
        )
      )
      assert.deepStrictEqual([s.status, s.body.error.status], [404, "NOT_FOUND"])
    })))

  it.scopedLive("status: PROCESSING for the configured polls, then SUCCESS per destination with the record count", () =>
    run(Effect.gen(function*() {
      const { bearer, sb } = yield* withToken({ processingPolls: 1 })
      const r = yield* ingest(sb, { destinations: [destination], encoding: "HEX", events: [wire(0), wire(1)] }, bearer)
      assert.strictEqual(r.status, 200)
      const poll = () =>
        call(
          HttpClientRequest.get(`${sb.apiBase}/v1/requestStatus:retrieve`).pipe(
            HttpClientRequest.setUrlParam("requestId", r.body.requestId),
            HttpClientRequest.bearerToken(bearer)
          )
        )
      assert.strictEqual((yield* poll()).body.requestStatusPerDestination[0].requestStatus, "PROCESSING")
      assert.deepStrictEqual((yield* poll()).body.requestStatusPerDestination, [
        { destination, requestStatus: "SUCCESS", eventsIngestionStatus: { recordCount: "2" } }
      ])
    })))

  it.scoped("env points every GOOGLE_ADS_* setting at the sandbox and maps the canonical vocabulary", () =>
    Effect.gen(function*() {
      const sb = yield* GoogleAdsSandbox.start()
      assert.deepStrictEqual(sb.env, {
        GOOGLE_ADS_CLIENT_ID: "sandbox-google-client-id",
        GOOGLE_ADS_CLIENT_SECRET: "sandbox-google-client-secret",
        GOOGLE_ADS_REFRESH_TOKEN: "sandbox-google-refresh-token",
        GOOGLE_ADS_OPERATING_ACCOUNT_ID: "1234567890",
        GOOGLE_ADS_API_BASE: sb.url,
        GOOGLE_ADS_TOKEN_URL: `${sb.url}/token`,
        GOOGLE_ADS_VALIDATE_ONLY: "false",
        GOOGLE_ADS_CUSTOMER_ID: "1234567890",
        GOOGLE_ADS_DEVELOPER_TOKEN: "sandbox-google-developer-token",
        GOOGLE_ADS_ADS_API_BASE: sb.url,
        GOOGLE_ADS_CONVERSION_ACTIONS: "purchase=7000000001,sign_up=7000000002,start_trial=7000000003," +
          "qualified_lead=7000000004,subscription_renewed=7000000005"
      })
      assert.match(sb.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    }))
})
