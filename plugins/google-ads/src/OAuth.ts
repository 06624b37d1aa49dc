/**
 * Google OAuth 2.0 for the Data Manager API: the refresh-token grant (`POST https://oauth2.googleapis.com/token` with
 * `client_id`, `client_secret`, `refresh_token`, `grant_type=refresh_token` → `{ access_token, expires_in }`).
 *
 * Access tokens are cached in memory per credentials (token URL, client id and a digest of the refresh token) and
 * refreshed before they expire: 60 s early, or half their lifetime when that is shorter (short-lived test tokens).
 * The cache is per process; nothing is written to disk or logged. A refused grant (`invalid_grant`,
 * `invalid_client`, `unauthorized_client`) is an `AuthFailedError`; 429, 5xx and transport errors are retryable.
 */
import type { HttpClientError } from "@effect/platform"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import * as Destination from "@tracklayer/core/Destination"
import * as Pii from "@tracklayer/core/Pii"
import { Clock, Effect, Redacted } from "effect"

/** The OAuth scope of the Data Manager API. */
export const SCOPE = "https://www.googleapis.com/auth/datamanager"
/** Google's token endpoint. */
export const DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
/** A cached token is refreshed this long before it expires (or at half its lifetime, when that is sooner). */
export const REFRESH_MARGIN_MS = 60_000

/** What the token exchange needs (a subset of the plugin settings). */
export interface Credentials {
  readonly tokenUrl: string
  readonly clientId: string
  readonly clientSecret: Redacted.Redacted<string>
  readonly refreshToken: Redacted.Redacted<string>
}

interface CachedToken {
  readonly token: string
  /** Epoch ms from which the token is refreshed instead of used. */
  readonly refreshAt: number
}

const cache = new Map<string, CachedToken>()

const keyOf = (c: Credentials): string =>
  `${c.tokenUrl}\n${c.clientId}\n${Pii.sha256Hex(Redacted.value(c.refreshToken))}`

/** Forgets every cached access token (tests; credential rotation). */
export const clearCache = (): void => cache.clear()

/** Forgets the cached token of `credentials` if it still is `token` (a concurrent refresh is kept). */
export const invalidate = (credentials: Credentials, token: string): void => {
  const key = keyOf(credentials)
  if (cache.get(key)?.token === token) cache.delete(key)
}

/** Removes the client secret, refresh token and any `ya29.`-style access token from a text. */
export const redact = (text: string, credentials: Credentials, extra: ReadonlyArray<string> = []): string => {
  let out = text
  for (const secret of [Redacted.value(credentials.clientSecret), Redacted.value(credentials.refreshToken), ...extra]) {
    if (secret.length > 0) out = out.split(secret).join("[redacted]")
  }
  return out.replace(/\bya29\.[\w.-]+/g, "[redacted]")
}

const recordOf = (u: unknown): Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>) : {}

const REFUSED_GRANTS = new Set(["invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"])

const exchange = Effect.fn("GoogleAds.OAuth.exchange")(function*(credentials: Credentials) {
  const transport = (error: HttpClientError.HttpClientError) =>
    new Destination.RetryableError({
      message: redact(`Google token request failed: ${error.message}`, credentials)
    })
  const client = yield* HttpClient.HttpClient
  const response = yield* client.execute(
    HttpClientRequest.post(credentials.tokenUrl).pipe(
      HttpClientRequest.bodyUrlParams({
        client_id: credentials.clientId,
        client_secret: Redacted.value(credentials.clientSecret),
        refresh_token: Redacted.value(credentials.refreshToken),
        grant_type: "refresh_token"
      }),
      HttpClientRequest.acceptJson
    )
  ).pipe(Effect.mapError(transport))
  const text = yield* response.text.pipe(Effect.mapError(transport))
  let json: Record<string, unknown> = {}
  try {
    json = recordOf(JSON.parse(text))
  } catch {
    // An HTML error page: the status decides.
  }
  const s = response.status
  const body = redact(text, credentials).slice(0, 2000)
  if (s === 200 && typeof json.access_token === "string" && json.access_token.length > 0) {
    const expiresIn = typeof json.expires_in === "number" && json.expires_in > 0 ? json.expires_in : 3600
    return { token: json.access_token, expiresInMs: expiresIn * 1000 }
  }
  const error = typeof json.error === "string" ? json.error : undefined
  const description = typeof json.error_description === "string" ? `: ${json.error_description}` : ""
  if (s === 429 || s >= 500) {
    return yield* new Destination.RetryableError({
      message: `Google token endpoint answered ${s}`,
      status: s,
      body
    })
  }
  return yield* new Destination.AuthFailedError({
    message: redact(
      error !== undefined && REFUSED_GRANTS.has(error)
        ? `Google refused the OAuth credentials (${error}${description}): check clientId, clientSecret and refreshToken`
        : `Google token endpoint answered ${s}${error !== undefined ? ` (${error}${description})` : ""}: ` +
          `check tokenUrl and the OAuth credentials`,
      credentials
    ),
    status: s,
    body
  })
})

/**
 * An access token for `credentials`: the cached one while it is fresh, else a new one from the token endpoint.
 * `force` skips the cache (after the API answered 401 to the cached token).
 */
export const accessToken = (
  credentials: Credentials,
  options: { readonly force?: boolean } = {}
): Effect.Effect<string, Destination.SendError, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const key = keyOf(credentials)
    const now = yield* Clock.currentTimeMillis
    const cached = cache.get(key)
    if (options.force !== true && cached !== undefined && now < cached.refreshAt) return cached.token
    const { expiresInMs, token } = yield* exchange(credentials)
    const issuedAt = yield* Clock.currentTimeMillis
    cache.set(key, { token, refreshAt: issuedAt + expiresInMs - Math.min(REFRESH_MARGIN_MS, expiresInMs / 2) })
    return token
  }).pipe(Effect.withSpan("GoogleAds.OAuth.accessToken"))
