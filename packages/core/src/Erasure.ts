/**
 * Erasure (`DELETE /v1/people/:id`): forgets a person by crypto-shredding.
 *
 * In one transaction: the keys of all the person's identifiers are destroyed (tombstones stay, so no new key is ever
 * made for them and their later events keep no personal data), their pending deliveries leave the retry queue
 * (each recorded as `dropped: erased`), the derived state about them (identity graph, traits, consent choices) is
 * deleted, and an `erasure` event is appended to the log (ids and counts only). The log rows are never rewritten:
 * their personal fields are unreadable without the keys. Then the erasure is forwarded to every destination whose
 * plugin offers `deletePerson`, and each answer is recorded in `tl_erasure_forwards`.
 *
 * From then on delivery drops every event of the person (`dropped: erased`), replays included.
 */
import { HttpClient } from "@effect/platform"
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Effect, Either, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { CONTRACT_VERSION } from "./Contract.js"
import { type ResolvedDestination, resolveDestinations } from "./Delivery.js"
import type { DeletionOutcome, DeletionRequest, Identity } from "./Destination.js"
import { IdentityGraph, personIdOfUser } from "./Identity.js"
import { purgePeople } from "./internal/erasure.js"
import { ERASURE_LOCK } from "./internal/locks.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"
import { identifierContext, Vault } from "./Vault.js"

/** What one destination answered to a forwarded erasure. */
export interface ForwardOutcome {
  readonly destination: string
  readonly plugin: string
  /**
   * `accepted` the destination took the deletion request; `not_configured` the plugin can delete but this instance
   * lacks what it needs; `not_supported` the plugin offers no deletion (delete there by hand); `rejected` refused,
   * not retried; `failed` not reached or credentials refused — `DELETE` the person again to retry.
   */
  readonly outcome: "accepted" | "rejected" | "not_configured" | "not_supported" | "failed"
  readonly detail: string
  readonly status: number | null
  readonly at: string
}

/** An erasure, as `DELETE /v1/people/:id` answers it and `GET /v1/people/:id` shows it. */
export interface ErasureRecord {
  readonly erasure_id: string
  readonly person_id: string
  readonly user_id: string | null
  /** `erased` by this request; `already_erased` when the person had been erased before (failed forwards retried). */
  readonly status: "erased" | "already_erased"
  readonly requester: string
  readonly erased_at: string
  /** Person keys that existed and were destroyed. */
  readonly keys_destroyed: number
  /** Identifier keys (raw and hashed) removed from the identity graph. */
  readonly identifiers_erased: number
  /** Retry-queue entries removed (each recorded as `dropped: erased`). */
  readonly pending_deliveries_removed: number
  /** The latest answer of every destination. */
  readonly destinations: ReadonlyArray<ForwardOutcome>
}

/** The erasure service. */
export class Erasure extends Context.Tag("@tracklayer/core/Erasure")<Erasure, {
  /**
   * Erases the person behind `id` (a person id, `user:<id>` or any identifier key). Undefined when no such person is
   * known. Erasing an erased person again retries the forwards that failed and answers `already_erased`.
   */
  readonly erase: (
    id: string,
    options?: { readonly requester?: string }
  ) => Effect.Effect<ErasureRecord | undefined, SqlError.SqlError>
  /** The erasure of the person behind `id`, if they were erased. */
  readonly status: (id: string) => Effect.Effect<ErasureRecord | undefined, SqlError.SqlError>
}>() {}

interface ErasureRow {
  readonly erasure_id: string
  readonly person_id: string
  readonly user_id: string | null
  readonly requester: string
  readonly keys_destroyed: number
  readonly identifiers_erased: number
  readonly pending_removed: number
  readonly at: Date
}

interface ForwardRow {
  readonly destination: string
  readonly plugin: string
  readonly outcome: ForwardOutcome["outcome"]
  readonly detail: string
  readonly status: number | null
  readonly at: Date
}

