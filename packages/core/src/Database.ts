/**
 * The SQL store connection: PostgreSQL through `@effect/sql-pg`, or the embedded default, PGlite, served in-process
 * over a private Unix socket with `@electric-sql/pglite-socket` so both go through the same driver and the same SQL.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import * as Migrator from "@effect/sql/Migrator"
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Config, Context, Data, Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { MIGRATION_LOCK } from "./internal/locks.js"
import { migrations } from "./internal/migrations.js"

/** Which store is in use (shown by `/healthz` and the banner). */
export interface StoreInfo {
  readonly kind: "pglite" | "postgres"
  /** Data directory (PGlite) or the server address without credentials (PostgreSQL). */
  readonly location: string
}

/** Which store is in use, as a service. */
export class Store extends Context.Tag("@tracklayer/core/Store")<Store, StoreInfo>() {}

/** The store could not be opened. */
export class StoreOpenError
  extends Data.TaggedError("StoreOpenError")<{ readonly message: string; readonly cause?: unknown }>
{}

const migrator = Migrator.make({})({ loader: Migrator.fromRecord(migrations), table: "tl_migrations" })

/**
 * Runs the migrations (idempotent). Safe under concurrent starts: the migrator locks its table, and the table itself
 * is created first under an advisory lock — on a fresh database two processes would otherwise both create it (and
 * one fail on `pg_type_typname_nsp_index`). The definition is the migrator's own for PostgreSQL.
 */
export const migrate = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql.withTransaction(
    Effect.zipRight(
      sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`,
      sql`CREATE TABLE IF NOT EXISTS tl_migrations (
        migration_id integer primary key,
        created_at timestamp with time zone not null default now(),
        name text not null
      )`
    )
  ).pipe(Effect.zipRight(migrator)))

const describeUrl = (url: string): string => {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return "(unparseable DATABASE_URL)"
  }
}

/** PostgreSQL at `url`. */
export const layerPostgres = (url: Redacted.Redacted<string>, options: { readonly maxConnections?: number } = {}) =>
  Layer.merge(
    PgClient.layer({ url, maxConnections: options.maxConnections ?? 10, applicationName: "tracklayer" }),
    Layer.succeed(Store, { kind: "postgres", location: describeUrl(Redacted.value(url)) })
  )

/** Opens PGlite with its data directory at `dataDir` (`memory://` for an in-memory store) and serves it on a socket. */
export const pglite = (dataDir: string) =>
  Effect.gen(function*() {
    if (dataDir !== "memory://") {
      yield* Effect.try({
        try: () => fs.mkdirSync(dataDir, { recursive: true }),
        catch: (cause) => new StoreOpenError({ message: `cannot create data directory ${dataDir}`, cause })
      })
    }
    // PGlite serves one process: a second gateway on the same directory would corrupt it. A lock file with the
    // owner's pid keeps it out (a stale lock of a dead process is taken over).
    if (dataDir !== "memory://") {
      const lock = path.join(dataDir, ".tracklayer.lock")
      yield* Effect.acquireRelease(
        Effect.try({
          try: () => {
            try {
              fs.writeFileSync(lock, String(process.pid), { flag: "wx" })
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
              const owner = Number(fs.readFileSync(lock, "utf8").trim())
              let alive = false
              try {
                alive = owner > 0 && (owner === process.pid || (process.kill(owner, 0), true))
              } catch {
                alive = false
              }
              if (alive) throw new Error(`in use by process ${owner}`)
              fs.writeFileSync(lock, String(process.pid))
            }
          },
          catch: (cause) =>
            new StoreOpenError({
              message: `the PGlite data directory ${dataDir} is ${
                cause instanceof Error && cause.message.startsWith("in use")
                  ? cause.message
                  : `not lockable (${String(cause)})`
              }: PGlite serves one process only; stop the other gateway, or use PostgreSQL (DATABASE_URL) for several`,
              cause
            })
        }),
        () => Effect.sync(() => fs.rmSync(lock, { force: true }))
      )
    }
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => PGlite.create(dataDir === "memory://" ? undefined : dataDir),
        catch: (cause) =>
          new StoreOpenError({
            message: `cannot open PGlite data directory ${dataDir}: ${String(cause)} ` +
              "(is another TrackLayer process using it? PGlite serves one process only)",
            cause
          })
      }),
      (db) => Effect.promise(() => db.close()).pipe(Effect.ignore)
    )
    // The socket lives in a short private temp directory: Unix socket paths are limited to ~100 bytes.
    const socketDir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "tl-pg-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const server = new PGLiteSocketServer({ db, path: path.join(socketDir, ".s.PGSQL.5432"), maxConnections: 1 })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => server.start(),
        catch: (cause) => new StoreOpenError({ message: "cannot start the PGlite socket", cause })
      }),
      () => Effect.promise(() => server.stop()).pipe(Effect.ignore)
    )
    return { socketDir }
  })

/**
 * PGlite with its data directory at `dataDir`. PGlite is single-connection, so the pool holds one connection and
 * transactions are serialised; it is the one-process default, not the scale-out store.
 */
export const layerPglite = (dataDir: string) =>
  Layer.unwrapScoped(
    Effect.map(pglite(dataDir), ({ socketDir }) =>
      Layer.merge(
        PgClient.layer({
          host: socketDir,
          port: 5432,
          database: "postgres",
          username: "postgres",
          maxConnections: 1,
          applicationName: "tracklayer"
        }),
        Layer.succeed(Store, { kind: "pglite", location: dataDir })
      ))
  )

/** Store configuration: `DATABASE_URL` selects PostgreSQL, else PGlite in `TRACKLAYER_DATA_DIR`. */
export const StoreConfig = Config.all({
  databaseUrl: Config.option(
    Config.redacted("DATABASE_URL").pipe(
      Config.withDescription("PostgreSQL connection URL; when unset the embedded PGlite store is used")
    )
  ),
  dataDir: Config.string("TRACKLAYER_DATA_DIR").pipe(
    Config.withDefault("./.tracklayer/data"),
    Config.withDescription("PGlite data directory (ignored when DATABASE_URL is set)")
  ),
  maxConnections: Config.integer("TRACKLAYER_DB_POOL").pipe(
    Config.withDefault(10),
    Config.withDescription("PostgreSQL connection pool size")
  )
})

/** The store selected by configuration, migrated. */
export const layer: Layer.Layer<
  Store | PgClient.PgClient | SqlClient.SqlClient,
  unknown
> = Layer.unwrapEffect(
  Effect.map(StoreConfig, (c) =>
    Option.match(c.databaseUrl, {
      onNone: () => layerPglite(c.dataDir),
      onSome: (url) => layerPostgres(url, { maxConnections: c.maxConnections })
    }))
).pipe(Layer.tap((ctx) => Effect.provide(migrate, ctx)))
