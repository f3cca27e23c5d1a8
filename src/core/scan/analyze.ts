/**
 * From chunk facts to sites: resolves callees through the file's imports, decides
 * each call's kind, pairs FFN projections, and attaches estimates and messages.
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
  scopeNames,
} from './advisor';
import type { AliasTarget, CallFact, DefFact, RelRange } from './factTypes';
import type { AnalyzeResult, ClassHeader, Env, GCall, PlacedChunk } from './context';
import { siteMessage } from './format';
import { applyCapabilities, autocastAdvice, checkpointAdvice, DOCS, eagerAttnAdvice, optimizerAdvice } from './levers';
import {
  DROPOUT_CLASSES,
  DROPOUT_FUNCS,
  FUSED_ATTENTION,
  HF_MASK_HELPER,
  HF_MASK_HELPERS,
  type ImportFact,
  LINEAR_PARAMS,
  MLP_FACTORY_PARAMS,
  MLP_MODULE_PARAMS,
  MLP_MODULES,
  type Resolved,
  Resolver,
  SDPA,
  SDPA_PARAMS,
} from './names';
import { buildConfig, type ConfigTable, dtypeBytes, evalDim, fromDims, fromReport, type RawConfig, type Role, ShapeContext } from './shapes';
import type { Advice, AttentionInfo, ClassInfo, Estimate, FfnInfo, FfnMember, ScanOptions, Site, SiteArgs, SiteKind, SiteRange } from './types';

const FULL_LIKE = new Set(['ones', 'full', 'zeros', 'empty', 'ones_like', 'full_like', 'zeros_like', 'empty_like', 'new_ones', 'new_full', 'new_zeros', 'new_empty']);
const TRI = new Set(['tril', 'triu', 'tril_', 'triu_']);
/** Fill values that mean "masked out" in attention: -inf, dtype minimum, large negatives. */
const NEG_INF = /inf|finfo|masked_bias|mask_value|min_value|min_dtype|large_neg|-\s*\d+(?:\.\d*)?e\+?\d+|-\s*1000+\b|-\s*100(?:\.0*)?(?![\d.])|-\s*65504|-\s*32768/i;
/** Receivers that are attention scores (`att`, `scores`, `attn_weights`, `dots`, `sim`). */
const SCORES = /att|score|weight|sim\b|dots?\b|energ|qk|affinit|product/i;
const ATTN_MEMBER = /attn|attention|(^|_)att(_|$)/i;
const ATTN_ARG = /^(p_)?(attn|att|attention)(_?(weights?|probs?|probabilities|scores?|maps?|matrix))?$|_probs$/i;
/** Members that are attention projections, never half of an FFN. */
const ATTN_PROJ =
  /^(q|k|v|qk|kv|qkv|query|key|value|wq|wk|wv|wqkv|to_q|to_k|to_v|to_qk|to_kv|to_qkv|in_proj|c_attn|q_attn|query_key_value|w_pack|q_lin|k_lin|v_lin)$|(^|_)(q|k|v|qkv|kv|query|key|value)_?proj|attn|attention/i;
/** Member names FFN code uses for its projections, when widths alone cannot tell. */
const FFN_NAME = /fc|mlp|ff|feed|dense|lin|^w\d|^w[io]|up|down|h_to_4h|4h_to_h|pwconv|c_fc|c_proj|intermediate|output|expand|^l\d|layer/i;
const GATE_NAME = /gate|^w1$|wi_0|_g$|^w_g/i;
const UP_NAME = /up|^w3$|wi_1|fc_in|^w_u/i;
const ATTN_CLASS = /(attention|attn)$/i;
const FFN_CLASS = /mlp|ffn|feed_?forward|ffw|positionwise|intermediate/i;
const ACT_CALL = /^(gelu|silu|relu|relu6|swish|sigmoid|mish|tanh|softplus|quick_gelu|gelu_new)$/;
/** Squeeze-and-excitation blocks: reduce then expand channels, a gate rather than an FFN. */
const SE_CLASS = { test: (name: string) => /squeeze|excit/i.test(name) || /^SE(Module|Layer|Block)?$|^SE[A-Z]/.test(name) };
/** Hidden widths that narrow. */
const NARROW = /\/\/|rd_|reduc|squeeze|bottleneck/i;
/** Output widths of classifier heads. */
const HEAD_OUT = /class|label|vocab/i;
/** `project_in`/`project_out` adapters between widths. */
const ADAPTER = /proj(ect)?_?in\b.*proj(ect)?_?out/i;
/** Dropouts named after the attention block they follow, not its probabilities. */
const AFTER_ATTN = /^(post|after)_?(attn|attention)|(attn|attention)_?(out|output|resid)/i;
/** Dropouts of attention classes that act on the output, not the probabilities. */
const NOT_ATTN_MEMBER = /resid|proj|(^|_)out(put)?(_|$)|hidden|ffn|mlp|fc|emb/i;

function abs(r: RelRange, baseRow: number): SiteRange {
  return { startLine: r.sr + baseRow, startCol: r.sc, endLine: r.er + baseRow, endCol: r.ec };
}

/** Maps arguments as written onto parameter names; extra positionals become `arg<i>`. */
/**
 * Longest argument text a site carries. An argument is shown as written, and nested calls
 * would otherwise repeat the whole nest in every site (`F.dropout(` 3,000 deep made 84 MB
 * of JSON; 10,000 deep, a string too long for V8): with the cap, output is linear in input.
 */
export const MAX_ARG_CHARS = 240;

/** `text`, cut to MAX_ARG_CHARS with an ellipsis. */
export function clipArg(text: string): string {
  return text.length <= MAX_ARG_CHARS ? text : `${text.slice(0, MAX_ARG_CHARS - 1)}…`;
}

export function argMap(f: CallFact, params: readonly string[]): SiteArgs {
  const out: SiteArgs = {};
  let i = 0;
  for (const a of f.args) {
    if (a.name === null) {
      out[params[i] ?? `arg${i}`] = clipArg(a.text);
      i++;
    } else out[a.name] = clipArg(a.text);
  }
  return out;
}

