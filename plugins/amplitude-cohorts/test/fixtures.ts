/** Builders shared by the Amplitude cohorts tests. */
import type * as Source from "@tracklayer/core/Source"
import { Schema } from "effect"
import { AmplitudeCohorts } from "../src/index.js"

/** The shared value tests configure (obviously fake; dots keep it from looking like a real token). */
export const SHARED = "fake.cohort.hook.value.01"

/** 2026-04-24T08:00:00Z */
export const T0 = 1777017600000

/** Decoded settings (defaults filled). */
export const settings = (encoded: Record<string, unknown> = {}): AmplitudeCohorts.Settings =>
  Schema.decodeUnknownSync(AmplitudeCohorts.Settings)({ secret: SHARED, ...encoded })

/** A request carrying the shared value in the default header. */
export const request = (
  body: unknown,
  headers: Record<string, string | undefined> = { "x-tracklayer-secret": SHARED }
): Source.SourceRequest => ({
  headers: { "content-type": "application/json", "user-agent": "Amplitude/Webhook/1.0", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body)
})

/** The Cohort Webhooks example payload from Amplitude's documentation. */
export const DOC_WEBHOOK = {
  cohort_name: "My Test Cohort",
  cohort_id: "7khm89cz",
  in_cohort: true,
  computed_time: "1692206763",
  message_id: "9baaa88f-9d46-4ee5-a946-be0c6aea0046::enter::0",
  users: [
    { user_id: "user_one@example.com" },
    { user_id: "user_two@example.com" },
    { user_id: "user_three@example.com" }
  ]
}
