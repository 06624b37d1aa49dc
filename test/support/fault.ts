/**
 * Shared pieces of the fault tests (test/fault): a store for a child gateway (PGlite directory, or a private schema
 * of the suite's PostgreSQL), two Amplitude sandboxes, HTTP calls that never hang, the gateway's RSS, and the
 * destination dedup key of a generated event.
 */
import type { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Option, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export const WRITE = "tl_fault_write_key_000001"
export const ADMIN = "tl_fault_admin_key_000001"
/** Production `serve` refuses to start without a master key (personal data is encrypted at rest). */
export const MASTER = "Q1bd3XyRVEv9Jc4zYjXgrbF1mVqTy4P8sMZ2m9Dp7aE="
/** The config of the fault tests' gateways (two Amplitude destinations, 3 s request timeout). */
export const CONFIG_ARGS = ["--config", "test/support/fault.config.ts"]

export const client = <A>(eff: Effect.Effect<A, never, HttpClient.HttpClient>) =>
  Effect.runPromise(Effect.provide(eff, NodeHttpClient.layerUndici))

/** The resources of one fault test file, released by `close`. */
export interface FaultEnv {
  readonly scope: Scope.CloseableScope
  /** `amplitude`'s sandbox (the one that fails) and `amplitude_b`'s (healthy). */
  readonly a: AmplitudeSandbox.Sandbox
  readonly b: AmplitudeSandbox.Sandbox
  /** The store: `DATABASE_URL` (private schema) or `TRACKLAYER_DATA_DIR`. */
  readonly storeEnv: Record<string, string>
  /** The private schema's URL on PostgreSQL (undefined on PGlite). */
  readonly pgUrl: string | undefined
  /** Everything a gateway process needs: store, keys, both destinations' settings. */
  readonly env: Record<string, string>
  readonly close: () => Promise<void>
}

/** Starts both sandboxes and prepares a private store (PostgreSQL schema when DATABASE_URL is set, else PGlite). */
export const setUp = async (): Promise<FaultEnv> => {
  const scope = await Effect.runPromise(Scope.make())
  const a = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
  const b = await Effect.runPromise(Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: false }), scope))
  const url = await Effect.runPromise(TestStore.databaseUrl)
  let storeEnv: Record<string, string>
  let pgUrl: string | undefined
  let dir: string | undefined
  if (Option.isSome(url)) {
    const s = await Effect.runPromise(Scope.extend(TestStore.privateSchema(url.value), scope))
    pgUrl = s.url
    storeEnv = { DATABASE_URL: s.url }
  } else {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "tl-fault-"))
    storeEnv = { TRACKLAYER_DATA_DIR: dir }
  }
  return {
    scope,
    a,
    b,
    storeEnv,
    pgUrl,
    env: {
      ...storeEnv,
      TRACKLAYER_WRITE_KEYS: WRITE,
      TRACKLAYER_ADMIN_KEY: ADMIN,
      TRACKLAYER_MASTER_KEY: MASTER,
      AMPLITUDE_API_KEY: a.apiKey,
      AMPLITUDE_ENDPOINT: a.endpoint,
      AMPLITUDE_B_API_KEY: b.apiKey,
      AMPLITUDE_B_ENDPOINT: b.endpoint
    },
    close: async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** One answer of the gateway, or the transport error that replaced it. */
export interface Answer {
  readonly status: number | undefined
  readonly retryAfter: string | null
  readonly json: any
  /** `ECONNREFUSED`, `ECONNRESET`, `TimeoutError`, … when there was no HTTP answer. */
  readonly error: string | undefined
  readonly ms: number
}

const errorCode = (e: unknown): string => {
  const err = e as { name?: string; code?: string; cause?: { code?: string; name?: string } }
  return err.cause?.code ?? err.code ?? err.cause?.name ?? err.name ?? String(e)
}

/** `POST /v1/events` that gives up after `timeoutMs` (reported as `error: "TimeoutError"`). */
export const postEvents = async (
  url: string,
  events: ReadonlyArray<unknown>,
  timeoutMs = 10_000
): Promise<Answer> => {
  const started = Date.now()
  try {
    const res = await fetch(`${url}/v1/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${WRITE}` },
      body: JSON.stringify({ events }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    const text = await res.text()
    let json: unknown = text
    try {
      json = JSON.parse(text)
    } catch { /* not JSON */ }
    return {
      status: res.status,
      retryAfter: res.headers.get("retry-after"),
      json,
      error: undefined,
      ms: Date.now() - started
    }
  } catch (e) {
    return { status: undefined, retryAfter: null, json: undefined, error: errorCode(e), ms: Date.now() - started }
  }
}

/** `GET` an admin endpoint as JSON. */
export const adminGet = async (url: string, pathname: string): Promise<any> => {
  const res = await fetch(`${url}${pathname}`, {
    headers: { authorization: `Bearer ${ADMIN}` },
    signal: AbortSignal.timeout(10_000)
  })
  return res.json()
}

/** The resident set size of a process in MiB (Linux). */
export const rssMiB = (pid: number): number => {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
  return m ? Math.round(Number(m[1]) / 1024) : 0
}

/** The `insert_id` Amplitude receives for a generated event: its destination dedup key. */
export const dedupKey = (e: Record<string, any>): string =>
  e.event === "purchase"
    ? e.properties.order_id
    : e.event === "refund"
    ? `refund:${e.properties.order_id}`
    : e.event === "subscription_renewed"
    ? `subscription_renewed:${e.properties.subscription_id}:${e.properties.period}`
    : e.event_id

/** How many times each of `keys` is stored at a sandbox: lost (never) and duplicated (more than once) keys. */
export const exactlyOnce = (
  stored: ReadonlyArray<{ readonly insert_id: string | null }>,
  keys: ReadonlySet<string>
) => {
  const counts = new Map<string, number>()
  for (const s of stored) {
    if (s.insert_id !== null && keys.has(s.insert_id)) counts.set(s.insert_id, (counts.get(s.insert_id) ?? 0) + 1)
  }
  return {
    delivered: counts.size,
    lost: [...keys].filter((k) => !counts.has(k)).length,
    duplicates: [...counts.values()].reduce((n, c) => n + c - 1, 0)
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
