/**
 * PII normalisation and SHA-256 hashing, per destination: Meta Conversions API `user_data`, Google Data Manager
 * `UserIdentifier` / `AddressInfo`, LinkedIn `SHA256_EMAIL`. The rules, their sources and examples are in
 * `docs/pii-normalisation.md`.
 *
 * Every function is pure and total: an empty, malformed or unusable value gives `undefined` (the field is left out),
 * never an exception and never the hash of an empty string. Every value is put in Unicode NFC form first; rules that
 * lowercase use the Unicode default (locale-independent) mapping. A value that already is a SHA-256 digest (64 hex
 * characters once trimmed) is passed through, lowercased, and not hashed again.
 */
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import { toYyyyMmDd } from "./internal/pii/date.js"
import { type PhoneOptions, toE164 } from "./internal/pii/phone.js"
import { resolveCountry, resolveUsCaState } from "./internal/pii/regions.js"
import { foldMarks, hasLetter, lower, nfc, text } from "./internal/pii/text.js"

/** A hashed identifier. `normalized` is raw PII: put only `hash` in payloads and logs. */
export interface Hashed {
  /** The normalised value that was hashed; undefined when the input already was a SHA-256 digest (passed through). */
  readonly normalized: string | undefined
  /** SHA-256 of `normalized` (UTF-8), or the digest passed through: 64 lowercase hex characters. */
  readonly hash: string
}

/** A raw field value as it arrives (numbers are read as their decimal text). */
export type Input = string | number | null | undefined

/** A field rule: the normalised form of a raw value, or undefined when the value is unusable. */
export type Rule = (raw: string) => string | undefined

/** Options for phone rules: the person's country, needed to give a national number its calling code. */
export type { PhoneOptions }

const SHA256 = /^[0-9a-fA-F]{64}$/

/** SHA-256 of the UTF-8 bytes of `s`, as 64 lowercase hex characters. */
export const sha256Hex = (s: string): string => createHash("sha256").update(s, "utf8").digest("hex")

/** True when `s`, trimmed, is exactly 64 hex characters (an existing SHA-256 digest; 63 or 65 are not). */
export const isSha256 = (s: Input): boolean => {
  const t = text(s)
  return t !== undefined && SHA256.test(t.trim())
}

const attempt = (rule: Rule, s: string): string | undefined => {
  try {
    const out = rule(s)
    return typeof out === "string" && out.length > 0 ? out : undefined
  } catch {
    return undefined
  }
}

/** Applies `rule` and hashes the result; an existing SHA-256 is passed through (lowercased); undefined when unusable. */
export const hashed = (rule: Rule, raw: Input): Hashed | undefined => {
  const s = text(raw)
  if (s === undefined) return undefined
  const trimmed = s.trim()
  if (SHA256.test(trimmed)) return { normalized: undefined, hash: trimmed.toLowerCase() }
  const normalized = attempt(rule, s)
  return normalized === undefined ? undefined : { normalized, hash: sha256Hex(normalized) }
}

/** E.164 form (`+33612345678`) of a phone number; a national number needs `defaultCountry`. Undefined when unusable. */
export const normalizePhone = (raw: Input, options?: PhoneOptions): string | undefined => {
  const s = text(raw)
  return s === undefined ? undefined : attempt((v) => toE164(v, options), s)
}

// ---------------------------------------------------------------------------------------------------------------------
// Shared rules

/** NFC, lowercase, NFC again (lowercasing can leave a decomposed sequence behind). */
const canonical = (s: string): string => nfc(lower(nfc(s)))

