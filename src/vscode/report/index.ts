import * as vscode from 'vscode';
import { notify } from '../notify';
import { Commands, InternalCommands, type CommandId } from '../../commands';
import { parseRunFileName } from '../../core/run/history';
import { formatBytes } from '../../core/run/harness';
import { readPrediction, statusLabel } from '../../core/report/prediction';
import { classTotals, type ClassTotals } from '../../core/report/classes';
import { relative } from 'node:path';
import { getSettings } from '../settings';
import { registerMembitCommand } from '../commandRegistry';
import type { Log } from '../log';
import { Overlays, registerReportHover } from './overlays';
import { REPORT_VIEW_TYPE, ReportPanel } from './panel';
import { ReportStore, type LoadedReport } from './store';

export interface ReportFeature {
  store: ReportStore;
  overlays: Overlays;
  /** Shows live memory while a run is going (undefined: back to the loaded run's peak). */
  setLive(text: string | undefined): void;
  /** The commands this feature implements. */
  commands: CommandId[];
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
  context.subscriptions.push(store, overlays, status, registerReportHover(overlays, store));
  context.subscriptions.push({ dispose: () => ReportPanel.instance?.dispose() });
  ReportPanel.cached = (uri) => (store.report && store.report.uri.fsPath === uri.fsPath ? store.report.index.report : undefined);

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
    status.text = `${prediction ? '$(beaker)' : '$(pulse)'} Membit: ${statusLabel(r.index.report)}`;
    const kind = prediction
      ? `Predicted without a GPU for ${prediction.gpuName}${prediction.complete ? '' : ` — PARTIAL: ${prediction.partialReason ?? ''}`}; a measured run replaces it`
      : `Measured on ${run.device?.name ?? 'device unknown'}`;
    status.tooltip = `${kind}\n${run.script} · ${run.variant} · ${run.started}\n${vscode.workspace.asRelativePath(r.uri)}\nClick to open the report`;
    status.command = Commands.showReport;
    status.show();
  };
  context.subscriptions.push(store.onDidChange(showStatus));

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
        if (!loaded || !getSettings(doc.uri).codeLens.enabled || !overlays.isEnabled) return [];
        const rel = relative(loaded.root.fsPath, doc.uri.fsPath);
        // Computed once per report and file: the provider runs on every change event.
        if (totalsFor?.report !== loaded || !totalsFor.byFile.has(rel)) {
          if (totalsFor?.report !== loaded) totalsFor = { report: loaded, byFile: new Map() };
          totalsFor.byFile.set(rel, classTotals(loaded.index.report, rel));
        }
        const totals = totalsFor.byFile.get(rel) as Map<number, ClassTotals>;
        const lines = doc.getText().split('\n');
        const lenses: vscode.CodeLens[] = [];
        for (const t of totals.values()) {
          // Find the class statement by name, so the lens follows edits made after the run.
          const re = new RegExp(`^\\s*class\\s+${t.type}\\b`);
          const near = lines.findIndex((l, i) => re.test(l) && Math.abs(i - (t.line - 1)) < 2000);
          if (near < 0) continue;
          const parts = [`activations ${formatBytes(t.activations)}`, `masks ${formatBytes(t.masks)}`, `params ${formatBytes(t.params)}`];
          const saving = t.savingIfPacked > 0 ? ` — packing saves ${formatBytes(t.savingIfPacked)}` : '';
          lenses.push(new vscode.CodeLens(new vscode.Range(near, 0, near, 0), {
            title: `${lensKind(loaded)}: ${t.instances} × ${t.type} — ${parts.join(' · ')}${saving}`,
            command: Commands.showReport,
          }));
        }
        return lenses;
      },
    }),
  );

  const root = () => vscode.workspace.workspaceFolders?.[0]?.uri;

  registerMembitCommand(context, log, Commands.toggleOverlays, () => {
    const on = overlays.toggle();
    void vscode.window.setStatusBarMessage(`Membit: memory overlays ${on ? 'on' : 'off'}`, 3000);
    return on;
  });

  registerMembitCommand(context, log, Commands.showReport, async (arg?: unknown) => {
    const folder = root();
    if (!folder) throw new Error('open a folder first: reports are kept in the workspace');
    const uri = arg instanceof vscode.Uri ? arg : store.report?.uri ?? (await store.history())[0];
    if (!uri) {
      void notify.info('Membit: no run report yet. Profile a run first (Membit: Profile Training Run, or `membit profile` in a terminal).');
      return undefined;
    }
    ReportPanel.createOrShow(context.extensionUri, log, folder, [uri]);
    return uri;
  });

  registerMembitCommand(context, log, Commands.compareRuns, async (arg?: unknown) => {
    const folder = root();
    if (!folder) throw new Error('open a folder first: reports are kept in the workspace');
    let uris = Array.isArray(arg) ? arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
    if (uris.length === 0) {
      const items = (await store.history()).map((u) => {
        const name = parseRunFileName(u.path.split('/').pop() ?? '');
        return { label: `${name?.variant ?? '?'} on ${name?.target ?? '?'}`, description: name?.started.toLocaleString(), uri: u };
      });
      if (items.length < 2) {
        void notify.info('Membit: comparing needs at least two runs in the run history.');
        return undefined;
      }
      const picked = await vscode.window.showQuickPick(items, { canPickMany: true, title: 'Membit: pick runs to compare (the first is the baseline)' });
      if (!picked || picked.length < 2) return undefined;
      uris = picked.map((p) => p.uri);
    }
    ReportPanel.createOrShow(context.extensionUri, log, folder, uris);
    return uris;
  });

  /** Run history: pick old reports and delete them (after a confirmation). */
  registerMembitCommand(context, log, Commands.deleteRuns, async (arg?: unknown) => {
    const history = await store.history();
    let uris = Array.isArray(arg) ? arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
    if (uris.length === 0) {
      if (history.length === 0) {
        void notify.info('Membit: the run history is empty.');
        return 0;
      }
      const items = history.map((u, i) => {
        const name = parseRunFileName(u.path.split('/').pop() ?? '');
        return { label: `${name?.variant ?? '?'} on ${name?.target ?? '?'}`, description: name?.started.toLocaleString(), detail: i === 0 ? 'newest' : undefined, uri: u };
      });
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
      n++;
    }
    await store.loadLatest();
    void notify.info(`Membit: deleted ${n} run report(s).`);
    return n;
  });

  context.subscriptions.push(
    vscode.window.registerWebviewPanelSerializer(REPORT_VIEW_TYPE, {
      deserializeWebviewPanel: async (panel, state) => {
        const folder = root();
        if (folder) ReportPanel.revive(panel, context.extensionUri, log, folder, state);
        else panel.dispose();
      },
    }),
    // Test-only: what the overlays applied and what the view drew, so the e2e suite checks figures.
    vscode.commands.registerCommand(InternalCommands.appliedOverlays, () => overlays.appliedOverlays()),
    vscode.commands.registerCommand(InternalCommands.reloadReports, () => store.loadLatest()),
    vscode.commands.registerCommand(InternalCommands.reportViewRendered, () => ReportPanel.instance?.rendered),
  );
  void store.start();
  const setLive = (text: string | undefined) => {
    liveText = text;
    showStatus();
  };
  return { store, overlays, setLive, commands: [Commands.toggleOverlays, Commands.showReport, Commands.compareRuns, Commands.deleteRuns] };
}
