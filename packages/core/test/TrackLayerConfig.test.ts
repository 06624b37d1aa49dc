import { assert, describe, it } from "@effect/vitest"
import { Config, Duration, Effect, Either, Schema } from "effect"
import type { DestinationInstance, DestinationPlugin } from "../src/Destination.js"
import { ConfigError, resolve, type ResolvedConfig } from "../src/TrackLayerConfig.js"
import { canonical } from "../src/Vocabulary.js"

const plugin = (overrides: Partial<DestinationPlugin> = {}): DestinationPlugin => ({
  name: "@tracklayer/plugin-test",
  version: "1.2.3",
  pluginApi: "^1.0.0",
  settings: Schema.Struct({}),
  purposes: ["analytics"],
  limits: { maxEventsPerRequest: 100, maxBytesPerRequest: 1_000_000 },
  transform: () => Either.right({}),
  send: (batch) => Effect.succeed(batch.map(() => ({ _tag: "Accepted" as const }))),
  ...overrides
})

const instance = (id: string, overrides: Partial<DestinationInstance> = {}): DestinationInstance => ({
  id,
  plugin: plugin(),
  settings: Config.succeed({}),
  ...overrides
})

const base = { vocabulary: canonical, destinations: [instance("amplitude")] }

const ok = (input: unknown): ResolvedConfig => {
  const r = resolve(input)
  if (r instanceof ConfigError) return assert.fail(`expected a config, got ${r.message}`)
  return r
}

const fails = (input: unknown): ConfigError => {
  const r = resolve(input)
  if (!(r instanceof ConfigError)) return assert.fail("expected a ConfigError")
  return r
}

