/**
 * Would converting this FFN to 2:4 sparsity make training faster? Answered from measured
 * tables (`kernels/membit/sparse/advice/<gpu>.json`, written by `bench_sparse24.py --advice`):
 * dense vs 2:4 FFN forward+backward time per (tokens, d_model, d_ff) on one GPU, per-step
 * compression included. Pure: the caller loads the tables; nothing here touches files.
 *
 * The answer is read off the nearest measured FFN shape (log-distance over d_model and d_ff,
 * gated FFNs matched with gated), interpolated in log(tokens) between the measured token
 * counts and clamped at the ends, because 2:4 pays only once the products are large enough to
 * amortise the sparse kernels' fixed costs and the weight compression of every step.
 */

export interface SparseAdviceEntry {
  tokens: number;
  d_model: number;
  d_ff: number;
  gated: boolean;
  dtype: string;
  dense_ms: number;
  sparse_ms: number;
  speedup: number;
}

export interface SparseAdviceTable {
  schema: 'membit.sparse-advice/1';
  device: { name: string; capability?: string | null };
  torch: string;
  date: string;
  method: string;
  entries: SparseAdviceEntry[];
}

export interface Sparse24Query {
  dModel: number;
  dFF: number;
  gated?: boolean;
  /** Tokens per step (batch × sequence length); absent when unknown. */
  tokens?: number | undefined;
  /** GPU the user will train on (from a report or the local GPU list); picks the table. */
  gpu?: string | undefined;
}

export type Sparse24Verdict = 'faster' | 'no-gain' | 'slower';

export interface Sparse24Advice {
  /** Dense time over 2:4 time; for an unknown token count, the best over the measured range. */
  speedup: number;
  /** For an unknown token count: the measured range of speedups over token counts. */
  range?: [number, number] | undefined;
  verdict: Sparse24Verdict;
  /** Short, for hints: `2:4 here: 1.4x faster` or `2:4 here: 0.8x — not worth it`. */
  text: string;
  /** Where the figure comes from, for hovers. */
  basis: string;
  /** The GPU the table was measured on. */
  gpu: string;
  /** True when the table is for another GPU than the one asked about. */
  otherGpu: boolean;
  nearest: { dModel: number; dFF: number; gated: boolean; tokens: number[] };
}

/** At or above: worth converting; below NO_GAIN: slower than dense. */
export const FASTER = 1.1;
export const NO_GAIN = 0.95;

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Validates a parsed advice file; an Error names the first problem. */
export function parseAdviceTable(doc: unknown, source = 'advice table'): SparseAdviceTable | Error {
  const d = doc as Partial<SparseAdviceTable> | null;
  if (!d || typeof d !== 'object') return new Error(`${source}: not a JSON object`);
  if (d.schema !== 'membit.sparse-advice/1') return new Error(`${source}: schema is ${JSON.stringify(d.schema)}, expected "membit.sparse-advice/1"`);
  if (!d.device || typeof d.device.name !== 'string' || !d.device.name) return new Error(`${source}: device.name missing`);
  if (!Array.isArray(d.entries) || d.entries.length === 0) return new Error(`${source}: no entries`);
  // Entries are untrusted too: any of them may be null or miss a field.
  for (const [i, e] of (d.entries as (Partial<SparseAdviceEntry> | null)[]).entries()) {
    const ok =
      e && num(e.tokens) && e.tokens > 0 && num(e.d_model) && e.d_model > 0 && num(e.d_ff) && e.d_ff > 0 && typeof e.gated === 'boolean' && num(e.speedup) && e.speedup > 0;
    if (!ok) return new Error(`${source}: entries[${i}] needs positive tokens, d_model, d_ff, speedup and a boolean gated`);
  }
  return d as SparseAdviceTable;
}

function norm(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '');
}

/** The table for `gpu` (same name, ignoring case and punctuation), else the first one. */
export function pickTable(tables: readonly SparseAdviceTable[], gpu?: string): { table: SparseAdviceTable; otherGpu: boolean } | undefined {
  if (gpu) {
    const want = norm(gpu);
    const exact = tables.find((t) => norm(t.device.name) === want);
    if (exact) return { table: exact, otherGpu: false };
    // "NVIDIA H100 80GB HBM3" vs a table for "NVIDIA H100": same chip family.
    const prefix = tables.find((t) => want.startsWith(norm(t.device.name)) || norm(t.device.name).startsWith(want));
    if (prefix) return { table: prefix, otherGpu: false };
  }
  const [first] = tables;
  return first ? { table: first, otherGpu: !!gpu } : undefined;
}

