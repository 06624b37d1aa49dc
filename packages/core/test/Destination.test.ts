import { assert, describe, it } from "@effect/vitest"
import { PLUGIN_API_VERSION, satisfies } from "../src/Destination.js"

describe("Destination.satisfies", () => {
  const cases: ReadonlyArray<{ range: string; version: string; expected: boolean }> = [
    // Caret: same major, at least the given version.
    { range: "^1.0.0", version: "1.0.0", expected: true },
    { range: "^1.0.0", version: "1.5.2", expected: true },
    { range: "^1.0.0", version: "2.0.0", expected: false },
    { range: "^1.0.0", version: "0.9.0", expected: false },
    { range: "^1.2.0", version: "1.1.9", expected: false },
    // Caret below 1.0.0: the minor is the breaking number.
    { range: "^0.2.0", version: "0.2.5", expected: true },
    { range: "^0.2.0", version: "0.3.0", expected: false },
    { range: "^0.2.0", version: "0.1.9", expected: false },
    { range: "^0.0.3", version: "0.0.3", expected: true },
    { range: "^0.0.3", version: "0.0.4", expected: false },
    { range: "^0.0.3", version: "0.1.0", expected: false },
    // Partial versions: ^0.0 is <0.1.0, ^1 is <2.0.0.
    { range: "^0.0", version: "0.0.9", expected: true },
    { range: "^0.0", version: "0.1.0", expected: false },
    { range: "^1", version: "1.9.0", expected: true },
    { range: "^1", version: "2.0.0", expected: false },
    // Tilde: same major and minor.
    { range: "~1.2.0", version: "1.2.0", expected: true },
    { range: "~1.2.0", version: "1.2.9", expected: true },
    { range: "~1.2.0", version: "1.3.0", expected: false },
    { range: "~1.2.0", version: "1.1.9", expected: false },
    // Comparator sets (space = and).
    { range: ">=1.0.0 <2.0.0", version: "1.0.0", expected: true },
    { range: ">=1.0.0 <2.0.0", version: "1.9.9", expected: true },
    { range: ">=1.0.0 <2.0.0", version: "2.0.0", expected: false },
    { range: ">=1.0.0 <2.0.0", version: "0.9.9", expected: false },
    { range: ">1.0.0", version: "1.0.0", expected: false },
    { range: "<=1.0.0", version: "1.0.0", expected: true },
    // Alternatives.
    { range: "^1.0.0 || ^2.0.0", version: "2.3.0", expected: true },
    { range: "^1.0.0 || ^2.0.0", version: "3.0.0", expected: false },
    { range: "^0.9.0||^1.0.0", version: "1.0.0", expected: true },
    // Exact versions.
    { range: "1.0.0", version: "1.0.0", expected: true },
    { range: "=1.0.0", version: "1.0.1", expected: false },
    { range: "v1.0.0", version: "1.0.0", expected: true },
    // Garbage never matches.
    { range: "garbage", version: "1.0.0", expected: false },
    { range: "^x.y.z", version: "1.0.0", expected: false },
    { range: "", version: "1.0.0", expected: false },
    { range: "^1.0.0", version: "not-a-version", expected: false }
  ]
  for (const c of cases) {
    it(`${JSON.stringify(c.range)} ${c.expected ? "accepts" : "refuses"} ${c.version}`, () => {
      assert.strictEqual(satisfies(c.version, c.range), c.expected)
    })
  }

  it("the core implements plugin API 1.2.0 (1.1 added deletePerson, 1.2 audiences and userState)", () => {
    assert.strictEqual(PLUGIN_API_VERSION, "1.2.0")
    // Plugins built for 1.0 and 1.1 still load; one that needs 1.3 does not.
    assert.isTrue(satisfies(PLUGIN_API_VERSION, "^1.0.0"))
    assert.isTrue(satisfies(PLUGIN_API_VERSION, "^1.1.0"))
    assert.isFalse(satisfies(PLUGIN_API_VERSION, "^1.3.0"))
  })
})
