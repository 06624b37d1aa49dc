/**
 * A local HTTP server that behaves like Google's OAuth token endpoint (`POST /token`) and the Data Manager API's
 * event ingestion (`POST /v1/events:ingest`, `GET /v1/requestStatus:retrieve`) as documented: bearer tokens with
 * an expiry, fail-fast validation with google.rpc `BadRequest` field violations (unhashed PII included), limits,
 * 300 requests/min, `transactionId` dedup and adjustments, asynchronous status. It also serves the Google Ads API's
 * `POST /v{N}/customers/{id}:uploadClickConversions` (developer token, partial failure rows, `orderId` and click
 * dedup, click-age checks, `CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE` on demand), and Customer Match through
 * `POST /v1/audienceMembers:ingest` / `:remove` (validation, ≤ 10,000 members, hashes in the declared encoding,
 * terms of service on ingest, known user lists only, membership per user list). Control endpoints:
 *
 * - `GET /__sandbox/events` every stored event in arrival order; `DELETE /__sandbox/events` resets everything
 * - `GET /__sandbox/stats` token requests, ingest answers, polls, stored / duplicate / adjusted events, rejections
 * - `GET /__sandbox/conversions` every stored click conversion (Google Ads API) in arrival order
 * - `GET /__sandbox/audiences` every user list with its identifier count; `GET /__sandbox/audiences/{id}` the
 *   identifiers currently in one; `GET /__sandbox/audience-requests` accepted audience requests in arrival order
 * - `POST /__sandbox/user-lists` `{ ids: ["<user list id>", …] }` makes user lists exist (default
 *   `8000000001`–`8000000003`)
 * - `POST /__sandbox/clicks` `{ "<click id>": <epoch ms> }` registers click times (enables `TOO_RECENT_EVENT`,
 *   `EXPIRED_EVENT`, `CONVERSION_PRECEDES_EVENT` for those clicks)
 * - `POST /__sandbox/faults` `{ status, count?, skip?, retryAfter?, body? }` | `{ requestStatus, errorCounts?,
 *   count? }` | `{ down }` | `{ delayMs }`; `DELETE /__sandbox/faults` clears them
 * - `POST /__sandbox/config` `{ tokenTtlSeconds?, processingPolls?, rateLimitPerMinute?, maxEventsPerRequest?,
 *   clients?, developerToken?, notAllowlisted?, minClickAgeHours?, maxConversionsPerUpload?, userLists?,
 *   maxAudienceMembersPerRequest? }`
 * - `POST /__sandbox/expire-tokens` expires every issued access token
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type * as Destination from "@tracklayer/core/Destination"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import {
  DEFAULT_USER_LISTS,
  Emulator,
  type EmulatorConfig,
  type Faults as EmulatorFaults,
  type OAuthClient
} from "./internal/emulator.js"

/** The OAuth client the sandbox accepts by default. */
export const SANDBOX_CLIENT_ID = "sandbox-google-client-id"
export const SANDBOX_CLIENT_SECRET = "sandbox-google-client-secret"
export const SANDBOX_REFRESH_TOKEN = "sandbox-google-refresh-token"
/** The developer token the sandbox's Google Ads API accepts by default. */
export const SANDBOX_DEVELOPER_TOKEN = "sandbox-google-developer-token"
/** The customer the sandbox env points `ads_api` mode at (any 10-digit id is accepted). */
export const SANDBOX_CUSTOMER_ID = "1234567890"
/** The operating account the sandbox env points at (any 10-digit id is accepted). */
export const SANDBOX_OPERATING_ACCOUNT_ID = "1234567890"
/** Conversion action ids the sandbox env maps the canonical vocabulary to (any numeric id is accepted). */
export const SANDBOX_CONVERSION_ACTIONS: Readonly<Record<string, string>> = {
  purchase: "7000000001",
  sign_up: "7000000002",
  start_trial: "7000000003",
  qualified_lead: "7000000004",
  subscription_renewed: "7000000005"
}

