/** @tracklayer/plugin-google-ads — Google Data Manager API (conversion events) destination and its local sandbox. */
export * as GoogleAds from "./GoogleAds.js"
export * as GoogleAdsOAuth from "./OAuth.js"
export * as GoogleAdsSandbox from "./Sandbox.js"
