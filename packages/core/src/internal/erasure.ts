/**
 * Erasure of a person's derived state (identity graph, traits, consent choices). These tables are projections of the
 * log, so deleting their rows is allowed; the log itself is never rewritten (its personal fields are unreadable once
 * the person's keys are destroyed, see Vault.ts).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import type { StoredEvent } from "../EventStore.js"
import { identifiersOf } from "../Identity.js"

/**
 * Deletes the projection rows of people (by person id) and of identifier keys: identifiers (raw and hashed), the
 * edges that join them, traits, consent choices, audience memberships and synced trait values recorded under them,
 * and the people rows. (`tl_audience_sync` is kept: it records what each destination was told, which is how the
 * erasure knows the audiences to remove the person from, and it holds ids only.) Returns the number of identifier
 * keys removed.
 */
export const purgePeople = (personIds: ReadonlyArray<string>, keys: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const owned = personIds.length === 0 ? [] : yield* sql<{ key: string }>`
      SELECT key FROM tl_identifiers WHERE person_id = ANY(${personIds}::text[])`
    const all = [...new Set([...keys, ...owned.map((r) => r.key)])]
    if (all.length > 0) {
      yield* sql`DELETE FROM tl_identity_edges WHERE a = ANY(${all}::text[]) OR b = ANY(${all}::text[])`
      yield* sql`DELETE FROM tl_traits WHERE identifier = ANY(${all}::text[])`
      yield* sql`DELETE FROM tl_consent_choices WHERE identifier = ANY(${all}::text[])`
      yield* sql`DELETE FROM tl_audience_members WHERE identifier = ANY(${all}::text[])`
      yield* sql`DELETE FROM tl_trait_sync WHERE identifier = ANY(${all}::text[])`
      yield* sql`DELETE FROM tl_identifiers WHERE key = ANY(${all}::text[])`
    }
    if (personIds.length > 0) yield* sql`DELETE FROM tl_people WHERE person_id = ANY(${personIds}::text[])`
    return owned.length
  })

/**
 * Called by the projector after it folded a page: removes again what the page rebuilt for people erased earlier (a
 * replay of the log from the start, an event that was in flight during the erasure, or a new event of an erased
 * person). Cheap when the page touches no erased key: one indexed lookup.
 */
export const purgeErasedIn = (events: ReadonlyArray<StoredEvent>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const keys = new Set<string>()
    const erasureIds = new Set<string>()
    for (const e of events) {
      if (e.kind === "erasure") erasureIds.add(e.eventId)
      if (e.kind === "audience") keys.add(e.personKey)
      if (e.kind !== "track") continue
      keys.add(e.personKey)
      for (const i of identifiersOf(e.event)) keys.add(i.key)
    }
    if (keys.size > 0) {
      const hits = yield* sql<{ erasure_id: string }>`
        SELECT DISTINCT erasure_id FROM tl_person_keys
        WHERE wrapped IS NULL AND erasure_id IS NOT NULL AND key_ref = ANY(${[...keys]}::text[])`
      for (const h of hits) erasureIds.add(h.erasure_id)
    }
    if (erasureIds.size === 0) return
    const ids = [...erasureIds]
    const people = yield* sql<{ person_id: string }>`
      SELECT person_id FROM tl_erasures WHERE erasure_id = ANY(${ids}::text[])`
    const tombstones = yield* sql<{ key_ref: string }>`
      SELECT key_ref FROM tl_person_keys WHERE erasure_id = ANY(${ids}::text[])`
    yield* purgePeople(people.map((p) => p.person_id), tombstones.map((t) => t.key_ref))
  })
