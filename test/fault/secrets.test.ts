/**
 * Secrets never appear in logs, delivery records or error messages: a `tracklayer serve` process runs with
 * distinctive secret values (two write keys, the admin key, the master key, both Amplitude API keys, the Amplitude
 * secret key for erasures and — on PostgreSQL — a password in DATABASE_URL), is exercised with good and bad requests,
 * explain, preview, destinations, the explorer, erasure (with the secret key refused), and a destination that refuses
 * the API key (Amplitude echoes the key in its answer); then the processes' whole output, every row of every table of
 * the store, and every HTTP answer (headers and body) the test received are searched for each secret, as written and
 * in base64, base64url and hex.
 *
 * Key rotation: two write keys are accepted at once; after a restart with the old one dropped it is refused.
 * (An unknown write key on ingest, test/e2e/gateway.test.ts, and a write key refused by explain, test/e2e/cli.test.ts,
 * are covered there; here every other admin endpoint is tried with a write key.)
 */
import { PgClient } from "@effect/sql-pg"
import { Database } from "@tracklayer/core"
import { Effect, Layer, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { client, CONFIG_ARGS, type FaultEnv, setUp } from "../support/fault.js"
import { waitFor } from "../support/harness.js"
import { freePort, type Gateway, kill9, startGateway } from "../support/process.js"

const WRITE_A = "tl_test_write_key_rot_a1"
const WRITE_B = "tl_test_write_key_rot_b2"
const WRITE_C = "tl_test_write_key_rot_c3"
const ADMIN = "tl_test_admin_key_secret01"
/** 32 bytes of plain text, written in base64 as TRACKLAYER_MASTER_KEY takes it. */
const MASTER_BYTES = "tl-test-master-key-32-bytes-0001"
const MASTER = Buffer.from(MASTER_BYTES, "utf8").toString("base64")
const AMP_A = "tl-test-amp-api-key-a-01"
const AMP_B = "tl-test-amp-api-key-b-02"
const AMP_SECRET = "tl-test-amp-secret-key-01"
const DB_PASSWORD = "tl-test-db-password-01"
const UNKNOWN = "tl_test_unknown_key_0001"

const SECRETS: Record<string, string> = {
  "write key A": WRITE_A,
  "write key B": WRITE_B,
  "write key C": WRITE_C,
  "admin key": ADMIN,
  "master key": MASTER,
  "master key bytes": MASTER_BYTES,
  "Amplitude API key (amplitude)": AMP_A,
  "Amplitude API key (amplitude_b)": AMP_B,
  "Amplitude secret key": AMP_SECRET,
  "Amplitude Basic auth (api_key:secret_key)": `${AMP_A}:${AMP_SECRET}`,
  "database password": DB_PASSWORD
}

/** Each secret as written, in base64, base64url and hex. */
const FORMS: ReadonlyArray<readonly [string, string]> = Object.entries(SECRETS).flatMap(([name, value]) => {
  const b = Buffer.from(value, "utf8")
  return [
    [name, value],
    [`${name} (base64)`, b.toString("base64").replace(/=+$/, "")],
    [`${name} (base64url)`, b.toString("base64url")],
    [`${name} (hex)`, b.toString("hex")]
  ] as const
})

/** The names of the secrets `text` contains, in any form. */
const leaks = (text: string): Array<string> =>
  FORMS.filter(([, form]) => text.toLowerCase().includes(form.toLowerCase())).map(([name]) => name)

let env: FaultEnv
let gw: Gateway
let port: number
let gatewayEnv: Record<string, string>
const outputs: Array<() => string> = []
/** Every HTTP answer the test received: request line, status, headers and body. */
const answers: Array<string> = []

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly json: any
}

