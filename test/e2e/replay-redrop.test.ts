/**
 * Replay over events that were dropped: a replay routes them again (consent or mapping may have changed), but an
 * event dropped again for the reason of its latest record gets no new delivery record, however often the replay
 * runs. An event whose outcome changed is recorded with the next attempt number: sent (consent granted since) or
 * dropped for another reason. Also: `events: []` is refused rather than read as "every event".
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor } from "../support/harness.js"

const admin = { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" }

describe("replay over dropped events", () => {
  let h: Harness
  // Event time: 10 minutes ago; the consent choices are dated around it.
  const T = Date.now() - 10 * 60_000
  const iso = (ms: number) => new Date(ms).toISOString()

  const startReplay = (body: unknown) =>
    fetch(`${h.url}/v1/destinations/ads/replays`, { method: "POST", headers: admin, body: JSON.stringify(body) })
      .then(async (r) => ({ status: r.status, json: (await r.json()) as any }))

  /** Runs a replay of every event to `ads` to the end; its final status. */
  const replayAll = async () => {
    const started = await startReplay({})
    expect(started.status).toBe(202)
    const id = started.json.replay_id as string
    let last: any
    const done = await waitFor(async () => {
      last = await (await fetch(`${h.url}/v1/replays/${id}`, { headers: admin })).json()
      return last.state === "done"
    }, 30_000)
    expect(done).toBe(true)
    return last
  }

  /** Every delivery record at `ads`, per event id: `#attempt outcome reason`. */
  const records = async () => {
    const rows = await h.sql(
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql<{ event_id: string; attempt: number; outcome: string; reason: string | null }>`
        SELECT event_id, attempt, outcome, reason FROM tl_delivery_records WHERE destination = 'ads' ORDER BY id`
      )
    )
    const out: Record<string, Array<string>> = {}
    for (const r of rows) (out[r.event_id] ??= []).push(`#${r.attempt} ${r.outcome} ${r.reason ?? ""}`.trim())
    return out
  }

  const consent = async (updates: ReadonlyArray<unknown>) => {
    const r = await h.consent(updates)
    expect(r.status).toBe(200)
    expect(r.json.results.map((x: any) => x.status)).toEqual(updates.map(() => "accepted"))
  }

  /** Waits until the projector has recorded a person's advertising choice made at `at`. */
  const advertisingIs = (user: string, granted: boolean, at: number) =>
    waitFor(async () => {
      const rows = await h.sql(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ n: number }>`SELECT count(*)::int AS n FROM tl_consent_choices
          WHERE identifier = ${`user:${user}`} AND purpose = 'advertising' AND granted = ${granted}
            AND at = ${new Date(at)}`))
      return rows[0]?.n === 1
    }, 10_000)

  const denied = (at: number) =>
    `consent (advertising): advertising denied at event time (consent update at ${iso(at)})`

  beforeAll(async () => {
    h = await startHarness({
      config: { unknownEvents: "store" },
      destinations: [{ id: "ads", startFrom: "beginning", purposes: ["analytics", "advertising"] }]
    })
  }, 60_000)
  afterAll(() => h?.close())

  it("records a repeated drop once, and a changed outcome with the next attempt", async () => {
    await consent([
      { update_id: "rr_c1", timestamp: iso(T - 2 * 3_600_000), user_id: "usr_rr_2", consent: { advertising: false } },
      { update_id: "rr_c2", timestamp: iso(T - 2 * 3_600_000), user_id: "usr_rr_3", consent: { advertising: false } }
    ])
    expect(await advertisingIs("usr_rr_3", false, T - 2 * 3_600_000)).toBe(true)
    const posted = await h.post({
      events: [
        // Not in the vocabulary: stored, never routed (not_mapped).
        { event_id: "rr_unmapped_1", event: "custom_ping", timestamp: iso(T), user_id: "usr_rr_1" },
        { event_id: "rr_unmapped_2", event: "custom_pong", timestamp: iso(T), user_id: "usr_rr_1" },
        // Advertising denied before the event: dropped for consent.
        { event_id: "rr_consent_granted_later", event: "sign_up", timestamp: iso(T), user_id: "usr_rr_2" },
        { event_id: "rr_consent_denied_again", event: "sign_up", timestamp: iso(T), user_id: "usr_rr_3" },
        // Delivered live: a replay skips it.
        {
          event_id: "rr_delivered",
          event: "sign_up",
          timestamp: iso(T),
          user_id: "usr_rr_4",
          consent: { advertising: true }
        }
      ]
    })
    expect(posted.status).toBe(200)
    expect(posted.json.results.map((r: any) => r.status)).toEqual(Array(5).fill("accepted"))
    expect(await waitFor(async () => Object.keys(await records()).length === 5, 20_000)).toBe(true)

    const live = {
      rr_unmapped_1: ["#1 dropped not_mapped: \"custom_ping\" is not in the vocabulary (stored, not routed)"],
      rr_unmapped_2: ["#1 dropped not_mapped: \"custom_pong\" is not in the vocabulary (stored, not routed)"],
      rr_consent_granted_later: [`#1 dropped ${denied(T - 2 * 3_600_000)}`],
      rr_consent_denied_again: [`#1 dropped ${denied(T - 2 * 3_600_000)}`],
      rr_delivered: ["#1 accepted"]
    }
    expect(await records()).toEqual(live)

    // Nothing changed: the replay evaluates the four dropped events again, drops them for the same reasons, and
    // writes no record. Twice.
    for (const run of [1, 2]) {
      const r = await replayAll()
      expect([run, r.total, r.counts]).toEqual([run, 5, {
        read: 4,
        already: 1,
        routed: 0,
        dropped: 4,
        droppedBy: { consent: 2, not_mapped: 2 },
        sent: 0,
        accepted: 0,
        rejected: 0,
        retried: 0
      }])
      expect(await records()).toEqual(live)
    }

    // Consent changes: usr_rr_2 granted advertising before the event (a correction dated T - 1 h); usr_rr_3 denied
    // it again, later (another reason text).
    await consent([
      { update_id: "rr_c3", timestamp: iso(T - 3_600_000), user_id: "usr_rr_2", consent: { advertising: true } },
      { update_id: "rr_c4", timestamp: iso(T - 30 * 60_000), user_id: "usr_rr_3", consent: { advertising: false } }
    ])
    expect(await advertisingIs("usr_rr_2", true, T - 3_600_000)).toBe(true)
    expect(await advertisingIs("usr_rr_3", false, T - 30 * 60_000)).toBe(true)

    const changed = await replayAll()
    expect(changed.counts).toEqual({
      read: 4,
      already: 1,
      routed: 1,
      dropped: 3,
      droppedBy: { consent: 1, not_mapped: 2 },
      sent: 1,
      accepted: 1,
      rejected: 0,
      retried: 0
    })
    const after = {
      ...live,
      rr_consent_granted_later: [`#1 dropped ${denied(T - 2 * 3_600_000)}`, "#2 accepted"],
      rr_consent_denied_again: [`#1 dropped ${denied(T - 2 * 3_600_000)}`, `#2 dropped ${denied(T - 30 * 60_000)}`]
    }
    expect(await records()).toEqual(after)
    const explained = (await h.explain("rr_consent_granted_later")).json.destinations
      .find((d: any) => d.destination === "ads")
    expect(explained.status).toBe("accepted")

    // Once more: the sent event is skipped now, the rest dropped as last recorded; nothing new in the log.
    const again = await replayAll()
    expect([again.counts.read, again.counts.already, again.counts.dropped, again.counts.sent]).toEqual([3, 2, 3, 0])
    expect(await records()).toEqual(after)
    // The destination got each sent event once.
    expect((await h.sandboxEvents()).map((e) => e.insert_id).sort()).toEqual([
      "rr_consent_granted_later",
      "rr_delivered"
    ])
  }, 120_000)

  it("refuses an empty events list instead of replaying every event", async () => {
    const list = async () =>
      ((await (await fetch(`${h.url}/v1/replays?destination=ads`, { headers: admin })).json()) as any).replays.length
    const before = await list()
    const r = await startReplay({ events: [] })
    expect(r).toEqual({
      status: 400,
      json: {
        error: {
          code: "bad_request",
          message: "events: must name at least one event; omit it to replay every event"
        }
      }
    })
    // The same for a dry run, and nothing was created.
    expect((await startReplay({ events: [], dry_run: true })).status).toBe(400)
    expect(await list()).toBe(before)
    // A non-empty list still starts a replay limited to those names.
    const one = await startReplay({ events: ["purchase"], dry_run: true })
    expect([one.status, one.json.events, one.json.total]).toEqual([202, ["purchase"], 0])
  })
})
