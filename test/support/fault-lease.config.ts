/**
 * Config for the crash and multi-process fault tests (test/fault/crash.test.ts, multiprocess.test.ts): the two
 * Amplitude destinations of fault.config.ts with smaller requests (100 events, so several are in flight during a
 * kill) and a short `delivery.leaseTtl` (`TL_FAULT_LEASE_TTL_MS`, default 2000): a process restarted after
 * `kill -9` is a new owner (its id holds the pid) and waits for its predecessor's leases to expire, and survivors
 * take a dead process's work over after the same wait.
 */
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Amplitude } from "@tracklayer/plugin-amplitude"
import { Duration } from "effect"

export default TrackLayerConfig.defineConfig({
  vocabulary: Vocabulary.canonical,
  destinations: [
    Amplitude.destination({
      id: "amplitude",
      settings: Amplitude.settingsFromEnv({ maxEventsPerRequest: 100 }),
      startFrom: "beginning"
    }),
    Amplitude.destination({
      id: "amplitude_b",
      settings: Amplitude.settingsFromEnv({ namespace: "AMPLITUDE_B", maxEventsPerRequest: 100 }),
      startFrom: "beginning"
    })
  ],
  delivery: {
    pollInterval: "50 millis",
    initialBackoff: "200 millis",
    maxBackoff: "2 seconds",
    requestTimeout: "3 seconds",
    leaseTtl: Duration.millis(Number(process.env["TL_FAULT_LEASE_TTL_MS"] ?? 2000))
  }
})
