/**
 * Durable trait sync, the pure half: the synced view of a person (allowlisted traits, then derived states) and the
 * difference from what the destination last accepted (`$set` for new or changed values, `$unset` for gone ones).
 */
import { assert, describe, it } from "@effect/vitest"
import type { PersonState } from "../src/Destination.js"
import type { TraitSyncConfig } from "../src/TrackLayerConfig.js"
import { diff, eligible, inAudience, view } from "../src/TraitSync.js"

const person = (over: Partial<PersonState> = {}): PersonState => ({
  userId: "u_alice",
  traits: {},
  consent: { analytics: true, advertising: false, crm: false },
  identifiers: { emails: 0, phones: 0, clickIds: [] },
  audiences: [],
  ...over
})

const config = (over: Partial<TraitSyncConfig> = {}): TraitSyncConfig => ({
  destination: "amplitude",
  sync: ["plan", "lifecycle_stage"],
  ...over
})

describe("TraitSync.view", () => {
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly config: TraitSyncConfig
    readonly person: PersonState
    readonly expected: Record<string, unknown>
  }> = [
    {
      scenario: "only the allowlisted traits",
      config: config(),
      person: person({ traits: { plan: "pro", lifecycle_stage: "customer", email_domain: "example.com", ltv: 420 } }),
      expected: { plan: "pro", lifecycle_stage: "customer" }
    },
    {
      scenario: "an allowlisted trait the person does not have is left out",
      config: config(),
      person: person({ traits: { plan: "free" } }),
      expected: { plan: "free" }
    },
    {
      scenario: "null and undefined values are left out (so they are unset, never set to null)",
      config: config(),
      person: person({ traits: { plan: null, lifecycle_stage: undefined } }),
      expected: {}
    },
    {
      scenario: "false, 0, empty string, arrays and objects are values",
      config: config({ sync: ["trial", "seats", "nickname", "tags", "billing"] }),
      person: person({
        traits: { trial: false, seats: 0, nickname: "", tags: ["b2b", "eu"], billing: { cycle: "annual" } }
      }),
      expected: { trial: false, seats: 0, nickname: "", tags: ["b2b", "eu"], billing: { cycle: "annual" } }
    },
    {
      scenario: "derived states after the traits",
      config: config({
        derived: {
          meta_eligible: eligible("advertising"),
          power_user: inAudience("coh_power"),
          emails_known: (p) => p.identifiers.emails
        }
      }),
      person: person({
        traits: { plan: "pro" },
        consent: { analytics: true, advertising: true, crm: false },
        identifiers: { emails: 2, phones: 0, clickIds: ["fbclid"] },
        audiences: ["coh_power"]
      }),
      expected: { plan: "pro", meta_eligible: true, power_user: true, emails_known: 2 }
    },
    {
      scenario: "a derived rule that throws is left out; the others are kept",
      config: config({
        derived: {
          broken: (p) => (p.traits["nested"] as { deep: string }).deep.toUpperCase(),
          power_user: inAudience("coh_power")
        }
      }),
      person: person({ traits: { plan: "free" } }),
      expected: { plan: "free", power_user: false }
    },
    {
      scenario: "a derived rule returning null or undefined is left out",
      config: config({ derived: { region: () => null, segment: () => undefined, score: () => 0 } }),
      person: person(),
      expected: { score: 0 }
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      assert.deepStrictEqual(view(c.config, c.person), c.expected)
    })
  }

  it("keeps the config's order: synced traits, then derived states", () => {
    const v = view(
      config({ sync: ["lifecycle_stage", "plan"], derived: { b_rule: () => 1, a_rule: () => 2 } }),
      person({ traits: { plan: "pro", lifecycle_stage: "trial" } })
    )
    assert.deepStrictEqual(Object.keys(v), ["lifecycle_stage", "plan", "b_rule", "a_rule"])
  })
})

