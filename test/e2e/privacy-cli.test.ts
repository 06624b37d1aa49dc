/**
 * The master key as an operator meets it, through the real `tracklayer serve` (a child process): production refuses
 * to start without a valid TRACKLAYER_MASTER_KEY, or with another key than the one the store's data was encrypted
 * under; `serve --sandbox` generates one, keeps it in .tracklayer/sandbox.json, and reads its data after a restart.
 */
import { TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Option, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { BIN, freePort, ROOT } from "../support/process.js"

const CONFIG = path.join(ROOT, "test/support/privacy.config.ts")
const WRITE = "tl_privacy_write_key_00001"
const ADMIN = "tl_privacy_admin_key_00001"
const KEY_A = Buffer.alloc(32, 0xa1).toString("base64")
const KEY_B = Buffer.alloc(32, 0xb2).toString("hex")

let scope: Scope.CloseableScope
let tmp: string
/** A fresh store per call: a private PostgreSQL schema when DATABASE_URL is set, else a PGlite directory. */
let freshStore: (name: string) => Promise<Record<string, string>>

beforeAll(async () => {
  scope = await Effect.runPromise(Scope.make())
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tl-privacy-"))
  const pgUrl = await Effect.runPromise(TestStore.databaseUrl)
  freshStore = async (name) => {
    if (Option.isSome(pgUrl)) {
      const s = await Effect.runPromise(Scope.extend(TestStore.privateSchema(pgUrl.value), scope))
      return { DATABASE_URL: s.url }
    }
    return { TRACKLAYER_DATA_DIR: path.join(tmp, name, ".tracklayer", "data") }
  }
})

afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  fs.rmSync(tmp, { recursive: true, force: true })
})

/** The environment without any TrackLayer secret from the outer shell. */
const baseEnv = () => {
  const env: Record<string, string | undefined> = { ...process.env }
  for (const k of ["TRACKLAYER_MASTER_KEY", "TRACKLAYER_WRITE_KEYS", "TRACKLAYER_ADMIN_KEY", "DATABASE_URL"]) {
    delete env[k]
  }
  return env
}

interface Running {
  readonly child: ChildProcess
  readonly url: string
  readonly output: () => string
  readonly exited: Promise<number | null>
}

/** Starts `tracklayer serve …` in `cwd`; resolves once /healthz answers, or once the process exits. */
const serve = async (cwd: string, args: ReadonlyArray<string>, env: Record<string, string>) => {
  const port = await freePort()
  let out = ""
  fs.mkdirSync(cwd, { recursive: true })
  const child = spawn(process.execPath, [BIN, "serve", "--port", String(port), "--config", CONFIG, ...args], {
    cwd,
    env: { ...baseEnv(), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  child.stdout!.on("data", (d) => (out += d))
  child.stderr!.on("data", (d) => (out += d))
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      if ((await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) })).status === 200) break
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200))
  }
  return { child, url, output: () => out, exited } satisfies Running
}

const stop = async (r: Running) => {
  if (r.child.exitCode === null) r.child.kill("SIGTERM")
  await r.exited
}

const janeEvent = (id: string) => ({
  event_id: id,
  event: "sign_up",
  timestamp: new Date(Date.now() - 60_000).toISOString(),
  user_id: "usr_8421",
  user: { email: "Jane.Doe@Example.com", first_name: "Jane" }
})

