/**
 * The Graph API events edge (`POST /{version}/{pixel id}/events`) of the Meta Conversions API, emulated in memory as
 * Meta documents it: token and pixel checks, the 1000-event limit, per-event validation where one bad event fails
 * the whole request (the 7-day rule included), hashing format of `user_data`, `event_id` + `event_name` dedup within
 * 48 h, test event codes, throttling and Graph error bodies. Also the Custom Audience users edge
 * (`POST` / `DELETE /{version}/{audience id}/users`): known audiences, `payload` schema and data shape, at most 10,000
 * rows, hashes as 64 lowercase hex (other values counted as invalid entries, as Meta does), upload sessions, one data
 * source per audience, and the membership of every audience. Transport-free (the sandbox wraps it in `node:http`) and
 * written independently of the plugin, so a plugin bug is not mirrored here.
 */

/** Events stored by the emulator, in arrival order. */
export interface StoredEvent {
  readonly seq: number
  readonly received_at: number
  readonly pixel_id: string
  readonly api_version: string
  /** The request's `test_event_code` (events with one only reach Events Manager's Test Events tool). */
  readonly test_event_code: string | null
  readonly event: Record<string, unknown>
}

/** One Custom Audience as `GET /__sandbox/audiences` shows it. */
export interface AudienceState {
  readonly id: string
  /** The identifier keys of the audience's first upload, in order (`null` before any upload). */
  readonly schema: ReadonlyArray<string> | null
  /** `FILE_IMPORTED.HASHES_OR_USER_IDS` (single-key) or `FILE_IMPORTED.MULTI_HASHES`, fixed by the first upload. */
  readonly data_source: string | null
  /** The people in it: one row of identifier values per person, in `schema` order. */
  readonly members: ReadonlyArray<ReadonlyArray<string>>
}

export interface Stats {
  readonly requests: number
  /** HTTP status → count of events requests answered with it. */
  readonly responses: Record<string, number>
  readonly events_received: number
  /** Events counted in `events_received` of 200 answers (duplicates included, as Meta counts them). */
  readonly events_accepted: number
  /** Events stored for the first time. */
  readonly events_stored: number
  /** Events ignored because the same `event_name` + `event_id` arrived in the last 48 h. */
  readonly duplicates: number
  /** Events accepted with a `test_event_code`. */
  readonly test_events: number
  /** Reason (`code/subcode title`) → events refused for it. */
  readonly rejected: Record<string, number>
  /** Requests to a users edge (add and remove). */
  readonly audience_requests: number
  /** HTTP status → count of users-edge requests answered with it. */
  readonly audience_responses: Record<string, number>
  /** Rows received by users edges in accepted requests (`num_received`), invalid ones included. */
  readonly audience_rows_received: number
  /** Rows counted in `num_invalid_entries`. */
  readonly audience_rows_invalid: number
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** The next `count` events requests answer this Graph error code (body as Meta sends it for that code). */
  readonly code?: number
  readonly subcode?: number
  /**
   * …or this HTTP status (with `body`, or a default body). Defaults: 500 for codes 1/2, else 400. A 2xx status is
   * accepted with a `body` (to replay an unusual success answer).
   */
  readonly status?: number
  readonly count?: number
  /** Let this many requests through before the fault starts (to fail a follow-up request). */
  readonly skip?: number
  /** `Retry-After` header on those answers (seconds, or an HTTP-date string). */
  readonly retryAfter?: number | string
  /** `x-business-use-case-usage` with this `estimated_time_to_regain_access` (minutes). */
  readonly regainAccessMinutes?: number
  /** Answer this JSON body (or text) instead of the default one. */
  readonly body?: unknown
  /** Process the request normally (store its events) and still answer the fault: "a 500 may have ingested". */
  readonly ingest?: boolean
  /** While true every events request gets 503 (code 2, transient) and nothing is stored. */
  readonly down?: boolean
  /** Delay every answer by this many ms (events are processed on arrival). */
  readonly delayMs?: number
}

/** Runtime configuration (`POST /__sandbox/config`). */
export interface EmulatorConfig {
  readonly accessTokens: ReadonlyArray<string>
  readonly pixelIds: ReadonlyArray<string>
  /** Meta: at most 1000 events in `data`. */
  readonly maxEventsPerRequest: number
  /** Oldest `event_time` accepted (Meta: 7 days); one older event fails the request. */
  readonly windowMs: number
  /** How far in the future an `event_time` may be (not documented by Meta; the sandbox allows 10 minutes). */
  readonly maxFutureMs: number
  /** `event_name` + `event_id` dedup window (Meta: 48 h). */
  readonly dedupWindowMs: number
  /** Bodies of this many bytes or more get 413 (Meta documents no limit; the sandbox takes 10 MB). */
  readonly maxBodyBytes: number
  /** At most this many requests per `rateLimitWindowMs` per token (0 = no limit), else code 17. */
  readonly rateLimit: number
  readonly rateLimitWindowMs: number
  /** Custom Audiences that exist (others get Graph error 100/33, as an id that does not exist at Meta). */
  readonly audienceIds: ReadonlyArray<string>
  /** Meta: at most 10,000 rows in `payload.data`. */
  readonly maxAudienceRowsPerRequest: number
}

export const defaultConfig: EmulatorConfig = {
  accessTokens: ["sandbox-meta-token"],
  pixelIds: ["1234567890123456"],
  audienceIds: ["23850000000000001", "23850000000000002"],
  maxAudienceRowsPerRequest: 10_000,
  maxEventsPerRequest: 1000,
  windowMs: 7 * 24 * 60 * 60 * 1000,
  maxFutureMs: 10 * 60 * 1000,
  dedupWindowMs: 48 * 60 * 60 * 1000,
  maxBodyBytes: 10_000_000,
  rateLimit: 0,
  rateLimitWindowMs: 1000
}

