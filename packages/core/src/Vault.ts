/**
 * The vault: personal data at rest is encrypted per person, so that erasing a person is destroying keys
 * (crypto-shredding) and the append-only log never has to be rewritten.
 *
 * Key hierarchy:
 * - the master key (`TRACKLAYER_MASTER_KEY`, 32 bytes) lives only in configuration; it wraps
 * - one random data key per *key ref* in `tl_person_keys`. A key ref is an identity-graph key (`user:<id>`,
 *   `device:<id>`, `email:<sha256>`, `phone:<sha256>`): the primary identifier of the event that brought the data.
 *   A person owns the keys of all their identifiers, so erasing the person destroys all of them, including the key
 *   of the anonymous device whose events were joined to the person later.
 *
 * Everything is AES-256-GCM (node:crypto) with a fresh 96-bit IV per value and additional authenticated data that
 * names where the value lives (`event:<event_id>`, `identifier:<key>`, …), so a ciphertext copied elsewhere, edited,
 * or opened with the wrong key fails authentication instead of decrypting to garbage. Ciphertexts are hex: a text
 * search of the database can then never match a fragment of personal data by chance.
 *
 * Reading never fails because of erasure: a value whose key was destroyed reads as absent. A value that fails
 * authentication (tampering) also reads as absent, and is logged as an error.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Config, Context, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto"
import type { CanonicalEvent } from "./Contract.js"
import type { StoredEvent } from "./EventStore.js"
import { identifiersOf, type Resolved } from "./Identity.js"
import { ConfigError } from "./TrackLayerConfig.js"

// ---------------------------------------------------------------------------------------------------------------------
// What is personal data
// ---------------------------------------------------------------------------------------------------------------------

/** `user` fields sealed in stored events. `country` and the producer's own SHA-256 hashes stay in clear. */
export const USER_PII_FIELDS: ReadonlyArray<string> = [
  "email",
  "phone",
  "first_name",
  "last_name",
  "city",
  "region",
  "postal_code",
  "date_of_birth",
  "gender"
]

/** `context` fields sealed in stored events (the rest — source, click ids, experiments — stays in clear). */
export const CONTEXT_PII_FIELDS: ReadonlyArray<string> = ["ip", "user_agent", "page_url"]

/** The personal part of an event; `user_properties` are traits of a person and sealed as a whole. */
export interface PiiFields {
  readonly user?: Readonly<Record<string, unknown>>
  readonly context?: Readonly<Record<string, unknown>>
  readonly user_properties?: Readonly<Record<string, unknown>>
}

const pick = (o: Readonly<Record<string, unknown>> | undefined, keys: ReadonlyArray<string>, keep: boolean) => {
  if (o === undefined) return undefined
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(o)) if (keys.includes(k) === keep) out[k] = v
  return Object.keys(out).length > 0 ? out : undefined
}

/** Splits an event into what is stored in clear and its personal fields (undefined when it has none). */
export const splitPii = (
  e: CanonicalEvent
): { readonly clear: CanonicalEvent; readonly pii: PiiFields | undefined } => {
  const user = pick(e.user, USER_PII_FIELDS, true)
  const context = pick(e.context, CONTEXT_PII_FIELDS, true)
  const userProperties = e.user_properties !== undefined && Object.keys(e.user_properties).length > 0
    ? e.user_properties
    : undefined
  if (user === undefined && context === undefined && userProperties === undefined) return { clear: e, pii: undefined }
  const { context: _c, user: _u, user_properties: _p, ...rest } = e
  const clearUser = pick(e.user, USER_PII_FIELDS, false)
  const clearContext = pick(e.context, CONTEXT_PII_FIELDS, false)
  return {
    clear: {
      ...rest,
      ...(clearUser !== undefined ? { user: clearUser } : {}),
      ...(clearContext !== undefined ? { context: clearContext } : {})
    } as CanonicalEvent,
    pii: {
      ...(user !== undefined ? { user } : {}),
      ...(context !== undefined ? { context } : {}),
      ...(userProperties !== undefined ? { user_properties: userProperties } : {})
    }
  }
}

