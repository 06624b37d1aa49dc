/**
 * Audience reconciliation (Audiences.plan): what one destination should hold for a person (member now, and the
 * audience's consent purposes granted now) against what it was last told (`tl_audience_sync`). Consent is decided by
 * the real `Consent.decide` under the built-in policy (analytics granted, advertising and crm denied by default), as
 * delivery does it.
 */
import { assert, describe, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  type Grant,
  type Membership,
  type Plan,
  plan,
  type RoutedAudience,
  routesFor,
  summarizeRemovals,
  type Synced
} from "../src/Audiences.js"
import * as Consent from "../src/Consent.js"
import type { AudienceRoute } from "../src/TrackLayerConfig.js"

const NOW = Date.UTC(2026, 3, 25, 12)
/** When the person's consent choices in these tests were made (a consent update). */
const CHOSEN_AT = Date.UTC(2026, 3, 20, 10)

const POWER: RoutedAudience = { key: "coh_power", audienceId: "23850000000000001", purposes: ["advertising"] }
const CHURN: RoutedAudience = { key: "coh_churn", audienceId: "23850000000000002", purposes: ["advertising"] }
const CRM: RoutedAudience = { key: "coh_crm", audienceId: "tl_power_users", purposes: ["crm"] }

/** The grant delivery passes to `plan`: Consent.decide for the purposes, now, on the person's choices. */
const grantOf = (choices: Readonly<Record<string, boolean>>) => (purposes: ReadonlyArray<string>): Grant => {
  const state = Object.keys(choices).length === 0
    ? Consent.emptyState
    : Consent.stateAsOf([{ choices, at: CHOSEN_AT, source: "update" }])
  const g = Consent.decide(Consent.defaultPolicy, {
    purposes,
    eventAt: NOW,
    stateAtEvent: state,
    stateNow: state,
    country: undefined,
    source: undefined
  })
  return g.granted ? { granted: true, detail: "granted" } : g
}

const member = (
  audience_key: string,
  identifier: string,
  isMember: boolean,
  audience_name = "Power users"
): Membership => ({ audience_key, identifier, audience_name, member: isMember })
const told = (audience_key: string, identifier: string, isMember: boolean): Synced => ({
  audience_key,
  identifier,
  member: isMember
})

const ALICE = "user:u_alice"
const BOB = "user:u_bob"

describe("Audiences.routesFor", () => {
  const audiences: ReadonlyArray<AudienceRoute> = [
    { key: "coh_power", destinations: { meta: "23850000000000001", "google-ads": "8000000001" } },
    { key: "coh_crm", destinations: { hubspot: "tl_power_users" }, purposes: ["crm", "analytics"] },
    { key: "coh_churn", destinations: { meta: "23850000000000002" }, purposes: ["analytics"] }
  ]

  it("lists the audiences routed to one destination, with its audience id there and the purposes", () => {
    assert.deepStrictEqual(routesFor(audiences, "meta", ["advertising"]), [
      { key: "coh_power", audienceId: "23850000000000001", purposes: ["advertising"] },
      // An audience's own purposes replace the destination's.
      { key: "coh_churn", audienceId: "23850000000000002", purposes: ["analytics"] }
    ])
    assert.deepStrictEqual(routesFor(audiences, "google-ads", ["advertising"]), [
      { key: "coh_power", audienceId: "8000000001", purposes: ["advertising"] }
    ])
    assert.deepStrictEqual(routesFor(audiences, "hubspot", ["crm"]), [
      { key: "coh_crm", audienceId: "tl_power_users", purposes: ["crm", "analytics"] }
    ])
  })

  it("a destination no audience is routed to has no routes", () => {
    assert.deepStrictEqual(routesFor(audiences, "amplitude", ["analytics"]), [])
    assert.deepStrictEqual(routesFor([], "meta", ["advertising"]), [])
  })
})

