/**
 * The memory advisor's rewrites: the big levers applied where the rewrite is local
 * and keeps the maths, and advice (text and a docs link, never an edit) where it
 * cannot be shown to.
 *
 *   sdpa        eager attention → scaled_dot_product_attention; HF "eager" → "sdpa"   (leverSdpa.ts)
 *   checkpoint  a loop over the blocks → checkpoint each block; HF gradient_checkpointing_enable()  (leverCheckpoint.ts)
 *   autocast    the forward and loss of a training step under bf16 autocast   (leverAutocast.ts)
 *   fused optimizer, materialised padding masks: advice only ({@link ADVICE})
 *
 * Every rewrite matches its pattern exactly; a pattern that is recognised but differs
 * (an extra op, a mask that is not provably causal, weights returned to the caller)
 * is reported in `skipped` with the reason, and nothing is edited there. Functions of
 * the text alone, like the rest of the rewriter, read through tree-sitter's syntax tree;
 * they never throw (a failure, even loading the grammar, is reported as a skip).
 */
import { BERT_LARGE_SDPA, describeMeasured } from '../advice/measured';
import { applyEdits, type OffsetEdit, type TextEdit, toTextEdits } from './edits';
import { importAnchor } from './imports';
import { findAutocast } from './leverAutocast';
import { findCheckpoint } from './leverCheckpoint';
import { type Ctx, context, type Found, type LeverForm, type LeverSkipCode } from './leverCommon';
import { withRevertRecords } from './leverRecord';
import { findSdpa } from './leverSdpa';
import { lineEnd } from './lines';
import { stringAcross, withTree } from './syntax';

export type { LeverForm, LeverSkipCode } from './leverCommon';

export type Lever = 'sdpa' | 'checkpoint' | 'autocast';

export const LEVERS: readonly Lever[] = ['sdpa', 'checkpoint', 'autocast'];

export interface LeverSkip {
  /** 0-based line of the statement the pattern was recognised at. */
  line: number;
  reason: string;
  code: LeverSkipCode;
}

/** One place the lever was applied. */
export interface LeverChange {
  /** 0-based line (of the original text) the change is reported at: the softmax, the loop, the backward. */
  line: number;
  /** First and last 0-based lines of the original text the pattern covered. */
  first: number;
  last: number;
  form: LeverForm;
  description: string;
}

export interface LeverResult {
  /** The text with the edits applied (the input when nothing applied). */
  text: string;
  /** Sorted, non-overlapping edits against the input text: apply them together, as one WorkspaceEdit. */
  edits: TextEdit[];
  /** How many places were rewritten. */
  applied: number;
  skipped: LeverSkip[];
  changes: LeverChange[];
  /** Import lines added. */
  imports: string[];
}

export interface LeverOptions {
  /** 0-based line: apply only the pattern that covers it. Undefined: everywhere it provably applies. */
  line?: number;
  /**
   * Allow `scale=` in scaled_dot_product_attention calls (torch >= 2.1) for attention
   * whose scale is not the default 1/sqrt(head dim). Off by default: such attention is
   * skipped with the reason.
   */
  scaleKwarg?: boolean;
}

function finder(lever: Lever): (ctx: Ctx) => Found[] {
  return lever === 'sdpa' ? findSdpa : lever === 'checkpoint' ? findCheckpoint : findAutocast;
}

const NOTHING: Record<Lever, string> = {
  sdpa: 'no eager attention (scores, softmax, @ v) and no attn_implementation="eager" here',
  checkpoint: 'no `for block in self.<blocks>:` loop and no transformers model built here',
  autocast: 'no `loss.backward()` of a training loop here',
};

function unchanged(text: string, skipped: LeverSkip[]): LeverResult {
  return { text, edits: [], applied: 0, skipped, changes: [], imports: [] };
}

/**
 * Apply one lever at `line` (0-based), or everywhere it provably applies when line is
 * undefined. Asynchronous only because the Python grammar loads once, on first use.
 */
export async function applyLever(text: string, lever: Lever, opts?: LeverOptions): Promise<LeverResult> {
  const line = opts?.line;
  try {
    return await withTree(text, (root) => apply(context(text, root, opts?.scaleKwarg === true), lever, line));
  } catch (e) {
    return failed(text, line, e);
  }
}

/**
 * Every lever at one line, from one analysis of the text: what the editor asks on
 * each cursor move to decide which actions to offer.
 */
