/**
 * Consent: the operator's policy (purposes, defaults per jurisdiction), a person's explicit choices, and the decision
 * whether an event may go to a destination that needs some purposes. Everything here is pure and total: the pipeline
 * folds the log into states and asks; nothing here reads the store, the clock or the environment.
 *
 * The rules (docs/consent.md has them with examples):
 * - A person's choice per purpose is the latest one by time, wherever it came from (inline on an event, or a consent
 *   update); at equal times a denial wins. So the state does not depend on the order the log delivers choices in.
 * - At event time a purpose is what the event itself said, else the person's choice as of the event, else the policy's
 *   default for where the event came from (the first covering jurisdiction that sets it, the operator's, built-in).
 * - Now, a choice newer than the event replaces that: a withdrawal blocks; a grant cannot release an event that was
 *   not granted at its time. Every purpose a destination needs must be granted both at event time and now.
 */
import { Either, ParseResult, Schema } from "effect"

// ---------------------------------------------------------------------------------------------------------------------
// Purposes and countries
// ---------------------------------------------------------------------------------------------------------------------

/** The purposes every TrackLayer knows; operators add more in `consent.purposes`. */
export const BUILT_IN_PURPOSES: ReadonlyArray<string> = ["analytics", "advertising", "crm"]

/** What a purpose defaults to when nobody configured anything: only analytics runs without an explicit grant. */
const BUILT_IN_DEFAULTS: Readonly<Record<string, boolean>> = { analytics: true, advertising: false, crm: false }

/** Operator purpose names: lower snake_case, 1–64 characters. */
const PURPOSE_NAME = /^[a-z][a-z0-9_]{0,63}$/

/** ISO 3166-1 alpha-2 codes (the 249 assigned ones, plus `XK`, Kosovo's widely used user-assigned code). */
const ISO_COUNTRIES: ReadonlySet<string> = new Set(
  ("AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
    "CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO " +
    "FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE " +
    "JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO " +
    "MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW " +
    "PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM " +
    "TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW").split(" ")
)

/** Codes operators write by habit that ISO 3166-1 does not assign to the country they mean. */
const COUNTRY_HINTS: Readonly<Record<string, string>> = {
  UK: "the United Kingdom is \"GB\"",
  EL: "Greece is \"GR\"",
  EU: "the EU is not a country: list its member states (Consent.EEA_COUNTRIES lists the EEA)"
}

/** The European Economic Area: the 27 EU member states plus Iceland, Liechtenstein and Norway (GDPR applies). */
export const EEA_COUNTRIES: ReadonlyArray<string> =
  "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK".split(" ")

// ---------------------------------------------------------------------------------------------------------------------
// Policy configuration (what an operator writes under `consent` in tracklayer.config.ts)
// ---------------------------------------------------------------------------------------------------------------------

/** Renders any value for an error message without throwing (bigints and functions included). */
const show = (u: unknown): string => {
  if (typeof u === "string") return JSON.stringify(u)
  if (u === null || typeof u === "number" || typeof u === "boolean" || typeof u === "undefined") return String(u)
  if (typeof u === "bigint") return `${u}n`
  if (Array.isArray(u)) return "an array"
  if (typeof u === "object") return "an object"
  return `a ${typeof u}`
}

const expected = (what: string) => ({
  message: (issue: ParseResult.ParseIssue) => `expected ${what}, got ${show(issue.actual)}`
})

const Str = Schema.String.annotations(expected("a string"))

/** `"granted"` or `"denied"`: a default answer for a purpose. */
export const DefaultAnswer = Schema.Literal("granted", "denied").annotations({
  message: (issue) => ({ message: `expected "granted" or "denied", got ${show(issue.actual)}`, override: true })
})

const Defaults = Schema.Record({ key: Schema.String, value: DefaultAnswer }).annotations(
  expected("an object of purpose: \"granted\" | \"denied\"")
)

const JurisdictionConfig = Schema.Struct({
  name: Str,
  countries: Schema.optional(Schema.Array(Str).annotations(expected("an array of ISO 3166-1 alpha-2 codes"))),
  sources: Schema.optional(Schema.Array(Str).annotations(expected("an array of context.source values"))),
  defaults: Defaults
}).annotations(expected("an object"))

/** The `consent` section of tracklayer.config.ts (decoded with excess properties as errors). */
export const PolicyConfig = Schema.Struct({
  purposes: Schema.optional(Schema.Array(Str).annotations(expected("an array of purpose names"))),
  defaults: Schema.optional(Defaults),
  jurisdictions: Schema.optional(Schema.Array(JurisdictionConfig).annotations(expected("an array of jurisdictions"))),
  personalisationPurpose: Schema.optional(Str)
}).annotations(expected("an object"))

