import { Either, FastCheck as fc } from "effect"
import { describe, expect, it } from "vitest"
import {
  applyChoices,
  type ConsentChange,
  type ConsentPolicy,
  type ConsentState,
  decide,
  type DecisionInput,
  defaultFor,
  defaultPolicy,
  EEA_COUNTRIES,
  emptyState,
  googleConsent,
  type PolicyIssue,
  resolvePolicy,
  stateAsOf
} from "../src/Consent.js"

const ms = (iso: string) => Date.parse(iso)

// The usr_5530 journey from the shared fixtures (test/fixtures/seed-journeys.ndjson).
const T0101 = ms("2026-04-21T14:00:00Z") // view_pricing on web_a7c2, advertising denied inline
const T0102 = ms("2026-04-21T14:03:00Z") // sign_up, no inline consent
const T0103 = ms("2026-04-22T10:00:00Z") // purchase, no inline consent

const policy = (input: unknown): ConsentPolicy => {
  const r = resolvePolicy(input)
  if (Either.isLeft(r)) return expect.unreachable(`expected a policy, got ${r.left.field}: ${r.left.detail}`)
  return r.right
}

const problem = (input: unknown): PolicyIssue => {
  const r = resolvePolicy(input)
  if (Either.isRight(r)) return expect.unreachable("expected a PolicyIssue")
  return r.left
}

const input = (over: Partial<DecisionInput> & Pick<DecisionInput, "purposes">): DecisionInput => ({
  eventAt: T0102,
  stateAtEvent: emptyState,
  stateNow: emptyState,
  ...over
})

const state = (...changes: ReadonlyArray<ConsentChange>): ConsentState => stateAsOf(changes)

