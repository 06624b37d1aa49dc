/**
 * Explain: what happened to one event, per destination — routed or dropped and why, each attempt with its response,
 * and the transformed payload. Raw PII in the received event is masked.
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Effect, Layer } from "effect"
import type { CanonicalEvent } from "./Contract.js"
import { Delivery } from "./Delivery.js"
import { audienceOf, EventStore } from "./EventStore.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"
import { Vault } from "./Vault.js"

/** One attempt or routing decision. */
export interface AttemptView {
  readonly attempt: number
  readonly outcome: "accepted" | "rejected" | "dropped" | "retry" | "dead_letter"
  readonly reason: string | null
  readonly status: number | null
  readonly response: string | null
  readonly durationMs: number | null
  readonly at: string
}

/** The story of one event at one destination. */
export interface DestinationView {
  readonly destination: string
  /**
   * The latest state: `pending` (not yet read), `before_start` (older than the destination's start point, so never
   * routed there), `retrying`, or the final outcome.
   */
  readonly status: "pending" | "before_start" | "accepted" | "rejected" | "dropped" | "retrying" | "dead_letter"
  readonly reason: string | null
  readonly dedupKey: string
  readonly payload: unknown
  readonly attempts: ReadonlyArray<AttemptView>
}

/** Everything TrackLayer knows about one event. */
export interface Explanation {
  readonly event_id: string
  readonly event: string
  readonly timestamp: string
  readonly received_at: string
  readonly position: string
  readonly dedup_key: string
  readonly person_key: string
  readonly routable: boolean
  readonly duplicate_of: string | null
  /** Set when the event adjusts an earlier report of its business key (another amount). */
  readonly adjustment: {
    readonly of: string
    readonly previousValue: number | null
    readonly previousCurrency: string | null
  } | null
  /** The received event with raw personal data masked. */
  readonly received: unknown
  readonly destinations: ReadonlyArray<DestinationView>
}

const maskEmail = (s: string) => {
  const at = s.lastIndexOf("@")
  return at > 0 ? `${s[0]}***${s.slice(at)}` : "***"
}
const maskTail = (s: string, keep: number) => (s.length <= keep ? "***" : `***${s.slice(-keep)}`)
const maskIp = (ip: string) =>
  ip.includes(":") ? ip.split(":").slice(0, 3).join(":") + ":…" : ip.split(".").slice(0, 3).join(".") + ".0"

/** A URL without its query and fragment (they often carry emails, tokens, click ids). */
const maskUrl = (u: string) => {
  const cut = u.search(/[?#]/)
  return cut < 0 ? u : `${u.slice(0, cut)}?…`
}

const IP_KEYS = new Set(["ip", "client_ip_address", "ip_address"])
const NAME_KEYS = new Set(["firstName", "lastName", "givenName", "familyName", "first_name", "last_name", "fn", "ln"])
const URL_KEYS = new Set(["page_url", "event_source_url", "url", "referrer"])
const CLEAR_TEXT_KEYS = new Set(["postalCode", "postal_code", "city", "phone", "email", "emailAddress", "phoneNumber"])

/**
 * Masks personal data in a transformed payload for display: IPs, clear-text names, URLs' query strings, postal
 * codes and any clear-text email or phone. SHA-256 digests (64 hex) are shown as they are: they are what was sent.
 */
export const maskPayload = (value: unknown, key?: string): unknown => {
  if (typeof value === "string") {
    if (/^[0-9a-f]{64}$/.test(value) || key === undefined) return value
    // An email in clear under any key (a CRM upserts contacts by email: `{ id: "<email>", idProperty: "email" }`).
    if (/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value.trim())) return maskEmail(value.trim())
    if (IP_KEYS.has(key)) return maskIp(value)
    if (URL_KEYS.has(key)) return maskUrl(value)
    if (NAME_KEYS.has(key) || CLEAR_TEXT_KEYS.has(key)) return `${value.slice(0, 1)}***`
    return value
  }
  if (Array.isArray(value)) return value.map((v) => maskPayload(v, key))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskPayload(v, k)]))
  }
  return value
}

/** Masks raw personal data in an event for display (hashes are shown as they are). */
export const maskEvent = (e: CanonicalEvent): unknown => {
  const u = e.user
  const user = u === undefined ? undefined : Object.fromEntries(
    Object.entries(u).map(([k, v]) => {
      if (typeof v !== "string") return [k, v]
      if (k.endsWith("_sha256") || k === "country") return [k, v]
      if (k === "email") return [k, maskEmail(v)]
      if (k === "phone") return [k, maskTail(v.replace(/\D/g, ""), 2)]
      return [k, `${v.slice(0, 1)}***`]
    })
  )
  const context = e.context === undefined ? undefined : {
    ...e.context,
    ...(e.context.ip !== undefined ? { ip: maskIp(e.context.ip) } : {}),
    ...(e.context.page_url !== undefined ? { page_url: maskUrl(e.context.page_url) } : {})
  }
  return {
    ...e,
    timestamp: new Date(e.timestamp).toISOString(),
    ...(user ? { user } : {}),
    ...(context ? { context } : {})
  }
}

