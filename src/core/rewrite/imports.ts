/**
 * What a file's imports bind, how a stock PyTorch name is spelled in that file, and
 * where Membit's own import goes.
 *
 * Import lines the rewriter adds carry the comment {@link IMPORT_MARK}, so revert
 * removes exactly those and never an import the user wrote.
 */
import { canonical, canonicalModule, DROPOUT_CLASSES, DROPOUT_FUNCS, LINEAR_PARAMS, SDPA } from '../scan/names';
import { lineEnd } from './lines';
import { type LogicalLine, nextCode, tokText, type Tokens } from './tokens';

/** Trailing comment of every import line the rewriter adds. */
export const IMPORT_MARK = '# added by membit';

/** One name an import statement binds. */
export interface Binding {
  /** Local name (`F`, `nn`, `Dropout`); '' for a star import. */
  local: string;
  /** Canonical dotted target (`torch.nn.functional`, `torch.nn.Dropout`); for `import a.b` the local `a` maps to `a`. */
  target: string;
  star: boolean;
  /** `import a.b.c` without `as`: the module it loads (`a.b.c`); it binds `a`. */
  loads?: string;
  /** Index of the import statement in {@link Imports.statements}. */
  stmt: number;
}

export interface ImportStatement {
  /** Logical line holding the statement. */
  line: LogicalLine;
  /** First and last token of the statement (a logical line may hold several, split by `;`). */
  first: number;
  last: number;
  kind: 'import' | 'from';
  /** For `from`: the canonical module; for `import`: the dotted names. */
  modules: string[];
  topLevel: boolean;
  /** Set when the line is one of the canonical lines the rewriter adds, with its mark: which one. */
  marked?: MembitImport;
}

export interface Imports {
  statements: ImportStatement[];
  bindings: Binding[];
}

/** The canonical import lines the rewriter may add, keyed by what they provide. */
export const MEMBIT_IMPORTS = {
  membit: 'import membit',
  nn: 'import membit.nn',
  sparse: 'import membit.sparse',
  PackedDropout: 'from membit.nn import PackedDropout',
  packed_dropout: 'from membit.nn.functional import packed_dropout',
  SparseLinear24: 'from membit.sparse import SparseLinear24',
} as const;

export type MembitImport = keyof typeof MEMBIT_IMPORTS;

const MARKED_LINES = new Map<string, MembitImport>(Object.entries(MEMBIT_IMPORTS).map(([k, v]) => [`${v}  ${IMPORT_MARK}`, k as MembitImport]));

function isName(t: Tokens, k: number, text?: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'name' && (text === undefined || t.text.slice(tok.start, tok.end) === text);
}

