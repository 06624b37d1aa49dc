/** @tracklayer/testkit — deterministic journey generator and helpers for tests, demos and benchmarks. */
export * as Generator from "./Generator.js"
export * as TestStore from "./TestStore.js"
