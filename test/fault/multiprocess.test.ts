/**
 * Several `tracklayer serve` processes on one PostgreSQL schema (docs/operations.md, "Several gateway processes on
 * one PostgreSQL"): ingest is spread round-robin over all of them, one is killed with SIGKILL in the middle of the
 * run, and the survivors take its leases over once they expire. Every accepted event reaches each Amplitude sandbox
 * exactly once by its dedup key; in `tl_delivery_records` each destination's records change owner only where a lease
 * changed hands (no A, B, A while both live), and their time ranges do not overlap; every survivor's
 * `GET /v1/destinations` names the same single lease holder per destination. PostgreSQL only: a PGlite data
 * directory serves one process.
 */
import { PgClient } from "@effect/sql-pg"
import { Generator } from "@tracklayer/testkit"
import { Effect, Layer, ManagedRuntime, Redacted } from "effect"
import { describe, expect, it } from "vitest"
import { adminGet, client, dedupKey, exactlyOnce, type FaultEnv, postEvents, setUp, sleep } from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { mulberry32 } from "../support/prng.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

const ARGS = ["--config", "test/support/fault-lease.config.ts"]
/** Long enough that a live process on this loaded machine renews in time; the takeover waits for it. */
const LEASE_TTL_MS = 3000
const BATCH = 100
const onPostgres = process.env["DATABASE_URL"] !== undefined && process.env["DATABASE_URL"] !== ""

/** The pid in an owner id `host:pid:random`. */
const pidOf = (owner: string) => Number(owner.split(":").at(-2))

const alive = (g: Gateway) => g.process.exitCode === null && g.process.signalCode === null

interface RecordRow {
  readonly id: string
  readonly destination: string
  readonly position: string
  readonly outcome: string
  readonly owner: string
  readonly at: Date
}