export interface Request {
  readonly method: string
  /** Path with query string. */
  readonly path: string
  readonly contentType: string | undefined
  readonly authorization?: string | undefined
  readonly body: Uint8Array
  readonly bytes: number
  readonly now: number
}

export interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body)
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** A Graph API error body. */
interface GraphError {
  readonly message: string
  readonly type: string
  readonly code: number
  readonly error_subcode?: number
  readonly is_transient?: boolean
  readonly error_user_title?: string
  readonly error_user_msg?: string
}

const ACTION_SOURCES = new Set([
  "website",
  "app",
  "email",
  "phone_call",
  "chat",
  "physical_store",
  "system_generated",
  "business_messaging",
  "other"
])
/** `user_data` fields Meta wants SHA-256 hashed (`external_id` is only recommended to be hashed). */
const HASHED_FIELDS = ["em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge"]
/** A SHA-256 in lowercase hex, optionally with the parameter builder's appendix (`.AQ`, `.AQQCAQMC`). */
const HASHED = /^[0-9a-f]{64}(?:\.[A-Za-z0-9_-]{2}|\.[A-Za-z0-9_-]{8})?$/
const FBC = /^fb\.\d\.(\d{13})\.\S+$/

/** Default bodies for injected Graph error codes (texts as Meta sends them where known). */
const TEMPLATES: Record<number, Omit<GraphError, "code">> = {
  1: { message: "An unknown error has occurred.", type: "OAuthException", is_transient: true },
  2: {
    message: "An unexpected error has occurred. Please retry your request later.",
    type: "OAuthException",
    is_transient: true
  },
  4: { message: "(#4) Application request limit reached", type: "OAuthException", is_transient: true },
  10: { message: "(#10) Application does not have permission for this action", type: "OAuthException" },
  17: { message: "(#17) User request limit reached", type: "OAuthException", is_transient: true },
  32: { message: "(#32) Page request limit reached", type: "OAuthException", is_transient: true },
  100: { message: "Invalid parameter", type: "OAuthException", is_transient: false },
  190: { message: "Invalid OAuth access token - Cannot parse access token", type: "OAuthException" },
  200: { message: "(#200) Permissions error", type: "OAuthException" },
  341: { message: "(#341) Application limit reached", type: "OAuthException", is_transient: true },
  613: { message: "(#613) Calls to this api have exceeded the rate limit.", type: "OAuthException" },
  80004: {
    message: "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
    type: "OAuthException",
    is_transient: true
  }
}

/** Why one event (or the request) is invalid. */
interface Problem {
  readonly status: number
  readonly error: GraphError
}

const at = (i: number, ...path: Array<string>) => `$['data'][${i}]${path.map((p) => `['${p}']`).join("")}`

const required = (i: number, ...path: Array<string>): Problem => ({
  status: 400,
  error: {
    message: "Invalid parameter",
    type: "OAuthException",
    code: 100,
    error_subcode: 2804019,
    is_transient: false,
    error_user_title: "Server-side API parameter error",
    error_user_msg: `The parameter ${at(i, ...path)} is required.`
  }
})

const invalid = (i: number, title: string, text: string, ...path: Array<string>): Problem => ({
  status: 400,
  error: {
    message: "Invalid parameter",
    type: "OAuthException",
    code: 100,
    // Approximation: Meta's subcodes for these cases are not documented (2804019 and 2804003 are).
    error_subcode: 2804007,
    is_transient: false,
    error_user_title: title,
    error_user_msg: `${text} (${at(i, ...path)})`
  }
})

const TOO_OLD: GraphError = {
  message: "Invalid parameter",
  type: "OAuthException",
  code: 100,
  error_subcode: 2804003,
  is_transient: false,
  error_user_title: "Event Timestamp Too Old",
  error_user_msg: "The timestamp for this event is too far in the past. Events need to be sent from your server " +
    "within 7 days of when they occurred. Enter a timestamp that has occurred within the last 7 days."
}

const strings = (u: unknown): ReadonlyArray<unknown> => (Array.isArray(u) ? u : [u])

