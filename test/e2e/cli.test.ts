/**
 * The `tracklayer` CLI as a user runs it (a child process) against a real gateway.
 */
import { ConfigModule } from "@tracklayer/cli"
import { Effect, Either } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor, WRITE_KEY } from "../support/harness.js"
import { BIN, ROOT } from "../support/process.js"

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tl-cli-"))
// Asynchronous on purpose: the gateway under test runs in this process and must keep answering.
const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: tmp,
      env: { ...process.env, TRACKLAYER_URL: "", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    child.on("error", (e) => {
      clearTimeout(timer)
      resolve({ code: null, stdout, stderr: `${stderr}spawn failed: ${e.message}` })
    })
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

describe("tracklayer CLI", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness()
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it("send posts the fixture with --rebase-time and prints a summary; a second send finds duplicates", async () => {
    const file = path.join(ROOT, "test/fixtures/seed-journeys.ndjson")
    const first = await cli(["send", file, "--rebase-time", "--url", h.url, "--key", WRITE_KEY])
    expect(first.stderr).toContain("100%")
    expect(first.stdout).toMatch(
      /^sent 10 events to http:\/\/127\.0\.0\.1:\d+ in [\d.]+ s: 10 accepted, 0 duplicate, 0 rejected\n$/
    )
    expect(first.code).toBe(0)
    const second = await cli(["send", file, "--rebase-time", "--url", h.url], { TRACKLAYER_WRITE_KEY: WRITE_KEY })
    expect(second.stdout).toContain("0 accepted, 10 duplicate, 0 rejected")
    expect(second.code).toBe(0)
    // --rebase-time made the events recent: the last one is an hour ago.
    const x = await h.explain("evt_0006")
    expect(Math.abs(Date.parse(x.json.timestamp) - (Date.now() - 3_600_000))).toBeLessThan(120_000)
  }, 60_000)

  it("explain prints each destination's outcome and the payload", async () => {
    expect(await waitFor(async () => (await h.explain("evt_0004")).json.destinations[0].status === "accepted", 15_000))
      .toBe(true)
    const r = await cli(["explain", "evt_0004", "--url", h.url, "--key", ADMIN_KEY])
    expect(r.code).toBe(0)
    const lines = r.stdout.split("\n")
    expect(lines[0]).toMatch(/^evt_0004 {2}purchase {2}at \d{4}-\d{2}-\d{2}T/)
    expect(lines[1]).toContain("dedup key ord_1001  person user:usr_8421")
    expect(lines[2]).toBe("  amplitude: ACCEPTED")
    expect(r.stdout).toMatch(/#1 accepted HTTP 200 \d+ ms/)
    expect(r.stdout).toContain("\"insert_id\":\"ord_1001\"")
    const dup = await cli(["explain", "evt_0005", "--url", h.url, "--key", ADMIN_KEY, "--json"])
    expect(JSON.parse(dup.stdout).destinations[0]).toMatchObject({
      status: "dropped",
      reason: "duplicate: duplicate of evt_0004"
    })
    const missing = await cli(["explain", "nope_1", "--url", h.url, "--key", ADMIN_KEY])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("gateway answered 404: no event with event_id \"nope_1\"")
    const wrongKey = await cli(["explain", "evt_0004", "--url", h.url, "--key", WRITE_KEY])
    expect(wrongKey.stderr).toContain("gateway answered 401: unknown admin key")
  }, 60_000)

  it("send refuses a file with a broken line before sending anything, and reports rejected events", async () => {
    const bad = path.join(tmp, "bad.ndjson")
    fs.writeFileSync(
      bad,
      `{"event_id":"cli_ok_1","event":"sign_up","timestamp":"${
        new Date().toISOString()
      }","user_id":"usr_cli"}\n{"event_id": oops}\n`
    )
    const r = await cli(["send", bad, "--url", h.url, "--key", WRITE_KEY])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain(`${bad}:2: not valid JSON`)
    expect(r.stderr).toContain("nothing was sent")
    expect((await h.explain("cli_ok_1")).status).toBe(404)

    const mixed = path.join(tmp, "mixed.ndjson")
    fs.writeFileSync(
      mixed,
      `{"event_id":"cli_ok_2","event":"sign_up","timestamp":"${
        new Date().toISOString()
      }","user_id":"usr_cli"}\n{"event_id":"cli_bad_2","event":"sign_up","timestamp":"soon","user_id":"usr_cli"}\n`
    )
    const m = await cli(["send", mixed, "--url", h.url, "--key", WRITE_KEY])
    expect(m.stdout).toContain("1 accepted, 0 duplicate, 1 rejected")
    expect(m.stdout).toContain("  rejected cli_bad_2: timestamp:")
    expect(m.code).toBe(1)
  }, 60_000)

  it("names the flag in usage errors", async () => {
    const batch = await cli([
      "send",
      path.join(ROOT, "test/fixtures/seed-journeys.ndjson"),
      "--batch-size",
      "0",
      "--url",
      h.url,
      "--key",
      WRITE_KEY
    ])
    expect(batch.code).toBe(2)
    expect(batch.stderr).toContain("--batch-size must be between 1 and 500")
    const port = await cli(["serve", "--port", "70000", "--config", path.join(ROOT, "tracklayer.config.ts")])
    expect(port.code).toBe(2)
    expect(port.stderr).toContain("--port: 70000 is not a TCP port (0-65535)")
    const url = await cli([
      "send",
      path.join(ROOT, "test/fixtures/seed-journeys.ndjson"),
      "--url",
      "ftp://x",
      "--key",
      WRITE_KEY
    ])
    expect(url.code).toBe(2)
    expect(url.stderr).toContain("--url: \"ftp://x\" is not an http(s) URL")
    // In sandbox mode a destination reading another namespace must not pick up real credentials.
    const ns = path.join(ROOT, "test/support/.tmp-ns.config.mjs")
    fs.writeFileSync(
      ns,
      `import { Vocabulary } from "@tracklayer/core"\nimport { Amplitude } from "@tracklayer/plugin-amplitude"\n` +
        `export default { vocabulary: Vocabulary.canonical, destinations: [Amplitude.destination({ id: "amp_eu", ` +
        `settings: Amplitude.settingsFromEnv({ namespace: "AMPLITUDE_EU" }) })] }\n`
    )
    try {
      const sb = await cli(["serve", "--sandbox", "--port", "0", "--config", ns], {
        AMPLITUDE_EU_API_KEY: "fake-eu-key",
        TRACKLAYER_DATA_DIR: path.join(tmp, "ns-data")
      })
      expect(sb.code).toBe(2)
      expect(sb.stderr).toContain("destinations[0] (amp_eu).settings")
      expect(sb.stderr).toContain("in --sandbox mode a destination's settings must come from its plugin's sandbox")
      expect(sb.stderr).not.toContain("fake-eu-key")
    } finally {
      fs.rmSync(ns, { force: true })
    }
    const noConfig = await cli(["serve"])
    expect(noConfig.code).toBe(2)
    expect(noConfig.stderr).toContain("no config module found: create tracklayer.config.ts (or pass --config <file>)")
  }, 180_000)
})

describe("tracklayer preview", () => {
  it("prints the exact payload per event (NDJSON with --json), or why it would be dropped or rejected", async () => {
    const file = path.join(ROOT, "test/fixtures/seed-journeys.ndjson")
    const r = await cli([
      "preview",
      "--destination",
      "amplitude",
      "--sandbox",
      "--json",
      "--config",
      path.join(ROOT, "tracklayer.config.ts"),
      file
    ])
    expect(r.code).toBe(0)
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l))
    expect(lines.length).toBe(10)
    expect(lines.map((l) => l.event_id)).toEqual([
      "evt_0001",
      "evt_0002",
      "evt_0003",
      "evt_0004",
      "evt_0005",
      "evt_0006",
      "evt_0101",
      "evt_0102",
      "evt_0103",
      "evt_0201"
    ])
    expect(lines[0]).toEqual({
      destination: "amplitude",
      index: 0,
      event_id: "evt_0001",
      status: "payload",
      payload: {
        event_type: "view_pricing",
        device_id: "web_91f3",
        time: 1776676323000,
        insert_id: "evt_0001",
        ip: "203.0.113.7",
        library: "tracklayer"
      }
    })
    expect(lines[8].payload).toMatchObject({
      event_type: "purchase",
      insert_id: "ord_2002",
      revenue: 49.9,
      event_properties: { currency: "EUR" }
    })

    const bad = path.join(tmp, "preview-bad.ndjson")
    fs.writeFileSync(bad, `{"event_id":"p1","event":"signup","timestamp":"2026-04-20T09:12:03Z","user_id":"usr_1"}\n`)
    const rb = await cli([
      "preview",
      "--destination",
      "amplitude",
      "--sandbox",
      "--config",
      path.join(ROOT, "tracklayer.config.ts"),
      bad
    ])
    expect(rb.stdout).toBe("#1 p1 → amplitude: rejected — event: \"signup\" is not in the vocabulary\n")

    const unknownDest = await cli([
      "preview",
      "--destination",
      "nope",
      "--config",
      path.join(ROOT, "tracklayer.config.ts"),
      file
    ])
    expect(unknownDest.code).toBe(2)
    expect(unknownDest.stderr).toContain(
      "--destination: \"nope\" is not configured; configured: amplitude, meta, google-ads, linkedin"
    )
    const noCreds = await cli([
      "preview",
      "--destination",
      "amplitude",
      "--config",
      path.join(ROOT, "tracklayer.config.ts"),
      file
    ], { AMPLITUDE_API_KEY: "" })
    expect(noCreds.code).toBe(2)
    expect(noCreds.stderr).toContain("(or pass --sandbox to preview with sandbox settings)")
  }, 150_000)
})

