/**
 * Phone numbers → E.164 (`+<country code><national significant number>`), without a phone-number library.
 *
 * A number written with `+`, `00` (or `011` when the default country is in the North American plan) is international.
 * Anything else is national and needs the event's country to get a calling code; the national trunk prefix (`0` in
 * most of Europe, `1` in North America) is dropped. The per-country lengths below are the usual lengths of the
 * national significant number (libphonenumber's "possible lengths", rounded to a range); they decide whether a number
 * without `+` already carries its calling code (`33612345678` with country FR) or not (`612345678`).
 */
import { resolveCountry } from "./regions.js"

interface Plan {
  /** Country calling code (digits). */
  readonly code: string
  /** National trunk prefix dropped when dialling from abroad (`""` when the country has none). */
  readonly trunk: string
  /** Shortest and longest national significant number. */
  readonly min: number
  readonly max: number
  /** Shape of a valid national significant number, where it is strict enough to check. */
  readonly shape?: RegExp
}

const plan = (code: string, trunk: string, min: number, max: number, shape?: RegExp): Plan =>
  shape === undefined ? { code, trunk, min, max } : { code, trunk, min, max, shape }

/** North American Numbering Plan: area code and exchange never start with 0 or 1. */
const NANP = /^[2-9]\d{2}[2-9]\d{6}$/

const PLANS: ReadonlyMap<string, Plan> = new Map([
  ["us", plan("1", "1", 10, 10, NANP)],
  ["ca", plan("1", "1", 10, 10, NANP)],
  ["gb", plan("44", "0", 7, 10)],
  ["de", plan("49", "0", 5, 15)],
  ["fr", plan("33", "0", 9, 9)],
  ["es", plan("34", "", 9, 9)],
  // Italy has no trunk prefix: the leading 0 of a landline is part of the number (+39 06 …).
  ["it", plan("39", "", 6, 11)],
  ["nl", plan("31", "0", 9, 9)],
  ["be", plan("32", "0", 8, 9)],
  ["at", plan("43", "0", 4, 13)],
  ["ch", plan("41", "0", 9, 9)],
  ["se", plan("46", "0", 7, 10)],
  ["dk", plan("45", "", 8, 8)],
  ["no", plan("47", "", 5, 8)],
  ["fi", plan("358", "0", 5, 12)],
  ["pl", plan("48", "", 9, 9)],
  ["pt", plan("351", "", 9, 9)],
  ["ie", plan("353", "0", 7, 10)],
  ["au", plan("61", "0", 9, 9)],
  ["nz", plan("64", "0", 8, 10)],
  ["jp", plan("81", "0", 9, 10)],
  ["br", plan("55", "0", 10, 11)],
  ["mx", plan("52", "", 10, 10)],
  ["in", plan("91", "0", 10, 10)],
  ["sg", plan("65", "", 8, 8)],
  ["za", plan("27", "0", 9, 9)],
  ["tr", plan("90", "0", 10, 10)],
  ["gr", plan("30", "", 10, 10)],
  ["cz", plan("420", "", 9, 9)],
  ["ro", plan("40", "0", 9, 9)],
  ["il", plan("972", "0", 8, 9)],
  ["ae", plan("971", "0", 8, 9)],
  ["hk", plan("852", "", 8, 8)],
  ["cn", plan("86", "0", 10, 11)],
  ["kr", plan("82", "0", 8, 10)]
])

/** Calling code → plan. Calling codes are prefix-free, so at most one code matches the start of a number. */
const PLAN_BY_CODE: ReadonlyMap<string, Plan> = new Map([...PLANS.values()].map((p) => [p.code, p]))

const planOfNumber = (digits: string): Plan | undefined => {
  for (let n = 1; n <= 3; n++) {
    const p = PLAN_BY_CODE.get(digits.slice(0, n))
    if (p !== undefined) return p
  }
  return undefined
}

const fits = (p: Plan, nsn: string): boolean =>
  nsn.length >= p.min && nsn.length <= p.max && (p.shape === undefined || p.shape.test(nsn))

