/**
 * Scanner benchmark (`npm run bench:scan`): cold start (WASM and query load), full
 * scans of generated 1k/5k/50k-line model files, and incremental rescans after a
 * one-line edit. Prints a table and writes test/bench/results/scan-<date>.json.
 *
 * Targets on the reference 2-core machine: incremental 5k ≤ 20 ms, full ≤ 60 ms per 1k lines.
 */
import { execFileSync } from 'node:child_process';
import { createScanner } from '../../src/core/scan';
import { machine, median, percentile, writeResult } from './benchKit';
import { generate } from './scanGen';
import { itemAt } from '../../src/core/arrays';

async function cold(): Promise<void> {
  const t0 = performance.now();
  const s = await createScanner();
  const init = performance.now() - t0;
  const t1 = performance.now();
  s.scan(generate(200), 'first.py');
  process.stdout.write(JSON.stringify({ initMs: init, firstScanMs: performance.now() - t1 }));
}

/** One size, in its own process: its own JIT warm-up and heap, so sizes do not disturb each other. */
async function measure(size: number): Promise<void> {
  const s = await createScanner();
  const text = generate(size);
  const opts = { maxBytes: 64 << 20 };
  // Warm the JIT first: the figures are for the scanner, not for V8 compiling it.
  for (let i = 0; i < (size >= 50000 ? 1 : 5); i++) s.scan(text, 'warm.py', opts);
  const reps = size >= 50000 ? 5 : size >= 5000 ? 15 : 31;
  const full: number[] = [];
  let sites = 0;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const r = s.scan(text, 'bench.py', opts);
    full.push(performance.now() - t0);
    sites = r.sites.length;
  }
  // Incremental: one-line edits inside method bodies, as typing does.
  const doc = s.open('bench.py', text, opts);
  const lines = text.split('\n');
  const targets = lines.map((l, i) => (l.startsWith('        self.') ? i : -1)).filter((i) => i >= 0);
  const inc: number[] = [];
  let reused = 0;
  let chunks = 0;
  const edits = 30;
  for (let e = 0; e < edits; e++) {
    const at = itemAt(targets, Math.floor(((e + 0.5) / edits) * targets.length));
    const edited = [...lines];
    edited[at] = `${edited[at]}  # edit ${e}`;
    const t0 = performance.now();
    const r = doc.update(edited.join('\n'));
    inc.push(performance.now() - t0);
    reused = r.stats.reusedChunks;
    chunks = r.stats.chunks;
    // Back to the original text, not timed, so every edit is one line against the same file.
    doc.update(text);
  }
  doc.dispose();
  s.dispose();
  const row: SizeRow = {
    lines: size,
    bytes: Buffer.byteLength(text),
    sites,
    fullMs: Number(median(full).toFixed(1)),
    fullMinMs: Number(Math.min(...full).toFixed(1)),
    fullMsPer1kLines: Number(((median(full) / size) * 1000).toFixed(1)),
    fullMinMsPer1kLines: Number(((Math.min(...full) / size) * 1000).toFixed(1)),
    incrementalMs: Number(median(inc).toFixed(2)),
    incrementalMinMs: Number(Math.min(...inc).toFixed(2)),
    incrementalP95Ms: Number(percentile(inc, 0.95).toFixed(2)),
    reusedChunks: reused,
    chunks,
  };
  process.stdout.write(JSON.stringify(row));
}

/** What one `--size N` process measures. */
interface SizeRow {
  lines: number;
  bytes: number;
  sites: number;
  fullMs: number;
  fullMinMs: number;
  fullMsPer1kLines: number;
  fullMinMsPer1kLines: number;
  incrementalMs: number;
  incrementalMinMs: number;
  incrementalP95Ms: number;
  reusedChunks: number;
  chunks: number;
}

async function main(): Promise<void> {
  if (process.argv.includes('--cold')) return cold();
  const sizeArg = process.argv.indexOf('--size');
  if (sizeArg >= 0) return measure(Number(process.argv[sizeArg + 1]));

  // Cold start in fresh processes: WASM instantiation, grammar load, query compile.
  const colds: { initMs: number; firstScanMs: number }[] = [];
  for (let i = 0; i < 5; i++) colds.push(JSON.parse(execFileSync(process.execPath, [__filename, '--cold'], { encoding: 'utf8' })) as { initMs: number; firstScanMs: number });
  const coldInit = median(colds.map((c) => c.initMs));
  const coldFirst = median(colds.map((c) => c.firstScanMs));

  const rows: SizeRow[] = [];
  for (const size of [1000, 5000, 50000]) {
    rows.push(JSON.parse(execFileSync(process.execPath, [__filename, '--size', String(size)], { encoding: 'utf8', maxBuffer: 1 << 20 })) as SizeRow);
  }

  const five = rows.find((r) => r.lines === 5000);
  if (!five) throw new Error('no row for 5000 lines');
  const worstPer1k = Math.max(...rows.map((r) => r.fullMsPer1kLines));
  const result = {
    ...machine(),
    coldStart: { initMs: Number(coldInit.toFixed(1)), firstScanMs: Number(coldFirst.toFixed(1)), runs: colds.length },
    sizes: rows,
    targets: {
      incremental5kMs: { target: 20, measured: five.incrementalMs, ok: five.incrementalMs <= 20 },
      fullMsPer1kLines: { target: 60, measured: worstPer1k, ok: worstPer1k <= 60 },
    },
  };

  const pad = (v: string | number, n: number) => String(v).padStart(n);
  console.log(`membit scanner benchmark — ${result.cpu}, ${result.cores} cores, node ${result.node}, load ${result.loadAverage.join(' ')}`);
  console.log(`cold start: ${result.coldStart.initMs} ms (WASM + grammar + queries), first scan of 200 lines ${result.coldStart.firstScanMs} ms (median of ${colds.length} processes)`);
  console.log('medians, with the best run in brackets');
  console.log(`${'lines'.padStart(7)} ${'sites'.padStart(6)} ${'full ms'.padStart(16)} ${'ms/1k lines'.padStart(14)} ${'incremental ms'.padStart(16)} ${'incr p95'.padStart(9)} ${'reused'.padStart(11)}`);
  for (const r of rows) {
    console.log(
      `${pad(r.lines, 7)} ${pad(r.sites, 6)} ${pad(`${r.fullMs} (${r.fullMinMs})`, 16)} ${pad(`${r.fullMsPer1kLines} (${r.fullMinMsPer1kLines})`, 14)} ${pad(`${r.incrementalMs} (${r.incrementalMinMs})`, 16)} ${pad(r.incrementalP95Ms, 9)} ${pad(`${r.reusedChunks}/${r.chunks}`, 11)}`,
    );
  }
  console.log(
    `targets: incremental 5k ${five.incrementalMs} ms (≤ 20) ${result.targets.incremental5kMs.ok ? 'ok' : 'MISSED'}; full ${worstPer1k} ms/1k lines worst (≤ 60) ${result.targets.fullMsPer1kLines.ok ? 'ok' : 'MISSED'}`,
  );
  console.log(`wrote ${writeResult(`scan-${result.date.slice(0, 10)}.json`, result)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
