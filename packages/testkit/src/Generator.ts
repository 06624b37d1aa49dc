/**
 * A deterministic generator of realistic canonical journeys (contract v1) with current timestamps, for live demos,
 * benchmarks and tests.
 *
 * `generate` is pure for a given `seed` + `now`: it draws from a seeded PRNG (mulberry32, one stream per person, so
 * person `k`'s journey does not depend on how many people are generated) and never reads the clock unless `now` is
 * omitted. Every event it returns decodes with `Contract.decodeEvent(event, now)` and its properties with
 * `Vocabulary.decodeProperties` against `Vocabulary.canonical`.
 *
 * A journey: anonymous `view_pricing` on a device (web or app, with click ids) → `sign_up` joining `user_id` and
 * `device_id` with personal data → `start_trial` (sometimes in an experiment) → `purchase` (sometimes reported a
 * second time by the web source under another `event_id`: a business-key duplicate) → `subscription_renewed` /
 * `refund`; B2B people also produce a `qualified_lead`. Consent varies per person: granted, advertising denied on the
 * first event (sometimes granted later), or never sent.
 */
import type { Contract } from "@tracklayer/core"

/** One generated event: exactly the wire shape of `POST /v1/events`. */
export type GeneratedEvent = Contract.EventWire

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Number of people (journeys); a positive integer. */
  readonly people: number
  /** PRNG seed, an integer in [0, 2^32). Default {@link DEFAULT_SEED}. */
  readonly seed?: number
  /** Epoch ms every timestamp is placed before. Default `Date.now()` (the only impure input). */
  readonly now?: number
  /** Timestamps fall within this many days before `now`. Default {@link DEFAULT_SPAN_DAYS}. */
  readonly spanDays?: number
}

/** Counts over a list of events (see {@link summary}). */
export interface Summary {
  /** Number of events. */
  readonly events: number
  /** Distinct people: `user_id` / `device_id` joined when an event carries both (e.g. a sign-up on a device). */
  readonly people: number
  /** Event name → number of events, names in order of first appearance. */
  readonly byEvent: Readonly<Record<string, number>>
  /** `purchase` events whose `order_id` was already reported by an earlier event (business-key duplicates). */
  readonly duplicateOrderReports: number
}

export const DEFAULT_SEED = 42
export const DEFAULT_SPAN_DAYS = 3

const HOUR = 3_600_000
const MINUTE = 60_000
const SECOND = 1_000
const DAY = 24 * HOUR

// ---------------------------------------------------------------------------------------------------------------
// PRNG

/** murmur3's 32-bit finaliser: a bijection on uint32, so distinct inputs give distinct ids. */
const fmix32 = (input: number): number => {
  let h = input >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** mulberry32: a tiny, fast 32-bit PRNG; returns floats in [0, 1). */
const mulberry32 = (seed: number): () => number => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

class Rng {
  private readonly next: () => number
  constructor(seed: number) {
    this.next = mulberry32(seed)
  }
  /** Float in [0, 1). */
  float(): number {
    return this.next()
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p
  }
  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }
  /** Float in [min, max). */
  between(min: number, max: number): number {
    return min + this.next() * (max - min)
  }
  pick<A>(items: ReadonlyArray<A>): A {
    return items[Math.floor(this.next() * items.length)]!
  }
  /** Picks by weight: `[[weight, value], …]`. */
  weighted<A>(items: ReadonlyArray<readonly [number, A]>): A {
    const total = items.reduce((sum, [w]) => sum + w, 0)
    let r = this.next() * total
    for (const [w, v] of items) {
      r -= w
      if (r < 0) return v
    }
    return items[items.length - 1]![1]
  }
  digits(n: number): string {
    let s = ""
    for (let i = 0; i < n; i++) s += String(this.int(0, 9))
    return s
  }
  chars(n: number, alphabet: string): string {
    let s = ""
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)]
    return s
  }
  hex(n: number): string {
    return this.chars(n, "0123456789abcdef")
  }
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
const B64URL = ALNUM + "-_"

// ---------------------------------------------------------------------------------------------------------------
// Reference data (addresses and numbers from documentation / fictional ranges where one exists)

type Currency = "USD" | "EUR" | "GBP" | "CAD"

interface CountryData {
  readonly code: string
  readonly currency: Currency
  readonly firstNames: ReadonlyArray<string>
  readonly lastNames: ReadonlyArray<string>
  readonly cities: ReadonlyArray<{ readonly city: string; readonly region: string; readonly postal: () => string }>
  readonly emailDomains: ReadonlyArray<string>
  readonly phone: (r: Rng) => string
}

