/**
 * The delivery-log explorer's data, as JSON under `/v1/explorer/...` (admin bearer key or explorer session) and as
 * the queries the `/ui` pages render: event search, event detail, reconciliation per destination and day, dead
 * letters and destination health. Events are read through the event store and explain (personal fields are sealed
 * in the log); the delivery records are read directly: they hold no personal data.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { SqlClient, type SqlError } from "@effect/sql"
import { Delivery, EventStore, Explain, Identity, TrackLayerConfig } from "@tracklayer/core"
import { Data, Effect } from "effect"
import * as ExplorerSession from "./ExplorerSession.js"

// ---------------------------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------------------------

/** An event's latest outcome at a destination (`retrying`: its latest record is a retry). */
export type Outcome = "accepted" | "rejected" | "dropped" | "retrying" | "dead_letter"

/** The outcomes a search can filter on. */
export const OUTCOMES: ReadonlyArray<Outcome> = ["accepted", "rejected", "dropped", "retrying", "dead_letter"]

/** Why an event was dropped at a destination, from its record's reason prefix. */
export type DropCategory = "consent" | "window" | "mapping" | "duplicate" | "invalid" | "erased" | "other"

export const DROP_CATEGORIES: ReadonlyArray<DropCategory> = [
  "consent",
  "window",
  "mapping",
  "duplicate",
  "invalid",
  "erased",
  "other"
]

/** The drop category of a delivery record's reason (`not_mapped: …` → mapping, `consent (advertising): …` → consent). */
export const dropCategory = (reason: string | null): DropCategory => {
  const r = reason ?? ""
  if (r.startsWith("consent")) return "consent"
  if (r.startsWith("not_mapped")) return "mapping"
  if (r.startsWith("duplicate")) return "duplicate"
  if (r.startsWith("window")) return "window"
  if (r.startsWith("invalid")) return "invalid"
  if (r.startsWith("erased")) return "erased"
  return "other"
}

/** Search filters (all optional). */
export interface SearchQuery {
  readonly eventId?: string
  readonly userId?: string
  readonly orderId?: string
  readonly from?: Date
  readonly to?: Date
  readonly event?: string
  readonly destination?: string
  readonly outcome?: Outcome
  readonly limit: number
  readonly cursor?: string
}

/** One event in the search results. */
export interface SearchItem {
  readonly event_id: string
  readonly event: string
  readonly timestamp: string
  readonly received_at: string
  readonly user_id: string | null
  readonly person_key: string
  readonly dedup_key: string
  readonly duplicate_of: string | null
  /** The latest outcome at each destination that has a record of the event. */
  readonly destinations: ReadonlyArray<
    { readonly destination: string; readonly outcome: Outcome; readonly reason: string | null }
  >
}

/** A page of search results, newest first; `next_cursor` fetches the next (older) page. */
export interface SearchPage {
  readonly events: ReadonlyArray<SearchItem>
  readonly next_cursor: string | null
}

/** The consent decision at one destination, as its delivery records tell it. */
export interface ConsentView {
  /**
   * `denied` (dropped for consent), `granted` (routed past the consent check), `not_checked` (dropped before it:
   * not mapped, or erased) or `pending` (not routed yet).
   */
  readonly decision: "granted" | "denied" | "not_checked" | "pending"
  readonly purposes: ReadonlyArray<string>
  /** The purpose that was missing, when denied. */
  readonly purpose: string | null
  readonly detail: string | null
}

/** One destination of an event's detail: explain's view plus its consent and dedup decisions. */
export interface DetailDestination extends Explain.DestinationView {
  readonly consent: ConsentView
  /** The reason of a `duplicate:` drop at this destination. */
  readonly duplicate: string | null
}

/** Everything about one event. */
export interface Detail {
  readonly event_id: string
  readonly event: string
  readonly timestamp: string
  readonly received_at: string
  readonly position: string
  readonly routable: boolean
  /** The received event, personal data masked. */
  readonly received: unknown
  readonly identity: {
    readonly person_key: string
    readonly person_id: string | null
    readonly user_id: string | null
    readonly identifiers: ReadonlyArray<{ readonly key: string; readonly kind: string }>
    /** The person's latest explicit choice per purpose. */
    readonly consent: Readonly<
      Record<string, { readonly granted: boolean; readonly at: string; readonly source: string }>
    >
    readonly audiences: ReadonlyArray<string>
    /** Trait values, masked like payloads. */
    readonly traits: unknown
  }
  readonly dedup: {
    readonly dedup_key: string
    readonly duplicate_of: string | null
    readonly adjustment: Explain.Explanation["adjustment"]
  }
  readonly destinations: ReadonlyArray<DetailDestination>
}

/** Google Data Manager style per-request counts (the destination reports counts per request, not per event). */
export interface RequestCounts {
  /** Distinct requests that carried events of this day. */
  readonly requests: number
  readonly by_status: Readonly<Record<string, number>>
  /** The destination's own record count, summed over those requests. */
  readonly record_count: number
  /** Error reason → records, summed over those requests. */
  readonly error_counts: Readonly<Record<string, number>>
}

