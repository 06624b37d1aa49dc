/**
 * Delivery behaviour through the real gateway and the Amplitude sandbox's fault injection: retries with backoff,
 * Retry-After, authentication pauses, dead letters, isolation between destinations, and start points.
 */
import { Database } from "@tracklayer/core"
import { TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { startHarness, waitFor } from "../support/harness.js"

const event = (id: string, user = "usr_delivery_1") => ({
  event_id: id,
  event: "sign_up",
  timestamp: new Date().toISOString(),
  user_id: user
})

const statusOf = async (h: Awaited<ReturnType<typeof startHarness>>, id: string, dest = "amplitude") =>
  (await h.explain(id)).json.destinations.find((d: any) => d.destination === dest)

describe("delivery", () => {
  it("retries a 5xx with backoff, then delivers; explain shows every attempt", async () => {
    const h = await startHarness()
    try {
      await h.sandboxes["amplitude"]!.setFaults({ status: 500, count: 2 })
      expect((await h.post({ events: [event("retry_500")] })).status).toBe(200)
      expect(await waitFor(async () => (await statusOf(h, "retry_500")).status === "accepted", 20_000)).toBe(true)
      const d = await statusOf(h, "retry_500")
      expect(d.attempts.map((a: any) => [a.attempt, a.outcome, a.status])).toEqual([
        [1, "retry", 500],
        [2, "retry", 500],
        [3, "accepted", 200]
      ])
      const gap = Date.parse(d.attempts[1].at) - Date.parse(d.attempts[0].at)
      expect(gap).toBeGreaterThanOrEqual(150) // initial backoff 200 ms with ±20% jitter
      expect((await h.sandboxEvents()).filter((e) => e.insert_id === "retry_500").length).toBe(1)
    } finally {
      await h.close()
    }
  }, 60_000)

  it("honours Retry-After on 503", async () => {
    const h = await startHarness()
    try {
      await h.sandboxes["amplitude"]!.setFaults({ status: 503, count: 1, retryAfter: 2 })
      await h.post({ events: [event("retry_after")] })
      expect(await waitFor(async () => (await statusOf(h, "retry_after")).status === "accepted", 20_000)).toBe(true)
      const d = await statusOf(h, "retry_after")
      expect(d.attempts.map((a: any) => a.status)).toEqual([503, 200])
      expect(Date.parse(d.attempts[1].at) - Date.parse(d.attempts[0].at)).toBeGreaterThanOrEqual(1900)
    } finally {
      await h.close()
    }
  }, 60_000)

  it("pauses a destination whose credentials are refused, drops nothing, and never logs the key", async () => {
    const h = await startHarness({
      destinations: [{ id: "amplitude", startFrom: "beginning", apiKey: "wrong-secret-api-key-123" }]
    })
    try {
      await h.post({ events: [event("auth_1"), event("auth_2")] })
      expect(await waitFor(async () => (await h.destinations())[0]!.state === "paused", 20_000)).toBe(true)
      const [health] = await h.destinations()
      expect(health).toMatchObject({
        destination: "amplitude",
        state: "paused",
        reason: "the destination refused the credentials or the endpoint (see lastError)",
        accepted: 0
      })
      const d = await statusOf(h, "auth_1")
      expect(d.status).toBe("retrying")
      expect(d.attempts.every((a: any) => a.outcome === "retry")).toBe(true)
      const text = JSON.stringify(await h.explain("auth_1")) + JSON.stringify(health)
      expect(text).not.toContain("wrong-secret-api-key-123")
      expect((await h.sandboxStats()).events_stored).toBe(0)
    } finally {
      await h.close()
    }
  }, 60_000)

  it("dead-letters an event still failing after maxRetryAge, with the reason", async () => {
    const h = await startHarness({
      config: {
        delivery: {
          pollInterval: "50 millis",
          initialBackoff: "100 millis",
          maxBackoff: "300 millis",
          maxRetryAge: "1 second"
        }
      }
    })
    try {
      await h.sandboxes["amplitude"]!.setFaults({ down: true })
      await h.post({ events: [event("dead_1")] })
      expect(await waitFor(async () => (await statusOf(h, "dead_1")).status === "dead_letter", 20_000)).toBe(true)
      const d = await statusOf(h, "dead_1")
      expect(d.reason).toMatch(/^gave up after 1s: /)
      expect(d.attempts.at(-1).outcome).toBe("dead_letter")
      expect(d.attempts.filter((a: any) => a.outcome === "retry").length).toBeGreaterThanOrEqual(2)
    } finally {
      await h.close()
    }
  }, 60_000)

  it("a destination that is down holds its backlog without delaying another, and drains when it is back", async () => {
    const h = await startHarness({
      destinations: [{ id: "amplitude", startFrom: "beginning" }, { id: "amplitude_b", startFrom: "beginning" }]
    })
    try {
      await h.sandboxes["amplitude"]!.setFaults({ down: true })
      const events = Array.from({ length: 40 }, (_, i) => event(`iso_${i}`, `usr_iso_${i % 7}`))
      const res = await h.post({ events })
      expect(res.json.results.every((r: any) => r.status === "accepted")).toBe(true)
      expect(await waitFor(async () => (await h.sandboxes["amplitude_b"]!.stats()).events_stored === 40, 10_000)).toBe(
        true
      )
      expect((await h.sandboxes["amplitude"]!.stats()).events_stored).toBe(0)
      // amplitude_b may finish before amplitude has made its first (failing) attempt: wait for that attempt.
      expect(
        await waitFor(
          async () => (await h.destinations()).find((d) => d.destination === "amplitude")!.state === "backoff",
          30_000
        )
      ).toBe(true)
      const health = await h.destinations()
      expect(health.find((d) => d.destination === "amplitude_b")!.state).toBe("running")
      await h.sandboxes["amplitude"]!.setFaults({ down: false })
      expect(await waitFor(async () => (await h.sandboxes["amplitude"]!.stats()).events_stored === 40, 20_000)).toBe(
        true
      )
      const stored = await h.sandboxes["amplitude"]!.events()
      expect(new Set(stored.map((s) => s.insert_id))).toEqual(new Set(events.map((e) => e.event_id)))
    } finally {
      await h.close()
    }
  }, 60_000)

  it("a destination added later starts at the end of the log unless given a start point", async () => {
    const scope = await Effect.runPromise(Scope.make())
    let store: Layer.Layer<any, any, never>
    let dir: string | undefined
    const url = await Effect.runPromise(TestStore.databaseUrl)
    if (Option.isSome(url)) {
      const s = await Effect.runPromise(Scope.extend(TestStore.privateSchema(url.value), scope))
      store = Database.layerPostgres(Redacted.make(s.url))
    } else {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "tl-start-"))
      store = Database.layerPglite(dir)
    }
    store = store.pipe(Layer.tap((ctx) => Effect.provide(Database.migrate, ctx)))
    try {
      const h1 = await startHarness({ store })
      await h1.post({ events: [event("old_1"), event("old_2")] })
      // Wait for the delivery records (committed with the cursor), not just the sandbox's receipt: closing the gateway
      // between a send and its record would legitimately resend the events on the next start (at-least-once).
      expect(
        await waitFor(async () => {
          const xs = await Promise.all(["old_1", "old_2"].map((id) => h1.explain(id)))
          return xs.every((x) => x.json.destinations[0].status === "accepted")
        }, 30_000)
      ).toBe(true)
      await h1.close()

      const h2 = await startHarness({
        store,
        destinations: [
          { id: "amplitude", startFrom: "beginning" },
          { id: "late_end" },
          { id: "late_begin", startFrom: "beginning" }
        ]
      })
      try {
        await h2.post({ events: [event("new_1")] })
        const ids = async (d: string) => (await h2.sandboxes[d]!.events()).map((e) => e.insert_id).sort()
        expect(
          await waitFor(
            async () => (await ids("late_begin")).length === 3 && (await ids("late_end")).length === 1,
            30_000
          )
        ).toBe(true)
        expect(await waitFor(async () => (await ids("amplitude")).length === 1, 30_000)).toBe(true)
        expect(await ids("late_begin")).toEqual(["new_1", "old_1", "old_2"])
        expect(await ids("late_end")).toEqual(["new_1"])
        expect(await ids("amplitude")).toEqual(["new_1"]) // its cursor survived the restart: nothing sent twice
        const old = (await h2.explain("old_1")).json.destinations
        expect(old.find((d: any) => d.destination === "late_end")).toMatchObject({
          status: "before_start",
          reason: "stored before late_end was added; it starts from its configured start point (replay sends history)"
        })
        expect(old.find((d: any) => d.destination === "amplitude").status).toBe("accepted")
      } finally {
        await h2.close()
      }
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      if (dir) fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
