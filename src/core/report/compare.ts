/**
 * Comparing runs (baseline vs each lever vs all combined): differences in peak, step
 * time and throughput against the first run, per-module differences, and how each
 * run's levers were applied.
 */
import { formatBytes, formatPercentChange } from '../units';
import { peakBytes, type Report } from './types';
import { compareSteps, formatStepTime, formatVerdict, stepStats, type StepStats, type StepVerdict } from './stepTime';

export interface CompareRow {
  label: string;
  variant: string;
  status: string;
  peak: number;
  /** Relative change of peak against the baseline row (−0.06 = 6% less). */
  dPeak: number | null;
  stepTime: number | null;
  dStepTime: number | null;
  samplesPerS: number | null;
  dSamplesPerS: number | null;
  masks: number;
  /** Median and spread of the profiled steps; null for reports without per-step times. */
  step: StepStats | null;
  /** Whether the step time differs from the baseline's by more than the noise. */
  stepVerdict: StepVerdict;
  /** `84.2 ms ± 3.1 (10 steps)`. */
  stepText: string;
  /** `within noise`, `−12.3%`, `too few steps (2)`; for step time and for samples/s. */
  dStepText: string;
  dSamplesText: string;
  /** How each lever was applied ("checkpoint: torch.utils.checkpoint … on h (6 Block blocks)"). */
  levers: string[];
  /** Where line figures are approximate because the run executed rewritten source. */
  approximate: string[];
}

export interface ModuleDiff {
  path: string;
  /** saved bytes (activations + masks) per run, in row order; null where absent. */
  bytes: (number | null)[];
}

export interface Comparison {
  rows: CompareRow[];
  modules: ModuleDiff[];
}

function rel(v: number | null, base: number | null): number | null {
  if (v === null || base === null || base === 0) return null;
  return (v - base) / base;
}

/**
 * Whether two reports ran the same code with the same settings: script, arguments, variant,
 * steps, target, device, torch and Membit, and the same hash for every source file both
 * attributes. Then a step-time difference cannot come from the code: one run's spread says
 * nothing about the machine's load between runs (the same configuration has measured 88, 405
 * and 1089 ms per step on one shared machine), so it is noise however large. Reports without
 * source hashes (earlier versions) are never proven the same.
 */
export function sameConfiguration(a: Report, b: Report): boolean {
  const ra = a.run;
  const rb = b.run;
  const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
  if (!a.sources?.length || !b.sources?.length) return false;
  if (
    ra.script !== rb.script ||
    !same(ra.argv, rb.argv) ||
    ra.variant !== rb.variant ||
    ra.steps !== rb.steps ||
    ra.warmup !== rb.warmup ||
    !same(ra.target, rb.target) ||
    ra.device.name !== rb.device.name ||
    ra.device.type !== rb.device.type ||
    ra.torch !== rb.torch ||
    ra.membit !== rb.membit ||
    !same(ra.levers ?? [], rb.levers ?? []) ||
    (ra.overlays?.length ?? 0) + (rb.overlays?.length ?? 0) > 0 ||
    (ra.distributed?.world_size ?? 1) !== (rb.distributed?.world_size ?? 1)
  ) {
    return false;
  }
  // The same files, each with the same text.
  const hashes = new Map(a.sources.map((s) => [s.file, s.sha256]));
  return hashes.size === b.sources.length && b.sources.every((s) => hashes.get(s.file) === s.sha256);
}

/** Compares runs against the first one (the baseline). */
export function compareRuns(runs: readonly { label: string; report: Report }[]): Comparison {
  if (runs.length === 0) return { rows: [], modules: [] };
  const base = (runs[0] as { report: Report }).report;
  const baseSummary = base.summary;
  const baseStep = stepStats(baseSummary.step_times_s);
  const rows = runs.map(({ label, report }) => {
    const s = report.summary;
    const step = stepStats(s.step_times_s);
    // Reports without per-step times: no spread, so a difference cannot be told from noise.
    let stepVerdict: StepVerdict = report === base ? { kind: 'noise', rel: 0 } : compareSteps(baseStep, step);
    if (stepVerdict.kind === 'change' && sameConfiguration(base, report)) stepVerdict = { kind: 'noise', rel: stepVerdict.rel, sameConfig: true };
    return {
      label,
      variant: report.run.variant,
      status: report.run.status,
      peak: peakBytes(report),
      dPeak: rel(peakBytes(report), peakBytes(base)),
      stepTime: s.step_time_s,
      dStepTime: rel(s.step_time_s, baseSummary.step_time_s),
      samplesPerS: s.samples_per_s,
      dSamplesPerS: rel(s.samples_per_s, baseSummary.samples_per_s),
      masks: s.masks_at_peak,
      step,
      stepVerdict,
      stepText: formatStepTime(step, s.step_time_s),
      dStepText: report === base ? '—' : formatVerdict(stepVerdict),
      dSamplesText: report === base || s.samples_per_s === null ? '—' : formatVerdict(stepVerdict, true),
      levers: (report.run.levers ?? []).map((l) => `${l.lever}: ${l.how}`),
      approximate: (report.run.overlays ?? [])
        .filter((o) => o.used && o.approximate.length)
        .map((o) => `${o.file} lines ${o.approximate.map((a) => (a.first === a.last ? `${a.first}` : `${a.first}–${a.last}`)).join(', ')}`),
    };
  });
  const paths = new Map<string, (number | null)[]>();
  runs.forEach(({ report }, i) => {
    for (const m of report.modules) {
      let arr = paths.get(m.path);
      if (!arr) paths.set(m.path, (arr = new Array<number | null>(runs.length).fill(null)));
      arr[i] = m.saved_bytes;
    }
  });
  const modules = [...paths.entries()]
    .map(([path, bytes]) => ({ path, bytes }))
    .filter((m) => m.bytes.some((b, i) => b !== m.bytes[0] || (i > 0 && b === null)))
    .sort((a, b) => Math.abs(diffOf(b)) - Math.abs(diffOf(a)));
  return { rows, modules };
}

function diffOf(m: ModuleDiff): number {
  const first = m.bytes[0] ?? 0;
  return Math.max(...m.bytes.map((b) => Math.abs((b ?? 0) - first)));
}

export function formatPct(x: number | null): string {
  return x === null ? '—' : formatPercentChange(x);
}

/** The comparison as a Markdown table, like the experiment tables in papers. */
export function comparisonMarkdown(c: Comparison): string {
  const head = '| run | variant | status | peak | Δpeak | step time | Δstep | samples/s | Δsamples/s | masks at peak |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|';
  const body = c.rows.map((r) =>
    [
      r.label,
      r.variant,
      r.status,
      formatBytes(r.peak),
      formatPct(r.dPeak),
      r.stepText,
      r.dStepText,
      r.samplesPerS === null ? '—' : r.samplesPerS.toFixed(1),
      r.dSamplesText,
      formatBytes(r.masks),
    ].join(' | '),
  );
  const notes = c.rows.flatMap((r) => [
    ...r.levers.map((l) => `- ${r.label}: ${l}`),
    ...(r.approximate.length ? [`- ${r.label}: ran rewritten source; line figures approximate in ${r.approximate.join('; ')}`] : []),
  ]);
  return [head, ...body.map((b) => `| ${b} |`), ...(notes.length ? ['', ...notes] : [])].join('\n');
}