/** One destination on one local day (by event time). */
export interface ReconciliationRow {
  readonly destination: string
  readonly day: string
  /** Tracked events with their event time on this day (the same for every destination). */
  readonly received: number
  /** Passed routing (mapping, consent, dedup, window, transform): accepted + rejected + retrying + dead-lettered. */
  readonly routed: number
  readonly dropped: Readonly<Record<DropCategory, number>>
  readonly dropped_total: number
  /** Routed events that at least one request carried. */
  readonly sent: number
  readonly accepted: number
  readonly rejected: number
  readonly retrying: number
  readonly dead_lettered: number
  /** Not yet read by this destination (or stored before its start point): received − routed − dropped. */
  readonly pending: number
  readonly requests: RequestCounts | null
}

export interface Reconciliation {
  readonly from: string
  readonly to: string
  readonly tz: string
  readonly destinations: ReadonlyArray<string>
  readonly days: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReconciliationRow>
}

/** One dead-lettered event. */
export interface DeadLetter {
  readonly destination: string
  readonly event_id: string
  readonly event: string
  readonly timestamp: string
  readonly attempts: number
  readonly reason: string | null
  readonly dead_lettered_at: string
}

/** A destination's health: delivery's live state plus what the store says. */
export interface Health extends Delivery.DestinationHealth {
  /** Tracked events in the log after the destination's cursor (not read yet). */
  readonly backlog: number
  /** Events waiting in its retry queue. */
  readonly retry_queue: number
  /** Events whose latest outcome is dead_letter (and that are not queued again). */
  readonly dead_letters: number
  /** Age in seconds of the oldest event not delivered yet (backlog or retry queue), by its receipt time. */
  readonly lag_seconds: number | null
  /** The latest failure recorded in the store (survives restarts, unlike `lastError`). */
  readonly last_failure: { readonly outcome: string; readonly reason: string | null; readonly at: string } | null
}

// ---------------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------------

/** A bad query parameter (400, naming it). */
export class ExplorerBadRequest extends Data.TaggedError("ExplorerBadRequest")<{
  readonly param: string
  readonly message: string
}> {}

/** No such event (404). */
export class ExplorerNotFound extends Data.TaggedError("ExplorerNotFound")<{ readonly message: string }> {}

const bad = (param: string, message: string) => new ExplorerBadRequest({ param, message: `${param}: ${message}` })

// ---------------------------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------------------------

/** The query parameters of the current request. */
export const queryParams = Effect.map(
  HttpServerRequest.HttpServerRequest,
  (req) => new URL(req.url, "http://localhost").searchParams
)

/** Rejects parameters other than `known`, and repeated ones. */
export const onlyParams = (params: URLSearchParams, known: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const names = [...params.keys()]
    const unknown = [...new Set(names.filter((n) => !known.includes(n)))]
    if (unknown.length > 0) {
      return yield* bad(unknown[0]!, `unknown query parameter; known: ${known.join(", ")}`)
    }
    const repeated = names.find((n, i) => names.indexOf(n) !== i)
    if (repeated !== undefined) return yield* bad(repeated, "given more than once")
  })

/** A parameter's value; empty counts as absent (forms send empty fields). */
const param = (params: URLSearchParams, name: string): string | undefined => {
  const v = params.get(name)?.trim()
  return v === undefined || v === "" ? undefined : v
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/

/** An ISO 8601 date or date-time; without an offset it is UTC. */
export const parseInstant = (name: string, value: string) =>
  Effect.gen(function*() {
    const m = ISO_TIME.exec(value)
    const problem = bad(
      name,
      `"${value}" is not an ISO 8601 date or date-time (2026-04-24, 2026-04-24T08:00, 2026-04-24T08:00:00+02:00)`
    )
    if (!m) return yield* problem
    const text = m[4] === undefined
      ? `${m[1]}-${m[2]}-${m[3]}T00:00:00Z`
      : `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6] ?? "00"}${m[7] ? "." + m[7].slice(0, 3) : ""}${m[8] ?? "Z"}`
    const t = Date.parse(text)
    if (Number.isNaN(t)) return yield* problem
    return new Date(t)
  })

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/

/** A calendar day `YYYY-MM-DD`. */
export const parseDay = (name: string, value: string) =>
  Effect.gen(function*() {
    const m = DAY.exec(value)
    const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : undefined
    if (!m || !d || d.toISOString().slice(0, 10) !== value) {
      return yield* bad(name, `"${value}" is not a day as YYYY-MM-DD`)
    }
    return value
  })

/** A time zone Intl and the store both know, in its canonical spelling. */
export const parseTimeZone = (value: string) =>
  Effect.gen(function*() {
    let canonical: string
    try {
      canonical = new Intl.DateTimeFormat("en-US", { timeZone: value }).resolvedOptions().timeZone
    } catch {
      return yield* bad("tz", `"${value}" is not a time zone (use an IANA name such as UTC or Europe/Berlin)`)
    }
    const sql = yield* SqlClient.SqlClient
    const [known] = yield* sql<{ known: boolean }>`
      SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = ${canonical}) AS known`
    if (known?.known !== true) {
      return yield* bad("tz", `"${value}" is not a time zone the store knows (use an IANA name such as Europe/Berlin)`)
    }
    return canonical
  })

const parseOutcome = (value: string) =>
  OUTCOMES.includes(value as Outcome)
    ? Effect.succeed(value as Outcome)
    : Effect.fail(bad("outcome", `"${value}" is not an outcome; one of ${OUTCOMES.join(", ")}`))

const parseLimit = (value: string | undefined, fallback: number, max: number) =>
  value === undefined
    ? Effect.succeed(fallback)
    : /^\d+$/.test(value) && Number(value) >= 1 && Number(value) <= max
    ? Effect.succeed(Number(value))
    : Effect.fail(bad("limit", `"${value}" must be a whole number from 1 to ${max}`))

/** Destinations the explorer knows: configured ones and those the store has a subscription for. */
export const knownDestinations = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const delivery = yield* Delivery.Delivery
  const subs = yield* sql<{ destination: string }>`SELECT destination FROM tl_subscriptions`
  return [...new Set([...delivery.instances.keys(), ...subs.map((s) => s.destination)])]
    .filter((d) => !d.startsWith("$"))
    .sort()
})

