/**
 * The cohort exchange, end to end: the Amplitude cohort sender posts enter and leave batches (one of them retried
 * as a duplicate) to the running gateway; the members appear in the Meta, Google and HubSpot audience sandboxes and
 * are removed on leave and on consent withdrawal; the Amplitude Identify sandbox receives each trait change exactly
 * once and nothing for unchanged traits.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { TraitSync } from "@tracklayer/core"
import { Amplitude, AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { AmplitudeCohorts, AmplitudeCohortsSandbox } from "@tracklayer/plugin-amplitude-cohorts"
import { GoogleAds, GoogleAdsSandbox } from "@tracklayer/plugin-google-ads"
import { HubSpot, HubSpotSandbox } from "@tracklayer/plugin-hubspot"
import { MetaCapi, MetaCapiSandbox } from "@tracklayer/plugin-meta-capi"
import { Config, Effect, Exit, Scope } from "effect"
import { createHash } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor, WRITE_KEY } from "../support/harness.js"

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")
// printf '%s' alice@example.com | sha256sum
const ALICE = "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
// printf '%s' bob@example.com | sha256sum
const BOB = "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018"
// Meta's phone form: digits with country code. printf '%s' 33612345678 | sha256sum
const BOB_PHONE = "8a3e7886c9335e82e02299fa3e87b46e2de3b0c63d56003e30a5029394a47661"

const SECRET = "tl-test-cohort-secret-0001"
const COHORT = { id: "coh_power", name: "Power users" }
const USER_LIST = "8000000001"

const run = <A, E>(eff: Effect.Effect<A, E, any>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici) as Effect.Effect<A, E, never>)

describe("cohort exchange: Amplitude cohorts in, audiences out, traits back to Amplitude", () => {
  let scope: Scope.CloseableScope
  let h: Harness
  let amp: AmplitudeSandbox.Sandbox
  let meta: MetaCapiSandbox.Sandbox
  let google: GoogleAdsSandbox.Sandbox
  let hubspot: HubSpotSandbox.Sandbox
  let sender: AmplitudeCohortsSandbox.Sender

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    amp = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
    meta = await Effect.runPromise(Scope.extend(MetaCapiSandbox.start({}), scope))
    google = await Effect.runPromise(Scope.extend(GoogleAdsSandbox.start({}), scope))
    hubspot = await Effect.runPromise(Scope.extend(HubSpotSandbox.start({}), scope))
    // Each plugin reads its settings from the environment, as in production; the sandboxes say what to set.
    Object.assign(process.env, meta.env, google.env, hubspot.env, { AMPLITUDE_COHORTS_SECRET: SECRET })
    h = await startHarness({
      config: {
        destinations: [
          Amplitude.destination({
            id: "amplitude",
            startFrom: "beginning",
            settings: Config.succeed({ apiKey: amp.apiKey, endpoint: amp.endpoint }),
            traits: {
              sync: ["plan", "lifecycle_stage"],
              derived: {
                meta_eligible: TraitSync.eligible("advertising"),
                power_user: TraitSync.inAudience(COHORT.id)
              }
            }
          }),
          MetaCapi.destination({ id: "meta", startFrom: "beginning" }),
          GoogleAds.destination({ id: "google-ads", startFrom: "beginning" }),
          HubSpot.destination({ id: "hubspot", startFrom: "beginning" })
        ],
        sources: [AmplitudeCohorts.source({ id: "amplitude-cohorts" })],
        audiences: [{
          key: COHORT.id,
          destinations: {
            meta: MetaCapiSandbox.SANDBOX_AUDIENCE_ID,
            "google-ads": USER_LIST,
            hubspot: "tl_power_users"
          }
        }]
      }
    })
    sender = AmplitudeCohortsSandbox.sender({
      url: `${h.url}/v1/sources/amplitude-cohorts`,
      secret: SECRET,
      backoffMs: 50,
      // Every message is posted twice, as Amplitude does when an answer is lost.
      retryDuplicate: true
    })
  }, 60_000)

  afterAll(async () => {
    if (h) await h.close()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  const identifies = () => run(amp.client.identifies())
  const identifiesOf = async (userId: string) =>
    (await identifies()).filter((i) => i.identification.user_id === userId).map((i) => i.identification.user_properties)
  const metaRows = async () => [...(await run(meta.client.audienceMembers(MetaCapiSandbox.SANDBOX_AUDIENCE_ID)))]
  const googleEmails = async () =>
    (await run(google.client.audienceMembers(USER_LIST))).flatMap((i) => ("emailAddress" in i ? [i.emailAddress] : []))
      .sort()
  const hubspotFlag = async (email: string) =>
    (await run(hubspot.client.contacts())).find((c) => c.email === email)?.properties["tl_power_users"]

  it("members enter Meta, Google and HubSpot under consent; a retried message is stored once", async () => {
    const now = Date.now()
    const person = (userId: string, email: string, consent: Record<string, boolean>, extra: object = {}) => ({
      event_id: `signup_${userId}`,
      event: "sign_up",
      timestamp: new Date(now - 60_000).toISOString(),
      user_id: userId,
      user: { email, ...extra },
      consent,
      user_properties: { plan: "free", lifecycle_stage: "trial" }
    })
    const res = await h.post({
      events: [
        person("u_alice", "Alice@Example.com", { analytics: true, advertising: true, crm: true }),
        person("u_bob", "bob@example.com", { analytics: true, advertising: true, crm: true }, {
          phone: "+33 6 12 34 56 78"
        }),
        // Carol refused advertising: she may reach the CRM, never an ad platform.
        person("u_carol", "carol@example.com", { analytics: true, advertising: false, crm: true })
      ]
    })
    expect(res.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted", "accepted"])
    // The first sync of each person: the allowlisted traits and the derived states.
    expect(await waitFor(async () => (await identifies()).length === 3, 30_000)).toBe(true)
    expect(await identifiesOf("u_alice")).toEqual([{
      $set: { plan: "free", lifecycle_stage: "trial", meta_eligible: true, power_user: false }
    }])
    expect(await identifiesOf("u_carol")).toEqual([{
      $set: { plan: "free", lifecycle_stage: "trial", meta_eligible: false, power_user: false }
    }])
    // Amplitude events carry no user_properties of their own: trait changes travel only through Identify.
    // (Trait sync and event delivery run independently: wait for the events too.)
    expect(await waitFor(async () => (await run(amp.client.events())).length === 3, 30_000)).toBe(true)
    const events = await run(amp.client.events())
    expect(events.map((e) => e.event["event_type"])).toEqual(["sign_up", "sign_up", "sign_up"])
    expect(events.every((e) => !("user_properties" in e.event))).toBe(true)

    // Amplitude posts the enter batch; the first answer is lost, so it sends the same message again.
    const [delivery] = await run(
      sender.enter(COHORT, ["u_alice", "u_bob", "u_carol"], { messageId: "coh_power" })
    )
    expect(delivery!.delivered).toBe(true)
    expect(delivery!.attempts.map((a) => a.status)).toEqual([200, 200])
    // The same message once more, by hand: answered 200, nothing stored again.
    const again = await fetch(`${h.url}/v1/sources/amplitude-cohorts`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-tracklayer-secret": SECRET },
      body: delivery!.body
    })
    expect(again.status).toBe(200)
    expect(await again.json()).toEqual({
      source: "amplitude-cohorts",
      batches: 1,
      members: 3,
      stored: 0,
      duplicates: 3
    })

    expect(await waitFor(async () => (await metaRows()).length === 2 && (await googleEmails()).length === 2, 30_000))
      .toBe(true)
    // Meta: ["EMAIL", "PHONE"] rows, hashed; Alice's email normalised "alice@example.com".
    expect(sha256("alice@example.com")).toBe(ALICE)
    expect((await metaRows()).map((r) => [...r]).sort()).toEqual([[ALICE, ""], [BOB, BOB_PHONE]].sort())
    expect(await googleEmails()).toEqual([ALICE, BOB].sort())
    expect(await waitFor(async () => (await hubspotFlag("carol@example.com")) === "true", 30_000)).toBe(true)
    expect(await hubspotFlag("alice@example.com")).toBe("true")
    expect(await hubspotFlag("bob@example.com")).toBe("true")
    // Each add went out once, even though the message arrived twice.
    expect((await run(google.client.audienceRequests())).map((r) => [r.op, r.user_list_id, r.members.length]))
      .toEqual([["ingest", USER_LIST, 2]])

    // The person view shows the membership; the identify sandbox got power_user once per person.
    const alice = await h.person("user:u_alice")
    expect(alice.json.audiences).toEqual([COHORT.id])
    expect(await waitFor(async () => (await identifies()).length === 6, 30_000)).toBe(true)
    expect(await identifiesOf("u_alice")).toEqual([
      { $set: { plan: "free", lifecycle_stage: "trial", meta_eligible: true, power_user: false } },
      { $set: { power_user: true } }
    ])
  }, 120_000)

  it("leave removes everywhere; consent withdrawal removes from the ad platforms only", async () => {
    const [left] = await run(sender.leave(COHORT, ["u_bob"], { messageId: "coh_power" }))
    expect(left!.delivered).toBe(true)
    expect(await waitFor(async () => (await metaRows()).length === 1 && (await googleEmails()).length === 1, 30_000))
      .toBe(true)
    expect((await metaRows()).map((r) => [...r])).toEqual([[ALICE, ""]])
    expect(await googleEmails()).toEqual([ALICE])
    expect(await waitFor(async () => (await hubspotFlag("bob@example.com")) === "false", 30_000)).toBe(true)

    // Alice withdraws advertising: she leaves Meta and Google, stays in the CRM audience.
    const withdrawn = await h.consent([{
      update_id: "cu_alice_1",
      timestamp: new Date().toISOString(),
      user_id: "u_alice",
      consent: { advertising: false }
    }])
    expect(withdrawn.status).toBe(200)
    expect(await waitFor(async () => (await metaRows()).length === 0 && (await googleEmails()).length === 0, 30_000))
      .toBe(true)
    expect(await hubspotFlag("alice@example.com")).toBe("true")

    // Traits: Bob's power_user and Alice's meta_eligible changed, once each.
    expect(await waitFor(async () => (await identifies()).length === 8, 30_000)).toBe(true)
    expect((await identifiesOf("u_bob")).slice(2)).toEqual([{ $set: { power_user: false } }])
    expect((await identifiesOf("u_alice")).slice(2)).toEqual([{ $set: { meta_eligible: false } }])
  }, 120_000)

  it("an unchanged trait sends nothing; a changed one sends exactly that change", async () => {
    const before = (await identifies()).length
    const at = new Date().toISOString()
    const res = await h.post({
      events: [
        {
          event_id: "tp_1",
          event: "view_pricing",
          timestamp: at,
          user_id: "u_carol",
          user_properties: { plan: "free" }
        },
        { event_id: "tp_2", event: "view_pricing", timestamp: at, user_id: "u_bob", user_properties: { plan: "pro" } }
      ]
    })
    expect(res.status).toBe(200)
    expect(await waitFor(async () => (await identifies()).length === before + 1, 30_000)).toBe(true)
    // Give the sync time to (wrongly) send Carol's unchanged plan: the explain of her event shows no identify.
    const settled = await waitFor(async () => {
      const x = await h.explain("tp_1")
      return x.json.destinations.find((d: any) => d.destination === "amplitude")?.status === "accepted"
    }, 30_000)
    expect(settled).toBe(true)
    const after = await identifies()
    expect(after.length).toBe(before + 1)
    expect(after[after.length - 1]!.identification).toEqual({
      user_id: "u_bob",
      user_properties: { $set: { plan: "pro" } }
    })
    // Explain shows the identify under Bob's event.
    const bob = await h.explain("tp_2")
    expect(bob.json.destinations.find((d: any) => d.destination === "amplitude:identify")).toMatchObject({
      status: "accepted",
      reason: "identify user:u_bob: $set plan"
    })
  }, 120_000)

  it("refuses a webhook without the shared secret, or with a malformed body, naming what is wrong", async () => {
    const body = AmplitudeCohortsSandbox.webhookBody(COHORT, true, Date.now() / 1000, "m_bad", ["u_x"])
    const post = (headers: Record<string, string>, b: string) =>
      fetch(`${h.url}/v1/sources/amplitude-cohorts`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: b
      }).then(async (r) => ({ status: r.status, json: await r.json() as any }))
    const missing = await post({}, body)
    expect(missing.status).toBe(401)
    expect(missing.json.error.message).toContain("x-tracklayer-secret")
    const wrong = await post({ "x-tracklayer-secret": "not-the-secret-at-all" }, body)
    expect(wrong.status).toBe(401)
    expect(JSON.stringify(wrong.json)).not.toContain(SECRET)
    const bad = await post({ "x-tracklayer-secret": SECRET }, body.replace("\"u_x\"", "42"))
    expect(bad.status).toBe(400)
    expect(bad.json.error.message).toContain("users[0].user_id")
    const unknown = await post({ "x-tracklayer-secret": SECRET, authorization: `Bearer ${ADMIN_KEY}` }, body)
      .then(() => fetch(`${h.url}/v1/sources/nope`, { method: "POST", body }))
    expect(unknown.status).toBe(404)
    expect(WRITE_KEY).not.toBe(SECRET)
  }, 60_000)
})
