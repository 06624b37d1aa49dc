/** Text helpers shared by the PII rules. Every function here is total: it never throws. */

/** A string to normalise, or undefined for anything that cannot carry a value (null, objects, NaN…). */
export const text = (raw: unknown): string | undefined => {
  if (typeof raw === "string") return raw
  if (typeof raw === "number") return Number.isFinite(raw) ? String(raw) : undefined
  if (typeof raw === "bigint") return String(raw)
  return undefined
}

/** NFC (composed) form, so that `É` typed as one code point or as `E` + U+0301 hashes the same. */
export const nfc = (s: string): string => s.normalize("NFC")

/** Unicode default lowercasing (locale-independent, like Java's `Locale.ROOT` and JS `toLowerCase`). */
export const lower = (s: string): string => s.toLowerCase()

/** Removes accents and other combining marks after a compatibility decomposition: `Québec` → `Quebec`. */
export const foldMarks = (s: string): string => s.normalize("NFKD").replace(/\p{M}/gu, "")

/** Lowercase letters only, accents folded: the lookup key for place names (`Côte d'Ivoire` → `cotedivoire`). */
export const placeKey = (s: string): string => lower(foldMarks(s)).replace(/[^\p{L}]/gu, "")

/** Like `placeKey`, but drops the filler words `and`, `the`, `of` first (`Isle of Man` → `isleman`). */
export const placeKeyWithoutFillers = (s: string): string =>
  placeKey(lower(foldMarks(s)).replace(/(?<![\p{L}\p{N}])(?:and|the|of)(?![\p{L}\p{N}])/gu, " "))

/** True when the string contains at least one letter (any script). */
export const hasLetter = (s: string): boolean => /\p{L}/u.test(s)
