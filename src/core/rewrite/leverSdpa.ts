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
import type { OffsetEdit } from './edits';
import { FUSED_FEATURE } from '../scan/branches';
import { type Ctx, type Found, functionalName, inFallbackBranch, resolved, shortText, skipAt, spanOf } from './leverCommon';
import { callArgs, compact, dottedName, type Expr, numberValue, parseExpr, src, stringValue, walk } from './pyexpr';
import { type Assign, assignOf, bodyOf, classOfMethod, enclosingDef, exprOf, nextSibling, paramsOf, prevSibling, type Stmt, uses } from './structure';
import { type Tok, tokText } from './tokens';
import { itemAt } from '../arrays';

const HF_LOADERS = new Set(['from_pretrained', 'from_config', '_from_config']);

/** The expressions of a simple statement: an assignment's targets and value, a return value, or the expression. */
function expressionsOf(ctx: Ctx, s: Stmt): Expr[] {
  const a = assignOf(ctx.st, s);
  if (a) return [...a.targets, a.value];
  if (s.head === 'return' && !s.header && !s.semicolon) {
    const v = parseExpr(ctx.t, s.line.first + 1, s.last);
    return v ? [v] : [];
  }
  const e = exprOf(ctx.st, s);
  return e ? [e] : [];
}

function literalEdit(ctx: Ctx, value: Expr, to: string): OffsetEdit {
  const text = src(ctx.t, value);
  const m = /^([rRuU]?)("""|'''|"|')/.exec(text) as RegExpExecArray;
  const q = m[2] as string;
  return { start: value.s, end: value.e, newText: `${m[1]}${q}${to}${q}` };
}

function asksForWeights(ctx: Ctx): boolean {
  const t = ctx.t;
  for (let k = 0; k + 2 < t.toks.length; k++) {
    if ((t.toks[k] as Tok).type === 'name' && tokText(t, k) === 'output_attentions' && tokText(t, k + 1) === '=' && tokText(t, k + 2) === 'True') return true;
  }
  return false;
}

/** HF `attn_implementation="eager"` keywords and `._attn_implementation = "eager"` assignments. */
function hfSites(ctx: Ctx): Found[] {
  const out: Found[] = [];
  const weights = asksForWeights(ctx);
  for (const s of ctx.st.stmts) {
    if (s.header) continue;
    const lines = { first: s.line.startLine, last: s.line.endLine };
    const a = assignOf(ctx.st, s);
    if (a?.targets.length === 1 && (a.targets[0] as Expr).k === 'attr' && (a.targets[0] as Expr & { k: 'attr' }).name === '_attn_implementation') {
      const v = stringValue(a.value);
      if (v === 'eager') out.push(hfEdit(ctx, s, a.value, weights, `${src(ctx.t, a.targets[0] as Expr)} = "sdpa"`));
      else if (v === undefined) out.push(skipAt(s, 'not-literal', `\`${src(ctx.t, a.targets[0] as Expr)}\` is set to \`${compact(ctx.t, a.value)}\`, not a string literal: set the value it comes from to "sdpa"`));
      continue;
    }
    for (const e of expressionsOf(ctx, s)) {
      for (const node of walk(e)) {
        if (node.k !== 'call') continue;
        const arg = node.args.find((x) => x.kw === 'attn_implementation');
        if (!arg) continue;
        const callee = dottedName(node.fn) ?? compact(ctx.t, node.fn);
        const final = callee.slice(callee.lastIndexOf('.') + 1);
        const v = stringValue(arg.value);
        if (v !== undefined && v !== 'eager') continue;
        if (!HF_LOADERS.has(final) && !final.endsWith('Config')) {
          out.push({ ...lines, line: lineOfNode(ctx, arg.value), skip: { code: 'unknown-callee', reason: `\`attn_implementation=\` is passed to \`${callee}(...)\`, not to a model's from_pretrained/from_config or a *Config: change it where the model is built` } });
          continue;
        }
        if (v === undefined) {
          out.push({ ...lines, line: lineOfNode(ctx, arg.value), skip: { code: 'not-literal', reason: `\`attn_implementation=${compact(ctx.t, arg.value)}\` in \`${callee}(...)\` is not a string literal: set the value it comes from to "sdpa"` } });
          continue;
        }
        out.push(hfEdit(ctx, s, arg.value, weights, `${callee}(..., attn_implementation="sdpa")`));
      }
    }
  }
  return out;
}

function lineOfNode(ctx: Ctx, e: Expr): number {
  let lo = 0;
  let hi = ctx.t.lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((ctx.t.lineStarts[mid] as number) <= e.s) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function hfEdit(ctx: Ctx, s: Stmt, value: Expr, weights: boolean, what: string): Found {
  const line = lineOfNode(ctx, value);
  const lines = { first: s.line.startLine, last: s.line.endLine, line };
  if (weights) {
    return { ...lines, skip: { code: 'attention-weights', reason: 'the file passes output_attentions=True: SDPA returns no attention weights (transformers falls back to eager or refuses), so the switch would not take effect' } };
  }
  return { ...lines, edits: [literalEdit(ctx, value, 'sdpa')], form: 'hf-sdpa', description: `attn_implementation "eager" -> "sdpa" (${what})` };
}

/** What the chain's scores statement computes. */
interface Scores {
  q: string;
  k: string;
  /** Text for `scale=`, or undefined for SDPA's default 1/sqrt(E). */
  scale?: string;
}

function isName(e: Expr | undefined, id?: string): e is Expr & { k: 'name' } {
  return !!e && e.k === 'name' && (id === undefined || e.id === id);
}

/** `x.size(-1)` or `x.shape[-1]` for x in `names`. */
function isLastDim(e: Expr, names: readonly string[]): boolean {
  if (e.k === 'call' && e.fn.k === 'attr' && e.fn.name === 'size' && isName(e.fn.obj) && names.includes(e.fn.obj.id)) {
    return e.args.length === 1 && !e.args[0]?.kw && !e.args[0]?.star && numberValue((e.args[0] as { value: Expr }).value) === -1;
  }
  if (e.k === 'sub' && e.obj.k === 'attr' && e.obj.name === 'shape' && isName(e.obj.obj) && names.includes(e.obj.obj.id)) {
    return e.items.length === 1 && numberValue(e.items[0] as Expr) === -1;
  }
  return false;
}

/** sqrt(E) for the head dim E of q or k: `math.sqrt(k.size(-1))`, `k.size(-1) ** 0.5`. */
function isSqrtDim(ctx: Ctx, e: Expr, names: readonly string[]): boolean {
  if (e.k === 'call' && e.args.length === 1 && !e.args[0]?.kw && !e.args[0]?.star) {
    const q = resolved(ctx, e.fn);
    return (q === 'math.sqrt' || q === 'numpy.sqrt') && isLastDim((e.args[0] as { value: Expr }).value, names);
  }
  return e.k === 'bin' && e.op === '**' && numberValue(e.r) === 0.5 && isLastDim(e.l, names);
}

/** 1/sqrt(E): `1.0 / math.sqrt(k.size(-1))`, `k.size(-1) ** -0.5`. */
function isInvSqrtDim(ctx: Ctx, e: Expr, names: readonly string[]): boolean {
  if (e.k === 'bin' && e.op === '/' && numberValue(e.l) === 1) return isSqrtDim(ctx, e.r, names);
  return e.k === 'bin' && e.op === '**' && numberValue(e.r) === -0.5 && isLastDim(e.l, names);
}

/** `q @ k.transpose(-2, -1)` or `torch.matmul(q, k.transpose(-2, -1))`, k.mT too. */
function qkOf(ctx: Ctx, e: Expr): { q: string; k: string } | undefined {
  let a: Expr | undefined;
  let b: Expr | undefined;
  if (e.k === 'bin' && e.op === '@') [a, b] = [e.l, e.r];
  else if (e.k === 'call' && resolved(ctx, e.fn) === 'torch.matmul') {
    const args = callArgs(e);
    if (!args || args.kw.size || args.pos.length !== 2) return undefined;
    [a, b] = args.pos;
  }
  if (!isName(a) || !b) return undefined;
  let k: Expr | undefined;
  if (b.k === 'attr' && b.name === 'mT') k = b.obj;
  else if (b.k === 'call' && b.fn.k === 'attr' && b.fn.name === 'transpose') {
    const args = callArgs(b);
    const dims = args && !args.kw.size ? args.pos.map(numberValue) : [];
    if (dims.length === 2 && ((dims[0] === -2 && dims[1] === -1) || (dims[0] === -1 && dims[1] === -2))) k = b.fn.obj;
  }
  if (!isName(k)) return undefined;
  return { q: a.id, k: k.id };
}

/** A scale factor (`* f`) or divisor (`/ d`) applied to the scores. */
interface Factor {
  op: '*' | '/';
  e: Expr;
}

/**
 * Reads the scores expression and an optional scale applied by the next statement
 * (`att = att / math.sqrt(d)`); a code and reason when it is not a provable form.
 */
function scoresOf(ctx: Ctx, e: Expr, extra?: Factor): Scores | { code: 'scores-form' | 'scale'; reason: string } {
  let qk = qkOf(ctx, e);
  let factor: Factor | undefined;
  if (!qk && e.k === 'bin' && (e.op === '*' || e.op === '/')) {
    const left = qkOf(ctx, e.l);
    const right = e.op === '*' ? qkOf(ctx, e.r) : undefined;
    qk = left ?? right;
    if (qk) factor = { op: e.op, e: left ? e.r : e.l };
  }
  if (!qk) return { code: 'scores-form', reason: `the scores \`${compact(ctx.t, e)}\` are not \`q @ k.transpose(-2, -1)\` of plain names times a scale` };
  if (factor && extra) return { code: 'scale', reason: 'the scores are scaled twice' };
  factor ??= extra;
  if (!factor) {
    // Unscaled here (q may have been scaled before): SDPA would scale again unless told 1.0.
    return { ...qk, scale: '1.0' };
  }
  const names = [qk.q, qk.k];
  if (factor.op === '*' && isInvSqrtDim(ctx, factor.e, names)) return qk;
  if (factor.op === '/' && isSqrtDim(ctx, factor.e, names)) return qk;
  const f = compact(ctx.t, factor.e);
  return { ...qk, scale: factor.op === '*' ? f : factor.e.k === 'name' || factor.e.k === 'attr' || factor.e.k === 'num' || factor.e.k === 'call' ? `1.0 / ${f}` : `1.0 / (${f})` };
}

/** `s = s.masked_fill(...)`. */
function isMaskFill(a: Assign | undefined, name: string): boolean {
  return !!a && singleName(a) === name && a.value.k === 'call' && a.value.fn.k === 'attr' && a.value.fn.name === 'masked_fill' && isName(a.value.fn.obj, name);
}

/** `s = s * f` or `s = s / d`: the factor, when the statement is exactly that. */
function scaleStep(a: Assign | undefined, name: string): Factor | undefined {
  if (!a || singleName(a) !== name) return undefined;
  const e = a.value;
  if (e.k !== 'bin' || (e.op !== '*' && e.op !== '/')) return undefined;
  if (isName(e.l, name)) return { op: e.op, e: e.r };
  if (e.op === '*' && isName(e.r, name)) return { op: '*', e: e.l };
  return undefined;
}

/** Does the value compute attention scores (a matmul of some kind)? Used to tell attention softmaxes from others. */
function looksLikeScores(ctx: Ctx, e: Expr): boolean {
  for (const n of walk(e)) {
    if (n.k === 'bin' && n.op === '@') return true;
    if (n.k === 'call') {
      const q = resolved(ctx, n.fn) ?? '';
      if (/(^|\.)(matmul|bmm|einsum|baddbmm)$/.test(q)) return true;
    }
  }
  return false;
}

/** `F.softmax(s, dim=-1)`, `torch.softmax(s, -1)`, `s.softmax(dim=-1)`: the input name, or why not. */
function softmaxOf(ctx: Ctx, e: Expr): { input: string } | { input: string; bad: string } | undefined {
  if (e.k !== 'call') return undefined;
  const q = resolved(ctx, e.fn);
  let input: Expr | undefined;
  let rest: { pos: Expr[]; kw: Map<string, Expr> } | undefined;
  const args = callArgs(e);
  if (q === 'torch.nn.functional.softmax' || q === 'torch.softmax') {
    if (!args) return undefined;
    input = args.pos[0];
    rest = { pos: args.pos.slice(1), kw: args.kw };
  } else if (e.fn.k === 'attr' && e.fn.name === 'softmax' && isName(e.fn.obj)) {
    input = e.fn.obj;
    rest = args;
  } else return undefined;
  if (!isName(input) || !rest) return undefined;
  const dim = rest.pos.length === 1 && rest.kw.size === 0 ? rest.pos[0] : rest.pos.length === 0 && rest.kw.size === 1 ? rest.kw.get('dim') : undefined;
  if (!dim) {
    const extra = [...rest.kw.keys()].filter((k) => k !== 'dim');
    return { input: input.id, bad: extra.length ? `the softmax passes \`${extra.join('=, ')}=\` (SDPA computes in the input's dtype with no options)` : `the softmax's arguments are not just \`dim=-1\`` };
  }
  if (numberValue(dim) !== -1) return { input: input.id, bad: `the softmax is over dim \`${compact(ctx.t, dim)}\`, not the last one (SDPA normalises over the keys, dim -1)` };
  return { input: input.id };
}

function singleName(a: Assign | undefined): string | undefined {
  return a?.targets.length === 1 && isName(a.targets[0]) ? a.targets[0].id : undefined;
}

/** `-inf` as models write it: float("-inf"), -float("inf"), -math.inf, -torch.inf. */
function isMinusInf(ctx: Ctx, e: Expr): boolean {
  const inf = (x: Expr, neg: boolean): boolean => {
    if (x.k === 'call' && resolved(ctx, x.fn) === null && isName(x.fn, 'float') && x.args.length === 1 && !x.args[0]?.kw) {
      const v = stringValue((x.args[0] as { value: Expr }).value)?.toLowerCase();
      return neg ? v === 'inf' || v === 'infinity' : v === '-inf' || v === '-infinity';
    }
    if (neg) {
      const q = dottedName(x);
      const r = q ? (resolved(ctx, x) ?? q) : null;
      return r === 'math.inf' || r === 'torch.inf' || r === 'numpy.inf';
    }
    return false;
  };
  if (e.k === 'unary' && e.op === '-') return inf(e.x, true);
  return inf(e, false);
}

/** The class's statements that assign or register `self.<name>`, with the registered value. */
function memberDefs(ctx: Ctx, cls: Stmt, name: string): { stmt: Stmt; value: Expr | undefined; buffer: boolean }[] {
  const out: { stmt: Stmt; value: Expr | undefined; buffer: boolean }[] = [];
  for (const s of bodyOf(ctx.st, cls)) {
    if (s.header) continue;
    const a = assignOf(ctx.st, s);
    if (a) {
      for (const tg of a.targets) {
        const targets = tg.k === 'tuple' || tg.k === 'list' ? tg.items : [tg];
        if (targets.some((x) => x.k === 'attr' && isName(x.obj, 'self') && x.name === name)) out.push({ stmt: s, value: a.targets.length === 1 && targets.length === 1 ? a.value : undefined, buffer: false });
      }
      continue;
    }
    const e = exprOf(ctx.st, s);
    if (e?.k === 'call' && dottedName(e.fn) === 'self.register_buffer') {
      const first = e.args[0];
      if (first && !first.kw && !first.star && stringValue(first.value) === name) {
        const second = e.args[1];
        out.push({ stmt: s, value: second && !second.star && (second.kw === undefined || second.kw === 'tensor') ? second.value : undefined, buffer: true });
      }
    }
  }
  // `setattr(self, "bias", ...)` or an unparsed statement mentioning it makes the origin unprovable.
  return out;
}

/** `torch.ones(n, n)` (dtype/device keywords allowed): the compact text of n, or undefined. */
function onesSquare(ctx: Ctx, e: Expr): string | undefined {
  if (e.k !== 'call' || resolved(ctx, e.fn) !== 'torch.ones') return undefined;
  const args = callArgs(e);
  if (!args || [...args.kw.keys()].some((k) => k !== 'dtype' && k !== 'device')) return undefined;
  let dims = args.pos;
  if (dims.length === 1 && (dims[0]?.k === 'tuple' || dims[0]?.k === 'list')) dims = (dims[0] as Expr & { k: 'tuple' }).items;
  if (dims.length !== 2) return undefined;
  const a = compact(ctx.t, dims[0] as Expr);
  return a === compact(ctx.t, dims[1] as Expr) ? a : undefined;
}

/** `torch.tril(ones)` / `ones.tril()` with the main diagonal: n, or undefined. */
function trilOnes(ctx: Ctx, e: Expr): string | undefined {
  if (e.k !== 'call') return undefined;
  const args = callArgs(e);
  if (!args) return undefined;
  let inner: Expr | undefined;
  let diag: Expr | undefined;
  if (resolved(ctx, e.fn) === 'torch.tril') {
    inner = args.pos[0];
    diag = args.pos[1] ?? args.kw.get('diagonal');
    if (args.pos.length > 2 || [...args.kw.keys()].some((k) => k !== 'diagonal')) return undefined;
  } else if (e.fn.k === 'attr' && e.fn.name === 'tril') {
    inner = e.fn.obj;
    diag = args.pos[0] ?? args.kw.get('diagonal');
    if (args.pos.length > 1 || [...args.kw.keys()].some((k) => k !== 'diagonal')) return undefined;
  }
  if (!inner || (diag && numberValue(diag) !== 0)) return undefined;
  return onesSquare(ctx, inner);
}

/** The causal buffer's rank (2 or 4) when `value` is tril(ones(n, n)), optionally viewed as (1, 1, n, n). */
function causalBuffer(ctx: Ctx, value: Expr): 2 | 4 | undefined {
  if (trilOnes(ctx, value) !== undefined) return 2;
  if (value.k === 'call' && value.fn.k === 'attr' && (value.fn.name === 'view' || value.fn.name === 'reshape')) {
    const n = trilOnes(ctx, value.fn.obj);
    const args = callArgs(value);
    if (n === undefined || !args || args.kw.size) return undefined;
    let dims = args.pos;
    if (dims.length === 1 && (dims[0]?.k === 'tuple' || dims[0]?.k === 'list')) dims = (dims[0] as Expr & { k: 'tuple' }).items;
    const d = dims.map((x) => compact(ctx.t, x));
    if (d.length === 4 && d[0] === '1' && d[1] === '1' && d[2] === n && d[3] === n) return 4;
  }
  return undefined;
}

/** `<buf>[:, :, :T, :T] == 0`: the buffer name and rank of the slice, or why not. */
function maskOf(ctx: Ctx, cond: Expr): { buffer: string; rank: 2 | 4 } | string {
  const why = `the mask \`${compact(ctx.t, cond)}\` is not \`self.<buffer>[:, :, :T, :T] == 0\``;
  if (cond.k !== 'cmp' || cond.op !== '==' || numberValue(cond.r) !== 0) return why;
  const sub = cond.l;
  if (sub.k !== 'sub' || sub.obj.k !== 'attr' || !isName(sub.obj.obj, 'self')) return why;
  const items = sub.items;
  const full = (x: Expr | undefined) => !!x && x.k === 'slice' && !x.lo && !x.hi && !x.step;
  const upto = (x: Expr | undefined) => (x?.k === 'slice' && !x.lo && x.hi && !x.step ? compact(ctx.t, x.hi) : undefined);
  if (items.length === 4 && full(items[0]) && full(items[1])) {
    const a = upto(items[2]);
    if (a !== undefined && a === upto(items[3])) return { buffer: sub.obj.name, rank: 4 };
  } else if (items.length === 2) {
    const a = upto(items[0]);
    if (a !== undefined && a === upto(items[1])) return { buffer: sub.obj.name, rank: 2 };
  }
  return why;
}

/** The eager chains around every softmax of attention scores. */
function eagerChains(ctx: Ctx): Found[] {
  const out: Found[] = [];
  const st = ctx.st;
  for (const s of st.stmts) {
    const sa = assignOf(st, s);
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
    const pa = p ? assignOf(st, p) : undefined;
    if (p && isMaskFill(pa, scoresName)) {
      maskStmt = p;
      p = prevSibling(st, p);
    }
    let scaleStmt: Stmt | undefined;
    let scale: Factor | undefined;
    const ca = p ? assignOf(st, p) : undefined;
    if (p && ca && !looksLikeScores(ctx, ca.value) && (scale = scaleStep(ca, scoresName))) {
      scaleStmt = p;
      p = prevSibling(st, p);
    }
    const qa = p ? assignOf(st, p) : undefined;
    if (p && qa && singleName(qa) === scoresName && looksLikeScores(ctx, qa.value)) scoresStmt = p;
    if (!scoresStmt) {
      // Not directly after the scores: an attention softmax with something in between, or not attention at all.
      let q: Stmt | undefined;
      const between: Stmt[] = [];
      q = p;
      while (q) {
        const a = assignOf(st, q);
        if (a && singleName(a) === scoresName && looksLikeScores(ctx, a.value)) break;
        between.push(q);
        q = prevSibling(st, q);
      }
      if (!q) continue;
      // Name the statement nearest the softmax that is not a step of the pattern.
      const first = between.find((b) => !scaleStep(assignOf(st, b), scoresName) && !isMaskFill(assignOf(st, b), scoresName)) ?? itemAt(between, 0);
      out.push(skipAt(s, 'extra-statement', `\`${shortText(ctx, first)}\` (line ${first.line.startLine + 1}) sits between the attention scores and the softmax: SDPA fuses only scores, causal mask, softmax, dropout and @ v`, q.line.startLine, s.line.endLine));
      continue;
    }
    const first = scoresStmt.line.startLine;
    const fail = (code: Parameters<typeof skipAt>[1], reason: string, last = s.line.endLine) => out.push({ ...skipAt(s, code, reason, first, last) });

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
    const self = def ? (paramsOf(st, def)[0] ?? '') : '';
    const na = n ? assignOf(st, n) : undefined;
    let dropFail: string | undefined;
    if (n && na && singleName(na) === probs && na.value.k === 'call' && na.value.args.some((x) => !x.kw && !x.star && isName(x.value, probs))) {
      const call = na.value;
      const args = callArgs(call);
      if (call.fn.k === 'attr' && isName(call.fn.obj, 'self') && args?.pos.length === 1 && args.kw.size === 0) {
        const defs = cls ? memberDefs(ctx, cls, call.fn.name) : [];
        const d = defs[0];
        if (defs.length === 1 && d && !d.buffer && d.value?.k === 'call' && resolved(ctx, d.value.fn) === 'torch.nn.Dropout') {
          dropStmt = n;
          dropoutP = `${self}.${call.fn.name}.p if ${self}.training else 0.0`;
        } else dropFail = `\`self.${call.fn.name}\` is not provably an nn.Dropout built once in this class`;
      } else if (resolved(ctx, call.fn) === 'torch.nn.functional.dropout' && args && isName(args.pos[0], probs)) {
        const pArg = args.pos[1] ?? args.kw.get('p');
        const training = args.pos[2] ?? args.kw.get('training');
        const known = [...args.kw.keys()].every((k) => k === 'p' || k === 'training');
        if (args.pos.length <= 3 && known && !args.kw.has('inplace')) {
          const pText = pArg ? compact(ctx.t, pArg) : '0.5';
          dropStmt = n;
          dropoutP = training ? `${pText} if ${compact(ctx.t, training)} else 0.0` : pText;
        } else dropFail = `\`${compact(ctx.t, call)}\` passes arguments SDPA's dropout_p cannot express`;
      } else dropFail = `\`${shortText(ctx, n)}\` after the softmax is not an nn.Dropout member or F.dropout`;
      if (dropFail) {
        fail('dropout-form', dropFail, n.line.endLine);
        continue;
      }
      n = nextSibling(st, n);
    }
    // The output: `y = att @ v`, or any assignment or return whose one use of the probabilities is `att @ v`.
    const product = n ? outputProduct(ctx, n, probs) : undefined;
    if (!n || !product) {
      const last = (dropStmt ?? s).line.endLine;
      fail(
        n && uses(st, n, probs).length === 0 ? 'extra-statement' : 'value-form',
        n
          ? `\`${shortText(ctx, n)}\` (line ${n.line.startLine + 1}) is not \`y = ${probs} @ v\` with a plain v right after the ${dropStmt ? 'dropout' : 'softmax'}`
          : `nothing follows the ${dropStmt ? 'dropout' : 'softmax'}: the probabilities are not multiplied by v here`,
        last,
      );
      continue;
    }
    const v = product.v;
    const outStmt = n;
    const last = outStmt.line.endLine;

    const scores = scoresOf(ctx, (qa as Assign).value, scale);
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
        if (uses(st, other, name).length) {
          used = { name, stmt: other };
          break;
        }
      }
      if (used) break;
    }
    if (used) {
      fail('weights-used', `\`${used.name}\` is used again at line ${used.stmt.line.startLine + 1} (\`${shortText(ctx, used.stmt)}\`): SDPA does not materialise the attention weights`, last);
      continue;
    }

    // The mask: exactly the causal tril buffer of this class, sliced to T×T, with no cache.
    let causal = false;
    if (maskStmt) {
      const m = (assignOf(st, maskStmt) as Assign).value as Expr & { k: 'call' };
      const margs = callArgs(m);
      const cond = margs ? (margs.pos[0] ?? margs.kw.get('mask')) : undefined;
      const fill = margs ? (margs.pos[1] ?? margs.kw.get('value')) : undefined;
      if (!margs || !cond || !fill || margs.pos.length + margs.kw.size !== 2) {
        fail('mask-not-causal', `\`${shortText(ctx, maskStmt)}\` is not masked_fill(mask, -inf)`, last);
        continue;
      }
      if (!isMinusInf(ctx, fill)) {
        fail('mask-not-causal', `the masked scores are filled with \`${compact(ctx.t, fill)}\`, not -inf: SDPA's causal mask excludes them exactly`, last);
        continue;
      }
      const mk = maskOf(ctx, cond);
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
            ? `\`self.${mk.buffer}\` (line ${reg.stmt.line.startLine + 1}) is not provably torch.tril(torch.ones(n, n))${mk.rank === 4 ? '.view(1, 1, n, n)' : ''}: is_causal=True could mask differently`
            : `\`self.${mk.buffer}\` is not registered exactly once in this class as torch.tril(torch.ones(n, n)): is_causal=True could mask differently`,
          last,
        );
        continue;
      }
      // is_causal=True masks the top-left triangle of an L×S score matrix; the buffer
      // slice [:T, :T] equals it when L = S = T, i.e. q and k both come from this call's input.
      const params = def ? paramsOf(st, def) : [];
      const cacheParam = params.find((x) => /past|cache|kv/i.test(x));
      const qkDefs = def ? bodyOf(st, def).filter((x) => [q, k].some((nm) => (assignOf(st, x)?.targets ?? []).some((tg) => walkNames(tg).includes(nm)))) : [];
      const cached = qkDefs.find((x) => mentionsCache(assignOf(st, x)?.value));
      const missing = [q, k].find((nm) => !qkDefs.some((x) => (assignOf(st, x)?.targets ?? []).some((tg) => walkNames(tg).includes(nm))));
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
              ? `\`${shortText(ctx, cached)}\` (line ${cached.line.startLine + 1}) may extend the keys from a cache: the query and key lengths could differ`
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
    const { start } = spanOf(ctx, scoresStmt);
    const { end } = spanOf(ctx, outStmt);
    const outStart = spanOf(ctx, outStmt).start;
    const statement = ctx.t.text.slice(outStart, product.node.s) + call + ctx.t.text.slice(product.node.e, end);
    const comments: string[] = [];
    for (const tok of ctx.t.toks) {
      if (tok.start >= end) break;
      if (tok.start >= start && tok.type === 'comment') comments.push(ctx.t.text.slice(tok.start, tok.end));
    }
    const indent = scoresStmt.indent;
    const newText = comments.map((c) => `${c}${ctx.eol}${indent}`).join('') + statement;
    out.push({
      first,
      last,
      line: s.line.startLine,
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
  const body = bodyOf(st, def).map((s) => ({ s, a: assignOf(st, s) }));
  const self = params[0];
  const seen = new Set<string>();
  const found = new Set<string>();
  const todo = [name];
  while (todo.length) {
    const n = todo.pop() as string;
    if (seen.has(n)) continue;
    seen.add(n);
    if (params.includes(n) && n !== self) {
      found.add(n);
      continue;
    }
    for (const { a } of body) {
      if (!a?.targets.some((tg) => boundNamesOf(tg).includes(n))) continue;
      for (const r of walkNames(a.value)) if (r !== self) todo.push(r);
    }
  }
  return [...found].sort();
}

function boundNamesOf(e: Expr): string[] {
  if (e.k === 'name') return [e.id];
  if (e.k === 'tuple' || e.k === 'list') return e.items.flatMap((i) => boundNamesOf(i.k === 'star' ? i.x : i));
  return [];
}

const CACHE_OPS = new Set(['cat', 'concat', 'concatenate', 'stack', 'update']);

/** Whether a value may extend keys from a cache: a concatenation, or a name that says past/cache. */
function mentionsCache(e: Expr | undefined): boolean {
  if (!e) return false;
  for (const n of walk(e)) {
    const id = n.k === 'name' ? n.id : n.k === 'attr' ? n.name : undefined;
    if (id !== undefined && (CACHE_OPS.has(id) || /past|cache/i.test(id))) return true;
  }
  return false;
}

/**
 * In an assignment or return statement, the one use of `probs` as `probs @ v` (or
 * `torch.matmul(probs, v)`) with a plain `v`: the node to replace and v.
 */
function outputProduct(ctx: Ctx, s: Stmt, probs: string): { node: Expr; v: string } | undefined {
  const st = ctx.st;
  if (uses(st, s, probs).length !== 1) return undefined;
  let value: Expr | undefined;
  const a = assignOf(st, s);
  if (a) {
    if (a.targets.some((tg) => walkNames(tg).includes(probs))) return undefined;
    value = a.value;
  } else if (s.head === 'return' && !s.header && !s.semicolon) value = parseExpr(ctx.t, s.line.first + 1, s.last);
  if (!value) return undefined;
  for (const e of walk(value)) {
    if (e.k === 'bin' && e.op === '@' && isName(e.l, probs) && isName(e.r)) return { node: e, v: e.r.id };
    if (e.k === 'call' && resolved(ctx, e.fn) === 'torch.matmul') {
      const args = callArgs(e);
      if (args && !args.kw.size && args.pos.length === 2 && isName(args.pos[0], probs) && isName(args.pos[1])) return { node: e, v: args.pos[1].id };
    }
  }
  return undefined;
}

function walkNames(e: Expr): string[] {
  const out: string[] = [];
  for (const n of walk(e)) if (n.k === 'name') out.push(n.id);
  return out;
}

export function findSdpa(ctx: Ctx): Found[] {
  return [...hfSites(ctx), ...eagerChains(ctx)];
}
