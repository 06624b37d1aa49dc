/**
 * Forwarding erasures to Amplitude: the User Privacy API (v1), `POST https://amplitude.com/api/2/deletions/users`
 * (EU: `https://analytics.eu.amplitude.com/api/2/deletions/users`), as Amplitude documents it:
 *
 * - Basic auth with the project's `api_key:secret_key`; JSON body `{ user_ids, amplitude_ids?, requester,
 *   ignore_invalid_id, delete_from_org? }`, booleans written as the strings `"True"` / `"False"`.
 * - At most 100 ids per request and 1 request per second (429 beyond).
 * - 200 `{ day, status, amplitude_ids, user_ids? }`: the user joins a deletion job (`staging`) that Amplitude runs
 *   10–13 days after the first request of its batch; it can be revoked until 3 days before.
 * - Amplitude deletes by `user_id` or Amplitude ID only: a person known only by device ids cannot be deleted here.
 * - Deleting does not block later events: TrackLayer stops sending the person's events itself.
 *
 * `ignore_invalid_id` is sent as `"True"`, so a person who never reached Amplitude (consent denied) does not fail
 * the job. (Amplitude's newer page spells it `ignore_invalid_ids`; the request table and integrations use
 * `ignore_invalid_id`.)
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import { Clock, Duration, Effect, Redacted } from "effect"
import type { Settings } from "./Amplitude.js"

/** Default (US) User Privacy API endpoint. */
export const DEFAULT_DELETION_ENDPOINT = "https://amplitude.com/api/2/deletions/users"
/** EU data-residency User Privacy API endpoint. */
export const EU_DELETION_ENDPOINT = "https://analytics.eu.amplitude.com/api/2/deletions/users"
/** Ids per request (Amplitude: at most 100). */
export const MAX_IDS_PER_DELETION = 100
/** Attempts on 429 (the API allows one request per second). */
export const DELETION_ATTEMPTS = 3

/** The JSON body of one deletion request. */
export interface DeletionBody {
  readonly user_ids: ReadonlyArray<string>
  readonly requester: string
  readonly ignore_invalid_id: "True"
}

/** The body for deleting `userIds` on behalf of `requester`. */
export const deletionBody = (userIds: ReadonlyArray<string>, requester: string): DeletionBody => ({
  user_ids: userIds.slice(0, MAX_IDS_PER_DELETION),
  requester,
  ignore_invalid_id: "True"
})

/** `Authorization: Basic base64(api_key:secret_key)`. */
export const basicAuth = (apiKey: string, secretKey: string): string =>
  `Basic ${Buffer.from(`${apiKey}:${secretKey}`, "utf8").toString("base64")}`

const redactAll = (text: string, secrets: ReadonlyArray<string>): string => {
  let out = text
  for (const s of secrets) if (s.length > 0) out = out.split(s).join("[redacted]")
  return out.length > 2000 ? out.slice(0, 2000) + "…" : out
}

const retryAfterMs = (header: string | undefined, now: number): number | undefined => {
  if (header === undefined) return undefined
  const h = header.trim()
  if (/^\d+(\.\d+)?$/.test(h)) return Math.round(Number(h) * 1000)
  const at = Date.parse(h)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

const jsonOf = (text: string): Record<string, unknown> => {
  try {
    const v: unknown = JSON.parse(text)
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}

/**
 * `deletePerson` of the Amplitude plugin: asks the User Privacy API to delete the person's `user_id`. Without a
 * `secretKey` setting the answer is "deletion not configured" (recorded as such), never an error.
 */
export const deletePerson = Effect.fn("Amplitude.deletePerson")(function*(
  request: Destination.DeletionRequest,
  settings: Settings
) {
  if (settings.secretKey === undefined) {
    return {
      _tag: "NotConfigured",
      detail: "deletion not configured: set the Amplitude secretKey setting (AMPLITUDE_SECRET_KEY) to forward " +
        "erasures to Amplitude's User Privacy API; delete the user in Amplitude by hand meanwhile"
    } satisfies Destination.DeletionOutcome
  }
  const userId = request.identity.userId
  if (userId === undefined) {
    return {
      _tag: "Rejected",
      reason: "Amplitude's User Privacy API deletes by user_id or Amplitude ID, and this person has no user_id " +
        `(device ids: ${request.deviceIds.join(", ") || "none"}); delete them in Amplitude by Amplitude ID`
    } satisfies Destination.DeletionOutcome
  }
  const apiKey = Redacted.value(settings.apiKey)
  const secretKey = Redacted.value(settings.secretKey)
  const secrets = [apiKey, secretKey, basicAuth(apiKey, secretKey)]
  const client = yield* HttpClient.HttpClient
  const transport = (e: HttpClientError.HttpClientError) =>
    new Destination.RetryableError({
      message: redactAll(`Amplitude User Privacy API request failed: ${e.message}`, secrets)
    })
  const body = JSON.stringify(deletionBody([userId], request.requester))
  for (let attempt = 1;; attempt++) {
    const response = yield* client.execute(
      HttpClientRequest.post(settings.deletionEndpoint).pipe(
        HttpClientRequest.setHeader("authorization", basicAuth(apiKey, secretKey)),
        HttpClientRequest.bodyText(body, "application/json"),
        HttpClientRequest.acceptJson
      )
    ).pipe(Effect.mapError(transport))
    const text = yield* response.text.pipe(Effect.mapError(transport))
    const s = response.status
    const info: Destination.ResponseInfo = { status: s, body: redactAll(text, secrets) }
    const json = jsonOf(text)
    const error = typeof json.error === "string" ? json.error : info.body.slice(0, 200)
    if (s >= 200 && s < 300) {
      const day = typeof json.day === "string" ? json.day : undefined
      const status = typeof json.status === "string" ? json.status : undefined
      return {
        _tag: "Deleted",
        detail: `Amplitude deletion job for user_id ${userId}` + (status !== undefined ? ` (${status})` : "") +
          (day !== undefined ? ` scheduled for ${day}` : ""),
        response: info
      } satisfies Destination.DeletionOutcome
    }
    if (s === 429) {
      const wait = retryAfterMs(response.headers["retry-after"], yield* Clock.currentTimeMillis) ?? 1100
      if (attempt < DELETION_ATTEMPTS) {
        yield* Effect.sleep(Duration.millis(Math.min(wait, 10_000)))
        continue
      }
      return yield* new Destination.RetryableError({
        message: `Amplitude User Privacy API answered 429 ${DELETION_ATTEMPTS} times: ${error}`,
        retryAfterMs: wait,
        status: s,
        body: info.body
      })
    }
    if (s === 401 || s === 403) {
      return yield* new Destination.AuthFailedError({
        message: `Amplitude refused the api key / secret key for the User Privacy API (${s})`,
        status: s,
        body: info.body
      })
    }
    if (s === 408 || s >= 500) {
      return yield* new Destination.RetryableError({
        message: `Amplitude User Privacy API answered ${s}: ${error}`,
        status: s,
        body: info.body
      })
    }
    return {
      _tag: "Rejected",
      reason: `Amplitude User Privacy API answered ${s}: ${error}`,
      response: info
    } satisfies Destination.DeletionOutcome
  }
})
