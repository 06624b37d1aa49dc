/**
 * A real, migrated store for tests: PostgreSQL when `DATABASE_URL` is set (a fresh schema per layer, dropped
 * afterwards, so test files run in parallel without seeing each other), else an in-memory PGlite.
 */
import { PgClient } from "@effect/sql-pg"
import { Database } from "@tracklayer/core"
import { Config, Effect, Layer, Option, Redacted } from "effect"
import { randomBytes } from "node:crypto"

/** The URL of PostgreSQL for tests, if the suite runs on PostgreSQL. */
export const databaseUrl = Config.option(Config.string("DATABASE_URL"))

/** Adds `search_path=<schema>` to a PostgreSQL URL. */
export const withSearchPath = (url: string, schema: string): string => {
  const u = new URL(url)
  u.searchParams.set("options", `-c search_path=${schema}`)
  return u.toString()
}

/** A private schema on the PostgreSQL at `url`, dropped when the scope closes. Returns a URL that uses it. */
export const privateSchema = (url: string) =>
  Effect.gen(function*() {
    const schema = `tl_test_${randomBytes(6).toString("hex")}`
    const admin = Layer.orDie(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
    yield* Effect.acquireRelease(
      Effect.flatMap(PgClient.PgClient, (sql) => sql`CREATE SCHEMA ${sql(schema)}`).pipe(Effect.provide(admin)),
      () =>
        Effect.flatMap(PgClient.PgClient, (sql) => sql`DROP SCHEMA ${sql(schema)} CASCADE`).pipe(
          Effect.provide(admin),
          Effect.ignore
        )
    )
    return { schema, url: withSearchPath(url, schema) }
  })

/** A migrated store: PostgreSQL (private schema) when DATABASE_URL is set, else in-memory PGlite. */
export const layer = Layer.unwrapScoped(
  Effect.gen(function*() {
    const url = yield* databaseUrl
    if (Option.isNone(url)) return Database.layerPglite("memory://")
    const s = yield* privateSchema(url.value)
    return Database.layerPostgres(Redacted.make(s.url), { maxConnections: 10 })
  })
).pipe(Layer.tap((ctx) => Effect.provide(Database.migrate, ctx)), Layer.orDie)

/** Which store the suite runs on (for test names). */
export const kind = Effect.map(databaseUrl, Option.match({ onNone: () => "pglite", onSome: () => "postgres" }))
