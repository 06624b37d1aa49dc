/**
 * The delivery-log explorer: server-rendered pages under `/ui` (sign-in, search, event detail, reconciliation,
 * dead letters, health) built from the same queries as the `/v1/explorer/...` JSON (ExplorerApi.ts), plus one small
 * script and stylesheet served from this package. Nothing is loaded from elsewhere; every value is escaped.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { SqlError } from "@effect/sql"
import { Chunk, Effect, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as ExplorerApi from "./ExplorerApi.js"
import * as ExplorerSession from "./ExplorerSession.js"
import { html, query, Raw } from "./internal/html.js"

// ---------------------------------------------------------------------------------------------------------------------
// Assets and responses
// ---------------------------------------------------------------------------------------------------------------------

const asset = (name: string) => fs.readFileSync(new URL(`./ui/${name}`, import.meta.url), "utf8")
const SCRIPT = asset("explorer.js")
const STYLE = asset("explorer.css")

/** Pages load only this package's script and stylesheet, and are never framed or cached. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const SECURITY_HEADERS = {
  "content-security-policy": CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store"
}

const page = (body: Raw, status = 200, headers: Record<string, string> = {}) =>
  HttpServerResponse.text(body.html, {
    status,
    contentType: "text/html; charset=utf-8",
    headers: { ...SECURITY_HEADERS, ...headers }
  })

const redirect = (location: string, headers: Record<string, string> = {}) =>
  HttpServerResponse.empty({ status: 303, headers: { ...SECURITY_HEADERS, location, ...headers } })

const assetResponse = (body: string, contentType: string) =>
  Effect.succeed(HttpServerResponse.text(body, {
    contentType,
    headers: { "x-content-type-options": "nosniff", "cache-control": "no-cache" }
  }))

// ---------------------------------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------------------------------

type Tab = "events" | "reconciliation" | "dead-letters" | "health"

const NAV: ReadonlyArray<readonly [Tab, string, string]> = [
  ["events", "/ui/events", "Search"],
  ["reconciliation", "/ui/reconciliation", "Reconciliation"],
  ["dead-letters", "/ui/dead-letters", "Dead letters"],
  ["health", "/ui/health", "Health"]
]

const layout = (title: string, session: ExplorerSession.Session | undefined, tab: Tab | undefined, body: Raw) =>
  html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · TrackLayer explorer</title>
${session ? html`<meta name="csrf-token" content="${session.csrf}">` : ""}
<link rel="stylesheet" href="/ui/assets/explorer.css">
<script src="/ui/assets/explorer.js" defer></script>
</head>
<body>
<header class="top">
<span class="brand">TrackLayer · delivery log</span>
${
    session
      ? html`<nav>${
        NAV.map(([t, href, label]) =>
          html`<a href="${href}"${t === tab ? new Raw(" class=\"active\" aria-current=\"page\"") : ""}>${label}</a>`
        )
      }</nav>
<button type="button" id="sign-out" class="link">Sign out</button>`
      : ""
  }
</header>
<main>
${body}
</main>
</body>
</html>
`

const fmtTime = (iso: string | null | undefined) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "")

const pretty = (v: unknown) => JSON.stringify(v, null, 2) ?? "null"

const cut = (s: string | null, n: number) => (s === null ? "" : s.length > n ? `${s.slice(0, n)}…` : s)

const badge = (outcome: string, label?: string, title?: string | null) =>
  html`<span class="badge outcome-${outcome.replace(/[^a-z_]/g, "")}"${title ? html` title="${title}"` : ""}>${
    label ?? outcome
  }</span>`

const errorBox = (message: string) => html`<p class="error" role="alert">${message}</p>`

const options = (values: ReadonlyArray<string>, selected: string | undefined, empty?: string) =>
  html`${empty !== undefined ? html`<option value="">${empty}</option>` : ""}${
    values.map((v) => html`<option value="${v}"${v === selected ? new Raw(" selected") : ""}>${v}</option>`)
  }`

// ---------------------------------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------------------------------

/** Where to go after signing in: a page of the explorer, nothing else. */
const safeNext = (next: string | null | undefined) =>
  next && /^\/ui(\/[A-Za-z0-9._~%/-]*)?(\?[A-Za-z0-9._~%&=+:-]*)?$/.test(next) && !next.includes("//")
    ? next
    : "/ui/events"

