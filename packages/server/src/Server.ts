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
import { createServer } from "node:http"
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

/** The Node HTTP server on `listen`, with the request timeout enforced. */
const httpServer = (listen: Listen, requestTimeout: Duration.DurationInput | undefined) =>
  Layer.unwrapEffect(Effect.map(
    requestTimeout !== undefined ? Effect.succeed(Duration.decode(requestTimeout)) : RequestTimeoutConfig,
    (timeout) => {
      const ms = Math.max(1, Math.round(Duration.toMillis(timeout)))
      return NodeHttpServer.layer(() =>
        createServer({
          requestTimeout: ms,
          headersTimeout: Math.min(ms, 60_000),
          // Node checks these timeouts only every `connectionsCheckingInterval` (default 30 s).
          connectionsCheckingInterval: Math.min(1000, ms)
        }), listen)
    }
  ))

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
  return Layer.mergeAll(Gateway.layer, announce).pipe(
    Layer.provide(pipe),
    Layer.provide(options.keys),
    Layer.provide(httpServer(options.listen, options.requestTimeout))
  )
}