/** Puts personal fields back into an event stored in clear. */
export const mergePii = (clear: CanonicalEvent, pii: PiiFields | undefined): CanonicalEvent => {
  if (pii === undefined) return clear
  const user = pii.user !== undefined || clear.user !== undefined ? { ...clear.user, ...pii.user } : undefined
  const context = pii.context !== undefined || clear.context !== undefined
    ? { ...clear.context, ...pii.context }
    : undefined
  return {
    ...clear,
    ...(user !== undefined ? { user } : {}),
    ...(context !== undefined ? { context } : {}),
    ...(pii.user_properties !== undefined ? { user_properties: pii.user_properties } : {})
  } as CanonicalEvent
}

/**
 * The key ref an event's personal data is sealed under: its primary identifier in the identity graph (user id, else
 * device id, else email, phone, …), so that the person that identifier belongs to owns the key. `fallback` (the
 * event's person key) is used only for an event without any graph identifier.
 */
export const keyRefOf = (e: CanonicalEvent, fallback: string): string => identifiersOf(e)[0]?.key ?? fallback

// ---------------------------------------------------------------------------------------------------------------------
// Sealed values and the cryptography (pure)
// ---------------------------------------------------------------------------------------------------------------------

/** A sealed value: version, key ref, and hex(iv ‖ tag ‖ ciphertext). `withheld` instead of `c`: the key was gone. */
export interface Sealed {
  readonly v: 1
  readonly k: string
  readonly c?: string
  readonly withheld?: "erased"
}

/** A ciphertext failed authentication: it was changed, moved, or sealed under another key. */
export class CiphertextInvalid extends Schema.TaggedError<CiphertextInvalid>()("CiphertextInvalid", {
  context: Schema.String,
  message: Schema.String
}) {}

const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32

/** AES-256-GCM; returns hex(iv ‖ tag ‖ ciphertext). `aad` binds the ciphertext to where it is stored. */
export const encrypt = (key: Uint8Array, aad: string, plaintext: Uint8Array): string => {
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv("aes-256-gcm", key, iv)
  cipher.setAAD(Buffer.from(aad, "utf8"))
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), ct]).toString("hex")
}

/** The inverse of `encrypt`; a `CiphertextInvalid` when authentication fails (never garbage). */
export const decrypt = (key: Uint8Array, aad: string, hex: string): Either.Either<Buffer, CiphertextInvalid> => {
  const fail = () =>
    Either.left(
      new CiphertextInvalid({
        context: aad,
        message: `ciphertext for ${aad} failed authentication (changed, moved, or sealed under another key)`
      })
    )
  if (!/^(?:[0-9a-f]{2})+$/.test(hex)) return fail()
  const raw = Buffer.from(hex, "hex")
  if (raw.length < IV_BYTES + TAG_BYTES) return fail()
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, IV_BYTES))
    decipher.setAAD(Buffer.from(aad, "utf8"))
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
    return Either.right(Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]))
  } catch {
    return fail()
  }
}

const wrapContext = (keyRef: string) => `tracklayer/person-key/v1:${keyRef}`

/** Wraps a data key with the master key (bound to its key ref). */
export const wrapKey = (master: Uint8Array, keyRef: string, dataKey: Uint8Array): Buffer =>
  Buffer.from(encrypt(master, wrapContext(keyRef), dataKey), "hex")

/** Unwraps a data key; fails when the master key is not the one that wrapped it, or the row was changed. */
export const unwrapKey = (
  master: Uint8Array,
  keyRef: string,
  wrapped: Uint8Array
): Either.Either<Buffer, CiphertextInvalid> =>
  Either.flatMap(
    decrypt(master, wrapContext(keyRef), Buffer.from(wrapped).toString("hex")),
    (k) =>
      k.length === KEY_BYTES
        ? Either.right(k)
        : Either.left(
          new CiphertextInvalid({ context: wrapContext(keyRef), message: "unwrapped key has a bad length" })
        )
  )

/** Seals a UTF-8 string under a data key. */
export const sealWith = (dataKey: Uint8Array, keyRef: string, context: string, plaintext: string): Sealed => ({
  v: 1,
  k: keyRef,
  c: encrypt(dataKey, context, Buffer.from(plaintext, "utf8"))
})

