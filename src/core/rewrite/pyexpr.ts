/**
 * A small Python expression parser over the rewriter's tokens, for the advisor's
 * rewrites: they match statements by shape (`q @ k.transpose(-2, -1) * s`), and a
 * tree with Python's precedence tells `a @ b * c` from `a @ (b * c)` where a token
 * comparison could not. Every node keeps its source offsets, so a rewrite copies the
 * user's own spelling of the parts it keeps.
 *
 * It covers what model code writes in assignments and calls (names, numbers, strings,
 * attributes, calls with keywords and splats, subscripts and slices, unary, binary,
 * comparison and boolean operators, `x if c else y`, tuples and lists). Anything else
 * (lambdas, comprehensions, dicts, walrus) is a parse failure: `parseExpr` returns
 * undefined and the caller treats the statement as not matching. It never throws.
 */
import { nextCode, type Tok, tokText, type Tokens } from './tokens';

interface Span {
  /** Offsets into the text: start of the first token, end of the last. */
  s: number;
  e: number;
}

export type Expr =
  | (Span & { k: 'name'; id: string })
  | (Span & { k: 'num'; text: string })
  | (Span & { k: 'str'; text: string })
  | (Span & { k: 'attr'; obj: Expr; name: string })
  | (Span & { k: 'call'; fn: Expr; args: Arg[] })
  | (Span & { k: 'sub'; obj: Expr; items: Expr[] })
  | (Span & { k: 'slice'; lo?: Expr; hi?: Expr; step?: Expr })
  | (Span & { k: 'unary'; op: string; x: Expr })
  | (Span & { k: 'bin'; op: string; l: Expr; r: Expr })
  | (Span & { k: 'cmp'; op: string; l: Expr; r: Expr })
  | (Span & { k: 'bool'; op: string; l: Expr; r: Expr })
  | (Span & { k: 'ifexp'; body: Expr; test: Expr; orelse: Expr })
  | (Span & { k: 'tuple'; items: Expr[] })
  | (Span & { k: 'list'; items: Expr[] })
  | (Span & { k: 'star'; op: '*' | '**'; x: Expr });

export interface Arg {
  /** Keyword name, or undefined for a positional argument or a splat. */
  kw?: string;
  /** `*` or `**` for splats. */
  star?: '*' | '**';
  value: Expr;
}

class Fail extends Error {}

const MAX_DEPTH = 100;

const KEYWORDS = new Set(['lambda', 'yield', 'await', 'for', 'async', 'def', 'class', 'return', 'import', 'from', 'with', 'while', 'del', 'pass', 'global', 'nonlocal', 'assert', 'raise']);

/** Binary operator tiers, loosest first (after comparisons). */
const TIERS: readonly ReadonlySet<string>[] = [new Set(['|']), new Set(['^']), new Set(['&']), new Set(['<<', '>>']), new Set(['+', '-']), new Set(['*', '/', '//', '%', '@'])];
const CMP = new Set(['==', '!=', '<', '>', '<=', '>=']);

class Parser {
  /** Code tokens of the range (comments, blank lines and continuations removed). */
  private readonly ks: number[] = [];
  private i = 0;
  /** Recursion depth, bounded so that pathological input fails instead of overflowing the stack. */
  private nesting = 0;

  constructor(
    private readonly t: Tokens,
    first: number,
    last: number,
  ) {
    for (let k = first; k >= 0 && k <= last; k = nextCode(this.t, k)) {
      const type = (t.toks[k] as Tok).type;
      if (type !== 'comment' && type !== 'nl' && type !== 'cont') this.ks.push(k);
    }
  }

  done(): boolean {
    return this.i >= this.ks.length;
  }

  private tok(off = 0): Tok | undefined {
    const k = this.ks[this.i + off];
    return k === undefined ? undefined : this.t.toks[k];
  }

  private text(off = 0): string {
    const k = this.ks[this.i + off];
    return k === undefined ? '' : tokText(this.t, k);
  }

  private isOp(op: string, off = 0): boolean {
    const tok = this.tok(off);
    return !!tok && tok.type === 'op' && this.text(off) === op;
  }

  private isKw(kw: string, off = 0): boolean {
    const tok = this.tok(off);
    return !!tok && tok.type === 'name' && this.text(off) === kw;
  }

