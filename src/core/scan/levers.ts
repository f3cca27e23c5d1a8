/**
 * The advisor's levers and what each saves: eager attention → fused SDPA, activation
 * checkpointing, bf16 autocast, fused/foreach AdamW.
 *
 * Each estimate comes from the last measured report where it names these lines or modules
 * (basis `measured`), else from the static shapes (settings, literal config values) with
 * the formulas below (basis `estimate`). A lever whose torch feature the installed torch
 * lacks is still estimated, marked unavailable.
 */
import type { Env } from './context';
import { formatBytes } from '../units';
import { type Dim, fromDims, type ShapeContext } from './shapes';
import type { Advice, Estimate, EstimateShape, MeasuredModule, TorchCapabilities, TorchFeature } from './types';

// ---------------------------------------------------------------------------
// Formulas. Bytes per element assume CUDA: dropout masks are bool (1 B); pass
// maskBytes = 4 for CPU, where dropout keeps a float mask.

/**
 * Bytes per attention-probability element (B·H·L² per layer) that eager attention
 * keeps for backward and a fused kernel does not:
 *   softmax output, kept by its backward: 4 B (fp32; autocast runs softmax in fp32)
 *   with dropout: its mask (maskBytes) + the dropped probabilities kept by `@ v` (2 B under autocast, 4 B in fp32)
 *   without dropout under autocast: `@ v` keeps a bf16 copy of the probabilities (2 B); in fp32 it keeps the softmax output itself
 * Under bf16 autocast with dropout that is 7 B/element; in fp32 with dropout, 9. Measured
 * (kernels/benchmarks/results/advisor_NVIDIA-H200.json): HF BERT-large 16×512 in fp32
 * (24 layers × 16 heads, 1.61e9 probability elements) peaked 14.48e9 B lower with SDPA
 * than eager: 8.99 B per element.
 */
export function eagerBytesPerElement(amp: boolean, dropout: boolean, maskBytes = 1): number {
  return 4 + (dropout ? maskBytes + (amp ? 2 : 4) : amp ? 2 : 0);
}

/** What a fused kernel keeps instead, per query row: the fp32 log-sum-exp of the softmax. */
export const SDPA_BYTES_PER_ROW = 4;

/**
 * Activations one standard transformer block keeps for backward (Korthikanti et al.
 * 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 1):
 * 34·B·L·d bytes in 16-bit training — 16 values of B·L·d at 2 B (QKV input, Q, K, V,
 * projection input, two LayerNorm inputs, MLP input, 4× GeLU input and 4× second
 * linear input) plus two dropout masks at 1 B; in fp32 the 16 values take 4 B: 66·B·L·d.
 * Eager attention adds B·H·L²·eagerBytesPerElement; a fused kernel only B·H·L·4.
 */
export function blockActivationBytes(o: { batch: number; seqLen: number; hidden: number; heads?: number; amp: boolean; eager: boolean; dropout?: boolean; maskBytes?: number }): number {
  const maskBytes = o.maskBytes ?? 1;
  const perToken = 16 * (o.amp ? 2 : 4) + 2 * maskBytes;
  let bytes = o.batch * o.seqLen * o.hidden * perToken;
  if (o.heads !== undefined) {
    const rows = o.batch * o.heads * o.seqLen;
    bytes += o.eager ? rows * o.seqLen * eagerBytesPerElement(o.amp, o.dropout ?? true, maskBytes) : rows * SDPA_BYTES_PER_ROW;
  }
  return bytes;
}

/**
 * Checkpointing n blocks keeps each block's input (X bytes) instead of its
 * activations (A bytes), and re-materialises one block's activations at a time in
 * backward: saving = n·A − (n·X + A) = (n − 1)·A − n·X.
 */
export function checkpointSaving(blocks: number, perBlock: number, input: number): number {
  return Math.max(0, (blocks - 1) * perBlock - blocks * input);
}

/**
 * Weights of a transformer: per block 4·d² (Q, K, V, output) + 2·d·I (the FFN, I = 4·d
 * when not written), plus the token and position embeddings. Biases and norms left out.
 */
