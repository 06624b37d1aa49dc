import { assert, describe, it } from "@effect/vitest"
import * as Destination from "@tracklayer/core/Destination"
import { ConfigError, ConfigProvider, Effect, Either, ParseResult, Redacted, Schema } from "effect"
import pkg from "../package.json" with { type: "json" }
import { AmplitudeCohorts } from "../src/index.js"
import { SHARED } from "./fixtures.js"

const decode = Schema.decodeUnknownEither(AmplitudeCohorts.Settings)
/** The decode error as text, or "" when it decoded. */
const refusal = (input: unknown): string => {
  const result = decode(input)
  return Either.isLeft(result) ? ParseResult.TreeFormatter.formatErrorSync(result.left) : ""
}
const fromEnv = (env: Record<string, string>, options?: AmplitudeCohorts.EnvOptions) =>
  AmplitudeCohorts.settingsFromEnv(options).pipe(
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)), { pathDelim: "_" }))
  )

describe("AmplitudeCohorts.Settings", () => {
  it("fills the default header and redacts the secret", () => {
    const result = decode({ secret: SHARED })
    assert.isTrue(Either.isRight(result))
    if (Either.isLeft(result)) return
    const s = result.right
    assert.strictEqual(s.header, "x-tracklayer-secret")
    assert.strictEqual(s.maxUsersPerBatch, undefined)
    assert.isFalse("maxUsersPerBatch" in s)
    assert.strictEqual(Redacted.value(s.secret), SHARED)
    assert.strictEqual(String(s.secret), "<redacted>")
    assert.isFalse(JSON.stringify(s).includes(SHARED))
  })

  it("decodes a header name to lower case and keeps maxUsersPerBatch", () => {
    const s = Schema.decodeUnknownSync(AmplitudeCohorts.Settings)({
      secret: SHARED,
      header: "X-Amplitude-Hook",
      maxUsersPerBatch: 10_000
    })
    assert.strictEqual(s.header, "x-amplitude-hook")
    assert.strictEqual(s.maxUsersPerBatch, 10_000)
  })

  it("refuses a secret shorter than 16 characters, naming the field and never repeating the value", () => {
    const text = refusal({ secret: "short.value.15c" })
    assert.include(text, "[\"secret\"]")
    assert.include(text, "the secret must be at least 16 characters (e.g. openssl rand -hex 32)")
    assert.notInclude(text, "short.value.15c")
    // Exactly 16 is enough.
    assert.strictEqual(refusal({ secret: "sixteen.chars.ok" }), "")
  })

  it("refuses a missing secret, naming the field", () => {
    const text = refusal({})
    assert.include(text, "[\"secret\"]")
    assert.include(text, "is missing")
  })

  const badHeaders: ReadonlyArray<readonly [string, string]> = [
    ["x tracklayer", "the header must be an HTTP header name (letters, digits, - and _; no spaces or colons)"],
    ["x-secret:", "the header must be an HTTP header name (letters, digits, - and _; no spaces or colons)"],
    ["", "the header must be an HTTP header name (letters, digits, - and _; no spaces or colons)"],
    ["Content-Type", "the header must not be content-type: Amplitude sets it on every request"],
    ["user-agent", "the header must not be user-agent: Amplitude sets it on every request"]
  ]
  for (const [header, message] of badHeaders) {
    it(`refuses the header ${JSON.stringify(header)}, naming the field`, () => {
      const text = refusal({ secret: SHARED, header })
      assert.include(text, "[\"header\"]")
      assert.include(text, message)
    })
  }

  it("refuses maxUsersPerBatch 0 and 2.5, naming the field", () => {
    for (const max of [0, 2.5]) {
      const text = refusal({ secret: SHARED, maxUsersPerBatch: max })
      assert.include(text, "[\"maxUsersPerBatch\"]", String(max))
    }
    assert.include(
      refusal({ secret: SHARED, maxUsersPerBatch: 0 }),
      "maxUsersPerBatch must be an integer of at least 1"
    )
  })
})