export async function leversAt(text: string, line: number, opts?: Omit<LeverOptions, 'line'>): Promise<Record<Lever, LeverResult>> {
  try {
    return await withTree(text, (root) => {
      let ctx: Ctx | undefined;
      try {
        ctx = context(text, root, opts?.scaleKwarg === true);
      } catch (e) {
        const r = failed(text, line, e);
        return { sdpa: r, checkpoint: r, autocast: r };
      }
      const one = (lever: Lever): LeverResult => {
        try {
          return apply(ctx, lever, line);
        } catch (e) {
          return failed(text, line, e);
        }
      };
      return { sdpa: one('sdpa'), checkpoint: one('checkpoint'), autocast: one('autocast') };
    });
  } catch (e) {
    const r = failed(text, line, e);
    return { sdpa: r, checkpoint: r, autocast: r };
  }
}

/** A bug in a rewrite must not cost the user anything: it becomes a skip and nothing is edited. */
function failed(text: string, line: number | undefined, e: unknown): LeverResult {
  return unchanged(text, [{ line: line ?? 0, code: 'internal-error', reason: `internal error, nothing changed: ${e instanceof Error ? e.message : String(e)}` }]);
}

function apply(ctx: Ctx, lever: Lever, line: number | undefined): LeverResult {
  const text = ctx.text;
  let found = finder(lever)(ctx);
  if (line !== undefined) {
    found = found.filter((f) => f.first <= line && line <= f.last);
    // The innermost pattern at the line wins (a chain inside a larger one cannot happen; keep the first otherwise).
    found.sort((a, b) => a.last - a.first - (b.last - b.first));
    found = found.slice(0, 1);
    if (found.length === 0) return unchanged(text, [{ line, code: 'no-pattern', reason: `line ${line + 1}: ${NOTHING[lever]}` }]);
  }
  const skipped: LeverSkip[] = [];
  const changes: LeverChange[] = [];
  const accepted: OffsetEdit[] = [];
  const imports: string[] = [];
  const useLines: number[] = [];
  for (const f of [...found].sort((a, b) => a.first - b.first || a.line - b.line)) {
    if (f.skip || !f.edits) {
      if (f.skip) skipped.push({ line: f.line, code: f.skip.code, reason: f.skip.reason });
      continue;
    }
    const clash = f.edits.some((e) => accepted.some((a) => e.start < a.end && a.start < e.end));
    if (clash) {
      skipped.push({ line: f.line, code: 'extra-statement', reason: 'overlaps another rewrite of this lever: apply that one first' });
      continue;
    }
    // A rewrite with edits always names its form; without one it is a bug, and `one` turns it into a skip.
    const { form } = f;
    if (!form) throw new Error(`the ${lever} rewrite at line ${f.line + 1} names no form`);
    accepted.push(...f.edits);
    for (const i of f.imports ?? []) if (!imports.includes(i)) imports.push(i);
    useLines.push(f.first);
    changes.push({ line: f.line, first: f.first, last: f.last, form, description: f.description ?? '' });
  }
  if (changes.length === 0) return unchanged(text, skipped);
  if (imports.length) accepted.push(importInsertion(ctx, imports, useLines));
  // The replaced lines stay in the file as a comment record, so --revert restores them exactly.
  const records = withRevertRecords(text, ctx.lineStarts, accepted, lever, ctx.eol, (at) => stringAcross(ctx.root, at));
  const edits = toTextEdits(text, records, ctx.lineStarts);
  return { text: applyEdits(text, edits), edits, applied: changes.length, skipped, changes, imports };
}

/** Import lines go where Membit's other imports go: after the file's torch imports. */
function importInsertion(ctx: Ctx, lines: readonly string[], useLines: readonly number[]): OffsetEdit {
  const anchor = importAnchor(ctx.t, ctx.imports, useLines);
  if (anchor.afterLine < 0) return { start: 0, end: 0, newText: lines.map((l) => l + ctx.eol).join('') };
  const at = lineEnd(ctx.text, ctx.lineStarts, anchor.afterLine);
  return { start: at, end: at, newText: lines.map((l) => ctx.eol + l).join('') };
}

/** Titles of the editor's actions, by what the rewrite does. */
export const LEVER_TITLES: Record<LeverForm, string> = {
  'sdpa-chain': 'Use fused attention (scaled_dot_product_attention)',
  'hf-sdpa': 'Use SDPA attention (attn_implementation="sdpa")',
  'checkpoint-loop': 'Checkpoint each block (recompute activations in backward)',
  'hf-checkpoint': 'Checkpoint each block (recompute activations in backward)',
  autocast: 'Train the forward in bf16 autocast',
};

