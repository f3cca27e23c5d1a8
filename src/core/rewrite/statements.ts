/**
 * The statements of a Python file as the levers match them, read from tree-sitter's
 * tree: which block header (def, class, for, if, else, ...) each statement belongs to,
 * its siblings, and the simple assignments it makes. A lever matches short runs of
 * sibling statements with this.
 *
 * A statement is what Python calls a logical line: a simple statement (several joined
 * by `;` count as one, which no lever matches), a decorator, or the header of one clause
 * of a compound statement (`if ...:`, `elif ...:`, `else:` are siblings, each the parent
 * of its own body). A compound statement whose body sits on its header's line
 * (`for b in h: x = b(x)`) is one statement with no children.
 */
import type { Node, Point } from 'web-tree-sitter';
import { lineOf } from './lines';
import { bare, field, isVariable, kids, nodesIn, outermost, within } from './syntax';
import { itemAt } from '../arrays';

export interface Stmt {
  /** Index in {@link Structure.stmts}: file order, a header before its body. */
  index: number;
  /** A simple statement (the first of a `;` group), a decorator, or the compound statement or clause the header opens. */
  node: Node;
  /** For a header: the clause's node type (`function_definition`, `for_statement`, `else_clause`, ...). */
  kind: string;
  /** Offset of the first token, and the end of the last code token (a header's `:`; a trailing comment excluded). */
  start: number;
  end: number;
  /** 0-based physical lines of its first and last token. */
  startLine: number;
  endLine: number;
  /** Leading whitespace of its first line, as written. */
  indent: string;
  /** First token's text (`def`, `async`, `for`, `@`, `x`, ...). */
  head: string;
  /** A block header whose body follows on the next lines. */
  header: boolean;
  /** A compound statement with its body on the same line (`for b in h: x = b(x)`). */
  inlineBody: boolean;
  /** Several statements joined by `;`, or one ending with it. */
  semicolon: boolean;
  /** Index of the enclosing block header, or -1 at module level. */
  parent: number;
  /** Position among the parent's children. */
  sibling: number;
  /** A node that holds the whole statement (the block of a `;` group or a broken line), and the tree positions of `start` and `end`: where to look up its nodes. */
  holder: Node;
  from: Point;
  to: Point;
}

export interface Structure {
  text: string;
  lineStarts: readonly number[];
  stmts: Stmt[];
  /** Statements by parent index (-1: module level), in file order. */
  children: Map<number, Stmt[]>;
}

const COMPOUND = new Set(['function_definition', 'class_definition', 'decorated_definition', 'if_statement', 'for_statement', 'while_statement', 'try_statement', 'with_statement', 'match_statement', 'case_clause']);
const CLAUSES = new Set(['elif_clause', 'else_clause', 'except_clause', 'except_group_clause', 'finally_clause']);

/** One statement to place: its nodes, and for a clause its body block. */
interface Unit {
  nodes: Node[];
  semicolon: boolean;
  clause?: { node: Node; body: Node | undefined };
  /** The module or block it was read from (holds all its nodes). */
  within?: Node;
}

/** The clauses a compound statement opens, in order (a decorated definition's decorators first). */
function clausesOf(n: Node): Unit[] {
  const body = (c: Node) => c.children.find((x): x is Node => x !== null && x.type === 'block') ?? undefined;
  const unit = (c: Node): Unit => ({ nodes: [c], semicolon: false, clause: { node: c, body: body(c) } });
  if (n.type === 'decorated_definition') {
    const out: Unit[] = kids(n)
      .filter((c) => c.type === 'decorator')
      .map((c) => ({ nodes: [c], semicolon: false }));
    const def = n.childForFieldName('definition');
    if (def) out.push(unit(def));
    return out;
  }
  const out = [unit(n)];
  // Later clauses: elif/else of an if, else of a loop, except/else/finally of a try.
  for (const c of n.children) {
    if (c && CLAUSES.has(c.type)) out.push(unit(c));
  }
  return out;
}

/**
 * The statements of a module or block, `;` groups joined, compound statements split into
 * clauses. Where the grammar recovered from a syntax error, the statements it wrapped in an
 * error node (or left in a block without its header) are read in place, and the loose pieces
 * of each broken line make one statement that matches nothing.
 */