export function transformerParams(o: { layers: number; hidden: number; intermediate?: number; vocab?: number; positions?: number }): number {
  const d = o.hidden;
  const inter = o.intermediate ?? 4 * d;
  return o.layers * (4 * d * d + 2 * d * inter) + (o.vocab ?? 0) * d + (o.positions ?? 0) * d;
}

// ---------------------------------------------------------------------------
// Capabilities.

/** How each feature is named to users. */
export const FEATURE_TEXT: Record<TorchFeature, string> = {
  sdpa: 'F.scaled_dot_product_attention',
  'sdpa-scale': 'the scale= argument of F.scaled_dot_product_attention',
  'is-causal': 'is_causal=True in F.scaled_dot_product_attention',
  'autocast-bf16-cuda': 'bf16 autocast on CUDA',
  'autocast-bf16-cpu': 'bf16 autocast on CPU',
  cuda: 'a CUDA device',
  'cuda-bf16': 'bf16 on its CUDA device',
  'checkpoint-non-reentrant': 'non-reentrant activation checkpointing (use_reentrant=False)',
  'adamw-fused': 'fused AdamW (fused=True)',
  'adamw-foreach': 'multi-tensor AdamW (foreach=True)',
};

export const DOCS = {
  sdpa: 'https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html',
  hf: 'https://huggingface.co/docs/transformers/perf_train_gpu_one',
  autocast: 'https://pytorch.org/docs/stable/amp.html',
  checkpoint: 'https://pytorch.org/docs/stable/checkpoint.html',
  optimizer: 'https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html',
} as const;

/** Sets `unavailable` when the installed torch is known to lack a required feature. */
export function applyCapabilities(advice: Advice, caps: TorchCapabilities | undefined): Advice {
  if (!caps) return advice;
  const missing = (advice.requires ?? []).filter((f) => caps.features[f] === false);
  if (missing.length) advice.unavailable = `the installed torch (${caps.torch}) has no ${missing.map((f) => FEATURE_TEXT[f]).join(' and no ')}`;
  return advice;
}

/** The closing words of an advisor message: whether the advice was checked against a torch. */
export function capabilityNote(caps: TorchCapabilities | undefined | null): string {
  return caps ? '' : ' Not checked against an installed torch.';
}

// ---------------------------------------------------------------------------
// Estimates.

function layersOf(ctx: ShapeContext): Dim | undefined {
  return ctx.configDim('layers');
}

/** Sums what the report kept on these 1-based lines (each line once). */
function savedOn(env: Env, lines: readonly (number | undefined)[]): number[] | undefined {
  const by = env.opts.hints?.savedByLine;
  if (!by) return undefined;
  const seen = new Set<number>();
  const out: number[] = [];
  for (const l of lines) {
    if (l === undefined || seen.has(l)) {
      out.push(0);
      continue;
    }
    seen.add(l);
    out.push(by.get(l) ?? 0);
  }
  return out;
}

/** Per-block totals of the measured modules under a list built at `line` (1-based), or under the largest list. */
export function measuredBlocks(modules: readonly MeasuredModule[], line?: number): { path: string; blocks: number[] } | undefined {
  const lists = modules.filter((m) => (m.type === 'ModuleList' || m.type === 'Sequential') && (line === undefined || m.createdLine === line));
  let best: { path: string; blocks: number[] } | undefined;
  for (const list of lists) {
    const prefix = list.path ? `${list.path}.` : '';
    const sums = new Map<string, number>();
    for (const m of modules) {
      // `prefix` + digits, then a dot or the end (paths come from a report: string
      // operations, never a RegExp built from them).
      if (!m.path.startsWith(prefix)) continue;
      const rest = m.path.slice(prefix.length);
      const dot = rest.indexOf('.');
      const index = dot < 0 ? rest : rest.slice(0, dot);
      if (!/^\d+$/.test(index)) continue;
      sums.set(index, (sums.get(index) ?? 0) + m.savedBytes);
    }
    if (sums.size < 2) continue;
    const blocks = [...sums.values()];
    if (!best || blocks.reduce((a, b) => a + b, 0) > best.blocks.reduce((a, b) => a + b, 0)) best = { path: list.path, blocks };
  }
  return best;
}