/** Opens a sealed string with its data key. */
export const openWith = (
  dataKey: Uint8Array,
  sealed: Sealed,
  context: string
): Either.Either<string, CiphertextInvalid> =>
  sealed.c === undefined
    ? Either.left(new CiphertextInvalid({ context, message: "nothing sealed" }))
    : Either.map(decrypt(dataKey, context, sealed.c), (b) => b.toString("utf8"))

/** A sealed value from its stored form (an object, or its JSON text); undefined for anything else. */
export const parseSealed = (u: unknown): Sealed | undefined => {
  let v = u
  if (typeof u === "string") {
    if (!u.startsWith("{\"v\":1")) return undefined
    try {
      v = JSON.parse(u)
    } catch {
      return undefined
    }
  }
  if (typeof v !== "object" || v === null) return undefined
  const s = v as Record<string, unknown>
  return s.v === 1 && typeof s.k === "string" && (typeof s.c === "string" || s.withheld === "erased")
    ? (s as unknown as Sealed)
    : undefined
}

/** Where an event's personal fields live (the additional authenticated data of their ciphertext). */
export const eventContext = (eventId: string) => `event:${eventId}`
/** Where an identifier's raw value lives. */
export const identifierContext = (key: string) => `identifier:${key}`
/** Where a trait value lives. */
export const traitContext = (identifier: string, key: string) => `trait:${identifier}\u0000${key}`
/** Where a delivery payload lives. */
export const payloadContext = (destination: string, position: string) => `payload:${destination}\u0000${position}`

// ---------------------------------------------------------------------------------------------------------------------
// The master key
// ---------------------------------------------------------------------------------------------------------------------

/** The master key and its fingerprint (stored beside each wrapped key; reveals nothing about the key). */
export class MasterKey extends Context.Tag("@tracklayer/core/Vault/MasterKey")<MasterKey, {
  readonly key: Redacted.Redacted<Uint8Array>
  readonly fingerprint: string
}>() {}

const MASTER_KEY_NAME = "TRACKLAYER_MASTER_KEY"
const HOW_TO_GENERATE = "generate one with `openssl rand -base64 32` and keep it in your secret store: " +
  "losing it makes every stored personal value unreadable"

/** Parses 32 bytes written as 64 hex characters or as base64 (standard or URL-safe, padding optional). */
export const parseMasterKey = (text: string): Either.Either<Uint8Array, string> => {
  const t = text.trim()
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Either.right(new Uint8Array(Buffer.from(t, "hex")))
  if (/^[A-Za-z0-9+/]{43}=?$/.test(t) || /^[A-Za-z0-9_-]{43}=?$/.test(t)) {
    const b = Buffer.from(t.replace(/-/g, "+").replace(/_/g, "/"), "base64")
    if (b.length === KEY_BYTES) return Either.right(new Uint8Array(b))
  }
  return Either.left(
    `must be 32 bytes written as 64 hex characters or as base64 (44 characters); got ${t.length} characters; ` +
      HOW_TO_GENERATE
  )
}

/** The fingerprint of a master key: an HMAC of a constant, so it identifies the key without revealing it. */
export const fingerprintOf = (key: Uint8Array): string =>
  createHmac("sha256", key).update("tracklayer master key fingerprint v1").digest("hex").slice(0, 16)

/** A new random master key, base64. */
export const generateMasterKey = (): string => randomBytes(KEY_BYTES).toString("base64")

/** The master key from its text form; a `ConfigError` naming TRACKLAYER_MASTER_KEY when it is not valid. */
export const masterKeyFrom = (text: string): Either.Either<MasterKey["Type"], ConfigError> =>
  Either.mapBoth(parseMasterKey(text), {
    onLeft: (detail) => new ConfigError({ field: MASTER_KEY_NAME, detail }),
    onRight: (key) => ({ key: Redacted.make(key), fingerprint: fingerprintOf(key) })
  })

/** `TRACKLAYER_MASTER_KEY` as configuration (the raw secret). */
export const MasterKeyConfig = Config.redacted(MASTER_KEY_NAME).pipe(
  Config.withDescription("32-byte master key (hex or base64) that wraps the per-person keys of personal data")
)