/** The explain service. */
export class Explain extends Context.Tag("@tracklayer/core/Explain")<Explain, {
  readonly explain: (eventId: string) => Effect.Effect<Explanation | undefined, SqlError.SqlError>
}>() {}

export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const store = yield* EventStore
  const delivery = yield* Delivery
  const vault = yield* Vault
  const config = yield* TrackLayerConfig

  const explain = Effect.fn("Explain.explain")(function*(eventId: string) {
    const e = yield* store.byEventId(eventId)
    if (!e) return undefined
    const records = yield* sql<{
      destination: string
      attempt: number
      outcome: AttemptView["outcome"]
      reason: string | null
      status: number | null
      response: string | null
      duration_ms: number | null
      at: Date
    }>`SELECT destination, attempt, outcome, reason, status, response, duration_ms, at
       FROM tl_delivery_records WHERE event_id = ${eventId} AND position = ${e.position}::bigint ORDER BY id`
    const payloads = yield* sql<{ destination: string; payload: unknown; dedup_key: string }>`
      SELECT destination, payload, dedup_key FROM tl_delivery_payloads
      WHERE event_id = ${eventId} AND position = ${e.position}::bigint`.pipe(
      // Payloads are sealed under the person's key; an erased person's read as null.
      Effect.flatMap((rows) => vault.openPayloads(rows, e.position))
    )
    const queued = yield* sql<{ destination: string; next_attempt_at: Date; last_reason: string }>`
      SELECT destination, next_attempt_at, last_reason FROM tl_retry_queue WHERE position = ${e.position}::bigint`
    const subs = yield* sql<
      { destination: string; cursor_tx: string; cursor_pos: string; start_tx: string; start_pos: string }
    >`
      SELECT destination, cursor_tx::text AS cursor_tx, cursor_pos::text AS cursor_pos,
        start_tx::text AS start_tx, start_pos::text AS start_pos FROM tl_subscriptions`
    const cmp = (tx: string, pos: string) => {
      const d = BigInt(e.tx) - BigInt(tx)
      return d !== 0n ? (d > 0n ? 1 : -1) : Math.sign(Number(BigInt(e.position) - BigInt(pos)))
    }
    // An audience event concerns only the destinations its audience is routed to.
    const audience = audienceOf(e)
    const ids = new Set(
      audience !== undefined
        ? [
          ...Object.keys(config.audiences.find((a) => a.key === audience.audience_key)?.destinations ?? {}),
          ...records.map((r) => r.destination)
        ]
        : [
          ...delivery.instances.keys(),
          ...subs.map((s) => s.destination).filter((d) => !d.startsWith("$")),
          ...records.map((r) => r.destination)
        ]
    )
    const destinations = [...ids].sort().map((destination): DestinationView => {
      const attempts = records.filter((r) => r.destination === destination).map((r): AttemptView => ({
        attempt: r.attempt,
        outcome: r.outcome,
        reason: r.reason,
        status: r.status,
        response: r.response,
        durationMs: r.duration_ms,
        at: r.at.toISOString()
      }))
      const last = attempts[attempts.length - 1]
      const q = queued.find((x) => x.destination === destination)
      const p = payloads.find((x) => x.destination === destination)
      const sub = subs.find((x) => x.destination === destination)
      const beforeStart = sub !== undefined && cmp(sub.start_tx, sub.start_pos) <= 0
      const status: DestinationView["status"] = q
        ? "retrying"
        : last === undefined
        ? (beforeStart ? "before_start" : "pending")
        : last.outcome === "retry"
        ? "retrying"
        : last.outcome
      return {
        destination,
        status,
        reason: q
          ? `${q.last_reason}; next attempt at ${q.next_attempt_at.toISOString()}`
          : last?.reason ??
            (beforeStart && last === undefined
              ? `stored before ${destination} was added; it starts from its configured start point (replay sends history)`
              : null),
        dedupKey: p?.dedup_key ?? e.dedupKey,
        payload: p?.payload === undefined || p.payload === null ? null : maskPayload(p.payload),
        attempts
      }
    })
    return {
      event_id: e.eventId,
      event: e.name,
      timestamp: new Date(e.event.timestamp).toISOString(),
      received_at: e.receivedAt.toISOString(),
      position: e.position,
      dedup_key: e.dedupKey,
      person_key: e.personKey,
      routable: e.routable,
      duplicate_of: e.duplicateOf,
      adjustment: e.adjustment,
      received: maskEvent(e.event),
      destinations
    } satisfies Explanation
  })

  return Explain.of({ explain })
})

export const layer = Layer.effect(Explain, make)
