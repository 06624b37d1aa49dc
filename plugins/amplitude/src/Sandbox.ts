/**
 * A local HTTP server that behaves like Amplitude's HTTP API v2 (`POST /2/httpapi`) as documented: validation,
 * limits, error bodies, throttling and `insert_id` dedup; its Identify API (`POST /identify`: form fields,
 * identification validation, user property operations applied per user); its User Privacy API. Control endpoints
 * for tests and demos:
 *
 * - `GET /__sandbox/events` every stored event in arrival order; `DELETE /__sandbox/events` resets everything
 * - `GET /__sandbox/identifies` every identification of accepted identify requests, in arrival order
 * - `GET /__sandbox/user-properties?user_id=…` (or `device_id=…`) the properties the identifies left
 * - `GET /__sandbox/deletions` every User Privacy API deletion request (`POST /api/2/deletions/users`) received
 * - `GET /__sandbox/stats` requests, statuses, events accepted/stored, duplicates, rejections by reason (HTTP API)
 * - `POST /__sandbox/faults` `{ target?, status, count, retryAfter?, ingest? }` | `{ target?, reset: true, count,
 *   ingest? }` (connection destroyed unanswered) | `{ target?, timeout: true, count, ingest? }` (never answered) |
 *   `{ down }` | `{ delayMs }`; `DELETE /__sandbox/faults` clears them
 * - `POST /__sandbox/config` `{ throttle?, epsThreshold?, throttleWindowMs?, maxBodyBytes?, apiKeys?, secretKeys?,
 *   deletionRateLimit?, maxIdentificationsPerRequest?, propertyUpdatesPerHour? }`
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type * as Destination from "@tracklayer/core/Destination"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Emulator, type EmulatorConfig, type Faults as EmulatorFaults } from "./internal/emulator.js"

/** The api key the sandbox accepts by default. */
export const SANDBOX_API_KEY = "sandbox-amplitude-key"
/** The secret key the sandbox's User Privacy API accepts by default (with any accepted api key). */
export const SANDBOX_SECRET_KEY = "sandbox-amplitude-secret"

/** Bodies are kept up to this size (larger ones are still counted, and answered 413). */
const MAX_KEPT_BODY = 32 * 1024 * 1024

/** Options of `start`. */
export interface SandboxOptions {
  /** Port on 127.0.0.1 (default 0: a free port). */
  readonly port?: number
  /** Accepted api keys (default `["sandbox-amplitude-key"]`). */
  readonly apiKeys?: ReadonlyArray<string>
  /** Accepted secret keys for the User Privacy API (default `["sandbox-amplitude-secret"]`). */
  readonly secretKeys?: ReadonlyArray<string>
  /** One User Privacy API request per second per api key, as Amplitude (default true). */
  readonly deletionRateLimit?: boolean
  /** Per-user/device throttling at `epsThreshold` events/s (default on, 30). */
  readonly throttle?: boolean
  readonly epsThreshold?: number
  /** Bodies of this many bytes or more get 413 (default 1,000,000). */
  readonly maxBodyBytes?: number
  /** Property updates per user per hour the Identify API applies; later ones are dropped (default 1800). */
  readonly propertyUpdatesPerHour?: number
}

/** Fault injection; see the module doc. */
export type Faults = EmulatorFaults

/** Runtime settings changed through `POST /__sandbox/config`. */
export interface SandboxConfig {
  readonly throttle?: boolean
  readonly epsThreshold?: number
  readonly throttleWindowMs?: number
  readonly maxBodyBytes?: number
  readonly apiKeys?: ReadonlyArray<string>
  readonly secretKeys?: ReadonlyArray<string>
  readonly deletionRateLimit?: boolean
  readonly maxIdentificationsPerRequest?: number
  readonly propertyUpdatesPerHour?: number
}

/** One identification as `GET /__sandbox/identifies` returns it. */
export const StoredIdentify = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  /** The identification exactly as received. */
  identification: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  /** False when its property updates were dropped (over `propertyUpdatesPerHour` for the user). */
  applied: Schema.Boolean
})
export type StoredIdentify = typeof StoredIdentify.Type

/** One deletion request as `GET /__sandbox/deletions` returns it. */
export const StoredDeletion = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  user_ids: Schema.Array(Schema.String),
  amplitude_ids: Schema.Array(Schema.Number),
  requester: Schema.NullOr(Schema.String),
  ignore_invalid_id: Schema.NullOr(Schema.String),
  delete_from_org: Schema.NullOr(Schema.String),
  day: Schema.String
})
export type StoredDeletion = typeof StoredDeletion.Type

/** One stored event as `GET /__sandbox/events` returns it. */
export const StoredEvent = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  insert_id: Schema.NullOr(Schema.String),
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
  throttled_events: Schema.Number,
  rejected: Schema.Record({ key: Schema.String, value: Schema.Number })
})
export type Stats = typeof Stats.Type

