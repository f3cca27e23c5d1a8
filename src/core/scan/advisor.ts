/**
 * The memory advisor: levers larger than packing dropout masks. Eager attention
 * (→ fused SDPA), training without mixed precision (→ bf16 autocast), block loops
 * without activation checkpointing, Adam/AdamW without `fused=`/`foreach=`.
 * What each lever saves is worked out in levers.ts; here, where it applies.
 */
import type { Env, FileAdvice, GCall, PlacedChunk, ScopeNames } from './context';
import type { AttnChainFact, BackwardFact, LoopFact } from './factTypes';
import { eagerAttnAdvice } from './levers';
import { FUSED_ATTENTION, SDPA } from './names';
import type { ShapeContext } from './shapes';
import { abs } from './sites';
import type { Advice, AttentionInfo, Estimate, Site, SiteArgs, SiteRange } from './types';

const FRAMEWORKS = /^(accelerate|lightning|pytorch_lightning|lightning_fabric|deepspeed|colossalai)(\.|$)/;

export function fileAdvice(chunks: readonly PlacedChunk[], importTargets: readonly string[]): FileAdvice {
  const out: FileAdvice = { dispatch: false, eager: false };
  for (const { facts, baseRow } of chunks) {
    const a = facts.advice;
    if (!out.amp && a.amp[0]) out.amp = { what: a.amp[0].what, line: a.amp[0].row + baseRow };
    if (!out.ckpt && a.ckpt[0]) out.ckpt = { what: a.ckpt[0].what, line: a.ckpt[0].row + baseRow };
    if (!out.compiled && a.compile[0]) out.compiled = { what: a.compile[0].what, line: a.compile[0].row + baseRow };
    if (a.dispatch) out.dispatch = true;
    if (a.chains.some((c) => c.outputRow !== undefined && c.scoresRow !== undefined)) out.eager = true;
  }
  const fw = importTargets.find((t) => FRAMEWORKS.test(t));
  if (fw) out.framework = fw.split('.')[0] as string;
  return out;
}

/** The part of the file's advice that changes analysis results (part of the cache key). */
export function fileAdviceKey(f: FileAdvice): unknown[] {
  return [!!f.amp, !!f.ckpt, f.dispatch, f.framework ?? '', f.eager, f.compiled?.line ?? -1];
}

const isZero = (p: string | undefined) => p !== undefined && /^0*\.?0*$/.test(p.trim()) && p.trim() !== '.';

export interface AdvisorSiteParts {
  file: string;
  range: SiteRange;
  kind: Site['kind'];
  form: Site['form'];
  names: ScopeNames;
  callee: string;
  resolved: string | null;
  args: SiteArgs;
  estimate: Estimate;
  advice: Advice;
  attention?: AttentionInfo;
  remedy: string;
  binding?: string;
}

export function advisorSite(p: AdvisorSiteParts, message: (s: Site) => string): Site {
  const site: Site = {
    file: p.file,
    range: p.range,
    kind: p.kind,
    form: p.form,
    className: p.names.className,
    funcName: p.names.funcName,
    args: p.args,
    callee: p.callee,
    resolved: p.resolved,
    estimate: p.estimate,
    message: '',
    code: `membit.${p.kind}`,
    advice: p.advice,
    remedy: p.remedy,
  };
  if (p.attention) site.attention = p.attention;
  if (p.binding) site.binding = p.binding;
  site.message = message(site);
  return site;
}

// ---------------------------------------------------------------------------
// Eager attention.

export interface ChainInGroup {
  chain: AttnChainFact;
  baseRow: number;
  names: ScopeNames;
}

/** Eager attention chains of a group that are sites: confirmed, complete, and not a fallback of a fused path. */
export function eagerChains(
  chains: readonly ChainInGroup[],
  calls: readonly GCall[],
  env: Env,
  softmaxMembers: ReadonlySet<string>,
): ChainInGroup[] {
  const fusedFuncs = new Set<string>();
  const fusedClasses = new Set<string>();
  for (const g of calls) {
    const q = g.res.qname;
    const f = FUSED_ATTENTION.get(g.res.final);
    if (q === SDPA || (f && q && (q.startsWith(f.module) || g.res.binding === 'unbound'))) {
      if (g.funcKey) fusedFuncs.add(g.funcKey);
      if (g.classKey) fusedClasses.add(g.classKey);
    }
  }
  return chains.filter(({ chain, names }) => {
    if (chain.outputRow === undefined || chain.scoresRow === undefined) return false;
    // Talking heads: SDPA attends each head on its own and cannot mix them.
    if (chain.headsMixed) return false;
    if (chain.via && !softmaxMembers.has(`${names.classKey}|${chain.via}`)) return false;
    // A fused path next to this one (nanoGPT's `if self.flash`), in the function or its class: the eager one is the fallback.
    if ((names.funcKey && fusedFuncs.has(names.funcKey)) || (names.classKey && fusedClasses.has(names.classKey))) return false;
    // HF modeling code: `eager_attention_forward` is one of the implementations a config picks from.
    if (env.advice.dispatch || /^eager/i.test(names.funcName ?? '')) return false;
    return true;
  });
}

