/**
 * Consent-aware routing through the real gateway: state from inline consent and consent updates, a device's choice
 * following the person it merges into, "granted at event time and still now", withdrawal stopping retries.
 */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Generator } from "@tracklayer/testkit"
import { FastCheck as fc } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startHarness, waitFor } from "../support/harness.js"

const fixture = fs.readFileSync(path.join(__dirname, "../fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as { timestamp: string })

describe("consent", () => {
  let h: Harness
  const at = (id: string, dest: string) =>
    h.explain(id).then((x) => x.json.destinations.find((d: any) => d.destination === dest))
  beforeAll(async () => {
    h = await startHarness({
      destinations: [
        { id: "amplitude", startFrom: "beginning" },
        // The same plugin used for advertising: it needs the advertising purpose too.
        { id: "ads", startFrom: "beginning", purposes: ["analytics", "advertising"] }
      ]
    })
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it("blocks the fixture's usr_5530 from advertising destinations, from the device's earlier denial on", async () => {
    const rebased = Generator.rebaseTime(fixture, Date.now())
    expect((await h.post({ events: rebased })).json.results.every((r: any) => r.status === "accepted")).toBe(true)
    expect(await waitFor(async () => (await at("evt_0201", "ads")).status !== "pending", 20_000)).toBe(true)
    expect(await waitFor(async () => (await at("evt_0103", "amplitude")).status === "accepted", 20_000)).toBe(true)

    expect(await at("evt_0101", "ads")).toMatchObject({
      status: "dropped",
      reason: "consent (advertising): advertising denied at event time (inline consent)"
    })
    // evt_0102 and evt_0103 carry no consent: the denial made on device web_a7c2 followed it into usr_5530.
    for (const id of ["evt_0102", "evt_0103"]) {
      const d = await at(id, "ads")
      expect(d.status).toBe("dropped")
      expect(d.reason).toMatch(
        /^consent \(advertising\): advertising denied at event time \(consent given with an event at /
      )
    }
    // Analytics was granted: Amplitude got them all.
    for (const id of ["evt_0101", "evt_0102", "evt_0103"]) expect((await at(id, "amplitude")).status).toBe("accepted")
    // usr_8421 granted everything on its first (anonymous) event; the sign-up after the merge inherits it.
    expect((await at("evt_0002", "ads")).status).toBe("accepted")
    expect((await at("evt_0201", "ads")).status).toBe("accepted")
    const adsIds = (await h.sandboxes["ads"]!.events()).map((e) => e.insert_id)
    expect(adsIds).not.toContain("evt_0102")
    expect(adsIds).not.toContain("ord_2002")
  }, 60_000)

  it("a later grant releases only later events; a withdrawal stops queued retries", async () => {
    const before = new Date(Date.now() - 60_000).toISOString()
    const grant = await h.consent([{ update_id: "cu_grant_5530", user_id: "usr_5530", consent: { advertising: true } }])
    expect(grant.json.results).toEqual([{ update_id: "cu_grant_5530", status: "accepted" }])
    expect(
      (await h.consent([{ update_id: "cu_grant_5530", user_id: "usr_5530", consent: { advertising: true } }])).json
        .results
    )
      .toEqual([{ update_id: "cu_grant_5530", status: "duplicate" }])
    await h.post({
      events: [
        { event_id: "c_old_5530", event: "view_pricing", timestamp: before, user_id: "usr_5530" },
        {
          event_id: "c_new_5530",
          event: "view_pricing",
          timestamp: new Date(Date.now() + 1000).toISOString(),
          user_id: "usr_5530"
        }
      ]
    })
    expect(await waitFor(async () => (await at("c_new_5530", "ads")).status === "accepted", 20_000)).toBe(true)
    expect(await at("c_old_5530", "ads")).toMatchObject({ status: "dropped" })
    expect((await at("c_old_5530", "ads")).reason).toMatch(/advertising denied at event time/)

    // Withdrawal while an event waits for a retry: it is dropped, not sent.
    await h.sandboxes["ads"]!.setFaults({ down: true })
    await h.post({
      events: [{
        event_id: "c_retry_8421",
        event: "start_trial",
        timestamp: new Date(Date.now() - 5000).toISOString(),
        user_id: "usr_8421"
      }]
    })
    expect(await waitFor(async () => (await at("c_retry_8421", "ads")).status === "retrying", 20_000)).toBe(true)
    const withdraw = await h.consent([{
      update_id: "cu_withdraw_8421",
      user_id: "usr_8421",
      consent: { advertising: false }
    }])
    expect(withdraw.json.results[0].status).toBe("accepted")
    await h.sandboxes["ads"]!.setFaults({ down: false })
    expect(await waitFor(async () => (await at("c_retry_8421", "ads")).status === "dropped", 20_000)).toBe(true)
    expect((await at("c_retry_8421", "ads")).reason).toMatch(
      /^consent \(advertising\): advertising withdrawn at .* \(consent update\)$/
    )
    expect((await h.sandboxes["ads"]!.events()).map((e) => e.insert_id)).not.toContain("c_retry_8421")
    // Amplitude (analytics only) is unaffected by the advertising withdrawal.
    expect(await waitFor(async () => (await at("c_retry_8421", "amplitude")).status === "accepted", 20_000)).toBe(true)
  }, 60_000)

  it("rejects bad consent updates with the field named", async () => {
    const r = await h.consent([
      { update_id: "cu_bad_1", user_id: "u", consent: { marketing: true } },
      { update_id: "cu_bad_2", consent: { advertising: true } },
      { update_id: "cu_bad_3", user_id: "u", consent: { advertising: "yes" } },
      { update_id: "cu_bad_4", user_id: "u", consent: {}, colour: 1 }
    ])
    expect(r.status).toBe(200)
    expect(r.json.results.map((x: any) => x.status)).toEqual(["rejected", "rejected", "rejected", "rejected"])
    expect(r.json.results[0].errors).toEqual([{
      path: "consent.marketing",
      message: "\"marketing\" is not a consent purpose; known: analytics, advertising, crm"
    }])
    expect(r.json.results[1].errors[0].path).toBe("user_id")
    expect(r.json.results[2].errors[0].path).toBe("consent.advertising")
    expect(r.json.results[3].errors).toEqual([{ path: "colour", message: "unknown field" }])
  })
})

describe("consent property", () => {
  it("never delivers an event to a destination whose purposes are not all granted (property)", async () => {
    const h = await startHarness({
      destinations: [{ id: "ads", startFrom: "beginning", purposes: ["analytics", "advertising"] }]
    })
    try {
      let run = 0
      const choice = fc.constantFrom<boolean | undefined>(true, false, undefined)
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ user: fc.integer({ min: 0, max: 3 }), advertising: choice, analytics: choice }), {
            minLength: 1,
            maxLength: 12
          }),
          async (specs) => {
            const r = run++
            const t0 = Date.now() - 3_600_000
            const events = specs.map((s, i) => {
              const consent: Record<string, boolean> = {}
              if (s.advertising !== undefined) consent["advertising"] = s.advertising
              if (s.analytics !== undefined) consent["analytics"] = s.analytics
              return {
                event_id: `cp_${r}_${i}`,
                event: "view_pricing",
                timestamp: new Date(t0 + i * 1000).toISOString(),
                user_id: `usr_cp_${r}_${s.user}`,
                ...(Object.keys(consent).length > 0 ? { consent } : {})
              }
            })
            // Reference model, written independently of the implementation: a purpose is granted for an event when
            // its inline choice, else the same user's latest earlier choice, else the default (analytics yes,
            // advertising no) says so — and no later choice of that user withdrew it.
            const granted = (i: number, purpose: "advertising" | "analytics") => {
              const mine = specs.map((s, j) => ({ s, j })).filter(({ s }) => s.user === specs[i]!.user)
              const atEvent = [...mine].reverse().find(({ s, j }) => j <= i && s[purpose] !== undefined)?.s[purpose] ??
                (purpose === "analytics")
              const later = mine.filter(({ s, j }) => j > i && s[purpose] !== undefined)
              const withdrawn = later.length > 0 && later[later.length - 1]!.s[purpose] === false
              return atEvent && !withdrawn
            }
            const expected = events.filter((_, i) => granted(i, "advertising") && granted(i, "analytics")).map((e) =>
              e.event_id
            )
            await h.post({ events })
            const settled = await waitFor(async () => {
              const xs = await Promise.all(events.map((e) => h.explain(e.event_id)))
              return xs.every((x) => ["accepted", "dropped"].includes(x.json.destinations[0].status))
            }, 20_000)
            if (!settled) return false
            const got = (await h.sandboxes["ads"]!.events()).map((e) => String(e.insert_id)).filter((id) =>
              id.startsWith(`cp_${r}_`)
            )
            return JSON.stringify(got.sort()) === JSON.stringify([...expected].sort())
          }
        ),
        { numRuns: 15 }
      )
    } finally {
      await h.close()
    }
  }, 180_000)
})

describe("consent config", () => {
  it("an unparseable consent policy fails startup naming the field; it never opens the gate", () => {
    const r = TrackLayerConfig.resolve({
      vocabulary: Vocabulary.canonical,
      destinations: [],
      consent: { defaults: { advertising: "yes" } }
    })
    expect(r).toBeInstanceOf(TrackLayerConfig.ConfigError)
    expect((r as TrackLayerConfig.ConfigError).field).toBe("consent.defaults.advertising")
  })
})
