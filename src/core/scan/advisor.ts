/**
 * The memory advisor: levers larger than packing dropout masks. Eager attention
 * (→ fused SDPA), training without mixed precision (→ bf16 autocast), block loops
 * without activation checkpointing, Adam/AdamW without `fused=`/`foreach=`.
 *
 * It runs last in each group, over the sites the other passes found (an attention dropout
 * next to eager attention says to switch first), and once over the whole file for the
 * training step and HF models. What each lever saves is worked out in levers.ts.
 */
import { BERT_LARGE_SDPA, describeMeasured } from '../advice/measured';
import { argMap, clipArg } from './args';
import type { ClassHeader, Env, FileAdvice, GCall, Group, PlacedChunk, ScopeNames } from './context';
import type { AttnChainFact, AttnImplFact, BackwardFact, CallFact, EagerLiteralFact, LoopFact } from './factTypes';
import { siteMessage } from './format';
import { applyCapabilities, autocastAdvice, checkpointAdvice, DOCS, eagerAttnAdvice, optimizerAdvice } from './levers';
import { FUSED_ATTENTION, SDPA } from './names';
import { ShapeContext } from './shapes';
import { abs, scopeNames } from './sites';
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
  if (fw) out.framework = fw.split('.')[0] ?? fw;
  return out;
}

/** The part of the file's advice that changes analysis results (part of the cache key). */
export function fileAdviceKey(f: FileAdvice): unknown[] {
  return [!!f.amp, !!f.ckpt, f.dispatch, f.framework ?? '', f.eager, f.compiled?.line ?? -1];
}

// ---------------------------------------------------------------------------
// In each group.

/**
 * The advisor's findings inside one group: eager attention chains, block loops
 * without checkpointing, Adam/AdamW without fused=/foreach=; and the advice on the
 * group's attention masks. Rows are relative to the group, like every group site.
 */
