/**
 * Arguments as written: mapped onto parameter names for a site, clipped, and widths
 * normalised so two spellings of one width compare equal.
 */
import type { GCall } from './context';
import type { ArgFact, CallFact } from './factTypes';
import type { SiteArgs } from './types';

/**
 * Longest argument text a site carries. An argument is shown as written, and nested calls
 * would otherwise repeat the whole nest in every site (`F.dropout(` 3,000 deep made 84 MB
 * of JSON; 10,000 deep, a string too long for V8): with the cap, output is linear in input.
 */
export const MAX_ARG_CHARS = 240;

/** `text`, cut to MAX_ARG_CHARS with an ellipsis. */
export function clipArg(text: string): string {
  return text.length <= MAX_ARG_CHARS ? text : `${text.slice(0, MAX_ARG_CHARS - 1)}…`;
}

/** Maps arguments as written onto parameter names; extra positionals become `arg<i>`. */
export function argMap(f: CallFact, params: readonly string[]): SiteArgs {
  const out: SiteArgs = {};
  let i = 0;
  for (const a of f.args) {
    if (a.name === null) {
      out[params[i] ?? `arg${i}`] = clipArg(a.text);
      i++;
    } else out[a.name] = clipArg(a.text);
  }
  return out;
}

/** A width as written, normalised so `4 * config.n_embd` equals `self.n_embd*4`. */
export function normDim(text: string | undefined): string {
  if (!text) return '';
  let t = text.replace(/\s+/g, '');
  // Widths are short; a long argument is compared as written.
  if (t.length > 200) return t;
  while (t.startsWith('(') && t.endsWith(')') && balanced(t.slice(1, -1))) t = t.slice(1, -1);
  // `int(config.intermediate_size)` is the same width as `config.intermediate_size`.
  t = t.replace(/\bint\(([^()]*)\)/g, '$1');
  while (t.startsWith('(') && t.endsWith(')') && balanced(t.slice(1, -1))) t = t.slice(1, -1);
  // Dotted names compare by their last part: `config.hidden_size` = `self.hidden_size` = `hidden_size`.
  t = t.replace(/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+/g, (m) => m.slice(m.lastIndexOf('.') + 1));
  const factors = splitTop(t, '*');
  return factors.length > 1 ? factors.sort().join('*') : t;
}

function balanced(t: string): boolean {
  let d = 0;
  for (const ch of t) {
    if (ch === '(') d++;
    else if (ch === ')' && --d < 0) return false;
  }
  return d === 0;
}

function splitTop(t: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < t.length; i++) {
    const ch = t.charAt(i);
    if (ch === '(' || ch === '[') depth++;
    else if (ch === ')' || ch === ']') depth--;
    if (depth === 0 && ch === sep && t[i + 1] !== sep && t[i - 1] !== sep) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/**
 * The argument that fills parameter `name` as argMap maps them, for what argMap drops:
 * the items and arms tree-sitter gave it.
 */
export function argFor(f: CallFact, params: readonly string[], name: string): ArgFact | undefined {
  let found: ArgFact | undefined;
  let i = 0;
  for (const a of f.args) {
    const key = a.name ?? params[i] ?? `arg${i}`;
    if (a.name === null) i++;
    if (key === name) found = a;
  }
  return found;
}

/** The dimensions passed to ones/full/zeros/empty as written: `(L, L)`, `[L, L]`, `L, L` or `size=(L, L)`. */
export function fullDims(g: GCall): string[] {
  const pos = g.f.args.filter((a) => a.name === null);
  const size = g.f.args.find((a) => a.name === 'size');
  if (g.res.final.endsWith('full')) return itemsOf(pos[0] ?? size);
  if (size) return itemsOf(size);
  if (pos.length === 1 && pos[0]?.items) return pos[0].items;
  return pos.map((a) => a.text);
}

/** A shape argument's dimensions: the items of a tuple or list, else the argument itself. */
function itemsOf(a: ArgFact | undefined): string[] {
  return a ? (a.items ?? [a.text]) : [];
}
