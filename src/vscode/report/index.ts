import * as vscode from 'vscode';
import { notify } from '../notify';
import { Commands } from '../../commands';
import { parseRunFileName } from '../../core/run/history';
import { formatBytes } from '../../core/units';
import { peakBytes } from '../../core/report/types';
import { runBrief, runDetail, runName } from '../../core/report/runLabel';
import { readPrediction, statusLabel } from '../../core/report/prediction';
import { classLensDetail, classLensTitle, classTotals, type ClassTotals } from '../../core/report/classes';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { relative } from 'node:path';
import { isRunSetText } from '../../core/report/runset';
import { rankDir } from '../../core/run/torchrun';
import { getSettings } from '../settings';
import type { HandlersOf } from '../commandTable';
import type { Log } from '../log';
import { Overlays, registerReportHover } from './overlays';
import { REPORT_VIEW_TYPE, ReportPanel } from './panel';
import { ReportStore, type LoadedReport } from './store';

export interface ReportFeature {
  store: ReportStore;
  overlays: Overlays;
  /** Shows live memory while a run is going (undefined: back to the loaded run's peak). */
  setLive: (text: string | undefined) => void;
  /** Handlers of the report commands, for the command table. */
  commands: HandlersOf<'toggleOverlays' | 'showReport' | 'pickRank' | 'compareRuns' | 'selectRun' | 'deleteRuns'>;
  /** What the e2e suite reads through the test hooks: what the report view drew, what the status bar says. */
  testReads: { reportViewRendered(): unknown; statusBar(): { text: string; tooltip: string; report: string | undefined } };
}

function lensKind(loaded: LoadedReport): string {
  const p = readPrediction(loaded.index.report);
  return p ? `Predicted (${p.gpuKey}, no GPU)` : 'Measured';
}

