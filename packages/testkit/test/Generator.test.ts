import { Contract, Vocabulary } from "@tracklayer/core"
import { Generator } from "@tracklayer/testkit"
import { Either } from "effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const ROOT = resolve(fileURLToPath(import.meta.url), "../../../..")
const BIN = join(ROOT, "packages/testkit/src/bin/generate.ts")
const TSX = join(ROOT, "node_modules/.bin/tsx")
const FIXTURE = join(ROOT, "test/fixtures/seed-journeys.ndjson")

const NOW = Date.UTC(2026, 5, 1, 12, 0, 0) // 2026-06-01T12:00:00Z
const HOUR = 3_600_000
const DAY = 24 * HOUR

const ms = (t: string | number): number => (typeof t === "number" ? t : Date.parse(t))
const byId = <E extends { readonly event_id: string }>(events: ReadonlyArray<E>, id: string): E => {
  const e = events.find((x) => x.event_id === id)
  if (e === undefined) throw new Error(`no event ${id}`)
  return e
}
const personOf = (eventId: string): string => eventId.split("_").slice(0, 3).join("_")
const seqOf = (eventId: string): number => Number(eventId.split("_")[3])

const runCli = (args: ReadonlyArray<string>) =>
  spawnSync(TSX, [BIN, ...args], { cwd: ROOT, encoding: "utf8", timeout: 60_000 })

