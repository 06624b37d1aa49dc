/** Builders shared by the Amplitude tests. */
import type { Contract, Destination } from "@tracklayer/core"
import { Either, Schema } from "effect"
import { Amplitude } from "../src/index.js"

/** 2026-04-24T08:00:00Z */
export const T0 = 1777017600000

export interface EventInput {
  readonly name?: string
  readonly eventId?: string
  readonly dedupKey?: string
  readonly timestamp?: number
  readonly user_id?: string
  readonly device_id?: string
  readonly identity?: Partial<Destination.Identity>
  readonly properties?: Record<string, unknown>
  readonly user_properties?: Record<string, unknown>
  readonly context?: Contract.CanonicalEvent["context"]
}

/** A stored event as a destination sees it. */
export const deliveryEvent = (input: EventInput = {}): Destination.DeliveryEvent => {
  const name = input.name ?? "view_pricing"
  const eventId = input.eventId ?? "evt_5c1f0e"
  const timestamp = input.timestamp ?? T0
  return {
    position: "1",
    eventId,
    name,
    dedupKey: input.dedupKey ?? eventId,
    timestamp,
    receivedAt: timestamp + 1000,
    event: {
      event_id: eventId,
      event: name,
      timestamp,
      ...(input.user_id !== undefined ? { user_id: input.user_id } : {}),
      ...(input.device_id !== undefined ? { device_id: input.device_id } : {}),
      ...(input.properties !== undefined ? { properties: input.properties } : {}),
      ...(input.user_properties !== undefined ? { user_properties: input.user_properties } : {}),
      ...(input.context !== undefined ? { context: input.context } : {})
    },
    identity: {
      personKey: "person_1",
      emails: [],
      phones: [],
      emailSha256: [],
      phoneSha256: [],
      clickIds: {},
      ...input.identity
    }
  }
}

/** Decoded settings (defaults filled). */
export const settings = (encoded: Record<string, unknown> = {}): Amplitude.Settings =>
  Schema.decodeUnknownSync(Amplitude.Settings)({ apiKey: "test-api-key-0001", ...encoded })

/** Transforms events that must be valid into prepared batch entries. */
export const prepare = (
  events: ReadonlyArray<Destination.DeliveryEvent>,
  s: Amplitude.Settings
): ReadonlyArray<Destination.Prepared<Amplitude.AmplitudeEvent>> =>
  events.map((event) => ({ event, payload: Either.getOrThrow(Amplitude.transform(event, s)) }))

/** Prepared entries from raw wire payloads (to send what `transform` would never produce). */
export const preparedRaw = (
  payloads: ReadonlyArray<Amplitude.AmplitudeEvent>
): ReadonlyArray<Destination.Prepared<Amplitude.AmplitudeEvent>> =>
  payloads.map((payload, i) => ({ event: deliveryEvent({ eventId: `evt_${i}` }), payload }))

/** A minimal valid wire event. */
export const wire = (i: number, overrides: Partial<Amplitude.AmplitudeEvent> = {}): Amplitude.AmplitudeEvent => ({
  event_type: "view_pricing",
  user_id: `user_${String(i).padStart(4, "0")}`,
  time: T0 + i,
  insert_id: `ins_${i}`,
  library: "tracklayer",
  ...overrides
})
