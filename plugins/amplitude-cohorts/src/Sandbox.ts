/**
 * A stand-in for Amplitude's side of a cohort sync: it posts Cohort Webhooks messages (and identify-style cohort
 * traits) to a URL as Amplitude does, for tests and demos.
 *
 * - Headers: `Content-Type: application/json`, `User-Agent: Amplitude/Webhook/1.0` and the secret header.
 * - One message per enter or leave batch of at most `batchSize` users, with Amplitude-style message ids
 *   (`<uuid>::enter::0`, `<uuid>::enter::1`, …) and `computed_time` in epoch seconds as a string.
 * - Retries a message on a non-2xx answer, a transport error, or an answer slower than `timeoutMs` (Amplitude expects
 *   a 200 within 1–2 s), with exponential backoff; `retryDuplicate` posts every delivered message once more on
 *   purpose. Every attempt is recorded (status, outcome, ms) for tests.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { Cause, Duration, Effect, Either, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import { DEFAULT_HEADER } from "./AmplitudeCohorts.js"

/** Amplitude's preset `User-Agent` on every webhook request. */
export const USER_AGENT = "Amplitude/Webhook/1.0"
/** Default time an answer may take before the attempt counts as failed (Amplitude: 1–2 s). */
export const DEFAULT_TIMEOUT_MS = 2000
/** Default attempts per message: the first and 8 retries (Amplitude's cohort syncs retry eight times). */
export const DEFAULT_MAX_ATTEMPTS = 9
/** Default first backoff, doubled after each failed attempt (Amplitude starts at one second). */
export const DEFAULT_BACKOFF_MS = 1000
/** Longest backoff between two attempts. */
export const MAX_BACKOFF_MS = 150_000
/** Default users per message (Amplitude's cohort syncs batch 1000 users by default). */
export const DEFAULT_BATCH_SIZE = 1000

/** Options of `sender`. */
export interface SenderOptions {
  /** The receiver's URL (`http://127.0.0.1:8787/v1/sources/amplitude-cohorts`). */
  readonly url: string
  /** The custom header carrying the secret (default `x-tracklayer-secret`). */
  readonly header?: string
  readonly secret: string | Redacted.Redacted<string>
  /** Further custom headers (Amplitude allows five in all, the secret's included). */
  readonly headers?: Readonly<Record<string, string>>
  /** An answer slower than this fails the attempt (default 2000 ms). */
  readonly timeoutMs?: number
  /** Attempts per message, the first included (default 9). */
  readonly maxAttempts?: number
  /** First backoff in ms, doubled after each failure (default 1000). */
  readonly backoffMs?: number
  /** Users per webhook message (default 1000). */
  readonly batchSize?: number
  /** Posts every delivered message a second time, as a retry after a lost answer would (default false). */
  readonly retryDuplicate?: boolean
}

/** A cohort as Amplitude names it. */
export interface Cohort {
  readonly id: string
  readonly name: string
}

/** Options of `enter` and `leave`. */
export interface WebhookOptions {
  /** The message id stem (default a random UUID): messages are `<stem>::enter::<n>` / `<stem>::leave::<n>`. */
  readonly messageId?: string
  /** `computed_time` in epoch seconds (default now). */
  readonly computedTime?: number
  /** User properties carried along, per user id (Amplitude: up to 50 chosen in the sync). */
  readonly userProperties?: Readonly<Record<string, Readonly<Record<string, unknown>>>>
}

/** Options of `identifyTraits`. */
export interface TraitOptions {
  /** The membership value set (default true: entering). */
  readonly inCohort?: boolean
  /** `colon`: `"[Amplitude] <name>: <id>"` (default); `parentheses`: `"[Amplitude] <name> (<id>)"`. */
  readonly spelling?: "colon" | "parentheses"
  /**
   * `identify` (default): `{ batch: [{ type: "identify", userId, traits, context }] }` as Amplitude's property-based
   * cohort sync documents it; `user_properties`: `[{ user_id, user_properties }]`.
   */
  readonly format?: "identify" | "user_properties"
  /** Sends `"true"` / `"false"` strings instead of booleans. */
  readonly stringValues?: boolean
  /** A top-level `message_id` (only with the `identify` format, whose body is an object). */
  readonly messageId?: string
}

