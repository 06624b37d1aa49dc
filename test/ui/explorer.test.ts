/**
 * The delivery-log explorer in real headless Chromium (Debian's `chromium`, driven by playwright-core) against a
 * real gateway: sign in, search, open an event's detail, read the reconciliation and compare it with counts taken
 * from the store here, download the CSV, see and redrive dead letters, and check that markup in events stays text.
 * With TL_SCREENSHOTS=1 it writes the screenshots of docs/explorer.md to docs/images/explorer-*.png.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor } from "../support/harness.js"
import { expectedRows, EXPLORER_EVENTS, explorerHarnessOptions } from "./explorer-fixtures.js"

const CHROMIUM = "/usr/bin/chromium"
const present = fs.existsSync(CHROMIUM)
const inCi = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false"
if (!present && !inCi) {
  console.warn(
    `test/ui/explorer.test.ts skipped: ${CHROMIUM} is not installed (apt-get install -y chromium; .ci/run does it)`
  )
}
const SHOTS = process.env["TL_SCREENSHOTS"] === "1"
const IMAGES = path.join(__dirname, "../../docs/images")

/** The reconciliation counted from the store here, independently: every record read, the latest kept in JS. */
const countFromStore = (h: Harness, tz: string) =>
  h.sql(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const events = yield* sql<{ event_id: string; position: string; occurred_at: Date }>`
      SELECT event_id, position::text AS position, occurred_at FROM tl_log WHERE kind = 'track'`
    const records = yield* sql<
      { id: string; destination: string; position: string; outcome: string; reason: string | null }
    >`SELECT id::text AS id, destination, position::text AS position, outcome, reason FROM tl_delivery_records`
    const day = (d: Date) =>
      new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(d)
    const out: Record<string, Record<string, number>> = {}
    const bump = (k: string, col: string) => {
      out[k] = out[k] ?? {}
      out[k][col] = (out[k][col] ?? 0) + 1
    }
    for (const dest of ["ads", "amplitude", "dl"]) {
      for (const e of events) {
        const k = `${dest} ${day(e.occurred_at)}`
        bump(k, "received")
        const mine = records.filter((r) => r.destination === dest && r.position === e.position)
          .sort((a, b) => Number(a.id) - Number(b.id))
        const last = mine.at(-1)
        if (last === undefined) continue
        if (last.outcome === "dropped") {
          const r = last.reason ?? ""
          bump(
            k,
            r.startsWith("consent")
              ? "dropped_consent"
              : r.startsWith("not_mapped")
              ? "dropped_mapping"
              : r.startsWith("duplicate")
              ? "dropped_duplicate"
              : r.startsWith("invalid")
              ? "dropped_invalid"
              : "dropped_other"
          )
        } else {
          bump(k, "routed")
          bump(k, last.outcome === "dead_letter" ? "dead_lettered" : last.outcome)
        }
      }
    }
    return out
  }))