/** Splits `(a, b, c)` / `[a, b]` / `a, b` into its top-level items. */
export function splitTopLevel(text: string): string[] {
  let t = text.trim();
  if ((t.startsWith('(') && t.endsWith(')')) || (t.startsWith('[') && t.endsWith(']'))) t = t.slice(1, -1);
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of t) {
    if ('([{'.includes(ch)) depth++;
    else if (')]}'.includes(ch)) depth--;
    if (ch === ',' && depth === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/** A width as written, normalised so `4 * config.n_embd` equals `self.n_embd*4`. */
export function normDim(text: string | undefined): string {
  if (!text) return '';
  let t = text.replace(/\s+/g, '');
  // Widths are short; a long argument is compared as written.
  if (t.length > 200) return t;
  while (t.startsWith('(') && t.endsWith(')') && balanced(t.slice(1, -1))) t = t.slice(1, -1);
  // `int(config.intermediate_size)` is the same width as `config.intermediate_size`.
  t = t.replace(/\bint\(([^()]*)\)/g, '$1');
  while (t.startsWith('(') && t.endsWith(')') && balanced(t.slice(1, -1))) t = t.slice(1, -1);
  // Dotted names compare by their last part: `config.hidden_size` = `self.hidden_size` = `hidden_size`.
  t = t.replace(/[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+/g, (m) => m.slice(m.lastIndexOf('.') + 1));
  const factors = splitTop(t, '*');
  return factors.length > 1 ? factors.sort().join('*') : t;
}

function balanced(t: string): boolean {
  let d = 0;
  for (const ch of t) {
    if (ch === '(') d++;
    else if (ch === ')' && --d < 0) return false;
  }
  return d === 0;
}

function splitTop(t: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < t.length; i++) {
    const ch = t[i] as string;
    if (ch === '(' || ch === '[') depth++;
    else if (ch === ')' || ch === ']') depth--;
    if (depth === 0 && ch === sep && t[i + 1] !== sep && t[i - 1] !== sep) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

interface LinearFact {
  call: GCall;
  member: string | null;
  inText: string;
  outText: string;
  in: string;
  out: string;
  /** Both arms of a conditional width (`hidden * 2 if use_glu else hidden`), normalised. */
  outAlts: string[];
  /** Widths evaluated with the file's literal config values: for weight counts. */
  inVal?: number;
  outVal?: number;
  /**
   * Widths that are literal numbers as written (`768`, `4 * 768`): for pairing. Config
   * values are not used there, as a name may hold another class's default.
   */
  litIn?: number;
  litOut?: number;
  /** The constructor's parameters, for reporting its arguments. */
  params: readonly string[];
}

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

function shiftRange(r: SiteRange, by: number): SiteRange {
  return { startLine: r.startLine + by, startCol: r.startCol, endLine: r.endLine + by, endCol: r.endCol };
}

function shiftMember(m: FfnMember | undefined, by: number): FfnMember | undefined {
  return m ? { ...m, line: m.line + by, range: shiftRange(m.range, by) } : undefined;
}

/** A copy of a group-relative site at absolute rows. */
function shiftSite(site: Site, by: number): Site {
  const out: Site = { ...site, range: shiftRange(site.range, by) };
  if (site.attention) {
    const a: AttentionInfo = { ...site.attention };
    for (const k of ['scoresLine', 'maskLine', 'softmaxLine', 'dropoutLine', 'outputLine', 'defaultLine'] as const) if (a[k] !== undefined) a[k] = (a[k] as number) + by;
    out.attention = a;
  }
  if (site.ffn) {
    const f: FfnInfo = { ...site.ffn };
    const up = shiftMember(f.up, by);
    const down = shiftMember(f.down, by);
    const gate = shiftMember(f.gate, by);
    if (up) f.up = up;
    if (down) f.down = down;
    if (gate) f.gate = gate;
    out.ffn = f;
  }
  return out;
}

/** One-shot analysis (no cache). */
export function analyze(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions): AnalyzeResult {
  return new Analyzer().run(file, chunks, headers, opts);
}

function analyzeGroup(file: string, chunks: readonly PlacedChunk[], header: ClassHeader | undefined, groupBase: number, env: Env): GroupResult {
  const { resolver, config } = env;
  const calls: GCall[] = [];
  chunks.forEach((c, ci) => {
    const { facts, context } = c;
    const baseRow = c.baseRow - groupBase;
    const defs = facts.defs;
    for (const f of facts.calls) {
      let className: string | null = null;
      let classKey: string | null = null;
      let funcName: string | null = null;
      let funcKey: string | null = null;
      for (let s = f.scope; s >= 0; s = (defs[s] as DefFact).parent) {
        const d = defs[s] as DefFact;
        if (d.kind === 'func' && funcName === null) {
          funcName = d.name;
          funcKey = `${ci}:${s}`;
        }
        if (d.kind === 'class') {
          className = d.name;
          classKey = `${ci}:${s}`;
          break;
        }
      }
      if (className === null && context >= 0 && header) {
        className = header.name;
        classKey = 'h';
      }
      const g: GCall = { f, chunk: ci, range: abs(f.pos, baseRow), className, classKey, funcName, funcKey, res: resolver.resolve(f.callee, f.headLocal) };
      // `mask_fn = create_causal_mask if … else create_sliding_window_causal_mask; mask_fn(...)`:
      // the call is taken for the first name the variable may stand for that makes a site by name.
      if (f.aliasOf) {
        const rs = f.aliasOf.map((t) => resolver.resolve(t.callee, t.headLocal));
        const i = rs.findIndex((r) => namedSite(r) !== null);
        const r = rs[i];
        // "Fused, no mask stored" must hold on every path: not for `sdpa if c else eager_attention`.
        if (r && (namedSite(r) !== 'fused' || rs.every((o) => namedSite(o) === 'fused'))) {
          g.res = r;
          g.alias = (f.aliasOf[i] as AliasTarget).callee;
        }
      }
      calls.push(g);
    }
  });
  // Measured figures are keyed by absolute line.
  const ctx = new ShapeContext(env.opts.shapes ?? {}, config, env.opts.hints, groupBase);

  // Uses of a binding: `self.attn_dropout(att)` in the same class, `drop(x)` in the same function.
  const uses = new Map<string, GCall[]>();
  const useKey = (scopeKey: string | null, callee: string) => `${scopeKey ?? ''}|${callee}`;
  for (const g of calls) {
    const key = g.f.callee.startsWith('self.') ? useKey(g.classKey, g.f.callee) : useKey(g.funcKey, g.f.callee);
    let list = uses.get(key);
    if (!list) uses.set(key, (list = []));
    list.push(g);
  }
  const usesOf = (g: GCall): GCall[] => {
    const b = g.f.binding;
    if (!b) return [];
    if (b.startsWith('self.')) return uses.get(useKey(g.classKey, b)) ?? [];
    if (/^[A-Za-z_]\w*$/.test(b)) return uses.get(useKey(g.funcKey, b)) ?? [];
    return [];
  };

  const sites: Site[] = [];
  const taken = new Set<GCall>();
  // Classes that already call SDPA with is_causal=True on some path.
  const causalSdpa = new Set<string>();

  const makeSite = (g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra: Partial<Site> = {}): Site => {
    const site = buildSite(file, g, kind, form, args, estimate, extra);
    sites.push(site);
    taken.add(g);
    return site;
  };

  /** Report figures on the site's lines, else on the lines that call it. */
  const measuredFor = (g: GCall): ReturnType<ShapeContext['measured']> => {
    const own: number[] = [];
    for (let l = g.range.startLine; l <= g.range.endLine; l++) own.push(l);
    return ctx.measured(own) ?? ctx.measured(usesOf(g).map((u) => u.range.startLine));
  };

  const dropoutEstimate = (g: GCall, attn: boolean, p: string | undefined, fallback = false): Estimate => {
    const m = measuredFor(g);
    if (m) return fromReport(m, true);
    if (p !== undefined && /^0*\.?0*$/.test(p.trim()) && p.trim() !== '.') {
      return { elements: 0, maskBytes: 0, packedBytes: 0, source: 'config', note: 'p is 0 as written: no mask is kept' };
    }
    const zero = zeroByConfig(p, config);
    if (zero) return { elements: 0, maskBytes: 0, packedBytes: 0, source: 'config', note: zero };
    if (fallback) return fallbackEstimate();
    return attn
      ? fromDims(ctx, ['batch', 'heads', 'seqLen', 'seqLen'], 1, true, 'mask elements')
      : fromDims(ctx, ['batch', 'seqLen', 'hidden'], 1, true, 'mask elements (assuming a (B, L, d) input)');
  };

  // Pass 1: SDPA calls with is_causal=True, for the attention-mask remedies.
  for (const g of calls) {
    if (g.res.qname !== SDPA) continue;
    const a = argMap(g.f, SDPA_PARAMS);
    if (a.is_causal && a.is_causal !== 'False') {
      causalSdpa.add(g.classKey ?? '');
    }
  }

  // Members that are nn.Softmax modules (`self.attend = nn.Softmax(dim=-1)`): their output is probabilities.
  const softmaxMembers = new Set<string>();
  for (const g of calls) if (g.res.qname === 'torch.nn.Softmax' && g.f.binding?.startsWith('self.')) softmaxMembers.add(`${g.classKey}|${g.f.binding}`);
  // Dropouts right after an nn.Softmax in one Sequential (`nn.Sequential(nn.Softmax(-1), nn.Dropout(p))`).
  const softmaxInSeq = new Map<string, number>();
  for (const g of calls) {
    if (g.res.qname !== 'torch.nn.Softmax' || !g.f.binding || !g.f.path || !/^\d+$/.test(g.f.path)) continue;
    softmaxInSeq.set(`${g.classKey ?? g.funcKey}|${g.f.binding}`, Number(g.f.path));
  }
  const afterSoftmax = (g: GCall) => {
    if (!g.f.binding || !g.f.path || !/^\d+$/.test(g.f.path)) return false;
    const at = softmaxInSeq.get(`${g.classKey ?? g.funcKey}|${g.f.binding}`);
    return at !== undefined && at < Number(g.f.path);
  };
  const probsUse = (u: GCall) => u.f.arg0Probs || (u.f.arg0Via !== undefined && softmaxMembers.has(`${u.classKey}|${u.f.arg0Via}`));

  // Pass 2: dropouts and fused attention.
  for (const g of calls) {
    const q = g.res.qname;
    if (!q || !g.f.detailed) continue;
    if (DROPOUT_CLASSES.has(q)) {
      const args = argMap(g.f, ['p', 'inplace']);
      const member = g.f.binding ? g.f.binding.slice(g.f.binding.lastIndexOf('.') + 1) : '';
      const used = usesOf(g);
      const attn =
        used.some(probsUse) ||
        afterSoftmax(g) ||
        // `attn_dropout`, but not GPT-NeoX's `post_attention_dropout` (on the attention block's output).
        (member !== '' && !g.f.path && ATTN_MEMBER.test(member) && !AFTER_ATTN.test(member) && !/hidden|resid/i.test(args.p ?? '')) ||
        (args.p !== undefined && /attn|attention/i.test(args.p)) ||
        // A dropout member of an attention class that is never called itself is handed to
        // the attention function (`attention(q, k, v, dropout=self.dropout)`).
        (used.length === 0 && member !== '' && !g.f.path && ATTN_CLASS.test(g.className ?? '') && !NOT_ATTN_MEMBER.test(member));
      // Used only where fused attention is missing: no mask on a torch that has it.
      const fallback = used.length > 0 && used.every((u) => u.f.fallback === true);
      makeSite(g, attn ? 'attn-dropout' : 'dropout', 'construct', args, dropoutEstimate(g, attn, args.p, fallback));
      continue;
    }
    const dparams = DROPOUT_FUNCS.get(q);
    if (dparams) {
      const args = argMap(g.f, dparams);
      const arg0 = (g.f.arg0 ?? '').trim();
      const attn = probsUse(g) || ATTN_ARG.test(arg0) || (args.p !== undefined && /attn|attention/i.test(args.p));
      makeSite(g, attn ? 'attn-dropout' : 'dropout-call', 'call', args, dropoutEstimate(g, attn, args.p, g.f.fallback === true));
      continue;
    }
    let fused: { params: readonly string[]; dropout: string } | undefined;
    if (q === SDPA) fused = { params: SDPA_PARAMS, dropout: 'dropout_p' };
    else {
      const f = FUSED_ATTENTION.get(g.res.final);
      if (f && (q.startsWith(f.module) || g.res.binding === 'unbound' || g.res.binding === 'star')) fused = f;
    }
    if (fused) {
      const args = argMap(g.f, fused.params);
      // `dropout_p=0.0` as written: no dropout at all, fused or not.
      if (args[fused.dropout] === undefined || /^0*\.?0*$/.test((args[fused.dropout] as string).trim())) continue;
      const m = measuredFor(g);
      const est: Estimate = m ? fromReport(m, false) : fromDims(ctx, ['batch', 'heads', 'seqLen', 'seqLen'], 0, false, 'attention elements');
      est.maskBytes = 0;
      delete est.packedBytes;
      est.note = `the fused kernel keeps only an RNG seed and offset, no mask${est.note ? `; ${est.note}` : ''}`;
      makeSite(g, 'fused-attn-dropout', 'call', args, est, {
        remedy: 'Already optimal: the dropout happens inside the fused kernel, which regenerates it in backward instead of storing a mask.',
      });
    }
  }

  // Pass 3: materialised attention masks.
  const inside = (outer: GCall, inner: GCall) =>
    inner !== outer &&
    (inner.range.startLine > outer.range.startLine || (inner.range.startLine === outer.range.startLine && inner.range.startCol >= outer.range.startCol)) &&
    (inner.range.endLine < outer.range.endLine || (inner.range.endLine === outer.range.endLine && inner.range.endCol <= outer.range.endCol));
  const byChunkOrder = calls;
  const maskBuffers = new Map<string, GCall>();
  const maskSites: GCall[] = [];
  // Calls are grouped by chunk in order; nesting is looked for only within a chunk.
  const chunkCalls = new Map<number, GCall[]>();
  for (const g of calls) {
    let l = chunkCalls.get(g.chunk);
    if (!l) chunkCalls.set(g.chunk, (l = []));
    l.push(g);
  }
  // The class's own methods (`self._create_attention_masks(...)`): their masks are reported inside them.
  const classMethods = new Set(chunks.flatMap((c) => c.facts.defs.filter((d) => d.kind === 'func').map((d) => d.name)));
  /** Square constructors later shaped by tril/triu: masks whatever their name. */
  const forced = new Set<GCall>();
  const maskByChunk = new Map<number, GCall[]>();
  const withinMask = (g: GCall) => (maskByChunk.get(g.chunk) ?? []).some((o) => inside(o, g));
  const addMask = (g: GCall) => {
    maskSites.push(g);
    let l = maskByChunk.get(g.chunk);
    if (!l) maskByChunk.set(g.chunk, (l = []));
    l.push(g);
  };
  for (const g of byChunkOrder) {
    if (taken.has(g) || !g.f.detailed) continue;
    const final = g.res.final;
    if (TRI.has(final)) {
      const full = (chunkCalls.get(g.chunk) ?? []).find((o) => FULL_LIKE.has(o.res.final) && inside(g, o));
      const receiver = g.f.callee.slice(0, -final.length - 1);
      const input = full ? full.f.callee : (g.f.arg0 ?? receiver).trim();
      if (!full && /^(self\.)?[A-Za-z_]\w*$/.test(input)) {
        // `mask = torch.full((L, L), -inf); mask = torch.triu(mask, 1)`: one mask, reported where it is built.
        const built = calls.find(
          (o) => FULL_LIKE.has(o.res.final) && o.f.binding === input && (input.startsWith('self.') ? o.classKey === g.classKey : o.funcKey === g.funcKey),
        );
        if (built) {
          forced.add(built);
          continue;
        }
      }
      if (!full && !/mask|ones|causal|bias/i.test(input)) continue;
      if (withinMask(g)) continue;
      addMask(g);
      if (g.f.buffer) maskBuffers.set(`${g.classKey}|${g.f.buffer}`, g);
      if (g.f.binding?.startsWith('self.')) maskBuffers.set(`${g.classKey}|${g.f.binding.slice(5)}`, g);
      const est = measuredEstimate(measuredFor(g)) ?? maskEstimate(ctx, full);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, ['input', 'diagonal']), est, { remedy: causalRemedy(causalSdpa, g) });
    }
  }
  for (const g of byChunkOrder) {
    if (taken.has(g) || !g.f.detailed) continue;
    const final = g.res.final;
    if (FULL_LIKE.has(final) && !final.endsWith('_like')) {
      if (withinMask(g)) continue;
      const dims = fullDims(g);
      if (dims.length < 2 || normDim(dims[dims.length - 1]) !== normDim(dims[dims.length - 2])) continue;
      const a = argMap(g.f, []);
      const fill = final.endsWith('full') ? (g.f.args.filter((x) => x.name === null)[1]?.text ?? a.fill_value) : undefined;
      const name = `${g.f.binding ?? ''} ${g.f.buffer ?? ''}`;
      // Index tables (`torch.empty((N, N), dtype=torch.long)`) are square too, but no mask.
      const dtype = g.f.args.find((x) => x.name === 'dtype')?.text ?? '';
      if (/long|int(8|16|32|64)?$/.test(dtype) && !/uint8/.test(dtype)) continue;
      const isMask = forced.has(g) || (fill !== undefined && NEG_INF.test(fill)) || /mask|causal/i.test(name);
      if (!isMask) continue;
      addMask(g);
      if (g.f.buffer) maskBuffers.set(`${g.classKey}|${g.f.buffer}`, g);
      if (g.f.binding?.startsWith('self.')) maskBuffers.set(`${g.classKey}|${g.f.binding.slice(5)}`, g);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), measuredEstimate(measuredFor(g)) ?? maskEstimate(ctx, g), { remedy: causalRemedy(causalSdpa, g) });
      continue;
    }
    if (final === 'expand' || final === 'repeat') {
      const pos = g.f.args.filter((x) => x.name === null);
      // (B, 1, L, S) padding masks, (B, L, L) before a repeat per head, (B/nW, nW, H, N, N) window masks.
      if (pos.length < 3 || pos.length > 5 || g.f.args.length !== pos.length) continue;
      const receiver = g.f.callee.slice(0, -final.length - 1);
      if (!/mask/i.test(receiver) || NOT_ATTN_MASK.test(receiver)) continue;
      if (withinMask(g)) continue;
      addMask(g);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, ['d0', 'd1', 'd2', 'd3']), expandEstimate(ctx, g, pos.map((p) => p.text)), {
        remedy: PADDING_REMEDY,
      });
      continue;
    }
    if (final === 'repeat_interleave' || final === 'unsqueeze') {
      // `mask.expand(B, L, L).repeat_interleave(H, dim=0)` (B·H × L × L) and outer products
      // `m.unsqueeze(1) * m.unsqueeze(2)` / Swin's `mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)`.
      // Once per statement: `m.expand(B, T, -1).repeat_interleave(H, dim=0)` is one mask.
      const holdsMask = (maskByChunk.get(g.chunk) ?? []).some((o) => inside(g, o));
      if (withinMask(g) || holdsMask || !paddingMaskBuild(g, chunkCalls.get(g.chunk) ?? [])) continue;
      addMask(g);
      const windowed = /window/i.test(g.f.callee);
      const est: Estimate = windowed
        ? { source: 'unknown', note: 'shifted-window mask: windows × N × N with N the window area, not read from the file' }
        : fromDims(ctx, ['batch', 'seqLen', 'seqLen'], 1, false, 'mask elements (one per query and key)');
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), measuredEstimate(measuredFor(g)) ?? est, {
        remedy: PADDING_REMEDY,
      });
      continue;
    }
    const written = g.alias ?? g.f.callee;
    if (isMaskHelper(g) && !(written.startsWith('self.') && classMethods.has(final))) {
      const causal = /causal/.test(final);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), helperEstimate(ctx, g), {
        remedy: causal ? causalRemedy(causalSdpa, g) : PADDING_REMEDY,
      });
    }
  }
  for (const g of byChunkOrder) {
    if (taken.has(g) || !g.f.detailed) continue;
    const final = g.res.final;
    let receiver: string;
    let maskText: string | undefined;
    let fill: string | undefined;
    const pos = g.f.args.filter((x) => x.name === null).map((x) => x.text);
    const kw = argMap(g.f, []);
    if (final === 'masked_fill' || final === 'masked_fill_') {
      if (g.res.qname === 'torch.masked_fill') {
        receiver = pos[0] ?? '';
        maskText = pos[1] ?? kw.mask;
        fill = pos[2] ?? kw.value;
      } else {
        receiver = g.f.callee.slice(0, -final.length - 1);
        maskText = pos[0] ?? kw.mask;
        fill = pos[1] ?? kw.value;
      }
    } else if (final === 'where' && g.res.qname === 'torch.where') {
      maskText = pos[0];
      receiver = pos[1] ?? '';
      fill = pos[2];
      if (!maskText || !/mask|bias|causal/i.test(maskText)) continue;
    } else continue;
    if (!fill || !maskText || !NEG_INF.test(fill)) continue;
    const bufferRef = /self\.(\w+)/.exec(maskText);
    const buffer = bufferRef ? maskBuffers.get(`${g.classKey}|${bufferRef[1]}`) : undefined;
    // Filling the mask itself (turning a bool mask into an additive one) applies nothing.
    if (/mask|bias/i.test(receiver)) continue;
    if (!buffer && !SCORES.test(receiver) && !/bias|causal|tril|triu/i.test(maskText)) continue;
    const m = measuredFor(g);
    const est: Estimate = m
      ? fromReport(m, false)
      : buffer || /bias|causal|tril|triu/i.test(maskText)
        ? fromDims(ctx, ['seqLen', 'seqLen'], 1, false, 'mask elements (bool)')
        : fromDims(ctx, ['batch', 'seqLen', 'seqLen'], 1, false, 'mask elements (bool, one per query and key)');
    const causal = !!buffer || /causal|tril|triu|bias/i.test(maskText);
    makeSite(g, 'attn-mask', 'call', final === 'where' ? { condition: maskText, input: receiver, other: fill } : { mask: maskText, value: fill }, est, {
      remedy: causal ? causalRemedy(causalSdpa, g) : PADDING_REMEDY,
    });
  }

  // Additive masks built on their own: `m = torch.zeros(L, S); m.masked_fill_(~keep, -inf)` and
  // `mask.masked_fill(mask == 0, -1e8)`, where nothing else in the function already reported the mask.
  for (const g of byChunkOrder) {
    if (taken.has(g) || !g.f.detailed) continue;
    const target = additiveMaskBuild(g, calls, sites, file);
    if (!target) continue;
    addMask(target);
    makeSite(target, 'attn-mask', 'call', argMap(target.f, []), measuredEstimate(measuredFor(target)) ?? fromDims(ctx, ['seqLen', 'seqLen'], 1, false, 'mask elements'), {
      remedy: causalRemedy(causalSdpa, target),
    });
  }

  // Projections whose output goes straight into an activation (`self.act(self.w0(x))`): gates.
  const activated = new Set<string>();
  for (const g of calls) {
    const m = /^self\.([A-Za-z_]\w*)\s*\(/.exec(g.f.arg0 ?? '');
    if (m && (ACT_CALL.test(g.res.final) || /^self\.\w*act/i.test(g.f.callee))) activated.add(`${g.classKey}|${m[1]}`);
  }

  // Pass 4: FFNs.
  const paramsOf = (g: GCall): readonly string[] | undefined => {
    if (!g.funcKey) return undefined;
    const [ci, s] = g.funcKey.split(':').map(Number);
    return (chunks[ci as number]?.facts.defs[s as number] as DefFact | undefined)?.params;
  };
  const leftovers = findFfns(calls, taken, config, makeSite, activated, env.localLinear, paramsOf);

  // Pass 5: the memory advisor.
  adviseGroup(file, chunks, header, groupBase, env, ctx, calls, sites, softmaxMembers);

  sites.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
  return { sites, leftovers };
}

