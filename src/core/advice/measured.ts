/**
 * Figures the advisor quotes, read from the committed benchmark result they come from
 * (kernels/benchmarks/results/advisor_*.json, written by kernels/benchmarks/bench_advisor.py):
 * a message never carries a number that no result file in the repository holds.
 */
import advisorRun from '../../../kernels/benchmarks/results/advisor_NVIDIA-H200.json';
import { formatBytes } from '../units';

interface AdvisorRunRow {
  case: string;
  variant: string;
  status: string;
  peak_allocated: number | null;
}

/** One lever's measured effect on one model: peak before and after, where and when. */
export interface MeasuredLever {
  model: string;
  baselinePeak: number;
  leverPeak: number;
  device: string;
  date: string;
  /** The result file, relative to the repository. */
  source: string;
}

function measured(caseName: string, model: string, variant: string): MeasuredLever {
  const rows = advisorRun.runs as AdvisorRunRow[];
  const find = (v: string) => rows.find((r) => r.case === caseName && r.variant === v && r.status === 'ok')?.peak_allocated;
  const base = find('baseline');
  const lever = find(variant);
  // The result file is part of the build: a missing row is a broken build, not a runtime state.
  if (base == null || lever == null) throw new Error(`advisor result has no ${caseName} baseline/${variant} rows`);
  return { model, baselinePeak: base, leverPeak: lever, device: advisorRun.device, date: advisorRun.date.slice(0, 10), source: 'kernels/benchmarks/results/advisor_NVIDIA-H200.json' };
}

/** HF BERT-large, 16 × 512, fp32, AdamW: eager attention against SDPA. */
export const BERT_LARGE_SDPA = measured('bert-large', 'HF BERT-large 16×512 (fp32)', 'sdpa');

/** "HF BERT-large 16×512 (fp32) on an NVIDIA H200: 30.7 GiB → 17.2 GiB peak (−44%, measured 2026-12-04)". */
export function describeMeasured(m: MeasuredLever): string {
  const pct = Math.round((100 * (m.leverPeak - m.baselinePeak)) / m.baselinePeak);
  return `${m.model} on an ${m.device}: ${formatBytes(m.baselinePeak)} → ${formatBytes(m.leverPeak)} peak (${pct < 0 ? '−' : '+'}${Math.abs(pct)}%, measured ${m.date})`;
}
