/**
 * The vault on the real store (PGlite, or PostgreSQL with DATABASE_URL): personal fields sealed per person, keys
 * wrapped by the master key, crypto-shredding, tamper detection.
 */
import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { Contract, EventStore, Ingest, TrackLayerConfig, Vault } from "@tracklayer/core"
import { TestStore } from "@tracklayer/testkit"
import { ConfigProvider, Effect, Either, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

const MASTER = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGw=" // 32 bytes, base64
const OTHER_MASTER = "6f".repeat(32) // 32 bytes, hex

const Live = Layer.mergeAll(EventStore.layer).pipe(
  Layer.provideMerge(Vault.layer),
  Layer.provideMerge(Layer.orDie(Vault.layerMasterKey(MASTER))),
  Layer.provideMerge(TestStore.layer)
)

const fixture = fs.readFileSync(path.join(__dirname, "../../../test/fixtures/seed-journeys.ndjson"), "utf8")
  .trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)

/** A fixture event, decoded, with its ids renamed so every test has its own person. */
const canonical = (eventId: string, rename: (s: string) => string) => {
  const raw = JSON.stringify(fixture.find((e) => e["event_id"] === eventId)!)
  const decoded = Contract.decodeEvent(JSON.parse(rename(raw)), Date.UTC(2026, 11, 1))
  if (Either.isLeft(decoded)) throw new Error(JSON.stringify(decoded.left))
  return decoded.right
}

const toNew = (event: Contract.CanonicalEvent): EventStore.NewEvent => {
  const personKey = Ingest.personKeyOf(event)
  return {
    eventId: event.event_id,
    name: event.event,
    routable: true,
    partitionKey: Ingest.partitionKeyOf(personKey),
    personKey,
    dedupKey: event.event_id,
    event
  }
}

const PII = ["Jane.Doe@Example.com", "jane.doe@example.com", "Jane", "Doe", "203.0.113.7"]

/** The stored row of an event, as text. */
const rowText = (eventId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ body: string }>`SELECT body::text AS body FROM tl_log WHERE event_id = ${eventId}`
  ).pipe(
    Effect.map((rows) => rows[0]!.body)
  )

