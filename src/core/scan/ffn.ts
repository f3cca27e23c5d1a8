/**
 * Feed-forward blocks: an up projection widening the model width and a down projection
 * back, optionally gated, found among the nn.Linear (and 1×1 conv, Conv1D, parallel linear)
 * constructions of one class; MLP modules built from a library; and HF's FFNs split over
 * two classes. The site is the first projection; `ffn` names the members a rewriter converts.
 */
import { argFor, argMap, normDim } from './args';
import { ATTN_CLASS } from './classify';
import type { GCall, Group, MakeSite } from './context';
import { ffnEstimate } from './estimates';
import { LINEAR_PARAMS, MLP_FACTORY_PARAMS, MLP_MODULE_PARAMS, MLP_MODULES } from './names';
import { type ConfigTable, evalDim } from './shapes';
import { buildSite, shiftMember, shiftSite } from './sites';
import type { FfnInfo, FfnMember, Site } from './types';
import { itemAt } from '../arrays';

/** Members that are attention projections, never half of an FFN. */
const ATTN_PROJ =
  /^(q|k|v|qk|kv|qkv|query|key|value|wq|wk|wv|wqkv|to_q|to_k|to_v|to_qk|to_kv|to_qkv|in_proj|c_attn|q_attn|query_key_value|w_pack|q_lin|k_lin|v_lin)$|(^|_)(q|k|v|qkv|kv|query|key|value)_?proj|attn|attention/i;
/** Member names FFN code uses for its projections, when widths alone cannot tell. */
const FFN_NAME = /fc|mlp|ff|feed|dense|lin|^w\d|^w[io]|up|down|h_to_4h|4h_to_h|pwconv|c_fc|c_proj|intermediate|output|expand|^l\d|layer/i;
const GATE_NAME = /gate|^w1$|wi_0|_g$|^w_g/i;
const UP_NAME = /up|^w3$|wi_1|fc_in|^w_u/i;
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

