/**
 * The identity graph: identifiers seen together in an event (user id, device id, email, phone, their SHA-256
 * forms, click ids) join into one person with a stable `person_id`.
 *
 * It is a projection of the log, maintained by one projector that reads the log in order (single writer, so no
 * races) and rebuildable by replaying the log. The rules are defined on the final sets, so the resulting partition
 * does not depend on arrival order:
 * - each non-user identifier remembers the user ids it was seen with directly;
 * - an identifier seen with two or more user ids is *shared* (a family tablet): it stops joining and is attributed
 *   per event;
 * - the other identifiers are connected by co-occurrence; a connected group with exactly one user id is that user's
 *   person, with none it is an anonymous person, and with several (two users joined through anonymous identifiers)
 *   each identifier goes to the one user it was seen with directly, the rest stay unattributed;
 * - two different user ids therefore never merge.
 * A change of an identifier's person is recorded as an `identity` event in the log.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Effect, Layer } from "effect"
import { createHash } from "node:crypto"
import * as Consent from "./Consent.js"
import type { CanonicalEvent } from "./Contract.js"
import type { Identity as IdentityView } from "./Destination.js"
import type { StoredEvent } from "./EventStore.js"
import { normalizePhone } from "./Pii.js"
import { identifierContext, keyRefOf, Vault } from "./Vault.js"

/** Click identifiers TrackLayer joins on and passes to plugins. */
export const CLICK_IDS = ["fbc", "fbp", "fbclid", "gclid", "gbraid", "wbraid", "li_fat_id", "ttclid"] as const

/** One identifier of an event. `raw` is the personal value (email, phone) when the event carried it. */
export interface Identifier {
  readonly key: string
  readonly kind: "user" | "device" | "email" | "phone" | "click"
  readonly raw?: string
}

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

/** Generic email join form: NFC, trimmed, lower case (destinations apply their own rules on the raw value). */
export const emailJoinForm = (email: string) => email.normalize("NFC").trim().toLowerCase()

/**
 * Phone join form: E.164 digits without the `+` (a national number gets the country code of `user.country`), or
 * undefined when the number is unusable. The same number written `+33 6…`, `0033 6…` or `06…` (FR) joins.
 */
export const phoneJoinForm = (phone: string, country?: string) =>
  normalizePhone(phone, country !== undefined ? { defaultCountry: country } : undefined)?.replace(/^\+/, "")

/** The person id of a user: stable, derived from the user id. */
export const personIdOfUser = (userId: string) => `per_${sha256(`user:${userId}`).slice(0, 20)}`
/** The person id of an anonymous group first seen through `key`. */
export const personIdOfAnonymous = (key: string) => `per_${sha256(`anon:${key}`).slice(0, 20)}`

/** The identifiers of an event, in the join order of preference (user, device, email, phone, click ids). */
export const identifiersOf = (e: CanonicalEvent): ReadonlyArray<Identifier> => {
  const out: Array<Identifier> = []
  if (e.user_id !== undefined) out.push({ key: `user:${e.user_id}`, kind: "user" })
  if (e.device_id !== undefined) out.push({ key: `device:${e.device_id}`, kind: "device" })
  const u = e.user
  if (u?.email !== undefined && emailJoinForm(u.email) !== "") {
    out.push({ key: `email:${sha256(emailJoinForm(u.email))}`, kind: "email", raw: u.email })
  }
  if (u?.email_sha256 !== undefined) out.push({ key: `email:${u.email_sha256}`, kind: "email" })
  const phone = u?.phone !== undefined ? phoneJoinForm(u.phone, u.country) : undefined
  if (u?.phone !== undefined && phone !== undefined) {
    out.push({ key: `phone:${sha256(phone)}`, kind: "phone", raw: u.phone })
  }
  if (u?.phone_sha256 !== undefined) out.push({ key: `phone:${u.phone_sha256}`, kind: "phone" })
  const clicks = e.context?.click_ids ?? {}
  for (const name of CLICK_IDS) {
    const v = clicks[name]
    if (v !== undefined && v.trim() !== "") out.push({ key: `click:${name}:${v.trim()}`, kind: "click", raw: v.trim() })
  }
  // The same identifier twice (email and its hash) counts once.
  const seen = new Set<string>()
  return out.filter((i) => (seen.has(i.key) ? false : (seen.add(i.key), true)))
}

