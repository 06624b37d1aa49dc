#!/usr/bin/env node
/** Entry point of the `tracklayer` command. */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { run } from "./Cli.js"

/** Usage and configuration problems exit 2, failed work exits 1; both print one clear line, no stack. */
const exitCodes: Record<string, number> = { UsageError: 2, ConfigModuleError: 2, ConfigError: 2, SendError: 1 }

run(process.argv).pipe(
  Effect.catchIf(
    (e): e is { _tag: string; message: string } =>
      typeof e === "object" && e !== null && typeof (e as { _tag?: unknown })._tag === "string" &&
      (e as { _tag: string })._tag in exitCodes,
    (e) =>
      Effect.sync(() => {
        process.stderr.write(`tracklayer: ${e.message}\n`)
        process.exitCode = exitCodes[e._tag]!
      })
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