/** Estimate and advice for an eager attention chain. Rows are absolute (0-based). */
export function eagerAttnAdvice(
  env: Env,
  ctx: ShapeContext,
  parts: { softmaxLine: number; dropoutLine?: number | undefined; outputLine?: number | undefined; dropout: boolean; form: 'eager-block' | 'hf-eager' },
): { estimate: Estimate; advice: Advice } {
  const amp = !!env.advice.amp;
  // A rewrite may pass the block's own scale= only where the installed torch is known to take it
  // (SDPA before 2.1 has no scale=): then the proposal needs that feature too.
  const scale = parts.form === 'eager-block' && env.opts.capabilities?.features['sdpa-scale'] === true;
  const advice: Advice = { lever: 'sdpa', basis: 'estimate', requires: scale ? ['sdpa', 'sdpa-scale'] : ['sdpa'], docs: parts.form === 'hf-eager' ? DOCS.hf : DOCS.sdpa };
  const run = env.opts.hints?.run;
  if (parts.form === 'eager-block') {
    // Lines are relative to the group; the report counts from the file's first line, 1-based.
    const at = (l: number | undefined) => (l === undefined ? undefined : l + ctx.rowOffset + 1);
    const saved = savedOn(env, [at(parts.softmaxLine), at(parts.dropoutLine), at(parts.outputLine)]);
    if (saved && (saved[0] ?? 0) > 0) {
      const [probs = 0, mask = 0, out = 0] = saved;
      // `@ v` keeps the dropped (or cast) probabilities next to v: count at most the probabilities' size.
      const copy = parts.dropout || amp ? Math.min(out, probs) : 0;
      advice.savingBytes = probs + mask + copy;
      advice.basis = 'measured';
      return {
        advice: applyCapabilities(advice, env.opts.capabilities),
        estimate: {
          source: 'report',
          note: `probabilities ${formatBytes(probs)} on the softmax line${mask ? `, ${formatBytes(mask)} on the dropout line` : ''}${copy ? `, ${formatBytes(copy)} of the copy kept by the product with v` : ''}`,
        },
      };
    }
  } else if (run?.thisFile && run.softmaxBytes) {
    advice.savingBytes = run.softmaxBytes + (run.attnMaskBytes ?? 0);
    advice.basis = 'measured';
    return {
      advice: applyCapabilities(advice, env.opts.capabilities),
      estimate: { source: 'report', note: 'softmax outputs and attention-dropout masks (the copy kept by the product with v not counted)' },
    };
  }
  const est = fromDims(ctx, ['batch', 'heads', 'seqLen', 'seqLen'], 1, false, 'attention probabilities');
  delete est.maskBytes;
  if (est.elements !== undefined && est.shape?.seqLen) {
    const layers = layersOf(ctx);
    const n = layers?.value ?? 1;
    const bpe = eagerBytesPerElement(amp, parts.dropout);
    const perLayer = est.elements * bpe - (est.elements / est.shape.seqLen) * SDPA_BYTES_PER_ROW;
    advice.savingBytes = Math.max(0, n * perLayer);
    est.elements *= n;
    est.note = `${est.note}; ${layers ? `× ${n} layers from ${layers.label}` : 'one layer (no layer count in the file)'}; ${bpe} B per element (${
      amp ? 'autocast: fp32 softmax output' : 'fp32 softmax output'
    }${parts.dropout ? `, 1 B dropout mask, ${amp ? 2 : 4} B dropped copy` : amp ? ', 2 B bf16 copy' : ''}) less SDPA's 4 B per row`;
  }
  return { advice: applyCapabilities(advice, env.opts.capabilities), estimate: est };
}

/**
 * `measured`: where to look in the report: the list built at `line` (1-based), any
 * list (`{}`, for an HF model built here), or nowhere (undefined).
 */