/** A person as shown by `GET /v1/people/:id`. */
export interface Person {
  readonly person_id: string
  readonly user_id: string | null
  /** Durable traits (user_properties), latest value by event time. */
  readonly traits: Readonly<Record<string, unknown>>
  /** Purpose → the latest explicit choice (inline consent or consent update). */
  readonly consent: Readonly<
    Record<string, { readonly granted: boolean; readonly at: string; readonly source: string }>
  >
  /** Audience memberships (filled by the cohort exchange). */
  readonly audiences: ReadonlyArray<string>
  /** Identifier keys (emails and phones as SHA-256, never raw). */
  readonly identifiers: ReadonlyArray<
    { readonly key: string; readonly kind: string; readonly first_seen_at: string; readonly last_seen_at: string }
  >
}

/** What `resolve` knows about the person behind one event. */
export interface Resolved {
  readonly identity: IdentityView
  /** Every identifier key of the person (and the event's own), `user:<id>` included. */
  readonly keys: ReadonlyArray<string>
}

/** A group of identifiers and the person they now belong to. */
interface Assignment {
  readonly key: string
  readonly person: string | null
}

/** Assigns persons to the identifiers of one or more connected groups (pure: the rules above). */
export const assign = (
  nodes: ReadonlyArray<{ readonly key: string; readonly users: ReadonlyArray<string>; readonly person: string | null }>,
  edges: ReadonlyArray<readonly [string, string]>
): ReadonlyArray<Assignment> => {
  const byKey = new Map(nodes.map((n) => [n.key, n]))
  const shared = (k: string) => (byKey.get(k)?.users.length ?? 0) >= 2
  const parent = new Map<string, string>()
  const find = (k: string): string => {
    let r = k
    while (parent.get(r) !== r) r = parent.get(r)!
    parent.set(k, r)
    return r
  }
  for (const n of nodes) if (!shared(n.key)) parent.set(n.key, n.key)
  for (const [a, b] of edges) {
    if (!parent.has(a) || !parent.has(b)) continue
    const [ra, rb] = [find(a), find(b)]
    if (ra !== rb) parent.set(ra < rb ? rb : ra, ra < rb ? ra : rb)
  }
  const groups = new Map<string, Array<string>>()
  for (const k of parent.keys()) groups.set(find(k), [...(groups.get(find(k)) ?? []), k])
  const out: Array<Assignment> = nodes.filter((n) => shared(n.key)).map((n) => ({ key: n.key, person: null }))
  for (const members of groups.values()) {
    const users = new Set(members.flatMap((k) => byKey.get(k)!.users))
    if (users.size === 1) {
      const person = personIdOfUser([...users][0]!)
      for (const k of members) out.push({ key: k, person })
    } else if (users.size === 0) {
      // Keep the anonymous person an identifier already had (stable ids); a new group is named by its least key.
      const existing = members.map((k) => byKey.get(k)!.person).filter((p): p is string => p !== null).sort()
      const person = existing[0] ?? personIdOfAnonymous([...members].sort()[0]!)
      for (const k of members) out.push({ key: k, person })
    } else {
      for (const k of members) {
        const direct = byKey.get(k)!.users
        out.push({ key: k, person: direct.length === 1 ? personIdOfUser(direct[0]!) : null })
      }
    }
  }
  return out
}

/** The identity graph service. */
export class IdentityGraph extends Context.Tag("@tracklayer/core/IdentityGraph")<IdentityGraph, {
  /** Folds a page of stored events into the graph (called by the projector, in log order, inside its transaction). */
  readonly project: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<number, SqlError.SqlError>
  /** The person an event belongs to now, and everything known about that person's identifiers. */
  readonly resolve: (
    events: ReadonlyArray<StoredEvent>
  ) => Effect.Effect<ReadonlyMap<string, Resolved>, SqlError.SqlError>
  /** A person by person id, user id (`user:<id>`) or any identifier key. */
  readonly person: (id: string) => Effect.Effect<Person | undefined, SqlError.SqlError>
}>() {}