const usPhone = (r: Rng, areas: ReadonlyArray<string>): string => {
  const area = r.pick(areas)
  const line = `01${r.digits(2)}` // 555-0100…0199 is reserved for fiction
  return r.pick([
    `(${area}) 555-${line}`,
    `+1 ${area}-555-${line}`,
    `${area}.555.${line}`,
    `+1 (${area}) 555-${line}`,
    `${area}5550${line.slice(1)}`
  ])
}

const COUNTRIES: ReadonlyArray<readonly [number, CountryData]> = [
  [30, {
    code: "US",
    currency: "USD",
    firstNames: ["James", "Emily", "Michael", "Olivia", "Daniel", "Sophia", "Ethan", "Ava", "Noah", "Madison", "Sam"],
    lastNames: ["Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Lee", "Walker", "O'Connor"],
    cities: [
      { city: "San Francisco", region: "CA", postal: () => "94107" },
      { city: "Austin", region: "TX", postal: () => "78701" },
      { city: "New York", region: "NY", postal: () => "10001" },
      { city: "Seattle", region: "WA", postal: () => "98101" }
    ],
    emailDomains: ["example.com", "mail.example", "example.net"],
    phone: (r) => usPhone(r, ["650", "415", "212", "512", "206"])
  }],
  [20, {
    code: "DE",
    currency: "EUR",
    firstNames: ["Jana", "Lukas", "Anna", "Felix", "Lea", "Jonas", "Marie", "Paul", "Sophie", "Jürgen"],
    lastNames: ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann"],
    cities: [
      { city: "Berlin", region: "BE", postal: () => "10115" },
      { city: "München", region: "BY", postal: () => "80331" },
      { city: "Hamburg", region: "HH", postal: () => "20095" }
    ],
    emailDomains: ["example.de", "mail.example"],
    phone: (r) => {
      const pre = r.pick(["151", "160", "170", "176"])
      const a = r.digits(4)
      const b = r.digits(4)
      return r.pick([
        `+49 ${pre} ${a}${b}`,
        `+49 ${pre} ${a} ${b}`,
        `0${pre} ${a}${b}`,
        `0049 ${pre} ${a}${b}`,
        `+49 (0)${pre} ${a} ${b}`
      ])
    }
  }],
  [15, {
    code: "FR",
    currency: "EUR",
    firstNames: ["Léa", "Hugo", "Camille", "Louis", "Chloé", "Lucas", "Manon", "Gabriel", "Inès"],
    lastNames: ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Lefèvre"],
    cities: [
      { city: "Paris", region: "IDF", postal: () => "75001" },
      { city: "Lyon", region: "ARA", postal: () => "69001" },
      { city: "Marseille", region: "PAC", postal: () => "13001" }
    ],
    emailDomains: ["example.fr", "mail.example"],
    phone: (r) => {
      const p = [r.pick(["6", "7"]), r.digits(2), r.digits(2), r.digits(2), r.digits(2)]
      return r.pick([
        `0033 ${p.join(" ")}`,
        `+33 ${p.join(" ")}`,
        `0${p.join(" ")}`,
        `+33${p.join("")}`,
        `0${p.join(".")}`
      ])
    }
  }],
  [15, {
    code: "GB",
    currency: "GBP",
    firstNames: ["Oliver", "Amelia", "Harry", "Isla", "George", "Poppy", "Jack", "Freya"],
    lastNames: ["Jones", "Taylor", "Evans", "Wilson", "Thomas", "Roberts", "Wright", "Hughes"],
    cities: [
      { city: "London", region: "ENG", postal: () => "SW1A 1AA" },
      { city: "Manchester", region: "ENG", postal: () => "M1 1AE" },
      { city: "Edinburgh", region: "SCT", postal: () => "EH1 1YZ" }
    ],
    emailDomains: ["example.co.uk", "mail.example"],
    phone: (r) => {
      const n = r.digits(3) // 07700 900000…900999 is reserved for drama
      return r.pick([`+44 7700 900${n}`, `07700 900${n}`, `+44 (0)7700 900 ${n}`, `+447700900${n}`])
    }
  }],
  [10, {
    code: "CA",
    currency: "CAD",
    firstNames: ["Liam", "Charlotte", "William", "Emma", "Benjamin", "Chloe"],
    lastNames: ["Tremblay", "Roy", "Gagnon", "Campbell", "Anderson", "Wong"],
    cities: [
      { city: "Toronto", region: "ON", postal: () => "M5V 2T6" },
      { city: "Montréal", region: "QC", postal: () => "H2Y 1C6" },
      { city: "Vancouver", region: "BC", postal: () => "V6B 1A1" }
    ],
    emailDomains: ["example.ca", "mail.example"],
    phone: (r) => usPhone(r, ["416", "514", "604"])
  }],
  [10, {
    code: "ES",
    currency: "EUR",
    firstNames: ["Lucía", "Hugo", "Sofía", "Martín", "Paula", "Mateo"],
    lastNames: ["García", "Fernández", "González", "Rodríguez", "López", "Martínez"],
    cities: [
      { city: "Madrid", region: "MD", postal: () => "28013" },
      { city: "Barcelona", region: "CT", postal: () => "08002" }
    ],
    emailDomains: ["example.es", "mail.example"],
    phone: (r) => {
      const d = `6${r.digits(8)}`
      return r.pick([
        `+34 ${d.slice(0, 3)} ${d.slice(3, 5)} ${d.slice(5, 7)} ${d.slice(7)}`,
        `${d.slice(0, 3)} ${d.slice(3, 6)} ${d.slice(6)}`,
        `0034${d}`
      ])
    }
  }]
]

