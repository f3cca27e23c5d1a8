import { statSync } from 'node:fs';
import { relative } from 'node:path';
import * as vscode from 'vscode';
import { formatBytes } from '../../core/run/harness';
import { inlineText, linesForFile, normalizePath, showsInline, type HeatBucket, type LineInfo } from '../../core/report/model';
import type { SiteEntry } from '../../core/report/types';
import { LineMapper } from '../../core/report/lineMap';
import { readPrediction } from '../../core/report/prediction';
import { Commands } from '../../commands';
import { getSettings, onSettingsChanged } from '../settings';
import type { LoadedReport, ReportStore } from './store';

const BUCKETS: readonly HeatBucket[] = ['low', 'medium', 'high'];

/** What the overlays put on one editor; the e2e suite reads it through a test command. */
export interface AppliedOverlays {
  file: string;
  stale: boolean;
  gutter: Record<HeatBucket, number[]>;
  inline: { line: number; text: string }[];
  /** The figures are a prediction (no GPU used): drawn in their own colour and words. */
  predicted: boolean;
}

interface DocState {
  mapper: LineMapper;
  lines: Map<number, LineInfo>;
  stale: boolean;
}

/**
 * Paints the loaded report into editors: gutter heat marks, overview-ruler marks and
 * end-of-line text on the top lines. A few decoration types, created once; updates
 * are debounced; line positions follow edits made after the run.
 */
export class Overlays implements vscode.Disposable {
  private readonly gutterTypes: Record<HeatBucket, vscode.TextEditorDecorationType>;
  private readonly inlineType: vscode.TextEditorDecorationType;
  /** Predicted figures look different from measured ones: own colour, not italic. */
  private readonly predictedType: vscode.TextEditorDecorationType;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly docs = new Map<string, DocState>();
  private enabled = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly applied = new Map<string, AppliedOverlays>();

  constructor(extensionUri: vscode.Uri, private readonly store: ReportStore) {
    const settings = getSettings();
    const mk = (b: HeatBucket) =>
      vscode.window.createTextEditorDecorationType({
        gutterIconPath: settings.overlays.gutter ? vscode.Uri.joinPath(extensionUri, 'media', `heat-${b}.svg`) : undefined,
        gutterIconSize: 'contain',
        overviewRulerColor: settings.overlays.overviewRuler ? new vscode.ThemeColor(`membit.heat.${b}`) : undefined,
        overviewRulerLane: vscode.OverviewRulerLane.Left,
      });
    this.gutterTypes = { low: mk('low'), medium: mk('medium'), high: mk('high') };
    this.inlineType = vscode.window.createTextEditorDecorationType({
      after: { color: new vscode.ThemeColor('membit.inlineText'), margin: '0 0 0 2em', fontStyle: 'italic' },
    });
    this.predictedType = vscode.window.createTextEditorDecorationType({
      after: { color: new vscode.ThemeColor('membit.predictedText'), margin: '0 0 0 2em' },
    });
    this.disposables.push(this.gutterTypes.low, this.gutterTypes.medium, this.gutterTypes.high, this.inlineType, this.predictedType);
    this.disposables.push(
      store.onDidChange(() => {
        this.docs.clear();
        this.schedule(0);
      }),
      vscode.window.onDidChangeVisibleTextEditors(() => this.schedule()),
      vscode.workspace.onDidChangeTextDocument((e) => this.onEdit(e)),
      vscode.workspace.onDidSaveTextDocument(() => this.schedule()),
      onSettingsChanged(['overlays'], () => this.schedule(0)),
    );
  }

  get isEnabled(): boolean {
    return this.enabled;
  }

  toggle(): boolean {
    this.enabled = !this.enabled;
    this.schedule(0);
    return this.enabled;
  }

  /** What is applied now, per visible editor (for tests and the hover). */
  appliedOverlays(): AppliedOverlays[] {
    return [...this.applied.values()];
  }

  /** Dropout sites the run measured on a document line (by its current position). */
  sitesAt(doc: vscode.TextDocument, line: number): SiteEntry[] {
    const st = this.state(doc);
    const loaded = this.store.report;
    if (!st || !loaded) return [];
    const reportLine = st.mapper.entries().find(([, cur]) => cur === line)?.[0];
    if (reportLine === undefined) return [];
    const rel = normalizePath(relative(loaded.root.fsPath, doc.uri.fsPath));
    return loaded.index.report.sites.filter((s) => normalizePath(s.file) === rel && s.line === reportLine + 1);
  }

  /** The measured lines of a document, at their current positions. */
  linesOf(doc: vscode.TextDocument): Map<number, LineInfo> | undefined {
    const st = this.state(doc);
    if (!st) return undefined;
    const out = new Map<number, LineInfo>();
    for (const [reportLine, cur] of st.mapper.entries()) {
      const info = st.lines.get(reportLine + 1);
      if (info) out.set(cur, info);
    }
    return out;
  }

  private state(doc: vscode.TextDocument): DocState | undefined {
    const loaded = this.store.report;
    if (!loaded || doc.uri.scheme !== 'file') return undefined;
    const key = doc.uri.toString();
    let st = this.docs.get(key);
    if (!st) {
      const lines = linesForFile(loaded.index, relative(loaded.root.fsPath, doc.uri.fsPath));
      if (!lines) return undefined;
      // Report lines are 1-based; the mapper works in 0-based document lines.
      st = { mapper: new LineMapper([...lines.keys()].map((l) => l - 1)), lines, stale: isStale(doc, loaded) };
      this.docs.set(key, st);
    }
    return st;
  }

