/**
 * The whole gateway as one Layer: store (migrated) → vault → event store → ingest, delivery, explain, erasure → HTTP
 * server.
 */
import { HttpServer } from "@effect/platform"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import {
  Database,
  Delivery,
  Erasure,
  EventStore,
  Explain,
  Identity,
  Ingest,
  Lease,
  Projector,
  Retention,
  Source,
  TrackLayerConfig,
  TraitSync,
  Vault
} from "@tracklayer/core"
import { Config, ConfigError, Duration, Effect, Either, Layer } from "effect"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Server as NetServer, type Socket } from "node:net"
import * as Gateway from "./Gateway.js"
import type { Keys } from "./Keys.js"

/** Where the gateway listens. */
export interface Listen {
  readonly port: number
  readonly host: string
}

/**
 * How long one request's headers and body may take to arrive (`TRACKLAYER_REQUEST_TIMEOUT`, default 30 s). A client
 * that sends slower (a slow-loris body) has its connection closed instead of holding it open forever.
 */
export const RequestTimeoutConfig: Config.Config<Duration.Duration> = Config.duration("TRACKLAYER_REQUEST_TIMEOUT")
  .pipe(
    Config.withDescription("how long a request's headers and body may take to arrive, e.g. \"30 seconds\""),
    Config.withDefault(Duration.seconds(30)),
    Config.mapOrFail((d) =>
      Duration.toMillis(d) >= 1 && Duration.isFinite(d)
        ? Either.right(d)
        : Either.left(
          ConfigError.InvalidData(["TRACKLAYER_REQUEST_TIMEOUT"], "must be a finite duration of at least 1 ms")
        )
    )
  )

/** How long a graceful stop waits for the requests in flight to be answered before closing their connections. */
export const SHUTDOWN_GRACE = Duration.seconds(20)
const FRESH_WAIT_MS = 2000
/** Resumes in the check phase, i.e. after the event loop's next poll phase. */
const afterPoll = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

/**
 * The Node HTTP server on `listen` (request timeout enforced), and `drain`: a layer whose release stops accepting
 * connections (new ones are refused at once), closes idle keep-alive connections, and waits — at most
 * `SHUTDOWN_GRACE` — until every request in flight has been answered. It is released before the pipeline, so those
 * answers still reach the store (docs/operations.md, "Stopping").
 */
const httpServer = (listen: Listen, timeout: Duration.Duration) => {
  const ms = Math.max(1, Math.round(Duration.toMillis(timeout)))
  const server = createServer({
    requestTimeout: ms,
    headersTimeout: Math.min(ms, 60_000),
    // Node checks these timeouts only every `connectionsCheckingInterval` (default 30 s).
    connectionsCheckingInterval: Math.min(1000, ms)
  })
  // Requests being answered, and connections accepted whose first request has not arrived (or not been parsed).
  const active = new Set<ServerResponse>()
  const fresh = new Set<Socket>()
  let draining = false
  server.on("connection", (socket: Socket) => {
    fresh.add(socket)
    socket.once("close", () => fresh.delete(socket))
  })
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    fresh.delete(req.socket)
    active.add(res)
    // Answered while stopping: the connection is not kept alive for another request.
    if (draining) res.shouldKeepAlive = false
    res.once("close", () => active.delete(res))
    // The port is bound before the store is open and the routes are installed (and after they are removed on a
    // stop): with no other listener nothing would ever answer, so the client is told to come back instead of
    // waiting forever (a client retrying against a restarting gateway, a load balancer's probe).
    if (server.listenerCount("request") === 1) {
      res.shouldKeepAlive = false
      res.writeHead(503, { "content-type": "application/json", "retry-after": "1" })
      res.end(
        JSON.stringify({ error: { code: "store_unavailable", message: "the event store is unavailable; retry later" } })
      )
      req.resume()
    }
  })
  const drain = Layer.scopedDiscard(Effect.addFinalizer(() =>
    Effect.gen(function*() {
      draining = true
      for (const res of active) if (!res.headersSent) res.shouldKeepAlive = false
      // A moment first: connections the kernel already accepted are taken in, not reset with the listener.
      yield* Effect.sleep(Duration.millis(50))
      // …and past the event loop's poll phase (where they are accepted) even if the loop was busy meanwhile.
      yield* afterPoll
      yield* afterPoll
      // Stop listening, but leave open connections alone (http's close() would drop those whose request has
      // arrived but is not parsed yet, e.g. while the event loop was busy): their requests are answered too.
      if (server.listening) NetServer.prototype.close.call(server)
      const closedAt = Date.now()
      // Done when nothing is being answered and no new connection still owes its first request (a connection
      // that sends nothing for FRESH_WAIT is not waited for).
      while (active.size > 0 || (fresh.size > 0 && Date.now() - closedAt < FRESH_WAIT_MS)) {
        yield* Effect.sleep(Duration.millis(25))
      }
    }).pipe(
      // Finalizers are uninterruptible; the wait must not be, or the timeout could not end it.
      Effect.interruptible,
      Effect.timeout(SHUTDOWN_GRACE),
      Effect.ignore,
      Effect.zipRight(Effect.sync(() => {
        server.closeAllConnections()
        server.close()
      }))
    )
  ))
  return { http: NodeHttpServer.layer(() => server, listen), drain }
}

