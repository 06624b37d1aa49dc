/**
 * Loads the operator's config module (`tracklayer.config.ts`, `.mts`, `.js` or `.mjs`). TypeScript modules are
 * loaded with tsx's ESM API, so Node 20 runs them without a build step.
 */
import { TrackLayerConfig } from "@tracklayer/core"
import { Data, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

/** The config module could not be loaded or is invalid. */
export class ConfigModuleError extends Data.TaggedError("ConfigModuleError")<{ readonly message: string }> {}

/** Candidate file names, in order, when `--config` is not given. */
export const DEFAULT_NAMES = [
  "tracklayer.config.ts",
  "tracklayer.config.mts",
  "tracklayer.config.mjs",
  "tracklayer.config.js"
]

/** Finds the config file: the given path, or the first default name in `cwd`. */
export const locate = (given: string | undefined, cwd: string): string | undefined => {
  if (given !== undefined) return path.resolve(cwd, given)
  return DEFAULT_NAMES.map((n) => path.join(cwd, n)).find((p) => fs.existsSync(p))
}

/** Imports and resolves the config module at `file`. */
export const load = (file: string | undefined) =>
  Effect.gen(function*() {
    if (file === undefined) {
      return yield* new ConfigModuleError({
        message: `no config module found: create tracklayer.config.ts (or pass --config <file>); looked for ${
          DEFAULT_NAMES.join(", ")
        }`
      })
    }
    if (!fs.existsSync(file)) return yield* new ConfigModuleError({ message: `--config: ${file} does not exist` })
    const mod = yield* Effect.tryPromise({
      try: async () => {
        if (/\.(m|c)?ts$/.test(file)) {
          const { tsImport } = await import("tsx/esm/api")
          return (await tsImport(pathToFileURL(file).href, import.meta.url)) as { default?: unknown }
        }
        return (await import(pathToFileURL(file).href)) as { default?: unknown }
      },
      catch: (e) =>
        new ConfigModuleError({ message: `cannot load ${file}: ${e instanceof Error ? e.message : String(e)}` })
    })
    // tsx may wrap a CommonJS-style default export once more.
    const exported = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default
    if (exported === undefined) {
      return yield* new ConfigModuleError({
        message: `${file} has no default export; export default defineConfig({...})`
      })
    }
    const resolved = TrackLayerConfig.resolve(exported)
    if (resolved instanceof TrackLayerConfig.ConfigError) {
      return yield* new ConfigModuleError({ message: `${path.basename(file)}: ${resolved.message}` })
    }
    return resolved
  })
