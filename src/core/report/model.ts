/**
 * Reading a report: parse, validate against the schema, and index it by file and line
 * for the overlays. Pure; the VS Code adapter only maps results onto editors.
 */
import { formatBytes } from '../units';
import { validate, type Schema } from './jsonSchema';
import { peakBytes, type LineEntry, type Report } from './types';

export type ParseResult = { ok: true; report: Report } | { ok: false; error: string };

/** Parses and validates report text; the error names what is wrong and where. */
export function parseReport(text: string, schema: Schema, source = 'report'): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `${source} is not valid JSON (${e instanceof Error ? e.message : String(e)}); it may have been cut off while being written.` };
  }
  const tag = value && typeof value === 'object' ? (value as { schema?: unknown }).schema : undefined;
  if (typeof tag === 'string' && tag !== 'membit.report/1' && tag.startsWith('membit.report/')) {
    return { ok: false, error: `${source} uses ${tag}, which this version of Membit does not read; update the extension.` };
  }
  const errors = validate(schema, value, 5);
  if (errors.length) {
    return {
      ok: false,
      error: `${source} is not a membit.report/1 document: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`,
    };
  }
  return { ok: true, report: value as Report };
}

export type HeatBucket = 'low' | 'medium' | 'high';

/** Share of the run's peak at which a line counts as high / medium. */
export const HEAT_THRESHOLDS = { high: 0.1, medium: 0.02 } as const;

export function heatBucket(bytes: number, peak: number): HeatBucket | undefined {
  if (bytes <= 0 || peak <= 0) return undefined;
  const share = bytes / peak;
  if (share >= HEAT_THRESHOLDS.high) return 'high';
  if (share >= HEAT_THRESHOLDS.medium) return 'medium';
  return 'low';
}

export interface LineInfo {
  line: number;
  entries: LineEntry[];
  savedBytes: number;
  maskBytes: number;
  bucket: HeatBucket | undefined;
  /** Rank among the file's lines by bytes, 0 = largest. */
  rank: number;
  /** Module instances the figures sum over (`h.*.attn` in a 4-layer model: 4); 1 when one. */
  instances: number;
}

export interface ReportIndex {
  report: Report;
  peak: number;
  /** Relative (to the run root) path → line number (1-based) → info. */
  files: Map<string, Map<number, LineInfo>>;
  /** `cpu`, `cuda`, …: whose bytes per element the figures are. */
  device: string;
}