describe("Audiences.plan", () => {
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly routes?: ReadonlyArray<RoutedAudience>
    readonly only?: string
    readonly memberships: ReadonlyArray<Membership>
    readonly synced: ReadonlyArray<Synced>
    readonly consent: Readonly<Record<string, boolean>>
    readonly expected: Plan
  }> = [
    {
      scenario: "joins with consent: add",
      memberships: [member("coh_power", ALICE, true)],
      synced: [],
      consent: { advertising: true },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "Power users", op: "add", cause: "joined" }],
        notes: []
      }
    },
    {
      scenario: "joins without consent (built-in default): nothing sent, a consent note naming the purpose",
      memberships: [member("coh_power", ALICE, true)],
      synced: [],
      consent: {},
      expected: {
        changes: [],
        notes: [{
          reason: "consent",
          purpose: "advertising",
          detail: "user:u_alice is in coh_power but not added to meta: advertising not granted (built-in default)"
        }]
      }
    },
    {
      scenario: "joins after refusing advertising: nothing sent, the note says when it was refused",
      memberships: [member("coh_power", ALICE, true)],
      synced: [],
      consent: { analytics: true, advertising: false },
      expected: {
        changes: [],
        notes: [{
          reason: "consent",
          purpose: "advertising",
          detail: "user:u_alice is in coh_power but not added to meta: advertising denied at event time " +
            "(consent update at 2026-04-20T10:00:00.000Z)"
        }]
      }
    },
    {
      scenario: "joins again while already told in: duplicate",
      memberships: [member("coh_power", ALICE, true)],
      synced: [told("coh_power", ALICE, true)],
      consent: { advertising: true },
      expected: {
        changes: [],
        notes: [{ reason: "duplicate", detail: "user:u_alice is already in coh_power at meta" }]
      }
    },
    {
      scenario: "leaves when told in: remove",
      memberships: [member("coh_power", ALICE, false)],
      synced: [told("coh_power", ALICE, true)],
      consent: { advertising: true },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "Power users", op: "remove", cause: "left" }],
        notes: []
      }
    },
    {
      scenario: "leaves when told in, consent since refused: remove (cause left)",
      memberships: [member("coh_power", ALICE, false)],
      synced: [told("coh_power", ALICE, true)],
      consent: { advertising: false },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "Power users", op: "remove", cause: "left" }],
        notes: []
      }
    },
    {
      scenario: "leaves when never told (the enter went out without consent): duplicate",
      memberships: [member("coh_power", ALICE, false)],
      synced: [],
      consent: {},
      expected: {
        changes: [],
        notes: [{ reason: "duplicate", detail: "user:u_alice is already not in coh_power at meta" }]
      }
    },
    {
      scenario: "leaves when already removed: duplicate",
      memberships: [member("coh_power", ALICE, false)],
      synced: [told("coh_power", ALICE, false)],
      consent: { advertising: true },
      expected: {
        changes: [],
        notes: [{ reason: "duplicate", detail: "user:u_alice is already not in coh_power at meta" }]
      }
    },
    {
      scenario: "consent withdrawn while a member: remove",
      memberships: [member("coh_power", ALICE, true)],
      synced: [told("coh_power", ALICE, true)],
      consent: { advertising: false },
      expected: {
        changes: [{
          route: POWER,
          identifier: ALICE,
          name: "Power users",
          op: "remove",
          cause: "consent withdrawn (advertising)"
        }],
        notes: []
      }
    },
    {
      scenario: "consent re-granted while a member (removed on withdrawal): add",
      memberships: [member("coh_power", ALICE, true)],
      synced: [told("coh_power", ALICE, false)],
      consent: { advertising: true },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "Power users", op: "add", cause: "joined" }],
        notes: []
      }
    },
    {
      scenario: "told in, no membership row any more (erased at the source): remove, named by the audience key",
      memberships: [],
      synced: [told("coh_power", ALICE, true)],
      consent: { advertising: true },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "coh_power", op: "remove", cause: "left" }],
        notes: []
      }
    },
    {
      scenario: "membership of an audience not routed here: ignored",
      memberships: [member("coh_other", ALICE, true, "Other")],
      synced: [told("coh_other", BOB, true)],
      consent: { advertising: true },
      expected: { changes: [], notes: [] }
    },
    {
      scenario: "`only` restricts the plan to the event's audience",
      routes: [POWER, CHURN],
      only: "coh_churn",
      memberships: [member("coh_power", ALICE, true), member("coh_churn", ALICE, true, "Churn risk")],
      synced: [],
      consent: { advertising: true },
      expected: {
        changes: [{ route: CHURN, identifier: ALICE, name: "Churn risk", op: "add", cause: "joined" }],
        notes: []
      }
    },
    {
      scenario: "`only` naming an audience not routed here: nothing",
      routes: [POWER],
      only: "coh_churn",
      memberships: [member("coh_power", ALICE, true), member("coh_churn", ALICE, true, "Churn risk")],
      synced: [],
      consent: { advertising: true },
      expected: { changes: [], notes: [] }
    },
    {
      scenario: "several routes (a consent update): each audience by its own purposes",
      routes: [POWER, CHURN, CRM],
      memberships: [
        member("coh_power", ALICE, true),
        member("coh_churn", ALICE, false, "Churn risk"),
        member("coh_crm", ALICE, true, "CRM sync")
      ],
      synced: [told("coh_power", ALICE, true), told("coh_churn", ALICE, true)],
      consent: { advertising: false, crm: true },
      expected: {
        changes: [
          {
            route: POWER,
            identifier: ALICE,
            name: "Power users",
            op: "remove",
            cause: "consent withdrawn (advertising)"
          },
          { route: CHURN, identifier: ALICE, name: "Churn risk", op: "remove", cause: "left" },
          { route: CRM, identifier: ALICE, name: "CRM sync", op: "add", cause: "joined" }
        ],
        notes: []
      }
    },
    {
      scenario: "several identifiers of one person: each planned on its own",
      routes: [POWER],
      memberships: [member("coh_power", ALICE, true), member("coh_power", BOB, false)],
      synced: [told("coh_power", BOB, true)],
      consent: { advertising: true },
      expected: {
        changes: [
          { route: POWER, identifier: ALICE, name: "Power users", op: "add", cause: "joined" },
          { route: POWER, identifier: BOB, name: "Power users", op: "remove", cause: "left" }
        ],
        notes: []
      }
    },
    {
      scenario: "several routes, mixed: a change, a consent note and a duplicate",
      routes: [POWER, CRM, CHURN],
      memberships: [
        member("coh_power", ALICE, true),
        member("coh_crm", ALICE, true, "CRM sync"),
        member("coh_churn", ALICE, true, "Churn risk")
      ],
      synced: [told("coh_churn", ALICE, true)],
      consent: { advertising: true },
      expected: {
        changes: [{ route: POWER, identifier: ALICE, name: "Power users", op: "add", cause: "joined" }],
        notes: [
          {
            reason: "consent",
            purpose: "crm",
            detail: "user:u_alice is in coh_crm but not added to meta: crm not granted (built-in default)"
          },
          { reason: "duplicate", detail: "user:u_alice is already in coh_churn at meta" }
        ]
      }
    }
  ]

  for (const c of cases) {
    it(c.scenario, () => {
      const p = plan({
        destination: "meta",
        routes: c.routes ?? [POWER],
        ...(c.only !== undefined ? { only: c.only } : {}),
        memberships: c.memberships,
        synced: c.synced,
        grant: grantOf(c.consent)
      })
      assert.deepStrictEqual(p, c.expected)
    })
  }

  it("a grant without a purpose (a custom grant) leaves the purpose out of the cause and the note", () => {
    const denied = (): Grant => ({ granted: false, detail: "paused by the operator" })
    const withdrawn = plan({
      destination: "meta",
      routes: [POWER],
      memberships: [member("coh_power", ALICE, true)],
      synced: [told("coh_power", ALICE, true)],
      grant: denied
    })
    assert.deepStrictEqual(withdrawn.changes.map((c) => [c.op, c.cause]), [["remove", "consent withdrawn"]])
    const never = plan({
      destination: "meta",
      routes: [POWER],
      memberships: [member("coh_power", ALICE, true)],
      synced: [],
      grant: denied
    })
    assert.deepStrictEqual(never, {
      changes: [],
      notes: [{
        reason: "consent",
        detail: "user:u_alice is in coh_power but not added to meta: paused by the operator"
      }]
    })
  })

  // -------------------------------------------------------------------------------------------------------------------
  // Property: the plan is exactly the difference between desired and told.
  // -------------------------------------------------------------------------------------------------------------------

  const PURPOSES = ["analytics", "advertising", "crm"] as const
  const KEYS = ["coh_power", "coh_churn", "coh_crm", "coh_other"] as const
  const IDS = ["user:u_1", "user:u_2", "user:u_3", "email:9f86d081"] as const
  const pairKey = (r: { audience_key: string; identifier: string }) => `${r.audience_key}\u0000${r.identifier}`

  const world = fc.record({
    // Each destination has at most one route per audience key (the config refuses duplicate keys).
    routes: fc.subarray(["coh_power", "coh_churn", "coh_crm"]).chain((keys) =>
      fc.tuple(...keys.map((key) =>
        fc.subarray([...PURPOSES]).map((purposes): RoutedAudience => ({
          key,
          audienceId: `aud_${key}`,
          purposes
        }))
      ))
    ),
    // (audience, identifier) is the primary key of both tables.
    memberships: fc.uniqueArray(
      fc.record({
        audience_key: fc.constantFrom(...KEYS),
        identifier: fc.constantFrom(...IDS),
        audience_name: fc.constantFrom("Power users", "Churn risk"),
        member: fc.boolean()
      }),
      { selector: pairKey, maxLength: 12 }
    ),
    synced: fc.uniqueArray(
      fc.record({
        audience_key: fc.constantFrom(...KEYS),
        identifier: fc.constantFrom(...IDS),
        member: fc.boolean()
      }),
      { selector: pairKey, maxLength: 12 }
    ),
    // A purpose without a choice falls back to the built-in default.
    consent: fc.dictionary(fc.constantFrom(...PURPOSES), fc.boolean())
  })

  it.prop("applying the plan makes the destination equal to the desired state; planning again changes nothing", {
    w: world
  }, ({ w }) => {
    const grant = grantOf(w.consent)
    const p = plan({ destination: "meta", routes: w.routes, memberships: w.memberships, synced: w.synced, grant })

    // What the destination holds after the changes are accepted (delivery upserts tl_audience_sync per change).
    const after = new Map<string, Synced>(w.synced.map((s) => [pairKey(s), s]))
    for (const c of p.changes) {
      const k = pairKey({ audience_key: c.route.key, identifier: c.identifier })
      const before = after.get(k)?.member ?? false
      // An add only for what is not in, a remove only for what was told in.
      assert.strictEqual(before, c.op === "remove", `${c.op} ${k} when told ${before}`)
      after.set(k, { audience_key: c.route.key, identifier: c.identifier, member: c.op === "add" })
    }
    assert.strictEqual(new Set(p.changes.map((c) => `${c.route.key}\u0000${c.identifier}`)).size, p.changes.length)

    // Desired: for every routed pair known from either table, member now AND the route's purposes granted now.
    let pairs = 0
    for (const r of w.routes) {
      const ids = new Set([
        ...w.memberships.filter((m) => m.audience_key === r.key).map((m) => m.identifier),
        ...w.synced.filter((s) => s.audience_key === r.key).map((s) => s.identifier)
      ])
      for (const identifier of ids) {
        pairs++
        const m = w.memberships.find((x) => x.audience_key === r.key && x.identifier === identifier)
        const desired = (m?.member ?? false) && grant(r.purposes).granted
        assert.strictEqual(
          after.get(pairKey({ audience_key: r.key, identifier }))?.member ?? false,
          desired,
          `${r.key} ${identifier}`
        )
      }
    }
    // Every pair gets exactly one change or one note.
    assert.strictEqual(p.changes.length + p.notes.length, pairs)
    // Pairs of audiences not routed here are never touched.
    const routed = new Set(w.routes.map((r) => r.key))
    for (const s of w.synced.filter((x) => !routed.has(x.audience_key))) {
      assert.deepStrictEqual(after.get(pairKey(s)), s)
    }

    // Idempotence: a retried webhook or a replay after the changes went out sends nothing.
    const again = plan({
      destination: "meta",
      routes: w.routes,
      memberships: w.memberships,
      synced: [...after.values()],
      grant
    })
    assert.deepStrictEqual(again.changes, [])
    assert.strictEqual(again.notes.length, pairs)

    // `only` is the same plan restricted to one audience.
    for (const r of w.routes) {
      const one = plan({
        destination: "meta",
        routes: w.routes,
        only: r.key,
        memberships: w.memberships,
        synced: w.synced,
        grant
      })
      assert.deepStrictEqual(one.changes, p.changes.filter((c) => c.route.key === r.key))
    }
  }, { fastCheck: { numRuns: 500 } })
})

