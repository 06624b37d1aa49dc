/**
 * Preview: the exact payload a destination would receive for each canonical event, or why it would not receive it,
 * without storing or sending anything. Each event is taken on its own: identity is the event's own identifiers and
 * consent its inline consent (with the policy's defaults), because nothing is looked up in the store.
 */
import { Effect, Either } from "effect"
import { decodeEvent, type FieldError } from "./Contract.js"
import { effectiveConsent, reasonText, type ResolvedDestination, routeDecision, toDeliveryEvent } from "./Delivery.js"
import type { StoredEvent } from "./EventStore.js"
import { partitionKeyOf, personKeyOf } from "./Ingest.js"
import type { ResolvedConfig } from "./TrackLayerConfig.js"
import { businessKeyOf, decodeProperties } from "./Vocabulary.js"

/** What one input event would do at one destination. */
export type PreviewResult =
  | { readonly index: number; readonly event_id: string | null; readonly status: "payload"; readonly payload: unknown }
  | { readonly index: number; readonly event_id: string | null; readonly status: "dropped"; readonly reason: string }
  | {
    readonly index: number
    readonly event_id: string | null
    readonly status: "rejected"
    readonly errors: ReadonlyArray<FieldError>
  }

/** Previews `inputs` (wire events) for one destination with validated settings. */
export const preview = (
  config: ResolvedConfig,
  destination: ResolvedDestination,
  inputs: ReadonlyArray<unknown>,
  now: number = Date.now()
): ReadonlyArray<PreviewResult> =>
  inputs.map((input, index): PreviewResult => {
    const raw = input as { event_id?: unknown } | null
    const eventId = typeof raw === "object" && raw !== null && typeof raw.event_id === "string" ? raw.event_id : null
    const decoded = decodeEvent(input, now)
    if (Either.isLeft(decoded)) return { index, event_id: eventId, status: "rejected", errors: decoded.left }
    const event = decoded.right
    const definition = Object.hasOwn(config.vocabulary, event.event) ? config.vocabulary[event.event] : undefined
    if (definition === undefined && config.unknownEvents === "reject") {
      return {
        index,
        event_id: eventId,
        status: "rejected",
        errors: [{ path: "event", message: `"${event.event}" is not in the vocabulary` }]
      }
    }
    const properties = definition
      ? decodeProperties(definition, event.properties)
      : Either.right(event.properties ?? {})
    if (Either.isLeft(properties)) return { index, event_id: eventId, status: "rejected", errors: properties.left }
    const normalised = { ...event, properties: properties.right }
    const personKey = personKeyOf(normalised)
    const stored: StoredEvent = {
      kind: "track",
      tx: "0",
      position: String(index + 1),
      eventId: event.event_id,
      name: event.event,
      routable: definition !== undefined,
      partitionKey: partitionKeyOf(personKey),
      personKey,
      dedupKey: businessKeyOf(event.event, definition, properties.right) ?? event.event_id,
      duplicateOf: null,
      adjustment: null,
      occurredAt: new Date(event.timestamp),
      receivedAt: new Date(now),
      contractVersion: 1,
      event: normalised
    }
    const decision = routeDecision(destination, stored, now, config.consent, [])
    if (decision) {
      return { index, event_id: eventId, status: "dropped", reason: reasonText(decision) }
    }
    const de = { ...toDeliveryEvent(stored), consent: effectiveConsent(config.consent, stored, []) }
    const t = Either.try(() => destination.instance.plugin.transform(de, destination.settings)).pipe(
      Either.flatMap((x) => x)
    )
    if (Either.isLeft(t)) {
      const e = t.left as { reason?: string; detail?: string }
      return {
        index,
        event_id: eventId,
        status: "dropped",
        reason: e.reason !== undefined ? `${e.reason}: ${e.detail}` : `invalid: transform failed: ${String(t.left)}`
      }
    }
    return { index, event_id: eventId, status: "payload", payload: t.right }
  })

/** Effect wrapper (for HTTP handlers). */
export const previewEffect = (
  config: ResolvedConfig,
  destination: ResolvedDestination,
  inputs: ReadonlyArray<unknown>
) => Effect.sync(() => preview(config, destination, inputs))
