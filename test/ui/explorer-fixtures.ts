/**
 * The explorer tests' known events and what reconciliation must say about them. Three Amplitude destinations:
 * `amplitude` (analytics), `ads` (analytics + advertising) and `dl` (analytics; its sandbox is down, so its routed
 * events dead-letter after 1 s). Over 2026-04-20/21 (UTC):
 * - x_anon_a, x_signup_a: consent analytics yes, advertising no (inline) → consent drops at ads;
 * - x_purchase_a: no inline consent; the person's choices from x_signup_a deny advertising → consent drop at ads;
 * - x_purchase_b: the same order (ord_x_1) and amount → a duplicate everywhere;
 * - x_weird: not in the vocabulary (stored with `unknownEvents: "store"`), with markup in its name and a property;
 * - x_short: user_id "ab" is shorter than Amplitude's minimum id length → invalid everywhere;
 * - x_late: 23:30 UTC on the 20th, which is 01:30 on the 21st in Europe/Berlin;
 * - x_trial: delivered (dead-lettered at dl);
 * - x_anon_d: analytics denied → consent drops everywhere.
 */
import { ADMIN_KEY, type HarnessOptions } from "../support/harness.js"

const yes = { analytics: true, advertising: true }

/** The events, in the order they are posted (log order). */
export const EXPLORER_EVENTS = [
  {
    event_id: "x_anon_a",
    event: "view_pricing",
    timestamp: "2026-04-20T09:00:00Z",
    device_id: "dev_x_a",
    consent: { analytics: true, advertising: false }
  },
  {
    event_id: "x_signup_a",
    event: "sign_up",
    timestamp: "2026-04-20T10:00:00Z",
    user_id: "usr_x_a",
    device_id: "dev_x_a",
    user: { email: "ann@example.com", country: "DE" },
    context: { ip: "203.0.113.9" },
    consent: { analytics: true, advertising: false }
  },
  {
    event_id: "x_purchase_a",
    event: "purchase",
    timestamp: "2026-04-20T11:00:00Z",
    user_id: "usr_x_a",
    properties: { value: 10, currency: "EUR", order_id: "ord_x_1" }
  },
  {
    event_id: "x_purchase_b",
    event: "purchase",
    timestamp: "2026-04-20T12:00:00Z",
    user_id: "usr_x_b",
    properties: { value: 10, currency: "EUR", order_id: "ord_x_1" },
    consent: yes
  },
  {
    event_id: "x_weird",
    event: "<img src=x onerror=alert(1)>",
    timestamp: "2026-04-20T13:00:00Z",
    user_id: "usr_x_b",
    properties: { note: "<script>alert('x')</script>" },
    consent: yes
  },
  { event_id: "x_short", event: "view_pricing", timestamp: "2026-04-20T14:00:00Z", user_id: "ab", consent: yes },
  { event_id: "x_late", event: "sign_up", timestamp: "2026-04-20T23:30:00Z", user_id: "usr_x_c", consent: yes },
  {
    event_id: "x_trial",
    event: "start_trial",
    timestamp: "2026-04-21T09:00:00Z",
    user_id: "usr_x_c",
    properties: { trial_plan: "pro", trial_days: 14 },
    consent: yes
  },
  {
    event_id: "x_anon_d",
    event: "view_pricing",
    timestamp: "2026-04-21T10:00:00Z",
    device_id: "dev_x_d",
    consent: { analytics: false, advertising: false }
  }
] as const

/** The gateway for these events (dead letters after 1 s of failures; unknown events stored, not rejected). */
export const explorerHarnessOptions: HarnessOptions = {
  destinations: [
    { id: "amplitude", startFrom: "beginning" },
    { id: "ads", startFrom: "beginning", purposes: ["analytics", "advertising"] },
    { id: "dl", startFrom: "beginning" }
  ],
  config: {
    unknownEvents: "store",
    delivery: {
      pollInterval: "50 millis",
      initialBackoff: "100 millis",
      maxBackoff: "300 millis",
      maxRetryAge: "1 second"
    }
  }
}

interface Counts {
  readonly received: number
  readonly accepted?: number
  readonly dead?: number
  readonly consent?: number
  readonly duplicate?: number
  readonly mapping?: number
  readonly invalid?: number
}

const row = (destination: string, day: string, c: Counts) => {
  const dropped = {
    consent: c.consent ?? 0,
    window: 0,
    mapping: c.mapping ?? 0,
    duplicate: c.duplicate ?? 0,
    invalid: c.invalid ?? 0,
    erased: 0,
    other: 0
  }
  const routed = (c.accepted ?? 0) + (c.dead ?? 0)
  return {
    destination,
    day,
    received: c.received,
    routed,
    dropped,
    dropped_total: Object.values(dropped).reduce((n, x) => n + x, 0),
    sent: routed,
    accepted: c.accepted ?? 0,
    rejected: 0,
    retrying: 0,
    dead_lettered: c.dead ?? 0,
    pending: 0,
    requests: null
  }
}

const skipped = { duplicate: 1, mapping: 1, invalid: 1 }

/** Reconciliation rows for 2026-04-20..21 once delivery has settled (dl dead-lettered, not yet redriven). */
export const expectedRows = (tz: "UTC" | "Europe/Berlin") =>
  tz === "UTC"
    ? [
      row("ads", "2026-04-20", { received: 7, accepted: 1, consent: 3, ...skipped }),
      row("ads", "2026-04-21", { received: 2, accepted: 1, consent: 1 }),
      row("amplitude", "2026-04-20", { received: 7, accepted: 4, ...skipped }),
      row("amplitude", "2026-04-21", { received: 2, accepted: 1, consent: 1 }),
      row("dl", "2026-04-20", { received: 7, dead: 4, ...skipped }),
      row("dl", "2026-04-21", { received: 2, dead: 1, consent: 1 })
    ]
    : [
      row("ads", "2026-04-20", { received: 6, accepted: 0, consent: 3, ...skipped }),
      row("ads", "2026-04-21", { received: 3, accepted: 2, consent: 1 }),
      row("amplitude", "2026-04-20", { received: 6, accepted: 3, ...skipped }),
      row("amplitude", "2026-04-21", { received: 3, accepted: 2, consent: 1 }),
      row("dl", "2026-04-20", { received: 6, dead: 3, ...skipped }),
      row("dl", "2026-04-21", { received: 3, dead: 2, consent: 1 })
    ]

/** Signs in through the form as a browser would; returns the session cookie to send back. */
export const signIn = async (url: string, next = "/ui/events") => {
  const res = await fetch(`${url}/ui/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ key: ADMIN_KEY, next }).toString(),
    redirect: "manual"
  })
  const setCookie = res.headers.get("set-cookie") ?? ""
  return {
    status: res.status,
    location: res.headers.get("location"),
    setCookie,
    cookie: setCookie.split(";")[0]!
  }
}
