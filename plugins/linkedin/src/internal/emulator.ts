/**
 * LinkedIn's OAuth token endpoint, Conversions API (`POST /rest/conversionEvents`, BATCH_CREATE) and DMP segment
 * users (`POST /rest/dmpSegments/{id}/users`, BATCH_CREATE of `ADD` / `REMOVE` elements), emulated in memory as
 * LinkedIn documents them: headers, bearer tokens with expiry, per-element validation and statuses, eventId dedup,
 * known segments and their members, batch and rate limits. Transport-free (the sandbox wraps it in `node:http`) and
 * written independently of the plugin, so a plugin bug is not mirrored here.
 */

/** A conversion event stored by the emulator, in arrival order. */
export interface StoredEvent {
  readonly seq: number
  readonly received_at: number
  /** The conversion rule id (digits of the URN). */
  readonly rule: string
  readonly event_id: string | null
  /** The element exactly as received. */
  readonly element: Record<string, unknown>
}

/** A DMP segment user id. */
export interface SegmentUserId {
  readonly idType: string
  readonly idValue: string
}

/** One DMP segment as `GET /__sandbox/segments/{id}` shows it. */
export interface SegmentState {
  readonly id: string
  /** The users in it, each with every id it was added with. */
  readonly users: ReadonlyArray<{ readonly userIds: ReadonlyArray<SegmentUserId> }>
}

export interface Stats {
  /** Conversion API requests (token requests not included). */
  readonly requests: number
  /** HTTP status → count of Conversions API answers with it. */
  readonly responses: Record<string, number>
  /** Token endpoint requests. */
  readonly token_requests: number
  /** Access tokens issued. */
  readonly tokens_issued: number
  /** HTTP status → count of token endpoint answers with it. */
  readonly token_responses: Record<string, number>
  readonly elements_received: number
  /** Elements answered 201 (duplicates included). */
  readonly elements_accepted: number
  /** Elements stored for the first time. */
  readonly elements_stored: number
  /** Elements answered 201 but not stored: their (rule, eventId) was seen before. */
  readonly duplicates: number
  /** Reason → elements refused for it. */
  readonly rejected: Record<string, number>
  /** DMP segment users requests, and their answers by HTTP status. */
  readonly segment_requests: number
  readonly segment_responses: Record<string, number>
  readonly segment_elements_received: number
  /** Segment elements answered 201. */
  readonly segment_elements_accepted: number
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** Which endpoint the fault applies to (default `api`). */
  readonly target?: "api" | "token"
  /** The next `count` requests to `target` answer this status. */
  readonly status?: number
  readonly count?: number
  /** Let this many requests through before the fault starts. */
  readonly skip?: number
  /** `Retry-After` header on those answers (seconds, or an HTTP-date string). */
  readonly retryAfter?: number | string
  /** Answer this JSON body instead of the default one for `status` (to replay documented answers). */
  readonly body?: unknown
  /** While true every Conversions API request gets 503 and nothing is stored. */
  readonly down?: boolean
  /** Delay every answer by this many ms. */
  readonly delayMs?: number
}

/** Runtime configuration (`POST /__sandbox/config`). */
export interface EmulatorConfig {
  readonly clientId: string
  readonly clientSecret: string
  /** Refresh tokens the token endpoint accepts. */
  readonly refreshTokens: ReadonlyArray<string>
  /** Lifetime of issued access tokens, in seconds (LinkedIn: 60 days). */
  readonly accessTokenTtlSeconds: number
  /** Remaining lifetime reported for the refresh token, in seconds (LinkedIn: up to 365 days). */
  readonly refreshTokenTtlSeconds: number
  /** Known conversion rule ids (digits); elements for other rules are refused. */
  readonly conversionRules: ReadonlyArray<string>
  /** Versions (YYYYMM) the API serves; others get 426. */
  readonly activeVersions: ReadonlyArray<string>
  /** Most elements per request (LinkedIn: 5000). */
  readonly maxElements: number
  /** Requests per application per minute (LinkedIn: 600) and per day (300,000); 0 disables. */
  readonly rateLimitPerMinute: number
  readonly rateLimitPerDay: number
  /** How far back conversionHappenedAt may be (LinkedIn: 90 days). */
  readonly windowMs: number
  /** DMP segments that exist (users requests for others get 404). */
  readonly dmpSegments: ReadonlyArray<string>
  /** Most elements per segment users request (5,000). */
  readonly maxSegmentElements: number
}

