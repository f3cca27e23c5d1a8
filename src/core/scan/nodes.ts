/**
 * Reading tree-sitter nodes, shared by facts.ts and adviceFacts.ts. Arguments are read
 * from the argument nodes the parser made, never by splitting their text again: a comma
 * or an `=` inside a string or a nested call is then never taken for a separator.
 */
import type { Node, QueryMatch } from 'web-tree-sitter';
import type { ArgFact, RelRange } from './factTypes';

/** Longest tuple or list literal whose items are kept: shapes have a handful, data may have thousands. */
const MAX_ARG_ITEMS = 256;

export function rel(node: Node, baseRow: number): RelRange {
  const s = node.startPosition;
  const e = node.endPosition;
  return { sr: s.row - baseRow, sc: s.column, er: e.row - baseRow, ec: e.column };
}

/** Last identifier of a callee as written, '' when it ends in a call or subscript. */
export function finalName(callee: string): string {
  return /([A-Za-z_]\w*)$/.exec(callee)?.[1] ?? '';
}

export function capture(m: QueryMatch, name: string): Node | undefined {
  for (const c of m.captures) if (c.name === name) return c.node;
  return undefined;
}

/** Named children that are not comments. */
function parts(node: Node): Node[] {
  return node.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment');
}

/** One argument of an argument list (comments are no arguments: skip them before). */
export function argFact(node: Node): ArgFact {
  switch (node.type) {
    case 'keyword_argument': {
      const value = node.childForFieldName('value');
      const out: ArgFact = { name: node.childForFieldName('name')?.text ?? '', text: value?.text ?? '' };
      if (value) readValue(out, value);
      return out;
    }
    case 'list_splat':
      return { name: '*', text: node.text };
    case 'dictionary_splat':
      return { name: '**', text: node.text };
    default: {
      const out: ArgFact = { name: null, text: node.text };
      readValue(out, node);
      return out;
    }
  }
}

/** The parts of a value the analysis reads: items of a shape, arms of a conditional width. */
function readValue(out: ArgFact, value: Node): void {
  switch (value.type) {
    case 'tuple':
    case 'list':
      if (value.namedChildCount <= MAX_ARG_ITEMS) out.items = parts(value).map((c) => c.text);
      return;
    case 'parenthesized_expression': {
      // `(L)` is one item; `((L, L))` one item too, the tuple, as Python sees it.
      const [only, ...more] = parts(value);
      if (only && more.length === 0) out.items = [only.text];
      return;
    }
    case 'conditional_expression': {
      // The value if true, the condition, the value if false.
      const p = parts(value);
      const [yes, , no] = p;
      if (p.length === 3 && yes && no) out.arms = [yes.text, no.text];
      return;
    }
    default:
      return;
  }
}
