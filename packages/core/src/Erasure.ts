/**
 * Erasure (`DELETE /v1/people/:id`): forgets a person by crypto-shredding.
 *
 * In one transaction: the keys of all the person's identifiers are destroyed (tombstones stay, so no new key is ever
 * made for them and their later events keep no personal data), their pending deliveries leave the retry queue
 * (each recorded as `dropped: erased`), the derived state about them (identity graph, traits, consent choices) is
 * deleted, and an `erasure` event is appended to the log (ids and counts only). The log rows are never rewritten:
 * their personal fields are unreadable without the keys. Then the person is removed from every audience a destination
 * was told they are in (`tl_audience_sync`), through the plugin's audience capability, with the identifiers read
 * before the keys were destroyed (in memory only); then the erasure is forwarded to every destination whose plugin
 * offers `deletePerson`. Each answer is recorded in `tl_erasure_forwards` (removals as `<destination>:audiences`).
 *
 * From then on delivery drops every event of the person (`dropped: erased`), replays included, and trait sync sends
 * nothing about them. `DELETE` again retries what failed: deletions with ids only, removals with the hashed emails and
 * phones the tombstones keep.
 */
import { HttpClient } from "@effect/platform"
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Effect, Either, Layer } from "effect"
import { randomUUID } from "node:crypto"
import * as Audiences from "./Audiences.js"
import { CONTRACT_VERSION } from "./Contract.js"
import { chunk, type ResolvedDestination, resolveDestinations } from "./Delivery.js"
import type { AudienceChange, DeletionOutcome, DeletionRequest, Identity, Outcome } from "./Destination.js"
import { RetryableError } from "./Destination.js"
import { IdentityGraph, personIdOfUser } from "./Identity.js"
import { purgePeople } from "./internal/erasure.js"
import { ERASURE_LOCK } from "./internal/locks.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"
import { identifierContext, Vault } from "./Vault.js"

/** What one destination answered to a forwarded erasure, or to the removal of the person from its audiences. */
export interface ForwardOutcome {
  /**
   * The destination instance id (the forwarded deletion), or `<id>:audiences` (the removal of the person from every
   * audience TrackLayer had added them to there, from what it last told the destination).
   */
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
  const identityOf = (personId: string, userId: string | null, traits: Readonly<Record<string, unknown>>) =>
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
        clickIds,
        // Audience members are built from the traits too (Meta reads a national phone number with `country`).
        traits
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

