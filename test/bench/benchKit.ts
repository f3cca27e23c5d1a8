/**
 * What the benchmarks share: order statistics, the machine a figure was measured on,
 * and where results are kept (test/bench/results, one JSON file per run).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { itemAt } from '../../src/core/arrays';

export function median(xs: readonly number[]): number {
  return percentile(xs, 0.5);
}

/** The value at fraction p of the sorted sample (0.5: the median, upper one for an even count). */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return itemAt(s, Math.min(s.length - 1, Math.floor(s.length * p)));
}

/** The checkout the bundle was built from (out/test/bench is three levels below it). */
export function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 8 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir);
  return dir;
}

/** When and where a result was measured. */
export function machine() {
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    platform: `${process.platform}-${process.arch}`,
    // The machine is shared: the 1-minute load average says how much the figures were disturbed.
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
  };
}

/** Writes a result as test/bench/results/<name>; returns its path. */
export function writeResult(name: string, result: unknown, indent = 2): string {
  const outDir = join(repoRoot(), 'test', 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, name);
  writeFileSync(out, `${JSON.stringify(result, null, indent)}\n`);
  return out;
}
