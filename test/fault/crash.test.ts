/**
 * `kill -9` at random points: one `tracklayer serve` process on the store is killed again and again — while a
 * request is being ingested, while a batch is in flight to a destination, or at a random time — and restarted on the
 * same store. The client resends every request that got no answer (same events, same event ids), as a real client
 * would. At the end every event the gateway answered `accepted` or `duplicate` is stored exactly once at each
 * Amplitude sandbox by its dedup key. What a killed process sent but had not recorded yet — a delivery step is recorded
 * once, after all its requests (up to 2,000 events) — is sent again by the next one and absorbed by `insert_id`
 * (counted and printed, allowed). Restarts wait for no lease: on PGlite a new process clears its dead predecessor's
 * leases (so the default 15 s `leaseTtl` is kept there), and on PostgreSQL they expire after a short `leaseTtl`
 * (2 s), well before a restart is up.
 * The kill plan comes from a seeded PRNG, so every run makes the same choices (what they hit varies with timing).
 */
import { Generator } from "@tracklayer/testkit"
import { afterAll, beforeAll, expect, it } from "vitest"
import { client, dedupKey, exactlyOnce, type FaultEnv, postEvents, setUp, sleep } from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { mulberry32 } from "../support/prng.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

const ARGS = ["--config", "test/support/fault-lease.config.ts"]
const SEED = 0x7c0ffee
const CYCLES = 6
const BATCH = 100

let env: FaultEnv
const gateways: Array<Gateway> = []

beforeAll(async () => {
  env = await setUp()
}, 60_000)

afterAll(async () => {
  for (const g of gateways) if (g.process.exitCode === null && g.process.signalCode === null) await kill9(g)
  if (env !== undefined) await env.close()
})

type Mode = "ingest" | "delivery" | "time"

