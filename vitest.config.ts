import { defineConfig } from "vitest/config"

// One suite for the whole monorepo. DATABASE_URL (when set) selects PostgreSQL for every store-backed test;
// otherwise each test file opens its own embedded PGlite store.
export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "plugins/*/test/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "test/bench/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ["default"]
  }
})