describe.skipIf(!present && !inCi)("delivery-log explorer in Chromium", () => {
  let h: Harness
  let browser: Browser
  let context: BrowserContext
  let page: Page
  const dialogs: Array<string> = []
  const shot = async (name: string) => {
    if (!SHOTS) return
    fs.mkdirSync(IMAGES, { recursive: true })
    await page.screenshot({ path: path.join(IMAGES, `explorer-${name}.png`), fullPage: true })
  }
  /** A reconciliation table as { "<day>": { "<column>": n } }. */
  const table = (dest: string) =>
    page.$$eval(`table#recon-${dest} tbody tr`, (rows) =>
      Object.fromEntries(rows.map((tr) => [
        tr.getAttribute("data-day"),
        Object.fromEntries(
          Array.from(tr.querySelectorAll("td[data-col]")).map((
            td
          ) => [td.getAttribute("data-col"), Number(td.textContent)])
        )
      ])))

  beforeAll(async () => {
    h = await startHarness(explorerHarnessOptions)
    await h.sandboxes["dl"]!.setFaults({ down: true })
    await h.post({ events: EXPLORER_EVENTS })
    const settled = await waitFor(
      async () => {
        const r = await fetch(`${h.url}/v1/explorer/reconciliation?from=2026-04-20&to=2026-04-21`, {
          headers: { authorization: `Bearer ${ADMIN_KEY}` }
        })
        const json = (await r.json()) as { rows: Array<{ pending: number; retrying: number }> }
        return json.rows.every((x) => x.pending === 0 && x.retrying === 0)
      },
      30_000,
      200
    )
    expect(settled).toBe(true)
  }, 60_000)
  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 20_000,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
    context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true })
    page = await context.newPage()
    page.setDefaultTimeout(10_000)
    page.on("dialog", (d) => {
      dialogs.push(d.message())
      void d.dismiss()
    })
  }, 30_000)
  afterAll(async () => {
    await browser?.close()
    await h?.close()
  })

  it("signs in through the form: a wrong key is refused, the right one sets an HttpOnly SameSite cookie", async () => {
    await page.goto(`${h.url}/ui`)
    await expect(page.locator("h1").textContent()).resolves.toBe("Sign in")
    expect(await page.getAttribute("#key", "type")).toBe("password")
    await page.fill("#key", "not-the-admin-key-000")
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#signin-error").textContent()).resolves.toBe("Wrong admin key.")
    expect(await context.cookies()).toEqual([])

    await page.fill("#key", ADMIN_KEY)
    await page.click("#signin-form button[type=submit]")
    await page.waitForURL(/\/ui\/events\?signed_in=1$/)
    const cookies = await context.cookies()
    expect(cookies.map((c) => [c.name, c.httpOnly, c.sameSite, c.secure, c.path])).toEqual([
      ["tl_session", true, "Strict", true, "/"]
    ])
    expect(cookies[0]!.value).toMatch(/^[A-Za-z0-9_-]{43}$/)
    // HttpOnly: page scripts cannot read it.
    expect(await page.evaluate(() => document.cookie)).toBe("")
  })

  it("searches an event by id and by user id", async () => {
    await page.fill("input[name=event_id]", "x_signup_a")
    await page.click("#search-form button[type=submit]")
    await page.waitForURL(/event_id=x_signup_a/)
    expect(await page.$$eval("#results tbody tr", (rows) => rows.map((r) => r.getAttribute("data-event-id")))).toEqual(
      ["x_signup_a"]
    )
    const badges = await page.$$eval("#results tbody tr .badge", (b) => b.map((x) => x.textContent))
    expect(badges).toEqual(["ads: dropped", "amplitude: accepted", "dl: dead_letter"])

    await page.fill("input[name=event_id]", "")
    await page.fill("input[name=user_id]", "usr_x_a")
    await page.click("#search-form button[type=submit]")
    await page.waitForURL(/user_id=usr_x_a/)
    expect(await page.$$eval("#results tbody tr", (rows) => rows.map((r) => r.getAttribute("data-event-id")))).toEqual(
      ["x_purchase_a", "x_signup_a", "x_anon_a"]
    )
    await shot("search")
  })

  it("opens the detail: a consent drop with its reason, and an accepted attempt with its masked payload", async () => {
    await page.click("#results a[href='/ui/events/x_signup_a']")
    await page.waitForURL(/\/ui\/events\/x_signup_a$/)
    expect(await page.textContent("h1")).toBe("Event x_signup_a")
    const ads = page.locator("article[data-destination=ads]")
    await expect(ads.locator(".badge").first().textContent()).resolves.toBe("dropped")
    await expect(ads.locator(".consent").textContent()).resolves.toBe(
      "denied (advertising): advertising denied at event time (inline consent)"
    )
    await expect(ads.locator(".reason").textContent()).resolves.toBe(
      "consent (advertising): advertising denied at event time (inline consent)"
    )
    const amp = page.locator("article[data-destination=amplitude]")
    const attempt = amp.locator("tr.attempt")
    expect(await attempt.count()).toBe(1)
    expect(await attempt.getAttribute("data-outcome")).toBe("accepted")
    expect(await attempt.locator("td").nth(3).textContent()).toBe("200")
    const payload = JSON.parse((await amp.locator("pre.payload").textContent())!)
    expect(payload).toMatchObject({ event_type: "sign_up", user_id: "usr_x_a", insert_id: "x_signup_a" })
    expect(payload.ip).toBe("203.0.113.0")
    const received = JSON.parse((await page.textContent("#received pre"))!)
    expect(received.user).toEqual({ email: "a***@example.com", country: "DE" })
    expect(await page.content()).not.toContain("ann@example.com")
    await shot("detail")
  })

  it("keeps markup in event names and properties as text (no script runs)", async () => {
    await page.goto(`${h.url}/ui/events/x_weird`)
    expect(await page.textContent("h1")).toBe("Event x_weird")
    const received = JSON.parse((await page.textContent("#received pre"))!)
    expect(received.event).toBe("<img src=x onerror=alert(1)>")
    expect(received.properties.note).toBe("<script>alert('x')</script>")
    expect(await page.locator("#received img").count()).toBe(0)
    await page.goto(`${h.url}/ui/events?event_id=x_weird`)
    expect(await page.locator("#results tbody td").nth(2).textContent()).toBe("<img src=x onerror=alert(1)>")
    expect(await page.locator("#results img").count()).toBe(0)
    expect(dialogs).toEqual([])
  })

  it("shows the reconciliation with the numbers counted from the store, in UTC and in Europe/Berlin", async () => {
    await page.click("nav a[href='/ui/reconciliation']")
    await page.waitForURL(/\/ui\/reconciliation$/)
    await page.fill("input[name=from]", "2026-04-20")
    await page.fill("input[name=to]", "2026-04-21")
    await page.click("#recon-form button[type=submit]")
    await page.waitForURL(/from=2026-04-20&to=2026-04-21/)
    const check = async (tz: "UTC" | "Europe/Berlin") => {
      const store = await countFromStore(h, tz)
      const expected = expectedRows(tz)
      for (const dest of ["ads", "amplitude", "dl"]) {
        const shown = await table(dest)
        expect(Object.keys(shown)).toEqual(["2026-04-20", "2026-04-21"])
        for (const day of ["2026-04-20", "2026-04-21"]) {
          const s = store[`${dest} ${day}`] ?? {}
          const cells = shown[day]!
          for (
            const col of [
              "received",
              "routed",
              "accepted",
              "rejected",
              "dead_lettered",
              "dropped_consent",
              "dropped_mapping",
              "dropped_duplicate",
              "dropped_invalid",
              "dropped_other"
            ]
          ) {
            expect([dest, day, col, cells[col]]).toEqual([dest, day, col, s[col] ?? 0])
          }
          const e = expected.find((r) => r.destination === dest && r.day === day)!
          expect([dest, day, cells["dropped_consent"], cells["accepted"], cells["pending"]]).toEqual([
            dest,
            day,
            e.dropped.consent,
            e.accepted,
            0
          ])
        }
        // One bar per day in the chart.
        expect(await page.locator(`section.recon[data-destination=${dest}] svg.chart g.day`).count()).toBe(2)
      }
    }
    await check("UTC")
    // Side by side: why amplitude and ads disagree (ads lost 4 events to consent, amplitude 1).
    const totals = await page.$$eval("#recon-totals tbody tr", (rows) =>
      rows.map((tr) => [
        tr.getAttribute("data-destination"),
        tr.querySelector("td[data-col=accepted]")?.textContent,
        tr.querySelector("td[data-col=dropped_consent]")?.textContent
      ]))
    expect(totals).toEqual([["ads", "2", "4"], ["amplitude", "5", "1"], ["dl", "0", "1"]])
    await shot("reconciliation")
    // The time zone selector submits the form by itself.
    await page.selectOption("select[name=tz]", "Europe/Berlin")
    await page.waitForURL(/tz=Europe%2FBerlin/)
    await check("Europe/Berlin")
    expect((await table("ads"))["2026-04-21"]!["accepted"]).toBe(2)
  })

  it("downloads the reconciliation as CSV, the same as the JSON endpoint's CSV", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#csv-link")])
    expect(download.suggestedFilename()).toBe("tracklayer-reconciliation-2026-04-20-to-2026-04-21.csv")
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tl-csv-")), "r.csv")
    await download.saveAs(file)
    const csv = fs.readFileSync(file, "utf8")
    const api = await (await fetch(
      `${h.url}/v1/explorer/reconciliation.csv?from=2026-04-20&to=2026-04-21&tz=Europe%2FBerlin`,
      { headers: { authorization: `Bearer ${ADMIN_KEY}` } }
    )).text()
    expect(csv).toBe(api)
    const lines = csv.trimEnd().split("\r\n")
    expect(lines.length).toBe(7)
    expect(lines[0]!.startsWith("destination,day,received,routed,dropped_consent,")).toBe(true)
    expect(lines[1]).toBe("ads,2026-04-20,6,0,3,0,1,1,1,0,0,6,0,0,0,0,0,0,,,,")
  })

  it("lists dead letters, shows health, and redrives from the dead-letter view", async () => {
    await page.click("nav a[href='/ui/health']")
    await page.waitForURL(/\/ui\/health$/)
    expect(await page.textContent("#health tr[data-destination=dl] td[data-col=dead_letters]")).toBe("5")
    expect(await page.textContent("#health tr[data-destination=amplitude] td[data-col=backlog]")).toBe("0")
    await shot("health")

    await page.click("nav a[href='/ui/dead-letters']")
    await page.waitForURL(/\/ui\/dead-letters$/)
    expect(
      (await page.$$eval("#dead-letters tbody tr", (rows) => rows.map((r) => r.getAttribute("data-event-id")))).sort()
    ).toEqual(["x_anon_a", "x_late", "x_purchase_a", "x_signup_a", "x_trial"])
    expect(await page.textContent("#redrive-table tr[data-destination=dl] td[data-col=dead_letters]")).toBe("5")
    await shot("dead-letters")

    await h.sandboxes["dl"]!.setFaults({ down: false })
    const form = page.locator("form.redrive[data-destination=dl]")
    await form.locator("input[name=reason]").fill("gave up after")
    await form.locator("button").click()
    await page.waitForSelector("form.redrive[data-destination=dl] output.ok")
    expect(await form.locator("output").textContent()).toBe("Redriven: 5 event(s). They are retried in the background.")
    const delivered = await waitFor(
      async () => (await h.sandboxes["dl"]!.events()).length === 5,
      20_000,
      200
    )
    expect(delivered).toBe(true)
  })

  it("signs out", async () => {
    await page.click("#sign-out")
    await page.waitForURL(/\/ui$/)
    expect(await page.textContent("h1")).toBe("Sign in")
    expect(await context.cookies()).toEqual([])
  })
})