describe("generate", () => {
  it("is deterministic for a seed and now, and differs across seeds", () => {
    const a = Generator.generate({ people: 50, seed: 7, now: NOW })
    const b = Generator.generate({ people: 50, seed: 7, now: NOW })
    expect(b).toEqual(a)
    expect(Generator.toNdjson(b)).toBe(Generator.toNdjson(a))

    const other = Generator.generate({ people: 50, seed: 8, now: NOW })
    expect(Generator.toNdjson(other)).not.toBe(Generator.toNdjson(a))
    expect(other[0]!.event_id.startsWith("gen_8_")).toBe(true)
  })

  it("gives each person the same journey whatever the number of people", () => {
    const small = Generator.generate({ people: 5, seed: 7, now: NOW })
    const large = Generator.generate({ people: 40, seed: 7, now: NOW })
    const firstFive = large.filter((e) => Number(e.event_id.split("_")[2]) <= 5)
    expect(firstFive).toEqual(small)
  })

  it("produces an exact, stable set of events for seed 7 and 10 people", () => {
    const events = Generator.generate({ people: 10, seed: 7, now: NOW })
    expect(events.length).toBe(43)
    expect(Generator.summary(events)).toEqual({
      events: 43,
      people: 10,
      byEvent: {
        view_pricing: 13,
        sign_up: 9,
        start_trial: 8,
        qualified_lead: 3,
        purchase: 8,
        subscription_renewed: 2
      },
      duplicateOrderReports: 1
    })
    const first = events[0]!
    expect(first.event_id).toBe("gen_7_1_1")
    expect(first.event).toBe("view_pricing")
    expect(first.timestamp).toBe("2026-05-29T13:20:29.716Z")
    expect(first.device_id).toBe("web_1454d5a0")
    expect(first.user_id).toBeUndefined()
    expect(first.context?.click_ids?.fbc).toBe("fb.1.1780060829716.IwAR5b1jxDOOvnWsfASZKCaxQRntvQutP8AulYL85P")
    expect(first.consent).toEqual({ analytics: true, advertising: true, crm: true })
  })

  it("reports one order twice from the web source under another event_id", () => {
    const events = Generator.generate({ people: 10, seed: 7, now: NOW })
    const reports = events.filter((e) => e.event === "purchase" && e.properties?.order_id === "ord_1e6ee21c")
    expect(reports.map((e) => e.event_id)).toEqual(["gen_7_6_5", "gen_7_6_6"])
    expect(reports.map((e) => e.context?.source)).toEqual(["server", "web"])
    expect(reports[1]!.properties?.value).toEqual(reports[0]!.properties?.value)
    expect(reports[1]!.properties?.currency).toEqual(reports[0]!.properties?.currency)
    expect(ms(reports[1]!.timestamp)).toBeGreaterThan(ms(reports[0]!.timestamp))
    expect(ms(reports[1]!.timestamp) - ms(reports[0]!.timestamp)).toBeLessThan(10_000)
  })

  it("rejects invalid options", () => {
    expect(() => Generator.generate({ people: 0 })).toThrow(/people/)
    expect(() => Generator.generate({ people: 1.5 })).toThrow(/people/)
    expect(() => Generator.generate({ people: 1, seed: -1 })).toThrow(/seed/)
    expect(() => Generator.generate({ people: 1, spanDays: 0 })).toThrow(/spanDays/)
    expect(() => Generator.generate({ people: 1, now: Number.NaN })).toThrow(/now/)
  })

  describe("2000 people", () => {
    const SEED = 20260601
    const events = Generator.generate({ people: 2000, seed: SEED, now: NOW })

    it("every event decodes with decodeEvent and its properties against the canonical vocabulary", () => {
      const failures: Array<string> = []
      for (const e of events) {
        const decoded = Contract.decodeEvent(e, NOW)
        if (Either.isLeft(decoded)) {
          failures.push(`${e.event_id}: ${JSON.stringify(decoded.left)}`)
          continue
        }
        const definition = Vocabulary.canonical[e.event]
        if (definition === undefined) {
          failures.push(`${e.event_id}: ${e.event} not in the vocabulary`)
          continue
        }
        const props = Vocabulary.decodeProperties(definition, decoded.right.properties)
        if (Either.isLeft(props)) failures.push(`${e.event_id}: ${JSON.stringify(props.left)}`)
      }
      expect(failures).toEqual([])
      expect(events.length).toBeGreaterThan(4000)
    })

    it("has unique, stable event ids and timestamps within spanDays before now, in journey order", () => {
      expect(new Set(events.map((e) => e.event_id)).size).toBe(events.length)
      for (const e of events) expect(e.event_id).toMatch(new RegExp(`^gen_${SEED}_\\d+_\\d+$`))
      expect(new Set(events.map((e) => personOf(e.event_id))).size).toBe(2000)

      const times = events.map((e) => ms(e.timestamp))
      for (const t of times) {
        expect(t).toBeGreaterThanOrEqual(NOW - 3 * DAY)
        expect(t).toBeLessThan(NOW)
      }
      // Sorted by time overall, and each journey's n increases with time.
      for (let i = 1; i < times.length; i++) expect(times[i]!).toBeGreaterThanOrEqual(times[i - 1]!)
      const lastSeq = new Map<string, number>()
      for (const e of events) {
        const p = personOf(e.event_id)
        expect(seqOf(e.event_id)).toBe((lastSeq.get(p) ?? 0) + 1)
        lastSeq.set(p, seqOf(e.event_id))
      }
      // ISO strings end in Z; some timestamps are epoch ms.
      const iso = events.filter((e) => typeof e.timestamp === "string")
      for (const e of iso) expect(e.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/)
      expect(events.length - iso.length).toBeGreaterThan(0)
    })

    it("respects a custom span", () => {
      const short = Generator.generate({ people: 300, seed: 5, now: NOW, spanDays: 0.5 })
      for (const e of short) {
        expect(ms(e.timestamp)).toBeGreaterThanOrEqual(NOW - 12 * HOUR)
        expect(ms(e.timestamp)).toBeLessThan(NOW)
      }
    })

    it("starts each journey anonymously and joins user_id to the device at sign-up", () => {
      const journeys = new Map<string, Array<Contract.EventWire>>()
      for (const e of events) {
        const p = personOf(e.event_id)
        journeys.set(p, [...(journeys.get(p) ?? []), e])
      }
      for (const [, j] of journeys) {
        expect(j[0]!.event).toBe("view_pricing")
        expect(j[0]!.user_id).toBeUndefined()
        expect(j[0]!.device_id).toMatch(/^(web|app)_[0-9a-f]{8}$/)
        const signUp = j.find((e) => e.event === "sign_up")
        if (signUp !== undefined) {
          expect(signUp.user_id).toMatch(/^usr_[0-9a-f]{8}$/)
          expect(signUp.device_id).toBe(j[0]!.device_id)
          expect(signUp.user?.email).toContain("@")
        }
      }
      expect(Generator.summary(events).people).toBe(2000)
    })

    it("sets fbc to the click time of the view", () => {
      const withFbc = events.filter((e) => e.event === "view_pricing" && e.context?.click_ids?.fbc !== undefined)
      expect(withFbc.length).toBeGreaterThan(100)
      for (const e of withFbc.filter((x) => seqOf(x.event_id) === 1)) {
        const m = /^fb\.1\.(\d+)\.(IwAR[\w-]+)$/.exec(e.context!.click_ids!.fbc!)
        expect(m).not.toBeNull()
        expect(Number(m![1])).toBe(ms(e.timestamp))
      }
    })

    it("covers the variety the pipeline has to handle", () => {
      const all = (pred: (e: Contract.EventWire) => boolean) => events.filter(pred).length
      const clickKeys = new Set(events.flatMap((e) => Object.keys(e.context?.click_ids ?? {})))
      expect([...clickKeys].sort()).toEqual(["fbc", "fbp", "gbraid", "gclid", "li_fat_id"])

      const emails = events.flatMap((e) => (e.user?.email === undefined ? [] : [e.user.email]))
      expect(emails.some((x) => /^[^@]*\+[^@]*@gmail\.com$/i.test(x))).toBe(true)
      expect(emails.some((x) => /@gmail\.com$/i.test(x) && /\..*\..*@/.test(x))).toBe(true)
      expect(emails.some((x) => x !== x.toLowerCase())).toBe(true)

      const phones = events.flatMap((e) => (e.user?.phone === undefined ? [] : [e.user.phone]))
      expect(phones.some((p) => p.startsWith("+49 1"))).toBe(true)
      expect(phones.some((p) => p.startsWith("0033 "))).toBe(true)
      expect(phones.some((p) => /^\(\d{3}\) 555-01\d{2}$/.test(p))).toBe(true)

      const firstEvents = events.filter((e) => seqOf(e.event_id) === 1)
      expect(firstEvents.some((e) => e.consent?.advertising === false)).toBe(true)
      expect(firstEvents.some((e) => e.consent?.advertising === true && e.consent.analytics === true)).toBe(true)
      expect(firstEvents.some((e) => e.consent === undefined)).toBe(true)

      expect(all((e) => e.event === "start_trial" && (e.context?.experiments?.length ?? 0) > 0)).toBeGreaterThan(0)
      expect(all((e) => e.event === "purchase" && typeof e.properties?.value === "string")).toBeGreaterThan(0)
      expect(all((e) => e.event === "purchase" && /^[a-z]{3}$/.test(String(e.properties?.currency)))).toBeGreaterThan(0)
      expect(Generator.summary(events).duplicateOrderReports).toBeGreaterThan(0)
      for (const e of events.filter((x) => x.event === "subscription_renewed")) {
        expect(e.properties?.subscription_id).toMatch(/^sub_[0-9a-f]{8}$/)
        expect(e.properties?.period).toBe(new Date(ms(e.timestamp)).toISOString().slice(0, 7))
      }
      expect(all((e) => e.event === "subscription_renewed")).toBeGreaterThan(0)
      expect(all((e) => e.event === "refund")).toBeGreaterThan(0)
      const leads = events.filter((e) => e.event === "qualified_lead")
      expect(leads.length).toBeGreaterThan(0)
      for (const e of leads) {
        expect(typeof e.properties?.company).toBe("string")
        expect(Number.isInteger(e.properties?.workspace_size)).toBe(true)
      }
      const upKeys = new Set(events.flatMap((e) => Object.keys(e.user_properties ?? {})))
      for (const k of ["plan", "lifecycle_stage", "acquisition_channel", "workspace_size", "last_paid_at"]) {
        expect(upKeys.has(k)).toBe(true)
      }
    })

    it("every duplicate order report repeats order_id, value and currency under a new event_id", () => {
      const byOrder = new Map<string, Array<Contract.EventWire>>()
      for (const e of events.filter((x) => x.event === "purchase")) {
        const id = String(e.properties?.order_id)
        byOrder.set(id, [...(byOrder.get(id) ?? []), e])
      }
      const repeated = [...byOrder.values()].filter((r) => r.length > 1)
      expect(repeated.length).toBe(Generator.summary(events).duplicateOrderReports)
      for (const [original, again] of repeated as Array<[Contract.EventWire, Contract.EventWire]>) {
        expect(again.event_id).not.toBe(original.event_id)
        expect(again.context?.source).toBe("web")
        expect(again.properties?.value).toEqual(original.properties?.value)
        expect(again.properties?.currency).toEqual(original.properties?.currency)
      }
    })
  })
})

