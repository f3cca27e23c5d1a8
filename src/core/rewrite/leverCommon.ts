/**
 * What the advisor's rewrites share: the analysed file, what one recognised site
 * yields (edits, or a skip with the reason), and how the file spells the torch names
 * a rewrite writes.
 */
import type { Node } from 'web-tree-sitter';
import type { OffsetEdit } from './edits';
import { eolOf, type Imports, readImports, resolveCallee } from './imports';
import { type Stmt, type Structure, structureOf } from './statements';
import { dottedName, isPunctuation, tokensIn } from './syntax';
import { type Tokens, tokenize } from './tokens';
import { itemAt } from '../arrays';

/** Why a recognised site was left alone. */
export type LeverSkipCode =
  /** `line` was given and no pattern of the lever is there. */
  | 'no-pattern'
  /** The lever is already applied (or the file already uses it). */
  | 'already'
  /** A value is not the literal the rewrite needs (`attn_implementation=attn`). */
  | 'not-literal'
  /** `attn_implementation=` in a call that is not a model or config constructor. */
  | 'unknown-callee'
  /** The file asks for attention weights (`output_attentions=True`), which SDPA does not return. */
  | 'attention-weights'
  /** A statement that is not part of the pattern sits between its steps. */
  | 'extra-statement'
  /** The attention scores or probabilities are used outside the chain (returned, stored, reused). */
  | 'weights-used'
  /** The scores are not `q @ k.transpose(-2, -1)` of plain names. */
  | 'scores-form'
  /** The scale is not the default 1/sqrt(head dim) and `scale=` was not allowed. */
  | 'scale'
  /** A mask that is not provably the causal tril buffer of this class. */
  | 'mask-not-causal'
  /** The softmax is over another dim, or has extra arguments. */
  | 'softmax-form'
  /** The step after the softmax is not a provable dropout. */
  | 'dropout-form'
  /** The probabilities are not multiplied by a plain `v`. */
  | 'value-form'
  /** Keys or values may come from a cache (query and key lengths may differ). */
  | 'kv-cache'
  /** The loop is not exactly `for block in self.<list>: x = block(x, ...)`. */
  | 'loop-form'
  /** The HF model is returned or built where a call cannot follow it. */
  | 'model-form'
  /** The file already computes in reduced precision (autocast, GradScaler, .half(), bf16 dtypes). */
  | 'mixed-precision'
  /** `backward()` is not on a plain loss name directly in a loop body. */
  | 'backward-form'
  /** Statements other than `zero_grad()` between the loss and `backward()`. */
  | 'between'
  /** No call of the trained model among the statements that compute the loss. */
  | 'no-forward'
  /** A statement holds a string over several lines (re-indenting would change it) or `;`. */
  | 'layout'
  /**
   * The pattern sits in the branch that runs only where the feature is missing (`else:` of
   * `if self.flash:`): rewriting it would make that branch need the feature it exists without.
   */
  | 'fallback-branch'
  /** The model is built only to read its weights (`sd_hf = model_hf.state_dict()`), never trained. */
  | 'not-trained'
  /** The rewriter failed on this text (a bug): nothing was changed. */
  | 'internal-error';

/** How a lever was applied at one place. */
export type LeverForm = 'sdpa-chain' | 'hf-sdpa' | 'checkpoint-loop' | 'hf-checkpoint' | 'autocast';

/** One recognised place in the file: what to change there, or why not. */
export interface Found {
  /** 0-based physical lines the pattern covers (a cursor on any of them selects it). */
  first: number;
  last: number;
  /** The line reported for it (the statement a finding points at). */
  line: number;
  edits?: OffsetEdit[];
  /** Import lines the edits need (added once, after the torch imports). */
  imports?: string[];
  form?: LeverForm;
  description?: string;
  skip?: { code: LeverSkipCode; reason: string };
}

/** The analysed file: its syntax tree (valid only while the lever runs) and what it imports. */
export interface Ctx {
  text: string;
  lineStarts: readonly number[];
  root: Node;
  st: Structure;
  /**
   * The imports, read from the tokens as convert and revert read them (imports.ts): the
   * three agree on what a name resolves to and where an added import goes.
   */
  t: Tokens;
  imports: Imports;
  eol: string;
  /** Allow `scale=` in a scaled_dot_product_attention call (torch >= 2.1). */
  scaleKwarg: boolean;
}

export function context(text: string, root: Node, scaleKwarg = false): Ctx {
  const t = tokenize(text);
  return { text, lineStarts: t.lineStarts, root, st: structureOf(text, t.lineStarts, root), t, imports: readImports(t), eol: eolOf(text), scaleKwarg };
}

/** Canonical dotted name of a callee node through the file's imports (`F.softmax` → `torch.nn.functional.softmax`). */
export function resolved(ctx: Ctx, fn: Node): string | null {
  const d = dottedName(fn);
  return d === undefined ? null : resolveCallee(ctx.imports, d);
}

/** The local name an import binds to exactly `target` (a module or an object), or undefined. */
export function localFor(ctx: Ctx, target: string): string | undefined {
  for (const b of ctx.imports.bindings) {
    const s = ctx.imports.statements[b.stmt];
    if (b.star || !s?.topLevel) continue;
    if (b.loads === undefined && b.target === target) return b.local;
    if (b.loads !== undefined && b.local === target) return b.local;
  }
  return undefined;
}

