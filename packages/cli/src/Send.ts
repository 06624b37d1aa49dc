/**
 * `tracklayer send <file.ndjson>`: posts a file of canonical events to a gateway in batches, with a progress bar
 * and a summary. Requests are retried on 503/5xx/network errors (safe: ingest is idempotent by event_id).
 */
import { Contract } from "@tracklayer/core"
import { Generator } from "@tracklayer/testkit"
import { Data, Duration, Effect, Ref, Schedule } from "effect"
import * as fs from "node:fs"

/** The file or the gateway made sending impossible. */
export class SendError extends Data.TaggedError("SendError")<{ readonly message: string }> {}

/** Totals of a send. */
export interface SendSummary {
  readonly events: number
  readonly accepted: number
  readonly duplicate: number
  readonly rejected: number
  readonly failed: number
  readonly rejections: ReadonlyArray<
    { readonly event_id: string | null; readonly errors: ReadonlyArray<Contract.FieldError> }
  >
  readonly failures: ReadonlyArray<string>
  readonly seconds: number
}

/** Parses NDJSON; a line that is not JSON stops everything (nothing is half-sent). Blank lines are skipped. */
export const parseNdjson = (text: string, file: string): Array<unknown> | SendError => {
  const out: Array<unknown> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line === "") continue
    try {
      out.push(JSON.parse(line))
    } catch (e) {
      return new SendError({ message: `${file}:${i + 1}: not valid JSON (${(e as Error).message}); nothing was sent` })
    }
  }
  return out
}

/** Shifts timestamps so the latest is an hour ago, keeping the gaps; events without a readable timestamp are kept. */
export const rebase = (events: ReadonlyArray<unknown>, now: number): Array<unknown> => {
  type T = { readonly timestamp: string | number }
  const readable = (e: unknown): e is T =>
    typeof e === "object" && e !== null &&
    (typeof (e as T).timestamp === "number" ||
      (typeof (e as T).timestamp === "string" && !Number.isNaN(Date.parse((e as { timestamp: string }).timestamp))))
  const idx = events.map((e, i) => (readable(e) ? i : -1)).filter((i) => i >= 0)
  const shifted = Generator.rebaseTime(idx.map((i) => events[i] as T), now)
  const out = [...events]
  idx.forEach((i, j) => (out[i] = shifted[j]))
  return out
}

/** Splits events into request bodies within the event-count and byte limits. */
export const batches = (events: ReadonlyArray<unknown>, size: number): Array<Array<unknown>> => {
  const out: Array<Array<unknown>> = []
  let cur: Array<unknown> = []
  let bytes = 16
  const limit = Contract.MAX_REQUEST_BYTES - 1024
  for (const e of events) {
    const b = Buffer.byteLength(JSON.stringify(e)) + 1
    if (cur.length > 0 && (cur.length >= size || bytes + b > limit)) {
      out.push(cur)
      cur = []
      bytes = 16
    }
    cur.push(e)
    bytes += b
  }
  if (cur.length > 0) out.push(cur)
  return out
}

const bar = (done: number, total: number, width = 30) => {
  const f = total === 0 ? 1 : done / total
  const n = Math.round(f * width)
  return `[${"#".repeat(n)}${"-".repeat(width - n)}] ${String(Math.round(f * 100)).padStart(3)}%`
}

/** Retryable: the gateway asked us to come back, or did not answer. */
class Transient extends Data.TaggedError("Transient")<{ readonly message: string }> {}