/** A typed client of the control endpoints (failures are defects: it is a test and demo tool). */
export interface SandboxClient {
  readonly events: () => Effect.Effect<ReadonlyArray<StoredEvent>, never, HttpClient.HttpClient>
  /** Identifications of accepted Identify API requests, in arrival order (`seq` from 1). */
  readonly identifies: () => Effect.Effect<ReadonlyArray<StoredIdentify>, never, HttpClient.HttpClient>
  /** The user properties the identifies left for a user id (`{}` for an unknown user). */
  readonly userProperties: (
    userId: string
  ) => Effect.Effect<Readonly<Record<string, unknown>>, never, HttpClient.HttpClient>
  /** User Privacy API deletion requests received, in arrival order. */
  readonly deletions: () => Effect.Effect<ReadonlyArray<StoredDeletion>, never, HttpClient.HttpClient>
  readonly stats: () => Effect.Effect<Stats, never, HttpClient.HttpClient>
  /** Forgets events, dedup/throttle state, stats and faults. */
  readonly reset: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly setFaults: (faults: Faults) => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly clearFaults: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly configure: (config: SandboxConfig) => Effect.Effect<void, never, HttpClient.HttpClient>
}

/** A running sandbox. */
export interface Sandbox extends Destination.SandboxHandle {
  readonly port: number
  /** `url + "/2/httpapi"`. */
  readonly endpoint: string
  /** `url + "/identify"` (what the plugin derives from `endpoint`). */
  readonly identifyEndpoint: string
  /** The first accepted api key. */
  readonly apiKey: string
  /** The first accepted secret key (User Privacy API). */
  readonly secretKey: string
  /** `url + "/api/2/deletions/users"`. */
  readonly deletionEndpoint: string
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
        Effect.withSpan("AmplitudeSandbox.events")
      ),
    identifies: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/identifies`),
        Schema.Struct({ identifies: Schema.Array(StoredIdentify) })
      ).pipe(
        Effect.map((r) => r.identifies),
        Effect.withSpan("AmplitudeSandbox.identifies")
      ),
    userProperties: (userId) =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/user-properties`).pipe(
          HttpClientRequest.setUrlParam("user_id", userId)
        ),
        Schema.Struct({ user_properties: Schema.Record({ key: Schema.String, value: Schema.Unknown }) })
      ).pipe(
        Effect.map((r) => r.user_properties),
        Effect.withSpan("AmplitudeSandbox.userProperties")
      ),
    deletions: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/deletions`),
        Schema.Struct({ deletions: Schema.Array(StoredDeletion) })
      ).pipe(
        Effect.map((r) => r.deletions),
        Effect.withSpan("AmplitudeSandbox.deletions")
      ),
    stats: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/stats`), Stats).pipe(Effect.withSpan("AmplitudeSandbox.stats")),
    reset: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/events`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("AmplitudeSandbox.reset")
      ),
    setFaults: (faults) => post("/__sandbox/faults", faults).pipe(Effect.withSpan("AmplitudeSandbox.setFaults")),
    clearFaults: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/faults`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("AmplitudeSandbox.clearFaults")
      ),
    configure: (config) => post("/__sandbox/config", config).pipe(Effect.withSpan("AmplitudeSandbox.configure"))
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
 * plugin's settings (`AMPLITUDE_API_KEY`, `AMPLITUDE_ENDPOINT`, `AMPLITUDE_SECRET_KEY`, `AMPLITUDE_DELETION_ENDPOINT`) at it.
 */
export const start = (options: SandboxOptions = {}): Effect.Effect<Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const config: Partial<{ -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] }> = {}
    if (options.apiKeys !== undefined) config.apiKeys = options.apiKeys
    if (options.throttle !== undefined) config.throttle = options.throttle
    if (options.epsThreshold !== undefined) config.epsThreshold = options.epsThreshold
    if (options.maxBodyBytes !== undefined) config.maxBodyBytes = options.maxBodyBytes
    if (options.secretKeys !== undefined) config.secretKeys = options.secretKeys
    if (options.deletionRateLimit !== undefined) config.deletionRateLimit = options.deletionRateLimit
    if (options.propertyUpdatesPerHour !== undefined) config.propertyUpdatesPerHour = options.propertyUpdatesPerHour
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
          // Connection faults: a reset destroys the socket unanswered; a timeout leaves it open until the client
          // gives up (or the sandbox stops).
          if (reply.connection === "reset") return void req.socket.destroy()
          if (reply.connection === "timeout") return
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
    const apiKey = emulator.config.apiKeys[0] ?? SANDBOX_API_KEY
    const secretKey = emulator.config.secretKeys[0] ?? SANDBOX_SECRET_KEY
    return {
      url,
      port,
      endpoint: `${url}/2/httpapi`,
      identifyEndpoint: `${url}/identify`,
      apiKey,
      secretKey,
      deletionEndpoint: `${url}/api/2/deletions/users`,
      env: {
        AMPLITUDE_API_KEY: apiKey,
        AMPLITUDE_ENDPOINT: `${url}/2/httpapi`,
        AMPLITUDE_SECRET_KEY: secretKey,
        AMPLITUDE_DELETION_ENDPOINT: `${url}/api/2/deletions/users`
      },
      client: makeClient(url)
    } satisfies Sandbox
  }).pipe(Effect.withSpan("AmplitudeSandbox.start"))