  private onEdit(e: vscode.TextDocumentChangeEvent): void {
    const st = this.docs.get(e.document.uri.toString());
    if (!st || e.contentChanges.length === 0) return;
    st.mapper.apply(
      e.contentChanges.map((c) => ({
        startLine: c.range.start.line,
        startCol: c.range.start.character,
        endLine: c.range.end.line,
        endCol: c.range.end.character,
        text: c.text,
      })),
    );
    st.stale = true;
    this.schedule();
  }

  private schedule(ms = 150): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.render(), ms);
  }

  private render(): void {
    this.applied.clear();
    const settings = getSettings();
    const loaded = this.store.report;
    const prediction = loaded ? readPrediction(loaded.index.report) : undefined;
    for (const editor of vscode.window.visibleTextEditors) {
      const doc = editor.document;
      const lines = this.enabled ? this.linesOf(doc) : undefined;
      const st = this.docs.get(doc.uri.toString());
      const gutter: Record<HeatBucket, vscode.Range[]> = { low: [], medium: [], high: [] };
      const inline: vscode.DecorationOptions[] = [];
      const applied: AppliedOverlays = { file: doc.uri.fsPath, stale: !!st?.stale, gutter: { low: [], medium: [], high: [] }, inline: [], predicted: !!prediction };
      for (const [line, info] of lines ?? []) {
        if (line >= doc.lineCount || !info.bucket) continue;
        const range = doc.lineAt(line).range;
        if (settings.overlays.gutter || settings.overlays.overviewRuler) {
          gutter[info.bucket].push(range);
          applied.gutter[info.bucket].push(line + 1);
        }
        if (settings.overlays.inline && showsInline(info)) {
          const base = inlineText(info);
          const text = `${st?.stale ? '⚠ stale · ' : ''}${prediction ? `≈ ${base.replace(/^▲ /, '')} (predicted, ${prediction.gpuKey})` : base}`;
          inline.push({ range: new vscode.Range(range.end, range.end), renderOptions: { after: { contentText: text } } });
          applied.inline.push({ line: line + 1, text });
        }
      }
      for (const b of BUCKETS) editor.setDecorations(this.gutterTypes[b], gutter[b]);
      editor.setDecorations(this.inlineType, prediction ? [] : inline);
      editor.setDecorations(this.predictedType, prediction ? inline : []);
      if (lines) this.applied.set(doc.uri.toString(), applied);
    }
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}

/** A file saved after the run started may no longer match the report's lines. */
function isStale(doc: vscode.TextDocument, loaded: LoadedReport): boolean {
  if (doc.isDirty) return true;
  const started = Date.parse(loaded.index.report.run.started);
  try {
    return Number.isFinite(started) && statSync(doc.uri.fsPath).mtimeMs > started;
  } catch {
    return false;
  }
}

/** Hover on a measured line: the breakdown and what converting would save. */
export function registerReportHover(overlays: Overlays, store: ReportStore): vscode.Disposable {
  return vscode.languages.registerHoverProvider({ language: 'python', scheme: 'file' }, {
    provideHover(doc, pos) {
      if (!getSettings(doc.uri).hover.enabled || !overlays.isEnabled) return undefined;
      const info = overlays.linesOf(doc)?.get(pos.line);
      if (!info) return undefined;
      const md = new vscode.MarkdownString(undefined, true);
      md.isTrusted = { enabledCommands: [Commands.convertToPackedDropout] };
      const loaded = store.report;
      const prediction = loaded ? readPrediction(loaded.index.report) : undefined;
      const how = prediction
        ? `predicted for ${prediction.gpuName} (no GPU was used${prediction.complete ? '' : '; partial: a lower bound'})`
        : 'measured';
      md.appendMarkdown(`**Membit** — ${how}: ${formatBytes(info.savedBytes)} saved for backward on this line\n\n`);
      const ops = new Map<string, { bytes: number; count: number }>();
      const modules = new Set<string>();
      for (const e of info.entries) {
        if (e.module) modules.add(e.module);
        for (const op of e.ops) {
          const o = ops.get(op.op) ?? { bytes: 0, count: 0 };
          o.bytes += op.bytes;
          o.count += op.count;
          ops.set(op.op, o);
        }
      }
      if (ops.size) {
        md.appendMarkdown('| op | bytes | tensors |\n|---|---:|---:|\n');
        for (const [op, o] of [...ops].sort((a, b) => b[1].bytes - a[1].bytes)) md.appendMarkdown(`| \`${op}\` | ${formatBytes(o.bytes)} | ${o.count} |\n`);
        md.appendMarkdown('\n');
      }
      md.appendMarkdown(`Activations ${formatBytes(info.savedBytes - info.maskBytes)} · masks ${formatBytes(info.maskBytes)}\n\n`);
      if (modules.size) md.appendMarkdown(`Module: ${[...modules].map((m) => `\`${m}\``).join(', ')}\n\n`);
      const sites = overlays.sitesAt(doc, pos.line);
      if (sites.length) {
        const elements = sites.reduce((a, x) => a + x.elements, 0);
        const mask = sites.reduce((a, x) => a + x.mask_bytes, 0);
        const saving = sites.reduce((a, x) => a + x.saving_if_packed, 0);
        md.appendMarkdown(
          `Dropout here stores a ${formatBytes(mask)} mask for ${elements.toLocaleString()} elements. ` +
            `Packed (1 bit/element) saves ${formatBytes(saving)}; mask-free (recompute) saves ${formatBytes(mask)}.\n\n`,
        );
        md.appendMarkdown(`[Convert to packed dropout](command:${Commands.convertToPackedDropout})`);
      }
      return new vscode.Hover(md);
    },
  });
}
