/**
 * Config for the fault tests' child gateways: two Amplitude destinations, each with its own sandbox
 * (`AMPLITUDE_*` and `AMPLITUDE_B_*`), a short request timeout and short backoffs so faults resolve within a test.
 */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  destinations: [
    Amplitude.destination({
      id: "amplitude",
      settings: Amplitude.settingsFromEnv({ maxEventsPerRequest: 500 }),
      startFrom: "beginning"
    }),
    Amplitude.destination({
      id: "amplitude_b",
      settings: Amplitude.settingsFromEnv({ namespace: "AMPLITUDE_B", maxEventsPerRequest: 500 }),
      startFrom: "beginning"
    })
  ],
  delivery: {
    pollInterval: "50 millis",
    initialBackoff: "200 millis",
    maxBackoff: "2 seconds",
    requestTimeout: "3 seconds"
  }
})