describe("Vault (pure)", () => {
  it("parses the master key as 64 hex characters or base64; anything else names TRACKLAYER_MASTER_KEY", () => {
    assert.isTrue(Either.isRight(Vault.parseMasterKey(OTHER_MASTER)))
    assert.isTrue(Either.isRight(Vault.parseMasterKey(MASTER)))
    assert.isTrue(Either.isRight(Vault.parseMasterKey(MASTER.replace(/=$/, ""))))
    const short = Vault.masterKeyFrom("c2hvcnQ=")
    assert.isTrue(Either.isLeft(short))
    if (Either.isRight(short)) return
    assert.strictEqual(short.left.field, "TRACKLAYER_MASTER_KEY")
    assert.match(
      short.left.message,
      /^TRACKLAYER_MASTER_KEY: must be 32 bytes written as 64 hex characters or as base64/
    )
    // Same bytes, same fingerprint, whatever the encoding.
    const hex = Buffer.from(MASTER, "base64").toString("hex")
    const a = Either.getOrThrow(Vault.masterKeyFrom(MASTER))
    const b = Either.getOrThrow(Vault.masterKeyFrom(hex))
    assert.strictEqual(a.fingerprint, b.fingerprint)
    assert.match(a.fingerprint, /^[0-9a-f]{16}$/)
    assert.notStrictEqual(a.fingerprint, Either.getOrThrow(Vault.masterKeyFrom(OTHER_MASTER)).fingerprint)
  })

  it("a missing TRACKLAYER_MASTER_KEY fails with a message saying what to do", () => {
    const result = Effect.runSync(
      Effect.either(Vault.masterKeyFromConfig).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
    )
    assert.isTrue(Either.isLeft(result))
    if (Either.isRight(result)) return
    assert.instanceOf(result.left, TrackLayerConfig.ConfigError)
    assert.strictEqual(
      result.left.message,
      "TRACKLAYER_MASTER_KEY: is not set: TrackLayer encrypts personal data at rest under it; generate one with " +
        "`openssl rand -base64 32` and keep it in your secret store: losing it makes every stored personal value " +
        "unreadable"
    )
  })

  it("AES-256-GCM round trip; a flipped bit, another context or another key fails authentication", () => {
    const key = Buffer.alloc(32, 7)
    const sealed = Vault.encrypt(key, "event:e1", Buffer.from("Jane.Doe@Example.com"))
    assert.match(sealed, /^[0-9a-f]+$/)
    // 12-byte IV + 16-byte tag + 20 bytes of plaintext, in hex.
    assert.strictEqual(sealed.length, (12 + 16 + 20) * 2)
    assert.strictEqual(Either.getOrThrow(Vault.decrypt(key, "event:e1", sealed)).toString(), "Jane.Doe@Example.com")
    const flipped = sealed.slice(0, -1) + (sealed.endsWith("0") ? "1" : "0")
    for (
      const [k, aad, c] of [
        [key, "event:e1", flipped],
        [key, "event:e2", sealed],
        [Buffer.alloc(32, 8), "event:e1", sealed],
        [key, "event:e1", "zz"]
      ] as const
    ) {
      const r = Vault.decrypt(k, aad, c)
      assert.isTrue(Either.isLeft(r))
      if (Either.isLeft(r)) assert.strictEqual(r.left._tag, "CiphertextInvalid")
    }
  })

  it("a data key wrapped by one master key does not unwrap with another, nor under another key ref", () => {
    const master = Buffer.from(MASTER, "base64")
    const dataKey = Buffer.alloc(32, 3)
    const wrapped = Vault.wrapKey(master, "user:usr_1", dataKey)
    assert.deepStrictEqual(Either.getOrThrow(Vault.unwrapKey(master, "user:usr_1", wrapped)), dataKey)
    assert.isTrue(Either.isLeft(Vault.unwrapKey(Buffer.from(OTHER_MASTER, "hex"), "user:usr_1", wrapped)))
    assert.isTrue(Either.isLeft(Vault.unwrapKey(master, "user:usr_2", wrapped)))
  })

  it("splits exactly the personal fields out of an event and merges them back", () => {
    const e = canonical("evt_0002", (s) => s)
    const { clear, pii } = Vault.splitPii(e)
    assert.deepStrictEqual(clear.user, { country: "DE" })
    assert.deepStrictEqual(clear.context, { source: "server" })
    assert.strictEqual(clear.user_properties, undefined)
    assert.strictEqual(clear.user_id, "usr_8421")
    assert.deepStrictEqual(pii, {
      user: { email: "Jane.Doe@Example.com", first_name: "Jane", last_name: "Doe" },
      context: {
        ip: "203.0.113.7",
        user_agent: "Mozilla/5.0 (X11; Linux x86_64)",
        page_url: "https://app.example.com/signup"
      },
      user_properties: { plan: "free", acquisition_channel: "paid_social", lifecycle_stage: "signed_up" }
    })
    assert.deepStrictEqual(Vault.mergePii(clear, pii), e)
    // An event without personal fields is stored as it is.
    const plain = canonical("evt_0006", (s) => s)
    assert.strictEqual(Vault.splitPii(plain).pii, undefined)
    // The key ref is the primary graph identifier: the user, else the device.
    assert.strictEqual(Vault.keyRefOf(e, "x"), "user:usr_8421")
    assert.strictEqual(Vault.keyRefOf(canonical("evt_0001", (s) => s), "x"), "device:web_91f3")
  })
})