  private take(): Tok {
    const tok = this.tok();
    if (!tok) throw new Fail();
    this.i++;
    return tok;
  }

  private expectOp(op: string): Tok {
    if (!this.isOp(op)) throw new Fail();
    return this.take();
  }

  /** An expression list: `a, b` is a tuple (no parentheses). */
  exprList(): Expr {
    const first = this.test();
    if (!this.isOp(',')) return first;
    const items = [first];
    while (this.isOp(',')) {
      this.take();
      if (this.done() || this.isOp(')') || this.isOp(']') || this.isOp('=')) break;
      items.push(this.test());
    }
    return { k: 'tuple', items, s: first.s, e: (items[items.length - 1] as Expr).e };
  }

  /** `test`: a conditional expression. */
  test(): Expr {
    if (++this.nesting > MAX_DEPTH) throw new Fail();
    try {
      return this.conditional();
    } finally {
      this.nesting--;
    }
  }

  private conditional(): Expr {
    const body = this.or();
    if (this.isKw('if')) {
      this.take();
      const test = this.or();
      if (!this.isKw('else')) throw new Fail();
      this.take();
      const orelse = this.test();
      return { k: 'ifexp', body, test, orelse, s: body.s, e: orelse.e };
    }
    return body;
  }

  private or(): Expr {
    let l = this.and();
    while (this.isKw('or')) {
      this.take();
      const r = this.and();
      l = { k: 'bool', op: 'or', l, r, s: l.s, e: r.e };
    }
    return l;
  }

  private and(): Expr {
    let l = this.not();
    while (this.isKw('and')) {
      this.take();
      const r = this.not();
      l = { k: 'bool', op: 'and', l, r, s: l.s, e: r.e };
    }
    return l;
  }

  private not(): Expr {
    if (this.isKw('not')) {
      const tok = this.take();
      if (++this.nesting > MAX_DEPTH) throw new Fail();
      const x = this.not();
      this.nesting--;
      return { k: 'unary', op: 'not', x, s: tok.start, e: x.e };
    }
    return this.comparison();
  }

  private comparison(): Expr {
    let l = this.binary(0);
    for (;;) {
      let op: string | undefined;
      if (this.tok()?.type === 'op' && CMP.has(this.text())) op = this.text();
      else if (this.isKw('in')) op = 'in';
      else if (this.isKw('is')) op = this.isKw('not', 1) ? 'is not' : 'is';
      else if (this.isKw('not') && this.isKw('in', 1)) op = 'not in';
      if (!op) return l;
      this.take();
      if (op === 'is not' || op === 'not in') this.take();
      const r = this.binary(0);
      l = { k: 'cmp', op, l, r, s: l.s, e: r.e };
    }
  }

  private binary(tier: number): Expr {
    const ops = TIERS[tier];
    if (!ops) return this.unary();
    let l = this.binary(tier + 1);
    while (this.tok()?.type === 'op' && ops.has(this.text())) {
      const op = this.text();
      this.take();
      const r = this.binary(tier + 1);
      l = { k: 'bin', op, l, r, s: l.s, e: r.e };
    }
    return l;
  }

  private unary(): Expr {
    if (this.isOp('-') || this.isOp('+') || this.isOp('~')) {
      const op = this.text();
      const tok = this.take();
      if (++this.nesting > MAX_DEPTH) throw new Fail();
      const x = this.unary();
      this.nesting--;
      return { k: 'unary', op, x, s: tok.start, e: x.e };
    }
    return this.power();
  }

  private power(): Expr {
    const base = this.primary();
    if (this.isOp('**')) {
      this.take();
      // Right-associative, and `-` binds looser on its left only: 2 ** -1 is fine.
      if (++this.nesting > MAX_DEPTH) throw new Fail();
      const exp = this.unary();
      this.nesting--;
      return { k: 'bin', op: '**', l: base, r: exp, s: base.s, e: exp.e };
    }
    return base;
  }

  private primary(): Expr {
    let x = this.atom();
    for (;;) {
      if (this.isOp('.')) {
        this.take();
        const tok = this.tok();
        if (tok?.type !== 'name') throw new Fail();
        const name = this.text();
        this.take();
        x = { k: 'attr', obj: x, name, s: x.s, e: tok.end };
      } else if (this.isOp('(')) {
        this.take();
        const args = this.args();
        const close = this.expectOp(')');
        x = { k: 'call', fn: x, args, s: x.s, e: close.end };
      } else if (this.isOp('[')) {
        this.take();
        const items = this.subscripts();
        const close = this.expectOp(']');
        x = { k: 'sub', obj: x, items, s: x.s, e: close.end };
      } else return x;
    }
  }

