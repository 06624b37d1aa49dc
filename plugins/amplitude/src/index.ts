/** @tracklayer/plugin-amplitude — Amplitude HTTP API v2 destination and its local sandbox. */
export * as Amplitude from "./Amplitude.js"
export * as AmplitudeSandbox from "./Sandbox.js"
export * as AmplitudeUserPrivacy from "./UserPrivacy.js"
