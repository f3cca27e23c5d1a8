import * as vscode from 'vscode';
import { Commands, type CommandId } from '../commands';
import { registerMembitCommand } from './commandRegistry';
import type { Log } from './log';
import { notify } from './notify';

/** What each not-yet-built command will do, so its message says more than "no". */
const WHAT: Partial<Record<CommandId, string>> = {
  [Commands.convertToPackedDropout]: 'Rewriting dropout to 1-bit packed dropout',
  [Commands.convertFfnToSparse24]: 'Rewriting FFN layers to 2:4 sparsity (the membit.sparse layers it needs)',
  [Commands.convertAllInFile]: 'Converting every site in a file',
  [Commands.profileRun]: 'Profiling a training run from the editor',
  [Commands.compareRuns]: 'Comparing profiled runs',
  [Commands.findMaxBatchSize]: 'Finding the largest batch that fits',
  [Commands.showReport]: 'The report view',
  [Commands.toggleOverlays]: 'Memory overlays',
  [Commands.selectRun]: 'Choosing the run the editor shows',
  [Commands.selectRunTarget]: 'Choosing a local or SSH run target',
};

/**
 * Registers the commands whose feature has not landed in this build. Each one
 * says so plainly; none pretends to have done anything.
 */
export function registerPendingCommands(context: vscode.ExtensionContext, log: Log, ids: readonly CommandId[]): void {
  for (const id of ids) {
    registerMembitCommand(context, log, id, () => {
      const what = WHAT[id] ?? id;
      log.info(`${id}: not available in this version`);
      void notify.info(`Membit: ${what} is not available in this version yet.`);
      return { available: false };
    });
  }
}
