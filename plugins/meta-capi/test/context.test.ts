/** action_source from the person's earlier context: a server-side purchase after a web sign-up is a website event. */
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { MetaCapi } from "../src/index.js"
import { janeDoe, settings } from "./fixtures.js"

describe("action_source from this or earlier events", () => {
  it("uses the person's latest page URL and user agent when the event has none", () => {
    const purchase = janeDoe({
      name: "purchase",
      properties: { value: 129, currency: "USD", order_id: "ord_1001" },
      identity: {
        lastContext: { pageUrl: "https://app.example.com/signup", userAgent: "Mozilla/5.0 (X11; Linux x86_64)" }
      }
    })
    const out = Either.getOrThrow(MetaCapi.transform(purchase, settings()))
    expect(out.action_source).toBe("website")
    expect(out.event_source_url).toBe("https://app.example.com/signup")
    expect(out.user_data.client_user_agent).toBe("Mozilla/5.0 (X11; Linux x86_64)")
  })

  it("the event's own context wins; without any it is system_generated", () => {
    const own = janeDoe({
      name: "purchase",
      properties: { value: 1, currency: "USD", order_id: "o1" },
      context: { page_url: "https://shop.example.com/checkout", user_agent: "UA-own" },
      identity: { lastContext: { pageUrl: "https://app.example.com/signup", userAgent: "UA-old" } }
    })
    const a = Either.getOrThrow(MetaCapi.transform(own, settings()))
    expect([a.action_source, a.event_source_url, a.user_data.client_user_agent]).toEqual([
      "website",
      "https://shop.example.com/checkout",
      "UA-own"
    ])
    const none = Either.getOrThrow(MetaCapi.transform(janeDoe({ name: "sign_up" }), settings()))
    expect(none.action_source).toBe("system_generated")
    expect(none.event_source_url).toBeUndefined()
  })
})