describe("AmplitudeCohorts.settingsFromEnv", () => {
  it.effect("reads AMPLITUDE_COHORTS_SECRET (trimmed) and AMPLITUDE_COHORTS_HEADER", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        AMPLITUDE_COHORTS_SECRET: ` ${SHARED} `,
        AMPLITUDE_COHORTS_HEADER: "X-Amplitude-Hook"
      }, { maxUsersPerBatch: 5000 })
      assert.deepStrictEqual(encoded, { maxUsersPerBatch: 5000, secret: SHARED, header: "X-Amplitude-Hook" })
      // The gateway decodes with excess properties refused: the encoded form carries only known keys.
      const s = yield* Schema.decodeUnknown(AmplitudeCohorts.Settings, { onExcessProperty: "error" })(encoded)
      assert.strictEqual(Redacted.value(s.secret), SHARED)
      assert.strictEqual(s.header, "x-amplitude-hook")
      assert.strictEqual(s.maxUsersPerBatch, 5000)
    }))

  it.effect("without AMPLITUDE_COHORTS_HEADER the option (or the default) applies", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* fromEnv({ AMPLITUDE_COHORTS_SECRET: SHARED }), { secret: SHARED })
      assert.deepStrictEqual(yield* fromEnv({ AMPLITUDE_COHORTS_SECRET: SHARED }, { header: "x-hook" }), {
        secret: SHARED,
        header: "x-hook"
      })
    }))

  it.effect("a namespace selects other variables (a second Amplitude project)", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({
        AMPLITUDE_COHORTS_SECRET: SHARED,
        AMPLITUDE_EU_COHORTS_SECRET: "eu.fake.hook.value.02"
      }, { namespace: "AMPLITUDE_EU_COHORTS" })
      assert.deepStrictEqual(encoded, { secret: "eu.fake.hook.value.02" })
    }))

  it.effect("a missing secret is a missing-data ConfigError at AMPLITUDE_COHORTS.SECRET", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(fromEnv({ AMPLITUDE_COHORTS_HEADER: "x-hook" }))
      assert.isTrue(ConfigError.isMissingDataOnly(error))
      assert.include(String(error), "AMPLITUDE_COHORTS.SECRET")
    }))

  it.effect("a short secret from the environment is refused when decoded, naming the field", () =>
    Effect.gen(function*() {
      const encoded = yield* fromEnv({ AMPLITUDE_COHORTS_SECRET: "tiny.value" })
      const error = yield* Effect.flip(Schema.decodeUnknown(AmplitudeCohorts.Settings)(encoded))
      const text = ParseResult.TreeFormatter.formatErrorSync(error)
      assert.include(text, "[\"secret\"]")
      assert.include(text, "at least 16 characters")
      assert.notInclude(text, "tiny.value")
    }))
})

describe("AmplitudeCohorts.plugin", () => {
  it("declares name, version (= package.json), plugin API 1.2, a 16 MiB body limit and its sandbox environment", () => {
    const p = AmplitudeCohorts.plugin
    assert.strictEqual(p.name, pkg.name)
    assert.strictEqual(p.name, "@tracklayer/plugin-amplitude-cohorts")
    assert.strictEqual(p.version, pkg.version)
    assert.strictEqual(p.pluginApi, "^1.2.0")
    assert.isTrue(Destination.satisfies(Destination.PLUGIN_API_VERSION, p.pluginApi))
    assert.strictEqual(p.maxBodyBytes, 16_777_216)
    assert.strictEqual(p.settings, AmplitudeCohorts.Settings)
    assert.deepStrictEqual(p.sandboxEnv?.("s3cr3t-generated-by-serve"), {
      AMPLITUDE_COHORTS_SECRET: "s3cr3t-generated-by-serve"
    })
  })

  it("source() builds an instance with id `amplitude-cohorts` reading settings from the environment", () =>
    Effect.gen(function*() {
      const s = AmplitudeCohorts.source()
      assert.strictEqual(s.id, "amplitude-cohorts")
      assert.strictEqual(s.plugin, AmplitudeCohorts.plugin)
      const encoded = yield* s.settings.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(new Map([["AMPLITUDE_COHORTS_SECRET", SHARED]]), { pathDelim: "_" })
        )
      )
      assert.deepStrictEqual(encoded, { secret: SHARED })
      const custom = AmplitudeCohorts.source({
        id: "amplitude-eu",
        settings: AmplitudeCohorts.settingsFromEnv({ namespace: "AMPLITUDE_EU_COHORTS" })
      })
      assert.strictEqual(custom.id, "amplitude-eu")
    }).pipe(Effect.runSync))
})
