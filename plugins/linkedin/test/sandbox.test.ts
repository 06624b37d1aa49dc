/**
 * The sandbox's contract, checked over HTTP with plain `fetch` (independently of the plugin): token endpoint,
 * headers, bearer tokens, per-element validation, control endpoints and `env`.
 */
import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { LinkedInSandbox } from "../src/index.js"
import { OPS_EMAIL_SHA256 } from "./fixtures.js"

const form = (params: Record<string, string>) => ({
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(params).toString()
})

const call = (url: string, init: RequestInit) =>
  Effect.promise(async () => {
    const r = await fetch(url, init)
    return { status: r.status, body: await r.json() as Record<string, unknown> }
  })

const good = {
  grant_type: "refresh_token",
  client_id: "sandbox-linkedin-client",
  client_secret: "sandbox-linkedin-secret",
  refresh_token: "sandbox-linkedin-refresh"
}

const headers = (token: string, extra: Record<string, string> = {}) => ({
  authorization: `Bearer ${token}`,
  "content-type": "application/json",
  "linkedin-version": "202609",
  "x-restli-protocol-version": "2.0.0",
  "x-restli-method": "BATCH_CREATE",
  ...extra
})

const element = (overrides: Record<string, unknown> = {}) => ({
  conversion: "urn:lla:llaPartnerConversion:7001004",
  conversionHappenedAt: Date.now() - 60_000,
  eventId: "e1",
  user: { userIds: [{ idType: "SHA256_EMAIL", idValue: OPS_EMAIL_SHA256 }] },
  ...overrides
})

describe("LinkedInSandbox", () => {
  it.scopedLive("token endpoint: issues tokens; wrong refresh token 400 invalid_grant; wrong client 401", () =>
    Effect.gen(function*() {
      const sb = yield* LinkedInSandbox.start({ accessTokenTtlSeconds: 30 })
      const ok = yield* call(sb.tokenUrl, form(good))
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.body.expires_in, 30)
      assert.strictEqual(ok.body.refresh_token, "sandbox-linkedin-refresh")
      assert.match(String(ok.body.access_token), /^sandbox-li-at-1-/)
      assert.deepStrictEqual(yield* call(sb.tokenUrl, form({ ...good, refresh_token: "nope" })), {
        status: 400,
        body: {
          error: "invalid_grant",
          error_description: "The provided authorization grant or refresh token is invalid, expired or revoked"
        }
      })
      assert.deepStrictEqual(yield* call(sb.tokenUrl, form({ ...good, client_secret: "x" })), {
        status: 401,
        body: { error: "invalid_client", error_description: "Client authentication failed" }
      })
      const { grant_type: _, ...noGrant } = good
      assert.deepStrictEqual((yield* call(sb.tokenUrl, form(noGrant))).body, {
        error: "invalid_request",
        error_description: "A required parameter \"grant_type\" is missing"
      })
    }))

  it.scopedLive("conversionEvents: bearer, LinkedIn-Version, protocol and method headers are enforced", () =>
    Effect.gen(function*() {
      const sb = yield* LinkedInSandbox.start()
      const token = String((yield* call(sb.tokenUrl, form(good))).body.access_token)
      const url = `${sb.apiBase}/conversionEvents`
      const body = JSON.stringify({ elements: [element()] })
      const post = (h: Record<string, string>) => call(url, { method: "POST", headers: h, body })
      const { authorization: _a, ...noAuth } = headers(token)
      assert.deepStrictEqual(yield* post(noAuth), {
        status: 401,
        body: { status: 401, serviceErrorCode: 401, message: "Empty oauth2_access_token" }
      })
      assert.strictEqual((yield* post(headers("forged"))).status, 401)
      const { "linkedin-version": _v, ...noVersion } = headers(token)
      assert.deepStrictEqual((yield* post(noVersion)).body.code, "VERSION_MISSING")
      assert.deepStrictEqual((yield* post(headers(token, { "linkedin-version": "2026-09" }))).status, 400)
      assert.deepStrictEqual(yield* post(headers(token, { "linkedin-version": "202301" })), {
        status: 426,
        body: { status: 426, code: "NONEXISTENT_VERSION", message: "Requested version 202301 is not active" }
      })
      assert.strictEqual((yield* post(headers(token, { "x-restli-protocol-version": "1.0.0" }))).status, 400)
      assert.strictEqual((yield* post(headers(token, { "x-restli-method": "CREATE" }))).status, 400)
      assert.deepStrictEqual(yield* post(headers(token)), { status: 200, body: { elements: [{ status: 201 }] } })
      const stats = yield* sb.client.stats()
      assert.deepStrictEqual(stats.responses, { "200": 1, "400": 4, "401": 2, "426": 1 })
      assert.strictEqual(stats.elements_stored, 1)
    }).pipe(Effect.provide(FetchHttpClient.layer)))

  it.scopedLive("an expired access token gets 401 EXPIRED_ACCESS_TOKEN", () =>
    Effect.gen(function*() {
      const sb = yield* LinkedInSandbox.start({ accessTokenTtlSeconds: 0.2 })
      const token = String((yield* call(sb.tokenUrl, form(good))).body.access_token)
      yield* Effect.sleep("300 millis")
      const r = yield* call(`${sb.apiBase}/conversionEvents`, {
        method: "POST",
        headers: headers(token),
        body: JSON.stringify({ elements: [element()] })
      })
      assert.deepStrictEqual(r, {
        status: 401,
        body: {
          status: 401,
          serviceErrorCode: 65601,
          code: "EXPIRED_ACCESS_TOKEN",
          message: "The token used in the request has expired"
        }
      })
    }))

  it.scopedLive("env points LINKEDIN_* at the sandbox, with the default rules for the canonical events", () =>
    Effect.gen(function*() {
      const sb = yield* LinkedInSandbox.start()
      assert.deepStrictEqual(sb.env, {
        LINKEDIN_CLIENT_ID: "sandbox-linkedin-client",
        LINKEDIN_CLIENT_SECRET: "sandbox-linkedin-secret",
        LINKEDIN_REFRESH_TOKEN: "sandbox-linkedin-refresh",
        LINKEDIN_API_BASE: `${sb.url}/rest`,
        LINKEDIN_TOKEN_URL: `${sb.url}/oauth/v2/accessToken`,
        LINKEDIN_CONVERSION_RULES:
          "purchase=7001001,sign_up=7001002,start_trial=7001003,qualified_lead=7001004,subscription_renewed=7001005"
      })
    }))
})
