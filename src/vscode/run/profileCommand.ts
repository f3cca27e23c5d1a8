import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as vscode from 'vscode';
import { Commands } from '../../commands';
import { splitArgs } from '../../core/run/argsplit';
import { explainFailure } from '../../core/run/errors';
import { formatBytes, harnessArgv } from '../../core/run/harness';
import { runFileName } from '../../core/run/history';
import { runLocal } from '../../core/run/local';
import type { RunSetting, Variant } from '../../core/settings';
import { registerMembitCommand } from '../commandRegistry';
import type { Log } from '../log';
import type { ReportStore } from '../report/store';
import { getSettings } from '../settings';
import { resolveLocalPython } from './python';

/** What to run, as the palette flow settles it. */
interface RunPlan {
  script: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  steps: number;
  warmup: number;
  variant: Variant;
}

const LAST_ARGS_KEY = 'membit.lastArgs';

/**
 * "Membit: Profile Training Run" for the local target: asks only what it must
 * (which script, its arguments — remembered per script), runs the harness with a
 * cancellable progress notification, streams output to the Membit channel, and loads
 * the report, partial or not.
 */
export function registerProfileCommand(context: vscode.ExtensionContext, log: Log, store: ReportStore): void {
  const active = new Set<AbortController>();
  // Closing VS Code cancels runs still going: no orphaned training processes.
  context.subscriptions.push({ dispose: () => active.forEach((a) => a.abort()) });

  registerMembitCommand(context, log, Commands.profileRun, async (arg?: unknown) => {
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new Error('open the folder that holds your training script first: reports are kept in the workspace');
    const plan = await choosePlan(context, folder, arg);
    if (!plan) return undefined;
    const settings = getSettings(folder.uri);
    const { python, source } = await resolveLocalPython(folder.uri);
    const out = join(folder.uri.fsPath, settings.runHistory.folder, runFileName({ started: new Date(), target: 'local', variant: plan.variant }));
    mkdirSync(dirname(out), { recursive: true });
    const kernels = vscode.Uri.joinPath(context.extensionUri, 'dist', 'kernels').fsPath;
    const argv = harnessArgv({ python, script: plan.script, scriptArgs: plan.args, out, variant: plan.variant, steps: plan.steps, warmup: plan.warmup, root: folder.uri.fsPath });
    const env = { ...process.env, ...plan.env, PYTHONPATH: [kernels, process.env.PYTHONPATH].filter(Boolean).join(':'), PYTHONUNBUFFERED: '1' };
    log.info(`profiling with ${python} (${source}): ${JSON.stringify(argv)}`);
    log.channel.show(true);

    const ac = new AbortController();
    active.add(ac);
    try {
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Membit: profiling ${vscode.workspace.asRelativePath(plan.script)}`, cancellable: true },
        async (progress, token) => {
          token.onCancellationRequested(() => ac.abort());
          let last = 0;
          return runLocal({
            argv,
            cwd: plan.cwd,
            env,
            signal: ac.signal,
            onOutput: (line) => log.channel.appendLine(line),
            onProgress: (e) => {
              if (e.event === 'started') progress.report({ message: `started on ${String(e.device ?? 'device')}` });
              if (e.event === 'step' && typeof e.step === 'number' && typeof e.total === 'number') {
                const pct = e.total > 0 ? Math.round((100 * e.step) / e.total) : 0;
                const mem = typeof e.peak === 'number' ? ` · peak ${formatBytes(e.peak)}` : '';
                const cur = typeof e.allocated === 'number' ? ` · now ${formatBytes(e.allocated)}` : '';
                progress.report({ message: `step ${e.step}/${e.total}${e.phase === 'warmup' ? ' (warm-up)' : ''}${cur}${mem}`, increment: e.phase === 'warmup' ? 0 : Math.max(0, pct - last) });
                if (e.phase !== 'warmup') last = pct;
              }
            },
          });
        },
      );
      const status = result.finished?.status ?? (result.cancelled ? 'cancelled' : 'error');
      const haveReport = existsSync(out) && (await store.load(vscode.Uri.file(out), folder.uri, false));
      if (status === 'ok' && result.exitCode === 0) {
        const open = 'Open Report';
        void vscode.window.showInformationMessage(`Membit: run finished; report loaded.`, open).then((c) => {
          if (c === open) void vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(out));
        });
        return out;
      }
      if (status === 'cancelled') {
        void vscode.window.showInformationMessage(`Membit: run cancelled${haveReport ? '; the partial report is loaded' : ''}.`);
        return undefined;
      }
      const why = explainFailure({ python, where: 'local', exitCode: result.exitCode, stderrTail: result.stderrTail });
      const actions = haveReport ? ['Open Report', 'Show Output'] : ['Show Output'];
      void vscode.window.showErrorMessage(`Membit: ${why}`, ...actions).then((c) => {
        if (c === 'Open Report') void vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(out));
        if (c === 'Show Output') log.channel.show();
      });
      return undefined;
    } catch (e) {
      throw new Error(explainFailure({ python, where: 'local', exitCode: null, stderrTail: [], spawnError: String(e) }));
    } finally {
      active.delete(ac);
    }
  });
}

async function choosePlan(context: vscode.ExtensionContext, folder: vscode.WorkspaceFolder, arg: unknown): Promise<RunPlan | undefined> {
  const settings = getSettings(folder.uri);
  const base = { cwd: folder.uri.fsPath, env: {}, steps: settings.profile.steps, warmup: settings.profile.warmup, variant: 'baseline' as Variant };
  // Programmatic use (tests, other commands): a Uri and optional args array.
  if (arg && typeof arg === 'object' && 'script' in (arg as object)) {
    const a = arg as { script: string; args?: string[]; steps?: number; warmup?: number; variant?: Variant };
    return { ...base, script: a.script, args: a.args ?? [], steps: a.steps ?? base.steps, warmup: a.warmup ?? base.warmup, variant: a.variant ?? 'baseline' };
  }
  const editor = vscode.window.activeTextEditor;
  const activePy = editor?.document.languageId === 'python' && editor.document.uri.scheme === 'file' ? editor.document.uri : undefined;
  type Item = vscode.QuickPickItem & { run?: RunSetting; uri?: vscode.Uri };
  const items: Item[] = [];
  if (activePy) items.push({ label: `$(file) ${vscode.workspace.asRelativePath(activePy)}`, description: 'active file', uri: activePy });
  for (const r of settings.runs) items.push({ label: `$(gear) ${r.name ?? r.script}`, description: [r.script, ...(r.args ?? [])].join(' '), run: r });
  let pick: Item | undefined;
  if (items.length === 0) {
    void vscode.window.showInformationMessage('Membit: open the training script (a Python file) or add a run configuration in the membit.runs setting, then profile again.');
    return undefined;
  } else if (items.length === 1) pick = items[0];
  else pick = await vscode.window.showQuickPick(items, { title: 'Membit: what to profile' });
  if (!pick) return undefined;

  if (pick.run) {
    const r = pick.run;
    const script = join(folder.uri.fsPath, r.script);
    return { ...base, script, args: r.args ?? [], cwd: r.cwd ? join(folder.uri.fsPath, r.cwd) : base.cwd, env: r.env ?? {}, steps: r.steps ?? base.steps, variant: r.variants?.[0] ?? 'baseline' };
  }
  const uri = pick.uri as vscode.Uri;
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