const parseDestination = (value: string) =>
  Effect.gen(function*() {
    const known = yield* knownDestinations
    if (!known.includes(value)) {
      return yield* bad("destination", `"${value}" is not a destination; known: ${known.join(", ") || "none"}`)
    }
    return value
  })

const LIMIT_MAX = 500
const TEXT_MAX = 1024

const text = (params: URLSearchParams, name: string) =>
  Effect.gen(function*() {
    const v = param(params, name)
    if (v !== undefined && v.length > TEXT_MAX) return yield* bad(name, `longer than ${TEXT_MAX} characters`)
    return v
  })

/** The search filters of `GET /v1/explorer/events` (and the search page). */
export const SEARCH_PARAMS = [
  "event_id",
  "user_id",
  "order_id",
  "from",
  "to",
  "event",
  "destination",
  "outcome",
  "limit",
  "cursor"
] as const

export const parseSearch = (params: URLSearchParams) =>
  Effect.gen(function*() {
    yield* onlyParams(params, SEARCH_PARAMS)
    const eventId = yield* text(params, "event_id")
    const userId = yield* text(params, "user_id")
    const orderId = yield* text(params, "order_id")
    const event = yield* text(params, "event")
    const fromText = param(params, "from")
    const toText = param(params, "to")
    const from = fromText === undefined ? undefined : yield* parseInstant("from", fromText)
    const to = toText === undefined ? undefined : yield* parseInstant("to", toText)
    if (from !== undefined && to !== undefined && to.getTime() <= from.getTime()) {
      return yield* bad("to", `must be after from (${from.toISOString()})`)
    }
    const destText = param(params, "destination")
    const destination = destText === undefined ? undefined : yield* parseDestination(destText)
    const outcomeText = param(params, "outcome")
    const outcome = outcomeText === undefined ? undefined : yield* parseOutcome(outcomeText)
    const limit = yield* parseLimit(param(params, "limit"), 50, LIMIT_MAX)
    const cursor = param(params, "cursor")
    if (cursor !== undefined && !/^\d{1,19}$/.test(cursor)) {
      return yield* bad("cursor", "is not a cursor from a previous page's next_cursor")
    }
    const q: SearchQuery = {
      limit,
      ...(eventId !== undefined ? { eventId } : {}),
      ...(userId !== undefined ? { userId } : {}),
      ...(orderId !== undefined ? { orderId } : {}),
      ...(from !== undefined ? { from } : {}),
      ...(to !== undefined ? { to } : {}),
      ...(event !== undefined ? { event } : {}),
      ...(destination !== undefined ? { destination } : {}),
      ...(outcome !== undefined ? { outcome } : {}),
      ...(cursor !== undefined ? { cursor } : {})
    }
    return q
  })

/** Today in `tz`, as YYYY-MM-DD. */
export const todayIn = (tz: string, now = new Date()) =>
  new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(now)

const addDays = (day: string, n: number) => {
  const [y, m, d] = day.split("-").map(Number) as [number, number, number]
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10)
}

