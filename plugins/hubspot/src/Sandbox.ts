/**
 * A local HTTP server that behaves like HubSpot's contacts batch upsert (`POST /crm/v3/objects/contacts/batch/upsert`),
 * GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`) and custom behavioural events (`POST /events/v3/send`,
 * `POST /events/v3/send/batch`) as documented: private-app bearer tokens, per-row validation with multi-status
 * answers, event definitions, uuid dedup, the ten-second and daily rate limits with their headers and 429 bodies;
 * plus control endpoints for tests and demos:
 *
 * - `GET /__sandbox/contacts` every contact with its properties; `GET /__sandbox/events` every stored occurrence
 * - `GET /__sandbox/gdpr-deletions` every GDPR delete received (`{ deletions, blocklist }`)
 * - `DELETE /__sandbox` resets everything; `GET /__sandbox/stats` requests, statuses, rows, events, 429s
 * - `POST /__sandbox/faults` `{ target?: "contacts" | "events" | "any", status, count?, skip?, retryAfter?, body? }` |
 *   `{ down }` | `{ delayMs }` | `{ exhaustDaily, dailyResetAt? }`; `DELETE /__sandbox/faults` clears them
 * - `POST /__sandbox/config` `{ tenSecondlyMax?, intervalMs?, dailyLimit?, timeZone?, maxBatchInputs?,
 *   maxEventInputs?, portalId?, eventDefinitions?, contactProperties?, accessTokens? }`
 */
