/**
 * Materialised attention masks: L×L tensors built for the scores (tril/triu of a square,
 * square ones/full/zeros/empty filled with -inf, expanded padding masks, HF's mask helpers)
 * and the calls that apply them (masked_fill, where). Each is reported once, where it is
 * built, with the fused alternative that would not build it.
 */
import { argMap, fullDims, normDim } from './args';
import type { GCall, Group } from './context';
import { expandEstimate, helperEstimate, maskEstimate, measuredEstimate } from './estimates';
import { maskHelperName, SDPA, SDPA_PARAMS } from './names';
import { fromDims, fromReport } from './shapes';
import type { Estimate, Site } from './types';

/** Tensor builders a mask is made from. */
const FULL_LIKE = new Set(['ones', 'full', 'zeros', 'empty', 'ones_like', 'full_like', 'zeros_like', 'empty_like', 'new_ones', 'new_full', 'new_zeros', 'new_empty']);
const TRI = new Set(['tril', 'triu', 'tril_', 'triu_']);
/** Fill values that mean "masked out" in attention: -inf, dtype minimum, large negatives. */
const NEG_INF = /inf|finfo|masked_bias|mask_value|min_value|min_dtype|large_neg|-\s*\d+(?:\.\d*)?e\+?\d+|-\s*1000+\b|-\s*100(?:\.0*)?(?![\d.])|-\s*65504|-\s*32768/i;
/** Receivers that are attention scores (`att`, `scores`, `attn_weights`, `dots`, `sim`). */
const SCORES = /att|score|weight|sim\b|dots?\b|energ|qk|affinit|product/i;
const MASKY = /mask|padding|pad_/i;
/** Mask tokens and masked-patch positions (BEiT/SimMIM) are inputs, not attention masks. */
const NOT_ATTN_MASK = /mask_token|masked_pos|mask_emb|token_mask|mask_ratio|mask_time|mask_feature|time_indices/i;

const PADDING_REMEDY =
  'Keep padding masks at (B, 1, 1, L) and let them broadcast inside a fused kernel (F.scaled_dot_product_attention), or unpad with flash-attn varlen: no L×L tensor is then built.';

/** What the mask passes share, within one group. */
interface Masks {
  group: Group;
  /** Classes that already call SDPA with is_causal=True on some path: the remedy says so. */
  causalSdpa: ReadonlySet<string>;
  /** Calls of each chunk; nesting is looked for only within a chunk. */
  chunkCalls: ReadonlyMap<number, readonly GCall[]>;
  /** Masks reported so far, by chunk: a call inside one is part of it. */
  byChunk: Map<number, GCall[]>;
  /** `classKey|name` of the buffers and members masks are stored in, for the calls that apply them. */
  buffers: Map<string, GCall>;
  /** Square constructors later shaped by tril/triu: masks whatever their name. */
  forced: Set<GCall>;
}

/** Finds the group's attention masks; runs after the dropouts, whose calls it skips. */
export function findMasks(group: Group): void {
  const chunkCalls = new Map<number, GCall[]>();
  for (const g of group.calls) {
    let l = chunkCalls.get(g.chunk);
    if (!l) chunkCalls.set(g.chunk, (l = []));
    l.push(g);
  }
  const m: Masks = { group, causalSdpa: causalSdpaClasses(group.calls), chunkCalls, byChunk: new Map(), buffers: new Map(), forced: new Set() };
  triangularMasks(m);
  squareMasks(m);
  appliedMasks(m);
  additiveMasks(m);
}

/** Classes that call SDPA with is_causal=True on some path. */
function causalSdpaClasses(calls: readonly GCall[]): Set<string> {
  const out = new Set<string>();
  for (const g of calls) {
    if (g.res.qname !== SDPA) continue;
    const a = argMap(g.f, SDPA_PARAMS);
    if (a['is_causal'] && a['is_causal'] !== 'False') out.add(g.classKey ?? '');
  }
  return out;
}

function inside(outer: GCall, inner: GCall): boolean {
  return (
    inner !== outer &&
    (inner.range.startLine > outer.range.startLine || (inner.range.startLine === outer.range.startLine && inner.range.startCol >= outer.range.startCol)) &&
    (inner.range.endLine < outer.range.endLine || (inner.range.endLine === outer.range.endLine && inner.range.endCol <= outer.range.endCol))
  );
}

function withinMask(m: Masks, g: GCall): boolean {
  return (m.byChunk.get(g.chunk) ?? []).some((o) => inside(o, g));
}

function addMask(m: Masks, g: GCall): void {
  let l = m.byChunk.get(g.chunk);
  if (!l) m.byChunk.set(g.chunk, (l = []));
  l.push(g);
}

