/** @tracklayer/plugin-meta-capi — Meta Conversions API destination and its local sandbox. */
export * as MetaCapi from "./MetaCapi.js"
export * as MetaCapiSandbox from "./Sandbox.js"
