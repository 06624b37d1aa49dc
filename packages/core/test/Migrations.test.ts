/**
 * Released migrations are frozen: a store created by an earlier version has already run them, so editing one would
 * leave that store with a different schema than the code expects. Change the schema with a new migration instead.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"

/** SHA-256 of each released migration's body. Add a line when a migration is released; never edit one. */
const RELEASED: Readonly<Record<string, string>> = {
  m0001: "a8f93c1ad5ba19d049d964937d1be25a459e295e09649268f6fae2b0f6fb6018",
  m0002: "732b035260eb85ff37692217c826d8f8744af2549f5804b89babfac15299d714",
  m0003: "98e0de523ef9c84ce0466fa8cc013d9aa9cddfb79f1aab5907dcb1f2de32f0fd",
  m0004: "adaf281bc62c0691920b08241d3f2781022e74d9500413116066db8385cda2c7"
}

describe("migrations", () => {
  it("released migrations are unchanged (add a new migration to change the schema)", () => {
    const src = fs.readFileSync(path.join(__dirname, "../src/internal/migrations.ts"), "utf8")
    const blocks = [...src.matchAll(/^const (m\d{4}) = Effect\.gen\(function\*\(\) \{\n([\s\S]*?)^\}\)$/gm)]
    const hashes = Object.fromEntries(blocks.map((b) => [b[1]!, createHash("sha256").update(b[2]!).digest("hex")]))
    for (const [name, hash] of Object.entries(RELEASED)) {
      expect({ migration: name, hash: hashes[name] }).toEqual({ migration: name, hash })
    }
    // Every migration in the file is registered, in order.
    expect(Object.keys(hashes)).toEqual(Object.keys(hashes).sort())
    expect(src).toContain(`"0007_leases": m0007`)
  })
})
