/**
 * API keys: write keys for ingest and one admin key for explain/admin endpoints. Held as `Redacted`, compared in
 * constant time, never logged. Each key has its own request budget (a token bucket, `TRACKLAYER_RATE_LIMIT`).
 */
import { Clock, Config, ConfigError, Context, Effect, Either, Layer, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"

/** Requests per second each key may make, and how many it may spend at once; `perSecond` 0 turns the limit off. */
export interface RateLimit {
  readonly perSecond: number
  readonly burst: number
}

/** The default per-key limit: 200 requests/second, bursts of 400 (a request carries up to 500 events). */
export const DEFAULT_RATE_LIMIT: RateLimit = { perSecond: 200, burst: 400 }

/** The configured keys. */
export class Keys extends Context.Tag("@tracklayer/server/Keys")<Keys, {
  readonly write: ReadonlyArray<Redacted.Redacted<string>>
  readonly admin: Redacted.Redacted<string>
  readonly rateLimit: RateLimit
  /**
   * Spends one request from the budget of the key named `key` (`write:<index>` or `admin`): `undefined` when it may
   * go ahead, else the whole seconds until it may retry.
   */
  readonly spend: (key: string) => Effect.Effect<number | undefined>
}>() {}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/**
 * The index of the configured key `presented` is, or -1. Compares SHA-256 digests (equal length, so the key's
 * length does not leak) with `timingSafeEqual`, against every key without stopping at a match.
 */
export const indexOf = (presented: string, keys: ReadonlyArray<Redacted.Redacted<string>>): number => {
  const p = digest(presented)
  let found = -1
  keys.forEach((k, i) => {
    const equal = timingSafeEqual(p, digest(Redacted.value(k)))
    found = equal && found < 0 ? i : found
  })
  return found
}

/** Constant-time comparison of a presented key against the configured ones. */
export const matches = (presented: string, keys: ReadonlyArray<Redacted.Redacted<string>>): boolean =>
  indexOf(presented, keys) >= 0

/** The name a key's budget is kept under: `write:<index>` or `admin` (never the key itself). */
export const keyName = (presented: string, keys: Keys["Type"], kind: "write" | "admin"): Option.Option<string> => {
  const admin = indexOf(presented, [keys.admin]) >= 0
  const write = kind === "write" ? indexOf(presented, keys.write) : -1
  return write >= 0 ? Option.some(`write:${write}`) : admin ? Option.some("admin") : Option.none()
}

/** A token bucket per key name, refilled continuously at `limit.perSecond` up to `limit.burst`. */
const budgets = (limit: RateLimit) => {
  const buckets = new Map<string, { tokens: number; at: number }>()
  return (key: string): Effect.Effect<number | undefined> =>
    limit.perSecond <= 0 ? Effect.succeed(undefined) : Effect.map(Clock.currentTimeMillis, (now) => {
      const b = buckets.get(key) ?? { tokens: limit.burst, at: now }
      const tokens = Math.min(limit.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * limit.perSecond)
      if (tokens >= 1) {
        buckets.set(key, { tokens: tokens - 1, at: now })
        return undefined
      }
      buckets.set(key, { tokens, at: now })
      return Math.max(1, Math.ceil((1 - tokens) / limit.perSecond))
    })
}

/** The keys service with `limit`. */
export const make = (
  write: ReadonlyArray<Redacted.Redacted<string>>,
  admin: Redacted.Redacted<string>,
  limit: RateLimit
): Keys["Type"] => Keys.of({ write, admin, rateLimit: limit, spend: budgets(limit) })

/** The bearer token of an `Authorization` header, if any. */
export const bearer = (header: string | undefined): Option.Option<string> => {
  const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m ? Option.some(m[1]!) : Option.none()
}

const MIN_KEY_LENGTH = 16

/** Keys from `TRACKLAYER_WRITE_KEYS` (comma-separated) and `TRACKLAYER_ADMIN_KEY`. */
export const KeysConfig = Config.all({
  write: Config.redacted("TRACKLAYER_WRITE_KEYS").pipe(
    Config.withDescription("comma-separated write keys accepted by POST /v1/events"),
    Config.mapOrFail((r) => {
      const keys = Redacted.value(r).split(",").map((k) => k.trim()).filter((k) => k.length > 0)
      if (keys.length === 0) return Either.left(ConfigErrorOf("TRACKLAYER_WRITE_KEYS", "must name at least one key"))
      if (keys.some((k) => k.length < MIN_KEY_LENGTH)) {
        return Either.left(
          ConfigErrorOf("TRACKLAYER_WRITE_KEYS", `each key must be at least ${MIN_KEY_LENGTH} characters`)
        )
      }
      return Either.right(keys.map((k) => Redacted.make(k)))
    })
  ),
  admin: Config.redacted("TRACKLAYER_ADMIN_KEY").pipe(
    Config.withDescription("admin key for explain and admin endpoints"),
    Config.mapOrFail((r) =>
      Redacted.value(r).trim().length < MIN_KEY_LENGTH
        ? Either.left(ConfigErrorOf("TRACKLAYER_ADMIN_KEY", `must be at least ${MIN_KEY_LENGTH} characters`))
        : Either.right(r)
    )
  )
})

/** The per-key limit from `TRACKLAYER_RATE_LIMIT` (requests/second, 0 = off) and `TRACKLAYER_RATE_BURST`. */
export const RateLimitConfig: Config.Config<RateLimit> = Config.all({
  perSecond: Config.number("TRACKLAYER_RATE_LIMIT").pipe(
    Config.withDescription("requests per second each key may make (0 turns the limit off); over it: 429"),
    Config.withDefault(DEFAULT_RATE_LIMIT.perSecond)
  ),
  burst: Config.option(
    Config.integer("TRACKLAYER_RATE_BURST").pipe(
      Config.withDescription("requests a key may make at once (default: twice TRACKLAYER_RATE_LIMIT)")
    )
  )
}).pipe(
  Config.mapOrFail(({ burst, perSecond }) => {
    if (!Number.isFinite(perSecond) || perSecond < 0) {
      return Either.left(ConfigErrorOf("TRACKLAYER_RATE_LIMIT", "must be a number of requests per second, 0 or more"))
    }
    if (Option.isSome(burst) && burst.value < 1) {
      return Either.left(ConfigErrorOf("TRACKLAYER_RATE_BURST", "must be an integer of at least 1"))
    }
    return Either.right({ perSecond, burst: Option.getOrElse(burst, () => Math.max(1, Math.ceil(2 * perSecond))) })
  })
)

const ConfigErrorOf = (name: string, message: string) => ConfigError.InvalidData([name], message)

/** Keys and the rate limit read from the environment. */
export const layerConfig = Layer.effect(
  Keys,
  Effect.gen(function*() {
    const keys = yield* KeysConfig
    return make(keys.write, keys.admin, yield* RateLimitConfig)
  })
)

/** Fixed keys (tests, sandbox mode); the rate limit is `rateLimit` or else read from the environment. */
export const layer = (write: ReadonlyArray<string>, admin: string, rateLimit?: RateLimit) =>
  Layer.effect(
    Keys,
    Effect.map(
      rateLimit !== undefined ? Effect.succeed(rateLimit) : RateLimitConfig,
      (limit) => make(write.map((k) => Redacted.make(k)), Redacted.make(admin), limit)
    )
  )
