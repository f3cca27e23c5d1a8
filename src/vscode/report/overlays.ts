import { statSync } from 'node:fs';
import { relative } from 'node:path';
import * as vscode from 'vscode';
import { formatBytes } from '../../core/units';
import { inlineText, linesForFile, normalizePath, showsInline, type HeatBucket, type LineInfo } from '../../core/report/model';
import type { ReportSource, SiteEntry } from '../../core/report/types';
import { LineMapper } from '../../core/report/lineMap';
import { profiledHash, textSha256 } from '../../core/report/freshness';
import { runBrief, runName } from '../../core/report/runLabel';
import { readPrediction } from '../../core/report/prediction';
import { Commands } from '../../commands';
import { mdCode } from '../../core/untrusted';
import { getSettings, onSettingsChanged } from '../settings';
import type { LoadedReport, ReportStore } from './store';
import type { DisposableLike } from '../disposables';

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
  /** Every line of the profiled text (0-based) → where it is now; absent when its text is gone. */
  mapper: LineMapper;
  /** The report's lines for this file (1-based report line → info); empty when it names none. */
  lines: Map<number, LineInfo>;
  /** sha256 the run recorded for this file; undefined for reports without hashes. */
  profiled: string | undefined;
  /** The text on screen is not the text that ran. */
  stale: boolean;
  /** How many lines the profiled text had, so the mapper can be reset to identity. */
  size: number;
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
  private readonly disposables: DisposableLike[] = [];
  private readonly docs = new Map<string, DocState>();
  private enabled = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly applied = new Map<string, AppliedOverlays>();
  private readonly rendered = new vscode.EventEmitter<void>();
  /** After each repaint (staleness may have changed). */
  readonly onDidRender = this.rendered.event;

  constructor(extensionUri: vscode.Uri, private readonly store: ReportStore) {
    const settings = getSettings();
    const mk = (b: HeatBucket) =>
      vscode.window.createTextEditorDecorationType({
        ...(settings.overlays.gutter ? { gutterIconPath: vscode.Uri.joinPath(extensionUri, 'media', `heat-${b}.svg`) } : {}),
        gutterIconSize: 'contain',
        ...(settings.overlays.overviewRuler ? { overviewRulerColor: new vscode.ThemeColor(`membit.heat.${b}`) } : {}),
        overviewRulerLane: vscode.OverviewRulerLane.Left,
      });
    this.gutterTypes = { low: mk('low'), medium: mk('medium'), high: mk('high') };
    this.inlineType = vscode.window.createTextEditorDecorationType({
      after: { color: new vscode.ThemeColor('membit.inlineText'), margin: '0 0 0 2em', fontStyle: 'italic' },
    });
    this.predictedType = vscode.window.createTextEditorDecorationType({
      after: { color: new vscode.ThemeColor('membit.predictedText'), margin: '0 0 0 2em' },
    });
    this.disposables.push(this.gutterTypes.low, this.gutterTypes.medium, this.gutterTypes.high, this.inlineType, this.predictedType, this.rendered);
    this.disposables.push(
      store.onDidChange(() => {
        this.docs.clear();
        this.schedule(0);
      }),
      vscode.window.onDidChangeVisibleTextEditors(() => this.schedule()),
      vscode.workspace.onDidChangeTextDocument((e) => this.onEdit(e)),
      vscode.workspace.onDidSaveTextDocument(() => this.schedule()),
      // Closing drops unsaved edits: the reopened text is judged afresh by its hash.
      vscode.workspace.onDidCloseTextDocument((d) => this.docs.delete(d.uri.toString())),
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

  /** The run the overlays show. */
  get shown(): LoadedReport | undefined {
    return this.store.report;
  }

  /** The loaded report's source when it is not a harness run (a memory snapshot). */
  source(): ReportSource | undefined {
    return this.store.report?.index.report.source;
  }

  /** What is applied now, per visible editor (for tests and the hover). */
  appliedOverlays(): AppliedOverlays[] {
    return [...this.applied.values()];
  }

  /** A run set's picked rank; undefined for the max over ranks (or a single report). */
  get rankPick(): number | undefined {
    return this.store.report?.set?.pick;
  }

  /** Dropout sites the run measured on a document line (by its current position). */
  sitesAt(doc: vscode.TextDocument, line: number): SiteEntry[] {
    const st = this.state(doc);
    const loaded = this.store.report;
    if (!st || !loaded) return [];
    const reportLine = st.mapper.reportLineAt(line);
    if (reportLine === undefined) return [];
    const rel = normalizePath(relative(loaded.root.fsPath, doc.uri.fsPath));
    return loaded.index.report.sites.filter((s) => normalizePath(s.file) === rel && s.line === reportLine + 1);
  }

  /** The measured lines of a document, at their current positions. */
  linesOf(doc: vscode.TextDocument): Map<number, LineInfo> | undefined {
    const st = this.state(doc);
    if (!st) return undefined;
    const out = new Map<number, LineInfo>();
    for (const [line, info] of st.lines) {
      const cur = st.mapper.current(line - 1);
      if (cur !== undefined) out.set(cur, info);
    }
    return out;
  }

  /** Where a 1-based report line of this document is now (1-based); undefined when its text is gone or the file was not profiled. */
  currentLine(doc: vscode.TextDocument, reportLine: number): number | undefined {
    const cur = this.state(doc)?.mapper.current(reportLine - 1);
    return cur === undefined ? undefined : cur + 1;
  }

  /** Whether the shown run measured lines of this document. */
  measures(doc: vscode.TextDocument): boolean {
    return (this.state(doc)?.lines.size ?? 0) > 0;
  }

  /** Whether the document's text differs from what the shown run measured (undefined: not in the run). */
  isStale(doc: vscode.TextDocument): boolean | undefined {
    return this.state(doc)?.stale;
  }

  private state(doc: vscode.TextDocument): DocState | undefined {
    const loaded = this.store.report;
    if (!loaded || doc.uri.scheme !== 'file') return undefined;
    const key = doc.uri.toString();
    let st = this.docs.get(key);
    if (!st) {
      const rel = relative(loaded.root.fsPath, doc.uri.fsPath);
      const lines = linesForFile(loaded.index, rel);
      const profiled = profiledHash(loaded.index.report, rel);
      if (!lines && !profiled && !mentions(loaded, rel)) return undefined;
      const text = doc.getText();
      const stale = profiled ? textSha256(text) !== profiled : isStale(doc, loaded);
      // Every line, not only the measured ones: construction lines, classes and sites map too.
      const size = [...(lines?.keys() ?? [])].reduce((a, l) => Math.max(a, l), doc.lineCount);
      st = { mapper: identity(size), lines: lines ?? new Map<number, LineInfo>(), profiled, stale, size };
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
    if (st.profiled && textSha256(e.document.getText()) === st.profiled) {
      // The text is again exactly what ran (undo, or edits that cancel out): every line is
      // where the report says, whatever the mapping went through.
      st.mapper = identity(st.size);
      st.stale = false;
    } else st.stale = true;
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
          // Staleness is said once (status bar, hover), not on every line.
          const shown = this.store.report;
          const base = inlineText(info, shown?.index.device, shown?.index.report.source?.kind === 'snapshot');
          const text = `${prediction ? `≈ ${base.replace(/^▲ /, '')} (predicted, ${prediction.gpuKey})` : base}${rankNote(info, shown?.set?.pick)}`;
          inline.push({ range: new vscode.Range(range.end, range.end), renderOptions: { after: { contentText: text } } });
          applied.inline.push({ line: line + 1, text });
        }
      }
      for (const b of BUCKETS) editor.setDecorations(this.gutterTypes[b], gutter[b]);
      editor.setDecorations(this.inlineType, prediction ? [] : inline);
      editor.setDecorations(this.predictedType, prediction ? inline : []);
      if (lines) this.applied.set(doc.uri.toString(), applied);
    }
    this.rendered.fire();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}