/** Validates one event as the events edge documents it; undefined when it is valid. */
const checkEvent = (raw: unknown, i: number, now: number, config: EmulatorConfig): Problem | undefined => {
  if (!isObject(raw)) return required(i, "event_name")
  const name = raw.event_name
  if (typeof name !== "string" || name.trim() === "") return required(i, "event_name")
  const time = raw.event_time
  if (time === undefined || time === null || time === "") return required(i, "event_time")
  const seconds = typeof time === "string" && /^\d+$/.test(time) ? Number(time) : time
  if (typeof seconds !== "number" || !Number.isInteger(seconds) || seconds <= 0) {
    return invalid(i, "Invalid event_time", "event_time must be a Unix timestamp in seconds", "event_time")
  }
  if (seconds * 1000 < now - config.windowMs) return { status: 400, error: TOO_OLD }
  if (seconds * 1000 > now + config.maxFutureMs) {
    return invalid(
      i,
      "Event Timestamp In Future",
      "event_time is in the future (a millisecond timestamp sent as seconds?)",
      "event_time"
    )
  }
  const source = raw.action_source
  if (source === undefined || source === null || source === "") return required(i, "action_source")
  if (typeof source !== "string" || !ACTION_SOURCES.has(source)) {
    return invalid(
      i,
      "Invalid action_source",
      `action_source must be one of ${[...ACTION_SOURCES].join(", ")}`,
      "action_source"
    )
  }
  const userData = raw.user_data
  if (!isObject(userData)) return required(i, "user_data")
  if (source === "website") {
    const url = raw.event_source_url
    if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return required(i, "event_source_url")
    const ua = userData.client_user_agent
    if (typeof ua !== "string" || ua.trim() === "") return required(i, "user_data", "client_user_agent")
  }
  for (const field of HASHED_FIELDS) {
    const v = userData[field]
    if (v === undefined || v === null) continue
    const values = strings(v)
    if (values.length === 0 || values.some((x) => typeof x !== "string" || !HASHED.test(x))) {
      return invalid(
        i,
        "Unhashed customer information",
        `${field} must be SHA-256 hashed (64 lowercase hex characters) after normalisation`,
        "user_data",
        field
      )
    }
  }
  const fbc = userData.fbc
  if (fbc !== undefined && fbc !== null) {
    const m = typeof fbc === "string" ? FBC.exec(fbc) : null
    if (m === null) {
      return invalid(i, "Invalid fbc", "fbc must be fb.<subdomain index>.<click time ms>.<fbclid>", "user_data", "fbc")
    }
    if (Number(m[1]) > now + config.maxFutureMs) {
      return invalid(i, "Invalid fbc", "the click time in fbc is in the future", "user_data", "fbc")
    }
  }
  const has = (k: string) => userData[k] !== undefined && userData[k] !== null && userData[k] !== ""
  const matchable = ["em", "ph", "external_id", "fbc", "fbp", "subscription_id", "lead_id", "fb_login_id", "madid"]
    .some(has) ||
    (has("client_ip_address") && has("client_user_agent")) ||
    (has("fn") && has("ln") && (has("zp") || (has("ct") && has("st"))))
  if (!matchable) {
    return invalid(
      i,
      "Customer information parameters missing",
      "user_data needs a valid combination of customer information parameters",
      "user_data"
    )
  }
  const custom = raw.custom_data
  if (custom !== undefined && !isObject(custom)) {
    return invalid(i, "Invalid custom_data", "custom_data must be an object", "custom_data")
  }
  if (
    isObject(custom) && custom.value !== undefined &&
    !(typeof custom.value === "number" && Number.isFinite(custom.value))
  ) {
    return invalid(i, "Invalid value", "custom_data.value must be a number", "custom_data", "value")
  }
  if (name === "Purchase") {
    if (!isObject(custom) || custom.currency === undefined) return required(i, "custom_data", "currency")
    if (custom.value === undefined) return required(i, "custom_data", "value")
  }
  if (isObject(custom) && custom.currency !== undefined) {
    if (typeof custom.currency !== "string" || !/^[A-Za-z]{3}$/.test(custom.currency)) {
      return invalid(i, "Invalid currency", "currency must be an ISO 4217 code", "custom_data", "currency")
    }
  }
  const dpo = raw.data_processing_options
  if (dpo !== undefined && dpo !== null) {
    if (!Array.isArray(dpo) || dpo.some((o) => o !== "LDU")) {
      return invalid(
        i,
        "Invalid data processing options",
        "data_processing_options must be [] or [\"LDU\"]",
        "data_processing_options"
      )
    }
    const country = raw.data_processing_options_country
    const state = raw.data_processing_options_state
    if (country !== undefined && country !== 0 && country !== 1) {
      return invalid(
        i,
        "Invalid data processing options",
        "country must be 1 (US) or 0",
        "data_processing_options_country"
      )
    }
    if (state !== undefined && state !== 0 && state !== 1000) {
      return invalid(
        i,
        "Invalid data processing options",
        "state must be 1000 (California) or 0",
        "data_processing_options_state"
      )
    }
  }
  return undefined
}

const reasonOf = (e: GraphError) =>
  `${e.code}${e.error_subcode !== undefined ? `/${e.error_subcode}` : ""} ${e.error_user_title ?? e.message}`

// ---------------------------------------------------------------------------------------------------------------
// Custom Audience users edge

/** The key of a single-key upload (`schema: "EMAIL_SHA256"`, data a list of values). */
const SINGLE_KEYS = new Set(["EMAIL_SHA256", "PHONE_SHA256", "UID", "MOBILE_ADVERTISER_ID"])
/** Keys of a multi-key upload (`schema: ["EMAIL", "PHONE"]`, data a list of rows). */
const MULTI_KEYS = new Set([
  "EXTERN_ID",
  "EMAIL",
  "PHONE",
  "GEN",
  "DOBY",
  "DOBM",
  "DOBD",
  "LN",
  "FN",
  "FI",
  "CT",
  "ST",
  "ZIP",
  "MADID",
  "COUNTRY",
  "APPUID"
])
/** Limited Data Use columns of a multi-key upload (not identifiers). */
const DPO_KEYS = new Set([
  "DATA_PROCESSING_OPTIONS",
  "DATA_PROCESSING_OPTIONS_COUNTRY",
  "DATA_PROCESSING_OPTIONS_STATE"
])
/** Identifiers Meta takes in clear; every other identifier must be a SHA-256. */
const CLEAR_KEYS = new Set(["EXTERN_ID", "MADID", "MOBILE_ADVERTISER_ID", "UID", "APPUID"])
const SHA256_HEX = /^[0-9a-f]{64}$/
const SINGLE_SOURCE = "FILE_IMPORTED.HASHES_OR_USER_IDS"
const MULTI_SOURCE = "FILE_IMPORTED.MULTI_HASHES"
/** Meta returns up to 100 samples of invalid entries. */
const MAX_INVALID_SAMPLES = 100

