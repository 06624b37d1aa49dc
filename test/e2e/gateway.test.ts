/**
 * End to end through HTTP: the real gateway, a real store (PGlite, or PostgreSQL with DATABASE_URL) and the
 * Amplitude sandbox over HTTP.
 */
import { Generator } from "@tracklayer/testkit"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { ADMIN_KEY, type Harness, startHarness, waitFor, WRITE_KEY } from "../support/harness.js"

const fixture = fs.readFileSync(path.join(__dirname, "../fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>)

describe("gateway end to end", () => {
  let h: Harness
  beforeAll(async () => {
    h = await startHarness()
  })
  afterAll(async () => {
    await h?.close()
  })

  it("delivers 10,000 events sent concurrently to Amplitude exactly once each, correctly mapped", async () => {
    const now = Date.now()
    const all = Generator.generate({ people: 4000, seed: 11, now })
    const events = all.slice(0, 10_000) as Array<Record<string, any>>
    expect(events.length).toBe(10_000)
    const batches: Array<Array<unknown>> = []
    for (let i = 0; i < events.length; i += 500) batches.push(events.slice(i, i + 500))
    const responses = await Promise.all(batches.map((b) => h.post({ events: b })))
    expect(responses.map((r) => r.status)).toEqual(batches.map(() => 200))
    const results = responses.flatMap((r) => r.json.results as Array<{ event_id: string; status: string }>)
    expect(results.length).toBe(10_000)
    expect(results.filter((r) => r.status !== "accepted")).toEqual([])
    expect(results.map((r) => r.event_id)).toEqual(events.map((e) => e.event_id))

    // The dedup key of each event: the order id for purchases, the period for renewals, else the event id.
    const keyOf = (e: Record<string, any>) =>
      e.event === "purchase" ?
        e.properties.order_id
        : e.event === "refund" ?
        `refund:${e.properties.order_id}`
        : e.event === "subscription_renewed" ?
        `subscription_renewed:${e.properties.subscription_id}:${e.properties.period}`
        : e.event_id
    const expected = new Set(events.map(keyOf))
    const repeats = events.length - expected.size
    expect(repeats).toBeGreaterThan(0) // the generator repeats some orders; those must not be delivered twice

    const arrived = await waitFor(async () => (await h.sandboxStats()).events_stored >= expected.size, 120_000, 250)
    expect(arrived).toBe(true)
    await new Promise((r) => setTimeout(r, 500)) // nothing more may arrive
    const stored = await h.sandboxEvents()
    const stats = await h.sandboxStats()
    expect(stored.length).toBe(expected.size)
    expect(stats.duplicates).toBe(0) // no dedup key was ever sent twice
    expect(new Set(stored.map((s) => s.insert_id))).toEqual(expected)

    // Field mapping, checked on a purchase and on an event with an experiment.
    const purchase = events.find((e) =>
      e.event === "purchase" && typeof e.properties.value === "number" && e.properties.quantity === undefined
    )!
    const sent = stored.find((s) => s.insert_id === purchase.properties.order_id)!.event as Record<string, any>
    expect(sent.event_type).toBe("purchase")
    expect(sent.user_id).toBe(purchase.user_id)
    expect(sent.time).toBe(typeof purchase.timestamp === "number" ? purchase.timestamp : Date.parse(purchase.timestamp))
    expect(sent.revenue).toBe(purchase.properties.value)
    expect(sent.price).toBe(purchase.properties.value)
    expect(sent.event_properties.currency).toBe(String(purchase.properties.currency).toUpperCase())
    expect(sent.event_id).toBeUndefined()
    const withExperiment = events.find((e) => e.context?.experiments?.length === 1)!
    const sentExp = stored.find((s) => s.insert_id === withExperiment.event_id)!.event as Record<string, any>
    expect(sentExp.event_properties.experiment_key).toBe(withExperiment.context.experiments[0].experiment_key)
    expect(sentExp.event_properties.variant).toBe(withExperiment.context.experiments[0].variant)

    // A repeated order report is stored and explained as a duplicate of the other report, not delivered.
    const byOrder = new Map<string, Array<string>>()
    for (const e of events) {
      if (e.event === "purchase") byOrder.set(keyOf(e), [...(byOrder.get(keyOf(e)) ?? []), e.event_id])
    }
    const [a, b] = [...byOrder.values()].find((ids) => ids.length === 2)!
    const [xa, xb] = [(await h.explain(a!)).json, (await h.explain(b!)).json]
    const [dup, orig] = xa.duplicate_of !== null ? [xa, xb] : [xb, xa]
    expect(orig.duplicate_of).toBe(null)
    expect(dup.duplicate_of).toBe(orig.event_id)
    expect(dup.destinations[0]).toMatchObject({
      destination: "amplitude",
      status: "dropped",
      reason: `duplicate: duplicate of ${orig.event_id}`
    })
    expect(orig.destinations[0].status).toBe("accepted")
  }, 180_000)

  it("answers the same batch posted twice with duplicates and delivers nothing twice", async () => {
    const events = Generator.generate({ people: 5, seed: 99, now: Date.now() }).slice(0, 12)
    const first = await h.post({ events })
    expect(first.status).toBe(200)
    const firstStatuses = first.json.results.map((r: any) => r.status)
    expect(firstStatuses).toEqual(events.map(() => "accepted"))
    const ids = new Set(events.map((e) => e.event_id))
    await waitFor(
      async () =>
        (await h.sandboxEvents()).filter((s) => ids.has(String(s.event["insert_id"])) || s.insert_id === null).length >
          0,
      10_000
    )
    const second = await h.post({ events })
    expect(second.status).toBe(200)
    expect(second.json.results).toEqual(events.map((e) => ({ event_id: e.event_id, status: "duplicate" })))
    // Wait for the first delivery to complete, then make sure no second one happens.
    const one = events.find((e) => e.event === "view_pricing" || e.event === "sign_up")!
    await waitFor(async () => (await h.explain(one.event_id)).json.destinations[0].status === "accepted", 10_000)
    await new Promise((r) => setTimeout(r, 600))
    const x = await h.explain(one.event_id)
    expect(x.json.destinations[0].attempts.map((a: any) => a.outcome)).toEqual(["accepted"])
    expect((await h.sandboxEvents()).filter((s) => s.insert_id === one.event_id).length).toBe(1)
  }, 60_000)

  it("rejects bad input with the documented errors and stores nothing invalid", async () => {
    const good = { event_id: "bad_ok_1", event: "sign_up", timestamp: new Date().toISOString(), user_id: "usr_ok_1" }

    const malformed = await h.post(undefined, { raw: "{\"events\": [" })
    expect(malformed.status).toBe(400)
    expect(malformed.json.error.code).toBe("malformed_json")

    const notEnvelope = await h.post({ event: "sign_up" })
    expect(notEnvelope.status).toBe(400)
    expect(notEnvelope.json.error.message).toBe("unknown top-level field(s): event; the body is { \"events\": [...] }")

    const noKey = await h.post({ events: [good] }, { key: "" })
    expect(noKey.status).toBe(401)
    const wrongKey = await h.post({ events: [good] }, { key: "not_a_real_key_000000" })
    expect(wrongKey.status).toBe(401)
    expect(wrongKey.json.error.message).toBe("unknown write key")

    const tooMany = await h.post({
      events: Array.from({ length: 501 }, (_, i) => ({ ...good, event_id: `many_${i}` }))
    })
    expect(tooMany.status).toBe(413)
    expect(tooMany.json.error.message).toBe("501 events in one request; the limit is 500")

    const big = await h.post({
      events: [{ ...good, event_id: "big_1", properties: { blob: "x".repeat(1024 * 1024) } }]
    })
    expect(big.status).toBe(413)
    expect(big.json.error.code).toBe("payload_too_large")

    const mixed = await h.post({
      events: [
        good,
        { ...good, event_id: "bad_unknown_field", colour: "red" },
        { event_id: "bad_no_id", event: "sign_up", timestamp: good.timestamp },
        { ...good, event_id: "bad_ts", timestamp: "yesterday" },
        { ...good, event_id: "bad_ts_future", timestamp: "2999-01-01T00:00:00Z" },
        { ...good, event_id: "bad_name", event: "signup" },
        {
          ...good,
          event_id: "bad_value",
          event: "purchase",
          properties: { value: "12,50", currency: "EUR", order_id: "o1" }
        }
      ]
    })
    expect(mixed.status).toBe(200)
    const r = mixed.json.results
    expect(r.map((x: any) => [x.event_id, x.status])).toEqual([
      ["bad_ok_1", "accepted"],
      ["bad_unknown_field", "rejected"],
      ["bad_no_id", "rejected"],
      ["bad_ts", "rejected"],
      ["bad_ts_future", "rejected"],
      ["bad_name", "rejected"],
      ["bad_value", "rejected"]
    ])
    expect(r[1].errors).toEqual([{ path: "colour", message: "unknown field" }])
    expect(r[2].errors[0].path).toBe("user_id")
    expect(r[3].errors[0].path).toBe("timestamp")
    expect(r[4].errors).toEqual([{ path: "timestamp", message: "more than 24 hours in the future" }])
    expect(r[5].errors[0].message).toBe(
      "\"signup\" is not in the vocabulary; allowed: purchase, qualified_lead, refund, sign_up, start_trial, subscription_renewed, view_pricing"
    )
    expect(r[6].errors[0].path).toBe("properties.value")
    // Values the store cannot hold reject only their event, not the batch (a NUL, a lone surrogate, deep nesting).
    // (The deep one is written as text: even JSON.stringify overflows on 5,000 levels.)
    const deep = `{"a":`.repeat(5000) + "{}" + "}".repeat(5000)
    const events = [
      { ...good, event_id: "poison_ok" },
      { ...good, event_id: "poison_nul", properties: { method: "a\u0000b" } },
      { ...good, event_id: "poison_surrogate", properties: { method: "a\ud800b" } },
      { ...good, event_id: "poison_deep", properties: "DEEP" }
    ]
    const poison = await h.post(undefined, { raw: JSON.stringify({ events }).replace("\"DEEP\"", deep) })
    expect(poison.status).toBe(200)
    expect(poison.json.results.map((x: any) => [x.event_id, x.status, x.errors?.[0]?.message])).toEqual([
      ["poison_ok", "accepted", undefined],
      ["poison_nul", "rejected", "contains a NUL character or an unpaired UTF-16 surrogate"],
      ["poison_surrogate", "rejected", "contains a NUL character or an unpaired UTF-16 surrogate"],
      ["poison_deep", "rejected", "is nested deeper than 32 levels"]
    ])
    expect(poison.json.results[1].errors[0].path).toBe("properties.method")
    expect((await h.explain("poison_ok")).status).toBe(200)
    for (
      const id of [
        "bad_unknown_field",
        "bad_no_id",
        "bad_ts",
        "bad_ts_future",
        "bad_name",
        "bad_value",
        "many_0",
        "big_1",
        "poison_nul",
        "poison_deep"
      ]
    ) {
      expect((await h.explain(id)).status).toBe(404)
    }
    expect((await h.explain("bad_ok_1")).status).toBe(200)
  }, 60_000)

  it(
    "delivers the shared fixture journeys: the repeated order is dropped as a duplicate, money is normalised",
    async () => {
      const rebased = Generator.rebaseTime(fixture as Array<{ timestamp: string }>, Date.now()) as Array<
        Record<string, any>
      >
      const res = await h.post({ events: rebased })
      expect(res.status).toBe(200)
      expect(res.json.results.every((r: any) => r.status === "accepted")).toBe(true)
      await waitFor(async () => (await h.explain("evt_0201")).json.destinations[0].status === "accepted", 20_000)
      // Explain masks personal data in payloads too (the IP Amplitude received is shown as its /24).
      const first = (await h.explain("evt_0001")).json
      expect(first.destinations[0].payload.ip).toBe("203.0.113.0")
      expect(first.received.context.ip).toBe("203.0.113.0")
      expect(first.received.context.page_url).toBe("https://app.example.com/pricing")
      expect(JSON.stringify(first)).not.toContain("203.0.113.7")
      const dup = await h.explain("evt_0005")
      expect(dup.json.duplicate_of).toBe("evt_0004")
      expect(dup.json.destinations[0]).toMatchObject({
        destination: "amplitude",
        status: "dropped",
        reason: "duplicate: duplicate of evt_0004"
      })
      const stored = await h.sandboxEvents()
      const p1 = stored.filter((s) => s.insert_id === "ord_1001")
      expect(p1.length).toBe(1)
      expect(p1[0]!.event).toMatchObject({
        event_type: "purchase",
        user_id: "usr_8421",
        revenue: 129,
        price: 129,
        quantity: 1
      })
      const p2 = stored.find((s) => s.insert_id === "ord_2002")!.event as Record<string, any>
      expect(p2.revenue).toBe(49.9)
      expect(p2.event_properties.currency).toBe("EUR")
      const trial = stored.find((s) => s.insert_id === "evt_0003")!.event as Record<string, any>
      expect(trial.event_properties).toMatchObject({
        experiment_key: "onboarding_flow",
        variant: "guided",
        trial_plan: "pro",
        trial_days: 14
      })
      // The identity graph joined the anonymous device, the email and the click ids into usr_8421's person.
      const res8421 = await fetch(`${h.url}/v1/people/${encodeURIComponent("user:usr_8421")}`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` }
      })
      expect(res8421.status).toBe(200)
      const person = await res8421.json()
      expect(person.user_id).toBe("usr_8421")
      expect(person.identifiers.map((i: any) => i.key).sort()).toEqual([
        `click:fbc:${rebased[0]!.context.click_ids.fbc}`, // rebasing moved the click time with the events
        "click:gclid:Cj0KCQ-test-gclid-1",
        "device:web_91f3",
        // printf '%s' jane.doe@example.com | sha256sum
        "email:86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
        "user:usr_8421"
      ])
      expect(JSON.stringify(person)).not.toContain("Jane.Doe")
      expect(person.traits).toMatchObject({
        plan: "pro",
        lifecycle_stage: "active_customer",
        acquisition_channel: "paid_social",
        country: "DE"
      })
      expect(person.consent.advertising.granted).toBe(true)
      const byDevice = await fetch(`${h.url}/v1/people/${encodeURIComponent("device:web_a7c2")}`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` }
      })
      const p5530 = await byDevice.json()
      expect(p5530.user_id).toBe("usr_5530")
      expect(p5530.consent.advertising).toMatchObject({ granted: false, source: "event" })
      const unknown = await fetch(`${h.url}/v1/people/nobody`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
      expect(unknown.status).toBe(404)
      const noAdmin = await fetch(`${h.url}/v1/people/${encodeURIComponent("user:usr_8421")}`, {
        headers: { authorization: `Bearer ${WRITE_KEY}` }
      })
      expect(noAdmin.status).toBe(401)
      const renewal = stored.find((s) => s.insert_id === "subscription_renewed:sub_77:2026-04")!
      expect(renewal.event["event_type"]).toBe("subscription_renewed")
    },
    60_000
  )
})

describe("unknownEvents: store", () => {
  it("stores a name outside the vocabulary and explains that it is not routed", async () => {
    const h = await startHarness({ config: { unknownEvents: "store" } })
    try {
      const res = await h.post({
        events: [{ event_id: "u_1", event: "page_view", timestamp: new Date().toISOString(), device_id: "dev_12345" }]
      })
      expect(res.json.results).toEqual([{ event_id: "u_1", status: "accepted" }])
      await waitFor(async () => (await h.explain("u_1")).json.destinations[0].status !== "pending", 10_000)
      const x = await h.explain("u_1")
      expect(x.json.routable).toBe(false)
      expect(x.json.destinations[0]).toMatchObject({
        status: "dropped",
        reason: "not_mapped: \"page_view\" is not in the vocabulary (stored, not routed)"
      })
      expect((await h.sandboxStats()).events_received).toBe(0)
    } finally {
      await h.close()
    }
  }, 60_000)
})
