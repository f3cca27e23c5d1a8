/**
 * A run set: every rank of one distributed job (torchrun, SLURM), each with its own report,
 * read as one. Pure: loading takes a reader function, so the CLI reads files directly and the
 * extension does the same inside a worker thread (reportWorker.ts) off the extension host's.
 *
 * The merged view answers the questions a job raises: each rank's peak side by side and how
 * uneven they are, which rank ran out of memory first, and per source line the most any rank
 * held there, naming the rank (what the editor's overlays show unless one rank is picked).
 */
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { formatBytes } from '../units';
import { describeRankFailures, RUNSET_SCHEMA, type RunSetDoc, type RunSetRank } from '../run/torchrun';
import type { Schema } from './jsonSchema';
import { parseReport } from './model';
import { peakBytes, type LineEntry, type Report } from './types';
import type { RankPeaks, RankSummary, RunSetInfo } from './runsetTypes';
import { bucketMaxima, itemAt } from '../arrays';

export type { RankPeaks, RankSummary, RunSetInfo };

export type RunSetParse = { ok: true; doc: RunSetDoc } | { ok: false; error: string };

const STATUSES = new Set(['ok', 'oom', 'error', 'cancelled', 'missing']);

/** Whether text looks like a run-set file (cheap: the schema tag near the start). */
export function isRunSetText(text: string): boolean {
  return text.slice(0, 200).includes(`"${RUNSET_SCHEMA}"`);
}

/** Parses and checks a run-set file; the error names the field. Untrusted input: shapes only. */
export function parseRunSet(text: string, source = 'run set'): RunSetParse {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `${source} is not valid JSON (${e instanceof Error ? e.message : String(e)})` };
  }
  const o = v as Partial<RunSetDoc> | null;
  if (!o || typeof o !== 'object' || o.schema !== RUNSET_SCHEMA) return { ok: false, error: `${source} is not a ${RUNSET_SCHEMA} document` };
  if (!Array.isArray(o.ranks) || !Number.isInteger(o.world_size)) return { ok: false, error: `${source}: ranks (array) and world_size (integer) are required` };
  for (const [i, r] of (o.ranks as unknown[]).entries()) {
    const x = r as Partial<RunSetRank> | null;
    if (!x || typeof x.rank !== 'number' || !Number.isInteger(x.rank) || x.rank < 0 || !STATUSES.has(String(x.status)) || (x.report !== null && typeof x.report !== 'string')) {
      return { ok: false, error: `${source}: ranks[${i}] needs an integer rank, a status and a report path (or null)` };
    }
    // A report path must stay inside the run set's folder: the file is untrusted.
    if (typeof x.report === 'string' && (isAbsolute(x.report) || x.report.split(/[\\/]/).includes('..'))) {
      return { ok: false, error: `${source}: ranks[${i}].report must be a path inside the run set's folder (got ${JSON.stringify(x.report)})` };
    }
  }
  return { ok: true, doc: o as RunSetDoc };
}

export interface RankEntry {
  rank: number;
  status: RunSetRank['status'];
  /** The report file (absolute), when the rank wrote one. */
  file?: string;
  report?: Report;
  /** Why the report could not be read. */
  error?: string;
  host: string | null;
  device: string | null;
  /** peak_allocated on CUDA, tracked_at_peak on CPU; null without a report. */
  peak: number | null;
}

export interface RunSet {
  doc: RunSetDoc;
  file: string;
  ranks: RankEntry[];
}

/**
 * Reads a run set and each rank's report through `read` (a path → text function). `keep`, if
 * given, sees each report as it is parsed and returns what to hold on to (the worker drops the
 * timelines of 64 large reports once it has thinned them).
 */
