/**
 * The cohort exchange on a real store (PGlite, or PostgreSQL when DATABASE_URL is set), through the running gateway:
 * a 50,000-user cohort webhook is stored once and a retry of it stores nothing; the projector folds membership into
 * the person view (latest by the source's computed time, whatever order the messages arrive in); erasure removes
 * the membership rows; explain shows an audience event (`<message id>:<user id>`) with only the destinations its
 * audience is routed to. Trait sync: an unchanged object-valued trait is not sent again.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { Identity } from "@tracklayer/core"
import { Amplitude, AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { AmplitudeCohorts, AmplitudeCohortsSandbox } from "@tracklayer/plugin-amplitude-cohorts"
import { GoogleAds, GoogleAdsSandbox } from "@tracklayer/plugin-google-ads"
import { MetaCapi, MetaCapiSandbox } from "@tracklayer/plugin-meta-capi"
import { Config, Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startHarness, waitFor, WRITE_KEY } from "../support/harness.js"

const SECRET = "tl-test-cohort-secret-0002"
const BIG = { id: "coh_weekly", name: "Weekly actives" }
const POWER = { id: "coh_power", name: "Power users" }
const USER_LIST = "8000000001"
const USERS = 50_000
const userId = (i: number) => `u_${String(i).padStart(5, "0")}`
// printf '%s' u00001@example.com | sha256sum
const U00001 = "73aca4cca878d2a4b8c22848c37ba8fe8295319df0c97a4f8d3a0af8d1ae7db2"

const run = <A, E>(eff: Effect.Effect<A, E, any>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici) as Effect.Effect<A, E, never>)

describe("cohort exchange on a real store", () => {
  let scope: Scope.CloseableScope
  let h: Harness
  let amp: AmplitudeSandbox.Sandbox
  let meta: MetaCapiSandbox.Sandbox
  let google: GoogleAdsSandbox.Sandbox
  // Seconds, as Amplitude's computed_time: an hour ago, so later messages can be older or newer.
  const T0 = Math.floor(Date.now() / 1000) - 3600

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    amp = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
    meta = await Effect.runPromise(Scope.extend(MetaCapiSandbox.start({}), scope))
    google = await Effect.runPromise(Scope.extend(GoogleAdsSandbox.start({}), scope))
    Object.assign(process.env, meta.env, google.env)
    h = await startHarness({
      config: {
        destinations: [
          Amplitude.destination({
            id: "amplitude",
            startFrom: "beginning",
            settings: Config.succeed({ apiKey: amp.apiKey, endpoint: amp.endpoint }),
            traits: { sync: ["plan", "billing"] }
          }),
          MetaCapi.destination({ id: "meta", startFrom: "beginning" }),
          GoogleAds.destination({ id: "google-ads", startFrom: "beginning" })
        ],
        sources: [AmplitudeCohorts.source({ id: "amplitude-cohorts", settings: Config.succeed({ secret: SECRET }) })],
        audiences: [
          { key: BIG.id, destinations: { meta: MetaCapiSandbox.SANDBOX_AUDIENCE_ID_2 } },
          { key: POWER.id, destinations: { meta: MetaCapiSandbox.SANDBOX_AUDIENCE_ID, "google-ads": USER_LIST } }
        ]
      }
    })
  }, 60_000)

  afterAll(async () => {
    if (h) await h.close()
    if (scope) await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  const webhook = (body: string) =>
    fetch(`${h.url}/v1/sources/amplitude-cohorts`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-tracklayer-secret": SECRET },
      body
    }).then(async (r) => ({ status: r.status, json: await r.json() as any }))
  const message = (
    cohort: AmplitudeCohortsSandbox.Cohort,
    inCohort: boolean,
    at: number,
    messageId: string,
    users: ReadonlyArray<string>
  ) => webhook(AmplitudeCohortsSandbox.webhookBody(cohort, inCohort, at, messageId, users))

  const query = <A extends object>(text: string, ...params: ReadonlyArray<unknown>) =>
    h.sql(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text, params as Array<any>)))
  /** True once the projector has folded everything in the log. */
  const projected = async () => {
    const [r] = await query<{ done: boolean }>(
      `SELECT (SELECT cursor_pos FROM tl_subscriptions WHERE destination = '$projection') >=
        (SELECT max(position) FROM tl_log) AS done`
    )
    return r?.done === true
  }
  const membership = (identifier: string) =>
    query<{ audience_key: string; member: boolean; at: Date }>(
      `SELECT audience_key, member, at FROM tl_audience_members WHERE identifier = $1 ORDER BY audience_key`,
      identifier
    )
  const audiencesOf = async (id: string) => (await h.person(id)).json.audiences as ReadonlyArray<string>

  it("a 50,000-user message is stored once (200), and its retry stores nothing", async () => {
    // Three of the users are known from tracked events; u_00001 allows advertising and has an email.
    const res = await h.post({
      events: [
        {
          event_id: "su_00001",
          event: "sign_up",
          timestamp: new Date((T0 - 600) * 1000).toISOString(),
          user_id: userId(1),
          user: { email: "U00001@Example.com" },
          consent: { analytics: true, advertising: true }
        },
        ...[7, 9].map((i) => ({
          event_id: `su_${String(i).padStart(5, "0")}`,
          event: "sign_up",
          timestamp: new Date((T0 - 600) * 1000).toISOString(),
          user_id: userId(i)
        }))
      ]
    }, { key: WRITE_KEY })
    expect(res.status).toBe(200)
    expect(res.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted", "accepted"])

    const users = Array.from({ length: USERS }, (_, i) => userId(i + 1))
    const body = AmplitudeCohortsSandbox.webhookBody(BIG, true, T0, "msg_big_1", users)
    const started = performance.now()
    const first = await webhook(body)
    console.log(
      `POST /v1/sources/amplitude-cohorts with ${USERS} users (${(body.length / 1048576).toFixed(1)} MiB) took ` +
        `${Math.round(performance.now() - started)} ms on ${process.env["DATABASE_URL"] ? "PostgreSQL" : "PGlite"}`
    )
    expect(first.status).toBe(200)
    expect(first.json).toEqual({
      source: "amplitude-cohorts",
      batches: 1,
      members: USERS,
      stored: USERS,
      duplicates: 0
    })
    // Amplitude retries when an answer is lost: the same message is answered 200 and stored again nowhere.
    const retry = await webhook(body)
    expect(retry.status).toBe(200)
    expect(retry.json).toEqual({
      source: "amplitude-cohorts",
      batches: 1,
      members: USERS,
      stored: 0,
      duplicates: USERS
    })
    const [log] = await query<{ n: string; people: string }>(
      `SELECT count(*)::text AS n, count(DISTINCT person_key)::text AS people FROM tl_log
       WHERE kind = 'audience' AND event_id LIKE 'msg_big_1:%'`
    )
    expect(log).toEqual({ n: "50000", people: "50000" })
  }, 300_000)

  it("the projector folds the membership into the person view; a later leave drops it", async () => {
    expect(await waitFor(projected, 120_000, 200)).toBe(true)
    const [members] = await query<{ n: string }>(
      `SELECT count(*)::text AS n FROM tl_audience_members WHERE audience_key = $1 AND member`,
      BIG.id
    )
    expect(members!.n).toBe("50000")
    expect(await audiencesOf("user:u_00007")).toEqual([BIG.id])
    expect(await membership("user:u_00007")).toEqual([{ audience_key: BIG.id, member: true, at: new Date(T0 * 1000) }])

    const left = await message(BIG, false, T0 + 60, "msg_big_2", ["u_00007"])
    expect(left.json).toEqual({ source: "amplitude-cohorts", batches: 1, members: 1, stored: 1, duplicates: 0 })
    expect(await waitFor(async () => (await audiencesOf("user:u_00007")).length === 0, 60_000)).toBe(true)
    expect(await membership("user:u_00007")).toEqual([
      { audience_key: BIG.id, member: false, at: new Date((T0 + 60) * 1000) }
    ])
    // The others stay.
    expect(await audiencesOf("user:u_00009")).toEqual([BIG.id])
  }, 180_000)

  it("an older leave arriving after a newer enter does not remove (latest computed time wins)", async () => {
    // u_00007 enters again (computed at T0+180); a leave computed earlier (T0+120) is delivered late.
    const enter = await message(BIG, true, T0 + 180, "msg_big_3", ["u_00007"])
    expect(enter.json.stored).toBe(1)
    expect(await waitFor(async () => (await audiencesOf("user:u_00007")).length === 1, 60_000)).toBe(true)
    const late = await message(BIG, false, T0 + 120, "msg_big_4", ["u_00007"])
    expect(late.json).toEqual({ source: "amplitude-cohorts", batches: 1, members: 1, stored: 1, duplicates: 0 })
    // The late leave is in the log and has been folded: it changed nothing.
    expect(await waitFor(projected, 60_000)).toBe(true)
    const [stored] = await query<{ n: string }>(
      `SELECT count(*)::text AS n FROM tl_log WHERE kind = 'audience' AND event_id = 'msg_big_4:u_00007'`
    )
    expect(stored!.n).toBe("1")
    expect(await audiencesOf("user:u_00007")).toEqual([BIG.id])
    expect(await membership("user:u_00007")).toEqual([
      { audience_key: BIG.id, member: true, at: new Date((T0 + 180) * 1000) }
    ])
  }, 180_000)

  it("explain shows an audience event with only the destinations its audience is routed to", async () => {
    // u_00001 allows advertising and has an email: added to the Meta audience of the weekly cohort.
    expect(
      await waitFor(
        async () => (await run(meta.client.audienceMembers(MetaCapiSandbox.SANDBOX_AUDIENCE_ID_2))).length === 1,
        120_000
      )
    ).toBe(true)
    expect((await run(meta.client.audienceMembers(MetaCapiSandbox.SANDBOX_AUDIENCE_ID_2))).map((r) => [...r]))
      .toEqual([[U00001, ""]])
    const x = await h.explain("msg_big_1:u_00001")
    expect(x.status).toBe(200)
    expect(x.json.event_id).toBe("msg_big_1:u_00001")
    expect(x.json.event).toBe("$audience")
    expect(x.json.person_key).toBe("user:u_00001")
    expect(x.json.destinations.map((d: any) => d.destination)).toEqual(["meta"])
    expect(x.json.destinations[0]).toMatchObject({
      destination: "meta",
      status: "accepted",
      reason: `add user:u_00001 to ${BIG.id} (${MetaCapiSandbox.SANDBOX_AUDIENCE_ID_2})`
    })

    // Another member, never asked for advertising: not added, and explain says why.
    expect(
      await waitFor(async () => {
        const y = await h.explain("msg_big_1:u_00009")
        return y.json.destinations[0]?.status === "dropped"
      }, 120_000)
    ).toBe(true)
    const y = await h.explain("msg_big_1:u_00009")
    expect(y.json.destinations).toEqual([expect.objectContaining({
      destination: "meta",
      status: "dropped",
      reason: "consent (advertising): user:u_00009 is in coh_weekly but not added to meta: " +
        "advertising not granted (built-in default)"
    })])

    // The power users audience goes to Meta and Google Ads: both, and never Amplitude (no audience capability).
    // (A property-based cohort sync this time: the membership rides on an Amplitude user property.)
    const power = await webhook(JSON.stringify([
      { user_id: "u_00009", user_properties: { [AmplitudeCohortsSandbox.traitName(POWER)]: true } }
    ]))
    expect(power.json).toEqual({ source: "amplitude-cohorts", batches: 1, members: 1, stored: 1, duplicates: 0 })
    expect(await waitFor(async () => (await audiencesOf("user:u_00009")).length === 2, 60_000)).toBe(true)
    expect(await audiencesOf("user:u_00009")).toEqual([POWER.id, BIG.id])
    const [event] = await query<{ event_id: string }>(
      `SELECT event_id FROM tl_log WHERE kind = 'audience' AND person_key = 'user:u_00009'
       AND body->'properties'->>'audience_key' = $1`,
      POWER.id
    )
    expect(event!.event_id).toMatch(/^sha256:[0-9a-f]{64}:\d+:u_00009$/)
    const z = await h.explain(event!.event_id)
    expect(z.status).toBe(200)
    expect(z.json.destinations.map((d: any) => d.destination)).toEqual(["google-ads", "meta"])
    expect(await run(google.client.audienceMembers(USER_LIST))).toEqual([])
  }, 300_000)

  it("an erased person loses their audience rows, and a later message does not bring them back", async () => {
    expect((await membership("user:u_00009")).map((m) => [m.audience_key, m.member])).toEqual([
      [POWER.id, true],
      [BIG.id, true]
    ])
    const erased = await h.erase("user:u_00009", "dpo@example.com")
    expect(erased.status).toBe(200)
    expect(erased.json.status).toBe("erased")
    expect(await membership("user:u_00009")).toEqual([])
    const after = await h.person("user:u_00009")
    expect(after.json.audiences).toEqual([])
    expect(after.json.erasure.erasure_id).toBe(erased.json.erasure_id)

    // The cohort still lists them at Amplitude: the next message is stored, and folded away again.
    const again = await message(BIG, true, T0 + 300, "msg_big_5", ["u_00009"])
    expect(again.json.stored).toBe(1)
    expect(await waitFor(projected, 60_000)).toBe(true)
    expect(await membership("user:u_00009")).toEqual([])
    // Others keep theirs.
    expect(await audiencesOf("user:u_00007")).toEqual([BIG.id])
  }, 120_000)

  it("a person known only from a cohort is shown with the audience, and can be erased", async () => {
    // u_00002 was never tracked here: Amplitude knows them, TrackLayer only holds their membership.
    const seen = await h.person("user:u_00002")
    expect(seen.status).toBe(200)
    expect(seen.json).toMatchObject({
      person_id: Identity.personIdOfUser("u_00002"),
      user_id: "u_00002",
      audiences: [BIG.id],
      identifiers: [{ key: "user:u_00002", kind: "user" }]
    })
    const erased = await h.erase("user:u_00002")
    expect(erased.status).toBe(200)
    expect(erased.json).toMatchObject({ status: "erased", user_id: "u_00002" })
    expect(await membership("user:u_00002")).toEqual([])
    const again = await message(BIG, true, T0 + 400, "msg_big_6", ["u_00002"])
    expect(again.json.stored).toBe(1)
    expect(await waitFor(projected, 60_000)).toBe(true)
    expect(await membership("user:u_00002")).toEqual([])
    const after = await h.person("user:u_00002")
    expect(after.json).toMatchObject({ audiences: [], erasure: { erasure_id: erased.json.erasure_id } })
  }, 120_000)

  it("trait sync: an unchanged object-valued trait is not sent again", async () => {
    const at = Date.now()
    const track = (id: string, offset: number) => ({
      event_id: id,
      event: "view_pricing",
      timestamp: new Date(at + offset).toISOString(),
      user_id: "u_billing",
      user_properties: { plan: "pro", billing: { seats: 3, tier: "pro" } }
    })
    const identifies = async () =>
      (await run(amp.client.identifies())).filter((i) => i.identification.user_id === "u_billing")
        .map((i) => i.identification.user_properties)
    expect((await h.post({ events: [track("bill_1", 0)] })).status).toBe(200)
    // (The sync first works through the 50,000 audience events before it: nothing to send for them.)
    expect(await waitFor(async () => (await identifies()).length === 1, 120_000)).toBe(true)
    expect(await identifies()).toEqual([{ $set: { plan: "pro", billing: { seats: 3, tier: "pro" } } }])

    // The same values again: the sync reads the event and sends nothing.
    expect((await h.post({ events: [track("bill_2", 1000)] })).status).toBe(200)
    const synced = async () => {
      const [r] = await query<{ done: boolean }>(
        `SELECT (SELECT cursor_pos FROM tl_subscriptions WHERE destination = '$traits:amplitude') >=
          (SELECT position FROM tl_log WHERE kind = 'track' AND event_id = 'bill_2') AS done`
      )
      return r?.done === true
    }
    expect(await waitFor(synced, 60_000)).toBe(true)
    expect(await identifies()).toEqual([{ $set: { plan: "pro", billing: { seats: 3, tier: "pro" } } }])
  }, 240_000)
})
