/**
 * The Graph API events edge (`POST /{version}/{pixel id}/events`) of the Meta Conversions API, emulated in memory as
 * Meta documents it: token and pixel checks, the 1000-event limit, per-event validation where one bad event fails
 * the whole request (the 7-day rule included), hashing format of `user_data`, `event_id` + `event_name` dedup within
 * 48 h, test event codes, throttling and Graph error bodies. Transport-free (the sandbox wraps it in `node:http`) and
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
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** The next `count` events requests answer this Graph error code (body as Meta sends it for that code). */
  readonly code?: number
  readonly subcode?: number
  /** …or this HTTP status (with `body`, or a default body). Defaults: 500 for codes 1/2, else 400. */
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
}

export const defaultConfig: EmulatorConfig = {
  accessTokens: ["sandbox-meta-token"],
  pixelIds: ["1234567890123456"],
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

/** The emulated Graph API: state plus the request handler. */
export class Emulator {
  config: EmulatorConfig
  private stored: Array<StoredEvent> = []
  private seq = 0
  private trace = 0
  private seen = new Map<string, number>()
  private recent = new Map<string, Array<number>>()
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
      rejected: {}
    }
  }

  /** Forgets events, dedup and throttle state, statistics and faults. */
  reset(): void {
    this.stored = []
    this.seq = 0
    this.trace = 0
    this.seen.clear()
    this.recent.clear()
    this.faults = undefined
    this.down = false
    this.delayMs = 0
    this.stats = Emulator.emptyStats()
  }

  /** Every stored event in arrival order. */
  events(): ReadonlyArray<StoredEvent> {
    return this.stored
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
    switch (`${req.method} ${path}`) {
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
          pixelIds: this.config.pixelIds,
          control: [
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
      if (status < 400 || status > 599) return json(400, { error: "status must be 4xx or 5xx" })
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
    for (
      const k of [
        "maxEventsPerRequest",
        "windowMs",
        "maxFutureMs",
        "dedupWindowMs",
        "maxBodyBytes",
        "rateLimitWindowMs"
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
    if (this.config.rateLimit > 0) {
      const since = req.now - this.config.rateLimitWindowMs
      const recent = (this.recent.get(token) ?? []).filter((t) => t > since)
      if (recent.length >= this.config.rateLimit) {
        this.recent.set(token, recent)
        this.reject("17 user request limit reached", n)
        return this.graphError(400, { ...TEMPLATES[17]!, code: 17 }, {
          "x-business-use-case-usage": JSON.stringify({
            [pixelId]: [{ type: "ads_management", call_count: 100, estimated_time_to_regain_access: 1 }]
          })
        })
      }
      this.recent.set(token, [...recent, req.now])
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
