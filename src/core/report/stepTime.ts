/**
 * Step time with its spread, and whether two runs' step times differ by more than their
 * noise. One run's steps vary (data loading, other processes, CPU frequency); a comparison
 * that prints "+358%" for identical code from three steps misleads, so a difference inside
 * the runs' spread is reported as "within noise", and too few steps as too few. Pure.
 */
import { itemAt } from '../arrays';
import { formatPercentChange } from '../units';

export interface StepStats {
  /** Median of the profiled steps, seconds. */
  median: number;
  /** Half the spread around it: half the interquartile range from 4 steps on, half the full range below. */
  halfSpread: number;
  /** Profiled steps the figures come from. */
  n: number;
}

/** Fewer profiled steps than this say nothing about a difference. */
export const MIN_STEPS = 3;

/** A relative difference smaller than this is never called a change (timer and scheduling jitter). */
export const NOISE_FLOOR = 0.05;

function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = itemAt(sorted, lo);
  const b = itemAt(sorted, hi);
  return a + (b - a) * (pos - lo);
}

/** Stats of a run's step times; null without any. */
export function stepStats(times: readonly number[] | undefined): StepStats | null {
  const t = (times ?? []).filter((x) => Number.isFinite(x) && x >= 0).sort((a, b) => a - b);
  if (t.length === 0) return null;
  const median = quantile(t, 0.5);
  const [lo, hi] = t.length >= 4 ? [quantile(t, 0.25), quantile(t, 0.75)] : [itemAt(t, 0), itemAt(t, t.length - 1)];
  return { median, halfSpread: (hi - lo) / 2, n: t.length };
}

export type StepVerdict =
  | { kind: 'change'; rel: number }
  /** `sameConfig`: both runs ran the same code with the same settings, so the difference is the machine's. */
  | { kind: 'noise'; rel: number; sameConfig?: true }
  | { kind: 'too-few'; steps: number }
  | { kind: 'unknown' };

/**
 * Whether `b`'s step time differs from `a`'s by more than the noise: more than both runs'
 * spreads together and more than NOISE_FLOOR. `rel` is (b − a) / a of the medians.
 */
export function compareSteps(a: StepStats | null, b: StepStats | null): StepVerdict {
  if (!a || !b || a.median <= 0) return { kind: 'unknown' };
  if (a.n < MIN_STEPS || b.n < MIN_STEPS) return { kind: 'too-few', steps: Math.min(a.n, b.n) };
  const diff = b.median - a.median;
  const rel = diff / a.median;
  const noise = Math.max(a.halfSpread + b.halfSpread, NOISE_FLOOR * a.median);
  return Math.abs(diff) <= noise ? { kind: 'noise', rel } : { kind: 'change', rel };
}

/** `84.2 ms ± 3.1 (10 steps)`. */
export function formatStepTime(s: StepStats | null, fallbackS: number | null): string {
  if (!s) return fallbackS === null ? '—' : `${(fallbackS * 1000).toFixed(1)} ms (no spread recorded)`;
  return `${(s.median * 1000).toFixed(1)} ms ± ${(s.halfSpread * 1000).toFixed(1)} (${s.n} step${s.n === 1 ? '' : 's'})`;
}

/** What a comparison prints for a step-time difference (the sign flipped for throughput). */
export function formatVerdict(v: StepVerdict, invert = false): string {
  switch (v.kind) {
    case 'noise':
      return v.sameConfig ? 'within noise (same code and settings)' : 'within noise';
    case 'too-few':
      return `too few steps (${v.steps})`;
    case 'unknown':
      return '—';
    case 'change': {
      // Throughput moves the other way: samples/s ∝ 1 / step time.
      return formatPercentChange(invert ? 1 / (1 + v.rel) - 1 : v.rel);
    }
  }
}