describe("Consent.resolvePolicy", () => {
  it("nothing configured is the built-in policy", () => {
    expect(resolvePolicy(undefined)).toStrictEqual(Either.right(defaultPolicy))
    expect(policy({})).toStrictEqual({
      purposes: ["analytics", "advertising", "crm"],
      defaults: {},
      jurisdictions: [],
      personalisationPurpose: "advertising"
    })
  })

  it("resolves a full configuration", () => {
    expect(policy({
      purposes: ["ad_personalisation", "support"],
      defaults: { advertising: "granted", support: "granted" },
      jurisdictions: [
        { name: "EEA", countries: ["DE", "FR"], defaults: { advertising: "denied", ad_personalisation: "denied" } },
        { name: "server", sources: ["server"], defaults: { crm: "granted" } }
      ],
      personalisationPurpose: "ad_personalisation"
    })).toStrictEqual({
      purposes: ["analytics", "advertising", "crm", "ad_personalisation", "support"],
      defaults: { advertising: true, support: true },
      jurisdictions: [
        { name: "EEA", countries: ["DE", "FR"], defaults: { advertising: false, ad_personalisation: false } },
        { name: "server", sources: ["server"], defaults: { crm: true } }
      ],
      personalisationPurpose: "ad_personalisation"
    })
  })

  it("accepts every EEA country code it exports", () => {
    expect(EEA_COUNTRIES).toHaveLength(30)
    expect(
      policy({ jurisdictions: [{ name: "EEA", countries: EEA_COUNTRIES, defaults: { crm: "denied" } }] })
        .jurisdictions[0]!.countries
    ).toStrictEqual(EEA_COUNTRIES)
  })

  const eu = { name: "EU", countries: ["DE"], defaults: { advertising: "denied" } }
  const errors: ReadonlyArray<{ scenario: string; input: unknown; field: string; detail: string }> = [
    {
      scenario: "not an object",
      input: null,
      field: "consent",
      detail: "expected an object, got null"
    },
    {
      scenario: "a string instead of the section",
      input: "strict",
      field: "consent",
      detail: "expected an object, got \"strict\""
    },
    {
      scenario: "an unknown top-level setting",
      input: { purpose: ["support"] },
      field: "consent.purpose",
      detail: "unknown setting (expected one of purposes, defaults, jurisdictions, personalisationPurpose)"
    },
    {
      scenario: "a default that is not granted/denied",
      input: { jurisdictions: [eu, { name: "US", countries: ["US"], defaults: { advertising: "yes" } }] },
      field: "consent.jurisdictions[1].defaults.advertising",
      detail: "expected \"granted\" or \"denied\", got \"yes\""
    },
    {
      scenario: "a boolean default",
      input: { defaults: { crm: true } },
      field: "consent.defaults.crm",
      detail: "expected \"granted\" or \"denied\", got true"
    },
    {
      scenario: "an unknown purpose in the defaults",
      input: { defaults: { marketing: "granted" } },
      field: "consent.defaults.marketing",
      detail: "unknown purpose \"marketing\" (known: analytics, advertising, crm; add new purposes to consent.purposes)"
    },
    {
      scenario: "an unknown purpose in a jurisdiction's defaults",
      input: { purposes: ["support"], jurisdictions: [{ ...eu, defaults: { suport: "denied" } }] },
      field: "consent.jurisdictions[0].defaults.suport",
      detail: "unknown purpose \"suport\" (known: analytics, advertising, crm, support; " +
        "add new purposes to consent.purposes)"
    },
    {
      scenario: "UK for the United Kingdom",
      input: { jurisdictions: [{ ...eu, countries: ["DE", "UK"] }] },
      field: "consent.jurisdictions[0].countries[1]",
      detail: "\"UK\" is not an ISO 3166-1 alpha-2 country code; the United Kingdom is \"GB\""
    },
    {
      scenario: "EU as a country",
      input: { jurisdictions: [{ ...eu, countries: ["EU"] }] },
      field: "consent.jurisdictions[0].countries[0]",
      detail: "\"EU\" is not an ISO 3166-1 alpha-2 country code; the EU is not a country: list its member states " +
        "(Consent.EEA_COUNTRIES lists the EEA)"
    },
    {
      scenario: "a lower-case country code",
      input: { jurisdictions: [{ ...eu, countries: ["de"] }] },
      field: "consent.jurisdictions[0].countries[0]",
      detail: "\"de\" is not an ISO 3166-1 alpha-2 country code; did you mean \"DE\"?"
    },
    {
      scenario: "an unassigned country code",
      input: { jurisdictions: [{ ...eu, countries: ["XX"] }] },
      field: "consent.jurisdictions[0].countries[0]",
      detail: "\"XX\" is not an ISO 3166-1 alpha-2 country code"
    },
    {
      scenario: "countries as a string",
      input: { jurisdictions: [{ ...eu, countries: "DE" }] },
      field: "consent.jurisdictions[0].countries",
      detail: "expected an array of ISO 3166-1 alpha-2 codes, got \"DE\""
    },
    {
      scenario: "an empty country list",
      input: { jurisdictions: [{ ...eu, countries: [] }] },
      field: "consent.jurisdictions[0].countries",
      detail: "must list at least one country (or be left out)"
    },
    {
      scenario: "a duplicate jurisdiction name",
      input: { jurisdictions: [eu, { name: "web", sources: ["web"], defaults: { crm: "denied" } }, eu] },
      field: "consent.jurisdictions[2].name",
      detail: "duplicate jurisdiction name \"EU\" (also consent.jurisdictions[0])"
    },
    {
      scenario: "a jurisdiction that matches nothing in particular",
      input: { jurisdictions: [{ name: "all", defaults: { advertising: "granted" } }] },
      field: "consent.jurisdictions[0]",
      detail: "must give countries, sources or both (consent.defaults covers every other event)"
    },
    {
      scenario: "a jurisdiction without defaults",
      input: { jurisdictions: [{ name: "EU", countries: ["DE"] }] },
      field: "consent.jurisdictions[0].defaults",
      detail: "is required"
    },
    {
      scenario: "a jurisdiction with empty defaults",
      input: { jurisdictions: [{ ...eu, defaults: {} }] },
      field: "consent.jurisdictions[0].defaults",
      detail: "must set at least one purpose (purposes it leaves out fall through)"
    },
    {
      scenario: "a misspelt jurisdiction setting",
      input: { jurisdictions: [{ ...eu, country: ["FR"] }] },
      field: "consent.jurisdictions[0].country",
      detail: "unknown setting (expected one of name, countries, sources, defaults)"
    },
    {
      scenario: "a jurisdiction that is not an object",
      input: { jurisdictions: [eu, 5] },
      field: "consent.jurisdictions[1]",
      detail: "expected an object, got 5"
    },
    {
      scenario: "an empty jurisdiction name",
      input: { jurisdictions: [{ ...eu, name: " " }] },
      field: "consent.jurisdictions[0].name",
      detail: "must not be empty"
    },
    {
      scenario: "an empty source",
      input: { jurisdictions: [{ name: "web", sources: ["web", ""], defaults: { crm: "denied" } }] },
      field: "consent.jurisdictions[0].sources[1]",
      detail: "must not be empty"
    },
    {
      scenario: "a purpose name that is not lower snake_case",
      input: { purposes: ["support", "Marketing"] },
      field: "consent.purposes[1]",
      detail: "purpose names are lower snake_case (1–64 characters), got \"Marketing\""
    },
    {
      scenario: "a built-in purpose added again",
      input: { purposes: ["analytics"] },
      field: "consent.purposes[0]",
      detail: "\"analytics\" is built in; list only the purposes you add"
    },
    {
      scenario: "a purpose added twice",
      input: { purposes: ["support", "support"] },
      field: "consent.purposes[1]",
      detail: "duplicate purpose \"support\""
    },
    {
      scenario: "a purpose that is not a string",
      input: { purposes: [7n] },
      field: "consent.purposes[0]",
      detail: "expected a string, got 7n"
    },
    {
      scenario: "an unknown personalisation purpose",
      input: { personalisationPurpose: "personalisation" },
      field: "consent.personalisationPurpose",
      detail: "unknown purpose \"personalisation\" (known: analytics, advertising, crm; " +
        "add new purposes to consent.purposes)"
    }
  ]
  for (const { detail, field, input, scenario } of errors) {
    it(`names the field: ${scenario}`, () => {
      expect(problem(input)).toStrictEqual({ field, detail })
    })
  }
})

