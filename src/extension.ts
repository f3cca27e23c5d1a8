import * as vscode from 'vscode';
import type { CommandId } from './commands';
import { registerCommands } from './vscode/commandTable';
import { registerAdvisorActions } from './vscode/convert/advisor';
import { LocalGpus } from './vscode/gpus';
import { createLog } from './vscode/log';
import { createPredictCommand } from './vscode/predict/command';
import { registerReportFeature } from './vscode/report';
import { ReportPanel } from './vscode/report/panel';
import { registerRunFeature } from './vscode/run/profileCommand';
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

/**
 * Wires Membit's features together; each feature owns its Disposables via `context`, and the
 * command table registers every command from the handlers the features return.
 */
export function activate(context: vscode.ExtensionContext): MembitApi {
  const started = performance.now();
  const log = createLog(context);
  const report = registerReportFeature(context, log);
  const snapshot = registerSnapshotFeature(context, log, report);
  const scan = registerScanFeature(context, log, report.store, report.overlays);
  const advisor = registerAdvisorActions(context, log, scan);
  const convert = registerConvertFeature(context, log, scan);
  // The report view ranks the scanner's estimated levers beside the measured ones.
  ReportPanel.leverEstimates = (script) => scan.leverEstimates(script);
  const gpus = new LocalGpus(context, log);
  context.subscriptions.push(gpus);
  const targets = registerTargets(context, () => gpus.describe());
  const run = registerRunFeature(context, log, report.store, targets, report.setLive, gpus);
  const predict = createPredictCommand(context, log, report.store);
  const commands = registerCommands(context, log, { report, snapshot, scan, advisor, convert, targets, run, predict, gpus });
  const activationMs = performance.now() - started;
  log.info(`Membit activated in ${activationMs.toFixed(1)} ms (workspace ${vscode.workspace.isTrusted ? 'trusted' : 'untrusted'})`);
  return { commands, activationMs };
}

export function deactivate(): void {
  // Everything is disposed through context.subscriptions.
}
