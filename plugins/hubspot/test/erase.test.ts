/**
 * Erasure (plugin API 1.1): `deletePerson` sends HubSpot's GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`)
 * for every email of the person, against the sandbox; and the sandbox's GDPR delete, checked over HTTP with plain
 * `fetch` (independently of the plugin).
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope } from "effect"
import { HubSpot, HubSpotSandbox } from "../src/index.js"
import { OPS_EMAIL, settings } from "./fixtures.js"

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const request = (emails: ReadonlyArray<string>): Destination.DeletionRequest => ({
  erasureId: "era_0123456789abcdef01234567",
  requester: "dpo@example.com",
  identity: {
    personKey: "user:usr_erin",
    userId: "usr_erin",
    emails,
    phones: [],
    emailSha256: [],
    phoneSha256: [],
    clickIds: {}
  },
  deviceIds: []
})

const post = (url: string, body: unknown, token: string | null = HubSpotSandbox.SANDBOX_ACCESS_TOKEN) =>
  Effect.promise(async () => {
    const r = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token !== null ? { authorization: `Bearer ${token}` } : {})
      },
      body: JSON.stringify(body)
    })
    const text = await r.text()
    return { status: r.status, text, json: text === "" ? {} : JSON.parse(text) as Record<string, unknown> }
  })

/** Writes contacts through the sandbox's upsert (as the plugin's `send` would). */
const seed = (url: string, emails: ReadonlyArray<string>) =>
  post(`${url}/crm/v3/objects/contacts/batch/upsert`, {
    inputs: emails.map((e) => ({ id: e, idProperty: "email", properties: { tl_power_users: "true" } }))
  })

const emailsOf = (cs: ReadonlyArray<HubSpotSandbox.StoredContact>) => cs.map((c) => c.email).sort()

describe("HubSpot sandbox: GDPR delete", () => {
  it.scopedLive("by email → 204 without a body, the contact is gone; an unknown email is blocklisted", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const url = `${sb.url}${HubSpot.GDPR_DELETE_PATH}`
      assert.strictEqual((yield* seed(sb.url, ["erin@example.com", "frank@example.com"])).status, 200)
      const erin = (yield* sb.client.contacts()).find((c) => c.email === "erin@example.com")!
      const deleted = yield* post(url, { objectId: "Erin@Example.com", idProperty: "email" })
      assert.deepStrictEqual([deleted.status, deleted.text], [204, ""])
      assert.deepStrictEqual(emailsOf(yield* sb.client.contacts()), ["frank@example.com"])
      const unknown = yield* post(url, { objectId: "nobody@example.com", idProperty: "email" })
      assert.strictEqual(unknown.status, 204)
      const deletions = (yield* sb.client.gdprDeletions()).map(({ received_at: _, ...d }) => d)
      assert.deepStrictEqual(deletions, [
        { objectId: "Erin@Example.com", idProperty: "email", deletedContactId: erin.id, blocklisted: false },
        { objectId: "nobody@example.com", idProperty: "email", deletedContactId: null, blocklisted: true }
      ])
    })))

  it.scopedLive("by contact id; an unknown id is 404; no objectId is 400; no token is 401", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const url = `${sb.url}${HubSpot.GDPR_DELETE_PATH}`
      yield* seed(sb.url, ["erin@example.com"])
      const id = (yield* sb.client.contacts())[0]!.id
      assert.strictEqual((yield* post(url, { objectId: id })).status, 204)
      assert.deepStrictEqual(yield* sb.client.contacts(), [])
      const missing = yield* post(url, { objectId: id })
      assert.deepStrictEqual([missing.status, missing.json.category], [404, "OBJECT_NOT_FOUND"])
      const bad = yield* post(url, { idProperty: "email" })
      assert.deepStrictEqual([bad.status, bad.json.category], [400, "VALIDATION_ERROR"])
      const anonymous = yield* post(url, { objectId: "erin@example.com", idProperty: "email" }, null)
      assert.deepStrictEqual([anonymous.status, anonymous.json.category], [401, "INVALID_AUTHENTICATION"])
      assert.strictEqual((yield* sb.client.gdprDeletions()).length, 1)
    })))
})

