/**
 * The gateway's HTTP API: ingest (`POST /v1/events`), health, explain and destination status.
 * Every error is JSON `{ "error": { "code", "message" } }` with the status that says what to do about it.
 */
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import {
  Contract,
  Database,
  Delivery,
  Erasure,
  Explain,
  Identity,
  Ingest,
  Preview,
  Source,
  TrackLayerConfig
} from "@tracklayer/core"
import { Chunk, Data, Effect, Option, Stream } from "effect"
import { bearer, Keys, matches } from "./Keys.js"

/** A request the gateway refuses, with its HTTP status. */
export class HttpFailure extends Data.TaggedError("HttpFailure")<{
  readonly status: number
  readonly code: string
  readonly message: string
  readonly headers?: Record<string, string>
}> {}

const failure = (status: number, code: string, message: string, headers?: Record<string, string>) =>
  new HttpFailure(headers ? { status, code, message, headers } : { status, code, message })

const errorResponse = (f: HttpFailure) =>
  HttpServerResponse.unsafeJson({ error: { code: f.code, message: f.message } }, {
    status: f.status,
    ...(f.headers ? { headers: f.headers } : {})
  })

/** The store is unreachable: tell clients to come back rather than fail their data. */
const unavailable = () =>
  failure(503, "store_unavailable", "the event store is unavailable; retry later", { "retry-after": "1" })

const authorize = (kind: "write" | "admin") =>
  Effect.gen(function*() {
    const keys = yield* Keys
    const req = yield* HttpServerRequest.HttpServerRequest
    const token = bearer(req.headers["authorization"])
    if (Option.isNone(token)) {
      return yield* failure(401, "unauthorized", "missing `Authorization: Bearer <key>` header")
    }
    const ok = kind === "write"
      ? matches(token.value, keys.write) || matches(token.value, [keys.admin])
      : matches(token.value, [keys.admin])
    if (!ok) return yield* failure(401, "unauthorized", `unknown ${kind} key`)
  })

/** Reads the body up to `limit` bytes; a longer one is a 413 without reading the rest. */
const readBody = (limit: number, label = "1 MiB") =>
  Effect.gen(function*() {
    const req = yield* HttpServerRequest.HttpServerRequest
    const declared = req.headers["content-length"]
    if (declared !== undefined && Number(declared) > limit) {
      return yield* failure(
        413,
        "payload_too_large",
        `request body is ${declared} bytes; the limit is ${limit} bytes (${label})`
      )
    }
    const chunks = yield* req.stream.pipe(
      Stream.mapError(() => failure(400, "bad_request", "could not read the request body")),
      Stream.mapAccumEffect(0, (total, chunk: Uint8Array) =>
        total + chunk.length > limit
          ? Effect.fail(
            failure(413, "payload_too_large", `request body exceeds the limit of ${limit} bytes (${label})`)
          )
          : Effect.succeed([total + chunk.length, chunk] as const)),
      Stream.runCollect
    )
    const all = Buffer.concat(Chunk.toReadonlyArray(chunks))
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(all)
    } catch {
      return yield* failure(400, "bad_request", "request body is not valid UTF-8")
    }
  })

/** Reads and checks a `{ "<field>": [...] }` envelope, with the same limits as ingest. */
const readEnvelope = (field: "events" | "updates", max: number) =>
  Effect.gen(function*() {
    const text = yield* readBody(Contract.MAX_REQUEST_BYTES)
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch (e) {
      return yield* failure(400, "malformed_json", `request body is not valid JSON: ${(e as Error).message}`)
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return yield* failure(400, "bad_request", `request body must be a JSON object \`{ "${field}": [...] }\``)
    }
    const extra = Object.keys(body).filter((k) => k !== field)
    if (extra.length > 0) {
      return yield* failure(
        400,
        "bad_request",
        `unknown top-level field(s): ${extra.join(", ")}; the body is { "${field}": [...] }`
      )
    }
    const items = (body as Record<string, unknown>)[field]
    if (!Array.isArray(items)) return yield* failure(400, "bad_request", `\`${field}\` must be an array`)
    if (items.length === 0) return yield* failure(400, "bad_request", `\`${field}\` is empty`)
    if (items.length > max) {
      return yield* failure(
        413,
        field === "events" ? "too_many_events" : "too_many_updates",
        `${items.length} ${field} in one request; the limit is ${max}`
      )
    }
    return items as ReadonlyArray<unknown>
  })

