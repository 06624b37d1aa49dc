/**
 * HubSpot's contacts batch upsert (`POST /crm/v3/objects/contacts/batch/upsert`), the GDPR delete of a contact
 * (`POST /crm/v3/objects/contacts/gdpr-delete`) and custom behavioural events
 * (`POST /events/v3/send`, `POST /events/v3/send/batch`), emulated in memory as HubSpot documents them: private-app
 * bearer tokens, per-row property validation with multi-status (207) answers when every input carries an
 * `objectWriteTraceId` (else the whole request is refused), event definitions, `uuid` dedup, and both rate limits
 * (the rolling ten-second window and the daily limit that resets at midnight in the account's time zone) with
 * HubSpot's `X-HubSpot-RateLimit-*` headers and 429 bodies. Transport-free (the sandbox wraps it in `node:http`) and
 * written independently of the plugin, so a plugin bug is not mirrored here.
 */

/** A contact property definition. */
export interface PropertyDefinition {
  readonly name: string
  /** `string` (text), `number`, `date` (midnight UTC), `datetime`, `enumeration` (options), `bool` (checkbox). */
  readonly type: "string" | "number" | "date" | "datetime" | "enumeration" | "bool"
  readonly options?: ReadonlyArray<string>
  readonly readOnly?: boolean
  readonly unique?: boolean
}

/** A contact as stored, with every property value HubSpot holds for it. */
export interface StoredContact {
  readonly id: string
  readonly email: string
  readonly properties: Record<string, string>
  readonly createdAt: string
  readonly updatedAt: string
}

/** A behavioural event occurrence as stored, in arrival order. */
export interface StoredEvent {
  readonly seq: number
  readonly received_at: number
  readonly eventName: string
  readonly uuid: string | null
  /** The occurrence exactly as received. */
  readonly occurrence: Record<string, unknown>
}

/** One GDPR delete request as received (`GET /__sandbox/gdpr-deletions`). */
export interface GdprDeletion {
  readonly objectId: string
  /** `email`, or null when `objectId` is the contact id. */
  readonly idProperty: string | null
  /** The id of the contact that was permanently deleted, or null when none matched. */
  readonly deletedContactId: string | null
  /** An email no contact had is blocklisted (HubSpot: "preventing the email from being used in the future"). */
  readonly blocklisted: boolean
  readonly received_at: number
}

export interface Stats {
  /** API requests (control endpoints not included). */
  readonly requests: number
  /** HTTP status → count of API answers with it. */
  readonly responses: Record<string, number>
  readonly contacts_created: number
  readonly contacts_updated: number
  /** Error code → contact rows refused for it. */
  readonly rows_rejected: Record<string, number>
  readonly events_received: number
  readonly events_stored: number
  /** Occurrences accepted (204) but not stored: their uuid was seen for that event within a year. */
  readonly duplicates: number
  /** Reason → occurrences refused for it. */
  readonly events_rejected: Record<string, number>
  /** policyName → 429 answers. */
  readonly rate_limited: Record<string, number>
}

/** Fault injection (`POST /__sandbox/faults`). */
export interface Faults {
  /** Which API the fault applies to (default `any`). */
  readonly target?: "contacts" | "events" | "any"
  /** The next `count` requests to `target` answer this status. */
  readonly status?: number
  readonly count?: number
  /** Let this many requests through before the fault starts. */
  readonly skip?: number
  /** `Retry-After` header on those answers. */
  readonly retryAfter?: number | string
  /** Answer this JSON body instead of the default one for `status`. */
  readonly body?: unknown
  /** Leave the `X-HubSpot-RateLimit-*` headers out of those answers (as a gateway in front of HubSpot would). */
  readonly omitRateLimitHeaders?: boolean
  /** While true every API request gets 503. */
  readonly down?: boolean
  /** Delay every answer by this many ms. */
  readonly delayMs?: number
  /** Use up the daily limit: every request gets the DAILY 429 until `dailyResetAt` (default: the next midnight). */
  readonly exhaustDaily?: boolean
  /** Epoch ms when the exhausted daily limit resets. */
  readonly dailyResetAt?: number
}

/** Runtime configuration (`POST /__sandbox/config`). */
export interface EmulatorConfig {
  /** Private app tokens the API accepts. */
  readonly accessTokens: ReadonlyArray<string>
  /** The account id (Hub ID): event names are `pe<portalId>_<name>`. */
  readonly portalId: string
  /** Short names of the defined behavioural events. */
  readonly eventDefinitions: ReadonlyArray<string>
  readonly contactProperties: ReadonlyArray<PropertyDefinition>
  /** Requests per rolling window (HubSpot: 100 per 10 s on Free/Starter, 190 on Professional/Enterprise). */
  readonly tenSecondlyMax: number
  readonly intervalMs: number
  /** Requests per day (HubSpot: 250,000 on Free/Starter); resets at midnight in `timeZone`. 0 disables. */
  readonly dailyLimit: number
  /** The account's time zone. */
  readonly timeZone: string
  /** Most inputs per contacts batch (HubSpot: 100). */
  readonly maxBatchInputs: number
  /** Most occurrences per events batch. */
  readonly maxEventInputs: number
}