export function eagerBlockSite(file: string, c: ChainInGroup, env: Env, ctx: ShapeContext, message: (s: Site) => string): Site {
  const { chain, baseRow, names } = c;
  const row = (r: number | undefined) => (r === undefined ? undefined : r + baseRow);
  const dropout = chain.dropoutRow !== undefined && !isZero(chain.dropoutP);
  const softmaxLine = chain.pos.sr + baseRow;
  const attention: AttentionInfo = { form: 'eager-block', softmaxLine };
  const put = (k: 'scoresLine' | 'maskLine' | 'dropoutLine' | 'outputLine', v: number | undefined) => {
    if (v !== undefined) attention[k] = v;
  };
  put('scoresLine', row(chain.scoresRow));
  put('maskLine', row(chain.maskRow));
  put('dropoutLine', row(chain.dropoutRow));
  put('outputLine', row(chain.outputRow));
  if (names.funcName) attention.funcName = names.funcName;
  const { estimate, advice } = eagerAttnAdvice(env, ctx, { softmaxLine, dropoutLine: attention.dropoutLine, outputLine: attention.outputLine, dropout, form: 'eager-block' });
  const args: SiteArgs = {};
  const params = ['input', 'dim'];
  chain.args.forEach((a, i) => {
    const eq = /^([A-Za-z_]\w*)\s*=(?!=)\s*([\s\S]*)$/.exec(a);
    if (eq) args[eq[1] as string] = eq[2] as string;
    else args[params[i] ?? `arg${i}`] = a;
  });
  return advisorSite(
    {
      file,
      range: abs(chain.pos, baseRow),
      kind: 'eager-attn',
      form: 'call',
      names,
      callee: chain.callee,
      resolved: null,
      args,
      estimate,
      advice,
      attention,
      remedy: advice.unavailable
        ? `Fused attention is not available: ${advice.unavailable}.`
        : `F.scaled_dot_product_attention computes the same in a fused kernel that keeps none of this${dropout ? ', and its dropout needs no mask: packing this attention dropout becomes moot' : ''}.`,
    },
    message,
  );
}

// ---------------------------------------------------------------------------
// Activation checkpointing.

/** Leaf layers: a list of these is not a list of blocks. */
const LEAF_ITEMS = /^\[\s*(nn|torch\.nn)\.(Linear|Conv\w*|LayerNorm|RMSNorm|GroupNorm|BatchNorm\w*|Dropout\w*|Embedding|ReLU|GELU|SiLU|Identity)\(/;

export interface LoopInGroup {
  loop: LoopFact;
  ci: number;
  baseRow: number;
  names: ScopeNames;
}

/** The block loops of a group that checkpointing would cover: `for block in self.<list>` in `forward`. */
export function checkpointLoops(loops: readonly LoopInGroup[], calls: readonly GCall[], env: Env): { l: LoopInGroup; list: GCall }[] {
  if (env.advice.ckpt || env.advice.framework === 'deepspeed') return [];
  const out: { l: LoopInGroup; list: GCall }[] = [];
  for (const l of loops) {
    if (l.names.funcName !== 'forward' || !l.names.classKey || !l.loop.iter.startsWith('self.')) continue;
    const iterLast = l.loop.iter.slice(l.loop.iter.lastIndexOf('.') + 1);
    const list = calls.find((g) => {
      if (g.classKey !== l.names.classKey || !g.f.detailed) return false;
      const q = g.res.qname ?? '';
      if (!/(^|\.)(ModuleList|Sequential)$/.test(q) || !(q.startsWith('torch.nn') || g.res.binding === 'fallback')) return false;
      if (g.f.binding === l.loop.iter) return true;
      return !!g.f.kwKey && g.f.kwKey === iterLast && l.loop.iter.split('.').length > 2;
    });
    if (!list) continue;
    if (LEAF_ITEMS.test(list.f.args[0]?.text ?? '')) continue;
    const body = calls.some((g) => g.chunk === l.ci && g.f.si > l.loop.si && g.f.ei <= l.loop.ei && l.loop.targets.includes(g.f.callee));
    if (!body) continue;
    out.push({ l, list });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Optimizers.

export const OPTIMIZERS = new Set(['torch.optim.AdamW', 'torch.optim.Adam', 'torch.optim.adamw.AdamW', 'torch.optim.adam.Adam']);

/** A `.backward()` on a loss: the training step of the file. */
export function isLossBackward(b: BackwardFact): boolean {
  return /loss/i.test(b.receiver) && !/scale\(/.test(b.receiver);
}

