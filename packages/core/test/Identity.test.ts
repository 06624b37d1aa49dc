import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { Contract, EventStore, Identity, Ingest, Vault } from "@tracklayer/core"
import { TestStore } from "@tracklayer/testkit"
import { Effect, FastCheck as fc, Layer } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

const sha = (s: string) => createHash("sha256").update(s).digest("hex")

const StoreLive = Layer.mergeAll(EventStore.layer, Identity.layer).pipe(
  Layer.provideMerge(Layer.orDie(Vault.layerEphemeral)),
  Layer.provideMerge(TestStore.layer)
)

const fixture = fs.readFileSync(path.join(__dirname, "../../../test/fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l))

const canonical = (input: unknown) => {
  const d = Contract.decodeEvent(input, Date.UTC(2026, 11, 1))
  if (d._tag === "Left") throw new Error(JSON.stringify(d.left))
  return d.right
}

/** Appends wire events and folds them into the graph, in the given order. */
const ingestAndProject = (inputs: ReadonlyArray<unknown>) =>
  Effect.gen(function*() {
    const store = yield* EventStore.EventStore
    const graph = yield* Identity.IdentityGraph
    const events = inputs.map(canonical)
    yield* store.append(events.map((event) => {
      const personKey = Ingest.personKeyOf(event)
      return {
        eventId: event.event_id,
        name: event.event,
        routable: true,
        personKey,
        partitionKey: Ingest.partitionKeyOf(personKey),
        dedupKey: event.event_id,
        event
      }
    }))
    const stored = yield* Effect.forEach(events, (e) => Effect.map(store.byEventId(e.event_id), (s) => s!))
    for (const s of stored) yield* graph.project([s])
    return stored
  })

describe("Identity: pure rules", () => {
  it("identifiersOf: keys in preference order; email/phone by SHA-256 of the join form; click ids", () => {
    const ids = Identity.identifiersOf(canonical(fixture[0]))
    assert.deepStrictEqual(ids.map((i) => i.key), [
      "device:web_91f3",
      "click:fbc:fb.1.1776675000000.IwAR_TESTCLICK",
      "click:gclid:Cj0KCQ-test-gclid-1"
    ])
    const signUp = Identity.identifiersOf(canonical(fixture[1]))
    // "Jane.Doe@Example.com" → "jane.doe@example.com" → SHA-256
    assert.strictEqual(Identity.emailJoinForm("  Jane.Doe@Example.com "), "jane.doe@example.com")
    assert.deepStrictEqual(signUp.map((i) => i.key), [
      "user:usr_8421",
      "device:web_91f3",
      "email:86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    ])
    assert.strictEqual(sha("jane.doe@example.com"), "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d")
    // "0033 6 12 34 56 78": the 00 international prefix means + → "33612345678"; a French national number joins too.
    assert.strictEqual(Identity.phoneJoinForm("0033 6 12 34 56 78", "FR"), "33612345678")
    assert.strictEqual(Identity.phoneJoinForm("06 12 34 56 78", "FR"), "33612345678")
    assert.strictEqual(Identity.phoneJoinForm("+49 151 23456789"), "4915123456789")
    assert.strictEqual(Identity.phoneJoinForm("n/a"), undefined)
  })

  it("assign: one user → that user's person; shared identifiers stop joining; two users never merge", () => {
    const u1 = Identity.personIdOfUser("u1")
    const u2 = Identity.personIdOfUser("u2")
    const result = Identity.assign(
      [
        { key: "device:d1", users: ["u1"], person: null },
        { key: "email:e1", users: [], person: null },
        { key: "device:tablet", users: ["u1", "u2"], person: null },
        { key: "email:e2", users: ["u2"], person: null },
        { key: "click:gclid:g", users: [], person: null }
      ],
      [["device:d1", "email:e1"], ["device:tablet", "email:e1"], ["device:tablet", "email:e2"], [
        "click:gclid:g",
        "email:e2"
      ]]
    )
    const by = Object.fromEntries(result.map((a) => [a.key, a.person]))
    assert.deepStrictEqual(by, {
      "device:d1": u1,
      "email:e1": u1,
      "device:tablet": null,
      "email:e2": u2,
      "click:gclid:g": u2
    })
    assert.notStrictEqual(u1, u2)
  })
})

describe("Identity graph (store)", () => {
  it.layer(StoreLive, { timeout: 120_000 })((it) => {
    it.effect("joins the fixture journeys: an anonymous device merges into the person who signs in on it", () =>
      Effect.gen(function*() {
        const graph = yield* Identity.IdentityGraph
        const stored = yield* ingestAndProject(fixture)
        const purchase = stored.find((s) => s.eventId === "evt_0005")! // only user_id, from the web source
        const identities = yield* graph.resolve([purchase])
        const id = identities.get(purchase.position)!.identity
        assert.strictEqual(id.personId, Identity.personIdOfUser("usr_8421"))
        assert.strictEqual(id.userId, "usr_8421")
        assert.strictEqual(id.deviceId, "web_91f3")
        assert.deepStrictEqual(id.emails, ["Jane.Doe@Example.com"])
        assert.deepStrictEqual(id.emailSha256, ["86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"])
        assert.strictEqual(id.clickIds["fbc"], "fb.1.1776675000000.IwAR_TESTCLICK")
        assert.strictEqual(id.clickIds["gclid"], "Cj0KCQ-test-gclid-1")
        // The click id keeps the time it was first seen (the pricing view), not the purchase time.
        assert.strictEqual(id.clickIdsSeenAt?.["gclid"], Date.parse("2026-04-20T09:12:03Z"))
        const person = yield* graph.person("user:usr_5530")
        assert.deepStrictEqual(person?.identifiers.map((i) => i.key).sort(), [
          "device:web_a7c2",
          "email:ebd2e1bfd81a9266b22311dc3c54bd7658a49317d486ff18046650bd6c3bdde0", // sha256("l.martin@example.fr")
          "phone:8a3e7886c9335e82e02299fa3e87b46e2de3b0c63d56003e30a5029394a47661", // sha256("33612345678")
          "user:usr_5530"
        ])
        // Merges are events in the log.
        const sql = yield* SqlClient.SqlClient
        const merges = yield* sql<{ body: { identifier: string; from: string | null; to: string } }>`
          SELECT body FROM tl_log WHERE kind = 'identity' AND body->>'identifier' = 'device:web_91f3' ORDER BY position`
        assert.deepStrictEqual(merges.map((m) => [m.body.from, m.body.to]), [
          [null, Identity.personIdOfAnonymous("click:fbc:fb.1.1776675000000.IwAR_TESTCLICK")],
          [
            Identity.personIdOfAnonymous("click:fbc:fb.1.1776675000000.IwAR_TESTCLICK"),
            Identity.personIdOfUser("usr_8421")
          ]
        ])
      }))

    it.effect("a device shared by two users stops joining and each event keeps its own user", () =>
      Effect.gen(function*() {
        const graph = yield* Identity.IdentityGraph
        const t = "2026-04-20T10:00:00Z"
        const stored = yield* ingestAndProject([
          {
            event_id: "sh_1",
            event: "sign_up",
            timestamp: t,
            user_id: "sh_u1",
            device_id: "sh_tablet",
            user: { email: "a@sh.example" }
          },
          {
            event_id: "sh_2",
            event: "sign_up",
            timestamp: t,
            user_id: "sh_u2",
            device_id: "sh_tablet",
            user: { email: "b@sh.example" }
          },
          { event_id: "sh_3", event: "view_pricing", timestamp: t, device_id: "sh_tablet" }
        ])
        const ids = yield* graph.resolve(stored)
        assert.strictEqual(ids.get(stored[0]!.position)!.identity.personId, Identity.personIdOfUser("sh_u1"))
        assert.deepStrictEqual(ids.get(stored[0]!.position)!.identity.emails, ["a@sh.example"])
        assert.deepStrictEqual(ids.get(stored[1]!.position)!.identity.emails, ["b@sh.example"])
        // The anonymous event on the shared tablet belongs to neither user.
        assert.strictEqual(ids.get(stored[2]!.position)!.identity.personId, undefined)
        assert.deepStrictEqual(ids.get(stored[2]!.position)!.identity.emails, [])
        const p1 = yield* graph.person("user:sh_u1")
        assert.deepStrictEqual(p1?.identifiers.map((i) => i.key), ["user:sh_u1", `email:${sha("a@sh.example")}`])
      }))

    it.effect("the partition into persons does not depend on arrival order (property)", () =>
      Effect.gen(function*() {
        const graph = yield* Identity.IdentityGraph
        const sql = yield* SqlClient.SqlClient
        const store = yield* EventStore.EventStore
        const journey = (ns: string) => [
          {
            event_id: `${ns}_1`,
            event: "view_pricing",
            timestamp: "2026-04-20T10:00:00Z",
            device_id: `${ns}_d1`,
            context: { click_ids: { gclid: `${ns}_g` } }
          },
          {
            event_id: `${ns}_2`,
            event: "sign_up",
            timestamp: "2026-04-20T10:01:00Z",
            user_id: `${ns}_u1`,
            device_id: `${ns}_d1`,
            user: { email: `${ns}@one.example` }
          },
          {
            event_id: `${ns}_3`,
            event: "view_pricing",
            timestamp: "2026-04-20T10:02:00Z",
            device_id: `${ns}_d2`,
            user: { email: `${ns}@one.example` }
          },
          {
            event_id: `${ns}_4`,
            event: "sign_up",
            timestamp: "2026-04-20T10:03:00Z",
            user_id: `${ns}_u2`,
            device_id: `${ns}_shared`
          },
          {
            event_id: `${ns}_5`,
            event: "sign_up",
            timestamp: "2026-04-20T10:04:00Z",
            user_id: `${ns}_u1`,
            device_id: `${ns}_shared`
          },
          {
            event_id: `${ns}_6`,
            event: "view_pricing",
            timestamp: "2026-04-20T10:05:00Z",
            device_id: `${ns}_d3`,
            context: { click_ids: { gclid: `${ns}_g` } }
          }
        ]
        const partition = (ns: string) =>
          Effect.map(
            sql<{ key: string; person_id: string | null }>`SELECT key, person_id FROM tl_identifiers
              WHERE key LIKE ${"%" + ns + "%"} OR key = ${"email:" + sha(`${ns}@one.example`)} ORDER BY key`,
            (rows) =>
              rows.map((r) => {
                const who = r.person_id === null
                  ? "-"
                  : r.person_id === Identity.personIdOfUser(`${ns}_u1`)
                  ? "u1"
                  : r.person_id === Identity.personIdOfUser(`${ns}_u2`)
                  ? "u2"
                  : "anon"
                return `${r.key.replaceAll(ns, "NS")}=${who}`
              })
          )
        const reference = yield* ingestAndProject(journey("ord_ref")).pipe(Effect.zipRight(partition("ord_ref")))
        assert.deepStrictEqual(
          [...reference].sort(),
          [
            "click:gclid:NS_g=u1",
            "device:NS_d1=u1",
            "device:NS_d2=u1",
            "device:NS_d3=u1",
            "device:NS_shared=-",
            // printf '%s' ord_ref@one.example | sha256sum
            "email:769cdfe451ab17baea46d736ba965344c275356ddc56d58c33111540057ea372=u1"
          ].sort()
        )
        let run = 0
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(fc.shuffledSubarray([0, 1, 2, 3, 4, 5], { minLength: 6, maxLength: 6 }), async (order) => {
              const ns = `ord_p${run++}`
              const events = journey(ns)
              const got = await Effect.runPromise(
                ingestAndProject(order.map((i) => events[i]!)).pipe(
                  Effect.zipRight(partition(ns)),
                  Effect.provideService(Identity.IdentityGraph, graph),
                  Effect.provideService(SqlClient.SqlClient, sql),
                  Effect.provideService(EventStore.EventStore, store)
                )
              )
              // The email key is a hash of the namespaced address, so compare everything else.
              const strip = (xs: ReadonlyArray<string>) => xs.filter((x) => !x.startsWith("email:")).sort()
              return JSON.stringify(strip(got)) === JSON.stringify(strip(reference)) &&
                got.filter((x) => x.startsWith("email:")).map((x) => x.split("=")[1]).join() === "u1"
            }),
            { numRuns: 8 }
          )
        )
      }))
  })
})