const LIFECYCLE_STAGES = [
  "subscriber",
  "lead",
  "marketingqualifiedlead",
  "salesqualifiedlead",
  "opportunity",
  "customer",
  "evangelist",
  "other"
]

export const defaultConfig: EmulatorConfig = {
  accessTokens: ["pat-na1-sandbox"],
  portalId: "5550001",
  eventDefinitions: ["qualified_lead", "purchase", "start_trial", "sign_up", "subscription_renewed"],
  contactProperties: [
    { name: "email", type: "string", unique: true },
    { name: "firstname", type: "string" },
    { name: "lastname", type: "string" },
    { name: "company", type: "string" },
    { name: "country", type: "string" },
    { name: "lifecyclestage", type: "enumeration", options: LIFECYCLE_STAGES },
    { name: "tl_plan", type: "string" },
    { name: "tl_lifecycle_stage", type: "string" },
    { name: "tl_workspace_size", type: "number" },
    { name: "tl_acquisition_channel", type: "string" },
    { name: "tl_last_paid_at", type: "date" },
    { name: "tl_power_users", type: "bool" },
    { name: "tl_churn_risk", type: "bool" },
    { name: "hs_object_id", type: "number", readOnly: true, unique: true },
    { name: "createdate", type: "datetime", readOnly: true },
    { name: "lastmodifieddate", type: "datetime", readOnly: true }
  ],
  tenSecondlyMax: 100,
  intervalMs: 10_000,
  dailyLimit: 250_000,
  timeZone: "America/New_York",
  maxBatchInputs: 100,
  maxEventInputs: 500
}

export interface Request {
  readonly method: string
  /** Path with query string. */
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
  headers: { "content-type": "application/json;charset=utf-8", ...headers },
  body: JSON.stringify(body)
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const EMAIL = /^[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const EVENT_NAME = /^pe(\d+)_([a-z][a-z0-9_]*)$/
const PROPERTY_NAME = /^[a-z][a-z0-9_]*$/
const YEAR_MS = 365 * 86_400_000

/** The calendar day of `t` in `timeZone`, as `YYYY-MM-DD`. */
const dayKey = (t: number, timeZone: string): string =>
  new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date(t))

/** The first instant after `t` that belongs to the next calendar day in `timeZone` (to the second). */
export const nextDayStart = (t: number, timeZone: string): number => {
  const today = dayKey(t, timeZone)
  // Walk forward in quarter hours to the first instant of another day, then narrow down to the second.
  let lo = Math.floor(t / 1000) * 1000
  let hi = lo + 15 * 60_000
  while (dayKey(hi, timeZone) === today) {
    lo = hi
    hi += 15 * 60_000
  }
  while (hi - lo > 1000) {
    const mid = lo + Math.floor((hi - lo) / 2000) * 1000
    if (dayKey(mid, timeZone) === today) lo = mid
    else hi = mid
  }
  return hi
}

interface Fault {
  readonly target: "contacts" | "events" | "any"
  readonly status: number
  remaining: number
  skip: number
  readonly retryAfter?: number | string
  readonly body?: unknown
  readonly omitRateLimitHeaders?: boolean
}

interface RowError {
  readonly code: string
  readonly message: string
  readonly name: string
}

const emptyStats = (): Stats => ({
  requests: 0,
  responses: {},
  contacts_created: 0,
  contacts_updated: 0,
  rows_rejected: {},
  events_received: 0,
  events_stored: 0,
  duplicates: 0,
  events_rejected: {},
  rate_limited: {}
})

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

export class Emulator {
  config: EmulatorConfig
  private contacts = new Map<
    string,
    { id: string; properties: Record<string, string>; createdAt: number; updatedAt: number }
  >()
  private stored: Array<StoredEvent> = []
  private gdprDeletions: Array<GdprDeletion> = []
  private blocklist = new Set<string>()
  private seen = new Map<string, number>()
  private stats: Mutable<Stats> = emptyStats()
  private window: Array<number> = []
  private day: { key: string; count: number } = { key: "", count: 0 }
  private dailyExhaustedUntil: number | undefined
  private faults: Fault | undefined
  private down: { readonly retryAfter?: number | string } | undefined
  private nextId = 1001
  private correlation = 0
  delayMs = 0

  constructor(config: Partial<EmulatorConfig> = {}) {
    this.config = { ...defaultConfig, ...config }
  }

  /** Routes one request; `delayMs` is how long the transport should wait before answering. */
  handle(req: Request): { readonly delayMs: number; readonly reply: Reply } {
    const path = req.path.split("?")[0] ?? "/"
    let reply: Reply
    if (path.startsWith("/__sandbox") || (path === "/" && req.method === "GET")) {
      return { delayMs: 0, reply: this.control(req, path) }
    }
    if (path === "/crm/v3/objects/contacts/batch/upsert") reply = this.count(this.api(req, "contacts"))
    else if (path === "/crm/v3/objects/contacts/gdpr-delete") reply = this.count(this.api(req, "gdpr"))
    else if (path === "/events/v3/send/batch" || path === "/events/v3/send") reply = this.count(this.api(req, "events"))
    else {
      reply = this.count(
        json(
          404,
          this.error("OBJECT_NOT_FOUND", `No resource found at ${req.method} ${path}`),
          this.rateHeaders(req.now)
        )
      )
    }
    return { delayMs: this.delayMs, reply }
  }