const audienceParameterError = (title: string, text: string): GraphError => ({
  message: "Invalid parameter",
  type: "OAuthException",
  code: 100,
  is_transient: false,
  error_user_title: title,
  error_user_msg: text
})

/** Meta's answer to rows that do not have the schema's shape (seen live: code 100 and this message). */
const SCHEMA_MISMATCH: GraphError = {
  message: "(#100) Data is missing or does not match schema:",
  type: "OAuthException",
  code: 100
}

/** A users-edge upload once its shape is checked. */
interface Upload {
  readonly keys: ReadonlyArray<string>
  readonly source: string
  /** One entry per row: identifier key → value (`""` for a missing key). */
  readonly rows: ReadonlyArray<Readonly<Record<string, string>>>
}

const parseJsonParam = (u: unknown): unknown => {
  if (typeof u !== "string") return u
  try {
    return JSON.parse(u)
  } catch {
    return { unparseable: true }
  }
}

/** Checks `payload` as the users edge documents it; the upload, or the Graph error for the whole request. */
const parseUpload = (raw: unknown, maxRows: number): Upload | GraphError => {
  if (raw === undefined || raw === null || raw === "") {
    return { message: "(#100) Missing required parameter: payload", type: "OAuthException", code: 100 }
  }
  const payload = parseJsonParam(raw)
  if (!isObject(payload) || payload.unparseable === true) {
    return audienceParameterError("Invalid payload", "payload must be a JSON object with schema and data")
  }
  const schema = payload.schema
  const keys = typeof schema === "string" ? [schema] : schema
  if (
    !Array.isArray(keys) || keys.length === 0 || keys.some((k) => typeof k !== "string" || k === "") ||
    new Set(keys).size !== keys.length
  ) {
    return audienceParameterError(
      "Invalid schema",
      "payload.schema must be one key (EMAIL_SHA256, PHONE_SHA256, …) or a list of distinct keys (EMAIL, PHONE, FN, …)"
    )
  }
  const single = keys.length === 1 && SINGLE_KEYS.has(keys[0] as string)
  if (!single) {
    const unknown = (keys as Array<string>).find((k) => !MULTI_KEYS.has(k) && !DPO_KEYS.has(k))
    if (unknown !== undefined) return audienceParameterError("Invalid schema", `Unknown schema key: ${unknown}`)
    if (!(keys as Array<string>).some((k) => MULTI_KEYS.has(k))) {
      return audienceParameterError("Invalid schema", "payload.schema needs at least one identifier key")
    }
  }
  const data = payload.data
  if (!Array.isArray(data) || data.length === 0) return SCHEMA_MISMATCH
  if (data.length > maxRows) {
    return audienceParameterError(
      "Too many users",
      `payload.data can have at most ${maxRows} entries per request, got ${data.length}`
    )
  }
  const rows: Array<Record<string, string>> = []
  for (const raw of data as ReadonlyArray<unknown>) {
    const values = single && typeof raw === "string" ? [raw] : raw
    if (!Array.isArray(values) || values.length !== keys.length) return SCHEMA_MISMATCH
    const row: Record<string, string> = {}
    for (const [i, key] of (keys as Array<string>).entries()) {
      const v: unknown = values[i]
      if (key === "DATA_PROCESSING_OPTIONS") {
        if (!Array.isArray(v) || v.some((o) => o !== "LDU")) {
          return audienceParameterError(
            "Invalid data processing options",
            "DATA_PROCESSING_OPTIONS must be [] or [\"LDU\"]"
          )
        }
      } else if (DPO_KEYS.has(key)) {
        if (typeof v !== "number" || !Number.isInteger(v)) {
          return audienceParameterError("Invalid data processing options", `${key} must be an integer`)
        }
      } else if (typeof v !== "string") {
        return SCHEMA_MISMATCH
      } else {
        row[key] = v
      }
    }
    rows.push(row)
  }
  return {
    keys: (keys as Array<string>).filter((k) => !DPO_KEYS.has(k)),
    source: single ? SINGLE_SOURCE : MULTI_SOURCE,
    rows
  }
}

/** The `session` parameter (optional): `session_id` and `batch_seq` positive integers, `last_batch_flag` boolean. */
const parseSession = (raw: unknown): { readonly id: string | undefined } | GraphError => {
  if (raw === undefined || raw === null || raw === "") return { id: undefined }
  const session = parseJsonParam(raw)
  const positive = (u: unknown) =>
    (typeof u === "number" && Number.isSafeInteger(u) && u > 0) || (typeof u === "string" && /^[1-9]\d{0,18}$/.test(u))
  if (
    !isObject(session) || !positive(session.session_id) || !positive(session.batch_seq) ||
    (session.last_batch_flag !== undefined && typeof session.last_batch_flag !== "boolean") ||
    (session.estimated_num_total !== undefined &&
      !(typeof session.estimated_num_total === "number" && Number.isInteger(session.estimated_num_total) &&
        session.estimated_num_total >= 0))
  ) {
    return audienceParameterError(
      "Invalid session",
      "session needs session_id and batch_seq (positive integers), last_batch_flag (boolean) and optionally " +
        "estimated_num_total"
    )
  }
  return { id: String(session.session_id) }
}

/** Why a row is an invalid entry (counted in `num_invalid_entries`, not applied), or undefined when it is valid. */
const invalidEntry = (
  row: Readonly<Record<string, string>>
): { readonly sample: string; readonly reason: string } | undefined => {
  const present = Object.entries(row).filter(([, v]) => v !== "")
  if (present.length === 0) return { sample: JSON.stringify(Object.values(row)), reason: "no identifier in the row" }
  for (const [key, value] of present) {
    if (!CLEAR_KEYS.has(key) && !SHA256_HEX.test(value)) {
      return { sample: value, reason: `${key} is not a SHA-256 (64 lowercase hex characters)` }
    }
  }
  return undefined
}

