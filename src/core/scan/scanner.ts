/**
 * The scanner: text in, sites out. One-shot scans for the CLI, and documents that
 * keep their syntax tree so an edit re-parses incrementally (`tree.edit` plus
 * `parser.parse(text, oldTree)`) and only the edited statements are read again.
 *
 * Nothing here throws on any input text: failures come back as a result with
 * `error` set. Only loading the grammar (`createScanner`) can reject.
 *
 * Nothing here runs unbounded either: the query cursor holds a bounded number of
 * in-progress matches, and with `budgetMs` (the editor and the CLI pass DEFAULT_BUDGET_MS)
 * parsing and querying share a time budget, a single statement getting at most a
 * quarter of it. What is cut short is named in
 * `result.partial`, with its lines; the sites found are kept.
 */
import type { Edit, Node, Parser, Query, Tree } from 'web-tree-sitter';
import { Analyzer } from './analyze';
import type { ClassHeader, PlacedChunk } from './context';
import { extractFacts } from './facts';
import type { ChunkFacts } from './factTypes';
import { formatBytes } from '../units';
import { type AssetOptions, loadRuntime, type ScanRuntime } from './parser';
import { readRelated, RELATED_MAX_BYTES } from './related';
import type { RawConfig } from './shapes';
import { DEFAULT_MAX_BYTES, type RelatedSource, type ScanOptions, type ScanPartial, type ScanResult, type SiteRange } from './types';
import { withSparseAdvice } from './sparse24';

type FactCache = Map<string, ChunkFacts>;

interface ChunkNode {
  node: Node;
  context: number;
}

function rangeOf(n: Node): SiteRange {
  return { startLine: n.startPosition.row, startCol: n.startPosition.column, endLine: n.endPosition.row, endCol: n.endPosition.column };
}

/**
 * Splits the module into chunks: each top-level statement, except that a
 * top-level class is split into its body's statements (one per method), so a
 * big model class costs one method's work after an edit.
 */
function chunksOf(root: Node): { chunks: ChunkNode[]; headers: ClassHeader[] } {
  const chunks: ChunkNode[] = [];
  const headers: ClassHeader[] = [];
  for (const child of root.namedChildren) {
    if (!child || child.type === 'comment') continue;
    let cls: Node | null = null;
    if (child.type === 'class_definition') cls = child;
    else if (child.type === 'decorated_definition') {
      const d = child.childForFieldName('definition');
      if (d?.type === 'class_definition') cls = d;
    }
    const body = cls?.childForFieldName('body');
    const name = cls?.childForFieldName('name');
    if (!cls || !body || !name) {
      chunks.push({ node: child, context: -1 });
      continue;
    }
    const sup = cls.childForFieldName('superclasses');
    headers.push({
      name: name.text,
      bases: sup
        ? sup.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment' && c.type !== 'keyword_argument').map((c) => c.text.replace(/\s+/g, ''))
        : [],
      range: rangeOf(cls),
    });
    const hi = headers.length - 1;
    for (const stmt of body.namedChildren) {
      if (!stmt || stmt.type === 'comment') continue;
      chunks.push({ node: stmt, context: hi });
    }
  }
  return { chunks, headers };
}

