/**
 * Erasure through the real gateway (`DELETE /v1/people/:id`), on PGlite or PostgreSQL: after it no readable
 * personal data of the person remains anywhere in the database (every table and text/json/bytea column scanned),
 * other people are untouched, the erasure reached the Amplitude sandbox, pending deliveries stopped, and the log
 * still replays to a destination added afterwards.
 */
import type { SqlError } from "@effect/sql"
import { SqlClient } from "@effect/sql"
import { Database, EventStore, Identity, Vault } from "@tracklayer/core"
import { Generator, TestStore } from "@tracklayer/testkit"
import { Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type Harness, startHarness, TEST_MASTER_KEY, waitFor } from "../support/harness.js"

const fixture = fs.readFileSync(path.join(__dirname, "../fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as { event_id: string; timestamp: string })

/** Another person, with every kind of personal field. */
const maria = [
  {
    event_id: "evt_9901",
    event: "sign_up",
    timestamp: "2026-04-22T12:00:00Z",
    user_id: "usr_7001",
    device_id: "web_70017",
    user: {
      email: "Maria.Garcia@Example.org",
      phone: "+34 612 345 678",
      first_name: "Maria",
      last_name: "Garcia",
      city: "Valencia",
      postal_code: "46001",
      date_of_birth: "1990-05-17",
      country: "ES"
    },
    context: { source: "server", ip: "198.51.100.23", user_agent: "Mozilla/5.0 (Macintosh)" },
    user_properties: { plan: "team" }
  },
  {
    event_id: "evt_9902",
    event: "purchase",
    timestamp: "2026-04-22T12:05:00Z",
    user_id: "usr_7001",
    properties: { value: 49, currency: "EUR", order_id: "ord_7001" }
  }
]

const events = Generator.rebaseTime([...fixture, ...maria], Date.now())
const ids = events.map((e) => e.event_id)
const janeIds = ["evt_0001", "evt_0002", "evt_0003", "evt_0004", "evt_0005", "evt_0006"]
const sha = (s: string) => createHash("sha256").update(s).digest("hex")
const JANE_EMAIL_KEY = `email:${sha("jane.doe@example.com")}`

/** Jane's personal values: none may remain readable after the erasure. */
const JANE = [
  { needle: "jane.doe@example.com", caseInsensitive: true },
  { needle: "Jane", caseInsensitive: false },
  { needle: "Doe", caseInsensitive: false },
  { needle: "203.0.113.7", caseInsensitive: false }
]

/** Every value of every text, json, bytea and array column of every table in the store's schema, as text. */
const scanAll = (h: Harness) =>
  h.sql(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const columns = yield* sql<{ table_name: string; column_name: string }>`
      SELECT c.table_name, c.column_name FROM information_schema.columns c
      JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
      WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
        AND c.data_type IN ('text', 'jsonb', 'json', 'bytea', 'character varying', 'character', 'ARRAY')
      ORDER BY c.table_name, c.column_name`
    const values: Array<{ readonly table: string; readonly column: string; readonly value: string }> = []
    for (const c of columns) {
      const q = (name: string) => `"${name.replace(/"/g, "\"\"")}"`
      const rows = yield* sql.unsafe<{ v: string | null }>(
        `SELECT ${q(c.column_name)}::text AS v FROM ${q(c.table_name)}`
      )
      for (const r of rows) if (r.v !== null) values.push({ table: c.table_name, column: c.column_name, value: r.v })
    }
    return { tables: [...new Set(columns.map((c) => c.table_name))], values }
  }))

const hits = (
  scan: { readonly values: ReadonlyArray<{ table: string; column: string; value: string }> },
  needle: string,
  caseInsensitive = false
) =>
  scan.values.filter((v) =>
    caseInsensitive ? v.value.toLowerCase().includes(needle.toLowerCase()) : v.value.includes(needle)
  ).map((v) => `${v.table}.${v.column}`)

