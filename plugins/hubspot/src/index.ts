/** @tracklayer/plugin-hubspot — HubSpot CRM destination and its local sandbox. */
export * as HubSpot from "./HubSpot.js"
export * as HubSpotSandbox from "./Sandbox.js"
