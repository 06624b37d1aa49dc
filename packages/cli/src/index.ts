/** @tracklayer/cli — the `tracklayer` command. */
export * as Cli from "./Cli.js"
export * as ConfigModule from "./ConfigModule.js"
export * as Send from "./Send.js"
export * as Serve from "./Serve.js"
