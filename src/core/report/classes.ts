/**
 * Measured totals per model class, for a CodeLens above the class: what all instances
 * of the class hold (their whole subtree: params, activations, masks) and what packing
 * the dropout masks measured inside them would save.
 */
import { normalizePath } from './model';
import type { Report } from './types';

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

/** `h.*.attn` as a RegExp over module paths (the harness writes * for varying parts). */
export function pathPattern(p: string): RegExp {
  return new RegExp(`^${p.split('.').map((part) => (part === '*' ? '[^.]+' : part.replace(/[\\^$+?()[\]{}|]/g, '\\$&'))).join('\\.')}$`);
}

function under(path: string, root: string): boolean {
  return root === '' || path === root || path.startsWith(`${root}.`);
}

/** Totals for the classes defined in `relFile` (relative to the run root), by class line. */
export function classTotals(report: Report, relFile: string): Map<number, ClassTotals> {
  const file = normalizePath(relFile);
  const out = new Map<number, ClassTotals>();
  const roots = new Map<number, string[]>();
  for (const m of report.modules) {
    if (!m.defined_at || normalizePath(m.defined_at.file) !== file) continue;
    const list = roots.get(m.defined_at.line) ?? [];
    list.push(m.path);
    roots.set(m.defined_at.line, list);
    if (!out.has(m.defined_at.line)) out.set(m.defined_at.line, { type: m.type, line: m.defined_at.line, instances: 0, params: 0, activations: 0, masks: 0, savingIfPacked: 0 });
  }
  const sitePatterns = report.sites.map((s) => ({ s, re: s.module === null ? null : pathPattern(s.module) }));
  for (const [line, paths] of roots) {
    const t = out.get(line) as ClassTotals;
    // Nested instances of the same class (rare) would double count: keep the outermost.
    const outer = paths.filter((p) => !paths.some((q) => q !== p && under(p, q)));
    t.instances = outer.length;
    for (const m of report.modules) {
      if (!outer.some((r) => under(m.path, r))) continue;
      t.params += m.params;
      t.masks += m.mask_bytes;
      t.activations += m.saved_bytes - m.mask_bytes;
    }
    for (const { s, re } of sitePatterns) {
      if (!re) continue;
      // A site matches when some module under the class fits its (wildcard) path.
      if (report.modules.some((m) => re.test(m.path) && outer.some((r) => under(m.path, r)))) t.savingIfPacked += s.saving_if_packed;
    }
  }
  return out;
}
