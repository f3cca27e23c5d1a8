/**
 * One profiling run on a target, local or over SSH, as a state machine with events.
 * Both kinds build the same harness argv (harnessArgv) and differ only in what is put
 * around it: a local child process group, or an upload plus a remote supervisor
 * reached through `ssh`. The UI and the CLI drive runs only through this class.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { explainFailure } from './errors';
import { DEFAULT_MAX_UPLOAD_BYTES, hashFiles, listPackageFiles, listWorkspaceFiles, treeHash, UploadTooLargeError } from './files';
import { formatBytes } from '../units';
import { harnessArgv, LineSplitter, parseProgressLine, PROGRESS_TOKEN_ENV, type ProgressEvent } from './harness';
import { runLocal } from './local';
import { describeSearch, findSdpaOverlays, type OverlayArg, type OverlayFile, writeOverlays } from './overlays';
import { fetchReport, killRemoteGroup, preflight, uploadTrees, type LocalTree, type RemoteInfo, type UploadProgress } from './remote';
import { SUPERVISOR_PY } from './remoteScripts';
import { isFinal, RunStateMachine, type FinalRunState, type RunState } from './runState';
import { classifySshFailure, killSoftly, RunError, spawnError, sshArgv, type SshOptions } from './ssh';
import type { Variant } from '../settings';
import { hasLever } from './variants';
import { collectRunSet } from './runSetFile';
import { rankOutPattern, torchrunArgv, type Launcher } from './torchrun';
import { RunBase } from './runBase';
import { itemAt } from '../arrays';

export type RunTarget = LocalTarget | SshTarget;

export interface LocalTarget {
  kind: 'local';
  python: string;
}

export interface SshTarget {
  kind: 'ssh';
  /** Host alias (or user@host) as ssh takes it. */
  host: string;
  /** Python on the target; a leading ~/ is the remote home. */
  python: string;
  /** Remote folder for the upload cache and run folders; ~/ allowed. */
  workdir: string;
  /** Extra environment for the run on the target. */
  env?: Record<string, string>;
  /** How to call ssh beyond the host (config file, extra options, timeouts). */
  ssh?: Omit<SshOptions, 'host'>;
}

/** The name a target has in run file names and messages: "local" or the host alias. */
export function targetLabel(t: RunTarget): string {
  return t.kind === 'local' ? 'local' : t.host;
}

/** What to run. Paths are local; an SSH run maps them into its copy of the workspace. */
export interface RunRequest {
  /** The workspace folder: report paths are relative to it; SSH runs upload it. */
  workspace: string;
  /** The script, absolute or relative to the workspace. */
  script: string;
  args?: readonly string[];
  /** Working folder, absolute or relative to the workspace; default the workspace. */
  cwd?: string | undefined;
  env?: Record<string, string>;
  variant?: Variant | undefined;
  steps?: number;
  warmup?: number;
  /** A local JSON file of file:line sites to convert (the harness's --sites). */
  sites?: string;
  /** Where the report goes locally (the run history file). */
  out: string;
  /** More harness flags, placed before `--` (e.g. `--find-max-batch`, `--batch-arg`, `--max`). */
  harnessArgs?: readonly string[] | undefined;
  /**
   * Files to run rewritten (`--overlay`). Default: for a variant with the sdpa lever, the
   * advisor's SDPA rewrite of the script and the workspace files it finds (findSdpaOverlays);
   * none otherwise.
   */
  overlays?: readonly OverlayFile[];
  /**
   * Launch the script under torchrun (local targets): every rank runs the harness, `out` becomes
   * the run-set file and the ranks' reports go beside it (torchrun.ts).
   */
  launcher?: Launcher;
}

/** harnessArgv plus the request's extra harness flags, which belong before the script's `--`. */
function withHarnessArgs(argv: [string, ...string[]], extra: readonly string[] | undefined): [string, ...string[]] {
  if (!extra?.length) return argv;
  // The python executable stays first; the extra arguments go before the script's `--`.
  const [python, ...rest] = argv;
  const at = rest.indexOf('--');
  return [python, ...rest.slice(0, at), ...extra, ...rest.slice(at)];
}

