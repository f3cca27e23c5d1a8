/**
 * Every command Membit registers, in one table, after rust-analyzer's `createCommands()`:
 * a map from command id to a factory that builds its handler from the features, with a
 * disabled variant for commands that cannot work in an untrusted workspace. `registerCommands`
 * registers the whole table in one loop; nothing else calls `registerCommand`.
 */
import * as vscode from 'vscode';
import { Commands, InternalCommands, type CommandId } from '../commands';
import type { AdvisorCommands } from './convert/advisor';
import type { LocalGpus } from './gpus';
import type { Log } from './log';
import { notify, recentlyShown } from './notify';
import type { ReportFeature } from './report';
import type { TargetSelection } from './run/targets';
import type { ScanFeature } from './scan';

/** A command's handler: VS Code passes whatever the caller gave. */
export type Handler = (...args: unknown[]) => unknown;

/** The handlers a feature implements for some of the contributed commands, by their key in `Commands`. */
export type HandlersOf<K extends keyof typeof Commands> = Readonly<Record<K, Handler>>;

/** The features `activate` built: what the factories read their handlers from. */
export interface Features {
  readonly report: ReportFeature;
  readonly snapshot: HandlersOf<'openSnapshot'>;
  readonly scan: ScanFeature;
  readonly advisor: AdvisorCommands;
  readonly convert: HandlersOf<'convertToPackedDropout' | 'convertToRecomputeDropout' | 'convertFfnToSparse24' | 'convertAllInFile' | 'convertAllInWorkspace' | 'revertConversions' | 'insertPatchCall'>;
  readonly targets: TargetSelection;
  readonly run: HandlersOf<'profileRun' | 'compareVariants' | 'findMaxBatchSize'>;
  readonly predict: HandlersOf<'predictMemory'>;
  readonly gpus: LocalGpus;
}

/** What a disabled command says instead of running, and the button that leads out of it. */
export interface Refusal {
  readonly message: string;
  readonly action?: { readonly title: string; readonly command: string };
}

export interface CommandFactory {
  /** Builds the handler that does the work. */
  readonly enabled: (features: Features) => Handler;
  /** The disabled variant: while the workspace is untrusted the command says this and runs nothing. */
  readonly untrusted?: Refusal;
  /**
   * 'reject': a failure rejects the caller's promise instead of becoming an error message;
   * for commands whose caller is code (the e2e suite), which needs the error itself.
   */
  readonly failures?: 'reject';
}

/** Why a command does not run in an untrusted workspace. */
export const UNTRUSTED = {
  /** Running the workspace's script is running its code. */
  runsCode: {
    message: 'Membit: profiling runs code from this workspace, so it is disabled until you trust the workspace.',
    action: { title: 'Manage Workspace Trust', command: 'workbench.trust.manage' },
  },
  /** A report in the workspace is data the workspace carries, and the view renders it. */
  readsReports: {
    message: 'Membit: run reports in this workspace are shown only once you trust it (Workspaces: Manage Workspace Trust): a report is data from the workspace.',
  },
} as const satisfies Record<string, Refusal>;

/**
 * The commands package.json contributes, and only those: typing it by `CommandId` makes the
 * compiler ask for every one, and a unit test checks package.json against it both ways.
 */
export const COMMANDS: Readonly<Record<CommandId, CommandFactory>> = {
  [Commands.convertToPackedDropout]: { enabled: (f) => f.convert.convertToPackedDropout },
  [Commands.convertToRecomputeDropout]: { enabled: (f) => f.convert.convertToRecomputeDropout },
  [Commands.convertFfnToSparse24]: { enabled: (f) => f.convert.convertFfnToSparse24 },
  [Commands.convertAllInFile]: { enabled: (f) => f.convert.convertAllInFile },
  [Commands.convertAllInWorkspace]: { enabled: (f) => f.convert.convertAllInWorkspace },
  [Commands.revertConversions]: { enabled: (f) => f.convert.revertConversions },
  [Commands.insertPatchCall]: { enabled: (f) => f.convert.insertPatchCall },
  [Commands.profileRun]: { enabled: (f) => f.run.profileRun, untrusted: UNTRUSTED.runsCode },
  [Commands.compareRuns]: { enabled: (f) => f.report.commands.compareRuns, untrusted: UNTRUSTED.readsReports },
  [Commands.compareVariants]: { enabled: (f) => f.run.compareVariants, untrusted: UNTRUSTED.runsCode },
  [Commands.findMaxBatchSize]: { enabled: (f) => f.run.findMaxBatchSize, untrusted: UNTRUSTED.runsCode },
  // Predicting runs the user's script too (with CUDA faked).
  [Commands.predictMemory]: { enabled: (f) => f.predict.predictMemory, untrusted: UNTRUSTED.runsCode },
  [Commands.showReport]: { enabled: (f) => f.report.commands.showReport, untrusted: UNTRUSTED.readsReports },
  [Commands.pickRank]: { enabled: (f) => f.report.commands.pickRank },
  [Commands.openSnapshot]: { enabled: (f) => f.snapshot.openSnapshot },
  [Commands.deleteRuns]: { enabled: (f) => f.report.commands.deleteRuns },
  [Commands.toggleOverlays]: { enabled: (f) => f.report.commands.toggleOverlays },
  [Commands.selectRun]: { enabled: (f) => f.report.commands.selectRun },
  [Commands.selectRunTarget]: { enabled: (f) => () => f.targets.pick() },
};

