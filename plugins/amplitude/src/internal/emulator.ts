/**
 * Amplitude HTTP API v2 ingestion, emulated in memory as Amplitude documents it: request and event validation,
 * limits, error bodies, per-user/device throttling and `insert_id` dedup; the Identify API (`/identify`: form
 * fields, identification validation, user property operations applied to a per-user property map); the User
 * Privacy API. Transport-free (the sandbox wraps it in `node:http`) and written independently of the plugin, so a
 * plugin bug is not mirrored here.
 */

/** Events stored by the emulator, in arrival order. */
export interface StoredEvent {
  readonly seq: number
  readonly received_at: number
  readonly insert_id: string | null
  /** The event as Amplitude keeps it (ids shorter than `min_id_length` removed). */
  readonly event: Record<string, unknown>
}

export interface Stats {
  readonly requests: number
  /** HTTP status → count of ingestion requests answered with it. */
  readonly responses: Record<string, number>
  readonly events_received: number
  /** Events counted in `events_ingested` of 200 answers (duplicates included, as Amplitude counts them). */
  readonly events_accepted: number
  /** Events stored for the first time. */
  readonly events_stored: number
  /** Events ignored because their `insert_id` was seen in the last 7 days. */
  readonly duplicates: number
  /** Events in 429 answers. */
  readonly throttled_events: number
  /** Reason → events refused for it (`invalid field: time`, `invalid api key`, …). */
  readonly rejected: Record<string, number>
}

/** A deletion request received by the User Privacy API (`POST /api/2/deletions/users`). */
export interface StoredDeletion {
  readonly seq: number
  readonly received_at: number
  readonly user_ids: ReadonlyArray<string>
  readonly amplitude_ids: ReadonlyArray<number>
  readonly requester: string | null
  readonly ignore_invalid_id: string | null
  readonly delete_from_org: string | null
  /** The day the deletion job is scheduled for (YYYY-MM-DD). */
  readonly day: string
}

/** One identification received by the Identify API (`POST /identify`) in an accepted request. */
export interface StoredIdentify {
  readonly seq: number
  readonly received_at: number
  /** The identification exactly as received. */
  readonly identification: Record<string, unknown>
  /**
   * False when Amplitude would drop its property updates: the user (or device) already changed properties
   * `propertyUpdatesPerHour` times in the last hour.
   */
  readonly applied: boolean
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** Which endpoint a `status` fault hits: the HTTP API (`ingest`, default) or the Identify API (`identify`). */
  readonly target?: "ingest" | "identify"
  /** The next `count` ingestion requests answer this status. */
  readonly status?: number
  /**
   * Instead of a status, the next `count` requests lose their connection: the socket is destroyed without an answer
   * (a connection reset as the client sees it).
   */
  readonly reset?: boolean
  /** Instead of a status, the next `count` requests are never answered (the client's timeout has to give up). */
  readonly timeout?: boolean
  readonly count?: number
  /** Let this many ingestion requests through before the fault starts (to fail a follow-up request). */
  readonly skip?: number
  /** `Retry-After` header on those answers (seconds, or an HTTP-date string). */
  readonly retryAfter?: number | string
  /** Answer this JSON body instead of the default one for `status` (to replay documented answers). */
  readonly body?: unknown
  /**
   * Process the request normally (store its events) and still answer the fault: "500 may have ingested"; with
   * `reset` or `timeout`, the events are stored and the answer is lost.
   */
  readonly ingest?: boolean
  /** While true every ingestion and identify request gets 503 and nothing is stored. */
  readonly down?: boolean
  /** Delay every answer by this many ms (events are processed on arrival). */
  readonly delayMs?: number
}

/** Runtime configuration (`POST /__sandbox/config`). */
export interface EmulatorConfig {
  readonly apiKeys: ReadonlyArray<string>
  /** Secret keys accepted with any api key by the User Privacy API (Basic auth `api_key:secret_key`). */
  readonly secretKeys: ReadonlyArray<string>
  /** The User Privacy API's limit of one request per second (per api key). */
  readonly deletionRateLimit: boolean
  readonly throttle: boolean
  /** Events per second per user_id or device_id above which a request is throttled (Amplitude: 30). */
  readonly epsThreshold: number
  /** Sliding window of the throttle (Amplitude averages over 30 s; the sandbox uses 1 s). */
  readonly throttleWindowMs: number
  /** Bodies of this many bytes or more get 413 (Amplitude: under 1 MB). */
  readonly maxBodyBytes: number
  /** More events than this in one request get 413 (Amplitude: 2000). */
  readonly maxEventsPerRequest: number
  /** How long an `insert_id` deduplicates (Amplitude: 7 days). */
  readonly dedupWindowMs: number
  /** More identifications than this in one identify request get 413 (HTTP API guidance: 2000). */
  readonly maxIdentificationsPerRequest: number
  /** Property updates per user (or device) per hour before Amplitude drops them (Amplitude: 1800). */
  readonly propertyUpdatesPerHour: number
}

export const defaultConfig: EmulatorConfig = {
  apiKeys: ["sandbox-amplitude-key"],
  secretKeys: ["sandbox-amplitude-secret"],
  deletionRateLimit: true,
  throttle: true,
  epsThreshold: 30,
  throttleWindowMs: 1000,
  maxBodyBytes: 1_000_000,
  maxEventsPerRequest: 2000,
  dedupWindowMs: 7 * 24 * 60 * 60 * 1000,
  maxIdentificationsPerRequest: 2000,
  propertyUpdatesPerHour: 1800
}