/** The master key read from `TRACKLAYER_MASTER_KEY`; missing or invalid fails naming the variable. */
export const masterKeyFromConfig: Effect.Effect<MasterKey["Type"], ConfigError> = Effect.gen(function*() {
  const text = yield* Config.option(MasterKeyConfig).pipe(
    Effect.mapError((e) => new ConfigError({ field: MASTER_KEY_NAME, detail: String(e) }))
  )
  if (Option.isNone(text)) {
    return yield* new ConfigError({
      field: MASTER_KEY_NAME,
      detail: `is not set: TrackLayer encrypts personal data at rest under it; ${HOW_TO_GENERATE}`
    })
  }
  return yield* masterKeyFrom(Redacted.value(text.value))
})

/** The master key from configuration. */
export const layerMasterKeyConfig: Layer.Layer<MasterKey, ConfigError> = Layer.effect(MasterKey, masterKeyFromConfig)

/** A given master key (text as in TRACKLAYER_MASTER_KEY). */
export const layerMasterKey = (text: string): Layer.Layer<MasterKey, ConfigError> =>
  Layer.effect(MasterKey, masterKeyFrom(text))

// ---------------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------------

/** An event to seal (the shape of `EventStore.NewEvent`). */
export interface SealableEvent {
  readonly eventId: string
  readonly personKey: string
  readonly event: CanonicalEvent
}

/** One value to seal under a key ref; `context` says where it will be stored. */
export interface SealRequest {
  readonly keyRef: string
  readonly context: string
  readonly plaintext: string
}

/** One stored value to open (a `Sealed` object or its JSON text; anything else is returned as stored). */
export interface OpenRequest {
  readonly stored: unknown
  readonly context: string
}

/** A value as read: its plaintext, `erased` (its key was destroyed), or `invalid` (failed authentication). */
export type Opened =
  | { readonly _tag: "Clear"; readonly value: string }
  | { readonly _tag: "NotSealed"; readonly value: unknown }
  | { readonly _tag: "Erased"; readonly keyRef: string }
  | { readonly _tag: "Invalid"; readonly keyRef: string }

/** The vault service. */
export class Vault extends Context.Tag("@tracklayer/core/Vault")<Vault, {
  /** The master key's fingerprint. */
  readonly fingerprint: string
  /** Seals each event's personal fields under its key ref (creating keys as needed); PII of erased refs is dropped. */
  readonly sealEvents: <E extends SealableEvent>(events: ReadonlyArray<E>) => Effect.Effect<Array<E>, SqlError.SqlError>
  /** Opens stored event bodies; personal fields whose key is gone are left out. */
  readonly openEvents: (
    rows: ReadonlyArray<{ readonly eventId: string; readonly body: unknown }>
  ) => Effect.Effect<Array<CanonicalEvent>, SqlError.SqlError>
  /** Seals values (creating keys as needed); `undefined` where the key ref was erased (store nothing then). */
  readonly seal: (
    requests: ReadonlyArray<SealRequest | undefined>
  ) => Effect.Effect<Array<Sealed | undefined>, SqlError.SqlError>
  /** Opens values. */
  readonly open: (requests: ReadonlyArray<OpenRequest>) => Effect.Effect<Array<Opened>, SqlError.SqlError>
  /** Destroys the keys of `keyRefs` and leaves a tombstone for each (no new key is ever made for it); returns how many keys existed. */
  readonly shred: (keyRefs: ReadonlyArray<string>, erasureId: string) => Effect.Effect<number, SqlError.SqlError>
  /** The erasure that destroyed each of these key refs (absent when not erased). */
  readonly erasures: (keyRefs: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, string>, SqlError.SqlError>
  /** For each tracked event: the erasure of its person, when any of its identifiers (or its person key) was erased. */
  readonly erasedEvents: (
    events: ReadonlyArray<StoredEvent>,
    identities: ReadonlyMap<string, Resolved>
  ) => Effect.Effect<ReadonlyMap<string, string>, SqlError.SqlError>
  /** Seals trait rows (`value` is JSON text) under their identifier's key; rows of erased identifiers are left out. */
  readonly sealTraits: <T extends { readonly identifier: string; readonly key: string; readonly value: string }>(
    rows: ReadonlyArray<T>
  ) => Effect.Effect<Array<T>, SqlError.SqlError>
  /** Opens trait values as read from `tl_traits`; values that cannot be read are left out. */
  readonly openTraits: <T extends { readonly identifier: string; readonly key: string; readonly value: unknown }>(
    rows: ReadonlyArray<T>
  ) => Effect.Effect<Array<T>, SqlError.SqlError>
  /** Seals delivery payload rows (`payload` is JSON text) under the key of their event. */
  readonly sealPayloads: <
    T extends { readonly destination: string; readonly position: string; readonly payload: string }
  >(rows: ReadonlyArray<T>, events: ReadonlyArray<StoredEvent>) => Effect.Effect<Array<T>, SqlError.SqlError>
  /** Opens delivery payloads as read from `tl_delivery_payloads` (null when erased). */
  readonly openPayloads: <
    T extends { readonly destination: string; readonly position?: string; readonly payload: unknown }
  >(rows: ReadonlyArray<T>, position?: string) => Effect.Effect<Array<T>, SqlError.SqlError>
}>() {}

/** The vault on the current SQL client and master key. Fails when the master key is not the one in use. */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const master = yield* MasterKey
  const masterKey = Redacted.value(master.key)

