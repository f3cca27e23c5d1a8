/**
 * Measured totals per model class, for a CodeLens above the class: what all instances
 * of the class hold (their whole subtree: params, activations, masks) and what packing
 * the dropout masks measured inside them would save.
 */
import { formatBytes } from '../units';
import { normalizePath } from './model';
import type { Report } from './types';
import { itemAt } from '../arrays';

export interface ClassTotals {
  type: string;
  /** 1-based line of the class statement. */
  line: number;
  instances: number;
  params: number;
  activations: number;
  masks: number;
  /** Bytes packing every dropout mask measured inside the class would save. */
  savingIfPacked: number;
}

/**
 * A matcher for a module path with `*` for varying parts (`h.*.attn`), as the harness
 * writes them. Compared segment by segment, never through a RegExp: the path comes from
 * a report or the webview, and a regex built from it could be made to backtrack for
 * seconds (`*` inside a segment is a literal character here, as in the harness).
 */
export function pathMatcher(p: string): (path: string) => boolean {
  const want = p.split('.');
  return (path) => {
    const got = path.split('.');
    if (got.length !== want.length) return false;
    for (let i = 0; i < want.length; i++) if (want[i] !== '*' && want[i] !== got[i]) return false;
    return true;
  };
}

const IDENT = /[\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}_]/u;

/**
 * The 0-based index of the line that opens `class NAME` (NAME exactly, then not an
 * identifier character), nearest to `near` within `window` lines; -1 when none. NAME
 * comes from a report: it is compared as text, never turned into a RegExp.
 */
export function findClassLine(lines: readonly string[], name: string, near: number, window = 2000): number {
  if (!name) return -1;
  let best = -1;
  for (let i = Math.max(0, near - window + 1); i < Math.min(lines.length, near + window); i++) {
    const l = itemAt(lines, i).trimStart();
    if (!l.startsWith('class')) continue;
    const rest = l.slice(5);
    const body = rest.trimStart();
    if (body.length === rest.length || !body.startsWith(name)) continue;
    const next = body.charAt(name.length);
    if (next && IDENT.test(next)) continue;
    if (best < 0 || Math.abs(i - near) < Math.abs(best - near)) best = i;
  }
  return best;
}

/** A module path with its instance numbers made wildcards: `h.3.attn` → `h.*.attn`. */
export function generalize(path: string): string {
  return path
    .split('.')
    .map((p) => (/^\d+$/.test(p) ? '*' : p))
    .join('.');
}

/** Whether a (wildcard) site path lies under a generalized prefix, segment by segment. */
function sitePathUnder(site: string[], prefix: string[]): boolean {
  if (prefix.length === 1 && prefix[0] === '') return true;
  if (site.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    const a = itemAt(site, i);
    const b = itemAt(prefix, i);
    if (a !== b && a !== '*' && b !== '*') return false;
  }
  return true;
}

/**
 * Totals for the classes defined in `relFile` (relative to the run root), by class line.
 * Linear in the report's size: reports of tens of MB must not stall the editor.
 */
export function classTotals(report: Report, relFile: string): Map<number, ClassTotals> {
  const file = normalizePath(relFile);
  const out = new Map<number, ClassTotals>();
  // By class line: the module paths of its instances, and its totals (the ones in `out`).
  const roots = new Map<number, { paths: Set<string>; totals: ClassTotals }>();
  for (const m of report.modules) {
    if (!m.defined_at || normalizePath(m.defined_at.file) !== file) continue;
    let root = roots.get(m.defined_at.line);
    if (!root) {
      const totals: ClassTotals = { type: m.type, line: m.defined_at.line, instances: 0, params: 0, activations: 0, masks: 0, savingIfPacked: 0 };
      roots.set(m.defined_at.line, (root = { paths: new Set(), totals }));
      out.set(m.defined_at.line, totals);
    }
    root.paths.add(m.path);
  }
  if (out.size === 0) return out;
  // Nested instances of the same class (rare) would double count: keep the outermost.
  const ancestorIn = (path: string, set: Set<string>): boolean => {
    if (path === '') return false;
    if (set.has('')) return true;
    let i = path.lastIndexOf('.');
    while (i > 0) {
      if (set.has(path.slice(0, i))) return true;
      i = path.lastIndexOf('.', i - 1);
    }
    return false;
  };
  const classOfRoot = new Map<string, ClassTotals>();
  for (const { paths: set, totals: t } of roots.values()) {
    for (const p of [...set]) {
      if (ancestorIn(p, set)) set.delete(p);
      else classOfRoot.set(p, t);
    }
    t.instances = set.size;
  }
  // Each module counts toward every class whose instance lies on its path (or is it).
  for (const m of report.modules) {
    const seen = new Set<ClassTotals>();
    let path: string | null = m.path;
    while (path !== null) {
      const t = classOfRoot.get(path);
      if (t && !seen.has(t)) {
        seen.add(t);
        t.params += m.params;
        t.masks += m.mask_bytes;
        t.activations += m.saved_bytes - m.mask_bytes;
      }
      if (path === '') break;
      const dot = path.lastIndexOf('.');
      path = dot < 0 ? (classOfRoot.has('') ? '' : null) : path.slice(0, dot);
    }
  }
  // Sites carry wildcard paths and one figure for all their calls: a site counts once per
  // class it lies under.
  const prefixes = [...roots.values()].map(({ paths, totals }) => ({ totals, list: [...new Set([...paths].map(generalize))].map((p) => p.split('.')) }));
  for (const s of report.sites) {
    if (s.module === null) continue;
    const segs = s.module.split('.');
    for (const { totals, list } of prefixes) {
      if (list.some((p) => sitePathUnder(segs, p))) totals.savingIfPacked += s.saving_if_packed;
    }
  }
  return out;
}

/**
 * `Measured: 2× CausalSelfAttention (summed, CPU) — activations 1 MiB · masks 256 KiB`: short
 * enough for an 80–100 column editor; the full breakdown is in {@link classLensDetail}.
 */
export function classLensTitle(t: ClassTotals, device: string, kind = 'Measured'): string {
  const scope = [t.instances > 1 ? 'summed' : '', device === 'cpu' ? 'CPU' : ''].filter(Boolean).join(', ');
  const parts = [`activations ${formatBytes(t.activations)}`];
  if (t.masks > 0) parts.push(`masks ${formatBytes(t.masks)}`);
  return `${kind}: ${t.instances}× ${t.type}${scope ? ` (${scope})` : ''} — ${parts.join(' · ')}`;
}

/** The lens's tooltip: every figure, and what packing the masks would save. */
export function classLensDetail(t: ClassTotals): string {
  const parts = [`activations ${formatBytes(t.activations)}`, `masks ${formatBytes(t.masks)}`, `params ${formatBytes(t.params)}`];
  if (t.savingIfPacked > 0) parts.push(`packing the masks saves ${formatBytes(t.savingIfPacked)}`);
  return parts.join(' · ');
}
