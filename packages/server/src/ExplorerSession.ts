/**
 * Sessions of the delivery-log explorer (`/ui`): an operator signs in with the admin key once and then holds a
 * random session id in an `HttpOnly; SameSite=Strict; Secure` cookie. Sessions live in this process's memory for
 * 8 hours: a restart signs everyone out (docs/explorer.md). State-changing requests made with the cookie also need
 * the session's CSRF token in the `x-csrf-token` header.
 */
import { Headers, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Data, Effect, Option, Redacted } from "effect"
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"
import { bearer, Keys, matches } from "./Keys.js"

/** The cookie that carries the session id. */
export const SESSION_COOKIE = "tl_session"
/** The header that carries the session's CSRF token on state-changing requests. */
export const CSRF_HEADER = "x-csrf-token"
/** How long a session lasts after sign-in. */
export const SESSION_TTL_MS = 8 * 60 * 60 * 1000
/** At most this many sessions are held; signing in beyond it ends the oldest. */
export const MAX_SESSIONS = 1000

/** One signed-in browser. */
export interface Session {
  readonly id: string
  /** Sent back in `x-csrf-token` by the UI's own scripts. */
  readonly csrf: string
  readonly expiresAt: number
  /** SHA-256 of the admin key it was opened with: a session never outlives a change of the key. */
  readonly keyDigest: string
}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

// In memory, per process, by design (docs/explorer.md): nothing about a session is ever written to the store.
const sessions = new Map<string, Session>()

const prune = (now: number) => {
  for (const [id, s] of sessions) if (s.expiresAt <= now) sessions.delete(id)
  // Map order is insertion order: the first entries are the oldest sessions.
  while (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!)
}

/** The admin key could not be verified: a JSON 401 or the sign-in page, depending on the route. */
export class ExplorerUnauthorized extends Data.TaggedError("ExplorerUnauthorized")<{ readonly message: string }> {}

/** A state-changing request without the session's CSRF token. */
export class ExplorerForbidden extends Data.TaggedError("ExplorerForbidden")<{ readonly message: string }> {}

/** Checks a presented admin key (constant time). */
export const checkAdminKey = (presented: string) => Effect.map(Keys, (keys) => matches(presented, [keys.admin]))

/** Opens a session for the current admin key. */
export const open = Effect.gen(function*() {
  const keys = yield* Keys
  const now = Date.now()
  prune(now)
  const session: Session = {
    id: randomBytes(32).toString("base64url"),
    csrf: randomBytes(32).toString("base64url"),
    expiresAt: now + SESSION_TTL_MS,
    keyDigest: digest(Redacted.value(keys.admin))
  }
  sessions.set(session.id, session)
  return session
})

/** Ends a session (sign-out). */
export const close = (id: string) => Effect.sync(() => sessions.delete(id))

/** The live session named by the request's cookie, if any. */
export const current = Effect.gen(function*() {
  const req = yield* HttpServerRequest.HttpServerRequest
  const keys = yield* Keys
  const id = req.cookies[SESSION_COOKIE]
  if (id === undefined) return Option.none<Session>()
  const s = sessions.get(id)
  if (s === undefined) return Option.none<Session>()
  if (s.expiresAt <= Date.now() || s.keyDigest !== digest(Redacted.value(keys.admin))) {
    sessions.delete(id)
    return Option.none<Session>()
  }
  return Option.some(s)
})

const sameToken = (a: string, b: string) => {
  const x = createHash("sha256").update(a).digest()
  const y = createHash("sha256").update(b).digest()
  return timingSafeEqual(x, y)
}

/** True when the request carries the session's CSRF token. */
export const csrfMatches = (s: Session) =>
  Effect.map(HttpServerRequest.HttpServerRequest, (req) => {
    const presented = req.headers[CSRF_HEADER]
    return typeof presented === "string" && sameToken(presented, s.csrf)
  })

/**
 * Who is asking: the admin bearer key, or a session cookie (with its CSRF token when `state` is "change").
 * A request that presents a bearer key is judged by the key alone.
 */
export const authorize = (state: "read" | "change") =>
  Effect.gen(function*() {
    const req = yield* HttpServerRequest.HttpServerRequest
    const token = bearer(req.headers["authorization"])
    if (Option.isSome(token)) {
      if (yield* checkAdminKey(token.value)) return { by: "key" as const }
      return yield* new ExplorerUnauthorized({ message: "unknown admin key" })
    }
    const s = yield* current
    if (Option.isNone(s)) {
      return yield* new ExplorerUnauthorized({
        message: "missing `Authorization: Bearer <admin key>` header or explorer session (sign in at /ui)"
      })
    }
    if (state === "change" && !(yield* csrfMatches(s.value))) {
      return yield* new ExplorerForbidden({ message: `missing or wrong \`${CSRF_HEADER}\` header for this session` })
    }
    return { by: "session" as const, session: s.value }
  })

/**
 * Lets the explorer's session call an admin endpoint that only knows bearer keys (e.g. redrive): a request with a
 * live session cookie and its CSRF token is passed to `handler` as if it carried the admin key. Requests with an
 * `Authorization` header, or without a session, reach `handler` unchanged (it answers them as usual).
 */
export const admitSession = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  E,
  R | Keys | HttpServerRequest.HttpServerRequest
> =>
  Effect.gen(function*() {
    const req = yield* HttpServerRequest.HttpServerRequest
    if (req.headers["authorization"] !== undefined) return yield* handler
    const s = yield* current
    if (Option.isNone(s)) return yield* handler
    if (!(yield* csrfMatches(s.value))) {
      return HttpServerResponse.unsafeJson({
        error: { code: "forbidden", message: `missing or wrong \`${CSRF_HEADER}\` header for this session` }
      }, { status: 403 })
    }
    const keys = yield* Keys
    const asAdmin = req.modify({
      headers: Headers.set(req.headers, "authorization", `Bearer ${Redacted.value(keys.admin)}`)
    })
    return yield* Effect.provideService(handler, HttpServerRequest.HttpServerRequest, asAdmin)
  })

/**
 * The `Set-Cookie` value of a session. Always `Secure`: browsers keep such a cookie on https and on
 * http://localhost / http://127.0.0.1 (loopback counts as secure), never on plain http to another host.
 */
export const sessionCookie = (s: Session) =>
  `${SESSION_COOKIE}=${s.id}; HttpOnly; SameSite=Strict; Path=/; Secure; Max-Age=${Math.floor(SESSION_TTL_MS / 1000)}`

/** The `Set-Cookie` value that removes the session cookie. */
export const clearedCookie = `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Secure; Max-Age=0`
