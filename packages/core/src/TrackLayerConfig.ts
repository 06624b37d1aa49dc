/**
 * The operator's configuration, as exported by `tracklayer.config.ts`: the vocabulary, what to do with names outside
 * it, and the destination instances. Secrets never appear here in clear: instances read them through `Config`.
 */
import { Config, Context, Data, Duration } from "effect"
import * as Consent from "./Consent.js"
import { type DestinationInstance, PLUGIN_API_VERSION, satisfies, type TraitSyncOptions } from "./Destination.js"
import type { SourceInstance } from "./Source.js"
import type { EventDefinition, Vocabulary } from "./Vocabulary.js"

/** Delivery tuning shared by every destination (each has sensible defaults). */
export interface DeliveryOptions {
  /** Attempts before an event is dead-lettered (default 10). */
  readonly maxAttempts?: number
  /** Age after which a still-failing event is dead-lettered (default 3 days). */
  readonly maxRetryAge?: Duration.DurationInput
  /** First retry delay (default 1 s); doubles per attempt with ±20% jitter. */
  readonly initialBackoff?: Duration.DurationInput
  /** Longest delay between attempts (default 5 minutes). */
  readonly maxBackoff?: Duration.DurationInput
  /** How often an idle subscription polls the log (default 200 ms). */
  readonly pollInterval?: Duration.DurationInput
  /** HTTP timeout of one send (default 30 s). */
  readonly requestTimeout?: Duration.DurationInput
  /**
   * How long a process's lease on background work lasts without renewal (default 15 s): the time another gateway
   * process on the same PostgreSQL waits before taking over the work of one that died (docs/operations.md).
   */
  readonly leaseTtl?: Duration.DurationInput
}

/**
 * Where one inbound audience goes (docs/cohort-exchange.md): the destinations that receive its members, each with
 * its own audience id there, under the destination's consent purposes (or `purposes`).
 */
export interface AudienceRoute {
  /** The audience as its source keys it (Amplitude: the cohort id). */
  readonly key: string
  /** Destination instance id → the destination's audience id (Meta custom audience id, Google user list id, LinkedIn DMP segment id, HubSpot contact property). */
  readonly destinations: Readonly<Record<string, string>>
  /** Consent purposes a member needs for this audience (default: each destination's own purposes). */
  readonly purposes?: ReadonlyArray<string>
}

/** The trait sync of one destination instance (from its `traits` option). */
export interface TraitSyncConfig extends TraitSyncOptions {
  /** The destination instance (its plugin offers `userState`). */
  readonly destination: string
}

/** What `tracklayer.config.ts` default-exports. */
export interface TrackLayerConfigInput {
  readonly vocabulary: Vocabulary
  /** `reject` (default): names outside the vocabulary are rejected. `store`: stored but never routed. */
  readonly unknownEvents?: "reject" | "store"
  readonly destinations: ReadonlyArray<DestinationInstance>
  readonly delivery?: DeliveryOptions
  /** Consent purposes, defaults and jurisdictions (see docs/consent.md). Unset: the built-in defaults. */
  readonly consent?: Consent.PolicyConfig
  /**
   * How long the log keeps events of each kind, e.g. `{ track: "400 days", consent: "5 years" }` (see
   * docs/privacy.md). Validated at startup; NOT enforced yet (no purge job): a warning says so at startup.
   */
  readonly retention?: Readonly<Partial<Record<RetentionKind, Duration.DurationInput>>>
  /** Inbound sources (e.g. Amplitude cohort webhooks), served at `POST /v1/sources/<id>`. */
  readonly sources?: ReadonlyArray<SourceInstance>
  /** Audience routing: which destinations receive each inbound audience. */
  readonly audiences?: ReadonlyArray<AudienceRoute>
}

/** The resolved configuration. */
export interface ResolvedConfig {
  readonly vocabulary: Vocabulary
  readonly unknownEvents: "reject" | "store"
  readonly destinations: ReadonlyArray<DestinationInstance>
  readonly consent: Consent.ConsentPolicy
  /** Retention per log kind, for the kinds the operator set (empty: keep everything). */
  readonly retention: Readonly<Partial<Record<RetentionKind, Duration.Duration>>>
  readonly sources: ReadonlyArray<SourceInstance>
  readonly audiences: ReadonlyArray<AudienceRoute>
  /** Trait sync per destination instance configured with `traits`. */
  readonly traitSync: ReadonlyArray<TraitSyncConfig>
  readonly delivery: {
    readonly maxAttempts: number
    readonly maxRetryAge: Duration.Duration
    readonly initialBackoff: Duration.Duration
    readonly maxBackoff: Duration.Duration
    readonly pollInterval: Duration.Duration
    readonly requestTimeout: Duration.Duration
    readonly leaseTtl: Duration.Duration
  }
}