export interface Request {
  readonly method: string
  readonly path: string
  readonly contentType: string | undefined
  /** The `Authorization` header (the User Privacy API uses Basic auth). */
  readonly authorization?: string | undefined
  readonly body: Uint8Array
  /** Size of the body as received (the kept `body` may be cut). */
  readonly bytes: number
  readonly now: number
}

export interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
  /** Set by a connection fault: the transport destroys the socket (`reset`) or never answers (`timeout`). */
  readonly connection?: "reset" | "timeout"
}

const BLOCKED = new Set([
  "anonymous",
  "nil",
  "none",
  "null",
  "n/a",
  "na",
  "undefined",
  "unknown",
  "0",
  "-1",
  "lmy47d",
  "{}",
  "",
  "00000000-0000-0000-0000-000000000000"
])

const RESERVED_EVENT_TYPES = new Set([
  "[Amplitude] Start Session",
  "[Amplitude] End Session",
  "[Amplitude] Revenue",
  "[Amplitude] Revenue (Verified)",
  "[Amplitude] Revenue (Unverified)",
  "[Amplitude] Merged User"
])

const STRING_FIELDS = [
  "app_version",
  "platform",
  "os_name",
  "os_version",
  "device_brand",
  "device_manufacturer",
  "device_model",
  "carrier",
  "country",
  "region",
  "city",
  "dma",
  "language",
  "productId",
  "revenueType",
  "ip",
  "idfa",
  "idfv",
  "adid",
  "android_id",
  "library",
  "partner_id"
]
const INTEGER_FIELDS = ["time", "event_id", "session_id", "quantity"]
const NUMBER_FIELDS = ["price", "revenue", "location_lat", "location_lng"]
const OBJECT_FIELDS = ["event_properties", "user_properties", "groups"]
const MAX_STRING = 1024
const MAX_DEPTH = 40

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body)
})

const html = (status: number, title: string, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "text/html", ...headers },
  body: `<html><head><title>${title}</title></head><body><center><h1>${title}</h1></center></body></html>`
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** True when a JSON value holds a string longer than 1024 or nests deeper than 40 levels. */
const tooLongOrDeep = (u: unknown, depth: number): boolean => {
  if (typeof u === "string") return u.length > MAX_STRING
  if (depth > MAX_DEPTH) return true
  if (Array.isArray(u)) return u.some((v) => tooLongOrDeep(v, depth + 1))
  if (isObject(u)) return Object.values(u).some((v) => tooLongOrDeep(v, depth + 1))
  return false
}

interface EventCheck {
  readonly invalid: ReadonlyArray<string>
  readonly missing: ReadonlyArray<string>
  readonly idLengths: ReadonlyArray<string>
  /** The event as it would be stored. */
  readonly stored: Record<string, unknown>
}

/** Validates one event the way the HTTP API v2 documents it. */
const checkEvent = (raw: unknown, minIdLength: number): EventCheck => {
  if (!isObject(raw)) return { invalid: [], missing: ["event_type"], idLengths: [], stored: {} }
  const invalid: Array<string> = []
  const missing: Array<string> = []
  const idLengths: Array<string> = []
  const stored: Record<string, unknown> = { ...raw }
  const type = raw.event_type
  if (type === undefined || type === null || type === "") missing.push("event_type")
  else if (typeof type !== "string" || RESERVED_EVENT_TYPES.has(type) || type.length > MAX_STRING) {
    invalid.push("event_type")
  }
  let validIds = 0
  for (const field of ["user_id", "device_id"] as const) {
    const id = raw[field]
    if (id === undefined || id === null) {
      delete stored[field]
      continue
    }
    if (typeof id !== "string" || BLOCKED.has(id.trim().toLowerCase()) || id.length > MAX_STRING) {
      invalid.push(field)
    } else if (id.length < minIdLength) {
      // Documented: a too-short id is removed from the event; the event fails only if no id is left.
      idLengths.push(field)
      delete stored[field]
    } else {
      validIds += 1
    }
  }
  for (const field of INTEGER_FIELDS) {
    const v = raw[field]
    const ok = typeof v === "number" && Number.isInteger(v) && (field !== "time" || v >= 0)
    if (v !== undefined && v !== null && !ok) invalid.push(field)
  }
  for (const field of NUMBER_FIELDS) {
    const v = raw[field]
    if (v !== undefined && v !== null && !(typeof v === "number" && Number.isFinite(v))) invalid.push(field)
  }
  for (const field of STRING_FIELDS) {
    const v = raw[field]
    if (v !== undefined && v !== null && !(typeof v === "string" && v.length <= MAX_STRING)) invalid.push(field)
  }
  const insertId = raw.insert_id
  if (insertId !== undefined && insertId !== null) {
    if (typeof insertId !== "string" || insertId === "" || insertId.length > MAX_STRING) invalid.push("insert_id")
  }
  for (const field of OBJECT_FIELDS) {
    const v = raw[field]
    if (v !== undefined && v !== null && (!isObject(v) || tooLongOrDeep(v, 1))) invalid.push(field)
  }
  const idInvalid = invalid.includes("user_id") || invalid.includes("device_id")
  if (validIds === 0 && !idInvalid && idLengths.length === 0) missing.push("user_id", "device_id")
  return {
    invalid,
    missing,
    // Reported only when the event is left without any id.
    idLengths: validIds === 0 ? idLengths : [],
    stored
  }
}