const COMPANIES: ReadonlyArray<string> = [
  "Acme Corp",
  "Globex",
  "Initech",
  "Umbrella Analytics",
  "Hooli",
  "Stark Logistics",
  "Wayne Labs",
  "Vandelay Imports",
  "Soylent Foods",
  "Cyberdyne Systems",
  "Tyrell Data",
  "Nakatomi Trading",
  "Pied Piper",
  "Dunder Paper"
]

const WEB_USER_AGENTS: ReadonlyArray<string> = [
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
]

const APP_USER_AGENTS: ReadonlyArray<string> = [
  "TrackLayerDemo/3.2.1 (iPhone; iOS 17.4; Scale/3.00)",
  "TrackLayerDemo/3.2.0 (iPad; iOS 17.3; Scale/2.00)",
  "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)",
  "Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)"
]

const ipAddress = (r: Rng): string =>
  r.weighted<() => string>([
    [3, () => `203.0.113.${r.int(1, 254)}`],
    [3, () => `198.51.100.${r.int(1, 254)}`],
    [2, () => `192.0.2.${r.int(1, 254)}`],
    [2, () => `2001:db8:${r.hex(4).replace(/^0+(?=.)/, "")}::${r.hex(2).replace(/^0+(?=.)/, "")}`]
  ])()

const PLANS = {
  pro: { USD: 29, EUR: 27, GBP: 24, CAD: 39 },
  team: { USD: 99, EUR: 89.9, GBP: 79, CAD: 129 },
  business: { USD: 249, EUR: 229, GBP: 199, CAD: 329 }
} as const
type Plan = keyof typeof PLANS

const EXPERIMENTS: ReadonlyArray<{ readonly key: string; readonly variants: ReadonlyArray<string> }> = [
  { key: "onboarding_flow", variants: ["control", "guided"] },
  { key: "paywall_copy", variants: ["a", "b"] },
  { key: "pricing_page_layout", variants: ["control", "annual_first", "comparison_table"] },
  { key: "trial_length", variants: ["14d", "30d"] }
]

// ---------------------------------------------------------------------------------------------------------------
// Formatting helpers

/** ISO 8601 in UTC with `Z`; whole seconds are written without `.000`. */
const isoZ = (ms: number): string => {
  const s = new Date(ms).toISOString()
  return s.endsWith(".000Z") ? `${s.slice(0, -5)}Z` : s
}

const slug = (s: string): string =>
  s.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase().replace(/[^a-z0-9]+/g, "")

const capitalise = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1)

/** Inserts dots into a Gmail local part at random places (Gmail ignores them). */
const sprinkleDots = (r: Rng, local: string): string => {
  const chars = local.replace(/\./g, "").split("")
  return chars.map((c, i) => (i > 0 && i < chars.length - 1 && r.chance(0.2) ? `.${c}` : c)).join("")
}

const makeEmail = (r: Rng, first: string, last: string, c: CountryData): string => {
  const f = slug(first) || "user"
  const l = slug(last) || "person"
  const gmail = r.chance(0.4)
  const domain = gmail ? r.weighted([[9, "gmail.com"], [1, "googlemail.com"]]) : r.pick(c.emailDomains)
  let local = r.weighted<() => string>([
    [4, () => `${f}.${l}`],
    [2, () => `${f}${l}`],
    [2, () => `${f.charAt(0)}.${l}`],
    [1, () => `${f}_${l}${r.int(1, 99)}`],
    [1, () => `${f}${r.int(1970, 2005)}`]
  ])()
  if (gmail && r.chance(0.35)) local = sprinkleDots(r, local)
  if (gmail && r.chance(0.3)) local += `+${r.pick(["trial", "saas", "news", "tracklayer", "work"])}`
  let email = `${local}@${domain}`
  // Mixed case as people type it: capitalised names, a capitalised or shouting domain.
  email = r.weighted<() => string>([
    [7, () => email],
    [2, () => `${local.split(".").map(capitalise).join(".")}@${capitalise(domain)}`],
    [1, () => `${local}@${domain.toUpperCase()}`]
  ])()
  if (r.chance(0.02)) email = ` ${email} ` // stray whitespace from a form
  return email
}

