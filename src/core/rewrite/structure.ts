/**
 * Block structure of a Python file from the tokenizer's logical lines: which block
 * header (def, class, for, if, ...) each statement belongs to, its siblings, and
 * the simple assignments it makes. The advisor's rewrites match short runs of
 * sibling statements with this, without a parser and on any text: a file whose
 * indentation is broken just yields structures that match nothing.
 */
import { type Expr, parseExpr } from './pyexpr';
import { type LogicalLine, type Tok, tokText, type Tokens } from './tokens';

const COMPOUND = new Set(['def', 'class', 'if', 'elif', 'else', 'for', 'while', 'with', 'try', 'except', 'finally', 'async', 'match', 'case']);

export interface Stmt {
  /** Index in {@link Structure.stmts} (and in `Tokens.lines`). */
  index: number;
  line: LogicalLine;
  /** Leading whitespace of its first line, as written. */
  indent: string;
  /** First token's text (`def`, `for`, `x`, ...). */
  head: string;
  /** A block header whose body follows on the next lines (ends with `:`). */
  header: boolean;
  /** A compound statement with its body on the same line (`for b in h: x = b(x)`). */
  inlineBody: boolean;
  /** The statement holds a top-level `;` (several statements on one line). */
  semicolon: boolean;
  /** Index of the enclosing block header, or -1 at module level. */
  parent: number;
  /** Position among the parent's children. */
  sibling: number;
  /** Token index of the last code token (before a trailing comment). */
  last: number;
}

export interface Structure {
  t: Tokens;
  stmts: Stmt[];
  /** Statements by parent index (-1: module level), in file order. */
  children: Map<number, Stmt[]>;
}

