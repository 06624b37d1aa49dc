/** @tracklayer/server — the HTTP API of the gateway. */
export * as Gateway from "./Gateway.js"
export * as Keys from "./Keys.js"
export * as Server from "./Server.js"