// ---------------------------------------------------------------------------------------------------------------
// Journeys

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
type UserWire = Mutable<NonNullable<GeneratedEvent["user"]>>
type ContextWire = Mutable<NonNullable<GeneratedEvent["context"]>>

/** An event before its time is fixed: `gap` is the delay after the previous event of the journey. */
interface Step {
  readonly gap: number
  readonly event: string
  /** Timestamp written as epoch ms rather than ISO. */
  readonly asMs: boolean
  /** Server-side events are stamped at whole seconds. */
  readonly wholeSeconds: boolean
  readonly build: (t: number) => Omit<Mutable<GeneratedEvent>, "event_id" | "event" | "timestamp">
}

/** Keys that make ids unique per seed: distinct persons map to distinct ids (fmix32 is a bijection). */
const idKeys = (seed: number) => ({
  device: fmix32(seed ^ 0x1b873593),
  user: fmix32(seed ^ 0x27d4eb2f),
  order: fmix32(seed ^ 0x165667b1),
  sub: fmix32(seed ^ 0x5bd1e995)
})

const hex8 = (n: number): string => n.toString(16).padStart(8, "0")

const journey = (seed: number, person: number, spanMs: number, keys: ReturnType<typeof idKeys>) => {
  const r = new Rng(fmix32(fmix32(seed) ^ Math.imul(person, 0x9e3779b1)))
  const steps: Array<Step> = []
  const push = (step: Omit<Step, "asMs">) => steps.push({ ...step, asMs: r.chance(0.1) })

  const country = r.weighted(COUNTRIES)
  const platform: "web" | "app" = r.chance(0.7) ? "web" : "app"
  const deviceId = `${platform}_${hex8(fmix32((person + keys.device) >>> 0))}`
  const userId = `usr_${hex8(fmix32((person + keys.user) >>> 0))}`
  const ip = ipAddress(r)
  const userAgent = platform === "web" ? r.pick(WEB_USER_AGENTS) : r.pick(APP_USER_AGENTS)
  const b2b = r.chance(0.15)

  // Acquisition: which click ids this person arrived with.
  const fromMeta = r.chance(platform === "web" ? 0.3 : 0.2)
  const fromGoogle = !fromMeta && r.chance(0.35)
  const fromLinkedIn = !fromMeta && !fromGoogle && r.chance(b2b ? 0.6 : 0.08)
  const fbclid = `IwAR${r.chars(r.int(20, 40), B64URL)}`
  const fbp = platform === "web" && r.chance(0.65) ? { ageMs: r.int(0, 60 * DAY), rand: r.digits(10) } : undefined
  const googleId = `${r.pick(["Cj0KCQjw", "EAIaIQob", "CjwKCAjw"])}${r.chars(r.int(40, 70), B64URL)}`
  const googleKey = platform === "app" || r.chance(0.15) ? "gbraid" : "gclid"
  const liFatId = `${r.hex(8)}-${r.hex(4)}-${r.hex(4)}-${r.hex(4)}-${r.hex(12)}`
  const channel = fromMeta ? "paid_social" : fromGoogle ? "paid_search" : fromLinkedIn ?
    "paid_social_b2b" :
    r.weighted([[5, "organic"], [2, "direct"], [2, "referral"], [1, "email"]])

  // Consent: granted on the first event, advertising denied on it (sometimes granted at sign-up), or never sent.
  const consentMode = r.weighted<"grant" | "deny" | "analytics_only" | "omit">(
    [[45, "grant"], [20, "deny"], [5, "analytics_only"], [30, "omit"]]
  )
  const grantsLater = consentMode === "deny" && r.chance(0.25)

  // Funnel.
  const signsUp = r.chance(b2b ? 0.6 : 0.7)
  const leadFormOnly = b2b && !signsUp && r.chance(0.7)
  const trials = signsUp && r.chance(0.65)
  const plan: Plan = b2b ? r.weighted([[3, "team"], [1, "business"]]) : r.weighted([[4, "pro"], [1, "team"]])
  const buys = (trials && r.chance(0.55)) || (signsUp && !trials && r.chance(0.1)) || (leadFormOnly && r.chance(0.2))
  const duplicateReport = buys && r.chance(0.25)
  const renews = buys && r.chance(0.3)
  const refunds = buys && r.chance(0.07)

  const first = r.pick(country.firstNames)
  const last = r.pick(country.lastNames)
  const company = r.pick(COMPANIES)
  const companyDomain = `${slug(company)}.example`
  const email = b2b
    ? r.weighted([[3, `${slug(first)}.${slug(last)}@${companyDomain}`], [
      1,
      `${capitalise(slug(first))}@${companyDomain}`
    ]])
    : makeEmail(r, first, last, country)
  const hasPhone = r.chance(b2b ? 0.5 : 0.35)
  const phone = country.phone(r)
  const where = r.pick(country.cities)
  const workspaceSize = r.weighted<() => number>([[3, () => r.int(2, 10)], [2, () => r.int(11, 50)], [
    1,
    () => r.int(51, 500)
  ]])()
  const currency = country.currency
  const experiment = r.chance(0.5) ? r.pick(EXPERIMENTS) : undefined
  const variant = experiment ? r.pick(experiment.variants) : undefined
  const trialDays = experiment?.key === "trial_length" ? (variant === "30d" ? 30 : 14) : r.pick([7, 14, 14, 30])
  const seats = plan === "pro" ? 1 : Math.max(1, Math.min(workspaceSize, r.int(2, 25)))
  const unitPrice: number = PLANS[plan][currency]
  const amount = Math.round(unitPrice * seats * 100) / 100
  const orderId = `ord_${hex8(fmix32((person + keys.order) >>> 0))}`
  const subscriptionId = `sub_${hex8(fmix32((person + keys.sub) >>> 0))}`

  const consentFirst = consentMode === "grant"
    ? { analytics: true, advertising: true, crm: true }
    : consentMode === "deny"
    ? r.pick([{ analytics: true, advertising: false, crm: false }, { analytics: true, advertising: false, crm: true }])
    : consentMode === "analytics_only"
    ? { analytics: true, advertising: false }
    : undefined

  // Cookies set on the first view persist: later views carry the same fbc / fbp.
  const cookies: { fbc?: string; fbp?: string } = {}

  // 1. Anonymous pricing view(s) on the device.
  const views = r.chance(0.2) ? 2 : 1
  for (let v = 0; v < views; v++) {
    const firstView = v === 0
    push({
      gap: firstView ? 0 : r.int(2 * MINUTE, 6 * HOUR),
      event: "view_pricing",
      wholeSeconds: false,
      build: (t) => {
        const context: ContextWire = { source: platform, ip, user_agent: userAgent }
        if (platform === "web") {
          const utm = fromMeta ?
            `?utm_source=facebook&utm_medium=paid_social&fbclid=${fbclid}` :
            fromGoogle
            ? "?utm_source=google&utm_medium=cpc"
            : fromLinkedIn
            ? "?utm_source=linkedin&utm_medium=paid_social"
            : ""
          context.page_url = `https://www.example.com/pricing${firstView ? utm : ""}`
        }
        if (firstView && fromMeta) cookies.fbc = `fb.1.${t}.${fbclid}` // click time = time of this view
        if (firstView && fbp) cookies.fbp = `fb.1.${t - fbp.ageMs}.${fbp.rand}`
        const clickIds: Record<string, string> = {}
        if (cookies.fbc !== undefined) clickIds.fbc = cookies.fbc
        if (cookies.fbp !== undefined) clickIds.fbp = cookies.fbp
        if (fromGoogle) clickIds[googleKey] = googleId
        if (fromLinkedIn) clickIds.li_fat_id = liFatId
        if (Object.keys(clickIds).length > 0) context.click_ids = clickIds
        const out: ReturnType<Step["build"]> = { device_id: deviceId, context }
        if (firstView && consentFirst) out.consent = consentFirst
        if (r.chance(0.3)) out.properties = { plan: r.pick(["pro", "team", "business"]) }
        return out
      }
    })
  }

  // 2. Sign-up: the identity join (user_id + device_id) with personal data.
  if (signsUp) {
    push({
      gap: r.int(1 * MINUTE, 40 * MINUTE),
      event: "sign_up",
      wholeSeconds: true,
      build: () => {
        const user: UserWire = { email }
        if (hasPhone) user.phone = phone
        if (r.chance(0.8)) {
          user.first_name = first
          user.last_name = last
        }
        if (r.chance(0.9) || (hasPhone && !phone.startsWith("+") && !phone.startsWith("00"))) {
          user.country = country.code
        }
        if (r.chance(0.4)) {
          user.city = where.city
          user.region = where.region
          user.postal_code = where.postal()
        }
        const context: ContextWire = { source: "server", ip, user_agent: userAgent }
        if (platform === "web") context.page_url = "https://app.example.com/signup"
        const userProperties: Record<string, unknown> = {
          plan: "free",
          lifecycle_stage: "signed_up",
          acquisition_channel: channel
        }
        if (b2b) userProperties.workspace_size = workspaceSize
        const out: ReturnType<Step["build"]> = {
          user_id: userId,
          device_id: deviceId,
          user,
          context,
          properties: { method: r.weighted([[5, "email"], [3, "google"], [1, "apple"], [b2b ? 2 : 0, "sso"]]) },
          user_properties: userProperties
        }
        if (grantsLater) out.consent = { analytics: true, advertising: true, crm: true }
        return out
      }
    })
  }

  // 2b. B2B qualification: after sign-up, or straight from a demo-request form.
  if (b2b && (signsUp || leadFormOnly)) {
    push({
      gap: signsUp ? r.int(30 * MINUTE, 20 * HOUR) : r.int(2 * MINUTE, 2 * HOUR),
      event: "qualified_lead",
      wholeSeconds: true,
      build: () => {
        const properties: Record<string, unknown> = { company, workspace_size: workspaceSize }
        if (r.chance(0.4)) {
          properties.value = Math.round(unitPrice * workspaceSize * 12)
          properties.currency = currency
        }
        const context: ContextWire = { source: "server" }
        if (fromLinkedIn) context.click_ids = { li_fat_id: liFatId }
        const out: ReturnType<Step["build"]> = {
          user_id: userId,
          context,
          properties,
          user_properties: { workspace_size: workspaceSize, lifecycle_stage: "lead", acquisition_channel: channel }
        }
        if (!signsUp) {
          out.device_id = deviceId
          const user: UserWire = { email, first_name: first, last_name: last, country: country.code }
          if (hasPhone) user.phone = phone
          out.user = user
          if (consentMode !== "omit") out.consent = { analytics: true, advertising: consentMode === "grant", crm: true }
        }
        return out
      }
    })
  }

  // 3. Trial, sometimes inside an experiment.
  if (trials) {
    push({
      gap: r.int(30 * SECOND, 30 * MINUTE),
      event: "start_trial",
      wholeSeconds: true,
      build: () => {
        const context: ContextWire = { source: "server" }
        if (experiment && variant) context.experiments = [{ experiment_key: experiment.key, variant }]
        return {
          user_id: userId,
          context,
          properties: { trial_plan: plan, trial_days: trialDays },
          user_properties: { lifecycle_stage: "trialing" }
        }
      }
    })
  }

  // 4. Purchase, sometimes reported again by the web source (same order_id, another event_id).
  if (buys) {
    const valueAsString = r.chance(0.15)
    const currencyLower = r.chance(0.15)
    const productId = `${plan}_${r.pick(["monthly", "monthly", "annual"])}`
    const purchaseProperties = (): Record<string, unknown> => {
      const p: Record<string, unknown> = {
        value: valueAsString ? amount.toFixed(2) : amount,
        currency: currencyLower ? currency.toLowerCase() : currency,
        order_id: orderId
      }
      if (seats > 1) p.quantity = seats
      p.product_id = productId
      return p
    }
    push({
      gap: trials ? r.int(1 * HOUR, 40 * HOUR) : r.int(5 * MINUTE, 10 * HOUR),
      event: "purchase",
      wholeSeconds: true,
      build: (t) => {
        const out: ReturnType<Step["build"]> = {
          user_id: userId,
          context: { source: "server" },
          properties: purchaseProperties(),
          user_properties: {
            plan,
            lifecycle_stage: "active_customer",
            last_paid_at: isoZ(t),
            country: country.code
          }
        }
        if (r.chance(0.5)) out.device_id = deviceId
        return out
      }
    })
    if (duplicateReport) {
      push({
        gap: r.int(500, 8 * SECOND),
        event: "purchase",
        wholeSeconds: false,
        build: () => {
          const context: ContextWire = { source: "web", user_agent: userAgent }
          if (platform === "web") context.page_url = "https://app.example.com/checkout/complete"
          const out: ReturnType<Step["build"]> = { user_id: userId, context, properties: purchaseProperties() }
          if (platform === "web") out.device_id = deviceId
          return out
        }
      })
    }
  }

  // 5. Renewal of the subscription for a billing period.
  if (renews) {
    push({
      gap: r.int(2 * HOUR, 30 * HOUR),
      event: "subscription_renewed",
      wholeSeconds: true,
      build: (t) => {
        const properties: Record<string, unknown> = {
          subscription_id: subscriptionId,
          period: new Date(t).toISOString().slice(0, 7)
        }
        if (r.chance(0.8)) {
          properties.value = amount
          properties.currency = currency
        }
        return {
          user_id: userId,
          context: { source: "server" },
          properties,
          user_properties: { plan, lifecycle_stage: "active_customer", last_paid_at: isoZ(t) }
        }
      }
    })
  }

  // 6. Occasional refund, in full or in part.
  if (refunds) {
    push({
      gap: r.int(1 * HOUR, 20 * HOUR),
      event: "refund",
      wholeSeconds: true,
      build: () => ({
        user_id: userId,
        context: { source: "server" },
        properties: {
          value: r.chance(0.6) ? amount : Math.round(amount * r.between(0.2, 0.8) * 100) / 100,
          currency,
          order_id: orderId
        },
        user_properties: { lifecycle_stage: r.chance(0.5) ? "churned" : "active_customer" }
      })
    })
  }

  // Place the journey in [now - span, now): squeeze the gaps when the journey is longer than 90% of the span.
  const total = steps.reduce((sum, s) => sum + s.gap, 0)
  const factor = total > spanMs * 0.9 ? (spanMs * 0.9) / total : 1
  const room = spanMs - total * factor - MINUTE
  const startOffset = r.float() * Math.max(0, room)
  return { steps, factor, startOffset }
}