/** Normalizes a report path for lookups: forward slashes, no leading ./ */
export function normalizePath(p: string): string {
  return p.replace(/\\/g, '/').replace(/^\.\//, '');
}

/** Whether a module path (`h.0.attn`) is one a wildcard path names (`h.*.attn`; `*` is one segment). */
export function globMatches(pattern: string, path: string): boolean {
  const a = pattern.split('.');
  const b = path.split('.');
  return a.length === b.length && a.every((seg, i) => seg === '*' || seg === b[i]);
}

/**
 * How many instances a wildcard path sums over: the distinct layer indices (numeric
 * segments) its `*`s stand for. `h.*.attn` in a 4-layer model is 4; `h.*.attn.*`, which also
 * covers the block's differently named children, is still 4, not 4 × children.
 */
export function layerCount(pattern: string, paths: readonly string[]): number {
  const stars = pattern.split('.').flatMap((seg, i) => (seg === '*' ? [i] : []));
  const seen = new Set<string>();
  for (const p of paths) {
    if (!globMatches(pattern, p)) continue;
    const segs = p.split('.');
    seen.add(stars.map((i) => (/^\d+$/.test(segs[i] ?? '') ? segs[i] : '')).join('.'));
  }
  return Math.max(1, seen.size);
}

/**
 * Builds a report's index a slice of lines at a time, so a caller on a busy thread can let
 * its event loop run between slices ({@link indexReportInTurns}).
 */
class IndexBuilder {
  private readonly peak: number;
  /** Lines name their module with wildcards for the instances they sum over; count them once per pattern. */
  private readonly counts = new Map<string, number>();
  private paths: string[] | undefined;
  private readonly files = new Map<string, Map<number, LineInfo>>();

  constructor(private readonly report: Report) {
    this.peak = peakBytes(report);
  }

  private instancesOf(module: string | null): number {
    if (!module?.includes('*')) return 1;
    let n = this.counts.get(module);
    if (n === undefined) this.counts.set(module, (n = layerCount(module, (this.paths ??= this.report.modules.map((m) => m.path)))));
    return n;
  }

  add(from: number, to: number): void {
    const lines = this.report.lines;
    for (const e of lines.slice(from, to)) {
      const file = normalizePath(e.file);
      let byLine = this.files.get(file);
      if (!byLine) this.files.set(file, (byLine = new Map<number, LineInfo>()));
      const info = byLine.get(e.line) ?? { line: e.line, entries: [], savedBytes: 0, maskBytes: 0, bucket: undefined, rank: 0, instances: 1 };
      info.entries.push(e);
      info.instances = Math.max(info.instances, this.instancesOf(e.module));
      info.savedBytes += e.saved_bytes;
      info.maskBytes += e.mask_bytes;
      byLine.set(e.line, info);
    }
  }

  finish(): ReportIndex {
    for (const byLine of this.files.values()) {
      const sorted = [...byLine.values()].sort((a, b) => b.savedBytes - a.savedBytes);
      sorted.forEach((info, i) => {
        info.rank = i;
        info.bucket = heatBucket(info.savedBytes, this.peak);
      });
    }
    return { report: this.report, peak: this.peak, files: this.files, device: this.report.run.device.type };
  }
}

export function indexReport(report: Report): ReportIndex {
  const b = new IndexBuilder(report);
  b.add(0, report.lines.length);
  return b.finish();
}

/**
 * indexReport with the event loop served every `perTurn` lines: the merged report of a large
 * run set has tens of thousands of lines, and indexing them at once held the extension host
 * for about 100 ms.
 */
export async function indexReportInTurns(report: Report, perTurn = 10_000): Promise<ReportIndex> {
  const b = new IndexBuilder(report);
  for (let i = 0; i < report.lines.length; i += perTurn) {
    if (i > 0) await new Promise((r) => setTimeout(r, 0));
    b.add(i, i + perTurn);
  }
  return b.finish();
}

/**
 * The end-of-line text, short enough for an 80–100 column view (details in the hover):
 * `▲ 256 KiB kept for backward · mask 256 KiB (2× summed, CPU)`. For a report from a memory
 * snapshot (`live`), a line's bytes are what it allocated that was still live at the peak:
 * `▲ 1.2 GiB live at peak`.
 */
export function inlineText(info: Pick<LineInfo, 'savedBytes' | 'maskBytes'> & Partial<Pick<LineInfo, 'instances'>>, device?: string, live = false): string {
  const parts = [`▲ ${formatBytes(info.savedBytes)} ${live ? 'live at peak' : 'kept for backward'}`];
  if (info.maskBytes > 0) parts.push(`mask ${formatBytes(info.maskBytes)}`);
  return `${parts.join(' · ')}${scopeSuffix(info.instances ?? 1, device)}`;
}

/** ` (2× summed, CPU)`: how many instances a figure sums and whose bytes it is; '' for one instance on CUDA. */
export function scopeSuffix(instances: number, device: string | undefined): string {
  const parts: string[] = [];
  if (instances > 1) parts.push(`${instances}× summed`);
  if (device === 'cpu') parts.push('CPU');
  return parts.length ? ` (${parts.join(', ')})` : '';
}

/** Which lines get end-of-line text: the top few by bytes, and only visible shares. */
export function showsInline(info: LineInfo, topN = 8): boolean {
  return info.rank < topN && info.bucket !== undefined && info.bucket !== 'low';
}

/**
 * Finds the report's entry for a workspace file. Reports store paths relative to the
 * run's root; a report from another machine maps by relative path only.
 */
export function linesForFile(index: ReportIndex, relativePath: string): Map<number, LineInfo> | undefined {
  return index.files.get(normalizePath(relativePath));
}
