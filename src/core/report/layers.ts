/**
 * The report view's per-layer chart, made readable: identical layers are one bar
 * (`h.*.attn ×12`), containers that hold nothing of their own are left out, every bar has
 * a label that carries its figure, and only the kinds of memory that existed at the peak
 * are drawn. Pure.
 */
import { generalize } from './classes';
import type { Report } from './types';

/** A module's own figures (children excluded), as the view model carries them. */
export interface LayerFigures {
  path: string;
  type: string;
  params: number;
  grads: number;
  activations: number;
  masks: number;
}

export type Segment = 'params' | 'grads' | 'activations' | 'masks';
export const SEGMENTS: readonly Segment[] = ['params', 'grads', 'activations', 'masks'];

export interface LayerGroup {
  /** `h.*.attn` (wildcards where instance numbers vary); `(model)` for the root module. */
  path: string;
  type: string;
  /** How many module instances the figures sum over. */
  count: number;
  params: number;
  grads: number;
  activations: number;
  masks: number;
  /** Sum of the drawn segments. */
  total: number;
}

export interface LayerChart {
  groups: LayerGroup[];
  /** The segments that held bytes at the peak (the summary says so); the others are not drawn. */
  segments: Segment[];
  /** Groups left out beyond `max` (the smallest). */
  omitted: number;
}

/**
 * Which kinds of memory existed at the peak. The per-module figures are what each module
 * owns over the step; drawing gradients for a peak reached before backward made any would
 * show memory that was not there.
 */
export function peakSegments(summary: Report['summary']): Segment[] {
  const at: Record<Segment, number> = {
    params: summary.params_at_peak,
    grads: summary.grads_at_peak,
    activations: summary.activations_at_peak,
    masks: summary.masks_at_peak,
  };
  const held = SEGMENTS.filter((s) => at[s] > 0);
  // A report that names no category at its peak draws everything it has rather than nothing.
  return held.length ? held : [...SEGMENTS];
}

/** Groups identical layers (same wildcard path and type), largest first, at most `max` bars. */
export function layerChart(modules: readonly LayerFigures[], summary: Report['summary'], max = 30): LayerChart {
  const segments = peakSegments(summary);
  const groups = new Map<string, LayerGroup>();
  for (const m of modules) {
    const path = m.path === '' ? '(model)' : generalize(m.path);
    const key = `${path}\u0000${m.type}`;
    let g = groups.get(key);
    if (!g) {
      g = { path, type: m.type, count: 0, params: 0, grads: 0, activations: 0, masks: 0, total: 0 };
      groups.set(key, g);
    }
    g.count += 1;
    g.params += m.params;
    g.grads += m.grads;
    g.activations += Math.max(0, m.activations);
    g.masks += m.masks;
  }
  const drawn = [...groups.values()]
    .map((g) => ({ ...g, total: segments.reduce((a, s) => a + g[s], 0) }))
    // Containers (a ModuleList, a block whose children hold everything) would be empty bars.
    .filter((g) => g.total > 0)
    .sort((a, b) => b.total - a.total || a.path.localeCompare(b.path));
  return { groups: drawn.slice(0, max), segments, omitted: Math.max(0, drawn.length - max) };
}

/** `h.*.attn ×4 (CausalSelfAttention)`: the bar's name, with how many layers it sums. */
export function groupLabel(g: LayerGroup): string {
  return `${g.path}${g.count > 1 ? ` ×${g.count}` : ''} (${g.type})`;
}
