/**
 * LinkedIn OAuth 2.0 with programmatic refresh tokens: exchanges the refresh token for an access token
 * (`POST https://www.linkedin.com/oauth/v2/accessToken`, `grant_type=refresh_token`) and caches it in memory per set
 * of credentials, refreshing it before it expires. One refresh at a time per credentials (a semaphore), so a burst
 * of concurrent sends makes one token call.
 *
 * The cache is module state on purpose: the plugin API gives `send` only an `HttpClient`, and a token must outlive
 * one `send`. Keys are SHA-256 digests of the credentials, so no secret is ever held as a key.
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Clock, Effect, Redacted } from "effect"

/** What a token exchange needs. */
export interface Credentials {
  readonly tokenUrl: string
  readonly clientId: string
  readonly clientSecret: Redacted.Redacted<string>
  readonly refreshToken: Redacted.Redacted<string>
}

/** A cached access token. */
interface Entry {
  readonly accessToken: string
  /** Epoch ms when LinkedIn says it expires. */
  readonly expiresAt: number
  /** Epoch ms from which it is refreshed (before `expiresAt`). */
  readonly refreshAt: number
  /** The refresh token to use next (LinkedIn may hand out a new one). */
  readonly refreshToken: string
}

/** Longest margin before expiry at which a token is refreshed. */
export const MAX_REFRESH_MARGIN_MS = 5 * 60_000
/** Longest token-endpoint answer excerpt kept in an error. */
const MAX_EXCERPT = 500

const cache = new Map<string, Entry>()
const locks = new Map<string, Effect.Semaphore>()

const keyOf = (c: Credentials): string =>
  Pii.sha256Hex(
    JSON.stringify([c.tokenUrl, c.clientId, Redacted.value(c.clientSecret), Redacted.value(c.refreshToken)])
  )

const lockOf = (key: string): Effect.Semaphore => {
  let lock = locks.get(key)
  if (lock === undefined) {
    lock = Effect.unsafeMakeSemaphore(1)
    locks.set(key, lock)
  }
  return lock
}

/** Refresh margin for a token living `lifetimeMs`: a tenth of its life, at most five minutes. */
export const refreshMargin = (lifetimeMs: number): number => Math.min(MAX_REFRESH_MARGIN_MS, lifetimeMs / 10)

/** Replaces every secret (and its JSON-escaped form) in `text`. */
export const redactAll = (text: string, secrets: ReadonlyArray<string>): string => {
  let out = text
  for (const s of secrets) {
    for (const form of new Set([s, JSON.stringify(s).slice(1, -1), encodeURIComponent(s)])) {
      if (form.length > 0) out = out.split(form).join("[redacted]")
    }
  }
  return out
}

/** Every secret of the credentials, including the cached tokens derived from them. */
export const secretsOf = (c: Credentials): ReadonlyArray<string> => {
  const entry = cache.get(keyOf(c))
  return [
    Redacted.value(c.clientSecret),
    Redacted.value(c.refreshToken),
    ...(entry !== undefined ? [entry.accessToken, entry.refreshToken] : [])
  ]
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const refresh = Effect.fn("LinkedIn.refreshAccessToken")(function*(c: Credentials, refreshToken: string) {
  const secrets = [Redacted.value(c.clientSecret), Redacted.value(c.refreshToken), refreshToken]
  const transport = (e: HttpClientError.HttpClientError) =>
    new Destination.RetryableError({
      message: redactAll(`LinkedIn token request failed: ${e.message}`, secrets).slice(0, MAX_EXCERPT)
    })
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post(c.tokenUrl).pipe(
      HttpClientRequest.bodyUrlParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken,
        client_id: c.clientId,
        client_secret: Redacted.value(c.clientSecret)
      }),
      HttpClientRequest.acceptJson
    )
  ).pipe(Effect.mapError(transport))
  const text = yield* response.text.pipe(Effect.mapError(transport))
  const now = yield* Clock.currentTimeMillis
  let json: Record<string, unknown> = {}
  try {
    const parsed: unknown = JSON.parse(text)
    if (isRecord(parsed)) json = parsed
  } catch {
    // An HTML error page: the status decides.
  }
  const s = response.status
  yield* Effect.annotateCurrentSpan("http.status", s)
  const body = redactAll(text, [...secrets, ...(typeof json.access_token === "string" ? [json.access_token] : [])])
    .slice(0, MAX_EXCERPT)
  const fields = { status: s, body }
  if (s >= 200 && s < 300) {
    const accessToken = json.access_token
    const expiresIn = json.expires_in
    if (typeof accessToken !== "string" || accessToken === "" || typeof expiresIn !== "number" || expiresIn <= 0) {
      return yield* new Destination.RetryableError({
        message: `LinkedIn token endpoint answered ${s} without access_token/expires_in`,
        ...fields
      })
    }
    const lifetime = expiresIn * 1000
    const entry: Entry = {
      accessToken,
      expiresAt: now + lifetime,
      refreshAt: now + lifetime - refreshMargin(lifetime),
      refreshToken: typeof json.refresh_token === "string" && json.refresh_token !== ""
        ? json.refresh_token
        : refreshToken
    }
    return entry
  }
  const reason = [json.error, json.error_description].filter((x) => typeof x === "string").join(": ")
  const message = redactAll(
    `LinkedIn refused the token refresh (${s}${reason !== "" ? `, ${reason}` : ""})`,
    secrets
  ).slice(0, MAX_EXCERPT)
  if (s === 429 || s === 408 || s >= 500) return yield* new Destination.RetryableError({ message, ...fields })
  // 400 invalid_grant (refresh token expired or revoked), 401 invalid_client, anything else: an operator must act.
  return yield* new Destination.AuthFailedError({ message, ...fields })
})

/**
 * A valid access token for `c`: the cached one until its refresh time, else a fresh one. When a refresh fails
 * transiently but the cached token has not expired yet, the cached token is still used.
 */
export const accessToken = (
  c: Credentials
): Effect.Effect<string, Destination.AuthFailedError | Destination.RetryableError, HttpClient.HttpClient> => {
  const key = keyOf(c)
  return lockOf(key).withPermits(1)(Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const hit = cache.get(key)
    if (hit !== undefined && now < hit.refreshAt) return hit.accessToken
    const fresh = yield* refresh(c, hit?.refreshToken ?? Redacted.value(c.refreshToken)).pipe(
      Effect.catchTag(
        "RetryableError",
        (e) => hit !== undefined && now < hit.expiresAt ? Effect.succeed(hit) : Effect.fail(e)
      )
    )
    cache.set(key, fresh)
    return fresh.accessToken
  }))
}

/** Forgets `token` (LinkedIn refused it); a concurrent refresh that already replaced it is kept. */
export const invalidate = (c: Credentials, token: string): Effect.Effect<void> =>
  Effect.sync(() => {
    const key = keyOf(c)
    if (cache.get(key)?.accessToken === token) cache.delete(key)
  })

/** Forgets every cached token (tests). */
export const clearCache = (): void => {
  cache.clear()
}
