/**
 * Destination faults through a real `tracklayer serve` process and two Amplitude sandboxes: `amplitude` gets the
 * fault, `amplitude_b` stays healthy. Faults not covered by test/e2e/delivery.test.ts (5xx, 503 Retry-After, auth,
 * dead letters): a request that outlives `delivery.requestTimeout`, a connection reset, with and without the
 * destination having stored the events first, 429 with `Retry-After` in seconds and as an HTTP-date, slow answers,
 * and a long outage (10,000 events held on disk, memory flat, drained afterwards exactly once).
 */
import { AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { Generator } from "@tracklayer/testkit"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  adminGet,
  client,
  CONFIG_ARGS,
  dedupKey,
  exactlyOnce,
  type FaultEnv,
  postEvents,
  rssMiB,
  setUp,
  sleep
} from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

let env: FaultEnv
let gw: Gateway

beforeAll(async () => {
  env = await setUp()
  gw = await startGateway(CONFIG_ARGS, env.env, await freePort())
}, 90_000)

afterAll(async () => {
  if (gw !== undefined) await kill9(gw)
  if (env !== undefined) await env.close()
})

const event = (id: string, i: number) => ({
  event_id: id,
  event: "sign_up",
  timestamp: new Date().toISOString(),
  user_id: `usr_fault_${i % 5}`
})

const destinationOf = async (id: string, destination: string) =>
  ((await adminGet(gw.url, `/v1/events/${encodeURIComponent(id)}/explain`)).destinations as Array<any>).find((d) =>
    d.destination === destination
  )

/** Waits until every event id is accepted at both destinations; fails with the gateway's output otherwise. */
const allAccepted = async (ids: ReadonlyArray<string>, timeoutMs = 30_000) => {
  const ok = await waitFor(
    async () => {
      for (const id of ids) {
        for (const d of ["amplitude", "amplitude_b"]) {
          if ((await destinationOf(id, d))?.status !== "accepted") {
            return false
          }
        }
      }
      return true
    },
    timeoutMs,
    100
  )
  if (!ok) console.error(gw.output().slice(-4000))
  expect(ok).toBe(true)
}

const storedAt = async (sandbox: AmplitudeSandbox.Sandbox, ids: ReadonlyArray<string>) =>
  exactlyOnce(await client(sandbox.client.events()), new Set(ids))

