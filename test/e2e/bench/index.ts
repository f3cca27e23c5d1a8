/**
 * The large-report benchmark suite, on @vscode/test-electron's `run()` contract:
 *   node out/test/e2e/codeServer.js --suite out/test/e2e/bench/index.js
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Mocha from 'mocha';

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', color: false, timeout: 300_000, reporter: 'spec' });
  for (const f of readdirSync(__dirname).filter((n) => n.endsWith('.test.js')).sort()) mocha.addFile(join(__dirname, f));
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const s = runner.stats;
      console.log(`e2e bench: ${s?.passes ?? 0} passed, ${s?.failures ?? failures} failed`);
      if (failures > 0) reject(new Error(`${failures} benchmark(s) failed`));
      else if ((s?.passes ?? 0) === 0) reject(new Error('no benchmark ran'));
      else resolve();
    });
  });
}