  const [other] = yield* sql<{ master_key_id: string }>`
    SELECT master_key_id FROM tl_person_keys
    WHERE master_key_id IS NOT NULL AND master_key_id <> ${master.fingerprint} LIMIT 1`.pipe(
    Effect.mapError((e) => new ConfigError({ field: MASTER_KEY_NAME, detail: `cannot read tl_person_keys: ${e}` }))
  )
  if (other !== undefined) {
    return yield* new ConfigError({
      field: MASTER_KEY_NAME,
      detail: `does not match the master key that wrapped the stored person keys (fingerprint ${master.fingerprint}, ` +
        `stored ${other.master_key_id}); use the original key: with another one no stored personal data can be read`
    })
  }

  /** Data keys for `refs`: key ref → key, `null` when erased; created for refs without a row when `create`. */
  const keysFor = (refs: ReadonlyArray<string>, create: boolean) =>
    Effect.gen(function*() {
      const out = new Map<string, Buffer | null>()
      const unique = [...new Set(refs)]
      if (unique.length === 0) return out
      const read = (wanted: ReadonlyArray<string>) =>
        sql<{ key_ref: string; wrapped: Uint8Array | null }>`
          SELECT key_ref, wrapped FROM tl_person_keys WHERE key_ref = ANY(${wanted}::text[])`
      const take = (rows: ReadonlyArray<{ key_ref: string; wrapped: Uint8Array | null }>) =>
        Effect.forEach(rows, (r) => {
          if (r.wrapped === null) return Effect.sync(() => void out.set(r.key_ref, null))
          const k = unwrapKey(masterKey, r.key_ref, r.wrapped)
          if (Either.isRight(k)) return Effect.sync(() => void out.set(r.key_ref, k.right))
          // A wrapped key the master key cannot open was changed in the database: its data is unreadable.
          return Effect.logError(`vault: the person key ${r.key_ref} failed authentication; treating it as destroyed`)
            .pipe(Effect.tap(() => out.set(r.key_ref, null)))
        }, { discard: true })
      yield* take(yield* read(unique))
      // Sorted, so concurrent writers insert keys in the same order and cannot deadlock on them.
      const missing = unique.filter((r) => !out.has(r)).sort()
      if (!create || missing.length === 0) return out
      yield* sql`INSERT INTO tl_person_keys ${
        sql.insert(missing.map((key_ref) => ({
          key_ref,
          wrapped: wrapKey(masterKey, key_ref, randomBytes(KEY_BYTES)),
          master_key_id: master.fingerprint
        })))
      } ON CONFLICT (key_ref) DO NOTHING`
      // Re-read: a concurrent writer may have created (or an erasure tombstoned) the key first.
      yield* take(yield* read(missing))
      return out
    })

  const seal = Effect.fn("Vault.seal")(function*(requests: ReadonlyArray<SealRequest | undefined>) {
    const keys = yield* keysFor(requests.flatMap((r) => (r ? [r.keyRef] : [])), true)
    return requests.map((r): Sealed | undefined => {
      if (r === undefined) return undefined
      const k = keys.get(r.keyRef)
      return k ? sealWith(k, r.keyRef, r.context, r.plaintext) : undefined
    })
  })

