/** Entry point of the `tracklayer` command. */
import { ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Effect } from "effect"
import { run } from "./Cli.js"

/** Usage and configuration problems exit 2, failed work exits 1; both print one clear line, no stack. */
const exitCodes: Record<string, number> = { UsageError: 2, ConfigModuleError: 2, ConfigError: 2, SendError: 1 }

const messageOf = (e: unknown): string => {
  if (typeof e !== "object" || e === null) return String(e)
  const x = e as { _tag?: string; message?: string; cause?: unknown }
  const cause = x.cause instanceof Error ? `: ${x.cause.message}` : ""
  switch (x._tag) {
    case "ServeError":
      return `cannot listen (TRACKLAYER_PORT / --port, TRACKLAYER_HOST)${cause}`
    case "SqlError":
      return `the store failed: ${x.message ?? ""}${cause} (check DATABASE_URL or TRACKLAYER_DATA_DIR)`
    case "StoreOpenError":
      return x.message ?? "cannot open the store"
    default:
      return x.message ?? String(e)
  }
}

// `tracklayer preview … | head` closes the pipe early: that is not an error.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (e.code === "EPIPE") process.exit(0)
  throw e
})

run(process.argv).pipe(
  Effect.catchAll((e: unknown) =>
    Effect.sync(() => {
      // @effect/cli has already printed what is wrong with the command line.
      if (ValidationError.isValidationError(e)) {
        process.exitCode = 2
        return
      }
      const tag = typeof e === "object" && e !== null ? (e as { _tag?: string })._tag : undefined
      process.stderr.write(`tracklayer: ${messageOf(e)}\n`)
      process.exitCode = (tag !== undefined ? exitCodes[tag] : undefined) ?? 1
    })
  ),
  Effect.catchAllDefect((d) =>
    Effect.sync(() => {
      process.stderr.write(`tracklayer: unexpected failure: ${Cause.pretty(Cause.die(d))}\n`)
      process.exitCode = 1
    })
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