/** Log kinds whose retention can be set. Erasure records are kept: they prove the erasure and suppress the person. */
export const RETENTION_KINDS = ["track", "consent", "identity"] as const
export type RetentionKind = (typeof RETENTION_KINDS)[number]

/** The shortest retention accepted (a shorter one would purge events before they are delivered). */
export const MIN_RETENTION = Duration.days(1)

/**
 * A retention period: an Effect duration (`"400 days"`, `"52 weeks"`, millis as a number) or `"<n> years"` /
 * `"<n> months"` (a year is 365 days, a month 30 days).
 */
export const parseRetention = (v: unknown): Duration.Duration | undefined => {
  if (typeof v === "string") {
    const m = /^\s*(\d+)\s+(year|years|month|months)\s*$/i.exec(v)
    if (m) return Duration.days(Number(m[1]) * (m[2]!.toLowerCase().startsWith("year") ? 365 : 30))
  }
  const d = Duration.decodeUnknown(v as Duration.DurationInput)
  return d._tag === "Some" && Duration.isFinite(d.value) ? d.value : undefined
}

const resolveRetention = (input: unknown): ResolvedConfig["retention"] | ConfigError => {
  if (input === undefined) return {}
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return new ConfigError({
      field: "retention",
      detail: "must be an object: { track: \"400 days\", consent: \"5 years\" }"
    })
  }
  const out: Partial<Record<RetentionKind, Duration.Duration>> = {}
  for (const [kind, value] of Object.entries(input)) {
    if (!(RETENTION_KINDS as ReadonlyArray<string>).includes(kind)) {
      return new ConfigError({
        field: `retention.${kind}`,
        detail: kind === "erasure"
          ? "erasure records are always kept (they prove the erasure and keep the person suppressed)"
          : `is not a log kind; known: ${RETENTION_KINDS.join(", ")}`
      })
    }
    const d = parseRetention(value)
    if (d === undefined) {
      return new ConfigError({
        field: `retention.${kind}`,
        detail: `${typeof value === "string" ? JSON.stringify(value) : String(value)} is not a finite duration ` +
          `("400 days", "52 weeks", "5 years")`
      })
    }
    if (Duration.lessThan(d, MIN_RETENTION)) {
      return new ConfigError({
        field: `retention.${kind}`,
        detail: `must be at least 1 day, got ${Duration.format(d)}`
      })
    }
    out[kind as RetentionKind] = d
  }
  return out
}

/** The configuration is unusable; `field` names what is wrong. */
export class ConfigError extends Data.TaggedError("ConfigError")<{ readonly field: string; readonly detail: string }> {
  override get message(): string {
    return `${this.field}: ${this.detail}`
  }
}

/** The resolved configuration as a service. */
export class TrackLayerConfig extends Context.Tag("@tracklayer/core/TrackLayerConfig")<
  TrackLayerConfig,
  ResolvedConfig
>() {}

/** Identity helper that gives a config module its type. */
export const defineConfig = (input: TrackLayerConfigInput): TrackLayerConfigInput => input

const ID = /^[a-z][a-z0-9_-]{0,62}$/

/** The fields `defineConfig` takes (docs/configuration.md#defineconfig-fields); any other is a mistake. */
export const CONFIG_KEYS = [
  "vocabulary",
  "unknownEvents",
  "destinations",
  "delivery",
  "consent",
  "retention",
  "sources",
  "audiences"
] as const satisfies ReadonlyArray<keyof TrackLayerConfigInput>

/** Edit distance with adjacent transpositions (optimal string alignment), for "did you mean". */
const editDistance = (a: string, b: string): number => {
  const d: Array<Array<number>> = Array.from({ length: a.length + 1 }, (_, i) => [i])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}

/** The allowed key a misspelt one most likely meant (case, `_`/`-` and up to 2 edits apart), if any. */
const nearestKey = (key: string): string | undefined => {
  const norm = (k: string) => k.toLowerCase().replace(/[_-]/g, "")
  let best: { key: string; d: number } | undefined
  for (const k of CONFIG_KEYS) {
    const d = editDistance(norm(key), norm(k))
    if (d <= 2 && d < norm(key).length / 2 && (best === undefined || d < best.d)) best = { key: k, d }
  }
  return best?.key
}

