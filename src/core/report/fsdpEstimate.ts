/**
 * Per-rank memory under FSDP for N ranks, estimated from a single-GPU or DDP run's report.
 * An estimate, always labelled so, until a run under FSDP measures it.
 *
 * Per rank, for a world size N:
 *   parameters, gradients, optimizer state   what the run held of each at its peak / N (FSDP2
 *                                             shards every parameter dim-0 across ranks, with a
 *                                             little padding). At the peak, not in total: a step
 *                                             that peaks as backward starts holds no gradients
 *                                             then, and adding them overstated two- and
 *                                             four-rank FSDP2 peaks measured on CPU by 14% and 10%
 *   unsharded unit                           the largest FSDP unit gathered whole, twice: the
 *                                             unit running and the next one prefetched
 *   reduce-scatter buffer                    one unit's gradients, gathered before they are scattered
 *   activations, masks, the rest at the peak the run's own (the per-rank batch does not change)
 * The unit is the largest block of a ModuleList (one fully_shard per transformer block, as
 * PyTorch's FSDP2 examples wrap), else the largest module below the root.
 */
import type { Report } from './types';
import { peakBytes } from './types';

export interface FsdpEstimate {
  worldSize: number;
  params: number;
  grads: number;
  optimizerState: number;
  unshardedUnits: number;
  reduceScatter: number;
  activations: number;
  rest: number;
  perRank: number;
  /** What the run measured on one rank, for comparison. */
  measured: number;
}

export interface FsdpEstimateResult {
  unit: { module: string; params: number; how: 'block' | 'largest module' } | null;
  rows: FsdpEstimate[];
  label: string;
}

export class EstimateError extends Error {}

/** Parameter bytes of each module's whole subtree (reports list each parameter at its own module). */
function subtreeParams(r: Report): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of r.modules) {
    const parts = m.path ? m.path.split('.') : [];
    for (let i = 0; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('.');
      out.set(p, (out.get(p) ?? 0) + m.params);
    }
  }
  return out;
}

export function estimateFsdp(r: Report, worldSizes: readonly number[]): FsdpEstimateResult {
  if (r.summary.distributed?.fsdp_units.length) throw new EstimateError('this run is already sharded with FSDP: its ranks measured the figures themselves (membit report on its run set)');
  for (const n of worldSizes) if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new EstimateError(`world sizes must be whole numbers ≥ 1 (got ${n})`);
  const sub = subtreeParams(r);
  let unit: FsdpEstimateResult['unit'] = null;
  for (const [path, bytes] of sub) {
    if (!path || !/\.\d+$|^\d+$/.test(path)) continue;
    if (!unit || bytes > unit.params) unit = { module: path, params: bytes, how: 'block' };
  }
  if (!unit) {
    for (const [path, bytes] of sub) {
      if (!path || bytes >= (sub.get('') ?? Infinity)) continue;
      if (!unit || bytes > unit.params) unit = { module: path, params: bytes, how: 'largest module' };
    }
  }
  const s = r.summary;
  const u = unit?.params ?? 0;
  // Gradients come in the parameters' dtype; the reduce-scatter input holds one unit's worth.
  const gradRatio = s.params > 0 ? s.grads / s.params : 1;
  const measured = peakBytes(r);
  const persistentAtPeak = s.params_at_peak + s.grads_at_peak + s.optimizer_state_at_peak + s.buffers_at_peak;
  const rest = Math.max(0, measured - persistentAtPeak - s.activations_at_peak - s.masks_at_peak);
  const rows = worldSizes.map((n) => {
    const params = Math.ceil(s.params_at_peak / n);
    const grads = Math.ceil(s.grads_at_peak / n);
    const optimizerState = Math.ceil(s.optimizer_state_at_peak / n);
    const unshardedUnits = n > 1 ? 2 * u : 0;
    const reduceScatter = n > 1 ? Math.round(u * gradRatio) : 0;
    const activations = s.activations_at_peak + s.masks_at_peak;
    const perRank = params + grads + optimizerState + s.buffers_at_peak + unshardedUnits + reduceScatter + activations + rest;
    return { worldSize: n, params, grads, optimizerState, unshardedUnits, reduceScatter, activations, rest, perRank, measured };
  });
  const dev = r.run.device.name;
  const label = `estimate, not measured: per rank under FSDP from ${r.run.script} (${r.run.variant}, ${dev}), assuming one FSDP unit per ${unit ? `${unit.how === 'block' ? 'block' : 'module'} like ${unit.module}` : 'model (no unit found)'}; profile with --nproc-per-node to measure it`;
  return { unit, rows, label };
}