const post = (url: string, key: string, events: ReadonlyArray<unknown>) =>
  fetch(`${url}/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ events })
  }).then(async (r) => ({ status: r.status, json: (await r.json()) as any }))

const explain = (url: string, key: string, id: string) =>
  fetch(`${url}/v1/events/${id}/explain`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.json() as any)

describe("TRACKLAYER_MASTER_KEY in production serve", () => {
  it("missing or invalid: serve exits 2 naming the variable, before opening the store", async () => {
    const store = await freshStore("missing")
    const keys = { TRACKLAYER_WRITE_KEYS: WRITE, TRACKLAYER_ADMIN_KEY: ADMIN, ...store }
    const missing = await serve(path.join(tmp, "missing"), [], keys)
    expect(await missing.exited).toBe(2)
    expect(missing.output()).toContain(
      "tracklayer: TRACKLAYER_MASTER_KEY: is not set: TrackLayer encrypts personal data at rest under it; " +
        "generate one with `openssl rand -base64 32`"
    )
    const invalid = await serve(path.join(tmp, "missing"), [], { ...keys, TRACKLAYER_MASTER_KEY: "not-a-key" })
    expect(await invalid.exited).toBe(2)
    expect(invalid.output()).toContain(
      "tracklayer: TRACKLAYER_MASTER_KEY: must be 32 bytes written as 64 hex characters or as base64 (44 characters); " +
        "got 9 characters"
    )
    expect(invalid.output()).not.toContain("not-a-key")
    // Refused before the store was opened: PGlite never created its directory.
    if (store.TRACKLAYER_DATA_DIR !== undefined) expect(fs.existsSync(store.TRACKLAYER_DATA_DIR)).toBe(false)
  }, 60_000)

  it("another key than the one the data was encrypted under: serve exits 2 and says so", async () => {
    const store = await freshStore("mismatch")
    const env = {
      TRACKLAYER_WRITE_KEYS: WRITE,
      TRACKLAYER_ADMIN_KEY: ADMIN,
      // The Amplitude destination needs settings; nothing listens there (delivery just retries).
      AMPLITUDE_API_KEY: "unused-amplitude-key",
      AMPLITUDE_ENDPOINT: "http://127.0.0.1:9/2/httpapi",
      ...store
    }
    const first = await serve(path.join(tmp, "mismatch"), [], { ...env, TRACKLAYER_MASTER_KEY: KEY_A })
    expect({ exited: first.child.exitCode, output: first.child.exitCode === null ? "" : first.output() }).toEqual({
      exited: null,
      output: ""
    })
    expect((await post(first.url, WRITE, [janeEvent("pk_1")])).json.results[0].status).toBe("accepted")
    await stop(first)
    const second = await serve(path.join(tmp, "mismatch"), [], { ...env, TRACKLAYER_MASTER_KEY: KEY_B })
    expect(await second.exited).toBe(2)
    expect(second.output()).toMatch(
      /tracklayer: TRACKLAYER_MASTER_KEY: does not match the master key that wrapped the stored person keys \(fingerprint [0-9a-f]{16}, stored [0-9a-f]{16}\)/
    )
    // The right key still opens it.
    const third = await serve(path.join(tmp, "mismatch"), [], { ...env, TRACKLAYER_MASTER_KEY: KEY_A })
    try {
      expect((await explain(third.url, ADMIN, "pk_1")).received.user.email).toBe("J***@Example.com")
    } finally {
      await stop(third)
    }
  }, 90_000)
})

describe("serve --sandbox", () => {
  it(
    "generates a master key once, keeps it in .tracklayer/sandbox.json, and reads its data after a restart",
    async () => {
      const cwd = path.join(tmp, "sandbox")
      const store = await freshStore("sandbox")
      const first = await serve(cwd, ["--sandbox"], store)
      let masterKey: string
      try {
        expect(first.output()).toContain("master key     kept in .tracklayer/sandbox.json")
        const state = JSON.parse(fs.readFileSync(path.join(cwd, ".tracklayer", "sandbox.json"), "utf8"))
        masterKey = state.masterKey
        expect(Buffer.from(masterKey, "base64").length).toBe(32)
        expect((fs.statSync(path.join(cwd, ".tracklayer", "sandbox.json")).mode & 0o777).toString(8)).toBe("600")
        expect((await post(first.url, state.writeKey, [janeEvent("sb_1")])).json.results[0].status).toBe("accepted")
      } finally {
        await stop(first)
      }
      const second = await serve(cwd, ["--sandbox"], store)
      try {
        const state = JSON.parse(fs.readFileSync(path.join(cwd, ".tracklayer", "sandbox.json"), "utf8"))
        expect(state.masterKey).toBe(masterKey)
        expect((await explain(second.url, state.adminKey, "sb_1")).received.user).toEqual({
          email: "J***@Example.com",
          first_name: "J***"
        })
      } finally {
        await stop(second)
      }
    },
    120_000
  )
})