const daysBetween = (from: string, to: string) =>
  (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000

/** At most this many days in one reconciliation. */
export const MAX_DAYS = 366

export const RECONCILIATION_PARAMS = ["from", "to", "tz", "destination"] as const

export interface ReconciliationQuery {
  readonly from: string
  readonly to: string
  readonly tz: string
  readonly destination?: string
}

/** From and to are local days (inclusive) in `tz` (default UTC); by default the last 7 days up to today. */
export const parseReconciliation = (params: URLSearchParams) =>
  Effect.gen(function*() {
    yield* onlyParams(params, RECONCILIATION_PARAMS)
    const tzText = param(params, "tz")
    const tz = tzText === undefined ? "UTC" : yield* parseTimeZone(tzText)
    const toText = param(params, "to")
    const fromText = param(params, "from")
    const to = toText === undefined ? todayIn(tz) : yield* parseDay("to", toText)
    const from = fromText === undefined ? addDays(to, -6) : yield* parseDay("from", fromText)
    if (daysBetween(from, to) < 0) return yield* bad("to", `must be on or after from (${from})`)
    if (daysBetween(from, to) >= MAX_DAYS) return yield* bad("from", `the range is limited to ${MAX_DAYS} days`)
    const destText = param(params, "destination")
    const destination = destText === undefined ? undefined : yield* parseDestination(destText)
    return { from, to, tz, ...(destination !== undefined ? { destination } : {}) } satisfies ReconciliationQuery
  })

export const DEAD_LETTER_PARAMS = ["destination", "limit"] as const

export const parseDeadLetters = (params: URLSearchParams) =>
  Effect.gen(function*() {
    yield* onlyParams(params, DEAD_LETTER_PARAMS)
    const destText = param(params, "destination")
    const destination = destText === undefined ? undefined : yield* parseDestination(destText)
    const limit = yield* parseLimit(param(params, "limit"), 100, LIMIT_MAX)
    return { limit, ...(destination !== undefined ? { destination } : {}) }
  })

// ---------------------------------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------------------------------

const outcomeOf = (recordOutcome: string): Outcome =>
  recordOutcome === "retry" ? "retrying" : (recordOutcome as Outcome)
const recordOutcomeOf = (o: Outcome) => (o === "retrying" ? "retry" : o)

/** The identifier keys of a user's person (the device's events before sign-in belong to it too). */
const personKeysOfUser = (userId: string) =>
  Effect.gen(function*() {
    const graph = yield* Identity.IdentityGraph
    const person = yield* graph.person(`user:${userId}`)
    return [...new Set([`user:${userId}`, ...(person?.identifiers.map((i) => i.key) ?? [])])]
  })

/** Searches the log, newest first (by log position), one page at a time. */
export const search = Effect.fn("Explorer.search")(function*(q: SearchQuery) {
  const sql = yield* SqlClient.SqlClient
  const store = yield* EventStore.EventStore
  const conds = [
    q.eventId !== undefined || q.event === EventStore.AUDIENCE_EVENT
      ? sql`l.kind IN ('track', 'audience')`
      : sql`l.kind = 'track'`
  ]
  if (q.eventId !== undefined) conds.push(sql`l.event_id = ${q.eventId}`)
  if (q.userId !== undefined) {
    conds.push(sql`l.person_key = ANY(${yield* personKeysOfUser(q.userId)}::text[])`)
  }
  if (q.orderId !== undefined) {
    // The business key is the order id itself (purchase) or prefixed with the event name (refund:<order id>).
    conds.push(sql`(l.dedup_key = ${q.orderId} OR l.dedup_key = l.event_name || ':' || ${q.orderId})`)
  }
  if (q.from !== undefined) conds.push(sql`l.occurred_at >= ${q.from}`)
  if (q.to !== undefined) conds.push(sql`l.occurred_at < ${q.to}`)
  if (q.event !== undefined) conds.push(sql`l.event_name = ${q.event}`)
  if (q.cursor !== undefined) conds.push(sql`l.position < ${q.cursor}::bigint`)
  if (q.destination !== undefined || q.outcome !== undefined) {
    const at = q.destination !== undefined ? sql`AND r.destination = ${q.destination}` : sql``
    const latest = q.outcome !== undefined
      ? sql`AND r.outcome = ${recordOutcomeOf(q.outcome)} AND NOT EXISTS (
          SELECT 1 FROM tl_delivery_records r2 WHERE r2.event_id = r.event_id AND r2.position = r.position
            AND r2.destination = r.destination AND r2.id > r.id)`
      : sql``
    conds.push(sql`EXISTS (SELECT 1 FROM tl_delivery_records r
      WHERE r.event_id = l.event_id AND r.position = l.position ${at} ${latest})`)
  }
  const rows = yield* sql<{ position: string }>`
    SELECT l.position::text AS position FROM tl_log l WHERE ${sql.and(conds)}
    ORDER BY l.position DESC LIMIT ${q.limit + 1}`
  const page = rows.slice(0, q.limit).map((r) => r.position)
  if (page.length === 0) return { events: [], next_cursor: null } satisfies SearchPage
  const events = yield* store.byPositions(page)
  const records = yield* sql<{ destination: string; position: string; outcome: string; reason: string | null }>`
    SELECT DISTINCT ON (destination, position) destination, position::text AS position, outcome, reason
    FROM tl_delivery_records WHERE position IN ${sql.in(page)}
    ORDER BY destination, position, id DESC`
  const byPosition = new Map(events.map((e) => [e.position, e]))
  const items = page.flatMap((p): Array<SearchItem> => {
    const e = byPosition.get(p)
    if (e === undefined) return []
    return [{
      event_id: e.eventId,
      event: e.name,
      timestamp: new Date(e.event.timestamp).toISOString(),
      received_at: e.receivedAt.toISOString(),
      user_id: e.event.user_id ?? null,
      person_key: e.personKey,
      dedup_key: e.dedupKey,
      duplicate_of: e.duplicateOf,
      destinations: records.filter((r) => r.position === p).map((r) => ({
        destination: r.destination,
        outcome: outcomeOf(r.outcome),
        reason: r.reason
      }))
    }]
  })
  return {
    events: items,
    next_cursor: rows.length > q.limit ? page[page.length - 1]! : null
  } satisfies SearchPage
})

const CONSENT_REASON = /^consent(?: \(([^)]*)\))?: (.*)$/s

