/**
 * The scanner's public data model. Pure data, no VS Code: the editor adapter maps
 * these onto diagnostics, hints, CodeLens and hovers; the CLI prints them.
 *
 * Positions: every `line`/`startLine` in a {@link SiteRange} is 0-based and every
 * column is 0-based and counted in UTF-16 code units, the same convention as
 * `vscode.Position`. The CLI's JSON output adds 1 to both (like compilers do).
 */

import type { SparseAdviceTable } from '../advice/sparse24';

/**
 * The kinds listed in DESIGN.md, "Site kinds the scanner reports", then the memory
 * advisor's findings: eager attention (→ fused SDPA), training without mixed
 * precision, block loops without activation checkpointing, and Adam/AdamW without
 * `fused=`/`foreach=`.
 */
export type SiteKind =
  | 'dropout'
  | 'dropout-call'
  | 'attn-dropout'
  | 'fused-attn-dropout'
  | 'attn-mask'
  | 'ffn'
  | 'eager-attn'
  | 'no-autocast'
  | 'checkpoint'
  | 'optimizer';

export const SITE_KINDS: readonly SiteKind[] = [
  'dropout',
  'dropout-call',
  'attn-dropout',
  'fused-attn-dropout',
  'attn-mask',
  'ffn',
  'eager-attn',
  'no-autocast',
  'checkpoint',
  'optimizer',
];

/** The advisor's kinds: each such site carries `advice`. */
export const ADVISOR_KINDS: readonly SiteKind[] = ['eager-attn', 'no-autocast', 'checkpoint', 'optimizer'];

/** Torch features a lever needs, named as `python -m membit.capabilities` prints them. */
export type TorchFeature =
  | 'sdpa'
  | 'sdpa-scale'
  | 'is-causal'
  | 'autocast-bf16-cuda'
  | 'autocast-bf16-cpu'
  | 'cuda'
  | 'cuda-bf16'
  | 'checkpoint-non-reentrant'
  | 'adamw-fused'
  | 'adamw-foreach';

export const TORCH_FEATURES: readonly TorchFeature[] = [
  'sdpa',
  'sdpa-scale',
  'is-causal',
  'autocast-bf16-cuda',
  'autocast-bf16-cpu',
  'cuda',
  'cuda-bf16',
  'checkpoint-non-reentrant',
  'adamw-fused',
  'adamw-foreach',
];

/** What an installed torch can do: the output of `python -m membit.capabilities` (schema `membit.capabilities/1`). */
export interface TorchCapabilities {
  schema: 'membit.capabilities/1';
  /** `torch.__version__` as printed; shown to users, never parsed. */
  torch: string;
  /** Each feature found by trying it; a feature missing from the map is unknown. */
  features: Partial<Record<TorchFeature, boolean>>;
}

export type AdviceLever = 'sdpa' | 'is-causal' | 'autocast' | 'checkpoint' | 'fused-optimizer';

/** The memory advisor's proposal attached to a site. */
export interface Advice {
  lever: AdviceLever;
  /** Bytes the lever would save at the peak (estimate or measured); absent when unknown. */
  savingBytes?: number;
  /** 'measured' when derived from a report's figures for these lines/modules, else 'estimate'. */
  basis: 'measured' | 'estimate';
  /** What it costs, e.g. "recompute: ~1 extra forward per step (~+25-35% step time)". */
  cost?: string;
  /** The torch feature it needs, e.g. 'sdpa', 'autocast-bf16', 'checkpoint-non-reentrant', 'adamw-fused'. */
  requires?: TorchFeature[];
  /** Set when the installed torch is known to lack a required feature: the site is then NOT shown as a proposal. */
  unavailable?: string;
  /** A docs link for advice-only findings. */
  docs?: string;
}

/**
 * For `eager-attn` sites: what the analysis knows of the attention it found. Lines are
 * 0-based (cell-relative in notebooks). Informative only: a rewriter matches the text itself.
 */
