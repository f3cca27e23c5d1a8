/**
 * What the tree tells about one chunk, as plain data: the calls, definitions, imports and
 * literal config values (facts.ts), and what the memory advisor needs (adviceFacts.ts).
 * Facts are cached by the chunk's text and read by the analysis without the tree, so they
 * live apart from the code that reads them and from the code that uses them.
 *
 * Rows are relative to the chunk's first row and indices relative to its first
 * character; columns are absolute (a chunk that moves keeps its columns).
 */
import type { ImportFact } from './names';

export interface RelRange {
  sr: number;
  sc: number;
  er: number;
  ec: number;
}

export interface ArgFact {
  /** Keyword name, `*`/`**` for splats, null for a positional argument. */
  name: string | null;
  /** As written: the value for a keyword, the whole argument for a splat. */
  text: string;
  /** A tuple or list literal's items as written (`(L, L)`, `[B, H, L, L]`), or the one expression in parentheses. */
  items?: string[];
  /** A conditional's two values as written (`hidden * 2 if glu else hidden`). */
  arms?: [string, string];
}

export interface CallFact {
  /** Callee as written, whitespace removed. */
  callee: string;
  /** Last identifier of the callee, '' when it ends in a call or subscript. */
  final: string;
  pos: RelRange;
  si: number;
  ei: number;
  /** Arguments were read (only for calls that may be sites). */
  detailed: boolean;
  args: ArgFact[];
  /** The callee's first name is a parameter or local of an enclosing function. */
  headLocal: boolean;
  /** The first argument is attention probabilities (a softmax output, possibly cast or masked). */
  arg0Probs: boolean;
  /** First argument as written. */
  arg0?: string;
  /**
   * The member call that produced the first argument (`self.attend` for
   * `attn = self.attend(dots); self.drop(attn)`): probabilities when that member is an nn.Softmax.
   */
  arg0Via?: string;
  /** The assignment target the call's value ends up in (`self.drop`, `self.net` for items of a Sequential). */
  binding?: string;
  /** Path below `binding` for items of Sequential/ModuleList/OrderedDict (`0`, `c_fc`). */
  path?: string;
  /** `self.register_buffer("bias", <this>)`: the buffer name. */
  buffer?: string;
  /** The keyword the value is passed as (`h` in `ModuleDict(dict(h=nn.ModuleList(...)))`), when not assigned. */
  kwKey?: string | undefined;
  /** Innermost def (index into `defs`) holding the call, -1 at chunk level. */
  scope: number;
  /** The call runs only where a fused attention feature is missing (see branches.ts). */
  fallback?: boolean;
  /**
   * A bare callee that is a local variable of its function, last bound before the call by
   * `f = g` or `f = g if c else h`: the dotted names it may stand for, in source order.
   */
  aliasOf?: AliasTarget[];
}

/** One name a local variable may stand for (`create_causal_mask` in `fn = create_causal_mask if c else …`). */
export interface AliasTarget {
  /** As written, whitespace removed. */
  callee: string;
  /** Its first name is a parameter or local of an enclosing function (see CallFact.headLocal). */
  headLocal: boolean;
}

export interface DefFact {
  kind: 'class' | 'func';
  name: string;
  pos: RelRange;
  si: number;
  ei: number;
  parent: number;
  bases: string[];
  /** Parameter names of a function, in order (`self` included). */
  params?: string[];
}

export interface ConfigFact {
  name: string;
  value: number;
  /** 0 class field / chunk-level (decided later), 1 function body, 2 parameter default, 3 call keyword. */
  rank: number;
  row: number;
  scope: number;
}

export interface ChunkFacts {
  calls: CallFact[];
  defs: DefFact[];
  imports: ImportFact[];
  configs: ConfigFact[];
  /** Names bound at chunk level (assignment targets, defs): module bindings when the chunk is top-level. */
  chunkBound: string[];
  /** What the memory advisor needs from this chunk. */
  advice: AdviceFacts;
  hasError: boolean;
  /** The query stopped early on this chunk (its deadline, or the match limit): facts are incomplete. */
  truncated?: 'time-budget' | 'match-limit';
}

/** softmax(q·kᵀ [· scale] [masked]) → [dropout] → @ v, in one scope. */
export interface AttnChainFact {
  /** The softmax call (the site's range). */
  pos: RelRange;
  scope: number;
  /**
   * Heads are mixed before the softmax or after it (talking-heads attention, DeepViT's
   * re-attention): SDPA cannot compute this chain.
   */
  headsMixed?: boolean;
  /** Callee and arguments of the softmax as written. */
  callee: string;
  args: ArgFact[];
  /** Rows (relative to the chunk) of the parts found. */
  scoresRow?: number;
  maskRow?: number;
  dropoutRow?: number;
  outputRow?: number;
  /** A dropout's p when written as a literal (`F.dropout(att, 0.1)`). */
  dropoutP?: string;
  /** `self.attend` when the probabilities come from a member not named softmax: an nn.Softmax, to be confirmed. */
  via?: string;
}

/** `for <targets> in <iter>:` in a function. */
export interface LoopFact {
  /** The header: `for` to the colon. */
  pos: RelRange;
  si: number;
  ei: number;
  targets: string[];
  /** The iterable as written, `enumerate(...)` unwrapped: `self.h`, `self.transformer.h`. */
  iter: string;
  scope: number;
}

export interface BackwardFact {
  pos: RelRange;
  scope: number;
  /** What `.backward()` is called on, as written. */
  receiver: string;
}

/** A keyword that picks the attention implementation (`attn_implementation=...`). */
export interface AttnImplFact {
  /** The value's range. */
  pos: RelRange;
  value: string;
  /** The call it is passed to, as written (`BertForMaskedLM._from_config`). */
  callee: string;
  scope: number;
}

/** The literal "eager" somewhere other than an `attn_implementation=` keyword. */
export interface EagerLiteralFact {
  pos: RelRange;
  /** `assign`: `x = "eager"` / `config._attn_implementation = "eager"`; `default`: a parameter or `default=` keyword. */
  context: 'assign' | 'default';
  /** The assignment target, parameter name, or the flag of an `add_argument("--attn", default="eager")`. */
  name: string;
}

export interface Evidence {
  what: string;
  row: number;
}

export interface AdviceFacts {
  chains: AttnChainFact[];
  loops: LoopFact[];
  backward: BackwardFact[];
  attnImpl: AttnImplFact[];
  eager: EagerLiteralFact[];
  /** Mixed precision in this chunk: autocast, GradScaler, `.half()`, `precision="bf16-mixed"`, ... */
  amp: Evidence[];
  /** Activation checkpointing in this chunk: `checkpoint(...)`, `gradient_checkpointing_enable()`, ... */
  ckpt: Evidence[];
  /** `_attn_implementation` is read or set: attention is chosen by a config at run time. */
  dispatch: boolean;
  /** torch.compile in this chunk: `torch.compile(model)`, `model.compile()`, `@torch.compile`. */
  compile: Evidence[];
}
