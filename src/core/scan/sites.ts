/**
 * Placing sites: ranges from chunk facts, the class and function around them, a site
 * built from a call, and a group's sites moved from group-relative to absolute rows.
 */
import type { GCall, ScopeNames } from './context';
import type { DefFact, RelRange } from './factTypes';
import { siteMessage } from './format';
import type { AttentionInfo, Estimate, FfnInfo, FfnMember, Site, SiteArgs, SiteKind, SiteRange } from './types';
import { itemAt } from '../arrays';

/** A chunk-relative range placed `baseRow` rows down. */
export function abs(r: RelRange, baseRow: number): SiteRange {
  return { startLine: r.sr + baseRow, startCol: r.sc, endLine: r.er + baseRow, endCol: r.ec };
}

/** The enclosing class and function of a scope (index into the chunk's defs). */
export function scopeNames(defs: readonly DefFact[], scope: number, ci: number, headerName: string | null): ScopeNames {
  const out: ScopeNames = { className: null, classKey: null, funcName: null, funcKey: null };
  for (let s = scope; s >= 0; s = itemAt(defs, s).parent) {
    const d = itemAt(defs, s);
    if (d.kind === 'func' && out.funcName === null) {
      out.funcName = d.name;
      out.funcKey = `${ci}:${s}`;
    }
    if (d.kind === 'class') {
      out.className = d.name;
      out.classKey = `${ci}:${s}`;
      break;
    }
  }
  if (out.className === null && headerName !== null) {
    out.className = headerName;
    out.classKey = 'h';
  }
  return out;
}

/** A site for a call; the message is worded from the finished site. */
export function buildSite(file: string, g: GCall, kind: SiteKind, form: Site['form'], args: SiteArgs, estimate: Estimate, extra: Partial<Site> = {}): Site {
  const site: Site = {
    file,
    range: g.range,
    kind,
    form,
    className: g.className,
    funcName: g.funcName,
    args,
    callee: g.f.callee,
    resolved: g.res.qname && !g.res.qname.startsWith('?') ? g.res.qname : null,
    estimate,
    message: '',
    code: `membit.${kind}`,
    ...extra,
  };
  if (g.f.binding) site.binding = g.f.path ? `${g.f.binding}.${g.f.path}` : g.f.binding;
  if (g.alias) site.aliasOf = g.alias;
  site.message = siteMessage(site);
  return site;
}

function shiftRange(r: SiteRange, by: number): SiteRange {
  return { startLine: r.startLine + by, startCol: r.startCol, endLine: r.endLine + by, endCol: r.endCol };
}

export function shiftMember(m: FfnMember, by: number): FfnMember;
export function shiftMember(m: FfnMember | undefined, by: number): FfnMember | undefined;
export function shiftMember(m: FfnMember | undefined, by: number): FfnMember | undefined {
  return m ? { ...m, line: m.line + by, range: shiftRange(m.range, by) } : undefined;
}

/** A copy of a group-relative site at absolute rows. */
export function shiftSite(site: Site, by: number): Site {
  const out: Site = { ...site, range: shiftRange(site.range, by) };
  if (site.attention) {
    const a: AttentionInfo = { ...site.attention };
    for (const k of ['scoresLine', 'maskLine', 'softmaxLine', 'dropoutLine', 'outputLine', 'defaultLine'] as const) if (a[k] !== undefined) a[k] = a[k] + by;
    out.attention = a;
  }
  if (site.ffn) {
    const f: FfnInfo = { ...site.ffn };
    const up = shiftMember(f.up, by);
    const down = shiftMember(f.down, by);
    const gate = shiftMember(f.gate, by);
    if (up) f.up = up;
    if (down) f.down = down;
    if (gate) f.gate = gate;
    out.ffn = f;
  }
  return out;
}
