/**
 * PostgreSQL restart during ingest: a TCP proxy between a `tracklayer serve` process and its (private-schema) store is
 * cut for a few seconds while clients post batches in a loop — what the gateway sees when its database restarts. Every
 * request is answered — 503 with `Retry-After` and a JSON error while the store is away (or 200), never a 500, never a
 * hang — `/healthz` says the store is down, and once the proxy forwards again the same process recovers by itself:
 * later requests get 200, and every event the clients sent (those answered 503 resent after `Retry-After`) reaches both
 * Amplitude sandboxes exactly once by dedup key. The machine's shared PostgreSQL server is never touched.
 */
import { Generator } from "@tracklayer/testkit"
import { expect, it } from "vitest"
import {
  client,
  CONFIG_ARGS,
  dedupKey,
  exactlyOnce,
  type FaultEnv,
  postEvents,
  setUp,
  sleep
} from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js"

/** A request that takes longer than this counts as a hang (the client gives up and the test fails). */
const HANG_BOUND_MS = 20_000
const BATCH = 50
const CLIENTS = 2
const BEFORE_MS = 2_500
const CUT_MS = 4_000
const AFTER_MS = 3_000

interface Sent {
  readonly started: number
  readonly ended: number
  readonly status: number | undefined
  readonly retryAfter: string | null
  readonly json: any
  readonly error: string | undefined
}

/** One `GET /healthz`, bounded like the ingest requests. */
const health = async (url: string): Promise<Sent> => {
  const started = Date.now()
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(HANG_BOUND_MS) })
    const text = await res.text()
    let json: unknown = text
    try {
      json = JSON.parse(text)
    } catch { /* not JSON */ }
    return {
      started,
      ended: Date.now(),
      status: res.status,
      retryAfter: res.headers.get("retry-after"),
      json,
      error: undefined
    }
  } catch (e) {
    return { started, ended: Date.now(), status: undefined, retryAfter: null, json: undefined, error: String(e) }
  }
}

