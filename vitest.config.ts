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
    // On PostgreSQL the test files share one cluster, and delivery reads only below the oldest running transaction
    // of the whole cluster (docs/operations.md): files running side by side can hold each other's delivery back
    // long enough to time a test out. They run one after another there; PGlite stores are private to each file.
    fileParallelism: process.env["DATABASE_URL"] === undefined || process.env["DATABASE_URL"] === "",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ["default"]
  }
})