/** Customer Match user lists that exist in the sandbox by default (others: create them, or get 404 NOT_FOUND). */
export const SANDBOX_USER_LISTS: ReadonlyArray<string> = DEFAULT_USER_LISTS

const MAX_KEPT_BODY = 32 * 1024 * 1024

/** Options of `start`. */
export interface SandboxOptions {
  /** Port on 127.0.0.1 (default 0: a free port). */
  readonly port?: number
  /** Accepted OAuth clients (default: the `sandbox-google-*` one). */
  readonly clients?: ReadonlyArray<OAuthClient>
  /** Lifetime of issued access tokens in seconds (default 3599). */
  readonly tokenTtlSeconds?: number
  /** PROCESSING answers per request before the final status (default 1). */
  readonly processingPolls?: number
  /** Ingest requests per minute (default 300; 0: unlimited). */
  readonly rateLimitPerMinute?: number
  /** Google Ads API developer token accepted (default `sandbox-google-developer-token`). */
  readonly developerToken?: string
  /** Answer every click-conversion upload `CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE` (default false). */
  readonly notAllowlisted?: boolean
  /** Customer Match user lists that exist (default `SANDBOX_USER_LISTS`). */
  readonly userLists?: ReadonlyArray<string>
  /** Audience members per request (default 10,000, as Google). */
  readonly maxAudienceMembersPerRequest?: number
}

/** Fault injection; see the module doc. */
export type Faults = EmulatorFaults

/** Runtime settings changed through `POST /__sandbox/config`. */
export type SandboxConfig = Partial<EmulatorConfig>

/** One stored event as `GET /__sandbox/events` returns it. */
export const StoredEvent = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  request_id: Schema.String,
  operating_account_id: Schema.String,
  product_destination_id: Schema.String,
  transaction_id: Schema.String,
  kind: Schema.Literal("new", "adjustment"),
  event: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type StoredEvent = typeof StoredEvent.Type

const Counts = Schema.Record({ key: Schema.String, value: Schema.Number })

/** One `UserIdentifier` as the sandbox received it (hashed values as sent). */
export const AudienceIdentifier = Schema.Union(
  Schema.Struct({ emailAddress: Schema.String }),
  Schema.Struct({ phoneNumber: Schema.String }),
  Schema.Struct({
    address: Schema.Struct({
      givenName: Schema.String,
      familyName: Schema.String,
      regionCode: Schema.String,
      postalCode: Schema.String
    })
  })
)
export type AudienceIdentifier = typeof AudienceIdentifier.Type

/** One accepted audience request as `GET /__sandbox/audience-requests` returns it (one per destination). */
export const StoredAudienceRequest = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  request_id: Schema.String,
  op: Schema.Literal("ingest", "remove"),
  operating_account_id: Schema.String,
  user_list_id: Schema.String,
  members: Schema.Array(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  terms_of_service: Schema.NullOr(Schema.String)
})
export type StoredAudienceRequest = typeof StoredAudienceRequest.Type

/** One stored click conversion as `GET /__sandbox/conversions` returns it. */
export const StoredConversion = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  customer_id: Schema.String,
  login_customer_id: Schema.NullOr(Schema.String),
  api_version: Schema.String,
  job_id: Schema.String,
  conversion: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type StoredConversion = typeof StoredConversion.Type

/** `GET /__sandbox/stats`. */
export const Stats = Schema.Struct({
  token_requests: Schema.Number,
  tokens_issued: Schema.Number,
  token_errors: Counts,
  ingest_requests: Schema.Number,
  responses: Counts,
  status_polls: Schema.Number,
  events_received: Schema.Number,
  events_stored: Schema.Number,
  duplicates: Schema.Number,
  adjustments: Schema.Number,
  validate_only_requests: Schema.Number,
  rejected: Counts,
  upload_requests: Schema.Number,
  upload_responses: Counts,
  conversions_received: Schema.Number,
  conversions_stored: Schema.Number,
  conversion_errors: Counts,
  audience_requests: Schema.Number,
  audience_responses: Counts,
  audience_members_received: Schema.Number,
  audience_members_ingested: Schema.Number,
  audience_members_removed: Schema.Number
})
export type Stats = typeof Stats.Type