/** The pipeline without HTTP: store, ingest, delivery and explain on the given store layer. */
export const pipeline = <E, R>(
  config: TrackLayerConfig.ResolvedConfig,
  store: Layer.Layer<Database.Store | import("@effect/sql").SqlClient.SqlClient, E, R>,
  /** The master key of the vault (default: from `TRACKLAYER_MASTER_KEY`). */
  masterKey: Layer.Layer<Vault.MasterKey, TrackLayerConfig.ConfigError> = Vault.layerMasterKeyConfig
) => {
  const configLayer = Layer.succeed(TrackLayerConfig.TrackLayerConfig, config)
  // Personal data is sealed per person by the vault under the master key (docs/privacy.md).
  const vault = Vault.layer.pipe(Layer.provide(masterKey))
  // Leases keep background work (projector, delivery, trait sync) in one process at a time (Lease.ts).
  const base = Layer.mergeAll(EventStore.layer, Identity.layer, Lease.layer.pipe(Layer.provide(configLayer))).pipe(
    Layer.provideMerge(vault),
    Layer.provideMerge(store)
  )
  // The projector folds the log into identity and consent state; delivery reads only what it has folded.
  const projected = Projector.layer.pipe(Layer.provideMerge(base), Layer.provide(configLayer))
  const services = Layer.mergeAll(
    Ingest.layer,
    Delivery.layer,
    Erasure.layer,
    Retention.layer,
    Source.layer,
    TraitSync.layer
  ).pipe(
    Layer.provideMerge(projected),
    Layer.provide(NodeHttpClient.layerUndici),
    Layer.provide(configLayer)
  )
  return Explain.layer.pipe(Layer.provideMerge(services), Layer.provideMerge(configLayer))
}

/** The gateway serving HTTP on `listen`, with the store selected by configuration (DATABASE_URL or PGlite). */
export const layer = <E, R>(options: {
  readonly config: TrackLayerConfig.ResolvedConfig
  readonly listen: Listen
  readonly keys: Layer.Layer<Keys, E, R>
  readonly store?: typeof Database.layer
  /** The vault's master key (default: from `TRACKLAYER_MASTER_KEY`). */
  readonly masterKey?: Layer.Layer<Vault.MasterKey, TrackLayerConfig.ConfigError>
  /** How long a request may take to arrive (default: `TRACKLAYER_REQUEST_TIMEOUT`, else 30 s). */
  readonly requestTimeout?: Duration.DurationInput
  /** Called once the server listens, with its base URL and the store in use. */
  readonly onListening?: (url: string, store: Database.StoreInfo) => Effect.Effect<void>
}) => {
  const pipe = pipeline(options.config, options.store ?? Database.layer, options.masterKey)
  const announce = Layer.effectDiscard(
    Effect.gen(function*() {
      const store = yield* Database.Store
      const url = yield* HttpServer.addressFormattedWith((a) => Effect.succeed(a))
      if (options.onListening) yield* options.onListening(url, store)
    })
  )
  const timeout = options.requestTimeout !== undefined
    ? Effect.succeed(Duration.decode(options.requestTimeout))
    : RequestTimeoutConfig
  // Built in order: HTTP server (listening), keys, pipeline, routes, drain. Released in reverse, so a stop drains
  // HTTP first, then stops background work (batches in flight finish and are recorded, leases released), then the
  // store closes.
  return Layer.unwrapEffect(Effect.map(timeout, (t) => {
    const { drain, http } = httpServer(options.listen, t)
    return drain.pipe(
      Layer.provideMerge(Layer.mergeAll(Gateway.layer, announce)),
      Layer.provide(pipe),
      Layer.provide(options.keys),
      Layer.provide(http)
    )
  }))
}