/** What the advisor says about a lever, for hovers and the "explain" actions. */
export interface LeverAdvice {
  title: string;
  /** Why it saves memory, when it applies, and why (for advice-only levers) Membit does not edit it. */
  text: string;
  docs: string;
}

export type AdviceTopic = 'sdpa' | 'is-causal' | 'padding-mask' | 'checkpoint' | 'autocast' | 'fused-optimizer';

/** Markdown's special characters escaped, for text that comes from the user's code. */
function mdEscape(s: string): string {
  return s.replace(/[\\`*_{}[\]()#+\-.!<>|~]/g, (c) => `\\${c}`);
}

/**
 * A lever's advice as a Markdown page (for a preview beside the code, not a toast): what
 * it does, why Membit left this site alone, and the docs.
 */
export function adviceMarkdown(topic: AdviceTopic, reason: string | undefined, docs: string, where?: string): string {
  const a = ADVICE[topic];
  const out = [`# ${a.title}`, ''];
  if (where) out.push(`*${mdEscape(where)}*`, '');
  // The advice is one paragraph of sentences; a line each reads better in a narrow preview.
  out.push(...a.text.split(/(?<=\.) (?=[A-Z])/).map((s) => `${s}  `), '');
  if (reason) out.push('## Why Membit did not rewrite it here', '', mdEscape(reason.replace(/\.$/, '')) + '.', '');
  out.push('## Read more', '', `[${docs}](${docs})`, '');
  return out.join('\n');
}

export const ADVICE: Record<AdviceTopic, LeverAdvice> = {
  sdpa: {
    title: 'Fused attention (scaled_dot_product_attention)',
    text:
      'Eager attention keeps the B·H·L² attention probabilities (and a dropout mask of the same size) for backward; ' +
      'F.scaled_dot_product_attention recomputes them blockwise and keeps only O(B·H·L) statistics. Eager → SDPA, ' +
      `${describeMeasured(BERT_LARGE_SDPA)}. The result equals eager attention up to ` +
      'floating-point rounding; with dropout on, SDPA draws its own mask.',
    docs: 'https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html',
  },
  'is-causal': {
    title: 'Causal mask without a materialised L×L tensor',
    text:
      'A tril(ones(L, L)) buffer used through masked_fill costs L² elements plus a masked copy of the scores. ' +
      'scaled_dot_product_attention(..., is_causal=True) applies the same mask inside the kernel. Membit rewrites the whole ' +
      'eager chain when the buffer is provably causal and the query and key lengths are equal; otherwise it only advises.',
    docs: 'https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html',
  },
  'padding-mask': {
    title: 'Materialised padding masks',
    text:
      'An expanded [B, 1, L, L] padding mask holds B·L² elements. Passing the [B, 1, 1, L] boolean key mask to ' +
      'scaled_dot_product_attention (it broadcasts over queries), or packing sequences without padding, avoids it. ' +
      'Membit does not edit this: what the mask means depends on the code that builds and consumes it.',
    docs: 'https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html',
  },
  checkpoint: {
    title: 'Activation checkpointing',
    text:
      'Checkpointing a block keeps only its input and recomputes its activations during backward: activation memory ' +
      'drops to about one block plus the block inputs, for roughly one extra forward of compute. Non-reentrant ' +
      'checkpointing restores the RNG state, so dropout masks and gradients are unchanged.',
    docs: 'https://pytorch.org/docs/stable/checkpoint.html',
  },
  autocast: {
    title: 'bf16 autocast',
    text:
      'Under torch.autocast(dtype=torch.bfloat16) matmuls and convolutions run in bf16 and save bf16 activations, half the ' +
      'bytes of float32; reductions and losses stay in float32. bf16 keeps float32\'s range, so no GradScaler is needed. ' +
      'Results change within bf16 rounding (Membit\'s proof tests bound it); backward and the optimizer step stay outside the block.',
    docs: 'https://pytorch.org/docs/stable/amp.html',
  },
  'fused-optimizer': {
    title: 'Fused optimizer step',
    text:
      'AdamW/Adam without fused= use the foreach implementation on CUDA, which builds temporary lists as large as the ' +
      'parameters during step(); fused=True updates in one kernel without those temporaries (and faster). Membit does not ' +
      'edit it: fused=True needs every parameter on CUDA (or a supported device) in a floating dtype when the optimizer is built, ' +
      'and the file alone cannot show that.',
    docs: 'https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html',
  },
};