/** A typed client of the control endpoints (failures are defects: it is a test and demo tool). */
export interface SandboxClient {
  readonly events: () => Effect.Effect<ReadonlyArray<StoredEvent>, never, HttpClient.HttpClient>
  readonly stats: () => Effect.Effect<Stats, never, HttpClient.HttpClient>
  /** Stored click conversions (Google Ads API mode). */
  readonly conversions: () => Effect.Effect<ReadonlyArray<StoredConversion>, never, HttpClient.HttpClient>
  /** The identifiers currently in a user list (Customer Match), in the order they were first added. */
  readonly audienceMembers: (
    userListId: string
  ) => Effect.Effect<ReadonlyArray<AudienceIdentifier>, never, HttpClient.HttpClient>
  /** Accepted audience requests (ingest and remove), in arrival order. */
  readonly audienceRequests: () => Effect.Effect<ReadonlyArray<StoredAudienceRequest>, never, HttpClient.HttpClient>
  /** Makes these user lists exist (kept across `reset`). */
  readonly createUserLists: (ids: ReadonlyArray<string>) => Effect.Effect<void, never, HttpClient.HttpClient>
  /** Registers when clicks happened (click id → epoch ms), enabling the click-age checks for them. */
  readonly registerClicks: (
    clicks: Readonly<Record<string, number>>
  ) => Effect.Effect<void, never, HttpClient.HttpClient>
  /** Forgets events, tokens, statuses, stats and faults. */
  readonly reset: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly setFaults: (faults: Faults) => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly clearFaults: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly configure: (config: SandboxConfig) => Effect.Effect<void, never, HttpClient.HttpClient>
  /** Expires every issued access token (the next API call gets 401). */
  readonly expireTokens: () => Effect.Effect<void, never, HttpClient.HttpClient>
}

/** A running sandbox. */
export interface Sandbox extends Destination.SandboxHandle {
  readonly port: number
  /** The API base (`url`): requests go to `<apiBase>/v1/…`. */
  readonly apiBase: string
  /** `url + "/token"`. */
  readonly tokenUrl: string
  /** The first accepted OAuth client. */
  readonly credentials: OAuthClient
  /** The developer token the Google Ads API endpoint accepts. */
  readonly developerToken: string
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
        Effect.withSpan("GoogleAdsSandbox.events")
      ),
    stats: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/stats`), Stats).pipe(Effect.withSpan("GoogleAdsSandbox.stats")),
    conversions: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/conversions`),
        Schema.Struct({ conversions: Schema.Array(StoredConversion) })
      ).pipe(Effect.map((r) => r.conversions), Effect.withSpan("GoogleAdsSandbox.conversions")),
    audienceMembers: (userListId) =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/audiences/${encodeURIComponent(userListId)}`),
        Schema.Struct({ identifiers: Schema.Array(AudienceIdentifier) })
      ).pipe(Effect.map((r) => r.identifiers), Effect.withSpan("GoogleAdsSandbox.audienceMembers")),
    audienceRequests: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/audience-requests`),
        Schema.Struct({ requests: Schema.Array(StoredAudienceRequest) })
      ).pipe(Effect.map((r) => r.requests), Effect.withSpan("GoogleAdsSandbox.audienceRequests")),
    createUserLists: (ids) =>
      post("/__sandbox/user-lists", { ids }).pipe(Effect.withSpan("GoogleAdsSandbox.createUserLists")),
    registerClicks: (clicks) =>
      post("/__sandbox/clicks", clicks).pipe(Effect.withSpan("GoogleAdsSandbox.registerClicks")),
    reset: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/events`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("GoogleAdsSandbox.reset")
      ),
    setFaults: (faults) => post("/__sandbox/faults", faults).pipe(Effect.withSpan("GoogleAdsSandbox.setFaults")),
    clearFaults: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/faults`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("GoogleAdsSandbox.clearFaults")
      ),
    configure: (config) => post("/__sandbox/config", config).pipe(Effect.withSpan("GoogleAdsSandbox.configure")),
    expireTokens: () => post("/__sandbox/expire-tokens", {}).pipe(Effect.withSpan("GoogleAdsSandbox.expireTokens"))
  }
}

