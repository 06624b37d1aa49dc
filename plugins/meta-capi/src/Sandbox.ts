/**
 * A local HTTP server that behaves like the Meta Conversions API events edge
 * (`POST /{version}/{pixel id}/events`) as documented: token and pixel checks, one bad event failing the whole
 * request (7-day window, required fields, unhashed PII), the 1000-event limit, `event_name` + `event_id` dedup within
 * 48 h, test event codes, Graph error bodies; and the Custom Audience users edge
 * (`POST` / `DELETE /{version}/{audience id}/users`): known audiences (`SANDBOX_AUDIENCE_ID` and
 * `SANDBOX_AUDIENCE_ID_2` by default), `payload` shape, 10,000 rows, hashes, membership per audience. Control
 * endpoints for tests and demos:
 *
 * - `GET /__sandbox/events` every stored event in arrival order; `DELETE /__sandbox/events` resets everything
 * - `GET /__sandbox/audiences` every known audience with its members; `GET /__sandbox/audiences/{id}` one of them
 * - `GET /__sandbox/stats` requests, statuses, events received/stored, duplicates, rejections by reason
 * - `POST /__sandbox/faults` `{ code?, subcode?, status?, count?, skip?, retryAfter?, regainAccessMinutes?, body?,
 *   ingest? }` | `{ down }` | `{ delayMs }`; `DELETE /__sandbox/faults` clears them
 * - `POST /__sandbox/config` `{ accessTokens?, pixelIds?, maxEventsPerRequest?, windowMs?, maxFutureMs?,
 *   dedupWindowMs?, maxBodyBytes?, rateLimit?, rateLimitWindowMs?, audienceIds?, maxAudienceRowsPerRequest? }`
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type * as Destination from "@tracklayer/core/Destination"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Emulator, type EmulatorConfig, type Faults as EmulatorFaults } from "./internal/emulator.js"

/** The access token the sandbox accepts by default. */
export const SANDBOX_ACCESS_TOKEN = "sandbox-meta-token"
/** The pixel id the sandbox knows by default. */
export const SANDBOX_PIXEL_ID = "1234567890123456"
/** The Custom Audiences the sandbox knows by default (any other id is answered as Meta answers an unknown one). */
export const SANDBOX_AUDIENCE_ID = "23850000000000001"
export const SANDBOX_AUDIENCE_ID_2 = "23850000000000002"

/** Bodies are kept up to this size (larger ones are still counted, and answered 413). */
const MAX_KEPT_BODY = 32 * 1024 * 1024

/** Options of `start`. */
export interface SandboxOptions {
  /** Port on 127.0.0.1 (default 0: a free port). */
  readonly port?: number
  /** Accepted access tokens (default `["sandbox-meta-token"]`). */
  readonly accessTokens?: ReadonlyArray<string>
  /** Known pixel ids (default `["1234567890123456"]`). */
  readonly pixelIds?: ReadonlyArray<string>
  /** Requests per second per token before code 17 (default 0: no limit). */
  readonly rateLimit?: number
  /** Known Custom Audience ids (default `[SANDBOX_AUDIENCE_ID, SANDBOX_AUDIENCE_ID_2]`). */
  readonly audienceIds?: ReadonlyArray<string>
}

/** Fault injection; see the module doc. */
export type Faults = EmulatorFaults

/** Runtime settings changed through `POST /__sandbox/config`. */
export type SandboxConfig = Partial<EmulatorConfig>

/** One stored event as `GET /__sandbox/events` returns it. */
export const StoredEvent = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  pixel_id: Schema.String,
  api_version: Schema.String,
  test_event_code: Schema.NullOr(Schema.String),
  event: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type StoredEvent = typeof StoredEvent.Type

/** `GET /__sandbox/stats`. */
export const Stats = Schema.Struct({
  requests: Schema.Number,
  responses: Schema.Record({ key: Schema.String, value: Schema.Number }),
  events_received: Schema.Number,
  events_accepted: Schema.Number,
  events_stored: Schema.Number,
  duplicates: Schema.Number,
  test_events: Schema.Number,
  rejected: Schema.Record({ key: Schema.String, value: Schema.Number }),
  audience_requests: Schema.Number,
  audience_responses: Schema.Record({ key: Schema.String, value: Schema.Number }),
  audience_rows_received: Schema.Number,
  audience_rows_invalid: Schema.Number
})
export type Stats = typeof Stats.Type