/** The commands that run the workspace's code, so are refused while it is untrusted (read by the Restricted Mode e2e suite). */
export const RUNS_CODE: readonly CommandId[] = (Object.keys(COMMANDS) as CommandId[]).filter((id) => COMMANDS[id].untrusted === UNTRUSTED.runsCode);

/** Commands Membit calls itself (from code actions, or the e2e suite): never in the palette. */
export const INTERNAL_COMMANDS: Readonly<Record<string, CommandFactory>> = {
  [InternalCommands.applyLever]: { enabled: (f) => f.advisor.applyLever },
  [InternalCommands.showAdvice]: { enabled: (f) => f.advisor.showAdvice },
};

/**
 * What the end-to-end suite reads the extension's state through (what the overlays painted,
 * what the report view drew). No part of the product: registered only when the suite starts
 * the editor with MEMBIT_TEST_HOOKS=1, and otherwise absent.
 */
export const TEST_HOOKS: Readonly<Record<string, CommandFactory>> = {
  [InternalCommands.reloadReports]: { enabled: (f) => () => f.report.store.loadLatest(), failures: 'reject' },
  [InternalCommands.appliedOverlays]: { enabled: (f) => () => f.report.overlays.appliedOverlays(), failures: 'reject' },
  [InternalCommands.reportViewRendered]: { enabled: (f) => () => f.report.testReads.reportViewRendered(), failures: 'reject' },
  [InternalCommands.statusBar]: { enabled: (f) => () => f.report.testReads.statusBar(), failures: 'reject' },
  [InternalCommands.scanState]: { enabled: (f) => (uri) => (uri instanceof vscode.Uri ? f.scan.stateAfterScan(uri) : undefined), failures: 'reject' },
  [InternalCommands.gpuBackend]: { enabled: (f) => () => f.gpus.status(), failures: 'reject' },
  [InternalCommands.recentlyShown]: { enabled: () => () => recentlyShown(), failures: 'reject' },
};

/**
 * Registers the table in one loop, each registration owned by `context`. A command with a
 * disabled variant picks it on each call, not once: trust can be granted while the window
 * stays open. Returns the contributed commands it registered.
 */
export function registerCommands(context: vscode.ExtensionContext, log: Log, features: Features): CommandId[] {
  const tables = [COMMANDS, INTERNAL_COMMANDS, ...(process.env['MEMBIT_TEST_HOOKS'] === '1' ? [TEST_HOOKS] : [])];
  for (const table of tables) {
    for (const [id, factory] of Object.entries(table)) {
      const built = factory.enabled(features);
      const enabled = factory.failures === 'reject' ? built : reportFailures(log, id, built);
      const refusal = factory.untrusted;
      const handler: Handler = refusal ? (...args) => (vscode.workspace.isTrusted ? enabled(...args) : refuse(log, id, refusal)) : enabled;
      context.subscriptions.push(vscode.commands.registerCommand(id, handler));
    }
  }
  // Object.keys types its answer string[]; COMMANDS's keys are CommandIds by its type.
  return Object.keys(COMMANDS) as CommandId[];
}

/** Says why the command did not run; with a button, waits for the user's answer and follows it. */
async function refuse(log: Log, id: string, refusal: Refusal): Promise<undefined> {
  log.info(`${id}: not run, the workspace is untrusted`);
  const action = refusal.action;
  if (!action) {
    // Nothing to wait for: a message without buttons settles only when the user closes it.
    void notify.error(refusal.message);
    return undefined;
  }
  const choice = await notify.error(refusal.message, action.title);
  if (choice === action.title) await vscode.commands.executeCommand(action.command);
  return undefined;
}

/**
 * The handler with its exception turned into an error message plus a log entry (with the
 * stack), instead of a silent failure.
 */
function reportFailures(log: Log, id: string, handler: Handler): Handler {
  return async (...args) => {
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