const signInPage = (next: string, error?: string, notice?: string) =>
  layout(
    "Sign in",
    undefined,
    undefined,
    html`<section class="signin">
<h1>Sign in</h1>
<p>Use the gateway's admin key (<code>TRACKLAYER_ADMIN_KEY</code>).</p>
${notice ? html`<p class="notice" role="status">${notice}</p>` : ""}
${error ? html`<p class="error" role="alert" id="signin-error">${error}</p>` : ""}
<form method="post" action="/ui/login" id="signin-form">
<label for="key">Admin key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="${next}">
<button type="submit">Sign in</button>
</form>
</section>`
  )

/** The sign-in form's fields; undefined when the body is over 8 KiB or unreadable. */
const readForm = Effect.gen(function*() {
  const req = yield* HttpServerRequest.HttpServerRequest
  const limit = 8 * 1024
  if (Number(req.headers["content-length"] ?? 0) > limit) return undefined
  const chunks = yield* req.stream.pipe(
    Stream.mapAccumEffect(
      0,
      (n, c: Uint8Array) =>
        n + c.length > limit ? Effect.fail("too large" as const) : Effect.succeed([n + c.length, c] as const)
    ),
    Stream.runCollect,
    Effect.option
  )
  if (Option.isNone(chunks)) return undefined
  return new URLSearchParams(Buffer.concat(Chunk.toReadonlyArray(chunks.value)).toString("utf8"))
})

/** `GET /ui`: the sign-in form, or the search page for a signed-in browser. */
const indexHandler = Effect.gen(function*() {
  const session = yield* ExplorerSession.current
  const params = yield* ExplorerApi.queryParams
  const next = safeNext(params.get("next"))
  if (Option.isSome(session)) return redirect(next)
  // Signed in a moment ago, yet no cookie came back: the browser refused the Secure cookie (plain http elsewhere
  // than localhost).
  const notice = params.get("signed_in") === "1"
    ? "Your browser did not keep the session cookie. It is Secure: open the explorer over https, or on localhost."
    : undefined
  return page(signInPage(next, undefined, notice))
})

/** `POST /ui/login` (form: key, next): checks the key in constant time and opens a session. */
const loginHandler = Effect.gen(function*() {
  const form = yield* readForm
  if (form === undefined) return page(signInPage("/ui/events", "The sign-in form could not be read."), 400)
  const next = safeNext(form.get("next"))
  const key = form.get("key") ?? ""
  if (key === "" || !(yield* ExplorerSession.checkAdminKey(key))) {
    yield* Effect.logWarning("explorer: sign-in with a wrong admin key")
    return page(signInPage(next, "Wrong admin key."), 401)
  }
  const session = yield* ExplorerSession.open
  const sep = next.includes("?") ? "&" : "?"
  return redirect(`${next}${sep}signed_in=1`, { "set-cookie": ExplorerSession.sessionCookie(session) })
})

/** `POST /ui/logout` (session + CSRF header): ends the session. */
const logoutHandler = Effect.gen(function*() {
  const who = yield* ExplorerSession.authorize("change")
  if (who.by === "session") yield* ExplorerSession.close(who.session.id)
  return HttpServerResponse.unsafeJson({ signed_out: true }, {
    headers: { "set-cookie": ExplorerSession.clearedCookie, "cache-control": "no-store" }
  })
}).pipe(Effect.catchAll(ExplorerApi.toJsonError))

// ---------------------------------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------------------------------

type PageError = ExplorerApi.ExplorerBadRequest | ExplorerApi.ExplorerNotFound | SqlError.SqlError

/** A page for a signed-in browser; others are sent to sign in and brought back here afterwards. */
const signedIn = <R>(
  title: string,
  tab: Tab | undefined,
  body: (session: ExplorerSession.Session) => Effect.Effect<Raw, PageError, R>
) =>
  Effect.gen(function*() {
    const session = yield* ExplorerSession.current
    const req = yield* HttpServerRequest.HttpServerRequest
    if (Option.isNone(session)) {
      const u = new URL(req.url, "http://localhost")
      return redirect(`/ui${query({ next: u.pathname + u.search.replace(/([?&])signed_in=1&?/, "$1") })}`)
    }
    const s = session.value
    return yield* body(s).pipe(
      Effect.map((content) => page(layout(title, s, tab, content))),
      Effect.catchAll((e) =>
        Effect.gen(function*() {
          if (e._tag === "ExplorerBadRequest") return page(layout(title, s, tab, errorBox(e.message)), 400)
          if (e._tag === "ExplorerNotFound") return page(layout(title, s, tab, errorBox(e.message)), 404)
          yield* Effect.logError("explorer: store failure", e)
          return page(layout(title, s, tab, errorBox("The event store is unavailable; retry later.")), 503)
        })
      )
    )
  })