/** Loads run reports and shows them: overlays, hover, status bar, report view, comparisons. */
export function registerReportFeature(context: vscode.ExtensionContext, log: Log): ReportFeature {
  const store = new ReportStore(log);
  const overlays = new Overlays(context.extensionUri, store);
  const status = vscode.window.createStatusBarItem('membit.peak', vscode.StatusBarAlignment.Left, 50);
  status.name = 'Membit peak memory';
  context.subscriptions.push(store, overlays, status, registerReportHover(overlays));
  context.subscriptions.push({ dispose: () => ReportPanel.instance?.dispose() });
  ReportPanel.cached = (uri) => (store.report?.uri.fsPath === uri.fsPath ? store.report.index.report : undefined);
  ReportPanel.editor = { shows: (uri) => store.report?.uri.fsPath === uri.fsPath, currentLine: (d, l) => overlays.currentLine(d, l), isStale: (d) => overlays.isStale(d) };
  ReportPanel.storeLevers = (uri) => (store.report?.uri.fsPath === uri.fsPath ? store.levers : undefined);
  ReportPanel.cachedSet = (uri) => (store.report?.set && store.report.uri.fsPath === uri.fsPath ? store.report.set : undefined);
  // A picked rank (from the view or the command) redraws the view showing that run set.
  context.subscriptions.push(store.onDidChange((r) => {
    const panel = ReportPanel.instance;
    if (r?.set && panel?.showing(r.uri)) void panel.show([r.uri]);
  }));

  let liveText: string | undefined;
  const showStatus = () => {
    if (liveText) {
      status.text = `$(loading~spin) Membit: ${liveText}`;
      status.tooltip = 'Memory of the run in progress';
      status.show();
      return;
    }
    const r = store.report;
    if (!r) {
      status.hide();
      return;
    }
    const run = r.index.report.run;
    const prediction = readPrediction(r.index.report);
    const brief = runBrief(r.index.report);
    const peak = formatBytes(peakBytes(r.index.report));
    let label = run.status === 'ok' ? `peak ${peak}` : `${run.status.toUpperCase()} at ${peak}`;
    if (r.set) {
      // A run set: the overlays show the max over ranks (naming each line's rank) or the picked rank.
      const { info, pick } = r.set;
      const max = info.peaks.max;
      label = pick !== undefined ? `rank ${pick}/${info.world_size} ${label}` : max ? `peak ${formatBytes(max.peak)} on rank ${max.rank}/${info.world_size}` : label;
      if (info.peaks.firstOom) label += ` · OOM rank ${info.peaks.firstOom.rank}`;
    }
    // A prediction says so first: "predicted peak 47.2 GiB on A100-80GB · fits to batch 11".
    if (prediction) label = statusLabel(r.index.report);
    // The status bar names the run the overlays show: its variant and when it ran.
    const name = brief ? runName(brief) : run.variant;
    const active = vscode.window.activeTextEditor?.document;
    const edited = active ? overlays.isStale(active) : undefined;
    status.text = `${prediction ? '$(beaker)' : '$(pulse)'} Membit: ${label} · ${name}${store.isPinned ? ' $(pinned)' : ''}${edited ? ' · $(warning) file edited' : ''}`;
    const why = store.isPinned
      ? 'You picked this run (Membit: Show Run in Editor…).'
      : run.variant === 'baseline'
        ? 'The newest baseline run: variant runs are not shown on unconverted code.'
        : `No baseline run in the history: this ${run.variant} run measured code the harness changed.`;
    const freshness = edited
      ? `\n${vscode.workspace.asRelativePath(active?.uri ?? r.uri)} differs from the text this run profiled: figures follow your edits, and lines whose text was removed show none. Undo back to the profiled text, or profile again.`
      : '';
    const kind = prediction
      ? `Predicted without a GPU for ${prediction.gpuName}${prediction.complete ? '' : ` — PARTIAL: ${prediction.partialReason ?? ''}`}; a measured run replaces it`
      : `Measured on ${run.device.name}`;
    status.tooltip = `${kind}\n${run.script} · ${run.variant} · ${run.started}\n${brief ? runDetail(brief) : ''}\n${why}${freshness}\n${vscode.workspace.asRelativePath(r.uri)}\nClick to open the report`;
    status.command = Commands.showReport;
    status.show();
  };
  context.subscriptions.push(store.onDidChange(showStatus), overlays.onDidRender(showStatus), vscode.window.onDidChangeActiveTextEditor(showStatus));

  // Measured totals above each model class (all its instances, their whole subtree).
  const lensChanged = new vscode.EventEmitter<void>();
  let totalsFor: { report: LoadedReport; byFile: Map<string, Map<number, ClassTotals>> } | undefined;
  context.subscriptions.push(
    lensChanged,
    store.onDidChange(() => lensChanged.fire()),
    vscode.languages.registerCodeLensProvider({ language: 'python', scheme: 'file' }, {
      onDidChangeCodeLenses: lensChanged.event,
      provideCodeLenses(doc) {
        const loaded = store.report;
        if (!vscode.workspace.isTrusted || !loaded || !getSettings(doc.uri).codeLens.enabled || !overlays.isEnabled) return [];
        const rel = relative(loaded.root.fsPath, doc.uri.fsPath);
        // Computed once per report and file: the provider runs on every change event.
        if (totalsFor?.report !== loaded) totalsFor = { report: loaded, byFile: new Map() };
        let totals = totalsFor.byFile.get(rel);
        if (!totals) totalsFor.byFile.set(rel, (totals = classTotals(loaded.index.report, rel)));
        const lenses: vscode.CodeLens[] = [];
        for (const t of totals.values()) {
          // Where the class statement is now: the report's line mapped through edits made since
          // the run, checked against the text (never a regex built from report data).
          const near = classLineNow(doc, t.type, overlays.currentLine(doc, t.line) ?? t.line);
          if (near < 0) continue;
          lenses.push(new vscode.CodeLens(new vscode.Range(near, 0, near, 0), {
            title: classLensTitle(t, loaded.index.device, lensKind(loaded)),
            tooltip: `${lensKind(loaded)} in run ${runName(runBrief(loaded.index.report) ?? { variant: '?', target: '?', started: '' })}: every instance of ${t.type} and its submodules, summed.\n${classLensDetail(t)}\nClick to open the report.`,
            command: Commands.showReport,
          }));
        }
        return lenses;
      },
    }),
  );

  const root = () => vscode.workspace.workspaceFolders?.[0]?.uri;

  // Show Report and Compare Runs read reports from the workspace: the command table runs them
  // only once it is trusted (UNTRUSTED.readsReports).
  const toggleOverlays = () => {
    const on = overlays.toggle();
    void vscode.window.setStatusBarMessage(`Membit: memory overlays ${on ? 'on' : 'off'}`, 3000);
    return on;
  };

  const showReport = async (arg?: unknown) => {
    const folder = root();
    if (!folder) throw new Error('open a folder first: reports are kept in the workspace');
    const uri = arg instanceof vscode.Uri ? arg : store.report?.uri ?? (await store.history())[0];
    if (!uri) {
      void notify.info('Membit: no run report yet. Profile a run first (Membit: Profile Training Run, or `membit profile` in a terminal).');
      return undefined;
    }
    // A run set is read by the store's worker; the view shows what the store holds.
    if (store.report?.uri.fsPath !== uri.fsPath && (await isRunSetFile(uri.fsPath))) await store.load(uri, folder);
    ReportPanel.createOrShow(context.extensionUri, log, folder, [uri]);
    return uri;
  };

  /** A run set's rank for the overlays and the report view: a number, 'max' (the max over ranks), or a quick pick. */
  const pickRank = async (arg?: unknown) => {
    const set = store.report?.set;
    if (!set) {
      void notify.info('Membit: the shown run is a single process. Rank picking needs a torchrun or SLURM run set (a membit.runs entry with a launcher, or membit profile --nproc-per-node).');
      return undefined;
    }
    let pick: number | 'max' | undefined = arg === 'max' || arg === null ? 'max' : Number.isInteger(arg) ? (arg as number) : undefined;
    if (pick === undefined) {
      const items = [
        { label: 'Max over ranks', description: set.info.peaks.max ? `peak ${formatBytes(set.info.peaks.max.peak)} on rank ${set.info.peaks.max.rank}` : '', rank: 'max' as const },
        ...set.info.ranks.filter((r) => r.status !== 'missing').map((r) => ({ label: `Rank ${r.rank}`, description: `${r.peak !== null ? formatBytes(r.peak) : '?'} · ${r.status} · ${r.host ?? '?'}`, rank: r.rank })),
      ];
      const chosen = await vscode.window.showQuickPick(items, { title: 'Membit: show which rank in the editor' });
      if (!chosen) return undefined;
      pick = chosen.rank;
    }
    const ok = await store.pickRank(pick === 'max' ? undefined : pick);
    if (!ok) throw new Error(`rank ${String(pick)} has no report in this run set`);
    return pick;
  };

  const compareRuns = async (arg?: unknown) => {
    const folder = root();
    if (!folder) throw new Error('open a folder first: reports are kept in the workspace');
    let uris = Array.isArray(arg) ? arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
    if (uris.length === 0) {
      const items = await historyItems(store, 40);
      if (items.length < 2) {
        void notify.info('Membit: comparing needs at least two runs in the run history.');
        return undefined;
      }
      const picked = await vscode.window.showQuickPick(items, { canPickMany: true, title: 'Membit: pick runs to compare (the first is the baseline)' });
      if (!picked || picked.length < 2) return undefined;
      uris = picked.map((p) => p.uri);
    }
    // The view scrolls to the comparison it just drew.
    ReportPanel.createOrShow(context.extensionUri, log, folder, uris, 'comparison');
    return uris;
  };

  const selectRun = async (arg?: unknown) => {
    if (arg === 'auto' || arg instanceof vscode.Uri) {
      await store.pin(arg instanceof vscode.Uri ? arg : undefined);
      return store.report?.uri;
    }
    const runs = await historyItems(store, 40);
    if (runs.length === 0) {
      void notify.info('Membit: the run history is empty. Profile a run first (Membit: Profile Training Run).');
      return undefined;
    }
    const shown = store.report?.uri.fsPath;
    type Item = vscode.QuickPickItem & { uri?: vscode.Uri };
    const items: Item[] = [
      { label: '$(history) Newest baseline run', description: store.isPinned ? '' : 'shown now', detail: 'Follows new runs; variant runs measured code the harness changed, so they are never shown on their own' },
      { label: 'runs', kind: vscode.QuickPickItemKind.Separator },
      ...runs.map((i) => ({ ...i, description: `${i.description ?? ''}${i.uri.fsPath === shown ? ' · shown now' : ''}` })),
    ];
    const pick = await vscode.window.showQuickPick(items, { title: 'Membit: the run the editor overlays, hints and CodeLens show', matchOnDetail: true });
    if (!pick) return undefined;
    await store.pin(pick.uri);
    return store.report?.uri;
  };

  /** Run history: pick old reports and delete them (after a confirmation). */
  const deleteRuns = async (arg?: unknown) => {
    const history = await store.history();
    let uris = Array.isArray(arg) ? arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
    if (uris.length === 0) {
      if (history.length === 0) {
        void notify.info('Membit: the run history is empty.');
        return 0;
      }
      const items = await historyItems(store, 40);
      const picked = await vscode.window.showQuickPick(items, { canPickMany: true, title: 'Membit: runs to delete' });
      if (!picked || picked.length === 0) return 0;
      const ok = await vscode.window.showWarningMessage(`Delete ${picked.length} run report(s)? This cannot be undone.`, { modal: true }, 'Delete');
      if (ok !== 'Delete') return 0;
      uris = picked.map((p) => p.uri);
    }
    const known = new Set(history.map((u) => u.fsPath));
    let n = 0;
    for (const u of uris) {
      // Only files of the run history, never an arbitrary path passed in.
      if (!known.has(u.fsPath)) continue;
      await vscode.workspace.fs.delete(u);
      // A run set's rank reports live in the folder beside it.
      const ranks = vscode.Uri.file(rankDir(u.fsPath));
      if (existsSync(ranks.fsPath)) await vscode.workspace.fs.delete(ranks, { recursive: true });
      n++;
    }
    await store.loadLatest();
    void notify.info(`Membit: deleted ${n} run report(s).`);
    return n;
  };

  context.subscriptions.push(
    vscode.window.registerWebviewPanelSerializer(REPORT_VIEW_TYPE, {
      deserializeWebviewPanel: (panel, state) =>
        new Promise<void>((resolve) => {
          const folder = root();
          if (folder && vscode.workspace.isTrusted) ReportPanel.revive(panel, context.extensionUri, log, folder, state);
          else panel.dispose();
          resolve();
        }),
    }),
  );
  void store.start();
  const setLive = (text: string | undefined) => {
    liveText = text;
    showStatus();
  };
  return {
    store,
    overlays,
    setLive,
    commands: { toggleOverlays, showReport, pickRank, compareRuns, selectRun, deleteRuns },
    testReads: {
      reportViewRendered: () => ReportPanel.instance?.rendered ?? ReportPanel.latestRendered,
      statusBar: () => ({ text: status.text, tooltip: typeof status.tooltip === 'string' ? status.tooltip : '', report: store.report?.uri.fsPath }),
    },
  };
}

