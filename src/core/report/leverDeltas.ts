/**
 * What each lever measured when the shown baseline was compared with its variants: the
 * peak change of every single-lever variant run of the same script, arguments and target
 * started after the baseline. The editor shows these beside the scanner's estimates, and
 * says where a measurement contradicts an estimate. Pure.
 */
import type { RunBrief } from './runLabel';
import { runName } from './runLabel';
import { formatPercentChange } from '../units';

export interface LeverMeasurement {
  /** The variant as the harness names it (`sdpa`, `checkpoint`, `bf16`, `packed`, …). */
  variant: string;
  /** (variant peak − baseline peak) / baseline peak. */
  rel: number;
  /** Bytes saved at the peak (positive: less memory). */
  savedBytes: number;
  /** `sdpa · local 14:05:12`. */
  run: string;
}

/** A change of the peak smaller than this (either way) is no saving. */
export const NO_SAVING = 0.01;

function sameArgs(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Per single-lever variant, its newest run that compares with `base`: same script, arguments
 * and target, started at or after the baseline, with a peak. Combined variants (`sdpa+bf16`)
 * are left out: they say nothing about one lever.
 */
export function leverDeltas(base: RunBrief & { script: string }, runs: readonly (RunBrief & { script: string })[]): Map<string, LeverMeasurement> {
  const out = new Map<string, LeverMeasurement & { started: string }>();
  if (base.peak === null || base.peak <= 0) return new Map();
  for (const r of runs) {
    if (r.variant === 'baseline' || r.variant.includes('+') || r.status !== 'ok' || r.peak === null) continue;
    if (r.script !== base.script || r.target !== base.target || !sameArgs(r.argv, base.argv)) continue;
    if (Date.parse(r.started) < Date.parse(base.started)) continue;
    const prev = out.get(r.variant);
    if (prev && Date.parse(prev.started) >= Date.parse(r.started)) continue;
    out.set(r.variant, { variant: r.variant, rel: (r.peak - base.peak) / base.peak, savedBytes: base.peak - r.peak, run: runName(r), started: r.started });
  }
  return new Map([...out].map(([k, { started: _s, ...m }]) => [k, m]));
}

/** `sdpa: −44.0% peak (measured, run sdpa · local 14:05:12)`. */
export function formatLeverMeasurement(m: LeverMeasurement): string {
  return `${m.variant}: ${formatPercentChange(m.rel)} peak (measured, run ${m.run})`;
}

/** Whether a measurement contradicts an estimate that promised `estimatedBytes` of saving. */
export function contradicts(m: LeverMeasurement, estimatedBytes: number | undefined): boolean {
  return estimatedBytes !== undefined && estimatedBytes > 0 && m.rel > -NO_SAVING;
}