/**
 * The advisor's findings inside one group: eager attention chains, block loops
 * without checkpointing, Adam/AdamW without fused=/foreach=; and the advice on the
 * group's attention masks. Rows are relative to the group, like every group site.
 */
function adviseGroup(
  file: string,
  chunks: readonly PlacedChunk[],
  header: ClassHeader | undefined,
  groupBase: number,
  env: Env,
  ctx: ShapeContext,
  calls: readonly GCall[],
  sites: Site[],
  softmaxMembers: ReadonlySet<string>,
): void {
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
    names: ReturnType<typeof scopeNames>;
  }
  const backs: At<(typeof chunks)[number]['facts']['advice']['backward'][number]>[] = [];
  const impls: At<(typeof chunks)[number]['facts']['advice']['attnImpl'][number]>[] = [];
  const eagerLits: At<(typeof chunks)[number]['facts']['advice']['eager'][number]>[] = [];
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

function buildSite(file: string, g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra: Partial<Site> = {}): Site {
  const site: Site = {
    file,
    range: g.range,
    kind,
    form,
    className: g.className,
    funcName: g.funcName,
    args,
    callee: g.f.callee,
    resolved: g.res.qname && !g.res.qname.startsWith('?') ? g.res.qname : null,
    estimate,
    message: '',
    code: `membit.${kind}`,
    ...extra,
  };
  if (g.f.binding) site.binding = g.f.path ? `${g.f.binding}.${g.f.path}` : g.f.binding;
  if (g.alias) site.aliasOf = g.alias;
  site.message = siteMessage(site);
  return site;
}