export interface AttentionInfo {
  /** `eager-block`: softmax(q·kᵀ) → dropout → @ v in one function. `hf-eager`: an HF model built with eager attention. */
  form: 'eager-block' | 'hf-eager';
  /** The q @ kᵀ (or matmul/einsum) that makes the scores. */
  scoresLine?: number;
  /** The masked_fill / additive mask applied to the scores. */
  maskLine?: number;
  /** The softmax that makes the probabilities (the site's line for `eager-block`). */
  softmaxLine?: number;
  /** The dropout applied to the probabilities. */
  dropoutLine?: number;
  /** The `@ v` / matmul / einsum that consumes the probabilities. */
  outputLine?: number;
  /** The function holding the block. */
  funcName?: string;
  /** For `hf-eager`: the keyword or attribute as written (`attn_implementation`, `config._attn_implementation`). */
  setting?: string;
  /** For `hf-eager`: the value as written when it is not the literal "eager" (a variable that defaults to it). */
  valueText?: string;
  /** For `hf-eager` through a variable: the 0-based line where "eager" is made the default. */
  defaultLine?: number;
}

/** 0-based lines, 0-based UTF-16 columns; the end is exclusive, as in VS Code. */
export interface SiteRange {
  startLine: number;
  startCol: number;
  endLine: number;
  endCol: number;
}

/**
 * The call's arguments as written in the source, keyed by parameter name.
 * Positional arguments are mapped onto the parameter they fill where the callee's
 * signature is known (`nn.Dropout(0.1)` gives `{ p: '0.1' }`).
 */
export type SiteArgs = Record<string, string>;

/** Where the numbers of an estimate came from, strongest first. */
export type EstimateSource = 'report' | 'settings' | 'config' | 'unknown';

/** The shape an estimate was computed for; only the dimensions it used are set. */
export interface EstimateShape {
  batch?: number;
  seqLen?: number;
  hidden?: number;
  heads?: number;
}

export interface Estimate {
  /** Elements of the tensor the site stores (mask elements; for `ffn`, weights of the pair). */
  elements?: number;
  /** Bytes the site stores now: 1 B/element for a CUDA dropout mask, the dtype size for an attention mask. */
  maskBytes?: number;
  /** Bytes a bit-packed mask would take (1/8 B per element). */
  packedBytes?: number;
  /** For `optimizer`: the state it keeps (2 fp32 moments, 8 B per parameter). */
  stateBytes?: number;
  source: EstimateSource;
  /** The figures are for one sample because no batch size was known. */
  perSample?: boolean;
  shape?: EstimateShape;
  /** Why no figure, where each dimension came from, or what the figure assumes. */
  note?: string;
  /** Measured figures: how many instances they sum over and the device whose bytes they are. */
  scope?: { instances: number; device: string };
}

/** One projection of a feed-forward pair, named as a rewriter needs it. */
export interface FfnMember {
  /** Attribute path below the module, e.g. `c_fc`, `net.0`, `mlp.fc1`; null for a local variable. */
  name: string | null;
  /** Class that owns the member (differs from the site's class for HF *Intermediate/*Output pairs). */
  className: string | null;
  /** 0-based line of the constructor call. */
  line: number;
  range: SiteRange;
  /** Constructor as written, e.g. `nn.Linear`, `Conv1D`. */
  callee: string;
  /** Input and output widths as written. */
  inFeatures?: string;
  outFeatures?: string;
  /** For notebooks: the cell holding the member; `line` and `range` are then cell-relative. */
  cell?: number;
}

export interface FfnInfo {
  /**
   * `pair`: up then down in one class. `gated`: gate/up/down. `fused-gated`: one
   * gate_up projection of twice the width. `split`: HF `*Intermediate`/`*Output`.
   * `module`: an instantiation of an MLP module defined elsewhere (`Mlp(...)`, `mlp_layer(...)`).
   */
  form: 'pair' | 'gated' | 'fused-gated' | 'split' | 'module';
  up?: FfnMember;
  down?: FfnMember;
  gate?: FfnMember;
  /** Widths as written: model width in, hidden width in the middle. */
  inFeatures?: string;
  hiddenFeatures?: string;
  /** The same widths as numbers, where the file's literal values give them. */
  inWidth?: number;
  hiddenWidth?: number;
}

