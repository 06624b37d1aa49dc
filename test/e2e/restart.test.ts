/**
 * A gateway killed with SIGKILL in the middle of delivery loses nothing: after a restart on the same store it
 * resumes from its cursor, and every accepted event reaches the Amplitude sandbox exactly once by insert_id.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { Generator, TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Option, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { waitFor } from "../support/harness.js"
import { freePort, kill9, startGateway } from "../support/process.js"

const WRITE = "tl_restart_write_key_000001"
const ADMIN = "tl_restart_admin_key_000001"
let scope: Scope.CloseableScope
let sandbox: AmplitudeSandbox.Sandbox
let storeEnv: Record<string, string>
const client = <A>(eff: Effect.Effect<A, never, import("@effect/platform").HttpClient.HttpClient>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici))

beforeAll(async () => {
  scope = await Effect.runPromise(Scope.make())
  sandbox = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
  const pgUrl = await Effect.runPromise(TestStore.databaseUrl)
  if (Option.isSome(pgUrl)) {
    const s = await Effect.runPromise(Scope.extend(TestStore.privateSchema(pgUrl.value), scope))
    storeEnv = { DATABASE_URL: s.url }
  } else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tl-restart-"))
    storeEnv = { TRACKLAYER_DATA_DIR: dir }
  }
}, 60_000)

afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  if (storeEnv?.TRACKLAYER_DATA_DIR) fs.rmSync(storeEnv.TRACKLAYER_DATA_DIR, { recursive: true, force: true })
})

it("resumes delivery after kill -9 without losing or re-storing any event", async () => {
  const env = {
    ...storeEnv,
    TRACKLAYER_WRITE_KEYS: WRITE,
    TRACKLAYER_ADMIN_KEY: ADMIN,
    // Production `serve` refuses to start without it (personal data is encrypted at rest).
    TRACKLAYER_MASTER_KEY: "Q1bd3XyRVEv9Jc4zYjXgrbF1mVqTy4P8sMZ2m9Dp7aE=",
    AMPLITUDE_API_KEY: sandbox.apiKey,
    AMPLITUDE_ENDPOINT: sandbox.endpoint
  }
  const args = ["--config", "test/support/restart.config.ts"]
  // Each request to the sandbox takes 40 ms, so 3,000 events in batches of 100 take over a second to deliver.
  await client(sandbox.client.setFaults({ delayMs: 40 }))
  const port = await freePort()
  const first = await startGateway(args, env, port)
  const events = Generator.generate({ people: 1000, seed: 5, now: Date.now() }).slice(0, 3000) as Array<
    Record<string, any>
  >
  for (let i = 0; i < events.length; i += 500) {
    const res = await fetch(`${first.url}/v1/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${WRITE}` },
      body: JSON.stringify({ events: events.slice(i, i + 500) })
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as { results: Array<{ status: string }> }
    expect(body.results.filter((r) => r.status !== "accepted")).toEqual([])
  }
  const keyOf = (e: Record<string, any>) =>
    e.event === "purchase" ?
      e.properties.order_id
      : e.event === "refund" ?
      `refund:${e.properties.order_id}`
      : e.event === "subscription_renewed" ?
      `subscription_renewed:${e.properties.subscription_id}:${e.properties.period}`
      : e.event_id
  const expected = new Set(events.map(keyOf))

  // Kill in the middle of delivery.
  const midway = await waitFor(async () => (await client(sandbox.client.stats())).events_stored >= 300, 60_000, 20)
  expect(midway).toBe(true)
  await kill9(first)
  const atKill = (await client(sandbox.client.stats())).events_stored
  expect(atKill).toBeLessThan(expected.size)

  await client(sandbox.client.setFaults({ delayMs: 0 }))
  const second = await startGateway(args, env, port).catch((e) => {
    throw new Error(`restart failed; first gateway said:\n${first.output()}\n${String(e)}`)
  })
  try {
    const done = await waitFor(
      async () => (await client(sandbox.client.stats())).events_stored >= expected.size,
      90_000,
      100
    )
    if (!done) console.error(second.output())
    expect(done).toBe(true)
    await new Promise((r) => setTimeout(r, 500))
    const stored = await client(sandbox.client.events())
    expect(stored.length).toBe(expected.size)
    expect(new Set(stored.map((s) => s.insert_id))).toEqual(expected)
    // Re-posting after the restart finds every event already stored.
    const again = await fetch(`${second.url}/v1/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${WRITE}` },
      body: JSON.stringify({ events: events.slice(0, 100) })
    })
    const body = (await again.json()) as { results: Array<{ status: string }> }
    expect(body.results.map((r) => r.status)).toEqual(events.slice(0, 100).map(() => "duplicate"))
  } finally {
    await kill9(second)
  }
}, 180_000)
