import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as vscode from 'vscode';
import { Commands } from '../../commands';
import { splitArgs } from '../../core/run/argsplit';
import { formatBytes } from '../../core/units';
import { shown } from '../../core/untrusted';
import { runFileName } from '../../core/run/history';
import type { RemoteInfo } from '../../core/run/remote';
import { createRun, targetLabel, type RunOutcome, type RunRequest, type RunTarget } from '../../core/run/target';
import { canonicalVariant, VariantError } from '../../core/run/variants';
import type { RunSetting, Variant } from '../../core/settings';
import { createSlurmRun } from '../../core/run/slurm';
import { checkLauncher, LauncherError, type Launcher } from '../../core/run/torchrun';
import { CpuWithoutLimit, describeMaxBatch, runMaxBatch, type MaxBatchDoc } from '../../core/run/maxBatch';
import { resolveLocalPython } from './python';
import type { Features } from '../commandTable';
import type { Log } from '../log';
import { isBaseline, type ReportStore } from '../report/store';
import { getSettings } from '../settings';
import type { TargetSelection } from './targets';
import { variantItems } from './variantPicker';
import type { LocalGpus } from '../gpus';
import type { GpuSampler } from '../../native';
import { notify } from '../notify';

/** What to run, as the palette flow settles it. */
export interface RunPlan {
  script: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  steps: number;
  warmup: number;
  variants: Variant[];
  /** torchrun: every rank under the harness; the run's report is then a run set. */
  launcher?: Launcher;
}

const LAST_ARGS_KEY = 'membit.lastArgs';

/** Variant names from settings or a caller, canonical; a bad one stops with the reason. */
function checkedVariants(names: readonly string[], where: string): Variant[] {
  return names.map((n) => {
    try {
      return canonicalVariant(n);
    } catch (e) {
      if (e instanceof VariantError) throw new Error(`${where}: ${e.message}`, { cause: e });
      throw e;
    }
  });
}