/** `local@domain.tld`, no whitespace inside, one `@`, no empty domain label. */
const EMAIL = /^[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+$/u

/** Trimmed and lowercased; undefined unless it looks like an email address. */
const email: Rule = (raw) => {
  const v = canonical(raw).trim()
  return EMAIL.test(v) ? v : undefined
}

/** Punctuation, symbols, separators, control and invisible format characters (zero-width joiners are kept). */
const NOT_NAME = /[\p{P}\p{S}\p{Z}\p{Cc}\s]|(?![\u200C\u200D])\p{Cf}/gu

// ---------------------------------------------------------------------------------------------------------------------
// Meta

const MALE = new Set([
  "m",
  "male",
  "man",
  "boy",
  "gentleman",
  "guy",
  "sir",
  "mister",
  "mr",
  "son",
  "father",
  "dad",
  "daddy",
  "papa",
  "uncle",
  "nephew",
  "brother",
  "husband",
  "boyfriend",
  "groom",
  "widower",
  "king",
  "prince",
  "duke",
  "count",
  "emperor",
  "god",
  "lord",
  "lad",
  "fellow",
  "chap",
  "bloke",
  "dude",
  "he",
  "him",
  "his",
  "himself",
  // Other languages (an addition to Meta's English list): de, fr, es, it, pt, nl.
  "mannlich",
  "mann",
  "herr",
  "homme",
  "masculin",
  "hombre",
  "masculino",
  "uomo",
  "maschio",
  "maschile",
  "homem"
])

const FEMALE = new Set([
  "f",
  "female",
  "woman",
  "girl",
  "lady",
  "miss",
  "ms",
  "mrs",
  "madam",
  "maam",
  "daughter",
  "mother",
  "mom",
  "mama",
  "mommy",
  "aunt",
  "niece",
  "sister",
  "wife",
  "girlfriend",
  "bride",
  "widow",
  "queen",
  "princess",
  "duchess",
  "countess",
  "empress",
  "goddess",
  "maiden",
  "lass",
  "gal",
  "chick",
  "dame",
  "belle",
  "she",
  "her",
  "hers",
  "herself",
  // Other languages (an addition to Meta's English list): de (`w` as in m/w/d), fr, es, it, pt, nl.
  "w",
  "weiblich",
  "frau",
  "femme",
  "feminin",
  "mujer",
  "femenino",
  "femenina",
  "donna",
  "femmina",
  "femminile",
  "feminino",
  "mulher",
  "vrouw"
])

const US_ZIP = /^(\d{5})(?:[\s-]?\d{4})?$/

/** Meta `fn` / `ln`: lowercase, no punctuation, symbols or spaces; letters of any script kept. */
const metaName: Rule = (raw) => {
  const v = canonical(raw).replace(NOT_NAME, "")
  return hasLetter(v) ? v : undefined
}

const metaRules = {
  /** `em`: trimmed, lowercased; must look like an email address. */
  email,
  /** `ph`: E.164 digits without `+` (`16505551212`); national numbers get `defaultCountry`'s calling code. */
  phone: (raw: string, options?: PhoneOptions): string | undefined => toE164(raw, options)?.slice(1),
  /** `fn`: lowercased; punctuation, symbols and spaces removed; letters of any script kept (`Valéry` → `valéry`). */
  firstName: metaName,
  /** `ln`: same rule as `fn`. */
  lastName: metaName,
  /** `ct`: lowercased, letters and digits only (any script; accents kept): `San Francisco` → `sanfrancisco`. */
  city: (raw: string): string | undefined => {
    const v = canonical(raw).replace(/[^\p{L}\p{M}\p{N}]/gu, "")
    return hasLetter(v) ? v : undefined
  },
  /** `st`: two-letter code (US/CA names mapped: `California` → `ca`); other names lowercased, ASCII-folded, no spaces. */
  state: (raw: string): string | undefined => {
    const v = nfc(raw).trim()
    const code = resolveUsCaState(v)
    if (code !== undefined) return code
    const folded = lower(foldMarks(v)).replace(/[^\p{L}\p{N}]/gu, "")
    return hasLetter(folded) ? folded : undefined
  },
  /** `zp`: lowercased, no spaces or punctuation; US ZIP+4 cut to 5 digits (`94035-1234` → `94035`). */
  zip: (raw: string): string | undefined => {
    const v = canonical(raw).trim()
    const us = US_ZIP.exec(v)
    if (us !== null) return us[1]
    const compact = v.replace(/[^\p{L}\p{N}]/gu, "")
    return compact.length >= 2 ? compact : undefined
  },
  /** `country`: ISO 3166-1 alpha-2, lowercase; names and alpha-3 codes mapped (`United States`, `USA` → `us`). */
  country: (raw: string): string | undefined => resolveCountry(nfc(raw)),
  /** `db`: `YYYYMMDD` from the usual date formats (`12/31/1990`, `1990-12-31`, `31 Dec 1990`). */
  dateOfBirth: (raw: string): string | undefined => toYyyyMmDd(nfc(raw)),
  /** `ge`: `f` or `m`, from the initial or a gendered word (`Female`, `woman`, `Mr.`); anything else is unusable. */
  gender: (raw: string): string | undefined => {
    const word = canonical(foldMarks(raw)).replace(/[^\p{L}]/gu, "")
    return MALE.has(word) ? "m" : FEMALE.has(word) ? "f" : undefined
  },
  /** `external_id`: whitespace removed, lowercased (as Meta's own SDK does, so browser and server hashes agree). */
  externalId: (raw: string): string | undefined => canonical(raw).replace(/\s+/gu, "")
} as const

/** Meta parameter-builder SDK that produced a hashed value, from the language byte of its appendix. */
const APPENDIX_LANGUAGES: ReadonlyArray<string> = ["", "php", "python", "java", "nodejs", "ruby", "browser"]

/** What the appendix of a Meta parameter-builder value says (see docs/pii-normalisation.md). */
export interface MetaAppendix {
  /** The appendix as written after the last `.`. */
  readonly token: string
  /** The parameter-builder SDK that hashed the value (`php`, `python`, `java`, `nodejs`, `ruby`, `browser`). */
  readonly language: string | undefined
  /** Whether that SDK normalised and hashed the value itself (`net_new`…) or got it already hashed (`unchanged`). */
  readonly origin: "unchanged" | "general_new" | "net_new" | "modified_new" | undefined
  /** The SDK's version (`1.3.2`), for the 8-character form. */
  readonly version: string | undefined
}

/** A hashed value as Meta's parameter builder writes it: `<sha256 hex>[.<appendix>]`. */
export interface MetaHashedValue {
  /** The SHA-256 digest, lowercased. */
  readonly hash: string
  /** The appendix, when there is one. */
  readonly appendix: MetaAppendix | undefined
}

const V1_TOKENS = ["AQ", "Ag", "Aw", "BA", "BQ", "Bg"]
const ORIGINS = ["unchanged", "general_new", "net_new", "modified_new"] as const
const WITH_APPENDIX = /^([0-9a-fA-F]{64})\.([A-Za-z0-9_-]{2}|[A-Za-z0-9_-]{8})$/

const appendixOf = (token: string): MetaAppendix => {
  if (token.length === 2) {
    const language = V1_TOKENS.indexOf(token) + 1
    return { token, language: APPENDIX_LANGUAGES[language] || undefined, origin: undefined, version: undefined }
  }
  const bytes = Buffer.from(token, "base64url")
  if (bytes.length !== 6 || bytes[0] !== 0x01) {
    return { token, language: undefined, origin: undefined, version: undefined }
  }
  return {
    token,
    language: APPENDIX_LANGUAGES[bytes[1]!] || undefined,
    origin: ORIGINS[bytes[2]!],
    version: `${bytes[3]}.${bytes[4]}.${bytes[5]}`
  }
}

/** Splits `<sha256>` or `<sha256>.<appendix>` (Meta parameter-builder output); undefined for anything else. */
const parseMetaHashed = (value: Input): MetaHashedValue | undefined => {
  const t = text(value)?.trim()
  if (t === undefined) return undefined
  if (SHA256.test(t)) return { hash: t.toLowerCase(), appendix: undefined }
  const m = WITH_APPENDIX.exec(t)
  if (m === null) return undefined
  const token = m[2]!
  if (token.length === 2 && !V1_TOKENS.includes(token)) return undefined
  return { hash: m[1]!.toLowerCase(), appendix: appendixOf(token) }
}

/** `hashed`, also passing through a value Meta's parameter builder already hashed (its appendix is dropped). */
const hashedForMeta = (rule: Rule, raw: Input): Hashed | undefined => {
  const already = parseMetaHashed(raw)
  return already !== undefined ? { normalized: undefined, hash: already.hash } : hashed(rule, raw)
}

/** Meta Conversions API `user_data`: each function gives the normalised value and its SHA-256, or undefined. */
export const Meta = {
  /** `em`: trimmed and lowercased (`John_Smith@gmail.com` → `john_smith@gmail.com`); dots and `+tags` are kept. */
  email: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.email, raw),
  /** `ph`: digits with calling code, no `+` (`(650)555-1212` + US → `16505551212`). */
  phone: (raw: Input, options?: PhoneOptions): Hashed | undefined =>
    hashedForMeta((s) => metaRules.phone(s, options), raw),
  /** `fn`: lowercase, no punctuation or spaces, UTF-8 letters kept (`Valéry` → `valéry`). */
  firstName: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.firstName, raw),
  /** `ln`: as `fn`. */
  lastName: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.lastName, raw),
  /** `ct`: lowercase, no spaces or punctuation (`San Francisco` → `sanfrancisco`). */
  city: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.city, raw),
  /** `st`: two-letter code in lowercase (`California` → `ca`). */
  state: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.state, raw),
  /** `zp`: lowercase, no spaces or dashes; US: first 5 digits. */
  zip: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.zip, raw),
  /** `country`: ISO 3166-1 alpha-2 in lowercase (`United States` → `us`). */
  country: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.country, raw),
  /** `db`: `YYYYMMDD`. */
  dateOfBirth: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.dateOfBirth, raw),
  /** `ge`: `f` or `m`. */
  gender: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.gender, raw),
  /** `external_id`: lowercase, whitespace removed, hashed (DESIGN: the canonical `user_id`). */
  externalId: (raw: Input): Hashed | undefined => hashedForMeta(metaRules.externalId, raw),
  /** The rules alone (normalised value, no hashing and no passthrough), for previews and `hashed`. */
  rules: metaRules,
  /** Reads `<sha256>` or `<sha256>.<appendix>` as Meta's parameter builder writes it (e.g. for the sandbox). */
  parseHashed: parseMetaHashed
} as const