/** Remembers where a mask is stored (`register_buffer("bias", …)`, `self.mask = …`). */
function addBuffer(m: Masks, g: GCall): void {
  if (g.f.buffer) m.buffers.set(`${g.classKey}|${g.f.buffer}`, g);
  if (g.f.binding?.startsWith('self.')) m.buffers.set(`${g.classKey}|${g.f.binding.slice(5)}`, g);
}

/** tril/triu of a square (or of something named like a mask): a causal mask. */
function triangularMasks(m: Masks): void {
  const { calls, taken, makeSite, measuredFor, shapes } = m.group;
  for (const g of calls) {
    if (taken.has(g) || !g.f.detailed) continue;
    const final = g.res.final;
    if (!TRI.has(final)) continue;
    const full = (m.chunkCalls.get(g.chunk) ?? []).find((o) => FULL_LIKE.has(o.res.final) && inside(g, o));
    const receiver = g.f.callee.slice(0, -final.length - 1);
    const input = full ? full.f.callee : (g.f.arg0 ?? receiver).trim();
    if (!full && /^(self\.)?[A-Za-z_]\w*$/.test(input)) {
      // `mask = torch.full((L, L), -inf); mask = torch.triu(mask, 1)`: one mask, reported where it is built.
      const built = calls.find(
        (o) => FULL_LIKE.has(o.res.final) && o.f.binding === input && (input.startsWith('self.') ? o.classKey === g.classKey : o.funcKey === g.funcKey),
      );
      if (built) {
        m.forced.add(built);
        continue;
      }
    }
    if (!full && !/mask|ones|causal|bias/i.test(input)) continue;
    if (withinMask(m, g)) continue;
    addMask(m, g);
    addBuffer(m, g);
    const est = measuredEstimate(measuredFor(g)) ?? maskEstimate(shapes, full);
    makeSite(g, 'attn-mask', 'call', argMap(g.f, ['input', 'diagonal']), est, { remedy: causalRemedy(m.causalSdpa, g) });
  }
}

/** Square tensors filled as masks, expanded padding masks, outer products of masks, HF mask helpers. */
function squareMasks(m: Masks): void {
  const { calls, chunks, taken, makeSite, measuredFor, shapes } = m.group;
  // The class's own methods (`self._create_attention_masks(...)`): their masks are reported inside them.
  const classMethods = new Set(chunks.flatMap((c) => c.facts.defs.filter((d) => d.kind === 'func').map((d) => d.name)));
  for (const g of calls) {
    if (taken.has(g) || !g.f.detailed) continue;
    const final = g.res.final;
    if (FULL_LIKE.has(final) && !final.endsWith('_like')) {
      if (withinMask(m, g)) continue;
      const dims = fullDims(g);
      if (dims.length < 2 || normDim(dims[dims.length - 1]) !== normDim(dims[dims.length - 2])) continue;
      const a = argMap(g.f, []);
      const fill = final.endsWith('full') ? (g.f.args.filter((x) => x.name === null)[1]?.text ?? a['fill_value']) : undefined;
      const name = `${g.f.binding ?? ''} ${g.f.buffer ?? ''}`;
      // Index tables (`torch.empty((N, N), dtype=torch.long)`) are square too, but no mask.
      const dtype = g.f.args.find((x) => x.name === 'dtype')?.text ?? '';
      if (/long|int(8|16|32|64)?$/.test(dtype) && !dtype.includes('uint8')) continue;
      const isMask = m.forced.has(g) || (fill !== undefined && NEG_INF.test(fill)) || /mask|causal/i.test(name);
      if (!isMask) continue;
      addMask(m, g);
      addBuffer(m, g);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), measuredEstimate(measuredFor(g)) ?? maskEstimate(shapes, g), { remedy: causalRemedy(m.causalSdpa, g) });
      continue;
    }
    if (final === 'expand' || final === 'repeat') {
      const pos = g.f.args.filter((x) => x.name === null);
      // (B, 1, L, S) padding masks, (B, L, L) before a repeat per head, (B/nW, nW, H, N, N) window masks.
      if (pos.length < 3 || pos.length > 5 || g.f.args.length !== pos.length) continue;
      const receiver = g.f.callee.slice(0, -final.length - 1);
      if (!/mask/i.test(receiver) || NOT_ATTN_MASK.test(receiver)) continue;
      if (withinMask(m, g)) continue;
      addMask(m, g);
      makeSite(g, 'attn-mask', 'call', argMap(g.f, ['d0', 'd1', 'd2', 'd3']), expandEstimate(shapes, g, pos.map((p) => p.text)), {
        remedy: PADDING_REMEDY,
      });
      continue;
    }
    if (final === 'repeat_interleave' || final === 'unsqueeze') {
      // `mask.expand(B, L, L).repeat_interleave(H, dim=0)` (B·H × L × L) and outer products
      // `m.unsqueeze(1) * m.unsqueeze(2)` / Swin's `mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)`.
      // Once per statement: `m.expand(B, T, -1).repeat_interleave(H, dim=0)` is one mask.
      const holdsMask = (m.byChunk.get(g.chunk) ?? []).some((o) => inside(g, o));
      if (withinMask(m, g) || holdsMask || !paddingMaskBuild(g, m.chunkCalls.get(g.chunk) ?? [])) continue;
      addMask(m, g);
      const windowed = /window/i.test(g.f.callee);
      const est: Estimate = windowed
        ? { source: 'unknown', note: 'shifted-window mask: windows × N × N with N the window area, not read from the file' }
        : fromDims(shapes, ['batch', 'seqLen', 'seqLen'], 1, false, 'mask elements (one per query and key)');
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), measuredEstimate(measuredFor(g)) ?? est, {
        remedy: PADDING_REMEDY,
      });
      continue;
    }
    const written = g.alias ?? g.f.callee;
    if (maskHelperName(g.res) && !(written.startsWith('self.') && classMethods.has(final))) {
      const causal = final.includes('causal');
      makeSite(g, 'attn-mask', 'call', argMap(g.f, []), helperEstimate(shapes, g), {
        remedy: causal ? causalRemedy(m.causalSdpa, g) : PADDING_REMEDY,
      });
    }
  }
}

