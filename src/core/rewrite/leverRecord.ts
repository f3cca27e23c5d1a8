/**
 * How a lever rewrite is undone from the text alone, byte for byte.
 *
 * A conversion only swaps a callee, so revert can infer the original; a lever replaces
 * whole statements (an eager attention chain becomes one SDPA call), so the original
 * lines are kept in the file, as comments right after the lines that replaced them:
 *
 *         y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=..., is_causal=True)
 *         # membit: sdpa rewrote the 1 line above; `membit convert --revert` restores the 5 below
 *         #|        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
 *         #|        ...
 *
 * Each `#|` line holds one original line exactly as it was (its own indentation included).
 * Comments change nothing Python runs, and a second run of the lever does not match them.
 */
import type { SiteRange } from '../scan/types';
import { applyEdits, type OffsetEdit, type TextEdit, toTextEdits } from './edits';
import { lineEnd, lineOf, lineStartsOf } from './lines';
import type { Reverted } from './revert';
import { itemAt } from '../arrays';

const HEAD = /^([ \t]*)# membit: (sdpa|checkpoint|autocast) rewrote the (\d+) lines? above; `membit convert --revert` restores the (\d+) below$/;
const RECORD = '#|';

/** Whole lines [first, last] and their offsets (end excludes the last line's newline). */
interface Region {
  first: number;
  last: number;
  start: number;
  end: number;
  edits: OffsetEdit[];
}

/** The edits grouped into regions of whole lines; edits on shared lines share a region. */
function regionsOf(text: string, starts: readonly number[], edits: readonly OffsetEdit[]): Region[] {
  const out: Region[] = [];
  for (const e of [...edits].sort((a, b) => a.start - b.start || a.end - b.end)) {
    const first = lineOf(starts, e.start);
    let last = lineOf(starts, Math.max(e.start, e.end));
    // An edit that ends at a line start consumed the newline before it: its last line is the one before.
    if (e.end > e.start && e.end === starts[last] && last > first) last--;
    let end = lineEnd(text, starts, last);
    while (e.end > end && last + 1 < starts.length) end = lineEnd(text, starts, ++last);
    const prev = out[out.length - 1];
    if (prev && first <= prev.last) {
      prev.last = Math.max(prev.last, last);
      prev.end = Math.max(prev.end, end);
      prev.edits.push(e);
    } else out.push({ first, last, start: itemAt(starts, first), end, edits: [e] });
  }
  return out;
}

/**
 * The lever's edits as whole-line replacements, each followed by the record of the lines
 * it replaced. The region's own line break (the file's `eol` when it has none) ends the
 * lines written there and the record's, so a file whose lines end differently here and
 * there is restored too. A region whose record could not be restored exactly (mixed line
 * endings inside it, a string running across its end, which `stringAcross` tells) keeps
 * its plain edit.
 */
export function withRevertRecords(text: string, starts: readonly number[], edits: readonly OffsetEdit[], lever: string, fileEol: string, stringAcross: (offset: number) => boolean): OffsetEdit[] {
  const out: OffsetEdit[] = [];
  for (const r of regionsOf(text, starts, edits)) {
    const orig = text.slice(r.start, r.end);
    const eol = /\r\n|\n|\r/.exec(orig)?.[0] ?? (text.slice(r.end, starts[r.last + 1] ?? text.length) || fileEol);
    const shifted = r.edits.map((e) => ({ start: e.start - r.start, end: e.end - r.start, newText: e.newText }));
    const origLines = orig.split(eol);
    const exact = !origLines.some((l) => /[\r\n]/.test(l));
    // The lines the lever wrote take the region's line break, as the lines around them have.
    const now = applyEdits(orig, toTextEdits(orig, shifted, lineStartsOf(orig))).replace(/\r\n|\r|\n/g, eol);
    const nowLines = now.split(eol);
    // A comment line cannot follow a `\\` continuation or a string that runs on.
    if (!exact || text.charCodeAt(r.end - 1) === 92 || stringAcross(r.end) || /\\$/.test(now)) {
      out.push(...r.edits);
      continue;
    }
    const indent = /^[ \t]*/.exec(nowLines.find((l) => l.trim() !== '') ?? '')?.[0] ?? '';
    const n = nowLines.length;
    const head = `${indent}# membit: ${lever} rewrote the ${n} line${n === 1 ? '' : 's'} above; \`membit convert --revert\` restores the ${origLines.length} below`;
    const record = [head, ...origLines.map((l) => `${indent}${RECORD}${l}`)];
    out.push({ start: r.start, end: r.end, newText: [now, ...record].join(eol) });
  }
  return out;
}

export interface LeverRevert {
  text: string;
  reverted: Reverted[];
}

/** Undoes every recorded lever rewrite (that starts inside `range`, when given). */
export function revertLevers(text: string, range?: SiteRange): LeverRevert {
  const starts = lineStartsOf(text);
  const lines = starts.map((s, i) => text.slice(s, lineEnd(text, starts, i)));
  const edits: OffsetEdit[] = [];
  const reverted: Reverted[] = [];
  let floor = -1;
  for (let i = 0; i < lines.length; i++) {
    const m = HEAD.exec(itemAt(lines, i));
    if (!m) continue;
    const indent = itemAt(m, 1);
    const n = Number(m[3]);
    const k = Number(m[4]);
    const first = i - n;
    if (first <= floor || first < 0 || i + k > lines.length - 1) continue;
    const record = lines.slice(i + 1, i + 1 + k);
    if (record.length !== k || record.some((l) => !l.startsWith(indent + RECORD))) continue;
    if (range && (first < range.startLine || first > range.endLine)) continue;
    // The record was written with the line break that follows its head line.
    const eol = text.slice(lineEnd(text, starts, i), starts[i + 1] ?? text.length) || '\n';
    const origText = record.map((l) => l.slice(indent.length + RECORD.length)).join(eol);
    const last = i + k;
    edits.push({ start: itemAt(starts, first), end: lineEnd(text, starts, last), newText: origText });
    reverted.push({ line: first, from: `${m[2]} rewrite`, to: `the ${k} original line${k === 1 ? '' : 's'}` });
    floor = last;
    i = last;
  }
  if (edits.length === 0) return { text, reverted };
  return { text: applyEdits(text, toTextEdits(text, edits, starts)), reverted };
}

/** One edit that turns `a` into `b`: their common prefix and suffix are kept. */
export function wholeEdit(a: string, b: string): TextEdit[] {
  if (a === b) return [];
  let p = 0;
  const max = Math.min(a.length, b.length);
  while (p < max && a.charCodeAt(p) === b.charCodeAt(p)) p++;
  let s = 0;
  while (s < max - p && a.charCodeAt(a.length - 1 - s) === b.charCodeAt(b.length - 1 - s)) s++;
  return toTextEdits(a, [{ start: p, end: a.length - s, newText: b.slice(p, b.length - s) }], lineStartsOf(a));
}
