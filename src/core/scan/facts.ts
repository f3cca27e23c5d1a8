/**
 * Facts of one chunk: a top-level statement, or one statement of a top-level
 * class body. Facts depend only on the chunk's own text, so they are cached by
 * that text: after a one-line edit only the edited chunk is read again.
 *
 * Rows are relative to the chunk's first row and indices relative to its first
 * character; columns are absolute (a chunk that moves keeps its columns).
 */
import type { Node, Query, QueryMatch } from 'web-tree-sitter';
import { emptyAdvice, readAdviceFacts } from './adviceFacts';
import { inFallbackBranch } from './branches';
import type { AliasTarget, CallFact, ChunkFacts, DefFact } from './factTypes';
import { BUILTINS, canonicalModule, type ImportFact, INTERESTING_FINALS } from './names';
import { argFact, capture, finalName, rel } from './nodes';
import { itemAt } from '../arrays';

/**
 * In-progress matches the query cursor may hold. Real code needs a few dozen; a chain of
 * 20,000 `+` or attribute accesses opened one per level and made the cursor quadratic.
 * The same bound Neovim uses for its tree-sitter queries.
 */
export const QUERY_MATCH_LIMIT = 256;

/** Longest container literal whose item positions are worked out. */
const MAX_ITEMS = 256;
/** Container calls whose items keep a path under the binding (`self.net[0]`). */
const CONTAINERS = new Set(['Sequential', 'ModuleList', 'ModuleDict', 'OrderedDict', 'register_buffer']);
/** Methods that keep attention probabilities what they are. */
const PASS_METHODS = new Set([
  'to', 'type', 'type_as', 'float', 'half', 'bfloat16', 'double', 'contiguous', 'masked_fill', 'masked_fill_', 'clone', 'detach',
  'view', 'reshape', 'view_as', 'nan_to_num', 'mul', 'mul_', 'div', 'div_', 'cuda', 'squeeze', 'unsqueeze',
]);
const SOFTMAX = /softmax/i;
/** `self.build_fc1(...)`: builder methods whose value may be a projection built in the method. */
const BUILDER_METHOD = /^self\._?(build|make|create)_\w+$/;
const ACTIVATION = /^(gelu|silu|relu|relu6|swish|sigmoid|mish|tanh|softplus|quick_gelu|gelu_new)$/;
const NOT_SOFTMAX = /log_?softmax|gumbel/i;
const NUMBER = /^\d[\d_]*(\.\d*)?([eE][+-]?\d+)?$/;

/** Names bound by an assignment target (`a`, `a, b`, `(a, *b)`); attributes and subscripts bind none. */
function targetNames(text: string): string[] {
  const out: string[] = [];
  for (const part of text.replace(/[()[\]]/g, '').split(',')) {
    const t = part.trim().replace(/^\*/, '');
    if (/^[A-Za-z_]\w*$/.test(t)) out.push(t);
  }
  return out;
}

