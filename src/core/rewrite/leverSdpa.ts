/**
 * The SDPA lever: eager attention becomes `torch.nn.functional.scaled_dot_product_attention`,
 * which keeps neither the L×L probabilities nor a dropout mask for backward.
 *
 * HF models: `attn_implementation="eager"` (a keyword of `from_pretrained`,
 * `from_config`, `_from_config` or a `*Config(...)`) and `config._attn_implementation = "eager"`
 * become `"sdpa"`. Only a string literal is edited.
 *
 * Eager attention written out (nanoGPT style), as consecutive statements of one block:
 *
 *     att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
 *     att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))   # optional
 *     att = F.softmax(att, dim=-1)
 *     att = self.attn_dropout(att)                                        # optional
 *     y = att @ v
 *
 * becomes `y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=...,
 * is_causal=...)`. Each step must be provably what SDPA computes:
 * - scores: `q @ k.transpose(-2, -1)` (or `torch.matmul`, `k.mT`) of plain names, times
 *   1/sqrt(q or k's last dim) in any of its usual spellings (SDPA's default scale); any
 *   other factor needs `scale=` (torch >= 2.1), written only when the caller allows it;
 * - mask: `masked_fill(<buf>[:, :, :T, :T] == 0, -inf)` where `<buf>` is registered in the
 *   same class, once, as `torch.tril(torch.ones(n, n))` (viewed as (1, 1, n, n) for the
 *   4-D slice), and q and k are computed in the function without a cache, so the
 *   query and key lengths are both T: exactly `is_causal=True`. The buffer stays
 *   registered so `state_dict` keys do not change;
 * - softmax over dim -1 with no other argument;
 * - dropout: an `nn.Dropout` member of the class (`dropout_p=self.<drop>.p if self.training else 0.0`)
 *   or `F.dropout(att, p, training=...)`; SDPA draws its own mask, so with dropout on
 *   the result equals the eager one in distribution, not bit for bit;
 * - output: `att @ v` with a plain `v`;
 * - the scores and probabilities are used nowhere else in the function (not returned,
 *   stored or reused).
 */
import type { Node } from 'web-tree-sitter';
import type { OffsetEdit } from './edits';
import { FUSED_FEATURE } from '../scan/branches';
import { type Ctx, type Found, functionalName, inFallbackBranch, resolved, shortText, skipAt } from './leverCommon';
import { lineOf } from './lines';
import { type Assign, assignOf, bodyOf, classOfMethod, enclosingDef, exprOf, exprsOf, nextSibling, paramsOf, prevSibling, returnValue, type Stmt, uses } from './statements';
import { argsOf, bare, callArgs, compact, dottedName, field, isBinary, isName, kids, namesIn, numberValue, operator, stringValue, walk } from './syntax';
import { defined, itemAt } from '../arrays';

const HF_LOADERS = new Set(['from_pretrained', 'from_config', '_from_config']);

/** The expressions of a simple statement: an assignment's targets and value, a return value, or the expression. */
function expressionsOf(s: Stmt): Node[] {
  const a = assignOf(s);
  if (a) return [...a.targets, a.value];
  if (s.head === 'return') {
    const v = returnValue(s);
    return v ? [v] : [];
  }
  return exprsOf(s);
}

