/**
 * Opens a group for its passes: places and resolves its calls, indexes where each
 * construction is used, and gives the passes one way to make a site.
 */
import type { ClassHeader, Env, GCall, Group, PlacedChunk } from './context';
import { namedSite } from './names';
import { ShapeContext } from './shapes';
import { abs, buildSite, scopeNames } from './sites';
import type { Estimate, MeasuredLine, Site, SiteArgs, SiteKind } from './types';

export function openGroup(file: string, chunks: readonly PlacedChunk[], header: ClassHeader | undefined, base: number, env: Env): Group {
  const calls = resolveCalls(chunks, header, base, env);
  // Measured figures are keyed by absolute line.
  const shapes = new ShapeContext(env.opts.shapes ?? {}, env.config, env.opts.hints, base);

  // Uses of a binding: `self.attn_dropout(att)` in the same class, `drop(x)` in the same function.
  const uses = new Map<string, GCall[]>();
  const useKey = (scopeKey: string | null, callee: string) => `${scopeKey ?? ''}|${callee}`;
  for (const g of calls) {
    const key = g.f.callee.startsWith('self.') ? useKey(g.classKey, g.f.callee) : useKey(g.funcKey, g.f.callee);
    let list = uses.get(key);
    if (!list) uses.set(key, (list = []));
    list.push(g);
  }
  const usesOf = (g: GCall): GCall[] => {
    const b = g.f.binding;
    if (!b) return [];
    if (b.startsWith('self.')) return uses.get(useKey(g.classKey, b)) ?? [];
    if (/^[A-Za-z_]\w*$/.test(b)) return uses.get(useKey(g.funcKey, b)) ?? [];
    return [];
  };

  const sites: Site[] = [];
  const taken = new Set<GCall>();
  const makeSite = (g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra: Partial<Site> = {}): Site => {
    const site = buildSite(file, g, kind, form, args, estimate, extra);
    sites.push(site);
    taken.add(g);
    return site;
  };
  const measuredFor = (g: GCall): MeasuredLine | undefined => {
    const own: number[] = [];
    for (let l = g.range.startLine; l <= g.range.endLine; l++) own.push(l);
    return shapes.measured(own) ?? shapes.measured(usesOf(g).map((u) => u.range.startLine));
  };
  return { file, chunks, header, base, env, shapes, calls, sites, taken, usesOf, makeSite, measuredFor };
}

/** The group's calls, rows relative to the group, callees resolved through the file's imports. */
function resolveCalls(chunks: readonly PlacedChunk[], header: ClassHeader | undefined, base: number, env: Env): GCall[] {
  const { resolver } = env;
  const calls: GCall[] = [];
  chunks.forEach((c, ci) => {
    const { facts, context } = c;
    const baseRow = c.baseRow - base;
    const headerName = context >= 0 && header ? header.name : null;
    for (const f of facts.calls) {
      const n = scopeNames(facts.defs, f.scope, ci, headerName);
      const g: GCall = {
        f,
        chunk: ci,
        range: abs(f.pos, baseRow),
        className: n.className,
        classKey: n.classKey,
        funcName: n.funcName,
        funcKey: n.funcKey,
        res: resolver.resolve(f.callee, f.headLocal),
      };
      // `mask_fn = create_causal_mask if … else create_sliding_window_causal_mask; mask_fn(...)`:
      // the call is taken for the first name the variable may stand for that makes a site by name.
      if (f.aliasOf) {
        const rs = f.aliasOf.map((t) => ({ t, r: resolver.resolve(t.callee, t.headLocal) }));
        const hit = rs.find(({ r }) => namedSite(r) !== null);
        // "Fused, no mask stored" must hold on every path: not for `sdpa if c else eager_attention`.
        if (hit && (namedSite(hit.r) !== 'fused' || rs.every(({ r }) => namedSite(r) === 'fused'))) {
          g.res = hit.r;
          g.alias = hit.t.callee;
        }
      }
      calls.push(g);
    }
  });
  return calls;
}