function unquote(text: string): string | undefined {
  const m = /^[rbuRBU]*(['"])(.*)\1$/s.exec(text.trim());
  return m ? m[2] : undefined;
}

function readImport(node: Node, out: ImportFact[]): void {
  if (node.type === 'import_statement') {
    for (const n of node.childrenForFieldName('name')) {
      if (!n) continue;
      if (n.type === 'aliased_import') {
        const name = n.childForFieldName('name')?.text.replace(/\s+/g, '');
        const alias = n.childForFieldName('alias')?.text;
        if (name && alias) out.push({ local: alias, target: canonicalModule(name), star: false });
      } else {
        // `import torch.nn.functional` binds `torch`.
        const name = n.text.replace(/\s+/g, '');
        const head = name.split('.')[0] ?? name;
        out.push({ local: head, target: head, star: false });
      }
    }
    return;
  }
  const modNode = node.childForFieldName('module_name');
  if (!modNode) return;
  const module = canonicalModule(modNode.text);
  let star = false;
  for (const c of node.namedChildren) if (c?.type === 'wildcard_import') star = true;
  if (star) {
    out.push({ local: '', target: module, star: true });
    return;
  }
  const join = (m: string, n: string) => (m.endsWith('.') ? m + n : `${m}.${n}`);
  for (const n of node.childrenForFieldName('name')) {
    if (!n) continue;
    if (n.type === 'aliased_import') {
      const name = n.childForFieldName('name')?.text.replace(/\s+/g, '');
      const alias = n.childForFieldName('alias')?.text;
      if (name && alias) out.push({ local: alias, target: canonicalModule(join(module, name)), star: false });
    } else {
      const name = n.text.replace(/\s+/g, '');
      out.push({ local: name, target: canonicalModule(join(module, name)), star: false });
    }
  }
}

/** Parameter names of a function (for shadowing). */
function paramNames(params: Node): string[] {
  const out: string[] = [];
  for (const p of params.namedChildren) {
    if (!p) continue;
    const name = /^\**\s*([A-Za-z_]\w*)/.exec(p.text)?.[1];
    if (name !== undefined) out.push(name);
  }
  return out;
}

/** Is this expression attention probabilities, given the names known to hold them? */
function isProbs(node: Node | null, taint: ReadonlySet<string>, depth = 0): boolean {
  if (!node || depth > 8) return false;
  switch (node.type) {
    case 'identifier':
      return taint.has(node.text);
    case 'parenthesized_expression':
      return isProbs(node.namedChild(0), taint, depth + 1);
    case 'binary_operator': {
      // `attn @ v` is the attention output, no longer probabilities; `attn * head_mask` still is.
      const op = node.childForFieldName('operator')?.type;
      if (op === '@') return false;
      return isProbs(node.childForFieldName('left'), taint, depth + 1) || isProbs(node.childForFieldName('right'), taint, depth + 1);
    }
    case 'call': {
      const fn = node.childForFieldName('function');
      if (!fn) return false;
      if (fn.type === 'call') {
        // nn.Softmax(dim=-1)(scores)
        const inner = finalName(fn.childForFieldName('function')?.text ?? '');
        return SOFTMAX.test(inner) && !NOT_SOFTMAX.test(inner);
      }
      const final = finalName(fn.text);
      if (SOFTMAX.test(final) && !NOT_SOFTMAX.test(final)) return true;
      if (fn.type === 'attribute' && PASS_METHODS.has(final)) return isProbs(fn.childForFieldName('object'), taint, depth + 1);
      if (/drop/i.test(final)) {
        const args = node.childForFieldName('arguments');
        return isProbs(args?.namedChild(0) ?? null, taint, depth + 1);
      }
      return false;
    }
    default:
      return false;
  }
}

/** `self.attend` for the text `self.attend(dots)`; undefined for anything else. */
function memberCallee(text: string): string | undefined {
  const m = /^(self\.[A-Za-z_]\w*)\s*\(/.exec(text);
  return m && text.endsWith(')') ? m[1] : undefined;
}

/** Worth the tree walk: the text mentions softmax or a name already known to hold probabilities. */
function mayBeProbs(text: string, taint: ReadonlySet<string>): boolean {
  if (SOFTMAX.test(text)) return true;
  for (const t of taint) if (text.includes(t)) return true;
  return false;
}

/**
 * The dotted names an assignment's value may be: `g`, `F.dropout`, each branch of
 * `g if c else h` (nested and parenthesised ones too). Anything else (a call, a lambda,
 * `None`, a subscript) contributes nothing.
 */
function aliasTargets(node: Node | null, out: string[], depth: number): void {
  if (!node || depth > 4) return;
  switch (node.type) {
    case 'identifier':
    case 'attribute': {
      const t = node.text.replace(/\s+/g, '');
      if (/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$/.test(t)) out.push(t);
      return;
    }
    case 'parenthesized_expression':
      aliasTargets(node.namedChild(0), out, depth + 1);
      return;
    case 'conditional_expression': {
      // Children: the value if true, the condition, the value if false.
      const parts = node.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment');
      aliasTargets(parts[0] ?? null, out, depth + 1);
      aliasTargets(parts[2] ?? null, out, depth + 1);
      return;
    }
    default:
      return;
  }
}

/** Node types a target name is nested in (`for a, (b, f) in …`, `with x as (f, g)`). */
const TARGET_WRAPPERS = new Set(['pattern_list', 'tuple_pattern', 'list_pattern', 'list_splat_pattern', 'tuple', 'list', 'parenthesized_expression', 'expression_list']);

/** Is this identifier a name being bound (not read)? */
function bindsHere(id: Node): boolean {
  let n = id;
  for (let depth = 0; depth < 8; depth++) {
    const p = n.parent;
    if (!p) return false;
    if (TARGET_WRAPPERS.has(p.type)) {
      n = p;
      continue;
    }
    switch (p.type) {
      case 'as_pattern_target':
      case 'delete_statement':
      case 'global_statement':
      case 'nonlocal_statement':
      case 'import_statement':
      case 'import_from_statement':
      case 'aliased_import':
      case 'dotted_name':
        return true;
      case 'assignment':
      case 'augmented_assignment':
      case 'for_statement':
      case 'for_in_clause':
        return p.childForFieldName('left')?.equals(n) ?? false;
      case 'named_expression':
      case 'function_definition':
      case 'class_definition':
        return p.childForFieldName('name')?.equals(n) ?? false;
      default:
        return false;
    }
  }
  return false;
}

/** Is `name` bound again anywhere after `from` ends and before `to` starts? */
function reboundBetween(chunk: Node, name: string, from: Node, to: Node): boolean {
  if (to.startIndex <= from.endIndex) return false;
  for (const id of chunk.descendantsOfType('identifier', from.endPosition, to.startPosition)) {
    if (id?.text !== name || id.startIndex < from.endIndex || id.endIndex > to.startIndex) continue;
    if (bindsHere(id)) return true;
  }
  return false;
}

interface PendingCall {
  fact: CallFact;
  node: Node;
  arg0Node: Node | null;
  wantsProbs: boolean;
}

/**
 * Where a call's value goes: the assignment target, and for items of
 * Sequential/ModuleList/OrderedDict the path below it.
 */
function walkUp(call: Node, chunk: Node, fact: CallFact): void {
  let n = call;
  const segs: string[] = [];
  let key: string | undefined;
  let listIndex: number | undefined;
  for (let depth = 0; depth < 10; depth++) {
    if (n.equals(chunk)) return;
    const p = n.parent;
    if (!p) return;
    switch (p.type) {
      case 'assignment': {
        const right = p.childForFieldName('right');
        if (right?.equals(n)) {
          const left = p.childForFieldName('left');
          if (left) fact.binding = left.text.replace(/\s+/g, '');
          if (segs.length) fact.path = segs.join('.');
        }
        return;
      }
      case 'attribute': {
        // A method chain on the value (`torch.tril(...).view(...)`, `nn.Dropout(p).to(dev)`).
        const gp = p.parent;
        if (gp?.type !== 'call') return;
        n = gp;
        continue;
      }
      case 'parenthesized_expression':
      case 'conditional_expression':
        n = p;
        continue;
      case 'keyword_argument':
        if (p.childForFieldName('value')?.equals(n)) fact.kwKey = p.childForFieldName('name')?.text;
        return;
      case 'tuple': {
        const first = p.namedChild(0);
        if (first && !first.equals(n) && first.type === 'string') key = unquote(first.text);
        n = p;
        continue;
      }
      case 'list': {
        // Positions matter only in short literal lists (`ModuleList([a, b])`); finding one in a
        // list of thousands for each item would be quadratic.
        listIndex = p.namedChildCount <= MAX_ITEMS ? p.namedChildren.findIndex((c) => c?.equals(n)) : undefined;
        n = p;
        continue;
      }
      case 'argument_list': {
        const owner = p.parent;
        if (owner?.type !== 'call') return;
        const ownerFinal = finalName(owner.childForFieldName('function')?.text ?? '');
        if (wrapsModule(p, n, ownerFinal)) {
          n = owner;
          continue;
        }
        if (!CONTAINERS.has(ownerFinal) || p.namedChildCount > MAX_ITEMS) return;
        const items = p.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment' && c.type !== 'keyword_argument');
        const idx = items.findIndex((c) => c.equals(n));
        if (ownerFinal === 'register_buffer') {
          if (idx === 1 && items[0]) fact.buffer = unquote(items[0].text) ?? items[0].text;
          return;
        }
        if (ownerFinal !== 'OrderedDict') {
          const seg = key ?? (listIndex !== undefined && listIndex >= 0 ? String(listIndex) : idx >= 0 ? String(idx) : undefined);
          if (seg !== undefined) segs.unshift(seg);
          key = undefined;
          listIndex = undefined;
        }
        n = owner;
        continue;
      }
      default:
        return;
    }
  }
}

/**
 * `quant_noise(nn.Linear(d, 4 * d), p, block)`, `spectral_norm(nn.Linear(...))`: a wrapper that
 * takes the module as its first argument and returns it (or a module around it), so the
 * module ends up where the wrapper's value goes.
 */
function wrapsModule(args: Node, n: Node, ownerFinal: string): boolean {
  if (CONTAINERS.has(ownerFinal) || BUILTINS.has(ownerFinal) || ownerFinal === '' || ownerFinal === 'append' || ownerFinal === 'add_module') return false;
  // Tensor functions (`torch.cat((x.new_zeros(...), mask))`) make a new value, not a module around this one.
  if (/^(torch|th|F|np|numpy|math)\./.test(args.parent?.childForFieldName('function')?.text ?? '')) return false;
  const first = args.namedChildren.find((c) => c !== null && c.type !== 'comment');
  return !!first && first.equals(n);
}

/**
 * Reads one chunk. Never throws for well-formed trees; callers still guard it. `deadline`
 * (a performance.now() time) stops the query early; what it found by then is kept and the
 * facts are marked `truncated`.
 */
export function extractFacts(query: Query, chunk: Node, deadline = Infinity): ChunkFacts {
  const baseRow = chunk.startPosition.row;
  const baseIdx = chunk.startIndex;
  const facts: ChunkFacts = { calls: [], defs: [], imports: [], configs: [], chunkBound: [], advice: emptyAdvice(), hasError: chunk.hasError };
  // Set by the query's progress callback, which TypeScript's narrowing does not see.
  let timedOut = false as boolean;
  const matches = query.matches(chunk, {
    matchLimit: QUERY_MATCH_LIMIT,
    // Called periodically by the cursor; returning true ends the query.
    progressCallback: () => (timedOut ||= performance.now() > deadline),
  });
  if (timedOut) facts.truncated = 'time-budget';
  else if (query.didExceedMatchLimit()) facts.truncated = 'match-limit';

  interface PendingAssign {
    node: Node;
    si: number;
    ei: number;
    names: string[];
    /** The target is one plain name (`f = …`, `f: T = …`). */
    single: boolean;
    right: Node;
    rightText: string;
    scope: number;
  }
  const callMatches: QueryMatch[] = [];
  const assigns: { node: Node; left: Node; right: Node }[] = [];
  const funcParams = new Map<number, Node>();
  const params: { name: string; value: string; row: number; si: number; kw: boolean }[] = [];

  for (const m of matches) {
    const first = m.captures[0];
    if (!first) continue;
    switch (first.name) {
      case 'call':
        callMatches.push(m);
        break;
      case 'assign': {
        const left = capture(m, 'assign.left');
        const right = capture(m, 'assign.right');
        if (left && right) assigns.push({ node: first.node, left, right });
        break;
      }
      case 'func':
      case 'class': {
        const node = first.node;
        const name = capture(m, `${first.name}.name`)?.text ?? '';
        const def: DefFact = {
          kind: first.name === 'func' ? 'func' : 'class',
          name,
          pos: rel(node, baseRow),
          si: node.startIndex - baseIdx,
          ei: node.endIndex - baseIdx,
          parent: -1,
          bases: [],
        };
        if (def.kind === 'class') {
          const sup = node.childForFieldName('superclasses');
          if (sup) {
            def.bases = sup.namedChildren
              .filter((c): c is Node => c !== null && c.type !== 'comment' && c.type !== 'keyword_argument')
              .map((c) => c.text.replace(/\s+/g, ''));
          }
        } else {
          const p = capture(m, 'func.params');
          if (p) {
            funcParams.set(facts.defs.length, p);
            def.params = paramNames(p);
          }
        }
        facts.defs.push(def);
        break;
      }
      case 'import':
        readImport(first.node, facts.imports);
        break;
      case 'param.name':
      case 'kwarg.name': {
        const v = m.captures[1];
        if (v) params.push({ name: first.node.text, value: v.node.text, row: first.node.startPosition.row - baseRow, si: first.node.startIndex - baseIdx, kw: first.name === 'kwarg.name' });
        break;
      }
      default:
        break;
    }
  }

  // Scopes: defs arrive in document order, so a def's parent is the last earlier def containing it.
  const defs = facts.defs;
  defs.forEach((d, i) => {
    for (let j = i - 1; j >= 0; j--) {
      const o = itemAt(defs, j);
      if (o.si <= d.si && d.ei <= o.ei) {
        d.parent = j;
        break;
      }
    }
  });
  const scopeOf = (si: number, ei: number): number => {
    for (let j = defs.length - 1; j >= 0; j--) {
      const o = itemAt(defs, j);
      if (o.si <= si && ei <= o.ei) return j;
    }
    return -1;
  };

  // Names bound in each function: parameters and assignment targets.
  const bound = new Map<number, Set<string>>();
  const boundIn = (scope: number) => {
    let s = bound.get(scope);
    if (!s) bound.set(scope, (s = new Set()));
    return s;
  };
  for (const [i, p] of funcParams) for (const n of paramNames(p)) boundIn(i).add(n);
  // A def's name is bound in the scope around it, not in its own.
  for (const d of defs) boundIn(d.parent).add(d.name);

  const pendingAssigns: PendingAssign[] = [];
  for (const a of assigns) {
    const si = a.node.startIndex - baseIdx;
    const ei = a.node.endIndex - baseIdx;
    const scope = scopeOf(si, ei);
    const leftText = a.left.text;
    const names = targetNames(leftText);
    for (const n of names) boundIn(scope).add(n);
    const rightText = a.right.text;
    pendingAssigns.push({ node: a.node, si, ei, names, single: a.left.type === 'identifier', right: a.right, rightText, scope });
    if (NUMBER.test(rightText)) {
      const name = /([A-Za-z_]\w*)\s*$/.exec(leftText)?.[1];
      if (name !== undefined) {
        const d = scope >= 0 ? itemAt(defs, scope) : undefined;
        facts.configs.push({ name, value: Number(rightText.replace(/_/g, '')), rank: !d || d.kind === 'class' ? 0 : 1, row: a.node.startPosition.row - baseRow, scope });
      }
    }
  }
  for (const p of params) {
    if (!NUMBER.test(p.value)) continue;
    facts.configs.push({ name: p.name, value: Number(p.value.replace(/_/g, '')), rank: p.kw ? 3 : 2, row: p.row, scope: scopeOf(p.si, p.si + 1) });
  }
  facts.chunkBound = [...(bound.get(-1) ?? [])];

  const isBoundAround = (scope: number, name: string): boolean => {
    for (let s = scope; s >= 0; ) {
      const d = itemAt(defs, s);
      if (d.kind === 'func' && bound.get(s)?.has(name)) return true;
      s = d.parent;
    }
    return false;
  };

  // Assignments of each function by target name, in source order, for calls through local aliases.
  const assignsOf = new Map<string, PendingAssign[]>();
  for (const a of pendingAssigns) {
    if (a.scope < 0 || itemAt(defs, a.scope).kind !== 'func') continue;
    for (const n of a.names) {
      const key = `${a.scope}|${n}`;
      let list = assignsOf.get(key);
      if (!list) assignsOf.set(key, (list = []));
      list.push(a);
    }
  }
  for (const list of assignsOf.values()) list.sort((x, y) => x.ei - y.ei);
  /**
   * What a bare local callee stands for at the call: the function's last assignment to it that
   * ends before the call, when that binds the one name to dotted names and nothing rebinds it
   * in between (a loop, `with … as`, `:=`, `+=`, `del`, an import or a def of the same name).
   * Source order stands in for control flow: of `if c: f = a` / `else: f = b`, the later one counts.
   */
  const aliasAt = (name: string, scope: number, call: Node, si: number): AliasTarget[] | undefined => {
    const list = assignsOf.get(`${scope}|${name}`);
    if (!list) return undefined;
    let last: PendingAssign | undefined;
    for (const a of list) {
      if (a.ei > si) break;
      last = a;
    }
    if (!last?.single) return undefined;
    const targets: string[] = [];
    aliasTargets(last.right, targets, 0);
    if (targets.length === 0) return undefined;
    if (reboundBetween(chunk, name, last.node, call)) return undefined;
    return targets.map((t) => ({ callee: t, headLocal: isBoundAround(scope, (/^[A-Za-z_]\w*/.exec(t) ?? [''])[0]) }));
  };

  const pending: PendingCall[] = [];
  const allCalls: { node: Node; callee: string; final: string; args: Node | null }[] = [];
  for (const [ci, m] of callMatches.entries()) {
    // Reading a call walks up its parents, each step costing the node's depth in
    // web-tree-sitter: thousands of nested calls are quadratic, so the deadline holds here too.
    if ((ci & 63) === 63 && performance.now() > deadline) {
      facts.truncated = 'time-budget';
      break;
    }
    const node = m.captures[0]?.node;
    const calleeNode = capture(m, 'call.callee');
    const argsNode = capture(m, 'call.args');
    if (!node || !calleeNode || !argsNode) continue;
    const rawCallee = calleeNode.text;
    let startOverride: { row: number; column: number; index: number } | undefined;
    let callee = rawCallee.replace(/\s+/g, '');
    if (rawCallee.includes('\n')) {
      // Error recovery can glue an unclosed line onto the next statement
      // (`y = f(g(x)` + newline + `return F.dropout(...)`): the callee then ends in the
      // next statement's name, which is what was written there.
      const tail = /\n\s*(?:return\s+|[A-Za-z_]\w*\s*=\s*)?([A-Za-z_][\w.]*)$/.exec(rawCallee)?.[1];
      if (tail !== undefined && calleeNode.hasError) {
        callee = tail;
        const off = rawCallee.length - callee.length;
        const before = rawCallee.slice(0, off);
        const nl = before.lastIndexOf('\n');
        startOverride = { row: calleeNode.startPosition.row + (before.match(/\n/g)?.length ?? 0), column: off - nl - 1, index: calleeNode.startIndex + off };
      }
    }
    const final = finalName(callee);
    allCalls.push({ node, callee, final, args: argsNode });
    const bare = /^[A-Za-z_]\w*$/.test(callee);
    const member = callee.startsWith('self.');
    const interesting = INTERESTING_FINALS.has(final) || (bare && !BUILTINS.has(callee)) || BUILDER_METHOD.test(callee);
    const dropish = /drop/i.test(final);
    // Activations are kept for their argument: the projection they wrap is a gate.
    const activation = ACTIVATION.test(final);
    if (!interesting && !member && !dropish && !activation) continue;
    const si = (startOverride?.index ?? node.startIndex) - baseIdx;
    const ei = node.endIndex - baseIdx;
    const scope = scopeOf(si, ei);
    const head = (/^[A-Za-z_]\w*/.exec(callee) ?? [''])[0];
    const pos = rel(node, baseRow);
    if (startOverride) {
      pos.sr = startOverride.row - baseRow;
      pos.sc = startOverride.column;
    }
    const fact: CallFact = {
      callee,
      final,
      pos,
      si,
      ei,
      detailed: interesting,
      args: [],
      headLocal: head !== '' && head !== 'self' && isBoundAround(scope, head),
      arg0Probs: false,
      scope,
    };
    let arg0Node: Node | null = null;
    if (argsNode.type === 'argument_list') {
      for (const c of argsNode.namedChildren) {
        if (!c) continue;
        const t = c.type;
        if (t === 'comment') continue;
        if (t === 'keyword_argument') {
          if (!arg0Node && c.childForFieldName('name')?.text === 'input') arg0Node = c.childForFieldName('value');
        } else if (t !== 'list_splat' && t !== 'dictionary_splat' && !arg0Node && fact.args.every((a) => a.name === null)) {
          arg0Node = c;
        }
        if (interesting) fact.args.push(argFact(c));
      }
    } else if (interesting) {
      fact.args.push({ name: null, text: argsNode.text });
    }
    if (arg0Node) fact.arg0 = arg0Node.text;
    if (bare && fact.headLocal && scope >= 0) {
      const alias = aliasAt(callee, scope, node, si);
      if (alias) fact.aliasOf = alias;
    }
    if (interesting) walkUp(node, chunk, fact);
    if ((interesting || member || dropish) && inFallbackBranch(node)) fact.fallback = true;
    facts.calls.push(fact);
    pending.push({ fact, node, arg0Node, wantsProbs: dropish || member || bare });
  }

  const decorators = chunk.descendantsOfType('decorator').flatMap((d) => (d ? [{ text: d.text, row: d.startPosition.row }] : []));
  facts.advice = readAdviceFacts({ matches, decorators, calls: allCalls, assigns, baseRow, baseIdx, scopeOf, targetNames });

  // Attention-probability flow, one scope at a time, in source order: a call sees
  // the assignments that ended before it starts (`att = self.drop(att)` reads the old `att`).
  const scopes = new Set<number>([...pending.map((p) => p.fact.scope), ...pendingAssigns.map((a) => a.scope)]);
  for (const scope of scopes) {
    const events: { at: number; call?: { p: PendingCall; arg0: Node }; assign?: PendingAssign }[] = [];
    for (const p of pending) if (p.fact.scope === scope && p.wantsProbs && p.arg0Node) events.push({ at: p.fact.si, call: { p, arg0: p.arg0Node } });
    if (events.length === 0) continue;
    for (const a of pendingAssigns) if (a.scope === scope && a.names.length > 0) events.push({ at: a.ei, assign: a });
    events.sort((x, y) => x.at - y.at);
    const taint = new Set<string>();
    const via = new Map<string, string>();
    for (const e of events) {
      if (e.call) {
        const { p, arg0: a0 } = e.call;
        const text = a0.text;
        p.fact.arg0Probs = mayBeProbs(text, taint) && isProbs(a0, taint);
        const v = memberCallee(text) ?? via.get(text);
        if (v) p.fact.arg0Via = v;
      } else if (e.assign) {
        const a = e.assign;
        const probs = mayBeProbs(a.rightText, taint) && isProbs(a.right, taint);
        const v = memberCallee(a.rightText);
        for (const n of a.names) {
          if (probs) taint.add(n);
          else taint.delete(n);
          if (v && a.names.length === 1) via.set(n, v);
          else via.delete(n);
        }
      }
    }
  }
  return facts;
}