describe("toNdjson / summary", () => {
  it("writes one JSON object per line and round-trips", () => {
    const events = Generator.generate({ people: 3, seed: 1, now: NOW })
    const text = Generator.toNdjson(events)
    expect(text.endsWith("\n")).toBe(true)
    expect(text.split("\n").length).toBe(events.length + 1)
    expect(Generator.fromNdjson(text)).toEqual(events)
    expect(Generator.toNdjson([])).toBe("")
  })

  it("summarises the seed fixture: 3 people, one duplicate order report", () => {
    const events = Generator.fromNdjson(readFileSync(FIXTURE, "utf8"))
    expect(Generator.summary(events)).toEqual({
      events: 10,
      people: 3,
      byEvent: { view_pricing: 2, sign_up: 2, start_trial: 1, purchase: 3, subscription_renewed: 1, qualified_lead: 1 },
      duplicateOrderReports: 1
    })
  })
})

describe("rebaseTime", () => {
  const fixture = Generator.fromNdjson(readFileSync(FIXTURE, "utf8"))
  const now = Date.UTC(2026, 11, 3, 15, 30, 0) // 2026-12-03T15:30:00Z

  it("moves the latest fixture event to exactly now - 1h and keeps the gaps", () => {
    const rebased = Generator.rebaseTime(fixture, now)
    expect(rebased.length).toBe(fixture.length)
    // evt_0006 (2026-04-24T09:00:00Z) is the latest event of the fixture.
    expect(byId(rebased, "evt_0006").timestamp).toBe("2026-12-03T14:30:00Z")
    expect(Math.max(...rebased.map((e) => ms(e.timestamp)))).toBe(now - HOUR)
    expect(ms(byId(rebased, "evt_0002").timestamp) - ms(byId(rebased, "evt_0001").timestamp)).toBe(217_000)
    for (let i = 0; i < fixture.length; i++) {
      expect(rebased[i]!.event_id).toBe(fixture[i]!.event_id)
      expect(ms(rebased[i]!.timestamp) - ms(fixture[i]!.timestamp)).toBe(now - HOUR - Date.UTC(2026, 3, 24, 9))
      expect(rebased[i]!.timestamp).toMatch(/Z$/)
    }
    // Nested times follow: the fbc click time and last_paid_at.
    expect(byId(rebased, "evt_0001").context?.click_ids?.fbc).toBe(
      `fb.1.${1776675000000 + now - HOUR - Date.UTC(2026, 3, 24, 9)}.IwAR_TESTCLICK`
    )
    expect(byId(rebased, "evt_0004").user_properties?.last_paid_at).toBe(byId(rebased, "evt_0004").timestamp)
    // The input is left untouched.
    expect(byId(fixture, "evt_0006").timestamp).toBe("2026-04-24T09:00:00Z")
  })

  it("keeps each timestamp's format (epoch ms in → ms out, offsets → Z) with sub-second precision", () => {
    const input = [
      { event_id: "a", event: "view_pricing", timestamp: 1_700_000_000_000, device_id: "d" },
      { event_id: "b", event: "sign_up", timestamp: "2023-11-14T23:13:20.500+01:00", device_id: "d" },
      { event_id: "c", event: "purchase", timestamp: "2023-11-14T22:20:00Z", device_id: "d" }
    ]
    const at = Date.UTC(2026, 0, 1, 0, 0, 0, 250)
    const out = Generator.rebaseTime(input, at)
    expect(out[2]!.timestamp).toBe("2025-12-31T23:00:00.250Z")
    expect(out[1]!.timestamp).toBe("2025-12-31T22:53:20.750Z")
    expect(out[0]!.timestamp).toBe(at - HOUR - (Date.UTC(2023, 10, 14, 22, 20) - 1_700_000_000_000))
    expect(typeof out[0]!.timestamp).toBe("number")
  })

  it("works on generated output and rejects unparseable timestamps", () => {
    const events = Generator.generate({ people: 200, seed: 3, now: NOW })
    const later = NOW + 10 * DAY
    const rebased = Generator.rebaseTime(events, later)
    expect(Math.max(...rebased.map((e) => ms(e.timestamp)))).toBe(later - HOUR)
    rebased.forEach((e, i) => expect(typeof e.timestamp).toBe(typeof events[i]!.timestamp))
    for (const e of rebased) expect(Either.isRight(Contract.decodeEvent(e, later))).toBe(true)
    expect(Generator.rebaseTime([], NOW)).toEqual([])
    expect(() => Generator.rebaseTime([{ event_id: "x", timestamp: "yesterday" }], NOW)).toThrow(/x/)
  })
})

