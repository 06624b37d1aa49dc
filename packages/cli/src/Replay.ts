/**
 * `tracklayer replay` and `tracklayer redrive`: clients of the running gateway's admin API. A replay runs inside the
 * gateway (beside live delivery); this command starts it, shows its progress until it is done, and on Ctrl-C pauses
 * it — running the same command again resumes it where it stopped, sending nothing twice.
 */
import type { Delivery } from "@tracklayer/core"
import { Console, Duration, Effect } from "effect"
import { SendError } from "./Send.js"

/** One admin API call; a non-2xx answer is a SendError with the gateway's message. */
export const call = (url: string, key: string, method: "GET" | "POST", path: string, body?: unknown) =>
  Effect.tryPromise({
    try: async () => {
      const r = await fetch(`${url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${key}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {})
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {})
      })
      return { status: r.status, text: await r.text() }
    },
    catch: (e) => new SendError({ message: `cannot reach ${url}: ${(e as Error).message}` })
  }).pipe(
    Effect.flatMap((r) => {
      if (r.status >= 200 && r.status < 300) return Effect.succeed(JSON.parse(r.text) as unknown)
      let message = r.text.slice(0, 300)
      try {
        message = (JSON.parse(r.text) as { error: { message: string } }).error.message
      } catch { /* raw text */ }
      return Effect.fail(new SendError({ message: `gateway answered ${r.status}: ${message}` }))
    })
  )

const fmt = (n: number) => n.toLocaleString("en-US")

/** One progress line: read, routed, dropped by reason, sent, accepted, rate, ETA. */
export const progressLine = (s: Delivery.ReplayStatus): string => {
  const c = s.counts
  const drops = Object.entries(c.droppedBy).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${fmt(v)}`)
    .join(", ")
  const done = c.read + c.already
  const pct = s.total > 0 ? Math.min(100, Math.floor((done / s.total) * 100)) : 100
  return `${s.replay_id} ${s.state.padEnd(7)} ${pct}%  read ${fmt(done)}/${fmt(s.total)}` +
    (c.already > 0 ? ` (already delivered ${fmt(c.already)})` : "") +
    `  routed ${fmt(c.routed)}  dropped ${fmt(c.dropped)}${drops !== "" ? ` [${drops}]` : ""}` +
    (s.dry_run ? "" : `  sent ${fmt(c.sent)}  accepted ${fmt(c.accepted)}  rejected ${fmt(c.rejected)}`) +
    `  ${fmt(s.rate)} ev/s` + (s.eta_seconds !== null && s.state === "running" ? `  ETA ${s.eta_seconds}s` : "")
}

/** Starts or resumes a replay and follows it until it is done (Ctrl-C pauses it). */
export const replay = (options: {
  readonly url: string
  readonly key: string
  readonly destination: string
  readonly since?: string
  readonly until?: string
  readonly events?: ReadonlyArray<string>
  readonly dryRun: boolean
  readonly json: boolean
}) => {
  let current: string | undefined
  return Effect.gen(function*() {
    const started = (yield* call(
      options.url,
      options.key,
      "POST",
      `/v1/destinations/${encodeURIComponent(options.destination)}/replays`,
      {
        ...(options.since !== undefined ? { since: options.since } : {}),
        ...(options.until !== undefined ? { until: options.until } : {}),
        ...(options.events !== undefined ? { events: options.events } : {}),
        ...(options.dryRun ? { dry_run: true } : {})
      }
    )) as Delivery.ReplayStatus
    const id = started.replay_id
    current = id
    if (!options.json) {
      yield* Console.error(
        `replay ${id} to ${options.destination}${options.dryRun ? " (dry run: nothing is sent)" : ""}: ` +
          `${fmt(started.total)} events in range; Ctrl-C pauses it (run the same command again to resume)`
      )
    }
    const poll = call(options.url, options.key, "GET", `/v1/replays/${id}`) as Effect.Effect<
      Delivery.ReplayStatus,
      SendError
    >
    let last = started
    while (last.state === "running") {
      yield* Effect.sleep(Duration.millis(500))
      last = yield* poll
      if (!options.json) yield* Console.error(progressLine(last))
    }
    if (options.json) {
      yield* Console.log(JSON.stringify(last, null, 2))
    } else {
      yield* Console.log(progressLine(last))
      if (options.dryRun) {
        for (const s of last.samples) yield* Console.log(`sample ${s.event_id}: ${JSON.stringify(s.payload)}`)
      }
    }
    if (last.state === "failed") return yield* new SendError({ message: `replay ${id} failed: ${last.error ?? ""}` })
    return last
  }).pipe(
    // Ctrl-C: pause the replay in the gateway, so it stops sending and resumes from its cursor next time.
    Effect.onInterrupt(() =>
      current === undefined ? Effect.void : Effect.gen(function*() {
        yield* call(options.url, options.key, "POST", `/v1/replays/${current}/pause`)
        yield* Console.error(`paused ${current}; run the same command again to resume`)
      }).pipe(Effect.ignore)
    )
  )
}

/** Re-queues dead-lettered events of a destination. */
export const redrive = (options: {
  readonly url: string
  readonly key: string
  readonly destination: string
  readonly reason?: string
}) =>
  Effect.gen(function*() {
    const r = (yield* call(
      options.url,
      options.key,
      "POST",
      `/v1/destinations/${encodeURIComponent(options.destination)}/redrive`,
      options.reason !== undefined ? { reason: options.reason } : {}
    )) as { redriven: number }
    yield* Console.log(
      r.redriven === 0
        ? `no dead-lettered events at ${options.destination}${
          options.reason !== undefined ? ` matching "${options.reason}"` : ""
        }`
        : `${fmt(r.redriven)} dead-lettered events of ${options.destination} queued for another round of attempts`
    )
    return r.redriven
  })
