import { assert, describe, it } from "@effect/vitest"
import type { Destination } from "@tracklayer/core"
import * as Pii from "@tracklayer/core/Pii"
import { Duration, Either } from "effect"
import { readFileSync } from "node:fs"
import { GoogleAds } from "../src/index.js"
import { DAY, deliveryEvent, GRANTED, settings, SHA, T0 } from "./fixtures.js"

/** A hashed field: the raw value, the normalised string Google hashes, and its SHA-256 (from `sha256sum`). */
interface HashedField {
  readonly rule: "email" | "phone" | "givenName" | "familyName"
  readonly raw: string
  readonly country?: string
  readonly normalized: string
  readonly sha256: string
}

interface Case {
  readonly scenario: string
  readonly input: Destination.DeliveryEvent
  readonly settings?: Record<string, unknown>
  readonly hashed?: ReadonlyArray<HashedField>
  /** The exact payload, or the skip expected. */
  readonly expected: GoogleAds.Payload | { readonly skip: Destination.SkipReason["reason"]; readonly detail: string }
}

/** 2026-04-20T09:12:03Z: when the fixture person's gclid was first seen (seed-journeys evt_0001). */
const CLICK_AT = Date.parse("2026-04-20T09:12:03Z")

const cases: ReadonlyArray<Case> = [
  {
    scenario: "DESTINATIONS.md vectors: Gmail email and E.164 phone hashed; value + currency; gclid; WEB",
    input: deliveryEvent({
      dedupKey: "ord_1001",
      identity: { emails: ["cloudysanfrancisco@gmail.com"], phones: ["+18005550100"], clickIds: { gclid: "Cj0KCQ-1" } },
      properties: { value: 49.5, currency: "USD", order_id: "ord_1001" },
      context: { page_url: "https://shop.example.com/thanks" }
    }),
    hashed: [
      {
        rule: "email",
        raw: "cloudysanfrancisco@gmail.com",
        normalized: "cloudysanfrancisco@gmail.com",
        sha256: SHA["cloudysanfrancisco@gmail.com"]
      },
      { rule: "phone", raw: "+18005550100", normalized: "+18005550100", sha256: SHA["+18005550100"] }
    ],
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_1001",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "WEB",
        conversionValue: 49.5,
        currency: "USD",
        adIdentifiers: { gclid: "Cj0KCQ-1" },
        userData: {
          userIdentifiers: [
            { emailAddress: SHA["cloudysanfrancisco@gmail.com"] },
            { phoneNumber: SHA["+18005550100"] }
          ]
        },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "Gmail dots and +tag removed (gmail.com, googlemail.com); other domains keep dots",
    input: deliveryEvent({
      name: "sign_up",
      dedupKey: "evt_signup_1",
      identity: {
        emails: ["  Cloudy.SanFrancisco+promo@GMAIL.com ", "J.Doe+news@googlemail.com", "Jane.Doe@Example.com"]
      }
    }),
    hashed: [
      {
        rule: "email",
        raw: "  Cloudy.SanFrancisco+promo@GMAIL.com ",
        normalized: "cloudysanfrancisco@gmail.com",
        sha256: SHA["cloudysanfrancisco@gmail.com"]
      },
      {
        rule: "email",
        raw: "J.Doe+news@googlemail.com",
        normalized: "jdoe@googlemail.com",
        sha256: SHA["jdoe@googlemail.com"]
      },
      {
        rule: "email",
        raw: "Jane.Doe@Example.com",
        normalized: "jane.doe@example.com",
        sha256: SHA["jane.doe@example.com"]
      }
    ],
    expected: {
      productDestinationId: "7000000002",
      event: {
        transactionId: "evt_signup_1",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        userData: {
          userIdentifiers: [
            { emailAddress: SHA["cloudysanfrancisco@gmail.com"] },
            { emailAddress: SHA["jdoe@googlemail.com"] },
            { emailAddress: SHA["jane.doe@example.com"] }
          ]
        },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "fixture person usr_8421, purchase ord_1001 (seed-journeys evt_0004): email from sign_up, gclid from " +
      "the first visit, server source → OTHER",
    input: deliveryEvent({
      eventId: "evt_0004",
      dedupKey: "ord_1001",
      timestamp: Date.parse("2026-04-24T08:00:00Z"),
      user_id: "usr_8421",
      identity: {
        userId: "usr_8421",
        deviceId: "web_91f3",
        emails: ["Jane.Doe@Example.com"],
        emailSha256: [SHA["jane.doe@example.com"]],
        clickIds: { fbc: "fb.1.1776675000000.IwAR_TESTCLICK", gclid: "Cj0KCQ-test-gclid-1" },
        clickIdsSeenAt: { fbc: CLICK_AT, gclid: CLICK_AT }
      },
      properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      context: { source: "server" },
      consent: { analytics: true, advertising: true, crm: true }
    }),
    hashed: [
      {
        rule: "email",
        raw: "Jane.Doe@Example.com",
        normalized: "jane.doe@example.com",
        sha256: SHA["jane.doe@example.com"]
      }
    ],
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_1001",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        conversionValue: 129,
        currency: "USD",
        adIdentifiers: { gclid: "Cj0KCQ-test-gclid-1" },
        userData: { userIdentifiers: [{ emailAddress: SHA["jane.doe@example.com"] }] },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "fixture person usr_8421 sign_up with a postal code: address (hashed names, clear region and postal " +
      "code); page URL → WEB",
    input: deliveryEvent({
      name: "sign_up",
      eventId: "evt_0002",
      timestamp: Date.parse("2026-04-20T09:15:40Z"),
      user_id: "usr_8421",
      user: {
        email: "Jane.Doe@Example.com",
        first_name: " Jane",
        last_name: "Doe ",
        country: "DE",
        postal_code: "10115"
      },
      identity: { userId: "usr_8421", emails: ["Jane.Doe@Example.com"] },
      context: {
        source: "server",
        ip: "203.0.113.7",
        user_agent: "Mozilla/5.0 (X11; Linux x86_64)",
        page_url: "https://app.example.com/signup"
      }
    }),
    hashed: [
      { rule: "givenName", raw: " Jane", normalized: "jane", sha256: SHA.jane },
      { rule: "familyName", raw: "Doe ", normalized: "doe", sha256: SHA.doe }
    ],
    expected: {
      productDestinationId: "7000000002",
      event: {
        transactionId: "evt_0002",
        eventTimestamp: "2026-04-20T09:15:40.000Z",
        eventSource: "WEB",
        userData: {
          userIdentifiers: [
            { emailAddress: SHA["jane.doe@example.com"] },
            { address: { givenName: SHA.jane, familyName: SHA.doe, regionCode: "DE", postalCode: "10115" } }
          ]
        },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "names without a postal code: no address (Google needs all four fields)",
    input: deliveryEvent({
      name: "qualified_lead",
      dedupKey: "evt_0201",
      user: { email: "ops@acme-corp.example", first_name: "Sam", last_name: "Lee", country: "US" }
    }),
    hashed: [
      {
        rule: "email",
        raw: "ops@acme-corp.example",
        normalized: "ops@acme-corp.example",
        sha256: SHA["ops@acme-corp.example"]
      }
    ],
    expected: {
      productDestinationId: "7000000004",
      event: {
        transactionId: "evt_0201",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        userData: { userIdentifiers: [{ emailAddress: SHA["ops@acme-corp.example"] }] },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "national phone number with the person's country → E.164 (+49…)",
    input: deliveryEvent({
      name: "start_trial",
      dedupKey: "evt_trial",
      user: { phone: "0151 23456789", country: "DE" }
    }),
    hashed: [
      {
        rule: "phone",
        raw: "0151 23456789",
        country: "DE",
        normalized: "+4915123456789",
        sha256: SHA["+4915123456789"]
      }
    ],
    expected: {
      productDestinationId: "7000000003",
      event: {
        transactionId: "evt_trial",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        userData: { userIdentifiers: [{ phoneNumber: SHA["+4915123456789"] }] },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "pre-hashed email digests: the generic hash of a dotted Gmail address is dropped, others kept; " +
      "Meta-style phone digests (no +) are never sent",
    input: deliveryEvent({
      name: "sign_up",
      dedupKey: "evt_hashed",
      identity: {
        emails: ["Cloudy.SanFrancisco@gmail.com"],
        emailSha256: [SHA["cloudy.sanfrancisco@gmail.com"], SHA["ops@acme-corp.example"].toUpperCase()],
        phoneSha256: [SHA["18005550100"]]
      }
    }),
    expected: {
      productDestinationId: "7000000002",
      event: {
        transactionId: "evt_hashed",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        userData: {
          userIdentifiers: [
            { emailAddress: SHA["cloudysanfrancisco@gmail.com"] },
            { emailAddress: SHA["ops@acme-corp.example"] }
          ]
        },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "gbraid and wbraid known, no gclid: gbraid only (never both braids)",
    input: deliveryEvent({
      dedupKey: "ord_braid",
      identity: { clickIds: { wbraid: "wb-1", gbraid: "gb-1" } },
      properties: { value: 0, currency: "EUR" }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_braid",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        conversionValue: 0,
        currency: "EUR",
        adIdentifiers: { gbraid: "gb-1" },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "the event's own gclid wins over the person's; wbraid ignored when a gclid exists",
    input: deliveryEvent({
      dedupKey: "ord_own",
      identity: { clickIds: { gclid: "old-gclid", wbraid: "wb-1" } },
      context: { click_ids: { gclid: "new-gclid" }, user_agent: "Mozilla/5.0" }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_own",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "WEB",
        adIdentifiers: { gclid: "new-gclid" },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "personalisation denied in the event: adPersonalization DENIED, adUserData GRANTED",
    input: deliveryEvent({
      dedupKey: "ord_np",
      identity: { clickIds: { gclid: "g-1" } },
      consent: { advertising: true, personalisation: false }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_np",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        adIdentifiers: { gclid: "g-1" },
        consent: { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_DENIED" }
      }
    }
  },
  {
    scenario: "operator purpose name for personalisation; eventSource forced to PHONE",
    settings: { personalisationPurpose: "ads_personalisation", eventSource: "PHONE" },
    input: deliveryEvent({
      dedupKey: "ord_phone",
      identity: { clickIds: { gclid: "g-2" } },
      context: { page_url: "https://x.example" },
      consent: { advertising: true, personalisation: true, ads_personalisation: false }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_phone",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "PHONE",
        adIdentifiers: { gclid: "g-2" },
        consent: { adUserData: "CONSENT_GRANTED", adPersonalization: "CONSENT_DENIED" }
      }
    }
  },
  {
    scenario: "adjustment: same transactionId, the new value",
    input: deliveryEvent({
      eventId: "evt_later",
      dedupKey: "ord_1001",
      identity: { clickIds: { gclid: "g-3" } },
      properties: { value: 99, currency: "USD", order_id: "ord_1001" },
      adjustment: { of: "evt_0004", previousValue: 129, previousCurrency: "USD" }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_1001",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        conversionValue: 99,
        currency: "USD",
        adIdentifiers: { gclid: "g-3" },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "click older than the window but an email known: sent without the expired gclid",
    settings: { clickThroughWindowDays: 30 },
    input: deliveryEvent({
      dedupKey: "ord_late",
      identity: {
        emails: ["ops@acme-corp.example"],
        clickIds: { gclid: "g-old" },
        clickIdsSeenAt: { gclid: T0 - 31 * DAY }
      }
    }),
    expected: {
      productDestinationId: "7000000001",
      event: {
        transactionId: "ord_late",
        eventTimestamp: "2026-04-24T08:00:00.000Z",
        eventSource: "OTHER",
        userData: { userIdentifiers: [{ emailAddress: SHA["ops@acme-corp.example"] }] },
        consent: GRANTED
      }
    }
  },
  {
    scenario: "event not in conversionActions: not_mapped naming it",
    input: deliveryEvent({ name: "view_pricing", identity: { clickIds: { gclid: "g" } } }),
    expected: { skip: "not_mapped", detail: "event \"view_pricing\" has no conversion action in conversionActions" }
  },
  {
    scenario: "no click id and no user identifier: invalid",
    input: deliveryEvent({ identity: { userId: "usr_1", deviceId: "web_1" } }),
    expected: {
      skip: "invalid",
      detail: "Google needs a click id (gclid, gbraid or wbraid) or a user identifier (email, phone, or name with " +
        "country and postal code); the person has none"
    }
  },
  {
    scenario: "unusable email only: invalid",
    input: deliveryEvent({ identity: { emails: ["not-an-email"] } }),
    expected: {
      skip: "invalid",
      detail: "Google needs a click id (gclid, gbraid or wbraid) or a user identifier (email, phone, or name with " +
        "country and postal code); the person has none"
    }
  },
  {
    scenario: "value without a currency: invalid",
    input: deliveryEvent({ identity: { clickIds: { gclid: "g" } }, properties: { value: 10 } }),
    expected: { skip: "invalid", detail: "value 10 has no ISO 4217 currency" }
  },
  {
    scenario: "negative value: invalid",
    input: deliveryEvent({ identity: { clickIds: { gclid: "g" } }, properties: { value: -5, currency: "USD" } }),
    expected: { skip: "invalid", detail: "conversionValue must not be negative (value -5)" }
  },
  {
    scenario: "event received 31 days after it happened, window 30 days: window",
    settings: { clickThroughWindowDays: 30 },
    input: deliveryEvent({ identity: { clickIds: { gclid: "g" } }, receivedAt: T0 + 31 * DAY }),
    expected: {
      skip: "window",
      detail: "the event is 31 days older than its receipt; the click-through window is 30 days"
    }
  },
  {
    scenario: "only click is 91 days before the conversion (default window 90): window",
    input: deliveryEvent({
      identity: { clickIds: { gclid: "g" }, clickIdsSeenAt: { gclid: T0 - 91 * DAY } }
    }),
    expected: {
      skip: "window",
      detail: "the gclid click was 91 days before the conversion; the click-through window is 90 days, and there " +
        "is no user identifier"
    }
  }
]

const hashWith = (f: HashedField) => {
  switch (f.rule) {
    case "email":
      return Pii.Google.email(f.raw)
    case "phone":
      return Pii.Google.phone(f.raw, { defaultCountry: f.country })
    case "givenName":
      return Pii.Google.givenName(f.raw)
    case "familyName":
      return Pii.Google.familyName(f.raw)
  }
}

describe("GoogleAds.transform", () => {
  for (const c of cases) {
    it(c.scenario, () => {
      const result = GoogleAds.transform(c.input, settings(c.settings))
      if ("skip" in c.expected) {
        assert.isTrue(Either.isLeft(result), "expected a skip")
        const left = Either.getLeft(result)
        assert.strictEqual(left._tag === "Some" ? left.value.reason : undefined, c.expected.skip)
        assert.strictEqual(left._tag === "Some" ? left.value.detail : undefined, c.expected.detail)
      } else {
        assert.deepStrictEqual(Either.getOrThrow(result), c.expected)
      }
      for (const f of c.hashed ?? []) {
        const h = hashWith(f)
        assert.strictEqual(h?.normalized, f.normalized, `${f.rule} ${JSON.stringify(f.raw)} normalised`)
        assert.strictEqual(h?.hash, f.sha256, `${f.rule} ${JSON.stringify(f.raw)} SHA-256`)
      }
    })
  }

  it("at most 10 user identifiers (emails first)", () => {
    const emails = Array.from({ length: 12 }, (_, i) => `user${i}@example.com`)
    const p = Either.getOrThrow(GoogleAds.transform(
      deliveryEvent({ identity: { emails, phones: ["+18005550100"] } }),
      settings()
    ))
    const ids = p.event?.userData?.userIdentifiers ?? []
    assert.strictEqual(ids.length, 10)
    assert.deepStrictEqual(ids[0], { emailAddress: SHA["user0@example.com"] })
    assert.deepStrictEqual(ids[9], { emailAddress: SHA["user9@example.com"] })
  })

  it("no raw PII in any payload: every hashed field is 64 lowercase hex", () => {
    const p = Either.getOrThrow(GoogleAds.transform(
      deliveryEvent({
        identity: { emails: ["Jane.Doe@Example.com"], phones: ["+18005550100"] },
        user: { first_name: "Jane", last_name: "Doe", country: "de", postal_code: "10115" }
      }),
      settings()
    ))
    const text = JSON.stringify(p)
    for (const raw of ["Jane", "jane", "Doe", "doe@", "8005550100"]) assert.notInclude(text, raw)
    const ids = p.event?.userData?.userIdentifiers ?? []
    assert.strictEqual(ids.length, 3)
    for (const id of ids) {
      const values = "address" in id ? [id.address.givenName, id.address.familyName] : Object.values(id)
      for (const v of values) assert.match(v, /^[0-9a-f]{64}$/)
    }
  })
})

describe("GoogleAds.plugin", () => {
  it("declares purposes, window, limits, adjustments and its version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    assert.strictEqual(GoogleAds.plugin.name, pkg.name)
    assert.strictEqual(GoogleAds.plugin.version, pkg.version)
    assert.strictEqual(GoogleAds.plugin.pluginApi, "^1.2.0")
    assert.deepStrictEqual(GoogleAds.plugin.purposes, ["advertising"])
    assert.strictEqual(Duration.toMillis(GoogleAds.plugin.window!), 90 * DAY)
    assert.strictEqual(GoogleAds.plugin.limits.maxEventsPerRequest, 2000)
    assert.strictEqual(GoogleAds.plugin.supportsAdjustments, true)
    assert.strictEqual(GoogleAds.DATA_MANAGER_API_VERSION, "v1")
  })

  it("request body: destination with 10-digit ids, HEX encoding, validateOnly only when set", () => {
    const event = { transactionId: "t", eventTimestamp: "2026-04-24T08:00:00.000Z" } as GoogleAds.DataManagerEvent
    assert.deepStrictEqual(GoogleAds.requestBody("7000000001", [event], settings({ loginAccountId: "987-654-3210" })), {
      destinations: [{
        operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
        loginAccount: { accountType: "GOOGLE_ADS", accountId: "9876543210" },
        productDestinationId: "7000000001"
      }],
      events: [event],
      encoding: "HEX"
    })
    assert.deepStrictEqual(GoogleAds.requestBody("7000000001", [event], settings({ validateOnly: true })), {
      destinations: [{
        operatingAccount: { accountType: "GOOGLE_ADS", accountId: "1234567890" },
        productDestinationId: "7000000001"
      }],
      events: [event],
      encoding: "HEX",
      validateOnly: true
    })
  })
})
