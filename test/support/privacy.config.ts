/** Config for the privacy CLI test: one Amplitude destination, so `serve` needs only its settings and the keys. */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  destinations: [Amplitude.destination({ id: "amplitude", startFrom: "beginning" })],
  delivery: { pollInterval: "50 millis" }
})
