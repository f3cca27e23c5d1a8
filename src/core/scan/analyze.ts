/**
 * From chunk facts to sites. The file is analysed in groups (a top-level class with its
 * methods, or one top-level statement), each by passes in a fixed order over one shared
 * context (context.ts): dropouts and fused attention (classify.ts), attention masks
 * (masks.ts), FFNs (ffn.ts), then the advisor (advisor.ts), which reads what the others
 * found. FFNs split over two classes and the file-wide advice are found across groups.
 * Everything here is plain data; no tree is touched.
 */
import { BERT_LARGE_SDPA, describeMeasured } from '../advice/measured';
import {
  advisorSite,
  type ChainInGroup,
  checkpointLoops,
  eagerBlockSite,
  eagerChains,
  fileAdvice,
  fileAdviceKey,
  isLossBackward,
  type LoopInGroup,
  OPTIMIZERS,
} from './advisor';
import { argMap, clipArg } from './args';
import { findDropouts, softmaxMembers } from './classify';
import type { AnalyzeResult, ClassHeader, Env, Group, PlacedChunk, ScopeNames } from './context';
import type { AttnImplFact, BackwardFact, CallFact, DefFact, EagerLiteralFact } from './factTypes';
import { siteMessage } from './format';
import { applyCapabilities, autocastAdvice, checkpointAdvice, DOCS, eagerAttnAdvice, optimizerAdvice } from './levers';
import { findFfns, type LinearFact, splitFfns } from './ffn';
import { openGroup } from './group';
import { findMasks } from './masks';
import { type ImportFact, Resolver } from './names';
import { buildConfig, type RawConfig, ShapeContext } from './shapes';
import { abs, scopeNames, shiftSite } from './sites';
import type { Advice, AttentionInfo, ClassInfo, ScanOptions, Site, SiteArgs, SiteRange } from './types';

function buildEnv(chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions, hintsId: number, imported: readonly RawConfig[]): Env {
  const imports: ImportFact[] = [];
  const moduleBound = new Set<string>();
  const raw: RawConfig[] = [...imported];
  const classes: ClassInfo[] = headers.map((h) => ({ name: h.name, range: h.range, bases: h.bases }));
  for (const h of headers) moduleBound.add(h.name);
  for (const { facts, baseRow, context } of chunks) {
    for (const i of facts.imports) imports.push(i);
    if (context < 0) for (const n of facts.chunkBound) moduleBound.add(n);
    const defs = facts.defs;
    for (const d of defs) if (d.kind === 'class') classes.push({ name: d.name, range: abs(d.pos, baseRow), bases: d.bases });
    for (const cf of facts.configs) {
      const d: DefFact | undefined = cf.scope >= 0 ? defs[cf.scope] : undefined;
      let rank: number;
      if (cf.rank === 0) rank = d?.kind === 'class' || (!d && context >= 0) ? 0 : 1;
      else rank = cf.rank + 1;
      raw.push({ name: cf.name, value: cf.value, rank, line: cf.row + baseRow });
    }
  }
  classes.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
  const resolver = new Resolver(imports, moduleBound);
  const config = buildConfig(raw);
  // Classes of this file that subclass nn.Linear build projections too.
  const localLinear = new Set<string>();
  for (const c of classes) if (c.bases.some((b) => resolver.resolve(b, false).qname === 'torch.nn.Linear')) localLinear.add(c.name);
  const advice = fileAdvice(chunks, imports.map((i) => i.target));
  const key = JSON.stringify([
    fileAdviceKey(advice),
    opts.capabilities ?? null,
    imports,
    [...moduleBound].sort(),
    [...config.values],
    [...config.bareValues],
    [...config.fieldValues],
    [...config.fieldFiles],
    config.file,
    config.imgSize ?? null,
    config.patchSize ?? null,
    [...localLinear],
    opts.shapes ?? {},
    hintsId,
  ]);
  return { resolver, config, classes, localLinear, opts, advice, key };
}

/** The sites of one group (a top-level class, or one top-level statement), rows relative to the group. */
interface GroupResult {
  sites: Site[];
  /** Projections left unpaired, for FFNs split over two classes. */
  leftovers: LinearFact[];
}

