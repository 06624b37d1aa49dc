/**
 * HTML built from templates that escape every interpolated value: event names, reasons, payloads and ids are user
 * input, so nothing reaches a page unescaped unless it is itself built by `html` (a `Raw` fragment).
 */

/** A fragment of HTML that is already safe. */
export class Raw {
  constructor(readonly html: string) {}
  toString() {
    return this.html
  }
}

/** Escapes text for HTML content and quoted attribute values. */
export const escape = (s: string): string =>
  s.replace(
    /[&<>"'`]/g,
    (c) =>
      c === "&"
        ? "&amp;"
        : c === "<"
        ? "&lt;"
        : c === ">"
        ? "&gt;"
        : c === "\""
        ? "&quot;"
        : c === "'"
        ? "&#39;"
        : "&#96;"
  )

const render = (v: unknown): string => {
  if (v instanceof Raw) return v.html
  if (Array.isArray(v)) return v.map(render).join("")
  if (v === undefined || v === null || v === false) return ""
  return escape(String(v))
}

/** A template whose interpolations are escaped (arrays are joined; `Raw` fragments go in as they are). */
export const html = (strings: TemplateStringsArray, ...values: ReadonlyArray<unknown>): Raw => {
  let out = strings[0]!
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!
  })
  return new Raw(out)
}

/** A query string from the non-empty values (`?a=1&b=2`, or "" when none). */
export const query = (params: Readonly<Record<string, string | number | undefined | null>>): string => {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v))
  const s = q.toString()
  return s === "" ? "" : `?${s}`
}
