/**
 * The audience capability: membership as a boolean contact property, added and removed against the sandbox.
 */
import { FetchHttpClient, type HttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import { Effect, Either, type Scope } from "effect"
import { HubSpot, HubSpotSandbox } from "../src/index.js"
import { OPS_EMAIL, settings } from "./fixtures.js"

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

const change = (
  op: "add" | "remove",
  emails: ReadonlyArray<string>,
  audienceId = "tl_power_users"
): Destination.AudienceChange => ({
  position: "7",
  eventId: `aud_${op}_${emails[0] ?? "none"}`,
  audienceId,
  audience: { key: "amplitude:4242", name: "Power users" },
  op,
  identity: { personKey: "p", emails, phones: [], emailSha256: [], phoneSha256: [], clickIds: {} },
  consent: { crm: true },
  at: Date.now()
})

const audiences = HubSpot.plugin.audiences!

const prepared = (changes: ReadonlyArray<Destination.AudienceChange>, s: HubSpot.Settings) =>
  changes.map((c) => ({ change: c, member: Either.getOrThrow(audiences.member(c, s)) }))

describe("HubSpot audiences: member", () => {
  it("add → the property \"true\", remove → \"false\", upserted by the normalised email", () => {
    const s = settings()
    assert.deepStrictEqual(Either.getOrUndefined(audiences.member(change("add", [" Ops@Acme-Corp.example"]), s)), {
      id: OPS_EMAIL,
      idProperty: "email",
      properties: { tl_power_users: "true" }
    })
    assert.deepStrictEqual(Either.getOrUndefined(audiences.member(change("remove", ["x", OPS_EMAIL]), s)), {
      id: OPS_EMAIL,
      idProperty: "email",
      properties: { tl_power_users: "false" }
    })
  })

  it("no email, or an audienceId that is no property name → invalid", () => {
    const s = settings()
    const noEmail = audiences.member(change("add", []), s)
    assert.deepStrictEqual(Either.isLeft(noEmail) ? [noEmail.left.reason, noEmail.left.detail] : [], [
      "invalid",
      "no email known for this person: HubSpot audience properties are set on contacts by email"
    ])
    const badId = audiences.member(change("add", [OPS_EMAIL], "Power Users"), s)
    assert.deepStrictEqual(Either.isLeft(badId) ? [badId.left.reason, badId.left.detail] : [], [
      "invalid",
      "audienceId \"Power Users\" is not a HubSpot contact property name (lower-case letters, digits, underscores)"
    ])
  })
})

describe("HubSpot audiences: send against the sandbox", () => {
  it.scopedLive("add then remove: the contact property reads \"true\", then \"false\"", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      const added = yield* audiences.send(
        prepared([change("add", [OPS_EMAIL]), change("add", ["dana@acme-corp.example"])], s),
        s
      )
      assert.deepStrictEqual(added.map((o) => o._tag), ["Accepted", "Accepted"])
      const powerUsers = (cs: ReadonlyArray<HubSpotSandbox.StoredContact>) =>
        cs.map((c) => [c.email, c.properties.tl_power_users])
      assert.deepStrictEqual(powerUsers(yield* sb.client.contacts()), [
        [OPS_EMAIL, "true"],
        ["dana@acme-corp.example", "true"]
      ])
      const removed = yield* audiences.send(prepared([change("remove", [OPS_EMAIL])], s), s)
      assert.deepStrictEqual(removed.map((o) => o._tag), ["Accepted"])
      assert.deepStrictEqual(powerUsers(yield* sb.client.contacts()), [
        [OPS_EMAIL, "false"],
        ["dana@acme-corp.example", "true"]
      ])
      // No behavioural event is sent for membership.
      assert.strictEqual((yield* sb.client.events()).length, 0)
    })))

  it.scopedLive("an audience property HubSpot does not have: Rejected with PROPERTY_DOESNT_EXIST", () =>
    run(Effect.gen(function*() {
      const sb = yield* HubSpotSandbox.start()
      const s = settings({ accessToken: sb.accessToken, endpoint: sb.url })
      const outcomes = yield* audiences.send(prepared([change("add", [OPS_EMAIL], "tl_churned")], s), s)
      const o = outcomes[0]!
      assert.strictEqual(o._tag, "Rejected")
      assert.include(
        o._tag === "Rejected" ? o.reason : "",
        "\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"tl_churned\""
      )
      assert.strictEqual((yield* sb.client.contacts()).length, 0)
    })))
})
