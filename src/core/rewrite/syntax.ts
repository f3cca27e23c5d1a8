/**
 * Tree-sitter for the rewriter: the scanner's grammar parses the text, and the levers read
 * statements (statements.ts) and expressions from its nodes. A rewrite matches an
 * expression by its shape (`q @ k.transpose(-2, -1) * s`), so the helpers here look through
 * grouping parentheses (`(q @ k)` is the `@` inside), skip comments and line continuations,
 * and read a call's arguments from its argument nodes: a comma, `=` or bracket inside a
 * string, a comment between arguments or a call over several lines is never taken apart.
 *
 * Nothing here recurses on the tree's depth (`1 + 1 + ... + 1` nests as deep as it is long).
 * Offsets are web-tree-sitter's indices: UTF-16 code units, the convention of `SiteRange`.
 */
import type { Node, Parser, Point } from 'web-tree-sitter';
import { loadRuntime } from '../scan/parser';
import { itemAt } from '../arrays';

let parser: Promise<Parser> | undefined;

function theParser(): Promise<Parser> {
  if (parser) return parser;
  const p = loadRuntime().then((rt) => rt.newParser());
  parser = p;
  // A failed load (the grammar's files missing) is tried again next time.
  p.catch(() => {
    if (parser === p) parser = undefined;
  });
  return p;
}

/**
 * Parses `text` and hands its module node to `read`; the tree is freed when `read`
 * returns, so nothing may keep a node past it.
 */
export async function withTree<T>(text: string, read: (root: Node) => T): Promise<T> {
  const p = await theParser();
  // Python ends a line at a lone `\r` too; the grammar only at `\n`. The same length keeps every offset.
  const source = text.includes('\r') ? text.replace(/\r(?!\n)/g, '\n') : text;
  // Parsing and reading are synchronous: no other parse can interleave on the shared parser.
  const tree = p.parse(source);
  if (!tree) throw new Error('the Python grammar gave no tree for this text');
  try {
    return read(tree.rootNode);
  } finally {
    tree.delete();
  }
}

const TRIVIA = new Set(['comment', 'line_continuation']);

/** Named children that are code: no comments, no line continuations. */
export function kids(n: Node): Node[] {
  return n.namedChildren.filter((c): c is Node => c !== null && !TRIVIA.has(c.type));
}

/** The expression inside grouping parentheses: `((x))` is `x` (a parenthesised tuple is a tuple node). */
export function bare(n: Node): Node {
  let x = n;
  while (x.type === 'parenthesized_expression') {
    const inner = kids(x);
    if (inner.length !== 1) break;
    x = itemAt(inner, 0);
  }
  return x;
}

/** A field's node, grouping parentheses looked through. */
export function field(n: Node, name: string): Node | undefined {
  const c = n.childForFieldName(name);
  return c ? bare(c) : undefined;
}

/** The operator of a binary, unary or boolean operator node (`@`, `-`, `and`). */
export function operator(n: Node): string | undefined {
  return n.childForFieldName('operator')?.type;
}

export function isName(n: Node | undefined, id?: string): n is Node {
  return !!n && n.type === 'identifier' && (id === undefined || n.text === id);
}

/** `l <op> r` with this operator. */
export function isBinary(n: Node | undefined, op?: string): n is Node {
  return !!n && n.type === 'binary_operator' && (op === undefined || operator(n) === op);
}

/** A call argument as written: keyword, splat, or positional. */
export interface Arg {
  /** Keyword name, or undefined for a positional argument or a splat. */
  kw?: string;
  /** `*` or `**` for splats. */
  star?: '*' | '**';
  /** The value, grouping parentheses looked through. */
  value: Node;
  /** The argument's own node (`p=0.1`, `*args`, `(x)`). */
  node: Node;
}

/** The arguments of a call node, in order (a generator argument, `f(x for x in y)`, is one positional). */
export function argsOf(call: Node): Arg[] {
  const list = call.childForFieldName('arguments');
  if (!list) return [];
  if (list.type !== 'argument_list') return [{ value: list, node: list }];
  return kids(list).map((a): Arg => {
    const inner = (): Node => bare(kids(a)[0] ?? a);
    switch (a.type) {
      case 'keyword_argument':
        return { kw: a.childForFieldName('name')?.text ?? '', value: field(a, 'value') ?? a, node: a };
      case 'list_splat':
        return { star: '*', value: inner(), node: a };
      case 'dictionary_splat':
        return { star: '**', value: inner(), node: a };
      default:
        return { value: bare(a), node: a };
    }
  });
}