function emptyResult(file: string, extra: Partial<ScanResult> = {}): ScanResult {
  return { file, sites: [], classes: [], config: {}, hasSyntaxErrors: false, stats: { ms: 0, lines: 0, chunks: 0, reusedChunks: 0 }, ...extra };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** Rows and the column of `to`, counting from a known line start (indexOf runs natively, a char loop does not). */
function pointAt(text: string, from: number, fromRow: number, fromLineStart: number, to: number) {
  let row = fromRow;
  let lineStart = fromLineStart;
  for (let i = text.indexOf('\n', from); i >= 0 && i < to; i = text.indexOf('\n', i + 1)) {
    row++;
    lineStart = i + 1;
  }
  return { row, column: to - lineStart, lineStart };
}

/** The single edit that turns `a` into `b` (common prefix and suffix kept), or null when equal. */
export function diffEdit(a: string, b: string): Edit | null {
  if (a === b) return null;
  const max = Math.min(a.length, b.length);
  // Compare blocks first (native string equality), then characters within the first differing block.
  const BLOCK = 256;
  let p = 0;
  while (p + BLOCK <= max && a.slice(p, p + BLOCK) === b.slice(p, p + BLOCK)) p += BLOCK;
  while (p < max && a.charCodeAt(p) === b.charCodeAt(p)) p++;
  let s = 0;
  const room = max - p;
  while (s + BLOCK <= room && a.slice(a.length - s - BLOCK, a.length - s) === b.slice(b.length - s - BLOCK, b.length - s)) s += BLOCK;
  while (s < room && a.charCodeAt(a.length - 1 - s) === b.charCodeAt(b.length - 1 - s)) s++;
  const start = pointAt(a, 0, 0, 0, p);
  const oldEnd = pointAt(a, p, start.row, start.lineStart, a.length - s);
  const newEnd = pointAt(b, p, start.row, start.lineStart, b.length - s);
  return {
    startIndex: p,
    oldEndIndex: a.length - s,
    newEndIndex: b.length - s,
    startPosition: { row: start.row, column: start.column },
    oldEndPosition: { row: oldEnd.row, column: oldEnd.column },
    newEndPosition: { row: newEnd.row, column: newEnd.column },
  };
}

/** `.configuration_bert.BertConfig` (an import's target): the module and a class named like a config. */
const CONFIG_IMPORT = /^(\.[A-Za-z_]\w*)\.([A-Za-z_]\w*Config)$/;
/** Config classes read per scan at most, and their defaults kept between scans. */
const MAX_CONFIG_CLASSES = 8;
const CONFIG_CACHE_ENTRIES = 16;

export class Scanner {
  private readonly parser: Parser;
  private readonly query: Query;
  /** Defaults per config class, keyed by file, class and source text (the editor rescans often). */
  private readonly configCache = new Map<string, RawConfig[]>();

  constructor(readonly runtime: ScanRuntime) {
    this.parser = runtime.newParser();
    const q = runtime.queries.get('facts');
    if (!q) throw new Error('membit scanner: queries/facts.scm is missing');
    this.query = q;
  }

  /** Milliseconds the WASM runtime and queries took to load. */
  get initMs(): number {
    return this.runtime.initMs;
  }

  /** Scans a whole text once. */
  scan(text: string, file: string, opts: ScanOptions = {}): ScanResult {
    const started = performance.now();
    const skipped = this.tooLarge(text, file, opts);
    if (skipped) return skipped;
    let tree: Tree | null = null;
    try {
      const deadline = started + budgetOf(opts);
      tree = this.parse(text, null, deadline);
      if (!tree) return notParsed(file, text, opts, started);
      return this.scanTree(tree, file, opts, undefined, new Analyzer(), started);
    } catch (e) {
      return emptyResult(file, { error: messageOf(e) });
    } finally {
      tree?.delete();
    }
  }

  /** Opens a document that rescans incrementally on each `update`. */
  open(file: string, text: string, opts: ScanOptions = {}): ScanDocument {
    return new ScanDocument(this, file, text, opts);
  }

  /** Frees the parser. Documents opened from this scanner must be disposed first. */
  dispose(): void {
    this.parser.delete();
  }

  /** @internal */
  tooLarge(text: string, file: string, opts: ScanOptions): ScanResult | undefined {
    const limit = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    // A UTF-16 unit is at most 3 UTF-8 bytes: most texts are cleared without counting.
    if (text.length * 3 <= limit) return undefined;
    const bytes = utf8Length(text);
    if (bytes <= limit) return undefined;
    return emptyResult(file, {
      skipped: {
        reason: 'too-large',
        bytes,
        limitBytes: limit,
        message: `Membit: not scanned, ${formatBytes(bytes)} is over the ${formatBytes(limit)} limit (membit.scan.maxFileSizeKB).`,
      },
    });
  }

  /** @internal Parses `text`, reusing `old` (already edited) when given; null past `deadline`. */
  parse(text: string, old: Tree | null, deadline = Infinity): Tree | null {
    const tree = this.parser.parse(text, old, { progressCallback: () => performance.now() > deadline });
    // A cancelled parse would be resumed by the next call, whatever its text: start afresh.
    if (!tree) this.parser.reset();
    return tree;
  }

  /** @internal */
  scanTree(tree: Tree, file: string, opts: ScanOptions, cache: FactCache | undefined, analyzer: Analyzer, started = performance.now()): ScanResult {
    const root = tree.rootNode;
    const { chunks, headers } = chunksOf(root);
    const next: FactCache | undefined = cache ? new Map() : undefined;
    const placed: PlacedChunk[] = [];
    let reused = 0;
    let firstError: string | undefined;
    const budget = budgetOf(opts);
    const deadline = started + budget;
    const cut: { reason: ScanPartial['reason']; start: number; end: number }[] = [];
    for (const c of chunks) {
      const text = c.node.text;
      const key = `${c.node.startPosition.column}\u0000${text}`;
      let facts = cache?.get(key);
      if (facts) reused++;
      else {
        const now = performance.now();
        if (now > deadline) {
          // Out of time: the remaining statements are not read at all.
          const last = chunks.at(-1) ?? c;
          cut.push({ reason: 'time-budget', start: c.node.startPosition.row, end: last.node.endPosition.row });
          break;
        }
        try {
          // One statement gets at most a quarter of the budget, so one pathological
          // expression does not cost the rest of the file.
          facts = extractFacts(this.query, c.node, Math.min(deadline, now + budget / 4));
        } catch (e) {
          // One unreadable statement must not hide the rest of the file.
          firstError ??= messageOf(e);
          continue;
        }
      }
      if (facts.truncated) cut.push({ reason: facts.truncated, start: c.node.startPosition.row, end: c.node.endPosition.row });
      if (next && !facts.hasError) next.set(key, facts);
      placed.push({ facts, baseRow: c.node.startPosition.row, context: c.context });
    }
    if (cache && next) {
      cache.clear();
      for (const [k, v] of next) cache.set(k, v);
    }
    const analysed = analyzer.run(file, placed, headers, opts, this.importedConfig(placed, opts, deadline));
    analysed.sites = withSparseAdvice(analysed.sites, analysed.config, opts);
    const result: ScanResult = {
      file,
      ...analysed,
      hasSyntaxErrors: root.hasError,
      stats: { ms: performance.now() - started, lines: root.endPosition.row + 1, chunks: chunks.length, reusedChunks: reused },
    };
    if (firstError) result.error = firstError;
    if (cut.length) result.partial = partialOf(cut, budget);
    return result;
  }

  /**
   * The defaults of the config classes the file imports from a module of its folder
   * (`from .configuration_bert import BertConfig`): class fields and `__init__` keyword
   * defaults. A name two imported classes give different values is left out (CLIP's text and
   * vision configs): which one a `config.hidden_size` means cannot be told from the name.
   */
  private importedConfig(placed: readonly PlacedChunk[], opts: ScanOptions, deadline: number): RawConfig[] {
    if (!opts.related && !opts.relatedDir) return [];
    const wanted = new Map<string, Set<string>>();
    for (const p of placed) {
      for (const i of p.facts.imports) {
        const m = i.star ? null : CONFIG_IMPORT.exec(i.target);
        const mod = m?.[1];
        const name = m?.[2];
        if (mod === undefined || name === undefined) continue;
        let names = wanted.get(mod);
        if (!names) wanted.set(mod, (names = new Set()));
        names.add(name);
      }
    }
    if (wanted.size === 0) return [];
    const maxBytes = Math.min(opts.maxBytes ?? DEFAULT_MAX_BYTES, RELATED_MAX_BYTES);
    const sources: readonly RelatedSource[] = opts.related ?? (opts.relatedDir ? readRelated(opts.relatedDir, [...wanted.keys()], maxBytes) : []);
    const perClass: RawConfig[][] = [];
    for (const src of sources) {
      for (const name of wanted.get(src.module) ?? []) {
        if (perClass.length >= MAX_CONFIG_CLASSES || performance.now() > deadline) break;
        if (src.text.length * 3 > maxBytes && Buffer.byteLength(src.text, 'utf8') > maxBytes) continue;
        perClass.push(this.classDefaults(src, name, deadline));
      }
    }
    const byName = new Map<string, RawConfig | null>();
    for (const list of perClass) {
      for (const r of list) {
        const prev = byName.get(r.name);
        if (prev === undefined) byName.set(r.name, r);
        else if (prev && prev.value !== r.value) byName.set(r.name, null);
      }
    }
    return [...byName.values()].filter((r): r is RawConfig => r !== null);
  }

  /** One config class's literal defaults, one per name: its fields, else its `__init__` keyword defaults. */
  private classDefaults(src: RelatedSource, className: string, deadline: number): RawConfig[] {
    const key = `${src.file}\u0000${className}\u0000${src.text}`;
    const hit = this.configCache.get(key);
    if (hit) return hit;
    const best = new Map<string, RawConfig>();
    let complete = false;
    let tree: Tree | null = null;
    try {
      tree = this.parse(src.text, null, deadline);
      const { chunks, headers } = tree ? chunksOf(tree.rootNode) : { chunks: [], headers: [] };
      const hi = headers.findIndex((h) => h.name === className);
      for (const c of hi < 0 ? [] : chunks) {
        if (c.context !== hi) continue;
        const facts = extractFacts(this.query, c.node, deadline);
        const baseRow = c.node.startPosition.row;
        for (const cf of facts.configs) {
          const d = cf.scope >= 0 ? facts.defs[cf.scope] : undefined;
          // `hidden_size: int = 768` in the class body; `def __init__(self, hidden_size=768)`.
          const field = cf.rank === 0 && !d;
          const initDefault = cf.rank === 2 && d?.kind === 'func' && d.name === '__init__' && d.parent < 0;
          if (!field && !initDefault) continue;
          const r: RawConfig = { name: cf.name, value: cf.value, rank: field ? 0 : 3, line: cf.row + baseRow, from: src.file };
          const prev = best.get(r.name);
          if (!prev || r.rank < prev.rank) best.set(r.name, r);
        }
      }
      // A reading cut short by the deadline is tried again at the next scan.
      complete = tree !== null && performance.now() <= deadline;
    } catch {
      // A config that cannot be read gives no defaults; the scan of the file goes on.
    } finally {
      tree?.delete();
    }
    const out = [...best.values()];
    if (complete) {
      this.configCache.set(key, out);
      const oldest = this.configCache.keys().next();
      if (this.configCache.size > CONFIG_CACHE_ENTRIES && !oldest.done) this.configCache.delete(oldest.value);
    }
    return out;
  }
}

/** The time budget in ms; Infinity when the caller set none (tests and library use stay deterministic). */
function budgetOf(opts: ScanOptions): number {
  const b = opts.budgetMs;
  return b !== undefined && b > 0 ? b : Infinity;
}

function lineList(cut: readonly { start: number; end: number }[]): string {
  const shown = cut.slice(0, 3).map((c) => (c.start === c.end ? `${c.start + 1}` : `${c.start + 1}-${c.end + 1}`));
  const one = cut.length === 1 && cut[0]?.start === cut[0]?.end;
  return `${one ? 'line' : 'lines'} ${shown.join(', ')}${cut.length > 3 ? ` and ${cut.length - 3} more` : ''}`;
}

/** The user's sentence for what was not read, and why. */
function partialOf(cut: readonly { reason: ScanPartial['reason']; start: number; end: number }[], budget: number): ScanPartial {
  const lines = cut.map(({ start, end }) => ({ start, end }));
  const timed = cut.filter((c) => c.reason === 'time-budget');
  if (timed.length) {
    return {
      reason: 'time-budget',
      message: `Membit: partially scanned, ${lineList(timed)} not read within the ${budget} ms scan budget (deeply nested or very long expressions); sites there may be missing.`,
      lines,
    };
  }
  return {
    reason: 'match-limit',
    message: `Membit: partially scanned, ${lineList(cut)}: nested too deeply to be read completely; sites there may be missing.`,
    lines,
  };
}

/** The parser itself ran out of budget: nothing was read. */
function notParsed(file: string, text: string, opts: ScanOptions, started: number): ScanResult {
  const budget = budgetOf(opts);
  let lines = 1;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lines++;
  return emptyResult(file, {
    partial: {
      reason: 'time-budget',
      message: `Membit: not scanned, the file could not be parsed within the ${budget} ms scan budget (deeply nested or very long expressions).`,
      lines: [{ start: 0, end: lines - 1 }],
    },
    stats: { ms: performance.now() - started, lines, chunks: 0, reusedChunks: 0 },
  });
}

/**
 * A document kept open for incremental rescans. The editor adapter debounces
 * changes and calls `update` with the new full text.
 */
export class ScanDocument {
  private tree: Tree | null = null;
  private text = '';
  private readonly cache: FactCache = new Map();
  private analyzer = new Analyzer();
  private current: ScanResult;

  constructor(
    private readonly scanner: Scanner,
    readonly file: string,
    text: string,
    private opts: ScanOptions,
  ) {
    this.current = emptyResult(file);
    this.update(text);
  }

  get result(): ScanResult {
    return this.current;
  }

  /**
   * Rescans after a change. Pass `opts` when settings or the measured report
   * changed; with the same text only the estimates are recomputed.
   */
  update(text: string, opts?: ScanOptions): ScanResult {
    const started = performance.now();
    if (opts) this.opts = opts;
    try {
      const skipped = this.scanner.tooLarge(text, this.file, this.opts);
      if (skipped) {
        this.reset();
        this.text = text;
        return (this.current = skipped);
      }
      const deadline = started + budgetOf(this.opts);
      if (this.tree) {
        const edit = diffEdit(this.text, text);
        if (edit) {
          this.tree.edit(edit);
          const next = this.scanner.parse(text, this.tree, deadline);
          this.tree.delete();
          this.tree = next;
        }
      } else {
        this.tree = this.scanner.parse(text, null, deadline);
      }
      this.text = text;
      if (!this.tree) {
        this.reset();
        return (this.current = notParsed(this.file, text, this.opts, started));
      }
      return (this.current = this.scanner.scanTree(this.tree, this.file, this.opts, this.cache, this.analyzer, started));
    } catch (e) {
      // Start from scratch next time rather than trust a half-edited tree.
      this.reset();
      return (this.current = emptyResult(this.file, { error: messageOf(e) }));
    }
  }

  private reset(): void {
    this.tree?.delete();
    this.tree = null;
    this.text = '';
    this.cache.clear();
    this.analyzer = new Analyzer();
  }

  dispose(): void {
    this.reset();
  }
}

/** Loads the grammar and queries (once per process) and returns a scanner. */
export async function createScanner(opts: AssetOptions = {}): Promise<Scanner> {
  return new Scanner(await loadRuntime(opts));
}