/** The consent decision at a destination, read from its records (consent is checked after mapping, before dedup). */
export const consentOf = (d: Explain.DestinationView, purposes: ReadonlyArray<string>): ConsentView => {
  const denied = [...d.attempts].reverse().find((a) => a.outcome === "dropped" && dropCategory(a.reason) === "consent")
  if (denied !== undefined) {
    const m = CONSENT_REASON.exec(denied.reason ?? "")
    return { decision: "denied", purposes, purpose: m?.[1] ?? null, detail: m?.[2] ?? denied.reason }
  }
  const last = d.attempts[d.attempts.length - 1]
  if (last === undefined) {
    return {
      decision: "pending",
      purposes,
      purpose: null,
      detail: d.status === "before_start" ? "never routed here (stored before the destination's start point)" : null
    }
  }
  if (last.outcome === "dropped" && ["mapping", "erased", "other"].includes(dropCategory(last.reason))) {
    return { decision: "not_checked", purposes, purpose: null, detail: last.reason }
  }
  return {
    decision: "granted",
    purposes,
    purpose: null,
    detail: purposes.length > 0 ? `${purposes.join(", ")} granted` : "no purpose needed"
  }
}

/** Everything about one event: explain, its person, consent and dedup per destination. */
export const detail = Effect.fn("Explorer.detail")(function*(eventId: string) {
  const explain = yield* Explain.Explain
  const x = yield* explain.explain(eventId)
  if (x === undefined) return yield* new ExplorerNotFound({ message: `no event with event_id "${eventId}"` })
  const graph = yield* Identity.IdentityGraph
  const delivery = yield* Delivery.Delivery
  const person = yield* graph.person(x.person_key)
  const received = x.received as { readonly user_id?: string }
  return {
    event_id: x.event_id,
    event: x.event,
    timestamp: x.timestamp,
    received_at: x.received_at,
    position: x.position,
    routable: x.routable,
    received: x.received,
    identity: {
      person_key: x.person_key,
      person_id: person?.person_id ?? null,
      user_id: person?.user_id ?? received.user_id ?? null,
      identifiers: (person?.identifiers ?? []).map((i) => ({ key: i.key, kind: i.kind })),
      consent: person?.consent ?? {},
      audiences: person?.audiences ?? [],
      traits: Explain.maskPayload(person?.traits ?? {})
    },
    dedup: { dedup_key: x.dedup_key, duplicate_of: x.duplicate_of, adjustment: x.adjustment },
    destinations: x.destinations.map((d): DetailDestination => {
      const instance = delivery.instances.get(d.destination)
      const purposes = instance?.purposes ?? instance?.plugin.purposes ?? []
      const dup = [...d.attempts].reverse().find((a) =>
        a.outcome === "dropped" && dropCategory(a.reason) === "duplicate"
      )
      return { ...d, consent: consentOf(d, purposes), duplicate: dup?.reason ?? null }
    })
  } satisfies Detail
})

const zeroDrops = (): Record<DropCategory, number> => ({
  consent: 0,
  window: 0,
  mapping: 0,
  duplicate: 0,
  invalid: 0,
  erased: 0,
  other: 0
})