/** Checks a config module's export and fills defaults. Throws nothing: returns a ConfigError naming the field. */
export const resolve = (input: unknown): ResolvedConfig | ConfigError => {
  if (typeof input !== "object" || input === null) {
    return new ConfigError({ field: "(config)", detail: "the config module must default-export defineConfig({...})" })
  }
  // A misspelt key would otherwise be ignored silently (`audience: [...]` routes no audience).
  for (const key of Object.keys(input)) {
    if ((CONFIG_KEYS as ReadonlyArray<string>).includes(key)) continue
    const near = nearestKey(key)
    return new ConfigError({
      field: key,
      detail: `is not a config key${near !== undefined ? `; did you mean "${near}"?` : ""} (allowed: ${
        CONFIG_KEYS.join(", ")
      })`
    })
  }
  const c = input as Partial<TrackLayerConfigInput>
  if (typeof c.vocabulary !== "object" || c.vocabulary === null || Object.keys(c.vocabulary).length === 0) {
    return new ConfigError({ field: "vocabulary", detail: "must name at least one event" })
  }
  for (const [name, def] of Object.entries(c.vocabulary)) {
    if (!/^[a-z][a-z0-9_]{0,127}$/.test(name)) {
      return new ConfigError({ field: `vocabulary.${name}`, detail: "event names are lower snake_case" })
    }
    if (typeof def?.properties !== "object" && typeof def?.properties !== "function") {
      return new ConfigError({ field: `vocabulary.${name}.properties`, detail: "must be an Effect Schema" })
    }
  }
  if (c.unknownEvents !== undefined && c.unknownEvents !== "reject" && c.unknownEvents !== "store") {
    return new ConfigError({
      field: "unknownEvents",
      detail: `must be "reject" or "store", got ${JSON.stringify(c.unknownEvents)}`
    })
  }
  if (!Array.isArray(c.destinations)) {
    return new ConfigError({ field: "destinations", detail: "must be an array of destination instances" })
  }
  const seen = new Set<string>()
  for (const [i, d] of c.destinations.entries()) {
    const field = `destinations[${i}]`
    if (typeof d?.id !== "string" || !ID.test(d.id)) {
      return new ConfigError({ field: `${field}.id`, detail: "must match /^[a-z][a-z0-9_-]{0,62}$/" })
    }
    if (seen.has(d.id)) return new ConfigError({ field: `${field}.id`, detail: `duplicate destination id "${d.id}"` })
    seen.add(d.id)
    const p = d.plugin
    if (typeof p?.transform !== "function" || typeof p?.send !== "function") {
      return new ConfigError({ field: `${field}.plugin`, detail: "is not a destination plugin" })
    }
    if (typeof p.pluginApi !== "string" || !satisfies(PLUGIN_API_VERSION, p.pluginApi)) {
      return new ConfigError({
        field: `${field}.plugin`,
        detail: `${p.name}@${p.version} supports plugin API ${p.pluginApi}, but this TrackLayer implements ` +
          `${PLUGIN_API_VERSION}; install a version of ${p.name} built for plugin API ${PLUGIN_API_VERSION}`
      })
    }
    for (const e of d.events ?? []) {
      if (!Object.hasOwn(c.vocabulary, e)) {
        return new ConfigError({ field: `${field}.events`, detail: `"${e}" is not in the vocabulary` })
      }
    }
    if (!Config.isConfig(d.settings)) {
      return new ConfigError({
        field: `${field}.settings`,
        detail: "must be a Config read from the environment (e.g. Amplitude.settingsFromEnv()), not a plain object: " +
          "secrets never go in the config file"
      })
    }
    const rf = d.replayFrom
    if (
      rf !== undefined && rf !== "beginning" &&
      !(typeof rf === "object" && rf !== null && rf.since instanceof Date && !Number.isNaN(rf.since.getTime()))
    ) {
      return new ConfigError({
        field: `${field}.replayFrom`,
        detail: `must be "beginning" or { since: Date }, got ${JSON.stringify(rf)}`
      })
    }
    const sf = d.startFrom
    if (
      sf !== undefined && sf !== "end" && sf !== "beginning" &&
      !(typeof sf === "object" && sf !== null && sf.since instanceof Date && !Number.isNaN(sf.since.getTime()))
    ) {
      return new ConfigError({
        field: `${field}.startFrom`,
        detail: `must be "end", "beginning" or { since: Date }, got ${JSON.stringify(sf)}`
      })
    }
  }
  const dur = (v: Duration.DurationInput | undefined, def: Duration.DurationInput, field: string) => {
    const d = Duration.decodeUnknown(v ?? def)
    return d._tag === "Some" ? d.value : new ConfigError({ field: `delivery.${field}`, detail: "is not a duration" })
  }
  const o = c.delivery ?? {}
  const delivery = {
    maxAttempts: o.maxAttempts ?? 10,
    maxRetryAge: dur(o.maxRetryAge, "3 days", "maxRetryAge"),
    initialBackoff: dur(o.initialBackoff, "1 second", "initialBackoff"),
    maxBackoff: dur(o.maxBackoff, "5 minutes", "maxBackoff"),
    pollInterval: dur(o.pollInterval, "200 millis", "pollInterval"),
    requestTimeout: dur(o.requestTimeout, "30 seconds", "requestTimeout"),
    leaseTtl: dur(o.leaseTtl, "15 seconds", "leaseTtl")
  }
  for (const v of Object.values(delivery)) if (v instanceof ConfigError) return v
  if (!Number.isInteger(delivery.maxAttempts) || delivery.maxAttempts < 1) {
    return new ConfigError({ field: "delivery.maxAttempts", detail: "must be a positive integer" })
  }
  const retention = resolveRetention(c.retention)
  if (retention instanceof ConfigError) return retention
  const consent = Consent.resolvePolicy(c.consent ?? {})
  if (consent._tag === "Left") return new ConfigError({ field: consent.left.field, detail: consent.left.detail })
  for (const [i, d] of c.destinations.entries()) {
    for (const p of d.purposes ?? d.plugin.purposes) {
      if (!consent.right.purposes.includes(p)) {
        return new ConfigError({
          field: `destinations[${i}]${d.purposes ? ".purposes" : ".plugin.purposes"}`,
          detail: `"${p}" is not a consent purpose; add it to consent.purposes (known: ${
            consent.right.purposes.join(", ")
          })`
        })
      }
    }
  }
  const exchange = resolveExchange(c, consent.right.purposes)
  if (exchange instanceof ConfigError) return exchange
  return {
    ...exchange,
    consent: consent.right,
    // Without a prototype, a lookup by an event name a producer sent ("toString", "constructor") finds nothing
    // instead of an Object.prototype member.
    vocabulary: Object.assign(Object.create(null) as Record<string, EventDefinition>, c.vocabulary),
    unknownEvents: c.unknownEvents ?? "reject",
    destinations: c.destinations,
    delivery: delivery as ResolvedConfig["delivery"],
    retention
  }
}

