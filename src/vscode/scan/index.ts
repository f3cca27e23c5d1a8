import { readPrediction, relabelPredicted } from '../../core/report/prediction';
import { dirname, relative } from 'node:path';
import * as vscode from 'vscode';
import { notify } from '../notify';
import {
  DEFAULT_BUDGET_MS,
  formatHint,
  formatHover,
  hintSites,
  shapeHintsFromReport,
  siteSeverity,
  summarizeClasses,
  type ScanOptions,
  type ScanResult,
  type Site,
} from '../../core/scan';
import type { Log } from '../log';
import { sparseAdviceTables } from '../sparseAdvice';
import { TorchCapabilityProvider } from './capabilities';
import { ScanRestartedError, ScanWorker } from '../../core/scan/workerClient';
import type { ReportStore } from '../report/store';
import { remapShapeHints } from '../../core/report/freshness';
import { contradicts, formatLeverMeasurement } from '../../core/report/leverDeltas';
import type { LeverEstimate } from '../../core/report/levers';
import { getSettings, onSettingsChanged } from '../settings';
import type { DisposableLike } from '../disposables';

/** What the scan adapter shows for one document; the e2e suite reads it through a test command. */
export interface ScanState {
  uri: string;
  sites: { line: number; kind: string; code: string; hint: string; severity: 'information' | 'hint' | 'warning'; message: string }[];
  lenses: { line: number; title: string }[];
  skipped?: string;
  error?: string;
  /** The scan stopped early (its budget): what was not read, and why. */
  partial?: string;
}

const DEBOUNCE_MS = 250;

/** Where the shown run's lines are now in an edited document (the overlays track edits). */
export interface ReportLines {
  /** 1-based report line → 1-based current line; undefined where its text is gone. */
  currentLine(doc: vscode.TextDocument, reportLine: number): number | undefined;
  /** Whether the shown run measured this document (its class CodeLens then shows measured totals). */
  measures(doc: vscode.TextDocument): boolean;
}

function isTextDocument(d: { uri: vscode.Uri }): d is vscode.TextDocument {
  return typeof (d as vscode.TextDocument).getText === 'function' && typeof (d as vscode.TextDocument).lineAt === 'function';
}

/**
 * Shows the static scanner's findings in the editor: Information diagnostics with
 * codes (code actions hook into them), end-of-line estimates, a CodeLens per model
 * class, and hovers. Rescans are incremental and debounced, and run in a worker thread
 * (core/scan/worker.ts): no file, however pathological, can hold the extension host.
 */
export class ScanFeature implements vscode.Disposable {
  private readonly worker: ScanWorker;
  /** The newest scan asked for each document (or notebook); older answers are dropped. */
  private readonly latest = new Map<string, { seq: number; done: Promise<void>; version?: number }>();
  /** The document version each shown result was scanned from. */
  private readonly scannedVersion = new Map<string, number>();
  private seq = 0;
  private warnedGrammar = false;
  private readonly results = new Map<string, ScanResult>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly diagnostics = vscode.languages.createDiagnosticCollection('membit');
  private readonly hintType = vscode.window.createTextEditorDecorationType({
    after: { color: new vscode.ThemeColor('membit.estimateText'), margin: '0 0 0 2em' },
  });
  private readonly lensChanged = new vscode.EventEmitter<void>();
  private readonly disposables: DisposableLike[] = [this.diagnostics, this.hintType, this.lensChanged];
  private readonly warnedTooLarge = new Set<string>();
  private readonly warnedPartial = new Set<string>();
  private readonly capabilities: TorchCapabilityProvider;
  private readonly extensionUri: vscode.Uri;

