/**
 * End-to-end harness: the real gateway (HTTP server, store, delivery) in this process on a free port, with an
 * Amplitude sandbox per destination. The store is PGlite, or PostgreSQL in a private schema when DATABASE_URL is
 * set. Everything is released by `close()`.
 */
import type { HttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { type Destination, TrackLayerConfig, Vault, Vocabulary } from "@tracklayer/core"
import { Amplitude, AmplitudeSandbox } from "@tracklayer/plugin-amplitude"
import { Keys, Server } from "@tracklayer/server"
import { TestStore } from "@tracklayer/testkit"
import { Config, Deferred, Effect, Exit, Layer, Logger, LogLevel, Scope } from "effect"

export const WRITE_KEY = "tl_test_write_key_0123456789"
export const ADMIN_KEY = "tl_test_admin_key_0123456789"
/** The vault master key of every harness gateway (fixed, so two gateways can share a store). */
export const TEST_MASTER_KEY = "dGxfdGVzdF9tYXN0ZXJfa2V5XzAxMjM0NTY3ODlhYmM="

/** One destination's sandbox and its control client. */
export interface SandboxView {
  readonly sandbox: AmplitudeSandbox.Sandbox
  readonly events: () => Promise<ReadonlyArray<AmplitudeSandbox.StoredEvent>>
  readonly stats: () => Promise<AmplitudeSandbox.Stats>
  readonly setFaults: (f: AmplitudeSandbox.Faults) => Promise<void>
  /** Deletion requests its User Privacy API received. */
  readonly deletions: () => Promise<ReadonlyArray<AmplitudeSandbox.StoredDeletion>>
}

export interface Harness {
  readonly url: string
  /** Destination id → its sandbox. */
  readonly sandboxes: Readonly<Record<string, SandboxView>>
  /** The first destination's sandbox. */
  readonly sandbox: AmplitudeSandbox.Sandbox
  readonly sandboxEvents: () => Promise<ReadonlyArray<AmplitudeSandbox.StoredEvent>>
  readonly sandboxStats: () => Promise<AmplitudeSandbox.Stats>
  /** `GET /v1/destinations`. */
  readonly destinations: () => Promise<Array<Record<string, any>>>
  readonly post: (
    body: unknown,
    init?: { key?: string; raw?: string; headers?: Record<string, string> }
  ) => Promise<{ status: number; json: any; headers: Headers }>
  readonly explain: (eventId: string) => Promise<{ status: number; json: any }>
  /** The vault master key the gateway runs with (base64). */
  readonly masterKey: string
  /** Runs an effect against the gateway's store (same database, same connection pool). */
  readonly sql: <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) => Promise<A>
  /** `DELETE /v1/people/:id`. */
  readonly erase: (id: string, requester?: string) => Promise<{ status: number; json: any }>
  /** `GET /v1/people/:id`. */
  readonly person: (id: string) => Promise<{ status: number; json: any }>
  /** `POST /v1/consent`. */
  readonly consent: (updates: ReadonlyArray<unknown>) => Promise<{ status: number; json: any }>
  readonly close: () => Promise<void>
}

export interface HarnessOptions {
  readonly config?: Partial<TrackLayerConfig.TrackLayerConfigInput>
  /** Amplitude destinations, each with its own sandbox (default: one, `amplitude`, from the beginning). */
  readonly destinations?: ReadonlyArray<{
    readonly id: string
    readonly startFrom?: Destination.StartFrom
    /** Use this api key instead of the sandbox's (to provoke auth failures). */
    readonly apiKey?: string
    /** Consent purposes the instance needs (default: the plugin's, analytics). */
    readonly purposes?: ReadonlyArray<string>
    /** Forward erasures to the sandbox's User Privacy API (default true: the secret key is configured). */
    readonly deletion?: boolean
  }>
  readonly throttle?: boolean
  /** The store (default: a fresh TestStore). */
  readonly store?: Layer.Layer<any, any, never>
}

const run = <A, E>(eff: Effect.Effect<A, E, never>) => Effect.runPromise(eff)
const withClient = <A>(eff: Effect.Effect<A, never, HttpClient.HttpClient>) =>
  run(Effect.provide(eff, NodeHttpClient.layerUndici))

