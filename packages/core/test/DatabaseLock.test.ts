/** PGlite serves one process: a second open of the same data directory is refused with a clear message. */
import { Database } from "@tracklayer/core"
import { Effect, Either, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

describe("PGlite data directory lock", () => {
  it(
    "refuses a second gateway on the same directory, takes over a dead owner's lock, and releases on close",
    async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tl-lock-"))
      try {
        const scope = await Effect.runPromise(Scope.make())
        await Effect.runPromise(Scope.extend(Database.pglite(dir), scope))
        expect(fs.readFileSync(path.join(dir, ".tracklayer.lock"), "utf8")).toBe(String(process.pid))
        const second = await Effect.runPromise(Effect.either(Effect.scoped(Database.pglite(dir))))
        expect(Either.isLeft(second) && second.left.message).toBe(
          `the PGlite data directory ${dir} is in use by process ${process.pid}: PGlite serves one process only; ` +
            "stop the other gateway, or use PostgreSQL (DATABASE_URL) for several"
        )
        await Effect.runPromise(Scope.close(scope, Exit.void))
        expect(fs.existsSync(path.join(dir, ".tracklayer.lock"))).toBe(false)
        // A lock left by a process that no longer exists (kill -9) is taken over.
        fs.writeFileSync(path.join(dir, ".tracklayer.lock"), "999999999")
        const again = await Effect.runPromise(Effect.either(Effect.scoped(Database.pglite(dir))))
        expect(Either.isRight(again)).toBe(true)
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    },
    60_000
  )
})