/**
 * Analyses a file. Keeps the last result of each group (a top-level class with
 * its methods, or a top-level statement): after an edit, only the group whose
 * facts changed is analysed again, the others are moved to their new rows.
 */
export class Analyzer {
  private cache = new Map<string, GroupResult>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  private envKey = '';
  private envId = 0;

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) this.ids.set(o, (id = this.nextId++));
    return id;
  }

  /** `imported`: defaults of the config classes the file imports from its folder (see related.ts). */
  run(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions, imported: readonly RawConfig[] = []): AnalyzeResult {
    const env = buildEnv(chunks, headers, opts, opts.hints ? this.idOf(opts.hints) : 0, imported);
    // A short stand-in for the (long) environment key, so group keys stay small.
    if (env.key !== this.envKey) {
      this.envKey = env.key;
      this.envId++;
    }
    const next = new Map<string, GroupResult>();
    const sites: Site[] = [];
    const leftovers: { l: LinearFact; base: number }[] = [];
    for (let i = 0; i < chunks.length; ) {
      const first = chunks[i] as PlacedChunk;
      let j = i + 1;
      if (first.context >= 0) while (j < chunks.length && (chunks[j] as PlacedChunk).context === first.context) j++;
      const group = chunks.slice(i, j);
      const base = first.baseRow;
      const header = first.context >= 0 ? (headers[first.context] as ClassHeader) : undefined;
      const key = [
        this.envId,
        file,
        header ? `${header.name}(${header.bases.join(',')})` : '',
        group.map((c) => `${this.idOf(c.facts)}@${c.baseRow - base}`).join(' '),
        opts.hints ? base : '',
      ].join('\u0001');
      let result = this.cache.get(key) ?? next.get(key);
      if (!result) result = analyzeGroup(file, group, header, base, env);
      next.set(key, result);
      for (const site of result.sites) sites.push(base === 0 ? site : shiftSite(site, base));
      for (const l of result.leftovers) leftovers.push({ l, base });
      i = j;
    }
    this.cache = next;
    for (const site of splitFfns(leftovers, file)) sites.push(site);
    for (const site of adviseFile(file, chunks, headers, env)) sites.push(site);
    sites.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
    const out: AnalyzeResult = { sites, classes: env.classes, config: env.config.file };
    const peak = opts.hints?.run?.peakBytes;
    if (peak) out.peakBytes = peak;
    return out;
  }
}

/** One-shot analysis (no cache). */
export function analyze(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions): AnalyzeResult {
  return new Analyzer().run(file, chunks, headers, opts);
}

function analyzeGroup(file: string, chunks: readonly PlacedChunk[], header: ClassHeader | undefined, base: number, env: Env): GroupResult {
  const group = openGroup(file, chunks, header, base, env);
  const softmax = softmaxMembers(group.calls);
  findDropouts(group, softmax);
  findMasks(group);
  const leftovers = findFfns(group);
  adviseGroup(group, softmax);
  group.sites.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
  return { sites: group.sites, leftovers };
}

/**
 * The advisor's findings inside one group: eager attention chains, block loops
 * without checkpointing, Adam/AdamW without fused=/foreach=; and the advice on the
 * group's attention masks. Rows are relative to the group, like every group site.
 */
function adviseGroup(group: Group, softmaxMembers: ReadonlySet<string>): void {
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

const HF_BUILDERS = new Set(['from_pretrained', '_from_config', 'from_config']);
const NOT_MODELS = /Tokenizer|Config|Processor|Extractor|Pipeline|Dataset|Scheduler/;
const EAGER_LITERAL = /^[rRuU]?["']eager["']$/;

/**
 * The advisor's file-wide findings: the training step without mixed precision, HF
 * models built with eager attention or trained without gradient checkpointing.
 * Computed on every scan from the chunks' facts (cheap: a few short lists).
 */
function adviseFile(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], env: Env): Site[] {
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
  let hfTrainer = false;
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
      if (/^(Trainer|SFTTrainer|Seq2SeqTrainer)$/.test(f.final)) hfTrainer = true;
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
    if (!HF_BUILDERS.has(fact.callee.slice(fact.callee.lastIndexOf('.') + 1)) && !/Config$/.test(fact.callee)) continue;
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
