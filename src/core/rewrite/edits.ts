/**
 * Text edits in the scanner's coordinates (0-based lines, 0-based UTF-16 columns,
 * exclusive end), so the editor adapter maps each one onto a `vscode.TextEdit` 1:1.
 */
import type { SiteRange } from '../scan/types';
import { lineStartsOf } from './lines';
import { itemAt, lastAtOrBelow } from '../arrays';

export interface TextEdit {
  range: SiteRange;
  newText: string;
}

/** An edit by offsets, the form the rewriter computes in. */
export interface OffsetEdit {
  start: number;
  end: number;
  newText: string;
}

export function positionOf(lineStarts: readonly number[], offset: number): { line: number; col: number } {
  const line = lastAtOrBelow(lineStarts, offset);
  return { line, col: offset - itemAt(lineStarts, line) };
}

/** Offset of a (line, col) position, or undefined when the line does not exist or the column runs past it. */
export function offsetOf(text: string, lineStarts: readonly number[], line: number, col: number): number | undefined {
  const start = lineStarts[line];
  if (start === undefined || col < 0) return undefined;
  const next = lineStarts[line + 1];
  const limit = next ?? text.length;
  return start + col <= limit ? start + col : undefined;
}

/**
 * Sorts edits by position, merges insertions at the same point (in the order they
 * were made) and rejects overlaps: the edits of one conversion must be applicable
 * together, as one `WorkspaceEdit`.
 */
export function normalizeEdits(edits: readonly OffsetEdit[]): OffsetEdit[] {
  const sorted = edits.map((e, i) => ({ e, i })).sort((a, b) => a.e.start - b.e.start || a.e.end - b.e.end || a.i - b.i);
  const out: OffsetEdit[] = [];
  for (const { e } of sorted) {
    const prev = out[out.length - 1];
    if (prev && prev.start === prev.end && e.start === e.end && prev.start === e.start) {
      prev.newText += e.newText;
      continue;
    }
    if (prev && e.start < prev.end) throw new Error(`membit rewrite: overlapping edits at offsets ${prev.start}-${prev.end} and ${e.start}-${e.end}`);
    out.push({ ...e });
  }
  return out;
}

export function toTextEdits(text: string, edits: readonly OffsetEdit[], lineStarts: readonly number[] = lineStartsOf(text)): TextEdit[] {
  return normalizeEdits(edits).map((e) => {
    const s = positionOf(lineStarts, e.start);
    const t = positionOf(lineStarts, e.end);
    return { range: { startLine: s.line, startCol: s.col, endLine: t.line, endCol: t.col }, newText: e.newText };
  });
}

/**
 * Applies edits made against `text` (as VS Code applies a WorkspaceEdit: every range
 * refers to the original text). Throws on a range outside the text or on overlaps.
 */
export function applyEdits(text: string, edits: readonly TextEdit[]): string {
  const starts = lineStartsOf(text);
  const offs: OffsetEdit[] = edits.map((e) => {
    const start = offsetOf(text, starts, e.range.startLine, e.range.startCol);
    const end = offsetOf(text, starts, e.range.endLine, e.range.endCol);
    if (start === undefined || end === undefined || end < start) {
      throw new Error(`membit rewrite: edit range ${JSON.stringify(e.range)} is outside the text`);
    }
    return { start, end, newText: e.newText };
  });
  let out = '';
  let at = 0;
  for (const e of normalizeEdits(offs)) {
    out += text.slice(at, e.start) + e.newText;
    at = e.end;
  }
  return out + text.slice(at);
}