function literalEdit(value: Node, to: string): OffsetEdit {
  const m = defined(/^([rRuU]?)("""|'''|"|')/.exec(value.text), 'a string literal');
  const q = itemAt(m, 2);
  return { start: value.startIndex, end: value.endIndex, newText: `${m[1]}${q}${to}${q}` };
}

/** `output_attentions=True` anywhere: a keyword argument, a default, or an assignment (`config.output_attentions = True`). */
function asksForWeights(ctx: Ctx): boolean {
  for (const n of ctx.root.descendantsOfType(['keyword_argument', 'default_parameter', 'assignment'])) {
    if (!n) continue;
    const target = n.childForFieldName(n.type === 'assignment' ? 'left' : 'name');
    const value = n.childForFieldName(n.type === 'assignment' ? 'right' : 'value');
    const name = target?.type === 'attribute' ? target.childForFieldName('attribute') : target;
    // `x: bool = True` is an annotated name, not this flag set.
    if (name?.text === 'output_attentions' && value?.type === 'true' && !n.childForFieldName('type')) return true;
  }
  return false;
}

/** HF `attn_implementation="eager"` keywords and `._attn_implementation = "eager"` assignments. */
function hfSites(ctx: Ctx): Found[] {
  const out: Found[] = [];
  const weights = asksForWeights(ctx);
  for (const s of ctx.st.stmts) {
    if (s.header) continue;
    const lines = { first: s.startLine, last: s.endLine };
    const a = assignOf(s);
    const target = a?.targets.length === 1 ? a.targets[0] : undefined;
    if (a && target && attrName(target) === '_attn_implementation') {
      const v = stringValue(a.value);
      if (v === 'eager') out.push(hfEdit(ctx, s, a.value, weights, `${target.text} = "sdpa"`));
      else if (v === undefined) out.push(skipAt(s, 'not-literal', `\`${target.text}\` is set to \`${compact(a.value)}\`, not a string literal: set the value it comes from to "sdpa"`));
      continue;
    }
    for (const e of expressionsOf(s)) {
      for (const node of walk(e)) {
        if (node.type !== 'call') continue;
        const arg = argsOf(node).find((x) => x.kw === 'attn_implementation');
        if (!arg) continue;
        const fn = defined(field(node, 'function'), 'field(node, "function")');
        const callee = dottedName(fn) ?? compact(fn);
        const final = callee.slice(callee.lastIndexOf('.') + 1);
        const v = stringValue(arg.value);
        if (v !== undefined && v !== 'eager') continue;
        if (!HF_LOADERS.has(final) && !final.endsWith('Config')) {
          out.push({ ...lines, line: lineOfNode(ctx, arg.value), skip: { code: 'unknown-callee', reason: `\`attn_implementation=\` is passed to \`${callee}(...)\`, not to a model's from_pretrained/from_config or a *Config: change it where the model is built` } });
          continue;
        }
        if (v === undefined) {
          out.push({ ...lines, line: lineOfNode(ctx, arg.value), skip: { code: 'not-literal', reason: `\`attn_implementation=${compact(arg.value)}\` in \`${callee}(...)\` is not a string literal: set the value it comes from to "sdpa"` } });
          continue;
        }
        out.push(hfEdit(ctx, s, arg.value, weights, `${callee}(..., attn_implementation="sdpa")`));
      }
    }
  }
  return out;
}

function lineOfNode(ctx: Ctx, e: Node): number {
  return lineOf(ctx.lineStarts, e.startIndex);
}

function hfEdit(ctx: Ctx, s: Stmt, value: Node, weights: boolean, what: string): Found {
  const line = lineOfNode(ctx, value);
  const lines = { first: s.startLine, last: s.endLine, line };
  if (weights) {
    return { ...lines, skip: { code: 'attention-weights', reason: 'the file passes output_attentions=True: SDPA returns no attention weights (transformers falls back to eager or refuses), so the switch would not take effect' } };
  }
  return { ...lines, edits: [literalEdit(value, 'sdpa')], form: 'hf-sdpa', description: `attn_implementation "eager" -> "sdpa" (${what})` };
}

/** What the chain's scores statement computes. */
interface Scores {
  q: string;
  k: string;
  /** Text for `scale=`, or undefined for SDPA's default 1/sqrt(E). */
  scale?: string;
}

/** `<obj>.<name>`: the attribute's name, when `e` is an attribute. */
function attrName(e: Node | undefined): string | undefined {
  return e?.type === 'attribute' ? e.childForFieldName('attribute')?.text : undefined;
}

/** The callee of a call node (grouping parentheses looked through), or undefined for any other node. */
function calleeOf(e: Node | undefined): Node | undefined {
  return e?.type === 'call' ? field(e, 'function') : undefined;
}

/** The one positional argument of a call (no keyword, no splat), or undefined. */
function onlyPositional(call: Node): Node | undefined {
  const args = argsOf(call);
  const a = args[0];
  return args.length === 1 && a && a.kw === undefined && !a.star ? a.value : undefined;
}

/** The items of a subscript (`a[i, :T]` has two), grouping parentheses looked through. */
function subscriptItems(sub: Node): Node[] {
  return sub.childrenForFieldName('subscript').filter((x): x is Node => x !== null).map(bare);
}

/** `x.size(-1)` or `x.shape[-1]` for x in `names`. */
function isLastDim(e: Node, names: readonly string[]): boolean {
  const fn = calleeOf(e);
  if (fn && attrName(fn) === 'size') {
    const obj = field(fn, 'object');
    if (isName(obj) && names.includes(obj.text)) {
      const arg = onlyPositional(e);
      return !!arg && numberValue(arg) === -1;
    }
  }
  const shape = e.type === 'subscript' ? field(e, 'value') : undefined;
  if (shape && attrName(shape) === 'shape') {
    const obj = field(shape, 'object');
    if (isName(obj) && names.includes(obj.text)) {
      const items = subscriptItems(e);
      return items.length === 1 && numberValue(itemAt(items, 0)) === -1;
    }
  }
  return false;
}

/** sqrt(E) for the head dim E of q or k: `math.sqrt(k.size(-1))`, `k.size(-1) ** 0.5`. */
function isSqrtDim(ctx: Ctx, e: Node, names: readonly string[]): boolean {
  const fn = calleeOf(e);
  if (fn) {
    const arg = onlyPositional(e);
    const q = resolved(ctx, fn);
    return !!arg && (q === 'math.sqrt' || q === 'numpy.sqrt') && isLastDim(arg, names);
  }
  return isBinary(e, '**') && numberValue(defined(field(e, 'right'), 'field(e, "right")')) === 0.5 && isLastDim(defined(field(e, 'left'), 'field(e, "left")'), names);
}

/** 1/sqrt(E): `1.0 / math.sqrt(k.size(-1))`, `k.size(-1) ** -0.5`. */
function isInvSqrtDim(ctx: Ctx, e: Node, names: readonly string[]): boolean {
  if (isBinary(e, '/') && numberValue(defined(field(e, 'left'), 'field(e, "left")')) === 1) return isSqrtDim(ctx, defined(field(e, 'right'), 'field(e, "right")'), names);
  return isBinary(e, '**') && numberValue(defined(field(e, 'right'), 'field(e, "right")')) === -0.5 && isLastDim(defined(field(e, 'left'), 'field(e, "left")'), names);
}

/** `q @ k.transpose(-2, -1)` or `torch.matmul(q, k.transpose(-2, -1))`, k.mT too. */
function qkOf(ctx: Ctx, e: Node): { q: string; k: string } | undefined {
  let a: Node | undefined;
  let b: Node | undefined;
  const fn = calleeOf(e);
  if (isBinary(e, '@')) [a, b] = [field(e, 'left'), field(e, 'right')];
  else if (fn && resolved(ctx, fn) === 'torch.matmul') {
    const args = callArgs(e);
    if (!args || args.kw.size || args.pos.length !== 2) return undefined;
    [a, b] = args.pos;
  }
  if (!isName(a) || !b) return undefined;
  let k: Node | undefined;
  const method = calleeOf(b);
  if (attrName(b) === 'mT') k = field(b, 'object');
  else if (method && attrName(method) === 'transpose') {
    const args = callArgs(b);
    const dims = args && !args.kw.size ? args.pos.map(numberValue) : [];
    if (dims.length === 2 && ((dims[0] === -2 && dims[1] === -1) || (dims[0] === -1 && dims[1] === -2))) k = field(method, 'object');
  }
  if (!isName(k)) return undefined;
  return { q: a.text, k: k.text };
}

/** A scale factor (`* f`) or divisor (`/ d`) applied to the scores. */
interface Factor {
  op: '*' | '/';
  e: Node;
}

/** Divisors written after `1.0 / ` without parentheses. */
const ATOMIC = new Set(['identifier', 'attribute', 'integer', 'float', 'call']);

/**
 * Reads the scores expression and an optional scale applied by the next statement
 * (`att = att / math.sqrt(d)`); a code and reason when it is not a provable form.
 */
function scoresOf(ctx: Ctx, e: Node, extra?: Factor): Scores | { code: 'scores-form' | 'scale'; reason: string } {
  let qk = qkOf(ctx, e);
  let factor: Factor | undefined;
  const op = operator(e);
  if (!qk && isBinary(e) && (op === '*' || op === '/')) {
    const l = defined(field(e, 'left'), 'field(e, "left")');
    const r = defined(field(e, 'right'), 'field(e, "right")');
    const left = qkOf(ctx, l);
    const right = op === '*' ? qkOf(ctx, r) : undefined;
    qk = left ?? right;
    if (qk) factor = { op, e: left ? r : l };
  }
  if (!qk) return { code: 'scores-form', reason: `the scores \`${compact(e)}\` are not \`q @ k.transpose(-2, -1)\` of plain names times a scale` };
  if (factor && extra) return { code: 'scale', reason: 'the scores are scaled twice' };
  factor ??= extra;
  if (!factor) {
    // Unscaled here (q may have been scaled before): SDPA would scale again unless told 1.0.
    return { ...qk, scale: '1.0' };
  }
  const names = [qk.q, qk.k];
  if (factor.op === '*' && isInvSqrtDim(ctx, factor.e, names)) return qk;
  if (factor.op === '/' && isSqrtDim(ctx, factor.e, names)) return qk;
  const f = compact(factor.e);
  return { ...qk, scale: factor.op === '*' ? f : ATOMIC.has(factor.e.type) ? `1.0 / ${f}` : `1.0 / (${f})` };
}

/** `s = s.masked_fill(...)`. */
function isMaskFill(a: Assign | undefined, name: string): boolean {
  const fn = a && singleName(a) === name ? calleeOf(a.value) : undefined;
  return !!fn && attrName(fn) === 'masked_fill' && isName(field(fn, 'object'), name);
}

/** `s = s * f` or `s = s / d`: the factor, when the statement is exactly that. */
function scaleStep(a: Assign | undefined, name: string): Factor | undefined {
  if (!a || singleName(a) !== name) return undefined;
  const e = a.value;
  const op = operator(e);
  if (!isBinary(e) || (op !== '*' && op !== '/')) return undefined;
  const l = defined(field(e, 'left'), 'field(e, "left")');
  const r = defined(field(e, 'right'), 'field(e, "right")');
  if (isName(l, name)) return { op, e: r };
  if (op === '*' && isName(r, name)) return { op: '*', e: l };
  return undefined;
}

/** Does the value compute attention scores (a matmul of some kind)? Used to tell attention softmaxes from others. */
function looksLikeScores(ctx: Ctx, e: Node): boolean {
  for (const n of walk(e)) {
    if (isBinary(n, '@')) return true;
    const fn = calleeOf(n);
    if (fn && /(^|\.)(matmul|bmm|einsum|baddbmm)$/.test(resolved(ctx, fn) ?? '')) return true;
  }
  return false;
}

/** `F.softmax(s, dim=-1)`, `torch.softmax(s, -1)`, `s.softmax(dim=-1)`: the input name, or why not. */
function softmaxOf(ctx: Ctx, e: Node): { input: string } | { input: string; bad: string } | undefined {
  const fn = calleeOf(e);
  if (!fn) return undefined;
  const q = resolved(ctx, fn);
  let input: Node | undefined;
  let rest: { pos: Node[]; kw: Map<string, Node> } | undefined;
  const args = callArgs(e);
  if (q === 'torch.nn.functional.softmax' || q === 'torch.softmax') {
    if (!args) return undefined;
    input = args.pos[0];
    rest = { pos: args.pos.slice(1), kw: args.kw };
  } else if (attrName(fn) === 'softmax' && isName(field(fn, 'object'))) {
    input = field(fn, 'object');
    rest = args;
  } else return undefined;
  if (!isName(input) || !rest) return undefined;
  const dim = rest.pos.length === 1 && rest.kw.size === 0 ? rest.pos[0] : rest.pos.length === 0 && rest.kw.size === 1 ? rest.kw.get('dim') : undefined;
  if (!dim) {
    const extra = [...rest.kw.keys()].filter((k) => k !== 'dim');
    return { input: input.text, bad: extra.length ? `the softmax passes \`${extra.join('=, ')}=\` (SDPA computes in the input's dtype with no options)` : `the softmax's arguments are not just \`dim=-1\`` };
  }
  if (numberValue(dim) !== -1) return { input: input.text, bad: `the softmax is over dim \`${compact(dim)}\`, not the last one (SDPA normalises over the keys, dim -1)` };
  return { input: input.text };
}

function singleName(a: Assign | undefined): string | undefined {
  const t = a?.targets.length === 1 ? a.targets[0] : undefined;
  return isName(t) ? t.text : undefined;
}

/** `-inf` as models write it: float("-inf"), -float("inf"), -math.inf, -torch.inf. */
function isMinusInf(ctx: Ctx, e: Node): boolean {
  const inf = (x: Node, neg: boolean): boolean => {
    const fn = calleeOf(x);
    const args = fn ? argsOf(x) : [];
    if (fn && resolved(ctx, fn) === null && isName(fn, 'float') && args.length === 1 && !args[0]?.kw) {
      const v = stringValue((args[0] as { value: Node }).value)?.toLowerCase();
      return neg ? v === 'inf' || v === 'infinity' : v === '-inf' || v === '-infinity';
    }
    if (neg) {
      const q = dottedName(x);
      const r = q ? (resolved(ctx, x) ?? q) : null;
      return r === 'math.inf' || r === 'torch.inf' || r === 'numpy.inf';
    }
    return false;
  };
  const negated = e.type === 'unary_operator' && operator(e) === '-' ? field(e, 'argument') : undefined;
  if (negated) return inf(negated, true);
  return inf(e, false);
}

/** Target and value forms that hold items: `a, b`, `(a, b)`, `[a, b]`. */
const TUPLES = new Set(['pattern_list', 'tuple_pattern', 'list_pattern', 'tuple', 'list', 'expression_list']);

/** The class's statements that assign or register `self.<name>`, with the registered value. */
function memberDefs(ctx: Ctx, cls: Stmt, name: string): { stmt: Stmt; value?: Node; buffer: boolean }[] {
  const out: { stmt: Stmt; value?: Node; buffer: boolean }[] = [];
  for (const s of bodyOf(ctx.st, cls)) {
    if (s.header) continue;
    const a = assignOf(s);
    if (a) {
      for (const tg of a.targets) {
        const targets = TUPLES.has(tg.type) ? kids(tg).map(bare) : [tg];
        if (targets.some((x) => attrName(x) === name && isName(field(x, 'object'), 'self'))) out.push({ stmt: s, ...(a.targets.length === 1 && targets.length === 1 ? { value: a.value } : {}), buffer: false });
      }
      continue;
    }
    const e = exprOf(s);
    const fn = calleeOf(e);
    if (e && fn && dottedName(fn) === 'self.register_buffer') {
      const [first, second] = argsOf(e);
      if (first && !first.kw && !first.star && stringValue(first.value) === name) {
        out.push({ stmt: s, ...(second && !second.star && (second.kw === undefined || second.kw === 'tensor') ? { value: second.value } : {}), buffer: true });
      }
    }
  }
  // `setattr(self, "bias", ...)` or an unparsed statement mentioning it makes the origin unprovable.
  return out;
}

/** A shape's dimensions: the items of one tuple or list argument, else the arguments. */
function dimsOf(pos: readonly Node[]): Node[] {
  const only = pos.length === 1 ? (itemAt(pos, 0)) : undefined;
  if (only && (only.type === 'tuple' || only.type === 'list')) return kids(only).map(bare);
  return [...pos];
}

/** `torch.ones(n, n)` (dtype/device keywords allowed): the compact text of n, or undefined. */
function onesSquare(ctx: Ctx, e: Node): string | undefined {
  const fn = calleeOf(e);
  if (!fn || resolved(ctx, fn) !== 'torch.ones') return undefined;
  const args = callArgs(e);
  if (!args || [...args.kw.keys()].some((k) => k !== 'dtype' && k !== 'device')) return undefined;
  const dims = dimsOf(args.pos);
  if (dims.length !== 2) return undefined;
  const a = compact(itemAt(dims, 0));
  return a === compact(itemAt(dims, 1)) ? a : undefined;
}

/** `torch.tril(ones)` / `ones.tril()` with the main diagonal: n, or undefined. */
function trilOnes(ctx: Ctx, e: Node): string | undefined {
  const fn = calleeOf(e);
  const args = fn ? callArgs(e) : undefined;
  if (!fn || !args) return undefined;
  let inner: Node | undefined;
  let diag: Node | undefined;
  if (resolved(ctx, fn) === 'torch.tril') {
    inner = args.pos[0];
    diag = args.pos[1] ?? args.kw.get('diagonal');
    if (args.pos.length > 2 || [...args.kw.keys()].some((k) => k !== 'diagonal')) return undefined;
  } else if (attrName(fn) === 'tril') {
    inner = field(fn, 'object');
    diag = args.pos[0] ?? args.kw.get('diagonal');
    if (args.pos.length > 1 || [...args.kw.keys()].some((k) => k !== 'diagonal')) return undefined;
  }
  if (!inner || (diag && numberValue(diag) !== 0)) return undefined;
  return onesSquare(ctx, inner);
}

/** The causal buffer's rank (2 or 4) when `value` is tril(ones(n, n)), optionally viewed as (1, 1, n, n). */
function causalBuffer(ctx: Ctx, value: Node): 2 | 4 | undefined {
  if (trilOnes(ctx, value) !== undefined) return 2;
  const fn = calleeOf(value);
  const method = attrName(fn);
  if (fn && (method === 'view' || method === 'reshape')) {
    const n = trilOnes(ctx, defined(field(fn, 'object'), 'field(fn, "object")'));
    const args = callArgs(value);
    if (n === undefined || !args || args.kw.size) return undefined;
    const d = dimsOf(args.pos).map(compact);
    if (d.length === 4 && d[0] === '1' && d[1] === '1' && d[2] === n && d[3] === n) return 4;
  }
  return undefined;
}

/** The start, stop and step of a slice (`lo:hi:step`), each undefined where left out. */
function sliceParts(slice: Node): (Node | undefined)[] {
  const parts: (Node | undefined)[] = [undefined, undefined, undefined];
  let i = 0;
  for (const c of slice.children) {
    if (!c || c.type === 'comment' || c.type === 'line_continuation') continue;
    if (c.type === ':') i++;
    else if (i < 3) parts[i] = bare(c);
  }
  return parts;
}

/** `<buf>[:, :, :T, :T] == 0`: the buffer name and rank of the slice, or why not. */
function maskOf(cond: Node): { buffer: string; rank: 2 | 4 } | string {
  const why = `the mask \`${compact(cond)}\` is not \`self.<buffer>[:, :, :T, :T] == 0\``;
  if (cond.type !== 'comparison_operator') return why;
  const operands = kids(cond);
  const ops = cond.childrenForFieldName('operators');
  if (operands.length !== 2 || ops.length !== 1 || ops[0]?.type !== '==' || numberValue(itemAt(operands, 1)) !== 0) return why;
  const sub = bare(itemAt(operands, 0));
  const buf = sub.type === 'subscript' ? field(sub, 'value') : undefined;
  const buffer = attrName(buf);
  if (!buf || buffer === undefined || !isName(field(buf, 'object'), 'self')) return why;
  const items = subscriptItems(sub);
  const full = (x: Node | undefined) => !!x && x.type === 'slice' && sliceParts(x).every((p) => !p);
  const upto = (x: Node | undefined) => {
    const p = x?.type === 'slice' ? sliceParts(x) : undefined;
    return p && !p[0] && p[1] && !p[2] ? compact(p[1]) : undefined;
  };
  if (items.length === 4 && full(items[0]) && full(items[1])) {
    const a = upto(items[2]);
    if (a !== undefined && a === upto(items[3])) return { buffer, rank: 4 };
  } else if (items.length === 2) {
    const a = upto(items[0]);
    if (a !== undefined && a === upto(items[1])) return { buffer, rank: 2 };
  }
  return why;
}

/** The eager chains around every softmax of attention scores. */
function eagerChains(ctx: Ctx): Found[] {
  const out: Found[] = [];
  const st = ctx.st;
  for (const s of st.stmts) {
    const sa = assignOf(s);
    const probs = singleName(sa);
    if (!sa || !probs) continue;
    const sm = softmaxOf(ctx, sa.value);
    if (!sm) continue;
    const scoresName = sm.input;
    const fallback = inFallbackBranch(ctx, s, FUSED_FEATURE);
    if (fallback) {
      // nanoGPT's `if self.flash: F.scaled_dot_product_attention(...) else: <eager>`: the else runs only without SDPA.
      out.push(skipAt(s, 'fallback-branch', `this attention runs only where fused attention is unavailable (\`${fallback}\`): the file already uses it where it exists, and rewriting the fallback would make that branch need it`));
      continue;
    }

    // Backwards: an optional masked_fill, then the scores.
    let maskStmt: Stmt | undefined;
    let scoresStmt: Stmt | undefined;
    let p = prevSibling(st, s);
    const pa = p ? assignOf(p) : undefined;
    if (p && isMaskFill(pa, scoresName)) {
      maskStmt = p;
      p = prevSibling(st, p);
    }
    let scaleStmt: Stmt | undefined;
    let scale: Factor | undefined;
    const ca = p ? assignOf(p) : undefined;
    if (p && ca && !looksLikeScores(ctx, ca.value) && (scale = scaleStep(ca, scoresName))) {
      scaleStmt = p;
      p = prevSibling(st, p);
    }
    const qa = p ? assignOf(p) : undefined;
    if (p && qa && singleName(qa) === scoresName && looksLikeScores(ctx, qa.value)) scoresStmt = p;
    if (!scoresStmt) {
      // Not directly after the scores: an attention softmax with something in between, or not attention at all.
      let q: Stmt | undefined;
      const between: Stmt[] = [];
      q = p;
      while (q) {
        const a = assignOf(q);
        if (a && singleName(a) === scoresName && looksLikeScores(ctx, a.value)) break;
        between.push(q);
        q = prevSibling(st, q);
      }
      if (!q) continue;
      // Name the statement nearest the softmax that is not a step of the pattern.
      const first = between.find((b) => !scaleStep(assignOf(b), scoresName) && !isMaskFill(assignOf(b), scoresName)) ?? itemAt(between, 0);
      out.push(skipAt(s, 'extra-statement', `\`${shortText(ctx, first)}\` (line ${first.startLine + 1}) sits between the attention scores and the softmax: SDPA fuses only scores, causal mask, softmax, dropout and @ v`, q.startLine, s.endLine));
      continue;
    }
    const first = scoresStmt.startLine;
    const fail = (code: Parameters<typeof skipAt>[1], reason: string, last = s.endLine) => out.push({ ...skipAt(s, code, reason, first, last) });

    if ('bad' in sm) {
      fail('softmax-form', sm.bad);
      continue;
    }

    // Forwards: an optional dropout, then `y = att @ v`.
    let n = nextSibling(st, s);
    let dropStmt: Stmt | undefined;
    let dropoutP = '0.0';
    const def = enclosingDef(st, s);
    const cls = def ? classOfMethod(st, def) : undefined;
    const self = def ? (paramsOf(def)[0] ?? '') : '';
    const na = n ? assignOf(n) : undefined;
    let dropFail: string | undefined;
    if (n && na && singleName(na) === probs && na.value.type === 'call' && argsOf(na.value).some((x) => !x.kw && !x.star && isName(x.value, probs))) {
      const call = na.value;
      const fn = defined(calleeOf(call), 'calleeOf(call)');
      const args = callArgs(call);
      const member = attrName(fn);
      if (member !== undefined && isName(field(fn, 'object'), 'self') && args?.pos.length === 1 && args.kw.size === 0) {
        const defs = cls ? memberDefs(ctx, cls, member) : [];
        const d = defs[0];
        const built = calleeOf(d?.value);
        if (defs.length === 1 && d && !d.buffer && built && resolved(ctx, built) === 'torch.nn.Dropout') {
          dropStmt = n;
          dropoutP = `${self}.${member}.p if ${self}.training else 0.0`;
        } else dropFail = `\`self.${member}\` is not provably an nn.Dropout built once in this class`;
      } else if (resolved(ctx, fn) === 'torch.nn.functional.dropout' && args && isName(args.pos[0], probs)) {
        const pArg = args.pos[1] ?? args.kw.get('p');
        const training = args.pos[2] ?? args.kw.get('training');
        const known = [...args.kw.keys()].every((k) => k === 'p' || k === 'training');
        if (args.pos.length <= 3 && known && !args.kw.has('inplace')) {
          const pText = pArg ? compact(pArg) : '0.5';
          dropStmt = n;
          dropoutP = training ? `${pText} if ${compact(training)} else 0.0` : pText;
        } else dropFail = `\`${compact(call)}\` passes arguments SDPA's dropout_p cannot express`;
      } else dropFail = `\`${shortText(ctx, n)}\` after the softmax is not an nn.Dropout member or F.dropout`;
      if (dropFail) {
        fail('dropout-form', dropFail, n.endLine);
        continue;
      }
      n = nextSibling(st, n);
    }
    // The output: `y = att @ v`, or any assignment or return whose one use of the probabilities is `att @ v`.
    const product = n ? outputProduct(ctx, n, probs) : undefined;
    if (!n || !product) {
      const last = (dropStmt ?? s).endLine;
      fail(
        n && uses(n, probs).length === 0 ? 'extra-statement' : 'value-form',
        n
          ? `\`${shortText(ctx, n)}\` (line ${n.startLine + 1}) is not \`y = ${probs} @ v\` with a plain v right after the ${dropStmt ? 'dropout' : 'softmax'}`
          : `nothing follows the ${dropStmt ? 'dropout' : 'softmax'}: the probabilities are not multiplied by v here`,
        last,
      );
      continue;
    }
    const v = product.v;
    const outStmt = n;
    const last = outStmt.endLine;

    const scores = scoresOf(ctx, defined(qa, 'qa').value, scale);
    if ('code' in scores) {
      fail(scores.code, scores.reason, last);
      continue;
    }
    const { q, k } = scores;
    if ([q, k, v].some((x) => x === scoresName || x === probs)) {
      fail('scores-form', `\`${scoresName}\` is also one of q, k, v`, last);
      continue;
    }
    if (scores.scale !== undefined && !ctx.scaleKwarg) {
      const what = scores.scale === '1.0' ? `the scores \`${q} @ ${k}ᵀ\` are not scaled here (${q} may be scaled before), so SDPA would scale them by 1/sqrt(${k}.size(-1)) again` : `the scores are scaled by \`${scores.scale}\`, not SDPA's default 1/sqrt(${k}.size(-1))`;
      fail('scale', `${what}: that needs \`scale=${scores.scale}\` (torch >= 2.1), which was not allowed here`, last);
      continue;
    }

    // The chain's own names must not be read anywhere else in the function.
    const chain = [scoresStmt, scaleStmt, maskStmt, s, dropStmt, outStmt].filter((x): x is Stmt => !!x);
    const scope = def ? bodyOf(st, def) : st.stmts;
    let used: { name: string; stmt: Stmt } | undefined;
    for (const other of scope) {
      if (chain.includes(other)) continue;
      for (const name of new Set([scoresName, probs])) {
        if (uses(other, name).length) {
          used = { name, stmt: other };
          break;
        }
      }
      if (used) break;
    }
    if (used) {
      fail('weights-used', `\`${used.name}\` is used again at line ${used.stmt.startLine + 1} (\`${shortText(ctx, used.stmt)}\`): SDPA does not materialise the attention weights`, last);
      continue;
    }

    // The mask: exactly the causal tril buffer of this class, sliced to T×T, with no cache.
    let causal = false;
    if (maskStmt) {
      const m = defined(assignOf(maskStmt), 'assignOf(maskStmt)').value;
      const margs = callArgs(m);
      const cond = margs ? (margs.pos[0] ?? margs.kw.get('mask')) : undefined;
      const fill = margs ? (margs.pos[1] ?? margs.kw.get('value')) : undefined;
      if (!margs || !cond || !fill || margs.pos.length + margs.kw.size !== 2) {
        fail('mask-not-causal', `\`${shortText(ctx, maskStmt)}\` is not masked_fill(mask, -inf)`, last);
        continue;
      }
      if (!isMinusInf(ctx, fill)) {
        fail('mask-not-causal', `the masked scores are filled with \`${compact(fill)}\`, not -inf: SDPA's causal mask excludes them exactly`, last);
        continue;
      }
      const mk = maskOf(cond);
      if (typeof mk === 'string') {
        fail('mask-not-causal', mk, last);
        continue;
      }
      const defs = cls ? memberDefs(ctx, cls, mk.buffer) : [];
      const reg = defs[0];
      const rank = defs.length === 1 && reg?.buffer && reg.value ? causalBuffer(ctx, reg.value) : undefined;
      if (rank === undefined || rank !== mk.rank) {
        fail(
          'mask-not-causal',
          defs.length === 1 && reg?.buffer
            ? `\`self.${mk.buffer}\` (line ${reg.stmt.startLine + 1}) is not provably torch.tril(torch.ones(n, n))${mk.rank === 4 ? '.view(1, 1, n, n)' : ''}: is_causal=True could mask differently`
            : `\`self.${mk.buffer}\` is not registered exactly once in this class as torch.tril(torch.ones(n, n)): is_causal=True could mask differently`,
          last,
        );
        continue;
      }
      // is_causal=True masks the top-left triangle of an L×S score matrix; the buffer
      // slice [:T, :T] equals it when L = S = T, i.e. q and k both come from this call's input.
      const params = def ? paramsOf(def) : [];
      const cacheParam = params.find((x) => /past|cache|kv/i.test(x));
      const qkDefs = def ? bodyOf(st, def).filter((x) => [q, k].some((nm) => (assignOf(x)?.targets ?? []).some((tg) => namesIn(tg).includes(nm)))) : [];
      const cached = qkDefs.find((x) => mentionsCache(assignOf(x)?.value));
      const missing = [q, k].find((nm) => !qkDefs.some((x) => (assignOf(x)?.targets ?? []).some((tg) => namesIn(tg).includes(nm))));
      // Self-attention: q and k must come from the same inputs of the function (not k from an encoder's output).
      const qFrom = def && !missing ? inputsOf(ctx, def, q, params) : [];
      const kFrom = def && !missing ? inputsOf(ctx, def, k, params) : [];
      const cross = !missing && (qFrom.join() !== kFrom.join() || qFrom.length === 0);
      if (cacheParam || cached || missing || cross) {
        fail(
          'kv-cache',
          cacheParam
            ? `the function takes \`${cacheParam}\`: with cached keys the query and key lengths differ and the causal mask would not line up`
            : cached
              ? `\`${shortText(ctx, cached)}\` (line ${cached.startLine + 1}) may extend the keys from a cache: the query and key lengths could differ`
              : missing
                ? `\`${missing}\` is not computed in this function, so its length cannot be shown to equal the query's`
                : `\`${q}\` comes from ${qFrom.map((x) => `\`${x}\``).join(', ') || 'no input'} and \`${k}\` from ${kFrom.map((x) => `\`${x}\``).join(', ') || 'no input'}: their lengths can differ, and the causal mask would not line up`,
          last,
        );
        continue;
      }
      causal = true;
    }

    const fn = functionalName(ctx, 'scaled_dot_product_attention');
    const kwargs = [`attn_mask=None`, `dropout_p=${dropoutP}`, `is_causal=${causal ? 'True' : 'False'}`];
    if (scores.scale !== undefined) kwargs.push(`scale=${scores.scale}`);
    const call = `${fn.name}(${q}, ${k}, ${v}, ${kwargs.join(', ')})`;

    // Comments inside the replaced statements stay, each on its own line above the call.
    const start = scoresStmt.start;
    const { start: outStart, end } = outStmt;
    const statement = ctx.text.slice(outStart, product.node.startIndex) + call + ctx.text.slice(product.node.endIndex, end);
    const comments = ctx.root
      .descendantsOfType('comment', scoresStmt.from, outStmt.to)
      .filter((c): c is Node => c !== null && c.startIndex >= start && c.startIndex < end)
      // The grammar's comment runs to the line feed: a CRLF line's `\r` is not part of it.
      .map((c) => c.text.replace(/\r$/, ''));
    const indent = scoresStmt.indent;
    const newText = comments.map((c) => `${c}${ctx.eol}${indent}`).join('') + statement;
    out.push({
      first,
      last,
      line: s.startLine,
      edits: [{ start, end, newText }],
      ...(fn.add ? { imports: [fn.add] } : {}),
      form: 'sdpa-chain',
      description: `eager attention (lines ${first + 1}-${last + 1}) -> ${fn.name}(${q}, ${k}, ${v}, ..., is_causal=${causal ? 'True' : 'False'})`,
    });
  }
  return out;
}

/**
 * The function parameters a local name is computed from, following its assignments
 * in the function (`k` ← `self.c_attn(x).split(...)` ← `x`), sorted; `self` excluded.
 */
function inputsOf(ctx: Ctx, def: Stmt, name: string, params: readonly string[]): string[] {
  const st = ctx.st;
  const body = bodyOf(st, def).map((s) => ({ s, a: assignOf(s) }));
  const self = params[0];
  const seen = new Set<string>();
  const found = new Set<string>();
  const todo = [name];
  while (todo.length) {
    const n = defined(todo.pop(), 'todo.pop()');
    if (seen.has(n)) continue;
    seen.add(n);
    if (params.includes(n) && n !== self) {
      found.add(n);
      continue;
    }
    for (const { a } of body) {
      if (!a?.targets.some((tg) => boundNamesOf(tg).includes(n))) continue;
      for (const r of namesIn(a.value)) if (r !== self) todo.push(r);
    }
  }
  return [...found].sort();
}

/** Names a target binds, tuples and starred items included; [] for attributes and subscripts. */
function boundNamesOf(e: Node): string[] {
  const out: string[] = [];
  const stack = [e];
  while (stack.length) {
    let t = defined(stack.pop(), 'stack.pop()');
    if (t.type === 'list_splat_pattern' || t.type === 'list_splat') t = bare(kids(t)[0] ?? t);
    if (t.type === 'identifier') out.push(t.text);
    else if (TUPLES.has(t.type)) {
      const items = kids(t).map(bare);
      for (let i = items.length - 1; i >= 0; i--) stack.push(itemAt(items, i));
    }
  }
  return out;
}

const CACHE_OPS = new Set(['cat', 'concat', 'concatenate', 'stack', 'update']);

/** Whether a value may extend keys from a cache: a concatenation, or a name that says past/cache. */
function mentionsCache(e: Node | undefined): boolean {
  if (!e) return false;
  for (const n of walk(e)) {
    const id = n.type === 'identifier' ? n.text : attrName(n);
    if (id !== undefined && (CACHE_OPS.has(id) || /past|cache/i.test(id))) return true;
  }
  return false;
}

/**
 * In an assignment or return statement, the one use of `probs` as `probs @ v` (or
 * `torch.matmul(probs, v)`) with a plain `v`: the node to replace and v.
 */
function outputProduct(ctx: Ctx, s: Stmt, probs: string): { node: Node; v: string } | undefined {
  if (uses(s, probs).length !== 1) return undefined;
  let value: Node | undefined;
  const a = assignOf(s);
  if (a) {
    if (a.targets.some((tg) => namesIn(tg).includes(probs))) return undefined;
    value = a.value;
  } else if (s.head === 'return') value = returnValue(s);
  if (!value) return undefined;
  for (const e of walk(value)) {
    const l = isBinary(e, '@') ? field(e, 'left') : undefined;
    const r = isBinary(e, '@') ? field(e, 'right') : undefined;
    if (isName(l, probs) && isName(r)) return { node: e, v: r.text };
    const fn = calleeOf(e);
    if (fn && resolved(ctx, fn) === 'torch.matmul') {
      const args = callArgs(e);
      const v = args?.pos[1];
      if (args && !args.kw.size && args.pos.length === 2 && isName(args.pos[0], probs) && isName(v)) return { node: e, v: v.text };
    }
  }
  return undefined;
}

export function findSdpa(ctx: Ctx): Found[] {
  return [...hfSites(ctx), ...eagerChains(ctx)];
}
