/**
 * The delivery-log explorer's JSON endpoints (`/v1/explorer/...`) and its session, through the real gateway: a known
 * set of events over two days with known consent drops, a duplicate order, an unmapped and an invalid event, and a
 * destination that is down (its events dead-letter, then a redrive delivers them).
 */
import { createHash } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor, WRITE_KEY } from "../support/harness.js"
import { expectedRows, EXPLORER_EVENTS, explorerHarnessOptions, signIn } from "../ui/explorer-fixtures.js"

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

describe("delivery-log explorer API", () => {
  let h: Harness
  const get = async (path: string, init: { key?: string | null; cookie?: string } = {}) => {
    const headers: Record<string, string> = {}
    if (init.key !== null) headers["authorization"] = `Bearer ${init.key ?? ADMIN_KEY}`
    if (init.cookie !== undefined) headers["cookie"] = init.cookie
    const res = await fetch(h.url + path, { headers })
    const text = await res.text()
    let json: any = undefined
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    return { status: res.status, headers: res.headers, text, json }
  }
  const RANGE = "from=2026-04-20&to=2026-04-21"

  beforeAll(async () => {
    h = await startHarness(explorerHarnessOptions)
    await h.sandboxes["dl"]!.setFaults({ down: true })
    const res = await h.post({ events: EXPLORER_EVENTS })
    expect(res.json.results.map((r: any) => r.status)).toEqual(EXPLORER_EVENTS.map(() => "accepted"))
    // Settled: nothing pending or retrying anywhere, and dl has given up on its 5 routed events.
    const settled = await waitFor(
      async () => {
        const r = await get(`/v1/explorer/reconciliation?${RANGE}`)
        return r.status === 200 && r.json.rows.every((x: any) => x.pending === 0 && x.retrying === 0) &&
          r.json.rows.filter((x: any) => x.destination === "dl").reduce(
              (n: number, x: any) => n + x.dead_lettered,
              0
            ) ===
            5
      },
      40_000,
      200
    )
    expect(settled).toBe(true)
  }, 60_000)
  afterAll(async () => {
    await h?.close()
  })

  it("reconciles per destination and UTC day, each event once by its latest record", async () => {
    const r = await get(`/v1/explorer/reconciliation?${RANGE}`)
    expect(r.status).toBe(200)
    expect(r.json).toMatchObject({ from: "2026-04-20", to: "2026-04-21", tz: "UTC" })
    expect(r.json.destinations).toEqual(["ads", "amplitude", "dl"])
    expect(r.json.days).toEqual(["2026-04-20", "2026-04-21"])
    expect(r.json.rows).toEqual(expectedRows("UTC"))
  })

  it("moves an event to another day in another time zone (x_late is 01:30 on the 21st in Berlin)", async () => {
    const r = await get(`/v1/explorer/reconciliation?${RANGE}&tz=Europe/Berlin`)
    expect(r.status).toBe(200)
    expect(r.json.tz).toBe("Europe/Berlin")
    expect(r.json.rows).toEqual(expectedRows("Europe/Berlin"))
    const ads = r.json.rows.filter((x: any) => x.destination === "ads")
    expect(ads.map((x: any) => [x.day, x.received, x.accepted, x.dropped.consent])).toEqual([
      ["2026-04-20", 6, 0, 3],
      ["2026-04-21", 3, 2, 1]
    ])
  })

  it("filters reconciliation by destination and exports it as CSV", async () => {
    const r = await get(`/v1/explorer/reconciliation?${RANGE}&destination=ads`)
    expect(r.json.destinations).toEqual(["ads"])
    expect(r.json.rows.length).toBe(2)
    const csv = await get(`/v1/explorer/reconciliation.csv?${RANGE}&destination=ads`)
    expect(csv.status).toBe(200)
    expect(csv.headers.get("content-type")).toBe("text/csv; charset=utf-8")
    expect(csv.headers.get("content-disposition")).toBe(
      "attachment; filename=\"tracklayer-reconciliation-2026-04-20-to-2026-04-21-ads.csv\""
    )
    expect(csv.text).toBe(
      "destination,day,received,routed,dropped_consent,dropped_window,dropped_mapping,dropped_duplicate," +
        "dropped_invalid,dropped_erased,dropped_other,dropped_total,sent,accepted,rejected,retrying,dead_lettered," +
        "pending,requests,request_statuses,request_record_count,request_error_counts\r\n" +
        "ads,2026-04-20,7,1,3,0,1,1,1,0,0,6,1,1,0,0,0,0,,,,\r\n" +
        "ads,2026-04-21,2,1,1,0,0,0,0,0,0,1,1,1,0,0,0,0,,,,\r\n"
    )
  })

  it("searches by event id, user id (the person's events), order id, name, destination outcome and time", async () => {
    const ids = async (q: string) => {
      const r = await get(`/v1/explorer/events?${q}`)
      expect(r.status).toBe(200)
      return r.json.events.map((e: any) => e.event_id)
    }
    const one = await get("/v1/explorer/events?event_id=x_purchase_a")
    expect(one.json.next_cursor).toBe(null)
    expect(one.json.events).toEqual([{
      event_id: "x_purchase_a",
      event: "purchase",
      timestamp: "2026-04-20T11:00:00.000Z",
      received_at: expect.any(String),
      user_id: "usr_x_a",
      person_key: "user:usr_x_a",
      dedup_key: "ord_x_1",
      duplicate_of: null,
      destinations: [
        {
          destination: "ads",
          outcome: "dropped",
          reason: expect.stringMatching(/^consent \(advertising\): advertising denied at event time/)
        },
        { destination: "amplitude", outcome: "accepted", reason: null },
        { destination: "dl", outcome: "dead_letter", reason: expect.stringMatching(/^gave up after 1s: /) }
      ]
    }])
    // The device's event before sign-in belongs to the user's person.
    expect(await ids("user_id=usr_x_a")).toEqual(["x_purchase_a", "x_signup_a", "x_anon_a"])
    expect(await ids("order_id=ord_x_1")).toEqual(["x_purchase_b", "x_purchase_a"])
    expect(await ids("event=sign_up")).toEqual(["x_late", "x_signup_a"])
    expect(await ids("destination=ads&outcome=accepted")).toEqual(["x_trial", "x_late"])
    expect(await ids("destination=amplitude&outcome=dropped")).toEqual([
      "x_anon_d",
      "x_short",
      "x_weird",
      "x_purchase_b"
    ])
    expect(await ids("outcome=dead_letter&event=purchase")).toEqual(["x_purchase_a"])
    expect(await ids("from=2026-04-20T12:00:00Z&to=2026-04-20T23:59:59Z")).toEqual([
      "x_late",
      "x_short",
      "x_weird",
      "x_purchase_b"
    ])
    expect(await ids("from=2026-04-21")).toEqual(["x_anon_d", "x_trial"])
  })

  it("pages newest first with a keyset cursor", async () => {
    const all = await get("/v1/explorer/events?limit=500")
    expect(all.json.events.map((e: any) => e.event_id)).toEqual([...EXPLORER_EVENTS].reverse().map((e) => e.event_id))
    const seen: Array<string> = []
    let cursor: string | null = ""
    let pages = 0
    while (cursor !== null) {
      const r: any = await get(`/v1/explorer/events?limit=4${cursor ? `&cursor=${cursor}` : ""}`)
      seen.push(...r.json.events.map((e: any) => e.event_id))
      cursor = r.json.next_cursor
      pages++
    }
    expect(pages).toBe(3)
    expect(seen).toEqual(all.json.events.map((e: any) => e.event_id))
  })

  it("shows an event's detail: masked event, identity, consent per destination, dedup and attempts", async () => {
    const r = await get("/v1/explorer/events/x_signup_a")
    expect(r.status).toBe(200)
    const d = r.json
    expect(d.received.user).toEqual({ email: "a***@example.com", country: "DE" })
    expect(d.received.context.ip).toBe("203.0.113.0")
    expect(d.identity).toMatchObject({
      person_key: "user:usr_x_a",
      user_id: "usr_x_a",
      consent: { analytics: { granted: true }, advertising: { granted: false } }
    })
    expect(d.identity.person_id).toMatch(/^per_[0-9a-f]{20}$/)
    expect(d.identity.identifiers.map((i: any) => i.key).sort()).toEqual(
      ["device:dev_x_a", `email:${sha256("ann@example.com")}`, "user:usr_x_a"].sort()
    )
    const at = (id: string) => d.destinations.find((x: any) => x.destination === id)
    expect(at("ads")).toMatchObject({
      status: "dropped",
      consent: {
        decision: "denied",
        purposes: ["analytics", "advertising"],
        purpose: "advertising",
        detail: "advertising denied at event time (inline consent)"
      },
      payload: null
    })
    expect(at("amplitude")).toMatchObject({
      status: "accepted",
      consent: { decision: "granted", purposes: ["analytics"] },
      duplicate: null
    })
    expect(at("amplitude").attempts.map((a: any) => [a.attempt, a.outcome, a.status])).toEqual([[1, "accepted", 200]])
    expect(at("amplitude").attempts[0].response).toContain("\"code\":200")
    // The transformed payload as sent, with the IP masked.
    expect(at("amplitude").payload).toMatchObject({
      event_type: "sign_up",
      user_id: "usr_x_a",
      device_id: "dev_x_a",
      insert_id: "x_signup_a",
      ip: "203.0.113.0"
    })
    expect(at("dl").status).toBe("dead_letter")
    expect(at("dl").attempts.at(-1).outcome).toBe("dead_letter")

    const dup = (await get("/v1/explorer/events/x_purchase_b")).json
    expect(dup.dedup).toEqual({ dedup_key: "ord_x_1", duplicate_of: "x_purchase_a", adjustment: null })
    expect(dup.destinations.map((x: any) => [x.destination, x.duplicate, x.consent.decision])).toEqual([
      ["ads", "duplicate: duplicate of x_purchase_a", "granted"],
      ["amplitude", "duplicate: duplicate of x_purchase_a", "granted"],
      ["dl", "duplicate: duplicate of x_purchase_a", "granted"]
    ])
    const weird = (await get("/v1/explorer/events/x_weird")).json
    expect(weird.destinations[0].consent.decision).toBe("not_checked")
    expect(weird.received.properties.note).toBe("<script>alert('x')</script>")

    const missing = await get("/v1/explorer/events/nope_404")
    expect(missing.status).toBe(404)
    expect(missing.json).toEqual({ error: { code: "not_found", message: "no event with event_id \"nope_404\"" } })
  })

  it("lists dead letters and reports destination health from the store", async () => {
    const r = await get("/v1/explorer/dead-letters?destination=dl")
    expect(r.status).toBe(200)
    expect(r.json.totals).toEqual({ dl: 5 })
    expect(r.json.dead_letters.map((x: any) => x.event_id).sort()).toEqual(
      ["x_anon_a", "x_late", "x_purchase_a", "x_signup_a", "x_trial"]
    )
    expect(r.json.dead_letters.every((x: any) => x.reason.startsWith("gave up after 1s: "))).toBe(true)
    expect((await get("/v1/explorer/dead-letters")).json.totals).toEqual({ dl: 5 })

    const health = await get("/v1/explorer/health")
    expect(health.status).toBe(200)
    const byId = Object.fromEntries(health.json.destinations.map((d: any) => [d.destination, d]))
    expect(Object.keys(byId).sort()).toEqual(["ads", "amplitude", "dl"])
    expect(byId["amplitude"]).toMatchObject({ state: "running", backlog: 0, retry_queue: 0, dead_letters: 0 })
    expect(byId["amplitude"].lag_seconds).toBe(null)
    expect(byId["dl"]).toMatchObject({ dead_letters: 5, retry_queue: 0, backlog: 0 })
    expect(byId["dl"].last_failure).toMatchObject({ outcome: "dead_letter" })
    expect(byId["dl"].last_failure.reason).toMatch(/^gave up after 1s: /)
  })

  it("rejects bad query parameters with a 400 naming the parameter", async () => {
    const cases: ReadonlyArray<readonly [string, string, string]> = [
      ["/v1/explorer/reconciliation?tz=Mars/Base", "tz", "tz: \"Mars/Base\" is not a time zone"],
      ["/v1/explorer/reconciliation.csv?tz=nowhere", "tz", "tz: \"nowhere\" is not a time zone"],
      ["/v1/explorer/reconciliation?from=2026-02-30", "from", "from: \"2026-02-30\" is not a day as YYYY-MM-DD"],
      ["/v1/explorer/reconciliation?from=2026-04-22&to=2026-04-21", "to", "to: must be on or after from"],
      ["/v1/explorer/reconciliation?from=2024-01-01&to=2026-01-01", "from", "from: the range is limited to 366"],
      ["/v1/explorer/events?outcome=lost", "outcome", "outcome: \"lost\" is not an outcome"],
      ["/v1/explorer/events?limit=0", "limit", "limit: \"0\" must be a whole number from 1 to 500"],
      ["/v1/explorer/events?from=yesterday", "from", "from: \"yesterday\" is not an ISO 8601 date"],
      ["/v1/explorer/events?cursor=abc", "cursor", "cursor: is not a cursor"],
      [
        "/v1/explorer/events?destination=nope",
        "destination",
        "destination: \"nope\" is not a destination; known: ads, amplitude, dl"
      ],
      ["/v1/explorer/events?colour=red", "colour", "colour: unknown query parameter; known: event_id"],
      ["/v1/explorer/events?event=a&event=b", "event", "event: given more than once"],
      ["/v1/explorer/dead-letters?limit=9999", "limit", "limit: \"9999\" must be a whole number from 1 to 500"]
    ]
    for (const [path, param, message] of cases) {
      const r = await get(path)
      expect([path, r.status, r.json.error.code, r.json.error.param]).toEqual([path, 400, "bad_request", param])
      expect(r.json.error.message.startsWith(message)).toBe(true)
    }
  })

  it("needs the admin key or an explorer session; state changes need the session's CSRF token", async () => {
    expect((await get("/v1/explorer/events", { key: null })).json).toEqual({
      error: {
        code: "unauthorized",
        message: "missing `Authorization: Bearer <admin key>` header or explorer session (sign in at /ui)"
      }
    })
    expect((await get("/v1/explorer/health", { key: WRITE_KEY })).status).toBe(401)
    expect((await get("/v1/explorer/health", { key: null, cookie: "tl_session=forged" })).status).toBe(401)

    const wrong = await fetch(`${h.url}/ui/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "key=not-the-admin-key&next=%2Fui%2Fhealth",
      redirect: "manual"
    })
    expect(wrong.status).toBe(401)
    expect(wrong.headers.get("set-cookie")).toBe(null)
    expect(await wrong.text()).toContain("Wrong admin key.")

    const s = await signIn(h.url, "/ui/health")
    expect(s.location).toBe("/ui/health?signed_in=1")
    expect(s.setCookie).toMatch(
      /^tl_session=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=\/; Secure; Max-Age=28800$/
    )
    const withCookie = await get("/v1/explorer/dead-letters", { key: null, cookie: s.cookie })
    expect(withCookie.status).toBe(200)
    expect(withCookie.json.totals).toEqual({ dl: 5 })

    // The CSRF token is on every page of the session, and required to sign out.
    const page = await fetch(`${h.url}/ui/health`, { headers: { cookie: s.cookie } })
    expect(page.status).toBe(200)
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'")
    const csrf = /<meta name="csrf-token" content="([A-Za-z0-9_-]+)">/.exec(await page.text())?.[1]
    expect(csrf).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const noToken = await fetch(`${h.url}/ui/logout`, { method: "POST", headers: { cookie: s.cookie } })
    expect(noToken.status).toBe(403)
    const out = await fetch(`${h.url}/ui/logout`, {
      method: "POST",
      headers: { cookie: s.cookie, "x-csrf-token": csrf! }
    })
    expect(out.status).toBe(200)
    expect(out.headers.get("set-cookie")).toBe("tl_session=; HttpOnly; SameSite=Strict; Path=/; Secure; Max-Age=0")
    expect((await get("/v1/explorer/health", { key: null, cookie: s.cookie })).status).toBe(401)
    // Pages send a browser without a session to sign in, and back afterwards.
    const away = await fetch(`${h.url}/ui/reconciliation?tz=UTC`, { headers: { cookie: s.cookie }, redirect: "manual" })
    expect(away.status).toBe(303)
    expect(away.headers.get("location")).toBe("/ui?next=%2Fui%2Freconciliation%3Ftz%3DUTC")
  })

  it("escapes user input on every page (an event name and a property carrying markup)", async () => {
    const s = await signIn(h.url)
    const search = await (await fetch(`${h.url}/ui/events?event_id=x_weird`, { headers: { cookie: s.cookie } })).text()
    expect(search).toContain("&lt;img src=x onerror=alert(1)&gt;")
    expect(search).not.toContain("<img src=x")
    const detail = await (await fetch(`${h.url}/ui/events/x_weird`, { headers: { cookie: s.cookie } })).text()
    expect(detail).toContain("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
    expect(detail).not.toContain("<script>alert")
    expect(detail).toContain("not_mapped: &quot;&lt;img src=x onerror=alert(1)&gt;&quot; is not in the vocabulary")
  })

  it(
    "redrives dead letters from a session (CSRF header) through the redrive endpoint; they are then delivered",
    async () => {
      const s = await signIn(h.url)
      const page = await (await fetch(`${h.url}/ui/dead-letters`, { headers: { cookie: s.cookie } })).text()
      const csrf = /<meta name="csrf-token" content="([A-Za-z0-9_-]+)">/.exec(page)![1]!
      const redrive = (headers: Record<string, string>, body: unknown) =>
        fetch(`${h.url}/ui/destinations/dl/redrive`, {
          method: "POST",
          headers: { "content-type": "application/json", cookie: s.cookie, ...headers },
          body: JSON.stringify(body)
        })
      const forged = await redrive({}, {})
      expect(forged.status).toBe(403)
      expect((await forged.json()).error.code).toBe("forbidden")

      await h.sandboxes["dl"]!.setFaults({ down: false })
      const none = await redrive({ "x-csrf-token": csrf }, { reason: "no such reason" })
      expect(none.status).toBe(200)
      expect((await none.json()).redriven).toBe(0)
      const res = await redrive({ "x-csrf-token": csrf }, { reason: "gave up after" })
      expect(res.status).toBe(200)
      expect((await res.json()).redriven).toBe(5)
      const delivered = await waitFor(
        async () => {
          const r = await get(`/v1/explorer/reconciliation?${RANGE}&destination=dl`)
          return r.json.rows.reduce((n: number, x: any) => n + x.accepted, 0) === 5
        },
        30_000,
        200
      )
      expect(delivered).toBe(true)
      expect((await get("/v1/explorer/dead-letters?destination=dl")).json).toEqual({ totals: {}, dead_letters: [] })
      expect((await h.sandboxes["dl"]!.events()).map((e) => e.insert_id).sort()).toEqual(
        ["ord_x_1", "x_anon_a", "x_late", "x_signup_a", "x_trial"]
      )
    },
    60_000
  )
})