const addIndex = (map: Record<string, Array<number>>, field: string, index: number) => {
  ;(map[field] ??= []).push(index)
}

const text = (status: number, body: string, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  body
})

/** The user property operations the Identify API documents. */
const OPERATIONS = new Set([
  "$set",
  "$setOnce",
  "$add",
  "$append",
  "$prepend",
  "$unset",
  "$preInsert",
  "$postInsert",
  "$remove"
])

/** Sets an own property (also `__proto__`). */
const setOwn = (target: Record<string, unknown>, key: string, value: unknown) =>
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })

const asList = (u: unknown): Array<unknown> => (u === undefined ? [] : Array.isArray(u) ? [...u] : [u])
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)

/** Applies one identification's `user_properties` (operations, or plain keys meaning `$set`) to `props`. */
const applyOperations = (props: Record<string, unknown>, userProperties: Record<string, unknown>) => {
  const keys = Object.keys(userProperties)
  const operations = keys.length > 0 && keys.every((k) => k.startsWith("$")) ? userProperties : { $set: userProperties }
  for (const [op, values] of Object.entries(operations)) {
    for (const [key, value] of Object.entries(values as Record<string, unknown>)) {
      const current = Object.hasOwn(props, key) ? props[key] : undefined
      switch (op) {
        case "$set":
          setOwn(props, key, value)
          break
        case "$setOnce":
          if (!Object.hasOwn(props, key)) setOwn(props, key, value)
          break
        case "$add": {
          // A missing or non-numeric value counts as 0; numbers may come as strings ("123").
          const base = typeof current === "number" ? current : Number(current ?? 0)
          const delta = typeof value === "number" ? value : Number(value)
          setOwn(props, key, (Number.isFinite(base) ? base : 0) + (Number.isFinite(delta) ? delta : 0))
          break
        }
        case "$append":
          setOwn(props, key, [...asList(current), ...asList(value)])
          break
        case "$prepend":
          setOwn(props, key, [...asList(value), ...asList(current)])
          break
        case "$preInsert": {
          const list = asList(current)
          setOwn(props, key, [...asList(value).filter((v) => !list.some((x) => same(x, v))), ...list])
          break
        }
        case "$postInsert": {
          const list = asList(current)
          setOwn(props, key, [...list, ...asList(value).filter((v) => !list.some((x) => same(x, v)))])
          break
        }
        case "$remove": {
          const gone = asList(value)
          if (current !== undefined) setOwn(props, key, asList(current).filter((x) => !gone.some((v) => same(x, v))))
          break
        }
        case "$unset":
          delete props[key]
          break
      }
    }
  }
}

/** Form fields of a `multipart/form-data` body (text parts only). */
const multipartFields = (body: Uint8Array, contentType: string): URLSearchParams => {
  const fields = new URLSearchParams()
  const boundary = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType)
  const b = boundary?.[1] ?? boundary?.[2]
  if (b === undefined) return fields
  for (const part of new TextDecoder().decode(body).split(`--${b}`)) {
    const split = part.indexOf("\r\n\r\n")
    if (split < 0) continue
    const name = /name="([^"]*)"/i.exec(part.slice(0, split))?.[1]
    if (name !== undefined) fields.append(name, part.slice(split + 4).replace(/\r\n$/, ""))
  }
  return fields
}

/** Why one identification is refused (none when valid), and whose properties it changes (`u:…` / `d:…`). */
const checkIdentification = (
  raw: unknown,
  minIdLength: number
): { readonly problems: ReadonlyArray<string>; readonly key: string | undefined } => {
  if (!isObject(raw)) return { problems: ["must be a JSON object"], key: undefined }
  const problems: Array<string> = []
  const valid: Partial<Record<"user_id" | "device_id", string>> = {}
  const short: Array<string> = []
  for (const field of ["user_id", "device_id"] as const) {
    const id = raw[field]
    if (id === undefined || id === null) continue
    if (typeof id !== "string" || id.length > MAX_STRING) {
      problems.push(`${field} must be a string of at most 1024 characters`)
    } else if (BLOCKED.has(id.trim().toLowerCase())) problems.push(`${field} ${JSON.stringify(id)} is refused`)
    else if (id.length < minIdLength) short.push(field) // removed, as the HTTP API does
    else valid[field] = id
  }
  if (problems.length === 0 && valid.user_id === undefined && valid.device_id === undefined) {
    problems.push(
      short.length > 0
        ? `${short.join(" and ")} shorter than min_id_length ${minIdLength}, and no other id`
        : "user_id or device_id required"
    )
  }
  const up = raw.user_properties
  if (up !== undefined && up !== null) {
    if (!isObject(up)) problems.push("user_properties must be an object")
    else {
      const ops = Object.keys(up).filter((k) => k.startsWith("$"))
      const plain = Object.keys(up).filter((k) => !k.startsWith("$"))
      if (ops.length > 0 && plain.length > 0) {
        problems.push(
          `user_properties mixes operations (${ops.join(", ")}) with plain properties (${plain.join(", ")})`
        )
      }
      for (const op of ops) {
        if (!OPERATIONS.has(op)) problems.push(`unknown user property operation ${op}`)
        else if (!isObject(up[op])) problems.push(`${op} must be an object`)
      }
      if (tooLongOrDeep(up, 1)) problems.push("user_properties holds a string over 1024 characters or nests over 40")
    }
  }
  const key = valid.user_id !== undefined
    ? `u:${valid.user_id}`
    : valid.device_id !== undefined
    ? `d:${valid.device_id}`
    : undefined
  return { problems, key }
}

