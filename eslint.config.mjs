// Lint for the extension, the CLI, the webview, the tests and the build scripts:
// typescript-eslint's strict, type-checked rules; the types come from tsconfig.json
// (media/ from media/tsconfig.json). `npm run lint` runs it with `tsc --noEmit`.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default defineConfig(
  {
    ignores: [
      // Build outputs and installed environments (the test venv ships third-party .js/.mjs).
      'node_modules/**',
      '.venv/**',
      '.whl/**',
      '.membit/**',
      'out/**',
      'dist/**',
      'dist-*/**',
      'test-artifacts/**',
      'native/build/**',
      'kernels/**',
      'samples/**',
      // Written by `npm run gen:report-types` from the report's JSON schema.
      'src/core/report/types.generated.ts',
    ],
  },
  // A disable comment that no longer suppresses anything is an error, so none outlives its reason.
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  tseslint.configs.stylisticTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: {
          // The build scripts are plain ES modules that no tsconfig includes.
          allowDefaultProject: ['*.mjs', 'scripts/*.mjs', 'native/*.mjs'],
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
  },
  {
    rules: {
      // Numbers in messages are the norm here (sizes, lines, counts); strings still must not
      // be undefined, null or an object that prints as [object Object].
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // node:test's test() and describe() return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      // `() => emitter.fire()` as a callback is plain; a void value used anywhere else is not.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // An empty string is "not set" for settings, environment variables and tool output, so
      // `s || fallback` is meant; `??` is still required for numbers, booleans and objects.
      '@typescript-eslint/prefer-nullish-coalescing': ['error', { ignorePrimitives: { string: true } }],
      // `const { key: _unused, ...rest } = o` is how a key is left out of a copy.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      // `() => {}` is the usual no-op callback; empty functions and methods still need a comment.
      '@typescript-eslint/no-empty-function': ['error', { allow: ['arrowFunctions'] }],
      // `import X = require('m')` is TypeScript's typed form for CommonJS modules; bare require() is not allowed.
      '@typescript-eslint/no-require-imports': ['error', { allowAsImport: true }],
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: globals.node },
    // Plain JavaScript cannot assert a type where a value arrives untyped (JSON.parse, and
    // playwright-core, installed outside the repository by scripts/setup-e2e.sh).
    rules: {
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
