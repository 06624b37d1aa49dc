/**
 * Config for the replay test. Phase 1 (TL_REPLAY_PHASE=1): one live Amplitude destination. Phase 2: two more are
 * added — `later` with `replayFrom: "beginning"` (live from the end of the log, history through a replay) and
 * `oracle`, live from the beginning: what live delivery routes today, to compare the replay with.
 */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"

const phase2 = process.env["TL_REPLAY_PHASE"] === "2"
// The later destinations need advertising consent as well, so consent decides part of what they get.
const purposes = ["analytics", "advertising"]

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  destinations: [
    Amplitude.destination({
      id: "live",
      settings: Amplitude.settingsFromEnv({ namespace: "LIVE" }),
      startFrom: "beginning"
    }),
    ...(phase2 ?
      [
        {
          ...Amplitude.destination({
            id: "later",
            settings: Amplitude.settingsFromEnv({ namespace: "LATER", maxEventsPerRequest: 100 }),
            purposes
          }),
          replayFrom: "beginning" as const
        },
        Amplitude.destination({
          id: "oracle",
          settings: Amplitude.settingsFromEnv({ namespace: "ORACLE" }),
          startFrom: "beginning",
          purposes
        })
      ] :
      [])
  ],
  delivery: { pollInterval: "50 millis" }
})
