/** Builders shared by the Meta Conversions API tests. */
import type { Contract, Destination } from "@tracklayer/core"
import { Either, Schema } from "effect"
import { MetaCapi } from "../src/index.js"

/** 2026-04-24T08:00:00Z */
export const T0 = 1777017600000

/**
 * Normalised value → SHA-256, each computed with `printf '%s' VALUE | sha256sum` (never by the code under test).
 */
export const SHA = {
  "jane.doe@example.com": "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
  "jane@work.example": "4f23f2b84498b2c7479c185576ebaf5ca01e2d97dc81d465118590dc7c84258e",
  "john_smith@gmail.com": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
  "16505551212": "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
  "4915123456789": "c0f8f0bebbbac96451ee8d8def84a02ae9e34c877775437cb9d458328315afa7",
  "mary": "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
  "valéry": "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c",
  "jane": "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2",
  "doe": "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f",
  "usr_8421": "a4466a2d7e3c8613a1e73851528ac84bab6929e6d0657ac98dbf948252c9c4e3",
  "user123": "e606e38b0d8c19b24cf0ee3808183162ea7cd63ff7912dbb22b5e803286b4446",
  "sanfrancisco": "1a6bd4d9d79dc0a79b53795c70d3349fa9e38968a3fbefbfe8783efb1d2b6aac",
  "ca": "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126",
  "tx": "1b5b9ccb3e8d006a5230de9bda23ff91edc794d4f56410560830b418528e446c",
  "94035": "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e",
  "us": "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
  "de": "959a45d44e6fcf58361ed004681556fe50129f2109e817dec098c00c9e5d2578",
  "19901231": "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83",
  "f": "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
} as const

export interface EventInput {
  readonly name?: string
  readonly eventId?: string
  readonly dedupKey?: string
  readonly timestamp?: number
  readonly user_id?: string
  readonly device_id?: string
  readonly user?: Contract.CanonicalEvent["user"]
  readonly identity?: Partial<Destination.Identity>
  readonly properties?: Record<string, unknown>
  readonly context?: Contract.CanonicalEvent["context"]
}

/** A stored event as a destination sees it. */
export const deliveryEvent = (input: EventInput = {}): Destination.DeliveryEvent => {
  const name = input.name ?? "sign_up"
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
    }
  }
}

/** The fixture person: usr_8421, Jane.Doe@Example.com. */
export const janeDoe = (input: EventInput = {}): Destination.DeliveryEvent =>
  deliveryEvent({
    user_id: "usr_8421",
    ...input,
    user: { email: "Jane.Doe@Example.com", ...input.user },
    identity: { userId: "usr_8421", emails: ["Jane.Doe@Example.com"], ...input.identity }
  })

/** Decoded settings (defaults filled). */
export const settings = (encoded: Record<string, unknown> = {}): MetaCapi.Settings =>
  Schema.decodeUnknownSync(MetaCapi.Settings)({
    pixelId: "1234567890123456",
    accessToken: "test-token-EAAB-0001",
    ...encoded
  })

/** Transforms events that must be valid into prepared batch entries. */
export const prepare = (
  events: ReadonlyArray<Destination.DeliveryEvent>,
  s: MetaCapi.Settings
): ReadonlyArray<Destination.Prepared<MetaCapi.MetaServerEvent>> =>
  events.map((event) => ({ event, payload: Either.getOrThrow(MetaCapi.transform(event, s)) }))

/** Prepared entries from raw wire payloads (to send what `transform` would never produce). */
export const preparedRaw = (
  payloads: ReadonlyArray<MetaCapi.MetaServerEvent>
): ReadonlyArray<Destination.Prepared<MetaCapi.MetaServerEvent>> =>
  payloads.map((payload, i) => ({ event: deliveryEvent({ eventId: `evt_${i}` }), payload }))

/** A minimal valid wire event at `timeMs` (epoch ms; default now). */
export const wire = (
  i: number,
  overrides: Partial<MetaCapi.MetaServerEvent> = {},
  timeMs: number = Date.now()
): MetaCapi.MetaServerEvent => ({
  event_name: "Lead",
  event_time: Math.floor(timeMs / 1000),
  event_id: `evt_${i}`,
  action_source: "system_generated",
  user_data: { em: [SHA["jane.doe@example.com"]], external_id: SHA["usr_8421"] },
  data_processing_options: [],
  ...overrides
})
