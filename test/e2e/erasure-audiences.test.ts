/**
 * Erasure and the cohort exchange, through the running gateway and the real sandboxes (PGlite, or PostgreSQL when
 * DATABASE_URL is set): `DELETE /v1/people/:id` removes the person from every audience TrackLayer had added them to —
 * the Meta custom audience, the Google Customer Match list, the LinkedIn DMP segment, the HubSpot audience property —
 * and deletes their HubSpot contact with HubSpot's GDPR delete; trait sync sends no Identify for them afterwards,
 * whatever they do; a removal that failed is sent by the next `DELETE`, with the hashed identifiers the tombstones
 * keep. Other members stay everywhere.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { TraitSync } from "@tracklayer/core"
import { Amplitude, AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { AmplitudeCohorts, AmplitudeCohortsSandbox } from "@tracklayer/plugin-amplitude-cohorts"
import { GoogleAds, GoogleAdsSandbox } from "@tracklayer/plugin-google-ads"
import { HubSpot, HubSpotSandbox } from "@tracklayer/plugin-hubspot"
import { LinkedIn, LinkedInSandbox } from "@tracklayer/plugin-linkedin"
import { MetaCapi, MetaCapiSandbox } from "@tracklayer/plugin-meta-capi"
import { Config, Effect, Exit, Scope } from "effect"
import { createHash } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startHarness, waitFor } from "../support/harness.js"

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")
// printf '%s' erin@example.com | sha256sum
const ERIN = "405340cd9ac94b08b93800aee3f0db2dd673256bc318987e51e177eb53cca1b2"
// Meta's phone form (digits with the country code): printf '%s' 33611111111 | sha256sum
const ERIN_PHONE = "824a8a2f29cd06cc6f56aaeaa9cb629dac80ca22f133cb6486c5d99a504861a4"
// printf '%s' frank@example.com | sha256sum
const FRANK = "36a9b382f8c0e0f39b36c798e8bbb1e74724bd3a4f81d182b0fa87a466429de6"
// printf '%s' gina@example.com | sha256sum
const GINA = "599d34717b7120c914a6ee1efee023a0d348c1cf01444b9b295b33503503788b"

const SECRET = "tl-test-cohort-secret-0003"
const COHORT = { id: "coh_power", name: "Power users" }
const USER_LIST = "8000000001"
const META_AUDIENCE = MetaCapiSandbox.SANDBOX_AUDIENCE_ID
const SEGMENT = LinkedInSandbox.SANDBOX_SEGMENT_ID

const run = <A, E>(eff: Effect.Effect<A, E, any>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici) as Effect.Effect<A, E, never>)

describe("erasure removes the person from every audience, and trait sync forgets them", () => {
  let scope: Scope.CloseableScope
  let h: Harness
  let amp: AmplitudeSandbox.Sandbox
  let meta: MetaCapiSandbox.Sandbox
  let google: GoogleAdsSandbox.Sandbox
  let linkedin: LinkedInSandbox.Sandbox
  let hubspot: HubSpotSandbox.Sandbox
  let sender: AmplitudeCohortsSandbox.Sender
  let erinErasure: any

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    amp = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
    meta = await Effect.runPromise(Scope.extend(MetaCapiSandbox.start({}), scope))
    google = await Effect.runPromise(Scope.extend(GoogleAdsSandbox.start({}), scope))
    linkedin = await Effect.runPromise(Scope.extend(LinkedInSandbox.start({}), scope))
    hubspot = await Effect.runPromise(Scope.extend(HubSpotSandbox.start({}), scope))
    Object.assign(process.env, meta.env, google.env, linkedin.env, hubspot.env)
    h = await startHarness({
      config: {
        destinations: [
          Amplitude.destination({
            id: "amplitude",
            startFrom: "beginning",
            // With the secret key: erasures are forwarded to the sandbox's User Privacy API.
            settings: Config.succeed({
              apiKey: amp.apiKey,
              secretKey: amp.secretKey,
              endpoint: amp.endpoint,
              deletionEndpoint: amp.deletionEndpoint
            }),
            traits: {
              sync: ["plan"],
              derived: {
                meta_eligible: TraitSync.eligible("advertising"),
                high_match_quality: (p) => p.identifiers.emails > 0 && p.identifiers.phones > 0,
                power_user: TraitSync.inAudience(COHORT.id)
              }
            }
          }),
          MetaCapi.destination({ id: "meta", startFrom: "beginning" }),
          GoogleAds.destination({ id: "google-ads", startFrom: "beginning" }),
          LinkedIn.destination({ id: "linkedin", startFrom: "beginning" }),
          HubSpot.destination({ id: "hubspot", startFrom: "beginning" })
        ],
        sources: [AmplitudeCohorts.source({ id: "amplitude-cohorts", settings: Config.succeed({ secret: SECRET }) })],
        audiences: [{
          key: COHORT.id,
          destinations: { meta: META_AUDIENCE, "google-ads": USER_LIST, linkedin: SEGMENT, hubspot: "tl_power_users" }
        }]
      }
    })
    sender = AmplitudeCohortsSandbox.sender({
      url: `${h.url}/v1/sources/amplitude-cohorts`,
      secret: SECRET,
      backoffMs: 50
    })
  }, 60_000)

  afterAll(async () => {
    if (h) await h.close()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  const identifies = () => run(amp.client.identifies())
  const identifiesOf = async (userId: string) =>
    (await identifies()).filter((i) => i.identification.user_id === userId).map((i) => i.identification.user_properties)
  const metaRows = async () =>
    (await run(meta.client.audienceMembers(META_AUDIENCE))).map((r) => [...r]).sort((a, b) => a[0]! < b[0]! ? -1 : 1)
  const googleEmails = async () =>
    (await run(google.client.audienceMembers(USER_LIST))).flatMap((i) => ("emailAddress" in i ? [i.emailAddress] : []))
      .sort()
  const segment = async () => [...(await run(linkedin.client.segmentMembers(SEGMENT)))].sort()
  const contacts = async () =>
    Object.fromEntries((await run(hubspot.client.contacts())).map((c) => [c.email, c.properties["tl_power_users"]]))
  const told = (userId: string) =>
    h.sql(Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ destination: string; member: boolean }>`
        SELECT destination, member FROM tl_audience_sync WHERE identifier = ${`user:${userId}`} ORDER BY destination`))
  const identifyRecord = async (eventId: string) =>
    (await h.explain(eventId)).json.destinations?.find((d: any) => d.destination === "amplitude:identify")

  it("three members are in every audience; trait sync told Amplitude about each", async () => {
    const now = Date.now()
    const signUp = (userId: string, email: string, extra: object = {}) => ({
      event_id: `signup_${userId}`,
      event: "sign_up",
      timestamp: new Date(now - 60_000).toISOString(),
      user_id: userId,
      user: { email, ...extra },
      consent: { analytics: true, advertising: true, crm: true },
      user_properties: { plan: "free" }
    })
    const res = await h.post({
      events: [
        signUp("usr_erin", "Erin@Example.com", { phone: "+33 6 11 11 11 11" }),
        signUp("usr_frank", "frank@example.com"),
        signUp("usr_gina", "gina@example.com")
      ]
    })
    expect(res.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted", "accepted"])
    expect(await waitFor(async () => (await identifies()).length === 3, 30_000)).toBe(true)
    expect(await identifiesOf("usr_erin")).toEqual([{
      $set: { plan: "free", meta_eligible: true, high_match_quality: true, power_user: false }
    }])

    const [entered] = await run(sender.enter(COHORT, ["usr_erin", "usr_frank", "usr_gina"], { messageId: "m_in" }))
    expect(entered!.delivered).toBe(true)
    const allIn = async () =>
      (await metaRows()).length === 3 && (await googleEmails()).length === 3 && (await segment()).length === 3 &&
      Object.values(await contacts()).filter((v) => v === "true").length === 3
    expect(await waitFor(allIn, 60_000)).toBe(true)
    // Delivery records what it told each destination just after the destination answered: wait for that too (an
    // erasure at the very moment in between is the limit docs/privacy.md states: DELETE again removes it).
    const toldIn = async () =>
      (await Promise.all(["usr_erin", "usr_frank", "usr_gina"].map(told))).flat().filter((t) => t.member).length
    expect(await waitFor(async () => (await toldIn()) === 12, 30_000)).toBe(true)
    expect(sha256("erin@example.com")).toBe(ERIN)
    expect(await metaRows()).toEqual([[FRANK, ""], [ERIN, ERIN_PHONE], [GINA, ""]])
    expect(await googleEmails()).toEqual([FRANK, ERIN, GINA].sort())
    expect(await segment()).toEqual([FRANK, ERIN, GINA].sort())
    expect(await contacts()).toEqual({
      "erin@example.com": "true",
      "frank@example.com": "true",
      "gina@example.com": "true"
    })
    expect(await waitFor(async () => (await identifies()).length === 6, 30_000)).toBe(true)
    expect(await identifiesOf("usr_erin")).toEqual([
      { $set: { plan: "free", meta_eligible: true, high_match_quality: true, power_user: false } },
      { $set: { power_user: true } }
    ])
  }, 120_000)

  it(
    "DELETE removes the person from the Meta, Google, LinkedIn and HubSpot audiences and GDPR-deletes the contact",
    async () => {
      const res = await h.erase("user:usr_erin", "dpo@example.com")
      expect(res.status).toBe(200)
      erinErasure = res.json
      expect(erinErasure.destinations.map((d: any) => [d.destination, d.outcome])).toEqual([
        ["amplitude", "accepted"],
        ["google-ads", "not_supported"],
        ["google-ads:audiences", "accepted"],
        ["hubspot", "accepted"],
        ["hubspot:audiences", "accepted"],
        ["linkedin", "not_supported"],
        ["linkedin:audiences", "accepted"],
        ["meta", "not_supported"],
        ["meta:audiences", "accepted"]
      ])
      const detail = (d: string) => erinErasure.destinations.find((x: any) => x.destination === d).detail
      expect(detail("meta:audiences")).toBe(`removed user:usr_erin from coh_power (${META_AUDIENCE})`)
      expect(detail("google-ads:audiences")).toBe(`removed user:usr_erin from coh_power (${USER_LIST})`)
      expect(detail("linkedin:audiences")).toBe(`removed user:usr_erin from coh_power (${SEGMENT})`)
      expect(detail("hubspot:audiences")).toBe("removed user:usr_erin from coh_power (tl_power_users)")
      expect(detail("meta")).toBe(
        "@tracklayer/plugin-meta-capi does not offer deletion: the person was removed from the audiences TrackLayer " +
          "had added them to (meta:audiences); delete what else meta holds about them by hand"
      )
      expect(detail("hubspot")).toBe(
        "HubSpot GDPR delete of the contact with the person's email: permanently deleted (an email no contact had is " +
          "blocklisted)"
      )

      // The sandboxes: Erin's hashed email (and phone) is gone from every audience; Frank and Gina stay.
      expect(await metaRows()).toEqual([[FRANK, ""], [GINA, ""]])
      expect(JSON.stringify(await metaRows())).not.toContain(ERIN)
      expect(await googleEmails()).toEqual([FRANK, GINA].sort())
      expect(await segment()).toEqual([FRANK, GINA].sort())
      expect(await segment()).not.toContain(ERIN)
      // HubSpot: the audience property was cleared, then the contact permanently deleted.
      expect(await contacts()).toEqual({ "frank@example.com": "true", "gina@example.com": "true" })
      expect((await run(hubspot.client.gdprDeletions())).map((d) => [d.objectId, d.idProperty, d.blocklisted])).toEqual(
        [
          ["erin@example.com", "email", false]
        ]
      )
      expect((await run(amp.client.deletions())).map((d) => d.user_ids)).toEqual([["usr_erin"]])
      // What each destination was last told: "not in", everywhere.
      expect(await told("usr_erin")).toEqual([
        { destination: "google-ads", member: false },
        { destination: "hubspot", member: false },
        { destination: "linkedin", member: false },
        { destination: "meta", member: false }
      ])
    },
    60_000
  )

  it("after the erasure, the person's events send no Identify: the sandbox's count does not change", async () => {
    const before = (await identifies()).length
    const erinBefore = (await identifiesOf("usr_erin")).length
    expect(erinBefore).toBe(2)
    const at = new Date().toISOString()
    const res = await h.post({
      events: [
        {
          event_id: "erin_after",
          event: "view_pricing",
          timestamp: at,
          user_id: "usr_erin",
          user: { email: "Erin@Example.com" },
          consent: { analytics: true, advertising: true, crm: true },
          user_properties: { plan: "pro" }
        },
        // A control: another person's change in the same request is sent.
        {
          event_id: "frank_after",
          event: "view_pricing",
          timestamp: at,
          user_id: "usr_frank",
          user_properties: { plan: "pro" }
        }
      ]
    })
    expect(res.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted"])
    // Trait sync read Erin's event (its record is written with the cursor) and sent Frank's change.
    expect(await waitFor(async () => (await identifyRecord("erin_after")) !== undefined, 30_000)).toBe(true)
    expect(await identifyRecord("erin_after")).toMatchObject({
      status: "dropped",
      reason: `erased: the person was erased (${erinErasure.erasure_id})`
    })
    expect(await waitFor(async () => (await identifies()).length === before + 1, 30_000)).toBe(true)
    const after = await identifies()
    expect(after.length).toBe(before + 1)
    expect(after.at(-1)!.identification).toEqual({ user_id: "usr_frank", user_properties: { $set: { plan: "pro" } } })
    expect((await identifiesOf("usr_erin")).length).toBe(erinBefore)
    // The event itself is dropped everywhere, as before.
    const x = (await h.explain("erin_after")).json
    expect(x.destinations.find((d: any) => d.destination === "amplitude")).toMatchObject({
      status: "dropped",
      reason: `erased: the person was erased (${erinErasure.erasure_id})`
    })
    // And nothing is kept about her at the trait sync.
    const synced = await h.sql(
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql<{ n: number }>`SELECT count(*)::int AS n FROM tl_trait_sync WHERE identifier = 'user:usr_erin'`
      )
    )
    expect(synced[0]!.n).toBe(0)
  }, 60_000)

  it("a later leave message for the erased person sends nothing anywhere", async () => {
    const googleRequests = (await run(google.client.audienceRequests())).length
    const [left] = await run(sender.leave(COHORT, ["usr_erin"], { messageId: "m_out" }))
    expect(left!.delivered).toBe(true)
    const [event] = await h.sql(
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql<{ event_id: string }>`SELECT event_id FROM tl_log WHERE kind = 'audience' AND person_key = 'user:usr_erin'
        ORDER BY position DESC LIMIT 1`
      )
    )
    const audiences = async () =>
      ((await h.explain(event!.event_id)).json.destinations ?? []).filter((d: any) => !d.destination.includes(":"))
    const settled = async () => {
      const d = await audiences()
      return d.length === 4 && d.every((x: any) => x.status === "dropped")
    }
    expect(await waitFor(settled, 30_000)).toBe(true)
    // What each destination was last told is "not in": nothing to remove, so nothing is sent.
    expect((await audiences()).map((d: any) => [d.destination, d.reason])).toEqual(
      ["google-ads", "hubspot", "linkedin", "meta"].map((d) => [
        d,
        `duplicate: user:usr_erin is already not in coh_power at ${d}`
      ])
    )
    expect(await waitFor(async () => (await identifyRecord(event!.event_id)) !== undefined, 30_000)).toBe(true)
    expect(await identifyRecord(event!.event_id)).toMatchObject({
      status: "dropped",
      reason: `erased: the person was erased (${erinErasure.erasure_id})`
    })
    expect((await run(google.client.audienceRequests())).length).toBe(googleRequests)
    expect(await metaRows()).toEqual([[FRANK, ""], [GINA, ""]])
  }, 60_000)

  it("a removal that fails answers 202; DELETE again sends it with the hashed email the tombstone keeps", async () => {
    await run(meta.client.setFaults({ down: true }))
    const first = await h.erase("user:usr_gina")
    expect(first.status).toBe(202)
    const outcome = (r: any, d: string) => r.destinations.find((x: any) => x.destination === d)
    expect(outcome(first.json, "meta:audiences")).toMatchObject({ outcome: "failed" })
    expect(outcome(first.json, "meta:audiences").detail).toMatch(
      new RegExp(`^not yet removed user:usr_gina from coh_power \\(${META_AUDIENCE}\\): .+; DELETE the person again`)
    )
    for (const d of ["google-ads:audiences", "linkedin:audiences", "hubspot:audiences", "hubspot", "amplitude"]) {
      expect({ d, outcome: outcome(first.json, d).outcome }).toEqual({ d, outcome: "accepted" })
    }
    expect(await metaRows()).toEqual([[FRANK, ""], [GINA, ""]])
    expect(await googleEmails()).toEqual([FRANK])
    expect(await segment()).toEqual([FRANK])

    await run(meta.client.setFaults({ down: false }))
    const again = await h.erase("user:usr_gina")
    expect(again.status).toBe(200)
    expect(again.json).toMatchObject({ erasure_id: first.json.erasure_id, status: "already_erased" })
    expect(outcome(again.json, "meta:audiences")).toMatchObject({
      outcome: "accepted",
      detail: `removed user:usr_gina from coh_power (${META_AUDIENCE})`
    })
    expect(await metaRows()).toEqual([[FRANK, ""]])
    expect(JSON.stringify(await metaRows())).not.toContain(GINA)
    // Nothing is left to remove: a third DELETE sends nothing more.
    const stats = await run(meta.client.stats())
    expect((await h.erase("user:usr_gina")).status).toBe(200)
    expect((await run(meta.client.stats())).requests).toBe(stats.requests)
  }, 60_000)
})
