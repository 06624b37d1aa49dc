/** Builders shared by the LinkedIn tests. */
import type { Contract, Destination } from "@tracklayer/core"
import { Either, Schema } from "effect"
import { LinkedIn } from "../src/index.js"

/** 2026-04-24T08:00:00Z (transform tests; send tests use times relative to now: the sandbox enforces 90 days). */
export const T0 = 1777017600000

/** The fixture person's email, its normalised form and SHA-256 (`printf '%s' ops@acme-corp.example | sha256sum`). */
export const OPS_EMAIL = "ops@acme-corp.example"
export const OPS_EMAIL_SHA256 = "f9195939ebd39641ef6268f41a0b70b6ec07887ab85d30f7aa34d8c4ad3859cb"
/** `printf '%s' second@acme-corp.example | sha256sum` */
export const SECOND_EMAIL_SHA256 = "10be093f560d8adfd0d295dc458898871eb0a0b90ab50b56afb39a795f265da9"
/** The fixture person's LinkedIn first-party ads tracking UUID. */
export const LI_FAT_ID = "a1b2c3d4-e5f6-7890-abcd-ef0123456789"

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

/** The fixture person usr_9001's qualified lead: email, li_fat_id, names, company "Acme Corp", country US. */
export const leadOf = (overrides: EventInput = {}): Destination.DeliveryEvent =>
  deliveryEvent({
    name: "qualified_lead",
    user_id: "usr_9001",
    identity: { userId: "usr_9001", emails: [OPS_EMAIL], clickIds: { li_fat_id: LI_FAT_ID } },
    user: { email: OPS_EMAIL, first_name: "Dana", last_name: "Whitfield", country: "US" },
    properties: { company: "Acme Corp" },
    ...overrides
  })

/** Conversion rules used by the tests (the sandbox's defaults). */
export const RULES = {
  purchase: "7001001",
  sign_up: "7001002",
  start_trial: "7001003",
  qualified_lead: "urn:lla:llaPartnerConversion:7001004",
  subscription_renewed: "7001005"
}

/** Decoded settings (defaults filled). */
export const settings = (encoded: Record<string, unknown> = {}): LinkedIn.Settings =>
  Schema.decodeUnknownSync(LinkedIn.Settings)({
    clientId: "test-client-id",
    clientSecret: "test-client-secret-0001",
    refreshToken: "test-refresh-token-0001",
    conversionRules: RULES,
    ...encoded
  })

/** Transforms events that must be valid into prepared batch entries. */
export const prepare = (
  events: ReadonlyArray<Destination.DeliveryEvent>,
  s: LinkedIn.Settings
): ReadonlyArray<Destination.Prepared<LinkedIn.ConversionEvent>> =>
  events.map((event) => ({ event, payload: Either.getOrThrow(LinkedIn.transform(event, s)) }))

/** Prepared entries from raw wire elements (to send what `transform` would never produce). */
export const preparedRaw = (
  payloads: ReadonlyArray<LinkedIn.ConversionEvent>
): ReadonlyArray<Destination.Prepared<LinkedIn.ConversionEvent>> =>
  payloads.map((payload, i) => ({ event: deliveryEvent({ eventId: `evt_${i}` }), payload }))

/** A minimal valid wire element happening `ageMs` before now. */
export const wire = (
  i: number,
  overrides: Partial<LinkedIn.ConversionEvent> = {},
  ageMs = 3_600_000
): LinkedIn.ConversionEvent => ({
  conversion: "urn:lla:llaPartnerConversion:7001004",
  conversionHappenedAt: Date.now() - ageMs,
  eventId: `lead_${i}`,
  user: { userIds: [{ idType: "SHA256_EMAIL", idValue: OPS_EMAIL_SHA256 }] },
  ...overrides
})