/** Why a forward did not get an answer: the plugin's typed error, a timeout, or a plugin defect. */
type ForwardError = {
  readonly _tag: string
  readonly message: string
  readonly status?: number | undefined
  readonly body?: string | undefined
}

const excerpt = (s: string | undefined) => (s === undefined ? null : s.length > 2000 ? s.slice(0, 2000) + "…" : s)

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const vault = yield* Vault
  const graph = yield* IdentityGraph
  const config = yield* TrackLayerConfig
  const destinations = yield* resolveDestinations(config)
  const http = yield* HttpClient.HttpClient

  /** The identity a destination needs to delete the person, read while the keys still exist. */
  const identityOf = (personId: string, userId: string | null) =>
    Effect.gen(function*() {
      const rows = yield* sql<{ key: string; kind: string; raw: string | null }>`
        SELECT key, kind, raw FROM tl_identifiers WHERE person_id = ${personId} ORDER BY last_seen_at DESC`
      const opened = yield* vault.open(rows.map((r) => ({ stored: r.raw, context: identifierContext(r.key) })))
      const raw = (i: number) => {
        const o = opened[i]!
        return o._tag === "Clear" ? o.value : o._tag === "NotSealed" && typeof o.value === "string" ? o.value : null
      }
      const of = (kind: string) => rows.flatMap((r, i) => (r.kind === kind ? [{ ...r, raw: raw(i) }] : []))
      const after = (key: string) => key.slice(key.indexOf(":") + 1)
      const deviceIds = of("device").map((r) => after(r.key))
      const clickIds: Record<string, string> = {}
      for (const r of of("click")) {
        const [, name, ...rest] = r.key.split(":")
        if (name !== undefined && clickIds[name] === undefined) clickIds[name] = rest.join(":")
      }
      const identity: Identity = {
        personKey: userId !== null ? `user:${userId}` : personId,
        personId,
        ...(userId !== null ? { userId } : {}),
        ...(deviceIds[0] !== undefined ? { deviceId: deviceIds[0] } : {}),
        emails: of("email").flatMap((r) => (r.raw !== null ? [r.raw] : [])),
        phones: of("phone").flatMap((r) => (r.raw !== null ? [r.raw] : [])),
        emailSha256: of("email").map((r) => after(r.key)),
        phoneSha256: of("phone").map((r) => after(r.key)),
        clickIds
      }
      return { identity, deviceIds }
    })

  const outcomeOf = (
    d: ResolvedDestination,
    result: Either.Either<DeletionOutcome, ForwardError>
  ) => {
    if (Either.isLeft(result)) {
      const e = result.left
      return {
        outcome: e._tag === "PayloadInvalidError" ? "rejected" as const : "failed" as const,
        detail: e._tag === "AuthFailedError" ? `credentials refused: ${e.message}` : e.message,
        status: e.status ?? null,
        response: excerpt(e.body)
      }
    }
    const o = result.right
    switch (o._tag) {
      case "Deleted":
        return {
          outcome: "accepted" as const,
          detail: o.detail,
          status: o.response?.status ?? null,
          response: excerpt(o.response?.body)
        }
      case "NotConfigured":
        return { outcome: "not_configured" as const, detail: o.detail, status: null, response: null }
      case "Rejected":
        return {
          outcome: "rejected" as const,
          detail: o.reason,
          status: o.response?.status ?? null,
          response: excerpt(o.response?.body)
        }
    }
    return {
      outcome: "failed" as const,
      detail: `unknown answer from ${d.instance.plugin.name}`,
      status: null,
      response: null
    }
  }

  /** Forwards the erasure to `targets` (all destinations, or those to retry) and records each answer. */
  const forward = (erasureId: string, request: DeletionRequest, targets: ReadonlyArray<ResolvedDestination>) =>
    Effect.forEach(targets, (d) =>
      Effect.gen(function*() {
        const plugin = d.instance.plugin
        const deletePerson = plugin.deletePerson
        const o = deletePerson === undefined
          ? {
            outcome: "not_supported" as const,
            detail: `${plugin.name} does not offer deletion; delete the person in ${d.instance.id} by hand`,
            status: null,
            response: null
          }
          : outcomeOf(
            d,
            yield* deletePerson(request, d.settings).pipe(
              Effect.provideService(HttpClient.HttpClient, http),
              Effect.timeoutFail({
                duration: config.delivery.requestTimeout,
                onTimeout: (): ForwardError => ({ _tag: "Timeout", message: "the deletion request timed out" })
              }),
              Effect.catchAllDefect((defect) =>
                Effect.fail<ForwardError>({
                  _tag: "Defect",
                  message: `plugin ${plugin.name} failed: ${String(defect)}`
                })
              ),
              Effect.either
            )
          )
        yield* sql`INSERT INTO tl_erasure_forwards ${
          sql.insert({
            erasure_id: erasureId,
            destination: d.instance.id,
            plugin: plugin.name,
            outcome: o.outcome,
            detail: o.detail,
            status: o.status,
            response: o.response
          })
        }`
        if (o.outcome === "failed") {
          yield* Effect.logWarning(`erasure ${erasureId}: forwarding to ${d.instance.id} failed: ${o.detail}`)
        }
      }), { discard: true })

  const record = (row: ErasureRow, status: ErasureRecord["status"]) =>
    Effect.gen(function*() {
      const forwards = yield* sql<ForwardRow>`
        SELECT destination, plugin, outcome, detail, status, at FROM tl_erasure_forwards
        WHERE erasure_id = ${row.erasure_id} ORDER BY id`
      const latest = new Map<string, ForwardRow>()
      for (const f of forwards) latest.set(f.destination, f)
      return {
        erasure_id: row.erasure_id,
        person_id: row.person_id,
        user_id: row.user_id,
        status,
        requester: row.requester,
        erased_at: row.at.toISOString(),
        keys_destroyed: row.keys_destroyed,
        identifiers_erased: row.identifiers_erased,
        pending_deliveries_removed: row.pending_removed,
        destinations: [...latest.values()].sort((a, b) => (a.destination < b.destination ? -1 : 1)).map((f) => ({
          destination: f.destination,
          plugin: f.plugin,
          outcome: f.outcome,
          detail: f.detail,
          status: f.status,
          at: f.at.toISOString()
        }))
      } satisfies ErasureRecord
    })

  /** The latest erasure of the person behind `id`. */
  const find = (id: string) =>
    Effect.gen(function*() {
      const personId = id.startsWith("per_") ? id : id.startsWith("user:") ? personIdOfUser(id.slice(5)) : null
      const [row] = yield* sql<ErasureRow>`
        SELECT erasure_id, person_id, user_id, requester, keys_destroyed, identifiers_erased, pending_removed, at
        FROM tl_erasures
        WHERE person_id = ${personId ?? ""}
           OR erasure_id = (SELECT erasure_id FROM tl_person_keys WHERE key_ref = ${id} AND wrapped IS NULL)
        ORDER BY at DESC LIMIT 1`
      return row
    })

  const status = Effect.fn("Erasure.status")(function*(id: string) {
    const row = yield* find(id)
    return row === undefined ? undefined : yield* record(row, "erased")
  })

  const erase = Effect.fn("Erasure.erase")(function*(id: string, options?: { readonly requester?: string }) {
    const requester = options?.requester ?? "tracklayer"
    const previous = yield* find(id)
    if (previous !== undefined) {
      // Already erased: retry only the forwards that failed (raw identifiers are gone; ids are enough for most).
      const last = yield* record(previous, "already_erased")
      const retry = destinations.filter((d) =>
        last.destinations.find((f) => f.destination === d.instance.id)?.outcome === "failed"
      )
      if (retry.length > 0) {
        const identity: Identity = {
          personKey: previous.user_id !== null ? `user:${previous.user_id}` : previous.person_id,
          personId: previous.person_id,
          ...(previous.user_id !== null ? { userId: previous.user_id } : {}),
          emails: [],
          phones: [],
          emailSha256: [],
          phoneSha256: [],
          clickIds: {}
        }
        yield* forward(
          previous.erasure_id,
          { erasureId: previous.erasure_id, requester, identity, deviceIds: [] },
          retry
        )
      }
      return yield* record(previous, "already_erased")
    }

    const person = yield* graph.person(id)
    if (person === undefined) return undefined
    const personId = person.person_id
    const userId = person.user_id
    // Every key the person's data can be sealed under: the key of each of their identifiers (Vault.keyRefOf).
    const keys = [...new Set(person.identifiers.map((i) => i.key))]
    const { deviceIds, identity } = yield* identityOf(personId, userId)
    const erasureId = `era_${randomUUID().replace(/-/g, "").slice(0, 24)}`
    const reason = `erased: the person was erased (${erasureId})`

    yield* sql.withTransaction(Effect.gen(function*() {
      // Waits for delivery steps writing retries now, and keeps new ones out until this commits (internal/locks.ts).
      yield* sql`SELECT pg_advisory_xact_lock(${ERASURE_LOCK})`
      const keysDestroyed = yield* vault.shred(keys, erasureId)
      // Pending deliveries of the person's events: gone, each with a record saying why.
      const pending = yield* sql<{ destination: string; position: string; event_id: string; attempts: number }>`
        DELETE FROM tl_retry_queue q USING tl_log l
        WHERE l.position = q.position
          AND (l.person_key = ANY(${keys}::text[]) OR l.body->'$pii'->>'k' = ANY(${keys}::text[]))
        RETURNING q.destination, q.position::text AS position, q.event_id, q.attempts`
      if (pending.length > 0) {
        yield* sql`INSERT INTO tl_delivery_records ${
          sql.insert(pending.map((p) => ({
            destination: p.destination,
            position: p.position,
            event_id: p.event_id,
            attempt: p.attempts + 1,
            outcome: "dropped",
            reason,
            status: null,
            response: null,
            duration_ms: null
          })))
        }`
      }
      const identifiers = yield* purgePeople([personId], keys).pipe(Effect.provideService(SqlClient.SqlClient, sql))
      yield* sql`INSERT INTO tl_erasures ${
        sql.insert({
          erasure_id: erasureId,
          person_id: personId,
          user_id: userId,
          requester,
          keys_destroyed: keysDestroyed,
          identifiers_erased: identifiers,
          pending_removed: pending.length
        })
      }`
      // The erasure is an event in the log: ids and counts only, no personal data.
      yield* sql`INSERT INTO tl_log ${
        sql.insert({
          kind: "erasure",
          event_id: erasureId,
          event_name: "person_erased",
          routable: false,
          partition_key: 0,
          person_key: userId !== null ? `user:${userId}` : personId,
          dedup_key: erasureId,
          occurred_at: new Date(),
          contract_version: CONTRACT_VERSION,
          body: JSON.stringify({
            erasure_id: erasureId,
            person_id: personId,
            user_id: userId,
            keys_destroyed: keysDestroyed,
            identifiers_erased: identifiers,
            pending_removed: pending.length
          })
        })
      }`
    }))
    yield* Effect.logInfo(`erasure ${erasureId}: person ${personId} erased`)

    yield* forward(erasureId, { erasureId, requester, identity, deviceIds }, destinations)
    const [row] = yield* sql<ErasureRow>`
      SELECT erasure_id, person_id, user_id, requester, keys_destroyed, identifiers_erased, pending_removed, at
      FROM tl_erasures WHERE erasure_id = ${erasureId}`
    return yield* record(row!, "erased")
  })

  return Erasure.of({ erase, status })
})

/** Erasure for the configured destinations (needs an HttpClient for their plugins). */
export const layer = Layer.effect(Erasure, make)
