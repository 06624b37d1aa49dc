/** Routing decisions: the first reason an event is not sent, in the documented order. */
import { Consent, Delivery, Destination, type EventStore } from "@tracklayer/core"
import { Duration, Effect, Either, Schema } from "effect"
import { describe, expect, it } from "vitest"

const plugin: Destination.DestinationPlugin = {
  name: "@example/plugin-ads",
  version: "1.0.0",
  pluginApi: "^1.0.0",
  settings: Schema.Struct({}),
  purposes: ["advertising"],
  limits: { maxEventsPerRequest: 10, maxBytesPerRequest: 10_000 },
  window: Duration.days(7),
  transform: () => Either.right({}),
  send: () => Effect.succeed([])
}
const d = (over: Partial<Destination.DestinationInstance> = {}): Delivery.ResolvedDestination => ({
  instance: { id: "ads", plugin, settings: null as never, ...over },
  settings: {}
})
const NOW = Date.UTC(2026, 3, 25)
const stored = (
  over: Partial<EventStore.StoredEvent> = {},
  event: Record<string, unknown> = {}
): EventStore.StoredEvent => ({
  kind: "track",
  tx: "1",
  position: "1",
  eventId: "e1",
  name: "purchase",
  routable: true,
  partitionKey: 1,
  personKey: "user:u1",
  dedupKey: "ord_1",
  duplicateOf: null,
  adjustment: null,
  occurredAt: new Date(NOW - 86_400_000),
  receivedAt: new Date(NOW),
  contractVersion: 1,
  event: {
    event_id: "e1",
    event: "purchase",
    timestamp: NOW - 86_400_000,
    user_id: "u1",
    consent: { advertising: true },
    properties: { value: 120, currency: "USD", order_id: "ord_1" },
    ...event
  } as never,
  ...over
})

describe("routeDecision", () => {
  it("gives the first reason in the order: not mapped, consent, duplicate, window, (then invalid from transform)", () => {
    const everything = stored(
      {
        routable: false,
        duplicateOf: "e0",
        event: { ...stored().event, timestamp: NOW - 30 * 86_400_000, consent: { advertising: false } }
      }
    )
    expect(Delivery.routeDecision(d(), everything, NOW)?.reason).toBe("not_mapped")
    expect(Delivery.routeDecision(d(), { ...everything, routable: true }, NOW)).toEqual({
      reason: "consent",
      purpose: "advertising",
      detail: "advertising denied at event time (inline consent)"
    })
    const granted = { ...everything, routable: true, event: { ...everything.event, consent: { advertising: true } } }
    expect(Delivery.routeDecision(d(), granted, NOW)).toEqual({ reason: "duplicate", detail: "duplicate of e0" })
    expect(Delivery.routeDecision(d(), { ...granted, duplicateOf: null }, NOW)).toEqual({
      reason: "window",
      detail: "event is 30.0 days old; ads accepts events up to 7d old"
    })
    expect(Delivery.routeDecision(d(), stored(), NOW)).toBeUndefined()
    expect(Delivery.routeDecision(d({ events: ["sign_up"] }), stored(), NOW)).toEqual({
      reason: "not_mapped",
      detail: "\"purchase\" is not among the events routed to ads"
    })
  })

  it("drops an adjustment for a destination that does not take adjustments, naming both amounts", () => {
    const adj = stored({ adjustment: { of: "e0", previousValue: 100, previousCurrency: "USD" } })
    expect(Delivery.routeDecision(d(), adj, NOW)).toEqual({
      reason: "duplicate",
      detail: "adjustment of e0 (100 USD → 120 USD); ads does not take adjustments"
    })
    expect(
      Delivery.routeDecision(
        { ...d(), instance: { ...d().instance, plugin: { ...plugin, supportsAdjustments: true } } },
        adj,
        NOW
      )
    )
      .toBeUndefined()
  })

  it("missing consent is denied for advertising by default; an operator default can grant it", () => {
    const noConsent = stored({}, { consent: undefined })
    expect(Delivery.routeDecision(d(), noConsent, NOW)).toEqual({
      reason: "consent",
      purpose: "advertising",
      detail: "advertising not granted (built-in default)"
    })
    const policy = Either.getOrThrow(Consent.resolvePolicy({ defaults: { advertising: "granted" } }))
    expect(Delivery.routeDecision(d(), noConsent, NOW, policy)).toBeUndefined()
  })
})