/** Positional arguments and keywords of a call, or undefined when it has splats, a repeated keyword or a positional after a keyword. */
export function callArgs(call: Node): { pos: Node[]; kw: Map<string, Node> } | undefined {
  const pos: Node[] = [];
  const kw = new Map<string, Node>();
  for (const a of argsOf(call)) {
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

/** `a.b.c` as a string when the node is a dotted name, else undefined. */
export function dottedName(n: Node): string | undefined {
  const parts: string[] = [];
  let x = bare(n);
  while (x.type === 'attribute') {
    const attr = x.childForFieldName('attribute');
    const obj = x.childForFieldName('object');
    if (!attr || !obj) return undefined;
    parts.push(attr.text);
    x = bare(obj);
  }
  if (x.type !== 'identifier') return undefined;
  parts.push(x.text);
  return parts.reverse().join('.');
}

/** The value of a number literal (`1.0`, `-1` through a unary minus), or undefined. */
export function numberValue(n: Node): number | undefined {
  let x = bare(n);
  let sign = 1;
  while (x.type === 'unary_operator' && (operator(x) === '-' || operator(x) === '+')) {
    if (operator(x) === '-') sign = -sign;
    const arg = field(x, 'argument');
    if (!arg) return undefined;
    x = arg;
  }
  if (x.type !== 'integer' && x.type !== 'float') return undefined;
  if (/[jJ]$/.test(x.text)) return undefined;
  const v = Number(x.text.replace(/_/g, ''));
  return Number.isFinite(v) ? sign * v : undefined;
}

/**
 * The value of a plain string literal (one literal, no f/b prefix, no escapes), or
 * undefined: enough for `"eager"` and `'-inf'`.
 */
export function stringValue(n: Node): string | undefined {
  const x = bare(n);
  if (x.type !== 'string') return undefined;
  const m = /^([rRuU]?)("""|'''|"|')(.*)\2$/s.exec(x.text);
  if (!m) return undefined;
  const [, , quote = '', body = ''] = m;
  if (body.includes('\\') || body.includes(quote)) return undefined;
  return body;
}

/**
 * The node's code with whitespace, comments and line continuations removed, for
 * comparing two spellings of one expression (`T` and ` T`) and for short messages.
 */
export function compact(n: Node): string {
  let out = '';
  const stack: Node[] = [n];
  for (let x = stack.pop(); x !== undefined; x = stack.pop()) {
    if (TRIVIA.has(x.type)) continue;
    // A string is one piece, as written (its content may hold spaces and `#`).
    if (x.childCount === 0 || x.type === 'string') {
      out += x.text;
      continue;
    }
    for (let i = x.childCount - 1; i >= 0; i--) {
      const c = x.child(i);
      if (c) stack.push(c);
    }
  }
  return out;
}

/** Nodes that only hold expressions: walked through, never yielded. */
const CONTAINERS = new Set(['parenthesized_expression', 'argument_list', 'keyword_argument', 'comment', 'line_continuation']);

/**
 * Every expression node under `n` (itself first), depth first: names, literals, calls,
 * operators and so on. Not yielded: grouping parentheses and argument lists (their
 * contents are), a keyword argument's name and an attribute's name (`b` of `a.b` is
 * no variable), and the parts of a string literal.
 */
export function* walk(n: Node): Generator<Node> {
  const stack: Node[] = [n];
  for (let x = stack.pop(); x !== undefined; x = stack.pop()) {
    if (!CONTAINERS.has(x.type)) yield x;
    if (x.type === 'string') continue;
    const skip = x.type === 'attribute' ? x.childForFieldName('attribute') : x.type === 'keyword_argument' ? x.childForFieldName('name') : null;
    const children = x.namedChildren;
    for (let i = children.length - 1; i >= 0; i--) {
      const c = children[i];
      if (c && !(skip?.startIndex === c.startIndex && skip.endIndex === c.endIndex)) stack.push(c);
    }
  }
}

/** Names read as variables in an expression (not attribute or keyword names), in order. */
export function namesIn(n: Node): string[] {
  const out: string[] = [];
  for (const x of walk(n)) if (x.type === 'identifier') out.push(x.text);
  return out;
}

/** The nodes of these types that lie within [start, end) under `n`, in order. */
export function nodesIn(n: Node, types: string | string[], start: number, end: number, from: Point, to: Point): Node[] {
  return n.descendantsOfType(types, from, to).filter((x): x is Node => x !== null && x.startIndex >= start && x.endIndex <= end);
}

/** Whether `x` lies inside one of `spans` (sorted, non-nested string literals). */
export function within(spans: readonly Node[], x: Node): boolean {
  let lo = 0;
  let hi = spans.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = itemAt(spans, mid);
    if (x.endIndex <= s.startIndex) hi = mid - 1;
    else if (x.startIndex >= s.endIndex) lo = mid + 1;
    else return true;
  }
  return false;
}

/** The outermost string literals among `strings` (an f-string's nested literals dropped), in order. */
export function outermost(strings: readonly Node[]): Node[] {
  const out: Node[] = [];
  for (const s of strings) {
    const last = out[out.length - 1];
    if (last && s.startIndex < last.endIndex) continue;
    out.push(s);
  }
  return out;
}

/**
 * Whether an identifier is a variable (or a name bound) where it stands: not the
 * attribute of `a.b`, not a keyword argument's or default parameter's name, not a later
 * part of a dotted module name. Strings are the caller's to exclude.
 */
export function isVariable(id: Node): boolean {
  const p = id.parent;
  if (!p) return true;
  const same = (c: Node | null) => !!c && c.startIndex === id.startIndex && c.endIndex === id.endIndex;
  switch (p.type) {
    case 'attribute':
      return !same(p.childForFieldName('attribute'));
    case 'keyword_argument':
    case 'default_parameter':
    case 'typed_default_parameter':
      return !same(p.childForFieldName('name'));
    case 'dotted_name':
      return same(p.namedChild(0));
    default:
      return true;
  }
}

/** Whether an identifier follows a `.`: the attribute of `a.b`, or a later part of a dotted module name. */
export function afterDot(id: Node): boolean {
  const p = id.parent;
  if (!p) return false;
  const same = (c: Node | null) => !!c && c.startIndex === id.startIndex && c.endIndex === id.endIndex;
  if (p.type === 'attribute') return same(p.childForFieldName('attribute'));
  if (p.type === 'dotted_name') return !same(p.namedChild(0));
  return false;
}

/**
 * The tokens in [start, end) under `root`, in order: leaves of the tree, a string literal
 * as one token, comments, line continuations and empty (error-recovery) nodes left out.
 */
export function tokensIn(root: Node, start: number, end: number): Node[] {
  const out: Node[] = [];
  let top = root.descendantForIndex(start, Math.max(start, end - 1)) ?? root;
  while (top.parent && (top.startIndex > start || top.endIndex < end)) top = top.parent;
  const stack: Node[] = [top];
  for (let x = stack.pop(); x !== undefined; x = stack.pop()) {
    if (x.endIndex <= start || x.startIndex >= end || TRIVIA.has(x.type)) continue;
    if (x.childCount === 0 || x.type === 'string') {
      if (x.endIndex > x.startIndex && x.startIndex >= start) out.push(x);
      continue;
    }
    for (let i = x.childCount - 1; i >= 0; i--) {
      const c = x.child(i);
      if (c) stack.push(c);
    }
  }
  return out;
}

/** Whether a token is punctuation or an operator (`(`, `=`, `@`, `**`), not a word, number or string. */
export function isPunctuation(tok: Node): boolean {
  return !tok.isNamed && /^[-+*/%@&|^~<>=.,:;!()[\]{}]/.test(tok.type);
}

/** Whether a string literal runs across `offset` (starts before it and ends after it). */
export function stringAcross(root: Node, offset: number): boolean {
  for (let x: Node | null = root.descendantForIndex(offset, offset); x; x = x.parent) {
    if (x.type === 'string' && x.startIndex < offset && offset < x.endIndex) return true;
  }
  return false;
}