/** What an operator writes under `consent` (the encoded form of `PolicyConfig`). */
export type PolicyConfig = typeof PolicyConfig.Encoded

const POLICY_KEYS = ["purposes", "defaults", "jurisdictions", "personalisationPurpose"]
const JURISDICTION_KEYS = ["name", "countries", "sources", "defaults"]

/** Why a `consent` section is unusable: the field (`consent.jurisdictions[1].defaults.advertising`) and why. */
export interface PolicyIssue {
  readonly field: string
  readonly detail: string
}

// ---------------------------------------------------------------------------------------------------------------------
// Resolved policy
// ---------------------------------------------------------------------------------------------------------------------

/** Where a default came from; decides the wording of a block's detail. */
export type DefaultOrigin =
  | { readonly _tag: "Jurisdiction"; readonly name: string }
  | { readonly _tag: "Operator" }
  | { readonly _tag: "BuiltIn" }
  /** An operator-added purpose that no default mentions. */
  | { readonly _tag: "Unset" }
  /** A purpose the policy does not know (a destination declared it, nothing configured it). */
  | { readonly _tag: "UnknownPurpose" }

/** A jurisdiction: events from these countries and/or sources get these defaults. */
export interface Jurisdiction {
  readonly name: string
  /** ISO 3166-1 alpha-2, upper case; absent: any country. */
  readonly countries?: ReadonlyArray<string>
  /** `context.source` values; absent: any source. */
  readonly sources?: ReadonlyArray<string>
  /** Purpose → granted; a purpose not listed falls through to the next covering jurisdiction, then the policy's. */
  readonly defaults: Readonly<Record<string, boolean>>
}

/** The resolved consent policy. */
export interface ConsentPolicy {
  /** Every known purpose: the built-ins, then the operator's, in the order written. */
  readonly purposes: ReadonlyArray<string>
  /** The operator's defaults (purpose → granted); built-ins apply to the purposes not listed. */
  readonly defaults: Readonly<Record<string, boolean>>
  /** Checked in order: per purpose, the first that covers an event and sets the purpose supplies its default. */
  readonly jurisdictions: ReadonlyArray<Jurisdiction>
  /** The purpose behind Google's `adPersonalization` (default `advertising`). */
  readonly personalisationPurpose: string
}

