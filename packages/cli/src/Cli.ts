/**
 * The `tracklayer` command line: serve | send | explain | preview | replay | redrive | migrate | sandbox.
 */
import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { Delivery, type Destination, type Explain, Preview } from "@tracklayer/core"
import { Config, ConfigProvider, Console, Data, Effect, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as ConfigModule from "./ConfigModule.js"
import * as LocalState from "./LocalState.js"
import * as Replay from "./Replay.js"
import * as Send from "./Send.js"
import * as Serve from "./Serve.js"

/** Version printed by `--version`. */
export const VERSION = "0.1.0"

/** A usage problem: the message names the flag. Exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

const cwd = process.cwd()

const configOption = Options.file("config").pipe(
  Options.withDescription("config module (default: ./tracklayer.config.ts, .mts, .mjs or .js)"),
  Options.optional
)
const urlOption = Options.text("url").pipe(
  Options.withDescription("gateway URL (default: $TRACKLAYER_URL, the running sandbox, or http://127.0.0.1:8787)"),
  Options.optional
)
const keyOption = Options.redacted("key").pipe(
  Options.withDescription("API key (default: $TRACKLAYER_WRITE_KEY / $TRACKLAYER_ADMIN_KEY, or the sandbox's)"),
  Options.optional
)

const loadConfig = (given: Option.Option<string>) =>
  ConfigModule.load(ConfigModule.locate(Option.getOrUndefined(given), cwd))

/** Resolves `--url`: flag, environment, sandbox state, default. */
const gatewayUrl = (flag: Option.Option<string>) =>
  Effect.gen(function*() {
    const env = yield* Config.option(Config.string("TRACKLAYER_URL"))
    const url = Option.getOrUndefined(Option.orElse(flag, () => env)) ?? LocalState.read(cwd)?.url ??
      "http://127.0.0.1:8787"
    if (!/^https?:\/\/[^\s]+$/.test(url)) {
      return yield* new UsageError({ message: `--url: "${url}" is not an http(s) URL` })
    }
    return url.replace(/\/+$/, "")
  })

/** Resolves `--key`: flag, environment, sandbox state. */
const apiKey = (flag: Option.Option<Redacted.Redacted<string>>, kind: "write" | "admin") =>
  Effect.gen(function*() {
    if (Option.isSome(flag)) return Redacted.value(flag.value)
    const name = kind === "write" ? "TRACKLAYER_WRITE_KEY" : "TRACKLAYER_ADMIN_KEY"
    const env = yield* Config.option(Config.redacted(name))
    if (Option.isSome(env)) return Redacted.value(env.value)
    const state = LocalState.read(cwd)
    if (state) return kind === "write" ? state.writeKey : state.adminKey
    return yield* new UsageError({
      message: `--key: no ${kind} key; pass --key, set ${name}, or start the gateway with \`serve --sandbox\` first`
    })
  })

const serve = Command.make(
  "serve",
  {
    sandbox: Options.boolean("sandbox").pipe(
      Options.withDescription("start each plugin's local sandbox and deliver there (no credentials needed)")
    ),
    port: Options.integer("port").pipe(
      Options.withDescription("port (default: $TRACKLAYER_PORT or 8787)"),
      Options.optional
    ),
    config: configOption
  },
  ({ config, port, sandbox }) =>
    Effect.gen(function*() {
      if (Option.isSome(port) && (port.value < 0 || port.value > 65535)) {
        return yield* new UsageError({ message: `--port: ${port.value} is not a TCP port (0-65535)` })
      }
      const resolved = yield* loadConfig(config)
      return yield* Serve.serve({ config: resolved, sandbox, port, cwd })
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("run the gateway (ingest, delivery, explain)"))

const send = Command.make(
  "send",
  {
    file: Args.file({ name: "file.ndjson", exists: "yes" }).pipe(
      Args.withDescription("canonical events, one JSON object per line")
    ),
    rebaseTime: Options.boolean("rebase-time").pipe(
      Options.withDescription("shift timestamps so the latest is an hour ago, keeping the gaps")
    ),
    batchSize: Options.integer("batch-size").pipe(
      Options.withDefault(500),
      Options.withDescription("events per request (1-500)")
    ),
    concurrency: Options.integer("concurrency").pipe(
      Options.withDefault(4),
      Options.withDescription("requests in flight")
    ),
    url: urlOption,
    key: keyOption
  },
  (o) =>
    Effect.gen(function*() {
      if (o.batchSize < 1 || o.batchSize > 500) {
        return yield* new UsageError({ message: `--batch-size must be between 1 and 500, got ${o.batchSize}` })
      }
      if (o.concurrency < 1 || o.concurrency > 64) {
        return yield* new UsageError({ message: `--concurrency must be between 1 and 64, got ${o.concurrency}` })
      }
      const url = yield* gatewayUrl(o.url)
      const key = yield* apiKey(o.key, "write")
      const tty = process.stderr.isTTY === true
      let lastLogged = -1
      const summary = yield* Send.send({
        file: o.file,
        url,
        key,
        rebaseTime: o.rebaseTime,
        batchSize: o.batchSize,
        concurrency: o.concurrency,
        progress: (line, final) => {
          if (tty) process.stderr.write(`\r${line}${final ? "\n" : ""}`)
          else {
            const pct = Number(/(\d+)%/.exec(line)?.[1] ?? 0)
            if ((final && lastLogged < 100) || pct >= lastLogged + 10) {
              lastLogged = pct
              process.stderr.write(line + "\n")
            }
          }
        }
      })
      yield* Console.log(
        `sent ${summary.events} events to ${url} in ${summary.seconds.toFixed(1)} s: ` +
          `${summary.accepted} accepted, ${summary.duplicate} duplicate, ${summary.rejected} rejected` +
          (summary.failed ? `, ${summary.failed} not delivered (request failed)` : "")
      )
      for (const r of summary.rejections.slice(0, 10)) {
        yield* Console.log(
          `  rejected ${r.event_id ?? "(no event_id)"}: ${r.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`
        )
      }
      if (summary.rejections.length > 10) yield* Console.log(`  … and ${summary.rejections.length - 10} more rejected`)
      for (const f of [...new Set(summary.failures)].slice(0, 5)) yield* Console.log(`  request failed: ${f}`)
      if (summary.failed > 0 || summary.rejected > 0) {
        return yield* new Send.SendError({
          message: summary.failed > 0 ? "some requests failed" : "some events were rejected"
        })
      }
    })
).pipe(Command.withDescription("post an NDJSON file of events to a gateway, with progress and a summary"))

const renderExplain = (x: Explain.Explanation): string => {
  const lines = [
    `${x.event_id}  ${x.event}  at ${x.timestamp}`,
    `  received ${x.received_at}  position ${x.position}  dedup key ${x.dedup_key}  person ${x.person_key}` +
    (x.duplicate_of ? `  duplicate of ${x.duplicate_of}` : "") + (x.routable ? "" : "  (not routable)")
  ]
  if (x.destinations.length === 0) lines.push("  no destinations configured")
  for (const d of x.destinations) {
    lines.push(`  ${d.destination}: ${d.status.toUpperCase()}${d.reason ? ` — ${d.reason}` : ""}`)
    for (const a of d.attempts) {
      lines.push(
        `    #${a.attempt} ${a.outcome}${a.status !== null ? ` HTTP ${a.status}` : ""}${
          a.durationMs !== null ? ` ${a.durationMs} ms` : ""
        }` +
          ` ${a.at}${a.reason ? `  ${a.reason}` : ""}`
      )
      if (a.response) lines.push(`       response: ${a.response.slice(0, 300)}`)
    }
    if (d.payload !== null) lines.push(`    payload: ${JSON.stringify(d.payload)}`)
  }
  return lines.join("\n")
}

const explain = Command.make(
  "explain",
  {
    eventId: Args.text({ name: "event_id" }),
    json: Options.boolean("json").pipe(Options.withDescription("print the raw JSON")),
    url: urlOption,
    key: keyOption
  },
  (o) =>
    Effect.gen(function*() {
      const url = yield* gatewayUrl(o.url)
      const key = yield* apiKey(o.key, "admin")
      const res = yield* Effect.tryPromise({
        try: async () => {
          const r = await fetch(`${url}/v1/events/${encodeURIComponent(o.eventId)}/explain`, {
            headers: { authorization: `Bearer ${key}` }
          })
          return { status: r.status, body: await r.text() }
        },
        catch: (e) => new Send.SendError({ message: `cannot reach ${url}: ${(e as Error).message}` })
      })
      if (res.status !== 200) {
        let message = res.body.slice(0, 300)
        try {
          message = (JSON.parse(res.body) as { error: { message: string } }).error.message
        } catch { /* raw */ }
        return yield* new Send.SendError({ message: `gateway answered ${res.status}: ${message}` })
      }
      const x = JSON.parse(res.body) as Explain.Explanation
      yield* Console.log(o.json ? JSON.stringify(x, null, 2) : renderExplain(x))
    })
).pipe(Command.withDescription("show what happened to one event at each destination"))

/** Reads events from a file or stdin: one JSON object, a JSON array, `{ "events": [...] }`, or NDJSON. */
const readEvents = (file: string) =>
  Effect.gen(function*() {
    const text = yield* Effect.try({
      try: () => fs.readFileSync(file === "-" ? 0 : file, "utf8"),
      catch: (e) => new UsageError({ message: `cannot read ${file}: ${(e as Error).message}` })
    })
    const trimmed = text.trim()
    if (trimmed === "") return yield* new UsageError({ message: `${file} is empty` })
    try {
      const whole = JSON.parse(trimmed) as unknown
      if (Array.isArray(whole)) return whole as ReadonlyArray<unknown>
      if (typeof whole === "object" && whole !== null && Array.isArray((whole as { events?: unknown }).events)) {
        return (whole as { events: ReadonlyArray<unknown> }).events
      }
      return [whole]
    } catch {
      const parsed = Send.parseNdjson(text, file)
      if (parsed instanceof Send.SendError) {
        return yield* new UsageError({ message: parsed.message.replace("; nothing was sent", "") })
      }
      return parsed
    }
  })

const preview = Command.make(
  "preview",
  {
    input: Args.text({ name: "event.json | events.ndjson | -" }),
    destination: Options.text("destination").pipe(Options.withDescription("destination id in the config")),
    json: Options.boolean("json").pipe(Options.withDescription("one JSON object per input event (NDJSON)")),
    sandbox: Options.boolean("sandbox").pipe(
      Options.withDescription("use the plugin's sandbox settings instead of credentials from the environment")
    ),
    config: configOption
  },
  (o) =>
    Effect.gen(function*() {
      const resolved = yield* loadConfig(o.config)
      const instance = resolved.destinations.find((d) => d.id === o.destination)
      if (instance === undefined) {
        return yield* new UsageError({
          message: `--destination: "${o.destination}" is not configured; configured: ${
            resolved.destinations.map((d) => d.id).join(", ") || "none"
          }`
        })
      }
      const events = yield* readEvents(o.input)
      let provider = ConfigProvider.fromEnv()
      if (o.sandbox && instance.plugin.sandbox) {
        const h = yield* instance.plugin.sandbox({})
        provider = ConfigProvider.fromMap(new Map(Object.entries(h.env)), { pathDelim: "_" }).pipe(
          ConfigProvider.orElse(() => ConfigProvider.fromEnv())
        )
      }
      const [destination] = yield* Delivery.resolveDestinations(resolved, o.destination).pipe(
        Effect.withConfigProvider(provider),
        Effect.mapError((e) =>
          new UsageError({
            message: `${e.message}${o.sandbox ? "" : " (or pass --sandbox to preview with sandbox settings)"}`
          })
        )
      )
      const results = Preview.preview(resolved, destination!, events)
      for (const r of results) {
        if (o.json) {
          yield* Console.log(JSON.stringify({ destination: o.destination, ...r }))
          continue
        }
        const head = `#${r.index + 1} ${r.event_id ?? "(no event_id)"} → ${o.destination}:`
        if (r.status === "payload") yield* Console.log(`${head} payload\n${JSON.stringify(r.payload, null, 2)}`)
        else if (r.status === "dropped") yield* Console.log(`${head} dropped — ${r.reason}`)
        else yield* Console.log(`${head} rejected — ${r.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`)
      }
      const rejected = results.filter((r) => r.status === "rejected").length
      if (rejected > 0) return yield* new Send.SendError({ message: `${rejected} event(s) rejected` })
    }).pipe(Effect.scoped)
).pipe(Command.withDescription("print the exact payload a destination would receive for each event, without sending"))

const timeOption = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withDescription(description),
    Options.mapEffect((v) =>
      Number.isNaN(Date.parse(v))
        ? Effect.fail(
          ValidationError.invalidValue(
            HelpDoc.p(`--${name}: "${v}" is not a time (use RFC 3339, e.g. 2026-11-01T00:00:00Z)`)
          )
        )
        : Effect.succeed(new Date(Date.parse(v)).toISOString())
    ),
    Options.optional
  )

const replay = Command.make(
  "replay",
  {
    destination: Options.text("destination").pipe(Options.withDescription("destination id in the config")),
    since: timeOption("since", "only events at or after this event time"),
    until: timeOption("until", "only events before this event time"),
    events: Options.text("events").pipe(
      Options.withDescription("only these event names, comma-separated (e.g. purchase,sign_up)"),
      Options.optional
    ),
    dryRun: Options.boolean("dry-run").pipe(Options.withDescription("count and show sample payloads; send nothing")),
    json: Options.boolean("json").pipe(Options.withDescription("print the final status as JSON")),
    url: urlOption,
    key: keyOption
  },
  (o) =>
    Effect.gen(function*() {
      const url = yield* gatewayUrl(o.url)
      const key = yield* apiKey(o.key, "admin")
      const events = Option.map(o.events, (e) => e.split(",").map((x) => x.trim()).filter((x) => x !== ""))
      if (Option.isSome(events) && events.value.length === 0) {
        return yield* new UsageError({ message: "--events: give at least one event name" })
      }
      yield* Replay.replay({
        url,
        key,
        destination: o.destination,
        ...(Option.isSome(o.since) ? { since: o.since.value } : {}),
        ...(Option.isSome(o.until) ? { until: o.until.value } : {}),
        ...(Option.isSome(events) ? { events: events.value } : {}),
        dryRun: o.dryRun,
        json: o.json
      })
    })
).pipe(Command.withDescription("re-deliver stored history to a destination through the live path (resumable)"))

const redrive = Command.make(
  "redrive",
  {
    destination: Options.text("destination").pipe(Options.withDescription("destination id in the config")),
    reason: Options.text("reason").pipe(
      Options.withDescription("only dead letters whose reason contains this text"),
      Options.optional
    ),
    url: urlOption,
    key: keyOption
  },
  (o) =>
    Effect.gen(function*() {
      const url = yield* gatewayUrl(o.url)
      const key = yield* apiKey(o.key, "admin")
      yield* Replay.redrive({
        url,
        key,
        destination: o.destination,
        ...(Option.isSome(o.reason) ? { reason: o.reason.value } : {})
      })
    })
).pipe(Command.withDescription("re-send a destination's dead-lettered events after a fix"))

const migrate = Command.make("migrate", {}, () => Serve.migrate).pipe(
  Command.withDescription("apply database migrations (DATABASE_URL, or PGlite in $TRACKLAYER_DATA_DIR)")
)

const sandbox = Command.make("sandbox", { config: configOption }, ({ config }) =>
  Effect.gen(function*() {
    const resolved = yield* loadConfig(config)
    const seen = new Set<Destination.DestinationPlugin>()
    for (const d of resolved.destinations) {
      if (seen.has(d.plugin) || !d.plugin.sandbox) continue
      seen.add(d.plugin)
      const h = yield* d.plugin.sandbox({})
      yield* Console.log(
        `${d.plugin.name} sandbox on ${h.url}; settings: ${
          Object.entries(h.env).map(([k, v]) => `${k}=${v}`).join(" ")
        }`
      )
    }
    yield* Console.log("sandboxes running; Ctrl-C to stop")
    return yield* Effect.never
  }).pipe(Effect.scoped)).pipe(Command.withDescription("run only the plugins' sandboxes (for demos and tests)"))

/** The root command. */
export const command = Command.make("tracklayer").pipe(
  Command.withDescription("TrackLayer: server-side conversion event router"),
  Command.withSubcommands([serve, send, explain, preview, replay, redrive, migrate, sandbox])
)

/** Runs the CLI on argv. */
export const run = Command.run(command, { name: "tracklayer", version: VERSION })