it(
  `kill -9 at ${CYCLES} random points during ingest and delivery: every accepted event stored exactly once at each destination`,
  async () => {
    // One stream for the kill plan, one for the client's pauses: the plan does not depend on how many requests ran.
    const plan = mulberry32(SEED)
    const pauses = mulberry32(SEED + 1)
    const between = (lo: number, hi: number, rand = plan) => lo + Math.floor(rand() * (hi - lo + 1))
    const events = Generator.generate({ people: 1100, seed: 17, now: Date.now() }).slice(0, 3000) as Array<
      Record<string, any>
    >
    expect(events.length).toBe(3000)
    const batches: Array<Array<Record<string, any>>> = []
    for (let i = 0; i < events.length; i += BATCH) batches.push(events.slice(i, i + BATCH))
    // Slow answers keep delivery requests in flight when the kill comes.
    await client(env.a.client.setFaults({ delayMs: 100 }))
    await client(env.b.client.setFaults({ delayMs: 40 }))
    const port = await freePort()
    const leaseTtlMs = env.pgUrl !== undefined ? 2000 : 15_000
    const envWithTtl = { ...env.env, TL_FAULT_LEASE_TTL_MS: String(leaseTtlMs) }

    // The client: two workers take batches from a queue and resend a batch until it gets an HTTP answer.
    const queue: Array<number> = []
    const answered = new Map<string, string>()
    const stats = { requests: 0, refused: 0, transportErrors: 0, unavailable: 0, answersLost: 0 }
    const unexpected: Array<string> = []
    let started = 0
    let inFlight = 0
    let finished = false
    const worker = async () => {
      while (!finished) {
        const b = queue.shift()
        if (b === undefined) {
          await sleep(20)
          continue
        }
        started++
        stats.requests++
        inFlight++
        const res = await postEvents(`http://127.0.0.1:${port}`, batches[b]!, 10_000)
        inFlight--
        if (res.error !== undefined || res.status === 503) {
          // No answer (the process died, or is not up yet), or the store was not ready: send the same events again.
          if (res.error === "ECONNREFUSED") stats.refused++
          else if (res.error !== undefined) stats.transportErrors++
          else stats.unavailable++
          queue.unshift(b)
          await sleep(100)
          continue
        }
        if (res.status !== 200) {
          unexpected.push(`${res.status}: ${JSON.stringify(res.json).slice(0, 300)}`)
          continue
        }
        for (const r of res.json.results as Array<{ event_id: string; status: string }>) {
          answered.set(r.event_id, r.status)
        }
        await sleep(between(20, 120, pauses))
      }
    }
    const workers = [worker(), worker()]

    const stored = async () => ({
      a: await client(env.a.client.stats()),
      b: await client(env.b.client.stats())
    })
    const lines: Array<string> = []
    const restarts: Array<number> = []
    const perCycle = Math.ceil(batches.length / CYCLES)
    let gw = await startGateway(ARGS, envWithTtl, port)
    gateways.push(gw)
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      // Each kind of moment twice, at PRNG-chosen points.
      const mode: Mode = (["ingest", "delivery", "time"] as const)[cycle % 3]!
      // Each process lives a little while first (it takes its leases and resumes delivery), then this cycle's
      // batches are sent.
      await sleep(between(300, 800))
      for (let b = cycle * perCycle; b < Math.min(batches.length, (cycle + 1) * perCycle); b++) queue.push(b)
      const startedAt = started
      const before = await stored()
      let hit: string
      if (mode === "ingest") {
        // While a request is on the wire: right after the k-th request from now is sent.
        const k = between(1, 4)
        const ok = await waitFor(async () => started >= startedAt + k, 3_000, 5)
        await sleep(between(0, 40))
        hit = ok ? `ingest request ${k} from now in flight` : "no ingest request within 3 s"
      } else if (mode === "delivery") {
        // While a delivery request is in flight (the sandboxes answer after 100 ms / 40 ms).
        const r = between(2, 6)
        const ok = await waitFor(
          async () => {
            const s = await stored()
            return s.a.requests + s.b.requests >= before.a.requests + before.b.requests + r
          },
          3_000,
          10
        )
        await sleep(between(0, 60))
        hit = ok ? `delivery request ${r} from now sent` : "no delivery request within 3 s"
      } else {
        const ms = between(500, 2500)
        await sleep(ms)
        hit = `${ms} ms after start`
      }
      const requestsInFlight = inFlight
      await kill9(gw)
      const after = await stored()
      lines.push(
        `cycle ${cycle + 1}: kill -9 (${mode}: ${hit}; ${requestsInFlight} ingest requests in flight); stored so ` +
          `far amplitude ${after.a.events_stored}, amplitude_b ${after.b.events_stored}; events answered ` +
          `${answered.size}`
      )
      const restartAt = Date.now()
      gw = await startGateway(ARGS, envWithTtl, port)
      restarts.push(Date.now() - restartAt)
      gateways.push(gw)
    }

    // The last process runs to the end: every batch answered, every event delivered.
    const allAnswered = await waitFor(async () => queue.length === 0 && answered.size === events.length, 60_000, 50)
    finished = true
    await Promise.all(workers)
    expect(unexpected).toEqual([])
    expect(allAnswered).toBe(true)
    const statuses = [...answered.values()]
    expect(statuses.filter((s) => s !== "accepted" && s !== "duplicate")).toEqual([])
    // `duplicate` answers: a request committed before the kill whose answer was lost, sent again.
    stats.answersLost = statuses.filter((s) => s === "duplicate").length
    const keys = new Set(events.filter((e) => answered.has(e.event_id)).map(dedupKey))
    const drainStarted = Date.now()
    const done = await waitFor(
      async () =>
        exactlyOnce(await client(env.a.client.events()), keys).delivered === keys.size &&
        exactlyOnce(await client(env.b.client.events()), keys).delivered === keys.size,
      60_000,
      250
    )
    if (!done) console.error(gw.output().slice(-4000))
    expect(done).toBe(true)
    const drainMs = Date.now() - drainStarted
    await sleep(500)
    const a = exactlyOnce(await client(env.a.client.events()), keys)
    const b = exactlyOnce(await client(env.b.client.events()), keys)
    expect(a).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    expect(b).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    // The sandboxes store nothing else (no event outside the accepted set).
    expect((await client(env.a.client.events())).length).toBe(keys.size)
    expect((await client(env.b.client.events())).length).toBe(keys.size)
    const end = await stored()
    // A process that could not renew a lease in time (a loaded machine, a 2 s lease) loses it and takes it back:
    // the batch it was sending is sent again too.
    const leasesLost = gateways.reduce((n, g) => n + (g.output().match(/lease [^ ]+: lost/g)?.length ?? 0), 0)
    const backoffs = gateways.reduce((n, g) => n + (g.output().match(/backing off/g)?.length ?? 0), 0)
    console.log(
      [
        `[crash] store ${env.pgUrl !== undefined ? "PostgreSQL" : "PGlite"}; seed ${SEED}; leaseTtl ${leaseTtlMs} ms`,
        ...lines.map((p) => `[crash] ${p}`),
        `[crash] ${CYCLES} kills, ${CYCLES + 1} processes; ${events.length} events sent (${keys.size} dedup keys) in ` +
        `${batches.length} batches; ${stats.requests} requests: ${stats.transportErrors} cut off by a kill, ` +
        `${stats.refused} refused (process down), ${stats.unavailable} answered 503 (starting), all resent; ` +
        `${stats.answersLost} events answered duplicate on resend (stored before the kill, answer lost)`,
        `[crash] restarts took ${restarts.join(", ")} ms (until /healthz answered); leases lost by a live process ` +
        `(late renewal): ${leasesLost}; destination back-offs: ${backoffs}`,
        `[crash] amplitude: ${a.delivered} stored, lost 0, duplicates 0, resends absorbed by insert_id ` +
        `${end.a.duplicates}; amplitude_b: ${b.delivered} stored, lost 0, duplicates 0, resends absorbed ` +
        `${end.b.duplicates}; last process drained in ${drainMs} ms after the last answer`
      ].join("\n")
    )
  },
  180_000
)