export interface RunOptions {
  /** The folder holding the `membit` package (dist/kernels in the extension). */
  kernelsDir: string;
  /** Aborting it cancels the run, like cancel(). */
  signal?: AbortSignal;
  /** SSH: run even when the target has no CUDA GPU (default: fail with code no-cuda). */
  allowCpu?: boolean;
  /** SSH: workspace upload cap in bytes (default 200 MiB). */
  maxUploadBytes?: number;
  /** SSH: the target stops the run when it has not heard from us for this long (default 120 s). */
  idleTimeoutS?: number;
  /** Seconds between SIGTERM and SIGKILL when a run is stopped (default 10). */
  graceS?: number;
  /**
   * SSH: what an earlier run's preflight found on this same target (outcome.remote);
   * runs back to back (compare variants) then skip the check and its torch import.
   */
  remoteInfo?: RemoteInfo | undefined;
}

export type RunEvent =
  | { type: 'state'; state: RunState; previous: RunState; detail?: string | undefined }
  /** Membit's own account of what it is doing, for the output channel. */
  | { type: 'log'; message: string; /** Worth showing even where logs are not (what the run changed). */ notice?: boolean }
  /** A line the script (or ssh) printed; progress lines are not repeated here. */
  | { type: 'output'; line: string; stream: 'stdout' | 'stderr' }
  | { type: 'progress'; event: ProgressEvent }
  | { type: 'preflight'; info: RemoteInfo }
  | { type: 'upload'; progress: UploadProgress };

export interface RunOutcome {
  state: FinalRunState;
  /** The harness's status from the report, when one came back. */
  status?: 'ok' | 'oom' | 'error' | 'cancelled' | undefined;
  /** The local report file, when the run left one (partial ones included). */
  report?: string | undefined;
  /** Why it failed, in words a user can act on (failed runs only). */
  message?: string | undefined;
  /** The failure's code when it happened before or around the script (ssh, preflight, upload). */
  error?: RunError;
  exitCode: number | null;
  /** The last stderr lines of the run (a traceback's tail). */
  stderrTail: string[];
  /** SSH runs: what the preflight found. */
  remote?: RemoteInfo;
  /** SSH runs: what the upload had to send. */
  upload?: UploadProgress | undefined;
}

const TAIL_LINES = 40;
type HarnessStatus = NonNullable<RunOutcome['status']>;

/** Reads the status and error text out of a report; tolerant of a partial or odd file. */
function reportFacts(text: string): { status: HarnessStatus | undefined; error: string | undefined } | undefined {
  try {
    const doc = JSON.parse(text) as { run?: { status?: unknown; error?: unknown } };
    const st = doc.run?.status;
    return {
      status: st === 'ok' || st === 'oom' || st === 'error' || st === 'cancelled' ? st : undefined,
      error: typeof doc.run?.error === 'string' ? doc.run.error : undefined,
    };
  } catch {
    return undefined;
  }
}

/** A path relative to root when inside it (posix separators), else as given. */
function relativeOr(root: string, p: string): string {
  return insideRoot(resolve(root), resolve(p)) ?? p;
}

/** A path inside root as a relative `/` path; undefined when it is outside. */
function insideRoot(root: string, p: string): string | undefined {
  const rel = relative(root, p);
  if (rel === '') return '';
  if (rel.startsWith('..') || isAbsolute(rel)) return undefined;
  return rel.split(sep).join('/');
}

export class ProfileRun extends RunBase {
  private readonly machine = new RunStateMachine();
  private readonly abort = new AbortController();
  /** What cancel() must do beyond aborting, in the current step (e.g. stop the remote group). */
  private onCancel: (() => void) | undefined;
  private cancelRequested = false;
  /** This run's progress token: lines without it are the script's output, whatever they say. */
  private readonly token = randomBytes(12).toString('hex');

  constructor(
    readonly target: RunTarget,
    readonly request: RunRequest,
    readonly options: RunOptions,
  ) {
    super();
    this.machine.onChange((state, previous, detail) => this.emit({ type: 'state', state, previous, detail }));
    if (options.signal?.aborted) this.cancel();
    options.signal?.addEventListener('abort', () => this.cancel(), { once: true });
  }

  get state(): RunState {
    return this.machine.state;
  }

