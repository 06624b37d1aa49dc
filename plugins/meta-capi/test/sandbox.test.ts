/**
 * The sandbox alone, over raw HTTP: it must answer as the Graph API events edge documents, whatever the client.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { MetaCapiSandbox } from "../src/index.js"
import { SHA } from "./fixtures.js"

const TOKEN = MetaCapiSandbox.SANDBOX_ACCESS_TOKEN
const PIXEL = MetaCapiSandbox.SANDBOX_PIXEL_ID

interface Answer {
  readonly status: number
  readonly body: any
}

const postRaw = (url: string, body: string, contentType: string) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(
      HttpClientRequest.post(url).pipe(HttpClientRequest.bodyText(body, contentType))
    )
    const text = yield* response.text
    return { status: response.status, body: JSON.parse(text) } as Answer
  }).pipe(Effect.orDie)

/** POSTs the form Meta documents: `data` (JSON), `access_token`, `test_event_code`. */
const postForm = (
  sb: MetaCapiSandbox.Sandbox,
  data: unknown,
  { pixel = PIXEL, testEventCode, token = TOKEN }: { pixel?: string; token?: string; testEventCode?: string } = {}
) => {
  const form = new URLSearchParams({ data: JSON.stringify(data) })
  if (token !== "") form.set("access_token", token)
  if (testEventCode !== undefined) form.set("test_event_code", testEventCode)
  return postRaw(`${sb.url}/v27.0/${pixel}/events`, form.toString(), "application/x-www-form-urlencoded")
}

const seconds = (msAgo = 0) => Math.floor((Date.now() - msAgo) / 1000)
const event = (i: number, fields: Record<string, unknown> = {}) => ({
  event_name: "Lead",
  event_time: seconds(),
  event_id: `evt_${i}`,
  action_source: "system_generated",
  user_data: { em: [SHA["jane.doe@example.com"]] },
  data_processing_options: [],
  ...fields
})