  const open = Effect.fn("Vault.open")(function*(requests: ReadonlyArray<OpenRequest>) {
    const parsed = requests.map((r) => parseSealed(r.stored))
    const keys = yield* keysFor(parsed.flatMap((s) => (s && s.c !== undefined ? [s.k] : [])), false)
    const out: Array<Opened> = []
    for (const [i, r] of requests.entries()) {
      const s = parsed[i]
      if (s === undefined) {
        out.push({ _tag: "NotSealed", value: r.stored })
        continue
      }
      const k = keys.get(s.k)
      if (!k || s.c === undefined) {
        out.push({ _tag: "Erased", keyRef: s.k })
        continue
      }
      const plain = openWith(k, s, r.context)
      if (Either.isLeft(plain)) {
        yield* Effect.logError(`vault: ${plain.left.message}`)
        out.push({ _tag: "Invalid", keyRef: s.k })
      } else {
        out.push({ _tag: "Clear", value: plain.right })
      }
    }
    return out
  })

  const sealEvents = <E extends SealableEvent>(events: ReadonlyArray<E>) =>
    Effect.gen(function*() {
      const parts = events.map((e) => ({ e, ...splitPii(e.event), keyRef: keyRefOf(e.event, e.personKey) }))
      const sealed = yield* seal(parts.map((p) =>
        p.pii === undefined
          ? undefined
          : { keyRef: p.keyRef, context: eventContext(p.e.eventId), plaintext: JSON.stringify(p.pii) }
      ))
      return parts.map((p, i): E => {
        if (p.pii === undefined) return p.e
        // The key ref was erased: the person asked to be forgotten, so their new personal data is not kept.
        const $pii: Sealed = sealed[i] ?? { v: 1, k: p.keyRef, withheld: "erased" }
        return { ...p.e, event: { ...p.clear, $pii } as CanonicalEvent }
      })
    }).pipe(Effect.withSpan("Vault.sealEvents"))

  const openEvents = (rows: ReadonlyArray<{ readonly eventId: string; readonly body: unknown }>) =>
    Effect.gen(function*() {
      const bodies = rows.map((r) => r.body as CanonicalEvent & { readonly $pii?: unknown })
      const opened = yield* open(
        bodies.map((b, i) => ({ stored: b.$pii ?? null, context: eventContext(rows[i]!.eventId) }))
      )
      return bodies.map((b, i): CanonicalEvent => {
        if (b.$pii === undefined) return b
        const { $pii: _, ...clear } = b
        const o = opened[i]!
        return o._tag === "Clear" ? mergePii(clear as CanonicalEvent, JSON.parse(o.value) as PiiFields) : clear
      })
    }).pipe(Effect.withSpan("Vault.openEvents"))

  const shred = Effect.fn("Vault.shred")(function*(keyRefs: ReadonlyArray<string>, erasureId: string) {
    const refs = [...new Set(keyRefs)]
    if (refs.length === 0) return 0
    const destroyed = yield* sql<{ key_ref: string }>`
      UPDATE tl_person_keys SET wrapped = NULL, master_key_id = NULL, shredded_at = now(), erasure_id = ${erasureId}
      WHERE key_ref = ANY(${refs}::text[]) AND wrapped IS NOT NULL RETURNING key_ref`
    // Tombstones for refs without a key yet, so that none is ever created for them.
    yield* sql`INSERT INTO tl_person_keys ${
      sql.insert(refs.map((key_ref) => ({ key_ref, wrapped: null, shredded_at: new Date(), erasure_id: erasureId })))
    } ON CONFLICT (key_ref) DO NOTHING`
    return destroyed.length
  })

  const erasures = Effect.fn("Vault.erasures")(function*(keyRefs: ReadonlyArray<string>) {
    const refs = [...new Set(keyRefs)]
    if (refs.length === 0) return new Map<string, string>()
    const rows = yield* sql<{ key_ref: string; erasure_id: string | null }>`
      SELECT key_ref, erasure_id FROM tl_person_keys WHERE wrapped IS NULL AND key_ref = ANY(${refs}::text[])`
    return new Map(rows.map((r) => [r.key_ref, r.erasure_id ?? "unknown erasure"])) as ReadonlyMap<string, string>
  })

