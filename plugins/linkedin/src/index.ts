/** @tracklayer/plugin-linkedin — LinkedIn Conversions API destination and its local sandbox. */
export * as LinkedIn from "./LinkedIn.js"
export * as LinkedInSandbox from "./Sandbox.js"