/** E.164 allows at most 15 digits; fewer than 7 is never a reachable subscriber number. */
const e164 = (digits: string): string | undefined => /^[1-9]\d{6,14}$/.test(digits) ? `+${digits}` : undefined

/** `+<digits>` already split from its international prefix: check it against the plan of its calling code. */
const international = (digits: string): string | undefined => {
  const p = planOfNumber(digits)
  if (p === undefined) return e164(digits)
  let nsn = digits.slice(p.code.length)
  // `+33 0 6 12 34 56 78`: a trunk prefix written after the calling code is not dialled.
  if (p.trunk === "0" && nsn.startsWith("0") && fits(p, nsn.slice(1))) nsn = nsn.slice(1)
  return fits(p, nsn) ? e164(p.code + nsn) : undefined
}

/** A national number (no `+`/`00`) in the default country's plan. */
const national = (p: Plan, digits: string): string | undefined => {
  const hasTrunk = p.trunk !== "" && digits.startsWith(p.trunk)
  if (hasTrunk && fits(p, digits.slice(p.trunk.length))) return e164(p.code + digits.slice(p.trunk.length))
  const carriesCode = digits.startsWith(p.code) && digits.length > p.code.length
  // A country with a trunk prefix writes national numbers with it, so a number starting with its calling code is
  // taken as international first; without a trunk prefix (ES, IT, DK…) a number of national length is national.
  if (p.trunk !== "" && carriesCode) {
    const carried = e164OfCarried(p, digits)
    if (carried !== undefined) return carried
  }
  if (fits(p, digits)) return e164(p.code + digits)
  return carriesCode ? e164OfCarried(p, digits) : undefined
}

/** `33612345678` or `330612345678` with country FR: the calling code is already there. */
const e164OfCarried = (p: Plan, digits: string): string | undefined => {
  const nsn = digits.slice(p.code.length)
  if (fits(p, nsn)) return e164(digits)
  if (p.trunk !== "" && nsn.startsWith(p.trunk) && fits(p, nsn.slice(p.trunk.length))) {
    return e164(p.code + nsn.slice(p.trunk.length))
  }
  return undefined
}

/** Extension suffixes (`x123`, `ext. 123`, `#123`, `;ext=123`) are not part of the number. */
const EXTENSION = /(?:;\s*ext=|\s*(?:extension|ext\.?|x|#))\s*\d{1,7}\s*$/i

/** Options for `normalizePhone`. */
export interface PhoneOptions {
  /** The person's country (ISO 3166-1 alpha-2, any case; names and alpha-3 are accepted too), for national numbers. */
  readonly defaultCountry?: string | undefined
}

/**
 * E.164 form of a phone number (`+33612345678`), or undefined when it is unusable.
 * Without a usable default country, a number without `+`/`00` is taken to include its calling code already (the
 * assumption of both Meta's and Google's formatters); one that starts with a trunk `0` is then unusable.
 */
export const toE164 = (raw: string, options?: PhoneOptions): string | undefined => {
  const s = raw.normalize("NFKC").trim().replace(EXTENSION, "")
  // `+44 (0)20 7946 0958`: the bracketed trunk zero is not dialled from abroad.
  const kept = s.replace(/\(\s*0\s*\)/g, "").replace(/[^\d+]/g, "")
  if (kept.lastIndexOf("+") > 0) return undefined
  if (kept.startsWith("+")) return international(kept.slice(1))
  const digits = kept
  if (digits.length === 0) return undefined
  if (digits.startsWith("00")) return international(digits.slice(2))
  const country = options?.defaultCountry === undefined ? undefined : resolveCountry(options.defaultCountry)
  const p = country === undefined ? undefined : PLANS.get(country)
  if (p !== undefined) {
    if (p.code === "1" && digits.startsWith("011")) return international(digits.slice(3))
    return national(p, digits)
  }
  if (digits.startsWith("0")) return undefined
  return international(digits)
}
