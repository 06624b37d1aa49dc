/**
 * Google's OAuth token endpoint and the Data Manager API's event ingestion (`POST /v1/events:ingest`,
 * `GET /v1/requestStatus:retrieve`), emulated in memory as Google documents them: bearer tokens with an expiry,
 * fail-fast validation answered with google.rpc `BadRequest` field violations, limits, the per-minute quota,
 * `transactionId` dedup and adjustments, asynchronous request status. Transport-free (the sandbox wraps it in
 * `node:http`) and written independently of the plugin, so a plugin bug is not mirrored here.
 */
import { randomBytes, randomUUID } from "node:crypto"

/** One OAuth client the token endpoint accepts, with the refresh token it issued. */
export interface OAuthClient {
  readonly clientId: string
  readonly clientSecret: string
  readonly refreshToken: string
}

/** An event stored by the emulator, in arrival order. */
export interface StoredEvent {
  readonly seq: number
  readonly received_at: number
  readonly request_id: string
  readonly operating_account_id: string
  readonly product_destination_id: string
  readonly transaction_id: string
  /** `new`, or `adjustment` when the transactionId was seen with another value or currency. */
  readonly kind: "new" | "adjustment"
  /** The event exactly as received. */
  readonly event: Record<string, unknown>
}

export interface Stats {
  /** Token endpoint requests, tokens issued, and refusals by OAuth error. */
  readonly token_requests: number
  readonly tokens_issued: number
  readonly token_errors: Record<string, number>
  readonly ingest_requests: number
  /** HTTP status → ingest requests answered with it. */
  readonly responses: Record<string, number>
  readonly status_polls: number
  readonly events_received: number
  readonly events_stored: number
  /** Events whose transactionId was already stored with the same value. */
  readonly duplicates: number
  readonly adjustments: number
  readonly validate_only_requests: number
  /** Reason → events (or requests) refused for it. */
  readonly rejected: Record<string, number>
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** The next `count` ingest requests answer this status (with a google.rpc body unless `body` is given). */
  readonly status?: number
  readonly count?: number
  /** Let this many ingest requests through before the fault starts. */
  readonly skip?: number
  /** `Retry-After` header on those answers (seconds, or an HTTP-date string). */
  readonly retryAfter?: number | string
  readonly body?: unknown
  /** Final status of the next `count` accepted requests (default SUCCESS), with these error counts. */
  readonly requestStatus?: "FAILED" | "PARTIAL_SUCCESS"
  readonly errorCounts?: ReadonlyArray<{ readonly reason: string; readonly recordCount: number }>
  /** While true every ingest request gets 503 UNAVAILABLE and nothing is stored. */
  readonly down?: boolean
  /** Delay every answer by this many ms. */
  readonly delayMs?: number
}

/** Runtime configuration (`POST /__sandbox/config`). */
export interface EmulatorConfig {
  readonly clients: ReadonlyArray<OAuthClient>
  /** Lifetime of issued access tokens (Google: 3599 s). */
  readonly tokenTtlSeconds: number
  /** `requestStatus:retrieve` answers PROCESSING this many times per request before the final status. */
  readonly processingPolls: number
  /** Ingest requests per minute per project (Google: 300). 0 disables the quota. */
  readonly rateLimitPerMinute: number
  /** Events per request (Google: 2000). */
  readonly maxEventsPerRequest: number
}

export const defaultConfig: EmulatorConfig = {
  clients: [{
    clientId: "sandbox-google-client-id",
    clientSecret: "sandbox-google-client-secret",
    refreshToken: "sandbox-google-refresh-token"
  }],
  tokenTtlSeconds: 3599,
  processingPolls: 1,
  rateLimitPerMinute: 300,
  maxEventsPerRequest: 2000
}

export interface Request {
  readonly method: string
  /** Path with query string. */
  readonly path: string
  readonly contentType: string | undefined
  readonly authorization: string | undefined
  readonly body: Uint8Array
  readonly now: number
}

export interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { "content-type": "application/json; charset=UTF-8", ...headers },
  body: JSON.stringify(body)
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const RPC_CODES: Readonly<Record<number, string>> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED"
}

