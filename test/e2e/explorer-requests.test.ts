/**
 * Reconciliation for a destination that reports only per-request counts: Google Data Manager answers each request
 * with a request id and, when polled, a request status with record and error counts (not which events failed). The
 * explorer shows those counts beside the per-event ones, and a window drop (an event older than Google's 90 days).
 */
import { NodeHttpClient } from "@effect/platform-node"
import { GoogleAds, GoogleAdsSandbox } from "@tracklayer/plugin-google-ads"
import { Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor } from "../support/harness.js"

const run = <A, E>(eff: Effect.Effect<A, E, any>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici) as Effect.Effect<A, E, never>)

describe("explorer: per-request counts (Google Data Manager request status)", () => {
  let scope: Scope.CloseableScope
  let google: GoogleAdsSandbox.Sandbox
  let h: Harness
  const saved = { ...process.env }

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    google = await Effect.runPromise(Scope.extend(GoogleAdsSandbox.start({}), scope))
    // The plugin reads its settings from the environment, as in production; the sandbox says what to set.
    Object.assign(process.env, google.env)
    h = await startHarness({
      config: { destinations: [GoogleAds.destination({ id: "google-ads", startFrom: "beginning" })] }
    })
  }, 60_000)
  afterAll(async () => {
    await h?.close()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    for (const k of Object.keys(google?.env ?? {})) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  })

  const recon = async (from: string, to: string) => {
    const res = await fetch(`${h.url}/v1/explorer/reconciliation?from=${from}&to=${to}&destination=google-ads`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` }
    })
    return (await res.json()) as { rows: Array<Record<string, any>> }
  }
  const statusOf = async (id: string) =>
    ((await h.explain(id)).json.destinations ?? []).find((d: any) => d.destination === "google-ads")?.status

  it("shows Google's request statuses, record counts and error counts per day, and a window drop", async () => {
    // All recent events share one timestamp, so they fall on one UTC day whatever the time of the run.
    const at = new Date(Date.now() - 60_000)
    const old = new Date(at.getTime() - 100 * 86_400_000)
    const day = at.toISOString().slice(0, 10)
    const oldDay = old.toISOString().slice(0, 10)
    const purchase = (id: string, order: string, gclid: string, timestamp = at) => ({
      event_id: id,
      event: "purchase",
      timestamp: timestamp.toISOString(),
      user_id: `usr_${id}`,
      context: { click_ids: { gclid } },
      consent: { analytics: true, advertising: true },
      properties: { value: 20, currency: "EUR", order_id: order }
    })
    // The next accepted request ends PARTIAL_SUCCESS with one record in error.
    await run(google.client.setFaults({
      requestStatus: "PARTIAL_SUCCESS",
      errorCounts: [{ reason: "INVALID_CLICK_ID", recordCount: 1 }],
      count: 1
    }))
    const first = await h.post({
      events: [
        purchase("g_1", "ord_g_1", "Cj0-test-gclid-1"),
        purchase("g_2", "ord_g_2", "Cj0-test-gclid-2"),
        purchase("g_3", "ord_g_3", "Cj0-test-gclid-3"),
        purchase("g_old", "ord_g_old", "Cj0-test-gclid-4", old)
      ]
    })
    expect(first.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted", "accepted", "accepted"])
    expect(await waitFor(async () => (await statusOf("g_3")) === "accepted", 30_000, 200)).toBe(true)
    await h.post({ events: [purchase("g_4", "ord_g_4", "Cj0-test-gclid-5")] })
    expect(await waitFor(async () => (await statusOf("g_4")) === "accepted", 30_000, 200)).toBe(true)
    expect(await statusOf("g_old")).toBe("dropped")

    const r = await recon(oldDay, day)
    const today = r.rows.find((x) => x.day === day)!
    expect(today).toMatchObject({
      destination: "google-ads",
      received: 4,
      routed: 4,
      sent: 4,
      accepted: 4,
      rejected: 0,
      pending: 0,
      requests: {
        requests: 2,
        by_status: { PARTIAL_SUCCESS: 1, SUCCESS: 1 },
        record_count: 4,
        error_counts: { INVALID_CLICK_ID: 1 }
      }
    })
    const before = r.rows.find((x) => x.day === oldDay)!
    expect(before).toMatchObject({ received: 1, routed: 0, dropped_total: 1, requests: null })
    expect(before["dropped"].window).toBe(1)
    // Days without events are there, with zeros.
    expect(r.rows.length).toBe(Math.round((Date.parse(day) - Date.parse(oldDay)) / 86_400_000) + 1)

    const csv = await (await fetch(`${h.url}/v1/explorer/reconciliation.csv?from=${day}&to=${day}`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` }
    })).text()
    expect(csv.split("\r\n")[1]).toBe(
      `google-ads,${day},4,4,0,0,0,0,0,0,0,0,4,4,0,0,0,0,2,PARTIAL_SUCCESS:1;SUCCESS:1,4,INVALID_CLICK_ID:1`
    )
  }, 60_000)
})