/** Whether some top-level `import a.b.c` loads `module` (or a submodule of it). */
export function loads(ctx: Ctx, module: string): boolean {
  return ctx.imports.bindings.some((b) => b.loads !== undefined && ctx.imports.statements[b.stmt]?.topLevel && (b.loads === module || b.loads.startsWith(`${module}.`)));
}

/**
 * How to spell the torch module: the local bound by `import torch` (or `import torch
 * as th`), else `torch` with `import torch` to add.
 */
export function torchName(ctx: Ctx): { name: string; add?: string } {
  const local = localFor(ctx, 'torch');
  if (local) return { name: local };
  return { name: 'torch', add: 'import torch' };
}

/**
 * How to spell `torch.nn.functional.<fn>` the way the file already does: a bare import
 * of the function, else the shortest module alias (`F`, `nn.functional`, `torch.nn.functional`),
 * else `F` with `import torch.nn.functional as F` to add (or `torch.nn.functional` with
 * `import torch` when `F` means something else here).
 */
export function functionalName(ctx: Ctx, fn: string): { name: string; add?: string } {
  const q = `torch.nn.functional.${fn}`;
  const bare = localFor(ctx, q);
  if (bare) return { name: bare };
  const candidates: string[] = [];
  for (const b of ctx.imports.bindings) {
    const s = ctx.imports.statements[b.stmt];
    if (b.star || !s?.topLevel) continue;
    if (b.loads === undefined && b.target === 'torch.nn.functional') candidates.push(`${b.local}.${fn}`);
    else if (b.loads === undefined && b.target === 'torch.nn') candidates.push(`${b.local}.functional.${fn}`);
    else if (b.local === 'torch' && b.loads !== undefined) candidates.push(`torch.nn.functional.${fn}`);
    else if (b.loads === undefined && b.target === 'torch') candidates.push(`${b.local}.nn.functional.${fn}`);
  }
  candidates.sort((a, b) => a.length - b.length);
  if (candidates[0]) return { name: candidates[0] };
  const bound = ctx.imports.bindings.some((b) => b.local === 'F');
  if (!bound) return { name: `F.${fn}`, add: 'import torch.nn.functional as F' };
  return { name: `torch.nn.functional.${fn}`, add: 'import torch' };
}

/** The indentation unit between a block header and its body (`    `), or undefined when they do not nest textually. */
export function indentUnit(header: Stmt, body: Stmt): string | undefined {
  if (!body.indent.startsWith(header.indent) || body.indent.length <= header.indent.length) return undefined;
  return body.indent.slice(header.indent.length);
}

/** Code text of a statement with whitespace and comments squeezed out, shortened for messages. */
export function shortText(ctx: Ctx, s: Stmt, max = 60): string {
  let out = '';
  for (const tok of tokensIn(ctx.root, s.start, s.end)) {
    const w = tok.text;
    const op = isPunctuation(tok);
    // One space around words, none around punctuation: readable without the layout.
    if (out && /\w$/.test(out) && /^\w/.test(w)) out += ' ';
    else if (out && op && /^(=|==|@|\*|\/|\+|-)$/.test(w)) out += ' ';
    out += w;
    if (op && /^(=|==|@|\*|\/|\+|-|,)$/.test(w)) out += ' ';
  }
  out = out.replace(/ +/g, ' ').replace(/\( /g, '(').replace(/ \)/g, ')').trim();
  return out.length > max ? `${out.slice(0, max - 1)}…` : out;
}

export function skipAt(s: Stmt, code: LeverSkipCode, reason: string, first = s.startLine, last = s.endLine): Found {
  return { first, last, line: s.startLine, skip: { code, reason } };
}

/**
 * The condition of an `if`/`elif` header as written: `self.flash` for `if self.flash:`,
 * undefined for anything that is not a plain flag, call or `not` of one.
 */
function plainCondition(h: Stmt): { text: string; negated: boolean } | undefined {
  let cond = h.header ? h.node.childForFieldName('condition') : null;
  let negated = false;
  if (cond?.type === 'not_operator') {
    negated = true;
    cond = cond.childForFieldName('argument');
  }
  if (!cond) return undefined;
  // A dotted name, optionally called (`hasattr(F, "scaled_dot_product_attention")`).
  const text = cond.text;
  if (!/^[A-Za-z_][\w.]*(\(.*\))?$/s.test(text)) return undefined;
  return { text, negated };
}

/**
 * `s` runs only where a fused feature is missing (returns the branch, as written for a message): inside `else:` of `if <feature>:` or inside
 * `if not <feature>:`, where `feature` names it (`FEATURE`: SDPA, flash, fused attention, ...).
 */
export function inFallbackBranch(ctx: Ctx, s: Stmt, feature: RegExp): string | undefined {
  const st = ctx.st;
  for (let p = s.parent; p >= 0; p = (itemAt(st.stmts, p)).parent) {
    const h = itemAt(st.stmts, p);
    if (h.head === 'def' || h.head === 'class') return undefined;
    if (h.head === 'if' || h.head === 'elif') {
      const c = plainCondition(h);
      if (c?.negated && feature.test(c.text)) return `if not ${c.text}:`;
    }
    if (h.head === 'else') {
      const sibs = st.children.get(h.parent) ?? [];
      const prev = sibs[h.sibling - 1];
      // Only `if <feature>: ... else:`; an `elif` chain tests other things too.
      if (prev?.head === 'if') {
        const c = plainCondition(prev);
        if (c && !c.negated && feature.test(c.text)) return `else:\` of \`if ${c.text}:`;
      }
    }
  }
  return undefined;
}
