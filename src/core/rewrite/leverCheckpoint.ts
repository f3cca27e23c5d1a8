/**
 * The checkpoint lever: recompute each block's activations in backward instead of
 * keeping them.
 *
 * A loop over the model's blocks whose body is exactly one call
 *
 *     for block in self.h:
 *         x = block(x)
 *
 * becomes
 *
 *     for block in self.h:
 *         if self.training and torch.is_grad_enabled():
 *             x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
 *         else:
 *             x = block(x)
 *
 * Non-reentrant checkpointing saves the RNG state and replays it in backward, so the
 * recomputed dropout masks are the ones of the forward: outputs and gradients are
 * identical. Evaluation and no-grad forwards take the old path. `import
 * torch.utils.checkpoint` is added unless the file already reaches `checkpoint` some way.
 *
 * HF models: `<model>.gradient_checkpointing_enable()` goes on the line after the
 * statement that builds the model (`X.from_pretrained(...)`, `X.from_config(...)`,
 * `XForY(config)` from `transformers`).
 */
import type { Node } from 'web-tree-sitter';
import type { OffsetEdit } from './edits';
import { type Ctx, type Found, indentUnit, loads, localFor, resolved, shortText, skipAt, torchName } from './leverCommon';
import { lineEnd } from './lines';
import { assignOf, bodyOf, boundNames, classOfMethod, enclosingDef, exprOf, hasMultilineString, identifiersOf, nextSibling, paramsOf, returnValue, type Stmt, uses } from './statements';
import { argsOf, compact, dottedName, field, isName, kids } from './syntax';
import { itemAt } from '../arrays';

/** Keywords `checkpoint()` takes itself: a block argument of that name would be swallowed. */
const CHECKPOINT_KWARGS = new Set(['use_reentrant', 'preserve_rng_state', 'context_fn', 'determinism_check', 'debug']);

/** `for <var> in <iter>:`: the loop variable and the iterable, when that simple. */
function forHeader(s: Stmt): { variable: string; iter: Node } | undefined {
  if (!s.header || s.head !== 'for') return undefined;
  const target = field(s.node, 'left');
  const iter = field(s.node, 'right');
  if (!isName(target) || !iter) return undefined;
  return { variable: target.text, iter };
}

/** How to call `torch.utils.checkpoint.checkpoint` here, and the import it needs. */
function checkpointName(ctx: Ctx): { name: string; add?: string } {
  const bare = localFor(ctx, 'torch.utils.checkpoint.checkpoint');
  if (bare) return { name: bare };
  const mod = localFor(ctx, 'torch.utils.checkpoint');
  if (mod) return { name: `${mod}.checkpoint` };
  const torch = localFor(ctx, 'torch');
  if (loads(ctx, 'torch.utils.checkpoint') && torch) return { name: `${torch}.utils.checkpoint.checkpoint` };
  // `import torch.utils.checkpoint` binds `torch` itself.
  return { name: 'torch.utils.checkpoint.checkpoint', add: 'import torch.utils.checkpoint' };
}

/** `class Name(Base):` with at least one base. */
function hasBases(cls: Stmt): boolean {
  const bases = cls.node.childForFieldName('superclasses');
  return !!bases && kids(bases).length > 0;
}

/** Does any name in the statements say checkpoint (already recomputing)? */
function mentionsCheckpoint(stmts: readonly Stmt[]): boolean {
  return stmts.some((s) => identifiersOf(s).some((x) => x.text.includes('checkpoint')));
}

