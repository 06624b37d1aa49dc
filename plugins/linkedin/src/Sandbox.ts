/**
 * A local HTTP server that behaves like LinkedIn's OAuth token endpoint (`POST /oauth/v2/accessToken`), Conversions
 * API (`POST /rest/conversionEvents`, BATCH_CREATE) and DMP segment users (`POST /rest/dmpSegments/{id}/users`,
 * BATCH_CREATE of `ADD` / `REMOVE`) as documented: headers, bearer tokens with expiry, per-element validation and
 * statuses, eventId dedup, known segments (`SANDBOX_SEGMENT_ID`, `SANDBOX_SEGMENT_ID_2`) and their users, batch and
 * rate limits; plus control endpoints for tests and demos:
 *
 * - `GET /__sandbox/events` every stored conversion event in arrival order; `DELETE /__sandbox/events` resets all
 * - `GET /__sandbox/segments` every known segment with its users; `GET /__sandbox/segments/{id}` one of them
 * - `GET /__sandbox/stats` requests, statuses, token requests, elements accepted/stored, duplicates, rejections
 * - `POST /__sandbox/faults` `{ target?: "api" | "token", status, count?, skip?, retryAfter?, body? }` | `{ down }` |
 *   `{ delayMs }`; `DELETE /__sandbox/faults` clears them
 * - `POST /__sandbox/config` `{ accessTokenTtlSeconds?, conversionRules?, activeVersions?, maxElements?,
 *   rateLimitPerMinute?, rateLimitPerDay?, refreshTokens?, clientId?, clientSecret?, dmpSegments?,
 *   maxSegmentElements? }`
 * - `POST /__sandbox/revoke` every issued access token stops working (refresh tokens still do)
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type * as Destination from "@tracklayer/core/Destination"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Emulator, type EmulatorConfig, type Faults as EmulatorFaults } from "./internal/emulator.js"

/** Credentials the sandbox accepts by default. */
export const SANDBOX_CLIENT_ID = "sandbox-linkedin-client"
export const SANDBOX_CLIENT_SECRET = "sandbox-linkedin-secret"
export const SANDBOX_REFRESH_TOKEN = "sandbox-linkedin-refresh"
/** The DMP segments the sandbox knows by default (users requests for any other id get 404). */
export const SANDBOX_SEGMENT_ID = "30500001"
export const SANDBOX_SEGMENT_ID_2 = "30500002"

/** Conversion rules the sandbox knows by default, mapped from the canonical vocabulary (its `env` sets them). */
export const SANDBOX_CONVERSION_RULES: Readonly<Record<string, string>> = {
  purchase: "7001001",
  sign_up: "7001002",
  start_trial: "7001003",
  qualified_lead: "7001004",
  subscription_renewed: "7001005"
}

const MAX_KEPT_BODY = 32 * 1024 * 1024

/** Options of `start`. */
export interface SandboxOptions {
  /** Port on 127.0.0.1 (default 0: a free port). */
  readonly port?: number
  /** Access token lifetime in seconds (default 60 days, as LinkedIn; set a few seconds to exercise refresh). */
  readonly accessTokenTtlSeconds?: number
  /** Known conversion rule ids (default: the values of `SANDBOX_CONVERSION_RULES`). */
  readonly conversionRules?: ReadonlyArray<string>
  /** Requests per minute before 429 (default 600; 0 disables). */
  readonly rateLimitPerMinute?: number
  /** Most elements per request (default 5000). */
  readonly maxElements?: number
  /** Known DMP segment ids (default `[SANDBOX_SEGMENT_ID, SANDBOX_SEGMENT_ID_2]`). */
  readonly dmpSegments?: ReadonlyArray<string>
}

/** Fault injection; see the module doc. */
export type Faults = EmulatorFaults

/** Runtime settings changed through `POST /__sandbox/config`. */
export type SandboxConfig = Partial<EmulatorConfig>

/** One stored conversion event as `GET /__sandbox/events` returns it. */
export const StoredEvent = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  rule: Schema.String,
  event_id: Schema.NullOr(Schema.String),
  element: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type StoredEvent = typeof StoredEvent.Type

const Counts = Schema.Record({ key: Schema.String, value: Schema.Number })

/** `GET /__sandbox/stats`. */
export const Stats = Schema.Struct({
  requests: Schema.Number,
  responses: Counts,
  token_requests: Schema.Number,
  tokens_issued: Schema.Number,
  token_responses: Counts,
  elements_received: Schema.Number,
  elements_accepted: Schema.Number,
  elements_stored: Schema.Number,
  duplicates: Schema.Number,
  rejected: Counts,
  segment_requests: Schema.Number,
  segment_responses: Counts,
  segment_elements_received: Schema.Number,
  segment_elements_accepted: Schema.Number
})
export type Stats = typeof Stats.Type

