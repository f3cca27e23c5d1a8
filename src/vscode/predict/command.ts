import { formatBytes } from '../../core/units';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as vscode from 'vscode';
import { bundledKernelsDir } from '../../core/cli/profile';
import { splitArgs } from '../../core/run/argsplit';
import { runFileName } from '../../core/run/history';
import { predictArgv, PREDICT_GPUS, readPrediction, statusLabel } from '../../core/report/prediction';
import type { Features } from '../commandTable';
import type { Log } from '../log';
import { notify } from '../notify';
import type { ReportStore } from '../report/store';
import { resolveLocalPython } from '../run/python';
import { getSettings } from '../settings';

/** Arguments a caller (a test, a code action) may pass instead of answering the prompts. */
interface PredictArg {
  uri?: vscode.Uri;
  gpu?: string;
  args?: string[];
  variant?: string;
  findMaxBatch?: boolean;
}

const GPU_KEY = 'membit.predictGpu';

function isPredictArg(v: unknown): v is PredictArg {
  return typeof v === 'object' && v !== null && !(v instanceof vscode.Uri);
}

/**
 * Membit: Predict Memory (no GPU). Runs the script's first two steps with CUDA faked, in a child
 * process off the extension host, writes the report into the run history (where the overlays pick
 * it up, drawn as predicted) and says what it found. A measured run written later replaces it,
 * being the newer report. Returns the handler; the command table registers it.
 */
export function createPredictCommand(context: vscode.ExtensionContext, log: Log, store: ReportStore): Features['predict'] {
  const predictMemory = async (raw?: unknown) => {
    const arg: PredictArg = raw instanceof vscode.Uri ? { uri: raw } : isPredictArg(raw) ? raw : {};
    const uri = arg.uri ?? vscode.window.activeTextEditor?.document.uri;
    if (!uri?.fsPath.endsWith('.py')) throw new Error('open the Python training script to predict (or pass its file)');
    const folder = vscode.workspace.getWorkspaceFolder(uri) ?? vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new Error('open a folder first: reports are kept in the workspace');
    let gpu = arg.gpu;
    if (!gpu) {
      const last = context.workspaceState.get<string>(GPU_KEY) ?? 'H100-80GB';
      const items: vscode.QuickPickItem[] = PREDICT_GPUS.map((g) => (g === last ? { label: g, description: 'last used' } : { label: g }));
      items.sort((a, b) => (a.label === last ? -1 : b.label === last ? 1 : 0));
      const picked = await vscode.window.showQuickPick(items, { title: 'Membit: predict memory for which GPU?' });
      if (!picked) return undefined;
      gpu = picked.label;
    }
    await context.workspaceState.update(GPU_KEY, gpu);
    let scriptArgs = arg.args;
    if (!scriptArgs) {
      const text = await vscode.window.showInputBox({ title: 'Membit: the script\'s arguments (as for a training run)', value: context.workspaceState.get<string>('membit.lastArgs') ?? '' });
      if (text === undefined) return undefined;
      scriptArgs = splitArgs(text);
    }
    const { python } = await resolveLocalPython(uri);
    const history = join(folder.uri.fsPath, getSettings(folder).runHistory.folder);
    mkdirSync(history, { recursive: true });
    const variant = arg.variant ?? 'baseline';
    const out = join(history, runFileName({ started: new Date(), target: `predicted-${gpu}`, variant }));
    const argv = predictArgv({
      script: uri.fsPath,
      args: scriptArgs,
      out,
      gpu,
      variant,
      root: folder.uri.fsPath,
      findMaxBatch: arg.findMaxBatch ?? false,
    });
    const kernels = bundledKernelsDir();
    log.info(`predict: ${python} ${argv.join(' ')}`);
    const code = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `Membit: predicting memory on ${gpu} (no GPU)`, cancellable: true },
      (progress, token) =>
        new Promise<number>((resolve) => {
          const env = { ...process.env, PYTHONPATH: [kernels, process.env['PYTHONPATH']].filter(Boolean).join(process.platform === 'win32' ? ';' : ':'), PYTHONUNBUFFERED: '1' };
          const child = spawn(python, argv, { cwd: folder.uri.fsPath, env, stdio: ['ignore', 'pipe', 'pipe'] });
          const cancel = token.onCancellationRequested(() => child.kill('SIGTERM'));
          createInterface({ input: child.stdout }).on('line', (l) => log.info(`script: ${l}`));
          createInterface({ input: child.stderr }).on('line', (l) => {
            if (!l.startsWith('@@membit ')) {
              log.info(`script: ${l}`);
              return;
            }
            try {
              const e = JSON.parse(l.slice(9)) as Record<string, unknown>;
              if (e['event'] === 'step' && typeof e['peak'] === 'number') progress.report({ message: `step ${String(e['step'])} · peak so far ${formatBytes(e['peak'])}` });
              else if (e['event'] === 'probe') progress.report({ message: `batch ${String(e['batch'])}: ${e['fits'] ? 'fits' : 'does not fit'}` });
            } catch {
              // A malformed progress line only loses a progress message.
            }
            return undefined;
          });
          child.on('error', (err) => {
            cancel.dispose();
            log.warn(`predict: cannot start ${python}: ${err.message}`);
            resolve(-1);
          });
          child.on('close', (c) => {
            cancel.dispose();
            resolve(c ?? 1);
          });
        }),
    );
    if (code === -1) throw new Error(`cannot start ${python}: set membit.python to an interpreter with PyTorch`);
    const ok = await store.load(vscode.Uri.file(out), folder.uri);
    if (!ok) throw new Error(`the prediction wrote no readable report (exit code ${code}); see the Membit output`);
    const report = store.report?.index.report;
    const p = report ? readPrediction(report) : undefined;
    if (report && p) {
      const reads = p.userHostReads.length ? ` ${p.userHostReads.length} value read(s) could not be followed (see the report).` : '';
      const msg = `Membit: ${statusLabel(report)}${p.complete ? '' : ` — partial: ${p.partialReason ?? ''}`}.${reads}`;
      if (p.complete) void notify.info(msg);
      else void notify.warn(msg);
    }
    return out;
  };
  return { predictMemory };
}
