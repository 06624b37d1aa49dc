/**
 * Writes `docs/event-contract.schema.json`, the JSON Schema of the event contract, from the Effect Schema
 * (`Contract.PublishedEnvelope`), so the published schema and the decoder never drift.
 *
 *   npm run gen:schema                 # (re)write the file
 *   npm run gen:schema -- --check      # exit 1 when the checked-in file differs (CI)
 *
 * An optional path argument writes or checks another file instead.
 */
import { JSONSchema } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { relative } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { PublishedEnvelope } from "../src/Contract.js"

/** Where the schema is checked in. */
export const SCHEMA_PATH = fileURLToPath(new URL("../../../docs/event-contract.schema.json", import.meta.url))

/** The file's exact contents: the generated schema, pretty-printed, with a trailing newline. */
export const render = (): string => `${JSON.stringify(JSONSchema.make(PublishedEnvelope), null, 2)}\n`

const main = (args: ReadonlyArray<string>): number => {
  const check = args.includes("--check")
  const unknown = args.filter((a) => a.startsWith("-") && a !== "--check")
  const paths = args.filter((a) => !a.startsWith("-"))
  if (unknown.length > 0 || paths.length > 1) {
    console.error(`usage: gen-json-schema.ts [--check] [path]  (default path: ${SCHEMA_PATH})`)
    return 2
  }
  const path = paths[0] ?? SCHEMA_PATH
  const shown = relative(process.cwd(), path) || path
  const expected = render()
  if (!check) {
    writeFileSync(path, expected)
    console.log(`wrote ${shown}`)
    return 0
  }
  let actual: string | undefined
  try {
    actual = readFileSync(path, "utf8")
  } catch {
    actual = undefined
  }
  if (actual === expected) {
    console.log(`${shown} is up to date`)
    return 0
  }
  console.error(
    actual === undefined
      ? `${shown} is missing. Run \`npm run gen:schema\` and commit the file.`
      : `${shown} differs from the schema generated from Contract.PublishedEnvelope ` +
        `(first difference at line ${firstDifferentLine(actual, expected)}). ` +
        "Run `npm run gen:schema` and commit the result."
  )
  return 1
}

const firstDifferentLine = (a: string, b: string): number => {
  const la = a.split("\n")
  const lb = b.split("\n")
  const i = la.findIndex((line, i) => line !== lb[i])
  return (i === -1 ? la.length : i) + 1
}

// Run only as a script (the test imports `render`).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2))
}