// ---------------------------------------------------------------------------------------------------------------------
// Google

const GMAIL_DOMAINS: ReadonlySet<string> = new Set(["gmail.com", "googlemail.com"])

const GIVEN_NAME_PREFIX = /^(?:mr|mrs|ms|dr)\.(?:\s|$)/u
const FAMILY_NAME_SUFFIX = /(?:,\s*|\s+)(?:jr\.?|sr\.?|2nd|3rd|ii|iii|iv|v|vi|cpa|dc|dds|vm|jd|md|phd)\s?$/u

const googleRules = {
  /** `emailAddress`: trimmed, lowercased; for gmail.com/googlemail.com only, dots and `+tag` removed before the `@`. */
  email: (raw: string): string | undefined => {
    const v = email(raw)
    if (v === undefined) return undefined
    const at = v.lastIndexOf("@")
    const domain = v.slice(at + 1)
    if (!GMAIL_DOMAINS.has(domain)) return v
    const local = v.slice(0, at).split("+")[0]!.replace(/\./g, "")
    return local.length > 0 ? `${local}@${domain}` : undefined
  },
  /** `phoneNumber`: E.164 with `+` (`+18005550100`); national numbers get `defaultCountry`'s calling code. */
  phone: (raw: string, options?: PhoneOptions): string | undefined => toE164(raw, options),
  /** `address.givenName`: trimmed, lowercased, a leading `Mr.`/`Mrs.`/`Ms.`/`Dr.` removed. */
  givenName: (raw: string): string | undefined =>
    canonical(raw).trim().replace(GIVEN_NAME_PREFIX, "").trim() || undefined,
  /** `address.familyName`: trimmed, lowercased, trailing suffixes (`Jr.`, `Sr.`, `III`, `PhD`, …) removed. */
  familyName: (raw: string): string | undefined => {
    let v = canonical(raw).trim()
    for (let before = ""; before !== v;) {
      before = v
      v = v.replace(FAMILY_NAME_SUFFIX, "")
    }
    return v.trim() || undefined
  },
  /** `address.regionCode`: ISO 3166-1 alpha-2 in uppercase, not hashed (`us`, `USA`, `United States` → `US`). */
  regionCode: (raw: string): string | undefined => resolveCountry(nfc(raw))?.toUpperCase(),
  /** `address.postalCode`: trimmed, not hashed (`94045`, `1229-076`). */
  postalCode: (raw: string): string | undefined => {
    const v = nfc(raw).trim()
    return /[\p{L}\p{N}]/u.test(v) ? v : undefined
  }
} as const

