/**
 * Google's OAuth token endpoint and the Data Manager API's event ingestion (`POST /v1/events:ingest`,
 * `GET /v1/requestStatus:retrieve`), emulated in memory as Google documents them: bearer tokens with an expiry,
 * fail-fast validation answered with google.rpc `BadRequest` field violations, limits, the per-minute quota,
 * `transactionId` dedup and adjustments, asynchronous request status. Also the Google Ads API's
 * `POST /v{N}/customers/{id}:uploadClickConversions` (developer token, partial failure rows, order id and click
 * dedup, click-age checks, the "not allowlisted" refusal). And Customer Match through the Data Manager API
 * (`POST /v1/audienceMembers:ingest`, `POST /v1/audienceMembers:remove`): validation, known user lists, membership
 * per user list, request status. Transport-free (the sandbox wraps it in `node:http`) and written independently of
 * the plugin, so a plugin bug is not mirrored here.
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
  /** Google Ads API: uploadClickConversions requests, answers by status, conversions received / stored. */
  readonly upload_requests: number
  readonly upload_responses: Record<string, number>
  readonly conversions_received: number
  readonly conversions_stored: number
  /** Error code (`ORDER_ID_ALREADY_IN_USE`, `DEVELOPER_TOKEN_INVALID`…) → rows (or requests) answered with it. */
  readonly conversion_errors: Record<string, number>
  /** Customer Match: audience requests, answers by status, members received / added / removed. */
  readonly audience_requests: number
  readonly audience_responses: Record<string, number>
  readonly audience_members_received: number
  readonly audience_members_ingested: number
  readonly audience_members_removed: number
}

/** A click conversion stored by the emulator (Google Ads API), in arrival order. */
export interface StoredConversion {
  readonly seq: number
  readonly received_at: number
  readonly customer_id: string
  readonly login_customer_id: string | null
  readonly api_version: string
  readonly job_id: string
  /** The `ClickConversion` exactly as received. */
  readonly conversion: Record<string, unknown>
}

/** One accepted audience request (`audienceMembers:ingest` / `:remove`), in arrival order (validate-only ones are not kept). */
export interface StoredAudienceRequest {
  readonly seq: number
  readonly received_at: number
  readonly request_id: string
  readonly op: "ingest" | "remove"
  readonly operating_account_id: string
  readonly user_list_id: string
  /** The `AudienceMember`s exactly as received. */
  readonly members: ReadonlyArray<Record<string, unknown>>
  /** `termsOfService.customerMatchTermsOfServiceStatus` (ingest), else null. */
  readonly terms_of_service: string | null
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
  /** Google Ads API: the developer token accepted in the `developer-token` header. */
  readonly developerToken: string
  /** Google Ads API: answer every upload `CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE` (403), as for new adopters. */
  readonly notAllowlisted: boolean
  /** Google Ads API: a registered click younger than this is `TOO_RECENT_EVENT` (Google: 6 h). */
  readonly minClickAgeHours: number
  /** Google Ads API: conversions per upload (Google: 2000). */
  readonly maxConversionsPerUpload: number
  /** Customer Match: the user lists that exist (any other id is answered 404 NOT_FOUND). */
  readonly userLists: ReadonlyArray<string>
  /** Customer Match: audience members per request (Google: 10,000). */
  readonly maxAudienceMembersPerRequest: number
}

/** The user lists the sandbox knows by default. */
export const DEFAULT_USER_LISTS: ReadonlyArray<string> = ["8000000001", "8000000002", "8000000003"]

export const defaultConfig: EmulatorConfig = {
  clients: [{
    clientId: "sandbox-google-client-id",
    clientSecret: "sandbox-google-client-secret",
    refreshToken: "sandbox-google-refresh-token"
  }],
  tokenTtlSeconds: 3599,
  processingPolls: 1,
  rateLimitPerMinute: 300,
  maxEventsPerRequest: 2000,
  developerToken: "sandbox-google-developer-token",
  notAllowlisted: false,
  minClickAgeHours: 6,
  maxConversionsPerUpload: 2000,
  userLists: DEFAULT_USER_LISTS,
  maxAudienceMembersPerRequest: 10_000
}

export interface Request {
  readonly method: string
  /** Path with query string. */
  readonly path: string
  readonly contentType: string | undefined
  readonly authorization: string | undefined
  /** Google Ads API headers. */
  readonly developerToken?: string | undefined
  readonly loginCustomerId?: string | undefined
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

/** Top-level fields of `IngestAudienceMembersRequest` and `RemoveAudienceMembersRequest` (JSON names). */
const INGEST_AUDIENCE_FIELDS: ReadonlySet<string> = new Set([
  "destinations",
  "audienceMembers",
  "consent",
  "validateOnly",
  "encoding",
  "encryptionInfo",
  "termsOfService"
])
const REMOVE_AUDIENCE_FIELDS: ReadonlySet<string> = new Set([
  "destinations",
  "audienceMembers",
  "validateOnly",
  "encoding",
  "encryptionInfo"
])
/** The `AudienceMember.data` one-of. */
const AUDIENCE_DATA_KINDS = ["userData", "pairData", "mobileData", "userIdData", "ppidData", "compositeData"] as const

/** Why a hashed value is refused in this encoding: `encoding` (not hex / base64 at all), `sha256` (not 32 bytes). */
const hashProblem = (v: unknown, encoding: string): "encoding" | "sha256" | undefined => {
  if (typeof v !== "string" || v === "") return "encoding"
  if (encoding === "BASE64") {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v) || v.length % 4 !== 0) return "encoding"
    return Buffer.from(v, "base64").length === 32 ? undefined : "sha256"
  }
  if (!/^[0-9a-fA-F]+$/.test(v) || v.length % 2 !== 0) return "encoding"
  return v.length === 64 ? undefined : "sha256"
}

