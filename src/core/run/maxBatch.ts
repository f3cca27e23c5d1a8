/**
 * The largest batch that fits, per world size, for a torchrun job: each probe is a real
 * torchrun launch with the harness in every rank (a fresh set of processes, so one probe's
 * OOM never affects the next), and a probe fits when every rank ends ok and, with a memory
 * limit, every rank's peak is within it. The search is the one the harness uses for a single
 * process (`membit.profile --find-max-batch`): doubling from the smallest size until a probe
 * fails, then bisection. Pure apart from the probe it is given.
 */
import type { RunSet } from '../report/runset';

export interface ProbeRow {
  batch: number;
  fits: boolean;
  /** `ok`, `oom`, `over_limit` (a rank's peak above --memory-limit), or `error`. */
  status: 'ok' | 'oom' | 'over_limit' | 'error';
  /** The largest rank peak (peak_allocated on CUDA, tracked_at_peak on CPU). */
  peak: number | null;
  /** The rank that held the most, or that failed first. */
  rank: number | null;
  error: string | null;
}

export interface WorldSizeResult {
  world_size: number;
  variant: string;
  largest: number | null;
  status: 'ok' | 'error' | 'cancelled';
  error: string | null;
  probes: ProbeRow[];
}

/** The script's arguments with `flag` set to `value` (replaced where it is, else appended). */
export function withBatch(args: readonly string[], flag: string, value: number): string[] {
  const out: string[] = [];
  let found = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === flag && i + 1 < args.length) {
      out.push(flag, String(value));
      i++;
      found = true;
    } else if (a.startsWith(`${flag}=`)) {
      out.push(`${flag}=${value}`);
      found = true;
    } else out.push(a);
  }
  if (!found) out.push(flag, String(value));
  return out;
}

/** What one torchrun probe's run set says about fitting. */
export function runSetVerdict(set: Pick<RunSet, 'doc' | 'ranks'>, batch: number, memoryLimit: number | null): ProbeRow {
  const known = set.ranks.filter((r) => r.peak !== null);
  const top = known.reduce<(typeof known)[number] | undefined>((a, r) => (a && (a.peak ?? 0) >= (r.peak ?? 0) ? a : r), undefined);
  const row: ProbeRow = { batch, fits: false, status: 'ok', peak: top?.peak ?? null, rank: top?.rank ?? null, error: null };
  const oom = set.ranks.find((r) => r.status === 'oom');
  if (oom) return { ...row, status: 'oom', rank: oom.rank };
  const bad = set.ranks.find((r) => r.status !== 'ok');
  if (bad || set.doc.status !== 'ok') {
    const why = bad?.report?.run.error?.trim().split('\n').pop() ?? bad?.error ?? set.doc.message ?? `job ${set.doc.status}`;
    return { ...row, status: 'error', rank: bad?.rank ?? null, error: bad ? `rank ${bad.rank} ${bad.status}: ${why}` : why };
  }
  if (memoryLimit !== null && known.some((r) => (r.peak as number) > memoryLimit)) return { ...row, status: 'over_limit' };
  return { ...row, fits: true };
}

class ProbeFailed extends Error {
  constructor(readonly row: ProbeRow) {
    super(row.error ?? `batch ${row.batch}: the run failed`);
  }
}

/**
 * Doubling from `lo` until a probe fails (or `hi`), then bisection between the last fit and the
 * first failure. A probe that fails for another reason than memory ends the search with its
 * error; `cancelled()` is asked between probes.
 */
export async function searchLargest(
  probe: (batch: number) => Promise<ProbeRow>,
  lo: number,
  hi: number | null,
  cancelled: () => boolean = () => false,
): Promise<Pick<WorldSizeResult, 'largest' | 'status' | 'error' | 'probes'>> {
  const probes = new Map<number, ProbeRow>();
  const fits = async (b: number): Promise<boolean> => {
    if (cancelled()) throw new Error('cancelled');
    let row = probes.get(b);
    if (!row) {
      row = await probe(b);
      probes.set(b, row);
      if (row.status === 'error') throw new ProbeFailed(row);
    }
    return row.fits;
  };
  const rows = () => [...probes.values()].sort((a, b) => a.batch - b.batch);
  try {
    if (!(await fits(lo))) return { largest: null, status: 'ok', error: null, probes: rows() };
    let good = lo;
    let bad: number | undefined;
    while (bad === undefined) {
      const next = hi === null ? good * 2 : Math.min(good * 2, hi);
      if (next <= good) break;
      if (await fits(next)) good = next;
      else bad = next;
    }
    if (bad !== undefined) {
      while (bad - good > 1) {
        const mid = Math.floor((good + bad) / 2);
        if (await fits(mid)) good = mid;
        else bad = mid;
      }
    }
    return { largest: good, status: 'ok', error: null, probes: rows() };
  } catch (e) {
    if (e instanceof ProbeFailed) return { largest: null, status: 'error', error: `batch ${e.row.batch}: ${e.message}`, probes: rows() };
    if (cancelled()) return { largest: null, status: 'cancelled', error: null, probes: rows() };
    throw e;
  }
}

/** `world size 2: batch 6 (rank 1 peak 1.2 GiB)`-style lines are the caller's; this parses `1,2,4`. */
export function parseWorldSizes(text: string): number[] {
  const sizes = text.split(',').map((s) => s.trim());
  const out: number[] = [];
  for (const s of sizes) {
    const n = Number(s);
    if (!/^\d+$/.test(s) || !Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`a world size is a whole number from 1 to 1024, got "${s}"`);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}
