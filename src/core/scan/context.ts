/**
 * What the analysis passes share. The analysis runs per group (a top-level class with its
 * methods, or one top-level statement) over plain data read from chunk facts; these types
 * are used by every pass and by the advisor, so they live apart from all of them.
 */
import type { CallFact, ChunkFacts } from './factTypes';
import type { Resolved, Resolver } from './names';
import type { ConfigTable, ShapeContext } from './shapes';
import type { ClassInfo, Estimate, FileConfig, MeasuredLine, ScanOptions, Site, SiteArgs, SiteKind, SiteRange } from './types';

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

export type MakeSite = (g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra?: Partial<Site>) => Site;

/**
 * One group as its passes see it. Passes run in a fixed order over the same calls: each
 * adds its sites and takes their calls, and a later pass skips what an earlier one took
 * (a dropout is never also a mask) or reads the sites found before it (the advisor).
 * Rows are relative to the group, so a group that only moved is reused as it was.
 */
export interface Group {
  file: string;
  chunks: readonly PlacedChunk[];
  /** The class whose body statements the group holds, if it is a top-level class. */
  header: ClassHeader | undefined;
  /** Absolute row of the group's first line. */
  base: number;
  env: Env;
  /** Shapes from settings, config values and the report (whose lines are absolute). */
  shapes: ShapeContext;
  /** In chunk order, each chunk's calls in source order. */
  calls: readonly GCall[];
  sites: Site[];
  /** Calls that are sites already. */
  taken: Set<GCall>;
  /** The calls of what a construction is bound to: `self.drop(x)` in its class, `drop(x)` in its function. */
  usesOf: (g: GCall) => GCall[];
  /** Adds a site for the call and takes it. */
  makeSite: MakeSite;
  /** Report figures on the call's own lines, else on the lines that call what it builds. */
  measuredFor: (g: GCall) => MeasuredLine | undefined;
}
