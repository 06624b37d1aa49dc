/**
 * The default operator config: the canonical vocabulary and an Amplitude destination.
 *
 * Secrets come from the environment through `Config` (never written here): AMPLITUDE_API_KEY (and optionally
 * AMPLITUDE_ENDPOINT for the EU endpoint). `tracklayer serve --sandbox` points every destination at its local
 * sandbox instead, so this file runs as-is with no credentials.
 */
import { Amplitude } from "@tracklayer/plugin-amplitude"
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  // Names outside the vocabulary are rejected with the allowed names; "store" keeps them without routing.
  unknownEvents: "reject",
  destinations: [
    Amplitude.destination({
      id: "amplitude",
      // Durable traits only; the rest of user_properties stays in TrackLayer.
      settings: Amplitude.settingsFromEnv({
        userPropertiesAllowlist: ["plan", "lifecycle_stage", "acquisition_channel", "workspace_size", "last_paid_at", "country"]
      }),
      // A new destination starts at the end of the log unless given a start point.
      startFrom: "beginning"
    })
  ]
})