export function loadRunSet(file: string, read: (path: string) => string, schema: Schema, keep?: (rank: number, r: Report) => Report): RunSet {
  const parsed = parseRunSet(read(file), file);
  if (!parsed.ok) throw new Error(parsed.error);
  const dir = dirname(resolve(file));
  const ranks: RankEntry[] = parsed.doc.ranks.map((r) => {
    const base: RankEntry = { rank: r.rank, status: r.status, host: null, device: null, peak: null };
    if (r.report === null) return base;
    const path = join(dir, r.report);
    let text: string;
    try {
      text = read(path);
    } catch (e) {
      return { ...base, file: path, error: `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
    }
    const p = parseReport(text, schema, path);
    if (!p.ok) return { ...base, file: path, error: p.error };
    return rankEntry(r.rank, path, keep ? keep(r.rank, p.report) : p.report);
  });
  ranks.sort((a, b) => a.rank - b.rank);
  return { doc: parsed.doc, file: resolve(file), ranks };
}

export function rankEntry(rank: number, file: string | undefined, report: Report): RankEntry {
  const e: RankEntry = {
    rank,
    status: report.run.status,
    report,
    host: report.run.distributed?.host ?? report.run.target.host ?? null,
    device: report.run.device.name,
    peak: peakBytes(report),
  };
  if (file !== undefined) e.file = file;
  return e;
}

export function rankPeaks(set: Pick<RunSet, 'ranks'>): RankPeaks {
  const peaks = set.ranks.map((r) => ({ rank: r.rank, peak: r.peak, status: r.status, host: r.host }));
  const known = peaks.filter((p): p is typeof p & { peak: number } => p.peak !== null);
  const out: RankPeaks = { peaks };
  if (known.length) {
    const max = known.reduce((a, b) => (b.peak > a.peak ? b : a));
    const min = known.reduce((a, b) => (b.peak < a.peak ? b : a));
    const mean = known.reduce((a, b) => a + b.peak, 0) / known.length;
    out.max = { rank: max.rank, peak: max.peak };
    out.min = { rank: min.rank, peak: min.peak };
    out.mean = mean;
    out.imbalance = mean > 0 ? max.peak / mean - 1 : 0;
  }
  const ooms = set.ranks.filter((r) => r.status === 'oom');
  const [first] = [...ooms].sort((a, b) => (a.report?.run.distributed?.failed_at ?? Infinity) - (b.report?.run.distributed?.failed_at ?? Infinity));
  if (first) {
    out.firstOom = { rank: first.rank, at: first.report?.run.distributed?.failed_at ?? null, host: first.host };
  }
  return out;
}

/** A line entry of the merged view: the most any rank held there, and which rank. */
export type RankedLine = LineEntry & { rank: number };

/**
 * One report standing for the whole set, for the editor's overlays: the rank with the highest
 * peak supplies the run and summary; each line carries the largest figure any rank had
 * there and names that rank. With `pick`, the picked rank's own report, lines tagged with it.
 */
export function overlayReport(set: Pick<RunSet, 'ranks'>, pick?: number): Report | undefined {
  const withReport = set.ranks.filter((r): r is RankEntry & { report: Report } => r.report !== undefined);
  if (!withReport.length) return undefined;
  if (pick !== undefined) {
    const r = withReport.find((x) => x.rank === pick);
    if (!r) return undefined;
    return { ...r.report, lines: r.report.lines.map((l) => ({ ...l, rank: r.rank })) };
  }
  const top = withReport.reduce((a, b) => ((b.peak ?? -1) > (a.peak ?? -1) ? b : a));
  const best = new Map<string, RankedLine>();
  for (const r of withReport) {
    for (const l of r.report.lines) {
      const key = `${l.file}\0${l.line}\0${l.module ?? ''}`;
      const cur = best.get(key);
      if (!cur || l.saved_bytes > cur.saved_bytes) best.set(key, { ...l, rank: r.rank });
    }
  }
  return { ...top.report, lines: [...best.values()].sort((a, b) => b.saved_bytes - a.saved_bytes) };
}

/** A per-rank timeline for the overlaid chart: CUDA's allocator timeline, else the step events. */
export function rankTimeline(r: Report): { t_ms: number[]; bytes: number[]; source: 'allocator' | 'steps' } | undefined {
  if (r.timeline?.t_ms.length) return { t_ms: r.timeline.t_ms, bytes: r.timeline.allocated, source: 'allocator' };
  const steps = r.summary.distributed?.step_memory ?? [];
  const pts = steps.flatMap((s) => {
    const [t, , bytes] = s;
    return typeof t === 'number' && typeof bytes === 'number' ? [{ t, bytes }] : [];
  });
  if (!pts.length) return undefined;
  return { t_ms: pts.map((p) => p.t), bytes: pts.map((p) => p.bytes), source: 'steps' };
}

function pct(x: number): string {
  return `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}

/** The merged view as text (`membit report RUNSET.json`) or Markdown (`--markdown`). */
export function runSetText(set: RunSet, markdown = false): string {
  const d = set.doc;
  const rp = rankPeaks(set);
  const out: string[] = [];
  const title = `${d.script} · ${d.variant} · ${d.launcher}, ${d.world_size} rank${d.world_size === 1 ? '' : 's'} · ${d.status}${d.message ? `: ${d.message}` : ''}`;
  out.push(markdown ? `### ${mdEscape(title)}` : title);
  if (rp.max && rp.min && rp.imbalance !== undefined) {
    // Equal peaks have no highest and lowest rank to name.
    const line =
      rp.max.peak === rp.min.peak
        ? `every rank peaked at ${formatBytes(rp.max.peak)}: no imbalance`
        : `peak ${formatBytes(rp.max.peak)} on rank ${rp.max.rank}, lowest ${formatBytes(rp.min.peak)} on rank ${rp.min.rank}; imbalance ${pct(rp.imbalance)} (max / mean − 1)`;
    out.push(markdown ? '' : '', line);
  }
  if (rp.firstOom) out.push(`rank ${rp.firstOom.rank}${rp.firstOom.host ? ` on ${rp.firstOom.host}` : ''} ran out of memory first`);
  const cpu = set.ranks.some((r) => r.report?.summary.peak_allocated === null);
  const rows = set.ranks.map((r) => {
    const s = r.report?.summary;
    const dist = s?.distributed;
    return [
      String(r.rank),
      r.host ?? '?',
      r.device ?? '?',
      r.status,
      r.peak !== null ? formatBytes(r.peak) : '—',
      s ? formatBytes(s.params) : '—',
      s ? formatBytes(s.grads) : '—',
      s ? formatBytes(s.optimizer_state) : '—',
      dist?.unsharded_params_max != null ? formatBytes(dist.unsharded_params_max) : '—',
      dist?.ddp?.bucket_bytes != null ? formatBytes(dist.ddp.bucket_bytes) : '—',
      dist?.outside_allocator != null ? formatBytes(dist.outside_allocator) : '—',
    ];
  });
  const head = ['rank', 'host', 'device', 'status', cpu ? 'peak (named)' : 'peak', 'params', 'grads', 'optimizer', 'unsharded max', 'DDP buckets', 'outside allocator'];
  out.push('');
  if (markdown) {
    out.push(`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`);
    for (const row of rows) out.push(`| ${row.map(mdEscape).join(' | ')} |`);
  } else {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    const fmt = (cells: string[]) => cells.map((c, i) => (i >= 4 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join('  ');
    out.push(fmt(head));
    for (const row of rows) out.push(fmt(row));
  }
  for (const r of set.ranks) if (r.error) out.push(`rank ${r.rank}: ${r.error}`);
  const notes = new Set<string>();
  for (const r of set.ranks) for (const n of r.report?.run.distributed?.notes ?? []) notes.add(n.replace(/ as rank \d+ of/, ' as a rank of'));
  if (notes.size) out.push('', ...[...notes].map((n) => (markdown ? `- ${mdEscape(n)}` : `note: ${n}`)));
  const merged = overlayReport(set);
  if (merged?.lines.length) {
    out.push('', markdown ? '**lines holding the most (the largest rank at each line):**' : 'lines holding the most (the largest rank at each line):', '');
    for (const l of (merged.lines as RankedLine[]).slice(0, 10)) {
      const where = `${l.file}:${l.line}`;
      out.push(markdown ? `- \`${where.replace(/`/g, "'")}\` ${formatBytes(l.saved_bytes)} (rank ${l.rank})` : `  ${where.padEnd(32)}${formatBytes(l.saved_bytes).padStart(10)}  rank ${l.rank}  ${l.module ?? ''}`);
    }
  }
  return `${out.join('\n')}\n`;
}

function mdEscape(s: string): string {
  return s.replace(/[\\|*_`<>[\]]/g, (c) => `\\${c}`).replace(/\n/g, ' ');
}

/** The job's outcome in words, for ProfileRun and the run-set file. */
export function jobMessage(set: Pick<RunSet, 'ranks'>): string | undefined {
  return describeRankFailures(
    set.ranks.map((r) => ({ rank: r.rank, status: r.status, error: r.report?.run.error ?? r.error ?? null, failedAt: r.report?.run.distributed?.failed_at ?? null, host: r.host })),
  );
}

const TIMELINE_POINTS = 400;

function thin(xs: readonly number[], ys: readonly number[], max: number): { t_ms: number[]; bytes: number[] } {
  // Keep each bucket's maximum: the peaks are what the overlaid chart is for.
  const keep = bucketMaxima(ys, max);
  return { t_ms: keep.map((i) => itemAt(xs, i)), bytes: keep.map((i) => itemAt(ys, i)) };
}

/** A rank's timeline thinned for the overlaid chart (bucket maxima, at most 400 points). */
export function thinTimeline(rank: number, r: Report): RunSetInfo['timelines'][number] | undefined {
  const tl = rankTimeline(r);
  return tl ? { rank, ...thin(tl.t_ms, tl.bytes, TIMELINE_POINTS), source: tl.source } : undefined;
}

/** `timelines`: already thinned (when the reports' own timelines were dropped on load). */
export function runSetInfo(set: RunSet, timelines?: RunSetInfo['timelines']): RunSetInfo {
  const d = set.doc;
  const ranks: RankSummary[] = set.ranks.map((r) => {
    const s = r.report?.summary;
    return {
      rank: r.rank,
      host: r.host,
      device: r.device,
      status: r.status,
      peak: r.peak,
      named: s ? s.peak_allocated === null : false,
      params: s?.params ?? null,
      grads: s?.grads ?? null,
      optimizer_state: s?.optimizer_state ?? null,
      activations: s?.activations_at_peak ?? null,
      unsharded_params_max: s?.distributed?.unsharded_params_max ?? null,
      ddp_buckets: s?.distributed?.ddp?.bucket_bytes ?? null,
      outside_allocator: s?.distributed?.outside_allocator ?? null,
      error: r.error ?? r.report?.run.error ?? null,
    };
  });
  if (!timelines) {
    timelines = [];
    for (const r of set.ranks) {
      const tl = r.report ? thinTimeline(r.rank, r.report) : undefined;
      if (tl) timelines.push(tl);
    }
  }
  return { file: set.file, id: d.id, script: d.script, variant: d.variant, launcher: d.launcher, world_size: d.world_size, status: d.status, message: d.message, ranks, peaks: rankPeaks(set), timelines };
}