describe("bin/generate", () => {
  it("rejects --people abc with a message naming --people and exit code 2", () => {
    const r = runCli(["--people", "abc"])
    expect(r.status).toBe(2)
    expect(r.stderr).toContain("--people")
    expect(r.stderr).toContain("abc")
    expect(r.stdout).toBe("")
  })

  it("rejects --people 0, a missing --people and unknown flags with exit code 2", () => {
    const zero = runCli(["--people", "0"])
    expect(zero.status).toBe(2)
    expect(zero.stderr).toContain("--people")
    const missing = runCli(["--seed", "3"])
    expect(missing.status).toBe(2)
    expect(missing.stderr).toContain("--people")
    const seed = runCli(["--people", "3", "--seed", "x"])
    expect(seed.status).toBe(2)
    expect(seed.stderr).toContain("--seed")
    const unknown = runCli(["--people", "3", "--peeple", "4"])
    expect(unknown.status).toBe(2)
    expect(unknown.stderr).toContain("--peeple")
  })

  it("writes the generator's NDJSON to stdout or --out, and a one-line summary to stderr", () => {
    const expected = Generator.toNdjson(Generator.generate({ people: 10, seed: 7, now: NOW }))
    const r = runCli(["--people", "10", "--seed", "7", "--now", String(NOW)])
    expect(r.status).toBe(0)
    expect(r.stdout).toBe(expected)
    expect(r.stderr.trim().split("\n").length).toBe(1)
    expect(r.stderr).toContain("generated 43 events for 10 people (seed 7")
    expect(r.stderr).toContain("duplicate_order_reports=1")

    const dir = mkdtempSync(join(tmpdir(), "tracklayer-gen-"))
    try {
      const file = join(dir, "out.ndjson")
      const w = runCli(["--people=10", "--seed=7", "--now=2026-06-01T12:00:00Z", "--out", file])
      expect(w.status).toBe(0)
      expect(w.stdout).toBe("")
      expect(readFileSync(file, "utf8")).toBe(expected)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