const run = <A, E>(effect: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
  effect.pipe(Effect.provide(FetchHttpClient.layer))

/** The Graph error of an answer without its (generated) trace id. */
const errorOf = (a: Answer) => {
  const { fbtrace_id, ...rest } = a.body.error
  assert.match(fbtrace_id, /^SbxTrace\d{6}$/)
  return rest
}

describe("Meta Conversions API sandbox", () => {
  it.scopedLive("200 { events_received, messages, fbtrace_id }; events stored in order with the test code", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const sent = [event(1), event(2)]
      const answer = yield* postForm(sb, sent, { testEventCode: "TEST123" })
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(answer.body, { events_received: 2, messages: [], fbtrace_id: "SbxTrace000001" })
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.seq, e.event.event_id, e.test_event_code]), [
        [1, "evt_1", "TEST123"],
        [2, "evt_2", "TEST123"]
      ])
      assert.deepStrictEqual(stored[1]!.event, sent[1])
    })))

  it.scopedLive("one event older than 7 days fails the WHOLE request with Meta's 2804003 body; nothing stored", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const answer = yield* postForm(sb, [event(1), event(2, { event_time: seconds(8 * 86_400_000) })])
      assert.strictEqual(answer.status, 400)
      assert.deepStrictEqual(errorOf(answer), {
        message: "Invalid parameter",
        type: "OAuthException",
        code: 100,
        error_subcode: 2804003,
        is_transient: false,
        error_user_title: "Event Timestamp Too Old",
        error_user_msg: "The timestamp for this event is too far in the past. Events need to be sent from your " +
          "server within 7 days of when they occurred. Enter a timestamp that has occurred within the last 7 days."
      })
      assert.deepStrictEqual(yield* sb.client.events(), [])
      assert.deepStrictEqual((yield* sb.client.stats()).rejected, { "100/2804003 Event Timestamp Too Old": 2 })
    })))

  it.scopedLive("unhashed PII in em is refused (code 100); `<sha256>.<appendix>` is accepted", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const raw = yield* postForm(sb, [event(1, { user_data: { em: ["jane.doe@example.com"] } })])
      assert.strictEqual(raw.status, 400)
      assert.deepStrictEqual(errorOf(raw), {
        message: "Invalid parameter",
        type: "OAuthException",
        code: 100,
        error_subcode: 2804007,
        is_transient: false,
        error_user_title: "Unhashed customer information",
        error_user_msg: "em must be SHA-256 hashed (64 lowercase hex characters) after normalisation " +
          "($['data'][0]['user_data']['em'])"
      })
      const upper = yield* postForm(sb, [event(1, { user_data: { fn: SHA["mary"].toUpperCase() } })])
      assert.strictEqual(upper.status, 400)
      const appendix = yield* postForm(sb, [
        event(1, { user_data: { em: [`${SHA["jane.doe@example.com"]}.AQQCAQMC`], ph: `${SHA["16505551212"]}.BA` } })
      ])
      assert.strictEqual(appendix.status, 200)
    })))

  it.scopedLive("website events need event_source_url and user_data.client_user_agent (2804019)", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const noUa = yield* postForm(sb, [
        event(1),
        event(2, { action_source: "website", event_source_url: "https://shop.example.com/" })
      ])
      assert.strictEqual(noUa.status, 400)
      assert.strictEqual(noUa.body.error.error_subcode, 2804019)
      assert.strictEqual(
        noUa.body.error.error_user_msg,
        "The parameter $['data'][1]['user_data']['client_user_agent'] is required."
      )
      const noUrl = yield* postForm(sb, [event(1, { action_source: "website" })])
      assert.strictEqual(noUrl.body.error.error_user_msg, "The parameter $['data'][0]['event_source_url'] is required.")
      const bad = yield* postForm(sb, [event(1, { action_source: "web" })])
      assert.strictEqual(bad.body.error.error_user_title, "Invalid action_source")
    })))

  it.scopedLive("customer information, fbc format, Purchase money and LDU codes are validated", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const title = (a: Answer) => a.body.error?.error_user_title ?? a.status
      assert.strictEqual(
        title(yield* postForm(sb, [event(1, { user_data: { client_user_agent: "UA" } })])),
        "Customer information parameters missing"
      )
      assert.strictEqual(
        title(yield* postForm(sb, [event(1, { user_data: { fbc: "fb.1.123.IwAR" } })])),
        "Invalid fbc"
      )
      assert.strictEqual(
        title(yield* postForm(sb, [event(1, { user_data: { fbc: "fb.1.1776931200123.IwAR0abc" } })])),
        200
      )
      const purchase = yield* postForm(sb, [event(1, { event_name: "Purchase", custom_data: { value: 10 } })])
      assert.strictEqual(
        purchase.body.error.error_user_msg,
        "The parameter $['data'][0]['custom_data']['currency'] is required."
      )
      assert.strictEqual(
        title(yield* postForm(sb, [event(1, { data_processing_options: ["LDU"], data_processing_options_state: 5 })])),
        "Invalid data processing options"
      )
      assert.strictEqual(
        title(
          yield* postForm(sb, [
            event(1, {
              data_processing_options: ["LDU"],
              data_processing_options_country: 1,
              data_processing_options_state: 1000
            })
          ])
        ),
        200
      )
      assert.strictEqual(
        title(yield* postForm(sb, [event(1, { event_time: Date.now() })])),
        "Event Timestamp In Future"
      )
    })))

  it.scopedLive("token and pixel: missing → 104, wrong → 190, unknown pixel → 100/33; more than 1000 events → 100", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const missing = yield* postForm(sb, [event(1)], { token: "" })
      assert.deepStrictEqual(errorOf(missing), {
        message: "An access token is required to request this resource.",
        type: "OAuthException",
        code: 104
      })
      const wrong = yield* postForm(sb, [event(1)], { token: "nope" })
      assert.deepStrictEqual(errorOf(wrong), {
        message: "Invalid OAuth access token - Cannot parse access token",
        type: "OAuthException",
        code: 190
      })
      const pixel = yield* postForm(sb, [event(1)], { pixel: "42" })
      assert.strictEqual(pixel.body.error.code, 100)
      assert.strictEqual(pixel.body.error.error_subcode, 33)
      assert.strictEqual(pixel.body.error.type, "GraphMethodException")
      const many = yield* postForm(sb, Array.from({ length: 1001 }, (_, i) => event(i)))
      assert.strictEqual(many.status, 400)
      assert.strictEqual(many.body.error.error_user_title, "Too many events")
      assert.deepStrictEqual(yield* sb.client.events(), [])
    })))

  it.scopedLive("a JSON body with access_token in the query is accepted as well", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      const answer = yield* postRaw(
        `${sb.url}/v27.0/${PIXEL}/events?access_token=${TOKEN}`,
        JSON.stringify({ data: [event(1)] }),
        "application/json"
      )
      assert.strictEqual(answer.status, 200)
      assert.strictEqual(answer.body.events_received, 1)
    })))

  it.scopedLive("event_name + event_id dedup within 48 h: a repeat is received but stored once", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      yield* postForm(sb, [event(1)])
      const again = yield* postForm(sb, [
        event(1),
        event(1, { event_name: "Purchase", custom_data: { value: 1, currency: "USD" } })
      ])
      assert.strictEqual(again.body.events_received, 2)
      const stored = yield* sb.client.events()
      assert.deepStrictEqual(stored.map((e) => [e.event.event_name, e.event.event_id]), [
        ["Lead", "evt_1"],
        ["Purchase", "evt_1"]
      ])
      assert.strictEqual((yield* sb.client.stats()).duplicates, 1)
    })))

  it.scopedLive("env points the plugin at the sandbox", () =>
    run(Effect.gen(function*() {
      const sb = yield* MetaCapiSandbox.start()
      assert.deepStrictEqual(sb.env, { META_ACCESS_TOKEN: TOKEN, META_PIXEL_ID: PIXEL, META_ENDPOINT: sb.url })
    })))
})
