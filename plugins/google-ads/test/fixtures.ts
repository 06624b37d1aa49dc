/** Builders shared by the Google Data Manager tests. */
import type { Contract, Destination } from "@tracklayer/core"
import { Either, Schema } from "effect"
import { GoogleAds } from "../src/index.js"

/** 2026-04-24T08:00:00Z */
export const T0 = 1777017600000
export const DAY = 86_400_000

/** Credentials used by tests that never reach a token endpoint. */
export const TEST_SECRETS = { clientSecret: "test-client-secret-0001", refreshToken: "1//test-refresh-token-0001" }

export interface EventInput {
  readonly name?: string
  readonly eventId?: string
  readonly dedupKey?: string
  readonly timestamp?: number
  readonly receivedAt?: number
  readonly user_id?: string
  readonly identity?: Partial<Destination.Identity>
  readonly user?: Contract.CanonicalEvent["user"]
  readonly properties?: Record<string, unknown>
  readonly context?: Contract.CanonicalEvent["context"]
  readonly consent?: Record<string, boolean>
  readonly adjustment?: Destination.DeliveryEvent["adjustment"]
}

/** A stored event as a destination sees it. */
export const deliveryEvent = (input: EventInput = {}): Destination.DeliveryEvent => {
  const name = input.name ?? "purchase"
  const eventId = input.eventId ?? "evt_5c1f0e"
  const timestamp = input.timestamp ?? T0
  return {
    position: "1",
    eventId,
    name,
    dedupKey: input.dedupKey ?? eventId,
    timestamp,
    receivedAt: input.receivedAt ?? timestamp + 1000,
    event: {
      event_id: eventId,
      event: name,
      timestamp,
      ...(input.user_id !== undefined ? { user_id: input.user_id } : {}),
      ...(input.user !== undefined ? { user: input.user } : {}),
      ...(input.properties !== undefined ? { properties: input.properties } : {}),
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
    },
    ...(input.consent !== undefined ? { consent: input.consent } : {}),
    ...(input.adjustment !== undefined ? { adjustment: input.adjustment } : {})
  }
}

/** The canonical vocabulary mapped to conversion actions (as in the docs' example). */
export const CONVERSION_ACTIONS = {
  purchase: "7000000001",
  sign_up: "7000000002",
  start_trial: "7000000003",
  qualified_lead: "7000000004",
  subscription_renewed: "7000000005"
}

/** Decoded settings (defaults filled). */
export const settings = (encoded: Record<string, unknown> = {}): GoogleAds.Settings =>
  Schema.decodeUnknownSync(GoogleAds.Settings)({
    operatingAccountId: "123-456-7890",
    conversionActions: CONVERSION_ACTIONS,
    clientId: "test-client-id.apps.googleusercontent.com",
    ...TEST_SECRETS,
    ...encoded
  })

/** Transforms events that must be valid into prepared batch entries. */
export const prepare = (
  events: ReadonlyArray<Destination.DeliveryEvent>,
  s: GoogleAds.Settings
): ReadonlyArray<Destination.Prepared<GoogleAds.Payload>> =>
  events.map((event) => ({ event, payload: Either.getOrThrow(GoogleAds.transform(event, s)) }))

/** Prepared entries from raw wire events (to send what `transform` would never produce). */
export const preparedRaw = (
  events: ReadonlyArray<Record<string, unknown>>,
  productDestinationId = "7000000001"
): ReadonlyArray<Destination.Prepared<GoogleAds.Payload>> =>
  events.map((event, i) => ({
    event: deliveryEvent({ eventId: `evt_${i}` }),
    payload: { productDestinationId, event: event as unknown as GoogleAds.DataManagerEvent }
  }))

/** A minimal valid wire event (gclid only). */
export const wire = (i: number, overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  transactionId: `ord_${i}`,
  eventTimestamp: new Date(T0 + i * 1000).toISOString(),
  eventSource: "WEB",
  conversionValue: 10 + i,
  currency: "USD",
  adIdentifiers: { gclid: `gclid-${i}` },
  consent: { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_GRANTED" },
  ...overrides
})

/** Hashes computed with `printf '%s' VALUE | sha256sum` (never by the code under test). */
export const SHA = {
  /** DESTINATIONS.md Google vector. */
  "cloudysanfrancisco@gmail.com": "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4",
  /** DESTINATIONS.md Google vector. */
  "+18005550100": "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30",
  /** The generic (trim + lowercase) hash of a dotted Gmail address: what Google must NOT receive. */
  "cloudy.sanfrancisco@gmail.com": "525044e7c292a5cbf3fd2c045340840106103b3f6a95524b7b81343b16e95d86",
  "cloudy.sanfrancisco+promo@gmail.com": "8ae87928b9192a8dbceba40517087f81983cbf2e7b08eaf59dc64ea73cdda287",
  "jane.doe@example.com": "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
  "jdoe@googlemail.com": "e9676b23c1c188a4f2eed3c1cb325435d739786b947acf91fc1812a01570292f",
  "ops@acme-corp.example": "f9195939ebd39641ef6268f41a0b70b6ec07887ab85d30f7aa34d8c4ad3859cb",
  "+4915123456789": "663a4322addcdcc2be9435bfd2505066dc1048b89d33e48f363119f18bdd71e8",
  /** Meta-style phone digest (no `+`): Google must not receive it. */
  "18005550100": "92cfdc5fbcd4a20fbe5d3857af6c1aba31762105bba7f21a17155e920653046c",
  jane: "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2",
  doe: "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f",
  "user0@example.com": "9551f6ff6935f400d1422e75827ee012baad045daa3b733e3369fef22b0c9b4e",
  "user9@example.com": "b1e700bec7b4c7c386a589aa095a87af1792fe4b7b95c011e52e6f73327b098e"
} as const

export const GRANTED = { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_GRANTED" } as const
