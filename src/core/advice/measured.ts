/**
 * Figures the advisor quotes, read from the committed benchmark result they come from
 * (kernels/benchmarks/results/advisor_*.json, written by kernels/benchmarks/bench_advisor.py;
 * compile_*.json, written by bench_compile.py): a message never carries a number that no
 * result file in the repository holds.
 */
import advisorRun from '../../../kernels/benchmarks/results/advisor_NVIDIA-H200.json';
import compileGpt6 from '../../../kernels/benchmarks/results/compile_h100.json';
import compileGpt2m from '../../../kernels/benchmarks/results/compile_gpt2m_2ef0e04_NVIDIA-H100-80GB-HBM3.json';
import { formatBytes, formatPercentChange } from '../units';

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

interface CompileRunRow {
  model?: string;
  variant?: string;
  compiled?: boolean;
  step_ms_median?: number | null;
  peak_allocated?: number | null;
  error?: string;
}

interface CompileRun {
  environment: { date: string; gpu?: string; torch: string; commit: string };
  runs: CompileRunRow[];
}

/** One compiled model's dropout variants against its stock compiled run, from one result file. */
export interface CompiledDropout {
  /** The model's name in the result file's rows. */
  key: string;
  model: string;
  device: string;
  date: string;
  source: string;
  /** Relative change against stock, in percent: step time (median) and peak allocated. */
  packed: { step: number; peak: number };
  recompute: { step: number; peak: number };
}

function compiledRows(run: CompileRun, modelKey: string, model: string, source: string): CompiledDropout {
  const find = (v: string) => run.runs.find((r) => r.model === modelKey && r.variant === v && r.compiled === true && !r.error);
  const stock = find('stock');
  const rel = (v: string) => {
    const r = find(v);
    if (!stock?.step_ms_median || !stock.peak_allocated || !r?.step_ms_median || !r.peak_allocated) {
      throw new Error(`compile result ${source} has no ${modelKey} stock/${v} rows`);
    }
    return { step: (100 * (r.step_ms_median - stock.step_ms_median)) / stock.step_ms_median, peak: (100 * (r.peak_allocated - stock.peak_allocated)) / stock.peak_allocated };
  };
  return { key: modelKey, model, device: run.environment.gpu ?? 'GPU', date: run.environment.date.slice(0, 10), source, packed: rel('packed'), recompute: rel('recompute') };
}

/** Packed and recompute dropout under torch.compile (Inductor, bf16 autocast, AdamW, 8 × 1024), per model. */
export const COMPILED_DROPOUT: readonly CompiledDropout[] = [
  compiledRows(compileGpt6 as CompileRun, 'gpt6', '6-layer GPT (d 768, eager attention)', 'kernels/benchmarks/results/compile_h100.json'),
  compiledRows(compileGpt2m, 'gpt2m-eager', 'HF GPT-2 medium (eager attention)', 'kernels/benchmarks/results/compile_gpt2m_2ef0e04_NVIDIA-H100-80GB-HBM3.json'),
];

/** A change given in percent (1.94 for +1.9%), as units.ts writes every relative change. */
export function signedPercent(pct: number): string {
  return formatPercentChange(pct / 100);
}
