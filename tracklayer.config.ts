/**
 * The default operator config: the canonical vocabulary routed to Amplitude, Meta, Google and LinkedIn.
 *
 * Secrets come from the environment through `Config` (never written here); see docs/configuration.md and each
 * plugin's page in docs/plugins/. `tracklayer serve --sandbox` points every destination at its local sandbox
 * instead, so this file runs as-is with no credentials.
 */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"
import { GoogleAds } from "@tracklayer/plugin-google-ads"
import { LinkedIn } from "@tracklayer/plugin-linkedin"
import { MetaCapi } from "@tracklayer/plugin-meta-capi"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  // Names outside the vocabulary are rejected with the allowed names; "store" keeps them without routing.
  unknownEvents: "reject",
  // Retention per log kind: an hourly purge deletes older events once delivered (docs/privacy.md#retention), e.g.
  // retention: { track: "400 days", consent: "5 years" },
  destinations: [
    Amplitude.destination({
      id: "amplitude",
      // Durable traits only; the rest of user_properties stays in TrackLayer.
      settings: Amplitude.settingsFromEnv({
        userPropertiesAllowlist: ["plan", "lifecycle_stage", "acquisition_channel", "workspace_size", "last_paid_at", "country"]
      }),
      // A new destination starts at the end of the log unless given a start point.
      startFrom: "beginning"
    }),
    // Ad platforms need the advertising purpose: events without it are dropped (and explained).
    MetaCapi.destination({ id: "meta", startFrom: "beginning" }),
    // Conversion action ids per canonical event: GOOGLE_ADS_CONVERSION_ACTIONS="purchase=123,sign_up=456".
    GoogleAds.destination({ id: "google-ads", startFrom: "beginning" }),
    // Conversion rule ids per canonical event: LINKEDIN_CONVERSION_RULES="purchase=123,qualified_lead=456".
    LinkedIn.destination({ id: "linkedin", startFrom: "beginning" })
  ]
})