function isOp(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

export function structureOf(t: Tokens): Structure {
  const stmts: Stmt[] = [];
  const children = new Map<number, Stmt[]>();
  // Open block headers: the indentation column of each and its statement.
  const stack: { col: number; index: number }[] = [];
  for (const [index, line] of t.lines.entries()) {
    const first = t.toks[line.first] as Tok;
    const col = line.indent;
    while (stack.length && (stack[stack.length - 1] as { col: number }).col >= col) stack.pop();
    const parent = stack.length ? (stack[stack.length - 1] as { index: number }).index : -1;
    const head = tokText(t, line.first);
    const base = first.depth;
    let semicolon = false;
    let colonAtEnd = false;
    for (let k = line.first; k <= line.last; k++) {
      const tok = t.toks[k] as Tok;
      if (tok.depth === base && isOp(t, k, ';')) semicolon = true;
    }
    const lastTok = t.toks[line.last] as Tok;
    if (lastTok.depth === base && isOp(t, line.last, ':')) colonAtEnd = true;
    const compound = COMPOUND.has(head) || head === '@';
    const header = compound && colonAtEnd;
    const lineStart = t.lineStarts[line.startLine] as number;
    const stmt: Stmt = {
      index,
      line,
      indent: t.text.slice(lineStart, first.start),
      head,
      header,
      // `match`/`case` are soft keywords: `match = 3` is an assignment.
      inlineBody: compound && head !== '@' && head !== 'match' && head !== 'case' && !colonAtEnd,
      semicolon,
      parent,
      sibling: 0,
      last: line.last,
    };
    stmts.push(stmt);
    const sib = children.get(parent);
    if (sib) {
      stmt.sibling = sib.length;
      sib.push(stmt);
    } else children.set(parent, [stmt]);
    if (header) stack.push({ col, index });
  }
  return { t, stmts, children };
}

/** The sibling right after `s` in its block, or undefined. */
export function nextSibling(st: Structure, s: Stmt): Stmt | undefined {
  return st.children.get(s.parent)?.[s.sibling + 1];
}

/** The sibling right before `s` in its block, or undefined. */
export function prevSibling(st: Structure, s: Stmt): Stmt | undefined {
  return s.sibling > 0 ? st.children.get(s.parent)?.[s.sibling - 1] : undefined;
}

/** The innermost enclosing header whose head is one of `heads` (`def`, `class`). */
export function enclosing(st: Structure, s: Stmt, heads: ReadonlySet<string>): Stmt | undefined {
  for (let p = s.parent; p >= 0; ) {
    const h = st.stmts[p] as Stmt;
    if (heads.has(h.head) || (h.head === 'async' && heads.has(tokText(st.t, h.line.first + 1)))) return h;
    p = h.parent;
  }
  return undefined;
}

const DEF = new Set(['def']);
const CLASS = new Set(['class']);

export function enclosingDef(st: Structure, s: Stmt): Stmt | undefined {
  return enclosing(st, s, DEF);
}

/** The class a method belongs to: the class header that is the def's parent. */
export function classOfMethod(st: Structure, def: Stmt): Stmt | undefined {
  const p = st.stmts[def.parent];
  return p?.head === 'class' ? p : undefined;
}

export function enclosingClass(st: Structure, s: Stmt): Stmt | undefined {
  return enclosing(st, s, CLASS);
}

/** Every statement inside a block header (its whole subtree), in file order. */
export function bodyOf(st: Structure, header: Stmt): Stmt[] {
  const out: Stmt[] = [];
  for (let i = header.index + 1; i < st.stmts.length; i++) {
    const s = st.stmts[i] as Stmt;
    let inside = false;
    for (let p = s.parent; p >= 0; p = (st.stmts[p] as Stmt).parent) {
      if (p === header.index) {
        inside = true;
        break;
      }
    }
    if (!inside) break;
    out.push(s);
  }
  return out;
}

/** The def's parameter names as written (`self`, `x`, `past_key_value`), or [] when unreadable. */
export function paramsOf(st: Structure, def: Stmt): string[] {
  const t = st.t;
  let k = def.line.first;
  if (tokText(t, k) === 'async') k++;
  const open = k + 2;
  if (!isOp(t, open, '(')) return [];
  const depth = (t.toks[open] as Tok).depth + 1;
  const out: string[] = [];
  let expectName = true;
  for (let j = open + 1; j <= def.last; j++) {
    const tok = t.toks[j] as Tok;
    if (tok.type === 'comment' || tok.type === 'nl' || tok.type === 'cont') continue;
    if (tok.depth < depth) break;
    if (tok.depth === depth && isOp(t, j, ',')) {
      expectName = true;
      continue;
    }
    if (expectName && tok.depth === depth && tok.type === 'name') {
      out.push(tokText(t, j));
      expectName = false;
    } else if (!(isOp(t, j, '*') || isOp(t, j, '**') || isOp(t, j, '/'))) expectName = false;
  }
  return out;
}

/** `targets = value` of a simple assignment statement. */
export interface Assign {
  /** One entry per `=`-separated target (`a = b = v` has two). */
  targets: Expr[];
  value: Expr;
}

/**
 * Reads a simple assignment (`x = v`, `a, b = v`, `x: T = v`); undefined for anything
 * else (augmented assignments, compound statements, several statements on a line,
 * unparseable parts).
 */
export function assignOf(st: Structure, s: Stmt): Assign | undefined {
  if (s.header || s.inlineBody || s.semicolon) return undefined;
  const t = st.t;
  const base = (t.toks[s.line.first] as Tok).depth;
  const eqs: number[] = [];
  let annotated = -1;
  for (let k = s.line.first; k <= s.last; k++) {
    const tok = t.toks[k] as Tok;
    if (tok.depth !== base || tok.type !== 'op') continue;
    const op = tokText(t, k);
    if (op === '=') eqs.push(k);
    else if (op === ':' && eqs.length === 0 && annotated < 0) annotated = k;
  }
  if (eqs.length === 0) return undefined;
  const targets: Expr[] = [];
  let from = s.line.first;
  for (const [i, eq] of eqs.entries()) {
    const end = i === 0 && annotated >= 0 ? annotated - 1 : eq - 1;
    const target = parseExpr(t, from, end);
    if (!target) return undefined;
    targets.push(target);
    from = eq + 1;
  }
  const value = parseExpr(t, from, s.last);
  if (!value) return undefined;
  return { targets, value };
}

/** The statement as one expression (an expression statement such as `loss.backward()`), or undefined. */
export function exprOf(st: Structure, s: Stmt): Expr | undefined {
  if (s.header || s.inlineBody || s.semicolon) return undefined;
  return parseExpr(st.t, s.line.first, s.last);
}

/** Names a simple target binds (`a`, `a, b`, `(a, _)`); undefined when a target is an attribute or subscript. */
export function boundNames(target: Expr): string[] | undefined {
  if (target.k === 'name') return [target.id];
  if (target.k === 'tuple' || target.k === 'list') {
    const out: string[] = [];
    for (const i of target.items) {
      const n = boundNames(i.k === 'star' ? i.x : i);
      if (!n) return undefined;
      out.push(...n);
    }
    return out;
  }
  return undefined;
}

/**
 * Token indexes where `name` is used as a variable in a statement: a name token not
 * after a `.` (so `self.att` is not a use of `att`) and not a keyword argument's name.
 */
export function uses(st: Structure, s: Stmt, name: string): number[] {
  const t = st.t;
  const out: number[] = [];
  for (let k = s.line.first; k <= s.line.last; k++) {
    const tok = t.toks[k] as Tok;
    if (tok.type !== 'name' || tokText(t, k) !== name) continue;
    let p = k - 1;
    while (p >= 0 && ['comment', 'nl', 'cont'].includes((t.toks[p] as Tok).type)) p--;
    if (p >= 0 && isOp(t, p, '.')) continue;
    let n = k + 1;
    while (n < t.toks.length && ['comment', 'nl', 'cont'].includes((t.toks[n] as Tok).type)) n++;
    if (tok.depth > 0 && isOp(t, n, '=') && p >= 0 && (isOp(t, p, '(') || isOp(t, p, ','))) continue;
    out.push(k);
  }
  return out;
}

/** Whether a string token of the statement spans a line break (re-indenting it would change the string). */
export function hasMultilineString(st: Structure, s: Stmt): boolean {
  const t = st.t;
  for (let k = s.line.first; k <= s.line.last; k++) {
    const tok = t.toks[k] as Tok;
    if (tok.type === 'string' && /[\r\n]/.test(t.text.slice(tok.start, tok.end))) return true;
  }
  return false;
}
