/**
 * Validation of the cohort exchange part of the config (plugin API 1.2): `sources`, `audiences` and the per-destination
 * `traits`. Each bad input is refused with the exact field and what is wrong with it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Config, Effect, Either, Schema } from "effect"
import type {
  AudienceCapability,
  DestinationInstance,
  DestinationPlugin,
  UserStateCapability
} from "../src/Destination.js"
import type { SourceInstance, SourcePlugin } from "../src/Source.js"
import { ConfigError, resolve, type ResolvedConfig } from "../src/TrackLayerConfig.js"
import { canonical } from "../src/Vocabulary.js"

const limits = { maxEventsPerRequest: 100, maxBytesPerRequest: 1_000_000 }
const audiences: AudienceCapability = {
  limits,
  member: () => Either.right({}),
  send: (batch) => Effect.succeed(batch.map(() => ({ _tag: "Accepted" as const })))
}
const userState: UserStateCapability = {
  limits,
  send: (batch) => Effect.succeed(batch.map(() => ({ _tag: "Accepted" as const })))
}

const plugin = (name: string, overrides: Partial<DestinationPlugin> = {}): DestinationPlugin => ({
  name,
  version: "1.2.0",
  pluginApi: "^1.2.0",
  settings: Schema.Struct({}),
  purposes: ["advertising"],
  limits,
  transform: () => Either.right({}),
  send: (batch) => Effect.succeed(batch.map(() => ({ _tag: "Accepted" as const }))),
  ...overrides
})

const analytics = plugin("@tracklayer/plugin-analytics", { purposes: ["analytics"], userState })
const ads = plugin("@tracklayer/plugin-ads", { audiences })
const plain = plugin("@tracklayer/plugin-plain", { purposes: ["analytics"] })

const destination = (
  id: string,
  p: DestinationPlugin,
  overrides: Partial<DestinationInstance> = {}
): DestinationInstance => ({ id, plugin: p, settings: Config.succeed({}), ...overrides })

const sourcePlugin: SourcePlugin = {
  name: "@tracklayer/plugin-cohorts",
  version: "0.1.0",
  pluginApi: "^1.2.0",
  settings: Schema.Struct({}),
  maxBodyBytes: 1024,
  receive: () => Either.right([])
}
const source = (id: string, overrides: Partial<SourceInstance> = {}): SourceInstance => ({
  id,
  plugin: sourcePlugin,
  settings: Config.succeed({}),
  ...overrides
})

const base = {
  vocabulary: canonical,
  destinations: [destination("amplitude", analytics), destination("meta", ads), destination("google-ads", ads)]
}

const ok = (input: unknown): ResolvedConfig => {
  const r = resolve(input)
  if (r instanceof ConfigError) return assert.fail(`expected a config, got ${r.message}`)
  return r
}

describe("TrackLayerConfig.resolve: sources, audiences and trait sync", () => {
  it("resolves a full exchange and leaves the three empty when absent", () => {
    const derived = { power_user: () => true }
    const c = ok({
      ...base,
      destinations: [
        destination("amplitude", analytics, { traits: { sync: ["plan", "lifecycle_stage"], derived } }),
        destination("meta", ads)
      ],
      sources: [source("amplitude-cohorts")],
      audiences: [
        { key: "coh_power", destinations: { meta: "23850000000000001" } },
        { key: "coh_crm", destinations: { meta: "23850000000000002" }, purposes: ["advertising", "crm"] }
      ]
    })
    assert.deepStrictEqual(c.sources.map((s) => s.id), ["amplitude-cohorts"])
    assert.deepStrictEqual(c.audiences, [
      { key: "coh_power", destinations: { meta: "23850000000000001" } },
      { key: "coh_crm", destinations: { meta: "23850000000000002" }, purposes: ["advertising", "crm"] }
    ])
    assert.deepStrictEqual(c.traitSync, [{ destination: "amplitude", sync: ["plan", "lifecycle_stage"], derived }])

    const none = ok(base)
    assert.deepStrictEqual(none.sources, [])
    assert.deepStrictEqual(none.audiences, [])
    assert.deepStrictEqual(none.traitSync, [])
  })

  it("trait sync without derived states has no derived key", () => {
    const c = ok({ ...base, destinations: [destination("amplitude", analytics, { traits: { sync: [] } })] })
    assert.deepStrictEqual(c.traitSync, [{ destination: "amplitude", sync: [] }])
  })

  const errors: ReadonlyArray<{ scenario: string; input: Record<string, unknown>; field: string; detail: string }> = [
    // Sources
    {
      scenario: "sources not an array",
      input: { ...base, sources: source("amplitude-cohorts") },
      field: "sources",
      detail: "must be an array of sources"
    },
    {
      scenario: "source id with upper case",
      input: { ...base, sources: [source("Amplitude")] },
      field: "sources[0].id",
      detail: "must match /^[a-z][a-z0-9_-]{0,62}$/"
    },
    {
      scenario: "duplicate source id",
      input: { ...base, sources: [source("amplitude-cohorts"), source("amplitude-cohorts")] },
      field: "sources[1].id",
      detail: "duplicate source id \"amplitude-cohorts\""
    },
    {
      scenario: "a destination plugin given as a source",
      input: { ...base, sources: [source("amplitude-cohorts", { plugin: analytics as unknown as SourcePlugin })] },
      field: "sources[0].plugin",
      detail: "is not a source plugin"
    },
    {
      scenario: "source plugin built for plugin API 1.3",
      input: { ...base, sources: [source("amplitude-cohorts", { plugin: { ...sourcePlugin, pluginApi: "^1.3.0" } })] },
      field: "sources[0].plugin",
      detail: "@tracklayer/plugin-cohorts@0.1.0 supports plugin API ^1.3.0, but this TrackLayer implements 1.2.0"
    },
    {
      scenario: "source settings as a plain object (a secret in the config file)",
      input: {
        ...base,
        sources: [
          source("amplitude-cohorts", { settings: { secret: "not-in-here" } as unknown as Config.Config<unknown> })
        ]
      },
      field: "sources[0].settings",
      detail: "must be a Config read from the environment (e.g. AmplitudeCohorts.settingsFromEnv())"
    },
    // Audiences
    {
      scenario: "audiences not an array",
      input: { ...base, audiences: { key: "coh_power", destinations: { meta: "1" } } },
      field: "audiences",
      detail: "must be an array of { key, destinations }"
    },
    {
      scenario: "empty audience key",
      input: { ...base, audiences: [{ key: " ", destinations: { meta: "1" } }] },
      field: "audiences[0].key",
      detail: "must be the audience's key at its source (1–256 characters)"
    },
    {
      scenario: "audience key longer than 256 characters",
      input: { ...base, audiences: [{ key: "c".repeat(257), destinations: { meta: "1" } }] },
      field: "audiences[0].key",
      detail: "must be the audience's key at its source (1–256 characters)"
    },
    {
      scenario: "duplicate audience key",
      input: {
        ...base,
        audiences: [
          { key: "coh_power", destinations: { meta: "1" } },
          { key: "coh_power", destinations: { "google-ads": "8000000001" } }
        ]
      },
      field: "audiences[1].key",
      detail: "duplicate audience \"coh_power\""
    },
    {
      scenario: "audience routed nowhere",
      input: { ...base, audiences: [{ key: "coh_power", destinations: {} }] },
      field: "audiences[0].destinations",
      detail: "must map at least one destination id to its audience id there"
    },
    {
      scenario: "audience routed to an unknown destination",
      input: { ...base, audiences: [{ key: "coh_power", destinations: { meta: "1", tiktok: "7" } }] },
      field: "audiences[0].destinations.tiktok",
      detail: "no destination \"tiktok\" (known: amplitude, meta, google-ads)"
    },
    {
      scenario: "audience routed to a destination without the audience capability",
      input: { ...base, audiences: [{ key: "coh_power", destinations: { amplitude: "coh_power" } }] },
      field: "audiences[0].destinations.amplitude",
      detail: "@tracklayer/plugin-analytics@1.2.0 does not accept audiences"
    },
    {
      scenario: "empty audience id at the destination",
      input: { ...base, audiences: [{ key: "coh_power", destinations: { meta: "1", "google-ads": "" } }] },
      field: "audiences[0].destinations.google-ads",
      detail: "must be the audience id at the destination (a non-empty string)"
    },
    {
      scenario: "audience id that is not a string",
      input: { ...base, audiences: [{ key: "coh_power", destinations: { meta: 1234567 } }] },
      field: "audiences[0].destinations.meta",
      detail: "must be the audience id at the destination (a non-empty string)"
    },
    {
      scenario: "audience purpose that is not a consent purpose",
      input: { ...base, audiences: [{ key: "coh_power", destinations: { meta: "1" }, purposes: ["marketing"] }] },
      field: "audiences[0].purposes",
      detail: "\"marketing\" is not a consent purpose (known: analytics, advertising, crm)"
    },
    // Trait sync
    {
      scenario: "traits on a plugin without the user-state capability",
      input: { ...base, destinations: [destination("plain", plain, { traits: { sync: ["plan"] } })] },
      field: "destinations[0].traits",
      detail: "@tracklayer/plugin-plain@1.2.0 has no user-state capability (trait sync needs one)"
    },
    {
      scenario: "traits without a sync list",
      input: {
        ...base,
        destinations: [destination("amplitude", analytics, { traits: { derived: {} } as never })]
      },
      field: "destinations[0].traits.sync",
      detail: "must be an array of trait names"
    },
    {
      scenario: "a synced trait name starting with $ (an Identify operation)",
      input: { ...base, destinations: [destination("amplitude", analytics, { traits: { sync: ["plan", "$set"] } })] },
      field: "destinations[0].traits.sync[1]",
      detail: "\"$set\" is not a trait name"
    },
    {
      scenario: "a synced trait name starting with a digit",
      input: { ...base, destinations: [destination("amplitude", analytics, { traits: { sync: ["1plan"] } })] },
      field: "destinations[0].traits.sync[0]",
      detail: "\"1plan\" is not a trait name"
    },
    {
      scenario: "a synced trait name that is not a string",
      input: {
        ...base,
        destinations: [destination("amplitude", analytics, { traits: { sync: ["plan", 42 as never] } })]
      },
      field: "destinations[0].traits.sync[1]",
      detail: "42 is not a trait name"
    },
    {
      scenario: "derived not an object",
      input: {
        ...base,
        destinations: [destination("amplitude", analytics, { traits: { sync: [], derived: "power_user" as never } })]
      },
      field: "destinations[0].traits.derived",
      detail: "must be an object: name → (person) => value"
    },
    {
      scenario: "a derived rule that is not a function",
      input: {
        ...base,
        destinations: [
          destination("amplitude", analytics, { traits: { sync: ["plan"], derived: { meta_eligible: true as never } } })
        ]
      },
      field: "destinations[0].traits.derived.meta_eligible",
      detail: "must be a function (person) => value"
    },
    {
      scenario: "a derived name that is not a user property name",
      input: {
        ...base,
        destinations: [destination("amplitude", analytics, { traits: { sync: [], derived: { "$unset": () => 1 } } })]
      },
      field: "destinations[0].traits.derived.$unset",
      detail: "is not a user property name"
    },
    {
      scenario: "a derived name that is also a synced trait",
      input: {
        ...base,
        destinations: [
          destination("amplitude", analytics, {
            traits: { sync: ["plan", "power_user"], derived: { power_user: () => 1 } }
          })
        ]
      },
      field: "destinations[0].traits.derived.power_user",
      detail: "is also a synced trait; pick another name"
    }
  ]
  for (const c of errors) {
    it(`names the field: ${c.scenario}`, () => {
      const e = resolve(c.input)
      if (!(e instanceof ConfigError)) return assert.fail("expected a ConfigError")
      assert.strictEqual(e._tag, "ConfigError")
      assert.strictEqual(e.field, c.field)
      assert.strictEqual(e.detail, c.detail)
      assert.strictEqual(e.message, `${c.field}: ${c.detail}`)
    })
  }

  it("an audience purpose added by the operator is accepted", () => {
    const c = ok({
      ...base,
      consent: { purposes: ["personalisation"] },
      audiences: [{ key: "coh_power", destinations: { meta: "1" }, purposes: ["personalisation"] }]
    })
    assert.deepStrictEqual(c.audiences[0]!.purposes, ["personalisation"])
  })
})
