import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { resolveInside } from '../../core/untrusted';
import * as vscode from 'vscode';
import { notify } from '../notify';
import { parseFromWebview, type RenderedSummary, type ToWebview } from '../../../media/report/messages';
import { convertedLines } from '../../core/rewrite';
import { freshness } from '../../core/report/freshness';
import { leverDeltas, type LeverMeasurement } from '../../core/report/leverDeltas';
import { rankLevers, type LeverEstimate, type LeverRow } from '../../core/report/levers';
import { normalizePath } from '../../core/report/model';
import { runBrief } from '../../core/report/runLabel';
import { siteStates, type FileNow, type SiteState } from '../../core/report/siteState';
import { Commands } from '../../commands';
import { pathMatcher } from '../../core/report/classes';
import { compareRuns, comparisonMarkdown } from '../../core/report/compare';
import { parseReport } from '../../core/report/model';
import { REPORT_SCHEMA } from '../../core/report/schema';
import type { RunSetInfo } from '../../core/report/runsetTypes';
import type { Report } from '../../core/report/types';
import { buildView } from '../../core/report/view';
import type { Log } from '../log';
import { sparseAdviceTables } from '../sparseAdvice';
import type { DisposableLike } from '../disposables';

export const REPORT_VIEW_TYPE = 'membit.report';

/**
 * The report view: one panel, created or revealed, revived after a window reload from
 * its saved state. Strict CSP with a nonce; scripts and styles only from dist/media.
 */
export class ReportPanel implements vscode.Disposable {
  private static current: ReportPanel | undefined;
  private readonly disposables: DisposableLike[] = [];
  private uris: vscode.Uri[] = [];
  private lastRendered: RenderedSummary | undefined;
  private reports: Report[] = [];
  private ready = false;
  private focus: string | null = null;
  /** The sites of the first report, for re-sending where they are after an edit. */
  private sites: { report: Report; uri: vscode.Uri; sites: Report['sites'] } | undefined;
  private sitesTimer: NodeJS.Timeout | undefined;

  /** What the most recently drawn view (shared panel or a custom editor's) drew, for the tests. */
  static latestRendered: RenderedSummary | undefined;

  /** Reports already parsed elsewhere (the overlays' store), so a large one is read once. */
  static cached: (uri: vscode.Uri) => Report | undefined = () => undefined;
  /** The editor's view of the run it shows: report lines mapped through edits made since. */
  static editor: { shows(uri: vscode.Uri): boolean; currentLine(doc: vscode.TextDocument, reportLine: number): number | undefined; isStale(doc: vscode.TextDocument): boolean | undefined } | undefined;
  /** What each lever measured against this report from the run history, when the store shows it. */
  static storeLevers: (uri: vscode.Uri) => ReadonlyMap<string, LeverMeasurement> | undefined = () => undefined;
  /** The scanner's estimated lever savings for a script (absolute paths). */
  static leverEstimates: (script: vscode.Uri) => Promise<LeverEstimate[]> = () => Promise.resolve([]);
  /** A run set the store holds (read by its worker): its ranks and the rank picked. */
  static cachedSet: (uri: vscode.Uri) => { info: RunSetInfo; pick: number | undefined } | undefined = () => undefined;

  /** `focus`: the section the view scrolls to once drawn (what the command just added). */
  static createOrShow(extensionUri: vscode.Uri, log: Log, root: vscode.Uri, uris: vscode.Uri[], focus: string | null = null): ReportPanel {
    if (ReportPanel.current) {
      ReportPanel.current.panel.reveal(vscode.ViewColumn.Beside);
    } else {
      const panel = vscode.window.createWebviewPanel(REPORT_VIEW_TYPE, 'Membit Report', vscode.ViewColumn.Beside, webviewOptions(extensionUri));
      ReportPanel.current = new ReportPanel(panel, extensionUri, log, root);
    }
    void ReportPanel.current.show(uris, focus);
    return ReportPanel.current;
  }