  reset(): void {
    this.contacts.clear()
    this.stored = []
    this.gdprDeletions = []
    this.blocklist.clear()
    this.seen.clear()
    this.stats = emptyStats()
    this.window = []
    this.day = { key: "", count: 0 }
    this.dailyExhaustedUntil = undefined
    this.faults = undefined
    this.down = undefined
    this.delayMs = 0
    this.nextId = 1001
  }

  private count(reply: Reply): Reply {
    this.stats.requests += 1
    this.stats.responses[String(reply.status)] = (this.stats.responses[String(reply.status)] ?? 0) + 1
    return reply
  }

  private bump(map: Record<string, number>, key: string, n = 1) {
    if (n > 0) map[key] = (map[key] ?? 0) + n
  }

  private correlationId(): string {
    this.correlation += 1
    return `5a1d0000-0000-4000-8000-${String(this.correlation).padStart(12, "0")}`
  }

  /** HubSpot's error body. */
  private error(category: string, message: string, extra: Record<string, unknown> = {}) {
    return { status: "error", message, correlationId: this.correlationId(), category, ...extra }
  }

  private parse(body: Uint8Array): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(body))
    } catch {
      return undefined
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Rate limits

  private dailyUsed(now: number): number {
    const key = dayKey(now, this.config.timeZone)
    if (this.day.key !== key) this.day = { key, count: 0 }
    return this.day.count
  }

  private rateHeaders(now: number): Record<string, string> {
    this.window = this.window.filter((t) => t > now - this.config.intervalMs)
    const exhausted = this.dailyExhaustedUntil !== undefined && now < this.dailyExhaustedUntil
    const dailyRemaining = exhausted ? 0 : Math.max(0, this.config.dailyLimit - this.dailyUsed(now))
    return {
      "x-hubspot-ratelimit-daily": String(this.config.dailyLimit),
      "x-hubspot-ratelimit-daily-remaining": String(dailyRemaining),
      "x-hubspot-ratelimit-interval-milliseconds": String(this.config.intervalMs),
      "x-hubspot-ratelimit-max": String(this.config.tenSecondlyMax),
      "x-hubspot-ratelimit-remaining": String(Math.max(0, this.config.tenSecondlyMax - this.window.length))
    }
  }

  /** The 429 for this request, or undefined (and the request is counted against both limits). */
  private throttle(now: number): Reply | undefined {
    if (this.dailyExhaustedUntil !== undefined && now >= this.dailyExhaustedUntil) this.dailyExhaustedUntil = undefined
    const dailyOver = this.dailyExhaustedUntil !== undefined ||
      (this.config.dailyLimit > 0 && this.dailyUsed(now) >= this.config.dailyLimit)
    if (dailyOver) {
      this.bump(this.stats.rate_limited, "DAILY")
      return json(
        429,
        this.error("RATE_LIMITS", "You have reached your daily limit.", {
          errorType: "RATE_LIMIT",
          policyName: "DAILY"
        }),
        this.rateHeaders(now)
      )
    }
    this.window = this.window.filter((t) => t > now - this.config.intervalMs)
    if (this.config.tenSecondlyMax > 0 && this.window.length >= this.config.tenSecondlyMax) {
      this.bump(this.stats.rate_limited, "TEN_SECONDLY_ROLLING")
      return json(
        429,
        this.error("RATE_LIMITS", "You have reached your ten_secondly_rolling limit.", {
          errorType: "RATE_LIMIT",
          policyName: "TEN_SECONDLY_ROLLING"
        }),
        this.rateHeaders(now)
      )
    }
    this.window.push(now)
    this.dailyUsed(now)
    this.day.count += 1
    return undefined
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Faults

  private takeFault(target: "contacts" | "events"): Fault | undefined {
    const f = this.faults
    if (f === undefined || (f.target !== "any" && f.target !== target)) return undefined
    if (f.skip > 0) {
      f.skip -= 1
      return undefined
    }
    f.remaining -= 1
    if (f.remaining <= 0) this.faults = undefined
    return f
  }

  private faultReply(f: Fault, now: number): Reply {
    const headers = {
      ...(f.omitRateLimitHeaders === true ? {} : this.rateHeaders(now)),
      ...(f.retryAfter !== undefined ? { "retry-after": String(f.retryAfter) } : {})
    }
    if (f.body !== undefined) return json(f.status, f.body, headers)
    if (f.status === 502) {
      return { status: 502, headers: { "content-type": "text/html", ...headers }, body: "<html>502 Bad Gateway</html>" }
    }
    if (f.status === 429) {
      return json(
        429,
        this.error("RATE_LIMITS", "You have reached your ten_secondly_rolling limit.", {
          errorType: "RATE_LIMIT",
          policyName: "TEN_SECONDLY_ROLLING"
        }),
        headers
      )
    }
    if (f.status === 401) return json(401, this.authError(), headers)
    if (f.status === 403) {
      return json(
        403,
        this.error(
          "MISSING_SCOPES",
          "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
          {
            errors: [{
              message: "One or more of the following scopes are required.",
              context: { requiredGranularScopes: ["crm.objects.contacts.write"] }
            }]
          }
        ),
        headers
      )
    }
    return json(f.status, this.error("INTERNAL_ERROR", `Injected fault ${f.status}`), headers)
  }

  private authError() {
    return this.error(
      "INVALID_AUTHENTICATION",
      "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
    )
  }

  // ---------------------------------------------------------------------------------------------------------------
  // API

  private api(req: Request, api: "contacts" | "gdpr" | "events"): Reply {
    // The GDPR delete is a contacts API: faults aimed at contacts apply to it too.
    const target = api === "events" ? "events" : "contacts"
    const parsed = this.parse(req.body)
    const rows = isObject(parsed) && Array.isArray(parsed.inputs) ? parsed.inputs.length : isObject(parsed) ? 1 : 0
    if (target === "events") this.stats.events_received += rows
    const refuse = (reason: string, reply: Reply) => {
      if (target === "events") this.bump(this.stats.events_rejected, reason, rows)
      else this.bump(this.stats.rows_rejected, reason, rows)
      return reply
    }
    if (this.down !== undefined) {
      return refuse(
        "service unavailable",
        json(
          503,
          this.error("SERVICE_UNAVAILABLE", "Service Unavailable"),
          this.down.retryAfter !== undefined ? { "retry-after": String(this.down.retryAfter) } : {}
        )
      )
    }
    if (req.method !== "POST") {
      return refuse("method", json(405, this.error("VALIDATION_ERROR", `${req.method} not allowed`)))
    }
    // Authentication first: no rate-limit headers for an unknown caller.
    const bearer = /^Bearer\s+(\S+)$/.exec((req.headers["authorization"] ?? "").trim())
    if (bearer === null || !this.config.accessTokens.includes(bearer[1]!)) {
      return refuse("authentication", json(401, this.authError()))
    }
    const fault = this.takeFault(target)
    if (fault !== undefined) return refuse(`fault ${fault.status}`, this.faultReply(fault, req.now))
    const throttled = this.throttle(req.now)
    if (throttled !== undefined) return refuse("rate limited", throttled)
    const headers = this.rateHeaders(req.now)
    if (!/^application\/json\b/i.test((req.headers["content-type"] ?? "").trim())) {
      return refuse(
        "content-type",
        json(415, this.error("VALIDATION_ERROR", "Unsupported Media Type: use application/json"), headers)
      )
    }
    if (parsed === undefined) {
      return refuse("invalid json", json(400, this.error("VALIDATION_ERROR", "Invalid input JSON"), headers))
    }
    if (api === "gdpr") return this.gdprDelete(req, parsed, headers, refuse)
    if (target === "contacts") return this.upsert(req, parsed, headers, refuse)
    const path = req.path.split("?")[0]
    return path === "/events/v3/send" ?
      this.sendEvents([parsed], false, req.now, headers, refuse) :
      isObject(parsed) && Array.isArray(parsed.inputs) && parsed.inputs.length > 0 ?
      this.sendEvents(parsed.inputs, true, req.now, headers, refuse) :
      refuse(
        "no inputs",
        json(
          400,
          this.error("VALIDATION_ERROR", "Invalid input JSON: inputs must be a non-empty array", {
            context: { inputs: ["This property is required"] }
          }),
          headers
        )
      )
  }

  // Contacts

  private property(name: string): PropertyDefinition | undefined {
    return this.config.contactProperties.find((p) => p.name === name)
  }

  /** Why a property value is refused (HubSpot's error codes), or undefined. */
  private checkValue(def: PropertyDefinition, raw: unknown): RowError | undefined {
    const bad = (code: string, message: string): RowError => ({ code, message, name: def.name })
    if (typeof raw !== "string" && typeof raw !== "number" && typeof raw !== "boolean") {
      return bad("INVALID_VALUE", `${JSON.stringify(raw)} is not a valid value for ${def.name}`)
    }
    const value = String(raw)
    if (def.readOnly === true) {
      return bad("READ_ONLY_VALUE", `${def.name} is a read only property; its value cannot be set.`)
    }
    if (value === "") return undefined
    switch (def.type) {
      case "number":
        return /^-?\d+(\.\d+)?$/.test(value) ? undefined : bad("INVALID_INTEGER", `${value} is not a valid number.`)
      case "date": {
        let ms: number
        if (/^\d+$/.test(value)) ms = Number(value)
        else if (/^\d{4}-\d{2}-\d{2}$/.test(value)) ms = Date.parse(`${value}T00:00:00Z`)
        else return bad("INVALID_DATE", `${value} is not a valid date`)
        if (Number.isNaN(ms)) return bad("INVALID_DATE", `${value} is not a valid date`)
        const d = new Date(ms)
        if (
          d.getUTCHours() !== 0 || d.getUTCMinutes() !== 0 || d.getUTCSeconds() !== 0 || d.getUTCMilliseconds() !== 0
        ) {
          return bad(
            "INVALID_DATE",
            `${value} is at ${d.getUTCHours()}:${d.getUTCMinutes()}:${d.getUTCSeconds()}.${d.getUTCMilliseconds()} UTC, not midnight!`
          )
        }
        return undefined
      }
      case "datetime":
        return /^\d+$/.test(value) || !Number.isNaN(Date.parse(value)) ?
          undefined :
          bad("INVALID_DATETIME", `${value} is not a valid datetime`)
      case "enumeration":
        return (def.options ?? []).includes(value) ?
          undefined :
          bad("INVALID_OPTION", `${value} was not one of the allowed options: [${(def.options ?? []).join(", ")}]`)
      case "bool":
        return value === "true" || value === "false" ?
          undefined :
          bad("INVALID_OPTION", `${value} was not one of the allowed options: [true, false]`)
      case "string":
        if (def.name === "email" && !EMAIL.test(value)) return bad("INVALID_EMAIL", `Email address ${value} is invalid`)
        return undefined
    }
  }

  /** Every problem of one input (empty when valid). */
  private checkInput(input: Record<string, unknown>): ReadonlyArray<RowError> {
    const problems: Array<RowError> = []
    const email = String(input.id)
    if (!EMAIL.test(email)) {
      problems.push({ code: "INVALID_EMAIL", message: `Email address ${email} is invalid`, name: "email" })
    }
    const properties = isObject(input.properties) ? input.properties : {}
    for (const [name, value] of Object.entries(properties)) {
      const def = this.property(name)
      if (def === undefined) {
        problems.push({ code: "PROPERTY_DOESNT_EXIST", message: `Property "${name}" does not exist`, name })
        continue
      }
      const problem = this.checkValue(def, value)
      if (problem !== undefined) problems.push(problem)
    }
    return problems
  }

  private propertyErrorMessage(problems: ReadonlyArray<RowError>): string {
    return `Property values were not valid: ${
      JSON.stringify(problems.map((p) => ({
        isValid: false,
        message: p.message,
        error: p.code,
        name: p.name,
        localizedErrorMessage: p.message
      })))
    }`
  }

  private upsert(
    req: Request,
    parsed: unknown,
    headers: Record<string, string>,
    refuse: (reason: string, reply: Reply) => Reply
  ): Reply {
    const invalid = (reason: string, message: string, extra: Record<string, unknown> = {}) =>
      refuse(reason, json(400, this.error("VALIDATION_ERROR", message, extra), headers))
    if (!isObject(parsed) || !Array.isArray(parsed.inputs) || parsed.inputs.length === 0) {
      return invalid("no inputs", "Invalid input JSON: inputs must be a non-empty array")
    }
    const inputs = parsed.inputs
    if (inputs.length > this.config.maxBatchInputs) {
      return invalid(
        "batch too large",
        `Batch input too large: ${inputs.length} inputs, the limit is ${this.config.maxBatchInputs}`
      )
    }
    const query = new URLSearchParams(req.path.includes("?") ? req.path.slice(req.path.indexOf("?") + 1) : "")
    for (const [i, input] of inputs.entries()) {
      if (!isObject(input) || typeof input.id !== "string" || input.id === "" || !isObject(input.properties)) {
        return invalid("invalid input", `Invalid input JSON: inputs[${i}] needs an id string and a properties object`)
      }
      const idProperty = typeof input.idProperty === "string" ? input.idProperty : query.get("idProperty")
      if (idProperty === null || idProperty === undefined) {
        return invalid("no idProperty", `inputs[${i}]: idProperty is required to upsert by a unique property value`)
      }
      const def = this.property(idProperty)
      if (def === undefined || def.unique !== true || idProperty !== "email") {
        return invalid(
          "invalid idProperty",
          `inputs[${i}]: ${idProperty} is not a unique property of contacts usable as idProperty (use email)`
        )
      }
    }
    const ids = inputs.map((input) => String((input as Record<string, unknown>).id).toLowerCase())
    const duplicates = [...new Set(ids.filter((id, i) => ids.indexOf(id) !== i))]
    if (duplicates.length > 0) {
      return invalid(
        "duplicate ids",
        `Duplicate IDs found in batch input: [${duplicates.join(", ")}]. IDs must be unique`
      )
    }
    const traceIds = inputs.map((input) => (input as Record<string, unknown>).objectWriteTraceId)
    const multiStatus = traceIds.every((t) => typeof t === "string" && t !== "")
    const checks = inputs.map((input) => this.checkInput(input as Record<string, unknown>))
    const failing = checks.filter((p) => p.length > 0)
    if (failing.length > 0 && !multiStatus) {
      // Without objectWriteTraceIds the batch is all or nothing.
      for (const p of failing) this.bump(this.stats.rows_rejected, p[0]!.code)
      this.bump(this.stats.rows_rejected, "batch refused with an invalid row", inputs.length - failing.length)
      return json(400, this.error("VALIDATION_ERROR", this.propertyErrorMessage(failing.flat())), headers)
    }
    const startedAt = new Date(req.now).toISOString()
    const results: Array<Record<string, unknown>> = []
    const errors: Array<Record<string, unknown>> = []
    inputs.forEach((raw, i) => {
      const input = raw as Record<string, unknown>
      const problems = checks[i]!
      if (problems.length > 0) {
        this.bump(this.stats.rows_rejected, problems[0]!.code)
        errors.push({
          status: "error",
          category: "VALIDATION_ERROR",
          message: this.propertyErrorMessage(problems),
          context: { objectWriteTraceId: [traceIds[i]] },
          errors: problems.map((p) => ({ message: p.message, code: p.code, context: { propertyName: [p.name] } }))
        })
        return
      }
      results.push({ ...this.write(input, req.now), ...(multiStatus ? { objectWriteTraceId: traceIds[i] } : {}) })
    })
    const body = {
      status: "COMPLETE",
      results,
      ...(errors.length > 0 ? { numErrors: errors.length, errors } : {}),
      requestedAt: startedAt,
      startedAt,
      completedAt: new Date(req.now).toISOString()
    }
    return json(errors.length > 0 ? 207 : 200, body, headers)
  }

  /**
   * `POST /crm/v3/objects/contacts/gdpr-delete` `{ objectId, idProperty? }`: permanently deletes the contact (by id,
   * or by email with `idProperty: "email"`) and answers 204 without a body. An email no contact has is blocklisted
   * and answered 204 too (as HubSpot documents); an unknown contact id is 404. (The sandbox records the blocklist
   * but does not refuse later writes of a blocklisted email: HubSpot documents no answer for that.)
   */
  private gdprDelete(
    req: Request,
    parsed: unknown,
    headers: Record<string, string>,
    refuse: (reason: string, reply: Reply) => Reply
  ): Reply {
    const invalid = (reason: string, message: string) =>
      refuse(reason, json(400, this.error("VALIDATION_ERROR", message), headers))
    if (!isObject(parsed) || typeof parsed.objectId !== "string" || parsed.objectId.trim() === "") {
      return invalid(
        "invalid input",
        "Invalid input JSON: objectId is required (a contact id, or an email with idProperty)"
      )
    }
    const idProperty = parsed.idProperty === undefined || parsed.idProperty === null ? null : parsed.idProperty
    if (idProperty !== null && idProperty !== "email" && idProperty !== "hs_object_id") {
      return invalid(
        "invalid idProperty",
        `${JSON.stringify(idProperty)} is not a unique property of contacts usable as idProperty (use email)`
      )
    }
    const objectId = parsed.objectId.trim()
    const byEmail = idProperty === "email"
    const found = byEmail
      ? (this.contacts.has(objectId.toLowerCase()) ? objectId.toLowerCase() : undefined)
      : [...this.contacts.entries()].find(([, c]) => c.id === objectId)?.[0]
    if (found === undefined && !byEmail) {
      return refuse(
        "not found",
        json(404, this.error("OBJECT_NOT_FOUND", `Object not found.  objectId are usually numeric.`), headers)
      )
    }
    const contact = found !== undefined ? this.contacts.get(found) : undefined
    if (found !== undefined) this.contacts.delete(found)
    else this.blocklist.add(objectId.toLowerCase())
    this.gdprDeletions.push({
      objectId,
      idProperty,
      deletedContactId: contact?.id ?? null,
      blocklisted: found === undefined,
      received_at: req.now
    })
    return { status: 204, headers, body: "" }
  }

  /** Creates or updates the contact; returns its result object. */
  private write(input: Record<string, unknown>, now: number): Record<string, unknown> {
    const email = String(input.id).toLowerCase()
    const written = Object.fromEntries(
      Object.entries(input.properties as Record<string, unknown>).map(([k, v]) => [k, String(v)])
    )
    const existing = this.contacts.get(email)
    const iso = new Date(now).toISOString()
    if (existing === undefined) {
      const id = String(this.nextId++)
      const properties = {
        email,
        hs_object_id: id,
        createdate: iso,
        lastmodifieddate: iso,
        ...written
      }
      this.contacts.set(email, { id, properties, createdAt: now, updatedAt: now })
      this.stats.contacts_created += 1
      return { id, properties, createdAt: iso, updatedAt: iso, archived: false, new: true }
    }
    existing.properties = { ...existing.properties, ...written, lastmodifieddate: iso }
    existing.updatedAt = now
    this.stats.contacts_updated += 1
    return {
      id: existing.id,
      properties: existing.properties,
      createdAt: new Date(existing.createdAt).toISOString(),
      updatedAt: iso,
      archived: false,
      new: false
    }
  }

  // Behavioural events

  /** Why an occurrence is refused: a reason key for stats, the field and HubSpot-style message; undefined when valid. */
  private checkOccurrence(
    raw: unknown,
    at: string,
    now: number
  ): { readonly reason: string; readonly field: string; readonly message: string } | undefined {
    const bad = (reason: string, field: string, message: string) => ({ reason, field: `${at}${field}`, message })
    if (!isObject(raw)) return bad("not an object", "", "expected an object")
    if (typeof raw.eventName !== "string" || raw.eventName === "") {
      return bad("missing eventName", "eventName", "This property is required")
    }
    const m = EVENT_NAME.exec(raw.eventName)
    if (m === null || m[1] !== this.config.portalId || !this.config.eventDefinitions.includes(m[2]!)) {
      return bad(
        "unknown eventName",
        "eventName",
        `Event definition not found for eventName ${raw.eventName} in portal ${this.config.portalId}`
      )
    }
    const email = raw.email
    if (email === undefined && raw.utk === undefined && raw.objectId === undefined) {
      return bad("no identifier", "email", "One of email, utk or objectId is required to associate the occurrence")
    }
    if (email !== undefined && (typeof email !== "string" || !EMAIL.test(email))) {
      return bad("invalid email", "email", `Email address ${String(email)} is invalid`)
    }
    if (raw.occurredAt !== undefined) {
      const o = raw.occurredAt
      const ms = typeof o === "number" ? o : typeof o === "string" ? (/^\d+$/.test(o) ? Number(o) : Date.parse(o)) : NaN
      if (!Number.isFinite(ms)) {
        return bad("invalid occurredAt", "occurredAt", `${JSON.stringify(o)} is not a valid date`)
      }
      if (ms > now + 86_400_000) return bad("occurredAt in the future", "occurredAt", "occurredAt is in the future")
    }
    if (raw.uuid !== undefined && (typeof raw.uuid !== "string" || !UUID.test(raw.uuid))) {
      return bad("invalid uuid", "uuid", `${JSON.stringify(raw.uuid)} is not a valid UUID`)
    }
    if (!isObject(raw.properties)) return bad("missing properties", "properties", "This property is required")
    const entries = Object.entries(raw.properties)
    if (entries.length > 50) {
      return bad("too many properties", "properties", `At most 50 properties, got ${entries.length}`)
    }
    for (const [name, value] of entries) {
      if (!PROPERTY_NAME.test(name) || name.length > 50) {
        return bad(
          "invalid property name",
          `properties.${name}`,
          "Property names must start with a letter and contain only lowercase letters a-z, numbers 0-9 and underscores (at most 50 characters)"
        )
      }
      if (typeof value === "string") {
        const limit = /url|referrer/.test(name) ? 200 : 50
        if (value.length > limit) {
          return bad("property value too long", `properties.${name}`, `Value is longer than ${limit} characters`)
        }
      } else if (typeof value !== "number" && typeof value !== "boolean") {
        return bad("invalid property value", `properties.${name}`, "Values must be strings, numbers or booleans")
      }
    }
    return undefined
  }

  private sendEvents(
    occurrences: ReadonlyArray<unknown>,
    batch: boolean,
    now: number,
    headers: Record<string, string>,
    refuse: (reason: string, reply: Reply) => Reply
  ): Reply {
    if (occurrences.length > this.config.maxEventInputs) {
      return refuse(
        "batch too large",
        json(
          400,
          this.error(
            "VALIDATION_ERROR",
            `Batch input too large: ${occurrences.length} inputs, the limit is ${this.config.maxEventInputs}`
          ),
          headers
        )
      )
    }
    const problems = occurrences
      .map((o, i) => this.checkOccurrence(o, batch ? `inputs[${i}].` : "", now))
      .filter((p) => p !== undefined)
    if (problems.length > 0) {
      // One invalid occurrence fails the whole request: nothing is recorded.
      return refuse(
        problems[0]!.reason,
        json(
          400,
          this.error(
            "VALIDATION_ERROR",
            `Invalid input: ${problems.map((p) => `${p.field}: ${p.message}`).join("; ")}`,
            {
              errors: problems.map((p) => ({ message: p.message, in: p.field, code: "400" }))
            }
          ),
          headers
        )
      )
    }
    for (const o of occurrences) this.store(o as Record<string, unknown>, now)
    return { status: 204, headers, body: "" }
  }

  private store(occurrence: Record<string, unknown>, now: number) {
    const eventName = String(occurrence.eventName)
    const uuid = typeof occurrence.uuid === "string" ? occurrence.uuid.toLowerCase() : null
    if (uuid !== null) {
      // HubSpot accepts the first occurrence with a uuid (per event type, within a year) and drops later ones.
      const key = `${eventName}\u0000${uuid}`
      const until = this.seen.get(key)
      if (until !== undefined && until > now) {
        this.stats.duplicates += 1
        return
      }
      this.seen.set(key, now + YEAR_MS)
    }
    this.stored.push({ seq: this.stored.length + 1, received_at: now, eventName, uuid, occurrence })
    this.stats.events_stored += 1
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Control endpoints

  private contactList(): ReadonlyArray<StoredContact> {
    return [...this.contacts.entries()].map(([email, c]) => ({
      id: c.id,
      email,
      properties: c.properties,
      createdAt: new Date(c.createdAt).toISOString(),
      updatedAt: new Date(c.updatedAt).toISOString()
    }))
  }

  private control(req: Request, path: string): Reply {
    switch (`${req.method} ${path}`) {
      case "GET /__sandbox/contacts":
        return json(200, { contacts: this.contactList() })
      case "GET /__sandbox/events":
        return json(200, { events: this.stored })
      case "GET /__sandbox/gdpr-deletions":
        return json(200, { deletions: this.gdprDeletions, blocklist: [...this.blocklist] })
      case "DELETE /__sandbox":
      case "DELETE /__sandbox/events":
        this.reset()
        return json(200, { ok: true })
      case "GET /__sandbox/stats":
        return json(200, this.stats)
      case "GET /__sandbox/faults":
        return json(200, this.faultState(req.now))
      case "DELETE /__sandbox/faults":
        this.faults = undefined
        this.down = undefined
        this.delayMs = 0
        this.dailyExhaustedUntil = undefined
        return json(200, this.faultState(req.now))
      case "POST /__sandbox/faults": {
        const body = this.parse(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.setFaults(body as Faults, req.now)
      }
      case "POST /__sandbox/config": {
        const body = this.parse(req.body)
        if (!isObject(body)) return json(400, { error: "expected a JSON object" })
        return this.configure(body)
      }
      case "GET /":
      case "GET /__sandbox":
        return json(200, {
          sandbox: "hubspot",
          portalId: this.config.portalId,
          contacts: "POST /crm/v3/objects/contacts/batch/upsert",
          gdprDelete: "POST /crm/v3/objects/contacts/gdpr-delete",
          events: ["POST /events/v3/send", "POST /events/v3/send/batch"],
          control: [
            "GET /__sandbox/contacts",
            "GET /__sandbox/events",
            "GET /__sandbox/gdpr-deletions",
            "DELETE /__sandbox",
            "GET /__sandbox/stats",
            "POST /__sandbox/faults",
            "DELETE /__sandbox/faults",
            "POST /__sandbox/config"
          ]
        })
      default:
        return json(404, { error: "Not Found" })
    }
  }

  private faultState(now: number) {
    return {
      next: this.faults ?? null,
      down: this.down !== undefined,
      delayMs: this.delayMs,
      dailyExhaustedUntil: this.dailyExhaustedUntil !== undefined && this.dailyExhaustedUntil > now ?
        this.dailyExhaustedUntil :
        null
    }
  }

  private setFaults(f: Faults, now: number): Reply {
    if (f.status !== undefined) {
      if (typeof f.status !== "number" || f.status < 400 || f.status > 599) {
        return json(400, { error: "status must be an HTTP error status (4xx or 5xx)" })
      }
      this.faults = {
        target: f.target === "contacts" || f.target === "events" ? f.target : "any",
        status: f.status,
        remaining: typeof f.count === "number" && f.count > 0 ? Math.floor(f.count) : 1,
        skip: typeof f.skip === "number" && f.skip > 0 ? Math.floor(f.skip) : 0,
        ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}),
        ...(f.body !== undefined ? { body: f.body } : {}),
        ...(f.omitRateLimitHeaders === true ? { omitRateLimitHeaders: true } : {})
      }
    }
    if (f.down !== undefined) {
      this.down = f.down ? (f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}) : undefined
    }
    if (f.delayMs !== undefined) this.delayMs = Math.max(0, Number(f.delayMs) || 0)
    if (f.exhaustDaily === true) {
      this.dailyExhaustedUntil = typeof f.dailyResetAt === "number" && f.dailyResetAt > now ?
        f.dailyResetAt :
        nextDayStart(now, this.config.timeZone)
    } else if (f.exhaustDaily === false) {
      this.dailyExhaustedUntil = undefined
    }
    return json(200, this.faultState(now))
  }

  private configure(body: Record<string, unknown>): Reply {
    const next: Mutable<EmulatorConfig> = { ...this.config }
    const nonNegative = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u) && u >= 0
    const positive = (u: unknown): u is number => nonNegative(u) && u > 0
    const strings = (u: unknown): u is Array<string> => Array.isArray(u) && u.every((s) => typeof s === "string")
    if (nonNegative(body.tenSecondlyMax)) next.tenSecondlyMax = Math.floor(body.tenSecondlyMax)
    if (positive(body.intervalMs)) next.intervalMs = Math.floor(body.intervalMs)
    if (nonNegative(body.dailyLimit)) next.dailyLimit = Math.floor(body.dailyLimit)
    if (positive(body.maxBatchInputs)) next.maxBatchInputs = Math.floor(body.maxBatchInputs)
    if (positive(body.maxEventInputs)) next.maxEventInputs = Math.floor(body.maxEventInputs)
    if (typeof body.timeZone === "string") {
      try {
        dayKey(0, body.timeZone)
        next.timeZone = body.timeZone
      } catch {
        return json(400, { error: `unknown time zone ${body.timeZone}` })
      }
    }
    if (typeof body.portalId === "string" && /^\d+$/.test(body.portalId)) next.portalId = body.portalId
    if (strings(body.eventDefinitions)) next.eventDefinitions = body.eventDefinitions
    if (strings(body.accessTokens)) next.accessTokens = body.accessTokens
    if (Array.isArray(body.contactProperties)) {
      next.contactProperties = [...next.contactProperties, ...(body.contactProperties as Array<PropertyDefinition>)]
    }
    this.config = next
    const { accessTokens, ...visible } = next
    return json(200, { ...visible, accessTokens: accessTokens.length })
  }
}