  /**
   * Stops the run: ssh calls in flight are ended; a running script gets SIGTERM to its
   * process group (it writes a partial report, which is still collected), SIGKILL
   * after the grace period.
   */
  cancel(): void {
    if (this.cancelRequested || isFinal(this.machine.state)) return;
    this.cancelRequested = true;
    this.emit({ type: 'log', message: 'cancelling' });
    this.abort.abort();
    this.onCancel?.();
  }

  protected async execute(): Promise<RunOutcome> {
    const base = { exitCode: null, stderrTail: [] as string[] };
    try {
      if (this.cancelRequested) return this.end({ ...base, state: 'cancelled' });
      return this.target.kind === 'local' ? await this.runLocalTarget(this.target) : await this.runSshTarget(this.target);
    } catch (e) {
      if (this.cancelRequested) return this.end({ ...base, state: 'cancelled' });
      const err =
        e instanceof RunError
          ? e
          : e instanceof UploadTooLargeError
            ? new RunError('upload', e.message)
            : new RunError('remote', e instanceof Error ? e.message : String(e));
      for (const line of err.detail) this.emit({ type: 'output', line, stream: 'stderr' });
      return this.end({ ...base, state: 'failed', message: err.message, error: err });
    }
  }

  private end(o: RunOutcome): RunOutcome {
    if (!isFinal(this.machine.state)) this.machine.to(o.state, o.message);
    return o;
  }

  /** done, failed or cancelled from what the harness left, with the explanation. */
  private settle(o: { python: string; where: string; exitCode: number | null; stderrTail: string[]; report?: string | undefined; reportText?: string | undefined }): RunOutcome {
    const facts = o.reportText !== undefined ? reportFacts(o.reportText) : undefined;
    const status = facts?.status;
    const common = { exitCode: o.exitCode, stderrTail: o.stderrTail, report: o.report, status };
    if (this.cancelRequested || status === 'cancelled') return this.end({ ...common, state: 'cancelled' });
    if (status === 'ok' && o.exitCode === 0) return this.end({ ...common, state: 'done' });
    // The report's own error text ends with the exception: add it when stderr does not show it.
    const errLines = (facts?.error ?? '').split('\n').filter((l) => l.trim());
    const lastErr = errLines[errLines.length - 1]?.trim();
    const tail = lastErr && !o.stderrTail.some((l) => l.trim() === lastErr) ? [...o.stderrTail, ...errLines.slice(-6)] : o.stderrTail;
    const message = explainFailure({ python: o.python, where: o.where, exitCode: o.exitCode, stderrTail: tail, noReport: o.reportText === undefined });
    return this.end({ ...common, state: 'failed', message });
  }

  // -- local ------------------------------------------------------------------------------

  private async runLocalTarget(t: LocalTarget): Promise<RunOutcome> {
    const r = this.request;
    this.machine.to('preparing');
    const script = resolve(r.workspace, r.script);
    if (!existsSync(script)) throw new RunError('request', `script not found: ${script}`);
    mkdirSync(dirname(r.out), { recursive: true });
    const files = await this.overlayFiles(script);
    const written = files.length ? writeOverlays(files) : undefined;
    try {
      const overlays = written ? files.map((f, i) => ({ orig: f.orig, replacement: join(written.dir, itemAt(written.names, i)) })) : [];
      return await this.runLocalArgv(t, script, overlays);
    } finally {
      written?.dispose();
    }
  }

  /**
   * The overlays this run needs: the request's, or for the sdpa lever the advisor's rewrite
   * of the files it finds. Logged either way, so the output says what ran.
   */
  private async overlayFiles(script: string): Promise<readonly OverlayFile[]> {
    const r = this.request;
    if (r.overlays) return r.overlays;
    if (!hasLever(r.variant, 'sdpa')) return [];
    const found = await findSdpaOverlays(script, r.workspace);
    this.log(describeSearch(found, resolve(r.workspace)), true);
    return found.overlays;
  }

