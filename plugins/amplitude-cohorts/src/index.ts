/** @tracklayer/plugin-amplitude-cohorts — Amplitude cohort membership source and a sender that posts like Amplitude. */
export * as AmplitudeCohorts from "./AmplitudeCohorts.js"
export * as AmplitudeCohortsSandbox from "./Sandbox.js"
