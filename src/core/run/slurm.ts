/**
 * SLURM targets: a cluster reached through its login node over the system `ssh`. Membit
 * uploads the workspace and its package to a work folder on the shared file system (as for SSH
 * targets), writes a job script there, submits it with `sbatch`, follows it with `squeue`
 * (`scontrol`/`sacct` once it has left the queue), streams the ranks' progress from the job's
 * output file, collects every rank's report into a local run set and cancels with `scancel`.
 *
 * Everything sent to the login node is an argv (quoted by ssh.ts) and every value that goes
 * into the job script is shell-quoted (quote.ts): job names, paths and arguments can hold any
 * character. The job script's resources are sbatch flags, never #SBATCH lines built from text.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { DEFAULT_MAX_UPLOAD_BYTES, hashFiles, listPackageFiles, listWorkspaceFiles, treeHash, UploadTooLargeError } from './files';
import { harnessArgv, LineSplitter, parseProgressLine, type ProgressEvent } from './harness';
import { shellQuote } from './quote';
import { preflight, uploadTrees, type LocalTree } from './remote';
import { collectRunSet } from './runSetFile';
import { execFailure, RunError, sshExec, type SshOptions } from './ssh';
import type { SlurmJobSetting } from '../settings';
import { RunBase } from './runBase';
import type { RunOutcome, RunRequest } from './target';
import { rankDir } from './torchrun';
import { hasLever } from './variants';

/** A `membit.targets` entry with `kind: "slurm"`, checked; the job's resources are the setting's. */
export interface SlurmTarget extends SlurmJobSetting {
  kind: 'slurm';
  /** The login node, as ssh takes it (alias or user@host). */
  host: string;
  /** Python on the compute nodes (and the login node), on the shared file system. */
  python: string;
  /** A folder on the shared file system for uploads and runs (~/ allowed). */
  workdir: string;
  /** Seconds between squeue polls (default 3). */
  pollS?: number;
  /** Environment for the SLURM commands and the job (e.g. SLURM_CONF, a module path). */
  env?: Record<string, string>;
  ssh?: Omit<SshOptions, 'host'>;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TIME = /^(\d+-)?\d{1,3}(:\d{2}){0,2}$/;
const SLURM_WORD = /^[A-Za-z0-9_.,:@+-]{1,128}$/;

/** Checks a slurm target from settings; throws naming the field and the fix. */
export function checkSlurmTarget(t: unknown): SlurmTarget {
  const o = (t && typeof t === 'object' ? t : {}) as Record<string, unknown>;
  const where = `membit.targets "${typeof o['host'] === 'string' ? o['host'] : '?'}"`;
  if (o['kind'] !== 'slurm') throw new Error(`${where}: kind must be "slurm"`);
  if (typeof o['host'] !== 'string' || !o['host'] || o['host'].startsWith('-')) throw new Error(`${where}: host must be the login node (an ssh alias or user@host)`);
  const int = (k: string, min: number) => {
    const v = o[k];
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < min)) throw new Error(`${where}: ${k} must be a whole number ≥ ${min}`);
    return v as number | undefined;
  };
  const word = (k: string) => {
    const v = o[k];
    if (v !== undefined && (typeof v !== 'string' || !SLURM_WORD.test(v))) throw new Error(`${where}: ${k} must be a SLURM name (letters, digits, . _ - , : @ +)`);
    return v;
  };
  if (o['time'] !== undefined && (typeof o['time'] !== 'string' || !TIME.test(o['time']))) throw new Error(`${where}: time must be a SLURM time limit such as "30", "01:30:00" or "1-00:00:00"`);
  if (o['launch'] !== undefined && o['launch'] !== 'torchrun' && o['launch'] !== 'srun') throw new Error(`${where}: launch must be "torchrun" or "srun"`);
  const env = (o['env'] ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(env)) if (!ENV_NAME.test(k) || typeof v !== 'string') throw new Error(`${where}: env must map variable names to strings (bad: ${JSON.stringify(k)})`);
  const out: SlurmTarget = {
    kind: 'slurm',
    host: o['host'],
    python: typeof o['python'] === 'string' && o['python'] ? o['python'] : 'python3',
    workdir: typeof o['workdir'] === 'string' && o['workdir'] ? o['workdir'] : '~/.cache/membit',
    env: env as Record<string, string>,
  };
  const assign = <K extends keyof SlurmTarget>(k: K, v: SlurmTarget[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  assign('partition', word('partition'));
  assign('account', word('account'));
  assign('nodes', int('nodes', 1));
  assign('gpusPerNode', int('gpusPerNode', 0));
  assign('ranksPerNode', int('ranksPerNode', 1));
  assign('cpusPerTask', int('cpusPerTask', 1));
  assign('time', o['time']);
  assign('launch', o['launch']);
  assign('pendingTimeoutS', int('pendingTimeoutS', 1));
  assign('pollS', int('pollS', 1));
  return out;
}

/** A job name SLURM and squeue's formats take: from the script's name, odd characters replaced. */
export function jobName(script: string): string {
  const base = script.split(/[\\/]/).pop() ?? 'run';
  return `membit-${base.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 60)}`;
}

export function ranksPerNode(t: SlurmTarget): number {
  return t.ranksPerNode ?? (t.gpusPerNode && t.gpusPerNode > 0 ? t.gpusPerNode : 1);
}

/** sbatch's argv (before the script path): resources from the target, output into the run folder. */
export function sbatchArgv(t: SlurmTarget, o: { name: string; rundir: string; script: string }): string[] {
  const nodes = t.nodes ?? 1;
  const argv = ['sbatch', '--parsable', `--job-name=${o.name}`, `--output=${o.rundir}/slurm-%j.out`, `--nodes=${nodes}`];
  if ((t.launch ?? 'torchrun') === 'torchrun') argv.push('--ntasks-per-node=1', `--cpus-per-task=${(t.cpusPerTask ?? 1) * ranksPerNode(t)}`);
  else argv.push(`--ntasks-per-node=${ranksPerNode(t)}`, `--cpus-per-task=${t.cpusPerTask ?? 1}`);
  if (t.gpusPerNode) argv.push(`--gres=gpu:${t.gpusPerNode}`);
  if (t.partition) argv.push(`--partition=${t.partition}`);
  if (t.account) argv.push(`--account=${t.account}`);
  if (t.time) argv.push(`--time=${t.time}`);
  argv.push(o.script);
  return argv;
}

/**
 * The job script. `harness` is the harness argv for one rank (its --out holds {rank}).
 * torchrun: one task per node runs torchrun, which starts the node's ranks (rendezvous on the
 * first node). srun: one task per rank, RANK/LOCAL_RANK/WORLD_SIZE from SLURM's own variables.
 * The script's exit status is kept in the run folder: clusters without accounting have no sacct.
 */
export function jobScript(t: SlurmTarget, o: { harness: readonly [string, ...string[]]; cwd: string; rundir: string; env: Record<string, string> }): string {
  const q = shellQuote;
  const [python, , , ...rest] = o.harness;
  const lines = ['#!/bin/bash', '# Written by Membit: runs the profiling harness in every rank of this job.', 'set -u', `cd ${q(o.cwd)} || exit 97`];
  for (const [k, v] of Object.entries(o.env)) if (ENV_NAME.test(k)) lines.push(`export ${k}=${q(v)}`);
  lines.push(
    'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
    'port=$((20000 + SLURM_JOB_ID % 20000))',
  );
  const n = ranksPerNode(t);
  if ((t.launch ?? 'torchrun') === 'torchrun') {
    const run = [python, '-m', 'torch.distributed.run', '--nnodes', String(t.nodes ?? 1), '--nproc-per-node', String(n), '--max-restarts', '0', '-m', 'membit.profile', ...rest];
    lines.push(
      // One torchrun per node; the c10d rendezvous on the first node ties them into one job.
      `srun --kill-on-bad-exit=1 --ntasks-per-node=1 ${q(python)} ${run.slice(1, 9).map(q).join(' ')} --rdzv-backend c10d --rdzv-endpoint "$head:$port" --rdzv-id "$SLURM_JOB_ID" ${run.slice(9).map(q).join(' ')}`,
    );
  } else {
    const run = [python, '-m', 'membit.profile', ...rest];
    lines.push(
      'export MASTER_ADDR="$head" MASTER_PORT="$port"',
      `srun --kill-on-bad-exit=1 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; exec "$@"' membit-rank ${run.map(q).join(' ')}`,
    );
  }
  lines.push('code=$?', `echo "$code" > ${q(`${o.rundir}/exit`)}`, 'exit "$code"', '');
  return lines.join('\n');
}

/** What sbatch's refusal means, in words with the fix. */
export function explainRejection(stderr: string, t: SlurmTarget): string {
  const s = stderr.replace(/\s+/g, ' ').trim();
  const tail = s.replace(/^.*?sbatch: error: /, '').slice(0, 300);
  if (/invalid partition/i.test(s)) return `SLURM rejected the job: partition "${t.partition ?? '(default)'}" does not exist on ${t.host}; set partition in membit.targets to one sinfo lists`;
  if (/invalid account|account.*not.*(valid|permitted)/i.test(s)) return `SLURM rejected the job: account "${t.account ?? '(default)'}" is not valid for you on ${t.host}; set account to one of yours (sacctmgr show assoc user=$USER)`;
  if (/QOSMax|AssocMax|over.*limit|quota/i.test(s)) return `SLURM rejected the job: over a limit of your account or QOS (${tail}); wait for your other jobs or ask for a smaller job`;
  if (/time limit|TimeLimit/i.test(s)) return `SLURM rejected the job: time limit ${t.time ?? '(default)'} is over the partition's (${tail}); lower time in membit.targets`;
  if (/Requested node configuration is not available|gres|GPU/i.test(s)) return `SLURM rejected the job: no node offers what it asks (${tail}); check nodes, gpusPerNode and ranksPerNode against sinfo`;
  return `SLURM rejected the job: ${tail || 'sbatch failed'}`;
}

export type QueueState = { state: string; reason: string; nodes: string } | undefined;

/** One `squeue -h -j ID -o %T|%r|%N` line; undefined when the job has left the queue. */
export function parseSqueue(text: string): QueueState {
  const line = text.split('\n').map((l) => l.trim()).find(Boolean);
  if (!line) return undefined;
  const [state = '', reason = '', nodes = ''] = line.split('|');
  return { state, reason: reason === 'None' ? '' : reason, nodes };
}

/** JobState and ExitCode from `scontrol show job -o ID` (or `sacct -P -n -o State,ExitCode` as "STATE|a:b"). */
export function parseJobEnd(text: string): { state: string; exit: string | null } | undefined {
  const st = /JobState=(\S+)/.exec(text)?.[1];
  if (st !== undefined) return { state: st, exit: /ExitCode=(\S+)/.exec(text)?.[1] ?? null };
  const line = text.split('\n').map((l) => l.trim()).find((l) => l.includes('|'));
  if (!line) return undefined;
  const [state = '', exit = ''] = line.split('|');
  return { state: state.split(' ')[0] ?? state, exit: exit || null };
}

function insideRoot(root: string, p: string): string | undefined {
  const rel = relative(root, p);
  if (rel === '') return '';
  if (rel.startsWith('..') || isAbsolute(rel)) return undefined;
  return rel.split(sep).join('/');
}

export interface SlurmRunOptions {
  kernelsDir: string;
  signal?: AbortSignal;
}

/** One profiling job on a SLURM cluster; the same surface as ProfileRun (RunBase, plus cancel). */
export class SlurmRun extends RunBase {
  private readonly abort = new AbortController();
  private job: string | undefined;
  private cancelRequested = false;
  /** The job waited longer than pendingTimeoutS and was cancelled by us: a failure, not a cancel. */
  private timedOut = false;
  private readonly ssh: SshOptions;

  constructor(
    readonly target: SlurmTarget,
    readonly request: RunRequest,
    readonly options: SlurmRunOptions,
  ) {
    super();
    this.ssh = { ...(target.ssh ?? {}), host: target.host };
    if (options.signal?.aborted) this.cancel();
    options.signal?.addEventListener('abort', () => this.cancel(), { once: true });
  }

  /** scancel the job (its ranks get SIGTERM and write partial reports, which are still collected). */
  cancel(): void {
    if (this.cancelRequested) return;
    this.cancelRequested = true;
    this.log('cancelling');
    if (this.job) void this.scancel(this.job);
    else this.abort.abort();
  }

  private progress(event: ProgressEvent): void {
    this.emit({ type: 'progress', event });
  }

  private envArgv(argv: string[]): string[] {
    const env = Object.entries(this.target.env ?? {}).map(([k, v]) => `${k}=${v}`);
    return env.length ? ['env', ...env, ...argv] : argv;
  }

  private async exec(argv: string[], what: string, input?: string): Promise<string> {
    const r = await sshExec(this.ssh, this.envArgv(argv), { timeoutMs: 120_000, ...(input !== undefined ? { input } : {}) });
    if (r.code !== 0) throw execFailure(r, this.target.host, what);
    return r.stdout.toString('utf8');
  }

  private async scancel(job: string): Promise<void> {
    try {
      await this.exec(['scancel', job], 'scancel');
      this.log(`scancel ${job} sent`);
    } catch (e) {
      this.log(`could not cancel job ${job} on ${this.target.host}: ${e instanceof Error ? e.message : String(e)}`, true);
    }
  }

  protected async execute(): Promise<RunOutcome> {
    const base = { exitCode: null, stderrTail: [] as string[] };
    try {
      return await this.run();
    } catch (e) {
      if (this.cancelRequested && !this.job) return { ...base, state: 'cancelled' };
      const err = e instanceof RunError ? e : e instanceof UploadTooLargeError ? new RunError('upload', e.message) : new RunError('remote', e instanceof Error ? e.message : String(e));
      return { ...base, state: 'failed', message: err.message, error: err };
    }
  }

  private async run(): Promise<RunOutcome> {
    const t = this.target;
    const r = this.request;
    this.emit({ type: 'state', state: 'preparing', previous: 'idle', detail: `checking ${t.host}` });
    const workspace = resolve(r.workspace);
    const scriptRel = insideRoot(workspace, resolve(workspace, r.script));
    if (!scriptRel) throw new RunError('request', `the script must be inside the workspace folder ${workspace} to run on ${t.host}`);
    if (!existsSync(join(workspace, scriptRel))) throw new RunError('request', `script not found: ${join(workspace, scriptRel)}`);
    if (hasLever(r.variant, 'sdpa') || r.sites || r.overlays?.length) throw new RunError('request', 'SLURM jobs run the script as it is: variants with sdpa and site lists need a local or SSH target');
    const cwdRel = r.cwd ? insideRoot(workspace, resolve(workspace, r.cwd)) : '';
    if (cwdRel === undefined) throw new RunError('request', `the working folder must be inside the workspace folder ${workspace}`);
    const wsFiles = hashFiles(listWorkspaceFiles(workspace, DEFAULT_MAX_UPLOAD_BYTES));
    const pkgFiles = hashFiles(listPackageFiles(join(this.options.kernelsDir, 'membit'), 'membit'));
    const ws: LocalTree = { label: 'workspace', files: wsFiles, hash: treeHash(wsFiles) };
    const pkg: LocalTree = { label: 'membit package', files: pkgFiles, hash: treeHash(pkgFiles) };

    this.log(`checking ${t.host}: python ${t.python}, torch`);
    // The login node often has no GPU: its check is for Python, torch and the work folder only.
    const info = await preflight(this.ssh, { python: t.python, workdir: t.workdir, allowCpu: true, signal: this.abort.signal });
    this.emit({ type: 'preflight', info });
    this.emit({ type: 'state', state: 'uploading', previous: 'preparing' });
    const up = await uploadTrees(this.ssh, { python: info.python, workdir: info.workdir, trees: [ws, pkg], signal: this.abort.signal, onProgress: (p) => this.emit({ type: 'upload', progress: p }) });
    this.log(up.sentFiles ? `uploaded ${up.sentFiles} file(s) to ${info.workdir}` : `${t.host} already has these files`);
    if (this.cancelRequested) return { state: 'cancelled', exitCode: null, stderrTail: [] };

    const wsDir = up.dirs.get(ws.hash);
    const pkgDir = up.dirs.get(pkg.hash);
    if (wsDir === undefined || pkgDir === undefined) throw new Error('the upload did not say where the workspace and the kernels went');
    const id = `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
    const rundir = `${info.workdir}/runs/${id}`;
    const harness = harnessArgv({
      python: info.python,
      script: `${wsDir}/${scriptRel}`,
      scriptArgs: [...(r.args ?? [])],
      out: `${rundir}/report.ranks/rank{rank}.json`,
      variant: r.variant,
      steps: r.steps,
      warmup: r.warmup,
      root: wsDir,
    });
    const env = {
      ...(t.env ?? {}),
      ...(r.env ?? {}),
      PYTHONPATH: pkgDir,
      PYTHONUNBUFFERED: '1',
      MEMBIT_TARGET_KIND: 'ssh',
      MEMBIT_TARGET_HOST: t.host,
      MEMBIT_RUN_SET: id,
    };
    const script = jobScript(t, { harness, cwd: cwdRel ? `${wsDir}/${cwdRel}` : wsDir, rundir, env });
    await this.exec(['sh', '-c', 'mkdir -p "$1/report.ranks" && cat > "$1/job.sh"', 'sh', rundir], 'writing the job script', script);
    const sb = await sshExec(this.ssh, this.envArgv(sbatchArgv(t, { name: jobName(scriptRel), rundir, script: `${rundir}/job.sh` })), { timeoutMs: 120_000 });
    if (sb.code !== 0) {
      if (sb.code === 255 || sb.code === null) throw execFailure(sb, t.host, 'sbatch');
      const message = explainRejection(sb.stderr, t);
      return { state: 'failed', message, error: new RunError('remote', message), exitCode: sb.code, stderrTail: sb.stderr.split('\n').filter(Boolean).slice(-6) };
    }
    const job = sb.stdout.toString('utf8').trim().split(';')[0];
    if (!job || !/^\d+(_\d+)?$/.test(job)) throw new RunError('remote', `sbatch answered ${JSON.stringify(sb.stdout.toString('utf8').slice(0, 200))}, not a job id`);
    this.job = job;
    this.log(`submitted job ${job} on ${t.host}`, true);
    this.progress({ event: 'queued', job, host: t.host });
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cancel() may have run during the awaits above
    if (this.cancelRequested) await this.scancel(job);

    const end = await this.follow(job, rundir);
    this.emit({ type: 'state', state: 'collecting', previous: 'running' });
    const local = rankDir(r.out);
    mkdirSync(local, { recursive: true });
    const listing = await this.exec(['sh', '-c', 'ls -1 "$1" 2>/dev/null || true', 'sh', `${rundir}/report.ranks`], 'listing the reports');
    for (const name of listing.split('\n').map((s) => s.trim())) {
      if (!/^rank\d+\.json$/.test(name)) continue; // only what the harness writes; nothing else comes back
      const res = await sshExec(this.ssh, ['cat', `${rundir}/report.ranks/${name}`], { timeoutMs: 300_000 });
      if (res.code !== 0) {
        this.log(`could not fetch ${name}: ${res.stderr.trim().split('\n').pop() ?? ''}`, true);
        continue;
      }
      const tmp = join(local, `.${name}.${process.pid}.tmp`);
      writeFileSync(tmp, res.stdout);
      renameSync(tmp, join(local, name));
    }
    const nodes = t.nodes ?? 1;
    const collected = collectRunSet({
      file: r.out,
      id,
      launcher: { kind: 'torchrun', nprocPerNode: ranksPerNode(t), nnodes: nodes },
      script: scriptRel,
      argv: [...(r.args ?? [])],
      variant: r.variant ?? 'baseline',
      exitCode: end.exit,
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cancel() and follow() set these during the awaits above
      cancelled: this.cancelRequested || this.timedOut,
      stderrTail: end.tail,
      kind: 'slurm',
      slurm: { job: this.job, host: t.host, state: end.state },
      expectAll: true,
    });
    const common = { exitCode: end.exit, stderrTail: end.tail, report: r.out };
    if (this.timedOut) return { ...common, state: 'failed', message: end.message ?? `job ${this.job} was cancelled after waiting in the queue` };
    if (collected.status === 'cancelled') return { ...common, state: 'cancelled', status: 'cancelled' };
    if (collected.status === 'ok') return { ...common, state: 'done', status: 'ok' };
    const msg = end.message ?? collected.message ?? `job ${this.job} ended ${end.state ?? 'unknown'}`;
    const withState = end.message || !end.state || end.state === 'COMPLETED' ? msg : `job ${this.job} ${end.state}: ${msg}`;
    return { ...common, state: 'failed', ...(collected.firstStatus ? { status: collected.firstStatus } : {}), message: withState };
  }

  /** Polls the queue until the job has left it; streams the output file's progress lines meanwhile. */
  private async follow(job: string, rundir: string): Promise<{ state: string | null; exit: number | null; tail: string[]; message?: string }> {
    const t = this.target;
    const pollMs = (t.pollS ?? 3) * 1000;
    const pendingLimit = (t.pendingTimeoutS ?? 600) * 1000;
    const t0 = Date.now();
    let lastReason = '';
    let running = false;
    let offset = 0;
    const split = new LineSplitter();
    const tail: string[] = [];
    let message: string | undefined;
    const readOutput = async () => {
      const res = await sshExec(this.ssh, ['sh', '-c', 'f="$1/slurm-$2.out"; [ -f "$f" ] && tail -c +"$3" "$f" || true', 'sh', rundir, job, String(offset + 1)], { timeoutMs: 60_000 });
      if (res.code !== 0) return;
      offset += res.stdout.length;
      for (const line of split.push(res.stdout.toString('utf8'))) {
        const ev = parseProgressLine(line);
        if (ev) this.progress(ev);
        else {
          tail.push(line);
          if (tail.length > 40) tail.shift();
          this.emit({ type: 'output', line, stream: 'stderr' });
        }
      }
    };
    for (;;) {
      const q = await sshExec(this.ssh, this.envArgv(['squeue', '-h', '-j', job, '-o', '%T|%r|%N']), { timeoutMs: 60_000 });
      if (q.code === 255 || q.code === null) {
        // The login node went away mid-job: the job itself goes on; say so rather than cancel it.
        throw new RunError('lost', `lost the connection to ${t.host} while following job ${job}; it may still run (squeue -j ${job})`);
      }
      const st = q.code === 0 ? parseSqueue(q.stdout.toString('utf8')) : undefined;
      if (!st || ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'PREEMPTED', 'BOOT_FAIL', 'DEADLINE'].includes(st.state)) break;
      if (st.state === 'PENDING' || st.state === 'CONFIGURING') {
        if (st.reason !== lastReason) {
          lastReason = st.reason;
          this.progress({ event: 'queued', job, state: st.state, reason: st.reason, host: t.host });
          this.log(`job ${job} pending in queue${st.reason ? ` (${st.reason})` : ''}`);
        }
        if (!this.cancelRequested && !this.timedOut && Date.now() - t0 > pendingLimit) {
          message = `job ${job} was still pending after ${Math.round(pendingLimit / 1000)} s${lastReason ? ` (reason: ${lastReason})` : ''}; Membit cancelled it. Raise pendingTimeoutS, or ask for fewer nodes/GPUs or another partition`;
          this.timedOut = true;
          await this.scancel(job);
        }
      } else if (!running) {
        running = true;
        this.emit({ type: 'state', state: 'running', previous: 'uploading', detail: `job ${job} on ${st.nodes}` });
        this.log(`job ${job} running on ${st.nodes}`, true);
      }
      if (running) await readOutput();
      await new Promise((res) => setTimeout(res, pollMs));
    }
    await readOutput();
    for (const line of split.flush()) tail.push(line);
    const sc = await sshExec(this.ssh, this.envArgv(['scontrol', 'show', 'job', '-o', job]), { timeoutMs: 60_000 });
    const fromScontrol = sc.code === 0 ? parseJobEnd(sc.stdout.toString('utf8')) : undefined;
    const fromSacct = fromScontrol ? undefined : await sshExec(this.ssh, this.envArgv(['sacct', '-n', '-P', '-X', '-j', job, '-o', 'State,ExitCode']), { timeoutMs: 60_000 }).then((r) => (r.code === 0 ? parseJobEnd(r.stdout.toString('utf8')) : undefined));
    const state = (fromScontrol ?? fromSacct)?.state ?? null;
    const ex = await sshExec(this.ssh, ['cat', `${rundir}/exit`], { timeoutMs: 60_000 });
    const exit = ex.code === 0 && /^\d+$/.test(ex.stdout.toString('utf8').trim()) ? Number(ex.stdout.toString('utf8').trim()) : null;
    return { state, exit, tail, ...(message ? { message } : {}) };
  }
}

export function createSlurmRun(target: SlurmTarget, request: RunRequest, options: SlurmRunOptions): SlurmRun {
  return new SlurmRun(target, request, options);
}