  private args(): Arg[] {
    const out: Arg[] = [];
    while (!this.isOp(')')) {
      if (this.isOp('*') || this.isOp('**')) {
        const star = this.text() as '*' | '**';
        this.take();
        out.push({ star, value: this.test() });
      } else if (this.tok()?.type === 'name' && this.isOp('=', 1)) {
        const kw = this.text();
        this.take();
        this.take();
        out.push({ kw, value: this.test() });
      } else {
        const value = this.test();
        // A generator expression argument (`f(x for x in y)`) is out of scope.
        if (this.isKw('for') || this.isKw('async')) throw new Fail();
        out.push({ value });
      }
      if (!this.isOp(',')) break;
      this.take();
    }
    return out;
  }

  private subscripts(): Expr[] {
    const out: Expr[] = [];
    while (!this.isOp(']')) {
      out.push(this.sliceItem());
      if (!this.isOp(',')) break;
      this.take();
    }
    if (out.length === 0) throw new Fail();
    return out;
  }

  private sliceItem(): Expr {
    const start = this.tok();
    if (!start) throw new Fail();
    let lo: Expr | undefined;
    if (!this.isOp(':')) {
      lo = this.test();
      if (!this.isOp(':')) return lo;
    }
    const colon = this.take();
    let end = colon.end;
    let hi: Expr | undefined;
    let step: Expr | undefined;
    if (!this.isOp(':') && !this.isOp(',') && !this.isOp(']')) {
      hi = this.test();
      end = hi.e;
    }
    if (this.isOp(':')) {
      end = this.take().end;
      if (!this.isOp(',') && !this.isOp(']')) {
        step = this.test();
        end = step.e;
      }
    }
    const node: Expr = { k: 'slice', s: lo ? lo.s : colon.start, e: end };
    if (lo) node.lo = lo;
    if (hi) node.hi = hi;
    if (step) node.step = step;
    return node;
  }

  private atom(): Expr {
    const tok = this.tok();
    if (!tok) throw new Fail();
    const text = this.text();
    if (tok.type === 'name') {
      if (KEYWORDS.has(text) || text === 'if' || text === 'else' || text === 'not' || text === 'and' || text === 'or' || text === 'in' || text === 'is') throw new Fail();
      this.take();
      return { k: 'name', id: text, s: tok.start, e: tok.end };
    }
    if (tok.type === 'number') {
      this.take();
      return { k: 'num', text, s: tok.start, e: tok.end };
    }
    if (tok.type === 'string') {
      this.take();
      let e = tok.end;
      // Adjacent literals concatenate; keep the span, the text of the first decides nothing.
      while (this.tok()?.type === 'string') e = this.take().end;
      return { k: 'str', text: this.t.text.slice(tok.start, e), s: tok.start, e };
    }
    if (this.isOp('...')) {
      this.take();
      return { k: 'name', id: '...', s: tok.start, e: tok.end };
    }
    if (this.isOp('(')) {
      this.take();
      if (this.isOp(')')) {
        const close = this.take();
        return { k: 'tuple', items: [], s: tok.start, e: close.end };
      }
      const inner = this.exprList();
      if (this.isKw('for') || this.isKw('async')) throw new Fail();
      const close = this.expectOp(')');
      // A parenthesised expression keeps its node; a tuple takes the parentheses' span.
      return inner.k === 'tuple' ? { ...inner, s: tok.start, e: close.end } : inner;
    }
    if (this.isOp('[')) {
      this.take();
      const items: Expr[] = [];
      while (!this.isOp(']')) {
        items.push(this.isOp('*') ? this.starred() : this.test());
        if (this.isKw('for') || this.isKw('async')) throw new Fail();
        if (!this.isOp(',')) break;
        this.take();
      }
      const close = this.expectOp(']');
      return { k: 'list', items, s: tok.start, e: close.end };
    }
    if (this.isOp('*')) return this.starred();
    throw new Fail();
  }

  private starred(): Expr {
    const tok = this.take();
    const x = this.or();
    return { k: 'star', op: '*', x, s: tok.start, e: x.e };
  }
}

