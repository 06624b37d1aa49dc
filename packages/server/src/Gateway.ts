/**
 * The gateway's HTTP API: ingest (`POST /v1/events`), health, explain and destination status.
 * Every error is JSON `{ "error": { "code", "message" } }` with the status that says what to do about it.
 */
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
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
import { Data, Effect, Option } from "effect"
import * as Explorer from "./Explorer.js"
import * as ExplorerApi from "./ExplorerApi.js"
import { bearer, keyName, Keys } from "./Keys.js"

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
    // Write endpoints take a write key or the admin key; admin endpoints only the admin key.
    const name = keyName(token.value, keys, kind)
    if (Option.isNone(name)) return yield* failure(401, "unauthorized", `unknown ${kind} key`)
    const retryAfter = yield* keys.spend(name.value)
    if (retryAfter !== undefined) {
      const { burst, perSecond } = keys.rateLimit
      return yield* failure(
        429,
        "rate_limited",
        `this key made more than ${perSecond} requests per second (bursts of ${burst}); retry after ${retryAfter} s`,
        { "retry-after": String(retryAfter) }
      )
    }
  })

/**
 * The request's body bytes, or `undefined` once more than `limit` arrived: reading then stops, but the socket stays
 * open so the 413 still reaches the client (ending `req.stream` early would destroy it, and the client would see a
 * reset instead). A connection closed mid-body (e.g. by the request timeout) is a 400.
 */
const bodyWithin = (req: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.async<Buffer | undefined, HttpFailure>((resume) => {
    const source = NodeHttpServerRequest.toIncomingMessage(req)
    const chunks: Array<Buffer> = []
    let total = 0
    const stop = () => {
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onClose)
      source.off("close", onClose)
    }
    const onData = (chunk: Buffer) => {
      total += chunk.length
      if (total <= limit) return void chunks.push(chunk)
      stop()
      source.pause()
      resume(Effect.succeed(undefined))
    }
    const onEnd = () => {
      stop()
      resume(Effect.succeed(Buffer.concat(chunks)))
    }
    const onClose = () => {
      stop()
      resume(Effect.fail(failure(400, "bad_request", "could not read the request body")))
    }
    source.on("data", onData)
    source.once("end", onEnd)
    source.once("error", onClose)
    source.once("close", onClose)
    return Effect.sync(stop)
  })

/**
 * Reads the body up to `limit` bytes; a longer one is a 413 without reading the rest. The 413 closes the connection
 * (the rest of the body is never read, so the connection cannot serve another request).
 */
const readBody = (limit: number, label = "1 MiB") =>
  Effect.gen(function*() {
    const req = yield* HttpServerRequest.HttpServerRequest
    const declared = req.headers["content-length"]
    if (declared !== undefined && Number(declared) > limit) {
      return yield* failure(
        413,
        "payload_too_large",
        `request body is ${declared} bytes; the limit is ${limit} bytes (${label})`,
        { connection: "close" }
      )
    }
    const all = yield* bodyWithin(req, limit)
    if (all === undefined) {
      return yield* failure(413, "payload_too_large", `request body exceeds the limit of ${limit} bytes (${label})`, {
        connection: "close"
      })
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(all)
    } catch {
      return yield* failure(400, "bad_request", "request body is not valid UTF-8")
    }
  })

/**
 * The first number of parsed JSON beyond the range of a double, as `<path>: <problem>`: `JSON.parse` reads 1e400 as
 * Infinity, which would be stored as null. Iterative, so any depth is safe.
 */
const outOfRange = (root: unknown): string | undefined => {
  const at = (path: string, key: string | number) =>
    typeof key === "number"
      ? `${path}[${key}]`
      : /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)
      ? (path === "" ? key : `${path}.${key}`)
      : `${path}[${JSON.stringify(key)}]`
  const stack: Array<[unknown, string]> = [[root, ""]]
  while (stack.length > 0) {
    const [value, path] = stack.pop()!
    if (typeof value === "number" && !Number.isFinite(value)) {
      return `${path || "body"}: a number beyond the range of a double (±1.8e308)`
    }
    if (typeof value === "object" && value !== null) {
      for (const [k, v] of Array.isArray(value) ? value.entries() : Object.entries(value)) stack.push([v, at(path, k)])
    }
  }
  return undefined
}

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
    // (NUL and lone surrogates are refused per item by the contract.)
    const huge = outOfRange(body)
    if (huge !== undefined) return yield* failure(400, "bad_request", huge)
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
            e.message.startsWith(e.field) ? e.message : `${e.field}: ${e.message}`
          )
        )
    ),
    Effect.tapError((e) => (e._tag === "SqlError" ? Effect.logError("source: store failure", e) : Effect.void)),
    Effect.mapError((e) => (e._tag === "HttpFailure" ? e : unavailable()))
  )
  return yield* HttpServerResponse.json(received)
})

