#!/usr/bin/env node
// Runs the TypeScript CLI on Node 20 without a build step: tsx's loader is resolved from this package, so the
// command works from any directory.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