interface PendingFault {
  status: number
  connection?: "reset" | "timeout"
  remaining: number
  skip: number
  retryAfter?: number | string
  body?: unknown
  ingest: boolean
}

/** The emulated Amplitude project(s): state plus the request handler. */
export class Emulator {
  config: EmulatorConfig
  private stored: Array<StoredEvent> = []
  private deletions: Array<StoredDeletion> = []
  private identifications: Array<StoredIdentify> = []
  /** `u:<user_id>` / `d:<device_id>` → user properties. */
  private properties = new Map<string, Record<string, unknown>>()
  /** `u:`/`d:` key → times of applied property updates (the last hour). */
  private propertyUpdates = new Map<string, Array<number>>()
  private lastDeletionAt = new Map<string, number>()
  private seq = 0
  private seen = new Map<string, number>()
  private recent = new Map<string, Array<number>>()
  private faults: PendingFault | undefined
  private identifyFaults: PendingFault | undefined
  private down: { retryAfter?: number | string } | undefined
  private delayMs = 0
  private stats: {
    requests: number
    responses: Record<string, number>
    events_received: number
    events_accepted: number
    events_stored: number
    duplicates: number
    throttled_events: number
    rejected: Record<string, number>
  } = Emulator.emptyStats()

  constructor(config: Partial<EmulatorConfig> = {}) {
    this.config = { ...defaultConfig, ...config }
  }

  private static emptyStats() {
    return {
      requests: 0,
      responses: {},
      events_received: 0,
      events_accepted: 0,
      events_stored: 0,
      duplicates: 0,
      throttled_events: 0,
      rejected: {}
    }
  }

  /** Forgets events, dedup and throttle state, statistics and faults. */
  reset(): void {
    this.stored = []
    this.deletions = []
    this.identifications = []
    this.properties.clear()
    this.propertyUpdates.clear()
    this.lastDeletionAt.clear()
    this.seq = 0
    this.seen.clear()
    this.recent.clear()
    this.faults = undefined
    this.identifyFaults = undefined
    this.down = undefined
    this.delayMs = 0
    this.stats = Emulator.emptyStats()
  }

  /** Every stored event in arrival order. */
  events(): ReadonlyArray<StoredEvent> {
    return this.stored
  }

  /** Handles one HTTP request; `delayMs` is how long to hold the answer. */
  handle(req: Request): { readonly reply: Reply; readonly delayMs: number } {
    const path = req.path.split("?")[0] ?? "/"
    if (path === "/2/httpapi") {
      if (req.method !== "POST") return { reply: json(405, { code: 405, error: "Method Not Allowed" }), delayMs: 0 }
      const reply = this.ingest(req)
      const answer = reply.connection ?? String(reply.status)
      this.stats.responses[answer] = (this.stats.responses[answer] ?? 0) + 1
      return { reply, delayMs: this.delayMs }
    }
    if (path === "/identify") {
      if (req.method !== "POST" && req.method !== "GET") return { reply: text(405, "Method Not Allowed"), delayMs: 0 }
      return { reply: this.identify(req), delayMs: this.delayMs }
    }
    if (path === "/api/2/deletions/users") {
      if (req.method !== "POST") return { reply: json(405, { error: "Method Not Allowed" }), delayMs: 0 }
      return { reply: this.deleteUsers(req), delayMs: 0 }
    }
    return { reply: this.control(req, path), delayMs: 0 }
  }

  /** Deletion requests received, in arrival order. */
  deletionRequests(): ReadonlyArray<StoredDeletion> {
    return this.deletions
  }

  /** Identifications of accepted identify requests, in arrival order. */
  identifies(): ReadonlyArray<StoredIdentify> {
    return this.identifications
  }

  /** The user properties of a user (`u:<user_id>`) or device (`d:<device_id>`), after every identify. */
  userProperties(key: string): Readonly<Record<string, unknown>> {
    return this.properties.get(key) ?? {}
  }

  /**
   * Identify API: form fields `api_key`, `identification` (one JSON object or an array) and `options`
   * (`{"min_id_length": n}`), in a form-encoded or multipart POST body or a GET query string. Plain-text answers
   * (`success`, `invalid_api_key`, `missing_event`) as the endpoint gives them; the whole request is refused when
   * one identification is invalid (nothing applied).
   */
  private identify(req: Request): Reply {
    const query = req.path.includes("?") ? req.path.slice(req.path.indexOf("?") + 1) : ""
    if (req.method === "GET" && req.path.length > 8192) return html(414, "414 Request-URI Too Large")
    const contentType = req.contentType?.trim() ?? ""
    const fields = req.method === "GET"
      ? new URLSearchParams(query)
      : /^application\/x-www-form-urlencoded\b/i.test(contentType)
      ? new URLSearchParams(new TextDecoder().decode(req.body))
      : /^multipart\/form-data\b/i.test(contentType)
      ? multipartFields(req.body, contentType)
      : new URLSearchParams()
    const raw = fields.get("identification")
    let parsed: unknown = undefined
    try {
      parsed = raw === null ? undefined : JSON.parse(raw)
    } catch {
      parsed = undefined
    }
    const list: ReadonlyArray<unknown> = Array.isArray(parsed) ? parsed : parsed === undefined ? [] : [parsed]
    if (this.down !== undefined) {
      return json(503, { code: 503, error: "Service Unavailable" }, this.retryAfterHeader(this.down.retryAfter))
    }
    const fault = this.takeFault("identify")
    if (fault !== undefined && !fault.ingest) return this.faultReply(fault, list, false)
    const reply = this.processIdentify(req, fields, parsed, list)
    return fault !== undefined ? this.faultReply(fault, list, false) : reply
  }

