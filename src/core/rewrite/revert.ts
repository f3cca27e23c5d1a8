/**
 * "Revert Membit conversions": back to the stock PyTorch calls, from the text alone.
 *
 * Every call of Membit's replacements (`membit.nn.PackedDropout`,
 * `membit.nn.functional.packed_dropout`, `membit.sparse.SparseLinear24`, and their
 * bare forms when imported from membit) gets the spelling recorded in its line's
 * mark, else the file's usual spelling of the stock name; a `mode=` keyword is
 * removed; marks go; standalone `membit.patch(...)` statements go; and import lines
 * the rewriter added (they carry `# added by membit`) go once nothing uses them.
 * After a conversion, revert gives back the original text byte for byte.
 */
import type { SiteRange } from '../scan/types';
import { findMembitCalls, type LineMark, lineMark, markText, type MembitCall, STOCK } from './calls';
import { applyEdits, type OffsetEdit, type TextEdit, toTextEdits } from './edits';
import { revertLevers, wholeEdit } from './leverRecord';
import { type Imports, type MembitImport, MEMBIT_IMPORTS, readImports, stockSpelling } from './imports';
import { lineEnd } from './lines';
import { type LogicalLine, matchingClose, nextCode, prevCode, tokText, type Tokens, tokenize } from './tokens';
import { itemAt } from '../arrays';

export interface RevertOptions {
  /** Only revert calls (and patch statements) that start inside this range; imports still go when unused. */
  range?: SiteRange;
}

export interface Reverted {
  /** 0-based line of the call. */
  line: number;
  from: string;
  to: string;
}

export interface RevertResult {
  edits: TextEdit[];
  reverted: Reverted[];
  /** Lines (0-based) of the `membit.patch(...)` statements removed. */
  patchCalls: number[];
  /** Import lines removed (without their mark). */
  imports: string[];
  /** Things the user should look at: a stock name that is no longer imported, a patch call left in place. */
  warnings: string[];
}

