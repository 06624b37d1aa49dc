/**
 * Replay: a destination added after 5,000 events were stored receives through replay exactly the events live
 * delivery routes to it today (compared with an identical destination delivering live from the beginning), once
 * each, with the same dedup keys and payloads — also when the gateway is killed halfway through the replay and
 * restarted. Redrive re-sends dead letters after a fix.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { Generator, TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Option, Scope } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startHarness, waitFor } from "../support/harness.js"
import { BIN, freePort, kill9, ROOT, startGateway } from "../support/process.js"

const WRITE = "tl_replay_write_key_000001"
const ADMIN = "tl_replay_admin_key_000001"
const client = <A>(eff: Effect.Effect<A, never, import("@effect/platform").HttpClient.HttpClient>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici))

describe("replay to a destination added later", () => {
  let scope: Scope.CloseableScope
  const sb: Record<string, AmplitudeSandbox.Sandbox> = {}
  let storeEnv: Record<string, string>

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    for (const id of ["live", "later", "oracle"]) {
      sb[id] = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
    }
    const pgUrl = await Effect.runPromise(TestStore.databaseUrl)
    if (Option.isSome(pgUrl)) {
      storeEnv = {
        DATABASE_URL: (await Effect.runPromise(Scope.extend(TestStore.privateSchema(pgUrl.value), scope))).url
      }
    } else {
      storeEnv = { TRACKLAYER_DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), "tl-replay-")) }
    }
  }, 60_000)

  afterAll(async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    if (storeEnv?.TRACKLAYER_DATA_DIR) fs.rmSync(storeEnv.TRACKLAYER_DATA_DIR, { recursive: true, force: true })
  })

  it("delivers exactly what live delivery routes today, once each, across a kill -9 halfway", async () => {
    const env = (phase: 1 | 2) => ({
      ...storeEnv,
      TL_REPLAY_PHASE: String(phase),
      TRACKLAYER_WRITE_KEYS: WRITE,
      TRACKLAYER_ADMIN_KEY: ADMIN,
      TRACKLAYER_MASTER_KEY: "Q1bd3XyRVEv9Jc4zYjXgrbF1mVqTy4P8sMZ2m9Dp7aE=",
      ...Object.fromEntries(
        Object.entries(sb).flatMap(([id, s]) => [
          [`${id.toUpperCase()}_API_KEY`, s.apiKey],
          [`${id.toUpperCase()}_ENDPOINT`, s.endpoint]
        ])
      )
    })
    const args = ["--config", "test/support/replay.config.ts"]
    const port = await freePort()
    const admin = { authorization: `Bearer ${ADMIN}` }

    // Phase 1: 5,000 events stored and delivered live to `live`.
    const first = await startGateway(args, env(1), port)
    const events = Generator.generate({ people: 2000, seed: 11, now: Date.now() }).slice(0, 5000) as Array<
      Record<string, any>
    >
    expect(events.length).toBe(5000)
    for (let i = 0; i < events.length; i += 500) {
      const res = await fetch(`${first.url}/v1/events`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${WRITE}` },
        body: JSON.stringify({ events: events.slice(i, i + 500) })
      })
      expect(res.status).toBe(200)
    }
    const liveStored = async () => (await client(sb["live"]!.client.stats())).events_stored
    expect(
      await waitFor(
        async () =>
          (await liveStored()) > 4000 && (await liveStored()) === await (async () => {
              await new Promise((r) => setTimeout(r, 300))
              return liveStored()
            })(),
        90_000,
        200
      )
    ).toBe(true)
    await kill9(first)

    // Phase 2: `later` (replayFrom beginning) and `oracle` (live from the beginning) are added. The replay is slow
    // (40 ms per request of 100) so the gateway can be killed in the middle of it.
    await client(sb["later"]!.client.setFaults({ delayMs: 40 }))
    const second = await startGateway(args, env(2), port)
    const laterStored = async () => (await client(sb["later"]!.client.stats())).events_stored
    expect(await waitFor(async () => (await laterStored()) >= 500, 60_000, 20)).toBe(true)
    const replays = async (url: string) =>
      ((await (await fetch(`${url}/v1/replays?destination=later`, { headers: admin })).json()) as any).replays
    const [running] = await replays(second.url)
    expect(running.state).toBe("running")
    expect(running.total).toBe(5000)
    await kill9(second)
    const atKill = await laterStored()
    expect(atKill).toBeLessThan(4000)

    await client(sb["later"]!.client.setFaults({ delayMs: 0 }))
    const third = await startGateway(args, env(2), port)
    try {
      // The same replay resumes from its cursor (no new one is created) and finishes.
      const done = await waitFor(async () => (await replays(third.url))[0]?.state === "done", 120_000, 200)
      if (!done) console.error(third.output())
      expect(done).toBe(true)
      const all = await replays(third.url)
      expect(all.length).toBe(1)
      expect(all[0].replay_id).toBe(running.replay_id)
      const c = all[0].counts
      expect(c.read + c.already).toBe(5000)
      // The oracle has caught up with the log too.
      const oracleSettled = await waitFor(
        async () => {
          const a = (await client(sb["oracle"]!.client.stats())).events_stored
          await new Promise((r) => setTimeout(r, 500))
          return a > 0 && a === (await client(sb["oracle"]!.client.stats())).events_stored
        },
        60_000,
        100
      )
      expect(oracleSettled).toBe(true)

      const later = await client(sb["later"]!.client.events())
      const oracle = await client(sb["oracle"]!.client.events())
      const live = await client(sb["live"]!.client.events())
      const keys = (xs: ReadonlyArray<AmplitudeSandbox.StoredEvent>) => xs.map((e) => e.insert_id!).sort()
      // Once each (the sandbox keeps every accepted request's events; dedup by insert_id is its own).
      expect(new Set(keys(later)).size).toBe(later.length)
      expect(keys(later)).toEqual(keys(oracle))
      // Consent decided part of it: fewer than the analytics-only live destination got.
      expect(later.length).toBeLessThan(live.length)
      expect(later.length).toBeGreaterThan(1000)
      // Same payloads (identity as known now), apart from the time they were sent.
      const strip = (e: AmplitudeSandbox.StoredEvent) => ({ ...e.event, time: e.event["time"] })
      const byKey = new Map(oracle.map((e) => [e.insert_id, strip(e)]))
      for (const e of later) expect(strip(e)).toEqual(byKey.get(e.insert_id))
      expect(c.accepted).toBe(later.length)
      expect(c.droppedBy.consent).toBeGreaterThan(0)

      // A dry run now: what was delivered is skipped; what was dropped is routed again and dropped again (the
      // consent is the same today): nothing would be sent.
      const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [BIN, "replay", "--destination", "later", "--dry-run", "--json", "--url", third.url, "--key", ADMIN],
          { cwd: ROOT, env: { ...process.env }, timeout: 60_000 },
          (err, stdout, stderr) => resolve({ code: err ? (err as any).code ?? 1 : 0, stdout, stderr })
        )
      })
      expect(out.code).toBe(0)
      const dry = JSON.parse(out.stdout)
      expect([dry.state, dry.dry_run, dry.counts.already, dry.counts.dropped, dry.counts.routed, dry.counts.sent])
        .toEqual(["done", true, later.length, 5000 - later.length, 0, 0])
      // Bad input names the field.
      const bad = await fetch(`${third.url}/v1/destinations/later/replays`, {
        method: "POST",
        headers: { ...admin, "content-type": "application/json" },
        body: JSON.stringify({ since: "yesterday" })
      })
      expect(bad.status).toBe(400)
      expect(((await bad.json()) as any).error.message).toMatch(/^since: /)
      const unknown = await fetch(`${third.url}/v1/destinations/nope/replays`, { method: "POST", headers: admin })
      expect(unknown.status).toBe(404)
    } finally {
      await kill9(third)
    }
  }, 300_000)
})

describe("redrive", () => {
  it("re-sends dead-lettered events after the destination is fixed", async () => {
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
      const at = new Date().toISOString()
      await h.post({
        events: [
          { event_id: "rd_1", event: "sign_up", timestamp: at, user_id: "usr_redrive_1" },
          { event_id: "rd_2", event: "sign_up", timestamp: at, user_id: "usr_redrive_2" }
        ]
      })
      const status = async (id: string) =>
        (await h.explain(id)).json.destinations.find((d: any) => d.destination === "amplitude")
      expect(await waitFor(async () => (await status("rd_2")).status === "dead_letter", 20_000)).toBe(true)
      expect(await waitFor(async () => (await status("rd_1")).status === "dead_letter", 20_000)).toBe(true)
      await h.sandboxes["amplitude"]!.setFaults({ down: false })
      const redrive = (body: unknown) =>
        fetch(`${h.url}/v1/destinations/amplitude/redrive`, {
          method: "POST",
          headers: { authorization: `Bearer ${"tl_test_admin_key_0123456789"}`, "content-type": "application/json" },
          body: JSON.stringify(body)
        }).then(async (r) => ({ status: r.status, json: (await r.json()) as any }))
      // Nothing matches this reason; then all of them.
      expect((await redrive({ reason: "no such reason" })).json).toEqual({ destination: "amplitude", redriven: 0 })
      expect((await redrive({ reason: "gave up after" })).json).toEqual({ destination: "amplitude", redriven: 2 })
      expect(await waitFor(async () => (await status("rd_1")).status === "accepted", 20_000)).toBe(true)
      expect(await waitFor(async () => (await status("rd_2")).status === "accepted", 20_000)).toBe(true)
      expect((await h.sandboxEvents()).map((e) => e.insert_id).sort()).toEqual(["rd_1", "rd_2"])
      // Nothing left to redrive; bad input names the field.
      expect((await redrive({})).json.redriven).toBe(0)
      const bad = await redrive({ reason: 42 })
      expect([bad.status, bad.json.error.message]).toEqual([400, expect.stringMatching(/^reason: /)])
    } finally {
      await h.close()
    }
  }, 60_000)
})