/** The policy when nothing is configured: analytics granted, advertising and crm denied. */
export const defaultPolicy: ConsentPolicy = {
  purposes: BUILT_IN_PURPOSES,
  defaults: {},
  jurisdictions: [],
  personalisationPurpose: "advertising"
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/

const fieldOf = (path: ReadonlyArray<PropertyKey>): string =>
  "consent" +
  path.map((p) =>
    typeof p === "number" ? `[${p}]` : IDENT.test(String(p)) ? `.${String(p)}` : `[${JSON.stringify(String(p))}]`
  ).join("")

const issue = (path: ReadonlyArray<PropertyKey>, detail: string): Either.Either<never, PolicyIssue> =>
  Either.left({ field: fieldOf(path), detail })

/** The first structural problem, worded for an operator. */
const structuralIssue = (error: ParseResult.ParseError): PolicyIssue => {
  const first = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (first === undefined) return { field: "consent", detail: "is not a valid consent policy" }
  const keys = first.path.length <= 1 ? POLICY_KEYS : JURISDICTION_KEYS
  const detail = first._tag === "Unexpected"
    ? `unknown setting (expected one of ${keys.join(", ")})`
    : first._tag === "Missing"
    ? "is required"
    : first.message
  return { field: fieldOf(first.path), detail }
}

const toBooleans = (defaults: Readonly<Record<string, "granted" | "denied">>): Record<string, boolean> =>
  Object.fromEntries(Object.entries(defaults).map(([p, a]) => [p, a === "granted"]))

/**
 * Checks the operator's `consent` section and resolves it; `undefined` means nothing configured (the built-in policy).
 * Returns the first problem, naming its field; a policy with a problem is never used, partly or otherwise.
 */
export const resolvePolicy = (input: unknown): Either.Either<ConsentPolicy, PolicyIssue> => {
  if (input === undefined) return Either.right(defaultPolicy)
  const decoded = Schema.decodeUnknownEither(PolicyConfig, { onExcessProperty: "error" })(input)
  if (Either.isLeft(decoded)) return Either.left(structuralIssue(decoded.left))
  const c = decoded.right

  const extra = c.purposes ?? []
  for (const [i, p] of extra.entries()) {
    if (!PURPOSE_NAME.test(p)) {
      return issue(["purposes", i], `purpose names are lower snake_case (1–64 characters), got ${show(p)}`)
    }
    if (BUILT_IN_PURPOSES.includes(p)) {
      return issue(["purposes", i], `"${p}" is built in; list only the purposes you add`)
    }
    if (extra.indexOf(p) !== i) return issue(["purposes", i], `duplicate purpose "${p}"`)
  }
  const purposes = [...BUILT_IN_PURPOSES, ...extra]
  const unknownPurpose = (path: ReadonlyArray<PropertyKey>, p: string) =>
    issue(path, `unknown purpose "${p}" (known: ${purposes.join(", ")}; add new purposes to consent.purposes)`)
  const checkDefaults = (path: ReadonlyArray<PropertyKey>, defaults: Readonly<Record<string, unknown>>) => {
    for (const p of Object.keys(defaults)) if (!purposes.includes(p)) return unknownPurpose([...path, p], p)
    return undefined
  }

  const topDefaults = checkDefaults(["defaults"], c.defaults ?? {})
  if (topDefaults) return topDefaults

  const jurisdictions: Array<Jurisdiction> = []
  for (const [i, j] of (c.jurisdictions ?? []).entries()) {
    const at = ["jurisdictions", i]
    if (j.name.trim() === "") return issue([...at, "name"], "must not be empty")
    const earlier = jurisdictions.findIndex((o) => o.name === j.name)
    if (earlier !== -1) {
      return issue([...at, "name"], `duplicate jurisdiction name "${j.name}" (also consent.jurisdictions[${earlier}])`)
    }
    if (j.countries === undefined && j.sources === undefined) {
      return issue(at, "must give countries, sources or both (consent.defaults covers every other event)")
    }
    if (j.countries !== undefined && j.countries.length === 0) {
      return issue([...at, "countries"], "must list at least one country (or be left out)")
    }
    for (const [k, code] of (j.countries ?? []).entries()) {
      if (!ISO_COUNTRIES.has(code)) {
        const hint = COUNTRY_HINTS[code.toUpperCase()] ??
          (ISO_COUNTRIES.has(code.toUpperCase()) ? `did you mean "${code.toUpperCase()}"?` : undefined)
        return issue(
          [...at, "countries", k],
          `${show(code)} is not an ISO 3166-1 alpha-2 country code${hint ? `; ${hint}` : ""}`
        )
      }
    }
    if (j.sources !== undefined && j.sources.length === 0) {
      return issue([...at, "sources"], "must list at least one source (or be left out)")
    }
    for (const [k, s] of (j.sources ?? []).entries()) {
      if (s === "") return issue([...at, "sources", k], "must not be empty")
    }
    if (Object.keys(j.defaults).length === 0) {
      return issue([...at, "defaults"], "must set at least one purpose (purposes it leaves out fall through)")
    }
    const jDefaults = checkDefaults([...at, "defaults"], j.defaults)
    if (jDefaults) return jDefaults
    jurisdictions.push({
      name: j.name,
      ...(j.countries !== undefined ? { countries: j.countries } : {}),
      ...(j.sources !== undefined ? { sources: j.sources } : {}),
      defaults: toBooleans(j.defaults)
    })
  }

  const personalisationPurpose = c.personalisationPurpose ?? "advertising"
  if (!purposes.includes(personalisationPurpose)) {
    return unknownPurpose(["personalisationPurpose"], personalisationPurpose)
  }

  return Either.right({ purposes, defaults: toBooleans(c.defaults ?? {}), jurisdictions, personalisationPurpose })
}

/** Where an event came from, as far as the policy cares. */
export interface Origin {
  /** The event's country (`user.country`); compared upper-cased and trimmed. */
  readonly country?: string | undefined
  /** The event's `context.source`; compared exactly. */
  readonly source?: string | undefined
}

const own = <A>(record: Readonly<Record<string, A>> | undefined, key: string): A | undefined =>
  record !== undefined && Object.hasOwn(record, key) ? record[key] : undefined

/** Whether a jurisdiction covers an event: each list it gives must contain the event's value. */
const covers = (j: Jurisdiction, country: string | undefined, source: string | undefined): boolean =>
  (j.countries === undefined || (country !== undefined && j.countries.includes(country))) &&
  (j.sources === undefined || (source !== undefined && j.sources.includes(source)))

/**
 * A purpose's default for an event from `origin`, and where it comes from: the first jurisdiction that covers the
 * event and sets the purpose, else the operator's default, else the built-in one (an added purpose: denied).
 */
export const defaultFor = (
  policy: ConsentPolicy,
  purpose: string,
  origin: Origin
): { readonly granted: boolean; readonly origin: DefaultOrigin } => {
  const country = origin.country?.trim().toUpperCase()
  for (const j of policy.jurisdictions) {
    const granted = own(j.defaults, purpose)
    if (granted !== undefined && covers(j, country, origin.source)) {
      return { granted, origin: { _tag: "Jurisdiction", name: j.name } }
    }
  }
  const fromOperator = own(policy.defaults, purpose)
  if (fromOperator !== undefined) return { granted: fromOperator, origin: { _tag: "Operator" } }
  const builtIn = own(BUILT_IN_DEFAULTS, purpose)
  if (builtIn !== undefined) return { granted: builtIn, origin: { _tag: "BuiltIn" } }
  return { granted: false, origin: { _tag: policy.purposes.includes(purpose) ? "Unset" : "UnknownPurpose" } }
}

// ---------------------------------------------------------------------------------------------------------------------
// A person's choices
// ---------------------------------------------------------------------------------------------------------------------

/** Where a choice came from: inline consent on an event, or a consent update (`POST /v1/consent`). */
export type ChoiceSource = "event" | "update"

/** One explicit choice for one purpose. */
export interface Choice {
  readonly granted: boolean
  /** Epoch ms when the person made it (the event's timestamp for inline consent). */
  readonly at: number
  readonly source: ChoiceSource
}

/** A person's explicit choices: purpose → the choice that stands. */
export type ConsentState = Readonly<Record<string, Choice>>

/** No choices yet. */
export const emptyState: ConsentState = {}

/** One change as the log records it: several purposes chosen at once. */
export interface ConsentChange {
  readonly choices: Readonly<Record<string, boolean>>
  readonly at: number
  readonly source: ChoiceSource
}

const SOURCE_RANK: Readonly<Record<ChoiceSource, number>> = { event: 0, update: 1 }

/** A total order on choices (later; at the same time a denial; then an update over an event), so folds commute. */
const supersedes = (a: Choice, b: Choice): boolean =>
  a.at !== b.at
    ? a.at > b.at
    : a.granted !== b.granted
    ? !a.granted
    : (SOURCE_RANK[a.source] ?? -1) > (SOURCE_RANK[b.source] ?? -1)

// A time that cannot be ordered ranks as the oldest possible choice: it still counts when nothing else is known
// (so a denial is not lost), but never overrides a real choice, and the fold stays order-independent.
const orderable = (at: number): number => (Number.isFinite(at) ? at : 0)

/** Records choices made at `at`; per purpose the latest choice stands, whatever order they arrive in. */
export const applyChoices = (
  state: ConsentState,
  choices: Readonly<Record<string, boolean>>,
  at: number,
  source: ChoiceSource
): ConsentState => {
  const changed: Array<[string, Choice]> = []
  for (const [purpose, granted] of Object.entries(choices)) {
    if (typeof granted !== "boolean") continue
    const candidate: Choice = { granted, at: orderable(at), source }
    const current = own(state, purpose)
    if (current === undefined || supersedes(candidate, current)) changed.push([purpose, candidate])
  }
  // fromEntries defines own properties, so even a purpose named "__proto__" is data, not a prototype change.
  return changed.length === 0 ? state : Object.fromEntries([...Object.entries(state), ...changed])
}

/** The state from a person's changes made at or before `asOf` (all of them when absent), by time, not log order. */
export const stateAsOf = (changes: Iterable<ConsentChange>, asOf?: number): ConsentState => {
  let state = emptyState
  for (const c of changes) {
    if (asOf === undefined || orderable(c.at) <= asOf) state = applyChoices(state, c.choices, c.at, c.source)
  }
  return state
}

// ---------------------------------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------------------------------

/** Everything `decide` needs about one event and one destination. */
export interface DecisionInput extends Origin {
  /** The destination's purposes, in its declared order; all must be granted. */
  readonly purposes: ReadonlyArray<string>
  /** The event's time (epoch ms): choices after it are "now", choices at or before it are "at event". */
  readonly eventAt: number
  /** The event's inline consent, if it had any. */
  readonly eventChoices?: Readonly<Record<string, boolean>> | undefined
  /** The person's choices as of the event (`stateAsOf(changes, eventAt)`); later entries are ignored here. */
  readonly stateAtEvent: ConsentState
  /** The person's choices now, when the event is sent. */
  readonly stateNow: ConsentState
}

/** Whether an event may go to a destination; when not, the first purpose that blocks it and why. */
export type ConsentDecision =
  | { readonly granted: true }
  | {
    readonly granted: false
    readonly purpose: string
    readonly when: "at_event" | "now"
    readonly detail: string
  }

/** ISO time, or the raw number when it is outside the Date range. */
const iso = (at: number): string => (Math.abs(at) <= 8.64e15 ? new Date(at).toISOString() : String(at))

const choiceText = (c: Choice): string =>
  c.source === "update" ? `consent update at ${iso(c.at)}` : `consent given with an event at ${iso(c.at)}`

const defaultText = (o: DefaultOrigin): string => {
  switch (o._tag) {
    case "Jurisdiction":
      return `default for jurisdiction "${o.name}"`
    case "Operator":
      return "operator default"
    case "BuiltIn":
      return "built-in default"
    case "Unset":
      return "no default configured"
    case "UnknownPurpose":
      return "not a configured purpose"
  }
}

const GRANTED: ConsentDecision = { granted: true }

/** One purpose, at event time then now; undefined when it is granted both times. */
const decidePurpose = (
  policy: ConsentPolicy,
  input: DecisionInput,
  eventAt: number,
  purpose: string
): ConsentDecision | undefined => {
  const inline = own(input.eventChoices, purpose)
  const before = own(input.stateAtEvent, purpose)
  if (typeof inline === "boolean") {
    if (!inline) return blocked(purpose, "at_event", `${purpose} denied at event time (inline consent)`)
  } else if (before !== undefined && before.at <= eventAt) {
    // (A state entry newer than the event is not "as of the event", even if a caller passes one: a later grant must
    // not release the event. It is judged below, as a change made since.)
    if (!before.granted) {
      return blocked(purpose, "at_event", `${purpose} denied at event time (${choiceText(before)})`)
    }
  } else {
    const d = defaultFor(policy, purpose, input)
    if (!d.granted) return blocked(purpose, "at_event", `${purpose} not granted (${defaultText(d.origin)})`)
  }
  const since = own(input.stateNow, purpose)
  if (since !== undefined && since.at > eventAt && !since.granted) {
    const how = since.source === "update" ? "consent update" : "consent given with a later event"
    return blocked(purpose, "now", `${purpose} withdrawn at ${iso(since.at)} (${how})`)
  }
  return undefined
}

const blocked = (purpose: string, when: "at_event" | "now", detail: string): ConsentDecision => ({
  granted: false,
  purpose,
  when,
  detail
})

/** Whether an event may go to a destination needing `input.purposes`: each granted at event time and still now. */
export const decide = (policy: ConsentPolicy, input: DecisionInput): ConsentDecision => {
  // An event time that cannot be ordered makes every state entry "since the event": state grants are then not
  // trusted at event time, and every recorded withdrawal counts now.
  const eventAt = Number.isFinite(input.eventAt) ? input.eventAt : -Infinity
  for (const purpose of input.purposes) {
    const decision = decidePurpose(policy, input, eventAt, purpose)
    if (decision !== undefined) return decision
  }
  return GRANTED
}

// ---------------------------------------------------------------------------------------------------------------------
// Google
// ---------------------------------------------------------------------------------------------------------------------

/** Google's consent value. */
export type GoogleConsentStatus = "CONSENT_GRANTED" | "CONSENT_DENIED"

/** The `consent` object Google's APIs take with user data. */
export interface GoogleConsent {
  readonly adUserData: GoogleConsentStatus
  readonly adPersonalization: GoogleConsentStatus
}

const status = (d: ConsentDecision): GoogleConsentStatus => (d.granted ? "CONSENT_GRANTED" : "CONSENT_DENIED")

/**
 * Google's consent for one event: `adUserData` from `advertising`; `adPersonalization` from the personalisation
 * purpose and `advertising` (personalised ads are advertising), each decided like `decide`.
 */
export const googleConsent = (policy: ConsentPolicy, input: Omit<DecisionInput, "purposes">): GoogleConsent => ({
  adUserData: status(decide(policy, { ...input, purposes: ["advertising"] })),
  adPersonalization: status(decide(policy, { ...input, purposes: ["advertising", policy.personalisationPurpose] }))
})
