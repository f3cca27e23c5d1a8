/**
 * Import aliases and the names the scanner knows. A callee as written
 * (`D`, `nn.functional.dropout`, `F.dropout`) is resolved to a canonical dotted
 * name (`torch.nn.Dropout`, `torch.nn.functional.dropout`) through the file's
 * imports; the site tables below are keyed by canonical names.
 */

/** One name an import statement binds. */
export interface ImportFact {
  /** The local name (`F`, `nn`, `Dropout`, `D`); empty for `from m import *`. */
  local: string;
  /** What it stands for, canonicalised (`torch.nn.functional`, `torch.nn.Dropout`). */
  target: string;
  /** `from target import *`. */
  star: boolean;
}

/** How a callee's head name was bound. */
export type Binding = 'import' | 'star' | 'local' | 'fallback' | 'member' | 'unbound' | 'expr';

export interface Resolved {
  /** Canonical dotted name, or null for member calls (`self.x(...)`), locals and expressions. */
  qname: string | null;
  binding: Binding;
  /** Last identifier of the callee as written (`dropout` for `F.dropout`), '' for `f(...)(...)`. */
  final: string;
}

export const DROPOUT_CLASSES = new Set(
  ['Dropout', 'Dropout1d', 'Dropout2d', 'Dropout3d', 'AlphaDropout', 'FeatureAlphaDropout'].map((n) => `torch.nn.${n}`),
);

/** Functional dropouts and their parameters in order, for reading positional arguments. */
export const DROPOUT_FUNCS = new Map<string, readonly string[]>([
  ...['dropout', 'dropout1d', 'dropout2d', 'dropout3d', 'alpha_dropout', 'feature_alpha_dropout'].map(
    (n) => [`torch.nn.functional.${n}`, ['input', 'p', 'training', 'inplace']] as const,
  ),
  ...['dropout', 'dropout_', 'alpha_dropout', 'alpha_dropout_', 'feature_dropout', 'feature_dropout_', 'feature_alpha_dropout', 'feature_alpha_dropout_', 'native_dropout'].map(
    (n) => [`torch.${n}`, ['input', 'p', 'train']] as const,
  ),
]);

export const SDPA = 'torch.nn.functional.scaled_dot_product_attention';
export const SDPA_PARAMS = ['query', 'key', 'value', 'attn_mask', 'dropout_p', 'is_causal', 'scale', 'enable_gqa'];

