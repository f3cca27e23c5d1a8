/**
 * Jupyter notebooks: the Python code cells are scanned as one module (an import in
 * the first cell resolves a `nn.Dropout` in the fifth), and every site is mapped
 * back to its cell and a line within that cell.
 */
import type { Scanner } from './scanner';
import type { ScanOptions, ScanResult, SiteRange } from './types';
import { itemAt, lastAtOrBelow } from '../arrays';

export interface CellInput {
  /** Index of the cell in the notebook (all cells counted, markdown included). */
  index: number;
  text: string;
}

/** Cell magics whose body is still Python. */
const PYTHON_CELL_MAGICS = new Set(['time', 'timeit', 'capture', 'prun', 'debug', 'memit', 'px', 'autoreload']);

/**
 * Hides IPython syntax from the Python grammar without moving anything: magics,
 * shell escapes and `?` help lines become comments of the same length.
 */
export function sanitizeCell(text: string): string {
  const lines = text.split('\n');
  const first = lines.findIndex((l) => l.trim() !== '');
  const head = lines[first];
  if (head !== undefined) {
    const magic = /^\s*%%(\w+)/.exec(head)?.[1];
    if (magic !== undefined) {
      if (!PYTHON_CELL_MAGICS.has(magic)) return lines.map((l) => (l.length ? `#${l.slice(1)}` : l)).join('\n');
      lines[first] = `#${head.slice(1)}`;
    }
  }
  return lines
    .map((l) => {
      const magic = /^(\s*)(?:[%!]|[A-Za-z_]\w*\s*=\s*[%!])/.exec(l);
      if (magic || /^\s*[\w.]+\?\??\s*$/.test(l)) {
        const indent = /^\s*/.exec(l)?.[0] ?? '';
        return l.length > indent.length ? `${indent}#${l.slice(indent.length + 1)}` : l;
      }
      return l;
    })
    .join('\n');
}

/** An .ipynb document as JSON.parse gives it: beyond the cells array, anything may be missing or odd. */
interface NotebookJson {
  cells: ({ cell_type?: unknown; source?: unknown; metadata?: { vscode?: { languageId?: unknown } | null } | null } | null)[];
  metadata?: { kernelspec?: { language?: unknown } | null; language_info?: { name?: unknown } | null } | null;
}

const isNotebook = (v: unknown): v is NotebookJson => typeof v === 'object' && v !== null && Array.isArray((v as { cells?: unknown }).cells);

/** The Python code cells of an .ipynb document. */
export function notebookCells(json: string): { cells: CellInput[]; error?: string } {
  let nb: unknown;
  try {
    nb = JSON.parse(json);
  } catch (e) {
    return { cells: [], error: `not a notebook: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!isNotebook(nb)) return { cells: [], error: 'not a notebook: no "cells" array' };
  const lang = nb.metadata?.kernelspec?.language ?? nb.metadata?.language_info?.name;
  const pythonNotebook = typeof lang !== 'string' || /python/i.test(lang);
  const cells: CellInput[] = [];
  nb.cells.forEach((c, index) => {
    if (c?.cell_type !== 'code') return;
    const cellLang = c.metadata?.vscode?.languageId;
    if (typeof cellLang === 'string' ? cellLang !== 'python' : !pythonNotebook) return;
    const src = Array.isArray(c.source) ? c.source.filter((s): s is string => typeof s === 'string').join('') : typeof c.source === 'string' ? c.source : '';
    cells.push({ index, text: src });
  });
  return { cells };
}

function shift(r: SiteRange, by: number): SiteRange {
  return { startLine: r.startLine - by, startCol: r.startCol, endLine: r.endLine - by, endCol: r.endCol };
}

/** Scans cells (as the editor holds them) and returns cell-relative sites with `cell` set. */
export function scanCells(scanner: Scanner, cells: readonly CellInput[], file: string, opts: ScanOptions = {}): ScanResult {
  const starts: number[] = [];
  const parts: string[] = [];
  let line = 0;
  for (const c of cells) {
    starts.push(line);
    const text = sanitizeCell(c.text.replace(/\r\n?/g, '\n'));
    parts.push(text);
    // One blank line between cells, so a cell that ends mid-statement cannot swallow the next.
    line += text.split('\n').length + 1;
  }
  const result = scanner.scan(parts.join('\n\n'), file, opts);
  const cellOf = (l: number): number => lastAtOrBelow(starts, l);
  for (const s of result.sites) {
    const ci = cellOf(s.range.startLine);
    const base = itemAt(starts, ci);
    s.cell = itemAt(cells, ci).index;
    s.range = shift(s.range, base);
    if (s.attention) {
      // Every line of the chain counted within its own cell, like the site's range.
      for (const k of ['scoresLine', 'maskLine', 'softmaxLine', 'dropoutLine', 'outputLine', 'defaultLine'] as const) {
        const l = s.attention[k];
        if (l !== undefined) s.attention[k] = l - itemAt(starts, cellOf(l));
      }
    }
    for (const m of [s.ffn?.up, s.ffn?.down, s.ffn?.gate]) {
      if (!m) continue;
      const mc = cellOf(m.line);
      m.cell = itemAt(cells, mc).index;
      m.range = shift(m.range, itemAt(starts, mc));
      m.line = m.range.startLine;
    }
  }
  for (const c of result.classes) {
    const ci = cellOf(c.range.startLine);
    c.cell = itemAt(cells, ci).index;
    c.range = shift(c.range, itemAt(starts, ci));
  }
  return result;
}

/** Scans an .ipynb document's JSON text. */
export function scanNotebook(scanner: Scanner, json: string, file: string, opts: ScanOptions = {}): ScanResult {
  const { cells, error } = notebookCells(json);
  if (error) {
    return { file, sites: [], classes: [], config: {}, hasSyntaxErrors: false, error, stats: { ms: 0, lines: 0, chunks: 0, reusedChunks: 0 } };
  }
  return scanCells(scanner, cells, file, opts);
}