  const erasedEvents = (events: ReadonlyArray<StoredEvent>, identities: ReadonlyMap<string, Resolved>) =>
    Effect.gen(function*() {
      const keysOf = (e: StoredEvent) => [e.personKey, ...(identities.get(e.position)?.keys ?? [])]
      const erased = yield* erasures(events.flatMap(keysOf))
      const out = new Map<string, string>()
      if (erased.size === 0) return out as ReadonlyMap<string, string>
      for (const e of events) {
        const by = keysOf(e).map((k) => erased.get(k)).find((x) => x !== undefined)
        if (by !== undefined) out.set(e.position, by)
      }
      return out as ReadonlyMap<string, string>
    })

  const sealTraits = <T extends { readonly identifier: string; readonly key: string; readonly value: string }>(
    rows: ReadonlyArray<T>
  ) =>
    Effect.map(
      seal(rows.map((r) => ({ keyRef: r.identifier, context: traitContext(r.identifier, r.key), plaintext: r.value }))),
      (sealed) =>
        rows.flatMap((
          r,
          i
        ) => (sealed[i] === undefined ? [] : [{ ...r, value: JSON.stringify({ $sealed: sealed[i] }) }]))
    )

  const openTraits = <T extends { readonly identifier: string; readonly key: string; readonly value: unknown }>(
    rows: ReadonlyArray<T>
  ) =>
    Effect.map(
      open(rows.map((r) => ({ stored: sealedIn(r.value), context: traitContext(r.identifier, r.key) }))),
      (opened) =>
        rows.flatMap((r, i) => {
          const o = opened[i]!
          if (o._tag === "Clear") return [{ ...r, value: JSON.parse(o.value) as unknown }]
          return o._tag === "NotSealed" ? [r] : []
        })
    )

  const sealPayloads = <
    T extends { readonly destination: string; readonly position: string; readonly payload: string }
  >(
    rows: ReadonlyArray<T>,
    events: ReadonlyArray<StoredEvent>
  ) => {
    const refs = new Map(events.map((e) => [e.position, keyRefOf(e.event, e.personKey)]))
    return Effect.map(
      seal(rows.map((r) => ({
        keyRef: refs.get(r.position) ?? "",
        context: payloadContext(r.destination, r.position),
        plaintext: r.payload
      }))),
      (sealed) =>
        rows.map((r, i) => ({
          ...r,
          payload: JSON.stringify({ $sealed: sealed[i] ?? { v: 1, k: refs.get(r.position) ?? "", withheld: "erased" } })
        }))
    )
  }

  const openPayloads = <
    T extends { readonly destination: string; readonly position?: string; readonly payload: unknown }
  >(rows: ReadonlyArray<T>, position?: string) =>
    Effect.map(
      open(rows.map((r) => ({
        stored: sealedIn(r.payload),
        context: payloadContext(r.destination, String(r.position ?? position))
      }))),
      (opened) =>
        rows.map((r, i) => {
          const o = opened[i]!
          return {
            ...r,
            payload: o._tag === "Clear" ? JSON.parse(o.value) as unknown : o._tag === "NotSealed" ? r.payload : null
          }
        })
    )

  return Vault.of({
    fingerprint: master.fingerprint,
    sealEvents,
    openEvents,
    seal,
    open,
    shred,
    erasures,
    erasedEvents,
    sealTraits,
    openTraits,
    sealPayloads,
    openPayloads
  })
})

/** The sealed value inside a jsonb column written as `{ "$sealed": … }`, else the stored value itself. */
const sealedIn = (u: unknown): unknown =>
  typeof u === "object" && u !== null && "$sealed" in u ? (u as { $sealed: unknown }).$sealed : u

/** The vault (needs the master key and the SQL client). */
export const layer: Layer.Layer<Vault, ConfigError, MasterKey | SqlClient.SqlClient> = Layer.effect(Vault, make)

/** The vault with the master key from `TRACKLAYER_MASTER_KEY`. */
export const layerConfig: Layer.Layer<Vault, ConfigError, SqlClient.SqlClient> = layer.pipe(
  Layer.provide(layerMasterKeyConfig)
)

/** The vault with a random master key (tests). */
export const layerEphemeral: Layer.Layer<Vault, ConfigError, SqlClient.SqlClient> = Layer.suspend(() =>
  layer.pipe(Layer.provide(layerMasterKey(generateMasterKey())))
)