/** Reads the whole log through the event store (decrypting with the gateway's master key). */
const readLog = (h: Harness) =>
  h.sql(
    Effect.gen(function*() {
      const store = yield* EventStore.EventStore
      const all: Array<EventStore.StoredEvent> = []
      let cursor = EventStore.origin
      while (true) {
        const page: ReadonlyArray<EventStore.StoredEvent> = yield* store.readAfter(cursor, 7)
        if (page.length === 0) return all
        all.push(...page)
        cursor = { tx: page.at(-1)!.tx, position: page.at(-1)!.position }
      }
    }).pipe(
      Effect.provide(
        EventStore.layer.pipe(Layer.provide(Vault.layer), Layer.provide(Vault.layerMasterKey(TEST_MASTER_KEY)))
      )
    ) as Effect.Effect<Array<EventStore.StoredEvent>, SqlError.SqlError, SqlClient.SqlClient>
  )

const settled = (h: Harness, eventIds: ReadonlyArray<string>, destinations: ReadonlyArray<string>) =>
  waitFor(
    async () => {
      for (const id of eventIds) {
        const x = await h.explain(id)
        if (x.status !== 200) return false
        for (const d of destinations) {
          const s = x.json.destinations.find((v: any) => v.destination === d)?.status
          if (s === undefined || s === "pending" || s === "retrying") return false
        }
      }
      return true
    },
    30_000,
    200
  )