function isOp(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

/** Reads `a.b.c` (or a relative `..a.b`) from token `k`; returns the name and the index after it. */
function dotted(t: Tokens, k: number, last: number): { name: string; next: number } {
  let name = '';
  let j = k;
  let wantName = true;
  while (j >= 0 && j <= last) {
    if (isOp(t, j, '.') || isOp(t, j, '...')) wantName = true;
    else if (wantName && isName(t, j) && tokText(t, j) !== 'import') wantName = false;
    else break;
    name += tokText(t, j);
    j = nextCode(t, j);
  }
  return { name, next: j < 0 ? last + 1 : j };
}

/** Splits a logical line into its `;`-separated statements (token index ranges). */
function segments(t: Tokens, line: LogicalLine): [number, number][] {
  const out: [number, number][] = [];
  const base = (t.toks[line.first] as { depth: number }).depth;
  let start = line.first;
  for (let k = line.first; k <= line.last; k++) {
    const tok = t.toks[k] as { depth: number };
    if (tok.depth === base && isOp(t, k, ';')) {
      if (k > start) out.push([start, k - 1]);
      start = k + 1;
    }
  }
  if (start <= line.last) out.push([start, line.last]);
  return out;
}

/** Every import statement of the file (any depth) and the names they bind, in file order. */
export function readImports(t: Tokens): Imports {
  const statements: ImportStatement[] = [];
  const bindings: Binding[] = [];
  for (const line of t.lines) {
    for (const [first, last] of segments(t, line)) {
      let k = first;
      while (k <= last && (t.toks[k] as { type: string }).type !== 'name' && (t.toks[k] as { type: string }).type !== 'op') k++;
      if (isName(t, k, 'import')) {
        const stmt = statements.length;
        const modules: string[] = [];
        let j = nextCode(t, k);
        while (j >= 0 && j <= last) {
          const { name, next } = dotted(t, j, last);
          if (!name) break;
          modules.push(name);
          j = next;
          if (isName(t, j, 'as') && j <= last) {
            const alias = nextCode(t, j);
            bindings.push({ local: tokText(t, alias), target: canonicalModule(name), star: false, stmt });
            j = nextCode(t, alias);
          } else {
            const head = name.split('.')[0] ?? name;
            bindings.push({ local: head, target: head, star: false, loads: name, stmt });
          }
          if (j < 0 || j > last || !isOp(t, j, ',')) break;
          j = nextCode(t, j);
        }
        statements.push({ line, first: k, last, kind: 'import', modules, topLevel: line.indent === 0, ...marked(t, line) });
      } else if (isName(t, k, 'from')) {
        const { name: modText, next } = dotted(t, nextCode(t, k), last);
        if (!isName(t, next, 'import')) continue;
        const stmt = statements.length;
        const module = canonicalModule(modText);
        statements.push({ line, first: k, last, kind: 'from', modules: [module], topLevel: line.indent === 0, ...marked(t, line) });
        const join = (m: string, n: string) => (m.endsWith('.') ? m + n : `${m}.${n}`);
        let j = nextCode(t, next);
        while (j >= 0 && j <= last) {
          if (isOp(t, j, '(') || isOp(t, j, ')') || isOp(t, j, ',')) {
            j = nextCode(t, j);
            continue;
          }
          if (isOp(t, j, '*')) {
            bindings.push({ local: '', target: module, star: true, stmt });
            break;
          }
          if (!isName(t, j)) break;
          const name = tokText(t, j);
          j = nextCode(t, j);
          let local = name;
          if (isName(t, j, 'as') && j <= last) {
            const alias = nextCode(t, j);
            local = tokText(t, alias);
            j = nextCode(t, alias);
          }
          bindings.push({ local, target: canonicalModule(join(module, name)), star: false, stmt });
        }
      }
    }
  }
  return { statements, bindings };
}

function marked(t: Tokens, line: LogicalLine): { marked?: MembitImport } {
  const k = markedImportOf(t, line);
  return k ? { marked: k } : {};
}

/** Which canonical Membit import line, with its mark, the logical line is exactly; else undefined. */
export function markedImportOf(t: Tokens, line: LogicalLine): MembitImport | undefined {
  if (line.startLine !== line.endLine) return undefined;
  const start = (t.toks[line.first] as { start: number }).start;
  return MARKED_LINES.get(t.text.slice(start, lineEnd(t.text, t.lineStarts, line.startLine)));
}

/** Conventional names used without an import in snippets and later notebook cells (as the scanner does). */
const FALLBACK: Record<string, string> = { torch: 'torch', nn: 'torch.nn', F: 'torch.nn.functional' };

/** Canonical dotted name of a callee as written (`nn.Linear` → `torch.nn.Linear`), or null. */
export function resolveCallee(imports: Imports, callee: string): string | null {
  if (!/^[\p{L}_][\p{L}\p{N}_]*(\.[\p{L}_][\p{L}\p{N}_]*)*$/u.test(callee)) return null;
  const dot = callee.indexOf('.');
  const head = dot < 0 ? callee : callee.slice(0, dot);
  const rest = dot < 0 ? '' : callee.slice(dot);
  const b = imports.bindings.find((x) => !x.star && x.local === head);
  if (b) return canonical(b.target + rest);
  if (dot < 0) {
    // The latest star import that exports the name wins, as the scanner decides it.
    for (const s of [...imports.bindings].reverse()) {
      const q = canonical(`${s.target}.${head}`);
      if (s.star && (DROPOUT_CLASSES.has(q) || DROPOUT_FUNCS.has(q) || q === SDPA || q in LINEAR_PARAMS)) return q;
    }
  }
  const fb = FALLBACK[head];
  return fb !== undefined ? canonical(fb + rest) : null;
}

/** Is `local` bound by an import from a Membit module (so `PackedDropout` is ours)? */
export function boundToMembit(imports: Imports, local: string): boolean {
  return imports.bindings.some((b) => !b.star && b.local === local && b.target.startsWith('membit.'));
}

export type Style = 'qualified' | 'bare';

/**
 * How this file spells the stock PyTorch name `target` (canonical, e.g.
 * `torch.nn.Dropout`): a bare name bound by `from torch.nn import Dropout [as D]`
 * or a star import for `bare`; the shortest module alias for `qualified` (`F.dropout`
 * before `nn.functional.dropout` before `torch.nn.functional.dropout`), earlier
 * imports first on ties. Falls back to the other style, then to the full dotted name.
 *
 * Convert and revert both call this: a converted call is reverted to this spelling
 * unless a per-line mark records another one, and convert writes that mark exactly
 * when the original spelling differs from this.
 */
export function stockSpelling(imports: Imports, target: string, style: Style): string {
  const bare = (): string | undefined => {
    const final = target.slice(target.lastIndexOf('.') + 1);
    for (const b of imports.bindings) {
      if (b.star ? canonical(`${b.target}.${final}`) === target : canonical(b.target) === target) return b.star ? final : b.local;
    }
    return undefined;
  };
  const qualified = (): string | undefined => {
    let best: string | undefined;
    for (const b of imports.bindings) {
      if (b.star || b.target.startsWith('membit')) continue;
      // `import torch.nn` binds `torch`; `from torch import nn` binds `nn` to torch.nn.
      const mod = b.target;
      if (!target.startsWith(`${mod}.`)) continue;
      const spelled = b.local + target.slice(mod.length);
      if (best === undefined || spelled.length < best.length) best = spelled;
    }
    return best;
  };
  const first = style === 'bare' ? (bare() ?? qualified()) : (qualified() ?? bare());
  if (first) return first;
  // Nothing imports it (a snippet, a later notebook cell): the conventional names the scanner assumes.
  if (target.startsWith('torch.nn.functional.')) return `F.${target.slice('torch.nn.functional.'.length)}`;
  if (target.startsWith('torch.nn.')) return `nn.${target.slice('torch.nn.'.length)}`;
  return target;
}

/** The line break the file uses (its first one), `\n` when it has none. */
export function eolOf(text: string): string {
  const i = text.search(/\r\n|\n|\r/);
  if (i < 0) return '\n';
  return text.startsWith('\r\n', i) ? '\r\n' : text.charAt(i);
}

/** Which of the imports in `needed` the file lacks. `import membit.nn` also provides `membit`. */
export function missingImports(imports: Imports, needed: ReadonlySet<MembitImport>): MembitImport[] {
  const loads = new Set<string>();
  for (const b of imports.bindings) {
    const s = imports.statements[b.stmt];
    if (!s?.topLevel) continue;
    if (b.loads) loads.add(b.loads);
  }
  const loaded = (m: string) => [...loads].some((l) => l === m || l.startsWith(`${m}.`));
  const has = (k: MembitImport): boolean => {
    switch (k) {
      case 'membit':
        return [...loads].some((l) => l === 'membit' || l.startsWith('membit.')) || needed.has('nn') || needed.has('sparse');
      case 'nn':
        return loaded('membit.nn');
      case 'sparse':
        return loaded('membit.sparse');
      default:
        return imports.bindings.some((b) => !b.star && b.local === k && b.target.startsWith('membit.') && imports.statements[b.stmt]?.topLevel);
    }
  };
  const order = Object.keys(MEMBIT_IMPORTS) as MembitImport[];
  return order.filter((k) => needed.has(k) && !has(k));
}

const COMPOUND_DEF = new Set(['def', 'class', 'async']);

function isTorchModule(m: string): boolean {
  return m === 'torch' || m.startsWith('torch.');
}

/** Where a new import line goes: after the end of line `afterLine`, or at the very top when -1. */
export interface ImportAnchor {
  afterLine: number;
}

/**
 * Picks the line after which Membit's imports go. The file's header is its leading
 * top-level statements up to the first definition, decorator, or statement that
 * holds a line in `useLines` (a converted site at module level must see the import).
 * In that header: after the last Membit import; else after the last torch import;
 * else after the last import (so after `from __future__` ones); else after the module
 * docstring; else after the leading comment block (shebang, coding, licence); else
 * at the top.
 */
export function importAnchor(t: Tokens, imports: Imports, useLines: readonly number[]): ImportAnchor {
  const a = importAnchorLine(t, imports, useLines);
  return { afterLine: pastLeverRecord(t, a.afterLine) };
}

/**
 * A lever's revert record (leverRecord.ts) belongs to the lines right above it: an import
 * added after the last of those lines goes after the record instead, so the record still
 * counts the right lines.
 */
function pastLeverRecord(t: Tokens, afterLine: number): number {
  if (afterLine < 0) return afterLine;
  const lineText = (l: number) => t.text.slice(t.lineStarts[l], lineEnd(t.text, t.lineStarts, l));
  let l = afterLine;
  if (l + 1 < t.lineStarts.length && /^[ \t]*# membit: (sdpa|checkpoint|autocast) rewrote the \d+ lines? above;/.test(lineText(l + 1))) {
    l++;
    while (l + 1 < t.lineStarts.length && /^[ \t]*#\|/.test(lineText(l + 1))) l++;
  }
  return l;
}

function importAnchorLine(t: Tokens, imports: Imports, useLines: readonly number[]): ImportAnchor {
  const header: LogicalLine[] = [];
  const firstUse = useLines.length ? Math.min(...useLines) : Infinity;
  for (const line of t.lines) {
    if (line.indent !== 0) continue;
    const head = tokText(t, line.first);
    if (COMPOUND_DEF.has(head) || head === '@') break;
    if (line.endLine >= firstUse) break;
    header.push(line);
  }
  const inHeader = imports.statements.filter((s) => s.topLevel && header.includes(s.line));
  const pick = (pred: (s: ImportStatement) => boolean) => {
    const hits = inHeader.filter(pred);
    return hits.at(-1)?.line.endLine;
  };
  const membit = pick((s) => s.modules.some((m) => m === 'membit' || m.startsWith('membit.')));
  if (membit !== undefined) return { afterLine: membit };
  const torch = pick((s) => s.modules.some(isTorchModule));
  if (torch !== undefined) return { afterLine: torch };
  const any = pick(() => true);
  if (any !== undefined) return { afterLine: any };
  const first = header[0];
  if (first && first.first === first.last && t.toks[first.first]?.type === 'string') return { afterLine: first.endLine };
  // Leading comment lines that start the file (shebang, coding, licence).
  let last = -1;
  for (let l = 0; l < t.lineStarts.length - 1; l++) {
    const s = t.text.slice(t.lineStarts[l], lineEnd(t.text, t.lineStarts, l));
    if (s.startsWith('#')) last = l;
    else break;
  }
  return { afterLine: last };
}
