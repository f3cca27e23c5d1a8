import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { test } from 'node:test';

const REPO = resolve(__dirname, '..', '..', '..');
const GENERATED = 'src/core/report/types.generated.ts';
const SCHEMA = 'kernels/membit/profile/report.schema.json';

test('the committed report types are what the report schema generates', () => {
  // The generator runs as its own process: it is an ES module with prettier behind it,
  // which this bundled CommonJS test should not pull in.
  const gen = spawnSync(process.execPath, [join(REPO, 'scripts', 'gen-report-types.mjs'), '--stdout'], {
    cwd: REPO,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(gen.status, 0, `scripts/gen-report-types.mjs failed:\n${gen.stderr}`);
  // A checkout with CRLF line endings holds the same text.
  const committed = readFileSync(join(REPO, GENERATED), 'utf8').replace(/\r\n/g, '\n');
  if (gen.stdout === committed) return;
  const want = gen.stdout.split('\n');
  const have = committed.split('\n');
  let i = 0;
  while (i < want.length && want[i] === have[i]) i++;
  assert.fail(
    `${GENERATED} is out of date with ${SCHEMA}: run \`npm run gen:report-types\` and commit the result.\n` +
      `First difference at line ${i + 1}:\n  generated: ${want[i] ?? '(end of file)'}\n  committed: ${have[i] ?? '(end of file)'}`,
  );
});