const params = ExplorerApi.queryParams

// Search ----------------------------------------------------------------------------------------------------------------

const searchPage = signedIn("Search", "events", () =>
  Effect.gen(function*() {
    const p = yield* params
    // Drop the marker left by sign-in before validating.
    p.delete("signed_in")
    const q = yield* ExplorerApi.parseSearch(p)
    const names = yield* ExplorerApi.eventNames
    const destinations = yield* ExplorerApi.knownDestinations
    const searched = [...p.keys()].some((k) => k !== "limit" && k !== "cursor" && (p.get(k) ?? "") !== "")
    const result = yield* ExplorerApi.search(q)
    const v = (k: string) => p.get(k) ?? ""
    const field = (name: string, label: string, placeholder = "", type = "text") =>
      html`<label>${label}<input name="${name}" type="${type}" value="${v(name)}" placeholder="${placeholder}"></label>`
    const nextHref = result.next_cursor === null ? null : `/ui/events${
      query({
        ...Object.fromEntries([...p.entries()].filter(([k]) => k !== "cursor")),
        cursor: result.next_cursor
      })
    }`
    return html`<h1>Search events</h1>
<form method="get" action="/ui/events" class="filters" id="search-form">
${field("event_id", "Event id")}
${field("user_id", "User id")}
${field("order_id", "Order id")}
${field("from", "From (UTC)", "2026-04-24T00:00")}
${field("to", "To (UTC)", "2026-04-25T00:00")}
<label>Event<input name="event" list="event-names" value="${v("event")}"></label>
<datalist id="event-names">${names.map((n) => html`<option value="${n}">`)}</datalist>
<label>Destination<select name="destination">${options(destinations, q.destination, "any")}</select></label>
<label>Latest outcome<select name="outcome">${options(ExplorerApi.OUTCOMES, q.outcome, "any")}</select></label>
<button type="submit">Search</button>
</form>
<p class="hint">${
      searched ? `${result.events.length} event(s)${nextHref ? " on this page" : ""},` : "The latest events,"
    } newest first. A user id finds the events of that user's person (for example the device's events before sign-in).</p>
<table id="results" class="grid">
<thead><tr><th>Event time</th><th>Event id</th><th>Event</th><th>User id</th><th>Person key</th><th>Latest outcome per destination</th></tr></thead>
<tbody>
${
      result.events.length === 0
        ? html`<tr><td colspan="6" class="empty">No events match.</td></tr>`
        : result.events.map((e) =>
          html`<tr data-event-id="${e.event_id}">
<td>${fmtTime(e.timestamp)}</td>
<td><a href="/ui/events/${encodeURIComponent(e.event_id)}">${e.event_id}</a></td>
<td>${e.event}</td>
<td>${e.user_id ?? ""}</td>
<td class="mono">${cut(e.person_key, 40)}</td>
<td>${e.destinations.map((d) => badge(d.outcome, `${d.destination}: ${d.outcome}`, d.reason))}</td>
</tr>`
        )
    }
</tbody>
</table>
${nextHref ? html`<p><a href="${nextHref}" id="next-page">Older events →</a></p>` : ""}`
  }))

// Detail ----------------------------------------------------------------------------------------------------------------

const consentText = (c: ExplorerApi.ConsentView) =>
  c.decision === "denied"
    ? `denied${c.purpose ? ` (${c.purpose})` : ""}: ${c.detail ?? ""}`
    : c.decision === "granted"
    ? `granted — ${c.detail ?? ""}`
    : c.decision === "not_checked"
    ? `not checked — ${c.detail ?? ""}`
    : `pending${c.detail ? ` — ${c.detail}` : ""}`

