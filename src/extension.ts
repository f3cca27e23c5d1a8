import * as vscode from 'vscode';
import { testHook } from './vscode/testHooks';
import { Commands, InternalCommands, type CommandId } from './commands';
import { LocalGpus } from './vscode/gpus';
import { createLog } from './vscode/log';
import { recentlyShown } from './vscode/notify';
import { registerPredictCommand } from './vscode/predict/command';
import { registerReportFeature } from './vscode/report';
import { ReportPanel } from './vscode/report/panel';
import { registerRunCommands } from './vscode/run/profileCommand';
import { registerTargets } from './vscode/run/targets';
import { registerScanFeature } from './vscode/scan';
import { registerSnapshotFeature } from './vscode/snapshot';
import { registerConvertFeature } from './vscode/convert';

/** What `activate` returns: a small API that the end-to-end tests read. */
export interface MembitApi {
  /** Command ids this activation registered. */
  readonly commands: readonly CommandId[];
  /** How long activate() took, in ms (the parser loads after it returns). */
  readonly activationMs: number;
}

/** Wires Membit's features together; each feature owns its Disposables via `context`. */
export function activate(context: vscode.ExtensionContext): MembitApi {
  const started = performance.now();
  const log = createLog(context);
  const reports = registerReportFeature(context, log);
  registerSnapshotFeature(context, log, reports);
  const scan = registerScanFeature(context, log, reports.store, reports.overlays);
  registerConvertFeature(context, log, scan);
  // The report view ranks the scanner's estimated levers beside the measured ones.
  ReportPanel.leverEstimates = (script) => scan.leverEstimates(script);
  const gpus = new LocalGpus(context, log);
  context.subscriptions.push(gpus, testHook(InternalCommands.gpuBackend, () => gpus.status()));
  const targets = registerTargets(context, log, () => gpus.describe());
  registerRunCommands(context, log, reports.store, targets, reports.setLive, gpus);
  registerPredictCommand(context, log, reports.store);
  context.subscriptions.push(testHook(InternalCommands.recentlyShown, () => recentlyShown()));
  const activationMs = performance.now() - started;
  log.info(`Membit activated in ${activationMs.toFixed(1)} ms (workspace ${vscode.workspace.isTrusted ? 'trusted' : 'untrusted'})`);
  return { commands: Object.values(Commands), activationMs };
}

export function deactivate(): void {
  // Everything is disposed through context.subscriptions.
}