function isOp(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

/** Offset of a position, with the column clamped to its line (as editors clamp selections). */
function clamped(t: Tokens, line: number, col: number): number {
  if (line < 0) return 0;
  if (line >= t.lineStarts.length) return t.text.length;
  return Math.min(itemAt(t.lineStarts, line) + Math.max(0, col), lineEnd(t.text, t.lineStarts, line));
}

function inRange(t: Tokens, offset: number, range: SiteRange | undefined): boolean {
  if (!range) return true;
  return offset >= clamped(t, range.startLine, range.startCol) && offset <= clamped(t, range.endLine, range.endCol);
}

function hasComment(t: Tokens, from: number, to: number): boolean {
  for (let k = from + 1; k < to; k++) if (itemAt(t.toks, k).type === 'comment') return true;
  return false;
}

/** The edit that removes a `mode=` keyword argument from a call, or undefined when it has none. */
function modeRemoval(t: Tokens, call: MembitCall): OffsetEdit | undefined {
  const depth = itemAt(t.toks, call.open).depth + 1;
  for (let k = nextCode(t, call.open); k >= 0 && k < call.close; k = nextCode(t, k)) {
    const tok = itemAt(t.toks, k);
    if (tok.depth !== depth || tok.type !== 'name' || tokText(t, k) !== 'mode') continue;
    const eq = nextCode(t, k);
    const prev = prevCode(t, k);
    if (!isOp(t, eq, '=') || !(isOp(t, prev, ',') || prev === call.open)) continue;
    // The value runs to the next top-level comma or the closing parenthesis.
    let last = eq;
    let j = nextCode(t, eq);
    while (j >= 0 && j < call.close && !(itemAt(t.toks, j).depth === depth && isOp(t, j, ','))) {
      last = j;
      j = nextCode(t, j);
    }
    const end = itemAt(t.toks, last).end;
    if (prev !== call.open) {
      // `x, mode="recompute"`: the comma before goes with it, unless a comment sits in between.
      if (!hasComment(t, prev, k)) return { start: itemAt(t.toks, prev).start, end, newText: '' };
      return { start: tok.start, end: j < call.close ? itemAt(t.toks, j).end : end, newText: '' };
    }
    if (j < call.close) {
      const after = nextCode(t, j);
      const stop = !hasComment(t, j, after) ? itemAt(t.toks, after).start : itemAt(t.toks, j).end;
      return { start: tok.start, end: stop, newText: '' };
    }
    return { start: tok.start, end, newText: '' };
  }
  return undefined;
}

/** Offsets that remove whole lines `a..b` with one line break, as inserting them added it. */
export function lineRemoval(t: Tokens, a: number, b: number): OffsetEdit {
  if (a === 0) {
    const next = t.lineStarts[b + 1];
    return { start: 0, end: next ?? t.text.length, newText: '' };
  }
  return { start: lineEnd(t.text, t.lineStarts, a - 1), end: lineEnd(t.text, t.lineStarts, b), newText: '' };
}

/** A logical line that is exactly `membit.patch(...)` (and a comment). */
function isPatchStatement(t: Tokens, line: LogicalLine): boolean {
  if (tokText(t, line.first) !== 'membit') return false;
  const dot = nextCode(t, line.first);
  const name = nextCode(t, dot);
  const open = nextCode(t, name);
  if (!isOp(t, dot, '.') || tokText(t, name) !== 'patch' || !isOp(t, open, '(')) return false;
  if (matchingClose(t, open) !== line.last) return false;
  const lineStart = itemAt(t.lineStarts, line.startLine);
  return t.text.slice(lineStart, itemAt(t.toks, line.first).start).trim() === '';
}

/** Would removing logical line `i` leave its block empty? */
function onlyStatementOfBlock(t: Tokens, i: number): boolean {
  const line = itemAt(t.lines, i);
  const prev = t.lines[i - 1];
  if (!prev || !isOp(t, prev.last, ':') || prev.indent >= line.indent) return false;
  const next = t.lines[i + 1];
  return !next || next.indent < line.indent;
}

function usualOrigin(imports: Imports, spelling: string): boolean {
  const head = spelling.split('.')[0] ?? spelling;
  return imports.bindings.some((b) => b.local === head || (b.star && !spelling.includes('.')));
}

export function revertConversions(text: string, opts: RevertOptions = {}): RevertResult {
  const t = tokenize(text);
  const imports = readImports(t);
  const calls = findMembitCalls(t, imports);
  const edits: OffsetEdit[] = [];
  const reverted: Reverted[] = [];
  const warnings: string[] = [];

  // Original spellings: a line's mark lists one per call on that line. A formatter may
  // have moved the mark to another line of the same statement (black puts a trailing
  // comment after the closing parenthesis when it splits a call): such marks serve
  // the statement's calls that have none of their own.
  const lineOfTok = new Int32Array(t.toks.length).fill(-1);
  t.lines.forEach((l, i) => lineOfTok.fill(i, l.first, l.last + 1));
  const original = new Map<MembitCall, string>();
  const usedMarks = new Set<number>();
  const orphanUsers = new Map<number, MembitCall[]>();
  const byStatement = new Map<number, MembitCall[]>();
  for (const c of calls) {
    const s = itemAt(lineOfTok, c.open);
    byStatement.set(s, [...(byStatement.get(s) ?? []), c]);
  }
  for (const [s, inStmt] of byStatement) {
    const rows = [...new Set(inStmt.map((c) => c.line))];
    const leftovers: MembitCall[] = [];
    for (const row of rows) {
      const onRow = inStmt.filter((c) => c.line === row);
      const mark = lineMark(t, row);
      if (mark?.spellings.length === onRow.length) {
        onRow.forEach((c, i) => original.set(c, itemAt(mark.spellings, i)));
        usedMarks.add(row);
      } else leftovers.push(...onRow);
    }
    const stmt = t.lines[s];
    if (leftovers.length && stmt) {
      const orphans: { row: number; mark: LineMark }[] = [];
      for (let row = stmt.startLine; row <= stmt.endLine; row++) {
        const mark = rows.includes(row) ? undefined : lineMark(t, row);
        if (mark) orphans.push({ row, mark });
      }
      const spellings = orphans.flatMap((o) => o.mark.spellings);
      if (spellings.length === leftovers.length) {
        leftovers.forEach((c, i) => original.set(c, itemAt(spellings, i)));
        for (const { row } of orphans) {
          usedMarks.add(row);
          orphanUsers.set(row, leftovers);
        }
      }
    }
  }
  // Calls without a mark go back to the stock spelling.
  const spellingOf = (c: MembitCall) => original.get(c) ?? stockSpelling(imports, STOCK[c.kind], c.style);

  for (const c of calls) {
    if (!inRange(t, c.start, opts.range)) continue;
    const to = spellingOf(c);
    edits.push({ start: c.start, end: c.end, newText: to });
    if (c.kind !== 'Linear') {
      const m = modeRemoval(t, c);
      if (m) edits.push(m);
    }
    reverted.push({ line: c.line, from: t.text.slice(c.start, c.end), to });
    if (!usualOrigin(imports, to)) {
      warnings.push(`line ${c.line + 1}: \`${to}\` is not imported in this file any more; add its import (e.g. \`import torch.nn as nn\`)`);
    }
  }

  // Marks go with their calls; a mark on a line where some calls stay is rewritten for those.
  const reverting = (c: MembitCall) => inRange(t, c.start, opts.range);
  for (let row = 0; row < t.lineStarts.length; row++) {
    const mark = lineMark(t, row);
    if (!mark) continue;
    const onRow = calls.filter((c) => c.line === row);
    const users = onRow.length ? onRow : (orphanUsers.get(row) ?? []);
    const stays = users.filter((c) => !reverting(c));
    let text = '';
    if (users.length === 0) {
      // A stale mark (its call was deleted): it goes when its line is in the range.
      if (!inRange(t, mark.start, opts.range)) continue;
    } else if (stays.length === users.length) continue;
    else if (stays.length && onRow.length && usedMarks.has(row)) {
      const keep = stays.map((c) => ({ original: spellingOf(c), usual: stockSpelling(imports, STOCK[c.kind], c.style) }));
      if (keep.some((k) => k.original !== k.usual)) text = markText(keep.map((k) => k.original));
    } else if (stays.length) continue;
    edits.push({ start: mark.start, end: mark.end, newText: text });
  }

  const patchCalls: number[] = [];
  t.lines.forEach((line, i) => {
    if (!isPatchStatement(t, line) || !inRange(t, itemAt(t.toks, line.first).start, opts.range)) return;
    if (onlyStatementOfBlock(t, i)) {
      warnings.push(`line ${line.startLine + 1}: \`membit.patch(...)\` is the only statement of its block; left in place`);
      return;
    }
    patchCalls.push(line.startLine);
    edits.push(lineRemoval(t, line.startLine, line.endLine));
  });

  // Imports the rewriter added go when the reverted text no longer uses them.
  const after = tokenize(applyEdits(text, toTextEdits(text, edits, t.lineStarts)));
  const used = membitUses(after);
  const marked = imports.statements.flatMap((s) => (s.marked ? [{ s, k: s.marked }] : []));
  const keep = new Set<MembitImport>();
  for (const { k } of marked) {
    if (k === 'nn' || k === 'sparse' ? used.modules.has(k) : k !== 'membit' && used.names.has(k)) keep.add(k);
  }
  // `membit.patch` and other uses of the package need some import that binds `membit`.
  const needsPackage = [...used.modules].some((m) => m !== 'nn' && m !== 'sparse');
  const userBindsMembit = imports.statements.some((s) => s.topLevel && !s.marked && s.kind === 'import' && s.modules.some((m) => m === 'membit' || m.startsWith('membit.')));
  if (needsPackage && !userBindsMembit && !['membit', 'nn', 'sparse'].some((k) => keep.has(k as MembitImport))) {
    const first = marked.find((x) => x.k === 'membit' || x.k === 'nn' || x.k === 'sparse');
    if (first) keep.add(first.k);
  }
  const drop = marked.filter((x) => !keep.has(x.k)).map((x) => x.s.line.startLine).sort((a, b) => a - b);
  for (let i = 0; i < drop.length; ) {
    let j = i;
    while (j + 1 < drop.length && itemAt(drop, j + 1) === itemAt(drop, j) + 1) j++;
    edits.push(lineRemoval(t, itemAt(drop, i), itemAt(drop, j)));
    i = j + 1;
  }

  return {
    edits: toTextEdits(text, edits, t.lineStarts),
    reverted,
    patchCalls,
    imports: marked.filter((x) => !keep.has(x.k)).map((x) => MEMBIT_IMPORTS[x.k]),
    warnings,
  };
}

/** What code (outside import statements) still uses from Membit: `membit.<module>` heads and bare names. */
function membitUses(t: Tokens): { modules: Set<string>; names: Set<string> } {
  const imports = readImports(t);
  const inImport = new Set<number>();
  for (const s of imports.statements) for (let k = s.first; k <= s.last; k++) inImport.add(k);
  const modules = new Set<string>();
  const names = new Set<string>();
  for (let k = 0; k < t.toks.length; k++) {
    if (inImport.has(k) || itemAt(t.toks, k).type !== 'name') continue;
    const word = tokText(t, k);
    const before = prevCode(t, k);
    if (before >= 0 && isOp(t, before, '.')) continue;
    if (word === 'membit') {
      const dot = nextCode(t, k);
      const name = nextCode(t, dot);
      if (isOp(t, dot, '.') && name >= 0 && itemAt(t.toks, name).type === 'name') modules.add(tokText(t, name));
      else modules.add('');
    } else if (word === 'PackedDropout' || word === 'packed_dropout' || word === 'SparseLinear24') names.add(word);
  }
  return { modules, names };
}

/**
 * Everything Membit wrote, undone: lever rewrites (from their records, see leverRecord.ts)
 * and conversions. One edit from the input to the result, so the editor applies it as one.
 */
export function revertAll(text: string, opts: RevertOptions = {}): RevertResult {
  const levers = revertLevers(text, opts.range);
  const conv = revertConversions(levers.text, levers.text === text ? opts : {});
  if (levers.reverted.length === 0) return conv;
  const after = applyEdits(levers.text, conv.edits);
  return { ...conv, edits: wholeEdit(text, after), reverted: [...levers.reverted, ...conv.reverted] };
}