const call = async (
  method: string,
  pathname: string,
  options: { key?: string; authorization?: string; body?: string | Uint8Array; headers?: Record<string, string> } = {}
): Promise<Reply> => {
  const headers: Record<string, string> = { ...options.headers }
  if (options.key !== undefined) headers["authorization"] = `Bearer ${options.key}`
  if (options.authorization !== undefined) headers["authorization"] = options.authorization
  if (options.body !== undefined && headers["content-type"] === undefined) headers["content-type"] = "application/json"
  const res = await fetch(`${gw.url}${pathname}`, {
    method,
    headers,
    ...(options.body !== undefined
      ? { body: typeof options.body === "string" ? options.body : new Blob([new Uint8Array(options.body)]) }
      : {}),
    redirect: "manual",
    signal: AbortSignal.timeout(20_000)
  })
  const text = await res.text()
  const lines: Array<string> = []
  res.headers.forEach((v, k) => lines.push(`${k}: ${v}`))
  answers.push(`${method} ${pathname} → ${res.status}\n${lines.join("\n")}\n\n${text}`)
  let json: unknown = undefined
  try {
    json = JSON.parse(text)
  } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json }
}

const post = (key: string, events: ReadonlyArray<unknown>) =>
  call("POST", "/v1/events", { key, body: JSON.stringify({ events }) })

const signUp = (id: string, user: string) => ({
  event_id: id,
  event: "sign_up",
  timestamp: new Date().toISOString(),
  user_id: user
})

const destinationStatus = async (id: string, destination: string): Promise<string | undefined> =>
  ((await call("GET", `/v1/events/${id}/explain`, { key: ADMIN })).json?.destinations as Array<any> | undefined)
    ?.find((d) => d.destination === destination)?.status

const exited = (g: Gateway) =>
  new Promise<number | null>((resolve) => {
    if (g.process.exitCode !== null) return resolve(g.process.exitCode)
    g.process.once("exit", (code) => resolve(code))
  })

/** SIGTERM, and the exit code. */
const stop = async (g: Gateway) => {
  const done = exited(g)
  g.process.kill("SIGTERM")
  return done
}

/** Every row of every table of the store, as text (the gateway is stopped: PGlite's directory is free). */
const storeRows = async (): Promise<Map<string, Array<string>>> => {
  const store = env.pgUrl !== undefined
    ? PgClient.layer({ url: Redacted.make(env.pgUrl), maxConnections: 1 })
    : Database.layerPglite(env.storeEnv["TRACKLAYER_DATA_DIR"]!)
  return Effect.runPromise(
    Effect.gen(function*() {
      const sql = yield* PgClient.PgClient
      const tables = yield* sql<{ table_name: string }>`SELECT table_name FROM information_schema.tables
        WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`
      const out = new Map<string, Array<string>>()
      for (const { table_name } of tables) {
        const rows = yield* sql<{ r: string }>`SELECT t::text AS r FROM ${sql(table_name)} t`
        out.set(table_name, rows.map((x) => x.r))
      }
      return out
    }).pipe(Effect.provide(Layer.orDie(store)), Effect.scoped)
  )
}

beforeAll(async () => {
  env = await setUp()
  // The sandboxes accept only this test's keys (and no deletion rate limit, so erasures answer at once).
  await client(env.a.client.configure({ apiKeys: [AMP_A], secretKeys: [AMP_SECRET], deletionRateLimit: false }))
  await client(env.b.client.configure({ apiKeys: [AMP_B] }))
  const store = { ...env.storeEnv }
  if (env.pgUrl !== undefined) {
    // Trust auth: the password is never asked for, but it is part of the configured URL.
    const u = new URL(env.pgUrl)
    u.password = DB_PASSWORD
    store["DATABASE_URL"] = u.toString()
  }
  gatewayEnv = {
    ...env.env,
    ...store,
    TRACKLAYER_WRITE_KEYS: `${WRITE_A}, ${WRITE_B}`,
    TRACKLAYER_ADMIN_KEY: ADMIN,
    TRACKLAYER_MASTER_KEY: MASTER,
    AMPLITUDE_API_KEY: AMP_A,
    AMPLITUDE_SECRET_KEY: AMP_SECRET,
    AMPLITUDE_DELETION_ENDPOINT: env.a.deletionEndpoint,
    AMPLITUDE_B_API_KEY: AMP_B
  }
  port = await freePort()
  gw = await startGateway(CONFIG_ARGS, gatewayEnv, port)
  outputs.push(gw.output)
}, 90_000)