  private processIdentify(
    req: Request,
    fields: URLSearchParams,
    parsed: unknown,
    list: ReadonlyArray<unknown>
  ): Reply {
    if (req.bytes >= this.config.maxBodyBytes) return json(413, { code: 413, error: "Payload too large" })
    const apiKey = fields.get("api_key")
    if (apiKey === null || !this.config.apiKeys.includes(apiKey)) return text(400, "invalid_api_key")
    const shape = Array.isArray(parsed) ? parsed.length > 0 : isObject(parsed)
    if (!shape) return text(400, "missing_event")
    if (list.length > this.config.maxIdentificationsPerRequest) {
      return json(413, { code: 413, error: "Payload too large" })
    }
    let minIdLength = 5
    const rawOptions = fields.get("options")
    if (rawOptions !== null) {
      let options: unknown
      try {
        options = JSON.parse(rawOptions)
      } catch {
        options = undefined
      }
      const m = isObject(options) ? options.min_id_length ?? 5 : undefined
      if (typeof m !== "number" || !Number.isInteger(m) || m < 1) {
        return text(400, "invalid_options: options must be a JSON object; min_id_length a positive integer")
      }
      minIdLength = m
    }
    const checks = list.map((i) => checkIdentification(i, minIdLength))
    const problems = checks.flatMap((c, i) => c.problems.map((p) => `identification ${i}: ${p}`))
    if (problems.length > 0) return text(400, `invalid_identification: ${problems.join("; ")}`)
    const since = req.now - 3_600_000
    list.forEach((raw, i) => {
      const identification = raw as Record<string, unknown>
      const key = checks[i]!.key!
      const up = identification.user_properties
      let applied = true
      if (isObject(up) && Object.keys(up).length > 0) {
        const recent = (this.propertyUpdates.get(key) ?? []).filter((t) => t > since)
        applied = recent.length < this.config.propertyUpdatesPerHour
        if (applied) {
          recent.push(req.now)
          const props = this.properties.get(key) ?? {}
          applyOperations(props, up)
          this.properties.set(key, props)
        }
        this.propertyUpdates.set(key, recent)
      }
      this.identifications.push({
        seq: this.identifications.length + 1,
        received_at: req.now,
        identification,
        applied
      })
    })
    return text(200, "success")
  }

  /**
   * User Privacy API v1: Basic auth `api_key:secret_key`; JSON (or form) body with `user_ids` and/or
   * `amplitude_ids` (at most 100 in all), `requester`, `ignore_invalid_id`, `delete_from_org`; one request per
   * second; 200 with the deletion job the users joined (`staging`, scheduled 10 days later here).
   */
  private deleteUsers(req: Request): Reply {
    const m = /^Basic\s+(\S+)$/i.exec(req.authorization ?? "")
    const [key, ...secret] = m ? Buffer.from(m[1]!, "base64").toString("utf8").split(":") : []
    if (key === undefined || !this.config.apiKeys.includes(key) || !this.config.secretKeys.includes(secret.join(":"))) {
      return json(401, { error: "Invalid API key or secret key" })
    }
    const last = this.lastDeletionAt.get(key)
    if (this.config.deletionRateLimit && last !== undefined && req.now - last < 1000) {
      return json(429, { error: "Too many requests: the User Privacy API allows 1 request per second" }, {
        "retry-after": "1"
      })
    }
    let body: Record<string, unknown> = {}
    const text = new TextDecoder().decode(req.body)
    if (req.contentType !== undefined && /^application\/x-www-form-urlencoded\b/i.test(req.contentType)) {
      const form = new URLSearchParams(text)
      body = {
        user_ids: form.getAll("user_ids"),
        amplitude_ids: form.getAll("amplitude_ids").map(Number),
        requester: form.get("requester") ?? undefined
      }
    } else {
      const parsed = this.parse(req.body)
      if (!isObject(parsed)) return json(400, { error: "Invalid JSON request body" })
      body = parsed
    }
    const userIds = body.user_ids ?? []
    const amplitudeIds = body.amplitude_ids ?? []
    if (!Array.isArray(userIds) || !userIds.every((u) => typeof u === "string" || typeof u === "number")) {
      return json(400, { error: "user_ids must be an array of user ids" })
    }
    if (!Array.isArray(amplitudeIds) || !amplitudeIds.every((a) => Number.isInteger(a))) {
      return json(400, { error: "amplitude_ids must be an array of integers" })
    }
    if (userIds.length + amplitudeIds.length === 0) {
      return json(400, { error: "Request missing required field: user_ids or amplitude_ids" })
    }
    if (userIds.length + amplitudeIds.length > 100) {
      return json(400, { error: "At most 100 user_ids and amplitude_ids per request" })
    }
    const text_ = (u: unknown) => (u === undefined || u === null ? null : String(u))
    const requester = text_(body.requester)
    const today = new Date(req.now).toISOString().slice(0, 10)
    const day = new Date(req.now + 10 * 86_400_000).toISOString().slice(0, 10)
    this.lastDeletionAt.set(key, req.now)
    this.deletions.push({
      seq: this.deletions.length + 1,
      received_at: req.now,
      user_ids: userIds.map(String),
      amplitude_ids: amplitudeIds as Array<number>,
      requester,
      ignore_invalid_id: text_(body.ignore_invalid_id),
      delete_from_org: text_(body.delete_from_org),
      day
    })
    return json(200, {
      day,
      status: "staging",
      amplitude_ids: (amplitudeIds as Array<number>).map((amplitude_id) => ({
        amplitude_id,
        requested_on_day: today,
        requester
      })),
      user_ids: userIds.map((user_id) => ({ user_id: String(user_id), requested_on_day: today, requester }))
    })
  }