describe("Audiences.summarizeRemovals (the answer of an erasure's removals at one destination)", () => {
  const removed = { audienceKey: "coh_power", audienceId: "23850000000000001", identifier: "user:usr_erin" } as const
  const cases: ReadonlyArray<{
    readonly scenario: string
    readonly removals: Parameters<typeof summarizeRemovals>[1]
    readonly expected: ReturnType<typeof summarizeRemovals>
  }> = [
    {
      scenario: "every removal accepted",
      removals: [{ ...removed, result: "removed" }, {
        ...removed,
        audienceKey: "coh_churn",
        audienceId: "23850000000000002",
        result: "removed"
      }],
      expected: {
        outcome: "accepted",
        detail: "removed user:usr_erin from coh_power (23850000000000001); " +
          "removed user:usr_erin from coh_churn (23850000000000002)"
      }
    },
    {
      scenario: "one not reached: failed (retried by the next DELETE), whatever else happened",
      removals: [
        { ...removed, result: "removed" },
        { ...removed, audienceKey: "coh_churn", audienceId: "23850000000000002", result: "failed", reason: "503" },
        { ...removed, audienceKey: "coh_gone", audienceId: undefined, result: "rejected", reason: "not routed" }
      ],
      expected: {
        outcome: "failed",
        detail: "removed user:usr_erin from coh_power (23850000000000001); " +
          "not yet removed user:usr_erin from coh_churn (23850000000000002): 503; " +
          "not removed user:usr_erin from coh_gone: not routed; " +
          "DELETE the person again to retry (with their hashed identifiers only)"
      }
    },
    {
      scenario: "one refused, none failed: rejected, remove by hand",
      removals: [{ ...removed, result: "rejected", reason: "invalid: no email" }],
      expected: {
        outcome: "rejected",
        detail: "not removed user:usr_erin from coh_power (23850000000000001): invalid: no email; " +
          "remove them from meta by hand"
      }
    }
  ]
  for (const c of cases) {
    it(c.scenario, () => assert.deepStrictEqual(summarizeRemovals("meta", c.removals), c.expected))
  }
})