/** One HTTP attempt. */
export interface Attempt {
  /** The message's id (`(none)` for an identify-style message posted without one). */
  readonly messageId: string
  /** 1 for the first attempt of a message. */
  readonly attempt: number
  /** The answer's status; null after a timeout or transport error. */
  readonly status: number | null
  readonly outcome: "accepted" | "refused" | "timeout" | "error"
  /** Time until the answer (or the timeout). Recorded, never asserted on. */
  readonly ms: number
  /** True for the deliberate second posting of `retryDuplicate`. */
  readonly duplicate: boolean
}

/** What happened to one message. */
export interface Delivery {
  readonly messageId: string | undefined
  /** The exact body posted. */
  readonly body: string
  /** Whether an attempt got a 2xx answer in time. */
  readonly delivered: boolean
  readonly attempts: ReadonlyArray<Attempt>
}

/** A sender; every method needs an `HttpClient` and never fails (outcomes are data). */
export interface Sender {
  /** Posts `userIds` entering `cohort`, in messages of at most `batchSize` users. */
  readonly enter: (
    cohort: Cohort,
    userIds: ReadonlyArray<string>,
    options?: WebhookOptions
  ) => Effect.Effect<ReadonlyArray<Delivery>, never, HttpClient.HttpClient>
  /** Posts `userIds` leaving `cohort`. */
  readonly leave: (
    cohort: Cohort,
    userIds: ReadonlyArray<string>,
    options?: WebhookOptions
  ) => Effect.Effect<ReadonlyArray<Delivery>, never, HttpClient.HttpClient>
  /** Posts one identify-style message setting the cohort trait of `userIds`. */
  readonly identifyTraits: (
    cohort: Cohort,
    userIds: ReadonlyArray<string>,
    options?: TraitOptions
  ) => Effect.Effect<Delivery, never, HttpClient.HttpClient>
  /** Every attempt so far, in order. */
  readonly attempts: () => ReadonlyArray<Attempt>
}

/** The trait name of `cohort` in the given spelling. */
export const traitName = (cohort: Cohort, spelling: "colon" | "parentheses" = "colon"): string =>
  spelling === "colon" ? `[Amplitude] ${cohort.name}: ${cohort.id}` : `[Amplitude] ${cohort.name} (${cohort.id})`

/** The Cohort Webhooks default payload, keys in Amplitude's order. */
export const webhookBody = (
  cohort: Cohort,
  inCohort: boolean,
  computedTime: number,
  messageId: string,
  userIds: ReadonlyArray<string>,
  userProperties: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {}
): string =>
  JSON.stringify({
    cohort_name: cohort.name,
    cohort_id: cohort.id,
    in_cohort: inCohort,
    computed_time: String(Math.floor(computedTime)),
    message_id: messageId,
    users: userIds.map((userId) => {
      const properties = userProperties[userId]
      return properties === undefined ? { user_id: userId } : { user_id: userId, user_properties: properties }
    })
  })

const chunk = <A>(as: ReadonlyArray<A>, size: number): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < as.length; i += size) out.push(as.slice(i, i + size))
  return out.length === 0 ? [[]] : out
}

