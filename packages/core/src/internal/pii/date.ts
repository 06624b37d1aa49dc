/**
 * Dates of birth → `YYYYMMDD` (Meta `db`).
 *
 * Follows Meta's `capi-param-builder` reading of three numbers: the one above 31 is the year; of the other two, one
 * above 12 is the day, otherwise month comes first as in the US (`01/02/1990` is 2 January). Unlike it, the date must
 * exist (no 30 February), a single 8-digit group must itself be a valid `YYYYMMDD`, the year must be 1800–2100 (a
 * pure function cannot know the current year), and English month names are understood (`31 Dec 1990`).
 */

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

const isLeap = (y: number): boolean => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0

const daysIn = (y: number, m: number): number => m === 2 ? (isLeap(y) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31

const format = (y: number, m: number, d: number): string | undefined => {
  if (!Number.isInteger(y) || y < 1800 || y > 2100) return undefined
  if (!Number.isInteger(m) || m < 1 || m > 12) return undefined
  if (!Number.isInteger(d) || d < 1 || d > daysIn(y, m)) return undefined
  return `${y}${String(m).padStart(2, "0")}${String(d).padStart(2, "0")}`
}

/** Year, month and day from three numbers in any of the usual orders. */
const fromThree = (n1: number, n2: number, n3: number): string | undefined => {
  if (n1 > 31) return n2 > 12 ? format(n1, n3, n2) : format(n1, n2, n3)
  if (n2 > 31) return n3 > 12 ? format(n2, n1, n3) : format(n2, n3, n1)
  return n1 > 12 ? format(n3, n2, n1) : format(n3, n1, n2)
}

/** `YYYYMMDD` for a date of birth, or undefined when it cannot be read as a real date. */
export const toYyyyMmDd = (raw: string): string | undefined => {
  const s = raw.normalize("NFKC").toLowerCase()
  const groups = s.match(/\d+/g) ?? []
  const numbers = groups.map((g) => Number.parseInt(g, 10))
  const monthName = /(?<![a-z])(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?(?![a-z])/.exec(s)
  if (monthName !== null && numbers.length >= 2) {
    const month = MONTHS.indexOf(monthName[1]!) + 1
    const [a, b] = numbers as [number, number, ...Array<number>]
    return a > 31 ? format(a, month, b) : format(b, month, a)
  }
  if (numbers.length >= 3) return fromThree(numbers[0]!, numbers[1]!, numbers[2]!)
  if (groups.length === 1 && groups[0]!.length === 8) {
    const g = groups[0]!
    return format(Number(g.slice(0, 4)), Number(g.slice(4, 6)), Number(g.slice(6, 8)))
  }
  return undefined
}
