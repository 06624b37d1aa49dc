/**
 * `retention` in the config: per log kind, validated at startup (not enforced yet: see docs/privacy.md#retention).
 */
import { assert, describe, it } from "@effect/vitest"
import { TrackLayerConfig, Vocabulary } from "@tracklayer/core"
import { Duration } from "effect"

const resolve = (retention: unknown) =>
  TrackLayerConfig.resolve({ vocabulary: Vocabulary.canonical, destinations: [], retention })

describe("retention config", () => {
  it("reads days, weeks, years and months per log kind; unset kinds are kept forever", () => {
    const r = resolve({ track: "400 days", consent: "5 years", identity: "18 months" })
    assert.notInstanceOf(r, TrackLayerConfig.ConfigError)
    if (r instanceof TrackLayerConfig.ConfigError) return
    assert.strictEqual(Duration.toMillis(r.retention.track!), 400 * 86_400_000)
    assert.strictEqual(Duration.toMillis(r.retention.consent!), 5 * 365 * 86_400_000)
    assert.strictEqual(Duration.toMillis(r.retention.identity!), 18 * 30 * 86_400_000)
    const none = resolve(undefined)
    assert.deepStrictEqual(none instanceof TrackLayerConfig.ConfigError ? "error" : none.retention, {})
    const weeks = resolve({ track: "52 weeks" })
    assert.strictEqual(
      weeks instanceof TrackLayerConfig.ConfigError ? -1 : Duration.toMillis(weeks.retention.track!),
      52 * 7 * 86_400_000
    )
  })

  const cases: ReadonlyArray<{ scenario: string; input: unknown; message: string }> = [
    {
      scenario: "erasure records",
      input: { erasure: "30 days" },
      message: "retention.erasure: erasure records are always kept (they prove the erasure and keep the person " +
        "suppressed)"
    },
    {
      scenario: "an unknown kind",
      input: { purchases: "30 days" },
      message: "retention.purchases: is not a log kind; known: track, consent, identity"
    },
    {
      scenario: "not a duration",
      input: { track: "soon" },
      message: "retention.track: \"soon\" is not a finite duration (\"400 days\", \"52 weeks\", \"5 years\")"
    },
    {
      scenario: "an infinite duration",
      input: { track: Duration.infinity },
      message: "retention.track: Duration(Infinity) is not a finite duration (\"400 days\", \"52 weeks\", \"5 years\")"
    },
    {
      scenario: "shorter than a day",
      input: { consent: "12 hours" },
      message: "retention.consent: must be at least 1 day, got 12h"
    },
    {
      scenario: "not an object",
      input: ["400 days"],
      message: "retention: must be an object: { track: \"400 days\", consent: \"5 years\" }"
    }
  ]
  for (const c of cases) {
    it(`refuses ${c.scenario}, naming the field`, () => {
      const r = resolve(c.input)
      assert.instanceOf(r, TrackLayerConfig.ConfigError)
      assert.strictEqual((r as TrackLayerConfig.ConfigError).message, c.message)
    })
  }
})