  constructor(
    context: vscode.ExtensionContext,
    private readonly log: Log,
    private readonly reports: ReportStore,
    private readonly reportLines?: ReportLines,
  ) {
    this.extensionUri = context.extensionUri;
    this.capabilities = new TorchCapabilityProvider(vscode.Uri.joinPath(context.extensionUri, 'dist', 'kernels').fsPath, log);
    this.disposables.push(this.capabilities, this.capabilities.onDidChange(() => this.rescanAll()));
    // The grammar loads in the worker with its first scan, after activation has returned.
    const dist = vscode.Uri.joinPath(context.extensionUri, 'dist').fsPath;
    this.worker = new ScanWorker({
      workerPath: vscode.Uri.joinPath(context.extensionUri, 'dist', 'scanWorker.js').fsPath,
      assetDir: dist,
      onRestart: (why) => this.log.warn(`scanner: ${why}`),
    });
    this.disposables.push({ dispose: () => this.worker.dispose() });
    for (const doc of vscode.workspace.textDocuments) this.schedule(doc, 0);
    for (const nb of vscode.workspace.notebookDocuments) this.scheduleNotebook(nb);
    this.disposables.push(
      vscode.workspace.onDidOpenTextDocument((d) => this.schedule(d, 0)),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (e.contentChanges.length) this.schedule(e.document);
      }),
      vscode.workspace.onDidCloseTextDocument((d) => this.forget(d.uri)),
      vscode.workspace.onDidOpenNotebookDocument((nb) => this.scheduleNotebook(nb)),
      vscode.workspace.onDidChangeNotebookDocument((e) => this.scheduleNotebook(e.notebook)),
      vscode.window.onDidChangeVisibleTextEditors(() => this.renderHints()),
      // The context menu offers only the conversions that apply to the site under the cursor.
      vscode.window.onDidChangeTextEditorSelection((e) => this.updateCursorContext(e.textEditor)),
      vscode.window.onDidChangeActiveTextEditor((e) => this.updateCursorContext(e)),
      onSettingsChanged(['shapes', 'scan', 'diagnostics', 'hints', 'codeLens', 'hover'], () => this.rescanAll()),
      reports.onDidChange(() => this.rescanAll()),
      vscode.languages.registerCodeLensProvider({ language: 'python' }, { onDidChangeCodeLenses: this.lensChanged.event, provideCodeLenses: (d) => this.lenses(d) }),
      vscode.languages.registerHoverProvider({ language: 'python' }, { provideHover: (d, p) => this.hover(d, p) }),
    );
  }

  /** What the adapter shows for a document once its pending scan is done (for the e2e suite's test hook). */
  async stateAfterScan(uri: vscode.Uri): Promise<ScanState> {
    await this.latest.get(uri.toString())?.done;
    return this.state(uri);
  }

  /** The latest scan of a document (after pending rescans), for code actions. */
  async resultFor(doc: vscode.TextDocument): Promise<ScanResult | undefined> {
    const key = doc.uri.toString();
    if (doc.uri.scheme === 'vscode-notebook-cell') {
      // A cell's findings come from its notebook's scan.
      const nb = vscode.workspace.notebookDocuments.find((n) => n.getCells().some((c) => c.document === doc));
      if (nb) await this.latest.get(nb.uri.toString())?.done;
      return this.results.get(key);
    }
    if (doc.languageId !== 'python') return undefined;
    // Code actions edit by the result's ranges: only a scan of this very text will do. A failed
    // scan leaves the older result on screen, never in an edit.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.timers.has(key) || !this.latest.has(key) || (this.latest.get(key)?.version ?? -1) !== doc.version) {
        clearTimeout(this.timers.get(key));
        this.timers.delete(key);
        this.scanNow(doc);
      }
      await this.latest.get(key)?.done;
      if (this.scannedVersion.get(key) === doc.version) return this.results.get(key);
    }
    return undefined;
  }

  /** The levers the scanner proposes in a script, with their estimated savings (absolute paths). */
  async leverEstimates(script: vscode.Uri): Promise<LeverEstimate[]> {
    const doc = await vscode.workspace.openTextDocument(script);
    const result = await this.resultFor(doc);
    return (result?.sites ?? []).flatMap((s) =>
      s.advice && !s.advice.unavailable && s.advice.savingBytes !== undefined && s.advice.savingBytes > 0
        ? [{ lever: s.advice.lever, savingBytes: s.advice.savingBytes, file: script.fsPath, line: s.range.startLine + 1 }]
        : [],
    );
  }

  private options(doc: { uri: vscode.Uri }): ScanOptions {
    const s = getSettings(doc.uri);
    const loaded = this.reports.report;
    // The budget bounds how long one scan can hold this thread (see ScanResult.partial).
    const opts: ScanOptions = { maxBytes: s.scan.maxFileSizeKB * 1024, shapes: s.shapes, budgetMs: DEFAULT_BUDGET_MS };
    const caps = this.capabilities.get(doc.uri);
    if (caps) opts.capabilities = caps;
    // The config classes a modeling file imports from its folder give its shapes (related.ts).
    if (doc.uri.scheme === 'file') opts.relatedDir = dirname(doc.uri.fsPath);
    if (loaded && doc.uri.scheme === 'file') {
      const hints = shapeHintsFromReport(loaded.index.report, relative(loaded.root.fsPath, doc.uri.fsPath));
      // Report lines are those of the profiled text; after edits they sit elsewhere.
      const lines = this.reportLines;
      const text = isTextDocument(doc) ? doc : undefined;
      opts.hints = lines && text ? remapShapeHints(hints, (l) => lines.currentLine(text, l)) : hints;
    }
    const tables = sparseAdviceTables(this.extensionUri, this.log);
    if (tables.length) {
      // The GPU the last run used is the one the user trains on; otherwise the tables speak for theirs.
      const device = loaded?.index.report.run.device;
      opts.sparse24 = { tables, gpu: device?.type === 'cuda' ? device.name : undefined };
    }
    return opts;
  }

  /** Runs `fn` for `key` after `ms` without a newer call for the same key. */
  private debounce(key: string, ms: number, fn: () => void): void {
    const t = this.timers.get(key);
    if (t) clearTimeout(t);
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        fn();
      }, ms),
    );
  }

  private schedule(doc: vscode.TextDocument, ms = DEBOUNCE_MS): void {
    if (doc.languageId !== 'python' || doc.uri.scheme === 'vscode-notebook-cell') return;
    this.debounce(doc.uri.toString(), ms, () => this.scanNow(doc));
  }

  /**
   * Sends `run` to the worker as the newest scan of `key`; `apply` runs only if no newer scan
   * of it was asked for meanwhile (typing sends scans faster than a slow file answers).
   */
  private track(key: string, run: () => Promise<ScanResult>, apply: (r: ScanResult) => void, again: () => void, version?: number): void {
    const seq = ++this.seq;
    const done = run().then(
      (result) => {
        if (this.latest.get(key)?.seq === seq) apply(result);
      },
      (e: unknown) => {
        if (this.latest.get(key)?.seq !== seq) return;
        if (e instanceof ScanRestartedError) {
          again();
          return;
        }
        const message = e instanceof Error ? e.message : String(e);
        this.log.warn(`scan of ${key}: ${message}`);
        if (message.includes('grammar could not load') && !this.warnedGrammar) {
          this.warnedGrammar = true;
          void notify.error(`Membit: the Python scanner could not load (${message}). Reinstall the extension.`);
        }
      },
    );
    this.latest.set(key, version === undefined ? { seq, done } : { seq, done, version });
  }

  private scanNow(doc: vscode.TextDocument): void {
    if (doc.isClosed) return;
    const key = doc.uri.toString();
    const version = doc.version;
    this.track(
      key,
      () => this.worker.scan(key, doc.uri.fsPath, doc.getText(), this.options(doc)),
      (result) => {
        if (doc.isClosed) return;
        this.scannedVersion.set(key, version);
        this.show(doc, key, result);
      },
      () => this.schedule(doc, 0),
      version,
    );
  }

  private show(doc: vscode.TextDocument, key: string, result: ScanResult): void {
    this.results.set(key, result);
    if (result.skipped && !this.warnedTooLarge.has(key)) {
      this.warnedTooLarge.add(key);
      void notify.info(`Membit: ${result.skipped.message}`);
    }
    if (result.error) this.log.warn(`scan of ${doc.uri.fsPath}: ${result.error}`);
    if (result.partial) {
      this.log.warn(`scan of ${doc.uri.fsPath}: ${result.partial.message}`);
      if (!this.warnedPartial.has(key)) {
        this.warnedPartial.add(key);
        void notify.info(result.partial.message);
      }
    }
    this.publish(doc.uri, result.sites, result.peakBytes);
    this.renderHints();
    this.lensChanged.fire();
    if (vscode.window.activeTextEditor?.document === doc) this.updateCursorContext(vscode.window.activeTextEditor);
  }

  /** Notebooks: the Python cells are scanned together; findings land on their cells. */
  private scheduleNotebook(nb: vscode.NotebookDocument): void {
    this.debounce(nb.uri.toString(), DEBOUNCE_MS, () => {
      if (nb.isClosed) return;
      const cells = nb.getCells().filter((c) => c.kind === vscode.NotebookCellKind.Code && c.document.languageId === 'python');
      this.track(
        nb.uri.toString(),
        () => this.worker.scanCells(nb.uri.fsPath, cells.map((c) => ({ index: c.index, text: c.document.getText() })), this.options(nb)),
        (result) => {
          if (nb.isClosed) return;
          for (const c of cells) {
            const sites = result.sites.filter((s) => s.cell === c.index);
            this.results.set(c.document.uri.toString(), { ...result, sites, classes: result.classes.filter((k) => k.cell === c.index) });
            this.publish(c.document.uri, sites, result.peakBytes);
          }
          this.renderHints();
          this.lensChanged.fire();
        },
        () => this.scheduleNotebook(nb),
      );
    });
  }

  /**
   * Information for every scanner site and the advisor's proposals that matter; Hint
   * for advisor findings that are not proposals here (see `siteSeverity`).
   */
  private publish(uri: vscode.Uri, sites: readonly Site[], peakBytes?: number): void {
    if (!getSettings(uri).diagnostics.enabled) {
      this.diagnostics.delete(uri);
      return;
    }
    this.diagnostics.set(
      uri,
      sites.map((s) => {
        const severity = SEVERITY[effectiveSeverity(s, peakBytes, getSettings(uri).diagnostics.estimateSeverity)];
        const measured = this.measuredFor(s);
        const d = new vscode.Diagnostic(toRange(s), measured ? `${s.message} — ${measured.text}` : s.message, severity);
        d.code = s.code;
        d.source = 'Membit';
        return d;
      }),
    );
  }

  /** A site's hint; figures taken from a predicted report say "predicted", not "measured". */
  private hintText(s: Parameters<typeof formatHint>[0]): string {
    const loaded = this.reports.report;
    const text = formatHint(s);
    return loaded && readPrediction(loaded.index.report) ? relabelPredicted(text) : text;
  }

  private renderHints(): void {
    for (const editor of vscode.window.visibleTextEditors) {
      const result = this.results.get(editor.document.uri.toString());
      if (!result || !getSettings(editor.document.uri).hints.enabled) {
        editor.setDecorations(this.hintType, []);
        continue;
      }
      // One hint per line: the biggest lever's when a line holds several.
      editor.setDecorations(
        this.hintType,
        hintSites(result.sites)
          .filter((s) => s.range.startLine < editor.document.lineCount)
          .map((s) => {
            const end = editor.document.lineAt(s.range.startLine).range.end;
            return { range: new vscode.Range(end, end), renderOptions: { after: { contentText: this.hintText(s) } } };
          }),
      );
    }
  }

  private lenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    const result = this.results.get(doc.uri.toString());
    if (!result || !getSettings(doc.uri).codeLens.enabled) return [];
    // One lens per class: where the run measured the file, its measured totals replace the estimate.
    if (this.reportLines?.measures(doc)) return [];
    return summarizeClasses(result).map((c) => {
      const line = Math.min(c.range.startLine, doc.lineCount - 1);
      // A lens with no command is shown as plain text.
      return new vscode.CodeLens(new vscode.Range(line, 0, line, 0), { title: c.title, command: '' });
    });
  }

  private hover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | undefined {
    if (!getSettings(doc.uri).hover.enabled) return undefined;
    const result = this.results.get(doc.uri.toString());
    const site = result?.sites.find((s) => toRange(s).contains(pos));
    if (!site) return undefined;
    const md = new vscode.MarkdownString(formatHover(site, this.capabilities.get(doc.uri) ?? null));
    const measured = this.measuredFor(site);
    if (measured) {
      md.appendMarkdown('\n\n---\n\n**Measured:** ');
      // Plain text: the run's name comes from a report (untrusted).
      md.appendText(measured.text);
    }
    return new vscode.Hover(md, toRange(site));
  }

  private cursorKinds = '';

  /** Sets `membit.cursorSite` to the kinds of the sites on the cursor's line (`dropout attn-dropout`, `ffn`, or ''). */
  private updateCursorContext(editor: vscode.TextEditor | undefined): void {
    const result = editor ? this.results.get(editor.document.uri.toString()) : undefined;
    const line = editor?.selection.active.line;
    const kinds = result && line !== undefined ? [...new Set(result.sites.filter((s) => s.range.startLine <= line && line <= s.range.endLine).map((s) => s.kind))].sort().join(' ') : '';
    if (kinds === this.cursorKinds) return;
    this.cursorKinds = kinds;
    void vscode.commands.executeCommand('setContext', 'membit.cursorSite', kinds);
  }

  /**
   * The measured peak change of this site's lever, from the variant runs compared with the
   * shown baseline; says so where the measurement contradicts the estimate.
   */
  private measuredFor(site: Site): { text: string; contradicted: boolean } | undefined {
    const variants = leverVariants(site);
    for (const v of variants) {
      const m = this.reports.levers.get(v);
      if (!m) continue;
      const contradicted = contradicts(m, site.advice?.savingBytes ?? (site.estimate.maskBytes !== undefined && site.estimate.packedBytes !== undefined ? site.estimate.maskBytes - site.estimate.packedBytes : undefined));
      return { text: `${formatLeverMeasurement(m)}${contradicted ? '; this contradicts the estimate: the lever did not lower the peak here' : ''}`, contradicted };
    }
    return undefined;
  }

  private state(uri: vscode.Uri): ScanState {
    const result = this.results.get(uri.toString());
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri.toString());
    const state: ScanState = {
      uri: uri.toString(),
      sites: (result?.sites ?? []).map((s) => ({
        line: s.range.startLine + 1,
        kind: s.kind,
        code: s.code,
        hint: this.hintText(s),
        severity: effectiveSeverity(s, result?.peakBytes, getSettings(uri).diagnostics.estimateSeverity),
        message: s.message,
      })),
      lenses: doc ? this.lenses(doc).map((l) => ({ line: l.range.start.line + 1, title: l.command?.title ?? '' })) : [],
    };
    if (result?.skipped) state.skipped = result.skipped.message;
    if (result?.error) state.error = result.error;
    if (result?.partial) state.partial = result.partial.message;
    return state;
  }

  private rescanAll(): void {
    for (const doc of vscode.workspace.textDocuments) this.schedule(doc, 0);
    for (const nb of vscode.workspace.notebookDocuments) this.scheduleNotebook(nb);
  }

  private forget(uri: vscode.Uri): void {
    const key = uri.toString();
    this.worker.forget(key);
    this.latest.delete(key);
    this.scannedVersion.delete(key);
    this.results.delete(key);
    this.diagnostics.delete(uri);
    const t = this.timers.get(key);
    if (t) clearTimeout(t);
    this.timers.delete(key);
  }

  dispose(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    for (const d of this.disposables) d.dispose();
  }
}