export const startHarness = async (options: HarnessOptions = {}): Promise<Harness> => {
  const scope = await run(Scope.make())
  try {
    const specs = options.destinations ?? [{ id: "amplitude", startFrom: "beginning" as const }]
    const sandboxes: Record<string, SandboxView> = {}
    const instances: Array<Destination.DestinationInstance> = []
    for (const spec of specs) {
      const sandbox = await run(
        Scope.extend(AmplitudeSandbox.start({ port: 0, throttle: options.throttle ?? false }), scope)
      )
      sandboxes[spec.id] = {
        sandbox,
        events: () => withClient(sandbox.client.events()),
        stats: () => withClient(sandbox.client.stats()),
        setFaults: (f) => withClient(sandbox.client.setFaults(f)),
        deletions: () => withClient(sandbox.client.deletions())
      }
      instances.push(Amplitude.destination({
        id: spec.id,
        settings: Config.succeed({
          apiKey: spec.apiKey ?? sandbox.apiKey,
          endpoint: sandbox.endpoint,
          deletionEndpoint: sandbox.deletionEndpoint,
          ...(spec.deletion !== false ? { secretKey: sandbox.secretKey } : {})
        }),
        ...(spec.startFrom !== undefined ? { startFrom: spec.startFrom } : {}),
        ...(spec.purposes !== undefined ? { purposes: spec.purposes } : {})
      }))
    }
    const first = sandboxes[specs[0]!.id]!
    const resolved = TrackLayerConfig.resolve({
      vocabulary: Vocabulary.canonical,
      destinations: instances,
      delivery: { pollInterval: "50 millis", initialBackoff: "200 millis", maxBackoff: "2 seconds" },
      ...options.config
    })
    if (resolved instanceof TrackLayerConfig.ConfigError) throw new Error(resolved.message)
    const ready = await run(Deferred.make<string>())
    // The store is built first, so tests can query the same database the gateway uses.
    const storeContext = await run(
      Layer.buildWithScope((options.store ?? TestStore.layer) as typeof TestStore.layer, scope)
    )
    const masterKey = TEST_MASTER_KEY
    const layer = Server.layer({
      config: resolved,
      listen: { port: 0, host: "127.0.0.1" },
      keys: Keys.layer([WRITE_KEY], ADMIN_KEY),
      store: Layer.succeedContext(storeContext) as never,
      masterKey: Vault.layerMasterKey(masterKey),
      onListening: (url) => Deferred.succeed(ready, url).pipe(Effect.asVoid)
    })
    // Delivery warnings (backoff after injected faults) are expected here; TL_TEST_LOG=debug shows them.
    const quiet = Logger.minimumLogLevel(process.env["TL_TEST_LOG"] === "debug" ? LogLevel.Debug : LogLevel.Error)
    await run(
      Scope.extend(Layer.buildWithScope(layer.pipe(Layer.provide(quiet)), scope), scope) as Effect.Effect<
        unknown,
        unknown,
        never
      >
    )
    const url = await run(Deferred.await(ready))
    return {
      url,
      sandboxes,
      sandbox: first.sandbox,
      sandboxEvents: first.events,
      sandboxStats: first.stats,
      masterKey,
      sql: (effect) => run(Effect.provide(effect, storeContext)),
      erase: async (id, requester) => {
        const q = requester !== undefined ? `?requester=${encodeURIComponent(requester)}` : ""
        const res = await fetch(`${url}/v1/people/${encodeURIComponent(id)}${q}`, {
          method: "DELETE",
          headers: { authorization: `Bearer ${ADMIN_KEY}` }
        })
        return { status: res.status, json: await res.json() }
      },
      person: async (id) => {
        const res = await fetch(`${url}/v1/people/${encodeURIComponent(id)}`, {
          headers: { authorization: `Bearer ${ADMIN_KEY}` }
        })
        return { status: res.status, json: await res.json() }
      },
      destinations: async () => {
        const res = await fetch(`${url}/v1/destinations`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
        return ((await res.json()) as { destinations: Array<Record<string, any>> }).destinations
      },
      post: async (body, init = {}) => {
        const res = await fetch(`${url}/v1/events`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            authorization: `Bearer ${init.key ?? WRITE_KEY}`,
            ...init.headers
          },
          body: init.raw ?? JSON.stringify(body)
        })
        const text = await res.text()
        let json: unknown = undefined
        try {
          json = JSON.parse(text)
        } catch {
          json = text
        }
        return { status: res.status, json, headers: res.headers }
      },
      explain: async (eventId) => {
        const res = await fetch(`${url}/v1/events/${encodeURIComponent(eventId)}/explain`, {
          headers: { authorization: `Bearer ${ADMIN_KEY}` }
        })
        return { status: res.status, json: await res.json() }
      },
      consent: async (updates) => {
        const res = await fetch(`${url}/v1/consent`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${WRITE_KEY}` },
          body: JSON.stringify({ updates })
        })
        return { status: res.status, json: await res.json() }
      },
      close: () => run(Scope.close(scope, Exit.void))
    }
  } catch (e) {
    await run(Scope.close(scope, Exit.void))
    throw e
  }
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export const waitFor = async (check: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, intervalMs))
  }
  return check()
}