/** Google Data Manager `UserIdentifier` and `AddressInfo` (hex encoding). `regionCode`/`postalCode` are not hashed. */
export const Google = {
  /** `emailAddress`: Gmail/Googlemail lose dots and `+tag` (`Cloudy.SanFrancisco+x@gmail.com` → `cloudysanfrancisco@gmail.com`). */
  email: (raw: Input): Hashed | undefined => hashed(googleRules.email, raw),
  /** `phoneNumber`: E.164 with `+`. */
  phone: (raw: Input, options?: PhoneOptions): Hashed | undefined => hashed((s) => googleRules.phone(s, options), raw),
  /** `address.givenName`: lowercase, no `Mr.`-style prefix. */
  givenName: (raw: Input): Hashed | undefined => hashed(googleRules.givenName, raw),
  /** `address.familyName`: lowercase, no `Jr.`-style suffix. */
  familyName: (raw: Input): Hashed | undefined => hashed(googleRules.familyName, raw),
  /** `address.regionCode` (sent in clear): ISO 3166-1 alpha-2 in uppercase, or undefined. */
  regionCode: (raw: Input): string | undefined => {
    const s = text(raw)
    return s === undefined ? undefined : attempt(googleRules.regionCode, s)
  },
  /** `address.postalCode` (sent in clear): trimmed, or undefined. */
  postalCode: (raw: Input): string | undefined => {
    const s = text(raw)
    return s === undefined ? undefined : attempt(googleRules.postalCode, s)
  },
  /** The rules alone (normalised value, no hashing and no passthrough), for previews and `hashed`. */
  rules: googleRules
} as const

// ---------------------------------------------------------------------------------------------------------------------
// LinkedIn

const linkedInRules = {
  /** `SHA256_EMAIL`: trimmed and lowercased. */
  email
} as const

/** LinkedIn Conversions API `user.userIds`. */
export const LinkedIn = {
  /** `SHA256_EMAIL`: trimmed and lowercased, then SHA-256. */
  email: (raw: Input): Hashed | undefined => hashed(linkedInRules.email, raw),
  /** The rules alone (normalised value, no hashing and no passthrough). */
  rules: linkedInRules
} as const