export function adviseGroup(group: Group, softmaxMembers: ReadonlySet<string>): void {
  const { file, chunks, header, base: groupBase, env, shapes: ctx, calls, sites } = group;
  const caps = env.opts.capabilities;
  const message = (s: Site) => siteMessage(s, caps ?? null);
  const chains: ChainInGroup[] = [];
  const loops: LoopInGroup[] = [];
  chunks.forEach((c, ci) => {
    const baseRow = c.baseRow - groupBase;
    const hn = c.context >= 0 && header ? header.name : null;
    for (const chain of c.facts.advice.chains) chains.push({ chain, baseRow, names: scopeNames(c.facts.defs, chain.scope, ci, hn) });
    for (const loop of c.facts.advice.loops) loops.push({ loop, ci, baseRow, names: scopeNames(c.facts.defs, loop.scope, ci, hn) });
  });

  const eager: Site[] = [];
  for (const c of eagerChains(chains, calls, env, softmaxMembers)) {
    const site = eagerBlockSite(file, c, env, ctx, message);
    sites.push(site);
    eager.push(site);
  }
  // The 40% lever before the 6% one: an attention dropout next to eager attention says so.
  for (const s of sites) {
    if (s.kind !== 'attn-dropout' || s.remedy) continue;
    const e = eager.find((x) => (s.className !== null ? x.className === s.className : x.funcName === s.funcName) && !x.advice?.unavailable);
    if (!e) continue;
    s.remedy = 'Fused attention removes this mask altogether (see the eager-attn finding in the same code): switch to it before packing.';
    s.message = message(s);
  }
  // Under torch.compile packing works differently (plain ops Inductor fuses): the finding says
  // what was measured there. The evidence line is file-absolute; sites here are group-relative.
  const compiled = env.advice.compiled;
  if (compiled) {
    for (const s of sites) {
      if (s.kind !== 'dropout' && s.kind !== 'dropout-call' && s.kind !== 'attn-dropout') continue;
      s.compiled = { what: compiled.what, line: compiled.line };
      s.message = message(s);
    }
  }

  for (const { l, list } of checkpointLoops(loops, calls, env)) {
    const { estimate, advice } = checkpointAdvice(env, ctx, { line: list.range.startLine + groupBase + 1 });
    sites.push(
      advisorSite(
        {
          file,
          range: abs(l.loop.pos, l.baseRow),
          kind: 'checkpoint',
          form: 'call',
          names: l.names,
          callee: 'for',
          resolved: null,
          args: { target: clipArg(l.loop.targets.join(', ')), iter: clipArg(l.loop.iter) },
          binding: l.loop.iter,
          estimate,
          advice,
          remedy: advice.unavailable
            ? `Activation checkpointing is not available: ${advice.unavailable}.`
            : `Call each block through torch.utils.checkpoint.checkpoint(${l.loop.targets[l.loop.targets.length - 1] ?? 'block'}, ..., use_reentrant=False) while training: it keeps only the block's input and recomputes the rest in backward.`,
        },
        message,
      ),
    );
  }

  for (const g of calls) {
    if (!g.f.detailed || !OPTIMIZERS.has(g.res.qname ?? '')) continue;
    // `**kwargs` may carry fused=True (nanoGPT's configure_optimizers does).
    if (g.f.args.some((a) => a.name === 'fused' || a.name === 'foreach' || a.name === '**')) continue;
    const o = optimizerAdvice(env, ctx);
    if (o.stateBytes !== undefined) o.estimate.stateBytes = o.stateBytes;
    const flag = o.advice.requires?.includes('adamw-foreach') ? 'foreach=True' : 'fused=True';
    const site = advisorSite(
      {
        file,
        range: g.range,
        kind: 'optimizer',
        form: 'construct',
        names: g,
        callee: g.f.callee,
        resolved: g.res.qname,
        args: argMap(g.f, ['params', 'lr', 'betas', 'eps', 'weight_decay', 'amsgrad']),
        estimate: o.estimate,
        advice: o.advice,
        remedy: o.advice.unavailable
          ? `Neither fused nor foreach AdamW is available: ${o.advice.unavailable}.`
          : `${flag} runs the update as a few large kernels: a faster step with fewer temporaries; the state keeps its size. Several GPUs: sharding the state (ZeRO, FSDP) divides it by their number.`,
      },
      message,
    );
    if (g.f.binding) site.binding = g.f.binding;
    sites.push(site);
  }

  // Attention masks: the fused alternative is a lever too, and needs a torch that has it.
  for (const s of sites) {
    if (s.kind !== 'attn-mask') continue;
    const causal = s.remedy?.startsWith('Pass is_causal') ?? false;
    const advice: Advice = { lever: causal ? 'is-causal' : 'sdpa', basis: s.estimate.source === 'report' ? 'measured' : 'estimate', requires: [causal ? 'is-causal' : 'sdpa'], docs: DOCS.sdpa };
    if (s.estimate.maskBytes !== undefined) advice.savingBytes = s.estimate.maskBytes;
    applyCapabilities(advice, caps);
    s.advice = advice;
    if (advice.unavailable) {
      s.remedy = `${causal ? 'is_causal=True' : 'Fused masking'} would remove it, but ${advice.unavailable}.`;
      s.message = message(s);
    }
  }
}

const isZero = (p: string | undefined) => p !== undefined && /^0*\.?0*$/.test(p.trim()) && p.trim() !== '.';