describe("erasure (DELETE /v1/people/:id)", () => {
  let scope: Scope.CloseableScope
  let store: Layer.Layer<any, any, never>
  let dir: string | undefined
  let h: Harness
  let logBefore: number
  let erasure: any

  beforeAll(async () => {
    // A store that outlives one gateway, so a second gateway can replay it afterwards.
    scope = await Effect.runPromise(Scope.make())
    const url = await Effect.runPromise(TestStore.databaseUrl)
    if (Option.isSome(url)) {
      const s = await Effect.runPromise(Scope.extend(TestStore.privateSchema(url.value), scope))
      store = Database.layerPostgres(Redacted.make(s.url))
    } else {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "tl-erasure-"))
      store = Database.layerPglite(dir)
    }
    store = store.pipe(Layer.tap((ctx) => Effect.provide(Database.migrate, ctx)))
    h = await startHarness({
      store,
      destinations: [
        { id: "amplitude", startFrom: "beginning" },
        // The same plugin without a secret key: it cannot forward erasures.
        { id: "archive", startFrom: "beginning", deletion: false }
      ]
    })
    const res = await h.post({ events })
    expect(res.json.results.map((r: any) => r.status)).toEqual(ids.map(() => "accepted"))
    expect(await settled(h, ids, ["amplitude", "archive"])).toBe(true)
  }, 120_000)

  afterAll(async () => {
    await h?.close()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
  })

  it("before: personal data is encrypted at rest, and readable through the gateway (masked) and the vault", async () => {
    const x = (await h.explain("evt_0002")).json
    expect(x.received.user).toEqual({ email: "J***@Example.com", first_name: "J***", last_name: "D***", country: "DE" })
    expect(x.received.context.ip).toBe("203.0.113.0")
    const person = (await h.person("user:usr_8421")).json
    expect(person.identifiers.map((i: any) => i.key)).toContain(JANE_EMAIL_KEY)
    expect(person.traits.plan).toBe("pro")
    const log = await readLog(h)
    expect(log.find((e) => e.eventId === "evt_0002")!.event.user?.email).toBe("Jane.Doe@Example.com")
    const scan = await scanAll(h)
    // The scan sees ids (positive control) but no personal value in clear, Jane's or anyone's.
    expect(hits(scan, "usr_8421").length).toBeGreaterThan(0)
    for (const p of JANE) expect(hits(scan, p.needle, p.caseInsensitive)).toEqual([])
    for (const p of ["Maria", "Garcia", "l.martin@example.fr", "198.51.100.23", "Valencia", "1990-05-17"]) {
      expect(hits(scan, p)).toEqual([])
    }
  })

  it("DELETE destroys the keys, stops pending deliveries, records the erasure and forwards it", async () => {
    // One more event of Jane's, stuck in the retry queue of a destination that is down.
    await h.sandboxes["archive"]!.setFaults({ down: true })
    const pending = Generator.rebaseTime([{
      event_id: "evt_8421_pending",
      event: "view_pricing",
      timestamp: new Date().toISOString(),
      user_id: "usr_8421",
      user: { email: "Jane.Doe@Example.com" },
      context: { source: "web", ip: "203.0.113.7" }
    }], Date.now() + 3_600_000)
    expect((await h.post({ events: pending })).json.results[0].status).toBe("accepted")
    expect(
      await waitFor(async () => {
        const d = (await h.explain("evt_8421_pending")).json.destinations
        return d.find((x: any) => x.destination === "archive")?.status === "retrying" &&
          d.find((x: any) => x.destination === "amplitude")?.status === "accepted"
      }, 20_000)
    ).toBe(true)
    logBefore = (await readLog(h)).length

    const res = await h.erase("user:usr_8421", "dpo@example.com")
    expect(res.status).toBe(200)
    erasure = res.json
    expect(erasure).toMatchObject({
      person_id: Identity.personIdOfUser("usr_8421"),
      user_id: "usr_8421",
      status: "erased",
      requester: "dpo@example.com",
      // user:usr_8421 (its events) and device:web_91f3 (the anonymous visit joined to it later)
      keys_destroyed: 2,
      // device:web_91f3, the email (hashed), fbc and gclid
      identifiers_erased: 4,
      pending_deliveries_removed: 1
    })
    expect(erasure.erasure_id).toMatch(/^era_[0-9a-f]{24}$/)
    expect(erasure.destinations.map((d: any) => [d.destination, d.outcome, d.status])).toEqual([
      ["amplitude", "accepted", 200],
      ["archive", "not_configured", null]
    ])
    const day = (await h.sandboxes["amplitude"]!.deletions())[0]?.day
    expect(erasure.destinations[0].detail).toBe(
      `Amplitude deletion job for user_id usr_8421 (staging) scheduled for ${day}`
    )
    expect(erasure.destinations[1].detail).toMatch(/^deletion not configured: set the Amplitude secretKey setting/)

    // The Amplitude sandbox got the User Privacy API request; the other sandbox got nothing.
    const deletions = await h.sandboxes["amplitude"]!.deletions()
    expect(deletions.map((d) => [d.user_ids, d.requester, d.ignore_invalid_id])).toEqual([[
      ["usr_8421"],
      "dpo@example.com",
      "True"
    ]])
    expect(await h.sandboxes["archive"]!.deletions()).toEqual([])

    // The pending delivery is dropped, with the reason, and never sent even once the destination is back.
    const reason = `erased: the person was erased (${erasure.erasure_id})`
    const stuck = (await h.explain("evt_8421_pending")).json.destinations.find((d: any) => d.destination === "archive")
    expect(stuck).toMatchObject({ status: "dropped", reason })
    await h.sandboxes["archive"]!.setFaults({ down: false })
    await new Promise((r) => setTimeout(r, 1000))
    expect((await h.sandboxes["archive"]!.events()).map((e) => e.insert_id)).not.toContain("evt_8421_pending")

    // Again: the same erasure (nothing failed, so nothing is forwarded again); unknown people are 404.
    const again = await h.erase("user:usr_8421")
    expect(again.status).toBe(200)
    expect(again.json).toMatchObject({ erasure_id: erasure.erasure_id, status: "already_erased" })
    expect((await h.sandboxes["amplitude"]!.deletions()).length).toBe(1)
    const unknown = await h.erase("user:nobody")
    expect(unknown.status).toBe(404)
    expect(unknown.json.error.code).toBe("not_found")
    // The erased person is shown by their erasure.
    const shown = await h.person("user:usr_8421")
    expect(shown.status).toBe(200)
    expect(shown.json).toMatchObject({ user_id: "usr_8421", identifiers: [], traits: {}, consent: {} })
    expect(shown.json.erasure.erasure_id).toBe(erasure.erasure_id)
    expect((await h.person("device:web_91f3")).json.erasure.erasure_id).toBe(erasure.erasure_id)
  }, 60_000)

  it("after: no readable personal data of the person remains in any table", async () => {
    const scan = await scanAll(h)
    expect(scan.tables).toEqual(expect.arrayContaining([
      "tl_log",
      "tl_identifiers",
      "tl_identity_edges",
      "tl_traits",
      "tl_consent_choices",
      "tl_people",
      "tl_delivery_payloads",
      "tl_delivery_records",
      "tl_retry_queue",
      "tl_person_keys",
      "tl_erasures",
      "tl_erasure_forwards"
    ]))
    expect(scan.values.length).toBeGreaterThan(100)
    for (const p of JANE) {
      expect({ needle: p.needle, found: hits(scan, p.needle, p.caseInsensitive) }).toEqual({
        needle: p.needle,
        found: []
      })
    }
    // Ids stay (they are in the log); the email's SHA-256 stays only where the docs say: the log's identity events
    // and the erasure tombstone (the suppression list) — never in the identity graph.
    expect(hits(scan, "usr_8421").length).toBeGreaterThan(0)
    expect([...new Set(hits(scan, JANE_EMAIL_KEY))].sort()).toEqual(["tl_log.body", "tl_person_keys.key_ref"])
    const graph = await h.sql(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ n: number }>`SELECT count(*)::int AS n FROM tl_identifiers
        WHERE person_id = ${Identity.personIdOfUser("usr_8421")} OR key = ${JANE_EMAIL_KEY}`)
    )
    expect(graph[0]!.n).toBe(0)
  })

  it("other people are untouched; the erased person's events still explain, without personal data", async () => {
    const maria = (await h.explain("evt_9901")).json
    expect(maria.received.user).toEqual({
      email: "M***@Example.org",
      phone: "***78",
      first_name: "M***",
      last_name: "G***",
      city: "V***",
      postal_code: "4***",
      date_of_birth: "1***",
      country: "ES"
    })
    // Explain masks the IP in the payload too; the destination got the real one.
    expect(maria.destinations.find((d: any) => d.destination === "amplitude").payload.ip).toBe("198.51.100.0")
    const person = (await h.person("user:usr_7001")).json
    expect(person.traits).toEqual({ plan: "team" })
    expect(person.identifiers.map((i: any) => i.key)).toContain(`email:${sha("maria.garcia@example.org")}`)
    expect((await h.person("user:usr_5530")).json.identifiers.map((i: any) => i.key)).toContain(
      `email:${sha("l.martin@example.fr")}`
    )
    expect((await h.explain("evt_0102")).json.received.user.email).toBe("l***@example.fr")
    const log = await readLog(h)
    expect(log.find((e) => e.eventId === "evt_9901")!.event.user).toEqual(
      maria.received && {
        email: "Maria.Garcia@Example.org",
        phone: "+34 612 345 678",
        first_name: "Maria",
        last_name: "Garcia",
        city: "Valencia",
        postal_code: "46001",
        date_of_birth: "1990-05-17",
        country: "ES"
      }
    )

    const purchase = await h.explain("evt_0004")
    expect(purchase.status).toBe(200)
    expect(purchase.json.received.user).toBeUndefined()
    expect(purchase.json.received.user_properties).toBeUndefined()
    expect(purchase.json.received.properties).toMatchObject({ order_id: "ord_1001", value: 129, currency: "USD" })
    const atAmplitude = purchase.json.destinations.find((d: any) => d.destination === "amplitude")
    // Delivered before the erasure; its stored payload was sealed under the destroyed key.
    expect(atAmplitude.status).toBe("accepted")
    expect(atAmplitude.payload).toBeNull()
    const signUp = (await h.explain("evt_0002")).json.received
    expect(signUp.user).toEqual({ country: "DE" })
    expect(signUp.context).toEqual({ source: "server" })
  })

  it(
    "the log still replays: same events, the person's without personal data; a new destination gets everyone else",
    async () => {
      const log = await readLog(h)
      expect(log.length).toBe(logBefore + 1)
      const erasureEvent = log.find((e) => e.kind === "erasure")!
      expect(erasureEvent.eventId).toBe(erasure.erasure_id)
      expect(erasureEvent.event).toEqual({
        erasure_id: erasure.erasure_id,
        person_id: Identity.personIdOfUser("usr_8421"),
        user_id: "usr_8421",
        keys_destroyed: 2,
        identifiers_erased: 4,
        pending_removed: 1
      })
      for (const id of [...janeIds, "evt_8421_pending"]) {
        const e = log.find((x) => x.eventId === id)!
        expect({ id, email: e.event.user?.email, ip: e.event.context?.ip, props: e.event.user_properties }).toEqual({
          id,
          email: undefined,
          ip: undefined,
          props: undefined
        })
      }
      expect(log.find((e) => e.eventId === "evt_0004")!.event.properties).toMatchObject({ order_id: "ord_1001" })

      // A second gateway on the same store, with a destination added now that replays from the beginning.
      const sentBefore = await h.sandboxes["amplitude"]!.events()
      const expected = sentBefore
        .filter((e) => e.event["user_id"] !== "usr_8421" && e.event["device_id"] !== "web_91f3")
        .map((e) => e.insert_id).sort()
      await h.close()
      h = await startHarness({
        store,
        destinations: [
          { id: "amplitude", startFrom: "beginning" },
          { id: "replay", startFrom: "beginning" }
        ]
      })
      expect(await settled(h, ids, ["replay"])).toBe(true)
      const replayed = (await h.sandboxes["replay"]!.events()).map((e) => e.insert_id).sort()
      expect(replayed).toEqual(expected)
      expect(replayed).toContain("ord_7001")
      for (const id of janeIds) {
        const d = (await h.explain(id)).json.destinations.find((x: any) => x.destination === "replay")
        expect({ id, status: d.status, reason: d.reason }).toEqual({
          id,
          status: "dropped",
          reason: `erased: the person was erased (${erasure.erasure_id})`
        })
      }
    },
    90_000
  )

  it("later events of the erased person are accepted but keep no personal data and are never sent", async () => {
    const later = Generator.rebaseTime([{
      event_id: "evt_8421_after",
      event: "view_pricing",
      timestamp: new Date().toISOString(),
      user_id: "usr_8421",
      device_id: "web_new_device",
      user: { email: "Jane.Doe@Example.com", first_name: "Jane", last_name: "Doe" },
      context: { source: "web", ip: "203.0.113.7" }
    }], Date.now() + 3_600_000)
    expect((await h.post({ events: later })).json.results[0].status).toBe("accepted")
    expect(await settled(h, ["evt_8421_after"], ["amplitude", "replay"])).toBe(true)
    const x = (await h.explain("evt_8421_after")).json
    for (const d of ["amplitude", "replay"]) {
      expect(x.destinations.find((v: any) => v.destination === d)).toMatchObject({
        status: "dropped",
        reason: `erased: the person was erased (${erasure.erasure_id})`
      })
    }
    expect(x.received.user).toBeUndefined()
    const scan = await scanAll(h)
    for (const p of JANE) expect(hits(scan, p.needle, p.caseInsensitive)).toEqual([])
    // The projector does not rebuild the person: the new device joins nobody visible.
    expect((await h.person("user:usr_8421")).json.identifiers).toEqual([])
    expect(
      await waitFor(async () => (await h.person("device:web_new_device")).status === 404, 10_000)
    ).toBe(true)
  }, 60_000)
})