afterAll(async () => {
  if (gw !== undefined) await kill9(gw)
  if (env !== undefined) await env.close()
})

describe("secrets", () => {
  it(
    "two write keys are active at once (and the admin key may ingest); an unknown, altered or non-bearer key is a 401",
    async () => {
      const a = await post(WRITE_A, [signUp("sec_a_1", "usr_sec_1")])
      const b = await post(WRITE_B, [signUp("sec_b_1", "usr_sec_2")])
      const admin = await post(ADMIN, [signUp("sec_admin_1", "usr_sec_3")])
      expect([a.status, b.status, admin.status]).toEqual([200, 200, 200])
      expect([a.json.results, b.json.results, admin.json.results]).toEqual([
        [{ event_id: "sec_a_1", status: "accepted" }],
        [{ event_id: "sec_b_1", status: "accepted" }],
        [{ event_id: "sec_admin_1", status: "accepted" }]
      ])
      const refused = [
        { key: UNKNOWN },
        { key: `${WRITE_A}x` },
        { key: WRITE_A.slice(0, -1) },
        { key: WRITE_A.toUpperCase() },
        { authorization: `Basic ${Buffer.from(`${WRITE_A}:`).toString("base64")}` },
        { authorization: WRITE_B }
      ]
      for (const auth of refused) {
        const r = await call("POST", "/v1/events", {
          ...auth,
          body: JSON.stringify({ events: [signUp("sec_x", "u")] })
        })
        expect(r.status).toBe(401)
        expect(r.json.error.code).toBe("unauthorized")
      }
      // A presented key is named by kind only, never echoed.
      expect((await post(UNKNOWN, [signUp("sec_x", "u")])).json.error.message).toBe("unknown write key")
      // Everything accepted reaches both destinations (with the configured API keys).
      for (const id of ["sec_a_1", "sec_b_1", "sec_admin_1"]) {
        expect(
          await waitFor(
            async () =>
              (await destinationStatus(id, "amplitude")) === "accepted" &&
              (await destinationStatus(id, "amplitude_b")) === "accepted",
            30_000,
            100
          )
        ).toBe(true)
      }
      expect((await call("GET", "/v1/events/sec_x/explain", { key: ADMIN })).status).toBe(404)
    },
    60_000
  )

  it("admin endpoints refuse a write key with 401 `unknown admin key`", async () => {
    const tried: Array<[string, string, string | undefined]> = [
      ["GET", "/v1/destinations", undefined],
      ["GET", "/v1/people/user:usr_sec_1", undefined],
      ["DELETE", "/v1/people/user:usr_sec_1", undefined],
      ["POST", "/v1/preview", JSON.stringify({ destination: "amplitude", events: [signUp("p_1", "u")] })],
      ["POST", "/v1/destinations/amplitude/redrive", "{}"],
      ["POST", "/v1/destinations/amplitude/replays", JSON.stringify({ dry_run: true })],
      ["GET", "/v1/replays", undefined],
      ["GET", "/v1/explorer/health", undefined],
      ["GET", "/v1/explorer/events?q=usr_sec_1", undefined]
    ]
    const statuses: Array<string> = []
    for (const [method, pathname, body] of tried) {
      for (const key of [WRITE_A, WRITE_B]) {
        const r = await call(method, pathname, { key, ...(body !== undefined ? { body } : {}) })
        statuses.push(`${method} ${pathname} ${r.status} ${r.json?.error?.message}`)
      }
    }
    expect(statuses).toEqual(
      tried.flatMap(([method, pathname]) => Array(2).fill(`${method} ${pathname} 401 unknown admin key`))
    )
    // The person was not erased by those attempts.
    expect((await call("GET", "/v1/people/user:usr_sec_1", { key: ADMIN })).json.user_id).toBe("usr_sec_1")
  }, 60_000)

  it(
    "bad requests, explain, preview, destinations, the explorer and erasures are answered without a secret",
    async () => {
      const bad: Array<[string, string | Uint8Array, number, string]> = [
        ["/v1/events", "{\"events\": [", 400, "malformed_json"],
        ["/v1/events", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 400, "bad_request"],
        ["/v1/events", "[]", 400, "bad_request"],
        ["/v1/events", JSON.stringify({ events: [], api_key: "x" }), 400, "bad_request"],
        ["/v1/events", JSON.stringify({ events: [] }), 400, "bad_request"],
        ["/v1/consent", "{", 400, "malformed_json"],
        ["/v1/consent", JSON.stringify({ updates: {} }), 400, "bad_request"]
      ]
      for (const [pathname, body, status, code] of bad) {
        const r = await call("POST", pathname, { key: WRITE_A, body })
        expect([r.status, r.json.error.code]).toEqual([status, code])
      }
      const rejected = await post(WRITE_B, [{ event_id: "sec_bad_1", event: "sign_up", timestamp: "yesterday" }])
      expect(rejected.json.results[0].status).toBe("rejected")

      const explain = await call("GET", "/v1/events/sec_a_1/explain", { key: ADMIN })
      expect(explain.status).toBe(200)
      expect(explain.json.destinations.map((d: any) => [d.destination, d.status])).toEqual([
        ["amplitude", "accepted"],
        ["amplitude_b", "accepted"]
      ])
      const preview = await call("POST", "/v1/preview", {
        key: ADMIN,
        body: JSON.stringify({ destination: "amplitude", events: [signUp("sec_preview_1", "usr_sec_9")] })
      })
      expect(preview.status).toBe(200)
      expect(preview.text).toContain("sec_preview_1")
      const destinations = await call("GET", "/v1/destinations", { key: ADMIN })
      expect(destinations.json.destinations.map((d: any) => [d.destination, d.state])).toEqual([
        ["amplitude", "running"],
        ["amplitude_b", "running"]
      ])
      expect((await call("GET", "/v1/explorer/health", { key: ADMIN })).status).toBe(200)
      expect((await call("GET", "/v1/explorer/events/sec_a_1", { key: ADMIN })).status).toBe(200)

      // The explorer's sign-in: a wrong key is refused, the admin key opens a session (a random id in the cookie).
      const form = (key: string) => new URLSearchParams({ key, next: "/ui/health" }).toString()
      const formHeaders = { "content-type": "application/x-www-form-urlencoded" }
      expect((await call("POST", "/ui/login", { body: form(WRITE_A), headers: formHeaders })).status).toBe(401)
      const login = await call("POST", "/ui/login", { body: form(ADMIN), headers: formHeaders })
      expect(login.status).toBe(303)
      const cookie = login.headers.get("set-cookie")!.split(";")[0]!
      const page = await call("GET", "/ui/health", { headers: { cookie } })
      expect(page.status).toBe(200)
      expect(page.text).toContain("amplitude_b")

      // Erasure, forwarded to Amplitude's User Privacy API with Basic auth (api key : secret key)…
      const erased = await call("DELETE", "/v1/people/user:usr_sec_1?requester=secrets-test", { key: ADMIN })
      expect(erased.status).toBe(200)
      expect(erased.json.destinations.find((d: any) => d.destination === "amplitude").outcome).toBe("accepted")
      expect((await client(env.a.client.deletions())).length).toBe(1)
      // …and with the secret key refused: a 202 naming the failure, not the key.
      await client(env.a.client.configure({ secretKeys: ["tl-test-amp-secret-other"] }))
      const refused = await call("DELETE", "/v1/people/user:usr_sec_2?requester=secrets-test", { key: ADMIN })
      expect(refused.status).toBe(202)
      expect(refused.json.destinations.find((d: any) => d.destination === "amplitude")).toMatchObject({
        outcome: "failed",
        status: 401,
        detail: "credentials refused: Amplitude refused the api key / secret key for the User Privacy API (401)"
      })
    },
    60_000
  )

  it("a destination that refuses the API key (echoing it) is paused; its answer is recorded redacted", async () => {
    await client(env.a.client.configure({ apiKeys: ["tl-test-amp-api-key-other"] }))
    const r = await post(WRITE_A, [signUp("sec_auth_1", "usr_sec_4"), signUp("sec_auth_2", "usr_sec_5")])
    expect(r.status).toBe(200)
    const paused = await waitFor(
      async () =>
        ((await call("GET", "/v1/destinations", { key: ADMIN })).json.destinations as Array<any>)[0].state ===
          "paused",
      30_000,
      100
    )
    expect(paused).toBe(true)
    const [amplitude] = (await call("GET", "/v1/destinations", { key: ADMIN })).json.destinations
    expect(amplitude.reason).toBe("the destination refused the credentials or the endpoint (see lastError)")
    // Amplitude's answer names the key it was given; the sandbox did see ours.
    expect((await client(env.a.client.stats())).rejected["invalid api key"]).toBeGreaterThan(0)
    expect(JSON.stringify(amplitude)).toContain("[redacted]")
    const explain = await call("GET", "/v1/events/sec_auth_1/explain", { key: ADMIN })
    expect(explain.json.destinations.find((d: any) => d.destination === "amplitude").status).toBe("retrying")
    expect(await waitFor(async () => (await destinationStatus("sec_auth_1", "amplitude_b")) === "accepted", 30_000))
      .toBe(true)
  }, 60_000)

  it("rotation: restarted with write key A dropped, A is refused and B and the new C are accepted", async () => {
    expect(await stop(gw)).toBe(0)
    // The destination accepts our key again, so nothing is left failing.
    await client(env.a.client.configure({ apiKeys: [AMP_A], secretKeys: [AMP_SECRET] }))
    gw = await startGateway(CONFIG_ARGS, { ...gatewayEnv, TRACKLAYER_WRITE_KEYS: `${WRITE_B},${WRITE_C}` }, port)
    outputs.push(gw.output)
    const a = await post(WRITE_A, [signUp("sec_rot_a", "usr_sec_6")])
    const b = await post(WRITE_B, [signUp("sec_rot_b", "usr_sec_6")])
    const c = await post(WRITE_C, [signUp("sec_rot_c", "usr_sec_6")])
    expect([a.status, a.json.error?.message, b.status, c.status]).toEqual([401, "unknown write key", 200, 200])
    expect([b.json.results[0].status, c.json.results[0].status]).toEqual(["accepted", "accepted"])
    expect((await call("GET", "/v1/destinations", { key: ADMIN })).status).toBe(200)
    expect(await stop(gw)).toBe(0)
  }, 90_000)

  it(
    "no secret in the processes' output, in any row of the store, or in any HTTP answer (nor in base64 or hex)",
    async () => {
      const output = outputs.map((o) => o()).join("\n")
      // The output holds the destination's refusal of the API key, with the echoed key redacted.
      expect(output).toContain(
        "destination amplitude paused: authentication failed: Amplitude refused the api key (400): Invalid API key: [redacted]"
      )
      const rows = await storeRows()
      const records = rows.get("tl_delivery_records") ?? []
      // The delivery records hold the destination's answers, including the refusal of the API key.
      expect(records.some((r) => r.includes("Invalid API key: [redacted]"))).toBe(true)
      const storeLeaks: Array<string> = []
      for (const [table, texts] of rows) {
        for (const text of texts) for (const name of leaks(text)) storeLeaks.push(`${table}: ${name}`)
      }
      const answerLeaks = answers.flatMap((a) => leaks(a).map((name) => `${a.split("\n")[0]}: ${name}`))
      expect(leaks(output)).toEqual([])
      expect(storeLeaks).toEqual([])
      expect(answerLeaks).toEqual([])
      // (The searches can find a secret: each one is in the environment the gateway was given.)
      expect(leaks(JSON.stringify(gatewayEnv)).length).toBeGreaterThan(5)
      const rowCount = [...rows.values()].reduce((n, t) => n + t.length, 0)
      console.log(
        `[secrets] ${Object.keys(SECRETS).length} secrets in ${FORMS.length} forms searched in ${output.length} ` +
          `characters of output (2 processes), ${rowCount} rows of ${rows.size} tables (${records.length} delivery ` +
          `records) and ${answers.length} HTTP answers (${
            answers.reduce((n, a) => n + a.length, 0)
          } characters): 0 found`
      )
    },
    60_000
  )
})
