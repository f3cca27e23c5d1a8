/**
 * After a torchrun job: finds each rank's report beside the run-set file, works out the job's
 * outcome from them (which rank failed first, which left nothing), and writes the run-set file
 * (`membit.runset/1`) atomically. The ranks' reports are never rewritten.
 */
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { describeRankFailures, rankDir, RUNSET_SCHEMA, worldOf, type Launcher, type RunSetDoc, type RunSetRank } from './torchrun';

export interface CollectOptions {
  /** The run-set file to write. */
  file: string;
  id: string;
  launcher: Launcher;
  script: string;
  argv: string[];
  variant: string;
  exitCode: number | null;
  cancelled: boolean;
  stderrTail: readonly string[];
  started?: Date;
  /** Who launched the ranks (default torchrun). */
  kind?: 'torchrun' | 'slurm';
  slurm?: RunSetDoc['slurm'];
  /** Every rank of the job reports into this folder (SLURM's shared file system): all are expected. */
  expectAll?: boolean;
}

interface RankFacts {
  rank: number;
  status: RunSetRank['status'];
  error: string | null;
  failedAt: number | null;
  host: string | null;
  world: number | null;
}

/** The few facts the job's outcome needs from a rank report; tolerant of odd files (they are checked fully when viewed). */
function factsOf(rank: number, text: string): RankFacts {
  try {
    const doc = JSON.parse(text) as { run?: { status?: unknown; error?: unknown; distributed?: { failed_at?: unknown; host?: unknown; world_size?: unknown } } };
    const st = doc.run?.status;
    const d = doc.run?.distributed;
    return {
      rank,
      status: st === 'ok' || st === 'oom' || st === 'error' || st === 'cancelled' ? st : 'error',
      error: typeof doc.run?.error === 'string' ? doc.run.error : null,
      failedAt: typeof d?.failed_at === 'number' ? d.failed_at : null,
      host: typeof d?.host === 'string' ? d.host : null,
      world: typeof d?.world_size === 'number' ? d.world_size : null,
    };
  } catch (e) {
    return { rank, status: 'error', error: `the report is not valid JSON (${e instanceof Error ? e.message : String(e)})`, failedAt: null, host: null, world: null };
  }
}

export interface CollectedRunSet {
  doc: RunSetDoc;
  status: RunSetDoc['status'];
  message: string | null;
  /** The status of the rank that failed first (for RunOutcome.status). */
  firstStatus?: 'ok' | 'oom' | 'error' | 'cancelled' | undefined;
}

export function collectRunSet(o: CollectOptions): CollectedRunSet {
  const dir = rankDir(o.file);
  const found = new Map<number, string>();
  if (existsSync(dir)) {
    for (const name of readdirSync(dir)) {
      const m = /^rank(\d+)\.json$/.exec(name);
      if (m) found.set(Number(m[1]), name);
    }
  }
  const { local, world } = worldOf(o.launcher);
  // One host: ranks 0..nproc-1 are expected here. Several hosts: this host's ranks are the ones
  // that wrote reports here, plus node_rank's block when it is known.
  const expected = new Set<number>(found.keys());
  if (o.expectAll) for (let i = 0; i < world; i++) expected.add(i);
  else if ((o.launcher.nnodes ?? 1) === 1) for (let i = 0; i < local; i++) expected.add(i);
  else if (o.launcher.nodeRank !== undefined) for (let i = 0; i < local; i++) expected.add(o.launcher.nodeRank * local + i);
  const facts: RankFacts[] = [...expected].sort((a, b) => a - b).map((rank) => {
    const name = found.get(rank);
    if (!name) return { rank, status: 'missing', error: null, failedAt: null, host: null, world: null };
    return factsOf(rank, readFileSync(`${dir}/${name}`, 'utf8'));
  });
  const worlds = new Set(facts.map((f) => f.world).filter((w): w is number => w !== null));
  let message = describeRankFailures(facts) ?? null;
  const allOk = facts.length > 0 && facts.every((f) => f.status === 'ok');
  let status: RunSetDoc['status'] = o.cancelled ? 'cancelled' : allOk && o.exitCode === 0 ? 'ok' : 'failed';
  if (status === 'failed' && !message) {
    const last = o.stderrTail.filter((l) => l.trim()).slice(-3).join(' · ');
    message = `${o.kind === 'slurm' ? 'the job' : 'torchrun'} exited with ${o.exitCode === null ? 'a signal' : `status ${o.exitCode}`}${last ? `: ${last}` : ''}`;
  }
  if (facts.length && facts.every((f) => f.status === 'cancelled') && !o.cancelled) status = 'failed';
  if (worlds.size > 1) message = `${message ? `${message}; ` : ''}ranks disagree on the world size (${[...worlds].join(' vs ')})`;
  const first = facts.filter((f) => f.status === 'oom' || f.status === 'error').sort((a, b) => (a.failedAt ?? Infinity) - (b.failedAt ?? Infinity))[0];
  const [onlyWorld] = worlds;
  const doc: RunSetDoc = {
    schema: RUNSET_SCHEMA,
    id: o.id,
    launcher: o.kind ?? 'torchrun',
    started: (o.started ?? new Date()).toISOString(),
    world_size: worlds.size === 1 && onlyWorld !== undefined ? onlyWorld : world,
    script: o.script,
    argv: o.argv,
    variant: o.variant,
    status,
    message,
    ranks: facts.map((f) => {
      const file = found.get(f.rank);
      return { rank: f.rank, status: f.status, report: file !== undefined ? `${basename(dir)}/${file}` : null };
    }),
    ...(o.slurm ? { slurm: o.slurm } : {}),
  };
  const tmp = `${o.file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(doc, null, 1)}\n`);
  renameSync(tmp, o.file);
  return { doc, status, message, firstStatus: first?.status === 'oom' || first?.status === 'error' ? first.status : status === 'cancelled' ? 'cancelled' : allOk ? 'ok' : undefined };
}