export const defaultConfig: EmulatorConfig = {
  clientId: "sandbox-linkedin-client",
  clientSecret: "sandbox-linkedin-secret",
  refreshTokens: ["sandbox-linkedin-refresh"],
  accessTokenTtlSeconds: 60 * 24 * 60 * 60,
  refreshTokenTtlSeconds: 365 * 24 * 60 * 60,
  conversionRules: ["7001001", "7001002", "7001003", "7001004", "7001005"],
  activeVersions: ["202609", "202610", "202611", "202612"],
  maxElements: 5000,
  rateLimitPerMinute: 600,
  rateLimitPerDay: 300_000,
  windowMs: 90 * 24 * 60 * 60 * 1000,
  dmpSegments: ["30500001", "30500002"],
  maxSegmentElements: 5000
}

export interface Request {
  readonly method: string
  readonly path: string
  /** Lower-cased header names. */
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly body: Uint8Array
  readonly now: number
}

export interface Reply {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body)
})

/** A Rest.li error body. */
const restliError = (status: number, message: string, code?: string, serviceErrorCode?: number) => ({
  status,
  ...(serviceErrorCode !== undefined ? { serviceErrorCode } : {}),
  ...(code !== undefined ? { code } : {}),
  message
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const ID_TYPES = new Set(["SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID", "ORACLE_MOAT_ID"])
const URN = /^urn:lla:llaPartnerConversion:(\d+)$/
const SEGMENT_USERS = /^\/rest\/dmpSegments\/([^/]+)\/users$/
const SHA256_LOWER = /^[0-9a-f]{64}$/
const DECIMAL = /^\d+(\.\d+)?$/

/** Why an element is refused: a reason key for stats and the message LinkedIn-style; undefined when valid. */
export const checkElement = (
  raw: unknown,
  index: number,
  now: number,
  config: EmulatorConfig
): { readonly reason: string; readonly message: string } | undefined => {
  const at = (field: string) => `/elements/${index}/${field}`
  const bad = (reason: string, message: string) => ({ reason, message })
  if (!isObject(raw)) return bad("element not an object", `${at("")} :: expected a record`)
  const conversion = raw.conversion
  if (typeof conversion !== "string") return bad("missing conversion", `${at("conversion")} :: field is required`)
  const m = URN.exec(conversion)
  if (m === null) {
    return bad(
      "invalid conversion urn",
      `${at("conversion")} :: "${conversion}" is not a urn:lla:llaPartnerConversion URN`
    )
  }
  if (!config.conversionRules.includes(m[1]!)) {
    return bad("unknown conversion rule", `${at("conversion")} :: conversion rule ${m[1]} does not exist`)
  }
  const happened = raw.conversionHappenedAt
  if (typeof happened !== "number" || !Number.isInteger(happened)) {
    return bad("invalid conversionHappenedAt", `${at("conversionHappenedAt")} :: expected epoch milliseconds (long)`)
  }
  if (happened < 100_000_000_000) {
    return bad(
      "conversionHappenedAt in seconds",
      `${at("conversionHappenedAt")} :: ${happened} looks like seconds; expected epoch milliseconds`
    )
  }
  if (happened < now - config.windowMs) {
    return bad(
      "conversionHappenedAt too old",
      `${at("conversionHappenedAt")} :: conversion happened more than 90 days ago`
    )
  }
  if (happened > now + 24 * 60 * 60 * 1000) {
    return bad("conversionHappenedAt in the future", `${at("conversionHappenedAt")} :: is in the future`)
  }
  if (raw.conversionValue !== undefined) {
    const v = raw.conversionValue
    if (!isObject(v)) return bad("invalid conversionValue", `${at("conversionValue")} :: expected a record`)
    if (typeof v.currencyCode !== "string" || !/^[A-Z]{3}$/.test(v.currencyCode)) {
      return bad("invalid currencyCode", `${at("conversionValue/currencyCode")} :: expected an ISO 4217 code`)
    }
    if (typeof v.amount !== "string" || !DECIMAL.test(v.amount)) {
      return bad(
        "invalid amount",
        `${at("conversionValue/amount")} :: expected a non-negative decimal string, got ${JSON.stringify(v.amount)}`
      )
    }
  }
  if (raw.eventId !== undefined && (typeof raw.eventId !== "string" || raw.eventId === "")) {
    return bad("invalid eventId", `${at("eventId")} :: expected a non-empty string`)
  }
  const user = raw.user
  if (!isObject(user)) return bad("missing user", `${at("user")} :: field is required`)
  const userIds = user.userIds ?? []
  if (!Array.isArray(userIds)) return bad("invalid userIds", `${at("user/userIds")} :: expected an array`)
  for (const [k, id] of userIds.entries()) {
    if (!isObject(id) || typeof id.idType !== "string" || !ID_TYPES.has(id.idType)) {
      return bad("invalid idType", `${at(`user/userIds/${k}/idType`)} :: unknown idType`)
    }
    if (typeof id.idValue !== "string" || id.idValue === "") {
      return bad("invalid idValue", `${at(`user/userIds/${k}/idValue`)} :: expected a non-empty string`)
    }
    if (id.idType === "SHA256_EMAIL" && !SHA256_LOWER.test(id.idValue)) {
      return id.idValue.includes("@") ?
        bad(
          "unhashed email",
          `${at(`user/userIds/${k}/idValue`)} :: SHA256_EMAIL must be a SHA-256 hash, not an email`
        ) :
        bad(
          "invalid SHA256_EMAIL",
          `${at(`user/userIds/${k}/idValue`)} :: SHA256_EMAIL must be 64 lowercase hex characters`
        )
    }
  }
  const info = isObject(user.userInfo) ? user.userInfo : {}
  const has = (k: string) => typeof info[k] === "string" && (info[k] as string).trim() !== ""
  if (userIds.length === 0 && !(has("firstName") && has("lastName") && has("companyName"))) {
    return bad(
      "no user identifier",
      `${at("user")} :: at least one userIds entry, or userInfo firstName, lastName and companyName, is required`
    )
  }
  if (
    info.countryCode !== undefined && (typeof info.countryCode !== "string" || !/^[A-Z]{2}$/.test(info.countryCode))
  ) {
    return bad("invalid countryCode", `${at("user/userInfo/countryCode")} :: expected ISO 3166-1 alpha-2`)
  }
  return undefined
}

const SEGMENT_ID_TYPES = new Set(["SHA256_EMAIL", "SHA512_EMAIL", "GOOGLE_AID"])
const SHA512_LOWER = /^[0-9a-f]{128}$/

/** Why a DMP segment user element is refused (LinkedIn-style message); undefined when it is valid. */
export const checkSegmentUser = (
  raw: unknown,
  index: number
): { readonly reason: string; readonly message: string } | undefined => {
  const at = (field: string) => `/elements/${index}/${field}`
  const bad = (reason: string, message: string) => ({ reason, message })
  if (!isObject(raw)) return bad("element not an object", `${at("")} :: expected a record`)
  if (raw.action !== "ADD" && raw.action !== "REMOVE") {
    return bad("invalid action", `${at("action")} :: expected ADD or REMOVE, got ${JSON.stringify(raw.action ?? null)}`)
  }
  const userIds = raw.userIds ?? []
  if (!Array.isArray(userIds)) return bad("invalid userIds", `${at("userIds")} :: expected an array`)
  for (const [k, id] of userIds.entries()) {
    if (!isObject(id) || typeof id.idType !== "string" || !SEGMENT_ID_TYPES.has(id.idType)) {
      return bad(
        "invalid idType",
        `${at(`userIds/${k}/idType`)} :: expected SHA256_EMAIL, SHA512_EMAIL or GOOGLE_AID`
      )
    }
    if (typeof id.idValue !== "string" || id.idValue === "") {
      return bad("invalid idValue", `${at(`userIds/${k}/idValue`)} :: expected a non-empty string`)
    }
    if (id.idType === "SHA256_EMAIL" && !SHA256_LOWER.test(id.idValue)) {
      return id.idValue.includes("@") ?
        bad("unhashed email", `${at(`userIds/${k}/idValue`)} :: SHA256_EMAIL must be a SHA-256 hash, not an email`) :
        bad("invalid SHA256_EMAIL", `${at(`userIds/${k}/idValue`)} :: SHA256_EMAIL must be 64 lowercase hex characters`)
    }
    if (id.idType === "SHA512_EMAIL" && !SHA512_LOWER.test(id.idValue)) {
      return bad(
        "invalid SHA512_EMAIL",
        `${at(`userIds/${k}/idValue`)} :: SHA512_EMAIL must be 128 lowercase hex characters`
      )
    }
  }
  const has = (k: string) => typeof raw[k] === "string" && (raw[k] as string).trim() !== ""
  if (userIds.length === 0 && !(has("firstName") && has("lastName"))) {
    return bad(
      "no user identifier",
      `${at("userIds")} :: at least one userIds entry, or firstName and lastName, is required`
    )
  }
  return undefined
}

interface IssuedToken {
  readonly clientId: string
  readonly expiresAt: number
}

interface Fault {
  readonly target: "api" | "token"
  readonly status: number
  remaining: number
  skip: number
  readonly retryAfter?: number | string
  readonly body?: unknown
}

const emptyStats = (): Stats => ({
  requests: 0,
  responses: {},
  token_requests: 0,
  tokens_issued: 0,
  token_responses: {},
  elements_received: 0,
  elements_accepted: 0,
  elements_stored: 0,
  duplicates: 0,
  rejected: {},
  segment_requests: 0,
  segment_responses: {},
  segment_elements_received: 0,
  segment_elements_accepted: 0
})

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

export class Emulator {
  config: EmulatorConfig
  private stored: Array<StoredEvent> = []
  private stats: Mutable<Stats> = emptyStats()
  private tokens = new Map<string, IssuedToken>()
  private seen = new Map<string, number>()
  private recent: Array<number> = []
  private faults: Fault | undefined
  private down: { readonly retryAfter?: number | string } | undefined
  private tokenSeq = 0
  /** Segment id → its users (each the ids it was added with). */
  private segments = new Map<string, Array<Array<SegmentUserId>>>()
  delayMs = 0

  constructor(config: Partial<EmulatorConfig> = {}) {
    this.config = { ...defaultConfig, ...config }
  }

  /** Routes one request; `delayMs` is how long the transport should wait before answering. */
  handle(req: Request): { readonly delayMs: number; readonly reply: Reply } {
    const path = req.path.split("?")[0] ?? "/"
    let reply: Reply
    if (path.startsWith("/__sandbox") || (path === "/" && req.method === "GET")) reply = this.control(req, path)
    else if (path === "/oauth/v2/accessToken") reply = this.countToken(this.token(req))
    else if (path === "/rest/conversionEvents") reply = this.count(this.conversionEvents(req))
    else if (SEGMENT_USERS.test(path)) {
      reply = this.countSegment(this.segmentUsers(req, decodeURIComponent(SEGMENT_USERS.exec(path)![1]!)))
    } else reply = json(404, restliError(404, `No resource found at ${path}`))
    return { delayMs: path.startsWith("/__sandbox") ? 0 : this.delayMs, reply }
  }

  reset(): void {
    this.segments.clear()
    this.stored = []
    this.stats = emptyStats()
    this.tokens.clear()
    this.seen.clear()
    this.recent = []
    this.faults = undefined
    this.down = undefined
    this.delayMs = 0
  }

  private count(reply: Reply): Reply {
    this.stats.requests += 1
    this.stats.responses[String(reply.status)] = (this.stats.responses[String(reply.status)] ?? 0) + 1
    return reply
  }

  private countSegment(reply: Reply): Reply {
    this.stats.segment_requests += 1
    this.stats.segment_responses[String(reply.status)] = (this.stats.segment_responses[String(reply.status)] ?? 0) + 1
    return reply
  }

  /** A known segment and its users, or undefined when the id is not a known segment. */
  segment(id: string): SegmentState | undefined {
    if (!this.config.dmpSegments.includes(id)) return undefined
    return { id, users: (this.segments.get(id) ?? []).map((userIds) => ({ userIds })) }
  }

  private countToken(reply: Reply): Reply {
    this.stats.token_requests += 1
    this.stats.token_responses[String(reply.status)] = (this.stats.token_responses[String(reply.status)] ?? 0) + 1
    return reply
  }

  private reject(reason: string, n = 1) {
    if (n > 0) this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + n
  }

  private takeFault(target: "api" | "token"): Fault | undefined {
    const f = this.faults
    if (f === undefined || f.target !== target) return undefined
    if (f.skip > 0) {
      f.skip -= 1
      return undefined
    }
    f.remaining -= 1
    if (f.remaining <= 0) this.faults = undefined
    return f
  }

  private retryAfterHeader(retryAfter: number | string | undefined): Record<string, string> {
    return retryAfter === undefined ? {} : { "retry-after": String(retryAfter) }
  }

  private faultReply(f: Fault): Reply {
    const headers = this.retryAfterHeader(f.retryAfter)
    if (f.body !== undefined) return json(f.status, f.body, headers)
    if (f.status === 502) {
      return { status: 502, headers: { "content-type": "text/html", ...headers }, body: "<html>502 Bad Gateway</html>" }
    }
    if (f.target === "token") {
      return json(f.status, { error: "server_error", error_description: `Injected fault ${f.status}` }, headers)
    }
    if (f.status === 429) {
      return json(
        429,
        restliError(
          429,
          "Resource level throttle APPLICATION MINUTE limit for calls to this resource is reached.",
          "TOO_MANY_REQUESTS"
        ),
        headers
      )
    }
    if (f.status === 401) {
      return json(401, restliError(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600), headers)
    }
    return json(f.status, restliError(f.status, `Injected fault ${f.status}`), headers)
  }

  private parse(body: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(body))
    } catch {
      return undefined
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // OAuth token endpoint

  private token(req: Request): Reply {
    if (req.method !== "POST") return json(405, { error: "invalid_request", error_description: "POST is required" })
    const fault = this.takeFault("token")
    if (fault !== undefined) return this.faultReply(fault)
    const contentType = req.headers["content-type"] ?? ""
    if (!/^application\/x-www-form-urlencoded\b/i.test(contentType.trim())) {
      return json(400, {
        error: "invalid_request",
        error_description: "Content-Type must be application/x-www-form-urlencoded"
      })
    }
    const form = new URLSearchParams(new TextDecoder().decode(req.body))
    for (const p of ["grant_type", "client_id", "client_secret", "refresh_token"]) {
      if (!form.get(p)) {
        return json(400, { error: "invalid_request", error_description: `A required parameter "${p}" is missing` })
      }
    }
    if (form.get("grant_type") !== "refresh_token") {
      return json(400, { error: "unsupported_grant_type", error_description: "grant_type must be refresh_token" })
    }
    if (form.get("client_id") !== this.config.clientId || form.get("client_secret") !== this.config.clientSecret) {
      return json(401, { error: "invalid_client", error_description: "Client authentication failed" })
    }
    if (!this.config.refreshTokens.includes(form.get("refresh_token")!)) {
      return json(400, {
        error: "invalid_grant",
        error_description: "The provided authorization grant or refresh token is invalid, expired or revoked"
      })
    }
    this.tokenSeq += 1
    const accessToken = `sandbox-li-at-${this.tokenSeq}-${Math.random().toString(36).slice(2, 12)}`
    this.tokens.set(accessToken, {
      clientId: this.config.clientId,
      expiresAt: req.now + this.config.accessTokenTtlSeconds * 1000
    })
    this.stats.tokens_issued += 1
    return json(200, {
      access_token: accessToken,
      expires_in: this.config.accessTokenTtlSeconds,
      refresh_token: form.get("refresh_token"),
      refresh_token_expires_in: this.config.refreshTokenTtlSeconds,
      scope: "r_ads,rw_conversions"
    })
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Conversions API

  /**
   * The checks every BATCH_CREATE goes through, in LinkedIn's order: outage and faults, bearer token, `LinkedIn-Version`,
   * protocol and method headers, content type. The reason (for stats) and the answer, or undefined when they pass.
   */
  private gate(req: Request): { readonly reason: string; readonly reply: Reply } | undefined {
    const stop = (reason: string, reply: Reply) => ({ reason, reply })
    if (this.down !== undefined) {
      return stop(
        "service unavailable",
        json(503, restliError(503, "Service Unavailable"), this.retryAfterHeader(this.down.retryAfter))
      )
    }
    const fault = this.takeFault("api")
    if (fault !== undefined) return stop(`fault ${fault.status}`, this.faultReply(fault))

    // Authentication comes first, as at LinkedIn.
    const auth = req.headers["authorization"]
    if (auth === undefined || auth.trim() === "") {
      return stop("no access token", json(401, restliError(401, "Empty oauth2_access_token", undefined, 401)))
    }
    const bearer = /^Bearer\s+(\S+)$/.exec(auth.trim())
    if (bearer === null) {
      return stop(
        "invalid access token",
        json(401, restliError(401, "Unknown authentication scheme", undefined, 401))
      )
    }
    const token = this.tokens.get(bearer[1]!)
    if (token === undefined) {
      return stop(
        "invalid access token",
        json(401, restliError(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600))
      )
    }
    if (token.expiresAt <= req.now) {
      return stop(
        "expired access token",
        json(401, restliError(401, "The token used in the request has expired", "EXPIRED_ACCESS_TOKEN", 65601))
      )
    }

    const version = req.headers["linkedin-version"]
    if (version === undefined || version.trim() === "") {
      return stop(
        "missing LinkedIn-Version",
        json(
          400,
          restliError(
            400,
            "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
            "VERSION_MISSING"
          )
        )
      )
    }
    if (!/^\d{6}(\.\d{2})?$/.test(version.trim())) {
      return stop(
        "invalid LinkedIn-Version",
        json(400, restliError(400, `Invalid version ${version}: expected YYYYMM`, "INVALID_VERSION_FORMAT"))
      )
    }
    if (!this.config.activeVersions.includes(version.trim().slice(0, 6))) {
      return stop(
        "inactive LinkedIn-Version",
        json(426, restliError(426, `Requested version ${version.trim()} is not active`, "NONEXISTENT_VERSION"))
      )
    }
    if ((req.headers["x-restli-protocol-version"] ?? "").trim() !== "2.0.0") {
      return stop(
        "protocol version",
        json(400, restliError(400, "X-Restli-Protocol-Version: 2.0.0 is required", "INVALID_PROTOCOL_VERSION"))
      )
    }
    if ((req.headers["x-restli-method"] ?? "").trim().toUpperCase() !== "BATCH_CREATE") {
      return stop(
        "not BATCH_CREATE",
        json(400, restliError(400, "The sandbox serves batch create only: send X-RestLi-Method: BATCH_CREATE"))
      )
    }
    if (!/^application\/json\b/i.test((req.headers["content-type"] ?? "").trim())) {
      return stop("content-type", json(415, restliError(415, "Content-Type must be application/json")))
    }
    return undefined
  }

  private conversionEvents(req: Request): Reply {
    if (req.method !== "POST") return json(405, restliError(405, `Method ${req.method} not allowed`))
    const parsed = this.parse(req.body)
    const elements = isObject(parsed) && Array.isArray(parsed.elements) ? parsed.elements : []
    this.stats.elements_received += elements.length
    const refuse = (reason: string, reply: Reply) => {
      this.reject(reason, elements.length)
      return reply
    }
    const stopped = this.gate(req)
    if (stopped !== undefined) return refuse(stopped.reason, stopped.reply)
    if (!isObject(parsed) || !Array.isArray(parsed.elements) || parsed.elements.length === 0) {
      return refuse("no elements", json(400, restliError(400, "/elements :: a non-empty array is required")))
    }
    if (elements.length > this.config.maxElements) {
      return refuse(
        "batch too large",
        json(
          400,
          restliError(400, `/elements :: at most ${this.config.maxElements} elements per batch, got ${elements.length}`)
        )
      )
    }
    if (this.throttled(req.now)) {
      return refuse(
        "rate limited",
        json(
          429,
          restliError(
            429,
            "Resource level throttle APPLICATION MINUTE limit for calls to this resource is reached.",
            "TOO_MANY_REQUESTS"
          )
        )
      )
    }

    const statuses = elements.map((raw, i) => {
      const problem = checkElement(raw, i, req.now, this.config)
      if (problem !== undefined) {
        this.reject(problem.reason)
        return { status: 400, error: restliError(400, problem.message, "FIELD_VALUE_INVALID", 100) }
      }
      this.store(raw as Record<string, unknown>, req.now)
      this.stats.elements_accepted += 1
      return { status: 201 }
    })
    return json(200, { elements: statuses })
  }

  /** True when this request exceeds the per-minute or per-day limit (the request is counted either way). */
  private throttled(now: number): boolean {
    const { rateLimitPerDay: perDay, rateLimitPerMinute: perMinute } = this.config
    this.recent = this.recent.filter((t) => t > now - 86_400_000)
    this.recent.push(now)
    const lastMinute = this.recent.filter((t) => t > now - 60_000).length
    return (perMinute > 0 && lastMinute > perMinute) || (perDay > 0 && this.recent.length > perDay)
  }

  private store(element: Record<string, unknown>, now: number) {
    const rule = URN.exec(String(element.conversion))![1]!
    const eventId = typeof element.eventId === "string" ? element.eventId : null
    if (eventId !== null) {
      const key = `${rule}\u0000${eventId}`
      const until = this.seen.get(key)
      if (until !== undefined && until > now) {
        this.stats.duplicates += 1
        return
      }
      this.seen.set(key, now + this.config.windowMs)
    }
    this.stored.push({ seq: this.stored.length + 1, received_at: now, rule, event_id: eventId, element })
    this.stats.elements_stored += 1
  }

  // ---------------------------------------------------------------------------------------------------------------
  // DMP segment users

  private segmentUsers(req: Request, segmentId: string): Reply {
    if (req.method !== "POST") return json(405, restliError(405, `Method ${req.method} not allowed`))
    const parsed = this.parse(req.body)
    const elements = isObject(parsed) && Array.isArray(parsed.elements) ? parsed.elements : []
    this.stats.segment_elements_received += elements.length
    const stopped = this.gate(req)
    if (stopped !== undefined) return stopped.reply
    if (!this.config.dmpSegments.includes(segmentId)) {
      return json(404, restliError(404, `DmpSegment with id ${segmentId} does not exist`, "NOT_FOUND"))
    }
    if (!isObject(parsed) || !Array.isArray(parsed.elements) || parsed.elements.length === 0) {
      return json(400, restliError(400, "/elements :: a non-empty array is required"))
    }
    if (elements.length > this.config.maxSegmentElements) {
      return json(
        400,
        restliError(
          400,
          `/elements :: at most ${this.config.maxSegmentElements} elements per batch, got ${elements.length}`
        )
      )
    }
    if (this.throttled(req.now)) {
      return json(
        429,
        restliError(
          429,
          "Resource level throttle APPLICATION MINUTE limit for calls to this resource is reached.",
          "TOO_MANY_REQUESTS"
        )
      )
    }
    const users = this.segments.get(segmentId) ?? []
    const statuses = elements.map((raw, i) => {
      const problem = checkSegmentUser(raw, i)
      if (problem !== undefined) {
        return { status: 400, error: restliError(400, problem.message, "FIELD_VALUE_INVALID", 100) }
      }
      const element = raw as { action: "ADD" | "REMOVE"; userIds?: Array<SegmentUserId> }
      const ids = (element.userIds ?? []).map((id) => ({ idType: id.idType, idValue: id.idValue }))
      // The same user: one sharing any id. A user with names only cannot be matched here and is not kept.
      const same = (user: ReadonlyArray<SegmentUserId>) =>
        user.some((u) => ids.some((id) => id.idType === u.idType && id.idValue === u.idValue))
      if (element.action === "REMOVE") {
        for (let k = users.length - 1; k >= 0; k--) if (same(users[k]!)) users.splice(k, 1)
      } else if (ids.length > 0) {
        const existing = users.find(same)
        if (existing === undefined) users.push(ids)
        else {
          for (const id of ids) {
            if (!existing.some((u) => u.idType === id.idType && u.idValue === id.idValue)) existing.push(id)
          }
        }
      }
      // LinkedIn answers 201 for an id added again or removed when absent, by design.
      this.stats.segment_elements_accepted += 1
      return { status: 201 }
    })
    this.segments.set(segmentId, users)
    return json(200, { elements: statuses })
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Control endpoints

  private control(req: Request, path: string): Reply {
    const one = /^\/__sandbox\/segments\/([^/]+)$/.exec(path)
    if (one !== null && req.method === "GET") {
      const state = this.segment(decodeURIComponent(one[1]!))
      return state === undefined ? json(404, { error: "unknown segment" }) : json(200, state)
    }
    switch (`${req.method} ${path}`) {
      case "GET /__sandbox/segments":
        return json(200, { segments: this.config.dmpSegments.map((id) => this.segment(id)!) })
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
      case "POST /__sandbox/revoke":
        // Every issued access token stops working (as when LinkedIn revokes them); refresh tokens still work.
        this.tokens.clear()
        return json(200, { ok: true })
      case "GET /":
      case "GET /__sandbox":
        return json(200, {
          sandbox: "linkedin-conversions-api",
          token: "POST /oauth/v2/accessToken",
          conversions: "POST /rest/conversionEvents (X-RestLi-Method: BATCH_CREATE)",
          segments: "POST /rest/dmpSegments/{id}/users (X-RestLi-Method: BATCH_CREATE)",
          dmpSegments: this.config.dmpSegments,
          control: [
            "GET /__sandbox/segments",
            "GET /__sandbox/segments/{id}",
            "GET /__sandbox/events",
            "DELETE /__sandbox/events",
            "GET /__sandbox/stats",
            "POST /__sandbox/faults",
            "DELETE /__sandbox/faults",
            "POST /__sandbox/config",
            "POST /__sandbox/revoke"
          ]
        })
      default:
        return json(404, { error: "Not Found" })
    }
  }

  private faultState() {
    return { next: this.faults ?? null, down: this.down !== undefined, delayMs: this.delayMs }
  }

  private setFaults(f: Faults): Reply {
    if (f.status !== undefined) {
      if (typeof f.status !== "number" || f.status < 400 || f.status > 599) {
        return json(400, { error: "status must be an HTTP error status (4xx or 5xx)" })
      }
      this.faults = {
        target: f.target === "token" ? "token" : "api",
        status: f.status,
        remaining: typeof f.count === "number" && f.count > 0 ? Math.floor(f.count) : 1,
        skip: typeof f.skip === "number" && f.skip > 0 ? Math.floor(f.skip) : 0,
        ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}),
        ...(f.body !== undefined ? { body: f.body } : {})
      }
    }
    if (f.down !== undefined) {
      this.down = f.down ? (f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}) : undefined
    }
    if (f.delayMs !== undefined) this.delayMs = Math.max(0, Number(f.delayMs) || 0)
    return json(200, this.faultState())
  }

  private configure(body: Record<string, unknown>): Reply {
    const next: Mutable<EmulatorConfig> = { ...this.config }
    const positive = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u) && u > 0
    const nonNegative = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u) && u >= 0
    const strings = (u: unknown): u is Array<string> => Array.isArray(u) && u.every((s) => typeof s === "string")
    if (positive(body.accessTokenTtlSeconds)) next.accessTokenTtlSeconds = body.accessTokenTtlSeconds
    if (positive(body.refreshTokenTtlSeconds)) next.refreshTokenTtlSeconds = body.refreshTokenTtlSeconds
    if (positive(body.maxElements)) next.maxElements = Math.floor(body.maxElements)
    if (positive(body.maxSegmentElements)) next.maxSegmentElements = Math.floor(body.maxSegmentElements)
    if (strings(body.dmpSegments)) next.dmpSegments = body.dmpSegments
    if (nonNegative(body.rateLimitPerMinute)) next.rateLimitPerMinute = Math.floor(body.rateLimitPerMinute)
    if (nonNegative(body.rateLimitPerDay)) next.rateLimitPerDay = Math.floor(body.rateLimitPerDay)
    if (strings(body.conversionRules)) next.conversionRules = body.conversionRules
    if (strings(body.activeVersions)) next.activeVersions = body.activeVersions
    if (strings(body.refreshTokens)) next.refreshTokens = body.refreshTokens
    if (typeof body.clientId === "string") next.clientId = body.clientId
    if (typeof body.clientSecret === "string") next.clientSecret = body.clientSecret
    this.config = next
    const { clientSecret: _s, refreshTokens, ...visible } = next
    return json(200, { ...visible, refreshTokens: refreshTokens.length })
  }
}
