/**
 * Scanner fuzz benchmark (`npm run bench:scan-fuzz`): 3,000 mutated fixture texts plus
 * pathological inputs (long operator and attribute chains, deeply nested calls and
 * brackets, huge classes, long strings and lines, deep indentation), each scanned the way
 * the editor and `membit scan` do (DEFAULT_BUDGET_MS). Prints the worst time and memory
 * and writes test/bench/results/scan-fuzz-<date>.json.
 *
 * Goals: every file ≤ 2 s and ≤ 200 MB, output linear in input. Each pathological input
 * runs in a fresh process, so its peak RSS is its own; the mutated inputs run in batches
 * of 500 per process (their peak RSS is the batch's, an upper bound per input).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { siteJson } from '../../src/core/cli/scan';
import { createScanner, DEFAULT_BUDGET_MS, type Scanner } from '../../src/core/scan';
import { mutate, rng } from '../unit/fuzzInputs';
import { repoRoot, writeResult } from './benchKit';
import { itemAt } from '../../src/core/arrays';
import { defined } from '../defined';


/** Pathological inputs by name; sizes reach the 2 MB default file limit where that is the point. */
function pathological(): Record<string, () => string> {
  const out: Record<string, () => string> = {};
  const imports = 'import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n';
  for (const n of [5_000, 20_000, 80_000]) out[`sum-chain-${n}`] = () => `x = ${Array(n).fill('1').join('+')}\n`;
  for (const n of [5_000, 20_000, 50_000]) out[`attr-chain-${n}`] = () => `${imports}x = torch.${'nn.'.repeat(n)}Dropout(0.1)\n`;
  for (const n of [1_000, 3_000, 10_000]) out[`nested-dropout-${n}`] = () => `${imports}y = ${'F.dropout('.repeat(n)}x${', 0.1)'.repeat(n)}\n`;
  for (const n of [10_000, 50_000]) out[`nested-parens-${n}`] = () => `x = ${'('.repeat(n)}1${')'.repeat(n)}\n`;
  for (const n of [10_000, 50_000]) out[`unclosed-parens-${n}`] = () => `x = ${'('.repeat(n)}\n`;
  for (const n of [10_000, 50_000]) out[`nested-lists-${n}`] = () => `x = ${'['.repeat(n)}${']'.repeat(n)}\n`;
  for (const n of [2_000, 20_000]) {
    out[`linear-pairs-${n}`] = () => {
      const l = [imports, 'class Big(nn.Module):', '    def __init__(self, d):', '        super().__init__()'];
      for (let i = 0; i < n; i++) l.push(`        self.fc1_${i} = nn.Linear(d, 4 * d)`, `        self.fc2_${i} = nn.Linear(4 * d, d)`);
      return `${l.join('\n')}\n`;
    };
  }
  for (const n of [20_000, 60_000]) out[`dropouts-in-class-${n}`] = () => `${imports}class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n${Array.from({ length: n }, (_, i) => `        self.d${i} = nn.Dropout(0.1)`).join('\n')}\n`;
  for (const n of [200, 900]) {
    out[`deep-indent-${n}`] = () => {
      const l: string[] = [];
      for (let i = 0; i < n; i++) l.push(`${' '.repeat(i)}if x:`);
      l.push(`${' '.repeat(n)}y = F.dropout(x, 0.1)`);
      return `${imports}${l.join('\n')}\n`;
    };
  }
  out['long-line-1mb'] = () => `${imports}x = ${'a, '.repeat(330_000)}b\n`;
  out['long-string-1mb'] = () => `${imports}s = "${'x'.repeat(1_000_000)}"\nd = nn.Dropout(0.1)\n`;
  out['many-imports-30k'] = () => Array.from({ length: 30_000 }, (_, i) => `import torch.nn as n${i}`).join('\n');
  out['many-defs-20k'] = () => Array.from({ length: 20_000 }, (_, i) => `def f${i}(x, p=0.1):\n    return F.dropout(x, p)\n`).join('');
  out['lambda-chain-5k'] = () => `f = ${'lambda x: '.repeat(5_000)}x\n`;
  out['matmul-chain-20k'] = () => `y = ${Array(20_000).fill('a').join(' @ ')}\n`;
  out['comparison-chain-20k'] = () => `y = ${Array(20_000).fill('a').join(' < ')}\n`;
  out['subscript-chain-20k'] = () => `y = x${'[0]'.repeat(20_000)}\n`;
  out['call-chain-20k'] = () => `y = f${'()'.repeat(20_000)}\n`;
  out['kwargs-20k'] = () => `${imports}y = F.dropout(x, ${Array.from({ length: 20_000 }, (_, i) => `k${i}=${i}`).join(', ')})\n`;
  out['nul-and-surrogates'] = () => `${imports}d = nn.Dropout(0.1)\x00\ud800${'\udfff'.repeat(100_000)}\n`;
  out['decorators-10k'] = () => `${'@d\n'.repeat(10_000)}def f(x):\n    return F.dropout(x)\n`;
  return out;
}

interface Row {
  name: string;
  bytes: number;
  ms: number;
  sites: number;
  outputBytes: number;
  partial: string | null;
  error: string | null;
}

function scanOne(s: Scanner, name: string, text: string): Row {
  const t0 = performance.now();
  const r = s.scan(text, `${name}.py`, { maxBytes: 4 << 20, budgetMs: DEFAULT_BUDGET_MS });
  const ms = performance.now() - t0;
  // What `membit scan --json` would print for it: the output must stay linear in the input.
  let outputBytes = 0;
  for (const site of r.sites) outputBytes += JSON.stringify(siteJson(site)).length;
  return { name, bytes: Buffer.byteLength(text), ms: Number(ms.toFixed(1)), sites: r.sites.length, outputBytes, partial: r.partial?.reason ?? null, error: r.error ?? null };
}