const detailPage = signedIn("Event", "events", () =>
  Effect.gen(function*() {
    const id = (yield* HttpRouter.params)["id"] ?? ""
    const d = yield* ExplorerApi.detail(id)
    const row = (label: string, value: unknown) => html`<tr><th>${label}</th><td>${value}</td></tr>`
    return html`<h1>Event <span class="mono">${d.event_id}</span></h1>
<section id="summary">
<table class="kv">
${row("Event", d.event)}
${row("Event time", fmtTime(d.timestamp))}
${row("Received", fmtTime(d.received_at))}
${row("Log position", d.position)}
${row("Routable", d.routable ? "yes" : "no (not in the vocabulary: stored, not routed)")}
${row("Dedup key", html`<span class="mono">${d.dedup.dedup_key}</span>`)}
${
      row(
        "Duplicate of",
        d.dedup.duplicate_of
          ? html`<a href="/ui/events/${encodeURIComponent(d.dedup.duplicate_of)}">${d.dedup.duplicate_of}</a>`
          : "—"
      )
    }
${
      d.dedup.adjustment
        ? row(
          "Adjusts",
          html`<a href="/ui/events/${encodeURIComponent(d.dedup.adjustment.of)}">${d.dedup.adjustment.of}</a> (was ${
            d.dedup.adjustment.previousValue ?? "no value"
          } ${d.dedup.adjustment.previousCurrency ?? ""})`
        )
        : ""
    }
</table>
</section>
<section id="identity">
<h2>Identity</h2>
<table class="kv">
${row("Person key", html`<span class="mono">${d.identity.person_key}</span>`)}
${row("Person id", d.identity.person_id ?? "— (not resolved, or erased)")}
${
      row(
        "User id",
        d.identity.user_id
          ? html`<a href="/ui/events${query({ user_id: d.identity.user_id })}">${d.identity.user_id}</a>`
          : "—"
      )
    }
${row("Identifiers", html`${d.identity.identifiers.map((i) => html`<div class="mono">${i.key}</div>`)}`)}
${
      row(
        "Consent choices",
        Object.keys(d.identity.consent).length === 0
          ? "none recorded"
          : html`${
            Object.entries(d.identity.consent).map(([purpose, c]) =>
              html`<div>${purpose}: ${c.granted ? "granted" : "denied"} at ${fmtTime(c.at)} (${c.source})</div>`
            )
          }`
      )
    }
${row("Audiences", d.identity.audiences.join(", ") || "—")}
</table>
</section>
<section id="received">
<h2>Received event <small>(personal data masked)</small></h2>
<pre class="json">${pretty(d.received)}</pre>
</section>
<section id="destinations">
<h2>Destinations</h2>
${
      d.destinations.map((x) =>
        html`<article class="destination" data-destination="${x.destination}">
<h3>${x.destination} ${badge(x.status)}</h3>
${x.reason ? html`<p class="reason">${x.reason}</p>` : ""}
<table class="kv">
${row("Consent", html`<span class="consent consent-${x.consent.decision}">${consentText(x.consent)}</span>`)}
${row("Purposes", x.consent.purposes.join(", ") || "none")}
${row("Dedup key sent", html`<span class="mono">${x.dedupKey}</span>`)}
${x.duplicate ? row("Dedup decision", x.duplicate) : ""}
</table>
${
          x.attempts.length === 0 ?
            html`<p class="hint">No attempt recorded yet.</p>` :
            html`<table class="grid attempts">
<thead><tr><th>#</th><th>At</th><th>Outcome</th><th>Status</th><th>Duration</th><th>Reason</th><th>Response (excerpt)</th></tr></thead>
<tbody>${
              x.attempts.map((a) =>
                html`<tr class="attempt" data-outcome="${a.outcome}">
<td>${a.attempt}</td><td>${fmtTime(a.at)}</td><td>${badge(a.outcome)}</td><td>${a.status ?? "—"}</td>
<td>${a.durationMs === null ? "—" : `${a.durationMs} ms`}</td><td>${a.reason ?? ""}</td>
<td class="mono small">${cut(a.response, 400)}</td></tr>`
              )
            }</tbody></table>`
        }
${
          x.payload === null
            ? ""
            : html`<details open><summary>Transformed payload (hashed fields as sent; other personal data masked)</summary>
<pre class="json payload">${pretty(x.payload)}</pre></details>`
        }
</article>`
      )
    }
</section>`
  }))

// Reconciliation --------------------------------------------------------------------------------------------------------

const SEGMENTS = [
  ["accepted", "accepted"],
  ["rejected", "rejected"],
  ["failing", "retrying + dead-lettered"],
  ["consent", "dropped: consent"],
  ["dropped", "dropped: other reasons"],
  ["pending", "pending"]
] as const

