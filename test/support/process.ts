/** Runs the real `tracklayer` CLI as a child process (for restart and crash tests). */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"

export const ROOT = path.resolve(__dirname, "../..")
export const BIN = path.join(ROOT, "packages/cli/bin/tracklayer.mjs")

/** A free TCP port on loopback. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

export interface Gateway {
  readonly process: ChildProcess
  readonly url: string
  readonly output: () => string
}

/** Starts `tracklayer serve` and waits until /healthz answers 200. */
export const startGateway = async (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  port: number,
  cwd: string = ROOT
): Promise<Gateway> => {
  let out = ""
  const child = spawn(process.execPath, [BIN, "serve", "--port", String(port), ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  child.stdout!.on("data", (d) => (out += d))
  child.stderr!.on("data", (d) => (out += d))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${out}`)
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(3000) })
      if (res.status === 200) return { process: child, url, output: () => out }
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200))
  }
  child.kill("SIGKILL")
  throw new Error(`gateway did not become healthy within 60 s:\n${out}`)
}

/** Kills with SIGKILL and waits for the exit. */
export const kill9 = (g: Gateway) =>
  new Promise<void>((resolve) => {
    if (g.process.exitCode !== null || g.process.signalCode !== null) return resolve()
    g.process.once("exit", () => resolve())
    g.process.kill("SIGKILL")
  })