describe("Vault (store)", () => {
  it.layer(Live, { timeout: 120_000 })((it) => {
    it.effect("round trip: the log holds no personal value in clear; reading gives the event back unchanged", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const e = canonical("evt_0002", (s) => s.replaceAll("evt_0002", "rt_0002").replaceAll("usr_8421", "usr_rt"))
        yield* store.append([toNew(e)])
        const text = yield* rowText("rt_0002")
        for (const p of PII) assert.notInclude(text.toLowerCase(), p.toLowerCase())
        const body = JSON.parse(text) as { $pii: Vault.Sealed; user: unknown }
        assert.strictEqual(body.$pii.k, "user:usr_rt")
        assert.match(body.$pii.c!, /^[0-9a-f]+$/)
        assert.deepStrictEqual(body.user, { country: "DE" })
        assert.deepStrictEqual((yield* store.byEventId("rt_0002"))!.event, e)
        const sql = yield* SqlClient.SqlClient
        const keys = yield* sql<{ key_ref: string; len: number; master_key_id: string }>`
          SELECT key_ref, length(wrapped) AS len, master_key_id FROM tl_person_keys WHERE key_ref = 'user:usr_rt'`
        const vault = yield* Vault.Vault
        // iv 12 + tag 16 + key 32 bytes, tagged with the master key's fingerprint.
        assert.deepStrictEqual(keys, [{ key_ref: "user:usr_rt", len: 60, master_key_id: vault.fingerprint }])
      }))

    it.effect("a consent update keyed by an email is sealed too", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const update = {
          event_id: "cu_pii_1",
          event: "consent_update",
          timestamp: Date.UTC(2026, 3, 20),
          user: { email: "Jane.Doe@Example.com" },
          consent: { advertising: false }
        } as Contract.CanonicalEvent
        assert.deepStrictEqual([...(yield* store.appendConsent([update]))], ["cu_pii_1"])
        const text = yield* rowText("cu_pii_1")
        assert.notInclude(text.toLowerCase(), "jane.doe@example.com")
        // Keyed by the email's identity-graph key: sha256("jane.doe@example.com").
        assert.strictEqual(
          JSON.parse(text).$pii.k,
          "email:86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
        )
        const all = yield* store.readAfter(EventStore.origin, 1000)
        assert.deepStrictEqual(all.find((e) => e.eventId === "cu_pii_1")!.event, update)
      }))

    it.effect("a wrong master key fails at startup, clearly, naming TRACKLAYER_MASTER_KEY", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const e = canonical("evt_0002", (s) => s.replaceAll("evt_0002", "wm_0002").replaceAll("usr_8421", "usr_wm"))
        yield* store.append([toNew(e)])
        const other = Either.getOrThrow(Vault.masterKeyFrom(OTHER_MASTER))
        const vault = yield* Vault.Vault
        const result = yield* Effect.either(Vault.make.pipe(Effect.provideService(Vault.MasterKey, other)))
        assert.isTrue(Either.isLeft(result))
        if (Either.isRight(result)) return
        assert.strictEqual(
          result.left.message,
          `TRACKLAYER_MASTER_KEY: does not match the master key that wrapped the stored person keys (fingerprint ` +
            `${other.fingerprint}, stored ${vault.fingerprint}); use the original key: with another one no stored ` +
            "personal data can be read"
        )
      }))

    it.effect("shredding a key: the event reads without its personal fields, never an error; no new key is made", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const vault = yield* Vault.Vault
        const sql = yield* SqlClient.SqlClient
        const rename = (s: string) => s.replaceAll("evt_0002", "sh_0002").replaceAll("usr_8421", "usr_sh")
        const e = canonical("evt_0002", rename)
        yield* store.append([toNew(e)])
        const before = yield* rowText("sh_0002")
        assert.strictEqual(yield* vault.shred(["user:usr_sh", "email:never-seen"], "era_test_1"), 1)
        assert.strictEqual(yield* vault.shred(["user:usr_sh"], "era_test_2"), 0)
        // The log row was not touched.
        assert.strictEqual(yield* rowText("sh_0002"), before)
        const read = (yield* store.byEventId("sh_0002"))!.event
        const { pii: _, clear } = Vault.splitPii(e)
        assert.deepStrictEqual(read, clear)
        assert.deepStrictEqual(read.user, { country: "DE" })
        assert.strictEqual(read.context?.ip, undefined)
        assert.strictEqual(read.user_properties, undefined)
        assert.deepStrictEqual(
          yield* vault.erasures(["user:usr_sh", "email:never-seen", "user:other"]),
          new Map([["user:usr_sh", "era_test_1"], ["email:never-seen", "era_test_1"]])
        )
        // A later event of the erased person: stored, accepted, without personal data, and no key comes back.
        const later = canonical("evt_0002", (s) => rename(s).replaceAll("sh_0002", "sh_0002b"))
        yield* store.append([toNew(later)])
        const laterText = yield* rowText("sh_0002b")
        for (const p of PII) assert.notInclude(laterText.toLowerCase(), p.toLowerCase())
        assert.deepStrictEqual(JSON.parse(laterText).$pii, { v: 1, k: "user:usr_sh", withheld: "erased" })
        assert.deepStrictEqual((yield* store.byEventId("sh_0002b"))!.event.user, { country: "DE" })
        const keyRow = yield* sql<{ wrapped: unknown; erasure_id: string }>`
          SELECT wrapped, erasure_id FROM tl_person_keys WHERE key_ref = 'user:usr_sh'`
        assert.deepStrictEqual(keyRow, [{ wrapped: null, erasure_id: "era_test_1" }])
        // Values sealed under the shredded key read as erased.
        const [sealed] = yield* vault.seal([{ keyRef: "user:usr_sh", context: "trait:x", plaintext: "pro" }])
        assert.strictEqual(sealed, undefined)
      }))

    it.effect("tampered ciphertext is detected: it reads as absent (logged), never as garbage", () =>
      Effect.gen(function*() {
        const store = yield* EventStore.EventStore
        const vault = yield* Vault.Vault
        const sql = yield* SqlClient.SqlClient
        const e = canonical("evt_0002", (s) => s.replaceAll("evt_0002", "tp_0002").replaceAll("usr_8421", "usr_tp"))
        yield* store.append([toNew(e)])
        const body = JSON.parse(yield* rowText("tp_0002")) as { $pii: { c: string } }
        const c = body.$pii.c
        const tampered = c.slice(0, 60) + (c[60] === "a" ? "b" : "a") + c.slice(61)
        // (An attacker's write: TrackLayer itself never updates the log.)
        yield* sql`UPDATE tl_log SET body = jsonb_set(body, '{$pii,c}', to_jsonb(${tampered}::text))
          WHERE event_id = 'tp_0002'`
        const read = (yield* store.byEventId("tp_0002"))!.event
        assert.deepStrictEqual(read.user, { country: "DE" })
        assert.strictEqual(read.context?.ip, undefined)
        const opened = yield* vault.open([{
          stored: { v: 1, k: "user:usr_tp", c: tampered },
          context: Vault.eventContext("tp_0002")
        }, {
          stored: { v: 1, k: "user:usr_tp", c },
          context: Vault.eventContext("tp_0002")
        }, {
          // The genuine ciphertext moved to another event fails too.
          stored: { v: 1, k: "user:usr_tp", c },
          context: Vault.eventContext("evt_other")
        }])
        assert.deepStrictEqual(opened.map((o) => o._tag), ["Invalid", "Clear", "Invalid"])
      }))

    it.effect("traits and payloads are sealed under their identifier / event and bound to where they live", () =>
      Effect.gen(function*() {
        const vault = yield* Vault.Vault
        const [trait] = yield* vault.sealTraits([{ identifier: "user:usr_tr", key: "plan", value: "\"pro\"" }])
        assert.notInclude(trait!.value, "pro\"")
        const stored = JSON.parse(trait!.value) as unknown
        assert.deepStrictEqual(yield* vault.openTraits([{ identifier: "user:usr_tr", key: "plan", value: stored }]), [{
          identifier: "user:usr_tr",
          key: "plan",
          value: "pro"
        }])
        // Moved to another key: unreadable, left out.
        assert.deepStrictEqual(
          yield* vault.openTraits([{ identifier: "user:usr_tr", key: "lifecycle_stage", value: stored }]),
          []
        )
        // Values stored before the vault existed are read as they are.
        assert.deepStrictEqual(yield* vault.openTraits([{ identifier: "u", key: "k", value: 3 }]), [{
          identifier: "u",
          key: "k",
          value: 3
        }])
      }))
  })
})