/** Fused attention kernels outside torch that take a dropout probability and keep no mask. */
export const FUSED_ATTENTION = new Map<string, { module: string; params: readonly string[]; dropout: string }>([
  ['flash_attn_func', { module: 'flash_attn', params: ['q', 'k', 'v', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' }],
  ['flash_attn_qkvpacked_func', { module: 'flash_attn', params: ['qkv', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' }],
  ['flash_attn_kvpacked_func', { module: 'flash_attn', params: ['q', 'kv', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' }],
  [
    'flash_attn_varlen_func',
    { module: 'flash_attn', params: ['q', 'k', 'v', 'cu_seqlens_q', 'cu_seqlens_k', 'max_seqlen_q', 'max_seqlen_k', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' },
  ],
  ['flash_attn_varlen_qkvpacked_func', { module: 'flash_attn', params: ['qkv', 'cu_seqlens', 'max_seqlen', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' }],
  [
    'flash_attn_varlen_kvpacked_func',
    { module: 'flash_attn', params: ['q', 'kv', 'cu_seqlens_q', 'cu_seqlens_k', 'max_seqlen_q', 'max_seqlen_k', 'dropout_p', 'softmax_scale', 'causal'], dropout: 'dropout_p' },
  ],
  ['memory_efficient_attention', { module: 'xformers', params: ['query', 'key', 'value', 'attn_bias', 'p', 'scale'], dropout: 'p' }],
  // HF's wrappers around flash-attn take `dropout=` (transformers.modeling_flash_attention_utils, integrations.flash_attention).
  ['_flash_attention_forward', { module: 'transformers', params: ['query_states', 'key_states', 'value_states', 'attention_mask', 'query_length'], dropout: 'dropout' }],
  ['flash_attention_forward', { module: 'transformers', params: ['module', 'query', 'key', 'value', 'attention_mask'], dropout: 'dropout' }],
]);

/** Constructors of dense projections, with the order of their parameters. */
export const LINEAR_PARAMS: Record<string, readonly string[]> = {
  'torch.nn.Linear': ['in_features', 'out_features', 'bias'],
  'torch.nn.Conv1d': ['in_channels', 'out_channels', 'kernel_size'],
  'torch.nn.Conv2d': ['in_channels', 'out_channels', 'kernel_size'],
  // HF's GPT-2 style Conv1D is a transposed Linear: Conv1D(nf=out, nx=in).
  Conv1D: ['nf', 'nx'],
  ColumnParallelLinear: ['input_size', 'output_size'],
  RowParallelLinear: ['input_size', 'output_size'],
};

/**
 * MLP modules defined elsewhere (timm, torchvision, common research code): an
 * instantiation is a whole up/down pair.
 */
export const MLP_MODULES = new Set([
  'Mlp', 'GluMlp', 'SwiGLU', 'SwiGLUPacked', 'GatedMlp', 'ConvMlp', 'MLP', 'MlpBlock', 'MLPBlock',
  'FeedForward', 'FeedForwardNetwork', 'PositionwiseFeedForward', 'PositionWiseFeedForward', 'PositionwiseFeedforward', 'FFN',
]);
/** Constructor parameters timm-style blocks call to build their MLP (`mlp_layer(...)`). */
export const MLP_FACTORY_PARAMS = new Set(['mlp_layer', 'ffn_layer', 'mlp_block', 'mlp_cls', 'ffn_cls']);
export const MLP_MODULE_PARAMS = ['in_features', 'hidden_features', 'out_features'];

/**
 * HF helpers that build 4-D (B, 1, L, L) or (L, L) attention masks, across releases. A
 * supplement only: helpers are also recognised by what they are called (see HF_MASK_HELPER)
 * and masks by how they are built.
 */
export const HF_MASK_HELPERS = new Set([
  '_prepare_4d_causal_attention_mask',
  '_prepare_4d_attention_mask',
  '_prepare_4d_causal_attention_mask_for_sdpa',
  '_prepare_4d_attention_mask_for_sdpa',
  '_prepare_4d_causal_attention_mask_with_cache_position',
  '_create_4d_causal_attention_mask',
  '_expand_mask',
  '_make_causal_mask',
  '_update_causal_mask',
  '_update_full_mask',
  '_update_cross_attn_mask',
  'create_causal_mask',
  'create_sliding_window_causal_mask',
  'create_chunked_causal_mask',
  'create_bidirectional_mask',
  'create_masks_for_generate',
  'create_bidirectional_sliding_window_mask',
]);
/**
 * The naming pattern of those helpers: (create|make|prepare|build|expand|update) … mask, with
 * something that says causal, 4-D, sliding window, bidirectional or attention. Not the
 * `*_mask_function` callables of masking_utils, which build nothing by themselves.
 */
export const HF_MASK_HELPER = /^_?(create|make|prepare|build|expand|update)_\w*?(causal|4d|sliding|window|bidirectional|attention|attn)\w*_mask(s)?(_for_\w+|_with_\w+)?$/;

/** An HF mask helper, by name (a release's list) or by its naming pattern; members only when private. */
export function maskHelperName(r: Resolved): boolean {
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
export function namedSite(r: Resolved): 'fused' | 'other' | null {
  const q = r.qname;
  if (q && (DROPOUT_CLASSES.has(q) || DROPOUT_FUNCS.has(q))) return 'other';
  if (q === SDPA) return 'fused';
  const fused = FUSED_ATTENTION.get(r.final);
  if (fused && q && (q.startsWith(fused.module) || r.binding === 'unbound' || r.binding === 'star')) return 'fused';
  return maskHelperName(r) ? 'other' : null;
}

/**
 * The last identifiers of every callee the scanner may care about. Calls whose
 * last identifier is outside this set (and that are not bare names, which may be
 * aliases) are not examined further: this keeps big files fast.
 */
export const INTERESTING_FINALS = new Set<string>([
  ...[...DROPOUT_CLASSES].map((q) => q.slice('torch.nn.'.length)),
  ...[...DROPOUT_FUNCS.keys()].map((q) => q.slice(q.lastIndexOf('.') + 1)),
  'scaled_dot_product_attention',
  ...FUSED_ATTENTION.keys(),
  'Linear', 'Conv1D', 'Conv1d', 'Conv2d', 'ColumnParallelLinear', 'RowParallelLinear', 'linear_layer',
  ...MLP_MODULES,
  ...MLP_FACTORY_PARAMS,
  'Softmax',
  'tril', 'triu', 'tril_', 'triu_',
  'ones', 'full', 'zeros', 'empty', 'ones_like', 'full_like', 'zeros_like', 'empty_like', 'new_ones', 'new_full', 'new_zeros', 'new_empty',
  'expand', 'repeat', 'masked_fill', 'masked_fill_', 'where',
  ...HF_MASK_HELPERS,
  'unsqueeze', 'repeat_interleave',
  // The memory advisor: optimizers, module lists of blocks, HF model constructors.
  'AdamW', 'Adam', 'ModuleList', 'Sequential', 'from_pretrained', '_from_config', 'from_config',
]);

/** Builtins that are never aliases of a site; skipping them saves work on every file. */
export const BUILTINS = new Set([
  'print', 'len', 'range', 'super', 'isinstance', 'issubclass', 'int', 'float', 'str', 'bool', 'getattr', 'setattr', 'hasattr',
  'list', 'dict', 'tuple', 'set', 'zip', 'enumerate', 'max', 'min', 'sum', 'abs', 'round', 'sorted', 'reversed', 'type', 'any',
  'all', 'iter', 'next', 'open', 'repr', 'format', 'map', 'filter', 'id', 'hash', 'vars', 'callable', 'divmod', 'pow', 'ord', 'chr',
  'ValueError', 'TypeError', 'RuntimeError', 'KeyError', 'NotImplementedError', 'AssertionError', 'Exception', 'ImportError',
]);

/** Relative-import module tails that, inside torch itself, are torch.nn. */
const TORCH_NN_TAILS = new Set(['dropout', 'linear', 'modules', 'activation', 'conv', 'nn']);

/** Canonical form of a dotted name: aliases torch itself uses for the same object collapse into one. */
export function canonical(q: string): string {
  let s = q;
  // torch.nn.modules.dropout.Dropout and torch.nn.modules.Dropout are torch.nn.Dropout.
  s = s.replace(/^torch\.nn\.modules(?:\.\w+)?\.(\w+)$/, 'torch.nn.$1');
  s = s.replace(/^torch\._VF\./, 'torch.');
  s = s.replace(/^torch\._C\._nn\.scaled_dot_product_attention$/, SDPA);
  s = s.replace(/^torch\.functional\./, 'torch.');
  return s;
}

/** Canonical module name for an import's module text, relative ones included. */
export function canonicalModule(moduleText: string): string {
  const m = moduleText.replace(/\s+/g, '');
  if (!m.startsWith('.')) return m;
  const parts = m.replace(/^\.+/, '').split('.').filter(Boolean);
  const tail = parts[parts.length - 1] ?? '';
  // `from .dropout import Dropout` and `from .. import functional as F` inside torch.nn.
  if (tail === 'functional') return 'torch.nn.functional';
  if (TORCH_NN_TAILS.has(tail)) return 'torch.nn';
  // HF modeling files import Conv1D and ACT2FN relatively.
  if (tail === 'pytorch_utils' || tail === 'modeling_utils') return 'transformers.pytorch_utils';
  if (tail === 'activations') return 'transformers.activations';
  if (tail === 'modeling_flash_attention_utils' || tail === 'masking_utils') return `transformers.${tail}`;
  if (tail === 'flash_attention' && parts[parts.length - 2] === 'integrations') return 'transformers.integrations.flash_attention';
  return m;
}

/** Conventional names used without an import in snippets and notebooks' later cells. */
const FALLBACK: Record<string, string> = { torch: 'torch', nn: 'torch.nn', F: 'torch.nn.functional' };

/** Names a `from torch.* import *` brings in, so a bare `Dropout` can be resolved. */
function starExports(module: string, name: string): boolean {
  const q = canonical(`${module}.${name}`);
  return DROPOUT_CLASSES.has(q) || DROPOUT_FUNCS.has(q) || q === SDPA || q in LINEAR_PARAMS;
}

export class Resolver {
  private readonly aliases = new Map<string, string>();
  private readonly stars: string[] = [];

  constructor(imports: readonly ImportFact[], private readonly moduleBound: ReadonlySet<string>) {
    for (const imp of imports) {
      if (imp.star) this.stars.push(imp.target);
      else if (!this.aliases.has(imp.local)) this.aliases.set(imp.local, imp.target);
    }
  }

  /** Is this local name bound by an import (so not by the user's own code)? */
  isImported(name: string): boolean {
    return this.aliases.has(name);
  }

  /**
   * Resolves a callee as written. `headLocal`: the first name is a parameter or
   * local variable of the enclosing function, which shadows any import.
   */
  resolve(callee: string, headLocal: boolean): Resolved {
    const final = /([A-Za-z_]\w*)$/.exec(callee)?.[1] ?? '';
    if (!/^[A-Za-z_][\w.]*$/.test(callee)) return { qname: null, binding: 'expr', final };
    const dot = callee.indexOf('.');
    const head = dot < 0 ? callee : callee.slice(0, dot);
    const rest = dot < 0 ? '' : callee.slice(dot);
    if (head === 'self' || head === 'cls') return { qname: null, binding: 'member', final };
    if (headLocal) return { qname: null, binding: 'local', final };
    const alias = this.aliases.get(head);
    if (alias !== undefined) return { qname: canonical(alias + rest), binding: 'import', final };
    if (this.moduleBound.has(head)) return { qname: `<local>.${callee}`, binding: 'local', final };
    if (dot < 0 && this.stars.length > 0) {
      for (const m of [...this.stars].reverse()) {
        if (starExports(m, head)) return { qname: canonical(`${m}.${head}`), binding: 'star', final };
      }
      return { qname: `${this.stars[this.stars.length - 1]}.${head}`, binding: 'star', final };
    }
    const fb = FALLBACK[head];
    if (fb !== undefined) return { qname: canonical(fb + rest), binding: 'fallback', final };
    return { qname: `?${callee}`, binding: 'unbound', final };
  }
}
