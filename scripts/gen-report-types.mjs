// Generates src/core/report/types.generated.ts from the report's JSON Schema, so the
// TypeScript reader cannot drift from the contract the Python harness validates against.
//   node scripts/gen-report-types.mjs           rewrite the generated file
//   node scripts/gen-report-types.mjs --stdout  print what it would write (the drift test reads this)
// Object schemas carry a "title" where the reader needs a named type (LineEntry, Summary, …);
// the rest stay inline, as the schema nests them.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SCHEMA = 'kernels/membit/profile/report.schema.json';
export const OUTPUT = 'src/core/report/types.generated.ts';
export const COMMAND = 'npm run gen:report-types';

const BANNER = `/**
 * GENERATED from ${SCHEMA} by scripts/gen-report-types.mjs: do not edit.
 * Change the schema, then run \`${COMMAND}\`; test/unit/reportTypes.test.ts fails while this
 * file and the schema disagree. Hand-written additions live in peak.ts, re-exported by types.ts.
 */`;

export async function generate() {
  const schema = JSON.parse(readFileSync(join(root, SCHEMA), 'utf8'));
  return compile(schema, 'Report', {
    bannerComment: BANNER,
    // The schema is the only input: no $ref leaves the file, so nothing is resolved from disk.
    cwd: join(root, dirname(SCHEMA)),
    // JSON Schema's own default: an object that does not say additionalProperties is open.
    additionalProperties: true,
    // Every $def is referenced; an unreferenced one would be dead weight in the contract.
    unreachableDefinitions: false,
    unknownAny: true,
    // Pinned here (not read from a prettier config) so the output depends on the schema alone.
    format: true,
    style: {
      bracketSpacing: true,
      printWidth: 120,
      semi: true,
      singleQuote: true,
      tabWidth: 2,
      trailingComma: 'all',
      useTabs: false,
    },
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = await generate();
  if (process.argv.includes('--stdout')) {
    process.stdout.write(text);
  } else {
    writeFileSync(join(root, OUTPUT), text);
    console.log(`gen-report-types: wrote ${OUTPUT}`);
  }
}
