/**
 * Running the harness under torchrun: every rank runs `python -m membit.profile` and writes
 * its own report. Pure: the argv, the per-rank report paths and the run-set document are
 * built here; ProfileRun spawns them like any local run (one process group, so cancel
 * reaches torchrun and every rank it started).
 *
 * torchrun is started as `python -m torch.distributed.run` with the run's own interpreter,
 * so the torch that runs the ranks is the one the user picked, whatever `torchrun` is on PATH.
 */
import { basename, dirname, join } from 'node:path';
import type { TorchrunLauncher } from '../settings';

export type { TorchrunLauncher };

export type Launcher = TorchrunLauncher;

export class LauncherError extends Error {}

const HOST_PORT = /^[A-Za-z0-9._:[\]-]+:\d{1,5}$/;
const RDZV_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Checks a launcher from settings or flags; throws LauncherError naming the field and the fix. */
export function checkLauncher(l: unknown): Launcher {
  if (!l || typeof l !== 'object') throw new LauncherError('launcher must be an object such as {"kind": "torchrun", "nprocPerNode": 2}');
  const o = l as Record<string, unknown>;
  if (o['kind'] !== 'torchrun') throw new LauncherError(`launcher.kind must be "torchrun" (got ${JSON.stringify(o['kind'])}); SLURM jobs are targets (membit.targets, kind "slurm")`);
  const int = (k: string, min: number, max: number): number | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) throw new LauncherError(`launcher.${k} must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
    return v as number;
  };
  const nproc = int('nprocPerNode', 1, 1024);
  if (nproc === undefined) throw new LauncherError('launcher.nprocPerNode is required: how many ranks to start on this host (usually its GPU count)');
  const nnodes = int('nnodes', 1, 100_000) ?? 1;
  const nodeRank = int('nodeRank', 0, nnodes - 1);
  const ep = o['rdzvEndpoint'];
  if (ep !== undefined && (typeof ep !== 'string' || !HOST_PORT.test(ep))) throw new LauncherError(`launcher.rdzvEndpoint must be host:port (got ${JSON.stringify(ep)})`);
  if (nnodes > 1 && ep === undefined) throw new LauncherError(`launcher.nnodes is ${nnodes}: give launcher.rdzvEndpoint (host:port of the first node), and run the same command on every node`);
  const id = o['rdzvId'];
  if (id !== undefined && (typeof id !== 'string' || !RDZV_ID.test(id))) throw new LauncherError('launcher.rdzvId may hold only letters, digits, ".", "_" and "-" (at most 64)');
  const out: TorchrunLauncher = { kind: 'torchrun', nprocPerNode: nproc, nnodes };
  if (nodeRank !== undefined) out.nodeRank = nodeRank;
  if (typeof ep === 'string') out.rdzvEndpoint = ep;
  if (typeof id === 'string') out.rdzvId = id;
  return out;
}

/** The ranks this host starts, and the whole job's world size. */
export function worldOf(l: Launcher): { local: number; world: number } {
  return { local: l.nprocPerNode, world: l.nprocPerNode * (l.nnodes ?? 1) };
}

/**
 * torchrun around a harness argv (`[python, '-m', 'membit.profile', ...]`): the ranks run the
 * harness as a module (`torchrun -m membit.profile ...`), each with its own report path.
 */
export function torchrunArgv(l: Launcher, harness: readonly string[], runSetId: string): string[] {
  const [python, dashM, mod, ...rest] = harness;
  if (!python || dashM !== '-m' || mod !== 'membit.profile') throw new Error('torchrunArgv expects a harness argv (python -m membit.profile ...)');
  const argv = [python, '-m', 'torch.distributed.run', '--nproc-per-node', String(l.nprocPerNode), '--nnodes', String(l.nnodes ?? 1)];
  if ((l.nnodes ?? 1) === 1 && !l.rdzvEndpoint) {
    // One host: a private rendezvous on a free port, so two runs never meet by accident.
    argv.push('--standalone');
  } else {
    // checkLauncher asks several hosts for an endpoint; a launcher that skipped it fails here.
    if (!l.rdzvEndpoint) throw new LauncherError(`launcher.nnodes is ${l.nnodes ?? 1}: give launcher.rdzvEndpoint (host:port of the first node)`);
    argv.push('--rdzv-backend', 'c10d', '--rdzv-endpoint', l.rdzvEndpoint, '--rdzv-id', l.rdzvId ?? runSetId);
    if (l.nodeRank !== undefined) argv.push('--node-rank', String(l.nodeRank));
  }
  // A rank that fails ends the job: restarts would re-run the profile and mix up the reports.
  argv.push('--max-restarts', '0', '-m', 'membit.profile', ...rest);
  return argv;
}

/** `{rank}` in the harness's --out is replaced by each rank (see membit/profile/distributed.py). */
export const RANK_PLACEHOLDER = '{rank}';

/** The folder holding a run set's rank reports: beside the run-set file, named after it. */
export function rankDir(runSetFile: string): string {
  return join(dirname(runSetFile), `${basename(runSetFile).replace(/\.json$/, '')}.ranks`);
}

/** The harness's --out for every rank of a run set. */
export function rankOutPattern(runSetFile: string): string {
  return join(rankDir(runSetFile), `rank${RANK_PLACEHOLDER}.json`);
}

export function rankReportPath(runSetFile: string, rank: number): string {
  return join(rankDir(runSetFile), `rank${rank}.json`);
}

export type { RunSetDoc, RunSetRank } from './runSetTypes';
import type { RunSetRank } from './runSetTypes';

export const RUNSET_SCHEMA = 'membit.runset/1';

/**
 * What went wrong in a job, from the ranks' own reports: which rank failed first and how,
 * and which wrote no report at all (killed, or never started).
 */
export function describeRankFailures(ranks: readonly { rank: number; status: RunSetRank['status']; error?: string | null; failedAt?: number | null; host?: string | null }[]): string | undefined {
  const bad = ranks.filter((r) => r.status !== 'ok');
  if (!bad.length) return undefined;
  const failed = bad.filter((r) => r.status === 'oom' || r.status === 'error');
  const first = [...failed].sort((a, b) => (a.failedAt ?? Infinity) - (b.failedAt ?? Infinity))[0];
  const parts: string[] = [];
  if (first) {
    const last = (first.error ?? '').split('\n').filter((l) => l.trim()).slice(-1)[0]?.trim();
    parts.push(`rank ${first.rank}${first.host ? ` on ${first.host}` : ''} ${first.status === 'oom' ? 'ran out of memory' : 'failed'} first${last ? `: ${last}` : ''}`);
  }
  const missing = bad.filter((r) => r.status === 'missing').map((r) => r.rank);
  if (missing.length) parts.push(`rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} wrote no report (killed, or never started)`);
  const others = bad.filter((r) => r !== first && r.status !== 'missing');
  if (others.length) parts.push(`then ${others.map((r) => `rank ${r.rank} ${r.status === 'cancelled' ? 'was stopped' : r.status}`).join(', ')}`);
  return parts.join('; ');
}