/** The speedup at `tokens`, interpolated on a log scale between the measured points; undefined without points. */
function interpolate(points: readonly { tokens: number; speedup: number }[], tokens: number): number | undefined {
  const p = [...points].sort((a, b) => a.tokens - b.tokens);
  const first = p[0];
  const last = p.at(-1);
  if (!first || !last) return undefined;
  if (tokens <= first.tokens) return first.speedup;
  if (tokens >= last.tokens) return last.speedup;
  let lo = first;
  for (const hi of p) {
    if (tokens <= hi.tokens) {
      const t = (Math.log2(tokens) - Math.log2(lo.tokens)) / (Math.log2(hi.tokens) - Math.log2(lo.tokens));
      return lo.speedup + t * (hi.speedup - lo.speedup);
    }
    lo = hi;
  }
  return last.speedup;
}

function tokensLabel(n: number): string {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024}k` : String(n);
}

function verdictOf(s: number): Sparse24Verdict {
  return s >= FASTER ? 'faster' : s >= NO_GAIN ? 'no-gain' : 'slower';
}

/** The 2:4 speed advice for one FFN, or undefined when no table or no usable widths. */
export function adviseSparse24(tables: readonly SparseAdviceTable[], q: Sparse24Query): Sparse24Advice | undefined {
  if (!(q.dModel > 0) || !(q.dFF > 0)) return undefined;
  const picked = pickTable(tables, q.gpu);
  if (!picked) return undefined;
  const { table, otherGpu } = picked;
  const gated = !!q.gated;
  const same = table.entries.filter((e) => e.gated === gated);
  const pool = same.length ? same : table.entries;
  const dist = (e: SparseAdviceEntry) => (Math.log2(e.d_model) - Math.log2(q.dModel)) ** 2 + (Math.log2(e.d_ff) - Math.log2(q.dFF)) ** 2;
  let best = pool[0];
  if (!best) return undefined;
  for (const e of pool) if (dist(e) < dist(best)) best = e;
  const shape = pool.filter((e) => e.d_model === best.d_model && e.d_ff === best.d_ff && e.gated === best.gated);
  const tokens = [...new Set(shape.map((e) => e.tokens))].sort((a, b) => a - b);
  const speeds = shape.map((e) => e.speedup);
  // `shape` holds `best`, so it has at least one measured token count.
  const lo = tokens[0] ?? best.tokens;
  const hi = tokens.at(-1) ?? best.tokens;
  const exactShape = best.d_model === q.dModel && best.d_ff === q.dFF;
  const shapeText = `${exactShape ? '' : 'nearest measured FFN '}${best.d_model}→${best.d_ff}${best.gated ? ' gated' : ''}`;
  const where = `${table.device.name}${otherGpu ? ` (no table for ${q.gpu})` : ''}, ${table.date}`;
  let speedup: number;
  let range: [number, number] | undefined;
  let at: string;
  if (q.tokens !== undefined && q.tokens > 0) {
    speedup = interpolate(shape, q.tokens) ?? best.speedup;
    at = `${tokensLabel(q.tokens)} tokens/step${q.tokens < lo || q.tokens > hi ? ` (measured ${tokensLabel(lo)}–${tokensLabel(hi)})` : ''}`;
  } else {
    range = [Math.min(...speeds), Math.max(...speeds)];
    speedup = range[1];
    at = `${tokensLabel(lo)}–${tokensLabel(hi)} tokens/step (batch × length unknown)`;
  }
  const verdict = verdictOf(speedup);
  const fig = range ? `${range[0].toFixed(2)}–${range[1].toFixed(2)}x` : `${speedup.toFixed(2)}x`;
  const text =
    verdict === 'faster' ? `2:4 here: ${fig} faster` : verdict === 'no-gain' ? `2:4 here: ${fig} — no real gain` : `2:4 here: ${fig} — not worth it`;
  const basis = `measured FFN forward+backward, dense vs 2:4 with per-step weight compression, ${shapeText} at ${at}, on ${where}`;
  return { speedup, range, verdict, text, basis, gpu: table.device.name, otherGpu, nearest: { dModel: best.d_model, dFF: best.d_ff, gated: best.gated, tokens } };
}
