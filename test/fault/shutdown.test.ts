/**
 * Graceful shutdown: SIGTERM to a `tracklayer serve` process in the middle of ingest and delivery. Requests already
 * sent are answered (no connection reset), new connections are refused, the process exits 0 within a bound and
 * releases its leases, and after a restart on the same store every accepted event reaches both destinations exactly
 * once — with no batch sent twice, since the batches in flight at SIGTERM were finished and recorded.
 */
import { PgClient } from "@effect/sql-pg"
import { Database } from "@tracklayer/core"
import { Generator } from "@tracklayer/testkit"
import { Effect, Layer, Redacted } from "effect"
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, expect, it } from "vitest"
import {
  client,
  CONFIG_ARGS,
  dedupKey,
  exactlyOnce,
  type FaultEnv,
  postEvents,
  setUp,
  WRITE
} from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

let env: FaultEnv
const gateways: Array<Gateway> = []

beforeAll(async () => {
  env = await setUp()
}, 60_000)

afterAll(async () => {
  for (const g of gateways) await kill9(g)
  if (env !== undefined) await env.close()
})

/** A POST whose body is fully written before it resolves `sent`; `answer` settles with the status or the error code. */
const inFlight = (url: string, events: ReadonlyArray<unknown>) => {
  const { hostname, port } = new URL(url)
  const body = JSON.stringify({ events })
  let markSent: () => void
  const sent = new Promise<void>((r) => (markSent = r))
  const answer = new Promise<{ status?: number; json?: any; error?: string }>((resolve) => {
    const req = http.request(
      {
        host: hostname,
        port,
        path: "/v1/events",
        method: "POST",
        agent: false,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          authorization: `Bearer ${WRITE}`
        }
      },
      (res) => {
        let text = ""
        res.on("data", (d) => (text += d))
        res.on("end", () => resolve({ status: res.statusCode!, json: JSON.parse(text) }))
        res.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
      }
    )
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
    req.end(body, () => markSent())
  })
  return { sent, answer }
}

/** Connects to `port`: `connected`, or the error code (`ECONNREFUSED`). */
const tryConnect = (port: number) =>
  new Promise<string>((resolve) => {
    const s = net.connect(port, "127.0.0.1")
    s.once("connect", () => (s.destroy(), resolve("connected")))
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
  })

const exited = (g: Gateway, timeoutMs: number) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((resolve) => {
    const started = Date.now()
    if (g.process.exitCode !== null) return resolve({ code: g.process.exitCode, signal: null, ms: 0 })
    const timer = setTimeout(() => resolve({ code: null, signal: null, ms: Date.now() - started }), timeoutMs)
    g.process.once("exit", (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, ms: Date.now() - started })
    })
  })

/** Rows of `tl_leases` in the gateway's store (the gateway is stopped: PGlite's directory is free). */
const leaseRows = async () => {
  const store = env.pgUrl !== undefined
    ? PgClient.layer({ url: Redacted.make(env.pgUrl), maxConnections: 1 })
    : Database.layerPglite(env.storeEnv["TRACKLAYER_DATA_DIR"]!)
  return Effect.runPromise(
    Effect.flatMap(PgClient.PgClient, (sql) => sql<{ name: string; owner: string }>`SELECT name, owner FROM tl_leases`)
      .pipe(Effect.provide(Layer.orDie(store)), Effect.scoped)
  )
}