/** The same identifier whatever its encoding: hashes as lowercase hex. */
const identifierKey = (id: Record<string, unknown>, encoding: string): string => {
  const hex = (v: unknown) =>
    encoding === "BASE64" ? Buffer.from(String(v), "base64").toString("hex") : String(v).toLowerCase()
  if (id.emailAddress !== undefined) return `email:${hex(id.emailAddress)}`
  if (id.phoneNumber !== undefined) return `phone:${hex(id.phoneNumber)}`
  const a = isObject(id.address) ? id.address : {}
  return `address:${hex(a.givenName)}|${hex(a.familyName)}|${String(a.regionCode)}|${String(a.postalCode)}`
}

/** A hashed value of the request's encoding: 64 hex characters (HEX) or 32 bytes in base64 (BASE64). */
const isHashed = (v: unknown, encoding: string): boolean => {
  if (typeof v !== "string") return false
  if (encoding === "BASE64") return /^[A-Za-z0-9+/]{43}=$/.test(v)
  return HEX_SHA256.test(v)
}

/** One `GoogleAdsError` as the REST API returns it. */
interface AdsRowError {
  readonly errorCode: Record<string, string>
  readonly message: string
  readonly trigger?: { readonly stringValue: string }
  readonly location?: {
    readonly fieldPathElements: ReadonlyArray<{ readonly fieldName: string; readonly index?: number }>
  }
  readonly details?: unknown
}

