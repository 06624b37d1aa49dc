/**
 * API keys: write keys for ingest and one admin key for explain/admin endpoints. Held as `Redacted`, compared in
 * constant time, never logged.
 */
import { Config, ConfigError, Context, Either, Layer, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"

/** The configured keys. */
export class Keys extends Context.Tag("@tracklayer/server/Keys")<Keys, {
  readonly write: ReadonlyArray<Redacted.Redacted<string>>
  readonly admin: Redacted.Redacted<string>
}>() {}

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest()

/** Constant-time comparison of a presented key against the configured ones. */
export const matches = (presented: string, keys: ReadonlyArray<Redacted.Redacted<string>>): boolean => {
  const p = digest(presented)
  let ok = false
  for (const k of keys) ok = timingSafeEqual(p, digest(Redacted.value(k))) || ok
  return ok
}

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

const ConfigErrorOf = (name: string, message: string) => ConfigError.InvalidData([name], message)

/** Keys read from the environment. */
export const layerConfig = Layer.effect(Keys, KeysConfig)

/** Fixed keys (tests, sandbox mode). */
export const layer = (write: ReadonlyArray<string>, admin: string) =>
  Layer.succeed(Keys, { write: write.map((k) => Redacted.make(k)), admin: Redacted.make(admin) })