/** Lines 0..n-1 mapped onto themselves. */
function identity(n: number): LineMapper {
  return new LineMapper(Array.from({ length: n }, (_, i) => i));
}

/** Whether the report names the file anywhere (a module built there, a site). */
function mentions(loaded: LoadedReport, rel: string): boolean {
  const r = loaded.index.report;
  const f = normalizePath(rel);
  return r.sites.some((s) => normalizePath(s.file) === f) || r.modules.some((m) => m.created_at !== null && normalizePath(m.created_at.file) === f);
}

/** Reports without hashes (earlier versions): a file saved after the run started may no longer match. */
function isStale(doc: vscode.TextDocument, loaded: LoadedReport): boolean {
  if (doc.isDirty) return true;
  const started = Date.parse(loaded.index.report.run.started);
  try {
    return Number.isFinite(started) && statSync(doc.uri.fsPath).mtimeMs > started;
  } catch {
    return false;
  }
}

/** A run set's lines name their rank: "· rank 3 (max over ranks)", or "· rank 3" when picked. */
function rankNote(info: LineInfo, pick: number | undefined): string {
  const rank = (info.entries[0] as { rank?: unknown } | undefined)?.rank;
  if (typeof rank !== 'number') return '';
  return pick === undefined ? ` · rank ${rank} (max over ranks)` : ` · rank ${rank}`;
}

