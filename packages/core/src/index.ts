/** @tracklayer/core — event contract, plugin API, pipeline layers and the SQL event store. */
export * as Contract from "./Contract.js"
export * as Destination from "./Destination.js"
export * as TrackLayerConfig from "./TrackLayerConfig.js"
export * as Vocabulary from "./Vocabulary.js"