/**
 * Generates `people` journeys, as wire events sorted by timestamp (a stable sort: each journey keeps its order).
 * Deterministic for a given `seed` and `now`; event ids are `gen_<seed>_<person>_<n>` (person and n from 1).
 * Throws a `RangeError` for invalid options.
 */
export const generate = (options: GenerateOptions): ReadonlyArray<GeneratedEvent> => {
  const { people } = options
  const seed = options.seed ?? DEFAULT_SEED
  const now = options.now ?? Date.now()
  const spanDays = options.spanDays ?? DEFAULT_SPAN_DAYS
  if (!Number.isSafeInteger(people) || people < 1 || people > 0xffffffff) {
    throw new RangeError(`people must be a positive integer, got ${String(people)}`)
  }
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`seed must be an integer in [0, 4294967295], got ${String(seed)}`)
  }
  if (!Number.isFinite(now)) throw new RangeError(`now must be finite epoch milliseconds, got ${String(now)}`)
  if (!Number.isFinite(spanDays) || spanDays <= 0 || spanDays > 3650) {
    throw new RangeError(`spanDays must be a number in (0, 3650], got ${String(spanDays)}`)
  }
  const nowMs = Math.floor(now)
  const spanMs = Math.floor(spanDays * DAY)
  const windowStart = nowMs - spanMs
  const keys = idKeys(seed)

  const out: Array<{ readonly t: number; readonly event: GeneratedEvent }> = []
  for (let person = 1; person <= people; person++) {
    const { factor, startOffset, steps } = journey(seed, person, spanMs, keys)
    let t = windowStart + Math.ceil(startOffset)
    let offset = 0
    steps.forEach((step, i) => {
      offset += step.gap * factor
      let at = Math.max(t, windowStart + Math.ceil(startOffset + offset))
      if (step.wholeSeconds) at = Math.ceil(at / SECOND) * SECOND
      t = Math.min(at, nowMs - 1)
      const body = step.build(t)
      // Fields in the contract's order, so the NDJSON reads like the documentation.
      const event: Mutable<GeneratedEvent> = {
        event_id: `gen_${seed}_${person}_${i + 1}`,
        event: step.event,
        timestamp: step.asMs ? t : isoZ(t)
      }
      if (body.user_id !== undefined) event.user_id = body.user_id
      if (body.device_id !== undefined) event.device_id = body.device_id
      if (body.user !== undefined) event.user = body.user
      if (body.context !== undefined) event.context = body.context
      if (body.consent !== undefined) event.consent = body.consent
      if (body.properties !== undefined) event.properties = body.properties
      if (body.user_properties !== undefined) event.user_properties = body.user_properties
      out.push({ t, event })
    })
  }
  return out.sort((a, b) => a.t - b.t).map((e) => e.event)
}

