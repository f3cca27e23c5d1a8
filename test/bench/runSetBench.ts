/**
 * Run-set benchmark (`node out/test/bench/runSetBench.js [--ranks 64] [--mb 50]`): a run set of
 * N generated rank reports of M MB each is opened as the editor opens it, each variant in a
 * fresh Node process:
 *
 *   main-thread  the baseline: every rank read, validated and merged on the calling thread
 *                (what the extension host would do without a worker);
 *   worker       the extension's way: RunSetClient and the bundled dist/runSetWorker.js.
 *
 * For each: time to first overlay (the merged report ready to index and paint) and the longest
 * stall of the calling thread's event loop meanwhile (a 10 ms timer's lateness), which is what
 * typing in the editor would feel. Prints device, versions, date and commit; writes
 * test/bench/results/runset-<date>.json.
 *
 * Target: the calling thread never stalls more than 100 ms with the worker.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { indexReport, indexReportInTurns } from '../../src/core/report/model';
import { loadRunSet, overlayReport, runSetInfo } from '../../src/core/report/runset';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { RUNSET_SCHEMA, type RunSetDoc } from '../../src/core/run/torchrun';
import { RunSetClient, yieldToLoop } from '../../src/vscode/report/runSetProtocol';
import { repoRoot, writeResult } from './benchKit';
import { generateLargeReport, MB } from './largeReport';
import { itemAt } from '../../src/core/arrays';
import { defined } from '../defined';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? itemAt(process.argv, i + 1) : def;
}

/** Writes N rank reports (a few distinct generated reports, each rank's identity set) and the run-set file. */
function writeRunSet(dir: string, ranks: number, mb: number): string {
  const distinct = Math.min(ranks, 4);
  const bases = Array.from({ length: distinct }, (_, i) => generateLargeReport({ targetBytes: mb * MB, seed: 11 + i }).report);
  mkdirSync(join(dir, 'bench.ranks'), { recursive: true });
  for (let r = 0; r < ranks; r++) {
    const base = itemAt(bases, r % distinct);
    const rep: Report = {
      ...base,
      run: {
        ...base.run,
        distributed: { rank: r, local_rank: r % 8, world_size: ranks, local_world_size: 8, node_rank: Math.floor(r / 8), host: `node${Math.floor(r / 8)}`, launcher: 'torchrun', run_set: 'bench', slurm_job: null, process_group: true, backend: 'nccl', failed_at: null, notes: [] },
      },
    };
    writeFileSync(join(dir, 'bench.ranks', `rank${r}.json`), JSON.stringify(rep));
  }
  const doc: RunSetDoc = {
    schema: RUNSET_SCHEMA, id: 'bench', launcher: 'torchrun', started: new Date().toISOString(), world_size: ranks, script: 'samples/gpt_tiny.py', argv: [], variant: 'baseline', status: 'ok', message: null,
    ranks: Array.from({ length: ranks }, (_, r) => ({ rank: r, status: 'ok' as const, report: `bench.ranks/rank${r}.json` })),
  };
  const file = join(dir, 'bench.json');
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

/** One variant in this (fresh) process: prints one JSON line. */
async function child(variant: string, file: string): Promise<void> {
  let maxStall = 0;
  let last = performance.now();
  const t0 = performance.now();
  /** Stalls over 50 ms: when they ended (ms after the start) and how long, to say where they come from. */
  const stalls: [number, number][] = [];
  const marks: Record<string, number> = {};
  const timer = setInterval(() => {
    const now = performance.now();
    const stall = now - last - 10;
    maxStall = Math.max(maxStall, stall);
    if (stall > 50) stalls.push([Math.round(now - t0), Math.round(stall)]);
    last = now;
  }, 10);
  let lines: number;
  if (variant === 'main-thread') {
    const set = loadRunSet(file, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA);
    runSetInfo(set);
    const merged = defined(overlayReport(set), 'merged report');
    lines = indexReport(merged).report.lines.length;
  } else {
    const client = new RunSetClient(join(repoRoot(), 'dist', 'runSetWorker.js'));
    const { overlay } = await client.load(file);
    marks['loaded'] = Math.round(performance.now() - t0);
    // As the store does: the parse and the index with the event loop served in between.
    await yieldToLoop();
    lines = (await indexReportInTurns(defined(overlay, 'merged report'))).report.lines.length;
    marks['indexed'] = Math.round(performance.now() - t0);
    client.dispose();
  }
  const firstOverlayMs = performance.now() - t0;
  // Let the timer observe the end of any stall.
  await new Promise((r) => setTimeout(r, 30));
  clearInterval(timer);
  process.stdout.write(`${JSON.stringify({ variant, firstOverlayMs: Number(firstOverlayMs.toFixed(0)), maxStallMs: Number(Math.max(0, maxStall).toFixed(0)), stalls, marks, lines, rssMB: Math.round(process.memoryUsage().rss / MB) })}\n`);
}

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot(), encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function main(): void {
  const ranks = Number(arg('ranks', '64'));
  const mb = Number(arg('mb', '50'));
  const dir = mkdtempSync(join(tmpdir(), 'membit-runset-bench-'));
  try {
    const tg = performance.now();
    const file = writeRunSet(dir, ranks, mb);
    const genMs = performance.now() - tg;
    const results = [];
    for (const variant of ['main-thread', 'worker']) {
      // A fresh process per variant: no JIT or page-cache advantage carried from one to the other
      // beyond the files the OS has cached for both.
      const r = spawnSync(process.execPath, ['--max-old-space-size=16000', __filename, '--child', variant, file], { encoding: 'utf8', maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new Error(`${variant} failed: ${r.stderr}`);
      results.push(JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { variant: string; firstOverlayMs: number; maxStallMs: number; lines: number; rssMB: number });
    }
    const worker = results.find((r) => r.variant === 'worker');
    const result = {
      date: new Date().toISOString(),
      commit: commit(),
      node: process.version,
      device: `${cpus()[0]?.model ?? 'unknown'} × ${cpus().length}, ${Math.round(totalmem() / 1e9)} GB`,
      loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
      runSet: { ranks, mbPerRank: mb, generateMs: Math.round(genMs) },
      results,
      target: { maxStallMs: 100, measured: worker?.maxStallMs ?? null, ok: (worker?.maxStallMs ?? Infinity) <= 100 },
    };
    console.log(`membit run-set benchmark — ${result.device}, node ${result.node}, commit ${result.commit}, ${result.date}, load ${result.loadAverage.join(' ')}`);
    console.log(`run set: ${ranks} ranks × ${mb} MB`);
    console.log(`${'variant'.padEnd(12)} ${'first overlay ms'.padStart(17)} ${'max stall ms'.padStart(13)} ${'rss MB'.padStart(8)}`);
    for (const r of results) console.log(`${r.variant.padEnd(12)} ${String(r.firstOverlayMs).padStart(17)} ${String(r.maxStallMs).padStart(13)} ${String(r.rssMB).padStart(8)}`);
    console.log(`target: worker's calling thread stalls ≤ 100 ms: ${result.target.ok ? 'ok' : 'MISSED'} (${String(result.target.measured)} ms)`);
    console.log(`wrote ${writeResult(`runset-${result.date.slice(0, 10)}-${ranks}x${mb}MB.json`, result)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ci = process.argv.indexOf('--child');
if (ci >= 0) void child(itemAt(process.argv, ci + 1), itemAt(process.argv, ci + 2));
else main();