/** Per destination and local day (event time): each event counted once, by its latest record there. */
export const reconciliation = Effect.fn("Explorer.reconciliation")(function*(q: ReconciliationQuery) {
  const sql = yield* SqlClient.SqlClient
  const known = yield* knownDestinations
  const onlyDest = q.destination !== undefined ? sql`AND r.destination = ${q.destination}` : sql``
  const range = sql`kind = 'track'
    AND occurred_at >= (${q.from}::date)::timestamp AT TIME ZONE ${q.tz}
    AND occurred_at < ((${q.to}::date + 1))::timestamp AT TIME ZONE ${q.tz}`
  const received = yield* sql<{ day: string; n: number }>`
    SELECT to_char(occurred_at AT TIME ZONE ${q.tz}, 'YYYY-MM-DD') AS day, count(*)::int AS n
    FROM tl_log WHERE ${range} GROUP BY 1`
  const counts = yield* sql<
    {
      destination: string
      day: string
      accepted: number
      rejected: number
      retrying: number
      dead_lettered: number
      consent: number
      window: number
      mapping: number
      duplicate: number
      invalid: number
      erased: number
      other: number
      sent: number
    }
  >`
    WITH ev AS (
      SELECT event_id, position, to_char(occurred_at AT TIME ZONE ${q.tz}, 'YYYY-MM-DD') AS day
      FROM tl_log WHERE ${range}
    ), rec AS (
      SELECT r.id, r.destination, r.position, r.outcome, r.reason, r.duration_ms, ev.day
      FROM tl_delivery_records r JOIN ev ON r.event_id = ev.event_id AND r.position = ev.position
      WHERE true ${onlyDest}
    ), latest AS (
      SELECT DISTINCT ON (destination, position) destination, position, outcome, reason, day
      FROM rec ORDER BY destination, position, id DESC
    ), carried AS (
      SELECT DISTINCT destination, position FROM rec WHERE duration_ms IS NOT NULL
    )
    SELECT l.destination, l.day,
      count(*) FILTER (WHERE l.outcome = 'accepted')::int AS accepted,
      count(*) FILTER (WHERE l.outcome = 'rejected')::int AS rejected,
      count(*) FILTER (WHERE l.outcome = 'retry')::int AS retrying,
      count(*) FILTER (WHERE l.outcome = 'dead_letter')::int AS dead_lettered,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'consent%')::int AS consent,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'window%')::int AS window,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'not\\_mapped%')::int AS mapping,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'duplicate%')::int AS duplicate,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'invalid%')::int AS invalid,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND l.reason LIKE 'erased%')::int AS erased,
      count(*) FILTER (WHERE l.outcome = 'dropped' AND (l.reason IS NULL OR NOT (
        l.reason LIKE 'consent%' OR l.reason LIKE 'window%' OR l.reason LIKE 'not\\_mapped%'
        OR l.reason LIKE 'duplicate%' OR l.reason LIKE 'invalid%' OR l.reason LIKE 'erased%')))::int AS other,
      count(c.position)::int AS sent
    FROM latest l LEFT JOIN carried c ON c.destination = l.destination AND c.position = l.position
    GROUP BY l.destination, l.day`
  // Destinations that report per-request results (Google Data Manager): every event of a request carries the same
  // summary `{ requestId, requestStatus, recordCount, errorCounts }` as its response, so group by it.
  const summaries = yield* sql<{ destination: string; day: string; response: string }>`
    WITH ev AS (
      SELECT event_id, position, to_char(occurred_at AT TIME ZONE ${q.tz}, 'YYYY-MM-DD') AS day
      FROM tl_log WHERE ${range}
    ), latest AS (
      SELECT DISTINCT ON (r.destination, r.position) r.destination, r.position, r.outcome, r.response, ev.day
      FROM tl_delivery_records r JOIN ev ON r.event_id = ev.event_id AND r.position = ev.position
      WHERE true ${onlyDest}
      ORDER BY r.destination, r.position, r.id DESC
    )
    SELECT DISTINCT destination, day, response FROM latest
    WHERE outcome IN ('accepted', 'rejected') AND response LIKE '{"requestId"%'`
  const requests = new Map<string, Map<string, { status: string; records: number; errors: Record<string, number> }>>()
  for (const s of summaries) {
    let parsed: unknown
    try {
      parsed = JSON.parse(s.response)
    } catch {
      continue // cut to the excerpt length: not countable
    }
    const o = parsed as {
      requestId?: unknown
      requestStatus?: unknown
      recordCount?: unknown
      errorCounts?: unknown
    }
    if (typeof o.requestId !== "string" || typeof o.requestStatus !== "string") continue
    const key = `${s.destination}\u0000${s.day}`
    const perDay = requests.get(key) ?? new Map()
    const errors: Record<string, number> = {}
    if (Array.isArray(o.errorCounts)) {
      for (const c of o.errorCounts as ReadonlyArray<{ reason?: unknown; recordCount?: unknown }>) {
        const n = Number(c.recordCount)
        if (typeof c.reason === "string" && Number.isFinite(n)) errors[c.reason] = (errors[c.reason] ?? 0) + n
      }
    }
    perDay.set(o.requestId, {
      status: o.requestStatus,
      records: Number.isFinite(Number(o.recordCount)) ? Number(o.recordCount) : 0,
      errors
    })
    requests.set(key, perDay)
  }
  const destinations = q.destination !== undefined
    ? [q.destination]
    : [...new Set([...known, ...counts.map((c) => c.destination)])].sort()
  const days: Array<string> = []
  for (let d = q.from; d <= q.to; d = addDays(d, 1)) days.push(d)
  const receivedOn = new Map(received.map((r) => [r.day, r.n]))
  const rows = destinations.flatMap((destination) =>
    days.map((day): ReconciliationRow => {
      const c = counts.find((x) => x.destination === destination && x.day === day)
      const dropped = zeroDrops()
      for (const k of DROP_CATEGORIES) dropped[k] = c?.[k] ?? 0
      const droppedTotal = DROP_CATEGORIES.reduce((n, k) => n + dropped[k], 0)
      const accepted = c?.accepted ?? 0
      const rejected = c?.rejected ?? 0
      const retrying = c?.retrying ?? 0
      const deadLettered = c?.dead_lettered ?? 0
      const routed = accepted + rejected + retrying + deadLettered
      const r = receivedOn.get(day) ?? 0
      const req = requests.get(`${destination}\u0000${day}`)
      let requestCounts: RequestCounts | null = null
      if (req !== undefined) {
        const byStatus: Record<string, number> = {}
        const errorCounts: Record<string, number> = {}
        let records = 0
        for (const x of req.values()) {
          byStatus[x.status] = (byStatus[x.status] ?? 0) + 1
          records += x.records
          for (const [reason, n] of Object.entries(x.errors)) errorCounts[reason] = (errorCounts[reason] ?? 0) + n
        }
        requestCounts = { requests: req.size, by_status: byStatus, record_count: records, error_counts: errorCounts }
      }
      return {
        destination,
        day,
        received: r,
        routed,
        dropped,
        dropped_total: droppedTotal,
        sent: c?.sent ?? 0,
        accepted,
        rejected,
        retrying,
        dead_lettered: deadLettered,
        pending: Math.max(0, r - routed - droppedTotal),
        requests: requestCounts
      }
    })
  )
  return { from: q.from, to: q.to, tz: q.tz, destinations, days, rows } satisfies Reconciliation
})

