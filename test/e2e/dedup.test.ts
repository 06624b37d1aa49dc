/**
 * Deduplication through the real gateway: idempotent ingest under concurrent random retries (property), business
 * keys (one purchase per order), and adjustments (a later report with another amount).
 */
import { FastCheck as fc } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startHarness, waitFor } from "../support/harness.js"

describe("dedup", () => {
  let h: Harness
  const amp = (id: string) =>
    h.explain(id).then((x) => x.json.destinations.find((d: any) => d.destination === "amplitude"))
  beforeAll(async () => {
    h = await startHarness()
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it(
    "ingest is idempotent under random concurrent retries: each event is accepted exactly once (property)",
    async () => {
      let run = 0
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 30 }),
          fc.array(fc.array(fc.nat(29), { minLength: 1, maxLength: 30 }), { minLength: 2, maxLength: 6 }),
          async (n, requests) => {
            const r = run++
            const events = Array.from({ length: n }, (_, i) => ({
              event_id: `idem_${r}_${i}`,
              event: "sign_up",
              timestamp: new Date().toISOString(),
              user_id: `usr_idem_${r}_${i % 3}`
            }))
            // Each request retries a random selection (with repeats) of the events, all at once.
            const bodies = requests.map((idx) => idx.map((i) => events[i % n]!))
            const responses = await Promise.all(bodies.map((b) => h.post({ events: b })))
            const accepted = new Map<string, number>()
            responses.forEach((res, k) => {
              expect(res.status).toBe(200)
              res.json.results.forEach((x: any, j: number) => {
                expect(x.event_id).toBe(bodies[k]![j]!.event_id)
                expect(["accepted", "duplicate"]).toContain(x.status)
                if (x.status === "accepted") accepted.set(x.event_id, (accepted.get(x.event_id) ?? 0) + 1)
              })
            })
            const sent = new Set(bodies.flat().map((e) => e.event_id))
            return [...sent].every((id) => accepted.get(id) === 1) && [...accepted.keys()].every((id) => sent.has(id))
          }
        ),
        { numRuns: 12 }
      )
    },
    120_000
  )

  it(
    "one purchase per order; a later report with another value is an adjustment, sent to Amplitude as a correction",
    async () => {
      const t = (s: number) => new Date(Date.now() - 60_000 + s * 1000).toISOString()
      const base = { event: "purchase", user_id: "usr_adj_1" }
      const res = await h.post({
        events: [
          {
            ...base,
            event_id: "adj_1",
            timestamp: t(0),
            properties: { value: 100, currency: "USD", order_id: "ord_adj_1" }
          },
          {
            ...base,
            event_id: "adj_2",
            timestamp: t(1),
            properties: { value: "100.00", currency: "usd", order_id: "ord_adj_1" }
          },
          {
            ...base,
            event_id: "adj_3",
            timestamp: t(2),
            properties: { value: 120, currency: "USD", order_id: "ord_adj_1" }
          },
          {
            ...base,
            event_id: "adj_4",
            timestamp: t(3),
            properties: { value: 120, currency: "USD", order_id: "ord_adj_1" }
          },
          {
            ...base,
            event: "refund",
            event_id: "adj_r1",
            timestamp: t(4),
            properties: { value: 30, currency: "USD", order_id: "ord_adj_1" }
          },
          {
            ...base,
            event: "refund",
            event_id: "adj_r2",
            timestamp: t(5),
            properties: { value: 40, currency: "USD", order_id: "ord_adj_1" }
          }
        ]
      })
      expect(res.json.results.map((r: any) => r.status)).toEqual([
        "accepted",
        "accepted",
        "accepted",
        "accepted",
        "accepted",
        "accepted"
      ])
      expect(await waitFor(async () => (await amp("adj_r2")).status === "accepted", 20_000)).toBe(true)

      expect((await h.explain("adj_2")).json).toMatchObject({ duplicate_of: "adj_1", adjustment: null })
      expect((await amp("adj_2")).reason).toBe("duplicate: duplicate of adj_1")
      expect((await h.explain("adj_3")).json).toMatchObject({
        duplicate_of: null,
        adjustment: { of: "adj_1", previousValue: 100, previousCurrency: "USD" }
      })
      expect((await amp("adj_3")).status).toBe("accepted")
      // The same corrected amount again is a duplicate, not a second adjustment.
      expect((await h.explain("adj_4")).json.duplicate_of).toBe("adj_1")
      expect((await h.explain("adj_r2")).json.adjustment).toEqual({
        of: "adj_r1",
        previousValue: 30,
        previousCurrency: "USD"
      })

      const stored = await h.sandboxEvents()
      const byInsert = new Map(stored.map((s) => [s.insert_id, s.event as Record<string, any>]))
      expect(byInsert.get("ord_adj_1")).toMatchObject({ event_type: "purchase", revenue: 100 })
      expect(byInsert.get("ord_adj_1:adjustment:adj_3")).toMatchObject({
        event_type: "revenue_correction",
        revenue: 20,
        price: 20,
        quantity: 1,
        revenueType: "correction",
        event_properties: {
          adjusted_event: "purchase",
          adjusts_event_id: "adj_1",
          previous_value: 100,
          previous_currency: "USD",
          value: 120
        }
      })
      expect(byInsert.get("refund:ord_adj_1")).toMatchObject({ event_type: "refund", revenue: -30 })
      expect(byInsert.get("refund:ord_adj_1:adjustment:adj_r2")).toMatchObject({
        event_type: "revenue_correction",
        revenue: -10
      })
      expect(stored.filter((s) => String(s.insert_id).startsWith("ord_adj_1")).length).toBe(2)
    },
    60_000
  )
})