/** Reads an optional JSON object body of an admin endpoint (empty body = `{}`). */
const readObject = Effect.gen(function*() {
  const text = yield* readBody(64 * 1024, "64 KiB")
  if (text.trim() === "") return {} as Record<string, unknown>
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (e) {
    return yield* failure(400, "malformed_json", `request body is not valid JSON: ${(e as Error).message}`)
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return yield* failure(400, "bad_request", "request body must be a JSON object")
  }
  return body as Record<string, unknown>
})

const optionalTime = (body: Record<string, unknown>, field: string) =>
  Effect.gen(function*() {
    const v = body[field]
    if (v === undefined || v === null) return undefined
    const t = typeof v === "string" ? Date.parse(v) : Number.NaN
    if (Number.isNaN(t)) {
      return yield* failure(400, "bad_request", `${field}: must be an RFC 3339 time, got ${JSON.stringify(v)}`)
    }
    return new Date(t)
  })

/** Maps a delivery ConfigError (unknown destination, bad option) to a 400/404 naming the field. */
const deliveryError = (e: { _tag: string; field?: string; detail?: string }) =>
  e._tag === "ConfigError"
    ? failure(
      e.field === "destination" ? 404 : 400,
      e.field === "destination" ? "not_found" : "bad_request",
      `${e.field}: ${e.detail}`
    )
    : unavailable()

/**
 * `POST /v1/destinations/:id/replays` `{ since?, until?, events?, dry_run? }`: starts (or resumes) a replay of history
 * to the destination through the live path; 202 with its progress (docs/replay.md).
 */
const startReplayHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const body = yield* readObject
  const extra = Object.keys(body).filter((k) => !["since", "until", "events", "dry_run"].includes(k))
  if (extra.length > 0) {
    return yield* failure(400, "bad_request", `unknown field(s): ${extra.join(", ")} (since, until, events, dry_run)`)
  }
  const since = yield* optionalTime(body, "since")
  const until = yield* optionalTime(body, "until")
  const events = body["events"]
  if (events !== undefined && (!Array.isArray(events) || events.some((e) => typeof e !== "string"))) {
    return yield* failure(400, "bad_request", "events: must be an array of event names")
  }
  if (Array.isArray(events) && events.length === 0) {
    return yield* failure(400, "bad_request", `events: ${Delivery.EMPTY_EVENTS}`)
  }
  const dryRun = body["dry_run"]
  if (dryRun !== undefined && typeof dryRun !== "boolean") {
    return yield* failure(400, "bad_request", "dry_run: must be true or false")
  }
  const delivery = yield* Delivery.Delivery
  const status = yield* delivery.startReplay(params["id"] ?? "", {
    ...(since !== undefined ? { since } : {}),
    ...(until !== undefined ? { until } : {}),
    ...(events !== undefined ? { events: events as ReadonlyArray<string> } : {}),
    ...(dryRun === true ? { dryRun: true } : {})
  }).pipe(Effect.mapError(deliveryError))
  return yield* HttpServerResponse.json(status, { status: 202 })
})

const replayHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const delivery = yield* Delivery.Delivery
  const status = yield* delivery.replay(params["id"] ?? "").pipe(Effect.mapError(unavailable))
  if (status === undefined) return yield* failure(404, "not_found", `no replay "${params["id"]}"`)
  return yield* HttpServerResponse.json(status)
})

const replaysHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const req = yield* HttpServerRequest.HttpServerRequest
  const destination = new URL(req.url, "http://localhost").searchParams.get("destination") ?? undefined
  const delivery = yield* Delivery.Delivery
  return yield* HttpServerResponse.json({
    replays: yield* delivery.replays(destination).pipe(Effect.mapError(unavailable))
  })
})

const pauseReplayHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const delivery = yield* Delivery.Delivery
  const status = yield* delivery.pauseReplay(params["id"] ?? "").pipe(Effect.mapError(unavailable))
  if (status === undefined) return yield* failure(404, "not_found", `no replay "${params["id"]}"`)
  return yield* HttpServerResponse.json(status)
})

/** `POST /v1/destinations/:id/redrive` `{ reason? }`: dead-lettered events get a new round of attempts. */
const redriveHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const params = yield* HttpRouter.params
  const body = yield* readObject
  const reason = body["reason"]
  if (reason !== undefined && (typeof reason !== "string" || reason.trim() === "")) {
    return yield* failure(400, "bad_request", "reason: must be a non-empty string (a part of the dead-letter reason)")
  }
  const delivery = yield* Delivery.Delivery
  const redriven = yield* delivery.redrive(params["id"] ?? "", reason as string | undefined).pipe(
    Effect.mapError(deliveryError)
  )
  return yield* HttpServerResponse.json({ destination: params["id"], redriven })
})

const destinationsHandler = Effect.gen(function*() {
  yield* authorize("admin")
  const delivery = yield* Delivery.Delivery
  return yield* HttpServerResponse.json({ destinations: yield* delivery.health })
})

/** The delivery-log explorer (docs/explorer.md): its JSON under `/v1/explorer`, its pages under `/ui`. */
const explorerRouter = HttpRouter.empty.pipe(
  HttpRouter.get("/v1/explorer/events", ExplorerApi.eventsHandler),
  HttpRouter.get("/v1/explorer/events/:id", ExplorerApi.eventHandler),
  HttpRouter.get("/v1/explorer/reconciliation", ExplorerApi.reconciliationHandler),
  HttpRouter.get("/v1/explorer/reconciliation.csv", ExplorerApi.reconciliationCsvHandler),
  HttpRouter.get("/v1/explorer/dead-letters", ExplorerApi.deadLettersHandler),
  HttpRouter.get("/v1/explorer/health", ExplorerApi.healthHandler),
  HttpRouter.get("/ui", Explorer.indexHandler),
  HttpRouter.post("/ui/login", Explorer.loginHandler),
  HttpRouter.post("/ui/logout", Explorer.logoutHandler),
  HttpRouter.get("/ui/events", Explorer.searchPageHandler),
  HttpRouter.get("/ui/events/:id", Explorer.eventPageHandler),
  HttpRouter.get("/ui/reconciliation", Explorer.reconciliationPageHandler),
  HttpRouter.get("/ui/dead-letters", Explorer.deadLettersPageHandler),
  HttpRouter.get("/ui/health", Explorer.healthPageHandler),
  HttpRouter.get("/ui/assets/explorer.js", Explorer.scriptHandler),
  HttpRouter.get("/ui/assets/explorer.css", Explorer.styleHandler),
  // The same redrive handler, for a signed-in browser (session cookie + CSRF header instead of the bearer key).
  HttpRouter.post("/ui/destinations/:id/redrive", Explorer.forSession(redriveHandler))
)

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
  HttpRouter.post("/v1/sources/:id", sourceHandler),
  HttpRouter.post("/v1/destinations/:id/replays", startReplayHandler),
  HttpRouter.get("/v1/replays", replaysHandler),
  HttpRouter.get("/v1/replays/:id", replayHandler),
  HttpRouter.post("/v1/replays/:id/pause", pauseReplayHandler),
  HttpRouter.post("/v1/destinations/:id/redrive", redriveHandler),
  HttpRouter.concat(explorerRouter)
)

/** A store error raised as a defect (see `app`). */
const isSqlError = (u: unknown): boolean =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "SqlError"

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
    // `withTransaction` turns a failed COMMIT or ROLLBACK (the connection to the store dropped mid-transaction) into
    // a defect: the store is unavailable, and the client should retry (a batch that was committed after all is
    // answered `duplicate` then), not be told the gateway is broken.
    isSqlError(defect)
      ? Effect.logError("store failure", defect).pipe(Effect.as(errorResponse(unavailable())))
      : Effect.logError("unhandled defect", defect).pipe(
        Effect.as(errorResponse(failure(500, "internal", "internal error")))
      )
  )
)

/** Serves the gateway on the provided HttpServer. */
export const layer = HttpServer.serve(app)