export interface Site {
  file: string;
  range: SiteRange;
  kind: SiteKind;
  /** `construct` for module constructions (`nn.Dropout(...)`), `call` for functional ones. */
  form: 'construct' | 'call';
  /** Innermost enclosing class, or null at module level. */
  className: string | null;
  /** Innermost enclosing function or method, or null. */
  funcName: string | null;
  args: SiteArgs;
  /** Callee as written (whitespace removed), e.g. `nn.functional.dropout`. */
  callee: string;
  /** Callee resolved through the file's imports, e.g. `torch.nn.functional.dropout`; null when unresolved. */
  resolved: string | null;
  /** Attribute or variable the construction is bound to (`self.attn_dropout`), when there is one. */
  binding?: string;
  /**
   * For a call through a local variable (`mask_fn(...)` after `mask_fn = create_causal_mask if c
   * else create_sliding_window_causal_mask`): the name it stands for, as written, that `resolved`
   * and the kind come from. `callee` is then the variable.
   */
  aliasOf?: string;
  estimate: Estimate;
  /** One sentence: what the site is and what it costs. */
  message: string;
  /** Diagnostic code, `membit.<kind>`; code actions filter on it. */
  code: string;
  /** For `ffn`: the members a rewriter converts. */
  ffn?: FfnInfo;
  /** For `ffn` with known widths: would 2:4 be faster here, from the measured speed tables. */
  sparse24?: Sparse24SiteAdvice;
  /** For `attn-mask` and `fused-attn-dropout`: what would remove the mask, or why none is stored. */
  remedy?: string;
  /** For notebooks: the code cell (index among all cells) holding the site; `range` is then cell-relative. */
  cell?: number;
  /** For the advisor's kinds (and attention masks): the lever, its saving, basis, cost and requirement. */
  advice?: Advice;
  /** For `eager-attn`: the parts of the attention the analysis found. */
  attention?: AttentionInfo;
  /** For dropout kinds in a file that calls torch.compile: where, as written (0-based line). */
  compiled?: { what: string; line: number };
}

/** A class found in the file, for per-class summaries (CodeLens). */
export interface ClassInfo {
  name: string;
  range: SiteRange;
  /** Base classes as written. */
  bases: string[];
  /** For notebooks: the cell holding the class; `range` is then cell-relative. */
  cell?: number;
}

/** A literal number found in the file that gives a shape dimension. */
export interface ConfigValue {
  value: number;
  /** The name it was found under, e.g. `n_embd`. */
  name: string;
  /** 0-based line. */
  line: number;
  /** Set when the value is a default of a config class imported from another file: that file's name. */
  file?: string;
}

/** Shape dimensions read from literal defaults in the file (dataclass fields, `hidden_size=768` defaults, globals). */
export interface FileConfig {
  batch?: ConfigValue;
  seqLen?: ConfigValue;
  hidden?: ConfigValue;
  heads?: ConfigValue;
  intermediate?: ConfigValue;
  mlpRatio?: ConfigValue;
  /** Number of blocks (`n_layer`, `num_hidden_layers`, `depth`). */
  layers?: ConfigValue;
  vocab?: ConfigValue;
}

export interface ScanResult {
  file: string;
  sites: Site[];
  /** The measured peak the advisor's savings are compared with (from the report), when known. */
  peakBytes?: number;
  classes: ClassInfo[];
  config: FileConfig;
  /** The tree had syntax errors; sites outside the broken statements are still reported. */
  hasSyntaxErrors: boolean;
  /** Set when the file was not scanned because of its size. */
  skipped?: { reason: 'too-large'; bytes: number; limitBytes: number; message: string };
  /** Set when scanning failed; `sites` then holds what was found before the failure (often nothing). */
  error?: string;
  /**
   * Set when part of the file was not read within the scan's budget (time, or the parser's
   * match limit on pathologically nested code): the sites found are real, others may be missing.
   */
  partial?: ScanPartial;
  stats: { ms: number; lines: number; chunks: number; reusedChunks: number };
}

/** Why a scan is partial, and where (0-based lines). */
export interface ScanPartial {
  reason: 'time-budget' | 'match-limit';
  /** One sentence for the user: what was not read, and why. */
  message: string;
  /** Lines of the statements that were cut short or skipped. */
  lines: { start: number; end: number }[];
}

/** `membit.shapes`: the same shape as the setting. */
export interface ShapeSettings {
  batch?: number;
  seqLen?: number;
  hidden?: number;
  heads?: number;
}

/** What a measured report says about one source line. */
export interface MeasuredLine {
  elements?: number;
  maskBytes?: number;
  /** Module instances the figures are summed over (every layer built on the line). */
  instances?: number;
  /** The device type the run measured on (`cpu`, `cuda`): CPU dropout masks take 4 B/element, CUDA 1 B. */
  device?: string;
}