describe("config modules", () => {
  const write = (name: string, body: string) => {
    const f = path.join(ROOT, "test/support", name)
    fs.writeFileSync(f, body)
    return f
  }
  const load = (f: string) => Effect.runPromise(Effect.either(ConfigModule.load(f)))

  it("loads .ts and .mjs modules and reports the field at fault", async () => {
    const ts = await load(path.join(ROOT, "tracklayer.config.ts"))
    expect(Either.isRight(ts) && ts.right.destinations.map((d) => d.id)).toEqual([
      "amplitude",
      "meta",
      "google-ads",
      "linkedin",
      "hubspot"
    ])
    expect(Either.isRight(ts) && ts.right.sources.map((s) => s.id)).toEqual(["amplitude-cohorts"])
    expect(Either.isRight(ts) && ts.right.traitSync.map((t) => t.destination)).toEqual(["amplitude"])
    const mjs = write(
      ".tmp-ok.config.mjs",
      `import { Vocabulary } from "@tracklayer/core"\nexport default { vocabulary: Vocabulary.canonical, destinations: [], unknownEvents: "store" }\n`
    )
    const badTs = write(
      ".tmp-bad.config.ts",
      `import { Vocabulary } from "@tracklayer/core"\nexport default { vocabulary: Vocabulary.canonical, destinations: [], unknownEvents: "keep" }\n`
    )
    const mismatch = write(
      ".tmp-api.config.mjs",
      `import { Vocabulary } from "@tracklayer/core"\nimport { Amplitude } from "@tracklayer/plugin-amplitude"\n` +
        `export default { vocabulary: Vocabulary.canonical, destinations: [{ ...Amplitude.destination(), plugin: { ...Amplitude.plugin, pluginApi: "^2.0.0" } }] }\n`
    )
    try {
      const ok = await load(mjs)
      expect(Either.isRight(ok) && ok.right.unknownEvents).toBe("store")
      const bad = await load(badTs)
      expect(Either.isLeft(bad) && bad.left.message).toBe(
        ".tmp-bad.config.ts: unknownEvents: must be \"reject\" or \"store\", got \"keep\""
      )
      const api = await load(mismatch)
      expect(Either.isLeft(api) && api.left.message).toContain(
        "destinations[0].plugin: @tracklayer/plugin-amplitude@0.2.0 supports plugin API ^2.0.0, but this TrackLayer implements 1.2.0"
      )
    } finally {
      for (const f of [mjs, badTs, mismatch]) fs.rmSync(f, { force: true })
    }
  }, 60_000)
})

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true })
})
