/**
 * Writes generated canonical journeys as NDJSON.
 *
 *   tsx packages/testkit/src/bin/generate.ts --people N [--seed S] [--out file.ndjson] [--now T] [--span-days D]
 *
 * Events go to stdout (or `--out`), a one-line summary to stderr. Bad flags print an error naming the flag and exit
 * with code 2.
 */
import { createWriteStream } from "node:fs"
import type { Writable } from "node:stream"
import { DEFAULT_SEED, DEFAULT_SPAN_DAYS, generate, summary } from "../Generator.js"

const USAGE = `usage: generate --people N [--seed S] [--out file.ndjson] [--now ISO|ms] [--span-days D]

  --people N      number of people (journeys), a positive integer (required)
  --seed S        PRNG seed, an integer in [0, 4294967295] (default ${DEFAULT_SEED}); same seed + now → same output
  --out FILE      write NDJSON to FILE instead of stdout
  --now T         place events before this instant, ISO 8601 or epoch ms (default: the current time)
  --span-days D   timestamps fall within D days before --now (default ${DEFAULT_SPAN_DAYS})
  --help          show this help`

class UsageError extends Error {}

interface Args {
  readonly people: number
  readonly seed: number
  readonly now: number
  readonly spanDays: number
  readonly out?: string
}

const integerIn = (flag: string, raw: string, min: number, max: number, what: string): number => {
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} must be ${what}, got ${JSON.stringify(raw)}`)
  }
  return n
}

const parseArgs = (argv: ReadonlyArray<string>): Args | "help" => {
  const values = new Map<string, string>()
  const known = new Set(["--people", "--seed", "--out", "--now", "--span-days"])
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--help" || arg === "-h") return "help"
    const eq = arg.indexOf("=")
    const flag = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg
    if (!known.has(flag)) {
      throw new UsageError(arg.startsWith("-") ? `unknown flag ${flag}` : `unexpected argument ${JSON.stringify(arg)}`)
    }
    let value: string
    if (flag !== arg) {
      value = arg.slice(eq + 1)
    } else {
      const next = argv[i + 1]
      if (next === undefined || (next.startsWith("--") && next.length > 2)) {
        throw new UsageError(`${flag} needs a value`)
      }
      value = next
      i++
    }
    if (values.has(flag)) throw new UsageError(`${flag} given more than once`)
    values.set(flag, value)
  }

  const peopleRaw = values.get("--people")
  if (peopleRaw === undefined) throw new UsageError("--people is required")
  const people = integerIn("--people", peopleRaw, 1, 10_000_000, "a positive integer (at most 10000000)")

  const seedRaw = values.get("--seed")
  const seed = seedRaw === undefined ?
    DEFAULT_SEED :
    integerIn("--seed", seedRaw, 0, 0xffffffff, "an integer in [0, 4294967295]")

  const nowRaw = values.get("--now")
  let now = Date.now()
  if (nowRaw !== undefined) {
    now = /^\d+$/.test(nowRaw) ? Number(nowRaw) : Date.parse(nowRaw)
    if (!Number.isSafeInteger(now)) {
      throw new UsageError(`--now must be an ISO 8601 date-time or epoch milliseconds, got ${JSON.stringify(nowRaw)}`)
    }
  }

  const spanRaw = values.get("--span-days")
  let spanDays = DEFAULT_SPAN_DAYS
  if (spanRaw !== undefined) {
    spanDays = /^\d+(\.\d+)?$/.test(spanRaw) ? Number(spanRaw) : NaN
    if (!(spanDays > 0 && spanDays <= 3650)) {
      throw new UsageError(`--span-days must be a number in (0, 3650], got ${JSON.stringify(spanRaw)}`)
    }
  }

  const out = values.get("--out")
  if (out !== undefined && out === "") throw new UsageError("--out needs a file name")
  return out === undefined ? { people, seed, now, spanDays } : { people, seed, now, spanDays, out }
}

/** Writes `chunk`, waiting for the stream to drain when its buffer is full. */
const write = (stream: Writable, chunk: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e)
    stream.once("error", onError)
    const ok = stream.write(chunk, () => undefined)
    const done = () => {
      stream.off("error", onError)
      resolve()
    }
    if (ok) done()
    else stream.once("drain", done)
  })

const main = async (): Promise<number> => {
  let args: Args | "help"
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`generate: ${e.message}\n(run with --help for usage)\n`)
      return 2
    }
    throw e
  }
  if (args === "help") {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }

  const events = generate({ people: args.people, seed: args.seed, now: args.now, spanDays: args.spanDays })
  const stream: Writable = args.out === undefined ? process.stdout : createWriteStream(args.out)
  try {
    const BATCH = 1000
    for (let i = 0; i < events.length; i += BATCH) {
      await write(stream, events.slice(i, i + BATCH).map((e) => `${JSON.stringify(e)}\n`).join(""))
    }
    if (args.out !== undefined) {
      await new Promise<void>((resolve, reject) => {
        stream.once("error", reject)
        stream.end(() => resolve())
      })
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    if (err.code === "EPIPE") return 0 // the reader went away (e.g. `| head`)
    process.stderr.write(`generate: cannot write ${args.out ?? "stdout"}: ${err.message}\n`)
    return 1
  }

  const s = summary(events)
  const counts = Object.entries(s.byEvent).map(([name, n]) => `${name}=${n}`).join(" ")
  process.stderr.write(
    `generated ${s.events} events for ${s.people} people (seed ${args.seed}, ${args.spanDays} days before ` +
      `${new Date(args.now).toISOString()}): ${counts} duplicate_order_reports=${s.duplicateOrderReports}` +
      `${args.out === undefined ? "" : ` → ${args.out}`}\n`
  )
  return 0
}

main().then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`generate: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`)
    process.exitCode = 1
  }
)