it.skipIf(!process.env["DATABASE_URL"])(
  "PostgreSQL restart during ingest: clients get 503 with Retry-After, not a hang or a 500 loop; the gateway recovers by itself (PostgreSQL only: PGlite is in-process, there is no connection to cut)",
  async () => {
    let env: FaultEnv | undefined
    let proxy: TcpProxy | undefined
    let gw: Gateway | undefined
    try {
      env = await setUp()
      const direct = new URL(env.pgUrl!)
      proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) })
      // The same database and schema (search_path in `options`), reached through the proxy.
      const proxied = new URL(env.pgUrl!)
      proxied.hostname = "127.0.0.1"
      proxied.port = String(proxy.port)
      expect(proxied.searchParams.get("options")).toBe(direct.searchParams.get("options"))
      gw = await startGateway(CONFIG_ARGS, { ...env.env, DATABASE_URL: proxied.toString() }, await freePort())
      const pid = gw.process.pid
      expect(proxy.open()).toBeGreaterThan(0)

      const events = Generator.generate({ people: 3000, seed: 47, now: Date.now() }).slice(0, 30_000) as Array<
        Record<string, any>
      >
      const queue: Array<Array<Record<string, any>>> = []
      for (let i = 0; i < events.length; i += BATCH) queue.push(events.slice(i, i + BATCH))
      const sent: Array<Sent> = []
      const delivered: Array<Record<string, any>> = []
      const firstAnswers = new Map<string, string>()
      const resentAnswers: Array<string> = []
      let stop = false

      // A client: posts the next batch; on 503 waits `Retry-After` seconds and sends the same batch again.
      const runClient = async () => {
        while (!stop) {
          const batch = queue.shift()
          if (batch === undefined) return
          let attempt = 0
          for (;;) {
            const started = Date.now()
            const a = await postEvents(gw!.url, batch, HANG_BOUND_MS)
            sent.push({ started, ended: Date.now(), ...a })
            attempt += 1
            if (a.status === 200) {
              for (const r of a.json.results as Array<{ event_id: string; status: string }>) {
                if (attempt === 1) firstAnswers.set(r.event_id, r.status)
                else resentAnswers.push(r.status)
              }
              delivered.push(...batch)
              break
            }
            if (a.status !== 503) return // recorded; the assertions below fail on it
            await sleep(Number(a.retryAfter) * 1000)
          }
        }
      }
      const clients = Array.from({ length: CLIENTS }, runClient)

      await sleep(BEFORE_MS)
      const okBeforeCut = sent.filter((s) => s.status === 200).length
      const cutAt = Date.now()
      proxy.cut()
      // `/healthz` while the store is away.
      await sleep(500)
      const healthDuringCut = await health(gw.url)
      await sleep(CUT_MS - (Date.now() - cutAt))
      const restoredAt = Date.now()
      proxy.restore()
      // Recovery: `/healthz` answers 200 again, polled every 100 ms.
      let healthyAt: number | undefined
      while (healthyAt === undefined && Date.now() - restoredAt < 60_000) {
        const h = await health(gw.url)
        if (h.status === 200) healthyAt = h.ended
        else await sleep(100)
      }
      await sleep(AFTER_MS)
      stop = true
      await Promise.all(clients)

      const overlapsCut = (s: Sent) => s.started < restoredAt && s.ended > cutAt
      const duringCut = sent.filter(overlapsCut)
      const firstOkAfter = sent.filter((s) => s.started >= restoredAt && s.status === 200).map((s) => s.ended)
      const statuses = new Map<string, number>()
      for (const s of sent) {
        const k = String(s.status ?? s.error)
        statuses.set(k, (statuses.get(k) ?? 0) + 1)
      }
      const unavailable = sent.filter((s) => s.status === 503)
      const maxCutMs = Math.max(...duringCut.map((s) => s.ended - s.started))

      // Every request got an HTTP answer (no hang, no reset): 200 or 503, never a 500.
      if (sent.some((s) => s.status !== 200 && s.status !== 503)) console.error(gw.output().slice(-4000))
      expect(sent.filter((s) => s.status !== 200 && s.status !== 503).map((s) => s.status ?? s.error)).toEqual([])
      expect(okBeforeCut).toBeGreaterThan(0)
      // The cut was felt: requests in it were answered 503 with Retry-After and a JSON error.
      expect(unavailable.length).toBeGreaterThan(0)
      expect(duringCut.filter((s) => s.status === 503).length).toBeGreaterThan(0)
      for (const s of unavailable) {
        expect(s.retryAfter).toBe("1")
        expect(s.json).toEqual({
          error: { code: "store_unavailable", message: "the event store is unavailable; retry later" }
        })
      }
      // No 503 outside the cut, give or take the requests under way when it ended.
      expect(unavailable.filter((s) => s.started > (healthyAt ?? Infinity))).toEqual([])
      // /healthz reports the store down while cut, and up again later.
      expect(healthDuringCut).toMatchObject({
        status: 503,
        retryAfter: "1",
        json: { error: { code: "store_unavailable", message: "the event store is unavailable; retry later" } }
      })
      expect(healthyAt).toBeDefined()
      expect((await health(gw.url)).json).toEqual({ status: "ok", store: "postgres" })
      // Recovered without a restart: the same process answers 200 to requests sent after the restore.
      expect(gw.process.exitCode).toBe(null)
      expect(gw.process.pid).toBe(pid)
      expect(firstOkAfter.length).toBeGreaterThan(0)
      expect(proxy.refused()).toBeGreaterThan(0)

      // Every answer to an event was accepted (or duplicate, for a repeated business key or a batch whose 503 came
      // after it was stored); every event sent reaches both destinations exactly once.
      const answers = [...firstAnswers.values(), ...resentAnswers]
      expect(answers.filter((s) => s !== "accepted" && s !== "duplicate")).toEqual([])
      const keys = new Set(delivered.map(dedupKey))
      const done = await waitFor(
        async () =>
          exactlyOnce(await client(env!.a.client.events()), keys).delivered === keys.size &&
          exactlyOnce(await client(env!.b.client.events()), keys).delivered === keys.size,
        90_000,
        250
      )
      if (!done) console.error(gw.output().slice(-4000))
      expect(done).toBe(true)
      await sleep(500)
      expect(exactlyOnce(await client(env.a.client.events()), keys)).toEqual({
        delivered: keys.size,
        lost: 0,
        duplicates: 0
      })
      expect(exactlyOnce(await client(env.b.client.events()), keys)).toEqual({
        delivered: keys.size,
        lost: 0,
        duplicates: 0
      })

      const storeErrors = gw.output().split("\n").filter((l) => l.includes("store failure")).length
      console.log(
        [
          `[pg-restart] ${sent.length} ingest requests of ${BATCH} events from ${CLIENTS} clients: ` +
          [...statuses].map(([k, n]) => `${n}× ${k}`).join(", ") + `; ${okBeforeCut} answered 200 before the cut`,
          `[pg-restart] cut ${restoredAt - cutAt} ms: ${duringCut.length} requests overlapped it ` +
          `(${duringCut.filter((s) => s.status === 503).length}× 503, ${
            duringCut.filter((s) => s.status === 200).length
          }× 200), max latency ${maxCutMs} ms (hang bound ${HANG_BOUND_MS} ms); ${proxy.refused()} store ` +
          `connections refused; /healthz during the cut: ${healthDuringCut.status} in ${
            healthDuringCut.ended - healthDuringCut.started
          } ms`,
          `[pg-restart] recovery: /healthz 200 ${healthyAt! - restoredAt} ms after the restore, first ingest 200 ` +
          `${Math.min(...firstOkAfter) - restoredAt} ms after (clients wait Retry-After 1 s after a 503); ` +
          `${storeErrors} "store failure" log lines`,
          `[pg-restart] ${delivered.length} events sent (${keys.size} dedup keys), ${resentAnswers.length} answers ` +
          `to resent events (${
            resentAnswers.filter((s) => s === "duplicate").length
          } duplicate: stored before their 503 or a ` +
          `repeated business key); at both sandboxes: lost 0, duplicates 0`
        ].join("\n")
      )
    } finally {
      if (gw !== undefined) await kill9(gw)
      if (proxy !== undefined) await proxy.close()
      if (env !== undefined) await env.close()
    }
  },
  240_000
)