export interface LinearFact {
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

/** How many layers apart an FFN's projections may be declared and still be paired (see pairFfns). */
const FFN_WINDOW = 256;

/**
 * Finds the group's FFNs; runs after the masks. Returns the projections left unpaired in
 * HF's `*Intermediate`/`*Output` classes, for splitFfns to pair across groups.
 */
export function findFfns(group: Group): LinearFact[] {
  const { calls, taken, chunks, makeSite } = group;
  const { config, localLinear } = group.env;
  // Projections whose output goes straight into an activation (`self.act(self.w0(x))`): gates.
  const activated = new Set<string>();
  for (const g of calls) {
    const m = /^self\.([A-Za-z_]\w*)\s*\(/.exec(g.f.arg0 ?? '');
    if (m && (ACT_CALL.test(g.res.final) || /^self\.\w*act/i.test(g.f.callee))) activated.add(`${g.classKey}|${m[1]}`);
  }
  const paramsOf = (g: GCall): readonly string[] | undefined => {
    if (!g.funcKey) return undefined;
    const [ci = -1, s = -1] = g.funcKey.split(':').map(Number);
    return chunks[ci]?.facts.defs[s]?.params;
  };
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
  for (const list of groups.values()) pairFfns(list, activated, makeSite, leftovers);
  moduleFfns(group);
  return leftovers;
}

/** Pairs the projections of one class (or function, or the module level), in declaration order. */
function pairFfns(list: readonly LinearFact[], activated: ReadonlySet<string>, makeSite: MakeSite, leftovers: LinearFact[]): void {
  const className = list[0]?.call.className ?? null;
  const used = new Set<LinearFact>();
  if (className && (ATTN_CLASS.test(className) || SE_CLASS.test(className))) return;
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
    while (x >= 0 && isUsed[x]) x = itemAt(jump, x);
    for (let y = k; y >= 0 && isUsed[y]; ) {
      const next = itemAt(jump, y);
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
  for (const [j, D] of list.entries()) {
    if (used.has(D)) continue;
    let tried = 0;
    for (let i = prevUnused(j - 1); i >= 0 && tried < FFN_WINDOW; i = prevUnused(i - 1), tried++) {
      const U = itemAt(list, i);
      if (used.has(U) || ATTN_PROJ.test(lastSeg(U.member))) continue;
      // Inside a Sequential, an up/down pair is two consecutive projections of that Sequential.
      // Two different Sequentials are two different heads.
      const box = itemAt(boxes, i);
      const dbox = itemAt(boxes, j);
      if (box !== null && dbox !== null && box !== dbox) continue;
      if (box !== null && box === dbox && itemAt(prevSameBox, j) > i) continue;
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
          const o = itemAt(list, k);
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

/** MLP modules built elsewhere: timm's Mlp/GluMlp/SwiGLU, `mlp_layer(...)` parameters. */
function moduleFfns(group: Group): void {
  const { calls, taken, makeSite } = group;
  const { config } = group.env;
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
    const inF = args['in_features'] ?? args['dim'] ?? args['in_channels'] ?? args['d_model'];
    const hid = args['hidden_features'] ?? args['hidden_dim'] ?? args['hidden_channels'] ?? args['mlp_dim'] ?? args['dim_feedforward'];
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
}

/** HF splits one FFN over two classes: BertIntermediate (up) and BertOutput (down). */
export function splitFfns(leftovers: readonly { l: LinearFact; base: number }[], file: string): Site[] {
  const byClass = new Map<string | null, { l: LinearFact; base: number }[]>();
  for (const x of leftovers) {
    const c = x.l.call.className;
    let a = byClass.get(c);
    if (!a) byClass.set(c, (a = []));
    a.push(x);
  }
  const sites: Site[] = [];
  for (const [cls, ups] of byClass) {
    if (!cls?.endsWith('Intermediate')) continue;
    const downs = byClass.get(`${cls.slice(0, -'Intermediate'.length)}Output`);
    if (!downs) continue;
    for (const { l: U, base } of ups) {
      if (same(U.in, U.litIn, U.out, U.litOut)) continue;
      const d = downs.find(({ l: D }) => same(U.out, U.litOut, D.in, D.litIn) && same(U.in, U.litIn, D.out, D.litOut));
      if (!d) continue;
      downs.splice(downs.indexOf(d), 1);
      const D = d.l;
      const info: FfnInfo = { form: 'split', up: toMember(U), down: shiftMember(toMember(D), d.base - base), inFeatures: U.inText, hiddenFeatures: U.outText };
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
  const params = LINEAR_PARAMS[key];
  if (!params) return undefined;
  const a = argMap(g.f, params);
  // Only 1×1 convolutions are dense projections.
  if (key.startsWith('torch.nn.Conv') && !/^\(?\s*1\s*(,\s*1\s*)?\)?$/.test(a['kernel_size'] ?? '')) return undefined;
  const [inKey, outKey] = key === 'Conv1D' ? ['nx', 'nf'] : params;
  if (inKey === undefined || outKey === undefined) return undefined;
  const inText = a[inKey];
  const outText = a[outKey];
  if (!inText || !outText) return undefined;
  const b = g.f.binding;
  let member: string | null = null;
  if (b?.startsWith('self.')) member = b.slice(5) + (g.f.path ? `.${g.f.path}` : '');
  else if (b && g.f.path) member = `${b}.${g.f.path}`;
  else if (b) member = b;
  const arms = argFor(g.f, params, outKey)?.arms;
  const outAlts = arms ? [normDim(arms[0]), normDim(arms[1])] : [];
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

function setWidths(info: FfnInfo, inWidth: number | undefined, hiddenWidth: number | undefined): void {
  if (inWidth !== undefined && Number.isInteger(inWidth)) info.inWidth = inWidth;
  if (hiddenWidth !== undefined && Number.isInteger(hiddenWidth)) info.hiddenWidth = hiddenWidth;
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
  const [caller] = callers;
  if (!caller || callers.length !== 1) return undefined;
  const binding = caller.f.binding;
  if (binding === undefined) return undefined;
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
  const out: LinearFact = { ...l, member: binding.slice(5), inText, outText, in: normDim(inText), out: normDim(outText), outAlts: [] };
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