describe("destination faults", () => {
  const connectionCases = [
    {
      scenario: "a request that outlives delivery.requestTimeout (3 s) is abandoned and retried",
      faults: { timeout: true, count: 1 },
      firstReason: "timed out after 3s",
      resendsAbsorbed: 0
    },
    {
      scenario: "a timeout after the destination stored the events: the resend is absorbed by insert_id",
      faults: { timeout: true, count: 1, ingest: true },
      firstReason: "timed out after 3s",
      resendsAbsorbed: 3
    },
    {
      scenario: "a connection reset before any answer is retried",
      faults: { reset: true, count: 1 },
      firstReason: "Amplitude request failed: Transport error",
      resendsAbsorbed: 0
    },
    {
      scenario: "a connection reset after the destination stored the events: the resend is absorbed by insert_id",
      faults: { reset: true, count: 1, ingest: true },
      firstReason: "Amplitude request failed: Transport error",
      resendsAbsorbed: 3
    }
  ] as const

  connectionCases.forEach(({ faults, firstReason, resendsAbsorbed, scenario }, n) =>
    it(scenario, async () => {
      const ids = [1, 2, 3].map((i) => `ft_conn_${n}_${i}`)
      const before = await client(env.a.client.stats())
      await client(env.a.client.setFaults(faults))
      const res = await postEvents(gw.url, ids.map((id, i) => event(id, i)))
      expect(res.status).toBe(200)
      expect(res.json.results.map((r: any) => r.status)).toEqual(["accepted", "accepted", "accepted"])
      await allAccepted(ids)

      const a = await destinationOf(ids[0]!, "amplitude")
      expect(a.attempts.map((x: any) => [x.attempt, x.outcome, x.status])).toEqual([
        [1, "retry", null],
        [2, "accepted", 200]
      ])
      expect(a.attempts[0].reason).toContain(firstReason)
      const b = await destinationOf(ids[0]!, "amplitude_b")
      expect(b.attempts.map((x: any) => [x.attempt, x.outcome, x.status])).toEqual([[1, "accepted", 200]])

      expect(await storedAt(env.a, ids)).toEqual({ delivered: 3, lost: 0, duplicates: 0 })
      expect(await storedAt(env.b, ids)).toEqual({ delivered: 3, lost: 0, duplicates: 0 })
      const after = await client(env.a.client.stats())
      const kind = "reset" in faults ? "reset" : "timeout"
      expect((after.responses[kind] ?? 0) - (before.responses[kind] ?? 0)).toBe(1)
      expect(after.duplicates - before.duplicates).toBe(resendsAbsorbed)
      console.log(
        `[fault] ${kind}${"ingest" in faults ? " after storing" : ""}: 3 events sent, lost 0, duplicates stored 0, ` +
          `resends absorbed by insert_id ${after.duplicates - before.duplicates}`
      )
    }, 40_000)
  )

  const throttleCases = [
    { scenario: "429 with Retry-After in seconds holds the events at least that long", retryAfter: () => 2, min: 1900 },
    {
      scenario: "429 with Retry-After as an HTTP-date holds the events until that time",
      // HTTP-dates have whole seconds: 4 s ahead is at least 3 s after the answer.
      retryAfter: () => new Date(Date.now() + 4000).toUTCString(),
      min: 2500
    }
  ]

  throttleCases.forEach(({ min, retryAfter, scenario }, n) =>
    it(scenario, async () => {
      const ids = [1, 2].map((i) => `ft_429_${n}_${i}`)
      const header = retryAfter()
      await client(env.a.client.setFaults({ status: 429, count: 1, retryAfter: header }))
      expect((await postEvents(gw.url, ids.map((id, i) => event(id, i)))).status).toBe(200)
      await allAccepted(ids)
      for (const id of ids) {
        const a = await destinationOf(id, "amplitude")
        expect(a.attempts.map((x: any) => [x.attempt, x.outcome, x.status])).toEqual([
          [1, "retry", 429],
          [2, "accepted", 200]
        ])
        expect(a.attempts[0].reason).toBe("throttled by Amplitude (429, eps_threshold 30)")
        const gap = Date.parse(a.attempts[1].at) - Date.parse(a.attempts[0].at)
        // The backoff alone would be 200 ms: the wait comes from Retry-After.
        expect(gap).toBeGreaterThanOrEqual(min)
        console.log(`[fault] 429 Retry-After: ${JSON.stringify(header)} → retried after ${gap} ms`)
      }
      expect(await storedAt(env.a, ids)).toEqual({ delivered: 2, lost: 0, duplicates: 0 })
      expect(await storedAt(env.b, ids)).toEqual({ delivered: 2, lost: 0, duplicates: 0 })
    }, 40_000)
  )

  it("slow answers (600 ms each, under the timeout) deliver everything on the first attempt", async () => {
    const ids = Array.from({ length: 600 }, (_, i) => `ft_slow_${i}`)
    const before = await client(env.a.client.stats())
    const healthBefore = (await adminGet(gw.url, "/v1/destinations")).destinations
    await client(env.a.client.setFaults({ delayMs: 600 }))
    try {
      const started = Date.now()
      for (let i = 0; i < ids.length; i += 200) {
        expect((await postEvents(gw.url, ids.slice(i, i + 200).map((id, k) => event(id, k)))).status).toBe(200)
      }
      const ingestMs = Date.now() - started
      expect(await waitFor(async () => (await storedAt(env.b, ids)).delivered === ids.length, 30_000)).toBe(true)
      const bMs = Date.now() - started
      expect(await waitFor(async () => (await storedAt(env.a, ids)).delivered === ids.length, 30_000)).toBe(true)
      const aMs = Date.now() - started
      console.log(
        `[fault] slow destination (600 ms answers): ingest of ${ids.length} events ${ingestMs} ms; ` +
          `healthy destination done after ${bMs} ms, slow one after ${aMs} ms`
      )
    } finally {
      await client(env.a.client.setFaults({ delayMs: 0 }))
    }
    const after = await client(env.a.client.stats())
    const healthAfter = (await adminGet(gw.url, "/v1/destinations")).destinations
    const retried = (h: Array<any>) => h.find((d) => d.destination === "amplitude").retried as number
    // Every request answered 200 and nothing was retried or resent.
    expect(retried(healthAfter) - retried(healthBefore)).toBe(0)
    expect(after.duplicates - before.duplicates).toBe(0)
    expect(after.events_stored - before.events_stored).toBe(ids.length)
    expect(await storedAt(env.a, ids)).toEqual({ delivered: 600, lost: 0, duplicates: 0 })
  }, 60_000)

  it(
    "a destination down for a long time: backlog on disk, ingest and the other destination unaffected, memory flat, drained exactly once",
    async () => {
      const N = 10_000
      const events = Generator.generate({ people: 3500, seed: 10_000, now: Date.now() }).slice(0, N) as Array<
        Record<string, any>
      >
      expect(events.length).toBe(N)
      const keys = new Set(events.map(dedupKey))
      const pid = gw.process.pid!
      const droppedOf = async () =>
        ((await adminGet(gw.url, "/v1/destinations")).destinations as Array<any>).find((d) =>
          d.destination === "amplitude"
        )
          .dropped as number
      // Earlier tests' events have settled, so the backlog below is this test's alone.
      const settled = async () => {
        const h = ((await adminGet(gw.url, "/v1/explorer/health")).destinations as Array<any>).find((d) =>
          d.destination === "amplitude"
        )
        return h.backlog + h.retry_queue === 0
      }
      expect(await waitFor(settled, 30_000, 100)).toBe(true)
      const droppedBefore = await droppedOf()
      await client(env.a.client.setFaults({ down: true, retryAfter: 1 }))
      const rssStart = rssMiB(pid)
      let rssPeak = rssStart
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMiB(pid))), 250)
      try {
        // Ingest: two clients, 500 events a request.
        const latencies: Array<number> = []
        const started = Date.now()
        let next = 0
        const worker = async () => {
          while (next < N) {
            const slice = events.slice(next, next + 500)
            next += 500
            const res = await postEvents(gw.url, slice, 30_000)
            expect(res.status).toBe(200)
            expect(res.json.results.filter((r: any) => r.status !== "accepted" && r.status !== "duplicate")).toEqual([])
            latencies.push(res.ms)
          }
        }
        await Promise.all([worker(), worker()])
        const ingestMs = Date.now() - started
        latencies.sort((x, y) => x - y)
        expect(latencies.length).toBe(N / 500)

        // The healthy destination gets everything while the other one gets nothing.
        const bDone = await waitFor(async () => (await storedAt(env.b, [...keys])).delivered === keys.size, 60_000, 250)
        const bMs = Date.now() - started
        if (!bDone) console.error(await storedAt(env.b, [...keys]), keys.size, gw.output().slice(-4000))
        expect(bDone).toBe(true)
        expect(await storedAt(env.a, [...keys])).toEqual({ delivered: 0, lost: keys.size, duplicates: 0 })

        // The backlog is visible: the failing destination backs off with the vendor's error; the other one runs.
        const health = (await adminGet(gw.url, "/v1/destinations")).destinations as Array<any>
        const a = health.find((d) => d.destination === "amplitude")
        expect(a).toMatchObject({ state: "backoff", reason: "requests failing" })
        expect(a.lastError).toContain("Amplitude answered 503")
        expect(health.find((d) => d.destination === "amplitude_b").state).toBe("running")
        const explorer = (await adminGet(gw.url, "/v1/explorer/health")).destinations as Array<any>
        const backlogA = explorer.find((d) => d.destination === "amplitude")
        const backlogB = explorer.find((d) => d.destination === "amplitude_b")
        // Everything not yet delivered is on disk, unread in the log or in the retry queue; only the business-key
        // duplicates of the pages read so far are settled (dropped).
        const droppedA = a.dropped - droppedBefore
        console.log(
          `[fault] backlog of the failing destination: ${backlogA.backlog} in the log, ` +
            `${backlogA.retry_queue} in the retry queue, ${droppedA} dropped as duplicates; lag ${backlogA.lag_seconds} s`
        )
        expect(backlogA.backlog + backlogA.retry_queue + droppedA).toBe(N)
        expect(backlogA.backlog).toBeGreaterThan(0)
        expect(backlogB.backlog + backlogB.retry_queue).toBe(0)
        const rssOutage = rssMiB(pid)

        // Back: the backlog drains, every event exactly once.
        const statsBefore = await client(env.a.client.stats())
        await client(env.a.client.setFaults({ down: false }))
        const back = Date.now()
        const drained = await waitFor(
          async () => (await storedAt(env.a, [...keys])).delivered === keys.size,
          90_000,
          250
        )
        if (!drained) console.error(gw.output().slice(-4000))
        expect(drained).toBe(true)
        const drainMs = Date.now() - back
        await sleep(500)
        const once = await storedAt(env.a, [...keys])
        const resends = (await client(env.a.client.stats())).duplicates - statsBefore.duplicates
        expect(once).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
        expect(resends).toBe(0)
        expect(await storedAt(env.b, [...keys])).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
        const after = (await adminGet(gw.url, "/v1/explorer/health")).destinations as Array<any>
        const drainedA = after.find((d) => d.destination === "amplitude")
        expect(drainedA.backlog + drainedA.retry_queue).toBe(0)
        clearInterval(sampler)
        const rssEnd = rssMiB(pid)
        rssPeak = Math.max(rssPeak, rssEnd)
        console.log(
          [
            `[fault] long outage: ${N} events sent (${keys.size} distinct dedup keys) in ${ingestMs} ms ` +
            `(${Math.round(N / (ingestMs / 1000))} events/s; request p50 ${latencies[latencies.length >> 1]} ms, ` +
            `max ${latencies[latencies.length - 1]} ms)`,
            `[fault] healthy destination had all ${keys.size} after ${bMs} ms; failing one had 0`,
            `[fault] drained in ${drainMs} ms after it came back: lost 0, duplicates stored 0, resends 0`,
            `[fault] gateway RSS MiB: start ${rssStart}, during outage ${rssOutage}, peak ${rssPeak}, end ${rssEnd}`
          ].join("\n")
        )
        expect(rssPeak).toBeLessThan(2 * rssStart + 200)
      } finally {
        clearInterval(sampler)
        await client(env.a.client.setFaults({ down: false }))
      }
    },
    240_000
  )
})