const DOMAIN = "datamanager.googleapis.com"

/** A google.rpc Status error as the REST API returns it. */
const rpcError = (
  code: number,
  message: string,
  details: ReadonlyArray<unknown> = [],
  headers: Record<string, string> = {}
): Reply => json(code, { error: { code, message, status: RPC_CODES[code] ?? "UNKNOWN", details } }, headers)

const errorInfo = (reason: string, metadata: Record<string, string> = {}) => ({
  "@type": "type.googleapis.com/google.rpc.ErrorInfo",
  reason,
  domain: DOMAIN,
  metadata
})

const UNAUTHENTICATED_MESSAGE = "Request had invalid authentication credentials. Expected OAuth 2 access token, " +
  "login cookie or other valid authentication credential."

const ACCOUNT_TYPES = new Set(["GOOGLE_ADS", "DISPLAY_VIDEO_PARTNER", "DISPLAY_VIDEO_ADVERTISER", "DATA_PARTNER"])
const EVENT_SOURCES = new Set(["WEB", "APP", "IN_STORE", "PHONE", "OTHER"])
const CONSENT_VALUES = new Set(["CONSENT_GRANTED", "CONSENT_DENIED"])
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/
const CURRENCIES: ReadonlySet<string> = new Set(Intl.supportedValuesOf("currency"))

interface Violation {
  readonly field: string
  readonly description: string
  /** ErrorReason-style code, for statistics. */
  readonly reason: string
}

/** A hashed value of the request's encoding: 64 hex characters (HEX) or 32 bytes in base64 (BASE64). */
const isHashed = (v: unknown, encoding: string): boolean => {
  if (typeof v !== "string") return false
  if (encoding === "BASE64") return /^[A-Za-z0-9+/]{43}=$/.test(v)
  return HEX_SHA256.test(v)
}

interface TrackedRequest {
  polls: number
  readonly destinations: ReadonlyArray<unknown>
  readonly recordCount: number
  readonly final: "SUCCESS" | "FAILED" | "PARTIAL_SUCCESS"
  readonly errorCounts: ReadonlyArray<{ readonly reason: string; readonly recordCount: number }>
}

/** The emulated Google project: OAuth clients, tokens, stored conversions, request statuses. */
export class Emulator {
  config: EmulatorConfig
  private tokens = new Map<string, number>()
  private stored: Array<StoredEvent> = []
  private byKey = new Map<string, { value: unknown; currency: unknown }>()
  private requests = new Map<string, TrackedRequest>()
  private recent: Array<number> = []
  private seq = 0
  private faults:
    | { status: number; remaining: number; skip: number; retryAfter?: number | string; body?: unknown }
    | undefined
  private statusFault:
    | { requestStatus: "FAILED" | "PARTIAL_SUCCESS"; remaining: number; errorCounts: TrackedRequest["errorCounts"] }
    | undefined
  private down: { retryAfter?: number | string } | undefined
  private delayMs = 0
  private stats = Emulator.emptyStats()

  constructor(config: Partial<EmulatorConfig> = {}) {
    this.config = { ...defaultConfig, ...config }
  }

  private static emptyStats() {
    return {
      token_requests: 0,
      tokens_issued: 0,
      token_errors: {} as Record<string, number>,
      ingest_requests: 0,
      responses: {} as Record<string, number>,
      status_polls: 0,
      events_received: 0,
      events_stored: 0,
      duplicates: 0,
      adjustments: 0,
      validate_only_requests: 0,
      rejected: {} as Record<string, number>
    }
  }

  /** Forgets events, tokens, request statuses, statistics and faults (the configuration is kept). */
  reset(): void {
    this.tokens.clear()
    this.stored = []
    this.byKey.clear()
    this.requests.clear()
    this.recent = []
    this.seq = 0
    this.faults = undefined
    this.statusFault = undefined
    this.down = undefined
    this.delayMs = 0
    this.stats = Emulator.emptyStats()
  }

  events(): ReadonlyArray<StoredEvent> {
    return this.stored
  }