const segmentValue = (r: ExplorerApi.ReconciliationRow, k: (typeof SEGMENTS)[number][0]) =>
  k === "accepted"
    ? r.accepted
    : k === "rejected"
    ? r.rejected
    : k === "failing"
    ? r.retrying + r.dead_lettered
    : k === "consent"
    ? r.dropped.consent
    : k === "dropped"
    ? r.dropped_total - r.dropped.consent
    : r.pending

/**
 * A stacked bar per day: accepted, rejected, retrying + dead-lettered, dropped for consent, dropped otherwise,
 * pending (they add up to received).
 */
const chart = (destination: string, rows: ReadonlyArray<ExplorerApi.ReconciliationRow>) => {
  const bar = 22
  const gap = 10
  const top = 10
  const plot = 140
  const left = 40
  const width = Math.max(320, left + rows.length * (bar + gap) + gap)
  const max = Math.max(1, ...rows.map((r) => r.received))
  const every = Math.max(1, Math.ceil(rows.length / 14))
  return html`<svg class="chart" role="img" aria-label="${destination}: events per day by outcome" width="${width}" height="${
    top + plot + 30
  }" viewBox="0 0 ${width} ${top + plot + 30}" xmlns="http://www.w3.org/2000/svg">
<line class="axis" x1="${left}" y1="${top + plot}" x2="${width - 4}" y2="${top + plot}"/>
<text class="tick" x="${left - 6}" y="${top + 4}" text-anchor="end">${max}</text>
<text class="tick" x="${left - 6}" y="${top + plot}" text-anchor="end">0</text>
${
    rows.map((r, i) => {
      const x = left + gap + i * (bar + gap)
      let y = top + plot
      const parts = SEGMENTS.map(([k, label]) => {
        const n = segmentValue(r, k)
        if (n === 0) return ""
        const h = (n / max) * plot
        y -= h
        return html`<rect class="seg-${k}" x="${x}" y="${y.toFixed(2)}" width="${bar}" height="${
          h.toFixed(2)
        }"><title>${r.day} ${label}: ${n}</title></rect>`
      })
      return html`<g class="day" data-day="${r.day}">${parts}${
        i % every === 0
          ? html`<text class="tick" x="${x + bar / 2}" y="${top + plot + 14}" text-anchor="middle">${
            r.day.slice(5)
          }</text>`
          : ""
      }</g>`
    })
  }
</svg>
<p class="legend">${SEGMENTS.map(([k, label]) => html`<span class="key seg-${k}"></span>${label} `)}</p>`
}

const COLUMNS: ReadonlyArray<readonly [string, string, (r: ExplorerApi.ReconciliationRow) => number]> = [
  ["received", "Received", (r) => r.received],
  ["routed", "Routed", (r) => r.routed],
  ["dropped_consent", "Dropped: consent", (r) => r.dropped.consent],
  ["dropped_window", "Dropped: window", (r) => r.dropped.window],
  ["dropped_mapping", "Dropped: mapping", (r) => r.dropped.mapping],
  ["dropped_duplicate", "Dropped: duplicate", (r) => r.dropped.duplicate],
  ["dropped_invalid", "Dropped: invalid", (r) => r.dropped.invalid],
  ["dropped_erased", "Dropped: erased", (r) => r.dropped.erased],
  ["dropped_other", "Dropped: other", (r) => r.dropped.other],
  ["sent", "Sent", (r) => r.sent],
  ["accepted", "Accepted", (r) => r.accepted],
  ["rejected", "Rejected", (r) => r.rejected],
  ["retrying", "Retrying", (r) => r.retrying],
  ["dead_lettered", "Dead-lettered", (r) => r.dead_lettered],
  ["pending", "Pending", (r) => r.pending]
]

const requestsText = (r: ExplorerApi.RequestCounts | null) =>
  r === null ?
    "" :
    `${r.requests} request(s): ${
      Object.entries(r.by_status).map(([s, n]) => `${s} ${n}`).join(", ")
    }; ${r.record_count} record(s)${
      Object.keys(r.error_counts).length > 0
        ? `; errors ${Object.entries(r.error_counts).map(([k, n]) => `${k} × ${n}`).join(", ")}`
        : ""
    }`

const TIME_ZONES = ["UTC", ...Intl.supportedValuesOf("timeZone").filter((z) => z !== "UTC")]

const reconciliationPage = signedIn("Reconciliation", "reconciliation", () =>
  Effect.gen(function*() {
    const p = yield* params
    p.delete("signed_in")
    const q = yield* ExplorerApi.parseReconciliation(p)
    const r = yield* ExplorerApi.reconciliation(q)
    const destinations = yield* ExplorerApi.knownDestinations
    const csv = `/v1/explorer/reconciliation.csv${
      query({ from: r.from, to: r.to, tz: r.tz, destination: q.destination })
    }`
    return html`<h1>Reconciliation</h1>