  private async runLocalArgv(t: LocalTarget, script: string, overlays: readonly OverlayArg[]): Promise<RunOutcome> {
    const r = this.request;
    const runSetId = `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
    const harness = withHarnessArgs(harnessArgv({
      python: t.python,
      script,
      scriptArgs: [...(r.args ?? [])],
      out: r.launcher ? rankOutPattern(r.out) : r.out,
      variant: r.variant,
      steps: r.steps,
      warmup: r.warmup,
      root: r.workspace,
      sites: r.sites,
      overlays,
    }), r.harnessArgs);
    const argv = r.launcher ? torchrunArgv(r.launcher, harness, runSetId) : harness;
    const env = {
      ...process.env,
      ...(r.env ?? {}),
      PYTHONPATH: [this.options.kernelsDir, process.env['PYTHONPATH']].filter(Boolean).join(delimiter),
      PYTHONUNBUFFERED: '1',
      MEMBIT_TARGET_KIND: 'local',
      [PROGRESS_TOKEN_ENV]: this.token,
      // The harness writes the partial report itself this long after a cancel, before our SIGKILL.
      MEMBIT_STOP_GRACE_S: '5',
      ...(r.launcher ? { MEMBIT_RUN_SET: runSetId } : {}),
    };
    if (this.cancelRequested) return this.end({ state: 'cancelled', exitCode: null, stderrTail: [] });
    this.machine.to('running');
    this.log(`running ${argv.map((a) => JSON.stringify(a)).join(' ')}`);
    let result;
    try {
      result = await runLocal({
        argv,
        cwd: r.cwd ? resolve(r.workspace, r.cwd) : r.workspace,
        env,
        signal: this.abort.signal,
        token: this.token,
        onOutput: (line, stream) => this.emit({ type: 'output', line, stream }),
        onProgress: (event) => this.emit({ type: 'progress', event }),
      });
    } catch (e) {
      const message = explainFailure({ python: t.python, where: 'local', exitCode: null, stderrTail: [], spawnError: String(e) });
      return this.end({ state: 'failed', message, exitCode: null, stderrTail: [] });
    }
    this.machine.to('collecting');
    if (r.launcher) {
      const set = collectRunSet({ file: r.out, id: runSetId, launcher: r.launcher, script: relativeOr(r.workspace, script), argv: [...(r.args ?? [])], variant: r.variant ?? 'baseline', exitCode: result.exitCode, cancelled: this.cancelRequested, stderrTail: result.stderrTail });
      const common = { exitCode: result.exitCode, stderrTail: result.stderrTail, report: r.out };
      if (set.status === 'cancelled') return this.end({ ...common, state: 'cancelled', status: 'cancelled' });
      if (set.status === 'ok') return this.end({ ...common, state: 'done', status: 'ok' });
      return this.end({ ...common, state: 'failed', status: set.firstStatus, message: set.message ?? undefined });
    }
    const report = existsSync(r.out) ? r.out : undefined;
    return this.settle({
      python: t.python,
      where: 'local',
      exitCode: result.exitCode,
      stderrTail: result.stderrTail,
      report,
      reportText: report ? readFileSync(report, 'utf8') : undefined,
    });
  }

  // -- ssh --------------------------------------------------------------------------------

  private async runSshTarget(t: SshTarget): Promise<RunOutcome> {
    const r = this.request;
    const ssh: SshOptions = { ...(t.ssh ?? {}), host: t.host };
    this.machine.to('preparing', `checking ${t.host}`);
    if (r.launcher) throw new RunError('request', `torchrun launches run on the local machine: run membit profile --nproc-per-node on ${t.host} itself, or use a SLURM target for a cluster`);

    // Local checks first: they cost no connection and fail fastest.
    const workspace = resolve(r.workspace);
    const scriptRel = insideRoot(workspace, resolve(workspace, r.script));
    if (scriptRel === undefined || scriptRel === '') throw new RunError('request', `the script must be inside the workspace folder ${workspace} to run on ${t.host}`);
    if (!existsSync(join(workspace, scriptRel))) throw new RunError('request', `script not found: ${join(workspace, scriptRel)}`);
    const cwdRel = r.cwd ? insideRoot(workspace, resolve(workspace, r.cwd)) : '';
    if (cwdRel === undefined) throw new RunError('request', `the working folder must be inside the workspace folder ${workspace} to run on ${t.host}`);
    const sites = r.sites ? sitesForRemote(readFileSync(r.sites, 'utf8'), workspace) : undefined;
    const wsFiles = hashFiles(listWorkspaceFiles(workspace, this.options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES));
    if (!wsFiles.some((f) => f.path === scriptRel)) {
      throw new RunError('request', `${scriptRel} is not uploaded (ignored by .gitignore?): a script must be part of the workspace upload to run on ${t.host}`);
    }
    const pkgDir = join(this.options.kernelsDir, 'membit');
    if (!existsSync(join(pkgDir, '__init__.py'))) throw new RunError('request', `the membit package is missing from ${this.options.kernelsDir}; rebuild the extension`);
    const pkgFiles = hashFiles(listPackageFiles(pkgDir, 'membit'));
    const ws: LocalTree = { label: 'workspace', files: wsFiles, hash: treeHash(wsFiles) };
    const pkg: LocalTree = { label: 'membit package', files: pkgFiles, hash: treeHash(pkgFiles) };
    // Rewritten files travel as a tree of their own, content-addressed like the others.
    const uploaded = new Set(wsFiles.map((f) => f.path));
    const overlayFiles = (await this.overlayFiles(join(workspace, scriptRel))).filter((f) => {
      const rel = insideRoot(workspace, resolve(f.orig));
      if (rel !== undefined && uploaded.has(rel)) return true;
      this.log(`${f.orig} is not part of the upload to ${t.host}: it runs unchanged there`, true);
      return false;
    });
    const written = overlayFiles.length ? writeOverlays(overlayFiles) : undefined;
    try {
      return await this.runSshUpload(t, ssh, { workspace, scriptRel, cwdRel, sites, ws, pkg, overlayFiles, written });
    } finally {
      written?.dispose();
    }
  }

  private async runSshUpload(
    t: SshTarget,
    ssh: SshOptions,
    prep: {
      workspace: string;
      scriptRel: string;
      cwdRel: string;
      sites: string | undefined;
      ws: LocalTree;
      pkg: LocalTree;
      overlayFiles: readonly OverlayFile[];
      written: { dir: string; names: string[] } | undefined;
    },
  ): Promise<RunOutcome> {
    const r = this.request;
    const signal = this.abort.signal;
    const { workspace, scriptRel, cwdRel, sites, ws, pkg, overlayFiles, written } = prep;
    const ovFiles = written
      ? hashFiles(written.names.map((name) => ({ path: name, abs: join(written.dir, name), size: statSync(join(written.dir, name)).size, executable: false })))
      : [];
    const ov: LocalTree | undefined = written ? { label: 'rewritten files', files: ovFiles, hash: treeHash(ovFiles) } : undefined;

    const reuse = this.options.remoteInfo;
    if (!reuse) this.log(`checking ${t.host}: python ${t.python}, torch, CUDA`);
    const info = reuse ?? (await preflight(ssh, { python: t.python, workdir: t.workdir, allowCpu: this.options.allowCpu, signal }));
    this.emit({ type: 'preflight', info });
    this.log(
      `${t.host}: Python ${info.pythonVersion ?? '?'}, torch ${info.torch ?? '?'}, ${info.cuda ? `CUDA on ${info.gpus.join(', ')}` : 'no CUDA GPU: running on CPU'}; work folder ${info.workdir}`,
    );

    this.machine.to('uploading');
    let upload: UploadProgress | undefined;
    const up = await uploadTrees(ssh, {
      python: info.python,
      workdir: info.workdir,
      trees: ov ? [ws, pkg, ov] : [ws, pkg],
      signal,
      onProgress: (p) => {
        upload = p;
        this.emit({ type: 'upload', progress: p });
      },
    });
    this.log(up.sentFiles ? `uploaded ${up.sentFiles} new or changed file(s), ${formatBytes(up.sentBytes)}` : `${t.host} already has these files`);
    if (this.cancelRequested) return this.end({ state: 'cancelled', exitCode: null, stderrTail: [], remote: info, upload });

    this.machine.to('running');
    const wsDir = up.dirs.get(ws.hash);
    const ovDir = ov ? up.dirs.get(ov.hash) : undefined;
    if (wsDir === undefined || (ov && ovDir === undefined)) throw new Error('the upload did not say where each tree went');
    // Each overlay file is inside the workspace upload (filtered so above) and written into the overlay tree.
    const overlays = overlayFiles.map((f, i) => {
      const rel = insideRoot(workspace, resolve(f.orig));
      const name = written?.names[i];
      if (rel === undefined || ovDir === undefined || name === undefined) throw new Error(`${f.orig} has no uploaded copy to run in its place`);
      return { orig: `${wsDir}/${rel}`, replacement: `${ovDir}/${name}` };
    });
    const rundir = `${info.workdir}/runs/${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
    const argv = withHarnessArgs(harnessArgv({
      python: info.python,
      script: `${wsDir}/${scriptRel}`,
      scriptArgs: [...(r.args ?? [])],
      out: `${rundir}/report.json`,
      variant: r.variant,
      steps: r.steps,
      warmup: r.warmup,
      root: wsDir,
      sites: sites !== undefined ? `${rundir}/sites.json` : undefined,
      overlays,
    }), r.harnessArgs);
    const config = {
      rundir,
      cwd: cwdRel ? `${wsDir}/${cwdRel}` : wsDir,
      argv,
      env: {
        ...(t.env ?? {}),
        ...(r.env ?? {}),
        PYTHONUNBUFFERED: '1',
        MEMBIT_TARGET_KIND: 'ssh',
        MEMBIT_TARGET_HOST: t.host,
        [PROGRESS_TOKEN_ENV]: this.token,
        MEMBIT_STOP_GRACE_S: String(Math.max(1, (this.options.graceS ?? 10) / 2)),
      },
      token: this.token,
      pythonpath: up.dirs.get(pkg.hash),
      sites: sites ?? null,
      trees: ov ? [ws.hash, pkg.hash, ov.hash] : [ws.hash, pkg.hash],
      idle_s: this.options.idleTimeoutS ?? 120,
      grace_s: this.options.graceS ?? 10,
    };
    const res = await this.supervise(ssh, [info.python, '-c', SUPERVISOR_PY, JSON.stringify(config)], config.grace_s);
    const extra = { remote: info, upload };

    // 255 with ssh's own words: the connection failed, not the script.
    const sshFailure = res.code === 255 || res.code === null ? classifySshFailure(res.stderr, t.host) : undefined;
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cancel() may have run during the awaits above
    if (sshFailure && !this.cancelRequested) {
      const msg =
        sshFailure.code === 'lost' || sshFailure.code === 'timeout'
          ? `${sshFailure.message} during the run; Membit's supervisor on ${t.host} stops the script when the connection drops`
          : sshFailure.message;
      return this.end({ state: 'failed', message: msg, error: new RunError(sshFailure.code, msg, sshFailure.detail), exitCode: res.code, stderrTail: res.stderrTail, ...extra });
    }

    this.machine.to('collecting');
    let text: string | undefined;
    try {
      // Not tied to the abort signal: a cancelled run's partial report is still wanted.
      text = (await fetchReport(ssh, rundir)).toString('utf8');
    } catch (e) {
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- cancel() may have run during the awaits above
      if (this.cancelRequested) return this.end({ state: 'cancelled', exitCode: res.code, stderrTail: res.stderrTail, ...extra });
      const settled = this.settle({ python: info.python, where: t.host, exitCode: res.code, stderrTail: res.stderrTail });
      return { ...settled, ...extra, message: `${settled.message ?? ''} (${e instanceof Error ? e.message : String(e)})`.trim() };
    }
    if (!reportFacts(text)) {
      const message = `the report from ${t.host} is not valid JSON`;
      return this.end({ state: 'failed', message, error: new RunError('report', message), exitCode: res.code, stderrTail: res.stderrTail, ...extra });
    }
    mkdirSync(dirname(r.out), { recursive: true });
    const tmp = `${r.out}.${process.pid}.tmp`;
    writeFileSync(tmp, text);
    renameSync(tmp, r.out);
    return { ...this.settle({ python: info.python, where: t.host, exitCode: res.code, stderrTail: res.stderrTail, report: r.out, reportText: text }), ...extra };
  }

  /**
   * Runs the supervisor over one ssh connection: streams its output, keeps its stdin
   * alive with a heartbeat, and on cancel stops the remote group by id (a second ssh
   * call) and tells the supervisor through stdin, then ends the connection if it
   * lingers.
   */
  private supervise(ssh: SshOptions, remoteArgv: string[], graceS: number): Promise<{ code: number | null; stderr: string; stderrTail: string[] }> {
    const [cmd, ...args] = sshArgv(ssh, remoteArgv);
    return new Promise((resolvePromise, reject) => {
      // Its own process group: a Ctrl-C meant for the CLI must reach us (we then cancel
      // and still fetch the partial report), not kill ssh under the run. If we die, ssh
      // sees its stdin close and the remote supervisor stops the run.
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      const stderrTail: string[] = [];
      let stderrAll = '';
      let pgid: number | undefined;
      let lingerTimer: NodeJS.Timeout | undefined;
      const split = { stdout: new LineSplitter(), stderr: new LineSplitter() };
      const onLines = (stream: 'stdout' | 'stderr', lines: string[]) => {
        for (const line of lines) {
          const ev = stream === 'stderr' ? parseProgressLine(line, this.token) : undefined;
          if (ev) {
            if (ev.event === 'remote' && typeof ev['pgid'] === 'number') pgid = ev['pgid'];
            this.emit({ type: 'progress', event: ev });
            continue;
          }
          if (stream === 'stderr') {
            stderrTail.push(line);
            if (stderrTail.length > TAIL_LINES) stderrTail.shift();
          }
          this.emit({ type: 'output', line, stream });
        }
      };
      child.stdout.setEncoding('utf8').on('data', (d: string) => onLines('stdout', split.stdout.push(d)));
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderrAll = (stderrAll + d).slice(-64_000);
        onLines('stderr', split.stderr.push(d));
      });
      child.stdin.on('error', () => undefined);
      const beat = setInterval(() => child.stdin.writable && child.stdin.write('h\n'), 5_000);
      const stop = () => {
        if (child.stdin.writable) child.stdin.end('c\n');
        if (pgid !== undefined) {
          this.log(`stopping process group ${pgid} on ${ssh.host}`);
          killRemoteGroup(ssh, pgid).catch((e: unknown) => this.log(`could not reach ${ssh.host} to stop the run: ${e instanceof Error ? e.message : String(e)}`));
        }
        // The supervisor ends the connection once the group is gone; if it cannot, we do.
        lingerTimer = setTimeout(() => killSoftly(child), (graceS + 20) * 1000);
      };
      this.onCancel = stop;
      if (this.cancelRequested) stop();
      child.on('error', (e) => {
        clearInterval(beat);
        this.onCancel = undefined;
        reject(spawnError(e, cmd));
      });
      child.on('close', (code) => {
        clearInterval(beat);
        if (lingerTimer) clearTimeout(lingerTimer);
        this.onCancel = undefined;
        onLines('stdout', split.stdout.flush());
        onLines('stderr', split.stderr.flush());
        resolvePromise({ code, stderr: stderrAll, stderrTail });
      });
    });
  }
}

/**
 * A sites file for the target: absolute local paths inside the workspace become
 * relative, which the harness resolves against its --root (the remote copy).
 */
export function sitesForRemote(text: string, workspace: string): string {
  const doc = JSON.parse(text) as unknown;
  const fix = (items: unknown) =>
    Array.isArray(items)
      ? items.map((it: unknown) => {
          if (!it || typeof it !== 'object') return it;
          const file = (it as { file?: unknown }).file;
          if (typeof file !== 'string' || !isAbsolute(file)) return it;
          const rel = insideRoot(workspace, file);
          return rel === undefined ? it : { ...it, file: rel };
        })
      : items;
  if (Array.isArray(doc)) return JSON.stringify(fix(doc));
  if (doc && typeof doc === 'object' && 'sites' in doc) return JSON.stringify({ ...(doc as object), sites: fix(doc.sites) });
  return text;
}

/** A run, not started yet: subscribe with onEvent(), then await start(). */
export function createRun(target: RunTarget, request: RunRequest, options: RunOptions): ProfileRun {
  return new ProfileRun(target, request, options);
}
