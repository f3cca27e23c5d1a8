/**
 * Predicted reports (`membit predict`, `python -m membit.predict`): the step ran with CUDA faked,
 * nothing measured. Reports are untrusted input, so every field read here is checked, and a
 * report whose run.prediction does not have the expected shape counts as not predicted.
 */
import { formatBytes } from '../units';
import type { Report } from './types';

/** GPUs the predictor's table knows (kernels/membit/predict/gpus.py), for pickers and --help. */
export const PREDICT_GPUS = ['H100-80GB', 'H200', 'A100-80GB', 'A100-40GB', 'L4', 'L40S', 'RTX4090', 'RTX3090', 'A10G', 'T4', 'V100-32GB'] as const;

export interface Prediction {
  gpuKey: string;
  gpuName: string;
  totalBytes: number;
  complete: boolean;
  partialReason: string | null;
  peakAllocated: number;
  deviceNeed: number;
  fits: boolean;
  /** Reserved memory at its highest, from the caching allocator's segment rules (absent in older reports). */
  peakReserved?: number;
  /** The first allocation the card could not hold, where the replay says the step runs out of memory. */
  outOfMemory?: { request: number; allocated: number; reserved: number; file: string | null; line: number | null };
  /** Largest value of the searched argument that fits (undefined: not searched or none fits). */
  maxBatch?: { arg: string; largest: number | null };
  /** Reads of values the fake could not know, in the user's own code. */
  userHostReads: { what: string; file: string; line: number }[];
  fixed: { what: string; bytes: number; inAllocator: boolean; source: string }[];
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** The report's prediction, or undefined for a measured report (or a malformed prediction). */
export function readPrediction(report: Report): Prediction | undefined {
  const p = (report.run as unknown as Record<string, unknown>)['prediction'];
  if (!isObj(p) || !isObj(p['gpu'])) return undefined;
  const g = p['gpu'];
  if (typeof g['key'] !== 'string' || typeof g['name'] !== 'string' || !isNum(g['total_bytes'])) return undefined;
  if (typeof p['complete'] !== 'boolean' || !isNum(p['peak_allocated']) || !isNum(p['device_need']) || typeof p['fits'] !== 'boolean') return undefined;
  const out: Prediction = {
    gpuKey: g['key'],
    gpuName: g['name'],
    totalBytes: g['total_bytes'],
    complete: p['complete'],
    partialReason: typeof p['partial_reason'] === 'string' ? p['partial_reason'] : null,
    peakAllocated: p['peak_allocated'],
    deviceNeed: p['device_need'],
    fits: p['fits'],
    userHostReads: [],
    fixed: [],
  };
  if (isObj(p['max_batch']) && typeof p['max_batch']['arg'] === 'string') {
    const l = p['max_batch']['largest'];
    out.maxBatch = { arg: p['max_batch']['arg'], largest: Number.isInteger(l) ? (l as number) : null };
  }
  if (Array.isArray(p['host_reads'])) {
    for (const r of p['host_reads']) {
      if (isObj(r) && r['user'] === true && typeof r['what'] === 'string' && typeof r['file'] === 'string' && Number.isInteger(r['line'])) {
        out.userHostReads.push({ what: r['what'], file: r['file'], line: r['line'] as number });
      }
    }
  }
  if (isNum(p['peak_reserved'])) out.peakReserved = p['peak_reserved'];
  const oom = p['out_of_memory'];
  if (isObj(oom) && isNum(oom['request']) && isNum(oom['allocated']) && isNum(oom['reserved'])) {
    out.outOfMemory = {
      request: oom['request'],
      allocated: oom['allocated'],
      reserved: oom['reserved'],
      file: typeof oom['file'] === 'string' ? oom['file'] : null,
      line: Number.isInteger(oom['line']) ? (oom['line'] as number) : null,
    };
  }
  if (Array.isArray(p['fixed'])) {
    for (const f of p['fixed']) {
      if (isObj(f) && typeof f['what'] === 'string' && isNum(f['bytes']) && typeof f['in_allocator'] === 'boolean' && typeof f['source'] === 'string') {
        out.fixed.push({ what: f['what'], bytes: f['bytes'], inAllocator: f['in_allocator'], source: f['source'] });
      }
    }
  }
  return out;
}

/**
 * The scanner's hint text when its figures came from a predicted report: the scanner says
 * "measured" of report figures, which for a prediction would be untrue.
 */
export function relabelPredicted(text: string): string {
  return text.replace(/\(measured\)/g, '(predicted)').replace(/\(measured,/g, '(predicted,').replace(/([ ,]) ?measured\b/g, '$1 predicted').replace(/ {2}predicted/g, ' predicted');
}

/**
 * The status bar's words for a report: "predicted peak 47.2 GiB on A100-80GB · fits to batch 11"
 * for a prediction (a partial one says "at least"), "peak 47.2 GiB" for a measured run.
 */
export function statusLabel(report: Report): string {
  const p = readPrediction(report);
  if (!p) {
    const peak = report.summary.peak_allocated ?? report.summary.tracked_at_peak;
    return report.run.status === 'ok' ? `peak ${formatBytes(peak)}` : `${report.run.status.toUpperCase()} at ${formatBytes(peak)}`;
  }
  if (!p.complete) return `predicted peak ≥ ${formatBytes(p.peakAllocated)} on ${p.gpuKey} (partial)`;
  let text = `predicted peak ${formatBytes(p.peakAllocated)} on ${p.gpuKey}`;
  if (p.maxBatch) {
    const what = p.maxBatch.arg.replace(/^--?/, '').replace(/[-_]size$/, '');
    text += p.maxBatch.largest === null ? ` · no ${what} fits` : ` · fits to ${what} ${p.maxBatch.largest}`;
  } else {
    text += p.fits ? ' · fits' : ' · does not fit';
  }
  return text;
}

/** Options of one prediction, as the CLI and the editor command take them. */
export interface PredictOptions {
  script: string;
  args: readonly string[];
  out: string;
  gpu: string;
  variant?: string;
  variants?: readonly string[];
  steps?: number;
  ranks?: number;
  root?: string;
  findMaxBatch?: boolean;
  batchArg?: string;
  max?: number;
}

/** The argv (after the interpreter) that runs the predictor; an array, never a shell string. */
export function predictArgv(o: PredictOptions): string[] {
  const argv = ['-m', 'membit.predict', '--out', o.out, '--gpu', o.gpu];
  if (o.variants && o.variants.length > 1) argv.push('--variants', o.variants.join(','));
  else argv.push('--variant', o.variant ?? o.variants?.[0] ?? 'baseline');
  if (o.steps !== undefined) argv.push('--steps', String(o.steps));
  if (o.ranks !== undefined && o.ranks > 1) argv.push('--ranks', String(o.ranks));
  if (o.root) argv.push('--root', o.root);
  if (o.findMaxBatch) {
    argv.push('--find-max-batch', `--batch-arg=${o.batchArg ?? '--batch-size'}`);
    if (o.max !== undefined) argv.push('--max', String(o.max));
  }
  argv.push('--', o.script, ...o.args);
  return argv;
}
