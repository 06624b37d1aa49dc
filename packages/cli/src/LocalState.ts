/**
 * What `serve --sandbox` leaves for the other commands in `.tracklayer/sandbox.json` (mode 0600): the gateway URL
 * and the generated sandbox keys, so `send` and `explain` work without flags. Production keys never go here.
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

/** The existing sandbox keys, or new random ones. */
export const sandboxKeys = (cwd: string): { readonly writeKey: string; readonly adminKey: string } => {
  const s = read(cwd)
  if (s) return { writeKey: s.writeKey, adminKey: s.adminKey }
  return {
    writeKey: `tl_sandbox_write_${randomBytes(12).toString("hex")}`,
    adminKey: `tl_sandbox_admin_${randomBytes(12).toString("hex")}`
  }
}
