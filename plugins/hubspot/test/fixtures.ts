/** Builders shared by the HubSpot tests. */
import type { Contract, Destination } from "@tracklayer/core"
import { Either, Schema } from "effect"
import { HubSpot } from "../src/index.js"

/** 2026-04-24T08:00:00Z. */
export const T0 = 1777017600000

/** The fixture person's email (already normalised). */
export const OPS_EMAIL = "ops@acme-corp.example"
/** The sandbox's portal (Hub ID). */
export const PORTAL = "5550001"

/**
 * UUID v5 (namespace `HubSpot.EVENT_UUID_NAMESPACE`) of dedup keys, computed independently with Python:
 * `uuid.uuid5(uuid.UUID("6f1d7a4e-2b1c-4c5e-9a0f-3d8e5b7c9a12"), key)`.
 */
export const UUID_OF: Readonly<Record<string, string>> = {
  evt_lead_9001: "b7432306-acea-5b53-9526-733902a9f478",
  ord_1001: "7773a8b8-4d0b-597f-a959-66f1662bc7b3",
  "subscription_renewed:sub_77:2026-04": "dda5af00-fe9d-5505-ad98-d7cabd3a3a8d",
  evt_signup_1: "9e210afd-083e-5696-a413-58e67e4372bc",
  "évt": "8dc03689-81f9-52c7-b4fb-e51dcd82a340"
}

export interface EventInput {
  readonly name?: string
  readonly eventId?: string
  readonly dedupKey?: string
  readonly timestamp?: number
  readonly user_id?: string
  readonly identity?: Partial<Destination.Identity>
  readonly properties?: Record<string, unknown>
  readonly user_properties?: Record<string, unknown>
  readonly user?: Contract.CanonicalEvent["user"]
  readonly context?: Contract.CanonicalEvent["context"]
}

/** A stored event as a destination sees it. */
export const deliveryEvent = (input: EventInput = {}): Destination.DeliveryEvent => {
  const name = input.name ?? "qualified_lead"
  const eventId = input.eventId ?? "evt_lead_9001"
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
      ...(input.properties !== undefined ? { properties: input.properties } : {}),
      ...(input.user_properties !== undefined ? { user_properties: input.user_properties } : {}),
      ...(input.user !== undefined ? { user: input.user } : {}),
      ...(input.context !== undefined ? { context: input.context } : {})
    },
    identity: {
      personKey: "person_9001",
      emails: [],
      phones: [],
      emailSha256: [],
      phoneSha256: [],
      clickIds: {},
      ...input.identity
    }
  }
}

/** The fixture person usr_9001 (ops@acme-corp.example, plan "team", lead) and their qualified lead. */
export const leadOf = (overrides: EventInput = {}): Destination.DeliveryEvent =>
  deliveryEvent({
    name: "qualified_lead",
    user_id: "usr_9001",
    identity: {
      userId: "usr_9001",
      emails: [OPS_EMAIL],
      traits: { plan: "team", lifecycle_stage: "lead", workspace_size: 42, country: "US" }
    },
    properties: { company: "Acme Corp", value: 4800, currency: "USD" },
    ...overrides
  })

/** Decoded settings (defaults filled) with the sandbox's portal. */
export const settings = (encoded: Record<string, unknown> = {}): HubSpot.Settings =>
  Schema.decodeUnknownSync(HubSpot.Settings)({ accessToken: "pat-test", portalId: PORTAL, ...encoded })

/** Transforms events that must be valid into prepared batch entries. */
export const prepare = (
  events: ReadonlyArray<Destination.DeliveryEvent>,
  s: HubSpot.Settings
): ReadonlyArray<Destination.Prepared<HubSpot.Payload>> =>
  events.map((event) => ({ event, payload: Either.getOrThrow(HubSpot.transform(event, s)) }))

/** Prepared entries from raw payloads (to send what `transform` would never produce). */
export const preparedRaw = (
  payloads: ReadonlyArray<HubSpot.Payload>
): ReadonlyArray<Destination.Prepared<HubSpot.Payload>> =>
  payloads.map((payload, i) => ({ event: deliveryEvent({ eventId: `evt_${i}` }), payload }))

/** A valid payload for contact `i` (`c<i>@acme-corp.example`), with a qualified lead when `withEvent`. */
export const wire = (
  i: number,
  overrides: { readonly properties?: Record<string, string>; readonly event?: Partial<HubSpot.BehavioralEvent> } = {},
  withEvent = true
): HubSpot.Payload => {
  const email = `c${i}@acme-corp.example`
  return {
    contact: { id: email, idProperty: "email", properties: overrides.properties ?? { tl_plan: "team" } },
    ...(withEvent ?
      {
        event: {
          eventName: `pe${PORTAL}_qualified_lead`,
          email,
          occurredAt: new Date(Date.now() - 60_000).toISOString(),
          properties: { value: 100 },
          uuid: HubSpot.uuidV5(`lead_${i}`),
          ...overrides.event
        }
      } :
      {})
  }
}