const TRAIT = /^[A-Za-z_$][A-Za-z0-9_.:$ -]{0,127}$/

/** Checks sources, audience routing and trait sync against the destinations. */
const resolveExchange = (
  c: Partial<TrackLayerConfigInput>,
  purposes: ReadonlyArray<string>
): Pick<ResolvedConfig, "sources" | "audiences" | "traitSync"> | ConfigError => {
  const destinations = new Map((c.destinations ?? []).map((d) => [d.id, d]))
  const sources = c.sources ?? []
  if (!Array.isArray(sources)) return new ConfigError({ field: "sources", detail: "must be an array of sources" })
  const seen = new Set<string>()
  for (const [i, s] of sources.entries()) {
    const field = `sources[${i}]`
    if (typeof s?.id !== "string" || !ID.test(s.id)) {
      return new ConfigError({ field: `${field}.id`, detail: "must match /^[a-z][a-z0-9_-]{0,62}$/" })
    }
    if (seen.has(s.id)) return new ConfigError({ field: `${field}.id`, detail: `duplicate source id "${s.id}"` })
    seen.add(s.id)
    const p = s.plugin
    if (typeof p?.receive !== "function") {
      return new ConfigError({ field: `${field}.plugin`, detail: "is not a source plugin" })
    }
    if (typeof p.pluginApi !== "string" || !satisfies(PLUGIN_API_VERSION, p.pluginApi)) {
      return new ConfigError({
        field: `${field}.plugin`,
        detail: `${p.name}@${p.version} supports plugin API ${p.pluginApi}, but this TrackLayer implements ` +
          `${PLUGIN_API_VERSION}`
      })
    }
    if (!Config.isConfig(s.settings)) {
      return new ConfigError({
        field: `${field}.settings`,
        detail: "must be a Config read from the environment (e.g. AmplitudeCohorts.settingsFromEnv())"
      })
    }
  }
  const audiences = c.audiences ?? []
  if (!Array.isArray(audiences)) {
    return new ConfigError({ field: "audiences", detail: "must be an array of { key, destinations }" })
  }
  const keys = new Set<string>()
  for (const [i, a] of audiences.entries()) {
    const field = `audiences[${i}]`
    if (typeof a?.key !== "string" || a.key.trim() === "" || a.key.length > 256) {
      return new ConfigError({
        field: `${field}.key`,
        detail: "must be the audience's key at its source (1–256 characters)"
      })
    }
    if (keys.has(a.key)) return new ConfigError({ field: `${field}.key`, detail: `duplicate audience "${a.key}"` })
    keys.add(a.key)
    if (typeof a.destinations !== "object" || a.destinations === null || Object.keys(a.destinations).length === 0) {
      return new ConfigError({
        field: `${field}.destinations`,
        detail: "must map at least one destination id to its audience id there"
      })
    }
    for (const [id, audienceId] of Object.entries(a.destinations)) {
      const d = destinations.get(id)
      if (d === undefined) {
        return new ConfigError({
          field: `${field}.destinations.${id}`,
          detail: `no destination "${id}" (known: ${[...destinations.keys()].join(", ")})`
        })
      }
      if (d.plugin.audiences === undefined) {
        return new ConfigError({
          field: `${field}.destinations.${id}`,
          detail: `${d.plugin.name}@${d.plugin.version} does not accept audiences`
        })
      }
      if (typeof audienceId !== "string" || audienceId.trim() === "") {
        return new ConfigError({
          field: `${field}.destinations.${id}`,
          detail: "must be the audience id at the destination (a non-empty string)"
        })
      }
    }
    if (a.purposes !== undefined && !Array.isArray(a.purposes)) {
      return new ConfigError({
        field: `${field}.purposes`,
        detail: `must be an array of consent purposes, e.g. ["advertising"], got ${JSON.stringify(a.purposes)}`
      })
    }
    for (const p of a.purposes ?? []) {
      if (!purposes.includes(p)) {
        return new ConfigError({
          field: `${field}.purposes`,
          detail: `"${p}" is not a consent purpose (known: ${purposes.join(", ")})`
        })
      }
    }
  }
  const traitSync: Array<TraitSyncConfig> = []
  for (const [i, d] of (c.destinations ?? []).entries()) {
    const t = d.traits
    if (t === undefined) continue
    const field = `destinations[${i}].traits`
    if (d.plugin.userState === undefined) {
      return new ConfigError({
        field,
        detail: `${d.plugin.name}@${d.plugin.version} has no user-state capability (trait sync needs one)`
      })
    }
    if (typeof t !== "object" || t === null || !Array.isArray(t.sync)) {
      return new ConfigError({ field: `${field}.sync`, detail: "must be an array of trait names" })
    }
    for (const [j, name] of t.sync.entries()) {
      if (typeof name !== "string" || !TRAIT.test(name) || name.startsWith("$")) {
        return new ConfigError({ field: `${field}.sync[${j}]`, detail: `${JSON.stringify(name)} is not a trait name` })
      }
    }
    if (t.derived !== undefined && (typeof t.derived !== "object" || t.derived === null)) {
      return new ConfigError({ field: `${field}.derived`, detail: "must be an object: name → (person) => value" })
    }
    for (const [name, rule] of Object.entries(t.derived ?? {})) {
      if (!TRAIT.test(name) || name.startsWith("$")) {
        return new ConfigError({ field: `${field}.derived.${name}`, detail: "is not a user property name" })
      }
      if (typeof rule !== "function") {
        return new ConfigError({ field: `${field}.derived.${name}`, detail: "must be a function (person) => value" })
      }
      if (t.sync.includes(name)) {
        return new ConfigError({
          field: `${field}.derived.${name}`,
          detail: "is also a synced trait; pick another name"
        })
      }
    }
    traitSync.push({ destination: d.id, sync: t.sync, ...(t.derived !== undefined ? { derived: t.derived } : {}) })
  }
  return { sources, audiences, traitSync }
}
