/**
 * What the report view draws, computed from a report in the extension host: a timeline
 * reduced to a bounded number of points, the top lines and modules, the sites and the
 * summary. The webview gets this small model instead of the raw report, so a 50 MB
 * report never crosses the message channel.
 */
import { adviseSparse24, type SparseAdviceTable } from '../advice/sparse24';
import { layerChart, type LayerChart } from './layers';
import { peakBytes, type FfnEntry, type Holder, type OomEvent, type Report, type ReportSource, type SegmentsView } from './types';
import { itemAt } from '../arrays';

export interface TimelineView {
  t_ms: number[];
  allocated: number[];
  reserved: number[];
  device_used: (number | null)[];
  /** Contiguous phase spans, for shading. */
  phases: { phase: string; start_ms: number; end_ms: number }[];
  peak: { t_ms: number; bytes: number } | null;
}

export interface ReportView {
  id: string;
  label: string;
  run: Report['run'];
  summary: Report['summary'];
  /** The peak shares are measured against (see peakBytes). */
  peakBytes: number;
  timeline: TimelineView;
  lines: { file: string; line: number; func: string; saved_bytes: number; mask_bytes: number; module: string | null }[];
  modules: { path: string; type: string; params: number; grads: number; activations: number; masks: number; created_at: { file: string; line: number } | null }[];
  /** The per-layer chart: identical layers grouped, only the kinds of memory held at the peak. */
  layers: LayerChart;
  /** The sites with the largest saving (at most `topSites`); `sitesTotal` counts all of them. */
  sites: Report['sites'];
  sitesTotal: number;
  peakTop: Holder[];
  oom: Report['oom'];
  flipRate: { step: number[]; series: { name: string; values: number[] }[] } | null;
  /** FFN blocks of the run with the measured 2:4 speed advice for their shape and tokens. */
  ffn: FfnView[];
  /** Where the report came from when not from a harness run (a memory snapshot); null otherwise. */
  source: ReportSource | null;
  /** A snapshot's segments at the dump; null in harness reports. */
  segments: SegmentsView | null;
  /** A snapshot's out-of-memory events; empty in harness reports. */
  oomEvents: OomEvent[];
}

export interface FfnView extends FfnEntry {
  advice: { text: string; verdict: 'faster' | 'no-gain' | 'slower'; basis: string } | null;
}

/** The 2:4 advice for each FFN of a report, read for the GPU the run used (see src/core/advice). */
export function ffnViews(report: Report, tables: readonly SparseAdviceTable[]): FfnView[] {
  const gpu = report.run.device.type === 'cuda' ? report.run.device.name : undefined;
  return (report.ffn ?? []).map((f) => {
    const a = tables.length ? adviseSparse24(tables, { dModel: f.d_model, dFF: f.d_ff, gated: f.gated, tokens: f.tokens ?? undefined, gpu }) : undefined;
    return { ...f, advice: a ? { text: a.text, verdict: a.verdict, basis: a.basis } : null };
  });
}

/**
 * Reduces a series to at most `maxPoints` by keeping, per bucket, the samples with the
 * minimum and maximum of `key`, so peaks survive the reduction (a plain stride would
 * drop them).
 */
export function downsampleIndices(values: readonly number[], maxPoints: number): number[] {
  const n = values.length;
  if (n <= maxPoints) return Array.from({ length: n }, (_, i) => i);
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const size = n / buckets;
  const out: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor(b * size);
    const end = Math.min(n, Math.floor((b + 1) * size));
    let lo = start;
    let hi = start;
    for (let i = start; i < end; i++) {
      const v = itemAt(values, i);
      if (v < itemAt(values, lo)) lo = i;
      if (v > itemAt(values, hi)) hi = i;
    }
    if (lo === hi) out.push(lo);
    else out.push(Math.min(lo, hi), Math.max(lo, hi));
  }
  return out;
}

export function phaseSpans(t: readonly number[], phase: readonly string[]): TimelineView['phases'] {
  const spans: TimelineView['phases'] = [];
  for (let i = 0; i < t.length && i < phase.length; i++) {
    const p = itemAt(phase, i);
    const at = itemAt(t, i);
    const last = spans.at(-1);
    if (last?.phase === p) last.end_ms = at;
    else spans.push({ phase: p, start_ms: at, end_ms: at });
  }
  return spans;
}

export function buildView(
  report: Report,
  label: string,
  opts: { maxPoints?: number; topLines?: number; topModules?: number; topSites?: number; sparse24?: readonly SparseAdviceTable[] } = {},
): ReportView {
  const { maxPoints = 2000, topLines = 100, topModules = 200, topSites = 300 } = opts;
  const tl = report.timeline ?? { t_ms: [], allocated: [], reserved: [], device_used: [], phase: [] };
  // Points are read by index across the columns: a malformed report whose times are fewer
  // than its bytes keeps the points that have both.
  const points = Math.min(tl.t_ms.length, tl.allocated.length);
  const keep = downsampleIndices(tl.allocated.slice(0, points), maxPoints);
  let peak: TimelineView['peak'] = null;
  for (let i = 0; i < points; i++) {
    const v = itemAt(tl.allocated, i);
    if (!peak || v > peak.bytes) peak = { t_ms: itemAt(tl.t_ms, i), bytes: v };
  }
  const pick = <T>(arr: readonly T[]) => keep.map((i) => itemAt(arr, i));
  const flips = report.flip_rate;
  return {
    id: report.run.id,
    label,
    run: report.run,
    summary: report.summary,
    peakBytes: peakBytes(report),
    timeline: {
      t_ms: pick(tl.t_ms),
      allocated: pick(tl.allocated),
      reserved: tl.reserved.length === tl.allocated.length ? pick(tl.reserved) : [],
      device_used: tl.device_used.length === tl.allocated.length ? pick(tl.device_used) : [],
      phases: phaseSpans(tl.t_ms, tl.phase),
      peak,
    },
    lines: [...report.lines]
      .sort((a, b) => b.saved_bytes - a.saved_bytes)
      .slice(0, topLines)
      .map(({ file, line, func, saved_bytes, mask_bytes, module }) => ({ file, line, func, saved_bytes, mask_bytes, module })),
    modules: [...report.modules]
      .sort((a, b) => b.saved_bytes + b.params - (a.saved_bytes + a.params))
      .slice(0, topModules)
      .map((m) => ({
        path: m.path,
        type: m.type,
        params: m.params,
        grads: m.grads,
        activations: m.saved_bytes - m.mask_bytes,
        masks: m.mask_bytes,
        created_at: m.created_at,
      })),
    layers: layerChart(
      report.modules.map((m) => ({ path: m.path, type: m.type, params: m.params, grads: m.grads, activations: m.saved_bytes - m.mask_bytes, masks: m.mask_bytes })),
      report.summary,
    ),
    sites: report.sites.length <= topSites ? report.sites : [...report.sites].sort((a, b) => b.saving_if_packed - a.saving_if_packed).slice(0, topSites),
    sitesTotal: report.sites.length,
    peakTop: report.peak.top.slice(0, 20),
    oom: report.oom,
    flipRate: flips ? { step: flips.step, series: Object.entries(flips.layers).map(([name, values]) => ({ name, values })) } : null,
    ffn: ffnViews(report, opts.sparse24 ?? []),
    source: report.source ?? null,
    segments: report.segments ?? null,
    oomEvents: report.oom_events ?? [],
  };
}