const scenario = async (processes: number, seed: number) => {
  const env: FaultEnv = await setUp()
  const gateways: Array<Gateway> = []
  const db = ManagedRuntime.make(
    Layer.orDie(PgClient.layer({ url: Redacted.make(env.pgUrl!), maxConnections: 1 }))
  )
  const query = <A extends object>(f: (sql: PgClient.PgClient) => Effect.Effect<ReadonlyArray<A>, unknown>) =>
    db.runPromise(Effect.flatMap(PgClient.PgClient, f).pipe(Effect.orDie))
  const leases = () =>
    query((sql) =>
      sql<{ name: string; owner: string; acquired_at: Date }>`SELECT name, owner, acquired_at FROM tl_leases`
    )
  try {
    const plan = mulberry32(seed)
    const between = (lo: number, hi: number) => lo + Math.floor(plan() * (hi - lo + 1))
    const events = Generator.generate({ people: 1100, seed, now: Date.now() }).slice(0, 3000) as Array<
      Record<string, any>
    >
    expect(events.length).toBe(3000)
    const batches: Array<Array<Record<string, any>>> = []
    for (let i = 0; i < events.length; i += BATCH) batches.push(events.slice(i, i + BATCH))
    // Slow answers keep delivery requests in flight when the kill comes.
    await client(env.a.client.setFaults({ delayMs: 100 }))
    await client(env.b.client.setFaults({ delayMs: 40 }))
    const envWithTtl = { ...env.env, TL_FAULT_LEASE_TTL_MS: String(LEASE_TTL_MS) }
    const ports = await Promise.all(Array.from({ length: processes }, () => freePort()))
    // All start at once: migrations lock their table, leases go to whoever asks first.
    gateways.push(...await Promise.all(ports.map((p) => startGateway(ARGS, envWithTtl, p))))
    const pids = gateways.map((g) => g.process.pid!)
    expect(await waitFor(async () => (await leases()).length === 3, 30_000, 100)).toBe(true)

    // The client: three workers, each request to the next process round-robin; a process that gives no answer is
    // taken out of the rotation (as a load balancer's health check would) and the same events go to the next one.
    const rotation = gateways.map((g) => g.url)
    let turn = 0
    const queue = batches.map((_, i) => i)
    const answered = new Map<string, string>()
    const unexpected: Array<string> = []
    const stats = { requests: 0, noAnswer: 0, unavailable: 0 }
    const perProcess = new Map<string, number>()
    let answeredBatches = 0
    const worker = async (k: number) => {
      const pauses = mulberry32(seed * 10 + k)
      while (queue.length > 0) {
        const b = queue.shift()!
        const url = rotation[turn++ % rotation.length]!
        stats.requests++
        const res = await postEvents(url, batches[b]!, 10_000)
        if (res.error !== undefined || res.status === 503) {
          if (res.error !== undefined) {
            stats.noAnswer++
            const i = rotation.indexOf(url)
            if (i >= 0 && rotation.length > 1) rotation.splice(i, 1)
          } else {
            stats.unavailable++
          }
          queue.unshift(b)
          await sleep(50)
          continue
        }
        if (res.status !== 200) {
          unexpected.push(`${res.status}: ${JSON.stringify(res.json).slice(0, 300)}`)
          continue
        }
        perProcess.set(url, (perProcess.get(url) ?? 0) + 1)
        answeredBatches++
        for (const r of res.json.results as Array<{ event_id: string; status: string }>) {
          answered.set(r.event_id, r.status)
        }
        await sleep(20 + Math.floor(pauses() * 100))
      }
    }
    const workers = [worker(0), worker(1), worker(2)]

    // The victim holds delivery:amplitude (the slow destination) and has recorded deliveries there, so the takeover
    // shows in the records; it is killed while ingest goes on and amplitude's backlog is being sent.
    const killAfter = between(8, 14)
    const amplitudeRecords = async () =>
      (await query((sql) =>
        sql<{ n: number }>`SELECT count(*)::int AS n FROM tl_delivery_records WHERE destination = 'amplitude'`
      ))[0]!.n
    const ready = await waitFor(
      async () => answeredBatches >= killAfter && (await amplitudeRecords()) > 0,
      60_000,
      20
    )
    expect(ready).toBe(true)
    // …right after its next request to amplitude arrives (answered after 100 ms, recorded after the step).
    const sentBefore = (await client(env.a.client.stats())).requests
    const sending = await waitFor(async () => (await client(env.a.client.stats())).requests > sentBefore, 30_000, 10)
    expect(sending).toBe(true)
    const before = await leases()
    const victimOwner = before.find((l) => l.name === "delivery:amplitude")!.owner
    const victim = gateways.find((g) => g.process.pid === pidOf(victimOwner))!
    expect(victim).toBeDefined()
    const victimLeases = before.filter((l) => l.owner === victimOwner).map((l) => l.name).sort()
    await sleep(between(0, 50))
    const killedAt = Date.now()
    await kill9(victim)
    const survivors = gateways.filter(alive)
    expect(survivors.length).toBe(processes - 1)

    // Takeover: every lease the victim held gets a live owner.
    const takenOver = await waitFor(
      async () => (await leases()).every((l) => l.owner !== victimOwner),
      30_000,
      50
    )
    expect(takenOver).toBe(true)
    const after = await leases()
    const takeovers = victimLeases.map((name) => {
      const l = after.find((x) => x.name === name)!
      return { name, ms: l.acquired_at.getTime() - killedAt, pid: pidOf(l.owner) }
    })
    for (const t of takeovers) expect(survivors.map((g) => g.process.pid)).toContain(t.pid)

    await Promise.all(workers)
    expect(unexpected).toEqual([])
    expect(answered.size).toBe(events.length)
    const statuses = [...answered.values()]
    expect(statuses.filter((s) => s !== "accepted" && s !== "duplicate")).toEqual([])
    const keys = new Set(events.map(dedupKey))
    const done = await waitFor(
      async () =>
        exactlyOnce(await client(env.a.client.events()), keys).delivered === keys.size &&
        exactlyOnce(await client(env.b.client.events()), keys).delivered === keys.size,
      60_000,
      250
    )
    if (!done) { for (const g of survivors) console.error(g.output().slice(-3000)) }
    expect(done).toBe(true)
    await sleep(500)
    const a = exactlyOnce(await client(env.a.client.events()), keys)
    const b = exactlyOnce(await client(env.b.client.events()), keys)
    expect(a).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    expect(b).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    expect((await client(env.a.client.events())).length).toBe(keys.size)
    expect((await client(env.b.client.events())).length).toBe(keys.size)

    // Every survivor names the same one holder per destination, a survivor, and exactly one of them is it.
    const views = await Promise.all(survivors.map((g) => adminGet(g.url, "/v1/destinations")))
    for (const destination of ["amplitude", "amplitude_b"]) {
      const rows = views.map((v) => (v.destinations as Array<any>).find((d) => d.destination === destination))
      const holders = new Set(rows.map((r) => r.leaseHolder))
      expect(holders.size).toBe(1)
      const holder = [...holders][0] as string
      expect(survivors.map((g) => g.process.pid)).toContain(pidOf(holder))
      expect(rows.map((r) => r.thisProcess)).toEqual(survivors.map((g) => g.process.pid === pidOf(holder)))
    }

    // The delivery records: per destination, in id order, one run per owner; runs do not overlap in time; a change
    // of owner is the takeover after the kill, or follows a lease its holder logged as lost (late renewal).
    const records = await query((sql) =>
      sql<RecordRow>`SELECT id::text AS id, destination, position::text AS position, outcome, owner, at
        FROM tl_delivery_records ORDER BY destination, tl_delivery_records.id`
    )
    const logsLost = (dest: string, pid: number) =>
      gateways.find((g) => g.process.pid === pid)!.output().includes(`lease delivery:${dest}: lost`)
    const runsOf: Record<string, Array<{ owner: string; n: number; first: Date; last: Date }>> = {}
    for (const destination of ["amplitude", "amplitude_b"]) {
      const runs: Array<{ owner: string; n: number; first: Date; last: Date }> = []
      for (const r of records.filter((x) => x.destination === destination)) {
        const last = runs.at(-1)
        if (last !== undefined && last.owner === r.owner) {
          last.n++
          last.last = r.at
        } else {
          runs.push({ owner: r.owner, n: 1, first: r.at, last: r.at })
        }
      }
      runsOf[destination] = runs
      // Each event is recorded done (accepted, or dropped as a business-key duplicate) exactly once.
      const finals = records.filter((x) =>
        x.destination === destination && (x.outcome === "accepted" || x.outcome === "dropped")
      )
      expect(finals.length).toBe(events.length)
      expect(new Set(finals.map((x) => x.position)).size).toBe(events.length)
      // No owner comes back after another took over (no A, B, A).
      expect(new Set(runs.map((r) => r.owner)).size).toBe(runs.length)
      for (let i = 1; i < runs.length; i++) {
        expect(runs[i - 1]!.last.getTime()).toBeLessThanOrEqual(runs[i]!.first.getTime())
        const from = runs[i - 1]!.owner
        expect({ destination, from, takeover: from === victimOwner || logsLost(destination, pidOf(from)) })
          .toEqual({ destination, from, takeover: true })
      }
      // The victim wrote nothing after its death.
      for (const r of runs.filter((x) => x.owner === victimOwner)) {
        expect(r.last.getTime()).toBeLessThanOrEqual(killedAt)
      }
    }
    expect(runsOf["amplitude"]!.map((r) => r.owner)[0]).toBe(victimOwner)
    expect(runsOf["amplitude"]!.length).toBeGreaterThanOrEqual(2)

    const end = { a: await client(env.a.client.stats()), b: await client(env.b.client.stats()) }
    const nameOfPid = (pid: number | undefined) => `p${pids.indexOf(pid!) + 1}`
    const name = (owner: string) => nameOfPid(pidOf(owner))
    console.log(
      [
        `[multiprocess] ${processes} processes on one PostgreSQL schema, leaseTtl ${LEASE_TTL_MS} ms, seed ${seed}`,
        `[multiprocess] ${events.length} events (${keys.size} dedup keys) in ${batches.length} batches, round-robin: ` +
        `${gateways.map((g) => `${nameOfPid(g.process.pid)} ${perProcess.get(g.url) ?? 0}`).join(", ")} ` +
        `batches answered; ${stats.noAnswer} requests cut off by the kill, ${stats.unavailable} answered 503, resent`,
        `[multiprocess] killed ${name(victimOwner)} (kill -9) after ${killAfter}+ batches, holding ` +
        `${victimLeases.join(", ")}; taken over by ` +
        `${takeovers.map((t) => `${t.name} → ${nameOfPid(t.pid)} after ${t.ms} ms`).join(", ")}`,
        `[multiprocess] amplitude: ${a.delivered} stored, lost 0, duplicates 0, resends absorbed ${end.a.duplicates}; ` +
        `amplitude_b: ${b.delivered} stored, lost 0, duplicates 0, resends absorbed ${end.b.duplicates}`,
        ...Object.entries(runsOf).map(([d, runs]) =>
          `[multiprocess] ${d} records by owner in id order: ${
            runs.map((r) =>
              `${name(r.owner)} ×${r.n} (${r.first.toISOString().slice(11, 23)}–` +
              `${r.last.toISOString().slice(11, 23)})`
            ).join(" → ")
          }`
        ),
        `[multiprocess] GET /v1/destinations on ${survivors.length} survivors: one lease holder per destination (` +
        `${views[0].destinations.map((d: any) => `${d.destination} ${name(d.leaseHolder)}`).join(", ")})`
      ].join("\n")
    )
  } finally {
    for (const g of gateways) if (alive(g)) await kill9(g)
    await db.dispose()
    await env.close()
  }
}

describe("several gateway processes on one PostgreSQL", () => {
  it.skipIf(!onPostgres)(
    "two processes, one killed mid-run: the survivor takes its leases over, every event once (PostgreSQL only: a PGlite directory serves one process)",
    () => scenario(2, 23),
    120_000
  )
  it.skipIf(!onPostgres)(
    "three processes, one killed mid-run: the survivors take its leases over, every event once (PostgreSQL only: a PGlite directory serves one process)",
    () => scenario(3, 29),
    120_000
  )
})