const headerOf = (h: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof h === "string" ? h : h?.[0]

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

/**
 * Starts the sandbox on 127.0.0.1 (`port` 0 = a free port); it stops when the scope closes. `env` points the
 * plugin's settings (`GOOGLE_ADS_*`) at it, with the canonical vocabulary mapped to sandbox conversion actions.
 */
export const start = (options: SandboxOptions = {}): Effect.Effect<Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const config: { -readonly [K in keyof EmulatorConfig]?: EmulatorConfig[K] } = {}
    if (options.clients !== undefined) config.clients = options.clients
    if (options.tokenTtlSeconds !== undefined) config.tokenTtlSeconds = options.tokenTtlSeconds
    if (options.processingPolls !== undefined) config.processingPolls = options.processingPolls
    if (options.rateLimitPerMinute !== undefined) config.rateLimitPerMinute = options.rateLimitPerMinute
    if (options.developerToken !== undefined) config.developerToken = options.developerToken
    if (options.notAllowlisted !== undefined) config.notAllowlisted = options.notAllowlisted
    if (options.userLists !== undefined) config.userLists = options.userLists
    if (options.maxAudienceMembersPerRequest !== undefined) {
      config.maxAudienceMembersPerRequest = options.maxAudienceMembersPerRequest
    }
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
          contentType: req.headers["content-type"],
          authorization: req.headers["authorization"],
          developerToken: headerOf(req.headers["developer-token"]),
          loginCustomerId: headerOf(req.headers["login-customer-id"]),
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
    const credentials = emulator.config.clients[0] ?? {
      clientId: SANDBOX_CLIENT_ID,
      clientSecret: SANDBOX_CLIENT_SECRET,
      refreshToken: SANDBOX_REFRESH_TOKEN
    }
    return {
      url,
      port,
      apiBase: url,
      tokenUrl: `${url}/token`,
      credentials,
      developerToken: emulator.config.developerToken,
      env: {
        GOOGLE_ADS_CLIENT_ID: credentials.clientId,
        GOOGLE_ADS_CLIENT_SECRET: credentials.clientSecret,
        GOOGLE_ADS_REFRESH_TOKEN: credentials.refreshToken,
        GOOGLE_ADS_OPERATING_ACCOUNT_ID: SANDBOX_OPERATING_ACCOUNT_ID,
        GOOGLE_ADS_API_BASE: url,
        GOOGLE_ADS_TOKEN_URL: `${url}/token`,
        GOOGLE_ADS_VALIDATE_ONLY: "false",
        // Used only when GOOGLE_ADS_MODE=ads_api (the Google Ads API mode).
        GOOGLE_ADS_CUSTOMER_ID: SANDBOX_CUSTOMER_ID,
        GOOGLE_ADS_DEVELOPER_TOKEN: emulator.config.developerToken,
        GOOGLE_ADS_ADS_API_BASE: url,
        GOOGLE_ADS_CONVERSION_ACTIONS: Object.entries(SANDBOX_CONVERSION_ACTIONS).map(([k, v]) => `${k}=${v}`).join(",")
      },
      client: makeClient(url)
    } satisfies Sandbox
  }).pipe(Effect.withSpan("GoogleAdsSandbox.start"))
