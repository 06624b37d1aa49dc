/**
 * A TCP proxy on loopback that a test controls, to stand between a gateway and its PostgreSQL: `cut()` destroys every
 * open connection (the peers see a reset) and resets new ones until `restore()`, which is what the gateway sees when
 * its database restarts or the network between them fails — without touching the machine's shared server.
 */
import * as net from "node:net"

export interface TcpProxy {
  /** The proxy's port on 127.0.0.1. */
  readonly port: number
  /** Destroys every open connection and resets new ones until `restore`. */
  readonly cut: () => void
  /** Accepts and forwards connections again. */
  readonly restore: () => void
  /** Connections forwarded now. */
  readonly open: () => number
  /** Connections accepted and reset while cut. */
  readonly refused: () => number
  readonly close: () => Promise<void>
}

/** Starts a proxy on a free loopback port that forwards to `target`. */
export const startTcpProxy = (target: { readonly host: string; readonly port: number }): Promise<TcpProxy> =>
  new Promise((resolve, reject) => {
    const pairs = new Set<readonly [net.Socket, net.Socket]>()
    let isCut = false
    let refused = 0
    const drop = (pair: readonly [net.Socket, net.Socket]) => {
      pairs.delete(pair)
      for (const s of pair) if (!s.destroyed) s.resetAndDestroy()
    }
    const server = net.createServer((client) => {
      if (isCut) {
        refused += 1
        client.on("error", () => {})
        client.resetAndDestroy()
        return
      }
      const upstream = net.connect(target.port, target.host)
      const pair = [client, upstream] as const
      pairs.add(pair)
      client.on("error", () => drop(pair))
      upstream.on("error", () => drop(pair))
      client.on("close", () => drop(pair))
      upstream.on("close", () => drop(pair))
      client.pipe(upstream)
      upstream.pipe(client)
    })
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject)
      resolve({
        port: (server.address() as net.AddressInfo).port,
        cut: () => {
          isCut = true
          for (const pair of [...pairs]) drop(pair)
        },
        restore: () => {
          isCut = false
        },
        open: () => pairs.size,
        refused: () => refused,
        close: () =>
          new Promise<void>((done) => {
            for (const pair of [...pairs]) drop(pair)
            server.close(() => done())
          })
      })
    })
  })
