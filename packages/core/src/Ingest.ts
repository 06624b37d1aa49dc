/**
 * Ingest: validates a batch of wire events one by one, assigns their keys and appends the valid ones durably.
 * One bad event never fails the batch: it is `rejected` with its errors and the rest is stored.
 */
import type { SqlError } from "@effect/sql"
import { Context, Effect, Either, Layer } from "effect"
import { createHash, randomUUID } from "node:crypto"
import { type CanonicalEvent, decodeConsentUpdate, decodeEvent, type EventResult, type FieldError } from "./Contract.js"
import { EventStore, type NewEvent } from "./EventStore.js"
import { TrackLayerConfig } from "./TrackLayerConfig.js"
import { businessKeyOf, decodeProperties } from "./Vocabulary.js"

/** The primary identifier of an event, fixed when it is appended; delivery work is partitioned by its hash. */
export const personKeyOf = (e: CanonicalEvent): string => {
  if (e.user_id !== undefined) return `user:${e.user_id}`
  if (e.device_id !== undefined) return `device:${e.device_id}`
  const email = e.user?.email_sha256 ??
    (e.user?.email !== undefined ? sha256(e.user.email.trim().toLowerCase()) : undefined)
  if (email !== undefined) return `email:${email}`
  const phone = e.user?.phone_sha256 ??
    (e.user?.phone !== undefined ? sha256(e.user.phone.replace(/\D/g, "")) : undefined)
  return `phone:${phone}`
}

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

/** A stable 31-bit hash of the person key (first four bytes of its SHA-256). */
export const partitionKeyOf = (personKey: string): number =>
  createHash("sha256").update(personKey, "utf8").digest().readUInt32BE(0) >>> 1

/** Per-update result of `POST /v1/consent`. */
export interface ConsentResult {
  readonly update_id: string | null
  readonly status: "accepted" | "duplicate" | "rejected"
  readonly errors?: ReadonlyArray<FieldError>
}

/** The ingest service. */
export class Ingest extends Context.Tag("@tracklayer/core/Ingest")<Ingest, {
  /** Validates and stores a batch; one result per input, in order. Fails only if the store fails. */
  readonly ingest: (events: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<EventResult>, SqlError.SqlError>
  /** Validates and stores consent updates (`POST /v1/consent`); one result per input, in order. */
  readonly consent: (
    updates: ReadonlyArray<unknown>
  ) => Effect.Effect<ReadonlyArray<ConsentResult>, SqlError.SqlError>
}>() {}

const eventIdOf = (input: unknown): string | null =>
  typeof input === "object" && input !== null && typeof (input as { event_id?: unknown }).event_id === "string"
    ? (input as { event_id: string }).event_id
    : null

/** Builds ingest on the configured vocabulary and the store. */
export const make = Effect.gen(function*() {
  const config = yield* TrackLayerConfig
  const store = yield* EventStore
  const allowed = Object.keys(config.vocabulary).sort().join(", ")

  const validate = (input: unknown, now: number): Either.Either<NewEvent, ReadonlyArray<FieldError>> =>
    Either.flatMap(decodeEvent(input, now), (event) => {
      const definition = Object.hasOwn(config.vocabulary, event.event) ? config.vocabulary[event.event] : undefined
      if (definition === undefined) {
        if (config.unknownEvents === "reject") {
          return Either.left([{
            path: "event",
            message: `"${event.event}" is not in the vocabulary; allowed: ${allowed}`
          }])
        }
        return Either.right(toNew(event, false, undefined))
      }
      return Either.map(decodeProperties(definition, event.properties), (properties) => {
        const normalised: CanonicalEvent = { ...event, properties }
        return toNew(normalised, true, businessKeyOf(event.event, definition, properties))
      })
    })

  const toNew = (event: CanonicalEvent, routable: boolean, businessKey: string | undefined): NewEvent => {
    const personKey = personKeyOf(event)
    return {
      eventId: event.event_id,
      name: event.event,
      routable,
      personKey,
      partitionKey: partitionKeyOf(personKey),
      dedupKey: businessKey ?? event.event_id,
      ...(businessKey !== undefined ? { businessKey } : {}),
      event
    }
  }

  const ingest = Effect.fn("Ingest.ingest")(function*(inputs: ReadonlyArray<unknown>) {
    const now = Date.now()
    const checked = inputs.map((input) => validate(input, now))
    // The first occurrence of an event id in a batch is stored; repeats in the same batch are duplicates.
    const firstIndex = new Map<string, number>()
    const toAppend: Array<NewEvent> = []
    checked.forEach((c, i) => {
      if (Either.isRight(c) && !firstIndex.has(c.right.eventId)) {
        firstIndex.set(c.right.eventId, i)
        toAppend.push(c.right)
      }
    })
    const inserted = yield* store.append(toAppend)
    return checked.map((c, i): EventResult => {
      if (Either.isLeft(c)) return { event_id: eventIdOf(inputs[i]), status: "rejected", errors: c.left }
      const id = c.right.eventId
      return { event_id: id, status: firstIndex.get(id) === i && inserted.has(id) ? "accepted" : "duplicate" }
    })
  })

  const consent = Effect.fn("Ingest.consent")(function*(inputs: ReadonlyArray<unknown>) {
    const now = Date.now()
    const checked = inputs.map((input) =>
      decodeConsentUpdate(input, now, config.consent.purposes, () => `cu_${randomUUID()}`)
    )
    const firstIndex = new Map<string, number>()
    const toAppend: Array<CanonicalEvent> = []
    checked.forEach((c, i) => {
      if (Either.isRight(c) && !firstIndex.has(c.right.event_id)) {
        firstIndex.set(c.right.event_id, i)
        toAppend.push(c.right)
      }
    })
    const inserted = yield* store.appendConsent(toAppend)
    return checked.map((c, i): ConsentResult => {
      if (Either.isLeft(c)) {
        const raw = inputs[i] as { update_id?: unknown } | null
        return {
          update_id: typeof raw === "object" && raw !== null && typeof raw.update_id === "string"
            ? raw.update_id
            : null,
          status: "rejected",
          errors: c.left
        }
      }
      const id = c.right.event_id
      return { update_id: id, status: firstIndex.get(id) === i && inserted.has(id) ? "accepted" : "duplicate" }
    })
  })

  return Ingest.of({ ingest, consent })
})

/** Ingest on the configured store. */
export const layer = Layer.effect(Ingest, make)