<form method="get" action="/ui/reconciliation" class="filters" id="recon-form">
<label>From<input name="from" type="date" value="${r.from}"></label>
<label>To<input name="to" type="date" value="${r.to}"></label>
<label>Time zone<select name="tz" data-autosubmit>${options(TIME_ZONES, r.tz)}</select></label>
<label>Destination<select name="destination">${options(destinations, q.destination, "all")}</select></label>
<button type="submit">Show</button>
<a class="button" id="csv-link" href="${csv}" download>Download CSV</a>
</form>
<p class="hint">Days are local days in ${r.tz} by <em>event time</em>. Each event counts once per destination, by its
latest record there: received = routed + dropped + pending; routed = accepted + rejected + retrying + dead-lettered.</p>
<section class="recon" id="recon-summary">
<h2>Destinations side by side <small>(${r.from} to ${r.to})</small></h2>
<div class="scroll"><table class="grid numbers" id="recon-totals">
<thead><tr><th>Destination</th>${COLUMNS.map(([, label]) => html`<th>${label}</th>`)}</tr></thead>
<tbody>
${
      r.destinations.map((dest) => {
        const rows = r.rows.filter((x) => x.destination === dest)
        return html`<tr data-destination="${dest}"><th scope="row">${dest}</th>${
          COLUMNS.map(([key, , f]) => html`<td data-col="${key}">${rows.reduce((n, x) => n + f(x), 0)}</td>`)
        }</tr>`
      })
    }
</tbody>
</table></div>
</section>
${
      r.destinations.map((dest) => {
        const rows = r.rows.filter((x) => x.destination === dest)
        const total = (f: (x: ExplorerApi.ReconciliationRow) => number) => rows.reduce((n, x) => n + f(x), 0)
        const withRequests = rows.some((x) => x.requests !== null)
        return html`<section class="recon" data-destination="${dest}">
<h2>${dest}</h2>
${chart(dest, rows)}
<div class="scroll"><table class="grid numbers" id="recon-${dest}">
<thead><tr><th>Day</th>${COLUMNS.map(([, label]) => html`<th>${label}</th>`)}${
          withRequests ? html`<th>Requests (destination's counts)</th>` : ""
        }</tr></thead>
<tbody>
${
          rows.map((x) =>
            html`<tr data-day="${x.day}"><th scope="row">${x.day}</th>${
              COLUMNS.map(([key, , f]) => html`<td data-col="${key}">${f(x)}</td>`)
            }${withRequests ? html`<td class="small" data-col="requests">${requestsText(x.requests)}</td>` : ""}</tr>`
          )
        }
</tbody>
<tfoot><tr data-day="total"><th scope="row">Total</th>${
          COLUMNS.map(([key, , f]) => html`<td data-col="${key}">${total(f)}</td>`)
        }${withRequests ? html`<td></td>` : ""}</tr></tfoot>
</table></div>
</section>`
      })
    }`
  }))

// Dead letters ----------------------------------------------------------------------------------------------------------