  /**
   * Forwards the erasure to `targets` (all destinations, or those to retry) and records each answer. `removedAt`:
   * the destinations whose audiences the person was removed from (their `not_supported` answer says so).
   */
  const forward = (
    erasureId: string,
    request: DeletionRequest,
    targets: ReadonlyArray<ResolvedDestination>,
    removedAt: ReadonlySet<string> = new Set()
  ) =>
    Effect.forEach(targets, (d) =>
      Effect.gen(function*() {
        const plugin = d.instance.plugin
        const deletePerson = plugin.deletePerson
        const o = deletePerson === undefined
          ? {
            outcome: "not_supported" as const,
            detail: removedAt.has(d.instance.id)
              ? `${plugin.name} does not offer deletion: the person was removed from the audiences TrackLayer had ` +
                `added them to (${d.instance.id}:audiences); delete what else ${d.instance.id} holds about them by hand`
              : `${plugin.name} does not offer deletion; delete the person in ${d.instance.id} by hand`,
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

  /**
   * The audience memberships destinations were last told ("in") for these identifier keys (`tl_audience_sync`):
   * what an erasure must remove.
   */
  const toldIn = (keys: ReadonlyArray<string>) =>
    keys.length === 0
      ? Effect.succeed([] as ReadonlyArray<{ destination: string; audience_key: string; identifier: string }>)
      : sql<{ destination: string; audience_key: string; identifier: string }>`
        SELECT destination, audience_key, identifier FROM tl_audience_sync
        WHERE identifier = ANY(${keys}::text[]) AND member ORDER BY destination, audience_key, identifier`

  const markRemoved = (destination: string, removed: ReadonlyArray<{ audience_key: string; identifier: string }>) =>
    Effect.forEach(removed, (r) =>
      sql`UPDATE tl_audience_sync SET member = false, at = now()
        WHERE destination = ${destination} AND audience_key = ${r.audience_key} AND identifier = ${r.identifier}`, {
      discard: true
    })

  const recordForward = (
    erasureId: string,
    destination: string,
    plugin: string,
    o: { outcome: ForwardOutcome["outcome"]; detail: string; status: number | null; response: string | null }
  ) =>
    sql`INSERT INTO tl_erasure_forwards ${
      sql.insert({
        erasure_id: erasureId,
        destination,
        plugin,
        outcome: o.outcome,
        detail: o.detail,
        status: o.status,
        response: o.response
      })
    }`

  /**
   * Removes the person from every audience destination `d` was last told they are in (`told`), through the plugin's
   * audience capability, and records the answer as `<id>:audiences`. Accepted removals are written to
   * `tl_audience_sync` (the destination now holds "not in"), so they are never sent again.
   */
  const removeAt = (
    erasureId: string,
    position: string,
    identity: Identity,
    d: ResolvedDestination,
    told: ReadonlyArray<{ audience_key: string; identifier: string }>,
    names: ReadonlyMap<string, string>
  ) =>
    Effect.gen(function*() {
      const id = d.instance.id
      const plugin = d.instance.plugin
      const capability = plugin.audiences
      const routes = Audiences.routesFor(config.audiences, id, d.instance.purposes ?? plugin.purposes)
      const results: Array<Audiences.ErasureRemoval> = []
      const removed: Array<{ audience_key: string; identifier: string }> = []
      let last: { status: number } | undefined
      const items: Array<{ t: (typeof told)[number]; change: AudienceChange; member: unknown; bytes: number }> = []
      for (const t of told) {
        const route = routes.find((r) => r.key === t.audience_key)
        const base = { audienceKey: t.audience_key, audienceId: route?.audienceId, identifier: t.identifier }
        if (capability === undefined || route === undefined) {
          results.push({
            ...base,
            result: "rejected",
            reason: capability === undefined
              ? `${plugin.name} no longer offers audiences`
              : `${t.audience_key} is no longer routed to ${id}`
          })
          continue
        }
        const change: AudienceChange = {
          position,
          eventId: erasureId,
          audienceId: route.audienceId,
          audience: { key: route.key, name: names.get(route.key) ?? route.key },
          op: "remove",
          identity,
          // The person is erased: nothing is granted any more (a removal carries no consent anyway).
          consent: Object.fromEntries(config.consent.purposes.map((p) => [p, false])),
          at: Date.now()
        }
        const member = Either.try(() => capability.member(change, d.settings)).pipe(
          Either.flatMap((x) => x),
          Either.mapLeft((err) =>
            err && typeof err === "object" && "reason" in err && "detail" in err
              ? `${String(err.reason)}: ${String(err.detail)}`
              : `invalid: member failed: ${String(err)}`
          )
        )
        if (Either.isLeft(member)) {
          results.push({ ...base, result: "rejected", reason: member.left })
          continue
        }
        items.push({ t, change, member: member.right, bytes: JSON.stringify(member.right).length })
      }
      if (capability !== undefined) {
        const groups = new Map<string, Array<(typeof items)[number]>>()
        for (const it of items) groups.set(it.change.audienceId, [...(groups.get(it.change.audienceId) ?? []), it])
        for (const group of groups.values()) {
          for (
            const batch of chunk(group, capability.limits.maxEventsPerRequest, capability.limits.maxBytesPerRequest)
          ) {
            const result = yield* capability.send(
              batch.map((it) => ({ change: it.change, member: it.member })),
              d.settings
            )
              .pipe(
                Effect.provideService(HttpClient.HttpClient, http),
                Effect.timeoutFail({
                  duration: config.delivery.requestTimeout,
                  onTimeout: () => new RetryableError({ message: "the removal request timed out" })
                }),
                Effect.catchAllDefect((defect) =>
                  Effect.fail(new RetryableError({ message: `plugin ${plugin.name} failed: ${String(defect)}` }))
                ),
                Effect.either
              )
            const outcomes: ReadonlyArray<Outcome> = Either.isRight(result)
              ? result.right
              : batch.map(() => {
                const e = result.left
                const response = { status: e.status ?? 0, body: e.body ?? "" }
                return e._tag === "PayloadInvalidError"
                  ? { _tag: "Rejected" as const, reason: `invalid request: ${e.message}`, response }
                  : {
                    _tag: "Retry" as const,
                    reason: e._tag === "AuthFailedError" ? `credentials refused: ${e.message}` : e.message,
                    response
                  }
              })
            batch.forEach((it, i) => {
              const o: Outcome = outcomes[i] ?? { _tag: "Retry", reason: "the destination returned no outcome" }
              if (o.response !== undefined) last = o.response
              const base = {
                audienceKey: it.t.audience_key,
                audienceId: it.change.audienceId,
                identifier: it.t.identifier
              }
              if (o._tag === "Accepted") {
                results.push({ ...base, result: "removed" })
                removed.push(it.t)
              } else {
                results.push({ ...base, result: o._tag === "Rejected" ? "rejected" : "failed", reason: o.reason })
              }
            })
          }
        }
      }
      const summary = Audiences.summarizeRemovals(id, results)
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* markRemoved(id, removed)
        // The answer's body is not kept: a destination may echo the member (HubSpot answers with the contact).
        yield* recordForward(erasureId, `${id}:audiences`, plugin.name, {
          ...summary,
          status: last?.status || null,
          response: null
        })
      }))
      if (summary.outcome === "failed") {
        yield* Effect.logWarning(`erasure ${erasureId}: removing the person from audiences at ${id} failed`)
      }
      return summary.outcome
    })

  /**
   * Removes the person behind `keys` from the audiences of every destination that was told they are in one, except
   * those in `skip`. Returns the destinations it removed them at (whatever the answers).
   */
  const removeFromAudiences = (
    erasureId: string,
    position: string,
    identity: Identity,
    keys: ReadonlyArray<string>,
    names: ReadonlyMap<string, string>,
    skip: (destination: string) => boolean = () => false
  ) =>
    Effect.gen(function*() {
      const told = yield* toldIn(keys)
      const at = new Set<string>()
      for (const d of destinations) {
        const mine = told.filter((t) => t.destination === d.instance.id)
        if (mine.length === 0 || skip(d.instance.id)) continue
        at.add(d.instance.id)
        yield* removeAt(erasureId, position, identity, d, mine, names)
      }
      return at
    })

  /**
   * A destination that accepted the deletion of the person deleted their memberships with them (HubSpot's GDPR
   * delete removes the contact): removals that could not be made there are not retried.
   */
  const coveredByDeletion = (erasureId: string, keys: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const told = yield* toldIn(keys)
      if (told.length === 0) return
      const latest = new Map<string, ForwardRow>()
      for (
        const f of yield* sql<ForwardRow>`
        SELECT destination, plugin, outcome, detail, status, at FROM tl_erasure_forwards
        WHERE erasure_id = ${erasureId} ORDER BY id`
      ) latest.set(f.destination, f)
      for (const d of destinations) {
        const id = d.instance.id
        const mine = told.filter((t) => t.destination === id)
        const deletion = latest.get(id)
        if (mine.length === 0 || deletion?.outcome !== "accepted") continue
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* markRemoved(id, mine)
          yield* recordForward(erasureId, `${id}:audiences`, d.instance.plugin.name, {
            outcome: "accepted",
            detail: `removed ${mine.map((t) => `${t.identifier} from ${t.audience_key}`).join(", ")} with the ` +
              `person: ${id} accepted their deletion (${deletion.detail})`,
            status: null,
            response: null
          })
        }))
      }
    })

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
      const latest = (destination: string) => last.destinations.find((f) => f.destination === destination)?.outcome
      const retry = destinations.filter((d) => latest(d.instance.id) === "failed")
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
      // Audiences: what is still told "in" — removals that failed, or an add that was being sent at the moment of
      // the erasure — is removed now, with the hashed identifiers the tombstones keep (raw ones are gone).
      const tombstones = (yield* sql<{ key_ref: string }>`
        SELECT key_ref FROM tl_person_keys WHERE erasure_id = ${previous.erasure_id} ORDER BY key_ref`)
        .map((t) => t.key_ref)
      const keys = [...new Set([...tombstones, ...(previous.user_id !== null ? [`user:${previous.user_id}`] : [])])]
      yield* coveredByDeletion(previous.erasure_id, keys)
      const [logged] = yield* sql<{ position: string }>`
        SELECT position::text AS position FROM tl_log WHERE kind = 'erasure' AND event_id = ${previous.erasure_id}`
      const after = (prefix: string) =>
        tombstones.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length))
      const hashed: Identity = {
        personKey: previous.user_id !== null ? `user:${previous.user_id}` : previous.person_id,
        personId: previous.person_id,
        ...(previous.user_id !== null ? { userId: previous.user_id } : {}),
        emails: [],
        phones: [],
        emailSha256: after("email:"),
        phoneSha256: after("phone:"),
        clickIds: {}
      }
      yield* removeFromAudiences(
        previous.erasure_id,
        logged?.position ?? "0",
        hashed,
        keys,
        new Map(),
        // A removal the destination refused is not sent again.
        (destination) => latest(`${destination}:audiences`) === "rejected"
      )
      return yield* record(previous, "already_erased")
    }

    const person = yield* graph.person(id)
    if (person === undefined) return undefined
    const personId = person.person_id
    const userId = person.user_id
    // Every key the person's data can be sealed under: the key of each of their identifiers (Vault.keyRefOf).
    const keys = [...new Set(person.identifiers.map((i) => i.key))]
    const { deviceIds, identity } = yield* identityOf(personId, userId, person.traits)
    const erasureId = `era_${randomUUID().replace(/-/g, "").slice(0, 24)}`
    const reason = `erased: the person was erased (${erasureId})`
    // The audience names, for the removals (the membership rows are deleted with the rest).
    const names = new Map(
      (yield* sql<{ audience_key: string; audience_name: string }>`
        SELECT DISTINCT audience_key, audience_name FROM tl_audience_members WHERE identifier = ANY(${keys}::text[])`)
        .map((r) => [r.audience_key, r.audience_name])
    )

    const position = yield* sql.withTransaction(Effect.gen(function*() {
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
      const [logged] = yield* sql<{ position: string }>`INSERT INTO tl_log ${
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
      } RETURNING position::text AS position`
      return logged!.position
    }))
    yield* Effect.logInfo(`erasure ${erasureId}: person ${personId} erased`)

    // First the audiences (while the raw identifiers are still in memory), then the deletions: a deletion that
    // removes the person at the destination (HubSpot's GDPR delete) must not be followed by a write about them.
    const removedAt = yield* removeFromAudiences(erasureId, position, identity, keys, names)
    yield* forward(erasureId, { erasureId, requester, identity, deviceIds }, destinations, removedAt)
    yield* coveredByDeletion(erasureId, keys)
    const [row] = yield* sql<ErasureRow>`
      SELECT erasure_id, person_id, user_id, requester, keys_destroyed, identifiers_erased, pending_removed, at
      FROM tl_erasures WHERE erasure_id = ${erasureId}`
    return yield* record(row!, "erased")
  })

  return Erasure.of({ erase, status })
})

/** Erasure for the configured destinations (needs an HttpClient for their plugins). */
export const layer = Layer.effect(Erasure, make)