  /**
   * The report view inside a panel VS Code made (a custom editor's): not the shared
   * panel, disposed with its editor.
   */
  static attach(panel: vscode.WebviewPanel, extensionUri: vscode.Uri, log: Log, root: vscode.Uri, uris: vscode.Uri[]): ReportPanel {
    panel.webview.options = webviewOptions(extensionUri);
    const p = new ReportPanel(panel, extensionUri, log, root);
    void p.show(uris);
    return p;
  }

  static revive(panel: vscode.WebviewPanel, extensionUri: vscode.Uri, log: Log, root: vscode.Uri, state: unknown): void {
    panel.webview.options = webviewOptions(extensionUri);
    ReportPanel.current = new ReportPanel(panel, extensionUri, log, root);
    const uris = (state as { uris?: unknown } | undefined)?.uris;
    const list = Array.isArray(uris) ? uris.filter((u): u is string => typeof u === 'string').map((u) => vscode.Uri.parse(u)) : [];
    void ReportPanel.current.show(list);
  }

  static get instance(): ReportPanel | undefined {
    return ReportPanel.current;
  }

  private constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly extensionUri: vscode.Uri,
    private readonly log: Log,
    private readonly root: vscode.Uri,
  ) {
    panel.webview.html = this.html();
    this.disposables.push(
      panel.onDidDispose(() => this.dispose()),
      panel.webview.onDidReceiveMessage((m) => void this.onMessage(m)),
      // The sites table follows edits of the files its sites are in (a conversion, a moved line).
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length && this.sitesIn(e.document.uri)) this.scheduleSites();
      }),
      { dispose: () => clearTimeout(this.sitesTimer) },
    );
  }

  /** Whether the view shows exactly this one report. */
  showing(uri: vscode.Uri): boolean {
    return this.uris.length === 1 && this.uris[0]?.fsPath === uri.fsPath;
  }

  get rendered(): RenderedSummary | undefined {
    return this.lastRendered;
  }

  async show(uris: vscode.Uri[], focus: string | null = null): Promise<void> {
    this.uris = uris;
    this.focus = focus;
    if (this.ready) await this.post();
  }

  private async post(): Promise<void> {
    const loaded: { label: string; report: Report; uri: vscode.Uri }[] = [];
    for (const uri of this.uris) {
      const known = ReportPanel.cached(uri);
      if (known) {
        const label = known.source ? `snapshot ${known.source.files.join(', ')}${known.source.rank !== null && known.source.rank !== undefined ? ` (rank ${known.source.rank})` : ''}` : `${known.run.variant} · ${known.run.started.slice(0, 19).replace('T', ' ')}`;
        loaded.push({ label, report: known, uri });
        continue;
      }
      let text: string;
      try {
        text = await readFile(uri.fsPath, 'utf8');
      } catch (e) {
        void notify.warn(`Membit: cannot read ${uri.fsPath}: ${String(e)}`);
        continue;
      }
      const parsed = parseReport(text, REPORT_SCHEMA, vscode.workspace.asRelativePath(uri));
      if (!parsed.ok) {
        void notify.warn(`Membit: ${parsed.error}`);
        continue;
      }
      loaded.push({ label: `${parsed.report.run.variant} · ${parsed.report.run.started.slice(0, 19).replace('T', ' ')}`, report: parsed.report, uri });
    }
    const [head] = loaded;
    if (!head) {
      this.panel.title = 'Membit Report';
      return;
    }
    const first = head.report;
    this.panel.title = `Membit: ${first.source ? first.source.files[0] : (first.run.script.split('/').pop() ?? 'report')}`;
    this.reports = loaded.map((l) => l.report);
    const comparison = loaded.length > 1 ? compareRuns(loaded) : null;
    const set = loaded.length === 1 ? ReportPanel.cachedSet(head.uri) : undefined;
    if (set) {
      const pick = set.pick;
      head.label = pick === undefined ? `max over ${set.info.ranks.length} ranks` : `rank ${pick}`;
    }
    const views = loaded.map((l) => buildView(l.report, l.label, { sparse24: sparseAdviceTables(this.extensionUri, this.log) }));
    this.sites = head.report.source || !views[0] ? undefined : { report: head.report, uri: head.uri, sites: views[0].sites };
    const msg: ToWebview = {
      ranks: set ? { info: set.info, pick: set.pick ?? null } : null,
      type: 'show',
      views,
      comparison,
      markdown: comparison ? comparisonMarkdown(comparison) : null,
      uris: loaded.map((l) => l.uri.toString()),
      sites: await this.siteStates(),
      levers: head.report.source ? [] : await this.levers(loaded, views[0]?.sites.reduce((a, s) => a + s.saving_if_packed, 0) ?? 0),
      focus: this.focus,
    };
    this.focus = null;
    await this.panel.webview.postMessage(msg);
  }

  /**
   * Every lever for the first report, largest saving first: measured by the compared variant
   * runs (or the run history, for the run the editor shows), else estimated by the scanner.
   */
  private async levers(loaded: { report: Report; uri: vscode.Uri }[], packSaving: number): Promise<LeverRow[]> {
    const head = loaded[0];
    if (!head) return [];
    const base = runBrief(head.report);
    const measured: ReadonlyMap<string, LeverMeasurement> =
      loaded.length > 1 && base ? leverDeltas(base, loaded.slice(1).flatMap((l) => runBrief(l.report) ?? [])) : (ReportPanel.storeLevers(head.uri) ?? new Map());
    let estimates: LeverEstimate[] = [];
    const script = resolveInside(this.root.fsPath, head.report.run.script);
    if (script) {
      try {
        estimates = (await ReportPanel.leverEstimates(vscode.Uri.file(script))).map((e) => ({ ...e, file: normalizePath(relative(this.root.fsPath, e.file)) }));
      } catch (e) {
        // Without a scan the list still ranks what was measured.
        this.log.warn(`report view: no lever estimates for ${head.report.run.script}: ${String(e)}`);
      }
    }
    const peak = base?.peak ?? 0;
    return rankLevers({ peak, measured, estimates, packSaving: head.report.sites.length ? packSaving : null, scanned: head.report.run.script });
  }

  /** Whether a document holds one of the shown sites. */
  private sitesIn(uri: vscode.Uri): boolean {
    const r = this.sites?.report;
    if (!r || uri.scheme !== 'file') return false;
    const rel = normalizePath(relative(this.root.fsPath, uri.fsPath));
    return r.sites.some((s) => normalizePath(s.file) === rel);
  }

  private scheduleSites(): void {
    clearTimeout(this.sitesTimer);
    this.sitesTimer = setTimeout(() => {
      void this.siteStates().then((states) => this.panel.webview.postMessage({ type: 'sites', states } satisfies ToWebview));
    }, 250);
  }

  /**
   * Where the shown sites are now: through the editor's line mapping when the editor shows
   * this run, else as recorded while the file is unchanged; converted when the line that
   * builds (or calls) the site now uses Membit's replacement.
   */
  private async siteStates(): Promise<SiteState[]> {
    const shown = this.sites;
    if (!shown) return [];
    const { report, uri, sites } = shown;
    const files = new Map<string, FileNow | undefined>();
    for (const s of sites) {
      if (files.has(s.file)) continue;
      files.set(s.file, await this.fileNow(report, uri, s.file));
    }
    return siteStates(
      sites.map((s) => {
        const built = this.constructionLine(s.file, s.line, s.module);
        return { file: s.file, line: s.line, builtAt: built === s.line ? undefined : built };
      }),
      (f) => files.get(f),
    );
  }

  private async fileNow(report: Report, reportUri: vscode.Uri, file: string): Promise<FileNow | undefined> {
    const abs = this.resolveInWorkspace(file);
    if (!abs) return undefined;
    let doc: vscode.TextDocument;
    try {
      doc = await vscode.workspace.openTextDocument(abs);
    } catch {
      return undefined;
    }
    const text = doc.getText();
    const converted = convertedLines(text);
    const editor = ReportPanel.editor;
    if (editor?.shows(reportUri)) {
      return { current: (l) => editor.currentLine(doc, l), converted, edited: editor.isStale(doc) ?? false };
    }
    // Another run than the editor's: its lines hold only while the file is the text that ran.
    // A report without hashes ('unknown') is taken at its word.
    const same = freshness(report, normalizePath(relative(this.root.fsPath, abs.fsPath)), text) !== 'edited';
    return { current: (l) => (same ? l : undefined), converted, edited: !same };
  }

  private async onMessage(raw: unknown): Promise<void> {
    const m = parseFromWebview(raw);
    if (!m) {
      this.log.warn(`report view: ignored a malformed message`);
      return;
    }
    switch (m.command) {
      case 'ready':
        this.ready = true;
        await this.post();
        return;
      case 'rendered':
        this.lastRendered = m.summary;
        ReportPanel.latestRendered = m.summary;
        return;
      case 'pickRank':
        // The editor's overlays follow the view's picker; the store's change re-posts this view.
        await vscode.commands.executeCommand(Commands.pickRank, m.rank ?? 'max');
        return;
      case 'copy':
        await vscode.env.clipboard.writeText(m.text);
        void vscode.window.setStatusBarMessage('Membit: comparison copied as Markdown', 3000);
        return;
      case 'open':
      case 'convert': {
        const uri = this.resolveInWorkspace(m.file);
        if (!uri) {
          void notify.warn(`Membit: ${m.file} is not in this workspace.`);
          return;
        }
        const doc = await vscode.workspace.openTextDocument(uri);
        // A dropout module is converted where it is built, not where it is called.
        const target = m.command === 'convert' ? this.constructionLine(m.file, m.line, m.module) : m.line;
        const line = Math.min(target - 1, doc.lineCount - 1);
        const editor = await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.One, selection: new vscode.Range(line, 0, line, 0) });
        editor.revealRange(new vscode.Range(line, 0, line, 0), vscode.TextEditorRevealType.InCenter);
        if (m.command === 'convert') {
          const cmd = m.kind === 'ffn' ? Commands.convertFfnToSparse24 : Commands.convertToPackedDropout;
          await vscode.commands.executeCommand(cmd, uri, line);
        }
        return;
      }
    }
  }

  /** The line that built the site's module (from the report), or the site's own line. */
  private constructionLine(file: string, line: number, module: string | null): number {
    if (!module) return line;
    const matches = pathMatcher(module);
    for (const r of this.reports) {
      const m = r.modules.find((x) => matches(x.path) && x.created_at?.file === file);
      if (m?.created_at) return m.created_at.line;
    }
    return line;
  }

  /** A report path, relative to the run root or absolute, only if it stays inside the workspace. */
  private resolveInWorkspace(file: string): vscode.Uri | undefined {
    // Symlinks are resolved first: a link inside the workspace may point outside it.
    const abs = resolveInside(this.root.fsPath, file);
    return abs === undefined ? undefined : vscode.Uri.file(abs);
  }

  private html(): string {
    const w = this.panel.webview;
    const nonce = randomBytes(16).toString('base64');
    const script = w.asWebviewUri(vscode.Uri.joinPath(this.extensionUri, 'dist', 'media', 'report.js'));
    const style = w.asWebviewUri(vscode.Uri.joinPath(this.extensionUri, 'dist', 'media', 'report.css'));
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src ${w.cspSource} data:; style-src ${w.cspSource}; font-src ${w.cspSource}; script-src 'nonce-${nonce}';">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${style.toString()}">
<title>Membit Report</title>
</head>
<body>
<div id="root"><p id="empty">Loading report…</p></div>
<script nonce="${nonce}" src="${script.toString()}"></script>
</body>
</html>`;
  }

  dispose(): void {
    if (ReportPanel.current === this) ReportPanel.current = undefined;
    this.panel.dispose();
    for (const d of this.disposables.splice(0)) d.dispose();
  }
}

function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewPanelOptions & vscode.WebviewOptions {
  return {
    enableScripts: true,
    retainContextWhenHidden: false,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'media')],
  };
}