const postBatch = (url: string, key: string, events: ReadonlyArray<unknown>) =>
  Effect.tryPromise({
    try: async (signal) => {
      const res = await fetch(`${url}/v1/events`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify({ events }),
        signal
      })
      const text = await res.text()
      return { status: res.status, text }
    },
    catch: (e) => new Transient({ message: `cannot reach ${url}: ${(e as Error).message}` })
  }).pipe(
    Effect.flatMap(({ status, text }): Effect.Effect<Contract.IngestResponse, Transient | SendError> => {
      if (status === 200) return Effect.succeed(JSON.parse(text) as Contract.IngestResponse)
      if (status === 503 || status === 502 || status === 504 || status === 429) {
        return Effect.fail(new Transient({ message: `gateway answered ${status}: ${text.slice(0, 200)}` }))
      }
      let message = text.slice(0, 300)
      try {
        message = (JSON.parse(text) as { error: { message: string } }).error.message
      } catch { /* keep the raw excerpt */ }
      return Effect.fail(new SendError({ message: `gateway answered ${status}: ${message}` }))
    }),
    Effect.retry({
      while: (e) => e._tag === "Transient",
      schedule: Schedule.exponential(Duration.millis(250)).pipe(Schedule.intersect(Schedule.recurs(5)))
    }),
    Effect.timeout(Duration.minutes(2)),
    Effect.catchTag("TimeoutException", () =>
      Effect.fail(new SendError({ message: `no answer from ${url} within 2 minutes` }))),
    Effect.mapError((e) => (e._tag === "Transient" ? new SendError({ message: e.message }) : e))
  )

/** Sends a file; `progress` receives a line to redraw. */
export const send = (options: {
  readonly file: string
  readonly url: string
  readonly key: string
  readonly rebaseTime: boolean
  readonly batchSize: number
  readonly concurrency: number
  readonly progress: (line: string, final: boolean) => void
}) =>
  Effect.gen(function*() {
    if (
      !Number.isInteger(options.batchSize) || options.batchSize < 1 ||
      options.batchSize > Contract.MAX_EVENTS_PER_REQUEST
    ) {
      return yield* new SendError({ message: `--batch-size must be between 1 and ${Contract.MAX_EVENTS_PER_REQUEST}` })
    }
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1 || options.concurrency > 64) {
      return yield* new SendError({ message: "--concurrency must be between 1 and 64" })
    }
    const text = yield* Effect.try({
      try: () => fs.readFileSync(options.file, "utf8"),
      catch: (e) => new SendError({ message: `cannot read ${options.file}: ${(e as Error).message}` })
    })
    const parsed = parseNdjson(text, options.file)
    if (parsed instanceof SendError) return yield* parsed
    const events = options.rebaseTime ? rebase(parsed, Date.now()) : parsed
    const started = Date.now()
    const totals = yield* Ref.make({ done: 0, accepted: 0, duplicate: 0, rejected: 0, failed: 0 })
    const rejections: Array<SendSummary["rejections"][number]> = []
    const failures: Array<string> = []
    const draw = (final: boolean) =>
      Effect.flatMap(Ref.get(totals), (t) =>
        Effect.sync(() => {
          const secs = (Date.now() - started) / 1000
          const rate = secs > 0 ? Math.round(t.done / secs) : 0
          options.progress(
            `${bar(t.done, events.length)} ${t.done}/${events.length} events  ${rate}/s  ` +
              `accepted ${t.accepted}  duplicate ${t.duplicate}  rejected ${t.rejected}${
                t.failed ? `  failed ${t.failed}` : ""
              }`,
            final
          )
        }))
    yield* draw(false)
    yield* Effect.forEach(
      batches(events, options.batchSize),
      (batch) =>
        postBatch(options.url, options.key, batch).pipe(
          Effect.flatMap((res) =>
            Ref.update(totals, (t) => {
              const c = { ...t, done: t.done + batch.length }
              for (const r of res.results) {
                c[r.status]++
                if (r.status === "rejected") rejections.push({ event_id: r.event_id, errors: r.errors ?? [] })
              }
              return c
            })
          ),
          Effect.catchAll((e) =>
            Effect.sync(() => failures.push(e.message)).pipe(
              Effect.zipRight(
                Ref.update(totals, (t) => ({ ...t, done: t.done + batch.length, failed: t.failed + batch.length }))
              )
            )
          ),
          Effect.zipRight(draw(false))
        ),
      { concurrency: options.concurrency, discard: true }
    )
    yield* draw(true)
    const t = yield* Ref.get(totals)
    return {
      events: events.length,
      accepted: t.accepted,
      duplicate: t.duplicate,
      rejected: t.rejected,
      failed: t.failed,
      rejections,
      failures,
      seconds: (Date.now() - started) / 1000
    } satisfies SendSummary
  })