import { HttpClient, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import type * as Destination from "@tracklayer/core/Destination"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import {
  Emulator,
  type EmulatorConfig,
  type Faults as EmulatorFaults,
  type PropertyDefinition
} from "./internal/emulator.js"

/** The private app token the sandbox accepts by default (a short, obviously fake value). */
export const SANDBOX_ACCESS_TOKEN = "pat-na1-sandbox"
/** The sandbox account's Hub ID: its event definitions are `pe5550001_<name>`. */
export const SANDBOX_PORTAL_ID = "5550001"

const MAX_KEPT_BODY = 32 * 1024 * 1024

/** Options of `start`. */
export interface SandboxOptions {
  /** Port on 127.0.0.1 (default 0: a free port). */
  readonly port?: number
  /** Requests per rolling window (default 100; 0 disables). */
  readonly tenSecondlyMax?: number
  /** The rolling window (default 10,000 ms). */
  readonly intervalMs?: number
  /** Requests per day (default 250,000; 0 disables). */
  readonly dailyLimit?: number
  /** The account's time zone, where the daily limit resets at midnight (default `America/New_York`). */
  readonly timeZone?: string
  /** Short names of the defined behavioural events (default: the five canonical conversions). */
  readonly eventDefinitions?: ReadonlyArray<string>
  /** Extra contact properties (audience properties, say), added to the default ones. */
  readonly contactProperties?: ReadonlyArray<PropertyDefinition>
}

/** Fault injection; see the module doc. */
export type Faults = EmulatorFaults

/** Runtime settings changed through `POST /__sandbox/config`. */
export type SandboxConfig = Partial<EmulatorConfig>

/** One contact as `GET /__sandbox/contacts` returns it. */
export const StoredContact = Schema.Struct({
  id: Schema.String,
  email: Schema.String,
  properties: Schema.Record({ key: Schema.String, value: Schema.String }),
  createdAt: Schema.String,
  updatedAt: Schema.String
})
export type StoredContact = typeof StoredContact.Type

/** One stored behavioural event occurrence as `GET /__sandbox/events` returns it. */
export const StoredEvent = Schema.Struct({
  seq: Schema.Number,
  received_at: Schema.Number,
  eventName: Schema.String,
  uuid: Schema.NullOr(Schema.String),
  occurrence: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type StoredEvent = typeof StoredEvent.Type

/** One GDPR delete as `GET /__sandbox/gdpr-deletions` returns it. */
export const GdprDeletion = Schema.Struct({
  objectId: Schema.String,
  idProperty: Schema.NullOr(Schema.String),
  /** The id of the contact permanently deleted; null when no contact matched (the email is blocklisted then). */
  deletedContactId: Schema.NullOr(Schema.String),
  blocklisted: Schema.Boolean,
  received_at: Schema.Number
})
export type GdprDeletion = typeof GdprDeletion.Type

const Counts = Schema.Record({ key: Schema.String, value: Schema.Number })

/** `GET /__sandbox/stats`. */
export const Stats = Schema.Struct({
  requests: Schema.Number,
  responses: Counts,
  contacts_created: Schema.Number,
  contacts_updated: Schema.Number,
  rows_rejected: Counts,
  events_received: Schema.Number,
  events_stored: Schema.Number,
  duplicates: Schema.Number,
  events_rejected: Counts,
  rate_limited: Counts
})
export type Stats = typeof Stats.Type

/** A typed client of the control endpoints (failures are defects: it is a test and demo tool). */
export interface SandboxClient {
  readonly contacts: () => Effect.Effect<ReadonlyArray<StoredContact>, never, HttpClient.HttpClient>
  readonly events: () => Effect.Effect<ReadonlyArray<StoredEvent>, never, HttpClient.HttpClient>
  /** The GDPR deletes received, in arrival order. */
  readonly gdprDeletions: () => Effect.Effect<ReadonlyArray<GdprDeletion>, never, HttpClient.HttpClient>
  readonly stats: () => Effect.Effect<Stats, never, HttpClient.HttpClient>
  /** Forgets contacts, events, dedup and rate state, stats and faults. */
  readonly reset: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly setFaults: (faults: Faults) => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly clearFaults: () => Effect.Effect<void, never, HttpClient.HttpClient>
  readonly configure: (config: SandboxConfig) => Effect.Effect<void, never, HttpClient.HttpClient>
}

/** A running sandbox. */
export interface Sandbox extends Destination.SandboxHandle {
  readonly port: number
  readonly accessToken: string
  readonly portalId: string
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
    contacts: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/contacts`),
        Schema.Struct({ contacts: Schema.Array(StoredContact) })
      ).pipe(Effect.map((r) => r.contacts), Effect.withSpan("HubSpotSandbox.contacts")),
    events: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/events`), Schema.Struct({ events: Schema.Array(StoredEvent) })).pipe(
        Effect.map((r) => r.events),
        Effect.withSpan("HubSpotSandbox.events")
      ),
    gdprDeletions: () =>
      run(
        HttpClientRequest.get(`${url}/__sandbox/gdpr-deletions`),
        Schema.Struct({ deletions: Schema.Array(GdprDeletion), blocklist: Schema.Array(Schema.String) })
      ).pipe(Effect.map((r) => r.deletions), Effect.withSpan("HubSpotSandbox.gdprDeletions")),
    stats: () =>
      run(HttpClientRequest.get(`${url}/__sandbox/stats`), Stats).pipe(Effect.withSpan("HubSpotSandbox.stats")),
    reset: () =>
      run(HttpClientRequest.del(`${url}/__sandbox`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("HubSpotSandbox.reset")
      ),
    setFaults: (faults) => post("/__sandbox/faults", faults).pipe(Effect.withSpan("HubSpotSandbox.setFaults")),
    clearFaults: () =>
      run(HttpClientRequest.del(`${url}/__sandbox/faults`), Schema.Unknown).pipe(
        Effect.asVoid,
        Effect.withSpan("HubSpotSandbox.clearFaults")
      ),
    configure: (config) => post("/__sandbox/config", config).pipe(Effect.withSpan("HubSpotSandbox.configure"))
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

/**
 * Starts the sandbox on 127.0.0.1 (`port` 0 = a free port); it stops when the scope closes. `env` points the
 * plugin's settings at it: `HUBSPOT_ACCESS_TOKEN`, `HUBSPOT_ENDPOINT` and `HUBSPOT_PORTAL_ID`.
 */
export const start = (options: SandboxOptions = {}): Effect.Effect<Sandbox, never, Scope.Scope> =>
  Effect.gen(function*() {
    const config: Partial<{ -readonly [K in keyof EmulatorConfig]: EmulatorConfig[K] }> = {}
    if (options.tenSecondlyMax !== undefined) config.tenSecondlyMax = options.tenSecondlyMax
    if (options.intervalMs !== undefined) config.intervalMs = options.intervalMs
    if (options.dailyLimit !== undefined) config.dailyLimit = options.dailyLimit
    if (options.timeZone !== undefined) config.timeZone = options.timeZone
    if (options.eventDefinitions !== undefined) config.eventDefinitions = options.eventDefinitions
    const emulator = new Emulator(config)
    if (options.contactProperties !== undefined) {
      emulator.config = {
        ...emulator.config,
        contactProperties: [...emulator.config.contactProperties, ...options.contactProperties]
      }
    }
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
    const accessToken = emulator.config.accessTokens[0] ?? SANDBOX_ACCESS_TOKEN
    return {
      url,
      port,
      accessToken,
      portalId: emulator.config.portalId,
      env: {
        HUBSPOT_ACCESS_TOKEN: accessToken,
        HUBSPOT_ENDPOINT: url,
        HUBSPOT_PORTAL_ID: emulator.config.portalId
      },
      client: makeClient(url)
    } satisfies Sandbox
  }).pipe(Effect.withSpan("HubSpotSandbox.start"))