export function checkpointAdvice(env: Env, ctx: ShapeContext, measured: { line?: number } | undefined): { estimate: Estimate; advice: Advice } {
  const amp = !!env.advice.amp;
  const advice: Advice = {
    lever: 'checkpoint',
    basis: 'estimate',
    cost: 'recompute: about one extra forward pass per step (~+20–35% step time)',
    requires: ['checkpoint-non-reentrant'],
    docs: DOCS.checkpoint,
  };
  const modules = env.opts.hints?.modules;
  const found = modules && measured ? measuredBlocks(modules, measured.line) : undefined;
  if (found) {
    const total = found.blocks.reduce((a, b) => a + b, 0);
    const max = Math.max(...found.blocks);
    advice.savingBytes = total - max;
    advice.basis = 'measured';
    return {
      advice: applyCapabilities(advice, env.opts.capabilities),
      estimate: {
        source: 'report',
        note: `${found.blocks.length} blocks under ${found.path || 'the model'} kept ${formatBytes(total)}; one block is re-materialised in backward; the input each block keeps is not subtracted (an upper bound)`,
      },
    };
  }
  const B = ctx.dim('batch');
  const L = ctx.dim('seqLen');
  const d = ctx.dim('hidden');
  const H = ctx.dim('heads');
  const n = layersOf(ctx);
  const missing = [L ? '' : 'L (seqLen)', d ? '' : 'd (hidden)', n ? '' : 'the number of blocks'].filter(Boolean);
  if (!L || !d || !n) return { advice: applyCapabilities(advice, env.opts.capabilities), estimate: { source: 'unknown', note: `shape unknown: no ${missing.join(', ')} in the file; set membit.shapes` } };
  const batch = B?.value ?? 1;
  const perBlock = blockActivationBytes({ batch, seqLen: L.value, hidden: d.value, ...(H ? { heads: H.value } : {}), amp, eager: env.advice.eager });
  const input = batch * L.value * d.value * (amp ? 2 : 4);
  advice.savingBytes = checkpointSaving(n.value, perBlock, input);
  const shape: EstimateShape = { seqLen: L.value, hidden: d.value };
  if (B) shape.batch = B.value;
  if (H) shape.heads = H.value;
  const dims = [B, L, d, H, n].filter((x): x is Dim => !!x);
  const est: Estimate = {
    source: dims.some((x) => x.origin === 'settings') ? 'settings' : 'config',
    shape,
    note: `(n−1)·A − n·X with n=${n.value} blocks, A = ${amp ? 34 : 66}·B·L·d${H ? (env.advice.eager ? ' + eager attention B·H·L²' : ' + B·H·L·4') : ''} per block (Korthikanti et al. 2022), X = B·L·d·${amp ? 2 : 4} kept per block; ${dims
      .map((x) => `${x.label}=${x.value}`)
      .join(', ')}${B ? '' : '; per sample (no batch size known)'}`,
  };
  if (!B) est.perSample = true;
  return { advice: applyCapabilities(advice, env.opts.capabilities), estimate: est };
}

export function optimizerAdvice(env: Env, ctx: ShapeContext): { estimate: Estimate; advice: Advice; stateBytes?: number; params?: number } {
  const caps = env.opts.capabilities;
  // Fused where this torch has it; else foreach; the lever is unavailable only when it has neither.
  const requires: TorchFeature[] = caps?.features['adamw-fused'] === false && caps.features['adamw-foreach'] !== false ? ['adamw-foreach'] : ['adamw-fused'];
  const advice: Advice = { lever: 'fused-optimizer', basis: 'estimate', requires, docs: DOCS.optimizer, cost: 'none: the same update, fewer kernel launches' };
  const run = env.opts.hints?.run;
  if (run?.thisFile && run.optimizerState) {
    advice.basis = 'measured';
    return {
      advice: applyCapabilities(advice, caps),
      stateBytes: run.optimizerState,
      ...(run.params !== undefined ? { params: Math.round(run.params / 4) } : {}),
      estimate: { source: 'report', note: 'the optimizer state' },
    };
  }
  const n = layersOf(ctx);
  const d = ctx.dim('hidden');
  if (!n || !d) return { advice: applyCapabilities(advice, caps), estimate: { source: 'unknown', note: 'parameter count unknown: 8 B per parameter' } };
  const vocab = ctx.configDim('vocab');
  const inter = ctx.configDim('intermediate');
  const L = ctx.dim('seqLen');
  const params = transformerParams({ layers: n.value, hidden: d.value, ...(inter ? { intermediate: inter.value } : {}), ...(vocab ? { vocab: vocab.value } : {}), ...(L ? { positions: L.value } : {}) });
  const dims = [n, d, inter, vocab, L].filter((x): x is Dim => !!x);
  return {
    advice: applyCapabilities(advice, caps),
    stateBytes: params * 8,
    params,
    estimate: {
      elements: params,
      source: dims.some((x) => x.origin === 'settings') ? 'settings' : 'config',
      note: `~${params.toLocaleString('en-US')} parameters = n·(4d² + 2·d·I) + V·d + L·d (biases and norms left out); ${dims.map((x) => `${x.label}=${x.value}`).join(', ')}`,
    },
  };
}

