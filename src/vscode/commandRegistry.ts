import * as vscode from 'vscode';
import { RUNS_CODE, type CommandId } from '../commands';
import type { Log } from './log';
import { notify } from './notify';

export type Handler = (...args: unknown[]) => unknown;

/**
 * Registers a command with the checks every Membit command shares: commands that
 * run code are refused in an untrusted workspace with a message that says how to
 * proceed, and an exception becomes an error message plus a log entry instead of
 * a silent failure.
 */
export function registerMembitCommand(
  context: vscode.ExtensionContext,
  log: Log,
  id: CommandId,
  handler: Handler,
): void {
  const guarded = guardCommand(log, id, handler);
  context.subscriptions.push(
    vscode.commands.registerCommand(id, async (...args: unknown[]) => {
      if (RUNS_CODE.has(id) && !vscode.workspace.isTrusted) {
        const manage = 'Manage Workspace Trust';
        const choice = await notify.error(
          'Membit: profiling runs code from this workspace, so it is disabled until you trust the workspace.',
          manage,
        );
        if (choice === manage) await vscode.commands.executeCommand('workbench.trust.manage');
        return undefined;
      }
      return guarded(...args);
    }),
  );
}

/**
 * The handler with its exception turned into an error message plus a log entry (with
 * the stack), instead of a silent failure; for internal commands as well as Membit's.
 */
export function guardCommand(log: Log, id: string, handler: Handler): (...args: unknown[]) => Promise<unknown> {
  return async (...args: unknown[]) => {
    try {
      return await handler(...args);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      log.error(`${id} failed: ${e instanceof Error && e.stack ? e.stack : msg}`);
      void notify.error(`Membit: ${msg}`);
      return undefined;
    }
  };
}