function loops(ctx: Ctx): Found[] {
  const st = ctx.st;
  const out: Found[] = [];
  for (const s of st.stmts) {
    const h = forHeader(s);
    if (!h) continue;
    const iter = dottedName(h.iter);
    const def = enclosingDef(st, s);
    const self = def ? paramsOf(def)[0] : undefined;
    // Only loops over a module's own block list: `for block in self.h:` in a method.
    const cls = def ? classOfMethod(st, def) : undefined;
    if (!iter || !def || !self || !iter.startsWith(`${self}.`) || !cls) continue;
    const body = st.children.get(s.index) ?? [];
    const all = bodyOf(st, s);
    const first = s.startLine;
    const last = all.length ? (itemAt(all, all.length - 1)).endLine : s.endLine;
    const skip = (code: Parameters<typeof skipAt>[1], reason: string) => out.push(skipAt(s, code, reason, first, last));
    if (mentionsCheckpoint(all)) {
      skip('already', `the loop over \`${iter}\` already checkpoints its blocks`);
      continue;
    }
    const stmt = body[0];
    const a = stmt && body.length === 1 ? assignOf(stmt) : undefined;
    const name = a?.targets.length === 1 ? a.targets[0] : undefined;
    const call = a?.value;
    if (!stmt || body.length !== 1 || !a || !isName(name) || call?.type !== 'call' || !isName(field(call, 'function'), h.variable)) {
      skip('loop-form', `the body of \`for ${h.variable} in ${iter}:\` is not exactly one \`x = ${h.variable}(x, ...)\`${stmt ? ` (it starts with \`${shortText(ctx, stmt)}\`)` : ''}`);
      continue;
    }
    const args = argsOf(call);
    const firstArg = args[0];
    if (!firstArg || firstArg.kw !== undefined || firstArg.star || !isName(firstArg.value, name.text)) {
      skip('loop-form', `\`${shortText(ctx, stmt)}\` does not pass \`${name.text}\` as the block's first argument`);
      continue;
    }
    const clash = args.find((x) => x.kw !== undefined && CHECKPOINT_KWARGS.has(x.kw));
    if (clash) {
      skip('loop-form', `the block takes \`${clash.kw}=\`, a keyword checkpoint() keeps for itself`);
      continue;
    }
    // A KV cache passed in is appended to by the forward; the recomputation in backward would
    // append again (HF turns `use_cache` off for checkpointing for this reason).
    const cache = args.find((x) => (x.kw !== undefined && CACHE_KWARG.test(x.kw)) || (isName(x.value) && CACHE_KWARG.test(x.value.text)));
    if (cache) {
      skip('kv-cache', `the block is passed a KV cache (\`${cache.kw ?? (isName(cache.value) ? cache.value.text : '')}\`) that its forward updates: recomputing it in backward would update it twice`);
      continue;
    }
    // `self.training` needs a module: a class with no base class is not one.
    if (!hasBases(cls)) {
      skip('loop-form', `\`${cls.node.childForFieldName('name')?.text ?? ''}\` has no base class, so it is not an nn.Module with \`${self}.training\``);
      continue;
    }
    const after = nextSibling(st, s);
    if (after?.head === 'else' && after.indent === s.indent) {
      skip('loop-form', 'the loop has an `else:` clause');
      continue;
    }
    const unit = indentUnit(s, stmt);
    if (unit === undefined || hasMultilineString(stmt)) {
      skip('layout', unit === undefined ? 'the loop body is not indented under its header' : 'the block call holds a string over several lines');
      continue;
    }
    const text = ctx.text;
    const { start, end } = stmt;
    // Arguments as written, between the call's parentheses, without a trailing comma.
    const argsText = text
      .slice(firstArg.node.startIndex, call.endIndex - 1)
      .trimEnd()
      .replace(/,$/, '');
    const ck = checkpointName(ctx);
    const torch = torchName(ctx);
    const torchLocal = ck.add ? 'torch' : torch.name;
    const eol = ctx.eol;
    const bi = stmt.indent;
    // The original statement moves one level in: its continuation lines too.
    const original = text.slice(start, end).split(/(\r\n|\n|\r)/).map((part, i) => (i > 0 && i % 2 === 0 && part.length ? unit + part : part)).join('');
    const newText =
      `if ${self}.training and ${torchLocal}.is_grad_enabled():${eol}` +
      `${bi}${unit}${name.text} = ${ck.name}(${h.variable}, ${argsText}, use_reentrant=False)${eol}` +
      `${bi}else:${eol}` +
      `${bi}${unit}${original}`;
    const imports = [ck.add, ck.add ? undefined : torch.add].filter((x): x is string => !!x);
    out.push({
      first,
      last,
      line: s.startLine,
      edits: [{ start, end, newText }],
      ...(imports.length ? { imports } : {}),
      form: 'checkpoint-loop',
      description: `each block of \`${iter}\` checkpointed while training (${ck.name}(${h.variable}, ..., use_reentrant=False))`,
    });
  }
  return out;
}

/** Chained calls that return the model itself: `.to(device)`, `.cuda()`, `.train()`. */
const SELF_RETURNING = new Set(['to', 'cuda', 'cpu', 'train', 'float', 'half', 'bfloat16', 'requires_grad_', 'to_empty']);
const HF_LOADERS = new Set(['from_pretrained', 'from_config', '_from_config']);

