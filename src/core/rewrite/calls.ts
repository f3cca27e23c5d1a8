/**
 * The names a conversion writes, how converted calls are found again, and the
 * per-line mark that records an original spelling revert could not infer.
 *
 * Round trip. A converted call is reverted to the file's usual spelling of the stock
 * name ({@link stockSpelling}); in the common file that is exactly what was there.
 * Where the original differed (a file that writes both `nn.Dropout` and
 * `torch.nn.Dropout`, or aliases `from torch.nn import Dropout as D` next to `nn`),
 * convert appends `  # membit: was <spelling>, ...` to the line, one entry per
 * converted call on that line in order, and revert reads it back.
 */
import { boundToMembit, type Imports, type MembitImport, readImports, type Style, stockSpelling } from './imports';
import { lineEnd, lineOf } from './lines';
import { matchingClose, nextCode, prevCode, tokenCovering, tokenize, tokText, type Tokens } from './tokens';
import { itemAt } from '../arrays';

/** What a converted call stands in for. */
export type TargetKind = 'Dropout' | 'dropout' | 'Linear';

/** The stock PyTorch name each kind replaces (canonical). */
export const STOCK: Record<TargetKind, string> = {
  Dropout: 'torch.nn.Dropout',
  dropout: 'torch.nn.functional.dropout',
  Linear: 'torch.nn.Linear',
};

/** Membit's replacement, spelled through the module (`import membit.nn`). */
export const MEMBIT_QUALIFIED: Record<TargetKind, string> = {
  Dropout: 'membit.nn.PackedDropout',
  dropout: 'membit.nn.functional.packed_dropout',
  Linear: 'membit.sparse.SparseLinear24',
};

/** Membit's replacement as a bare name (`from membit.nn import PackedDropout`), for files that import torch's classes by name. */
export const MEMBIT_BARE: Record<TargetKind, string> = {
  Dropout: 'PackedDropout',
  dropout: 'packed_dropout',
  Linear: 'SparseLinear24',
};

export function membitCallee(kind: TargetKind, style: Style): string {
  return style === 'bare' ? MEMBIT_BARE[kind] : MEMBIT_QUALIFIED[kind];
}

/** The import a converted call needs. */
export function importFor(kind: TargetKind, style: Style): MembitImport {
  if (style === 'bare') return MEMBIT_BARE[kind] as MembitImport;
  return kind === 'Linear' ? 'sparse' : 'nn';
}

/** The comment that records original spellings. */
export const SITE_MARK = '# membit: was ';
const MARK_SUFFIX = `  ${SITE_MARK}`;

/** A converted call found in the text. */
export interface MembitCall {
  /** Offsets of the callee. */
  start: number;
  end: number;
  kind: TargetKind;
  style: Style;
  /** Token indices of the call's parentheses. */
  open: number;
  close: number;
  /** 0-based line of the callee. */
  line: number;
}

const QUALIFIED_KIND = new Map<string, TargetKind>(Object.entries(MEMBIT_QUALIFIED).map(([k, v]) => [v, k as TargetKind]));
const BARE_KIND = new Map<string, TargetKind>(Object.entries(MEMBIT_BARE).map(([k, v]) => [v, k as TargetKind]));

function isOpTok(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

/** Reads a dotted name `a.b.c` from name token `k`: its text (no whitespace) and last token. */
export function dottedAt(t: Tokens, k: number): { name: string; last: number } {
  let name = tokText(t, k);
  let last = k;
  for (;;) {
    const dot = nextCode(t, last);
    if (dot < 0 || !isOpTok(t, dot, '.')) break;
    const nm = nextCode(t, dot);
    if (nm < 0 || itemAt(t.toks, nm).type !== 'name') break;
    name += `.${tokText(t, nm)}`;
    last = nm;
  }
  return { name, last };
}

/** Every call of Membit's replacements in code (never in strings or comments), in order. */
export function findMembitCalls(t: Tokens, imports: Imports): MembitCall[] {
  const out: MembitCall[] = [];
  const toks = t.toks;
  for (let k = 0; k < toks.length; k++) {
    const tok = itemAt(toks, k);
    if (tok.type !== 'name') continue;
    const word = tokText(t, k);
    if (word !== 'membit' && !BARE_KIND.has(word)) continue;
    const before = prevCode(t, k);
    if (before >= 0 && (isOpTok(t, before, '.') || ['def', 'class', 'import'].includes(tokText(t, before)))) continue;
    let kind: TargetKind | undefined;
    let style: Style;
    let last = k;
    if (word === 'membit') {
      const d = dottedAt(t, k);
      kind = QUALIFIED_KIND.get(d.name);
      last = d.last;
      style = 'qualified';
    } else {
      kind = boundToMembit(imports, word) ? BARE_KIND.get(word) : undefined;
      style = 'bare';
    }
    if (!kind) continue;
    const open = nextCode(t, last);
    if (open < 0 || !isOpTok(t, open, '(')) continue;
    const close = matchingClose(t, open);
    if (close < 0) continue;
    out.push({ start: tok.start, end: itemAt(toks, last).end, kind, style, open, close, line: lineOf(t.lineStarts, tok.start) });
  }
  return out;
}

/** The mark at the end of a line: where it is (its leading spaces included) and what it lists. */
export interface LineMark {
  start: number;
  end: number;
  spellings: string[];
}

export function lineMark(t: Tokens, line: number): LineMark | undefined {
  const end = lineEnd(t.text, t.lineStarts, line);
  const k = tokenCovering(t, end - 1);
  const tok = t.toks[k];
  if (tok?.type !== 'comment' || tok.end !== end) return undefined;
  const comment = t.text.slice(tok.start, tok.end);
  let start: number;
  if (comment.startsWith(SITE_MARK)) start = t.text.slice(tok.start - 2, tok.start) === '  ' ? tok.start - 2 : tok.start;
  else {
    const i = comment.lastIndexOf(MARK_SUFFIX);
    if (i < 0) return undefined;
    start = tok.start + i;
  }
  const list = t.text.slice(t.text.indexOf(SITE_MARK, start) + SITE_MARK.length, end).trim();
  return { start, end, spellings: list.split(',').map((s) => s.trim()) };
}

export function markText(spellings: readonly string[]): string {
  return `${MARK_SUFFIX}${spellings.join(', ')}`;
}

/** Can a comment go at the end of this line? Not when the line ends inside a string or with a backslash. */
export function canMark(t: Tokens, line: number): boolean {
  const end = lineEnd(t.text, t.lineStarts, line);
  const across = t.toks[tokenCovering(t, end)];
  if (across?.type === 'string' && across.start < end) return false;
  const last = t.toks[tokenCovering(t, end - 1)];
  return !(last?.type === 'cont');
}

/**
 * The original spelling of each converted call on `line`: from the line's mark when
 * it lists one per call, else the file's usual spelling.
 */
export function originalsOnLine(t: Tokens, imports: Imports, calls: readonly MembitCall[]): string[] {
  const defaults = calls.map((c) => stockSpelling(imports, STOCK[c.kind], c.style));
  const [first] = calls;
  if (!first) return defaults;
  const mark = lineMark(t, first.line);
  if (mark?.spellings.length === calls.length) return mark.spellings;
  return defaults;
}

/**
 * The 1-based lines of `text` that call one of Membit's replacements: where a site has
 * been converted. The report view uses it to stop offering Convert on such a site.
 */
export function convertedLines(text: string): Set<number> {
  const t = tokenize(text);
  return new Set(findMembitCalls(t, readImports(t)).map((c) => c.line + 1));
}