describe("Consent defaults", () => {
  it("built in: analytics granted, advertising and crm not", () => {
    expect(decide(defaultPolicy, input({ purposes: ["analytics"] }))).toStrictEqual({ granted: true })
    expect(decide(defaultPolicy, input({ purposes: ["analytics", "advertising"] }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising not granted (built-in default)"
    })
    expect(decide(defaultPolicy, input({ purposes: ["crm"] }))).toStrictEqual({
      granted: false,
      purpose: "crm",
      when: "at_event",
      detail: "crm not granted (built-in default)"
    })
  })

  it("a destination needing no purpose is always granted", () => {
    expect(decide(defaultPolicy, input({ purposes: [] }))).toStrictEqual({ granted: true })
  })

  it("the operator's defaults replace the built-in ones", () => {
    const p = policy({ defaults: { analytics: "denied", advertising: "granted" } })
    expect(decide(p, input({ purposes: ["advertising"] }))).toStrictEqual({ granted: true })
    expect(decide(p, input({ purposes: ["advertising", "analytics"] }))).toStrictEqual({
      granted: false,
      purpose: "analytics",
      when: "at_event",
      detail: "analytics not granted (operator default)"
    })
    expect(defaultFor(p, "crm", {})).toStrictEqual({ granted: false, origin: { _tag: "BuiltIn" } })
  })

  it("an operator purpose is denied unless a default or the person grants it", () => {
    const p = policy({ purposes: ["support", "surveys"], defaults: { surveys: "granted" } })
    expect(decide(p, input({ purposes: ["support"] }))).toStrictEqual({
      granted: false,
      purpose: "support",
      when: "at_event",
      detail: "support not granted (no default configured)"
    })
    expect(decide(p, input({ purposes: ["surveys"] }))).toStrictEqual({ granted: true })
    expect(decide(p, input({ purposes: ["support"], eventChoices: { support: true } }))).toStrictEqual({
      granted: true
    })
  })

  it("a purpose the policy does not know is denied and says so", () => {
    expect(decide(defaultPolicy, input({ purposes: ["support"] }))).toStrictEqual({
      granted: false,
      purpose: "support",
      when: "at_event",
      detail: "support not granted (not a configured purpose)"
    })
    expect(defaultFor(defaultPolicy, "toString", {})).toStrictEqual({
      granted: false,
      origin: { _tag: "UnknownPurpose" }
    })
  })
})

describe("Consent jurisdictions", () => {
  const p = policy({
    defaults: { advertising: "granted", crm: "granted" },
    jurisdictions: [
      { name: "EU-web", countries: ["DE", "FR"], sources: ["web"], defaults: { analytics: "denied" } },
      { name: "EU", countries: EEA_COUNTRIES, defaults: { advertising: "denied", crm: "denied" } },
      { name: "server", sources: ["server"], defaults: { advertising: "granted", analytics: "granted" } }
    ]
  })
  const at = (purpose: string, origin: { country?: string; source?: string }) => defaultFor(p, purpose, origin)
  const jurisdiction = (name: string) => ({ _tag: "Jurisdiction", name })

  it("matches by country (upper-cased, trimmed)", () => {
    expect(at("advertising", { country: " de ", source: "ios" })).toStrictEqual({
      granted: false,
      origin: jurisdiction("EU")
    })
    expect(decide(p, input({ purposes: ["crm"], country: "it" }))).toStrictEqual({
      granted: false,
      purpose: "crm",
      when: "at_event",
      detail: "crm not granted (default for jurisdiction \"EU\")"
    })
  })

  it("matches by source", () => {
    expect(at("advertising", { country: "US", source: "server" })).toStrictEqual({
      granted: true,
      origin: jurisdiction("server")
    })
    expect(at("advertising", { source: "server" })).toStrictEqual({ granted: true, origin: jurisdiction("server") })
  })

  it("with both lists, both must match", () => {
    expect(at("analytics", { country: "FR", source: "web" })).toStrictEqual({
      granted: false,
      origin: jurisdiction("EU-web")
    })
    // FR from another source, and the web from another country, are not EU-web.
    expect(at("analytics", { country: "FR", source: "ios" })).toStrictEqual({
      granted: true,
      origin: { _tag: "BuiltIn" }
    })
    expect(at("analytics", { country: "US", source: "web" })).toStrictEqual({
      granted: true,
      origin: { _tag: "BuiltIn" }
    })
  })

  it("the first jurisdiction that covers the event and sets the purpose wins", () => {
    // DE from the server is in EU and in server: EU comes first.
    expect(at("advertising", { country: "DE", source: "server" })).toStrictEqual({
      granted: false,
      origin: jurisdiction("EU")
    })
    // EU does not set analytics, so server does.
    expect(at("analytics", { country: "DE", source: "server" })).toStrictEqual({
      granted: true,
      origin: jurisdiction("server")
    })
    // EU-web sets only analytics; advertising falls through to EU, not to the operator's "granted".
    expect(at("advertising", { country: "FR", source: "web" })).toStrictEqual({
      granted: false,
      origin: jurisdiction("EU")
    })
  })

  it("an event without a country is not in a country jurisdiction", () => {
    expect(at("advertising", { source: "web" })).toStrictEqual({ granted: true, origin: { _tag: "Operator" } })
    expect(at("advertising", { country: "Germany" })).toStrictEqual({ granted: true, origin: { _tag: "Operator" } })
  })
})

describe("Consent.decide", () => {
  const deniedAt = (at: number, source: "event" | "update" = "update") =>
    state({ choices: { advertising: false }, at, source })
  const grantedAt = (at: number, source: "event" | "update" = "update") =>
    state({ choices: { advertising: true }, at, source })
  const ads = ["advertising"]

  it("inline consent beats the state at event time, both ways", () => {
    const before = deniedAt(T0101)
    expect(decide(
      defaultPolicy,
      input({
        purposes: ads,
        eventChoices: { advertising: true },
        stateAtEvent: before,
        stateNow: before
      })
    )).toStrictEqual({ granted: true })
    const granted = grantedAt(T0101)
    expect(decide(
      defaultPolicy,
      input({
        purposes: ads,
        eventChoices: { advertising: false },
        stateAtEvent: granted,
        stateNow: granted
      })
    )).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising denied at event time (inline consent)"
    })
  })

  it("the state at event time beats the default, both ways", () => {
    const granted = grantedAt(T0101)
    expect(decide(defaultPolicy, input({ purposes: ads, stateAtEvent: granted, stateNow: granted }))).toStrictEqual({
      granted: true
    })
    const open = policy({ defaults: { advertising: "granted" } })
    const denied = deniedAt(T0101)
    expect(decide(open, input({ purposes: ads, stateAtEvent: denied, stateNow: denied }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising denied at event time (consent update at 2026-04-21T14:00:00.000Z)"
    })
  })

  it("a later grant does not release an earlier event", () => {
    const before = deniedAt(T0101, "event")
    const now = applyChoices(before, { advertising: true }, ms("2026-04-23T09:00:00Z"), "update")
    expect(now["advertising"]).toStrictEqual({ granted: true, at: ms("2026-04-23T09:00:00Z"), source: "update" })
    expect(decide(defaultPolicy, input({ purposes: ads, stateAtEvent: before, stateNow: now }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising denied at event time (consent given with an event at 2026-04-21T14:00:00.000Z)"
    })
  })

  it("a grant after the event does not count at event time even when passed as the state at event", () => {
    const later = grantedAt(T0103)
    expect(decide(defaultPolicy, input({ purposes: ads, stateAtEvent: later, stateNow: later }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising not granted (built-in default)"
    })
  })

  it("a withdrawal after the event blocks it, naming the time", () => {
    const before = grantedAt(T0101)
    const now = applyChoices(before, { advertising: false }, T0103, "update")
    expect(decide(defaultPolicy, input({ purposes: ads, stateAtEvent: before, stateNow: now }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "now",
      detail: "advertising withdrawn at 2026-04-22T10:00:00.000Z (consent update)"
    })
    // Withdrawn by a later event's inline consent.
    const byEvent = applyChoices(before, { advertising: false }, T0103, "event")
    expect(decide(defaultPolicy, input({ purposes: ads, stateAtEvent: before, stateNow: byEvent }))).toStrictEqual({
      granted: false,
      purpose: "advertising",
      when: "now",
      detail: "advertising withdrawn at 2026-04-22T10:00:00.000Z (consent given with a later event)"
    })
  })

  it("a withdrawal of a default grant blocks too", () => {
    expect(decide(
      defaultPolicy,
      input({
        purposes: ["analytics"],
        stateNow: state({
          choices: { analytics: false },
          at: T0103,
          source: "update"
        })
      })
    )).toStrictEqual({
      granted: false,
      purpose: "analytics",
      when: "now",
      detail: "analytics withdrawn at 2026-04-22T10:00:00.000Z (consent update)"
    })
  })

  it("a withdrawal older than the event does not block an event that granted inline", () => {
    const older = deniedAt(T0101)
    expect(decide(
      defaultPolicy,
      input({
        purposes: ads,
        eventChoices: { advertising: true },
        stateAtEvent: older,
        stateNow: older
      })
    )).toStrictEqual({ granted: true })
    // Nor one at the very same millisecond as the event: only a choice made after it is "now".
    const same = deniedAt(T0102)
    expect(decide(
      defaultPolicy,
      input({
        purposes: ads,
        eventChoices: { advertising: true },
        stateAtEvent: same,
        stateNow: same
      })
    )).toStrictEqual({ granted: true })
  })

  it("reports the first blocking purpose in the destination's order", () => {
    expect(decide(defaultPolicy, input({ purposes: ["analytics", "crm", "advertising"] }))).toMatchObject({
      purpose: "crm"
    })
    expect(decide(defaultPolicy, input({ purposes: ["advertising", "crm"] }))).toMatchObject({
      purpose: "advertising"
    })
  })

  it("an event time that cannot be ordered trusts no state grant and every withdrawal", () => {
    const granted = state({ choices: { advertising: true, analytics: true }, at: T0101, source: "update" })
    expect(
      decide(defaultPolicy, input({ purposes: ads, eventAt: Number.NaN, stateAtEvent: granted, stateNow: granted }))
    )
      .toStrictEqual({
        granted: false,
        purpose: "advertising",
        when: "at_event",
        detail: "advertising not granted (built-in default)"
      })
    const withdrawn = state({ choices: { analytics: false }, at: T0101, source: "update" })
    expect(decide(defaultPolicy, input({ purposes: ["analytics"], eventAt: Number.NaN, stateNow: withdrawn })))
      .toMatchObject({ granted: false, when: "now" })
  })

  it("the fixture story: usr_5530 denied advertising on web_a7c2, then signed up and bought", () => {
    const changes: Array<ConsentChange> = [
      // evt_0101, on the device that later merges into usr_5530.
      { choices: { analytics: true, advertising: false, crm: false }, at: T0101, source: "event" }
    ]
    const amplitude = ["analytics"]
    const route = (eventAt: number, purposes: ReadonlyArray<string>, country?: string) =>
      decide(defaultPolicy, {
        purposes,
        eventAt,
        stateAtEvent: stateAsOf(changes, eventAt),
        stateNow: stateAsOf(changes),
        country,
        source: "server"
      })
    const blocked = {
      granted: false,
      purpose: "advertising",
      when: "at_event",
      detail: "advertising denied at event time (consent given with an event at 2026-04-21T14:00:00.000Z)"
    }
    // evt_0102 sign_up (FR) and evt_0103 purchase: no inline consent; the device's denial stands.
    expect(route(T0102, ads, "FR")).toStrictEqual(blocked)
    expect(route(T0103, ads)).toStrictEqual(blocked)
    expect(route(T0102, amplitude, "FR")).toStrictEqual({ granted: true })
    expect(route(T0103, amplitude)).toStrictEqual({ granted: true })
    expect(route(T0102, ["crm"], "FR")).toMatchObject({ granted: false, purpose: "crm", when: "at_event" })
    // A later grant releases only later events.
    changes.push({ choices: { advertising: true }, at: ms("2026-04-23T09:00:00Z"), source: "update" })
    expect(route(T0102, ads, "FR")).toStrictEqual(blocked)
    expect(route(T0103, ads)).toStrictEqual(blocked)
    expect(route(ms("2026-04-24T08:00:00Z"), ads)).toStrictEqual({ granted: true })
  })
})

describe("Consent.applyChoices", () => {
  const t = (s: string) => ms(`2026-04-2${s}Z`)

  it("records each purpose's choice with its time and source", () => {
    expect(applyChoices(emptyState, { analytics: true, advertising: false }, t("1T14:00:00"), "event"))
      .toStrictEqual({
        analytics: { granted: true, at: t("1T14:00:00"), source: "event" },
        advertising: { granted: false, at: t("1T14:00:00"), source: "event" }
      })
  })

  it("a later choice replaces an earlier one; an older one arriving late does not", () => {
    const s1 = applyChoices(emptyState, { advertising: false }, t("1T14:00:00"), "event")
    const s2 = applyChoices(s1, { advertising: true }, t("3T09:00:00"), "update")
    expect(s2["advertising"]).toStrictEqual({ granted: true, at: t("3T09:00:00"), source: "update" })
    const s3 = applyChoices(s2, { advertising: false, crm: true }, t("2T00:00:00"), "event")
    expect(s3).toStrictEqual({
      advertising: { granted: true, at: t("3T09:00:00"), source: "update" },
      crm: { granted: true, at: t("2T00:00:00"), source: "event" }
    })
  })

  it("at the same time a denial wins, then an update over an event", () => {
    const at = t("1T14:00:00")
    const grant = applyChoices(emptyState, { advertising: true }, at, "update")
    expect(applyChoices(grant, { advertising: false }, at, "event")["advertising"]).toStrictEqual({
      granted: false,
      at,
      source: "event"
    })
    const denial = applyChoices(emptyState, { advertising: false }, at, "event")
    expect(applyChoices(denial, { advertising: true }, at, "update")).toBe(denial)
    expect(applyChoices(denial, { advertising: false }, at, "update")["advertising"]).toStrictEqual({
      granted: false,
      at,
      source: "update"
    })
  })

  it("returns the same state when nothing changes", () => {
    const s = applyChoices(emptyState, { crm: false }, t("1T14:00:00"), "update")
    expect(applyChoices(s, { crm: true }, t("1T13:00:00"), "update")).toBe(s)
    expect(applyChoices(s, {}, t("2T00:00:00"), "update")).toBe(s)
  })

  it("stores any purpose name as data (no prototype lookups)", () => {
    const choices = JSON.parse("{\"__proto__\": false, \"toString\": true}") as Record<string, boolean>
    const s = applyChoices(emptyState, choices, t("1T14:00:00"), "event")
    expect(Object.keys(s)).toStrictEqual(["__proto__", "toString"])
    expect(Object.getPrototypeOf(s)).toBe(Object.prototype)
    expect(decide(defaultPolicy, input({ purposes: ["constructor"], eventAt: t("2T00:00:00") }))).toMatchObject({
      granted: false,
      detail: "constructor not granted (not a configured purpose)"
    })
  })

  it("a choice with a time that cannot be ordered counts as the oldest", () => {
    const s = applyChoices(emptyState, { advertising: false }, Number.NaN, "update")
    expect(s["advertising"]).toStrictEqual({ granted: false, at: 0, source: "update" })
    expect(applyChoices(s, { advertising: true }, 1, "update")["advertising"]).toStrictEqual({
      granted: true,
      at: 1,
      source: "update"
    })
    const real = applyChoices(emptyState, { advertising: true }, 1, "update")
    expect(applyChoices(real, { advertising: false }, Number.POSITIVE_INFINITY, "update")).toBe(real)
  })

  it("stateAsOf keeps the changes made at or before the time, by time rather than order", () => {
    const changes: ReadonlyArray<ConsentChange> = [
      { choices: { advertising: true }, at: t("3T00:00:00"), source: "update" },
      { choices: { advertising: false }, at: t("1T00:00:00"), source: "event" },
      { choices: { crm: true }, at: t("2T00:00:00"), source: "update" }
    ]
    expect(stateAsOf(changes, t("2T00:00:00"))).toStrictEqual({
      advertising: { granted: false, at: t("1T00:00:00"), source: "event" },
      crm: { granted: true, at: t("2T00:00:00"), source: "update" }
    })
    expect(stateAsOf(changes)["advertising"]).toStrictEqual({ granted: true, at: t("3T00:00:00"), source: "update" })
    expect(stateAsOf(changes, t("0T00:00:00"))).toStrictEqual({})
  })
})

describe("Consent.googleConsent", () => {
  const separate = policy({ purposes: ["ad_personalisation"], personalisationPurpose: "ad_personalisation" })
  const g = (p: ConsentPolicy, choices: Record<string, boolean>) =>
    googleConsent(p, { eventAt: T0102, eventChoices: choices, stateAtEvent: emptyState, stateNow: emptyState })

  it("both from advertising by default", () => {
    expect(g(defaultPolicy, { advertising: true })).toStrictEqual({
      adUserData: "CONSENT_GRANTED",
      adPersonalization: "CONSENT_GRANTED"
    })
    expect(g(defaultPolicy, {})).toStrictEqual({
      adUserData: "CONSENT_DENIED",
      adPersonalization: "CONSENT_DENIED"
    })
  })

  it("adPersonalization from a separate purpose (personalised ads need advertising too)", () => {
    expect(g(separate, { advertising: true })).toStrictEqual({
      adUserData: "CONSENT_GRANTED",
      adPersonalization: "CONSENT_DENIED"
    })
    expect(g(separate, { advertising: true, ad_personalisation: true })).toStrictEqual({
      adUserData: "CONSENT_GRANTED",
      adPersonalization: "CONSENT_GRANTED"
    })
    expect(g(separate, { advertising: false, ad_personalisation: true })).toStrictEqual({
      adUserData: "CONSENT_DENIED",
      adPersonalization: "CONSENT_DENIED"
    })
  })

  it("follows the same at-event and now rules", () => {
    const granted = state({ choices: { advertising: true, ad_personalisation: true }, at: T0101, source: "update" })
    const withdrawn = applyChoices(granted, { ad_personalisation: false }, T0103, "update")
    expect(googleConsent(separate, { eventAt: T0102, stateAtEvent: granted, stateNow: withdrawn })).toStrictEqual({
      adUserData: "CONSENT_GRANTED",
      adPersonalization: "CONSENT_DENIED"
    })
  })
})

describe("Consent properties", () => {
  const PURPOSES = ["analytics", "advertising", "crm", "support", "unknown_purpose"]
  const POLICIES: ReadonlyArray<ConsentPolicy> = [
    defaultPolicy,
    policy({
      purposes: ["support"],
      defaults: { advertising: "granted", support: "granted" },
      jurisdictions: [
        { name: "EU", countries: ["DE", "FR"], defaults: { advertising: "denied", analytics: "denied" } },
        { name: "server", sources: ["server"], defaults: { crm: "granted" } }
      ]
    })
  ]
  const purpose = fc.constantFrom(...PURPOSES)
  const at = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 0, max: 6 }) }, {
    weight: 1,
    arbitrary: fc.constant(Number.NaN)
  })
  const change: fc.Arbitrary<ConsentChange> = fc.record({
    choices: fc.dictionary(purpose, fc.boolean(), { maxKeys: 3 }),
    at,
    source: fc.constantFrom("event" as const, "update" as const)
  })
  const scenario = fc.record({
    policy: fc.constantFrom(...POLICIES),
    purposes: fc.array(purpose, { maxLength: 4 }),
    eventAt: fc.integer({ min: 0, max: 6 }),
    eventChoices: fc.option(fc.dictionary(purpose, fc.boolean(), { maxKeys: 3 }), { nil: undefined }),
    changes: fc.array(change, { maxLength: 8 }),
    country: fc.constantFrom("DE", "fr", "US", undefined),
    source: fc.constantFrom("web", "server", undefined)
  }).map((s) => ({
    ...s,
    input: {
      purposes: s.purposes,
      eventAt: s.eventAt,
      eventChoices: s.eventChoices,
      stateAtEvent: stateAsOf(s.changes, s.eventAt),
      stateNow: stateAsOf(s.changes),
      country: s.country,
      source: s.source
    } satisfies DecisionInput
  }))

  // The rule, stated directly: denied at event time (inline, else state as of the event, else default) or withdrawn
  // since (a denial in the current state made after the event).
  const deniedAtEvent = (p: ConsentPolicy, i: DecisionInput, purpose: string): boolean => {
    const inline = i.eventChoices?.[purpose]
    if (inline !== undefined) return !inline
    const before = Object.hasOwn(i.stateAtEvent, purpose) ? i.stateAtEvent[purpose] : undefined
    if (before !== undefined) return !before.granted
    return !defaultFor(p, purpose, i).granted
  }
  const withdrawn = (i: DecisionInput, purpose: string): boolean => {
    const now = Object.hasOwn(i.stateNow, purpose) ? i.stateNow[purpose] : undefined
    return now !== undefined && now.at > i.eventAt && !now.granted
  }

  it("(1) never grants when a required purpose is denied at event time or now, and grants otherwise", () => {
    fc.assert(
      fc.property(scenario, ({ input: i, policy: p }) => {
        const d = decide(p, i)
        const firstDenied = i.purposes.find((x) => deniedAtEvent(p, i, x) || withdrawn(i, x))
        if (firstDenied === undefined) {
          expect(d).toStrictEqual({ granted: true })
        } else {
          expect(d).toMatchObject({
            granted: false,
            purpose: firstDenied,
            when: deniedAtEvent(p, i, firstDenied) ? "at_event" : "now"
          })
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("(1) a newer denial of any required purpose always blocks; a newer grant never releases an at-event block", () => {
    fc.assert(
      // Every generated choice is at 0..6, so 100+ is the newest choice and after the event.
      fc.property(scenario, fc.integer({ min: 0, max: 5 }), ({ input: i, policy: p }, after) => {
        fc.pre(i.purposes.length > 0)
        for (const x of i.purposes) {
          const denied = { ...i, stateNow: applyChoices(i.stateNow, { [x]: false }, 100 + after, "update") }
          expect(decide(p, denied).granted).toBe(false)
        }
        const before = decide(p, i)
        if (!before.granted && before.when === "at_event") {
          const grants = Object.fromEntries(PURPOSES.map((x) => [x, true]))
          const later = { ...i, stateNow: applyChoices(i.stateNow, grants, 200, "update") }
          expect(decide(p, later)).toStrictEqual(before)
        }
      }),
      { numRuns: 1000 }
    )
  })

  it("(2) folding applyChoices over any permutation of the same choices gives the same state", () => {
    const fold = (cs: ReadonlyArray<ConsentChange>) =>
      cs.reduce((s, c) => applyChoices(s, c.choices, c.at, c.source), emptyState)
    fc.assert(
      fc.property(
        fc.array(change, { maxLength: 10 }).chain((cs) =>
          fc.tuple(fc.constant(cs), fc.shuffledSubarray(cs, { minLength: cs.length, maxLength: cs.length }))
        ),
        ([cs, permuted]) => {
          expect(fold(permuted)).toStrictEqual(fold(cs))
          expect(stateAsOf(permuted)).toStrictEqual(fold(cs))
          // Applying a change again changes nothing.
          expect(fold([...cs, ...permuted])).toStrictEqual(fold(cs))
        }
      ),
      { numRuns: 2000 }
    )
  })
})