async function child(): Promise<void> {
  const s = await createScanner();
  const rows: Row[] = [];
  const kind = itemAt(process.argv, 3);
  if (kind === 'path') {
    const name = itemAt(process.argv, 4);
    const make = pathological()[name];
    if (!make) throw new Error(`unknown input ${name}`);
    rows.push(scanOne(s, name, make()));
  } else {
    const [from, to] = [Number(process.argv[4]), Number(process.argv[5])];
    const dir = join(repoRoot(), 'test', 'fixtures', 'scan');
    const sources = readdirSync(dir).filter((f) => f.endsWith('.py')).sort().map((f) => readFileSync(join(dir, f), 'utf8'));
    // Warm the JIT so the first inputs are not charged for it.
    for (const src of sources) s.scan(src, 'warm.py');
    for (let i = from; i < to; i++) {
      const r = rng(1_000_003 + i);
      const src = itemAt(sources, r(sources.length));
      // Half whole fixtures, half windows of them.
      const start = i % 2 ? r(Math.max(1, src.length - 2000)) : 0;
      const text = mutate(i % 2 ? src.slice(start, start + 300 + r(3000)) : src, r, 6, 400);
      rows.push(scanOne(s, `mutated-${i}`, text));
    }
  }
  s.dispose();
  process.stdout.write(JSON.stringify({ rows, maxRssMB: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)) }));
}

function run(args: string[]): { rows: Row[]; maxRssMB: number } {
  return JSON.parse(execFileSync(process.execPath, ['--max-old-space-size=2048', __filename, '--child', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { rows: Row[]; maxRssMB: number };
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: repoRoot(), encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child();
  const started = Date.now();
  const load0 = loadavg()[0];
  const path: (Row & { maxRssMB: number })[] = [];
  // `--only a,b`: just these pathological inputs (to look at one), nothing written.
  const onlyAt = process.argv.indexOf('--only');
  const only = onlyAt >= 0 ? (process.argv[onlyAt + 1] ?? '').split(',') : undefined;
  for (const name of Object.keys(pathological())) {
    if (only && !only.includes(name)) continue;
    const r = run(['path', name]);
    const row = { ...defined(r.rows[0], `${name} row`), maxRssMB: r.maxRssMB };
    path.push(row);
    process.stderr.write(`${name.padEnd(26)} ${String(row.bytes).padStart(8)} B  ${String(row.ms).padStart(7)} ms  ${String(row.maxRssMB).padStart(6)} MB  out ${row.outputBytes} B  ${row.partial ?? ''}${row.error ? ` error: ${row.error}` : ''}\n`);
  }
  if (only) return;
  const MUTATED = 3000;
  const batches: { rows: Row[]; maxRssMB: number }[] = [];
  for (let from = 0; from < MUTATED; from += 500) batches.push(run(['mutated', String(from), String(Math.min(MUTATED, from + 500))]));
  const mutated = batches.flatMap((b) => b.rows);
  const all = [...path, ...mutated];
  const worst = all.reduce((a, b) => (b.ms > a.ms ? b : a));
  const worstRss = Math.max(...path.map((p) => p.maxRssMB), ...batches.map((b) => b.maxRssMB));
  const worstRatio = path.reduce((a, b) => (b.outputBytes / b.bytes > a.outputBytes / a.bytes ? b : a));
  const result = {
    date: new Date().toISOString(),
    commit: git(['rev-parse', '--short', 'HEAD']) + (git(['status', '--porcelain']) ? '+dirty' : ''),
    node: process.version,
    webTreeSitter: (JSON.parse(readFileSync(join(repoRoot(), 'node_modules', 'web-tree-sitter', 'package.json'), 'utf8')) as { version: string }).version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGB: Number((totalmem() / 2 ** 30).toFixed(1)),
    platform: `${process.platform}-${process.arch}`,
    // The machine may be shared: the 1-minute load average says how much the figures were disturbed.
    loadavg1: [Number(load0?.toFixed(2)), Number(loadavg()[0]?.toFixed(2))],
    budgetMs: DEFAULT_BUDGET_MS,
    inputs: all.length,
    pathological: path.length,
    mutated: mutated.length,
    errors: all.filter((r) => r.error).length,
    partial: all.filter((r) => r.partial).length,
    worstMs: worst.ms,
    worstInput: worst.name,
    over2s: all.filter((r) => r.ms > 2000).map((r) => `${r.name} ${r.ms} ms`),
    worstRssMB: worstRss,
    mutatedMeanMs: Number((mutated.reduce((a, r) => a + r.ms, 0) / mutated.length).toFixed(2)),
    mutatedWorstMs: Math.max(...mutated.map((r) => r.ms)),
    worstOutputPerInputByte: { input: worstRatio.name, ratio: Number((worstRatio.outputBytes / worstRatio.bytes).toFixed(2)) },
    seconds: Math.round((Date.now() - started) / 1000),
    rows: path,
  };
  const file = writeResult(`scan-fuzz-${result.date.slice(0, 10)}.json`, result, 1);
  const { rows: _rows, ...summary } = result;
  process.stdout.write(`${JSON.stringify(summary, null, 1)}\nwrote ${file}\n`);
}

void main();