function measuredEstimate(m: ReturnType<ShapeContext['measured']>): Estimate | undefined {
  return m ? fromReport(m, false) : undefined;
}

const PADDING_REMEDY =
  'Keep padding masks at (B, 1, 1, L) and let them broadcast inside a fused kernel (F.scaled_dot_product_attention), or unpad with flash-attn varlen: no L×L tensor is then built.';

function causalRemedy(causalSdpa: ReadonlySet<string>, g: GCall): string {
  let s = 'Pass is_causal=True to F.scaled_dot_product_attention (or causal=True to flash-attn) and drop this mask: the fused kernel masks without materialising it.';
  if (causalSdpa.has(g.classKey ?? '')) s += ' This class already does so on another path; the mask only serves the eager one.';
  return s;
}

/** The dimensions passed to ones/full/zeros/empty as written. */
function fullDims(g: GCall): string[] {
  const pos = g.f.args.filter((a) => a.name === null).map((a) => a.text);
  const size = g.f.args.find((a) => a.name === 'size')?.text;
  if (g.res.final.endsWith('full')) return splitTopLevel(pos[0] ?? size ?? '');
  if (size) return splitTopLevel(size);
  if (pos.length === 1 && /^[([]/.test((pos[0] as string).trim())) return splitTopLevel(pos[0] as string);
  return pos;
}

function maskEstimate(ctx: ShapeContext, full: GCall | undefined): Estimate {
  if (!full) return fromDims(ctx, ['seqLen', 'seqLen'], 4, false, 'mask elements (float32 assumed)');
  const dtype = full.f.args.find((a) => a.name === 'dtype')?.text;
  let bpe = dtypeBytes(dtype);
  const assumed = bpe === undefined;
  // Without a literal dtype: float32, torch's default (numpy's is float64).
  if (bpe === undefined) bpe = /^(numpy|np)\./.test(full.res.qname ?? full.f.callee) ? 8 : 4;
  if (full.res.final.endsWith('_like')) {
    return fromDims(ctx, ['batch', 'heads', 'seqLen', 'seqLen'], bpe, false, 'mask elements (shaped like the scores)');
  }
  const dims = fullDims(full);
  let known = 1;
  const unknown: string[] = [];
  const labels: string[] = [];
  for (const d of dims) {
    const v = evalDim(d, ctx.config.values, ctx.config.bareValues);
    if (v !== undefined && v >= 0) {
      known *= v;
      labels.push(`${d.trim()}=${v}`);
    } else unknown.push(normDim(d));
  }
  const dtypeNote = assumed ? (dtype ? `${bpe} B/element assumed for ${dtype}` : 'float32 (the default dtype)') : `${dtype}`;
  if (unknown.length === 0 && dims.length > 0) {
    return {
      elements: known,
      maskBytes: known * bpe,
      source: 'config',
      shape: {},
      note: `${dims.length}-D mask of ${known.toLocaleString('en-US')} elements (${labels.join(', ')}), ${dtypeNote}`,
    };
  }
  // The unknown sides are one length written twice (L×L): take L from settings or config.
  if (unknown.length === 2 && new Set(unknown).size === 1) {
    const est = fromDims(ctx, ['seqLen', 'seqLen'], bpe * known, false, 'mask elements');
    if (est.elements !== undefined) {
      est.elements *= known;
      est.note = `${est.note}; ${dtypeNote}`;
    }
    return est;
  }
  return { source: 'unknown', note: `shape unknown: cannot evaluate ${unknown.join(', ')}` };
}

const ROLE_OF_NAME: [RegExp, Role][] = [
  [/^(bsz|bs|b|batch|batch_size|n_batch)$/i, 'batch'],
  [/head/i, 'heads'],
  [/len|seq|^[tsl]$|tgt|src|query_length|key_value_length|n_ctx/i, 'seqLen'],
];

function expandEstimate(ctx: ShapeContext, g: GCall, dims: string[]): Estimate {
  const m = ctx.measured([g.range.startLine]);
  if (m) return fromReport(m, false);
  const roles: Role[] = [];
  let known = 1;
  for (const d of dims) {
    const v = evalDim(d, ctx.config.values, ctx.config.bareValues);
    // `expand(B, -1, H, -1, -1)`: -1 keeps the input's size, which is not written here.
    if (v !== undefined && v < 0) return { source: 'unknown', note: `shape unknown: ${d.trim()} keeps the size of the expanded tensor` };
    if (v !== undefined) {
      known *= v;
      continue;
    }
    const name = normDim(d);
    const hit = ROLE_OF_NAME.find(([re]) => re.test(name));
    if (!hit) return { source: 'unknown', note: `shape unknown: cannot tell what ${d.trim()} is` };
    roles.push(hit[1]);
  }
  const est = fromDims(ctx, roles, 4 * known, false, 'mask elements (float32 assumed: HF builds it in the model dtype)');
  if (est.elements !== undefined) est.elements *= known;
  return est;
}

function helperEstimate(ctx: ShapeContext, g: GCall): Estimate {
  const m = ctx.measured([g.range.startLine]);
  if (m) return fromReport(m, false);
  return fromDims(ctx, ['batch', 'seqLen', 'seqLen'], 4, false, '(B, 1, L, L) mask elements (float32 assumed: built in the model dtype)');
}

type MakeSite = (g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra?: Partial<Site>) => Site;

const NO_VALUES: ReadonlyMap<string, number> = new Map();

function linearOf(g: GCall, config: ConfigTable, localLinear: ReadonlySet<string>): LinearFact | undefined {
  const q = g.res.qname;
  const final = g.res.final;
  let key: string | undefined;
  if (q === 'torch.nn.Linear' || (q === null && final === 'linear_layer' && g.res.binding === 'local')) key = 'torch.nn.Linear';
  // The file's own subclasses of nn.Linear (whisper's `class Linear(nn.Linear)`).
  else if (q?.startsWith('<local>.') && localLinear.has(q.slice('<local>.'.length))) key = 'torch.nn.Linear';
  else if (final === 'Conv1D' && !(q ?? '').startsWith('torch.')) key = 'Conv1D';
  else if (q === 'torch.nn.Conv1d' || q === 'torch.nn.Conv2d') key = q;
  else if ((final === 'ColumnParallelLinear' || final === 'RowParallelLinear') && g.res.binding !== 'member') key = final;
  if (!key) return undefined;
  const params = LINEAR_PARAMS[key] as readonly string[];
  const a = argMap(g.f, params);
  let inText: string | undefined;
  let outText: string | undefined;
  if (key === 'Conv1D') {
    outText = a.nf;
    inText = a.nx;
  } else if (key.startsWith('torch.nn.Conv')) {
    // Only 1×1 convolutions are dense projections.
    if (!/^\(?\s*1\s*(,\s*1\s*)?\)?$/.test(a.kernel_size ?? '')) return undefined;
    inText = a.in_channels;
    outText = a.out_channels;
  } else {
    inText = a[params[0] as string];
    outText = a[params[1] as string];
  }
  if (!inText || !outText) return undefined;
  const b = g.f.binding;
  let member: string | null = null;
  if (b?.startsWith('self.')) member = b.slice(5) + (g.f.path ? `.${g.f.path}` : '');
  else if (b && g.f.path) member = `${b}.${g.f.path}`;
  else if (b) member = b;
  const arms = /^(.+?)\s+if\s+.+?\s+else\s+(.+)$/s.exec(outText.trim());
  const outAlts = arms ? [normDim(arms[1]), normDim(arms[2])] : [];
  const lf: LinearFact = { call: g, member, inText, outText, in: normDim(inText), out: normDim(outText), outAlts, params };
  const iv = evalDim(inText, config.values, config.bareValues);
  const ov = evalDim(outText, config.values, config.bareValues);
  if (iv !== undefined) lf.inVal = iv;
  if (ov !== undefined) lf.outVal = ov;
  const li = evalDim(inText, NO_VALUES);
  const lo = evalDim(outText, NO_VALUES);
  if (li !== undefined) lf.litIn = li;
  if (lo !== undefined) lf.litOut = lo;
  return lf;
}

/** The name that says what a member is: `c_fc` for `mlp.c_fc`, `net` for `net.1`. */
function lastSeg(member: string | null): string {
  if (!member) return '';
  const segs = member.split('.').filter((x) => !/^\d+$/.test(x));
  return segs[segs.length - 1] ?? '';
}

/** The Sequential/ModuleList a member sits in (`net` for `net.1`), null for a plain attribute. */
function containerOf(l: LinearFact): string | null {
  const b = l.call.f.binding;
  const path = l.call.f.path;
  if (!b || !path) return null;
  const segs = path.split('.');
  return [b, ...segs.slice(0, -1)].join('.');
}

function same(a: string, av: number | undefined, b: string, bv: number | undefined): boolean {
  return (a !== '' && a === b) || (av !== undefined && bv !== undefined && av === bv);
}

/** `2*h` against `h`: a fused gate+up projection. */
function doubled(out: string, outVal: number | undefined, inn: string, inVal: number | undefined): boolean {
  if (outVal !== undefined && inVal !== undefined) return outVal === 2 * inVal;
  // timm's GluMlp: fc1 to `hidden_features`, fc2 from `hidden_features // 2`.
  if (inn === `${out}//2`) return true;
  const f = out.split('*');
  const i = f.indexOf('2');
  if (i < 0) return false;
  f.splice(i, 1);
  return f.sort().join('*') === inn;
}

function toMember(l: LinearFact): FfnMember {
  const m: FfnMember = {
    name: l.member,
    className: l.call.className,
    line: l.call.range.startLine,
    range: l.call.range,
    callee: l.call.f.callee,
    inFeatures: l.inText,
    outFeatures: l.outText,
  };
  return m;
}

function ffnEstimate(widths: (number | undefined)[][]): Estimate {
  let params = 0;
  for (const [i, o] of widths) {
    if (i === undefined || o === undefined) return { source: 'unknown', note: 'widths unknown: weights not counted' };
    params += i * o;
  }
  return {
    elements: params,
    source: 'config',
    note: `${params.toLocaleString('en-US')} weights; 2:4 sparsity keeps half of them plus 2-bit indices`,
  };
}

function setWidths(info: FfnInfo, inWidth: number | undefined, hiddenWidth: number | undefined): void {
  if (inWidth !== undefined && Number.isInteger(inWidth)) info.inWidth = inWidth;
  if (hiddenWidth !== undefined && Number.isInteger(hiddenWidth)) info.hiddenWidth = hiddenWidth;
}

/** How many layers apart an FFN's projections may be declared and still be paired (see findFfns). */
const FFN_WINDOW = 256;

function findFfns(
  calls: readonly GCall[],
  taken: Set<GCall>,
  config: ConfigTable,
  makeSite: MakeSite,
  activated: ReadonlySet<string>,
  localLinear: ReadonlySet<string>,
  paramsOf: (g: GCall) => readonly string[] | undefined = () => undefined,
): LinearFact[] {
  const groups = new Map<string, LinearFact[]>();
  for (const g of calls) {
    if (!g.f.detailed || taken.has(g)) continue;
    const own = linearOf(g, config, localLinear);
    if (!own) continue;
    const l = own.member === null ? (viaBuilder(own, calls, paramsOf, config) ?? own) : own;
    const key = g.classKey ?? g.funcKey ?? '<module>';
    let list = groups.get(key);
    if (!list) groups.set(key, (list = []));
    list.push(l);
  }
  const leftovers: LinearFact[] = [];
  for (const list of groups.values()) {
    const className = list[0]?.call.className ?? null;
    const used = new Set<LinearFact>();
    if (className && (ATTN_CLASS.test(className) || SE_CLASS.test(className))) continue;
    // Linear in the class's size (a generated class with 20k pairs took 57 s and 521 MB when
    // every layer was compared with every earlier one): an up projection is looked for among
    // the FFN_WINDOW nearest unused layers before the down projection, a gate among the
    // FFN_WINDOW layers around the pair. Classes with fewer layers pair exactly as before.
    const n = list.length;
    const boxes = list.map(containerOf);
    const isUsed = new Uint8Array(n);
    // jump[k]: an index below k to continue from when k is used (path-compressed).
    const jump = Int32Array.from({ length: n }, (_, k) => k - 1);
    const prevUnused = (k: number): number => {
      let x = k;
      while (x >= 0 && isUsed[x]) x = jump[x] as number;
      for (let y = k; y >= 0 && isUsed[y]; ) {
        const next = jump[y] as number;
        jump[y] = x;
        y = next;
      }
      return x;
    };
    // prevSameBox[j]: the last index before j in the same Sequential/ModuleList as j, or -1.
    const prevSameBox = new Int32Array(n).fill(-1);
    const lastInBox = new Map<string, number>();
    boxes.forEach((b, k) => {
      if (b === null) return;
      prevSameBox[k] = lastInBox.get(b) ?? -1;
      lastInBox.set(b, k);
    });
    const markUsed = (l: LinearFact, k: number) => {
      used.add(l);
      isUsed[k] = 1;
    };
    for (let j = 0; j < list.length; j++) {
      const D = list[j] as LinearFact;
      if (used.has(D)) continue;
      let tried = 0;
      for (let i = prevUnused(j - 1); i >= 0 && tried < FFN_WINDOW; i = prevUnused(i - 1), tried++) {
        const U = list[i] as LinearFact;
        if (used.has(U) || ATTN_PROJ.test(lastSeg(U.member))) continue;
        // Inside a Sequential, an up/down pair is two consecutive projections of that Sequential.
        // Two different Sequentials are two different heads.
        const box = boxes[i] as string | null;
        const dbox = boxes[j] as string | null;
        if (box !== null && dbox !== null && box !== dbox) continue;
        if (box !== null && box === dbox && (prevSameBox[j] as number) > i) continue;
        // One variable rebound in a loop is not two layers.
        if (U.member !== null && U.member === D.member) continue;
        const plain = same(U.out, U.litOut, D.in, D.litIn) || U.outAlts.includes(D.in);
        const fusedGate = !plain && doubled(U.out, U.litOut, D.in, D.litIn);
        if (!plain && !fusedGate) continue;
        // An FFN widens first: a square or narrowing first projection is something else.
        if (same(U.in, U.litIn, U.out, U.litOut)) continue;
        if (U.litIn !== undefined && U.litOut !== undefined && U.litOut <= U.litIn) continue;
        // Squeeze-excite style reductions (`channels // reduction`, `rd_channels`) narrow.
        if (NARROW.test(U.outText)) continue;
        // The down projection returns to a different width than its input.
        if (same(D.in, D.litIn, D.out, D.litOut)) continue;
        // A classifier head ends in classes, not the model width.
        if (HEAD_OUT.test(D.outText)) continue;
        if (smallMlp(U, D)) continue;
        const mirrored = same(U.in, U.litIn, D.out, D.litOut);
        // Names say FFN: of the members (fc1/fc2, w_1/w_2) or of the class (SpatialMlp, FeedForward).
        const named = (FFN_NAME.test(lastSeg(U.member)) && FFN_NAME.test(lastSeg(D.member))) || FFN_CLASS.test(className ?? '');
        if (!mirrored && !named) continue;
        if (ADAPTER.test(`${lastSeg(U.member)} ${lastSeg(D.member)}`) && !FFN_CLASS.test(className ?? '')) continue;
        // Gated: another projection with U's widths (gate_proj next to up_proj).
        let G: LinearFact | undefined;
        let gi = -1;
        if (plain) {
          for (let k = Math.max(0, i - FFN_WINDOW); k < Math.min(n, j + FFN_WINDOW); k++) {
            const o = list[k] as LinearFact;
            if (o !== U && o !== D && !used.has(o) && boxes[k] === box && same(o.in, o.litIn, U.in, U.litIn) && same(o.out, o.litOut, U.out, U.litOut) && !ATTN_PROJ.test(lastSeg(o.member))) {
              G = o;
              gi = k;
              break;
            }
          }
        }
        let up = U;
        let gate = G;
        if (G) {
          const gName = lastSeg(G.member);
          const uName = lastSeg(U.member);
          const gAct = activated.has(`${G.call.classKey}|${G.member}`);
          const uAct = activated.has(`${U.call.classKey}|${U.member}`);
          // The forward pass says which one is the gate: it goes through the activation.
          if (gAct !== uAct) {
            if (uAct) {
              up = G;
              gate = U;
            }
          } else if ((GATE_NAME.test(uName) && !GATE_NAME.test(gName)) || (UP_NAME.test(gName) && !UP_NAME.test(uName))) {
            up = G;
            gate = U;
          } else if (!GATE_NAME.test(gName) && !UP_NAME.test(uName) && G.call.range.startLine < U.call.range.startLine) {
            // No names to go by: the first of the two is the gate (gate_proj, up_proj order).
            up = G;
            gate = U;
          }
        }
        markUsed(U, i);
        markUsed(D, j);
        if (G) markUsed(G, gi);
        const info: FfnInfo = {
          form: gate ? 'gated' : fusedGate ? 'fused-gated' : 'pair',
          up: toMember(up),
          down: toMember(D),
          inFeatures: up.inText,
          hiddenFeatures: fusedGate ? D.inText : up.outText,
        };
        if (gate) info.gate = toMember(gate);
        setWidths(info, up.inVal, fusedGate ? D.inVal : up.outVal);
        const widths: (number | undefined)[][] = [
          [up.inVal, up.outVal],
          [D.inVal, D.outVal],
        ];
        if (gate) widths.push([gate.inVal, gate.outVal]);
        const first = gate && gate.call.range.startLine < up.call.range.startLine ? gate : up;
        makeSite(first.call, 'ffn', 'construct', argMap(first.call.f, first.params), ffnEstimate(widths), { ffn: info });
        break;
      }
    }
    // Unpaired halves of HF's split FFNs wait for the other class.
    for (const l of list) if (!used.has(l) && /(Intermediate|Output)$/.test(l.call.className ?? '')) leftovers.push(l);
  }

  // MLP modules built elsewhere: timm's Mlp/GluMlp/SwiGLU, `mlp_layer(...)` parameters.
  for (const g of calls) {
    if (!g.f.detailed || taken.has(g)) continue;
    const final = g.res.final;
    // DeiT spells the parameter `Mlp_block`.
    const factory = MLP_FACTORY_PARAMS.has(g.f.callee.toLowerCase()) || (g.f.callee.startsWith('self.') && MLP_FACTORY_PARAMS.has(final.toLowerCase()));
    const imported =
      MLP_MODULES.has(final) && (g.res.binding === 'import' || g.res.binding === 'star' || g.res.binding === 'unbound' || g.res.binding === 'fallback') && !(g.res.qname ?? '').startsWith('<local>');
    if (!factory && !imported) continue;
    // torchvision.ops.MLP takes a list of widths; the others take in/hidden/out.
    const args = argMap(g.f, MLP_MODULE_PARAMS);
    const info: FfnInfo = { form: 'module' };
    const inF = args.in_features ?? args.dim ?? args.in_channels ?? args.d_model;
    const hid = args.hidden_features ?? args.hidden_dim ?? args.hidden_channels ?? args.mlp_dim ?? args.dim_feedforward;
    if (inF) info.inFeatures = inF;
    if (hid) info.hiddenFeatures = hid;
    const iv = inF ? evalDim(inF, config.values, config.bareValues) : undefined;
    const hv = hid ? evalDim(hid, config.values, config.bareValues) : undefined;
    setWidths(info, iv, hv);
    makeSite(g, 'ffn', 'construct', args, ffnEstimate([
      [iv, hv],
      [hv, iv],
    ]), { ffn: info });
  }
  return leftovers;
}

/** HF splits one FFN over two classes: BertIntermediate (up) and BertOutput (down). */
function splitFfns(leftovers: readonly { l: LinearFact; base: number }[], file: string): Site[] {
  const byClass = new Map<string, { l: LinearFact; base: number }[]>();
  for (const x of leftovers) {
    const c = x.l.call.className as string;
    let a = byClass.get(c);
    if (!a) byClass.set(c, (a = []));
    a.push(x);
  }
  const sites: Site[] = [];
  for (const [cls, ups] of byClass) {
    if (!cls.endsWith('Intermediate')) continue;
    const downs = byClass.get(`${cls.slice(0, -'Intermediate'.length)}Output`);
    if (!downs) continue;
    for (const { l: U, base } of ups) {
      if (same(U.in, U.litIn, U.out, U.litOut)) continue;
      const d = downs.find(({ l: D }) => same(U.out, U.litOut, D.in, D.litIn) && same(U.in, U.litIn, D.out, D.litOut));
      if (!d) continue;
      downs.splice(downs.indexOf(d), 1);
      const D = d.l;
      const info: FfnInfo = { form: 'split', up: toMember(U), down: shiftMember(toMember(D), d.base - base) as FfnMember, inFeatures: U.inText, hiddenFeatures: U.outText };
      setWidths(info, U.inVal, U.outVal);
      const est = ffnEstimate([
        [U.inVal, U.outVal],
        [D.inVal, D.outVal],
      ]);
      const site = buildSite(file, U.call, 'ffn', 'construct', argMap(U.call.f, U.params), est, { ffn: info });
      sites.push(base === 0 ? site : shiftSite(site, base));
      break;
    }
  }
  return sites;
}

/**
 * `nn.Dropout(config.dropout)` where the file's own config says `dropout: float = 0.0`:
 * the module keeps no mask. Read like head counts and sequence lengths are.
 */
function zeroByConfig(p: string | undefined, config: ConfigTable): string | undefined {
  // `config.dropout`, `cfg.attn_pdrop`: a config's field, not a parameter of some other function.
  if (p === undefined || !/^(?!self\.)[A-Za-z_]\w*\.[A-Za-z_]\w*$/.test(p.trim())) return undefined;
  // Only class fields and module-level values (`dropout: float = 0.0` in a config dataclass),
  // and the defaults of a config class imported from the file's folder.
  const v = evalDim(p.trim(), config.fieldValues, config.bareValues);
  if (v !== 0) return undefined;
  const from = config.fieldFiles.get(p.trim().slice(p.trim().lastIndexOf('.') + 1));
  return `p is 0 in the ${from ? `config defaults of ${from}` : "file's config defaults"} (${p.trim()} = 0.0): no mask is kept unless the config is changed`;
}

/** A dropout used only on the eager fallback branch of `if <fused attention>: ... else: ...`. */
export const FALLBACK_NOTE =
  'only on the fallback path: used only in the branch taken where fused attention is unavailable, so a torch with it keeps no mask here';
function fallbackEstimate(): Estimate {
  return { elements: 0, maskBytes: 0, packedBytes: 0, source: 'config', note: FALLBACK_NOTE };
}

/** An HF mask helper, by name (a release's list) or by its naming pattern; members only when private. */
function isMaskHelper(g: GCall): boolean {
  return maskHelperName(g.res);
}

function maskHelperName(r: Resolved): boolean {
  const final = r.final;
  if (!HF_MASK_HELPERS.has(final) && !HF_MASK_HELPER.test(final)) return false;
  return r.binding !== 'member' || final.startsWith('_');
}

/**
 * Callees that make a site by their name alone: torch's dropouts and SDPA, fused attention
 * kernels, HF mask helpers. Calls through a local variable are followed to these only;
 * projections, softmax and tensor builders are told apart by their arguments and uses,
 * which an alias would blur.
 */
function namedSite(r: Resolved): 'fused' | 'other' | null {
  const q = r.qname;
  if (q && (DROPOUT_CLASSES.has(q) || DROPOUT_FUNCS.has(q))) return 'other';
  if (q === SDPA) return 'fused';
  const fused = FUSED_ATTENTION.get(r.final);
  if (fused && q && (q.startsWith(fused.module) || r.binding === 'unbound' || r.binding === 'star')) return 'fused';
  return maskHelperName(r) ? 'other' : null;
}

const MASKY = /mask|padding|pad_/i;
/** Mask tokens and masked-patch positions (BEiT/SimMIM) are inputs, not attention masks. */
const NOT_ATTN_MASK = /mask_token|masked_pos|mask_emb|token_mask|mask_ratio|mask_time|mask_feature|time_indices/i;

/**
 * `x.repeat_interleave(H, dim=0)` of an expanded mask, or one half of an outer product
 * `m.unsqueeze(i) <op> m.unsqueeze(j)` of a mask with itself (the first half only).
 */
function paddingMaskBuild(g: GCall, chunk: readonly GCall[]): boolean {
  const final = g.res.final;
  const receiver = g.f.callee.slice(0, -final.length - 1);
  if (!MASKY.test(receiver) || NOT_ATTN_MASK.test(receiver)) return false;
  if (final === 'repeat_interleave') return /\.(expand|repeat|unsqueeze)\(|\[/.test(receiver) || /mask/i.test(g.f.binding ?? '');
  // An outer product: another unsqueeze of the same receiver on another axis, in the same statement.
  const dim = (g.f.arg0 ?? '').trim();
  const other = chunk.find(
    (o) =>
      o !== g &&
      o.res.final === 'unsqueeze' &&
      o.f.callee === g.f.callee &&
      o.range.startLine === g.range.startLine &&
      (o.f.arg0 ?? '').trim() !== dim &&
      (o.range.startLine > g.range.startLine || o.range.startCol > g.range.startCol),
  );
  return other !== undefined;
}

/**
 * The call that builds an additive mask: a `zeros`/`full` tensor of 2+ dims that is then
 * filled with -inf in place (`m.masked_fill_(…, -inf)`), or a mask converted by
 * `mask.masked_fill(mask == 0, -1e8)` in a function that reports no other mask. Returns the
 * call to report, undefined for anything else.
 */
function additiveMaskBuild(g: GCall, calls: readonly GCall[], sites: readonly Site[], file: string): GCall | undefined {
  const final = g.res.final;
  if (final !== 'masked_fill' && final !== 'masked_fill_') return undefined;
  if (g.res.qname === 'torch.masked_fill') return undefined;
  const receiver = g.f.callee.slice(0, -final.length - 1);
  const pos = g.f.args.filter((x) => x.name === null).map((x) => x.text);
  const fill = pos[1] ?? g.f.args.find((x) => x.name === 'value')?.text;
  if (!fill || !NEG_INF.test(fill)) return undefined;
  const base = /^(self\.)?[A-Za-z_]\w*$/.exec(receiver.trim())?.[0];
  const sameScope = (o: GCall) => (o.funcKey ?? o.classKey) === (g.funcKey ?? g.classKey);
  if (base) {
    // `bias = torch.zeros(L, S); bias.masked_fill_(…, -inf)`: the mask is where the tensor is built.
    const built = calls.find((o) => FULL_LIKE.has(o.res.final) && o.f.binding === base && sameScope(o) && o.range.startLine <= g.range.startLine);
    // `bias = torch.zeros_like(mask, dtype=...); bias.masked_fill_(~mask, -inf)`: the same mask in another
    // dtype, reported where the mask itself is built.
    if (built?.res.final.endsWith('_like')) return undefined;
    const dims = built ? fullDims(built) : [];
    // (L, S) or (B, H, L, S); a (B, 1, 1, S) padding row is not quadratic.
    if (built && dims.length >= 2 && !/^\(?1\)?$/.test((dims[dims.length - 2] ?? '').trim())) {
      if (sites.some((s) => s.file === file && s.range.startLine === built.range.startLine && s.kind === 'attn-mask')) return undefined;
      return built;
    }
    if (built) return undefined;
  }
  if (!/mask/i.test(receiver)) return undefined;
  // A conversion of a mask reported elsewhere in the function (`_expand_mask`'s inverted mask) adds nothing.
  const fnSites = sites.filter((s) => s.kind === 'attn-mask' && s.funcName === g.funcName && s.className === g.className);
  if (fnSites.length > 0) return undefined;
  return g;
}

/**
 * Not a feed-forward block: an MLP from a handful of inputs (Swin V2's continuous
 * relative-position bias, 2 → 512 → heads) or one that ends in per-head values.
 * A 2:4 mask on 2 inputs would keep one of them.
 */
function smallMlp(U: LinearFact, D: LinearFact): boolean {
  if (U.litIn !== undefined && U.litIn < 16) return true;
  return /head/i.test(D.outText) && !/head_?dim|dim_?head/i.test(D.outText);
}

/**
 * A projection built in a builder method and returned (`def build_fc1(self, input_dim,
 * output_dim, ...): return quant_noise(nn.Linear(input_dim, output_dim), ...)`), seen through
 * the call that binds it (`self.fc1 = self.build_fc1(self.embed_dim, cfg.ffn_dim, ...)`):
 * the member and widths of the caller, the site where the Linear is written.
 */
function viaBuilder(l: LinearFact, calls: readonly GCall[], paramsOf: (g: GCall) => readonly string[] | undefined, config: ConfigTable): LinearFact | undefined {
  const g = l.call;
  if (!g.funcName || !g.classKey || g.f.binding) return undefined;
  const params = paramsOf(g);
  if (!params) return undefined;
  const callers = calls.filter((o) => o.classKey === g.classKey && o.f.callee === `self.${g.funcName}` && o.f.binding?.startsWith('self.'));
  if (callers.length !== 1) return undefined;
  const caller = callers[0] as GCall;
  const named = new Map<string, string>();
  const formal = params[0] === 'self' ? params.slice(1) : params;
  let i = 0;
  for (const a of caller.f.args) {
    if (a.name === null) {
      const p = formal[i++];
      if (p) named.set(p, a.text);
    } else if (a.name !== '*' && a.name !== '**') named.set(a.name, a.text);
  }
  const subst = (t: string) => (/^[A-Za-z_]\w*$/.test(t.trim()) ? (named.get(t.trim()) ?? t) : t);
  const inText = subst(l.inText);
  const outText = subst(l.outText);
  const out: LinearFact = { ...l, member: (caller.f.binding as string).slice(5), inText, outText, in: normDim(inText), out: normDim(outText), outAlts: [] };
  delete out.inVal;
  delete out.outVal;
  delete out.litIn;
  delete out.litOut;
  const iv = evalDim(inText, config.values, config.bareValues);
  const ov = evalDim(outText, config.values, config.bareValues);
  if (iv !== undefined) out.inVal = iv;
  if (ov !== undefined) out.outVal = ov;
  const li = evalDim(inText, NO_VALUES);
  const lo = evalDim(outText, NO_VALUES);
  if (li !== undefined) out.litIn = li;
  if (lo !== undefined) out.litOut = lo;
  return out;
}