/** A launcher from settings or a caller, checked; a bad one stops with the field and the fix. */
function checkedLauncher(l: unknown, where: string): Launcher {
  try {
    return checkLauncher(l);
  } catch (e) {
    if (e instanceof LauncherError) throw new Error(`${where}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** Live memory during a run, for the status bar (the report feature owns the item). */
export type LiveMemory = (text: string | undefined) => void;

/**
 * The commands that run the harness: Profile Training Run, Profile and Compare
 * Variants, Find Max Batch Size. Each run owns its cancellation and listeners and
 * tears them down on finish, cancel or failure; closing VS Code cancels runs still
 * going, locally and on SSH targets. Returns the commands' handlers; the command table
 * registers them.
 */
export function registerRunFeature(context: vscode.ExtensionContext, log: Log, store: ReportStore, targets: TargetSelection, live: LiveMemory, gpus: LocalGpus): Features['run'] {
  const active = new Set<AbortController>();
  context.subscriptions.push({ dispose: () => active.forEach((a) => a.abort()) });

  const runOnce = async (folder: vscode.WorkspaceFolder, target: RunTarget, plan: RunPlan, variant: Variant, extra: { harnessArgs?: string[]; title?: string; remoteInfo?: RemoteInfo; allowCpu?: boolean } = {}): Promise<RunOutcome> => {
    const settings = getSettings(folder.uri);
    const out = join(folder.uri.fsPath, settings.runHistory.folder, runFileName({ started: new Date(), target: targetLabel(target), variant }));
    mkdirSync(dirname(out), { recursive: true });
    const request: RunRequest = { workspace: folder.uri.fsPath, script: plan.script, args: plan.args, cwd: plan.cwd, env: plan.env, variant, steps: plan.steps, warmup: plan.warmup, out };
    if (extra.harnessArgs) request.harnessArgs = extra.harnessArgs;
    if (plan.launcher) request.launcher = plan.launcher;
    // Every rank's progress, by rank: "rank 0 2/3 · rank 1 2/3".
    const rankSteps = new Map<number, string>();
    const ac = new AbortController();
    active.add(ac);
    log.channel.show(true);
    log.info(`${extra.title ?? 'profiling'} ${vscode.workspace.asRelativePath(plan.script)} on ${targetLabel(target)} (variant ${variant})`);
    try {
      return await notify.progress(
        { title: `Membit: ${extra.title ?? 'profiling'} ${vscode.workspace.asRelativePath(plan.script)} (${variant}, ${targetLabel(target)})`, cancellable: true },
        async (progress, token) => {
          const cancelSub = token.onCancellationRequested(() => ac.abort());
          const kernelsDir = vscode.Uri.joinPath(context.extensionUri, 'dist', 'kernels').fsPath;
          // A SLURM login node: the run is a job; its report is a run set like a torchrun launch's.
          const slurm = target.kind === 'ssh' ? targets.slurm(target.host) : undefined;
          const run = slurm
            ? createSlurmRun(slurm, request, { kernelsDir, signal: ac.signal })
            : createRun(target, request, {
                kernelsDir,
                signal: ac.signal,
                ...(extra.remoteInfo ? { remoteInfo: extra.remoteInfo } : {}),
                ...(extra.allowCpu ? { allowCpu: true } : {}),
              });
          let lastPct = 0;
          let lastUpload = 0;
          // Local runs on a GPU: the device-level memory of the run's process tree, live.
          let sampler: Promise<GpuSampler | undefined> | undefined;
          let harnessText = '';
          let deviceText = '';
          const showLive = () => live([harnessText, deviceText].filter(Boolean).join(' · ') || undefined);
          const off = run.onEvent((e) => {
            switch (e.type) {
              case 'state':
                progress.report({ message: e.state });
                break;
              case 'log':
                log.info(e.message);
                break;
              case 'output':
                log.channel.appendLine(e.line);
                break;
              case 'upload': {
                const now = Date.now();
                if (now - lastUpload > 200) {
                  lastUpload = now;
                  progress.report({ message: `uploading ${e.progress.sentFiles}/${e.progress.files} files (${formatBytes(e.progress.sentBytes)})` });
                }
                break;
              }
              case 'progress': {
                const p = e.event as { event: string; step?: number; total?: number; allocated?: number; peak?: number; phase?: string; batch?: number; fits?: boolean };
                const pid = (p as { pid?: unknown }).pid;
                if (p.event === 'queued') {
                  const q = p as { job?: unknown; state?: unknown; reason?: unknown };
                  progress.report({ message: `job ${shown(q.job)} ${q.state === 'PENDING' ? `pending in queue${q.reason ? ` (${shown(q.reason)})` : ''}` : 'submitted'}` });
                  break;
                }
                const rank = (p as { rank?: unknown }).rank;
                if (typeof rank === 'number') {
                  if (p.event === 'step' && typeof p.step === 'number') rankSteps.set(rank, `${p.step}/${shown(p.total)}${p.phase === 'warmup' ? 'w' : ''}`);
                  else if (p.event === 'finished') rankSteps.set(rank, shown((p as { status?: unknown }).status ?? 'done'));
                  else if (p.event === 'started') rankSteps.set(rank, 'started');
                  progress.report({ message: [...rankSteps].sort((a, b) => a[0] - b[0]).map(([r, t]) => `rank ${r} ${t}`).join(' · ') });
                  break;
                }
                if (p.event === 'started' && target.kind === 'local' && typeof pid === 'number' && !sampler) {
                  sampler = gpus.follow(pid, (bytes) => {
                    deviceText = `GPU ${formatBytes(bytes)}`;
                    showLive();
                  });
                }
                if (p.event === 'step' && typeof p.step === 'number' && typeof p.total === 'number') {
                  const pct = p.total > 0 ? Math.round((100 * p.step) / p.total) : 0;
                  const mem = `${typeof p.allocated === 'number' ? ` · now ${formatBytes(p.allocated)}` : ''}${typeof p.peak === 'number' ? ` · peak ${formatBytes(p.peak)}` : ''}`;
                  progress.report({ message: `step ${p.step}/${p.total}${p.phase === 'warmup' ? ' (warm-up)' : ''}${mem}`, increment: p.phase === 'warmup' ? 0 : Math.max(0, pct - lastPct) });
                  if (p.phase !== 'warmup') lastPct = pct;
                  if (typeof p.allocated === 'number') {
                    harnessText = `now ${formatBytes(p.allocated)}${typeof p.peak === 'number' ? ` · peak ${formatBytes(p.peak)}` : ''}`;
                    showLive();
                  }
                } else if (p.event === 'probe' && typeof p.batch === 'number') {
                  progress.report({ message: `batch ${p.batch}: ${p.fits === undefined ? 'trying' : p.fits ? 'fits' : 'does not fit'}` });
                }
                break;
              }
              default:
                break;
            }
          });
          try {
            return await run.start();
          } finally {
            off();
            cancelSub.dispose();
            await sampler?.then((smp) => smp?.stop());
            live(undefined);
          }
        },
      );
    } finally {
      active.delete(ac);
    }
  };

  /** Runs with the chosen target, offering the fixes a failure names (CPU fallback, host key). */
  const runWithTarget = async (folder: vscode.WorkspaceFolder, plan: RunPlan, variant: Variant, extra: Parameters<typeof runOnce>[4] = {}): Promise<RunOutcome | undefined> => {
    const target = await targets.resolve(folder.uri);
    if (!target) {
      void notify.error(`Membit: the run target "${targets.choice}" is no longer configured; pick another with Membit: Select Run Target.`);
      return undefined;
    }
    let outcome = await runOnce(folder, target, plan, variant, extra);
    if (outcome.state === 'failed' && outcome.error?.code === 'no-cuda') {
      const cpu = 'Run on CPU';
      if ((await notify.warn(`Membit: ${outcome.message}`, cpu)) !== cpu) return outcome;
      outcome = await runOnce(folder, target, plan, variant, { ...extra, allowCpu: true });
    }
    return outcome;
  };

  /**
   * Says how a run ended. `show`: the editor shows this run (a single run the user asked
   * for; a variant run is pinned, since its figures are for code the harness changed);
   * otherwise the editor keeps the newest baseline run and the report is only checked.
   */
  const report = async (outcome: RunOutcome | undefined, target: string, show = true): Promise<string | undefined> => {
    if (!outcome) return undefined;
    const uri = outcome.report ? vscode.Uri.file(outcome.report) : undefined;
    let loaded = false;
    if (uri && show) loaded = isBaseline(uri) ? (await store.pin(undefined), store.report?.uri.fsPath === uri.fsPath) : await store.pin(uri);
    else if (uri) loaded = await store.readable(uri);
    if (outcome.state === 'done' && outcome.status === 'ok') return outcome.report;
    if (outcome.state === 'cancelled') {
      void notify.info(`Membit: run cancelled${loaded ? '; the partial report is loaded' : ''}.`);
      return undefined;
    }
    const actions = loaded ? ['Open Report', 'Show Output'] : ['Show Output'];
    if (outcome.error?.code === 'host-key-unknown') actions.unshift('Open Terminal');
    const why = outcome.message ?? `the run ended with status ${outcome.status ?? 'unknown'}`;
    void notify.error(`Membit: ${why}`, ...actions).then((c) => {
      if (c === 'Open Report' && outcome.report) void vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(outcome.report));
      if (c === 'Show Output') log.channel.show();
      if (c === 'Open Terminal') {
        // The user checks and accepts the host key themselves; we never bypass the check.
        const term = vscode.window.createTerminal({ name: `ssh ${target}`, shellPath: 'ssh', shellArgs: [target, 'true'] });
        term.show();
      }
    });
    return undefined;
  };

  const profileRun = async (arg?: unknown) => {
    const folder = requireFolder();
    const plan = await choosePlan(context, folder, arg);
    if (!plan) return undefined;
    const variant = plan.variants[0] ?? 'baseline';
    const out = await report(await runWithTarget(folder, plan, variant), targets.choice);
    if (out) {
      void notify.info('Membit: run finished; report loaded.', 'Open Report').then((c) => {
        if (c) void vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(out));
      });
    }
    return out;
  };

  const compareVariants = async (arg?: unknown) => {
    const folder = requireFolder();
    const plan = await choosePlan(context, folder, arg);
    if (!plan) return undefined;
    let variants = plan.variants.length > 1 ? plan.variants : undefined;
    if (!variants) {
      const picked = await vscode.window.showQuickPick(variantItems(vscode.Uri.file(plan.script)), {
        canPickMany: true,
        title: 'Membit: variants to compare with the baseline (run one after another on the same target)',
        placeHolder: 'peak, step time and samples/s of each against the baseline, before you change the code',
      });
      const chosen = (picked ?? []).flatMap((p) => (p.variant ? [p.variant] : []));
      if (chosen.length === 0) return undefined;
      variants = ['baseline', ...chosen];
    }
    const reports: vscode.Uri[] = [];
    let remoteInfo: RemoteInfo | undefined;
    for (const v of variants) {
      const outcome = await runWithTarget(folder, plan, v, remoteInfo ? { remoteInfo } : {});
      remoteInfo = outcome?.remote ?? remoteInfo;
      if (outcome?.report) reports.push(vscode.Uri.file(outcome.report));
      if (!outcome || outcome.state === 'cancelled') break;
      if (outcome.state === 'failed' && outcome.status === undefined) {
        await report(outcome, targets.choice, false);
        break;
      }
    }
    // The editor shows the comparison's baseline: the code on screen is unconverted.
    await store.pin(undefined);
    if (reports.length >= 2) await vscode.commands.executeCommand(Commands.compareRuns, reports);
    return reports;
  };

  const findMaxBatchSize = async (arg?: unknown) => {
    const folder = requireFolder();
    const plan = await choosePlan(context, folder, arg);
    if (!plan) return undefined;
    const a = (arg ?? {}) as { batchArg?: string; max?: number; memoryLimit?: number };
    const batchArg = a.batchArg ?? (await vscode.window.showInputBox({ title: 'Membit: the script flag that sets the batch size', value: '--batch-size' }));
    if (!batchArg) return undefined;
    if (plan.launcher) return findMaxBatchPerWorldSize(folder, plan, batchArg, a);
    const harnessArgs = ['--find-max-batch', `--batch-arg=${batchArg}`, `--variants=${plan.variants.join(',') || 'baseline'}`];
    if (a.max) harnessArgs.push('--max', String(a.max));
    if (a.memoryLimit) harnessArgs.push('--memory-limit', String(a.memoryLimit));
    const outcome = await runWithTarget(folder, plan, plan.variants[0] ?? 'baseline', { harnessArgs, title: 'finding the largest batch for' });
    if (!outcome) return undefined;
    if (!outcome.report || outcome.state !== 'done') return report(outcome, targets.choice, false);
    let result: { variants?: { variant: string; largest: number | null; error: string | null }[] };
    try {
      result = JSON.parse(readFileSync(outcome.report, 'utf8')) as typeof result;
    } catch (e) {
      throw new Error(`the max-batch result ${outcome.report} could not be read: ${String(e)}`, { cause: e });
    }
    const lines = (result.variants ?? []).map((v) => `${v.variant}: ${v.largest === null ? `none fits${v.error ? ` (${v.error})` : ''}` : `batch ${v.largest}`}`);
    log.info(`largest batch: ${lines.join('; ')}`);
    void notify.info(`Membit: largest batch that fits — ${lines.join('; ')}`);
    return result;
  };

  /**
   * A torchrun configuration: the largest batch at its world size, every probe a torchrun job on
   * this machine (the same search as `membit maxbatch --nproc-per-node N`).
   */
  async function findMaxBatchPerWorldSize(folder: vscode.WorkspaceFolder, plan: RunPlan, batchArg: string, a: { max?: number; memoryLimit?: number }): Promise<MaxBatchDoc | undefined> {
    if (targets.choice !== 'local') throw new Error('the largest batch per world size is searched with torchrun on this machine; pick the Local target, or run membit maxbatch on the GPU host');
    const worldSize = (plan.launcher?.nprocPerNode ?? 1) * (plan.launcher?.nnodes ?? 1);
    if ((plan.launcher?.nnodes ?? 1) > 1) throw new Error('the search runs one host: set nnodes to 1 in the launcher, or run membit maxbatch on each host');
    const { python } = await resolveLocalPython(folder.uri);
    const ac = new AbortController();
    active.add(ac);
    try {
      const doc = await notify.progress(
        { title: `Membit: finding the largest batch for ${vscode.workspace.asRelativePath(plan.script)} at world size ${worldSize}`, cancellable: true },
        async (progress, token) => {
          const sub = token.onCancellationRequested(() => ac.abort());
          try {
            return await runMaxBatch(
              {
                python, workspace: folder.uri.fsPath, script: plan.script, args: plan.args, cwd: plan.cwd, batchArg, lo: 1, hi: a.max ?? null,
                memoryLimit: a.memoryLimit ?? null, worldSizes: [worldSize], steps: Math.max(1, Math.min(plan.steps, 2)), warmup: plan.warmup, variant: plan.variants[0] ?? 'baseline',
              },
              {
                kernelsDir: vscode.Uri.joinPath(context.extensionUri, 'dist', 'kernels').fsPath,
                signal: ac.signal,
                onProbe: (_ws, row) => {
                  const text = `batch ${row.batch}: ${row.fits ? 'fits' : row.status === 'over_limit' ? 'over the limit' : row.status}${row.peak !== null ? ` (peak ${formatBytes(row.peak)}${row.rank !== null ? ` on rank ${row.rank}` : ''})` : ''}`;
                  log.info(`max batch, world size ${worldSize}: ${text}`);
                  progress.report({ message: text });
                },
              },
            );
          } finally {
            sub.dispose();
          }
        },
      );
      const lines = describeMaxBatch(doc, formatBytes);
      log.info(`largest batch: ${lines.join('; ')}`);
      void notify.info(`Membit: largest batch that fits — ${lines.join('; ')}`);
      return doc;
    } catch (e) {
      if (e instanceof CpuWithoutLimit) throw new Error(`${e.message}; from the command palette, pass { memoryLimit } or search on a GPU machine`, { cause: e });
      throw e;
    } finally {
      active.delete(ac);
    }
  }

  return { profileRun, compareVariants, findMaxBatchSize };
}

function requireFolder(): vscode.WorkspaceFolder {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) throw new Error('open the folder that holds your training script first: reports are kept in the workspace');
  return folder;
}

/**
 * Settles what to run, asking only what it must: the active Python file or a saved
 * run configuration, and the script's arguments (remembered per script).
 */
async function choosePlan(context: vscode.ExtensionContext, folder: vscode.WorkspaceFolder, arg: unknown): Promise<RunPlan | undefined> {
  const settings = getSettings(folder.uri);
  const base = { cwd: folder.uri.fsPath, env: {}, steps: settings.profile.steps, warmup: settings.profile.warmup, variants: [] as Variant[] };
  // Programmatic use (tests, other commands): { script, args?, steps?, warmup?, variants? }.
  if (arg && typeof arg === 'object' && typeof (arg as { script?: unknown }).script === 'string') {
    const a = arg as { script: string; args?: string[]; steps?: number; warmup?: number; variants?: Variant[]; launcher?: unknown };
    const plan: RunPlan = { ...base, script: a.script, args: a.args ?? [], steps: a.steps ?? base.steps, warmup: a.warmup ?? base.warmup, variants: checkedVariants(a.variants ?? [], 'variants') };
    if (a.launcher !== undefined) plan.launcher = checkedLauncher(a.launcher, 'launcher');
    return plan;
  }
  const editor = vscode.window.activeTextEditor;
  const activePy = editor?.document.languageId === 'python' && editor.document.uri.scheme === 'file' ? editor.document.uri : undefined;
  type Item = vscode.QuickPickItem & { run?: RunSetting; uri?: vscode.Uri };
  const items: Item[] = [];
  if (activePy) items.push({ label: `$(file) ${vscode.workspace.asRelativePath(activePy)}`, description: 'active file', uri: activePy });
  for (const r of settings.runs) items.push({ label: `$(gear) ${r.name ?? r.script}`, description: [r.script, ...(r.args ?? [])].join(' '), run: r });
  if (items.length === 0) {
    void notify.info('Membit: open the training script (a Python file) or add a run configuration in the membit.runs setting, then try again.');
    return undefined;
  }
  const pick = items.length === 1 ? items[0] : await vscode.window.showQuickPick(items, { title: 'Membit: what to run' });
  if (!pick) return undefined;
  if (pick.run) {
    const r = pick.run;
    const plan: RunPlan = { ...base, script: join(folder.uri.fsPath, r.script), args: r.args ?? [], cwd: r.cwd ? join(folder.uri.fsPath, r.cwd) : base.cwd, env: r.env ?? {}, steps: r.steps ?? base.steps, variants: checkedVariants(r.variants ?? [], `membit.runs "${r.name ?? r.script}"`) };
    if (r.launcher !== undefined) plan.launcher = checkedLauncher(r.launcher, `membit.runs "${r.name ?? r.script}"`);
    return plan;
  }
  const uri = pick.uri;
  if (!uri) return undefined;
  if (editor?.document.isDirty && editor.document.uri.toString() === uri.toString()) await editor.document.save();
  const remembered = context.workspaceState.get<Record<string, string>>(LAST_ARGS_KEY, {});
  const line = await vscode.window.showInputBox({
    title: `Arguments for ${vscode.workspace.asRelativePath(uri)}`,
    prompt: 'Passed to the script as written (quotes group words); no shell is involved.',
    value: remembered[uri.fsPath] ?? '',
    validateInput: (v) => {
      try {
        splitArgs(v);
        return undefined;
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    },
  });
  if (line === undefined) return undefined;
  await context.workspaceState.update(LAST_ARGS_KEY, { ...remembered, [uri.fsPath]: line });
  return { ...base, script: uri.fsPath, args: splitArgs(line) };
}