function unitsOf(container: Node): Unit[] {
  const out: Unit[] = [];
  let group: Unit | undefined;
  let loose: Unit | undefined;
  let semicolonRow = -1;
  const stack = container.children.filter((c): c is Node => c !== null).reverse();
  for (let c = stack.pop(); c !== undefined; c = stack.pop()) {
    if (c.type === 'comment' || c.type === 'line_continuation' || c.startIndex === c.endIndex) continue;
    if (c.type === 'ERROR' || c.type === 'block') {
      for (let i = c.childCount - 1; i >= 0; i--) {
        const k = c.child(i);
        if (k) stack.push(k);
      }
      continue;
    }
    if (c.type === ';') {
      if (group) group.semicolon = true;
      semicolonRow = c.startPosition.row;
      continue;
    }
    if (COMPOUND.has(c.type)) {
      group = loose = undefined;
      out.push(...clausesOf(c));
      continue;
    }
    if (!c.type.endsWith('_statement')) {
      // A piece of a broken line: with the rest of its line.
      group = undefined;
      const prev = loose?.nodes[loose.nodes.length - 1];
      if (loose && prev?.endPosition.row === c.startPosition.row) loose.nodes.push(c);
      else {
        loose = { nodes: [c], semicolon: false, within: container };
        out.push(loose);
      }
      continue;
    }
    loose = undefined;
    if (group && semicolonRow === c.startPosition.row) {
      group.nodes.push(c);
    } else {
      group = { nodes: [c], semicolon: false, within: container };
      out.push(group);
    }
    semicolonRow = -1;
  }
  return out;
}

/** The first token of a node (a string literal is one token). */
function firstToken(n: Node): Node {
  let x = n;
  while (x.childCount > 0 && x.type !== 'string') {
    const c = x.child(0);
    if (!c) break;
    x = c;
  }
  return x;
}

export function structureOf(text: string, lineStarts: readonly number[], root: Node): Structure {
  const stmts: Stmt[] = [];
  const children = new Map<number, Stmt[]>();
  // Depth first, a header before its body: pending units with their parent, the next on top.
  const stack: { unit: Unit; parent: number }[] = unitsOf(root)
    .reverse()
    .map((unit) => ({ unit, parent: -1 }));
  while (stack.length) {
    const { unit, parent } = stack.pop() as { unit: Unit; parent: number };
    const first = itemAt(unit.nodes, 0);
    const last = itemAt(unit.nodes, unit.nodes.length - 1);
    let end = last.endIndex;
    let to = last.endPosition;
    let header = false;
    let inlineBody = false;
    let body: Node | undefined;
    if (unit.clause) {
      const { node, body: block } = unit.clause;
      // The header ends at its `:` (the last one before the body).
      let colon: Node | undefined;
      for (const c of node.children) {
        if (!c || (block && c.startIndex >= block.startIndex)) break;
        if (c.type === ':') colon = c;
      }
      const code = block ? kids(block) : [];
      const lastCode = code.at(-1);
      if (colon && lastCode && itemAt(code, 0).startPosition.row === colon.endPosition.row) {
        inlineBody = true;
        end = lastCode.endIndex;
        to = lastCode.endPosition;
      } else if (colon) {
        header = true;
        body = block;
        end = colon.endIndex;
        to = colon.endPosition;
      } else {
        // No `:` (broken code): the clause as far as it goes, matching nothing.
        inlineBody = true;
        end = (lastCode ?? node).endIndex;
        to = (lastCode ?? node).endPosition;
      }
    }
    const start = first.startIndex;
    const startLine = first.startPosition.row;
    const lineStart = lineStarts[startLine] ?? 0;
    const stmtNode = unit.clause ? unit.clause.node : first;
    const stmt: Stmt = {
      index: stmts.length,
      node: stmtNode,
      kind: unit.clause ? unit.clause.node.type : first.type,
      start,
      end,
      startLine,
      endLine: lineOf(lineStarts, Math.max(start, end - 1)),
      indent: text.slice(lineStart, start),
      head: firstToken(first).text,
      header,
      inlineBody,
      semicolon: unit.semicolon,
      parent,
      sibling: 0,
      holder: unit.nodes.length > 1 ? (unit.within ?? first) : stmtNode,
      from: first.startPosition,
      to,
    };
    stmts.push(stmt);
    const sib = children.get(parent);
    if (sib) {
      stmt.sibling = sib.length;
      sib.push(stmt);
    } else children.set(parent, [stmt]);
    if (body) {
      const inner = unitsOf(body);
      for (let i = inner.length - 1; i >= 0; i--) stack.push({ unit: itemAt(inner, i), parent: stmt.index });
    }
  }
  return { text, lineStarts, stmts, children };
}

/** The sibling right after `s` in its block, or undefined. */
export function nextSibling(st: Structure, s: Stmt): Stmt | undefined {
  return st.children.get(s.parent)?.[s.sibling + 1];
}

/** The sibling right before `s` in its block, or undefined. */
export function prevSibling(st: Structure, s: Stmt): Stmt | undefined {
  return s.sibling > 0 ? st.children.get(s.parent)?.[s.sibling - 1] : undefined;
}

/** The innermost `def` (or `async def`) around a statement. */
export function enclosingDef(st: Structure, s: Stmt): Stmt | undefined {
  for (let p = s.parent; p >= 0; ) {
    const h = itemAt(st.stmts, p);
    if (h.kind === 'function_definition') return h;
    p = h.parent;
  }
  return undefined;
}

/** The class a method belongs to: the class header that is the def's parent. */
export function classOfMethod(st: Structure, def: Stmt): Stmt | undefined {
  const p = st.stmts[def.parent];
  return p?.kind === 'class_definition' ? p : undefined;
}