const SEVERITY = { hint: vscode.DiagnosticSeverity.Hint, information: vscode.DiagnosticSeverity.Information, warning: vscode.DiagnosticSeverity.Warning } as const;

/**
 * How loud a finding is: the scanner's own rule (Hint for what proposes nothing here), and
 * for a finding whose figure is only an estimate, the level `membit.diagnostics.estimateSeverity`
 * sets (a faint Hint by default); measured findings stay Information.
 */
function effectiveSeverity(site: Site, peakBytes: number | undefined, estimates: 'hint' | 'information' | 'warning'): 'hint' | 'information' | 'warning' {
  const base = siteSeverity(site, peakBytes);
  if (base === 'hint') return 'hint';
  const measured = site.estimate.source === 'report' || site.advice?.basis === 'measured';
  return measured ? base : estimates;
}

/** The harness variants that measure a site's lever (packed dropout for dropout sites, sdpa for eager attention, …). */
function leverVariants(site: Site): string[] {
  switch (site.advice?.lever) {
    case 'sdpa':
      return ['sdpa'];
    case 'autocast':
      return ['bf16'];
    case 'checkpoint':
      return ['checkpoint'];
    default:
      break;
  }
  if (site.kind === 'dropout' || site.kind === 'dropout-call' || site.kind === 'attn-dropout') return ['packed', 'recompute'];
  if (site.kind === 'ffn') return ['sparse24'];
  return [];
}

function toRange(s: Site): vscode.Range {
  return new vscode.Range(s.range.startLine, s.range.startCol, s.range.endLine, s.range.endCol);
}

export function registerScanFeature(context: vscode.ExtensionContext, log: Log, reports: ReportStore, reportLines?: ReportLines): ScanFeature {
  const f = new ScanFeature(context, log, reports, reportLines);
  context.subscriptions.push(f);
  return f;
}