describe("TrackLayerConfig.resolve", () => {
  it("fills the defaults", () => {
    const c = ok(base)
    assert.strictEqual(c.unknownEvents, "reject")
    assert.strictEqual(c.delivery.maxAttempts, 10)
    assert.strictEqual(Duration.toMillis(c.delivery.pollInterval), 200)
    assert.strictEqual(Duration.toMillis(c.delivery.initialBackoff), 1_000)
    assert.strictEqual(Duration.toMillis(c.delivery.maxBackoff), 5 * 60_000)
    assert.strictEqual(Duration.toMillis(c.delivery.requestTimeout), 30_000)
    assert.strictEqual(Duration.toMillis(c.delivery.maxRetryAge), 3 * 86_400_000)
    assert.deepStrictEqual(Object.keys(c.vocabulary), Object.keys(canonical))
    assert.strictEqual(c.vocabulary["purchase"], canonical["purchase"])
    assert.deepStrictEqual(c.destinations.map((d) => d.id), ["amplitude"])
  })

  it("keeps what the operator set", () => {
    const c = ok({
      ...base,
      unknownEvents: "store",
      delivery: { maxAttempts: 3, pollInterval: "1 second", requestTimeout: 5_000 }
    })
    assert.strictEqual(c.unknownEvents, "store")
    assert.strictEqual(c.delivery.maxAttempts, 3)
    assert.strictEqual(Duration.toMillis(c.delivery.pollInterval), 1_000)
    assert.strictEqual(Duration.toMillis(c.delivery.requestTimeout), 5_000)
  })

  it("looks up only the operator's event names, never Object.prototype members", () => {
    const c = ok(base)
    assert.strictEqual(c.vocabulary["toString"], undefined)
    assert.strictEqual(c.vocabulary["constructor"], undefined)
    const e = fails({ ...base, destinations: [instance("amplitude", { events: ["toString"] })] })
    assert.strictEqual(e.field, "destinations[0].events")
    assert.strictEqual(e.detail, "\"toString\" is not in the vocabulary")
  })

  const errors: ReadonlyArray<{ scenario: string; input: unknown; field: string; detail: string }> = [
    {
      scenario: "not an object",
      input: undefined,
      field: "(config)",
      detail: "the config module must default-export defineConfig({...})"
    },
    {
      scenario: "empty vocabulary",
      input: { ...base, vocabulary: {} },
      field: "vocabulary",
      detail: "must name at least one event"
    },
    {
      scenario: "event name that is not lower snake_case",
      input: { ...base, vocabulary: { ...canonical, "Sign-Up": canonical["sign_up"] } },
      field: "vocabulary.Sign-Up",
      detail: "event names are lower snake_case"
    },
    {
      scenario: "event definition without a properties schema",
      input: { ...base, vocabulary: { sign_up: { description: "x" } } },
      field: "vocabulary.sign_up.properties",
      detail: "must be an Effect Schema"
    },
    {
      scenario: "unknownEvents typo",
      input: { ...base, unknownEvents: "stor" },
      field: "unknownEvents",
      detail: "must be \"reject\" or \"store\", got \"stor\""
    },
    {
      scenario: "destinations missing",
      input: { vocabulary: canonical },
      field: "destinations",
      detail: "must be an array of destination instances"
    },
    {
      scenario: "duplicate destination id",
      input: { ...base, destinations: [instance("amplitude"), instance("amplitude")] },
      field: "destinations[1].id",
      detail: "duplicate destination id \"amplitude\""
    },
    {
      scenario: "destination id with upper case and a space",
      input: { ...base, destinations: [instance("Amplitude EU")] },
      field: "destinations[0].id",
      detail: "must match /^[a-z][a-z0-9_-]{0,62}$/"
    },
    {
      scenario: "plugin that is not a destination plugin",
      input: { ...base, destinations: [{ ...instance("amplitude"), plugin: { name: "x" } }] },
      field: "destinations[0].plugin",
      detail: "is not a destination plugin"
    },
    {
      scenario: "plugin built for plugin API 2",
      input: { ...base, destinations: [instance("amplitude", { plugin: plugin({ pluginApi: "^2.0.0" }) })] },
      field: "destinations[0].plugin",
      detail: "@tracklayer/plugin-test@1.2.3 supports plugin API ^2.0.0, but this TrackLayer implements 1.2.0; " +
        "install a version of @tracklayer/plugin-test built for plugin API 1.2.0"
    },
    {
      scenario: "plugin without a pluginApi range",
      input: {
        ...base,
        destinations: [instance("amplitude", { plugin: { ...plugin(), pluginApi: undefined as unknown as string } })]
      },
      field: "destinations[0].plugin",
      detail: "@tracklayer/plugin-test@1.2.3 supports plugin API undefined, but this TrackLayer implements 1.2.0; " +
        "install a version of @tracklayer/plugin-test built for plugin API 1.2.0"
    },
    {
      scenario: "destination routing an event outside the vocabulary",
      input: { ...base, destinations: [instance("amplitude", { events: ["purchase", "purchased"] })] },
      field: "destinations[0].events",
      detail: "\"purchased\" is not in the vocabulary"
    },
    {
      scenario: "delivery.maxAttempts 0",
      input: { ...base, delivery: { maxAttempts: 0 } },
      field: "delivery.maxAttempts",
      detail: "must be a positive integer"
    },
    {
      scenario: "delivery.maxAttempts 2.5",
      input: { ...base, delivery: { maxAttempts: 2.5 } },
      field: "delivery.maxAttempts",
      detail: "must be a positive integer"
    },
    {
      scenario: "a duration that does not parse",
      input: { ...base, delivery: { pollInterval: "soon" } },
      field: "delivery.pollInterval",
      detail: "is not a duration"
    },
    {
      scenario: "a duration with an unknown unit",
      input: { ...base, delivery: { maxRetryAge: "3 fortnights" } },
      field: "delivery.maxRetryAge",
      detail: "is not a duration"
    }
  ]
  for (const c of errors) {
    it(`names the field: ${c.scenario}`, () => {
      const e = fails(c.input)
      assert.strictEqual(e._tag, "ConfigError")
      assert.strictEqual(e.field, c.field)
      assert.strictEqual(e.detail, c.detail)
      assert.strictEqual(e.message, `${c.field}: ${c.detail}`)
    })
  }

  it("the plugin API mismatch message names 1.2.0 and the plugin", () => {
    const meta = plugin({ name: "@acme/plugin-meta", pluginApi: "^2.0.0" })
    const e = fails({ ...base, destinations: [instance("amplitude"), instance("meta", { plugin: meta })] })
    assert.strictEqual(e.field, "destinations[1].plugin")
    assert.include(e.message, "implements 1.2.0")
    assert.include(e.message, "@acme/plugin-meta@1.2.3 supports plugin API ^2.0.0")
  })

  describe("unknown top-level keys", () => {
    const allowed =
      "(allowed: vocabulary, unknownEvents, destinations, delivery, consent, retention, sources, audiences)"
    const cases: ReadonlyArray<{ scenario: string; input: Record<string, unknown>; key: string; message: string }> = [
      {
        scenario: "a transposed letter",
        input: { ...base, vocabulray: 1 },
        key: "vocabulray",
        message: `vocabulray: is not a config key; did you mean "vocabulary"? ${allowed}`
      },
      {
        scenario: "the singular of audiences",
        input: { ...base, audience: [{ key: "c1", destinations: { amplitude: "a1" } }] },
        key: "audience",
        message: `audience: is not a config key; did you mean "audiences"? ${allowed}`
      },
      {
        scenario: "snake_case for camelCase",
        input: { ...base, unknown_events: "store" },
        key: "unknown_events",
        message: `unknown_events: is not a config key; did you mean "unknownEvents"? ${allowed}`
      },
      {
        scenario: "a key like no allowed one",
        input: { ...base, webhooks: [] },
        key: "webhooks",
        message: `webhooks: is not a config key ${allowed}`
      },
      {
        // Checked before the rest: the typo, not "vocabulary: must name at least one event", is what is wrong.
        scenario: "a misspelt required key",
        input: { vocabulry: canonical, destinations: [] },
        key: "vocabulry",
        message: `vocabulry: is not a config key; did you mean "vocabulary"? ${allowed}`
      }
    ]
    for (const c of cases) {
      it(`are refused, naming the key: ${c.scenario}`, () => {
        const e = fails(c.input)
        assert.strictEqual(e.field, c.key)
        assert.strictEqual(e.message, c.message)
      })
    }

    it("every allowed key is accepted", () => {
      const c = ok({
        ...base,
        unknownEvents: "store",
        delivery: { maxAttempts: 2 },
        consent: {},
        retention: { track: "400 days" },
        sources: [],
        audiences: []
      })
      assert.strictEqual(c.unknownEvents, "store")
      assert.strictEqual(c.delivery.maxAttempts, 2)
      assert.strictEqual(Duration.toDays(c.retention.track!), 400)
    })
  })
})