/** A sender posting to `options.url`. */
export const sender = (options: SenderOptions): Sender => {
  const header = options.header ?? DEFAULT_HEADER
  const secret = Redacted.isRedacted(options.secret) ? Redacted.value(options.secret) : options.secret
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const maxAttempts = Math.max(1, options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS)
  const backoffMs = options.backoffMs ?? DEFAULT_BACKOFF_MS
  const batchSize = Math.max(1, options.batchSize ?? DEFAULT_BATCH_SIZE)
  const recorded: Array<Attempt> = []

  const request = (body: string) =>
    HttpClientRequest.post(options.url).pipe(
      HttpClientRequest.setHeaders({ ...options.headers, "User-Agent": USER_AGENT, [header]: secret }),
      HttpClientRequest.bodyText(body, "application/json")
    )

  const attemptOnce = (body: string, messageId: string, attempt: number, duplicate: boolean) =>
    Effect.gen(function*() {
      const client = yield* HttpClient.HttpClient
      const started = performance.now()
      const answer = yield* client.execute(request(body)).pipe(
        // The answer counts when its body has arrived, as for Amplitude's client.
        Effect.flatMap((response) => Effect.as(response.text, response.status)),
        Effect.timeout(Duration.millis(timeoutMs)),
        Effect.either
      )
      const ms = Math.round(performance.now() - started)
      const result: Attempt = Either.isRight(answer)
        ? {
          messageId,
          attempt,
          status: answer.right,
          outcome: answer.right >= 200 && answer.right < 300 ? "accepted" : "refused",
          ms,
          duplicate
        }
        : {
          messageId,
          attempt,
          status: null,
          outcome: Cause.isTimeoutException(answer.left) ? "timeout" : "error",
          ms,
          duplicate
        }
      recorded.push(result)
      return result
    })

  const deliver = (body: string, messageId: string | undefined) =>
    Effect.gen(function*() {
      const id = messageId ?? "(none)"
      const attempts: Array<Attempt> = []
      let delivered = false
      for (let n = 1; n <= maxAttempts && !delivered; n++) {
        if (n > 1) yield* Effect.sleep(Duration.millis(Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** (n - 2))))
        const a = yield* attemptOnce(body, id, n, false)
        attempts.push(a)
        delivered = a.outcome === "accepted"
      }
      if (delivered && options.retryDuplicate === true) {
        attempts.push(yield* attemptOnce(body, id, attempts.length + 1, true))
      }
      return { messageId, body, delivered, attempts } satisfies Delivery
    })

  const webhook = (kind: "enter" | "leave") =>
  (
    cohort: Cohort,
    userIds: ReadonlyArray<string>,
    o: WebhookOptions = {}
  ): Effect.Effect<ReadonlyArray<Delivery>, never, HttpClient.HttpClient> =>
    Effect.gen(function*() {
      const stem = o.messageId ?? randomUUID()
      const computedTime = o.computedTime ?? Math.floor(Date.now() / 1000)
      const deliveries: Array<Delivery> = []
      for (const [i, users] of chunk(userIds, batchSize).entries()) {
        const messageId = `${stem}::${kind}::${i}`
        const body = webhookBody(cohort, kind === "enter", computedTime, messageId, users, o.userProperties)
        deliveries.push(yield* deliver(body, messageId))
      }
      return deliveries
    }).pipe(Effect.withSpan(`AmplitudeCohortsSandbox.${kind}`))

  const identifyTraits = (
    cohort: Cohort,
    userIds: ReadonlyArray<string>,
    o: TraitOptions = {}
  ): Effect.Effect<Delivery, never, HttpClient.HttpClient> => {
    const inCohort = o.inCohort ?? true
    const value = o.stringValues === true ? String(inCohort) : inCohort
    const traits = { [traitName(cohort, o.spelling)]: value }
    const body = o.format === "user_properties"
      ? JSON.stringify(userIds.map((userId) => ({ user_id: userId, user_properties: traits })))
      : JSON.stringify({
        ...(o.messageId !== undefined ? { message_id: o.messageId } : {}),
        batch: userIds.map((userId) => ({
          type: "identify",
          traits,
          userId,
          context: { integration: { name: "Amplitude Cohort Sync", version: "1.0.0" } }
        }))
      })
    return deliver(body, o.format === "user_properties" ? undefined : o.messageId).pipe(
      Effect.withSpan("AmplitudeCohortsSandbox.identifyTraits")
    )
  }

  return {
    enter: webhook("enter"),
    leave: webhook("leave"),
    identifyTraits,
    attempts: () => [...recorded]
  }
}
