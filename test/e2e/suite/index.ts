/**
 * The end-to-end suite's entry, on @vscode/test-electron's `run()` contract: VS Code
 * loads this file in the extension host and waits for the promise. The same file runs
 * under test-electron (desktop VS Code) and under code-server (test/e2e/codeServer.ts).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Mocha from 'mocha';

export function run(): Promise<void> {
  return runSuite(__dirname);
}

/** Runs every `*.test.js` in `dir` (another suite, e.g. test/e2e/untrusted, names its own). */
export function runSuite(dir: string): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', color: false, timeout: 120_000, reporter: 'spec' });
  const artifacts = process.env['MEMBIT_E2E_ARTIFACTS'];
  const grepFile = artifacts ? join(artifacts, 'grep.txt') : '';
  if (grepFile && existsSync(grepFile)) mocha.grep(readFileSync(grepFile, 'utf8').trim());
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.test.js')).sort()) {
    mocha.addFile(join(dir, f));
  }
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const s = runner.stats;
      // A plain summary line that CI reads, whatever the host prints around it.
      console.log(`e2e: ${s?.passes ?? 0} passed, ${s?.failures ?? failures} failed`);
      if (failures > 0) reject(new Error(`${failures} end-to-end test(s) failed`));
      else if ((s?.passes ?? 0) === 0) reject(new Error('no end-to-end test ran'));
      else resolve();
    });
  });
}
