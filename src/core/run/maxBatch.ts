/**
 * The largest batch that fits, per world size, for a torchrun job: each probe is a real
 * torchrun launch with the harness in every rank (a fresh set of processes, so one probe's
 * OOM never affects the next), and a probe fits when every rank ends ok and, with a memory
 * limit, every rank's peak is within it. The search is the one the harness uses for a single
 * process (`membit.profile --find-max-batch`): doubling from the smallest size until a probe
 * fails, then bisection. Pure apart from the probe it is given.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReport } from '../report/model';
import { loadRunSet, type RunSet } from '../report/runset';
import { REPORT_SCHEMA } from '../report/schema';
import { peakBytes, type Report } from '../report/types';
import { createRun, type RunOptions } from './target';
import { itemAt } from '../arrays';

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
    const a = itemAt(args, i);
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
  if (memoryLimit !== null && known.some((r) => r.peak !== null && r.peak > memoryLimit)) return { ...row, status: 'over_limit' };
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

/** One search: the script, its batch flag and bounds, and the world sizes to search at. */
export interface MaxBatchJob {
  python: string;
  workspace: string;
  script: string;
  args: readonly string[];
  cwd?: string;
  batchArg: string;
  lo: number;
  hi: number | null;
  /** Required where there is no out-of-memory to find (CPU); compared with every rank's peak. */
  memoryLimit: number | null;
  /** null: one process, no torchrun; N: a torchrun job of N ranks on this host. */
  worldSizes: (number | null)[];
  steps: number;
  warmup: number;
  variant: string;
}

export interface MaxBatchDoc {
  schema: 'membit.maxbatch/1';
  script: string;
  argv: string[];
  batch_arg: string;
  min: number;
  max: number | null;
  memory_limit: number | null;
  launcher: 'torchrun' | null;
  device: string | null;
  started: string;
  duration_s: number;
  /** One entry per world size (world_size 1 for a single process without torchrun). */
  variants: WorldSizeResult[];
}

/** What a single process's report says about fitting, in the run-set verdict's terms. */
function reportVerdict(r: Report, batch: number, memoryLimit: number | null): ProbeRow {
  const status = r.run.status === 'ok' || r.run.status === 'oom' ? r.run.status : 'error';
  const one = { doc: { status, message: null }, ranks: [{ rank: 0, status: r.run.status === 'cancelled' ? 'error' : r.run.status, host: null, device: null, peak: peakBytes(r), report: r }] };
  return runSetVerdict(one as unknown as Pick<RunSet, 'doc' | 'ranks'>, batch, memoryLimit);
}

/**
 * Searches the largest batch at each world size, every probe a fresh run (a torchrun job for a
 * world size). Ends early, with a clear error, where the first probe shows a CPU run and no
 * memory limit was given (nothing on CPU runs out of memory).
 */
export async function runMaxBatch(
  job: MaxBatchJob,
  options: Pick<RunOptions, 'kernelsDir' | 'signal'> & { onProbe?: (worldSize: number | null, row: ProbeRow) => void },
): Promise<MaxBatchDoc> {
  const started = new Date();
  const tmp = mkdtempSync(join(tmpdir(), 'membit-maxbatch-'));
  let device: string | null = null;
  const results: WorldSizeResult[] = [];
  try {
    for (const ws of job.worldSizes) {
      const probe = async (batch: number): Promise<ProbeRow> => {
        const out = join(tmp, `ws${ws ?? 0}-b${batch}.json`);
        const run = createRun(
          { kind: 'local', python: job.python },
          {
            workspace: job.workspace,
            script: job.script,
            args: withBatch(job.args, job.batchArg, batch),
            ...(job.cwd ? { cwd: job.cwd } : {}),
            out,
            variant: job.variant,
            steps: job.steps,
            warmup: job.warmup,
            ...(ws ? { launcher: { kind: 'torchrun' as const, nprocPerNode: ws, nnodes: 1 } } : {}),
          },
          { kernelsDir: options.kernelsDir, ...(options.signal ? { signal: options.signal } : {}) },
        );
        const outcome = await run.start();
        if (outcome.state === 'cancelled') throw new Error('cancelled');
        let row: ProbeRow;
        if (!outcome.report) {
          row = { batch, fits: false, status: 'error', peak: null, rank: null, error: outcome.message ?? 'the run wrote no report' };
        } else if (ws) {
          const set = loadRunSet(outcome.report, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA);
          device ??= set.ranks.find((r) => r.device)?.device ?? null;
          row = runSetVerdict(set, batch, job.memoryLimit);
          if (set.ranks.some((r) => r.report?.run.device.type === 'cpu') && job.memoryLimit === null) throw new CpuWithoutLimit();
        } else {
          const parsed = parseReport(readFileSync(outcome.report, 'utf8'), REPORT_SCHEMA, outcome.report);
          if (!parsed.ok) throw new Error(parsed.error);
          device ??= parsed.report.run.device.name;
          row = reportVerdict(parsed.report, batch, job.memoryLimit);
          if (parsed.report.run.device.type === 'cpu' && job.memoryLimit === null) throw new CpuWithoutLimit();
        }
        options.onProbe?.(ws, row);
        return row;
      };
      const found = await searchLargest(probe, job.lo, job.hi, () => options.signal?.aborted ?? false);
      results.push({ world_size: ws ?? 1, variant: job.variant, ...found });
      if (found.status === 'cancelled') break;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return {
    schema: 'membit.maxbatch/1',
    script: job.script,
    argv: [...job.args],
    batch_arg: job.batchArg,
    min: job.lo,
    max: job.hi,
    memory_limit: job.memoryLimit,
    launcher: job.worldSizes.some((w) => w !== null) ? 'torchrun' : null,
    device,
    started: started.toISOString(),
    duration_s: Math.round((Date.now() - started.getTime()) / 10) / 100,
    variants: results,
  };
}

/** CPU runs never run out of memory: without a limit every batch would fit. */
export class CpuWithoutLimit extends Error {
  constructor() {
    super('the run is on the CPU, where nothing runs out of memory: give a memory limit in bytes (--memory-limit) to search against');
  }
}

/** `world size 2: batch 6 (peak 1.2 MiB, rank 1)` lines for a finished search. */
export function describeMaxBatch(doc: MaxBatchDoc, bytes: (n: number) => string): string[] {
  return doc.variants.map((v) => {
    const at = v.largest === null ? undefined : v.probes.find((p) => p.batch === v.largest);
    const where = doc.launcher ? `world size ${v.world_size}` : 'one process';
    if (v.status === 'cancelled') return `${where}: cancelled`;
    if (v.status === 'error') return `${where}: ${v.error ?? 'a probe failed'}`;
    if (v.largest === null) return `${where}: not even batch ${doc.min} fits`;
    const peak = at?.peak === null || at?.peak === undefined ? '' : ` (peak ${bytes(at.peak)}${doc.launcher && at.rank !== null ? ` on rank ${at.rank}` : ''})`;
    return `${where}: batch ${v.largest}${peak}${doc.max !== null && v.largest === doc.max ? ' — the maximum asked for' : ''}`;
  });
}