export function autocastAdvice(env: Env, ctx: ShapeContext): { estimate: Estimate; advice: Advice } {
  const caps = env.opts.capabilities;
  // A torch built without CUDA can still train in bf16 on the CPU: the lever then needs CPU autocast.
  const requires: TorchFeature[] = caps?.features['autocast-bf16-cuda'] === false && caps.features['autocast-bf16-cpu'] !== false ? ['autocast-bf16-cpu'] : ['autocast-bf16-cuda'];
  const advice: Advice = { lever: 'autocast', basis: 'estimate', requires, docs: DOCS.autocast, cost: 'bf16 rounding: keep the loss and optimizer in fp32 (autocast does)' };
  const run = env.opts.hints?.run;
  if (run?.thisFile && run.activationsAtPeak) {
    // bf16 halves most saved activations; autocast also caches a bf16 copy of each weight (half the fp32 weights).
    advice.savingBytes = Math.max(0, Math.round(run.activationsAtPeak / 2 - (run.params ?? 0) / 2));
    return {
      advice: applyCapabilities(advice, env.opts.capabilities),
      estimate: { source: 'report', note: `half of the ${formatBytes(run.activationsAtPeak)} of activations measured at the peak, less bf16 copies of the weights (an estimate: softmax and norms stay fp32)` },
    };
  }
  const B = ctx.dim('batch');
  const L = ctx.dim('seqLen');
  const d = ctx.dim('hidden');
  const H = ctx.dim('heads');
  const n = layersOf(ctx);
  if (!L || !d || !n) {
    const missing = [L ? '' : 'L (seqLen)', d ? '' : 'd (hidden)', n ? '' : 'the number of layers'].filter(Boolean);
    return { advice: applyCapabilities(advice, env.opts.capabilities), estimate: { source: 'unknown', note: `shape unknown: no ${missing.join(', ')} in the file; set membit.shapes` } };
  }
  const batch = B?.value ?? 1;
  const shape = { batch, seqLen: L.value, hidden: d.value, ...(H ? { heads: H.value } : {}), eager: env.advice.eager };
  const fp32 = blockActivationBytes({ ...shape, amp: false });
  const bf16 = blockActivationBytes({ ...shape, amp: true });
  // The bf16 weight copies autocast caches are paid once, not per sample: only subtracted with a batch size.
  const copies = B ? transformerParams({ layers: n.value, hidden: d.value }) * 2 : 0;
  advice.savingBytes = Math.max(0, n.value * (fp32 - bf16) - copies);
  const dims = [B, L, d, H, n].filter((x): x is Dim => !!x);
  const est: Estimate = {
    source: dims.some((x) => x.origin === 'settings') ? 'settings' : 'config',
    shape: { seqLen: L.value, hidden: d.value, ...(B ? { batch: B.value } : {}), ...(H ? { heads: H.value } : {}) },
    note: `n·(A_fp32 − A_bf16)${B ? ' − 2 B per weight (bf16 copies of the block weights)' : ''}, A per block as for checkpointing (66 vs 34·B·L·d); ${dims.map((x) => `${x.label}=${x.value}`).join(', ')}${
      B ? '' : '; per sample (no batch size known; the bf16 weight copies are not subtracted)'
    }`,
  };
  if (!B) est.perSample = true;
  return { advice: applyCapabilities(advice, env.opts.capabilities), estimate: est };
}
