/**
 * `tracklayer serve [--sandbox]`: runs the gateway. With `--sandbox`, every configured plugin's sandbox is started
 * first and the destinations are pointed at it (its values laid over the environment), and keys are generated.
 */
import { Database, Delivery, type Destination, TrackLayerConfig, Vault } from "@tracklayer/core"
import { Keys, Server } from "@tracklayer/server"
import { Config, ConfigProvider, Console, Effect, Layer, Option, Redacted } from "effect"
import * as LocalState from "./LocalState.js"

/** Listening address from flags and environment. */
export const ListenConfig = (port: Option.Option<number>) =>
  Config.all({
    port: Option.match(port, {
      onNone: () => Config.integer("TRACKLAYER_PORT").pipe(Config.withDefault(8787)),
      onSome: (p) => Config.succeed(p)
    }),
    host: Config.string("TRACKLAYER_HOST").pipe(Config.withDefault("127.0.0.1"))
  })

const storeLine = (s: Database.StoreInfo) =>
  s.kind === "pglite" ? `PGlite (embedded) at ${s.location}` : `PostgreSQL at ${s.location}`

/** Runs the gateway until interrupted. */
export const serve = (options: {
  readonly config: TrackLayerConfig.ResolvedConfig
  readonly sandbox: boolean
  readonly port: Option.Option<number>
  readonly cwd: string
}) =>
  Effect.gen(function*() {
    const listen = yield* ListenConfig(options.port)
    if (!options.sandbox) {
      // Checked before anything else: without it no personal data could be stored (docs/privacy.md).
      const masterKey = yield* Vault.masterKeyFromConfig
      const gateway = Server.layer({
        config: options.config,
        listen,
        keys: Keys.layerConfig,
        masterKey: Layer.succeed(Vault.MasterKey, masterKey),
        onListening: (url, store) =>
          Effect.logInfo(
            `TrackLayer gateway listening on ${url} (store: ${storeLine(store)}; destinations: ${
              options.config.destinations.map((d) => d.id).join(", ") || "none"
            })`
          )
      })
      return yield* Layer.launch(gateway)
    }

    // Sandbox mode: start each plugin's sandbox once, then lay their settings over the environment.
    const started = new Map<Destination.DestinationPlugin, Destination.SandboxHandle>()
    for (const d of options.config.destinations) {
      if (started.has(d.plugin) || d.plugin.sandbox === undefined) continue
      started.set(d.plugin, yield* d.plugin.sandbox({}))
    }
    const overlay = new Map<string, string>()
    for (const h of started.values()) for (const [k, v] of Object.entries(h.env)) overlay.set(k, v)
    // Sources (inbound webhooks) get a generated shared secret, kept in the state file.
    const sourceSecret = options.config.sources.length > 0 ? LocalState.sandboxSourceSecret(options.cwd) : undefined
    for (const s of options.config.sources) {
      if (sourceSecret === undefined || s.plugin.sandboxEnv === undefined) continue
      for (const [k, v] of Object.entries(s.plugin.sandboxEnv(sourceSecret))) overlay.set(k, v)
    }
    const provider = ConfigProvider.fromMap(overlay, { pathDelim: "_" }).pipe(
      ConfigProvider.orElse(() => ConfigProvider.fromEnv())
    )
    // Sandbox mode promises that nothing leaves this machine: every destination must get its settings from its
    // sandbox alone. An instance that reads other variables (its own namespace, say) would otherwise pick up real
    // credentials from the environment, so it is refused here with the reason.
    yield* Delivery.resolveDestinations(options.config).pipe(
      Effect.withConfigProvider(ConfigProvider.fromMap(overlay, { pathDelim: "_" })),
      Effect.mapError((e) =>
        new TrackLayerConfig.ConfigError({
          field: e.field,
          detail: `${e.detail}; in --sandbox mode a destination's settings must come from its plugin's sandbox ` +
            "(use the plugin's default variables, e.g. Amplitude.settingsFromEnv()), or run without --sandbox"
        })
      )
    )

    const envKeys = yield* Config.option(Keys.KeysConfig)
    const generated = LocalState.sandboxKeys(options.cwd)
    const keys = Option.match(envKeys, {
      onNone: () => ({ write: generated.writeKey, admin: generated.adminKey, fromEnv: false }),
      onSome: () => ({ write: "(from TRACKLAYER_WRITE_KEYS)", admin: "(from TRACKLAYER_ADMIN_KEY)", fromEnv: true })
    })
    const keysLayer = keys.fromEnv ? Keys.layerConfig : Keys.layer([generated.writeKey], generated.adminKey)
    // The sandbox's personal data is encrypted too, under TRACKLAYER_MASTER_KEY or a key kept in the state file.
    const envMasterKey = yield* Config.option(Vault.MasterKeyConfig)
    const masterKeyText = Option.match(envMasterKey, {
      onNone: () => LocalState.sandboxMasterKey(options.cwd),
      onSome: (k) => Redacted.value(k)
    })
    const masterKey = yield* Vault.masterKeyFrom(masterKeyText)

    const gateway = Server.layer({
      config: options.config,
      listen,
      keys: keysLayer,
      masterKey: Layer.succeed(Vault.MasterKey, masterKey),
      onListening: (url, store) =>
        Effect.gen(function*() {
          const sandboxes: Record<string, string> = {}
          const lines: Array<string> = []
          for (const d of options.config.destinations) {
            const h = started.get(d.plugin)
            if (h) sandboxes[d.id] = h.url
            lines.push(
              `    ${d.id.padEnd(14)} → ${
                h ? `sandbox ${h.url}  (inspect: ${h.url}/__sandbox/events)` : "no sandbox: real endpoint"
              }`
            )
          }
          if (!keys.fromEnv) {
            LocalState.write(options.cwd, {
              url,
              writeKey: generated.writeKey,
              adminKey: generated.adminKey,
              sandboxes,
              ...(Option.isNone(envMasterKey) ? { masterKey: masterKeyText } : {}),
              ...(sourceSecret !== undefined ? { sourceSecret } : {})
            })
          }
          yield* Console.log([
            "",
            "  TrackLayer gateway — SANDBOX MODE (destinations are local sandboxes; nothing leaves this machine)",
            `  listening on   ${url}`,
            `  explorer       ${url}/ui  (web UI for the delivery log; sign in with the admin key)`,
            `  store          ${storeLine(store)}`,
            `  write key      ${keys.write}`,
            `  admin key      ${keys.admin}`,
            `  master key     ${
              Option.isNone(envMasterKey) ? "kept in .tracklayer/sandbox.json" : "(from TRACKLAYER_MASTER_KEY)"
            }`,
            "  destinations",
            ...lines,
            ...(options.config.sources.length > 0
              ? [
                "  sources (shared secret in .tracklayer/sandbox.json → sourceSecret)",
                ...options.config.sources.map((s) => `    ${s.id.padEnd(14)} → POST ${url}/v1/sources/${s.id}`)
              ]
              : []),
            "",
            "  Try it (in another terminal):",
            "    npm run generate -- --people 200 --out .tracklayer/events.ndjson",
            "    npm run tracklayer -- send .tracklayer/events.ndjson",
            "    npm run tracklayer -- explain <event_id>",
            ""
          ].join("\n"))
        })
    })
    return yield* Layer.launch(gateway).pipe(Effect.withConfigProvider(provider))
  })

/** `tracklayer migrate`: opens the configured store and applies pending migrations. */
export const migrate = Effect.gen(function*() {
  const store = yield* Database.Store
  yield* Console.log(`migrations applied; store: ${storeLine(store)}`)
}).pipe(Effect.provide(Database.layer))
