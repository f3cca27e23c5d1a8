/**
 * From chunk facts to sites. The file is analysed in groups (a top-level class with its
 * methods, or one top-level statement), each by passes in a fixed order over one shared
 * context (context.ts): dropouts and fused attention (classify.ts), attention masks
 * (masks.ts), FFNs (ffn.ts), then the advisor (advisor.ts), which reads what the others
 * found. FFNs split over two classes and the file-wide advice are found across groups.
 * Everything here is plain data; no tree is touched.
 */
import { adviseFile, adviseGroup, fileAdvice, fileAdviceKey } from './advisor';
import { findDropouts, softmaxMembers } from './classify';
import type { AnalyzeResult, ClassHeader, Env, PlacedChunk } from './context';
import type { DefFact } from './factTypes';
import { findFfns, type LinearFact, splitFfns } from './ffn';
import { openGroup } from './group';
import { findMasks } from './masks';
import { type ImportFact, Resolver } from './names';
import { buildConfig, type RawConfig } from './shapes';
import { abs, shiftSite } from './sites';
import type { ClassInfo, ScanOptions, Site } from './types';
import { itemAt } from '../arrays';

function buildEnv(chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions, hintsId: number, imported: readonly RawConfig[]): Env {
  const imports: ImportFact[] = [];
  const moduleBound = new Set<string>();
  const raw: RawConfig[] = [...imported];
  const classes: ClassInfo[] = headers.map((h) => ({ name: h.name, range: h.range, bases: h.bases }));
  for (const h of headers) moduleBound.add(h.name);
  for (const { facts, baseRow, context } of chunks) {
    for (const i of facts.imports) imports.push(i);
    if (context < 0) for (const n of facts.chunkBound) moduleBound.add(n);
    const defs = facts.defs;
    for (const d of defs) if (d.kind === 'class') classes.push({ name: d.name, range: abs(d.pos, baseRow), bases: d.bases });
    for (const cf of facts.configs) {
      const d: DefFact | undefined = cf.scope >= 0 ? defs[cf.scope] : undefined;
      let rank: number;
      if (cf.rank === 0) rank = d?.kind === 'class' || (!d && context >= 0) ? 0 : 1;
      else rank = cf.rank + 1;
      raw.push({ name: cf.name, value: cf.value, rank, line: cf.row + baseRow });
    }
  }
  classes.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
  const resolver = new Resolver(imports, moduleBound);
  const config = buildConfig(raw);
  // Classes of this file that subclass nn.Linear build projections too.
  const localLinear = new Set<string>();
  for (const c of classes) if (c.bases.some((b) => resolver.resolve(b, false).qname === 'torch.nn.Linear')) localLinear.add(c.name);
  const advice = fileAdvice(chunks, imports.map((i) => i.target));
  const key = JSON.stringify([
    fileAdviceKey(advice),
    opts.capabilities ?? null,
    imports,
    [...moduleBound].sort(),
    [...config.values],
    [...config.bareValues],
    [...config.fieldValues],
    [...config.fieldFiles],
    config.file,
    config.imgSize ?? null,
    config.patchSize ?? null,
    [...localLinear],
    opts.shapes ?? {},
    hintsId,
  ]);
  return { resolver, config, classes, localLinear, opts, advice, key };
}

/** The sites of one group (a top-level class, or one top-level statement), rows relative to the group. */
interface GroupResult {
  sites: Site[];
  /** Projections left unpaired, for FFNs split over two classes. */
  leftovers: LinearFact[];
}

/**
 * Analyses a file. Keeps the last result of each group (a top-level class with
 * its methods, or a top-level statement): after an edit, only the group whose
 * facts changed is analysed again, the others are moved to their new rows.
 */
export class Analyzer {
  private cache = new Map<string, GroupResult>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  private envKey = '';
  private envId = 0;

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) this.ids.set(o, (id = this.nextId++));
    return id;
  }

  /** `imported`: defaults of the config classes the file imports from its folder (see related.ts). */
  run(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions, imported: readonly RawConfig[] = []): AnalyzeResult {
    const env = buildEnv(chunks, headers, opts, opts.hints ? this.idOf(opts.hints) : 0, imported);
    // A short stand-in for the (long) environment key, so group keys stay small.
    if (env.key !== this.envKey) {
      this.envKey = env.key;
      this.envId++;
    }
    const next = new Map<string, GroupResult>();
    const sites: Site[] = [];
    const leftovers: { l: LinearFact; base: number }[] = [];
    for (let i = 0; i < chunks.length; ) {
      const first = itemAt(chunks, i);
      let j = i + 1;
      if (first.context >= 0) while (j < chunks.length && itemAt(chunks, j).context === first.context) j++;
      const group = chunks.slice(i, j);
      const base = first.baseRow;
      const header = first.context >= 0 ? itemAt(headers, first.context) : undefined;
      const key = [
        this.envId,
        file,
        header ? `${header.name}(${header.bases.join(',')})` : '',
        group.map((c) => `${this.idOf(c.facts)}@${c.baseRow - base}`).join(' '),
        opts.hints ? base : '',
      ].join('\u0001');
      let result = this.cache.get(key) ?? next.get(key);
      result ??= analyzeGroup(file, group, header, base, env);
      next.set(key, result);
      for (const site of result.sites) sites.push(base === 0 ? site : shiftSite(site, base));
      for (const l of result.leftovers) leftovers.push({ l, base });
      i = j;
    }
    this.cache = next;
    for (const site of splitFfns(leftovers, file)) sites.push(site);
    for (const site of adviseFile(file, chunks, headers, env)) sites.push(site);
    sites.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
    const out: AnalyzeResult = { sites, classes: env.classes, config: env.config.file };
    const peak = opts.hints?.run?.peakBytes;
    if (peak) out.peakBytes = peak;
    return out;
  }
}

/** One-shot analysis (no cache). */
export function analyze(file: string, chunks: readonly PlacedChunk[], headers: readonly ClassHeader[], opts: ScanOptions): AnalyzeResult {
  return new Analyzer().run(file, chunks, headers, opts);
}

function analyzeGroup(file: string, chunks: readonly PlacedChunk[], header: ClassHeader | undefined, base: number, env: Env): GroupResult {
  const group = openGroup(file, chunks, header, base, env);
  // In this order: each pass skips the calls an earlier one made sites of, and the advisor
  // reads the sites found before it (an attention dropout next to eager attention is told so).
  const softmax = softmaxMembers(group.calls);
  findDropouts(group, softmax);
  findMasks(group);
  const leftovers = findFfns(group);
  adviseGroup(group, softmax);
  group.sites.sort((a, b) => a.range.startLine - b.range.startLine || a.range.startCol - b.range.startCol);
  return { sites: group.sites, leftovers };
}