/**
 * Parses the code tokens `first..last` (inclusive; trivia skipped) as one expression
 * (a bare `a, b` is a tuple). Undefined when they are not exactly one expression of
 * the supported kinds.
 */
export function parseExpr(t: Tokens, first: number, last: number): Expr | undefined {
  if (first < 0 || last < first) return undefined;
  try {
    const p = new Parser(t, first, last);
    const e = p.exprList();
    return p.done() ? e : undefined;
  } catch (e) {
    if (e instanceof Fail) return undefined;
    throw e;
  }
}

/** Source text of a node, as written. */
export function src(t: Tokens, e: Expr): string {
  return t.text.slice(e.s, e.e);
}

/**
 * The node's code with whitespace, comments and line continuations removed, for
 * comparing two spellings of the same expression (`T` and ` T`).
 */
export function compact(t: Tokens, e: Expr): string {
  let out = '';
  for (const tok of t.toks) {
    if (tok.start < e.s) continue;
    if (tok.start >= e.e) break;
    if (tok.type === 'comment' || tok.type === 'nl' || tok.type === 'cont' || tok.type === 'newline') continue;
    out += t.text.slice(tok.start, tok.end);
  }
  return out;
}

/** `a.b.c` as a string when the node is a dotted name, else undefined. */
export function dottedName(e: Expr): string | undefined {
  if (e.k === 'name') return e.id;
  if (e.k === 'attr') {
    const base = dottedName(e.obj);
    return base === undefined ? undefined : `${base}.${e.name}`;
  }
  return undefined;
}

/** The value of a number literal (`1.0`, `-1` through a unary minus), or undefined. */
export function numberValue(e: Expr): number | undefined {
  if (e.k === 'num') {
    if (/[jJ]$/.test(e.text)) return undefined;
    const v = Number(e.text.replace(/_/g, ''));
    return Number.isFinite(v) ? v : undefined;
  }
  if (e.k === 'unary' && (e.op === '-' || e.op === '+')) {
    const v = numberValue(e.x);
    return v === undefined ? undefined : e.op === '-' ? -v : v;
  }
  return undefined;
}

/**
 * The value of a plain string literal (one token, no f/b prefix, no escapes), or
 * undefined: enough for `"eager"` and `'-inf'`.
 */
export function stringValue(e: Expr): string | undefined {
  if (e.k !== 'str') return undefined;
  const m = /^([rRuU]?)("""|'''|"|')(.*)\2$/s.exec(e.text);
  if (!m) return undefined;
  const body = m[3] as string;
  if (body.includes('\\') || body.includes(m[2] as string)) return undefined;
  return body;
}

/** Positional arguments and keywords of a call, or undefined when it has splats. */
export function callArgs(call: Expr & { k: 'call' }): { pos: Expr[]; kw: Map<string, Expr> } | undefined {
  const pos: Expr[] = [];
  const kw = new Map<string, Expr>();
  for (const a of call.args) {
    if (a.star) return undefined;
    if (a.kw !== undefined) {
      if (kw.has(a.kw)) return undefined;
      kw.set(a.kw, a.value);
    } else {
      if (kw.size > 0) return undefined;
      pos.push(a.value);
    }
  }
  return { pos, kw };
}

/** The direct children of a node, in source order. */
function childrenOf(e: Expr): Expr[] {
  switch (e.k) {
    case 'attr':
      return [e.obj];
    case 'call':
      return [e.fn, ...e.args.map((a) => a.value)];
    case 'sub':
      return [e.obj, ...e.items];
    case 'slice':
      return [e.lo, e.hi, e.step].filter((x): x is Expr => !!x);
    case 'unary':
    case 'star':
      return [e.x];
    case 'bin':
    case 'cmp':
    case 'bool':
      return [e.l, e.r];
    case 'ifexp':
      return [e.body, e.test, e.orelse];
    case 'tuple':
    case 'list':
      return e.items;
    default:
      return [];
  }
}

/** Every node of the tree, depth first, the node itself first (iterative: long `a + b + ...` chains are deep). */
export function* walk(e: Expr): Generator<Expr> {
  const stack: Expr[] = [e];
  while (stack.length) {
    const n = stack.pop() as Expr;
    yield n;
    const kids = childrenOf(n);
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i] as Expr);
  }
}