interface AdvisorSiteParts {
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

function advisorSite(p: AdvisorSiteParts, message: (s: Site) => string): Site {
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

interface ChainInGroup {
  chain: AttnChainFact;
  baseRow: number;
  names: ScopeNames;
}

/** Eager attention chains of a group that are sites: confirmed, complete, and not a fallback of a fused path. */
function eagerChains(
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

function eagerBlockSite(file: string, c: ChainInGroup, env: Env, ctx: ShapeContext, message: (s: Site) => string): Site {
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
  // Splats take a positional's place, as written.
  chain.args.forEach((a, i) => {
    if (a.name !== null && a.name !== '*' && a.name !== '**') args[a.name] = a.text;
    else args[params[i] ?? `arg${i}`] = a.text;
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

/** Leaf layers: a list of these is not a list of blocks. */
const LEAF_ITEMS = /^\[\s*(nn|torch\.nn)\.(Linear|Conv\w*|LayerNorm|RMSNorm|GroupNorm|BatchNorm\w*|Dropout\w*|Embedding|ReLU|GELU|SiLU|Identity)\(/;

interface LoopInGroup {
  loop: LoopFact;
  ci: number;
  baseRow: number;
  names: ScopeNames;
}

/** The block loops of a group that checkpointing would cover: `for block in self.<list>` in `forward`. */
function checkpointLoops(loops: readonly LoopInGroup[], calls: readonly GCall[], env: Env): { l: LoopInGroup; list: GCall }[] {
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

/** Adam and AdamW: the optimizers the fused-optimizer lever covers. */
const OPTIMIZERS = new Set(['torch.optim.AdamW', 'torch.optim.Adam', 'torch.optim.adamw.AdamW', 'torch.optim.adam.Adam']);

// ---------------------------------------------------------------------------
// File-wide.

const HF_BUILDERS = new Set(['from_pretrained', '_from_config', 'from_config']);
const NOT_MODELS = /Tokenizer|Config|Processor|Extractor|Pipeline|Dataset|Scheduler/;
const EAGER_LITERAL = /^[rRuU]?["']eager["']$/;

/**
 * The advisor's file-wide findings: the training step without mixed precision, HF
 * models built with eager attention or trained without gradient checkpointing.
 * Computed on every scan from the chunks' facts (cheap: a few short lists).
 */
export function adviseFile(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], env: Env): Site[] {
  const out: Site[] = [];
  const caps = env.opts.capabilities;
  const message = (s: Site) => siteMessage(s, caps ?? null);
  const ctx = new ShapeContext(env.opts.shapes ?? {}, env.config, env.opts.hints, 0);
  interface At<T> {
    fact: T;
    baseRow: number;
    names: ScopeNames;
  }
  const backs: At<BackwardFact>[] = [];
  const impls: At<AttnImplFact>[] = [];
  const eagerLits: At<EagerLiteralFact>[] = [];
  const builds: At<CallFact>[] = [];
  const modelNames = new Set<string>();
  const called: string[] = [];
  const hfTrainer = chunks.some((c) => c.facts.calls.some((f) => /^(Trainer|SFTTrainer|Seq2SeqTrainer)$/.test(f.final)));
  const localClasses = new Set(env.classes.map((c) => c.name));
  chunks.forEach((c, ci) => {
    const hn = c.context >= 0 ? (headers[c.context]?.name ?? null) : null;
    const a = c.facts.advice;
    const at = <T extends { scope: number }>(fact: T): At<T> => ({ fact, baseRow: c.baseRow, names: scopeNames(c.facts.defs, fact.scope, ci, hn) });
    for (const b of a.backward) backs.push(at(b));
    for (const i of a.attnImpl) impls.push(at(i));
    for (const e of a.eager) eagerLits.push({ fact: e, baseRow: c.baseRow, names: scopeNames(c.facts.defs, -1, ci, hn) });
    for (const f of c.facts.calls) {
      called.push(f.callee);
      if (!f.detailed) continue;
      const res = env.resolver.resolve(f.callee, f.headLocal);
      const receiver = f.callee.slice(0, Math.max(0, f.callee.length - f.final.length - 1));
      const recvLast = receiver.slice(receiver.lastIndexOf('.') + 1);
      let model = false;
      if (HF_BUILDERS.has(f.final) && receiver && !NOT_MODELS.test(recvLast)) {
        model = true;
        const q = res.qname ?? '';
        if (q.startsWith('transformers.') || q.startsWith('peft.') || (!q.startsWith('<local>') && /^Auto|For[A-Z]|Model/.test(recvLast))) builds.push(at(f));
      } else if (res.qname?.startsWith('<local>.') && localClasses.has(res.final) && res.final === f.callee) model = true;
      else if (/^[A-Za-z_]\w*$/.test(f.callee) && /model/i.test(f.callee)) model = true;
      if (model && f.binding && /^(self\.)?[A-Za-z_]\w*$/.test(f.binding)) modelNames.add(f.binding);
    }
  });
  const forward = called.some((c) => modelNames.has(c) || /^(self\.)?(model|net|network)$/.test(c));
  const lossBack = backs.find((b) => isLossBackward(b.fact));

  // A training step in full fp32.
  if (!env.advice.amp && !env.advice.framework && lossBack && forward) {
    const { estimate, advice } = autocastAdvice(env, ctx);
    const b = lossBack;
    out.push(
      advisorSite(
        {
          file,
          range: abs(b.fact.pos, b.baseRow),
          kind: 'no-autocast',
          form: 'call',
          names: b.names,
          callee: `${b.fact.receiver.replace(/\s+/g, '')}.backward`,
          resolved: null,
          args: {},
          estimate,
          advice,
          remedy: advice.unavailable
            ? `Mixed precision is not available: ${advice.unavailable}.`
            : advice.requires?.includes('autocast-bf16-cpu')
              ? 'Run the forward pass and the loss under torch.autocast("cpu", dtype=torch.bfloat16) (this torch has no CUDA; on a GPU, "cuda"): most activations are then kept in 2 bytes instead of 4.'
              : 'Run the forward pass and the loss under torch.autocast("cuda", dtype=torch.bfloat16): most activations are then kept in 2 bytes instead of 4, and matmuls run on tensor cores.',
        },
        message,
      ),
    );
  }

  // HF models built with eager attention.
  const eagerSite = (range: SiteRange, names: At<unknown>['names'], callee: string, args: SiteArgs, attention: AttentionInfo, how: string) => {
    const { estimate, advice } = eagerAttnAdvice(env, ctx, { softmaxLine: -1, dropout: true, form: 'hf-eager' });
    out.push(
      advisorSite(
        {
          file,
          range,
          kind: 'eager-attn',
          form: 'call',
          names,
          callee,
          resolved: null,
          args,
          estimate,
          advice,
          attention,
          remedy: advice.unavailable
            ? `Fused attention is not available: ${advice.unavailable}.`
            : `${how}: the fused kernel keeps none of it (${describeMeasured(BERT_LARGE_SDPA)}).`,
        },
        message,
      ),
    );
  };
  for (const { fact, baseRow, names } of impls) {
    if (!HF_BUILDERS.has(fact.callee.slice(fact.callee.lastIndexOf('.') + 1)) && !fact.callee.endsWith('Config')) continue;
    const v = fact.value.trim();
    const range = abs(fact.pos, baseRow);
    if (EAGER_LITERAL.test(v)) {
      eagerSite(range, names, fact.callee, { attn_implementation: v }, { form: 'hf-eager', setting: 'attn_implementation' }, 'Pass attn_implementation="sdpa"');
      continue;
    }
    if (!/^[A-Za-z_][\w.]*$/.test(v)) continue;
    const last = v.slice(v.lastIndexOf('.') + 1);
    const def = eagerLits.find((e) => (e.fact.context === 'default' && e.fact.name === last) || (e.fact.context === 'assign' && e.fact.name === v));
    if (!def) continue;
    const defaultLine = def.fact.pos.sr + def.baseRow;
    eagerSite(
      range,
      names,
      fact.callee,
      { attn_implementation: v },
      { form: 'hf-eager', setting: 'attn_implementation', valueText: v, defaultLine },
      `\`${v}\` defaults to "eager" (line ${defaultLine + 1}); make "sdpa" the default`,
    );
  }
  for (const { fact, baseRow, names } of eagerLits) {
    if (fact.context !== 'assign' || !/(^|\.)_?attn_implementation$/.test(fact.name)) continue;
    eagerSite(abs(fact.pos, baseRow), names, fact.name, { value: '"eager"' }, { form: 'hf-eager', setting: fact.name }, 'Set it to "sdpa"');
  }

  // HF models trained without gradient checkpointing.
  if (!env.advice.ckpt && env.advice.framework !== 'deepspeed' && (lossBack || hfTrainer)) {
    for (const { fact, baseRow, names } of builds) {
      const range = abs(fact.pos, baseRow);
      const built = env.opts.hints?.modules?.some((m) => m.path === '' && m.createdLine === range.startLine + 1);
      const { estimate, advice } = checkpointAdvice(env, ctx, built ? {} : undefined);
      out.push(
        advisorSite(
          {
            file,
            range,
            kind: 'checkpoint',
            form: 'call',
            names,
            callee: fact.callee,
            resolved: env.resolver.resolve(fact.callee, fact.headLocal).qname,
            args: argMap(fact, ['pretrained_model_name_or_path']),
            ...(fact.binding ? { binding: fact.binding } : {}),
            estimate,
            advice,
            remedy: advice.unavailable
              ? `Activation checkpointing is not available: ${advice.unavailable}.`
              : `Call ${fact.binding ?? 'model'}.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False}) before training: each layer keeps only its input and recomputes the rest in backward.`,
          },
          message,
        ),
      );
    }
  }
  return out;
}

/** A `.backward()` on a loss: the training step of the file. */
function isLossBackward(b: BackwardFact): boolean {
  return /loss/i.test(b.receiver) && !b.receiver.includes('scale(');
}