// ---------------------------------------------------------------------------------------------------------------
// Utilities over any list of wire events

/** One JSON object per line, each line ending in `\n` (empty input → empty string). */
export const toNdjson = (events: ReadonlyArray<unknown>): string => events.map((e) => `${JSON.stringify(e)}\n`).join("")

/** Parses NDJSON text (blank lines ignored) into wire events. Throws with the line number on invalid JSON. */
export const fromNdjson = (text: string): ReadonlyArray<GeneratedEvent> =>
  text.split(/\r?\n/).flatMap((line, i) => {
    if (line.trim() === "") return []
    try {
      return [JSON.parse(line) as GeneratedEvent]
    } catch (e) {
      throw new Error(`line ${i + 1}: invalid JSON (${e instanceof Error ? e.message : String(e)})`)
    }
  })

interface SummaryInput {
  readonly event: string
  readonly user_id?: string
  readonly device_id?: string
  readonly user?: { readonly email?: string; readonly phone?: string }
  readonly properties?: Readonly<Record<string, unknown>>
}

/** Counts per event name, duplicate order reports and distinct people. */
export const summary = (events: ReadonlyArray<SummaryInput>): Summary => {
  const byEvent: Record<string, number> = {}
  const orders = new Set<string>()
  let duplicateOrderReports = 0
  // Union-find over identifiers: an event carrying several joins them into one person.
  const parent = new Map<string, string>()
  const find = (x: string): string => {
    let root = x
    while (parent.get(root) !== root) root = parent.get(root)!
    let cur = x
    while (cur !== root) {
      const next = parent.get(cur)!
      parent.set(cur, root)
      cur = next
    }
    return root
  }
  for (const e of events) {
    byEvent[e.event] = (byEvent[e.event] ?? 0) + 1
    if (e.event === "purchase") {
      const orderId = e.properties?.order_id
      if (orderId !== undefined && orderId !== null && orderId !== "") {
        const key = String(orderId)
        if (orders.has(key)) duplicateOrderReports++
        else orders.add(key)
      }
    }
    const ids: Array<string> = []
    if (e.user_id !== undefined) ids.push(`u:${e.user_id}`)
    if (e.device_id !== undefined) ids.push(`d:${e.device_id}`)
    if (ids.length === 0 && e.user?.email !== undefined) ids.push(`e:${e.user.email.trim().toLowerCase()}`)
    if (ids.length === 0 && e.user?.phone !== undefined) ids.push(`p:${e.user.phone}`)
    for (const id of ids) if (!parent.has(id)) parent.set(id, id)
    for (let i = 1; i < ids.length; i++) {
      const a = find(ids[0]!)
      const b = find(ids[i]!)
      if (a !== b) parent.set(b, a)
    }
  }
  let people = 0
  for (const [id, p] of parent) if (id === p) people++
  return { events: events.length, people, byEvent, duplicateOrderReports }
}

