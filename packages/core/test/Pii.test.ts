import { assert, describe, it } from "@effect/vitest"
import { ParamBuilder } from "capi-param-builder-nodejs"
import { FastCheck } from "effect"
import { createHash } from "node:crypto"
import { Google, type Hashed, hashed, isSha256, LinkedIn, Meta, normalizePhone, sha256Hex } from "../src/Pii.js"

// Every expected SHA-256 below is a literal computed outside this code with `printf '%s' VALUE | sha256sum`.

interface Case {
  readonly scenario: string
  readonly input: string | number | null | undefined
  readonly country?: string
  /** The normalised value; undefined with `sha256` set: an existing digest passed through. */
  readonly normalized: string | undefined
  /** Expected digest; absent: the value is unusable and left out (never hashed). */
  readonly sha256?: string
}

const expectHashed = (actual: Hashed | undefined, c: Case) => {
  if (c.sha256 === undefined) {
    assert.strictEqual(actual, undefined, `${c.scenario}: expected missing, got ${JSON.stringify(actual)}`)
    return
  }
  assert.deepStrictEqual(actual, { normalized: c.normalized, hash: c.sha256 })
}

const table = (
  name: string,
  fn: (input: Case["input"], country?: string) => Hashed | undefined,
  cases: ReadonlyArray<Case>
) =>
  describe(name, () => {
    for (const c of cases) {
      it(c.scenario, () => expectHashed(fn(c.input, c.country), c))
    }
  })

const PASS = "62A14E44F765419D10FEA99367361A727C12365E2520F32218D505ED9AA0F62F"
const PASS_LOWER = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"