/** Hover on a measured line: the breakdown and what converting would save. */
export function registerReportHover(overlays: Overlays): vscode.Disposable {
  return vscode.languages.registerHoverProvider({ language: 'python', scheme: 'file' }, {
    provideHover(doc, pos) {
      if (!getSettings(doc.uri).hover.enabled || !overlays.isEnabled) return undefined;
      const info = overlays.linesOf(doc)?.get(pos.line);
      if (!info) return undefined;
      // Trusted for one command link; every report string below goes through mdCode, so a
      // report cannot add links of its own.
      const md = new vscode.MarkdownString(undefined, true);
      md.isTrusted = { enabledCommands: [Commands.convertToPackedDropout] };
      const snap = overlays.source();
      if (snap) {
        // A memory snapshot: the line's own allocations still live at the peak, from the allocator's record.
        const blocks = info.entries.reduce((a, e) => a + e.tensors, 0);
        md.appendMarkdown('**Membit** — from the memory snapshot ');
        // File names are the user's, not Markdown: appended as plain text.
        md.appendText(snap.files.join(', '));
        md.appendMarkdown(`: ${formatBytes(info.savedBytes)} allocated on this line (innermost workspace frame) and live at the peak, in ${blocks} block${blocks === 1 ? '' : 's'}.\n\n`);
        return new vscode.Hover(md);
      }
      const loaded = overlays.shown;
      const prediction = loaded ? readPrediction(loaded.index.report) : undefined;
      const brief = loaded ? runBrief(loaded.index.report) : undefined;
      const device = loaded?.index.device;
      const scope = info.instances > 1 ? `, summed over ${info.instances} instances` : '';
      md.appendMarkdown(`**Membit** — ${formatBytes(info.savedBytes)} kept for backward on this line${scope}${rankNote(info, overlays.rankPick)}\n\n`);
      if (prediction) {
        md.appendMarkdown(`Predicted for ${prediction.gpuName} with CUDA's semantics (no GPU was used${prediction.complete ? '' : '; partial: a lower bound'}), run ${brief ? runName(brief) : '?'}. A measured run replaces it.`);
      } else {
        md.appendMarkdown(`Measured in run ${brief ? runName(brief) : '?'}${device === 'cpu' ? ' on CPU (dropout masks 4 B per element there; 1 B on CUDA)' : device === 'cuda' ? ` on ${brief?.device ?? 'CUDA'}` : ''}.`);
      }
      if (overlays.isStale(doc)) md.appendMarkdown(' This file changed since that run: the figure follows the line through your edits.');
      md.appendMarkdown('\n\n');
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
        md.appendMarkdown('\n| op | bytes | tensors |\n|---|---:|---:|\n');
        for (const [op, o] of [...ops].sort((a, b) => b[1].bytes - a[1].bytes)) md.appendMarkdown(`| ${mdCode(op, { table: true })} | ${formatBytes(o.bytes)} | ${o.count} |\n`);
        md.appendMarkdown('\n');
      }
      md.appendMarkdown(`Activations ${formatBytes(info.savedBytes - info.maskBytes)} · masks ${formatBytes(info.maskBytes)}\n\n`);
      if (modules.size) md.appendMarkdown(`Module: ${[...modules].map((m) => mdCode(m)).join(', ')}\n\n`);
      const sites = overlays.sitesAt(doc, pos.line);
      if (sites.length) {
        const elements = sites.reduce((a, x) => a + x.elements, 0);
        const mask = sites.reduce((a, x) => a + x.mask_bytes, 0);
        const saving = sites.reduce((a, x) => a + x.saving_if_packed, 0);
        md.appendMarkdown(
          `Dropout here keeps masks of ${formatBytes(mask)} in all (${elements.toLocaleString('en-US')} elements). ` +
            `Packed (1 bit per element) saves ${formatBytes(saving)}; mask-free (recompute) saves ${formatBytes(mask)}.\n\n`,
        );
        md.appendMarkdown(`[Convert to packed dropout](command:${Commands.convertToPackedDropout})`);
      }
      return new vscode.Hover(md);
    },
  });
}