  handle(req: Request): { readonly reply: Reply; readonly delayMs: number } {
    const [path = "/", query = ""] = req.path.split("?")
    if (path === "/token") {
      if (req.method !== "POST") return { reply: json(405, { error: "method_not_allowed" }), delayMs: 0 }
      return { reply: this.token(req), delayMs: this.delayMs }
    }
    if (path === "/v1/events:ingest") {
      if (req.method !== "POST") return { reply: rpcError(404, "Method not found."), delayMs: 0 }
      const reply = this.ingest(req)
      this.stats.responses[String(reply.status)] = (this.stats.responses[String(reply.status)] ?? 0) + 1
      return { reply, delayMs: this.delayMs }
    }
    if (path === "/v1/requestStatus:retrieve") {
      if (req.method !== "GET") return { reply: rpcError(404, "Method not found."), delayMs: 0 }
      return { reply: this.requestStatus(req, new URLSearchParams(query)), delayMs: this.delayMs }
    }
    return { reply: this.control(req, path), delayMs: 0 }
  }

  // -------------------------------------------------------------------------------------------------------------
  // OAuth

  private tokenError(status: number, error: string, description: string): Reply {
    this.stats.token_errors[error] = (this.stats.token_errors[error] ?? 0) + 1
    return json(status, { error, error_description: description })
  }

  private token(req: Request): Reply {
    this.stats.token_requests += 1
    const text = new TextDecoder().decode(req.body)
    let params: Record<string, string> = {}
    if ((req.contentType ?? "").includes("application/json")) {
      const parsed = this.parse(req.body)
      if (isObject(parsed)) { for (const [k, v] of Object.entries(parsed)) params[k] = String(v) }
    } else {
      params = Object.fromEntries(new URLSearchParams(text))
    }
    if (params.grant_type !== "refresh_token") {
      return this.tokenError(400, "unsupported_grant_type", "Invalid grant_type: " + (params.grant_type ?? ""))
    }
    const client = this.config.clients.find((c) => c.clientId === params.client_id)
    if (client === undefined || client.clientSecret !== params.client_secret) {
      return this.tokenError(401, "invalid_client", "The OAuth client was not found.")
    }
    if (client.refreshToken !== params.refresh_token) {
      return this.tokenError(400, "invalid_grant", "Bad Request")
    }
    const token = `ya29.sandbox-${randomBytes(12).toString("hex")}`
    this.tokens.set(token, req.now + this.config.tokenTtlSeconds * 1000)
    this.stats.tokens_issued += 1
    return json(200, {
      access_token: token,
      expires_in: this.config.tokenTtlSeconds,
      scope: "https://www.googleapis.com/auth/datamanager",
      token_type: "Bearer"
    })
  }