interface AudienceRecord {
  /** Identifier keys, in the order first seen. */
  keys: Array<string>
  source: string | null
  members: Array<Record<string, string>>
}

/** The emulated Graph API: state plus the request handler. */
export class Emulator {
  config: EmulatorConfig
  private stored: Array<StoredEvent> = []
  private seq = 0
  private trace = 0
  private seen = new Map<string, number>()
  private recent = new Map<string, Array<number>>()
  private audiences = new Map<string, AudienceRecord>()
  /** `<audience id>\u0000<session id>` → rows received in that upload session. */
  private sessions = new Map<string, number>()
  private sessionSeq = 0
  private faults:
    | {
      code: number | undefined
      subcode: number | undefined
      status: number
      remaining: number
      skip: number
      retryAfter?: number | string
      regainAccessMinutes?: number
      body?: unknown
      ingest: boolean
    }
    | undefined
  private down = false
  private delayMs = 0
  private stats: {
    -readonly [K in keyof Stats]: Stats[K]
  } = Emulator.emptyStats()

  constructor(config: Partial<EmulatorConfig> = {}) {
    this.config = { ...defaultConfig, ...config }
  }

  private static emptyStats(): Stats {
    return {
      requests: 0,
      responses: {},
      events_received: 0,
      events_accepted: 0,
      events_stored: 0,
      duplicates: 0,
      test_events: 0,
      rejected: {},
      audience_requests: 0,
      audience_responses: {},
      audience_rows_received: 0,
      audience_rows_invalid: 0
    }
  }

  /** Forgets events, audience membership, dedup and throttle state, statistics and faults. */
  reset(): void {
    this.stored = []
    this.seq = 0
    this.trace = 0
    this.seen.clear()
    this.recent.clear()
    this.audiences.clear()
    this.sessions.clear()
    this.sessionSeq = 0
    this.faults = undefined
    this.down = false
    this.delayMs = 0
    this.stats = Emulator.emptyStats()
  }

  /** Every stored event in arrival order. */
  events(): ReadonlyArray<StoredEvent> {
    return this.stored
  }

  /** A configured audience and its members, or undefined when the id is not a known audience. */
  audience(id: string): AudienceState | undefined {
    if (!this.config.audienceIds.includes(id)) return undefined
    const record = this.audiences.get(id)
    if (record === undefined) return { id, schema: null, data_source: null, members: [] }
    return {
      id,
      schema: record.keys,
      data_source: record.source,
      members: record.members.map((m) => record.keys.map((k) => m[k] ?? ""))
    }
  }

  /** Handles one HTTP request; `delayMs` is how long to hold the answer. */
  handle(req: Request): { readonly reply: Reply; readonly delayMs: number } {
    const [path = "/", query = ""] = req.path.split("?")
    const m = /^\/(v\d+\.\d+)\/([^/]+)\/events\/?$/.exec(path)
    if (m !== null) {
      if (req.method !== "POST") {
        return {
          reply: this.graphError(400, { ...TEMPLATES[100]!, code: 100, message: "Unsupported get request." }),
          delayMs: 0
        }
      }
      const reply = this.ingest(req, m[1]!, decodeURIComponent(m[2]!), new URLSearchParams(query))
      this.stats.responses[String(reply.status)] = (this.stats.responses[String(reply.status)] ?? 0) + 1
      return { reply, delayMs: this.delayMs }
    }
    const users = /^\/(v\d+\.\d+)\/([^/]+)\/users\/?$/.exec(path)
    if (users !== null) {
      if (req.method !== "POST" && req.method !== "DELETE") {
        return {
          reply: this.graphError(400, {
            ...TEMPLATES[100]!,
            code: 100,
            message: `Unsupported ${req.method.toLowerCase()} request.`
          }),
          delayMs: 0
        }
      }
      const reply = this.audienceUsers(req, decodeURIComponent(users[2]!), new URLSearchParams(query))
      this.stats.audience_responses[String(reply.status)] = (this.stats.audience_responses[String(reply.status)] ?? 0) +
        1
      return { reply, delayMs: this.delayMs }
    }
    return { reply: this.control(req, path), delayMs: 0 }
  }

  private nextTrace(): string {
    this.trace += 1
    return `SbxTrace${String(this.trace).padStart(6, "0")}`
  }

  private graphError(status: number, error: GraphError, headers: Record<string, string> = {}): Reply {
    return json(status, { error: { ...error, fbtrace_id: this.nextTrace() } }, headers)
  }