/** A DMP segment user id. */
export const SegmentUserId = Schema.Struct({ idType: Schema.String, idValue: Schema.String })

/** One DMP segment as `GET /__sandbox/segments/{id}` returns it: its users, each with the ids it was added with. */
export const Segment = Schema.Struct({
  id: Schema.String,
  users: Schema.Array(Schema.Struct({ userIds: Schema.Array(SegmentUserId) }))
})
export type Segment = typeof Segment.Type

/** A typed client of the control endpoints (failures are defects: it is a test and demo tool). */
export interface SandboxClient {
  readonly events: () => Effect.Effect<ReadonlyArray<StoredEvent>, never, HttpClient.HttpClient>
  readonly stats: () => Effect.Effect<Stats, never, HttpClient.HttpClient>
  /** Forgets events, tokens, dedup/rate state, stats and faults. */
  readonly reset: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly setFaults: (faults: Faults) => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly clearFaults: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly configure: (config: SandboxConfig) => Effect.Effect<void, never, HttpClient.HttpClient>
  /** Revokes every issued access token. */
  readonly revokeTokens: () => Effect.Effect<void, never, HttpClient.HttpClient>
  /** The id values (`SHA256_EMAIL` hashes, …) of the users currently in a known segment, in the order added. */
  readonly segmentMembers: (segmentId: string) => Effect.Effect<ReadonlyArray<string>, never, HttpClient.HttpClient>
  /** A known segment with its users. */
  readonly segment: (segmentId: string) => Effect.Effect<Segment, never, HttpClient.HttpClient>
}

/** A running sandbox. */
export interface Sandbox extends Destination.SandboxHandle {
  readonly port: number
  /** `url + "/rest"` (the plugin's `apiBase`). */
  readonly apiBase: string
  /** `url + "/oauth/v2/accessToken"`. */
  readonly tokenUrl: string
  readonly clientId: string
  readonly clientSecret: string
  readonly refreshToken: string
  /** The first known DMP segment id. */
  readonly segmentId: string
  readonly client: SandboxClient
}

/** A client for the sandbox at `url`. */
export const makeClient = (url: string): SandboxClient => {
  const run = <A, I>(request: HttpClientRequest.HttpClientRequest, schema: Schema.Schema<A, I>) =>
    HttpClient.HttpClient.pipe(
      Effect.flatMap((client) => client.execute(request)),
      Effect.flatMap(HttpClientResponse.filterStatusOk),
      Effect.flatMap(HttpClientResponse.schemaBodyJson(schema)),
      Effect.orDie
    )
  const post = (path: string, body: unknown) =>
    run(HttpClientRequest.post(url + path).pipe(HttpClientRequest.bodyUnsafeJson(body)), Schema.Unknown).pipe(
      Effect.asVoid
    )
  return {
    events: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/events`), Schema.Struct({ events: Schema.Array(StoredEvent) })).pipe(
        Effect.map((r) => r.events),
        Effect.withSpan("LinkedInSandbox.events")
      ),
    stats: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/stats`), Stats).pipe(Effect.withSpan("LinkedInSandbox.stats")),
    reset: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/events`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("LinkedInSandbox.reset")
      ),
    setFaults: (faults) => post("/__sandbox/faults", faults).pipe(Effect.withSpan("LinkedInSandbox.setFaults")),
    clearFaults: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/faults`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("LinkedInSandbox.clearFaults")
      ),
    configure: (config) => post("/__sandbox/config", config).pipe(Effect.withSpan("LinkedInSandbox.configure")),
    revokeTokens: () => post("/__sandbox/revoke", {}).pipe(Effect.withSpan("LinkedInSandbox.revokeTokens")),
    segment: (segmentId) =>
      run(HttpClientRequest.get(`${url}/__sandbox/segments/${encodeURIComponent(segmentId)}`), Segment).pipe(
        Effect.withSpan("LinkedInSandbox.segment")
      ),
    segmentMembers: (segmentId) =>
      run(HttpClientRequest.get(`${url}/__sandbox/segments/${encodeURIComponent(segmentId)}`), Segment).pipe(
        Effect.map((segment) => segment.users.flatMap((u) => u.userIds.map((id) => id.idValue))),
        Effect.withSpan("LinkedInSandbox.segmentMembers")
      )
  }
}

