/**
 * What the analysis passes share. The analysis runs per group (a top-level class with its
 * methods, or one top-level statement) over plain data read from chunk facts; these types
 * are used by every pass and by the advisor, so they live apart from all of them.
 */
import type { CallFact, ChunkFacts } from './factTypes';
import type { Resolved, Resolver } from './names';
import type { ConfigTable } from './shapes';
import type { ClassInfo, FileConfig, ScanOptions, Site, SiteRange } from './types';

/** A chunk as placed in the current document. */
export interface PlacedChunk {
  facts: ChunkFacts;
  /** Absolute row of the chunk's first line. */
  baseRow: number;
  /** Index into the class headers for statements of a top-level class body, else -1. */
  context: number;
}

export interface ClassHeader {
  name: string;
  bases: string[];
  range: SiteRange;
}

/** The enclosing class and function of something in a group; keys tell same-named ones apart. */
export interface ScopeNames {
  className: string | null;
  classKey: string | null;
  funcName: string | null;
  funcKey: string | null;
}

/** A call of a group, placed and resolved. */
export interface GCall extends ScopeNames {
  f: CallFact;
  /** Index of the chunk; calls nest only within one chunk. */
  chunk: number;
  range: SiteRange;
  res: Resolved;
  /** For a call through a local variable: the name it stands for, as written, that `res` resolves. */
  alias?: string;
}

/** What the whole file says about precision, checkpointing and attention dispatch. */
export interface FileAdvice {
  /** First mixed-precision evidence (0-based line). */
  amp?: { what: string; line: number };
  /** First activation-checkpointing evidence (0-based line). */
  ckpt?: { what: string; line: number };
  /** `_attn_implementation` is read: the attention is chosen by a config at run time. */
  dispatch: boolean;
  /** A framework that sets precision or checkpointing outside the file (accelerate, Lightning, DeepSpeed). */
  framework?: string;
  /** Some function holds an eager attention chain (for per-block estimates). */
  eager: boolean;
  /** First torch.compile evidence (0-based line): `torch.compile(model)`, `@torch.compile`, `model.compile()`. */
  compiled?: { what: string; line: number };
}

/** What every part of the file shares: imports, module names, literal config values, settings. */
export interface Env {
  resolver: Resolver;
  config: ConfigTable;
  classes: ClassInfo[];
  localLinear: Set<string>;
  opts: ScanOptions;
  /** Precision, checkpointing and attention dispatch, file-wide (the advisor). */
  advice: FileAdvice;
  /** Changes whenever anything above changes; part of every group's cache key. */
  key: string;
}

export interface AnalyzeResult {
  sites: Site[];
  classes: ClassInfo[];
  config: FileConfig;
  peakBytes?: number;
}
