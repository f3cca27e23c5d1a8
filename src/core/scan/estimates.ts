/**
 * What each site stores, from the report where it names the site's lines, else from the
 * shapes the file and the settings give. Each returns the estimate a site carries.
 */
import { fullDims, normDim } from './args';
import type { GCall, Group } from './context';
import { type ConfigTable, dtypeBytes, evalDim, fromDims, fromReport, type Role, type ShapeContext } from './shapes';
import type { Estimate, MeasuredLine } from './types';

/**
 * A dropout's mask: none where p is 0 (as written or in the file's config defaults) or where
 * the dropout only runs on the fallback of a fused path; else one element per input element.
 */
export function dropoutEstimate(group: Group, g: GCall, attn: boolean, p: string | undefined, fallback = false): Estimate {
  const ctx = group.shapes;
  const m = group.measuredFor(g);
  if (m) return fromReport(m, true);
  if (p !== undefined && /^0*\.?0*$/.test(p.trim()) && p.trim() !== '.') {
    return { elements: 0, maskBytes: 0, packedBytes: 0, source: 'config', note: 'p is 0 as written: no mask is kept' };
  }
  const zero = zeroByConfig(p, group.env.config);
  if (zero) return { elements: 0, maskBytes: 0, packedBytes: 0, source: 'config', note: zero };
  if (fallback) return fallbackEstimate();
  return attn
    ? fromDims(ctx, ['batch', 'heads', 'seqLen', 'seqLen'], 1, true, 'mask elements')
    : fromDims(ctx, ['batch', 'seqLen', 'hidden'], 1, true, 'mask elements (assuming a (B, L, d) input)');
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

/** A dropout inside a fused attention kernel: the attention's size, and no mask. */
export function fusedDropoutEstimate(group: Group, g: GCall): Estimate {
  const m = group.measuredFor(g);
  const est: Estimate = m ? fromReport(m, false) : fromDims(group.shapes, ['batch', 'heads', 'seqLen', 'seqLen'], 0, false, 'attention elements');
  est.maskBytes = 0;
  delete est.packedBytes;
  est.note = `the fused kernel keeps only an RNG seed and offset, no mask${est.note ? `; ${est.note}` : ''}`;
  return est;
}

/** An attention mask's figures from the report: no packed size, as bit-packing is for dropout masks. */
export function measuredEstimate(m: MeasuredLine | undefined): Estimate | undefined {
  return m ? fromReport(m, false) : undefined;
}

/**
 * A mask built by ones/full/zeros/empty (`full`; none for tril/triu of something else):
 * its written dims and dtype where they evaluate, else L×L from settings or config.
 */
export function maskEstimate(ctx: ShapeContext, full: GCall | undefined): Estimate {
  if (!full) return fromDims(ctx, ['seqLen', 'seqLen'], 4, false, 'mask elements (float32 assumed)');
  const dtype = full.f.args.find((a) => a.name === 'dtype')?.text;
  let bpe = dtypeBytes(dtype);
  const assumed = bpe === undefined;
  // Without a literal dtype: float32, torch's default (numpy's is float64).
  bpe ??= /^(numpy|np)\./.test(full.res.qname ?? full.f.callee) ? 8 : 4;
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

/** What an expanded dimension is, by its name, when it does not evaluate to a number. */
const ROLE_OF_NAME: [RegExp, Role][] = [
  [/^(bsz|bs|b|batch|batch_size|n_batch)$/i, 'batch'],
  [/head/i, 'heads'],
  [/len|seq|^[tsl]$|tgt|src|query_length|key_value_length|n_ctx/i, 'seqLen'],
];

/** A padding mask expanded to (B, 1, L, S) and the like: one element per written dimension. */
export function expandEstimate(ctx: ShapeContext, g: GCall, dims: string[]): Estimate {
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

/** A mask built by an HF helper: (B, 1, L, L) in the model dtype. */
export function helperEstimate(ctx: ShapeContext, g: GCall): Estimate {
  const m = ctx.measured([g.range.startLine]);
  if (m) return fromReport(m, false);
  return fromDims(ctx, ['batch', 'seqLen', 'seqLen'], 4, false, '(B, 1, L, L) mask elements (float32 assumed: built in the model dtype)');
}

/** An FFN's weights, [in, out] per projection: the elements 2:4 sparsity would halve. */
export function ffnEstimate(widths: (number | undefined)[][]): Estimate {
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