const listen = (server: Http.Server, port: number) =>
  Effect.async<number>((resume) => {
    const onError = (error: Error) => resume(Effect.die(error))
    server.once("error", onError)
    server.listen(port, "127.0.0.1", () => {
      server.off("error", onError)
      resume(Effect.succeed((server.address() as AddressInfo).port))
    })
  })

const close = (server: Http.Server, timers: Set<ReturnType<typeof setTimeout>>) =>
  Effect.async<void>((resume) => {
    for (const t of timers) clearTimeout(t)
    timers.clear()
    server.close(() => resume(Effect.void))
    server.closeAllConnections()
  })

const headerValues = (headers: Http.IncomingHttpHeaders): Record<string, string | undefined> => {
  const out: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(headers)) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v
  return out
}

/** `event=ruleId,…` for `LINKEDIN_CONVERSION_RULES`. */
const rulesEnv = (rules: Readonly<Record<string, string>>): string =>
  Object.entries(rules).map(([event, id]) => `${event}=${id}`).join(",")

/**
 * Starts the sandbox on 127.0.0.1 (`port` 0 = a free port); it stops when the scope closes. `env` points the
 * plugin's settings at it: `LINKEDIN_CLIENT_ID`, `LINKEDIN_CLIENT_SECRET`, `LINKEDIN_REFRESH_TOKEN`,
 * `LINKEDIN_API_BASE`, `LINKEDIN_TOKEN_URL` and `LINKEDIN_CONVERSION_RULES` (the canonical events → the sandbox's
 * rules, when its rules are the default ones).
 */
export const start = (options: SandboxOptions = {}): Effect.Effect<Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const config: Partial<{ -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] }> = {}
    if (options.accessTokenTtlSeconds !== undefined) config.accessTokenTtlSeconds = options.accessTokenTtlSeconds
    if (options.conversionRules !== undefined) config.conversionRules = options.conversionRules
    if (options.rateLimitPerMinute !== undefined) config.rateLimitPerMinute = options.rateLimitPerMinute
    if (options.maxElements !== undefined) config.maxElements = options.maxElements
    if (options.dmpSegments !== undefined) config.dmpSegments = options.dmpSegments
    const emulator = new Emulator(config)
    const timers = new Set<ReturnType<typeof setTimeout>>()
    const server = Http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      let bytes = 0
      req.on("data", (chunk: Buffer) => {
        bytes += chunk.length
        if (bytes <= MAX_KEPT_BODY) chunks.push(chunk)
      })
      req.on("error", () => res.destroy())
      req.on("end", () => {
        const { delayMs, reply } = emulator.handle({
          method: req.method ?? "GET",
          path: req.url ?? "/",
          headers: headerValues(req.headers),
          body: Buffer.concat(chunks),
          now: Date.now()
        })
        const write = () => {
          if (res.destroyed) return
          res.writeHead(reply.status, reply.headers)
          res.end(reply.body)
        }
        if (delayMs <= 0) return write()
        const timer = setTimeout(() => {
          timers.delete(timer)
          write()
        }, delayMs)
        timers.add(timer)
      })
    })
    const port = yield* Effect.acquireRelease(listen(server, options.port ?? 0), () => close(server, timers))
    const url = `http://127.0.0.1:${port}`
    const { clientId, clientSecret } = emulator.config
    const refreshToken = emulator.config.refreshTokens[0] ?? SANDBOX_REFRESH_TOKEN
    const known = new Set(emulator.config.conversionRules)
    const mapped = Object.fromEntries(Object.entries(SANDBOX_CONVERSION_RULES).filter(([, id]) => known.has(id)))
    return {
      url,
      port,
      apiBase: `${url}/rest`,
      tokenUrl: `${url}/oauth/v2/accessToken`,
      clientId,
      clientSecret,
      refreshToken,
      segmentId: emulator.config.dmpSegments[0] ?? SANDBOX_SEGMENT_ID,
      env: {
        LINKEDIN_CLIENT_ID: clientId,
        LINKEDIN_CLIENT_SECRET: clientSecret,
        LINKEDIN_REFRESH_TOKEN: refreshToken,
        LINKEDIN_API_BASE: `${url}/rest`,
        LINKEDIN_TOKEN_URL: `${url}/oauth/v2/accessToken`,
        ...(Object.keys(mapped).length > 0 ? { LINKEDIN_CONVERSION_RULES: rulesEnv(mapped) } : {})
      },
      client: makeClient(url)
    } satisfies Sandbox
  }).pipe(Effect.withSpan("LinkedInSandbox.start"))