  private control(req: Request, path: string): Reply {
    const one = /^\/__sandbox\/audiences\/([^/]+)$/.exec(path)
    if (one !== null && req.method === "GET") {
      const state = this.audience(decodeURIComponent(one[1]!))
      return state === undefined ? json(404, { error: "unknown audience" }) : json(200, state)
    }
    switch (`${req.method} ${path}`) {
      case "GET /__sandbox/audiences":
        return json(200, { audiences: this.config.audienceIds.map((id) => this.audience(id)!) })
      case "GET /__sandbox/events":
        return json(200, { events: this.stored })
      case "DELETE /__sandbox/events":
        this.reset()
        return json(200, { ok: true })
      case "GET /__sandbox/stats":
        return json(200, this.stats)
      case "GET /__sandbox/faults":
        return json(200, this.faultState())
      case "DELETE /__sandbox/faults":
        this.faults = undefined
        this.down = false
        this.delayMs = 0
        return json(200, this.faultState())
      case "POST /__sandbox/faults": {
        const body = this.parseJson(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.setFaults(body as Faults)
      }
      case "POST /__sandbox/config": {
        const body = this.parseJson(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.configure(body)
      }
      case "GET /":
      case "GET /__sandbox":
        return json(200, {
          sandbox: "meta-conversions-api",
          ingest: "POST /{version}/{pixel id}/events (form: data, access_token, test_event_code)",
          audiences: "POST | DELETE /{version}/{audience id}/users (form: payload, session, access_token)",
          pixelIds: this.config.pixelIds,
          audienceIds: this.config.audienceIds,
          control: [
            "GET /__sandbox/audiences",
            "GET /__sandbox/audiences/{audience id}",
            "GET /__sandbox/events",
            "DELETE /__sandbox/events",
            "GET /__sandbox/stats",
            "POST /__sandbox/faults",
            "GET /__sandbox/faults",
            "DELETE /__sandbox/faults",
            "POST /__sandbox/config"
          ]
        })
      default:
        return this.graphError(400, {
          message: `Unknown path components: ${path}`,
          type: "OAuthException",
          code: 2500
        })
    }
  }

  private faultState() {
    return { next: this.faults ?? null, down: this.down, delayMs: this.delayMs }
  }

  private setFaults(f: Faults): Reply {
    if (f.code !== undefined || f.status !== undefined) {
      const code = typeof f.code === "number" ? f.code : undefined
      const status = typeof f.status === "number" ? f.status : code === 1 || code === 2 ? 500 : 400
      // A 2xx is allowed with a body, to replay an unusual success answer (e.g. a short `num_received`).
      const replay = status >= 200 && status < 300 && f.body !== undefined
      if (!replay && (status < 400 || status > 599)) {
        return json(400, { error: "status must be 4xx or 5xx (or 2xx with a body)" })
      }
      this.faults = {
        code,
        subcode: typeof f.subcode === "number" ? f.subcode : undefined,
        status,
        remaining: typeof f.count === "number" && f.count > 0 ? Math.floor(f.count) : 1,
        skip: typeof f.skip === "number" && f.skip > 0 ? Math.floor(f.skip) : 0,
        ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}),
        ...(typeof f.regainAccessMinutes === "number" ? { regainAccessMinutes: f.regainAccessMinutes } : {}),
        ...(f.body !== undefined ? { body: f.body } : {}),
        ingest: f.ingest === true
      }
    }
    if (typeof f.down === "boolean") this.down = f.down
    if (f.delayMs !== undefined) this.delayMs = Math.max(0, Number(f.delayMs) || 0)
    return json(200, this.faultState())
  }

