/**
 * The default config in sandbox mode, as a user runs it (`tracklayer serve --sandbox`, a child process): every
 * destination's sandbox receives exactly the events its mapping, consent and window allow, once each, with valid
 * hashes.
 */
import { Generator, TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Option, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { waitFor } from "../support/harness.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

const fixture = fs.readFileSync(path.join(__dirname, "../fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as { timestamp: string })

const HEX64 = /^[0-9a-f]{64}$/
/** Dedup keys of the fixture journeys (the first test sends them to the same gateway). */
const fixtureKeys = new Set(["evt_0002", "evt_0003", "ord_1001", "subscription_renewed:sub_77:2026-04", "evt_0201"])

describe("default config in sandbox mode: Amplitude, Meta, Google, LinkedIn, HubSpot", () => {
  let scope: Scope.CloseableScope
  let gw: Gateway
  let cwd: string
  let writeKey: string
  let adminKey: string
  const sandboxes: Record<string, string> = {}

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    cwd = fs.mkdtempSync(path.join(os.tmpdir(), "tl-dest-"))
    const env: Record<string, string> = { TRACKLAYER_DATA_DIR: path.join(cwd, "data") }
    const pg = await Effect.runPromise(TestStore.databaseUrl)
    if (Option.isSome(pg)) {
      env["DATABASE_URL"] = (await Effect.runPromise(Scope.extend(TestStore.privateSchema(pg.value), scope))).url
    }
    gw = await startGateway(
      ["--sandbox", "--config", path.resolve(__dirname, "../../tracklayer.config.ts")],
      env,
      await freePort(),
      cwd
    )
    const banner = gw.output()
    writeKey = /write key\s+(\S+)/.exec(banner)![1]!
    adminKey = /admin key\s+(\S+)/.exec(banner)![1]!
    for (const m of banner.matchAll(/^\s+(\S+)\s+→ sandbox (http:\/\/\S+)/gm)) sandboxes[m[1]!] = m[2]!
  }, 90_000)

  afterAll(async () => {
    if (gw) await kill9(gw)
    await Effect.runPromise(Scope.close(scope, Exit.void))
    fs.rmSync(cwd, { recursive: true, force: true })
  })

  const sandboxEvents = async (id: string) =>
    ((await (await fetch(`${sandboxes[id]}/__sandbox/events`)).json()) as { events: Array<Record<string, any>> }).events
  const explain = async (id: string) =>
    (await (await fetch(`${gw.url}/v1/events/${id}/explain`, { headers: { authorization: `Bearer ${adminKey}` } }))
      .json()) as any

  it("routes the fixture journeys to each destination by mapping and consent, with valid hashes", async () => {
    expect(Object.keys(sandboxes).sort()).toEqual(["amplitude", "google-ads", "hubspot", "linkedin", "meta"])
    const events = Generator.rebaseTime(fixture, Date.now())
    const res = await fetch(`${gw.url}/v1/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${writeKey}` },
      body: JSON.stringify({ events })
    })
    expect(res.status).toBe(200)
    const settled = await waitFor(
      async () => {
        const xs = await Promise.all(fixture.map((e: any) => explain(e.event_id)))
        return xs.every((x) => x.destinations.every((d: any) => ["accepted", "dropped", "rejected"].includes(d.status)))
      },
      60_000,
      250
    )
    expect(settled).toBe(true)

    // Amplitude (analytics): every event except the repeated order report.
    const amp = await sandboxEvents("amplitude")
    expect(amp.map((e) => e.insert_id).sort()).toEqual(
      [
        "evt_0001",
        "evt_0002",
        "evt_0003",
        "ord_1001",
        "subscription_renewed:sub_77:2026-04",
        "evt_0101",
        "evt_0102",
        "ord_2002",
        "evt_0201"
      ].sort()
    )
    // Ad platforms (advertising): the mapped events of the people who granted advertising. view_pricing is not
    // mapped, usr_5530 denied advertising on its device before signing up, evt_0005 repeats ord_1001.
    const expectedAds = ["evt_0002", "evt_0003", "ord_1001", "subscription_renewed:sub_77:2026-04", "evt_0201"].sort()
    const meta = await sandboxEvents("meta")
    expect(meta.map((e) => e.event.event_id).sort()).toEqual(expectedAds)
    expect(meta.map((e) => e.event.event_name).sort()).toEqual([
      "CompleteRegistration",
      "Lead",
      "Purchase",
      "StartTrial",
      "Subscribe"
    ])
    const google = await sandboxEvents("google-ads")
    expect(google.map((e) => e.transaction_id).sort()).toEqual(expectedAds)
    const linkedin = await sandboxEvents("linkedin")
    expect(linkedin.map((e) => e.event_id).sort()).toEqual(expectedAds)

    // The purchase sent with only user_id carries the email hash seen at sign-up, everywhere.
    // printf '%s' jane.doe@example.com | sha256sum
    const jane = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    const metaPurchase = meta.find((e) => e.event.event_id === "ord_1001")!.event
    expect(metaPurchase.user_data.em).toEqual([jane])
    expect(metaPurchase.custom_data).toMatchObject({ value: 129, currency: "USD", order_id: "ord_1001" })
    // The purchase came from the server, but the person signed up on the web: it is a website conversion.
    expect(metaPurchase.action_source).toBe("website")
    expect(metaPurchase.event_source_url).toBe("https://app.example.com/signup")
    // The user agent seen at sign-up (never another trait: the purchase carried user_properties like plan "pro").
    expect(metaPurchase.user_data.client_user_agent).toBe("Mozilla/5.0 (X11; Linux x86_64)")
    expect(metaPurchase.event_time).toBe(Math.floor(Date.parse((events[3] as any).timestamp) / 1000))
    const googlePurchase = google.find((e) => e.transaction_id === "ord_1001")!.event
    expect(googlePurchase.userData.userIdentifiers).toContainEqual({ emailAddress: jane })
    expect(googlePurchase.adIdentifiers).toEqual({ gclid: "Cj0KCQ-test-gclid-1" })
    expect(googlePurchase.consent).toEqual({ adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_GRANTED" })
    const liLead = linkedin.find((e) => e.event_id === "evt_0201")!.element
    // printf '%s' ops@acme-corp.example | sha256sum
    expect(liLead.user.userIds).toContainEqual({
      idType: "SHA256_EMAIL",
      idValue: "f9195939ebd39641ef6268f41a0b70b6ec07887ab85d30f7aa34d8c4ad3859cb"
    })
    expect(liLead.user.userIds).toContainEqual({
      idType: "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID",
      idValue: "a1b2c3d4-e5f6-7890-abcd-ef0123456789"
    })

    // Every hashed field is a 64-hex digest; no raw email reached any ad platform.
    for (const e of meta) {
      for (const k of ["em", "ph", "fn", "ln", "ct", "st", "zp", "country", "external_id"]) {
        for (const v of [e.event.user_data[k] ?? []].flat()) expect(v).toMatch(HEX64)
      }
    }
    for (const e of google) {
      for (const u of e.event.userData?.userIdentifiers ?? []) {
        if (u.emailAddress) expect(u.emailAddress).toMatch(HEX64)
      }
    }
    for (const e of linkedin) {
      for (const u of e.element.user.userIds) if (u.idType === "SHA256_EMAIL") expect(u.idValue).toMatch(HEX64)
    }
    const all = JSON.stringify([meta, google, linkedin])
    expect(all.toLowerCase()).not.toContain("jane.doe@example.com")
    expect(all).not.toContain("l.martin@example.fr")

    // Explain gives each drop's reason.
    const pricing = await explain("evt_0001")
    expect(pricing.destinations.find((d: any) => d.destination === "meta").reason).toMatch(/^not_mapped: /)
    const blocked = await explain("evt_0103")
    expect(blocked.destinations.find((d: any) => d.destination === "linkedin").reason).toMatch(
      /^consent \(advertising\): /
    )
  }, 120_000)

  it(
    "a generated stream: each sandbox holds exactly the events explain calls accepted there, once each, mapped, hashed",
    async () => {
      const events = Generator.generate({ people: 80, seed: 2026, now: Date.now() }) as unknown as Array<
        Record<string, any>
      >
      const res = await fetch(`${gw.url}/v1/events`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${writeKey}` },
        body: JSON.stringify({ events: events.slice(0, 500) })
      })
      expect(res.status).toBe(200)
      const sent = events.slice(0, 500)
      let explained: Array<any> = []
      const settled = await waitFor(
        async () => {
          explained = await Promise.all(sent.map((e) => explain(e.event_id)))
          return explained.every((x) =>
            x.destinations.every((d: any) => ["accepted", "dropped", "rejected"].includes(d.status))
          )
        },
        90_000,
        500
      )
      expect(settled).toBe(true)
      const mapped = new Set(["sign_up", "start_trial", "purchase", "subscription_renewed", "qualified_lead"])
      const keysFor = (dest: string) =>
        explained.filter((x) => x.destinations.find((d: any) => d.destination === dest)?.status === "accepted").map((
          x
        ) => ({
          key: x.dedup_key as string,
          event: x.event as string,
          advertising: x.destinations.find((d: any) => d.destination === dest)
        }))
      const received: Record<string, Array<string>> = {
        meta: (await sandboxEvents("meta")).map((e) => e.event.event_id),
        "google-ads": (await sandboxEvents("google-ads")).map((e) => e.transaction_id),
        linkedin: (await sandboxEvents("linkedin")).map((e) => e.event_id)
      }
      for (const dest of ["meta", "google-ads", "linkedin"]) {
        const accepted = keysFor(dest)
        expect(accepted.length).toBeGreaterThan(0)
        // Only mapped events, and every one of them is there exactly once (fixture events from the other test included).
        expect(accepted.every((a) => mapped.has(a.event))).toBe(true)
        const got = received[dest]!.filter((k) => !fixtureKeys.has(k))
        expect([...got].sort()).toEqual(accepted.map((a) => a.key).sort())
        expect(new Set(received[dest]).size).toBe(received[dest]!.length)
      }
      // Nothing was sent to an ad platform for an event whose explain says consent blocked it there.
      for (const x of explained) {
        for (const d of x.destinations) {
          if (d.destination in received && d.status === "dropped" && String(d.reason).startsWith("consent")) {
            expect(received[d.destination]).not.toContain(x.dedup_key)
          }
        }
      }
      // HubSpot (crm purpose): contacts upserted, behavioural events once each (a stable uuid per dedup key).
      expect(keysFor("hubspot").length).toBeGreaterThan(0)
      const hubspotEvents = await sandboxEvents("hubspot")
      expect(hubspotEvents.length).toBeGreaterThan(0)
      expect(new Set(hubspotEvents.map((e) => e.uuid)).size).toBe(hubspotEvents.length)
      for (const e of await sandboxEvents("meta")) {
        for (
          const v of [e.event.user_data.em ?? [], e.event.user_data.ph ?? [], e.event.user_data.external_id ?? []]
            .flat()
        ) {
          expect(v).toMatch(HEX64)
        }
      }
    },
    180_000
  )
})