/** masked_fill / where with -inf applied to scores: the mask they apply, when not reported where it is built. */
function appliedMasks(m: Masks): void {
  const { calls, taken, makeSite, measuredFor, shapes } = m.group;
  for (const g of calls) {
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
        maskText = pos[1] ?? kw['mask'];
        fill = pos[2] ?? kw['value'];
      } else {
        receiver = g.f.callee.slice(0, -final.length - 1);
        maskText = pos[0] ?? kw['mask'];
        fill = pos[1] ?? kw['value'];
      }
    } else if (final === 'where' && g.res.qname === 'torch.where') {
      maskText = pos[0];
      receiver = pos[1] ?? '';
      fill = pos[2];
      if (!maskText || !/mask|bias|causal/i.test(maskText)) continue;
    } else continue;
    if (!fill || !maskText || !NEG_INF.test(fill)) continue;
    const bufferRef = /self\.(\w+)/.exec(maskText);
    const buffer = bufferRef ? m.buffers.get(`${g.classKey}|${bufferRef[1]}`) : undefined;
    // Filling the mask itself (turning a bool mask into an additive one) applies nothing.
    if (/mask|bias/i.test(receiver)) continue;
    if (!buffer && !SCORES.test(receiver) && !/bias|causal|tril|triu/i.test(maskText)) continue;
    const measured = measuredFor(g);
    const est: Estimate = measured
      ? fromReport(measured, false)
      : buffer || /bias|causal|tril|triu/i.test(maskText)
        ? fromDims(shapes, ['seqLen', 'seqLen'], 1, false, 'mask elements (bool)')
        : fromDims(shapes, ['batch', 'seqLen', 'seqLen'], 1, false, 'mask elements (bool, one per query and key)');
    const causal = !!buffer || /causal|tril|triu|bias/i.test(maskText);
    makeSite(g, 'attn-mask', 'call', final === 'where' ? { condition: maskText, input: receiver, other: fill } : { mask: maskText, value: fill }, est, {
      remedy: causal ? causalRemedy(m.causalSdpa, g) : PADDING_REMEDY,
    });
  }
}

/**
 * Additive masks built on their own: `m = torch.zeros(L, S); m.masked_fill_(~keep, -inf)` and
 * `mask.masked_fill(mask == 0, -1e8)`, where nothing else in the function already reported the mask.
 */
function additiveMasks(m: Masks): void {
  const { calls, taken, sites, file, makeSite, measuredFor, shapes } = m.group;
  for (const g of calls) {
    if (taken.has(g) || !g.f.detailed) continue;
    const target = additiveMaskBuild(g, calls, sites, file);
    if (!target) continue;
    addMask(m, target);
    makeSite(target, 'attn-mask', 'call', argMap(target.f, []), measuredEstimate(measuredFor(target)) ?? fromDims(shapes, ['seqLen', 'seqLen'], 1, false, 'mask elements'), {
      remedy: causalRemedy(m.causalSdpa, target),
    });
  }
}

function causalRemedy(causalSdpa: ReadonlySet<string>, g: GCall): string {
  let s = 'Pass is_causal=True to F.scaled_dot_product_attention (or causal=True to flash-attn) and drop this mask: the fused kernel masks without materialising it.';
  if (causalSdpa.has(g.classKey ?? '')) s += ' This class already does so on another path; the mask only serves the eager one.';
  return s;
}

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