/** Every statement inside a block header (its whole subtree), in file order. */
export function bodyOf(st: Structure, header: Stmt): Stmt[] {
  const out: Stmt[] = [];
  for (let i = header.index + 1; i < st.stmts.length; i++) {
    const s = itemAt(st.stmts, i);
    let inside = false;
    for (let p = s.parent; p >= 0; p = itemAt(st.stmts, p).parent) {
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

/** The def's parameter names as written (`self`, `x`, `args` of `*args`), or [] when it has none. */
export function paramsOf(def: Stmt): string[] {
  const params = def.node.childForFieldName('parameters');
  if (!params) return [];
  const out: string[] = [];
  for (const p of kids(params)) {
    let x: Node | undefined = p;
    if (x.type === 'default_parameter' || x.type === 'typed_default_parameter') x = x.childForFieldName('name') ?? undefined;
    else if (x.type === 'typed_parameter') x = kids(x)[0];
    if (x && (x.type === 'list_splat_pattern' || x.type === 'dictionary_splat_pattern')) x = kids(x)[0];
    if (x?.type === 'identifier') out.push(x.text);
  }
  return out;
}

/** `targets = value` of a simple assignment statement. */
export interface Assign {
  /** One entry per `=`-separated target (`a = b = v` has two). */
  targets: Node[];
  value: Node;
}

/** The code children of a simple statement, when it is one statement (no `;`, not a header). */
function simple(s: Stmt): Node[] | undefined {
  if (s.header || s.inlineBody || s.semicolon || s.node.type !== 'expression_statement') return undefined;
  return kids(s.node);
}

/**
 * Reads a simple assignment (`x = v`, `a, b = v`, `x: T = v`); undefined for anything
 * else (augmented assignments, annotations without a value, compound statements,
 * several statements on a line).
 */
export function assignOf(s: Stmt): Assign | undefined {
  const parts = simple(s);
  let a = parts?.length === 1 ? parts[0] : undefined;
  if (a?.type !== 'assignment') return undefined;
  const targets: Node[] = [];
  for (;;) {
    const left = field(a, 'left');
    const right = a.childForFieldName('right');
    if (!left || !right) return undefined;
    targets.push(left);
    if (right.type !== 'assignment') return { targets, value: bare(right) };
    a = right;
  }
}

/** The statement as one expression (an expression statement such as `loss.backward()`), or undefined. */
export function exprOf(s: Stmt): Node | undefined {
  const parts = simple(s);
  const e = parts?.length === 1 ? parts[0] : undefined;
  return e && e.type !== 'assignment' && e.type !== 'augmented_assignment' ? bare(e) : undefined;
}

/** The expressions of an expression statement that is not an assignment (`a, b` has two). */
export function exprsOf(s: Stmt): Node[] {
  const parts = simple(s) ?? [];
  return parts.some((e) => e.type === 'assignment' || e.type === 'augmented_assignment') ? [] : parts.map(bare);
}

/** The value of `return <value>`, or undefined. */
export function returnValue(s: Stmt): Node | undefined {
  if (s.header || s.inlineBody || s.semicolon || s.node.type !== 'return_statement') return undefined;
  const v = kids(s.node)[0];
  return v ? bare(v) : undefined;
}

const TARGETS = new Set(['pattern_list', 'tuple_pattern', 'list_pattern', 'tuple', 'list', 'expression_list']);

/** Names a simple target binds (`a`, `a, b`, `(a, *_)`); undefined when a target is an attribute or subscript. */
export function boundNames(target: Node): string[] | undefined {
  const out: string[] = [];
  const stack = [bare(target)];
  for (let t = stack.pop(); t !== undefined; t = stack.pop()) {
    if (t.type === 'list_splat_pattern' || t.type === 'list_splat') t = bare(kids(t)[0] ?? t);
    if (t.type === 'identifier') out.push(t.text);
    else if (TARGETS.has(t.type)) {
      const items = kids(t).map(bare);
      for (let i = items.length - 1; i >= 0; i--) stack.push(itemAt(items, i));
    } else return undefined;
  }
  return out;
}

/** String literals of a statement, outermost only, in order. */
function stringsOf(s: Stmt): Node[] {
  return outermost(nodesIn(s.holder, 'string', s.start, s.end, s.from, s.to));
}

/** Identifiers of a statement that stand in code (not inside a string literal), in order. */
export function identifiersOf(s: Stmt): Node[] {
  const strings = stringsOf(s);
  return nodesIn(s.holder, 'identifier', s.start, s.end, s.from, s.to).filter((x) => !within(strings, x));
}

/**
 * Where `name` is used as a variable in a statement: not the attribute of `a.b` (so
 * `self.att` is not a use of `att`) and not a keyword argument's name.
 */
export function uses(s: Stmt, name: string): Node[] {
  return identifiersOf(s).filter((x) => x.text === name && isVariable(x));
}

/** Whether a string literal of the statement spans a line break (re-indenting it would change the string). */
export function hasMultilineString(s: Stmt): boolean {
  return stringsOf(s).some((x) => /[\r\n]/.test(x.text));
}