interface TrackedRequest {
  readonly kind: "events" | "audience_ingest" | "audience_remove"
  /** Audience requests: user identifiers in the request. */
  readonly userIdentifierCount: number
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
  private conversions: Array<StoredConversion> = []
  /** `customer|conversionAction|orderId` → stored. */
  private orderIds = new Set<string>()
  /** `customer|conversionAction|click id|conversionDateTime` → stored. */
  private clickKeys = new Set<string>()
  /** Click id → when the click happened (registered through `POST /__sandbox/clicks`). */
  private clicks = new Map<string, number>()
  private jobSeq = 0
  private audienceLog: Array<StoredAudienceRequest> = []
  private audienceSeq = 0
  /** User list id → identifier key → the `UserIdentifier` as received (insertion order = first added). */
  private memberships = new Map<string, Map<string, Record<string, unknown>>>()
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
      rejected: {} as Record<string, number>,
      upload_requests: 0,
      upload_responses: {} as Record<string, number>,
      conversions_received: 0,
      conversions_stored: 0,
      conversion_errors: {} as Record<string, number>,
      audience_requests: 0,
      audience_responses: {} as Record<string, number>,
      audience_members_received: 0,
      audience_members_ingested: 0,
      audience_members_removed: 0
    }
  }

  /**
   * Forgets events, memberships, tokens, request statuses, statistics and faults (the configuration, user lists
   * included, is kept).
   */
  reset(): void {
    this.tokens.clear()
    this.stored = []
    this.byKey.clear()
    this.requests.clear()
    this.recent = []
    this.seq = 0
    this.conversions = []
    this.orderIds.clear()
    this.clickKeys.clear()
    this.clicks.clear()
    this.jobSeq = 0
    this.audienceLog = []
    this.audienceSeq = 0
    this.memberships.clear()
    this.faults = undefined
    this.statusFault = undefined
    this.down = undefined
    this.delayMs = 0
    this.stats = Emulator.emptyStats()
  }

  events(): ReadonlyArray<StoredEvent> {
    return this.stored
  }

  /** The identifiers currently in a user list, in the order they were first added. */
  audienceMembers(userListId: string): ReadonlyArray<Record<string, unknown>> {
    return [...(this.memberships.get(userListId)?.values() ?? [])]
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
    if (path === "/v1/audienceMembers:ingest" || path === "/v1/audienceMembers:remove") {
      if (req.method !== "POST") return { reply: rpcError(404, "Method not found."), delayMs: 0 }
      const reply = this.audienceMembersRequest(req, path.endsWith(":ingest") ? "ingest" : "remove")
      const counts = this.stats.audience_responses
      counts[String(reply.status)] = (counts[String(reply.status)] ?? 0) + 1
      return { reply, delayMs: this.delayMs }
    }
    const upload = /^\/(v\d+)\/customers\/([^/:]+):uploadClickConversions$/.exec(path)
    if (upload !== null) {
      if (req.method !== "POST") return { reply: rpcError(404, "Method not found."), delayMs: 0 }
      const reply = this.uploadClickConversions(req, upload[1]!, upload[2]!)
      this.stats.upload_responses[String(reply.status)] = (this.stats.upload_responses[String(reply.status)] ?? 0) + 1
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
  private authenticate(req: Request, method = "IngestEvents"): Reply | undefined {
    const m = /^Bearer\s+(\S+)$/i.exec(req.authorization ?? "")
    const expiresAt = m === null ? undefined : this.tokens.get(m[1]!)
    if (expiresAt !== undefined && req.now < expiresAt) return undefined
    return rpcError(401, UNAUTHENTICATED_MESSAGE, [
      errorInfo(expiresAt === undefined ? "ACCESS_TOKEN_TYPE_UNSUPPORTED" : "ACCESS_TOKEN_EXPIRED", {
        service: DOMAIN,
        method: `google.ads.datamanager.v1.IngestionService.${method}`
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
    const limited = this.quota(req)
    if (limited !== undefined) {
      this.reject("rate limited", events.length)
      return limited
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
      kind: "events",
      userIdentifierCount: 0,
      polls: 0,
      destinations,
      recordCount: events.length,
      final: status?.requestStatus ?? "SUCCESS",
      errorCounts: status?.errorCounts ?? []
    })
    return json(200, { requestId })
  }

  /** The per-project request quota (shared by every Data Manager method): undefined, or the 429 answer. */
  private quota(req: Request): Reply | undefined {
    if (this.config.rateLimitPerMinute <= 0) return undefined
    this.recent = this.recent.filter((t) => req.now - t < 60_000)
    if (this.recent.length >= this.config.rateLimitPerMinute) {
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
    return undefined
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

  // -------------------------------------------------------------------------------------------------------------
  // Customer Match: audienceMembers:ingest and audienceMembers:remove

  private audienceMembersRequest(req: Request, op: "ingest" | "remove"): Reply {
    this.stats.audience_requests += 1
    const parsed = this.parse(req.body)
    const members = isObject(parsed) && Array.isArray(parsed.audienceMembers) ? parsed.audienceMembers : []
    this.stats.audience_members_received += members.length
    const unauthenticated = this.authenticate(req, op === "ingest" ? "IngestAudienceMembers" : "RemoveAudienceMembers")
    if (unauthenticated !== undefined) {
      this.reject("unauthenticated", 1)
      return unauthenticated
    }
    if (this.down !== undefined) {
      this.reject("unavailable", members.length)
      return rpcError(503, "The service is currently unavailable.", [], this.retryAfterHeader(this.down.retryAfter))
    }
    const limited = this.quota(req)
    if (limited !== undefined) {
      this.reject("rate limited", members.length)
      return limited
    }
    const fault = this.takeFault()
    if (fault !== undefined) {
      this.reject(`fault ${fault.status}`, members.length)
      if (fault.body !== undefined) return json(fault.status, fault.body, this.retryAfterHeader(fault.retryAfter))
      return rpcError(fault.status, "Injected fault.", [], this.retryAfterHeader(fault.retryAfter))
    }
    if (!isObject(parsed)) {
      this.reject("invalid JSON", 1)
      return rpcError(400, "Invalid JSON payload received.", [])
    }
    // Proto JSON parsing refuses fields the request message does not have (`consent` / `termsOfService` on remove).
    const known = op === "ingest" ? INGEST_AUDIENCE_FIELDS : REMOVE_AUDIENCE_FIELDS
    const unknown = Object.keys(parsed).find((k) => !known.has(k))
    if (unknown !== undefined) {
      this.reject("unknown field", 1)
      const message = `Invalid JSON payload received. Unknown name ${JSON.stringify(unknown)}: Cannot find field.`
      return rpcError(400, message, [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        fieldViolations: [{ description: message }]
      }])
    }
    const violations = this.validateAudience(parsed, op)
    if (violations.length > 0) {
      for (const v of violations) this.reject(v.reason, 1)
      return rpcError(400, "There was a problem with the request.", [
        errorInfo("INVALID_ARGUMENT"),
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: violations.map(({ description, field, reason }) => ({
            field,
            ...(description !== "" ? { description } : {}),
            reason
          }))
        }
      ])
    }
    const destinations = parsed.destinations as ReadonlyArray<Record<string, unknown>>
    for (const d of destinations) {
      const userListId = String(d.productDestinationId)
      if (!this.config.userLists.includes(userListId)) {
        this.reject("INVALID_USER_LIST_ID", members.length)
        const account = String((d.operatingAccount as Record<string, unknown>).accountId)
        return rpcError(404, `User list ${userListId} was not found in account ${account}.`, [
          errorInfo("INVALID_USER_LIST_ID", { user_list_id: userListId, operating_account_id: account })
        ])
      }
    }
    const requestId = randomUUID()
    if (parsed.validateOnly === true) {
      this.stats.validate_only_requests += 1
      return json(200, { requestId })
    }
    const encoding = parsed.encoding === "BASE64" ? "BASE64" : "HEX"
    const identifiersOf = (m: unknown) =>
      ((m as Record<string, unknown>).userData as Record<string, unknown>).userIdentifiers as ReadonlyArray<
        Record<string, unknown>
      >
    for (const d of destinations) {
      const userListId = String(d.productDestinationId)
      const list = this.memberships.get(userListId) ?? new Map<string, Record<string, unknown>>()
      this.memberships.set(userListId, list)
      for (const m of members) {
        for (const id of identifiersOf(m)) {
          const key = identifierKey(id, encoding)
          if (op === "ingest") {
            if (!list.has(key)) list.set(key, id)
          } else list.delete(key)
        }
      }
      if (op === "ingest") this.stats.audience_members_ingested += members.length
      else this.stats.audience_members_removed += members.length
      this.audienceLog.push({
        seq: ++this.audienceSeq,
        received_at: req.now,
        request_id: requestId,
        op,
        operating_account_id: String((d.operatingAccount as Record<string, unknown>).accountId),
        user_list_id: userListId,
        members: members as ReadonlyArray<Record<string, unknown>>,
        terms_of_service: op === "ingest"
          ? String((parsed.termsOfService as Record<string, unknown>).customerMatchTermsOfServiceStatus)
          : null
      })
    }
    const status = this.statusFault
    if (status !== undefined) {
      status.remaining -= 1
      if (status.remaining <= 0) this.statusFault = undefined
    }
    this.requests.set(requestId, {
      kind: op === "ingest" ? "audience_ingest" : "audience_remove",
      userIdentifierCount: members.reduce((n: number, m) => n + identifiersOf(m).length, 0),
      polls: 0,
      destinations,
      recordCount: members.length,
      final: status?.requestStatus ?? "SUCCESS",
      errorCounts: status?.errorCounts ?? []
    })
    return json(200, { requestId })
  }

  /**
   * Every violation of the audience request contract. Field paths are proto paths, as Google writes them
   * (`audience_members.audience_members[0].user_data.user_identifiers`), each with its `ErrorReason`.
   */
  private validateAudience(body: Record<string, unknown>, op: "ingest" | "remove"): ReadonlyArray<Violation> {
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
        for (const [which, name] of [["operatingAccount", "operating_account"], ["loginAccount", "login_account"]]) {
          const account = dest[which!]
          if (account === undefined && which === "loginAccount") continue
          const a = isObject(account) ? account : {}
          if (typeof a.accountId !== "string" || !/^\d{10}$/.test(a.accountId)) {
            add(`destinations[${i}].${name}.account_id`, "INVALID_FORMAT", "The account ID must be 10 digits.")
          }
          if (typeof a.accountType !== "string" || !ACCOUNT_TYPES.has(a.accountType)) {
            add(`destinations[${i}].${name}.account_type`, "INVALID_ENUM_VALUE", "Enum value cannot be used.")
          }
        }
        if (typeof dest.productDestinationId !== "string" || dest.productDestinationId === "") {
          add(`destinations[${i}].product_destination_id`, "REQUIRED_FIELD_MISSING", "Required field is missing.")
        } else if (!/^\d+$/.test(dest.productDestinationId)) {
          add(`destinations[${i}].product_destination_id`, "INVALID_USER_LIST_ID", "User list is not valid.")
        }
      })
    }
    if (op === "ingest") {
      const terms = isObject(body.termsOfService) ? body.termsOfService.customerMatchTermsOfServiceStatus : undefined
      if (terms !== "ACCEPTED") {
        add(
          "terms_of_service.customer_match_terms_of_service_status",
          "TERMS_AND_CONDITIONS_NOT_SIGNED",
          "Required terms and conditions are not accepted."
        )
      }
      if (body.consent !== undefined) this.validateConsent(body.consent, "consent", add)
    }
    const members = body.audienceMembers
    if (!Array.isArray(members) || members.length === 0) {
      add("audience_members", "REQUIRED_FIELD_MISSING", "At least one audience member is required.")
      return out
    }
    if (members.length > this.config.maxAudienceMembersPerRequest) {
      add(
        "audience_members",
        "TOO_MANY_AUDIENCE_MEMBERS",
        "Maximum number of audience members allowed per request is " +
          `${this.config.maxAudienceMembersPerRequest.toLocaleString("en-US")}.`
      )
      return out
    }
    const encoding = body.encoding
    if (encoding !== undefined && encoding !== "HEX" && encoding !== "BASE64") {
      add("encoding", "INVALID_ENUM_VALUE", "Enum value cannot be used.")
      return out
    }
    if (encoding === undefined) {
      add("encoding", "REQUIRED_FIELD_MISSING", "Encoding is required for user data uploads.")
      return out
    }
    members.forEach((raw: unknown, i) => {
      const at = `audience_members.audience_members[${i}]`
      if (!isObject(raw)) {
        add(at, "INVALID_AUDIENCE_MEMBER", "This audience member is not valid.")
        return
      }
      const kinds = AUDIENCE_DATA_KINDS.filter((k) => raw[k] !== undefined)
      if (kinds.length !== 1) {
        add(at, "INVALID_AUDIENCE_MEMBER", "Exactly one kind of identifying data must be set.")
        return
      }
      if (kinds[0] !== "userData") {
        add(at, "INVALID_AUDIENCE_MEMBER", `${kinds[0]} is not emulated by the sandbox (user data only).`)
        return
      }
      const ids = isObject(raw.userData) ? raw.userData.userIdentifiers : undefined
      const idsAt = `${at}.user_data.user_identifiers`
      if (!Array.isArray(ids) || ids.length === 0) {
        add(idsAt, "REQUIRED_FIELD_MISSING", "Required field is missing.")
      } else if (ids.length > 10) {
        add(idsAt, "TOO_MANY_USER_IDENTIFIERS", "Maximum number of user identifiers allowed per audience member is 10.")
      } else {
        for (const u of ids) {
          const id = isObject(u) ? u : {}
          const which = ["emailAddress", "phoneNumber", "address"].filter((k) => id[k] !== undefined)
          if (which.length !== 1) {
            add(idsAt, "INVALID_ARGUMENT", "Exactly one of email_address, phone_number and address must be set.")
            continue
          }
          const kind = which[0]!
          const hashedValues = kind === "address"
            ? [
              isObject(id.address) ? id.address.givenName : undefined,
              isObject(id.address) ? id.address.familyName : undefined
            ]
            : [id[kind]]
          const label = kind === "emailAddress" ? "Email" : kind === "phoneNumber" ? "Phone number" : "Name"
          for (const v of hashedValues) {
            const problem = hashProblem(v, encoding)
            // Google's documented answers: plain text is an encoding error; a hex value that is no SHA-256 digest
            // is INVALID_SHA256_FORMAT, reported on the member without a description.
            if (problem === "encoding") {
              add(
                idsAt,
                encoding === "HEX" ? "INVALID_HEX_ENCODING" : "INVALID_BASE64_ENCODING",
                `${label} is not ${encoding === "HEX" ? "hex" : "base64"} encoded.`
              )
            } else if (problem === "sha256") add(at, "INVALID_SHA256_FORMAT", "")
          }
          if (kind === "address") {
            const address = isObject(id.address) ? id.address : {}
            if (typeof address.regionCode !== "string" || !/^[A-Z]{2}$/.test(address.regionCode)) {
              add(`${idsAt}.address.region_code`, "INVALID_COUNTRY_CODE", "Country code is not valid.")
            }
            if (typeof address.postalCode !== "string" || address.postalCode.trim() === "") {
              add(`${idsAt}.address.postal_code`, "INVALID_POSTAL_CODE", "Postal code is not valid.")
            }
          }
        }
      }
      if (raw.consent !== undefined) this.validateConsent(raw.consent, `${at}.consent`, add)
    })
    return out
  }

  private validateConsent(
    consent: unknown,
    at: string,
    add: (field: string, reason: string, description: string) => void
  ): void {
    const c = isObject(consent) ? consent : {}
    for (const [k, name] of [["adUserData", "ad_user_data"], ["adPersonalization", "ad_personalization"]] as const) {
      if (c[k] !== undefined && (typeof c[k] !== "string" || !CONSENT_VALUES.has(c[k]))) {
        add(`${at}.${name}`, "INVALID_ENUM_VALUE", "Enum value cannot be used.")
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------------
  // Google Ads API: ConversionUploadService.UploadClickConversions

  private countError(code: string, n = 1) {
    this.stats.conversion_errors[code] = (this.stats.conversion_errors[code] ?? 0) + n
  }

  /** A request-level Google Ads API error: google.rpc Status with one `GoogleAdsFailure`. */
  private adsError(
    version: string,
    code: number,
    message: string,
    errors: ReadonlyArray<AdsRowError>,
    headers: Record<string, string> = {}
  ): Reply {
    for (const e of errors) this.countError(Object.values(e.errorCode)[0] ?? "UNKNOWN")
    return json(code, {
      error: {
        code,
        message,
        status: RPC_CODES[code] ?? "UNKNOWN",
        details: [{
          "@type": `type.googleapis.com/google.ads.googleads.${version}.errors.GoogleAdsFailure`,
          errors,
          requestId: randomBytes(11).toString("base64url")
        }]
      }
    }, headers)
  }

  private uploadClickConversions(req: Request, version: string, customerId: string): Reply {
    this.stats.upload_requests += 1
    const parsed = this.parse(req.body)
    const conversions = isObject(parsed) && Array.isArray(parsed.conversions) ? parsed.conversions : []
    this.stats.conversions_received += conversions.length
    const m = /^Bearer\s+(\S+)$/i.exec(req.authorization ?? "")
    const expiresAt = m === null ? undefined : this.tokens.get(m[1]!)
    if (expiresAt === undefined || req.now >= expiresAt) {
      return this.adsError(version, 401, UNAUTHENTICATED_MESSAGE, [{
        errorCode: { authenticationError: expiresAt === undefined ? "OAUTH_TOKEN_INVALID" : "OAUTH_TOKEN_EXPIRED" },
        message: "Oauth token is invalid or expired."
      }])
    }
    const developerToken = (req.developerToken ?? "").trim()
    if (developerToken === "") {
      return this.adsError(version, 401, "Request is missing required authentication credential.", [{
        errorCode: { authenticationError: "DEVELOPER_TOKEN_PARAMETER_MISSING" },
        message: "The developer token is missing."
      }])
    }
    if (developerToken !== this.config.developerToken) {
      // Google echoes the offending value back: clients must not log it.
      return this.adsError(version, 401, "The developer token is not valid.", [{
        errorCode: { authenticationError: "DEVELOPER_TOKEN_INVALID" },
        message: `The developer token is not valid: ${developerToken}`,
        trigger: { stringValue: developerToken }
      }])
    }
    if (!/^\d{10}$/.test(customerId)) {
      return this.adsError(version, 400, "Request contains an invalid argument.", [{
        errorCode: { requestError: "INVALID_CUSTOMER_ID" },
        message: `Invalid customer ID '${customerId}'.`
      }])
    }
    const login = req.loginCustomerId?.trim()
    if (login !== undefined && login !== "" && !/^\d{10}$/.test(login)) {
      return this.adsError(version, 403, "The caller does not have permission", [{
        errorCode: { authorizationError: "USER_PERMISSION_DENIED" },
        message: "User doesn't have permission to access customer. Note: If you're accessing a client customer, " +
          "the manager's customer id must be set in the 'login-customer-id' header."
      }])
    }
    if (this.config.notAllowlisted) {
      return this.adsError(version, 403, "The caller does not have permission", [{
        errorCode: { notAllowlistedError: "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" },
        message: "Customer is not allowlisted for accessing this feature."
      }])
    }
    if (this.down !== undefined) {
      return rpcError(503, "The service is currently unavailable.", [], this.retryAfterHeader(this.down.retryAfter))
    }
    if (this.config.rateLimitPerMinute > 0) {
      this.recent = this.recent.filter((t) => req.now - t < 60_000)
      if (this.recent.length >= this.config.rateLimitPerMinute) {
        const waitS = Math.max(1, Math.ceil((this.recent[0]! + 60_000 - req.now) / 1000))
        return this.adsError(version, 429, "Resource has been exhausted (e.g. check quota).", [{
          errorCode: { quotaError: "RESOURCE_EXHAUSTED" },
          message: "Too many requests. Retry in " + waitS + " seconds.",
          details: { quotaErrorDetails: { rateScope: "DEVELOPER", rateName: "Requests", retryDelay: `${waitS}s` } }
        }], { "retry-after": String(waitS) })
      }
      this.recent.push(req.now)
    }
    const fault = this.takeFault()
    if (fault !== undefined) {
      if (fault.body !== undefined) return json(fault.status, fault.body, this.retryAfterHeader(fault.retryAfter))
      return rpcError(fault.status, "Injected fault.", [], this.retryAfterHeader(fault.retryAfter))
    }
    if (!isObject(parsed)) {
      return this.adsError(version, 400, "Invalid JSON payload received.", [{
        errorCode: { requestError: "INVALID_INPUT" },
        message: "The request body is not a JSON object."
      }])
    }
    if (parsed.partialFailure !== true) {
      return this.adsError(version, 400, "Request contains an invalid argument.", [{
        errorCode: { requestError: "INVALID_INPUT" },
        message: "Partial failure mode is required for conversion uploads: set partial_failure to true.",
        location: { fieldPathElements: [{ fieldName: "partial_failure" }] }
      }])
    }
    if (conversions.length === 0) {
      return this.adsError(version, 400, "Request contains an invalid argument.", [{
        errorCode: { fieldError: "REQUIRED" },
        message: "The required field was not present.",
        location: { fieldPathElements: [{ fieldName: "conversions" }] }
      }])
    }
    if (conversions.length > this.config.maxConversionsPerUpload) {
      return this.adsError(version, 400, "Request contains an invalid argument.", [{
        errorCode: { conversionUploadError: "TOO_MANY_CONVERSIONS_IN_REQUEST" },
        message: `Upload fewer than ${this.config.maxConversionsPerUpload + 1} events in a single request.`,
        location: { fieldPathElements: [{ fieldName: "conversions" }] }
      }])
    }
    const validateOnly = parsed.validateOnly === true
    const jobId = String(++this.jobSeq + 2 ** 31)
    const rowErrors: Array<AdsRowError> = []
    const results: Array<Record<string, unknown>> = []
    const orderIdsInRequest = new Set<string>()
    conversions.forEach((raw: unknown, i) => {
      const errors = this.validateConversion(raw, i, customerId, req.now, orderIdsInRequest)
      if (errors.length > 0) {
        rowErrors.push(...errors)
        results.push({})
        return
      }
      const c = raw as Record<string, unknown>
      const click = (["gclid", "gbraid", "wbraid"] as const).find((k) => typeof c[k] === "string" && c[k] !== "")
      if (!validateOnly) {
        if (typeof c.orderId === "string" && c.orderId !== "") {
          this.orderIds.add(`${customerId}|${String(c.conversionAction)}|${c.orderId}`)
        }
        if (click !== undefined) {
          this.clickKeys.add(
            `${customerId}|${String(c.conversionAction)}|${String(c[click])}|${String(c.conversionDateTime)}`
          )
        }
        this.conversions.push({
          seq: ++this.seq,
          received_at: req.now,
          customer_id: customerId,
          login_customer_id: login !== undefined && login !== "" ? login : null,
          api_version: version,
          job_id: jobId,
          conversion: c
        })
        this.stats.conversions_stored += 1
      }
      results.push({
        ...(click !== undefined ? { [click]: c[click] } : {}),
        conversionAction: c.conversionAction,
        conversionDateTime: c.conversionDateTime
      })
    })
    for (const e of rowErrors) this.countError(Object.values(e.errorCode)[0] ?? "UNKNOWN")
    if (validateOnly) this.stats.validate_only_requests += 1
    return json(200, {
      ...(rowErrors.length > 0
        ? {
          partialFailureError: {
            code: 3,
            message: rowErrors.map((e) => e.message).join(", "),
            details: [{
              "@type": `type.googleapis.com/google.ads.googleads.${version}.errors.GoogleAdsFailure`,
              errors: rowErrors,
              requestId: randomBytes(11).toString("base64url")
            }]
          }
        }
        : {}),
      ...(validateOnly ? {} : { results }),
      jobId
    })
  }

  /** The row errors of one `ClickConversion` (empty: valid). */
  private validateConversion(
    raw: unknown,
    i: number,
    customerId: string,
    now: number,
    orderIdsInRequest: Set<string>
  ): ReadonlyArray<AdsRowError> {
    const out: Array<AdsRowError> = []
    const add = (kind: string, code: string, message: string, field?: string, index?: number) =>
      out.push({
        errorCode: { [kind]: code },
        message,
        location: {
          fieldPathElements: [
            { fieldName: "conversions", index: i },
            ...(field !== undefined ? [{ fieldName: field, ...(index !== undefined ? { index } : {}) }] : [])
          ]
        }
      })
    if (!isObject(raw)) {
      add("requestError", "INVALID_INPUT", "A conversion must be an object.")
      return out
    }
    const c = raw
    const present = (["gclid", "gbraid", "wbraid"] as const).filter((k) => c[k] !== undefined)
    const ids = Array.isArray(c.userIdentifiers) ? c.userIdentifiers : undefined
    if (present.includes("gbraid") && present.includes("wbraid")) {
      add("conversionUploadError", "GBRAID_WBRAID_BOTH_SET", "Both gbraid and wbraid are set; set only one.", "wbraid")
    } else if (present.length > 1) {
      add("fieldError", "VALUE_MUST_BE_UNSET", "Set only one of gclid, gbraid and wbraid.", present[1]!)
    } else if (present.length === 0 && (ids === undefined || ids.length === 0)) {
      add("fieldError", "REQUIRED", "A click id (gclid, gbraid or wbraid) or user identifiers are required.", "gclid")
    }
    for (const k of present) {
      if (typeof c[k] !== "string" || !/^[A-Za-z0-9_-]+$/.test(c[k])) {
        add("conversionUploadError", `UNPARSEABLE_${k.toUpperCase()}`, `The imported ${k} could not be decoded.`, k)
      }
    }
    const action = typeof c.conversionAction === "string" ? c.conversionAction : ""
    const am = /^customers\/(\d+)\/conversionActions\/(\d+)$/.exec(action)
    if (am === null) {
      add(
        "fieldError",
        c.conversionAction === undefined ? "REQUIRED" : "INVALID_VALUE",
        "The conversion action must be a resource name customers/{customer_id}/conversionActions/{id}.",
        "conversion_action"
      )
    } else if (am[1] !== customerId) {
      add(
        "conversionUploadError",
        "NO_CONVERSION_ACTION_FOUND",
        "The conversion action belongs to another customer.",
        "conversion_action"
      )
    }
    const dt = c.conversionDateTime
    const dm = typeof dt === "string"
      ? /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)([+-]\d{2}:\d{2})$/.exec(dt)
      : null
    const at = dm === null ? NaN : Date.parse(`${dm[1]}T${dm[2]}${dm[3]}`)
    if (Number.isNaN(at)) {
      add(
        "dateError",
        "INVALID_FIELD_VALUES_IN_DATE_TIME",
        "conversion_date_time must be yyyy-mm-dd hh:mm:ss+|-hh:mm (the timezone offset is required).",
        "conversion_date_time"
      )
    }
    if (c.conversionValue !== undefined) {
      if (typeof c.conversionValue !== "number" || !Number.isFinite(c.conversionValue) || c.conversionValue < 0) {
        add("fieldError", "INVALID_VALUE", "The conversion value must be a non-negative number.", "conversion_value")
      }
    }
    if (c.currencyCode !== undefined && (typeof c.currencyCode !== "string" || !CURRENCIES.has(c.currencyCode))) {
      add("currencyCodeError", "UNSUPPORTED", "The currency code is not supported.", "currency_code")
    }
    if (ids !== undefined) {
      if (ids.length > 5) {
        add("collectionSizeError", "TOO_MANY", "Too many user identifiers (at most 5).", "user_identifiers")
      } else {
        ids.forEach((u: unknown, j) => {
          const id = isObject(u) ? u : {}
          const kinds = ["hashedEmail", "hashedPhoneNumber"].filter((k) => id[k] !== undefined)
          const others = Object.keys(id).filter((k) => k !== "userIdentifierSource" && !kinds.includes(k))
          if (kinds.length !== 1 || others.length > 0 || !HEX_SHA256.test(String(id[kinds[0]!]))) {
            add(
              "conversionUploadError",
              "INVALID_USER_IDENTIFIER",
              "A user identifier must set exactly one of hashed_email and hashed_phone_number, SHA-256 hex.",
              "user_identifiers",
              j
            )
          }
        })
      }
    }
    if (c.consent !== undefined) {
      const consent = isObject(c.consent) ? c.consent : {}
      for (const k of ["adUserData", "adPersonalization"]) {
        if (consent[k] !== undefined && consent[k] !== "GRANTED" && consent[k] !== "DENIED") {
          add("fieldError", "INVALID_VALUE", `consent.${k} must be GRANTED or DENIED.`, "consent")
        }
      }
    }
    if (out.length > 0) return out
    // Dedup: order ids per conversion action, then the same click + conversion action + date-time.
    if (typeof c.orderId === "string" && c.orderId !== "") {
      const key = `${customerId}|${action}|${c.orderId}`
      if (orderIdsInRequest.has(key)) {
        add("conversionUploadError", "DUPLICATE_ORDER_ID", "The order ID is used twice in this request.", "order_id")
        return out
      }
      orderIdsInRequest.add(key)
      if (this.orderIds.has(key)) {
        add(
          "conversionUploadError",
          "ORDER_ID_ALREADY_IN_USE",
          "The order ID was already used for a conversion of this conversion action.",
          "order_id"
        )
        return out
      }
    }
    const click = present[0]
    if (click !== undefined) {
      const value = String(c[click])
      if (this.clickKeys.has(`${customerId}|${action}|${value}|${String(dt)}`)) {
        add(
          "conversionUploadError",
          "CLICK_CONVERSION_ALREADY_EXISTS",
          "The imported event has the same click and conversion_date_time as an existing conversion.",
          click
        )
        return out
      }
      // Click-age checks, for clicks registered through POST /__sandbox/clicks.
      const clickAt = this.clicks.get(value)
      if (clickAt !== undefined) {
        if (at < clickAt) {
          add(
            "conversionUploadError",
            "CONVERSION_PRECEDES_EVENT",
            "The conversion_date_time precedes the click.",
            "conversion_date_time"
          )
        } else if (at - clickAt > 90 * 86_400_000) {
          add("conversionUploadError", "EXPIRED_EVENT", "The click occurred before the click-through window.", click)
        } else if (now - clickAt < this.config.minClickAgeHours * 3_600_000) {
          add(
            "conversionUploadError",
            "TOO_RECENT_EVENT",
            `The click occurred less than ${this.config.minClickAgeHours} hours ago; import it later.`,
            click
          )
        }
      }
    }
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
        ...this.statusOfKind(tracked),
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

  /** The status field of the request's kind (`eventsIngestionStatus`, or the audience ingestion / removal status). */
  private statusOfKind(tracked: TrackedRequest): Record<string, unknown> {
    const counts = {
      recordCount: String(tracked.recordCount),
      userIdentifierCount: String(tracked.userIdentifierCount)
    }
    switch (tracked.kind) {
      case "audience_ingest":
        return { audienceMembersIngestionStatus: { userDataIngestionStatus: counts } }
      case "audience_remove":
        return { audienceMembersRemovalStatus: { userDataRemovalStatus: counts } }
      default:
        return { eventsIngestionStatus: { recordCount: String(tracked.recordCount) } }
    }
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
    const list = /^\/__sandbox\/audiences\/([^/]+)$/.exec(path)
    if (list !== null && req.method === "GET") {
      const userListId = decodeURIComponent(list[1]!)
      if (!this.config.userLists.includes(userListId)) {
        return rpcError(404, `User list ${userListId} was not found.`)
      }
      return json(200, { user_list_id: userListId, identifiers: this.audienceMembers(userListId) })
    }
    switch (`${req.method} ${path}`) {
      case "GET /__sandbox/events":
        return json(200, { events: this.stored })
      case "DELETE /__sandbox/events":
        this.reset()
        return json(200, { ok: true })
      case "GET /__sandbox/stats":
        return json(200, this.stats)
      case "GET /__sandbox/conversions":
        return json(200, { conversions: this.conversions })
      case "GET /__sandbox/audiences":
        return json(200, {
          user_lists: this.config.userLists.map((id) => ({
            user_list_id: id,
            identifiers: this.memberships.get(id)?.size ?? 0
          }))
        })
      case "GET /__sandbox/audience-requests":
        return json(200, { requests: this.audienceLog })
      case "POST /__sandbox/user-lists": {
        // `{ "ids": ["123", …] }`: these user lists exist from now on (kept across resets, like the config).
        const body = this.parse(req.body)
        const ids = isObject(body) && Array.isArray(body.ids) ? body.ids : undefined
        if (ids === undefined || !ids.every((id) => typeof id === "string" && /^\d{1,19}$/.test(id))) {
          return json(400, { error: "expected { \"ids\": [\"<user list id, digits>\", …] }" })
        }
        this.config = { ...this.config, userLists: [...new Set([...this.config.userLists, ...(ids as Array<string>)])] }
        return json(200, { user_lists: this.config.userLists })
      }
      case "POST /__sandbox/clicks": {
        // `{ "<click id>": <epoch ms of the click> }`: enables the click-age checks for those clicks.
        const body = this.parse(req.body)
        if (!isObject(body) || !Object.values(body).every((v) => typeof v === "number" && Number.isFinite(v))) {
          return json(400, { error: "expected a JSON object of click id → epoch ms" })
        }
        for (const [k, v] of Object.entries(body)) this.clicks.set(k, v as number)
        return json(200, { clicks: this.clicks.size })
      }
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
          uploadClickConversions: "POST /v{N}/customers/{customerId}:uploadClickConversions",
          status: "GET /v1/requestStatus:retrieve?requestId=…",
          audienceIngest: "POST /v1/audienceMembers:ingest",
          audienceRemove: "POST /v1/audienceMembers:remove",
          control: [
            "GET /__sandbox/events",
            "DELETE /__sandbox/events",
            "GET /__sandbox/stats",
            "GET /__sandbox/conversions",
            "GET /__sandbox/audiences",
            "GET /__sandbox/audiences/{userListId}",
            "GET /__sandbox/audience-requests",
            "POST /__sandbox/user-lists",
            "POST /__sandbox/clicks",
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
    if (typeof body.developerToken === "string" && body.developerToken !== "") {
      next.developerToken = body.developerToken
    }
    if (typeof body.notAllowlisted === "boolean") next.notAllowlisted = body.notAllowlisted
    if (positive(body.minClickAgeHours)) next.minClickAgeHours = body.minClickAgeHours as number
    if (positive(body.maxConversionsPerUpload)) {
      next.maxConversionsPerUpload = Math.floor(body.maxConversionsPerUpload as number)
    }
    if (positive(body.maxAudienceMembersPerRequest)) {
      next.maxAudienceMembersPerRequest = Math.floor(body.maxAudienceMembersPerRequest as number)
    }
    if (
      Array.isArray(body.userLists) && body.userLists.every((id) => typeof id === "string" && /^\d{1,19}$/.test(id))
    ) {
      next.userLists = body.userLists as Array<string>
    }
    if (
      Array.isArray(body.clients) &&
      body.clients.every((c) =>
        isObject(c) && typeof c.clientId === "string" && typeof c.clientSecret === "string" &&
        typeof c.refreshToken === "string"
      )
    ) next.clients = body.clients as Array<OAuthClient>
    this.config = next
    const { clients, developerToken: _developerToken, ...visible } = next
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