/** A module of the measured run. */
export interface MeasuredModule {
  /** Dotted path below the model (`h.0.attn`); '' for the model itself. */
  path: string;
  type?: string;
  /** 1-based line of this file where it was built; absent when built elsewhere. */
  createdLine?: number;
  /** Bytes its own forward saved for backward (at the peak where the report says; children not included). */
  savedBytes: number;
}

/** Run-wide figures of the measured report. */
export interface MeasuredRun {
  /** Peak allocated bytes (CUDA), else what the harness tracked at the peak (CPU). */
  peakBytes?: number;
  optimizerState?: number;
  params?: number;
  activationsAtPeak?: number;
  /** The report's script is this file: its training step and optimizer are the run's. */
  thisFile: boolean;
  /** Bytes of softmax outputs saved for backward, in every file of the run. */
  softmaxBytes?: number;
  /** Mask bytes of the attention dropouts the harness found, in every file of the run. */
  attnMaskBytes?: number;
}

/**
 * Measured figures for one file from the latest report. Lines are 1-based, as in
 * `membit.report/1`. Build it with `shapeHintsFromReport`.
 */
export interface ShapeHints {
  byLine: ReadonlyMap<number, MeasuredLine>;
  /** Bytes saved for backward on each line of this file (at the peak where the report says). */
  savedByLine?: ReadonlyMap<number, number>;
  /** Every module of the run, for per-block totals. */
  modules?: readonly MeasuredModule[];
  run?: MeasuredRun;
}

export interface ScanOptions {
  /** Files larger than this many bytes (UTF-8) are skipped; default 2 MiB (`membit.scan.maxFileSizeKB`). */
  maxBytes?: number;
  shapes?: ShapeSettings;
  hints?: ShapeHints;
  /**
   * What the installed torch can do. When a lever's required feature is false the
   * site is still reported, with `advice.unavailable` set and no proposal wording;
   * when absent, messages say the advice was not checked against an installed torch.
   */
  capabilities?: TorchCapabilities;
  /** Measured dense-vs-2:4 FFN speed tables and the GPU to read them for (see src/core/advice). */
  sparse24?: { tables: readonly SparseAdviceTable[]; gpu?: string | undefined };
  /**
   * Milliseconds the parser and the queries may take for this file (none when absent; the
   * editor and the CLI pass DEFAULT_BUDGET_MS). Past it the rest of the file is not read
   * and the result is `partial`, with the reason.
   */
  budgetMs?: number;
  /**
   * The folder of the scanned file. When set, the config classes the file imports from a module
   * of that folder (`from .configuration_bert import BertConfig`) are read from it, and their
   * field and `__init__` defaults give shapes and dropout rates the file itself does not write.
   * Nothing outside the folder is read; files over 2 MiB or unreadable are ignored (related.ts).
   */
  relatedDir?: string;
  /** Those modules' sources given directly (tests, callers without a file system); wins over `relatedDir`. */
  related?: readonly RelatedSource[];
}

/** The source of a module the scanned file imports relatively. */
export interface RelatedSource {
  /** As imported, e.g. `.configuration_bert`. */
  module: string;
  /** Its file name, for notes (`configuration_bert.py`). */
  file: string;
  text: string;
}

/** The 2:4 speed advice attached to an `ffn` site. */
export interface Sparse24SiteAdvice {
  /** Dense time over 2:4 time for one training step of this FFN (the best of the range when tokens are unknown). */
  speedup: number;
  range?: [number, number] | undefined;
  verdict: 'faster' | 'no-gain' | 'slower';
  /** `2:4 here: 1.40x faster` / `2:4 here: 0.30x — not worth it`. */
  text: string;
  /** Shape, token count and GPU the figure was measured at. */
  basis: string;
  /** Tokens per step the figure is for (batch × sequence length), when known. */
  tokens?: number | undefined;
}

export const DEFAULT_MAX_BYTES = 2048 * 1024;

/**
 * Default time budget for parsing and querying one file. The analysis after it is linear
 * in what was read, so a file's whole scan stays near this (the goal is ≤ 2 s).
 */
export const DEFAULT_BUDGET_MS = 1000;