it(
  "SIGTERM during ingest and delivery: in-flight requests answered, new connections refused, exit 0, nothing lost or sent twice after restart",
  async () => {
    const events = Generator.generate({ people: 1500, seed: 31, now: Date.now() }).slice(0, 4000) as Array<
      Record<string, any>
    >
    expect(events.length).toBe(4000)
    const port = await freePort()
    // Slow answers at `amplitude` keep its batches in flight when the signal comes.
    await client(env.a.client.setFaults({ delayMs: 400 }))
    const first = await startGateway(CONFIG_ARGS, env.env, port)
    gateways.push(first)

    // Some events first, so delivery is busy at SIGTERM.
    for (let i = 0; i < 1500; i += 500) expect((await postEvents(first.url, events.slice(i, i + 500))).status).toBe(200)
    expect(await waitFor(async () => (await client(env.a.client.stats())).requests > 0, 20_000, 20)).toBe(true)

    // Five requests of 500 events on their own connections, fully sent, then SIGTERM.
    const pending = [0, 1, 2, 3, 4].map((k) => inFlight(first.url, events.slice(1500 + k * 500, 2000 + k * 500)))
    await Promise.all(pending.map((p) => p.sent))
    const signalledAt = Date.now()
    first.process.kill("SIGTERM")
    // The listener closes as soon as the connections already accepted by the kernel are taken in (a busy event
    // loop may take a moment); from then on new connections are refused while the process still drains.
    let lateConnection = await tryConnect(port)
    while (lateConnection === "connected" && Date.now() - signalledAt < 5_000) {
      await new Promise((r) => setTimeout(r, 20))
      lateConnection = await tryConnect(port)
    }
    const refusedMs = Date.now() - signalledAt
    const aliveWhenRefused = first.process.exitCode === null
    const answers = await Promise.all(pending.map((p) => p.answer))
    const answeredMs = Date.now() - signalledAt
    const exit = await exited(first, 30_000)
    const exitMs = Date.now() - signalledAt

    // Every request sent before the signal got its full answer.
    expect(answers.map((a) => a.error)).toEqual([undefined, undefined, undefined, undefined, undefined])
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200])
    for (const a of answers) {
      expect(a.json.results.filter((r: any) => r.status !== "accepted" && r.status !== "duplicate")).toEqual([])
    }
    expect(lateConnection).toBe("ECONNREFUSED")
    if (exit.code !== 0) console.error(first.output().slice(-4000))
    expect(exit).toMatchObject({ code: 0, signal: null })
    // Leases are released, not left to expire.
    expect(await leaseRows()).toEqual([])
    const atStop = {
      a: (await client(env.a.client.stats())).events_stored,
      b: (await client(env.b.client.stats())).events_stored
    }

    // Restart on the same store: everything accepted arrives once, and no batch was sent twice.
    await client(env.a.client.setFaults({ delayMs: 0 }))
    const second = await startGateway(CONFIG_ARGS, env.env, port)
    gateways.push(second)
    const keys = new Set(events.map(dedupKey))
    const done = await waitFor(
      async () =>
        exactlyOnce(await client(env.a.client.events()), keys).delivered === keys.size &&
        exactlyOnce(await client(env.b.client.events()), keys).delivered === keys.size,
      60_000,
      250
    )
    if (!done) console.error(second.output().slice(-4000))
    expect(done).toBe(true)
    await new Promise((r) => setTimeout(r, 500))
    const a = exactlyOnce(await client(env.a.client.events()), keys)
    const b = exactlyOnce(await client(env.b.client.events()), keys)
    expect(a).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    expect(b).toEqual({ delivered: keys.size, lost: 0, duplicates: 0 })
    const resends = [(await client(env.a.client.stats())).duplicates, (await client(env.b.client.stats())).duplicates]
    expect(resends).toEqual([0, 0])

    second.process.kill("SIGTERM")
    const secondExit = await exited(second, 30_000)
    expect(secondExit).toMatchObject({ code: 0, signal: null })
    console.log(
      [
        `[shutdown] SIGTERM with 5 requests (2,500 events) in flight: all answered 200 within ${answeredMs} ms; ` +
        `new connections refused ${refusedMs} ms after the signal: ${lateConnection} (process still running: ${aliveWhenRefused})`,
        `[shutdown] exit code ${exit.code} after ${exitMs} ms; leases left: 0; stored at stop: amplitude ` +
        `${atStop.a}, amplitude_b ${atStop.b}`,
        `[shutdown] after restart: ${events.length} events sent (${keys.size} dedup keys), lost 0, duplicates stored 0, ` +
        `batches resent 0; idle shutdown took ${secondExit.ms} ms`
      ].join("\n")
    )
  },
  150_000
)
