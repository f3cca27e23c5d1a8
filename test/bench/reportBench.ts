/**
 * Large-report benchmark (`node out/test/bench/reportBench.js [--mb 50]`): a generated
 * 50 MB membit.report/1 document is read from disk, parsed, validated against the
 * schema, indexed for the overlays and reduced to the report view's model, as the
 * extension host does on load. Median of 5 (after one warm-up). Prints a table and
 * writes test/bench/results/report-<date>.json.
 *
 * Target: the whole load in about a second.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validate } from '../../src/core/report/jsonSchema';
import { indexReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { buildView } from '../../src/core/report/view';
import { machine, median, writeResult } from './benchKit';
import { generateLargeReport, MB } from './largeReport';

const STAGES = ['read', 'parse', 'validate', 'index', 'view', 'total'] as const;
type Stage = (typeof STAGES)[number];

function once(file: string): Record<Stage, number> {
  const t0 = performance.now();
  const text = readFileSync(file, 'utf8');
  const t1 = performance.now();
  const value = JSON.parse(text) as unknown;
  const t2 = performance.now();
  const errors = validate(REPORT_SCHEMA, value, 5);
  const t3 = performance.now();
  if (errors.length) throw new Error(`the generated report is invalid: ${JSON.stringify(errors)}`);
  const index = indexReport(value as Report);
  const t4 = performance.now();
  const view = buildView(value as Report, 'bench');
  const t5 = performance.now();
  if (!index.files.size || !view.timeline.allocated.length) throw new Error('nothing indexed');
  return { read: t1 - t0, parse: t2 - t1, validate: t3 - t2, index: t4 - t3, view: t5 - t4, total: t5 - t0 };
}

function main(): void {
  const mbArg = process.argv.indexOf('--mb');
  const mb = mbArg >= 0 ? Number(process.argv[mbArg + 1]) : 50;
  const tg = performance.now();
  const g = generateLargeReport({ targetBytes: mb * MB });
  const genMs = performance.now() - tg;
  const dir = mkdtempSync(join(tmpdir(), 'membit-report-bench-'));
  const file = join(dir, 'report.json');
  writeFileSync(file, g.text);
  const runs: Record<Stage, number>[] = [];
  try {
    once(file); // warm-up: JIT, page cache
    for (let i = 0; i < 5; i++) runs.push(once(file));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const stages = Object.fromEntries(
    STAGES.map((s) => {
      const xs = runs.map((r) => r[s]);
      return [s, { medianMs: Number(median(xs).toFixed(1)), minMs: Number(Math.min(...xs).toFixed(1)), maxMs: Number(Math.max(...xs).toFixed(1)) }];
    }),
  ) as Record<Stage, { medianMs: number; minMs: number; maxMs: number }>;
  const result = {
    ...machine(),
    report: { bytes: g.bytes, ...g.counts, generateMs: Number(genMs.toFixed(0)) },
    runs: runs.length,
    stages,
    target: { totalMs: 1000, measured: stages.total.medianMs, ok: stages.total.medianMs <= 1000 },
  };
  console.log(`membit large-report benchmark — ${result.cpu}, ${result.cores} cores, node ${result.node}, load ${result.loadAverage.join(' ')}`);
  console.log(
    `report: ${(g.bytes / MB).toFixed(1)} MB, ${g.counts.lines} lines, ${g.counts.modules} modules, ${g.counts.sites} sites, ${g.counts.timeline} timeline points`,
  );
  console.log(`${'stage'.padEnd(10)} ${'median ms'.padStart(10)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
  for (const s of STAGES) console.log(`${s.padEnd(10)} ${String(stages[s].medianMs).padStart(10)} ${String(stages[s].minMs).padStart(8)} ${String(stages[s].maxMs).padStart(8)}`);
  console.log(`target: total ${stages.total.medianMs} ms (≤ 1000) ${result.target.ok ? 'ok' : 'MISSED'}`);
  console.log(`wrote ${writeResult(`report-${result.date.slice(0, 10)}.json`, result)}`);
}

main();
