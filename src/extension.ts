import * as vscode from 'vscode';
import { Commands, type CommandId } from './commands';
import { createLog } from './vscode/log';
import { registerPendingCommands } from './vscode/pending';
import { registerReportFeature } from './vscode/report';
import { registerProfileCommand } from './vscode/run/profileCommand';
import { registerScanFeature } from './vscode/scan';

/** What `activate` returns: a small API that the end-to-end tests read. */
export interface MembitApi {
  /** Command ids this activation registered. */
  readonly commands: readonly CommandId[];
}

/** Wires Membit's features together; each feature owns its Disposables via `context`. */
export function activate(context: vscode.ExtensionContext): MembitApi {
  const log = createLog(context);
  const reports = registerReportFeature(context, log);
  registerScanFeature(context, log, reports.store);
  registerProfileCommand(context, log, reports.store);
  const built: CommandId[] = [...reports.commands, Commands.profileRun];
  const pending = Object.values(Commands).filter((id) => !built.includes(id));
  registerPendingCommands(context, log, pending);
  log.info(`Membit activated (workspace ${vscode.workspace.isTrusted ? 'trusted' : 'untrusted'})`);
  return { commands: Object.values(Commands) };
}

export function deactivate(): void {
  // Everything is disposed through context.subscriptions.
}
