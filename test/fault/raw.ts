/**
 * A raw HTTP/1.1 client over one TCP connection, for what `fetch` cannot do: send a body byte by byte (slow loris),
 * declare a length it never sends, or stream a chunked body and stop as soon as the server answers.
 */
import * as net from "node:net"

/** What came back on the connection. */
export interface RawAnswer {
  /** The response status, if a response head arrived. */
  readonly status: number | undefined
  /** Response headers, names in lower case. */
  readonly headers: Readonly<Record<string, string>>
  /** The response body (as far as it arrived). */
  readonly body: string
  /** Body bytes the client had written when the answer (or the close) came. */
  readonly sent: number
  /** The server closed the connection. */
  readonly closed: boolean
  /** The client gave up after `giveUpMs` without an answer or a close. */
  readonly gaveUp: boolean
}

/** Feeds the body: `write` resolves once the bytes are handed to the socket; stop when `answered()` is true. */
export type Feed = (
  write: (bytes: Uint8Array | string) => Promise<void>,
  answered: () => boolean
) => Promise<void>

/**
 * Sends `head` (request line and headers, without the blank line) and the body from `feed` to `url`'s host and port.
 * Resolves when a complete response arrived, the server closed the connection, or after `giveUpMs`.
 */
export const rawRequest = (url: string, head: string, feed: Feed, giveUpMs: number): Promise<RawAnswer> =>
  new Promise((resolve) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect(Number(port), hostname)
    let received = Buffer.alloc(0)
    let sent = 0
    let closed = false
    let done = false
    let complete = false

    const parse = () => {
      const end = received.indexOf("\r\n\r\n")
      if (end < 0) return { status: undefined, headers: {}, body: "", complete: false }
      const lines = received.subarray(0, end).toString("latin1").split("\r\n")
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1])
      const headers: Record<string, string> = {}
      for (const l of lines.slice(1)) {
        const i = l.indexOf(":")
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
      }
      const rest = received.subarray(end + 4)
      const length = headers["content-length"] !== undefined ? Number(headers["content-length"]) : undefined
      const body = decodeChunked(rest, headers["transfer-encoding"] === "chunked")
      return {
        status: Number.isNaN(status) ? undefined : status,
        headers,
        body: body.text,
        complete: length !== undefined ? rest.length >= length : body.complete
      }
    }

    const finish = (gaveUp: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      const r = parse()
      socket.destroy()
      resolve({ status: r.status, headers: r.headers, body: r.body, sent, closed, gaveUp })
    }
    const timer = setTimeout(() => finish(true), giveUpMs)

    socket.on("data", (d: Buffer) => {
      received = Buffer.concat([received, d])
      if (parse().complete) {
        complete = true
        // Give the server a moment to close the connection after its answer (`connection: close`).
        setTimeout(() => finish(false), 100)
      }
    })
    socket.on("close", () => {
      closed = true
      finish(false)
    })
    socket.on("error", () => {
      closed = true
      finish(false)
    })

    const write = (bytes: Uint8Array | string) =>
      new Promise<void>((res) => {
        if (done || socket.destroyed || closed) return res()
        const buf = typeof bytes === "string" ? Buffer.from(bytes, "utf8") : Buffer.from(bytes)
        const flushed = socket.write(buf, () => {
          sent += buf.length
          if (flushed) res()
        })
        if (!flushed) socket.once("drain", () => res())
      })
    socket.once("connect", () => {
      socket.write(`${head}\r\n\r\n`, "latin1")
      void feed(write, () => complete || closed || done)
    })
  })

const decodeChunked = (rest: Buffer, chunked: boolean): { text: string; complete: boolean } => {
  if (!chunked) return { text: rest.toString("utf8"), complete: false }
  const parts: Array<Buffer> = []
  let at = 0
  while (at < rest.length) {
    const eol = rest.indexOf("\r\n", at)
    if (eol < 0) break
    const size = parseInt(rest.subarray(at, eol).toString("latin1"), 16)
    if (Number.isNaN(size)) break
    if (size === 0) return { text: Buffer.concat(parts).toString("utf8"), complete: true }
    parts.push(rest.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
  return { text: Buffer.concat(parts).toString("utf8"), complete: false }
}

/** Waits `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
