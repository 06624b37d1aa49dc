/** Config for the restart test: small Amplitude batches so delivery is still running when the gateway is killed. */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  destinations: [
    Amplitude.destination({
      id: "amplitude",
      settings: Amplitude.settingsFromEnv({ maxEventsPerRequest: 100 }),
      startFrom: "beginning"
    })
  ],
  delivery: { pollInterval: "50 millis" }
})