const ingestHandler = Effect.gen(function*() {
  yield* authorize("write")
  const events = yield* readEnvelope("events", Contract.MAX_EVENTS_PER_REQUEST)
  const ingest = yield* Ingest.Ingest
  const results = yield* ingest.ingest(events).pipe(
    Effect.tapErrorCause((c) => Effect.logError("ingest: store failure", c)),
    Effect.mapError(unavailable)
  )
  return yield* HttpServerResponse.json({ results } satisfies Contract.IngestResponse)
})

const consentHandler = Effect.gen(function*() {
  yield* authorize("write")
  const updates = yield* readEnvelope("updates", Contract.MAX_CONSENT_UPDATES)
  const ingest = yield* Ingest.Ingest
  const results = yield* ingest.consent(updates).pipe(
    Effect.tapErrorCause((c) => Effect.logError("consent: store failure", c)),
    Effect.mapError(unavailable)
  )
  return yield* HttpServerResponse.json({ results })
})

const healthHandler = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const store = yield* Database.Store
  yield* sql`SELECT 1`.pipe(Effect.timeout("2 seconds"), Effect.mapError(unavailable))
  return yield* HttpServerResponse.json({ status: "ok", store: store.kind })
})

const explainHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const id = params["event_id"] ?? ""
  const explain = yield* Explain.Explain
  const result = yield* explain.explain(id).pipe(Effect.mapError(unavailable))
  if (result === undefined) return yield* failure(404, "not_found", `no event with event_id "${id}"`)
  return yield* HttpServerResponse.json(result)
})

const personHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const id = params["id"] ?? ""
  const graph = yield* Identity.IdentityGraph
  const person = yield* graph.person(id).pipe(Effect.mapError(unavailable))
  // An erased person is shown by their erasure (ids only) and what each destination answered to it.
  const erasure = yield* Effect.flatMap(Erasure.Erasure, (e) => e.status(id)).pipe(Effect.mapError(unavailable))
  if (person === undefined && erasure !== undefined) {
    return yield* HttpServerResponse.json({
      person_id: erasure.person_id,
      user_id: erasure.user_id,
      traits: {},
      consent: {},
      audiences: [],
      identifiers: [],
      erasure
    })
  }
  if (person === undefined) {
    return yield* failure(
      404,
      "not_found",
      `no person "${id}" (use a person id, user:<user_id>, device:<device_id> or another identifier key)`
    )
  }
  return yield* HttpServerResponse.json(erasure !== undefined ? { ...person, erasure } : person)
})

/**
 * `DELETE /v1/people/:id?requester=<who>`: erases the person (docs/privacy.md). 200 when every destination gave a
 * final answer, 202 when forwarding to some failed (the erasure itself is done; `DELETE` again retries those).
 */
const erasePersonHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const id = params["id"] ?? ""
  const req = yield* HttpServerRequest.HttpServerRequest
  const requester = new URL(req.url, "http://localhost").searchParams.get("requester") ?? undefined
  if (requester !== undefined && (requester.trim() === "" || requester.length > 320)) {
    return yield* failure(400, "bad_request", "`requester` must be 1-320 characters (who asked for the erasure)")
  }
  const erasure = yield* Erasure.Erasure
  const result = yield* erasure.erase(id, requester !== undefined ? { requester: requester.trim() } : {}).pipe(
    Effect.tapErrorCause((c) => Effect.logError("erasure: store failure", c)),
    Effect.mapError(unavailable)
  )
  if (result === undefined) {
    return yield* failure(
      404,
      "not_found",
      `no person "${id}" (use a person id, user:<user_id>, device:<device_id> or another identifier key)`
    )
  }
  const status = result.destinations.some((d) => d.outcome === "failed") ? 202 : 200
  return yield* HttpServerResponse.json(result, { status })
})

const previewHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const text = yield* readBody(Contract.MAX_REQUEST_BYTES)
  let body: { destination?: unknown; events?: unknown }
  try {
    body = JSON.parse(text)
  } catch (e) {
    return yield* failure(400, "malformed_json", `request body is not valid JSON: ${(e as Error).message}`)
  }
  const delivery = yield* Delivery.Delivery
  const config = yield* TrackLayerConfig.TrackLayerConfig
  const known = [...delivery.resolved.keys()].join(", ") || "none"
  if (typeof body !== "object" || body === null || typeof body.destination !== "string") {
    return yield* failure(400, "bad_request", `\`destination\` must name a configured destination (${known})`)
  }
  const destination = delivery.resolved.get(body.destination)
  if (destination === undefined) {
    return yield* failure(400, "bad_request", `destination: "${body.destination}" is not configured (${known})`)
  }
  if (!Array.isArray(body.events) || body.events.length === 0 || body.events.length > Contract.MAX_EVENTS_PER_REQUEST) {
    return yield* failure(
      400,
      "bad_request",
      `\`events\` must be an array of 1-${Contract.MAX_EVENTS_PER_REQUEST} events`
    )
  }
  const results = yield* Preview.previewEffect(config, destination, body.events)
  return yield* HttpServerResponse.json({ destination: body.destination, results })
})

/**
 * `POST /v1/sources/:id`: an inbound source (e.g. Amplitude cohort webhooks). The source plugin authenticates the
 * request (its shared secret header) and parses it; the member changes are appended durably before the 200, and a
 * retried message (same message id) is answered 200 without being stored again.
 */
const sourceHandler = Effect.gen(function*() {
  const params = yield* HttpRouter.params
  const id = params["id"] ?? ""
  const sources = yield* Source.Sources
  const plugin = sources.plugins.get(id)
  if (plugin === undefined) {
    const known = [...sources.plugins.keys()].join(", ") || "none configured"
    return yield* failure(404, "not_found", `no source "${id}" (${known})`)
  }
  const req = yield* HttpServerRequest.HttpServerRequest
  const body = yield* readBody(plugin.maxBodyBytes, `${Math.round(plugin.maxBodyBytes / 1048576)} MiB`)
  const headers: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = typeof v === "string" ? v : undefined
  const received = yield* sources.receive(id, { headers, body }).pipe(
    Effect.catchTag(
      "SourceRequestError",
      (e) =>
        Effect.fail(
          failure(
            e.status,
            e.status === 401 ? "unauthorized" : e.status === 413 ? "payload_too_large" : "bad_request",
            `${e.field}: ${e.message}`
          )
        )
    ),
    Effect.tapError((e) => (e._tag === "SqlError" ? Effect.logError("source: store failure", e) : Effect.void)),
    Effect.mapError((e) => (e._tag === "HttpFailure" ? e : unavailable()))
  )
  return yield* HttpServerResponse.json(received)
})

const destinationsHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const delivery = yield* Delivery.Delivery
  return yield* HttpServerResponse.json({ destinations: yield* delivery.health })
})

/** The router. */
export const router = HttpRouter.empty.pipe(
  HttpRouter.post("/v1/events", ingestHandler),
  HttpRouter.post("/v1/consent", consentHandler),
  HttpRouter.get("/healthz", healthHandler),
  HttpRouter.get("/v1/events/:event_id/explain", explainHandler),
  HttpRouter.get("/v1/destinations", destinationsHandler),
  HttpRouter.get("/v1/people/:id", personHandler),
  HttpRouter.post("/v1/preview", previewHandler),
  HttpRouter.del("/v1/people/:id", erasePersonHandler),
  HttpRouter.post("/v1/sources/:id", sourceHandler)
)

/** The HTTP app: typed failures become JSON errors; unknown routes a JSON 404. */
export const app = router.pipe(
  Effect.catchAll((e) => {
    if (e._tag === "HttpFailure") return Effect.succeed(errorResponse(e))
    if (e._tag === "RouteNotFound") return Effect.succeed(errorResponse(failure(404, "not_found", "no such endpoint")))
    return Effect.logError("request failed", e).pipe(
      Effect.as(errorResponse(failure(500, "internal", "internal error")))
    )
  }),
  Effect.catchAllDefect((defect) =>
    Effect.logError("unhandled defect", defect).pipe(
      Effect.as(errorResponse(failure(500, "internal", "internal error")))
    )
  )
)

/** Serves the gateway on the provided HttpServer. */
export const layer = HttpServer.serve(app)