describe("TraitSync.diff", () => {
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly previous: Record<string, unknown>
    readonly next: Record<string, unknown>
    readonly expected: { set: Record<string, unknown>; unset: Array<string> }
  }> = [
    {
      scenario: "first sync: every value is set",
      previous: {},
      next: { plan: "free", lifecycle_stage: "trial", meta_eligible: false },
      expected: { set: { plan: "free", lifecycle_stage: "trial", meta_eligible: false }, unset: [] }
    },
    {
      scenario: "nothing changed: nothing sent",
      previous: { plan: "free", meta_eligible: false },
      next: { plan: "free", meta_eligible: false },
      expected: { set: {}, unset: [] }
    },
    {
      scenario: "one value changed: only that one",
      previous: { plan: "free", lifecycle_stage: "trial", power_user: false },
      next: { plan: "pro", lifecycle_stage: "trial", power_user: false },
      expected: { set: { plan: "pro" }, unset: [] }
    },
    {
      scenario: "a new value is set",
      previous: { plan: "free" },
      next: { plan: "free", power_user: true },
      expected: { set: { power_user: true }, unset: [] }
    },
    {
      scenario: "gone values are unset, sorted",
      previous: { plan: "free", zeta: 1, lifecycle_stage: "trial", alpha: "x" },
      next: { plan: "free" },
      expected: { set: {}, unset: ["alpha", "lifecycle_stage", "zeta"] }
    },
    {
      scenario: "a type change is a change (\"1\" → 1, false → 0)",
      previous: { seats: "1", trial: false },
      next: { seats: 1, trial: 0 },
      expected: { set: { seats: 1, trial: 0 }, unset: [] }
    },
    {
      scenario: "JSON-equal values (new arrays and objects) are not re-sent",
      previous: { tags: ["b2b", "eu"], billing: { cycle: "annual", seats: 3 } },
      next: { tags: ["b2b", "eu"], billing: { cycle: "annual", seats: 3 } },
      expected: { set: {}, unset: [] }
    },
    {
      scenario: "arrays are compared by value, order included",
      previous: { tags: ["b2b", "eu"], seats: [1, 2] },
      next: { tags: ["eu", "b2b"], seats: [1, 2, 3] },
      expected: { set: { tags: ["eu", "b2b"], seats: [1, 2, 3] }, unset: [] }
    },
    {
      scenario: "a nested value changed: the whole trait is set",
      previous: { billing: { cycle: "annual", seats: 3 } },
      next: { billing: { cycle: "annual", seats: 4 } },
      expected: { set: { billing: { cycle: "annual", seats: 4 } }, unset: [] }
    },
    {
      // The last synced values are read back from a jsonb column, which orders object keys its own way
      // ({"seats":3,"tier":"pro"} reads back as {"tier":"pro","seats":3}): the same value must not be re-sent.
      scenario: "an object whose keys come back in another order is the same value",
      previous: { billing: { tier: "pro", seats: 3, owner: { name: "A", id: 1 } } },
      next: { billing: { seats: 3, tier: "pro", owner: { id: 1, name: "A" } } },
      expected: { set: {}, unset: [] }
    },
    {
      scenario: "a Date from a derived rule is compared as its JSON form (as stored)",
      previous: { last_seen: "2026-04-25T12:00:00.000Z" },
      next: { last_seen: new Date("2026-04-25T12:00:00.000Z") },
      expected: { set: {}, unset: [] }
    },
    {
      scenario: "set and unset together",
      previous: { plan: "free", power_user: true },
      next: { plan: "pro", meta_eligible: true },
      expected: { set: { plan: "pro", meta_eligible: true }, unset: ["power_user"] }
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      assert.deepStrictEqual(diff(c.previous, c.next), c.expected)
    })
  }

  it("a view diffed against itself after a JSON round trip (as stored) is empty", () => {
    const v = view(
      config({ sync: ["plan", "billing"], derived: { power_user: inAudience("coh_power") } }),
      person({ traits: { plan: "pro", billing: { seats: 3, tier: "pro" } }, audiences: ["coh_power"] })
    )
    assert.deepStrictEqual(v, { plan: "pro", billing: { seats: 3, tier: "pro" }, power_user: true })
    assert.deepStrictEqual(diff(JSON.parse(JSON.stringify(v)), v), { set: {}, unset: [] })
  })
})

describe("TraitSync.eligible", () => {
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly consent: Record<string, boolean>
    readonly identifiers: PersonState["identifiers"]
    readonly expected: boolean
  }> = [
    {
      scenario: "advertising granted and an email known",
      consent: { advertising: true },
      identifiers: { emails: 1, phones: 0, clickIds: [] },
      expected: true
    },
    {
      scenario: "advertising granted and a phone known",
      consent: { advertising: true },
      identifiers: { emails: 0, phones: 2, clickIds: [] },
      expected: true
    },
    {
      scenario: "advertising granted, only a click id known (not matchable by a customer list)",
      consent: { advertising: true },
      identifiers: { emails: 0, phones: 0, clickIds: ["fbclid", "gclid"] },
      expected: false
    },
    {
      scenario: "advertising denied, email known",
      consent: { advertising: false },
      identifiers: { emails: 1, phones: 1, clickIds: [] },
      expected: false
    },
    {
      scenario: "advertising not in the consent map",
      consent: { analytics: true },
      identifiers: { emails: 1, phones: 0, clickIds: [] },
      expected: false
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => {
      assert.strictEqual(
        eligible("advertising")(person({ consent: c.consent, identifiers: c.identifiers })),
        c.expected
      )
    })
  }

  it("looks at the purpose it was given", () => {
    const p = person({
      consent: { advertising: false, crm: true },
      identifiers: { emails: 1, phones: 0, clickIds: [] }
    })
    assert.strictEqual(eligible("crm")(p), true)
    assert.strictEqual(eligible("advertising")(p), false)
  })
})

describe("TraitSync.inAudience", () => {
  it("true only for an audience the person is a member of now", () => {
    const p = person({ audiences: ["coh_churn", "coh_power"] })
    assert.strictEqual(inAudience("coh_power")(p), true)
    assert.strictEqual(inAudience("coh_churn")(p), true)
    assert.strictEqual(inAudience("coh_pow")(p), false)
    assert.strictEqual(inAudience("coh_power")(person()), false)
  })
})
