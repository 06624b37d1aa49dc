/**
 * The audience half of delivery (docs/cohort-exchange.md). Inbound audience events and consent updates are
 * reconciled per destination: what the destination should hold for a member (in the audience now, and the
 * audience's consent purposes granted now) is compared with what TrackLayer last told it (`tl_audience_sync`), and
 * only the difference is sent. A retried webhook, a replay of history, a leave after an enter that never went out
 * (no consent), a consent withdrawal and a consent re-grant all fall out of that one rule.
 */
import type { AudienceRoute, ResolvedConfig } from "./TrackLayerConfig.js"

/** One audience as routed to one destination. */
export interface RoutedAudience {
  readonly key: string
  /** The destination's audience id. */
  readonly audienceId: string
  readonly purposes: ReadonlyArray<string>
}

/** The audiences routed to destination `id` (whose own purposes are `purposes`). */
export const routesFor = (
  audiences: ResolvedConfig["audiences"],
  id: string,
  purposes: ReadonlyArray<string>
): ReadonlyArray<RoutedAudience> =>
  audiences.flatMap((a: AudienceRoute) => {
    const audienceId = a.destinations[id]
    return audienceId === undefined ? [] : [{ key: a.key, audienceId, purposes: a.purposes ?? purposes }]
  })

/** A membership row of `tl_audience_members`. */
export interface Membership {
  readonly audience_key: string
  readonly identifier: string
  readonly audience_name: string
  readonly member: boolean
}

/** What a destination was last told (`tl_audience_sync`). */
export interface Synced {
  readonly audience_key: string
  readonly identifier: string
  readonly member: boolean
}

/** A consent decision for a set of purposes (as `Consent.decide` returns it). */
export interface Grant {
  readonly granted: boolean
  readonly purpose?: string | undefined
  readonly detail: string
}

/** One add or remove to send. */
export interface PlannedChange {
  readonly route: RoutedAudience
  readonly identifier: string
  readonly name: string
  readonly op: "add" | "remove"
  /** Why: `joined` (a member with the purposes granted: a new member, or consent granted again), `left`, `consent withdrawn (advertising)`. */
  readonly cause: string
}

/** The changes one event calls for, and why nothing is sent for the other pairs. */
export interface Plan {
  readonly changes: ReadonlyArray<PlannedChange>
  readonly notes: ReadonlyArray<
    { readonly reason: "consent" | "duplicate"; readonly purpose?: string; readonly detail: string }
  >
}

/**
 * Plans the changes for one person at one destination (pure). `only` restricts it to one audience (an audience
 * event); a consent update looks at every routed audience the person is, or was told to be, a member of.
 */
export const plan = (input: {
  readonly destination: string
  readonly routes: ReadonlyArray<RoutedAudience>
  readonly only?: string
  readonly memberships: ReadonlyArray<Membership>
  readonly synced: ReadonlyArray<Synced>
  readonly grant: (purposes: ReadonlyArray<string>) => Grant
}): Plan => {
  const routes = input.routes.filter((r) => input.only === undefined || r.key === input.only)
  const changes: Array<PlannedChange> = []
  const notes: Array<Plan["notes"][number]> = []
  for (const route of routes) {
    const pairs = new Map<string, { name: string; member: boolean; synced: boolean }>()
    for (const m of input.memberships) {
      if (m.audience_key !== route.key) continue
      const prev = pairs.get(m.identifier)
      pairs.set(m.identifier, { name: m.audience_name, member: m.member, synced: prev?.synced ?? false })
    }
    for (const s of input.synced) {
      if (s.audience_key !== route.key) continue
      const prev = pairs.get(s.identifier)
      pairs.set(s.identifier, { name: prev?.name ?? route.key, member: prev?.member ?? false, synced: s.member })
    }
    for (const [identifier, p] of pairs) {
      const g = input.grant(route.purposes)
      const desired = p.member && g.granted
      if (desired !== p.synced) {
        changes.push({
          route,
          identifier,
          name: p.name,
          op: desired ? "add" : "remove",
          cause: desired
            ? "joined"
            : p.member
            ? `consent withdrawn${g.purpose !== undefined ? ` (${g.purpose})` : ""}`
            : "left"
        })
      } else if (p.member && !g.granted) {
        notes.push({
          reason: "consent",
          ...(g.purpose !== undefined ? { purpose: g.purpose } : {}),
          detail: `${identifier} is in ${route.key} but not added to ${input.destination}: ${g.detail}`
        })
      } else {
        notes.push({
          reason: "duplicate",
          detail: `${identifier} is already ${p.synced ? "in" : "not in"} ${route.key} at ${input.destination}`
        })
      }
    }
  }
  return { changes, notes }
}

/** What became of one audience removal sent at an erasure (docs/privacy.md#audiences). */
export interface ErasureRemoval {
  readonly audienceKey: string
  /** The destination's audience id; undefined when the audience is no longer routed there. */
  readonly audienceId: string | undefined
  readonly identifier: string
  /** `removed` the destination accepted it; `rejected` refused or not sendable (not retried); `failed` not reached. */
  readonly result: "removed" | "rejected" | "failed"
  readonly reason?: string | undefined
}

/**
 * The answer line of a destination's removals at an erasure (pure): `failed` when one was not reached (`DELETE` the
 * person again to retry it), else `rejected` when one was refused, else `accepted`; the detail names each removal.
 */
export const summarizeRemovals = (
  destination: string,
  removals: ReadonlyArray<ErasureRemoval>
): { readonly outcome: "accepted" | "rejected" | "failed"; readonly detail: string } => {
  const where = (r: ErasureRemoval) => `${r.audienceKey}${r.audienceId !== undefined ? ` (${r.audienceId})` : ""}`
  const parts = removals.map((r) =>
    r.result === "removed"
      ? `removed ${r.identifier} from ${where(r)}`
      : `${r.result === "failed" ? "not yet removed" : "not removed"} ${r.identifier} from ${where(r)}: ${
        r.reason ?? "no reason given"
      }`
  )
  const outcome = removals.some((r) => r.result === "failed")
    ? "failed" as const
    : removals.some((r) => r.result === "rejected")
    ? "rejected" as const
    : "accepted" as const
  const next = outcome === "failed"
    ? `; DELETE the person again to retry (with their hashed identifiers only)`
    : outcome === "rejected"
    ? `; remove them from ${destination} by hand`
    : ""
  return { outcome, detail: parts.join("; ") + next }
}