describe("HubSpot deletePerson", () => {
  const deletePerson = HubSpot.plugin.deletePerson!

  it.scopedLive("deletes the contact of every email of the person (normalised), and says how many", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      yield* seed(sb.url, ["erin@example.com", "erin.work@example.com", OPS_EMAIL])
      const outcome = yield* deletePerson(
        request([" Erin@Example.com", "erin.work@example.com", "erin@example.com"]),
        s
      )
      assert.deepStrictEqual(outcome, {
        _tag: "Deleted",
        detail: "HubSpot GDPR delete of the contacts with the person's 2 emails: permanently deleted (an email no " +
          "contact had is blocklisted)",
        response: { status: 204, body: "" }
      })
      assert.deepStrictEqual(emailsOf(yield* sb.client.contacts()), [OPS_EMAIL])
      assert.deepStrictEqual((yield* sb.client.gdprDeletions()).map((d) => [d.objectId, d.idProperty, d.blocklisted]), [
        ["erin@example.com", "email", false],
        ["erin.work@example.com", "email", false]
      ])
      // The answer is stored by the core: it never carries an email, not even masked.
      assert.notInclude(JSON.stringify(outcome), "erin")
    })))

  it.scopedLive("no email known → refused, nothing sent", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      const outcome = yield* deletePerson(request(["not an email"]), s)
      assert.deepStrictEqual(outcome, {
        _tag: "Rejected",
        reason: "no email known for this person: HubSpot's GDPR delete finds the contact by email; delete the " +
          "contact in HubSpot by hand (Contacts → the contact → Actions → Delete, with \"Permanently delete\")"
      })
      assert.strictEqual((yield* sb.client.stats()).requests, 0)
    })))

  it.scopedLive("a 503 is tried again; three in a row fail the forward with a RetryableError", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      yield* seed(sb.url, ["erin@example.com"])
      yield* sb.client.setFaults({ target: "contacts", status: 503, count: 1, retryAfter: 0 })
      const once = yield* deletePerson(request(["erin@example.com"]), s)
      assert.strictEqual(once._tag, "Deleted")
      assert.deepStrictEqual(yield* sb.client.contacts(), [])
      yield* sb.client.setFaults({ target: "contacts", status: 503, count: 3, retryAfter: 0 })
      const failed = yield* Effect.either(deletePerson(request(["frank@example.com"]), s))
      assert.deepStrictEqual(
        Either.isLeft(failed) ? [failed.left._tag, failed.left.status, failed.left.message] : [],
        ["RetryableError", 503, "HubSpot GDPR delete answered 503: Injected fault 503 (INTERNAL_ERROR)"]
      )
      // 1 seed + 2 + 3 GDPR delete requests; only the second of the first pair was recorded.
      assert.deepStrictEqual((yield* sb.client.stats()).responses, { "200": 1, "204": 1, "503": 4 })
      assert.deepStrictEqual((yield* sb.client.gdprDeletions()).map((d) => d.objectId), ["erin@example.com"])
    })))

  it.scopedLive("a refused token fails with AuthFailedError; an exhausted daily limit is not waited out", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const wrong = settings({ accessToken: "pat-na1-wrong", endpoint: sb.url })
      const auth = yield* Effect.either(deletePerson(request(["erin@example.com"]), wrong))
      assert.deepStrictEqual(Either.isLeft(auth) ? [auth.left._tag, auth.left.status] : [], ["AuthFailedError", 401])
      assert.notInclude(Either.isLeft(auth) ? auth.left.message : "", "pat-na1-wrong")
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      yield* sb.client.setFaults({ exhaustDaily: true })
      const started = Date.now()
      const daily = yield* Effect.either(deletePerson(request(["erin@example.com"]), s))
      console.log(`daily-limit GDPR delete answered after ${Date.now() - started} ms`)
      assert.deepStrictEqual(Either.isLeft(daily) ? [daily.left._tag, daily.left.status] : [], ["RetryableError", 429])
      assert.strictEqual((yield* sb.client.stats()).rate_limited["DAILY"], 1)
    })))
})