/** Parses a wire timestamp (ISO 8601 with offset, `+hhmm` accepted, or epoch ms) to epoch ms; NaN when invalid. */
const timestampMs = (t: string | number): number =>
  typeof t === "number" ? t : Date.parse(t.replace(/([+-]\d{2})(\d{2})$/, "$1:$2"))

const FB_COOKIE = /^(fb\.\d+\.)(\d{10,})(\..+)$/

/**
 * Shifts every event so the latest timestamp is exactly one hour before `now`, keeping all gaps. Each timestamp
 * keeps its format: epoch ms stay numbers, ISO strings come out as ISO in UTC with `Z` (without `.000` when the
 * result is a whole second). Shifted by the same amount, so they stay consistent with the events: the creation time
 * inside `context.click_ids.fbc` / `fbp` and `user_properties.last_paid_at` (ISO or ms). Returns new objects; an
 * unparseable `timestamp` throws.
 */
export const rebaseTime = <E extends { readonly timestamp: string | number }>(
  events: ReadonlyArray<E>,
  now: number
): Array<E> => {
  if (events.length === 0) return []
  const times = events.map((e, i) => {
    const ms = timestampMs(e.timestamp)
    if (!Number.isFinite(ms)) {
      const id = (e as { readonly event_id?: unknown }).event_id
      throw new Error(
        `rebaseTime: invalid timestamp ${JSON.stringify(e.timestamp)} in event ${typeof id === "string" ? id : `#${i}`}`
      )
    }
    return ms
  })
  const latest = times.reduce((a, b) => Math.max(a, b))
  const delta = Math.round(now - HOUR - latest)
  const shift = (
    v: string | number,
    ms: number
  ): string | number => (typeof v === "number" ? ms + delta : isoZ(ms + delta))

  return events.map((e, i) => {
    const next: Record<string, unknown> = { ...e, timestamp: shift(e.timestamp, times[i]!) }
    const context = (e as { readonly context?: unknown }).context
    if (isRecord(context) && isRecord(context.click_ids)) {
      const clickIds: Record<string, unknown> = { ...context.click_ids }
      let changed = false
      for (const key of ["fbc", "fbp"]) {
        const v = clickIds[key]
        const m = typeof v === "string" ? FB_COOKIE.exec(v) : null
        if (m) {
          clickIds[key] = `${m[1]}${Number(m[2]) + delta}${m[3]}`
          changed = true
        }
      }
      if (changed) next.context = { ...context, click_ids: clickIds }
    }
    const userProperties = (e as { readonly user_properties?: unknown }).user_properties
    if (isRecord(userProperties) && userProperties.last_paid_at !== undefined) {
      const v = userProperties.last_paid_at
      if (typeof v === "string" || typeof v === "number") {
        const ms = timestampMs(v)
        if (Number.isFinite(ms)) next.user_properties = { ...userProperties, last_paid_at: shift(v, ms) }
      }
    }
    return next as E
  })
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)