/** The transformers model class a value builds, or undefined. */
function hfModel(ctx: Ctx, value: Node): string | undefined {
  let e = value;
  for (;;) {
    const fn = e.type === 'call' ? field(e, 'function') : undefined;
    const obj = fn?.type === 'attribute' ? field(fn, 'object') : undefined;
    if (!fn || obj?.type !== 'call' || !SELF_RETURNING.has(fn.childForFieldName('attribute')?.text ?? '')) break;
    e = obj;
  }
  const fn = e.type === 'call' ? field(e, 'function') : undefined;
  if (!fn) return undefined;
  const q = resolved(ctx, fn);
  if (!q?.startsWith('transformers.')) return undefined;
  const parts = q.split('.');
  let cls = itemAt(parts, parts.length - 1);
  if (HF_LOADERS.has(cls)) cls = parts[parts.length - 2] ?? '';
  if (/Config|Tokenizer|Processor|Extractor|Collator|Trainer|Arguments|pipeline/i.test(cls)) return undefined;
  return /Model|For[A-Z]/.test(cls) ? cls : undefined;
}

function hfModels(ctx: Ctx): Found[] {
  const st = ctx.st;
  const out: Found[] = [];
  const enabled = new Set<string>();
  for (const s of st.stmts) {
    const e = exprOf(s);
    const fn = e?.type === 'call' ? field(e, 'function') : undefined;
    const obj = fn?.type === 'attribute' && fn.childForFieldName('attribute')?.text === 'gradient_checkpointing_enable' ? field(fn, 'object') : undefined;
    if (obj) enabled.add(compact(obj));
  }
  for (const s of st.stmts) {
    if (s.header) continue;
    if (s.head === 'return' && !s.semicolon) {
      const v = returnValue(s);
      const cls = v ? hfModel(ctx, v) : undefined;
      if (cls) out.push(skipAt(s, 'model-form', `the ${cls} is returned as it is built: call \`.gradient_checkpointing_enable()\` on the model where the caller receives it`));
      continue;
    }
    const a = assignOf(s);
    if (a?.targets.length !== 1) continue;
    const cls = hfModel(ctx, a.value);
    if (!cls) continue;
    const target = itemAt(a.targets, 0);
    const names = boundNames(target);
    const model = (target.type === 'attribute' ? dottedName(target) : undefined) || (names?.length === 1 ? names[0] : undefined);
    if (!model) {
      out.push(skipAt(s, 'model-form', `the ${cls} is assigned to \`${target.text}\`, not to one name`));
      continue;
    }
    if (enabled.has(model)) {
      out.push(skipAt(s, 'already', `\`${model}.gradient_checkpointing_enable()\` is already called`));
      continue;
    }
    const reads = onlyReadFrom(ctx, s, model);
    if (reads) {
      out.push(skipAt(s, 'not-trained', `the ${cls} is built only to read from (\`${model}.${reads}\`), not trained here: checkpointing would change nothing`));
      continue;
    }
    const at = lineEnd(ctx.text, ctx.lineStarts, s.endLine);
    const edit: OffsetEdit = { start: at, end: at, newText: `${ctx.eol}${s.indent}${model}.gradient_checkpointing_enable()` };
    out.push({ first: s.startLine, last: s.endLine, line: s.startLine, edits: [edit], form: 'hf-checkpoint', description: `${model}.gradient_checkpointing_enable() after the ${cls} is built` });
  }
  return out;
}

export function findCheckpoint(ctx: Ctx): Found[] {
  return [...loops(ctx), ...hfModels(ctx)];
}


/** Arguments that hand a block a KV cache. */
const CACHE_KWARG = /^(past_key_values?|layer_past|past|use_cache|kv_cache|cache|cache_params|past_key_value_states)$/;

/** What a model is used for when it is only read: its weights, config or a copy, never a forward or training. */
const READ_ONLY = new Set(['state_dict', 'named_parameters', 'named_buffers', 'config', 'eval', 'save_pretrained', 'get_input_embeddings', 'get_output_embeddings', 'num_parameters', 'generation_config', 'cpu', 'requires_grad_']);

/**
 * The model bound by `s` is only read from in the rest of its function (nanoGPT's
 * `model_hf = GPT2LMHeadModel.from_pretrained(...); sd_hf = model_hf.state_dict()`): the
 * first attribute read, or undefined when it is called, passed on, returned or never used.
 */
function onlyReadFrom(ctx: Ctx, s: Stmt, model: string): string | undefined {
  if (!/^[A-Za-z_]\w*$/.test(model)) return undefined;
  const st = ctx.st;
  const def = enclosingDef(st, s);
  const scope = def ? bodyOf(st, def) : st.stmts;
  let first: string | undefined;
  for (const o of scope) {
    if (o.index <= s.index) continue;
    for (const use of uses(o, model)) {
      // `model.attr`: the name is the object of an attribute.
      const p = use.parent;
      if (p?.type !== 'attribute' || p.childForFieldName('object')?.startIndex !== use.startIndex) return undefined;
      const attr = p.childForFieldName('attribute')?.text ?? '';
      if (!READ_ONLY.has(attr)) return undefined;
      first ??= attr;
    }
  }
  return first;
}