const deadLettersPage = signedIn("Dead letters", "dead-letters", () =>
  Effect.gen(function*() {
    const p = yield* params
    p.delete("signed_in")
    const q = yield* ExplorerApi.parseDeadLetters(p)
    const r = yield* ExplorerApi.deadLetters(q)
    const destinations = yield* ExplorerApi.knownDestinations
    const shown = q.destination !== undefined ? [q.destination] : destinations
    return html`<h1>Dead letters</h1>
<form method="get" action="/ui/dead-letters" class="filters">
<label>Destination<select name="destination" data-autosubmit>${
      options(destinations, q.destination, "all")
    }</select></label>
<button type="submit">Show</button>
</form>
<p class="hint">Events a destination gave up on (too many attempts, or failing for too long). Redrive queues them for a new
round of attempts; an optional text keeps only those whose reason contains it.</p>
<table class="grid" id="redrive-table">
<thead><tr><th>Destination</th><th>Dead letters</th><th>Redrive</th></tr></thead>
<tbody>
${
      shown.map((d) =>
        html`<tr data-destination="${d}"><td>${d}</td><td data-col="dead_letters">${r.totals[d] ?? 0}</td><td>
<form class="redrive" data-destination="${d}">
<input name="reason" placeholder="reason contains… (optional)" aria-label="Redrive only reasons containing">
<button type="submit"${(r.totals[d] ?? 0) === 0 ? new Raw(" disabled") : ""}>Redrive</button>
<output class="redrive-result" aria-live="polite"></output>
</form></td></tr>`
      )
    }
</tbody>
</table>
<h2>Latest dead letters</h2>
<table class="grid" id="dead-letters">
<thead><tr><th>Dead-lettered at</th><th>Destination</th><th>Event id</th><th>Event</th><th>Event time</th><th>Attempts</th><th>Reason</th></tr></thead>
<tbody>
${
      r.dead_letters.length === 0
        ? html`<tr><td colspan="7" class="empty">No dead letters.</td></tr>`
        : r.dead_letters.map((x) =>
          html`<tr data-event-id="${x.event_id}"><td>${fmtTime(x.dead_lettered_at)}</td><td>${x.destination}</td>
<td><a href="/ui/events/${encodeURIComponent(x.event_id)}">${x.event_id}</a></td><td>${x.event}</td>
<td>${fmtTime(x.timestamp)}</td><td>${x.attempts}</td><td>${x.reason ?? ""}</td></tr>`
        )
    }
</tbody>
</table>`
  }))

// Health ----------------------------------------------------------------------------------------------------------------

const lag = (s: number | null) =>
  s === null ? "—" : s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`

const healthPage = signedIn("Health", "health", () =>
  Effect.gen(function*() {
    const rows = yield* ExplorerApi.health()
    return html`<h1>Destination health</h1>
<p class="hint">State, counters and last error are this process's (since it started); backlog, retry queue, dead letters,
lag and last failure come from the store.</p>
<table class="grid" id="health">
<thead><tr><th>Destination</th><th>Plugin</th><th>State</th><th>Backlog</th><th>Retry queue</th><th>Dead letters</th><th>Lag</th><th>Last success</th><th>Last error</th><th>Sent / accepted / rejected / dropped</th></tr></thead>
<tbody>
${
      rows.map((h) =>
        html`<tr data-destination="${h.destination}" data-state="${h.state}">
<td>${h.destination}</td><td>${h.plugin} ${h.pluginVersion}</td>
<td>${badge(h.state)}${h.reason ? html`<div class="small">${h.reason}</div>` : ""}${
          h.resumeAt ? html`<div class="small">resumes at ${fmtTime(h.resumeAt)}</div>` : ""
        }</td>
<td data-col="backlog">${h.backlog}</td><td data-col="retry_queue">${h.retry_queue}</td>
<td data-col="dead_letters"><a href="/ui/dead-letters${
          query({ destination: h.destination })
        }">${h.dead_letters}</a></td>
<td data-col="lag">${lag(h.lag_seconds)}</td><td>${fmtTime(h.lastSuccessAt)}</td>
<td class="small">${
          h.lastError ?? (h.last_failure
            ? `${h.last_failure.outcome} at ${fmtTime(h.last_failure.at)}: ${h.last_failure.reason ?? ""}`
            : "—")
        }</td>
<td>${h.sent} / ${h.accepted} / ${h.rejected} / ${h.dropped}</td>
</tr>`
      )
    }
</tbody>
</table>`
  }))

// ---------------------------------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------------------------------

/** `GET /ui/assets/explorer.js`. */
export const scriptHandler = assetResponse(SCRIPT, "text/javascript; charset=utf-8")
/** `GET /ui/assets/explorer.css`. */
export const styleHandler = assetResponse(STYLE, "text/css; charset=utf-8")

export {
  deadLettersPage as deadLettersPageHandler,
  detailPage as eventPageHandler,
  healthPage as healthPageHandler,
  indexHandler,
  loginHandler,
  logoutHandler,
  reconciliationPage as reconciliationPageHandler,
  searchPage as searchPageHandler
}

/**
 * Wraps an admin handler that knows only bearer keys (redrive) for the explorer: a signed-in browser's request with
 * its CSRF header runs it as the admin (ExplorerSession.admitSession).
 */
export const forSession = ExplorerSession.admitSession