  private control(req: Request, path: string): Reply {
    const route = `${req.method} ${path}`
    switch (route) {
      case "GET /__sandbox/events":
        return json(200, { events: this.stored })
      case "GET /__sandbox/identifies":
        return json(200, { identifies: this.identifications })
      case "GET /__sandbox/user-properties": {
        const query = new URLSearchParams(req.path.includes("?") ? req.path.slice(req.path.indexOf("?") + 1) : "")
        const userId = query.get("user_id")
        const deviceId = query.get("device_id")
        if (userId === null && deviceId === null) return json(400, { error: "user_id or device_id required" })
        return json(200, {
          user_id: userId,
          device_id: deviceId,
          user_properties: this.userProperties(userId !== null ? `u:${userId}` : `d:${deviceId}`)
        })
      }
      case "GET /__sandbox/deletions":
        return json(200, { deletions: this.deletions })
      case "DELETE /__sandbox/events":
        this.reset()
        return json(200, { ok: true })
      case "GET /__sandbox/stats":
        return json(200, this.stats)
      case "GET /__sandbox/faults":
        return json(200, this.faultState())
      case "DELETE /__sandbox/faults":
        this.faults = undefined
        this.identifyFaults = undefined
        this.down = undefined
        this.delayMs = 0
        return json(200, this.faultState())
      case "POST /__sandbox/faults": {
        const body = this.parse(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.setFaults(body as Faults)
      }
      case "POST /__sandbox/config": {
        const body = this.parse(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.configure(body)
      }
      case "GET /":
      case "GET /__sandbox":
        return json(200, {
          sandbox: "amplitude-http-api-v2",
          ingest: "POST /2/httpapi",
          identify: "POST /identify",
          deletion: "POST /api/2/deletions/users",
          control: [
            "GET /__sandbox/events",
            "GET /__sandbox/identifies",
            "GET /__sandbox/user-properties?user_id=…",
            "GET /__sandbox/deletions",
            "DELETE /__sandbox/events",
            "GET /__sandbox/stats",
            "POST /__sandbox/faults",
            "DELETE /__sandbox/faults",
            "POST /__sandbox/config"
          ]
        })
      default:
        return json(404, { code: 404, error: "Not Found" })
    }
  }

  private faultState() {
    return {
      next: this.faults ?? null,
      identify: this.identifyFaults ?? null,
      down: this.down !== undefined,
      delayMs: this.delayMs
    }
  }

  private setFaults(f: Faults): Reply {
    if (f.target !== undefined && f.target !== "ingest" && f.target !== "identify") {
      return json(400, { error: "target must be \"ingest\" or \"identify\"" })
    }
    const connection = f.reset === true ? "reset" : f.timeout === true ? "timeout" : undefined
    if ([f.status !== undefined, f.reset === true, f.timeout === true].filter(Boolean).length > 1) {
      return json(400, { error: "status, reset and timeout are exclusive: give one of them" })
    }
    if (f.status !== undefined || connection !== undefined) {
      if (connection === undefined && (typeof f.status !== "number" || f.status < 400 || f.status > 599)) {
        return json(400, { error: "status must be an HTTP error status (4xx or 5xx)" })
      }
      const fault: PendingFault = {
        // A connection fault has no status of its own; 0 never reaches the wire.
        status: connection === undefined ? f.status! : 0,
        ...(connection !== undefined ? { connection } : {}),
        remaining: typeof f.count === "number" && f.count > 0 ? Math.floor(f.count) : 1,
        skip: typeof f.skip === "number" && f.skip > 0 ? Math.floor(f.skip) : 0,
        ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}),
        ...(f.body !== undefined ? { body: f.body } : {}),
        ingest: f.ingest === true
      }
      if (f.target === "identify") this.identifyFaults = fault
      else this.faults = fault
    }
    if (f.down !== undefined) {
      this.down = f.down ? (f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}) : undefined
    }
    if (f.delayMs !== undefined) this.delayMs = Math.max(0, Number(f.delayMs) || 0)
    return json(200, this.faultState())
  }

  private configure(body: Record<string, unknown>): Reply {
    const next: { -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] } = { ...this.config }
    if (typeof body.throttle === "boolean") next.throttle = body.throttle
    if (typeof body.epsThreshold === "number" && body.epsThreshold > 0) next.epsThreshold = body.epsThreshold
    if (typeof body.throttleWindowMs === "number" && body.throttleWindowMs > 0) {
      next.throttleWindowMs = body.throttleWindowMs
    }
    if (typeof body.maxBodyBytes === "number" && body.maxBodyBytes > 0) next.maxBodyBytes = body.maxBodyBytes
    if (Array.isArray(body.apiKeys) && body.apiKeys.every((k) => typeof k === "string")) {
      next.apiKeys = body.apiKeys as Array<string>
    }
    if (Array.isArray(body.secretKeys) && body.secretKeys.every((k) => typeof k === "string")) {
      next.secretKeys = body.secretKeys as Array<string>
    }
    if (typeof body.deletionRateLimit === "boolean") next.deletionRateLimit = body.deletionRateLimit
    if (typeof body.maxIdentificationsPerRequest === "number" && body.maxIdentificationsPerRequest > 0) {
      next.maxIdentificationsPerRequest = body.maxIdentificationsPerRequest
    }
    if (typeof body.propertyUpdatesPerHour === "number" && body.propertyUpdatesPerHour >= 0) {
      next.propertyUpdatesPerHour = body.propertyUpdatesPerHour
    }
    this.config = next
    const { apiKeys, secretKeys, ...visible } = next
    return json(200, { ...visible, apiKeys: apiKeys.length, secretKeys: secretKeys.length })
  }

  private parse(body: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(body))
    } catch {
      return undefined
    }
  }

  private reject(reason: string, n: number) {
    if (n > 0) this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + n
  }

  private ingest(req: Request): Reply {
    this.stats.requests += 1
    const parsed = this.parse(req.body)
    const events = isObject(parsed) && Array.isArray(parsed.events) ? parsed.events : []
    this.stats.events_received += events.length
    if (this.down !== undefined) {
      this.reject("service unavailable", events.length)
      return json(503, { code: 503, error: "Service Unavailable" }, this.retryAfterHeader(this.down.retryAfter))
    }
    const fault = this.takeFault("ingest")
    if (fault !== undefined && !fault.ingest) {
      this.reject(`fault ${fault.connection ?? fault.status}`, events.length)
      return this.faultReply(fault, events)
    }
    const reply = this.process(req, parsed, events)
    return fault !== undefined ? this.faultReply(fault, events) : reply
  }

  private takeFault(target: "ingest" | "identify") {
    const f = target === "identify" ? this.identifyFaults : this.faults
    if (f === undefined) return undefined
    if (f.skip > 0) {
      f.skip -= 1
      return undefined
    }
    f.remaining -= 1
    if (f.remaining <= 0) {
      if (target === "identify") this.identifyFaults = undefined
      else this.faults = undefined
    }
    return f
  }

  private retryAfterHeader(retryAfter: number | string | undefined): Record<string, string> {
    return retryAfter === undefined ? {} : { "retry-after": String(retryAfter) }
  }

  private faultReply(
    fault: {
      readonly status: number
      readonly connection?: "reset" | "timeout"
      readonly retryAfter?: number | string
      readonly body?: unknown
    },
    events: ReadonlyArray<unknown>,
    countStats = true
  ): Reply {
    if (fault.connection !== undefined) return { status: 0, headers: {}, body: "", connection: fault.connection }
    const headers = this.retryAfterHeader(fault.retryAfter)
    if (fault.body !== undefined) return json(fault.status, fault.body, headers)
    switch (fault.status) {
      case 429: {
        // Every user and device of the request (events or identifications) throttled.
        const users: Record<string, number> = {}
        const devices: Record<string, number> = {}
        events.forEach((e) => {
          if (!isObject(e)) return
          if (typeof e.user_id === "string") users[e.user_id] = (users[e.user_id] ?? 0) + 1
          if (typeof e.device_id === "string") devices[e.device_id] = (devices[e.device_id] ?? 0) + 1
        })
        if (countStats) this.stats.throttled_events += events.length
        return json(429, {
          code: 429,
          error: "Too many requests for some devices and users",
          eps_threshold: this.config.epsThreshold,
          throttled_devices: devices,
          throttled_users: users,
          throttled_events: events.map((_, i) => i)
        }, headers)
      }
      case 502:
        return html(502, "502 Bad Gateway", headers)
      case 504:
        return html(504, "504 Gateway Time-out", headers)
      case 503:
        return json(503, { code: 503, error: "Service Unavailable" }, headers)
      case 500:
        return json(500, { code: 500, error: "Internal Server Error" }, headers)
      default:
        return json(fault.status, { code: fault.status, error: "Injected fault" }, headers)
    }
  }

  private process(req: Request, parsed: unknown, events: ReadonlyArray<unknown>): Reply {
    const n = events.length
    if (req.contentType === undefined || !/^application\/json\b/i.test(req.contentType.trim())) {
      this.reject("invalid content-type", n)
      return json(400, { code: 400, error: "Invalid Content-Type header: expected application/json" })
    }
    if (req.bytes >= this.config.maxBodyBytes) {
      this.reject("payload too large", n)
      return json(413, { code: 413, error: "Payload too large" })
    }
    if (!isObject(parsed)) {
      return json(400, { code: 400, error: "Invalid JSON request body" })
    }
    const apiKey = parsed.api_key
    if (typeof apiKey !== "string" || apiKey === "") {
      this.reject("missing api_key", n)
      return json(400, { code: 400, error: "Request missing required field", missing_field: "api_key" })
    }
    if (!this.config.apiKeys.includes(apiKey)) {
      this.reject("invalid api key", n)
      // Amplitude echoes the key it was given.
      return json(400, { code: 400, error: `Invalid API key: ${apiKey}` })
    }
    if (!Array.isArray(parsed.events) || parsed.events.length === 0) {
      return json(400, { code: 400, error: "Request missing required field", missing_field: "events" })
    }
    if (n > this.config.maxEventsPerRequest) {
      this.reject("payload too large", n)
      return json(413, { code: 413, error: "Payload too large" })
    }
    const options = isObject(parsed.options) ? parsed.options : {}
    const minIdLength = options.min_id_length ?? 5
    if (typeof minIdLength !== "number" || !Number.isInteger(minIdLength) || minIdLength < 1) {
      this.reject("invalid options", n)
      return json(400, { code: 400, error: "Invalid options: min_id_length must be a positive integer" })
    }

    const checks = events.map((e) => checkEvent(e, minIdLength))
    const invalid: Record<string, Array<number>> = {}
    const missing: Record<string, Array<number>> = {}
    const idLengths: Record<string, Array<number>> = {}
    checks.forEach((c, i) => {
      c.invalid.forEach((f) => addIndex(invalid, f, i))
      c.missing.forEach((f) => addIndex(missing, f, i))
      c.idLengths.forEach((f) => addIndex(idLengths, f, i))
    })
    const anyInvalid = Object.keys(invalid).length > 0
    const anyMissing = Object.keys(missing).length > 0
    const anyIdLength = Object.keys(idLengths).length > 0
    if (anyInvalid || anyMissing || anyIdLength) {
      for (const [f, is] of Object.entries(invalid)) this.reject(`invalid field: ${f}`, is.length)
      for (const [f, is] of Object.entries(missing)) this.reject(`missing field: ${f}`, is.length)
      for (const [f, is] of Object.entries(idLengths)) this.reject(`invalid id length: ${f}`, is.length)
      // Nothing of the request is ingested; the client drops the listed events and resends the rest.
      return json(400, {
        code: 400,
        error: anyInvalid || anyIdLength ? "Invalid field values on some events" : "Request missing required field",
        ...(anyInvalid ? { events_with_invalid_fields: invalid } : {}),
        ...(anyMissing ? { events_with_missing_fields: missing } : {}),
        ...(anyIdLength ? { events_with_invalid_id_lengths: idLengths } : {})
      })
    }

    const stored = checks.map((c) => c.stored)
    if (this.config.throttle) {
      const throttled = this.throttled(stored, req.now)
      if (throttled !== undefined) {
        this.stats.throttled_events += n
        return json(429, {
          code: 429,
          error: "Too many requests for some devices and users",
          eps_threshold: this.config.epsThreshold,
          throttled_devices: throttled.devices,
          throttled_users: throttled.users,
          throttled_events: throttled.events
        })
      }
    }

    for (const event of stored) this.store(apiKey, event, req.now)
    this.stats.events_accepted += n
    return json(200, {
      code: 200,
      events_ingested: n,
      payload_size_bytes: req.bytes,
      server_upload_time: req.now
    })
  }

  /** Users/devices above the threshold in the sliding window, counting this request; undefined when none. */
  private throttled(events: ReadonlyArray<Record<string, unknown>>, now: number) {
    const since = now - this.config.throttleWindowMs
    const inRequest = new Map<string, number>()
    const keysOf = (e: Record<string, unknown>) => [
      ...(typeof e.user_id === "string" ? [`u:${e.user_id}`] : []),
      ...(typeof e.device_id === "string" ? [`d:${e.device_id}`] : [])
    ]
    for (const e of events) for (const k of keysOf(e)) inRequest.set(k, (inRequest.get(k) ?? 0) + 1)
    const over = new Map<string, number>()
    for (const [k, count] of inRequest) {
      const past = (this.recent.get(k) ?? []).filter((t) => t > since)
      this.recent.set(k, past)
      const rate = past.length + count
      if (rate > this.config.epsThreshold) over.set(k, rate)
    }
    if (over.size === 0) return undefined
    const users: Record<string, number> = {}
    const devices: Record<string, number> = {}
    for (const [k, rate] of over) (k.startsWith("u:") ? users : devices)[k.slice(2)] = rate
    const indexes: Array<number> = []
    events.forEach((e, i) => {
      if (keysOf(e).some((k) => over.has(k))) indexes.push(i)
    })
    return { users, devices, events: indexes }
  }

  private store(apiKey: string, event: Record<string, unknown>, now: number) {
    for (
      const k of [
        ...(typeof event.user_id === "string" ? [`u:${event.user_id}`] : []),
        ...(typeof event.device_id === "string" ? [`d:${event.device_id}`] : [])
      ]
    ) {
      this.recent.set(k, [...(this.recent.get(k) ?? []), now])
    }
    const insertId = typeof event.insert_id === "string" ? event.insert_id : null
    if (insertId !== null) {
      // Amplitude dedups an insert_id per device_id when the event has one, else per user_id, for 7 days.
      const scope = typeof event.device_id === "string" ? `d:${event.device_id}` : `u:${String(event.user_id)}`
      const key = `${apiKey}\u0000${scope}\u0000${insertId}`
      const until = this.seen.get(key)
      if (until !== undefined && until > now) {
        this.stats.duplicates += 1
        return
      }
      this.seen.set(key, now + this.config.dedupWindowMs)
    }
    this.seq += 1
    this.stored.push({ seq: this.seq, received_at: now, insert_id: insertId, event })
    this.stats.events_stored += 1
  }
}