  /** Undefined when the bearer token is valid and unexpired, else the 401 answer. */
  private authenticate(req: Request): Reply | undefined {
    const m = /^Bearer\s+(\S+)$/i.exec(req.authorization ?? "")
    const expiresAt = m === null ? undefined : this.tokens.get(m[1]!)
    if (expiresAt !== undefined && req.now < expiresAt) return undefined
    return rpcError(401, UNAUTHENTICATED_MESSAGE, [
      errorInfo(expiresAt === undefined ? "ACCESS_TOKEN_TYPE_UNSUPPORTED" : "ACCESS_TOKEN_EXPIRED", {
        service: DOMAIN,
        method: "google.ads.datamanager.v1.IngestionService.IngestEvents"
      })
    ], { "www-authenticate": "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"" })
  }

  // -------------------------------------------------------------------------------------------------------------
  // Ingestion

  private reject(reason: string, n: number) {
    if (n > 0) this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + n
  }

  private retryAfterHeader(v: number | string | undefined): Record<string, string> {
    return v === undefined ? {} : { "retry-after": String(v) }
  }

  private ingest(req: Request): Reply {
    this.stats.ingest_requests += 1
    const parsed = this.parse(req.body)
    const events = isObject(parsed) && Array.isArray(parsed.events) ? parsed.events : []
    this.stats.events_received += events.length
    const unauthenticated = this.authenticate(req)
    if (unauthenticated !== undefined) {
      this.reject("unauthenticated", 1)
      return unauthenticated
    }
    if (this.down !== undefined) {
      this.reject("unavailable", events.length)
      return rpcError(503, "The service is currently unavailable.", [], this.retryAfterHeader(this.down.retryAfter))
    }
    if (this.config.rateLimitPerMinute > 0) {
      this.recent = this.recent.filter((t) => req.now - t < 60_000)
      if (this.recent.length >= this.config.rateLimitPerMinute) {
        this.reject("rate limited", events.length)
        const waitS = Math.max(1, Math.ceil((this.recent[0]! + 60_000 - req.now) / 1000))
        return rpcError(
          429,
          "Quota exceeded for quota metric 'Ingestion requests' and limit 'Ingestion requests per minute' of " +
            `service '${DOMAIN}'.`,
          [
            errorInfo("RATE_LIMIT_EXCEEDED", {
              service: DOMAIN,
              quota_limit_value: String(this.config.rateLimitPerMinute)
            }),
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${waitS}s` }
          ],
          { "retry-after": String(waitS) }
        )
      }
      this.recent.push(req.now)
    }
    const fault = this.takeFault()
    if (fault !== undefined) {
      this.reject(`fault ${fault.status}`, events.length)
      if (fault.body !== undefined) return json(fault.status, fault.body, this.retryAfterHeader(fault.retryAfter))
      return rpcError(fault.status, "Injected fault.", [], this.retryAfterHeader(fault.retryAfter))
    }
    if (!isObject(parsed)) {
      this.reject("invalid JSON", 1)
      return rpcError(400, "Invalid JSON payload received.", [])
    }
    const violations = this.validate(parsed)
    if (violations.length > 0) {
      for (const v of violations) this.reject(v.reason, 1)
      return rpcError(400, "There was a problem with the request.", [
        errorInfo("INVALID_ARGUMENT"),
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: violations.map(({ description, field }) => ({ field, description }))
        }
      ])
    }
    const requestId = randomUUID()
    if (parsed.validateOnly === true) {
      this.stats.validate_only_requests += 1
      return json(200, { requestId })
    }
    const destinations = parsed.destinations as ReadonlyArray<Record<string, unknown>>
    for (const raw of events as ReadonlyArray<Record<string, unknown>>) {
      for (const d of destinations) {
        const account = String((d.operatingAccount as Record<string, unknown>).accountId)
        const product = String(d.productDestinationId)
        const transactionId = String(raw.transactionId)
        const key = `${account}|${product}|${transactionId}`
        const before = this.byKey.get(key)
        if (before !== undefined && before.value === raw.conversionValue && before.currency === raw.currency) {
          this.stats.duplicates += 1
          continue
        }
        const kind = before === undefined ? "new" : "adjustment"
        if (kind === "adjustment") this.stats.adjustments += 1
        this.byKey.set(key, { value: raw.conversionValue, currency: raw.currency })
        this.stored.push({
          seq: ++this.seq,
          received_at: req.now,
          request_id: requestId,
          operating_account_id: account,
          product_destination_id: product,
          transaction_id: transactionId,
          kind,
          event: raw
        })
        this.stats.events_stored += 1
      }
    }
    const status = this.statusFault
    if (status !== undefined) {
      status.remaining -= 1
      if (status.remaining <= 0) this.statusFault = undefined
    }
    this.requests.set(requestId, {
      polls: 0,
      destinations,
      recordCount: events.length,
      final: status?.requestStatus ?? "SUCCESS",
      errorCounts: status?.errorCounts ?? []
    })
    return json(200, { requestId })
  }

  /** Every violation of the documented contract, as google.rpc BadRequest field violations. */
  private validate(body: Record<string, unknown>): ReadonlyArray<Violation> {
    const out: Array<Violation> = []
    const add = (field: string, reason: string, description: string) => out.push({ field, reason, description })
    const destinations = body.destinations
    if (!Array.isArray(destinations) || destinations.length === 0) {
      add("destinations", "REQUIRED_FIELD_MISSING", "At least one destination is required.")
    } else if (destinations.length > 10) {
      add("destinations", "TOO_MANY_DESTINATIONS", "Maximum number of destinations allowed per request is 10.")
    } else {
      destinations.forEach((d: unknown, i) => {
        const dest = isObject(d) ? d : {}
        for (const which of ["operatingAccount", "loginAccount"] as const) {
          const account = dest[which]
          if (account === undefined && which === "loginAccount") continue
          const a = isObject(account) ? account : {}
          if (typeof a.accountId !== "string" || !/^\d{10}$/.test(a.accountId)) {
            add(
              `destinations[${i}].${which}.accountId`,
              "INVALID_FORMAT",
              "The account ID must be 10 digits without hyphens."
            )
          }
          if (typeof a.accountType !== "string" || !ACCOUNT_TYPES.has(a.accountType)) {
            add(`destinations[${i}].${which}.accountType`, "INVALID_ENUM_VALUE", "Enum value cannot be used.")
          }
        }
        if (typeof dest.productDestinationId !== "string" || dest.productDestinationId === "") {
          add(`destinations[${i}].productDestinationId`, "REQUIRED_FIELD_MISSING", "Required field is missing.")
        } else if (!/^\d+$/.test(dest.productDestinationId)) {
          add(
            `destinations[${i}].productDestinationId`,
            "INVALID_CONVERSION_ACTION_ID",
            "Conversion action ID is not valid."
          )
        }
      })
    }
    const events = body.events
    if (!Array.isArray(events) || events.length === 0) {
      add("events", "REQUIRED_FIELD_MISSING", "At least one event is required.")
      return out
    }
    if (events.length > this.config.maxEventsPerRequest) {
      add(
        "events",
        "TOO_MANY_EVENTS",
        `Maximum number of events allowed per request is ${this.config.maxEventsPerRequest}.`
      )
      return out
    }
    const encoding = body.encoding
    const usesUserData = events.some((e) => isObject(e) && e.userData !== undefined)
    if (encoding !== undefined && encoding !== "HEX" && encoding !== "BASE64") {
      add("encoding", "INVALID_ENUM_VALUE", "Enum value cannot be used.")
    } else if (encoding === undefined && usesUserData) {
      add("encoding", "REQUIRED_FIELD_MISSING", "Encoding is required when user data is sent.")
    }
    const enc = typeof encoding === "string" ? encoding : "HEX"
    events.forEach((e: unknown, i) => {
      const at = (f: string) => `events[${i}].${f}`
      if (!isObject(e)) {
        add(`events[${i}]`, "INVALID_ARGUMENT", "An event must be an object.")
        return
      }
      const ts = e.eventTimestamp
      if (ts === undefined) add(at("eventTimestamp"), "REQUIRED_FIELD_MISSING", "Required field is missing.")
      else if (typeof ts !== "string" || !RFC3339.test(ts) || Number.isNaN(Date.parse(ts))) {
        add(at("eventTimestamp"), "INVALID_FORMAT", "The timestamp must be an RFC 3339 date-time.")
      }
      if (typeof e.transactionId !== "string" || e.transactionId.trim() === "") {
        add(at("transactionId"), "REQUIRED_FIELD_MISSING", "Required field is missing.")
      }
      if (e.conversionValue !== undefined) {
        if (typeof e.conversionValue !== "number" || !Number.isFinite(e.conversionValue) || e.conversionValue < 0) {
          add(at("conversionValue"), "INVALID_NUMBER_FORMAT", "Invalid number format.")
        }
        if (typeof e.currency !== "string" || !CURRENCIES.has(e.currency)) {
          add(at("currency"), "INVALID_CURRENCY_CODE", "The currency must be an ISO 4217 code.")
        }
      } else if (e.currency !== undefined && (typeof e.currency !== "string" || !CURRENCIES.has(e.currency))) {
        add(at("currency"), "INVALID_CURRENCY_CODE", "The currency must be an ISO 4217 code.")
      }
      if (e.eventSource !== undefined && (typeof e.eventSource !== "string" || !EVENT_SOURCES.has(e.eventSource))) {
        add(at("eventSource"), "INVALID_ENUM_VALUE", "Enum value cannot be used.")
      }
      let clickIds = 0
      if (e.adIdentifiers !== undefined) {
        const ad = isObject(e.adIdentifiers) ? e.adIdentifiers : {}
        for (const k of ["gclid", "gbraid", "wbraid"]) {
          if (ad[k] === undefined) continue
          if (typeof ad[k] !== "string" || ad[k] === "") {
            add(at(`adIdentifiers.${k}`), "INVALID_FORMAT", "Format is invalid.")
          } else clickIds += 1
        }
        if (clickIds > 1) {
          add(at("adIdentifiers"), "INVALID_ARGUMENT", "At most one of gclid, gbraid and wbraid may be set.")
        }
      }
      let identifiers = 0
      if (e.userData !== undefined) {
        const ids = isObject(e.userData) ? e.userData.userIdentifiers : undefined
        if (!Array.isArray(ids) || ids.length === 0) {
          add(at("userData.userIdentifiers"), "REQUIRED_FIELD_MISSING", "Required field is missing.")
        } else if (ids.length > 10) {
          add(
            at("userData.userIdentifiers"),
            "TOO_MANY_USER_IDENTIFIERS",
            "Maximum number of user identifiers allowed per event is 10."
          )
        } else {
          ids.forEach((raw: unknown, j) => {
            const f = (x: string) => at(`userData.userIdentifiers[${j}]${x}`)
            const id = isObject(raw) ? raw : {}
            const kinds = ["emailAddress", "phoneNumber", "address"].filter((k) => id[k] !== undefined)
            if (kinds.length !== 1) {
              add(f(""), "INVALID_ARGUMENT", "Exactly one of emailAddress, phoneNumber and address must be set.")
              return
            }
            identifiers += 1
            const kind = kinds[0]!
            if (kind !== "address") {
              if (!isHashed(id[kind], enc)) {
                add(f(`.${kind}`), "INVALID_SHA256_FORMAT", "The SHA256 encoded value is malformed.")
              }
              return
            }
            const address = isObject(id.address) ? id.address : {}
            for (const name of ["givenName", "familyName"]) {
              if (!isHashed(address[name], enc)) {
                add(f(`.address.${name}`), "INVALID_SHA256_FORMAT", "The SHA256 encoded value is malformed.")
              }
            }
            if (typeof address.regionCode !== "string" || !/^[A-Z]{2}$/.test(address.regionCode)) {
              add(f(".address.regionCode"), "INVALID_COUNTRY_CODE", "Country code is not valid.")
            }
            if (typeof address.postalCode !== "string" || address.postalCode.trim() === "") {
              add(f(".address.postalCode"), "INVALID_POSTAL_CODE", "Postal code is not valid.")
            }
          })
        }
      }
      if (e.consent !== undefined) {
        const c = isObject(e.consent) ? e.consent : {}
        for (const k of ["adUserData", "adPersonalization"]) {
          if (c[k] !== undefined && (typeof c[k] !== "string" || !CONSENT_VALUES.has(c[k]))) {
            add(at(`consent.${k}`), "INVALID_ENUM_VALUE", "Enum value cannot be used.")
          }
        }
      }
      if (clickIds === 0 && identifiers === 0 && e.userData === undefined && e.adIdentifiers === undefined) {
        add(at("adIdentifiers"), "REQUIRED_FIELD_MISSING", "An event needs an ad identifier or user data.")
      }
    })
    return out
  }

  private requestStatus(req: Request, query: URLSearchParams): Reply {
    const unauthenticated = this.authenticate(req)
    if (unauthenticated !== undefined) return unauthenticated
    this.stats.status_polls += 1
    const requestId = query.get("requestId") ?? ""
    const tracked = this.requests.get(requestId)
    if (tracked === undefined) return rpcError(404, `Request ${JSON.stringify(requestId)} was not found.`)
    tracked.polls += 1
    const processing = tracked.polls <= this.config.processingPolls
    const requestStatus = processing ? "PROCESSING" : tracked.final
    return json(200, {
      requestStatusPerDestination: tracked.destinations.map((destination) => ({
        destination,
        requestStatus,
        eventsIngestionStatus: { recordCount: String(tracked.recordCount) },
        ...(!processing && tracked.errorCounts.length > 0
          ? {
            errorInfo: {
              errorCounts: tracked.errorCounts.map((c) => ({ recordCount: String(c.recordCount), reason: c.reason }))
            }
          }
          : {})
      }))
    })
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

  // -------------------------------------------------------------------------------------------------------------
  // Control

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
        this.statusFault = undefined
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
      case "POST /__sandbox/expire-tokens":
        // Every issued token expires now (to exercise a refresh after 401).
        for (const t of this.tokens.keys()) this.tokens.set(t, 0)
        return json(200, { expired: this.tokens.size })
      case "GET /":
      case "GET /__sandbox":
        return json(200, {
          sandbox: "google-data-manager-v1",
          token: "POST /token",
          ingest: "POST /v1/events:ingest",
          status: "GET /v1/requestStatus:retrieve?requestId=…",
          control: [
            "GET /__sandbox/events",
            "DELETE /__sandbox/events",
            "GET /__sandbox/stats",
            "POST /__sandbox/faults",
            "DELETE /__sandbox/faults",
            "POST /__sandbox/config",
            "POST /__sandbox/expire-tokens"
          ]
        })
      default:
        return rpcError(404, "Not found.")
    }
  }

  private faultState() {
    return {
      next: this.faults ?? null,
      requestStatus: this.statusFault ?? null,
      down: this.down !== undefined,
      delayMs: this.delayMs
    }
  }

  private setFaults(f: Faults): Reply {
    const count = typeof f.count === "number" && f.count > 0 ? Math.floor(f.count) : 1
    if (f.status !== undefined) {
      if (typeof f.status !== "number" || f.status < 400 || f.status > 599) {
        return json(400, { error: "status must be an HTTP error status (4xx or 5xx)" })
      }
      this.faults = {
        status: f.status,
        remaining: count,
        skip: typeof f.skip === "number" && f.skip > 0 ? Math.floor(f.skip) : 0,
        ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}),
        ...(f.body !== undefined ? { body: f.body } : {})
      }
    }
    if (f.requestStatus !== undefined) {
      if (f.requestStatus !== "FAILED" && f.requestStatus !== "PARTIAL_SUCCESS") {
        return json(400, { error: "requestStatus must be FAILED or PARTIAL_SUCCESS" })
      }
      this.statusFault = { requestStatus: f.requestStatus, remaining: count, errorCounts: f.errorCounts ?? [] }
    }
    if (f.down !== undefined) {
      this.down = f.down ? (f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}) : undefined
    }
    if (f.delayMs !== undefined) this.delayMs = Math.max(0, Number(f.delayMs) || 0)
    return json(200, this.faultState())
  }

  private configure(body: Record<string, unknown>): Reply {
    const next: { -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] } = { ...this.config }
    const positive = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0
    if (positive(body.tokenTtlSeconds)) next.tokenTtlSeconds = body.tokenTtlSeconds as number
    if (positive(body.processingPolls)) next.processingPolls = Math.floor(body.processingPolls as number)
    if (positive(body.rateLimitPerMinute)) next.rateLimitPerMinute = Math.floor(body.rateLimitPerMinute as number)
    if (positive(body.maxEventsPerRequest)) next.maxEventsPerRequest = Math.floor(body.maxEventsPerRequest as number)
    if (
      Array.isArray(body.clients) &&
      body.clients.every((c) =>
        isObject(c) && typeof c.clientId === "string" && typeof c.clientSecret === "string" &&
        typeof c.refreshToken === "string"
      )
    ) next.clients = body.clients as Array<OAuthClient>
    this.config = next
    const { clients, ...visible } = next
    return json(200, { ...visible, clients: clients.length })
  }

  private parse(body: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(body))
    } catch {
      return undefined
    }
  }
}