/**
 * Run-history entries for pickers, newest first: variant, target and time as the label,
 * peak, device and arguments beside it (the newest `limit` are read; older ones by name only).
 */
async function historyItems(store: ReportStore, limit: number): Promise<(vscode.QuickPickItem & { uri: vscode.Uri })[]> {
  const history = await store.history();
  return Promise.all(
    history.map(async (u, i) => {
      const name = parseRunFileName(u.path.split('/').pop() ?? '');
      const brief = i < limit ? await store.brief(u) : undefined;
      const label = brief ? runName(brief) : `${name?.variant ?? '?'} · ${name?.target ?? '?'} ${name?.started.toLocaleTimeString('en-GB', { hour12: false }) ?? ''}`;
      return { label, description: brief ? runDetail(brief) : 'not read', ...(name ? { detail: name.started.toLocaleString() } : {}), uri: u };
    }),
  );
}

/** `class Name(` / `class Name:` at the start of a line (after indentation). */
export function isClassLine(text: string, name: string): boolean {
  const t = text.trimStart();
  if (!t.startsWith('class ')) return false;
  const rest = t.slice(6).trimStart();
  return rest.startsWith(name) && /^[(:\s]/.test(rest.slice(name.length));
}

async function isRunSetFile(path: string): Promise<boolean> {
  try {
    const f = await open(path, 'r');
    try {
      const { buffer, bytesRead } = await f.read(Buffer.alloc(200), 0, 200, 0);
      return isRunSetText(buffer.subarray(0, bytesRead).toString('utf8'));
    } finally {
      await f.close();
    }
  } catch {
    return false;
  }
}

/**
 * The 0-based line of `class name` in the document: the mapped line when it still holds the
 * statement, else the nearest line that does (an edit the mapping could not follow, such as a
 * replaced block); -1 when the class is gone.
 */
function classLineNow(doc: vscode.TextDocument, name: string, mapped: number): number {
  const at = mapped - 1;
  if (at >= 0 && at < doc.lineCount && isClassLine(doc.lineAt(at).text, name)) return at;
  let best = -1;
  for (let i = 0; i < doc.lineCount; i++) {
    if (isClassLine(doc.lineAt(i).text, name) && (best < 0 || Math.abs(i - at) < Math.abs(best - at))) best = i;
  }
  return best;
}