/** The CSV columns of a reconciliation, in order. */
export const CSV_COLUMNS = [
  "destination",
  "day",
  "received",
  "routed",
  ...DROP_CATEGORIES.map((c) => `dropped_${c}`),
  "dropped_total",
  "sent",
  "accepted",
  "rejected",
  "retrying",
  "dead_lettered",
  "pending",
  "requests",
  "request_statuses",
  "request_record_count",
  "request_error_counts"
] as const

const csvCell = (v: string | number) => {
  let s = String(v)
  // A cell starting with = + - @ is a formula to spreadsheets: quote it as text.
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`
  return /[",\r\n]/.test(s) ? `"${s.replaceAll("\"", "\"\"")}"` : s
}

const pairs = (o: Readonly<Record<string, number>>) =>
  Object.entries(o).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}:${v}`).join(";")

/** A reconciliation as CSV (RFC 4180, CRLF line ends, header row first). */
export const toCsv = (r: Reconciliation): string =>
  [
    CSV_COLUMNS.join(","),
    ...r.rows.map((x) =>
      [
        x.destination,
        x.day,
        x.received,
        x.routed,
        ...DROP_CATEGORIES.map((c) => x.dropped[c]),
        x.dropped_total,
        x.sent,
        x.accepted,
        x.rejected,
        x.retrying,
        x.dead_lettered,
        x.pending,
        x.requests?.requests ?? "",
        x.requests ? pairs(x.requests.by_status) : "",
        x.requests?.record_count ?? "",
        x.requests ? pairs(x.requests.error_counts) : ""
      ].map(csvCell).join(",")
    )
  ].join("\r\n") + "\r\n"

/** Events whose latest record at a destination is a dead letter (and that no redrive has queued again). */
export const deadLetters = Effect.fn("Explorer.deadLetters")(function*(q: {
  readonly destination?: string
  readonly limit: number
}) {
  const sql = yield* SqlClient.SqlClient
  const onlyDest = q.destination !== undefined ? sql`AND r.destination = ${q.destination}` : sql``
  const dead = sql`r.outcome = 'dead_letter' ${onlyDest}
    AND NOT EXISTS (SELECT 1 FROM tl_delivery_records r2 WHERE r2.event_id = r.event_id AND r2.position = r.position
      AND r2.destination = r.destination AND r2.id > r.id)
    AND NOT EXISTS (SELECT 1 FROM tl_retry_queue q WHERE q.destination = r.destination AND q.position = r.position)`
  const rows = yield* sql<{
    destination: string
    event_id: string
    event_name: string
    occurred_at: Date
    attempt: number
    reason: string | null
    at: Date
  }>`SELECT r.destination, r.event_id, l.event_name, l.occurred_at, r.attempt, r.reason, r.at
    FROM tl_delivery_records r JOIN tl_log l ON l.position = r.position
    WHERE ${dead} ORDER BY r.id DESC LIMIT ${q.limit}`
  const totals = yield* sql<{ destination: string; n: number }>`
    SELECT r.destination, count(*)::int AS n FROM tl_delivery_records r WHERE ${dead} GROUP BY r.destination`
  return {
    totals: Object.fromEntries(totals.map((t) => [t.destination, t.n])) as Record<string, number>,
    dead_letters: rows.map((r): DeadLetter => ({
      destination: r.destination,
      event_id: r.event_id,
      event: r.event_name,
      timestamp: r.occurred_at.toISOString(),
      attempts: r.attempt,
      reason: r.reason,
      dead_lettered_at: r.at.toISOString()
    }))
  }
})

/** Delivery's live state of each destination, with its backlog, retry queue, dead letters and lag from the store. */
export const health = Effect.fn("Explorer.health")(function*() {
  const sql = yield* SqlClient.SqlClient
  const delivery = yield* Delivery.Delivery
  const live = yield* delivery.health
  const now = Date.now()
  return yield* Effect.forEach(live, (h) =>
    Effect.gen(function*() {
      // One statement, so one snapshot: delivery moving events from the log into the retry queue between two
      // statements would otherwise count them twice.
      const [counts] = yield* sql<
        { backlog: number; backlog_oldest: Date | null; queue: number; queue_oldest: Date | null }
      >`
        SELECT b.n AS backlog, b.oldest AS backlog_oldest, q.n AS queue, q.oldest AS queue_oldest
        FROM (SELECT count(*)::int AS n, min(l.received_at) AS oldest FROM tl_log l, tl_subscriptions s
              WHERE s.destination = ${h.destination} AND l.kind = 'track'
                AND (l.tx, l.position) > (s.cursor_tx, s.cursor_pos)) b,
             (SELECT count(*)::int AS n, min(l.received_at) AS oldest FROM tl_retry_queue q
              JOIN tl_log l ON l.position = q.position WHERE q.destination = ${h.destination}) q`
      const backlog = counts === undefined ? undefined : { n: counts.backlog, oldest: counts.backlog_oldest }
      const queue = counts === undefined ? undefined : { n: counts.queue, oldest: counts.queue_oldest }
      const [dead] = yield* sql<{ n: number }>`
        SELECT count(*)::int AS n FROM tl_delivery_records r
        WHERE r.destination = ${h.destination} AND r.outcome = 'dead_letter'
          AND NOT EXISTS (SELECT 1 FROM tl_delivery_records r2 WHERE r2.event_id = r.event_id
            AND r2.position = r.position AND r2.destination = r.destination AND r2.id > r.id)
          AND NOT EXISTS (SELECT 1 FROM tl_retry_queue q WHERE q.destination = r.destination AND q.position = r.position)`
      const [failure] = yield* sql<{ outcome: string; reason: string | null; at: Date }>`
        SELECT outcome, reason, at FROM tl_delivery_records
        WHERE destination = ${h.destination} AND outcome IN ('rejected', 'retry', 'dead_letter')
        ORDER BY at DESC, id DESC LIMIT 1`
      const oldest = [backlog?.oldest, queue?.oldest]
        .filter((d): d is Date => d !== null && d !== undefined)
        .map((d) => d.getTime())
      return {
        ...h,
        backlog: backlog?.n ?? 0,
        retry_queue: queue?.n ?? 0,
        dead_letters: dead?.n ?? 0,
        lag_seconds: oldest.length === 0 ? null : Math.max(0, Math.round((now - Math.min(...oldest)) / 1000)),
        last_failure: failure === undefined
          ? null
          : { outcome: outcomeOf(failure.outcome), reason: failure.reason, at: failure.at.toISOString() }
      } satisfies Health
    }))
})

/** The vocabulary's event names (for the search form). */
export const eventNames = Effect.map(
  TrackLayerConfig.TrackLayerConfig,
  (config) => Object.keys(config.vocabulary).sort()
)

// ---------------------------------------------------------------------------------------------------------------------
// JSON handlers
// ---------------------------------------------------------------------------------------------------------------------

const errorJson = (status: number, code: string, message: string, extra: Record<string, string> = {}) =>
  HttpServerResponse.unsafeJson({ error: { code, message, ...extra } }, { status })

/** Explorer failures as the gateway's JSON errors. */
export const toJsonError = (
  e:
    | ExplorerBadRequest
    | ExplorerNotFound
    | ExplorerSession.ExplorerUnauthorized
    | ExplorerSession.ExplorerForbidden
    | SqlError.SqlError
) =>
  Effect.gen(function*() {
    switch (e._tag) {
      case "ExplorerBadRequest":
        return errorJson(400, "bad_request", e.message, { param: e.param })
      case "ExplorerNotFound":
        return errorJson(404, "not_found", e.message)
      case "ExplorerUnauthorized":
        return errorJson(401, "unauthorized", e.message)
      case "ExplorerForbidden":
        return errorJson(403, "forbidden", e.message)
      default:
        yield* Effect.logError("explorer: store failure", e)
        return HttpServerResponse.unsafeJson(
          { error: { code: "store_unavailable", message: "the event store is unavailable; retry later" } },
          { status: 503, headers: { "retry-after": "1" } }
        )
    }
  })

const api = <R>(
  body: Effect.Effect<
    HttpServerResponse.HttpServerResponse,
    ExplorerBadRequest | ExplorerNotFound | SqlError.SqlError,
    R
  >
) =>
  ExplorerSession.authorize("read").pipe(
    Effect.zipRight(body),
    Effect.map(HttpServerResponse.setHeader("cache-control", "no-store")),
    Effect.catchAll(toJsonError)
  )

/** `GET /v1/explorer/events`. */
export const eventsHandler = api(Effect.gen(function*() {
  const q = yield* Effect.flatMap(queryParams, parseSearch)
  return HttpServerResponse.unsafeJson(yield* search(q))
}))

/** `GET /v1/explorer/events/:id`. */
export const eventHandler = api(Effect.gen(function*() {
  const params = yield* HttpRouter.params
  return HttpServerResponse.unsafeJson(yield* detail(params["id"] ?? ""))
}))

/** `GET /v1/explorer/reconciliation`. */
export const reconciliationHandler = api(Effect.gen(function*() {
  const q = yield* Effect.flatMap(queryParams, parseReconciliation)
  return HttpServerResponse.unsafeJson(yield* reconciliation(q))
}))

/** `GET /v1/explorer/reconciliation.csv`. */
export const reconciliationCsvHandler = api(Effect.gen(function*() {
  const q = yield* Effect.flatMap(queryParams, parseReconciliation)
  const r = yield* reconciliation(q)
  const name = `tracklayer-reconciliation-${r.from}-to-${r.to}${q.destination ? `-${q.destination}` : ""}.csv`
  return HttpServerResponse.text(toCsv(r), {
    contentType: "text/csv; charset=utf-8",
    headers: { "content-disposition": `attachment; filename="${name.replace(/[^A-Za-z0-9._-]/g, "_")}"` }
  })
}))

/** `GET /v1/explorer/dead-letters`. */
export const deadLettersHandler = api(Effect.gen(function*() {
  const q = yield* Effect.flatMap(queryParams, parseDeadLetters)
  return HttpServerResponse.unsafeJson(yield* deadLetters(q))
}))

/** `GET /v1/explorer/health`. */
export const healthHandler = api(Effect.gen(function*() {
  yield* Effect.flatMap(queryParams, (p) => onlyParams(p, []))
  return HttpServerResponse.unsafeJson({ destinations: yield* health() })
}))
