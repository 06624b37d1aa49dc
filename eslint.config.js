// Lint for the monorepo (ESLint flat config). Kept fast: typescript-eslint's recommended rules without type
// information, formatting through @effect/eslint-plugin's dprint rule (the Effect monorepo's settings), plus the few
// project rules below. `npm run lint` runs it; CI runs the same script. `npx eslint --fix .` applies the formatting.
import js from "@eslint/js"
import effect from "@effect/eslint-plugin"
import tseslint from "typescript-eslint"

export default tseslint.config(
  {
    ignores: [
      "**/node_modules/**",
      "**/.tracklayer/**",
      "scratch/**",
      "docs/**",
      "coverage/**"
    ]
  },
  {
    files: [
      "packages/*/src/**/*.ts",
      "packages/*/test/**/*.ts",
      "packages/*/scripts/**/*.ts",
      "plugins/*/src/**/*.ts",
      "plugins/*/test/**/*.ts",
      "test/**/*.ts"
    ],
    extends: [js.configs.recommended, ...tseslint.configs.recommended, ...effect.configs.dprint],
    rules: {
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force"
        }
      }],
      "@typescript-eslint/no-unused-vars": ["error", {
        args: "all",
        argsIgnorePattern: "^_",
        varsIgnorePattern: "^_",
        caughtErrors: "all",
        caughtErrorsIgnorePattern: "^_",
        destructuredArrayIgnorePattern: "^_",
        ignoreRestSiblings: true
      }],
      // The plugin API uses `any` deliberately (settings and payload types are the plugin's own).
      "@typescript-eslint/no-explicit-any": "off"
    }
  },
  {
    // Library code logs through Effect (`Effect.log*`), never the console. The CLI talks to a terminal and the
    // sandboxes are local stand-ins for vendor APIs, so both may print.
    files: ["packages/*/src/**/*.ts", "plugins/*/src/**/*.ts"],
    ignores: ["packages/cli/src/**", "**/src/**/*[Ss]andbox*.ts", "**/src/**/sandbox/**"],
    rules: {
      "no-console": "error"
    }
  }
)