describe("sha256Hex / isSha256", () => {
  it("hashes UTF-8 to lowercase hex", () => {
    assert.strictEqual(
      sha256Hex("john_smith@gmail.com"),
      "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    )
    assert.strictEqual(sha256Hex("valéry"), "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c")
    assert.strictEqual(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  })
  const hashCases: ReadonlyArray<{ scenario: string; input: string | null | undefined; expected: boolean }> = [
    { scenario: "64 lowercase hex", input: PASS_LOWER, expected: true },
    { scenario: "64 uppercase hex with surrounding spaces", input: `  ${PASS}\n`, expected: true },
    { scenario: "63 hex characters", input: PASS_LOWER.slice(1), expected: false },
    { scenario: "65 hex characters", input: `${PASS_LOWER}0`, expected: false },
    { scenario: "64 characters with a non-hex letter", input: `g${PASS_LOWER.slice(1)}`, expected: false },
    { scenario: "hex with a Meta appendix", input: `${PASS_LOWER}.AQQCAQMC`, expected: false },
    { scenario: "inner space", input: `${PASS_LOWER.slice(0, 32)} ${PASS_LOWER.slice(32)}`, expected: false },
    { scenario: "empty", input: "", expected: false },
    { scenario: "null", input: null, expected: false },
    { scenario: "undefined", input: undefined, expected: false }
  ]
  for (const c of hashCases) it(`isSha256: ${c.scenario}`, () => assert.strictEqual(isSha256(c.input), c.expected))
})

describe("DESTINATIONS.md vectors", () => {
  it("Meta em: John_Smith@gmail.com", () =>
    assert.deepStrictEqual(Meta.email("John_Smith@gmail.com"), {
      normalized: "john_smith@gmail.com",
      hash: "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    }))
  it("Meta ph: (650)555-1212 in the US", () =>
    assert.deepStrictEqual(Meta.phone("(650)555-1212", { defaultCountry: "US" }), {
      normalized: "16505551212",
      hash: "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    }))
  it("Meta fn: Mary", () =>
    assert.deepStrictEqual(Meta.firstName("Mary"), {
      normalized: "mary",
      hash: "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
    }))
  it("Meta fn: Valéry keeps its accent", () =>
    assert.deepStrictEqual(Meta.firstName("Valéry"), {
      normalized: "valéry",
      hash: "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"
    }))
  it("Google emailAddress: cloudysanfrancisco@gmail.com", () =>
    assert.deepStrictEqual(Google.email("cloudysanfrancisco@gmail.com"), {
      normalized: "cloudysanfrancisco@gmail.com",
      hash: "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"
    }))
  it("Google phoneNumber: +18005550100", () =>
    assert.deepStrictEqual(Google.phone("+18005550100"), {
      normalized: "+18005550100",
      hash: "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"
    }))
  // Further examples from Meta's customer-information-parameters page.
  it("Meta fn: 정 (Hangul kept as UTF-8)", () =>
    assert.deepStrictEqual(Meta.firstName("정"), {
      normalized: "정",
      hash: "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"
    }))
  it("Meta db: 2/16/1997", () =>
    assert.deepStrictEqual(Meta.dateOfBirth("2/16/1997"), {
      normalized: "19970216",
      hash: "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"
    }))
  it("Meta country: United States", () =>
    assert.deepStrictEqual(Meta.country("United States"), {
      normalized: "us",
      hash: "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
    }))
})

table("Meta.email (em)", (i) => Meta.email(i), [
  {
    scenario: "trimmed and lowercased",
    input: "  Jane.Doe@Example.COM\t",
    normalized: "jane.doe@example.com",
    sha256: "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
  },
  {
    scenario: "Gmail dots and +tag are kept (Meta does not apply Gmail rules)",
    input: "Cloudy.SanFrancisco+shopping@gmail.com",
    normalized: "cloudy.sanfrancisco+shopping@gmail.com",
    sha256: "8dd4a9bf850242873c14976125edabc35096192b784626a5641a7d2de56e3c1e"
  },
  {
    scenario: "Unicode local part lowercased in NFC",
    input: "JÖRG@Bücher.de",
    normalized: "jörg@bücher.de",
    sha256: "7caabf763674bd1027611ab39c3dc6ed917697a7c4be9c24a6a0c6b3eda5135b"
  },
  { scenario: "no @ is unusable", input: "jane.doe.example.com", normalized: undefined },
  { scenario: "no dot in the domain is unusable", input: "jane@localhost", normalized: undefined },
  { scenario: "inner whitespace is unusable", input: "jane doe@example.com", normalized: undefined },
  { scenario: "two @ are unusable", input: "a@b@example.com", normalized: undefined },
  {
    scenario: "already hashed, uppercase hex: passed through lowercased",
    input: ` ${PASS} `,
    normalized: undefined,
    sha256: PASS_LOWER
  },
  {
    scenario: "already hashed by Meta's parameter builder: appendix dropped",
    input: `${PASS_LOWER}.AQQCAQMC`,
    normalized: undefined,
    sha256: PASS_LOWER
  },
  { scenario: "empty", input: "", normalized: undefined },
  { scenario: "whitespace only", input: " \t\n ", normalized: undefined },
  { scenario: "null", input: null, normalized: undefined }
])

table("Meta.phone (ph)", (i, country) => Meta.phone(i, { defaultCountry: country }), [
  {
    scenario: "US national number with the US default",
    input: "(650)555-1212",
    country: "US",
    normalized: "16505551212",
    sha256: "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
  },
  {
    scenario: "00 international prefix is treated as +",
    input: "0033 6 12 34 56 78",
    normalized: "33612345678",
    sha256: "8a3e7886c9335e82e02299fa3e87b46e2de3b0c63d56003e30a5029394a47661"
  },
  {
    scenario: "FR national number: trunk 0 dropped, 33 added",
    input: "06 12 34 56 78",
    country: "FR",
    normalized: "33612345678",
    sha256: "8a3e7886c9335e82e02299fa3e87b46e2de3b0c63d56003e30a5029394a47661"
  },
  {
    scenario: "+49 mobile",
    input: "+49 151 23456789",
    normalized: "4915123456789",
    sha256: "c0f8f0bebbbac96451ee8d8def84a02ae9e34c877775437cb9d458328315afa7"
  },
  {
    scenario: "UK (0) after the calling code is dropped",
    input: "+44 (0)20 7946 0958",
    normalized: "442079460958",
    sha256: "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"
  },
  {
    scenario: "digits with calling code and no default country are taken as international",
    input: "16505551212",
    normalized: "16505551212",
    sha256: "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
  },
  {
    scenario: "numeric input",
    input: 16505551212,
    normalized: "16505551212",
    sha256: "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
  },
  {
    scenario: "national number with trunk 0 and no default country is unusable",
    input: "06 12 34 56 78",
    normalized: undefined
  },
  { scenario: "US number too short is unusable", input: "555-1212", country: "US", normalized: undefined },
  { scenario: "letters only is unusable", input: "n/a", country: "US", normalized: undefined },
  { scenario: "already hashed: passed through", input: PASS, normalized: undefined, sha256: PASS_LOWER },
  { scenario: "empty", input: "", country: "US", normalized: undefined }
])

table("Meta.firstName / lastName (fn, ln)", (i) => Meta.firstName(i), [
  {
    scenario: "punctuation and spaces removed",
    input: "O'Brien-Smith Jr.",
    normalized: "obriensmithjr",
    sha256: "cf9697d237459f966c7fc09bef145408150a668bd23d96e291db2a740e4027da"
  },
  {
    scenario: "typographic apostrophe removed too",
    input: "O’Brien",
    normalized: "obrien",
    sha256: "b4cb6cb33fe4b865868de825023a1e2790dc12ac01ecc8d7c5afe8254071c8ba"
  },
  {
    scenario: "Unicode uppercase (NFC input)",
    input: "ÉLODIE",
    normalized: "élodie",
    sha256: "36bac2631d17463d569eaf1b869e7bf8d40e4636fd8b2b778ee93f504baf6691"
  },
  {
    scenario: "Unicode uppercase (NFD input: E + U+0301) gives the same hash",
    input: "E\u0301LODIE",
    normalized: "élodie",
    sha256: "36bac2631d17463d569eaf1b869e7bf8d40e4636fd8b2b778ee93f504baf6691"
  },
  {
    scenario: "German ß is kept (lowercasing, not case folding)",
    input: "Weiß",
    normalized: "weiß",
    sha256: "5281e4cf0e28cc0e53f462049491eb8d9fe7e6341b7cb61e22966c5261fe72c8"
  },
  {
    scenario: "capital ẞ lowercases to ß",
    input: "STRAUẞ",
    normalized: "strauß",
    sha256: "3715010ef733d832a79b783ae4142282287ad804504a2d1fb0106822f7b29b3f"
  },
  {
    scenario: "SS stays ss (no folding to ß)",
    input: "STRAUSS",
    normalized: "strauss",
    sha256: "2bdd292fcaff63109b74700caf048a8f6befa94de00440be77e3ec55601fb690"
  },
  {
    scenario: "Turkish dotted İ: default lowercasing gives i + U+0307",
    input: "İlker",
    normalized: "i\u0307lker",
    sha256: "d84ca9eba4642af21f521c5ab217d38d8b899e586be98751a00e0eca46f95a18"
  },
  {
    scenario: "Turkish dotless ı is kept",
    input: "ışık",
    normalized: "ışık",
    sha256: "d8cdbc413413f2c439c16890f631b1e88149378d6fd920eae61cd24d5f44ef07"
  },
  {
    scenario: "Turkish I lowercases to i (locale-independent, as both vendors' SDKs do)",
    input: "IŞIK",
    normalized: "işik",
    sha256: "ae26003ef869e414e042a8123353fd67d48c9785ca3e6d6e7ac9ea6f0d57f1b1"
  },
  { scenario: "digits only is unusable", input: "12345", normalized: undefined },
  { scenario: "punctuation only is unusable", input: "-.-", normalized: undefined }
])

table("Meta.lastName (ln)", (i) => Meta.lastName(i), [
  {
    scenario: "same rule as fn",
    input: "  Van der Berg ",
    normalized: "vanderberg",
    sha256: "aad607ca3121d5d843c2cd64e8c73c2a24fa3a4cb890ed8d40a1efa8af7a14d5"
  },
  {
    scenario: "apostrophe and hyphen removed",
    input: "O'Brien-Smith",
    normalized: "obriensmith",
    sha256: "16765783f9c8c8a3accf27f1abb877688cb5904c21a4a7afb5f125bcfcb246ba"
  }
])

table("Meta.city (ct)", (i) => Meta.city(i), [
  {
    scenario: "spaces removed",
    input: "San Francisco",
    normalized: "sanfrancisco",
    sha256: "1a6bd4d9d79dc0a79b53795c70d3349fa9e38968a3fbefbfe8783efb1d2b6aac"
  },
  {
    scenario: "punctuation removed",
    input: "St. Louis",
    normalized: "stlouis",
    sha256: "8ba24bdf99947996f3000259be455de791b06fcc0e802ce05031030df1ee8ea3"
  },
  {
    scenario: "accents kept as UTF-8",
    input: "Zürich",
    normalized: "zürich",
    sha256: "201f10d5d64518d86d2d3a47d28675d1c788762c5345df643dadec71d4e0a91e"
  },
  { scenario: "digits only is unusable", input: "123", normalized: undefined }
])

table("Meta.state (st)", (i) => Meta.state(i), [
  {
    scenario: "two-letter code lowercased",
    input: "CA",
    normalized: "ca",
    sha256: "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"
  },
  {
    scenario: "US state name → code",
    input: "California",
    normalized: "ca",
    sha256: "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"
  },
  {
    scenario: "two-word state name → code",
    input: "new york",
    normalized: "ny",
    sha256: "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683"
  },
  {
    scenario: "Canadian province with accent → code",
    input: "Québec",
    normalized: "qc",
    sha256: "997164d13810adf6cab52541447d083c4472e5ca6052cc6ddd9501318ac5730c"
  },
  {
    scenario: "ISO 3166-2 code",
    input: "US-TX",
    normalized: "tx",
    sha256: "1b5b9ccb3e8d006a5230de9bda23ff91edc794d4f56410560830b418528e446c"
  },
  {
    scenario: "Washington DC is dc, not wa",
    input: "Washington, D.C.",
    normalized: "dc",
    sha256: "abecdf3503635c0be9eca61cddf5b25c7f8380d5aae7d73d0f62e9a38c87b70d"
  },
  {
    scenario: "non-US region name: lowercase, no spaces (Meta's rule outside the US)",
    input: "Île-de-France",
    normalized: "iledefrance",
    sha256: "e7a0efad69ad8cd77fcd8218439ad69182b24d819222f038eb166fa4139ef159"
  },
  { scenario: "empty", input: " ", normalized: undefined }
])

table("Meta.zip (zp)", (i) => Meta.zip(i), [
  {
    scenario: "US ZIP+4 → first 5 digits",
    input: "94035-1234",
    normalized: "94035",
    sha256: "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"
  },
  {
    scenario: "US ZIP+4 without dash → first 5 digits",
    input: "940351234",
    normalized: "94035",
    sha256: "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"
  },
  {
    scenario: "UK postcode: lowercase, no space",
    input: "M1 1AE",
    normalized: "m11ae",
    sha256: "1dc694c2070e697769fb959b50671d76cafd430d8ca191fbdd0affcaea344ac5"
  },
  {
    scenario: "French code",
    input: "75018",
    normalized: "75018",
    sha256: "8dc3075ea745609c169d1c120d3fcd1c42673d16f18b423f4374e894d34a098a"
  },
  {
    scenario: "dash removed outside the US",
    input: "1229-076",
    normalized: "1229076",
    sha256: "0670cf638d2bd0a15baa92ffd81eaf131166681adeee7f3e12ea34099bc30c1b"
  },
  { scenario: "one character is unusable", input: "7", normalized: undefined }
])

table("Meta.country", (i) => Meta.country(i), [
  {
    scenario: "alpha-2 lowercased",
    input: "FR",
    normalized: "fr",
    sha256: "67ad8f41a7bb0a18c45f3efd8f6a32bdcd832bcf8f3f2eb44006c03d53076e18"
  },
  {
    scenario: "USA → us",
    input: "USA",
    normalized: "us",
    sha256: "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
  },
  {
    scenario: "UK → gb",
    input: "UK",
    normalized: "gb",
    sha256: "0b407281768f0e833afef47ed464b6571d01ca4d53c12ce5c51d1462f4ad6677"
  },
  {
    scenario: "alpha-3 AUT → at (not au)",
    input: "AUT",
    normalized: "at",
    sha256: "b1d6b91b67c2afa5e322988d9462638d354ddf8a1ef79dba987f815c22b4baee"
  },
  {
    scenario: "native name",
    input: "Deutschland",
    normalized: "de",
    sha256: "959a45d44e6fcf58361ed004681556fe50129f2109e817dec098c00c9e5d2578"
  },
  {
    scenario: "name with article",
    input: "The Netherlands",
    normalized: "nl",
    sha256: "1843653496800edfd0d30326c82f53b0338ed408468cca4a2f1b52f2f6395fc9"
  },
  {
    scenario: "name with accents and apostrophe",
    input: "Côte d’Ivoire",
    normalized: "ci",
    sha256: "1b158839f8aa339e89bb50b1603e90ec68e0fd5565fe10a7cb32729fddf7070a"
  },
  {
    scenario: "current and former names",
    input: "Turkey",
    normalized: "tr",
    sha256: "7817bb812e82168bd48fe1ea6783078d42be37e8db9bdaafdac5c45804aca64f"
  },
  { scenario: "unknown two letters are unusable", input: "XX", normalized: undefined },
  { scenario: "unknown name is unusable", input: "Atlantis", normalized: undefined }
])

table("Meta.dateOfBirth (db)", (i) => Meta.dateOfBirth(i), [
  {
    scenario: "ISO date",
    input: "1990-12-31",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "ISO timestamp",
    input: "1990-12-31T10:00:00Z",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "US month/day/year",
    input: "12/31/1990",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "day/month/year when the day is above 12",
    input: "31.12.1990",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "ambiguous 01/02/1990 reads month first (as Meta does)",
    input: "01/02/1990",
    normalized: "19900102",
    sha256: "19bb8a164e99b8549f5f5c9e810115de44d02402f68aefe2df61b4fddacfa085"
  },
  {
    scenario: "compact YYYYMMDD",
    input: "19901231",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "English month name",
    input: "December 31, 1990",
    normalized: "19901231",
    sha256: "e34847671d257b92802553ecff8091c5e218044431fd84ce1ce573e530710c83"
  },
  {
    scenario: "leap day",
    input: "2000-02-29",
    normalized: "20000229",
    sha256: "78958c155b420adeffb55186f1ff24a0cd544a1d9577e114e7793cc45f90ae01"
  },
  { scenario: "30 February is unusable", input: "1990-02-30", normalized: undefined },
  { scenario: "1900 was not a leap year", input: "1900-02-29", normalized: undefined },
  { scenario: "8 digits that are not YYYYMMDD are unusable", input: "12311990", normalized: undefined },
  { scenario: "two-digit year is unusable", input: "12/31/90", normalized: undefined }
])

table("Meta.gender (ge)", (i) => Meta.gender(i), [
  {
    scenario: "initial",
    input: "F",
    normalized: "f",
    sha256: "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
  },
  {
    scenario: "word",
    input: " Male ",
    normalized: "m",
    sha256: "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"
  },
  {
    scenario: "woman",
    input: "Woman",
    normalized: "f",
    sha256: "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
  },
  {
    scenario: "title with a dot",
    input: "Mr.",
    normalized: "m",
    sha256: "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"
  },
  {
    scenario: "German weiblich",
    input: "weiblich",
    normalized: "f",
    sha256: "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"
  },
  { scenario: "non-binary is not sent (Meta accepts only f/m)", input: "non-binary", normalized: undefined },
  { scenario: "unknown word", input: "unknown", normalized: undefined }
])

table("Meta.externalId (external_id)", (i) => Meta.externalId(i), [
  {
    scenario: "whitespace removed, lowercased",
    input: " User 123 ",
    normalized: "user123",
    sha256: "e606e38b0d8c19b24cf0ee3808183162ea7cd63ff7912dbb22b5e803286b4446"
  },
  {
    scenario: "numeric id",
    input: 42,
    normalized: "42",
    sha256: "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"
  },
  { scenario: "a 64-hex id is taken as already hashed", input: PASS, normalized: undefined, sha256: PASS_LOWER },
  {
    scenario: "63 hex characters are an id, hashed",
    input: PASS_LOWER.slice(1),
    normalized: PASS_LOWER.slice(1),
    sha256: "759d9d6e3940d32e3846eae808e7ed0b64e750ec5b6665341cba8cd07ae22480"
  },
  { scenario: "empty", input: "   ", normalized: undefined }
])

table("Google.email (emailAddress)", (i) => Google.email(i), [
  {
    scenario: "Gmail: dots and +tag removed",
    input: "Cloudy.SanFrancisco+shopping@gmail.com",
    normalized: "cloudysanfrancisco@gmail.com",
    sha256: "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"
  },
  {
    scenario: "Googlemail: dots and +tag removed, domain kept",
    input: " Jefferson.Loves.Hiking+x@GoogleMail.com ",
    normalized: "jeffersonloveshiking@googlemail.com",
    sha256: "2824967181c781aced84c32bf8bb51fc6401202eeff88263776f63c99df9314c"
  },
  {
    scenario: "consecutive dots in Gmail",
    input: "j.e.f..ferson@gmail.com",
    normalized: "jefferson@gmail.com",
    sha256: "abaeaa1c6a6fa9a1396f78ce94fd88beaca6ab4424216888caca67f666fe7a9c"
  },
  {
    scenario: "other domains keep dots and +tag",
    input: "User.Name+NYC@Example.com",
    normalized: "user.name+nyc@example.com",
    sha256: "f109a2a632fbcea5fc82049f50beed3d8621bf9034399f437fb622222acccdac"
  },
  {
    scenario: "a gmail look-alike domain keeps dots",
    input: "a.b@gmail.com.au",
    normalized: "a.b@gmail.com.au",
    sha256: "e4a2a11185914640ea6ee805643fdac1bf46f8b93eaa6de6b2ec8782e89bb39d"
  },
  {
    scenario: "Gmail local part empty after normalisation is unusable",
    input: ".+tag@gmail.com",
    normalized: undefined
  },
  { scenario: "no domain is unusable", input: "quinn", normalized: undefined },
  { scenario: "already hashed: passed through", input: PASS, normalized: undefined, sha256: PASS_LOWER }
])

table("Google.phone (phoneNumber)", (i, country) => Google.phone(i, { defaultCountry: country }), [
  {
    scenario: "00 prefix → E.164 with +",
    input: "0033 6 12 34 56 78",
    normalized: "+33612345678",
    sha256: "42d573cfc315801d4cd8eddd5416b416a0bf298b9b9e12d6b07442c91db42bd8"
  },
  {
    scenario: "FR national with default country",
    input: "06 12 34 56 78",
    country: "fr",
    normalized: "+33612345678",
    sha256: "42d573cfc315801d4cd8eddd5416b416a0bf298b9b9e12d6b07442c91db42bd8"
  },
  {
    scenario: "+49 mobile",
    input: "+49 151 23456789",
    normalized: "+4915123456789",
    sha256: "663a4322addcdcc2be9435bfd2505066dc1048b89d33e48f363119f18bdd71e8"
  },
  {
    scenario: "US formatted",
    input: "1 800 555 0100",
    normalized: "+18005550100",
    sha256: "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"
  },
  {
    scenario: "UK digits with calling code (Google's own test)",
    input: "441134960987",
    normalized: "+441134960987",
    sha256: "0fac52d27ec377f8ad2f9de75d1f9bace693237e31868ae6f4616b8bbd0e94fb"
  },
  { scenario: "no digits is unusable", input: "+abc-DEF", normalized: undefined }
])

table("Google.givenName (address.givenName)", (i) => Google.givenName(i), [
  {
    scenario: "trimmed and lowercased",
    input: " Alex   ",
    normalized: "alex",
    sha256: "4135aa9dc1b842a653dea846903ddb95bfb8c5a10c504a7fa16e10bc31d1fdf0"
  },
  {
    scenario: "Mr. prefix removed",
    input: " Mr. Alex ",
    normalized: "alex",
    sha256: "4135aa9dc1b842a653dea846903ddb95bfb8c5a10c504a7fa16e10bc31d1fdf0"
  },
  {
    scenario: "Dr. suffix is not a prefix",
    input: "Alex Dr.",
    normalized: "alex dr.",
    sha256: "57cb70cc9541a8fa7e7c30b87a4afec7f004bdd1f222617e5ad21118a731c572"
  },
  {
    scenario: "prefix needs its dot",
    input: "Mralex",
    normalized: "mralex",
    sha256: "36965a2dc9bbd814e8558a77040c54225c75bdeb80c52c54b1a15f2bb6fc3637"
  },
  {
    scenario: "Unicode NFD input",
    input: "E\u0301lodie",
    normalized: "élodie",
    sha256: "36bac2631d17463d569eaf1b869e7bf8d40e4636fd8b2b778ee93f504baf6691"
  },
  { scenario: "only a prefix is unusable", input: " Mrs. ", normalized: undefined }
])

table("Google.familyName (address.familyName)", (i) => Google.familyName(i), [
  {
    scenario: "trimmed and lowercased",
    input: " Quinn ",
    normalized: "quinn",
    sha256: "c512ca0c5c1e71be19f3356821e56732b5fb3ac894b0dbc5846d0b6920106fb3"
  },
  {
    scenario: "hyphen kept",
    input: "Quinn-Alex",
    normalized: "quinn-alex",
    sha256: "91581930b788bf2fd4ea63d8783c8c3b4c7ac8575461e033d18ee7def6cd49a9"
  },
  {
    scenario: ", Jr. removed",
    input: " Quinn, Jr. ",
    normalized: "quinn",
    sha256: "c512ca0c5c1e71be19f3356821e56732b5fb3ac894b0dbc5846d0b6920106fb3"
  },
  {
    scenario: "several suffixes removed",
    input: "quinn, jr., dds",
    normalized: "quinn",
    sha256: "c512ca0c5c1e71be19f3356821e56732b5fb3ac894b0dbc5846d0b6920106fb3"
  },
  {
    scenario: "suffix letters inside a name are kept",
    input: "Boardds",
    normalized: "boardds",
    sha256: "ed2ce2a4fb1081fcf78fb168f1b7ddd1fa60e5b148b16e58c52ddc668e0b5e8a"
  },
  { scenario: "only a suffix is unusable", input: ",Jr.,DDS ", normalized: undefined }
])

describe("Google.regionCode / postalCode (not hashed)", () => {
  const region: ReadonlyArray<[string, string | undefined]> = [
    ["us", "US"],
    ["  us  ", "US"],
    ["USA", "US"],
    ["United Kingdom", "GB"],
    ["u2", undefined],
    ["", undefined]
  ]
  for (const [input, expected] of region) {
    it(`regionCode ${JSON.stringify(input)}`, () => assert.strictEqual(Google.regionCode(input), expected))
  }
  const postal: ReadonlyArray<[string, string | undefined]> = [
    ["94045", "94045"],
    [" 1229-076  ", "1229-076"],
    ["SW1A 1AA", "SW1A 1AA"],
    ["  ", undefined],
    ["--", undefined]
  ]
  for (const [input, expected] of postal) {
    it(`postalCode ${JSON.stringify(input)}`, () => assert.strictEqual(Google.postalCode(input), expected))
  }
})

table("LinkedIn.email (SHA256_EMAIL)", (i) => LinkedIn.email(i), [
  {
    scenario: "trimmed and lowercased",
    input: " Jane.Doe+News@Example.com ",
    normalized: "jane.doe+news@example.com",
    sha256: "dbf1912b4cad4df9823f627874244e64b50a6ac550b9cb33b17df671a26679db"
  },
  {
    scenario: "Gmail dots kept (LinkedIn has no Gmail rule)",
    input: "John.Smith@gmail.com",
    normalized: "john.smith@gmail.com",
    sha256: "d0c648bc36f12061bec770df216cea2ab95851b9350fd54b658de53b0407767a"
  },
  { scenario: "already hashed: passed through", input: PASS, normalized: undefined, sha256: PASS_LOWER },
  { scenario: "not an email", input: "jane", normalized: undefined }
])

describe("normalizePhone (E.164)", () => {
  const cases: ReadonlyArray<{ scenario: string; input: string; country?: string; expected: string | undefined }> = [
    { scenario: "FR national with FR", input: "06 12 34 56 78", country: "FR", expected: "+33612345678" },
    { scenario: "default country by name", input: "06 12 34 56 78", country: "France", expected: "+33612345678" },
    { scenario: "FR number already carrying 33, no +", input: "33612345678", country: "FR", expected: "+33612345678" },
    {
      scenario: "FR number carrying 33 and the trunk 0",
      input: "33 0612345678",
      country: "FR",
      expected: "+33612345678"
    },
    { scenario: "trunk 0 written after +33", input: "+33 (0)6 12 34 56 78", expected: "+33612345678" },
    { scenario: "GB national", input: "020 7946 0958", country: "GB", expected: "+442079460958" },
    { scenario: "DE national", input: "0151 23456789", country: "DE", expected: "+4915123456789" },
    {
      scenario: "IT keeps the leading 0 of a landline",
      input: "06 1234 5678",
      country: "IT",
      expected: "+390612345678"
    },
    {
      scenario: "IT mobile starting with 39 is national",
      input: "393 123 4567",
      country: "IT",
      expected: "+393931234567"
    },
    { scenario: "ES national", input: "612 34 56 78", country: "ES", expected: "+34612345678" },
    { scenario: "NL national", input: "06-12345678", country: "NL", expected: "+31612345678" },
    { scenario: "FI national (3-digit calling code)", input: "040 1234567", country: "FI", expected: "+358401234567" },
    { scenario: "AU mobile", input: "0412 345 678", country: "AU", expected: "+61412345678" },
    { scenario: "JP mobile", input: "090-1234-5678", country: "JP", expected: "+819012345678" },
    { scenario: "BR mobile", input: "(11) 91234-5678", country: "BR", expected: "+5511912345678" },
    { scenario: "IN mobile", input: "098765 43210", country: "IN", expected: "+919876543210" },
    { scenario: "SG", input: "6123 4567", country: "SG", expected: "+6561234567" },
    { scenario: "US with trunk 1", input: "1-650-555-1212", country: "US", expected: "+16505551212" },
    { scenario: "US 011 international prefix", input: "011 44 20 7946 0958", country: "US", expected: "+442079460958" },
    { scenario: "extension dropped", input: "+1 650 555 1212 ext. 44", expected: "+16505551212" },
    { scenario: "full-width digits", input: "＋３３６１２３４５６７８", expected: "+33612345678" },
    {
      scenario: "+ wins over the default country",
      input: "+44 20 7946 0958",
      country: "FR",
      expected: "+442079460958"
    },
    { scenario: "invalid NANP area code", input: "+1 123 555 1212", expected: undefined },
    { scenario: "FR number of the wrong length", input: "+33 6 12 34", expected: undefined },
    { scenario: "more than 15 digits", input: "+1234567890123456", expected: undefined },
    { scenario: "two numbers", input: "+1 650 555 1212 / +1 650 555 1313", expected: undefined },
    { scenario: "trunk 0 without a default country", input: "0612345678", expected: undefined },
    { scenario: "empty", input: "", country: "US", expected: undefined }
  ]
  for (const c of cases) {
    it(c.scenario, () => assert.strictEqual(normalizePhone(c.input, { defaultCountry: c.country }), c.expected))
  }
})

describe("hashed (custom rule)", () => {
  const upper = (s: string) => (s.trim() === "" ? undefined : s.trim().toUpperCase())
  it("hashes the rule's output", () =>
    assert.deepStrictEqual(hashed(upper, " abc "), {
      normalized: "ABC",
      hash: "b5d4045c3f466fa91fe2cc6abe79232a1a57cdf104f7a26e716e0a1e2789df78"
    }))
  it("passes an existing digest through without calling the rule", () =>
    assert.deepStrictEqual(hashed(() => "never", PASS), { normalized: undefined, hash: PASS_LOWER }))
  it("a throwing rule gives undefined", () =>
    assert.strictEqual(
      hashed(() => {
        throw new Error("boom")
      }, "x"),
      undefined
    ))
  it("an empty rule result is never hashed", () => assert.strictEqual(hashed(() => "", "x"), undefined))
})

describe("Meta.parseHashed (parameter-builder appendix)", () => {
  it("plain digest", () => assert.deepStrictEqual(Meta.parseHashed(PASS), { hash: PASS_LOWER, appendix: undefined }))
  it("8-character appendix: format 1, Node.js SDK, normalised and hashed by the SDK, version 1.3.2", () =>
    assert.deepStrictEqual(Meta.parseHashed(`${PASS_LOWER}.AQQCAQMC`), {
      hash: PASS_LOWER,
      appendix: { token: "AQQCAQMC", language: "nodejs", origin: "net_new", version: "1.3.2" }
    }))
  it("8-character appendix of a value the SDK received already hashed", () =>
    assert.deepStrictEqual(Meta.parseHashed(`${PASS_LOWER}.AQQAAQMC`), {
      hash: PASS_LOWER,
      appendix: { token: "AQQAAQMC", language: "nodejs", origin: "unchanged", version: "1.3.2" }
    }))
  it("legacy 2-character language token", () =>
    assert.deepStrictEqual(Meta.parseHashed(`${PASS_LOWER}.Ag`), {
      hash: PASS_LOWER,
      appendix: { token: "Ag", language: "python", origin: undefined, version: undefined }
    }))
  it("unknown 2-character token is not an appendix", () =>
    assert.strictEqual(Meta.parseHashed(`${PASS_LOWER}.zz`), undefined))
  it("raw value is not a hashed value", () => assert.strictEqual(Meta.parseHashed("john@example.com"), undefined))
})

describe("missing values are never hashed", () => {
  const all: ReadonlyArray<[string, (raw: string | null | undefined) => Hashed | undefined]> = [
    ["Meta.email", Meta.email],
    ["Meta.phone", (r) => Meta.phone(r, { defaultCountry: "US" })],
    ["Meta.firstName", Meta.firstName],
    ["Meta.lastName", Meta.lastName],
    ["Meta.city", Meta.city],
    ["Meta.state", Meta.state],
    ["Meta.zip", Meta.zip],
    ["Meta.country", Meta.country],
    ["Meta.dateOfBirth", Meta.dateOfBirth],
    ["Meta.gender", Meta.gender],
    ["Meta.externalId", Meta.externalId],
    ["Google.email", Google.email],
    ["Google.phone", (r) => Google.phone(r, { defaultCountry: "US" })],
    ["Google.givenName", Google.givenName],
    ["Google.familyName", Google.familyName],
    ["LinkedIn.email", LinkedIn.email]
  ]
  for (const [name, fn] of all) {
    it(`${name}: empty, whitespace, null and undefined → undefined; uppercase digest → passed through`, () => {
      for (const raw of ["", "   ", "\t\n", "\u00a0", null, undefined]) assert.strictEqual(fn(raw), undefined)
      assert.deepStrictEqual(fn(` ${PASS}\n`), { normalized: undefined, hash: PASS_LOWER })
    })
  }
})

// ---------------------------------------------------------------------------------------------------------------------
// Differential: Meta's own normaliser (capi-param-builder-nodejs) is the reference for Meta fields.

const builder = new ParamBuilder()
/** The reference's hash without its `.<appendix>`, or undefined when it rejects the value. */
const reference = (value: string, type: string): string | undefined =>
  builder.getNormalizedAndHashedPII(value, type)?.split(".")[0]
const sha = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

const META_FIELDS: Readonly<Record<string, (raw: string) => Hashed | undefined>> = {
  email: Meta.email,
  phone: (raw) => Meta.phone(raw),
  first_name: Meta.firstName,
  last_name: Meta.lastName,
  city: Meta.city,
  state: Meta.state,
  zip_code: Meta.zip,
  country: Meta.country,
  date_of_birth: Meta.dateOfBirth,
  gender: Meta.gender,
  external_id: Meta.externalId
}

describe("differential: Meta rules agree with capi-param-builder-nodejs 1.3.2", () => {
  const agree: ReadonlyArray<[type: string, inputs: ReadonlyArray<string>]> = [
    ["email", ["John_Smith@gmail.com", " Foo.Bar+tag@Example.COM ", "a@b.co", "not-an-email", "foo@bar", PASS]],
    ["phone", [
      "+1 (650) 555-1212",
      "16505551212",
      "+44 20 7946 0958",
      "0033 6 12 34 56 78",
      "+49 151 23456789",
      "+33 6 12 34 56 78"
    ]],
    ["first_name", ["Mary", "Valéry", "O'Brien-Smith", "Mary Ann", "JOHN", "Jean-Luc", "정", PASS]],
    ["last_name", ["Smith", "van der Berg", "ÉLODIE"]],
    ["date_of_birth", [
      "1990-12-31",
      "12/31/1990",
      "31/12/1990",
      "01/02/1990",
      "19901231",
      "1990.12.31",
      "2/16/1997",
      "1990-12-31T10:00:00Z",
      "12/31/90"
    ]],
    ["gender", ["Female", "M", "woman", "boy", "Male ", "x", "non-binary"]],
    ["city", ["San Francisco", "St. Louis", "New York", "paris", "123"]],
    ["state", ["California", "CA", "ny", "New York", "West Virginia", "Ontario", "British Columbia"]],
    ["zip_code", ["94035-1234", "75018", "10115", "94035"]],
    ["country", [
      "United States",
      "USA",
      "us",
      "Canada",
      "Germany",
      "France",
      "United Kingdom",
      "Antigua and Barbuda",
      "Cote d'Ivoire",
      "Russian Federation"
    ]],
    ["external_id", ["User 123", "abc-DEF", " 42 ", PASS]]
  ]
  for (const [type, inputs] of agree) {
    for (const input of inputs) {
      it(`${type} ${JSON.stringify(input)}`, () => {
        const ours = META_FIELDS[type]!(input)?.hash
        assert.strictEqual(ours, reference(input, type))
      })
    }
  }

  // Where we deliberately differ (each reason is in docs/pii-normalisation.md): both outputs are pinned.
  const differ: ReadonlyArray<{ type: string; input: string; theirs: string | undefined; ours: string | undefined }> = [
    { type: "city", input: "Zürich", theirs: "zrich", ours: "zürich" },
    { type: "state", input: "Québec", theirs: "qu", ours: "qc" },
    { type: "state", input: "Bavaria", theirs: "ba", ours: "bavaria" },
    { type: "state", input: "Washington DC", theirs: "wa", ours: "dc" },
    { type: "country", input: "UK", theirs: "uk", ours: "gb" },
    { type: "country", input: "AUT", theirs: "au", ours: "at" },
    { type: "country", input: "Atlantis", theirs: "at", ours: undefined },
    { type: "zip_code", input: "SW1A 1AA", theirs: "sw1a 1aa", ours: "sw1a1aa" },
    { type: "zip_code", input: "1229-076", theirs: "1229", ours: "1229076" },
    { type: "phone", input: "+44 (0)20 7946 0958", theirs: "4402079460958", ours: "442079460958" },
    { type: "phone", input: "06 12 34 56 78", theirs: "612345678", ours: undefined },
    { type: "date_of_birth", input: "12311990", theirs: "12311990", ours: undefined },
    { type: "date_of_birth", input: "1990-02-30", theirs: "19900230", ours: undefined },
    { type: "first_name", input: "O’Brien", theirs: "o’brien", ours: "obrien" },
    { type: "first_name", input: "E\u0301LODIE", theirs: "e\u0301lodie", ours: "élodie" },
    { type: "email", input: "jörg@bücher.de", theirs: undefined, ours: "jörg@bücher.de" }
  ]
  for (const d of differ) {
    it(`differs on purpose: ${d.type} ${JSON.stringify(d.input)}`, () => {
      assert.strictEqual(reference(d.input, d.type), d.theirs === undefined ? undefined : sha(d.theirs))
      const ours = META_FIELDS[d.type]!(d.input)
      assert.deepStrictEqual(ours, d.ours === undefined ? undefined : { normalized: d.ours, hash: sha(d.ours) })
    })
  }
})

// ---------------------------------------------------------------------------------------------------------------------
// Properties

const HEX64 = /^[0-9a-f]{64}$/

const arbitraryText = FastCheck.oneof(
  FastCheck.string(),
  FastCheck.fullUnicodeString(),
  FastCheck.string16bits(),
  FastCheck.emailAddress(),
  FastCheck.stringMatching(/^[+0(]?[0-9 ()\-.]{0,20}$/),
  FastCheck.stringMatching(/^\s*[0-9a-fA-F]{60,68}\s*$/)
)

const hashing: ReadonlyArray<[string, (raw: string) => Hashed | undefined]> = [
  ...Object.entries(META_FIELDS),
  ["meta phone FR", (r) => Meta.phone(r, { defaultCountry: "FR" })],
  ["google email", Google.email],
  ["google phone", (r) => Google.phone(r)],
  ["google phone US", (r) => Google.phone(r, { defaultCountry: "US" })],
  ["google givenName", Google.givenName],
  ["google familyName", Google.familyName],
  ["linkedin email", LinkedIn.email]
]

describe("properties", () => {
  it("every hashing function is total: undefined, or a 64-hex SHA-256 of its normalised value", () =>
    FastCheck.assert(
      FastCheck.property(arbitraryText, (raw) => {
        for (const [, fn] of hashing) {
          const out = fn(raw)
          if (out === undefined) continue
          if (!HEX64.test(out.hash)) return false
          if (out.normalized !== undefined && (out.normalized === "" || sha(out.normalized) !== out.hash)) return false
          if (out.normalized === undefined && out.hash !== raw.trim().split(".")[0]!.toLowerCase()) return false
        }
        const region = Google.regionCode(raw)
        const postal = Google.postalCode(raw)
        const phone = normalizePhone(raw)
        return (region === undefined || /^[A-Z]{2}$/.test(region)) &&
          (postal === undefined || (postal.length > 0 && postal === postal.trim())) &&
          (phone === undefined || /^\+[1-9]\d{6,14}$/.test(phone))
      }),
      { numRuns: 500 }
    ))

  it("normalising a normalised value changes nothing (idempotent rules)", () =>
    FastCheck.assert(
      FastCheck.property(arbitraryText, (raw) =>
        [Meta.email, Meta.firstName, Meta.city, Meta.zip, Meta.externalId, Google.email, Google.givenName]
          .every((fn) => {
            const once = fn(raw)
            return once?.normalized === undefined || fn(once.normalized)?.normalized === once.normalized
          })),
      { numRuns: 300 }
    ))

  it("any 64-hex digest, any case, trimmed, is passed through lowercased by every hashing function", () =>
    FastCheck.assert(
      FastCheck.property(FastCheck.hexaString({ minLength: 64, maxLength: 64 }), FastCheck.boolean(), (hex, upper) => {
        const raw = ` ${upper ? hex.toUpperCase() : hex} `
        return hashing.every(([, fn]) => {
          const out = fn(raw)
          return out?.normalized === undefined && out?.hash === hex.toLowerCase()
        })
      }),
      { numRuns: 200 }
    ))
})