  private configure(body: Record<string, unknown>): Reply {
    const next: { -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] } = { ...this.config }
    const texts = (u: unknown) =>
      Array.isArray(u) && u.every((k) => typeof k === "string") ? u as Array<string> : undefined
    next.accessTokens = texts(body.accessTokens) ?? next.accessTokens
    next.pixelIds = texts(body.pixelIds) ?? next.pixelIds
    next.audienceIds = texts(body.audienceIds) ?? next.audienceIds
    for (
      const k of [
        "maxEventsPerRequest",
        "windowMs",
        "maxFutureMs",
        "dedupWindowMs",
        "maxBodyBytes",
        "rateLimitWindowMs",
        "maxAudienceRowsPerRequest"
      ] as const
    ) {
      const v = body[k]
      if (typeof v === "number" && v > 0) next[k] = v
    }
    if (typeof body.rateLimit === "number" && body.rateLimit >= 0) next.rateLimit = body.rateLimit
    this.config = next
    const { accessTokens, ...visible } = next
    return json(200, { ...visible, accessTokens: accessTokens.length })
  }

  private parseJson(body: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(body))
    } catch {
      return undefined
    }
  }

  private reject(reason: string, n: number) {
    if (n > 0) this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + n
  }

  /** Reads `access_token`, `data` and `test_event_code` from the query, a form body or a JSON body. */
  private params(req: Request, query: URLSearchParams) {
    const text = new TextDecoder().decode(req.body)
    const type = (req.contentType ?? "").toLowerCase()
    let token = query.get("access_token") ?? undefined
    let data: unknown = query.get("data") ?? undefined
    let testEventCode: unknown = query.get("test_event_code") ?? undefined
    if (type.startsWith("application/json")) {
      const parsed = this.parseJson(req.body)
      if (isObject(parsed)) {
        if (typeof parsed.access_token === "string") token = parsed.access_token
        if (parsed.data !== undefined) data = parsed.data
        if (parsed.test_event_code !== undefined) testEventCode = parsed.test_event_code
      }
    } else if (type.startsWith("application/x-www-form-urlencoded") || type === "") {
      const form = new URLSearchParams(text)
      token = form.get("access_token") ?? token
      data = form.get("data") ?? data
      testEventCode = form.get("test_event_code") ?? testEventCode
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.authorization ?? "")
    if (token === undefined && bearer !== null) token = bearer[1]
    if (typeof data === "string") {
      try {
        data = JSON.parse(data)
      } catch {
        data = { unparseable: true }
      }
    }
    return { token, data, testEventCode }
  }

  private ingest(req: Request, version: string, pixelId: string, query: URLSearchParams): Reply {
    this.stats.requests += 1
    const { data, testEventCode, token } = this.params(req, query)
    const events = Array.isArray(data) ? data : []
    const n = events.length
    this.stats.events_received += n
    if (this.down) {
      this.reject("service unavailable", n)
      return this.graphError(503, { ...TEMPLATES[2]!, code: 2 })
    }
    const fault = this.takeFault()
    if (fault !== undefined && !fault.ingest) {
      this.reject(`fault ${fault.code ?? fault.status}`, n)
      return this.faultReply(fault)
    }
    const reply = this.process(req, version, pixelId, token, data, events, testEventCode)
    return fault !== undefined ? this.faultReply(fault) : reply
  }

  private takeFault() {
    const f = this.faults
    if (f === undefined) return undefined
    if (f.skip > 0) {
      f.skip -= 1
      return undefined
    }
    f.remaining -= 1
    if (f.remaining <= 0) this.faults = undefined
    return f
  }

  private faultReply(fault: NonNullable<Emulator["faults"]>): Reply {
    const headers: Record<string, string> = {}
    if (fault.retryAfter !== undefined) headers["retry-after"] = String(fault.retryAfter)
    if (fault.regainAccessMinutes !== undefined) {
      headers["x-business-use-case-usage"] = JSON.stringify({
        "1234567890": [{
          type: "ads_management",
          call_count: 100,
          total_cputime: 30,
          total_time: 40,
          estimated_time_to_regain_access: fault.regainAccessMinutes
        }]
      })
    }
    if (fault.body !== undefined) {
      return typeof fault.body === "string"
        ? { status: fault.status, headers: { "content-type": "text/html", ...headers }, body: fault.body }
        : json(fault.status, fault.body, headers)
    }
    const code = fault.code ?? (fault.status >= 500 ? 2 : 100)
    const template = TEMPLATES[code] ?? { message: "Injected error", type: "OAuthException" }
    return this.graphError(fault.status, {
      ...template,
      code,
      ...(fault.subcode !== undefined ? { error_subcode: fault.subcode } : {})
    }, headers)
  }

  private process(
    req: Request,
    version: string,
    pixelId: string,
    token: string | undefined,
    data: unknown,
    events: ReadonlyArray<unknown>,
    testEventCode: unknown
  ): Reply {
    const n = events.length
    if (req.bytes >= this.config.maxBodyBytes) {
      this.reject("request too large", n)
      return json(413, { error: { message: "Request Entity Too Large", type: "OAuthException", code: 1 } })
    }
    if (token === undefined || token === "") {
      this.reject("104 access token missing", n)
      return this.graphError(400, {
        message: "An access token is required to request this resource.",
        type: "OAuthException",
        code: 104
      })
    }
    if (!this.config.accessTokens.includes(token)) {
      this.reject("190 invalid access token", n)
      return this.graphError(400, { ...TEMPLATES[190]!, code: 190 })
    }
    if (!this.config.pixelIds.includes(pixelId)) {
      this.reject("100/33 unknown pixel", n)
      return this.graphError(400, {
        message: `Unsupported post request. Object with ID '${pixelId}' does not exist, cannot be loaded due to ` +
          "missing permissions, or does not support this operation. Please read the Graph API documentation at " +
          "https://developers.facebook.com/docs/graph-api",
        type: "GraphMethodException",
        code: 100,
        error_subcode: 33
      })
    }
    if (this.throttled(token, req.now)) {
      this.reject("17 user request limit reached", n)
      return this.throttleReply(pixelId, "ads_management")
    }
    if (!Array.isArray(data) || data.length === 0) {
      this.reject("100 data missing", 1)
      return this.graphError(400, {
        message: "(#100) The parameter data is required",
        type: "OAuthException",
        code: 100
      })
    }
    if (n > this.config.maxEventsPerRequest) {
      this.reject("100 too many events", n)
      return this.graphError(400, {
        message: "Invalid parameter",
        type: "OAuthException",
        code: 100,
        is_transient: false,
        error_user_title: "Too many events",
        error_user_msg: `data can have at most ${this.config.maxEventsPerRequest} events per request`
      })
    }
    if (testEventCode !== undefined && (typeof testEventCode !== "string" || testEventCode.trim() === "")) {
      this.reject("100 invalid test_event_code", n)
      return this.graphError(400, { ...TEMPLATES[100]!, code: 100, error_user_msg: "test_event_code must be a string" })
    }
    // One invalid event fails the whole request (nothing is stored); Meta names the first problem only.
    for (let i = 0; i < n; i++) {
      const problem = checkEvent(events[i], i, req.now, this.config)
      if (problem !== undefined) {
        this.reject(reasonOf(problem.error), n)
        return this.graphError(problem.status, problem.error)
      }
    }
    for (const e of events as ReadonlyArray<Record<string, unknown>>) {
      this.store(pixelId, version, typeof testEventCode === "string" ? testEventCode : null, e, req.now)
    }
    this.stats.events_accepted += n
    if (typeof testEventCode === "string") this.stats.test_events += n
    return json(200, { events_received: n, messages: [], fbtrace_id: this.nextTrace() })
  }

  /** True when `token` made `rateLimit` requests in the window (this one is counted when it is let through). */
  private throttled(token: string, now: number): boolean {
    if (this.config.rateLimit <= 0) return false
    const since = now - this.config.rateLimitWindowMs
    const recent = (this.recent.get(token) ?? []).filter((t) => t > since)
    if (recent.length >= this.config.rateLimit) {
      this.recent.set(token, recent)
      return true
    }
    this.recent.set(token, [...recent, now])
    return false
  }

  private throttleReply(id: string, type: string): Reply {
    return this.graphError(400, { ...TEMPLATES[17]!, code: 17 }, {
      "x-business-use-case-usage": JSON.stringify({
        [id]: [{ type, call_count: 100, estimated_time_to_regain_access: 1 }]
      })
    })
  }

  /** `POST` (add) or `DELETE` (remove; also `POST` with `method=DELETE`) on `/{version}/{audience id}/users`. */
  private audienceUsers(req: Request, audienceId: string, query: URLSearchParams): Reply {
    this.stats.audience_requests += 1
    const text = new TextDecoder().decode(req.body)
    const type = (req.contentType ?? "").toLowerCase()
    const params = new Map<string, unknown>()
    for (const [k, v] of query) params.set(k, v)
    if (type.startsWith("application/json")) {
      const parsed = this.parseJson(req.body)
      if (isObject(parsed)) { for (const [k, v] of Object.entries(parsed)) params.set(k, v) }
    } else if (type.startsWith("application/x-www-form-urlencoded") || type === "") {
      for (const [k, v] of new URLSearchParams(text)) params.set(k, v)
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.authorization ?? "")
    const tokenParam = params.get("access_token")
    const token = typeof tokenParam === "string" ? tokenParam : bearer?.[1]
    const remove = req.method === "DELETE" || String(params.get("method") ?? "").toUpperCase() === "DELETE"
    if (this.down) return this.graphError(503, { ...TEMPLATES[2]!, code: 2 })
    const fault = this.takeFault()
    if (fault !== undefined && !fault.ingest) return this.faultReply(fault)
    const reply = this.applyUpload(req, audienceId, token, params, remove)
    return fault !== undefined ? this.faultReply(fault) : reply
  }

  private applyUpload(
    req: Request,
    audienceId: string,
    token: string | undefined,
    params: ReadonlyMap<string, unknown>,
    remove: boolean
  ): Reply {
    if (req.bytes >= this.config.maxBodyBytes) {
      return json(413, { error: { message: "Request Entity Too Large", type: "OAuthException", code: 1 } })
    }
    if (token === undefined || token === "") {
      return this.graphError(400, {
        message: "An access token is required to request this resource.",
        type: "OAuthException",
        code: 104
      })
    }
    if (!this.config.accessTokens.includes(token)) return this.graphError(400, { ...TEMPLATES[190]!, code: 190 })
    if (!this.config.audienceIds.includes(audienceId)) {
      return this.graphError(400, {
        message: `Unsupported ${remove ? "delete" : "post"} request. Object with ID '${audienceId}' does not exist, ` +
          "cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph " +
          "API documentation at https://developers.facebook.com/docs/graph-api",
        type: "GraphMethodException",
        code: 100,
        error_subcode: 33
      })
    }
    if (this.throttled(token, req.now)) return this.throttleReply(audienceId, "custom_audience")
    const upload = parseUpload(params.get("payload"), this.config.maxAudienceRowsPerRequest)
    if ("code" in upload) return this.graphError(400, upload)
    const session = parseSession(params.get("session"))
    if ("code" in session) return this.graphError(400, session)
    const record = this.audiences.get(audienceId) ?? { keys: [], source: null, members: [] }
    if (record.source !== null && record.source !== upload.source) {
      return this.graphError(400, {
        message: "(#2650) Failed to update the custom audience: This audience was created from data source " +
          `${record.source}, which does not support data source ${upload.source}.`,
        type: "OAuthException",
        code: 2650
      })
    }
    const samples: Record<string, string> = {}
    let invalid = 0
    for (const row of upload.rows) {
      const problem = invalidEntry(row)
      if (problem !== undefined) {
        invalid += 1
        if (Object.keys(samples).length < MAX_INVALID_SAMPLES) samples[problem.sample] = problem.reason
        continue
      }
      const present = Object.entries(row).filter(([, v]) => v !== "")
      // The same person: a member sharing any identifier value (Meta matches people on any key of a row).
      const same = (m: Record<string, string>) => present.some(([k, v]) => m[k] === v)
      if (remove) {
        record.members = record.members.filter((m) => !same(m))
      } else {
        for (const k of upload.keys) if (!record.keys.includes(k)) record.keys.push(k)
        const existing = record.members.find(same)
        if (existing !== undefined) { for (const [k, v] of present) existing[k] = v }
        else record.members.push(Object.fromEntries(present))
        record.source = upload.source
      }
    }
    this.audiences.set(audienceId, record)
    let sessionId = session.id
    if (sessionId === undefined) {
      this.sessionSeq += 1
      sessionId = String(9_000_000_000 + this.sessionSeq)
    }
    const key = `${audienceId}\u0000${sessionId}`
    const received = (this.sessions.get(key) ?? 0) + upload.rows.length
    this.sessions.set(key, received)
    this.stats.audience_rows_received += upload.rows.length
    this.stats.audience_rows_invalid += invalid
    return json(200, {
      audience_id: audienceId,
      session_id: sessionId,
      num_received: received,
      num_invalid_entries: invalid,
      invalid_entry_samples: samples
    })
  }

  private store(
    pixelId: string,
    version: string,
    testEventCode: string | null,
    event: Record<string, unknown>,
    now: number
  ) {
    const id = event.event_id
    if (typeof id === "string" || typeof id === "number") {
      const key = `${pixelId}\u0000${testEventCode ?? ""}\u0000${String(event.event_name)}\u0000${String(id)}`
      const until = this.seen.get(key)
      if (until !== undefined && until > now) {
        this.stats.duplicates += 1
        return
      }
      this.seen.set(key, now + this.config.dedupWindowMs)
    }
    this.seq += 1
    this.stored.push({
      seq: this.seq,
      received_at: now,
      pixel_id: pixelId,
      api_version: version,
      test_event_code: testEventCode,
      event
    })
    this.stats.events_stored += 1
  }
}
