import { dirname } from 'node:path';
import * as vscode from 'vscode';
import type { Report } from '../../core/report/types';
import { formatBytes } from '../../core/units';
import { isSnapshotName } from '../../core/snapshot';
import { loadSnapshotsInWorker, type LoadedSnapshot } from '../../core/snapshot/load';
import { groupRunSets } from '../../core/snapshot/runSet';
import type { Features } from '../commandTable';
import type { Log } from '../log';
import { notify } from '../notify';
import type { ReportFeature } from '../report';
import { ReportPanel } from '../report/panel';

export const SNAPSHOT_EDITOR = 'membit.snapshot';

/**
 * PyTorch memory snapshots in the editor: the command that opens them, and a read-only
 * custom editor for *.pickle ("Open With…"). Files are read in a worker thread by the
 * restricted reader (never unpickled); the report they become drives the overlays, the
 * status bar and the report view like a run's report. Returns the command's handler; the
 * command table registers it.
 */
export function registerSnapshotFeature(context: vscode.ExtensionContext, log: Log, reports: ReportFeature): Features['snapshot'] {
  /** Reports read from snapshots, by file, for the report view. */
  const loaded = new Map<string, Report>();
  const previous = ReportPanel.cached;
  ReportPanel.cached = (uri) => loaded.get(uri.toString()) ?? previous(uri);
  const workerPath = vscode.Uri.joinPath(context.extensionUri, 'dist', 'snapshotWorker.js').fsPath;

  const rootFor = (uri: vscode.Uri) => vscode.workspace.getWorkspaceFolder(uri)?.uri ?? vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(dirname(uri.fsPath));

  /** Reads snapshots with a cancellable progress notification; shows the first that loads in the overlays. */
  async function load(uris: vscode.Uri[]): Promise<{ uri: vscode.Uri; report: Report }[]> {
    const [first] = uris;
    if (!first) return [];
    const root = rootFor(first);
    const done: { uri: vscode.Uri; report: Report }[] = [];
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'Membit: reading memory snapshot', cancellable: true },
      async (progress, token) => {
        const abort = new AbortController();
        const sub = token.onCancellationRequested(() => abort.abort());
        let shown = 0;
        const onReport = (l: LoadedSnapshot) => {
          const uri = vscode.Uri.file(l.path);
          if (!l.report) {
            log.warn(`${l.path}: ${l.error}`);
            void notify.warn(`Membit: ${l.error ?? `cannot read ${l.path}`}`);
            return;
          }
          log.info(`read ${l.path} in ${((l.ms ?? 0) / 1000).toFixed(2)} s (worker heap ${Math.round(l.heapMb ?? 0)} MB)`);
          loaded.set(uri.toString(), l.report);
          done.push({ uri, report: l.report });
          // The first file's overlays appear while the others are still being read.
          if (done.length === 1) reports.store.showReport(l.report, uri, root);
        };
        try {
          await loadSnapshotsInWorker({
            workerPath,
            paths: uris.map((u) => u.fsPath),
            root: root.fsPath,
            signal: abort.signal,
            onReport,
            onProgress: (i, path, fraction) => {
              const pct = Math.round(fraction * 100);
              progress.report({ message: `${path.split(/[\\/]/).pop()} ${uris.length > 1 ? `(${i + 1} of ${uris.length}) ` : ''}${pct}%`, increment: pct - shown });
              shown = pct;
            },
          });
        } catch (e) {
          if (!abort.signal.aborted) throw e;
        } finally {
          sub.dispose();
        }
      },
    );
    // A run set's overlays show the rank that peaked highest.
    const [worst] = [...done].sort((a, b) => (b.report.summary.peak_allocated ?? 0) - (a.report.summary.peak_allocated ?? 0));
    if (done.length > 1 && worst) {
      reports.store.showReport(worst.report, worst.uri, root);
      void vscode.window.setStatusBarMessage(`Membit: overlays show ${worst.uri.path.split('/').pop()}, the highest peak (${formatBytes(worst.report.summary.peak_allocated ?? 0)})`, 8000);
    }
    return done;
  }

  const openSnapshot = async (arg?: unknown, all?: unknown) => {
    // From the explorer: the clicked file, or every selected one.
    let uris = Array.isArray(all) ? all.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
    if (uris.length === 0 && arg instanceof vscode.Uri) uris = [arg];
    if (Array.isArray(arg)) uris = arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri);
    if (uris.length === 0) {
      const picked = await vscode.window.showOpenDialog({
        canSelectMany: true,
        openLabel: 'Open Snapshot',
        title: 'Membit: PyTorch memory snapshots (torch.cuda.memory._dump_snapshot); several files of one run open as a run set',
        filters: { 'PyTorch memory snapshots': ['pickle', 'pkl', 'gz'], 'All files': ['*'] },
      });
      if (!picked?.length) return undefined;
      uris = picked;
    }
    uris = uris.filter((u) => u.scheme === 'file');
    if (uris.length === 0) throw new Error('memory snapshots are read from files on disk');
    const skipped = uris.filter((u) => !isSnapshotName(u.fsPath));
    if (skipped.length) log.info(`reading ${skipped.map((u) => u.fsPath).join(', ')} as snapshots although not named *.pickle[.gz]`);
    // Order a run set by rank, so the view compares the ranks against rank 0.
    const ordered = groupRunSets(uris.map((u) => u.fsPath)).flatMap((s) => s.members.map((m) => vscode.Uri.file(m.path)));
    const done = await load(ordered);
    const [firstDone] = done;
    if (!firstDone) return undefined;
    ReportPanel.createOrShow(context.extensionUri, log, rootFor(firstDone.uri), done.map((d) => d.uri));
    return done.map((d) => d.uri);
  };

  const provider: vscode.CustomReadonlyEditorProvider = {
    openCustomDocument: (uri) => ({ uri, dispose: () => loaded.delete(uri.toString()) }),
    async resolveCustomEditor(document, panel) {
      const uri = document.uri;
      panel.webview.options = { enableScripts: false };
      panel.webview.html = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none';"></head><body><p>Reading ${escapeHtml(uri.fsPath.split(/[\\/]/).pop() ?? '')}…</p></body></html>`;
      if (uri.scheme !== 'file') {
        panel.webview.html = '<p>Membit reads memory snapshots from files on disk.</p>';
        return;
      }
      let done: { uri: vscode.Uri; report: Report }[] = [];
      try {
        done = await load([uri]);
      } catch (e) {
        void notify.error(`Membit: ${e instanceof Error ? e.message : String(e)}`);
      }
      if (done.length === 0) {
        panel.webview.html = `<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none';"></head><body><p>Membit could not read this file as a PyTorch memory snapshot; the notification says why.</p></body></html>`;
        return;
      }
      // The view disposes itself with the editor's panel.
      ReportPanel.attach(panel, context.extensionUri, log, rootFor(uri), [uri]);
    },
  };
  context.subscriptions.push(
    vscode.window.registerCustomEditorProvider(SNAPSHOT_EDITOR, provider, { supportsMultipleEditorsPerDocument: false, webviewOptions: { retainContextWhenHidden: false } }),
  );
  return { openSnapshot };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
