/**
 * What `serve --sandbox` leaves for the other commands in `.tracklayer/sandbox.json` (mode 0600): the gateway URL
 * and the generated sandbox keys, so `send` and `explain` work without flags, and the sandbox's master key (the data
 * in `.tracklayer/data` is encrypted under it). Production keys never go here.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/** The sandbox state file. */
export interface SandboxState {
  readonly url?: string
  readonly writeKey: string
  readonly adminKey: string
  readonly sandboxes?: Readonly<Record<string, string>>
  /** The vault master key of the sandbox's store (base64), unless TRACKLAYER_MASTER_KEY was set. */
  readonly masterKey?: string
  /** The shared secret the sandbox's sources (inbound webhooks) expect. */
  readonly sourceSecret?: string
}

/** Directory of local state (next to the default PGlite data directory). */
export const stateDir = (cwd: string) => path.join(cwd, ".tracklayer")
const file = (cwd: string) => path.join(stateDir(cwd), "sandbox.json")

/** Reads the sandbox state, if any. */
export const read = (cwd: string): SandboxState | undefined => {
  try {
    const s = JSON.parse(fs.readFileSync(file(cwd), "utf8")) as Partial<SandboxState>
    return typeof s.writeKey === "string" && typeof s.adminKey === "string" ? (s as SandboxState) : undefined
  } catch {
    return undefined
  }
}

/** Writes the sandbox state (owner-only permissions). */
export const write = (cwd: string, state: SandboxState): void => {
  fs.mkdirSync(stateDir(cwd), { recursive: true })
  fs.writeFileSync(file(cwd), JSON.stringify(state, null, 2) + "\n", { mode: 0o600 })
}

/**
 * The sandbox's master key: the one in the state file, else a new random one written there at once (before any data
 * is encrypted under it), keeping whatever else the file holds.
 */
export const sandboxMasterKey = (cwd: string): string =>
  kept(cwd, "masterKey", () => randomBytes(32).toString("base64"))

/** The sandbox's source secret (kept in the state file like the master key). */
export const sandboxSourceSecret = (cwd: string): string =>
  kept(cwd, "sourceSecret", () => `tl_sandbox_source_${randomBytes(16).toString("hex")}`)

/** A value of the state file, or a new one written there at once, keeping whatever else the file holds. */
const kept = (cwd: string, field: "masterKey" | "sourceSecret", make: () => string): string => {
  let raw: Record<string, unknown> = {}
  try {
    raw = JSON.parse(fs.readFileSync(file(cwd), "utf8")) as Record<string, unknown>
  } catch {
    // no state yet
  }
  const existing = raw[field]
  if (typeof existing === "string") return existing
  const value = make()
  fs.mkdirSync(stateDir(cwd), { recursive: true })
  fs.writeFileSync(file(cwd), JSON.stringify({ ...raw, [field]: value }, null, 2) + "\n", { mode: 0o600 })
  return value
}

/** The existing sandbox keys, or new random ones. */
export const sandboxKeys = (cwd: string): { readonly writeKey: string; readonly adminKey: string } => {
  const s = read(cwd)
  if (s) return { writeKey: s.writeKey, adminKey: s.adminKey }
  return {
    writeKey: `tl_sandbox_write_${randomBytes(12).toString("hex")}`,
    adminKey: `tl_sandbox_admin_${randomBytes(12).toString("hex")}`
  }
}