/** One Custom Audience as `GET /__sandbox/audiences/{id}` returns it. */
export const Audience = Schema.Struct({
  id: Schema.String,
  /** Identifier keys of the audience's uploads, in order (`null` before the first upload). */
  schema: Schema.NullOr(Schema.Array(Schema.String)),
  /** `FILE_IMPORTED.MULTI_HASHES` or `FILE_IMPORTED.HASHES_OR_USER_IDS`, fixed by the first upload. */
  data_source: Schema.NullOr(Schema.String),
  /** One row of identifier values per person, in `schema` order (`""` for a key not known for that person). */
  members: Schema.Array(Schema.Array(Schema.String))
})
export type Audience = typeof Audience.Type

/** A typed client of the control endpoints (failures are defects: it is a test and demo tool). */
export interface SandboxClient {
  readonly events: () => Effect.Effect<ReadonlyArray<StoredEvent>, never, HttpClient.HttpClient>
  readonly stats: () => Effect.Effect<Stats, never, HttpClient.HttpClient>
  /** Forgets events, dedup/throttle state, stats and faults. */
  readonly reset: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly setFaults: (faults: Faults) => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly clearFaults: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly configure: (config: SandboxConfig) => Effect.Effect<void, never, HttpClient.HttpClient>
  /** The rows of hashes currently in a known audience (`[["<email sha256>", "<phone sha256>"], …]`). */
  readonly audienceMembers: (
    audienceId: string
  ) => Effect.Effect<ReadonlyArray<ReadonlyArray<string>>, never, HttpClient.HttpClient>
  /** A known audience with its schema, data source and members. */
  readonly audience: (audienceId: string) => Effect.Effect<Audience, never, HttpClient.HttpClient>
}

/** A running sandbox. */
export interface Sandbox extends Destination.SandboxHandle {
  readonly port: number
  /** The base URL to use as the plugin's `endpoint` (= `url`). */
  readonly endpoint: string
  /** The first accepted access token. */
  readonly accessToken: string
  /** The first known pixel id. */
  readonly pixelId: string
  /** The first known Custom Audience id. */
  readonly audienceId: string
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
        Effect.withSpan("MetaCapiSandbox.events")
      ),
    stats: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/stats`), Stats).pipe(Effect.withSpan("MetaCapiSandbox.stats")),
    reset: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/events`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("MetaCapiSandbox.reset")
      ),
    setFaults: (faults) => post("/__sandbox/faults", faults).pipe(Effect.withSpan("MetaCapiSandbox.setFaults")),
    clearFaults: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/faults`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("MetaCapiSandbox.clearFaults")
      ),
    configure: (config) => post("/__sandbox/config", config).pipe(Effect.withSpan("MetaCapiSandbox.configure")),
    audience: (audienceId) =>
      run(HttpClientRequest.get(`${url}/__sandbox/audiences/${encodeURIComponent(audienceId)}`), Audience).pipe(
        Effect.withSpan("MetaCapiSandbox.audience")
      ),
    audienceMembers: (audienceId) =>
      run(HttpClientRequest.get(`${url}/__sandbox/audiences/${encodeURIComponent(audienceId)}`), Audience).pipe(
        Effect.map((a) => a.members),
        Effect.withSpan("MetaCapiSandbox.audienceMembers")
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

/**
 * Starts the sandbox on 127.0.0.1 (`port` 0 = a free port); it stops when the scope closes. `env` points the
 * plugin's settings (`META_ACCESS_TOKEN`, `META_PIXEL_ID`, `META_ENDPOINT`) at it.
 */
export const start = (options: SandboxOptions = {}): Effect.Effect<Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const config: Partial<{ -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] }> = {}
    if (options.accessTokens !== undefined) config.accessTokens = options.accessTokens
    if (options.pixelIds !== undefined) config.pixelIds = options.pixelIds
    if (options.rateLimit !== undefined) config.rateLimit = options.rateLimit
    if (options.audienceIds !== undefined) config.audienceIds = options.audienceIds
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
          body: Buffer.concat(chunks),
          bytes,
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
    const accessToken = emulator.config.accessTokens[0] ?? SANDBOX_ACCESS_TOKEN
    const pixelId = emulator.config.pixelIds[0] ?? SANDBOX_PIXEL_ID
    const audienceId = emulator.config.audienceIds[0] ?? SANDBOX_AUDIENCE_ID
    return {
      url,
      port,
      endpoint: url,
      accessToken,
      pixelId,
      audienceId,
      env: { META_ACCESS_TOKEN: accessToken, META_PIXEL_ID: pixelId, META_ENDPOINT: url },
      client: makeClient(url)
    } satisfies Sandbox
  }).pipe(Effect.withSpan("MetaCapiSandbox.start"))
