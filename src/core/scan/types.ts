/**
 * The scanner's public data model. Pure data, no VS Code: the editor adapter maps
 * these onto diagnostics, hints, CodeLens and hovers; the CLI prints them.
 *
 * Positions: every `line`/`startLine` in a {@link SiteRange} is 0-based and every
 * column is 0-based and counted in UTF-16 code units, the same convention as
 * `vscode.Position`. The CLI's JSON output adds 1 to both (like compilers do).
 */

/** The kinds listed in DESIGN.md, "Site kinds the scanner reports". */
export type SiteKind = 'dropout' | 'dropout-call' | 'attn-dropout' | 'fused-attn-dropout' | 'attn-mask' | 'ffn';

export const SITE_KINDS: readonly SiteKind[] = ['dropout', 'dropout-call', 'attn-dropout', 'fused-attn-dropout', 'attn-mask', 'ffn'];

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
  source: EstimateSource;
  /** The figures are for one sample because no batch size was known. */
  perSample?: boolean;
  shape?: EstimateShape;
  /** Why no figure, where each dimension came from, or what the figure assumes. */
  note?: string;
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
  estimate: Estimate;
  /** One sentence: what the site is and what it costs. */
  message: string;
  /** Diagnostic code, `membit.<kind>`; code actions filter on it. */
  code: string;
  /** For `ffn`: the members a rewriter converts. */
  ffn?: FfnInfo;
  /** For `attn-mask` and `fused-attn-dropout`: what would remove the mask, or why none is stored. */
  remedy?: string;
  /** For notebooks: the code cell (index among all cells) holding the site; `range` is then cell-relative. */
  cell?: number;
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
}

/** Shape dimensions read from literal defaults in the file (dataclass fields, `hidden_size=768` defaults, globals). */
export interface FileConfig {
  batch?: ConfigValue;
  seqLen?: ConfigValue;
  hidden?: ConfigValue;
  heads?: ConfigValue;
  intermediate?: ConfigValue;
  mlpRatio?: ConfigValue;
}

export interface ScanResult {
  file: string;
  sites: Site[];
  classes: ClassInfo[];
  config: FileConfig;
  /** The tree had syntax errors; sites outside the broken statements are still reported. */
  hasSyntaxErrors: boolean;
  /** Set when the file was not scanned because of its size. */
  skipped?: { reason: 'too-large'; bytes: number; limitBytes: number; message: string };
  /** Set when scanning failed; `sites` then holds what was found before the failure (often nothing). */
  error?: string;
  stats: { ms: number; lines: number; chunks: number; reusedChunks: number };
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
}

/**
 * Measured figures for one file from the latest report. Lines are 1-based, as in
 * `membit.report/1`. Build it with `shapeHintsFromReport`.
 */
export interface ShapeHints {
  byLine: ReadonlyMap<number, MeasuredLine>;
}

export interface ScanOptions {
  /** Files larger than this many bytes (UTF-8) are skipped; default 2 MiB (`membit.scan.maxFileSizeKB`). */
  maxBytes?: number;
  shapes?: ShapeSettings;
  hints?: ShapeHints;
}

export const DEFAULT_MAX_BYTES = 2048 * 1024;