interface NodeRow {
  readonly key: string
  readonly users: ReadonlyArray<string>
  readonly person_id: string | null
}

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const vault = yield* Vault
  /** Identifier rows with `raw` decrypted (null where the person was erased). */
  const openRaw = <R extends { readonly key: string; readonly raw: string | null }>(rows: ReadonlyArray<R>) =>
    Effect.map(
      vault.open(rows.map((r) => ({ stored: r.raw, context: identifierContext(r.key) }))),
      (opened) =>
        rows.map((r, i) => {
          const o = opened[i]!
          return { ...r, raw: o._tag === "Clear" ? o.value : o._tag === "NotSealed" ? r.raw : null }
        })
    )

  const project = Effect.fn("IdentityGraph.project")(function*(events: ReadonlyArray<StoredEvent>) {
    const tracked = events.filter((e) => e.kind === "track")
    if (tracked.length === 0) return 0
    // 1. Identifiers with the user ids seen directly with them, and their first/last sighting (event time).
    const seen = new Map<
      string,
      { kind: string; users: Set<string>; raw: string | null; first: number; last: number }
    >()
    const pairs = new Set<string>()
    // The key a raw value is sealed under: that of the event it came with (Vault.ts).
    const rawKeyRef = new Map<string, string>()
    const people = new Set<string>()
    for (const e of tracked) {
      const ids = identifiersOf(e.event)
      const user = e.event.user_id
      if (user !== undefined) people.add(user)
      const others = ids.filter((i) => i.kind !== "user")
      for (const i of others) {
        const s = seen.get(i.key) ??
          { kind: i.kind, users: new Set(), raw: null, first: e.event.timestamp, last: e.event.timestamp }
        if (user !== undefined) s.users.add(user)
        if (i.raw !== undefined) s.raw = i.raw
        if (i.raw !== undefined) rawKeyRef.set(i.key, keyRefOf(e.event, e.personKey))
        s.first = Math.min(s.first, e.event.timestamp)
        s.last = Math.max(s.last, e.event.timestamp)
        seen.set(i.key, s)
      }
      for (let a = 0; a < others.length; a++) {
        for (let b = a + 1; b < others.length; b++) {
          const [x, y] = [others[a]!.key, others[b]!.key].sort()
          pairs.add(`${x}\u0000${y}`)
        }
      }
    }
    if (people.size > 0) {
      yield* sql`INSERT INTO tl_people ${
        sql.insert([...people].map((u) => ({ person_id: personIdOfUser(u), user_id: u })))
      } ON CONFLICT DO NOTHING`
    }
    if (seen.size === 0) return tracked.length
    const sealed = yield* vault.seal(
      [...seen].map(([key, s]) =>
        s.raw === null ? undefined : { keyRef: rawKeyRef.get(key)!, context: identifierContext(key), plaintext: s.raw }
      )
    )
    const sealedRaw = new Map([...seen.keys()].map((key, i) => [key, sealed[i]] as const))
    yield* sql`INSERT INTO tl_identifiers ${
      sql.insert([...seen].map(([key, s]) => ({
        key,
        kind: s.kind,
        users: `{${[...s.users].map((u) => JSON.stringify(u)).join(",")}}`,
        raw: sealedRaw.get(key) !== undefined ? JSON.stringify(sealedRaw.get(key)) : null,
        first_seen_at: new Date(s.first),
        last_seen_at: new Date(s.last)
      })))
    } ON CONFLICT (key) DO UPDATE SET
        users = ARRAY(SELECT DISTINCT x FROM unnest(tl_identifiers.users || EXCLUDED.users) AS x ORDER BY x),
        raw = COALESCE(EXCLUDED.raw, tl_identifiers.raw),
        first_seen_at = LEAST(tl_identifiers.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(tl_identifiers.last_seen_at, EXCLUDED.last_seen_at)`
    if (pairs.size > 0) {
      yield* sql`INSERT INTO tl_identity_edges ${
        sql.insert([...pairs].map((p) => {
          const [a, b] = p.split("\u0000")
          return { a: a!, b: b! }
        }))
      } ON CONFLICT DO NOTHING`
    }
    // 2. The connected groups around the touched identifiers (expansion stops at shared identifiers).
    const seeds = [...seen.keys()]
    const comp = yield* sql<{ k: string }>`
      WITH RECURSIVE comp(k) AS (
        SELECT unnest(${seeds}::text[])
        UNION
        SELECT CASE WHEN e.a = c.k THEN e.b ELSE e.a END
        FROM comp c
        JOIN tl_identifiers i ON i.key = c.k AND cardinality(i.users) < 2
        JOIN tl_identity_edges e ON e.a = c.k OR e.b = c.k
      )
      SELECT k FROM comp LIMIT 5000`
    const keys = comp.map((r) => r.k)
    const nodes = yield* sql<NodeRow>`SELECT key, users, person_id FROM tl_identifiers WHERE key = ANY(${keys}::text[])`
    const edges = yield* sql<{ a: string; b: string }>`
      SELECT a, b FROM tl_identity_edges WHERE a = ANY(${keys}::text[]) AND b = ANY(${keys}::text[])`
    // 3. Assign and record every change of person as an identity event.
    const assignments = assign(
      nodes.map((n) => ({ key: n.key, users: n.users, person: n.person_id })),
      edges.map((e) => [e.a, e.b] as const)
    )
    const before = new Map(nodes.map((n) => [n.key, n.person_id]))
    const changed = assignments.filter((a) => before.get(a.key) !== a.person)
    if (changed.length > 0) {
      yield* sql`UPDATE tl_identifiers SET person_id = v.person_id
        FROM (SELECT unnest(${changed.map((c) => c.key)}::text[]) AS key,
                     unnest(${changed.map((c) => c.person)}::text[]) AS person_id) v
        WHERE tl_identifiers.key = v.key`
      const at = tracked[tracked.length - 1]!
      yield* sql`INSERT INTO tl_log ${
        sql.insert(changed.map((c, i) => ({
          kind: "identity",
          event_id: `identity_${at.position}_${i}`,
          event_name: c.person === null
            ? "identity_unattributed"
            : before.get(c.key)
            ? "identity_merged"
            : "identity_joined",
          routable: false,
          partition_key: 0,
          person_key: c.person ?? "",
          dedup_key: `identity_${at.position}_${i}`,
          occurred_at: new Date(at.event.timestamp),
          contract_version: 1,
          body: JSON.stringify({ identifier: c.key, from: before.get(c.key) ?? null, to: c.person, cause: at.eventId })
        })))
      }`
    }
    return tracked.length
  })

  const resolve = Effect.fn("IdentityGraph.resolve")(function*(events: ReadonlyArray<StoredEvent>) {
    const own = new Map(events.map((e) => [e.position, identifiersOf(e.event)]))
    const keys = [...new Set([...own.values()].flat().map((i) => i.key))]
    const direct = keys.length === 0 ? [] : yield* sql<{ key: string; person_id: string | null }>`
      SELECT key, person_id FROM tl_identifiers WHERE key = ANY(${keys}::text[])`
    const personOfKey = new Map(direct.map((d) => [d.key, d.person_id]))
    const personOf = (e: StoredEvent): string | null => {
      if (e.event.user_id !== undefined) return personIdOfUser(e.event.user_id)
      for (const i of own.get(e.position) ?? []) {
        const p = personOfKey.get(i.key)
        if (p) return p
      }
      return null
    }
    const persons = [...new Set(events.map(personOf).filter((p): p is string => p !== null))]
    const rows = persons.length === 0 ? [] : yield* sql<{
      key: string
      kind: string
      raw: string | null
      person_id: string
      first_seen_at: Date
      last_seen_at: Date
    }>`SELECT key, kind, raw, person_id, first_seen_at, last_seen_at FROM tl_identifiers
       WHERE person_id = ANY(${persons}::text[]) ORDER BY last_seen_at DESC`.pipe(Effect.flatMap(openRaw))
    const users = persons.length === 0 ? [] : yield* sql<{ person_id: string; user_id: string }>`
      SELECT person_id, user_id FROM tl_people WHERE person_id = ANY(${persons}::text[])`
    // The latest page URL and user agent of each person (reserved `$context.` traits, sealed like all traits).
    const contextKeys = [...new Set([...rows.map((r) => r.key), ...users.map((u) => `user:${u.user_id}`)])]
    const contextRows = contextKeys.length === 0 ?
      [] :
      yield* sql<{ identifier: string; key: string; value: unknown; at: Date }>`
      SELECT identifier, key, value, at FROM tl_traits
      WHERE identifier = ANY(${contextKeys}::text[]) ORDER BY at, key`.pipe(Effect.flatMap(vault.openTraits))
    const lastContextOf = (person: string | null) => {
      if (person === null) return undefined
      const mine = new Set([
        ...rows.filter((r) => r.person_id === person).map((r) => r.key),
        ...users.filter((u) => u.person_id === person).map((u) => `user:${u.user_id}`)
      ])
      const ctx: { pageUrl?: string; userAgent?: string } = {}
      for (const r of contextRows) {
        if (!mine.has(r.identifier) || typeof r.value !== "string") continue
        if (r.key === "$context.page_url") ctx.pageUrl = r.value
        else if (r.key === "$context.user_agent") ctx.userAgent = r.value
      }
      return Object.keys(ctx).length > 0 ? ctx : undefined
    }
    /** A person's durable traits (latest by event time), from every identifier of theirs. */
    const traitsOf = (person: string | null, own: ReadonlyArray<string>) => {
      const mine = new Set(own)
      if (person !== null) {
        for (const r of rows) if (r.person_id === person) mine.add(r.key)
        for (const u of users) if (u.person_id === person) mine.add(`user:${u.user_id}`)
      }
      const traits: Record<string, unknown> = {}
      for (const r of contextRows) {
        if (mine.has(r.identifier) && !r.key.startsWith("$context.")) traits[r.key] = r.value
      }
      return traits
    }
    const out = new Map<string, Resolved>()
    for (const e of events) {
      const person = personOf(e)
      const graph = person === null ? [] : rows.filter((r) => r.person_id === person)
      const mine = own.get(e.position) ?? []
      // The event's own identifiers first (they describe this event), then the person's others, newest first.
      const all = [
        ...mine.filter((i) => i.kind !== "user").map((i) => ({
          key: i.key,
          kind: i.kind,
          raw: i.raw ?? null,
          first: e.event.timestamp
        })),
        ...graph.map((r) => ({ key: r.key, kind: r.kind, raw: r.raw, first: r.first_seen_at.getTime() }))
      ]
      const uniq = new Map<string, (typeof all)[number]>()
      for (const i of all) {
        const prev = uniq.get(i.key)
        uniq.set(i.key, prev ? { ...prev, raw: prev.raw ?? i.raw, first: Math.min(prev.first, i.first) } : i)
      }
      const ids = [...uniq.values()]
      const clickIds: Record<string, string> = {}
      const clickIdsSeenAt: Record<string, number> = {}
      for (const i of ids.filter((x) => x.kind === "click")) {
        const [, name, ...rest] = i.key.split(":")
        if (name !== undefined && clickIds[name] === undefined) {
          clickIds[name] = rest.join(":")
          clickIdsSeenAt[name] = i.first
        }
      }
      // Open click ids the graph does not join on (ttclid variants, vendor-specific) still reach plugins.
      for (const [name, value] of Object.entries(e.event.context?.click_ids ?? {})) {
        if (clickIds[name] === undefined) {
          clickIds[name] = value
          clickIdsSeenAt[name] = e.event.timestamp
        }
      }
      const userId = e.event.user_id ?? users.find((u) => u.person_id === person)?.user_id
      const deviceId = e.event.device_id ?? ids.find((i) => i.kind === "device")?.key.slice("device:".length)
      const hashOf = (i: { key: string }) => i.key.slice(i.key.indexOf(":") + 1)
      const identity: IdentityView = {
        personKey: person ?? e.personKey,
        ...(person !== null ? { personId: person } : {}),
        ...(userId !== undefined ? { userId } : {}),
        ...(deviceId !== undefined ? { deviceId } : {}),
        emails: [...new Set(ids.filter((i) => i.kind === "email" && i.raw !== null).map((i) => i.raw!))],
        phones: [...new Set(ids.filter((i) => i.kind === "phone" && i.raw !== null).map((i) => i.raw!))],
        emailSha256: ids.filter((i) => i.kind === "email").map(hashOf),
        phoneSha256: ids.filter((i) => i.kind === "phone").map(hashOf),
        clickIds,
        clickIdsSeenAt,
        ...((ctx) => (ctx !== undefined ? { lastContext: ctx } : {}))(lastContextOf(person)),
        traits: traitsOf(person, mine.map((i) => i.key))
      }
      const keys = [...ids.map((i) => i.key), ...(userId !== undefined ? [`user:${userId}`] : [])]
      out.set(e.position, { identity, keys })
    }
    return out as ReadonlyMap<string, Resolved>
  })

  const person = Effect.fn("IdentityGraph.person")(function*(id: string) {
    let personId: string | null = null
    if (id.startsWith("per_")) personId = id
    else if (id.startsWith("user:")) personId = personIdOfUser(id.slice(5))
    else {
      const [row] = yield* sql<{ person_id: string | null }>`SELECT person_id FROM tl_identifiers WHERE key = ${id}`
      personId = row?.person_id ?? null
    }
    if (personId === null) return undefined
    const ids = yield* sql<{ key: string; kind: string; first_seen_at: Date; last_seen_at: Date }>`
      SELECT key, kind, first_seen_at, last_seen_at FROM tl_identifiers WHERE person_id = ${personId} ORDER BY first_seen_at`
    let [user] = yield* sql<{ user_id: string }>`SELECT user_id FROM tl_people WHERE person_id = ${personId}`
    if (user === undefined && ids.length === 0 && id.startsWith("user:")) {
      // A user known only from an inbound audience (never tracked here) is a person too: their memberships are data
      // about them, shown here and removed by erasure.
      const held = yield* sql`SELECT 1 FROM tl_audience_members WHERE identifier = ${id} LIMIT 1`
      if (held.length > 0) user = { user_id: id.slice(5) }
    }
    if (ids.length === 0 && !user) return undefined
    const keys = [...ids.map((i) => i.key), ...(user ? [`user:${user.user_id}`] : [])]
    const traitRows = yield* sql<{ identifier: string; key: string; value: unknown; at: Date }>`
      SELECT identifier, key, value, at FROM tl_traits WHERE identifier = ANY(${keys}::text[]) ORDER BY at, key`.pipe(
      Effect.flatMap(vault.openTraits)
    )
    const traits: Record<string, unknown> = {}
    for (const t of traitRows) if (!t.key.startsWith("$context.")) traits[t.key] = t.value
    const choices = yield* sql<{ purpose: string; granted: boolean; at: Date; source: Consent.ChoiceSource }>`
      SELECT purpose, granted, at, source FROM tl_consent_choices WHERE identifier = ANY(${keys}::text[])`
    // The same fold as delivery's consent decisions, so both agree on ties.
    const state = Consent.stateAsOf(
      choices.map((c) => ({ choices: { [c.purpose]: c.granted }, at: c.at.getTime(), source: c.source }))
    )
    const consent: Record<string, { granted: boolean; at: string; source: string }> = {}
    for (const [purpose, c] of Object.entries(state)) {
      consent[purpose] = { granted: c.granted, at: new Date(c.at).toISOString(), source: c.source }
    }
    const audiences = yield* sql<{ audience_key: string }>`
      SELECT DISTINCT audience_key FROM tl_audience_members WHERE identifier = ANY(${keys}::text[]) AND member
      ORDER BY audience_key`
    return {
      person_id: personId,
      user_id: user?.user_id ?? null,
      traits,
      consent,
      audiences: audiences.map((a) => a.audience_key),
      identifiers: [
        ...(user ? [{ key: `user:${user.user_id}`, kind: "user", first_seen_at: "", last_seen_at: "" }] : []),
        ...ids.map((i) => ({
          key: i.key,
          kind: i.kind,
          first_seen_at: i.first_seen_at.toISOString(),
          last_seen_at: i.last_seen_at.toISOString()
        }))
      ].filter((i) => i.kind !== "user" || user !== undefined)
    } satisfies Person
  })

  return IdentityGraph.of({ project, resolve, person })
})

export const layer = Layer.effect(IdentityGraph, make)
