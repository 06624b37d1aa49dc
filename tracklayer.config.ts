/**
 * The default operator config: the canonical vocabulary routed to Amplitude, Meta, Google, LinkedIn and HubSpot;
 * Amplitude cohorts received at POST /v1/sources/amplitude-cohorts; durable traits synced back to Amplitude.
 *
 * Secrets come from the environment through `Config` (never written here); see docs/configuration.md and each
 * plugin's page in docs/plugins/. `tracklayer serve --sandbox` points every destination at its local sandbox
 * instead, so this file runs as-is with no credentials.
 */
import { TrackLayerConfig, TraitSync, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"
import { AmplitudeCohorts } from "@tracklayer/plugin-amplitude-cohorts"
import { GoogleAds } from "@tracklayer/plugin-google-ads"
import { HubSpot } from "@tracklayer/plugin-hubspot"
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
      // Durable traits travel through the Identify API, only when they change (events carry no user_properties).
      traits: {
        sync: ["plan", "lifecycle_stage", "region", "signup_date", "workspace_size", "acquisition_channel", "ltv_band", "last_paid_at"],
        // TrackLayer's own states, so product teams can analyse by downstream eligibility.
        derived: {
          meta_eligible: TraitSync.eligible("advertising"),
          high_match_quality: (p) => p.identifiers.emails > 0 && (p.identifiers.phones > 0 || p.identifiers.clickIds.length > 0),
          tl_audiences: (p) => (p.audiences.length > 0 ? p.audiences : undefined)
        }
      },
      // A new destination starts at the end of the log unless given a start point.
      startFrom: "beginning"
    }),
    // Ad platforms need the advertising purpose: events without it are dropped (and explained).
    MetaCapi.destination({ id: "meta", startFrom: "beginning" }),
    // Conversion action ids per canonical event: GOOGLE_ADS_CONVERSION_ACTIONS="purchase=123,sign_up=456".
    GoogleAds.destination({ id: "google-ads", startFrom: "beginning" }),
    // Conversion rule ids per canonical event: LINKEDIN_CONVERSION_RULES="purchase=123,qualified_lead=456".
    LinkedIn.destination({ id: "linkedin", startFrom: "beginning" }),
    // The CRM needs the crm purpose: contacts upserted by email with durable traits, behavioural events.
    HubSpot.destination({
      id: "hubspot",
      // TrackLayer's lifecycle stages (signed_up, trialing, …) are not HubSpot's lifecyclestage options: keep them in
      // a custom text property. Map to lifecyclestage only when the values are the account's stages.
      settings: HubSpot.settingsFromEnv({
        properties: { ...HubSpot.DEFAULT_PROPERTIES_ENCODED, lifecycle_stage: "tl_lifecycle_stage" }
      }),
      startFrom: "beginning"
    })
  ],
  // Amplitude Cohort Webhooks post here (shared secret AMPLITUDE_COHORTS_SECRET in a custom header).
  sources: [AmplitudeCohorts.source({ id: "amplitude-cohorts" })],
  // Which destinations receive each cohort (by Amplitude cohort id), with the audience id there, e.g.
  // audiences: [{ key: "<amplitude cohort id>", destinations: { meta: "<custom audience id>",
  //   "google-ads": "<user list id>", hubspot: "tl_power_users" } }]
  audiences: []
})
