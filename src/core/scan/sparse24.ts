/**
 * Attaches the measured 2:4 speed advice to `ffn` sites: the scanner knows an FFN's widths,
 * the shapes give tokens per step, and the shipped tables say whether 2:4 pays there.
 * New site objects are returned (never mutated): the analyzer reuses site objects across
 * incremental rescans.
 */
import { adviseSparse24 } from '../advice/sparse24';
import { siteMessage } from './format';
import type { FileConfig, ScanOptions, Site } from './types';

export function withSparseAdvice(sites: Site[], config: FileConfig, opts: ScanOptions): Site[] {
  const sp = opts.sparse24;
  if (!sp || sp.tables.length === 0) return sites;
  const batch = opts.shapes?.batch ?? config.batch?.value;
  const seqLen = opts.shapes?.seqLen ?? config.seqLen?.value;
  const tokens = batch && seqLen && batch > 0 && seqLen > 0 ? batch * seqLen : undefined;
  const out = sites.map((s) => {
    const f = s.ffn;
    if (s.kind !== 'ffn' || !f?.inWidth || !f.hiddenWidth) return s;
    const a = adviseSparse24(sp.tables, { dModel: f.inWidth, dFF: f.hiddenWidth, gated: f.form === 'gated' || f.form === 'fused-gated', tokens, gpu: sp.gpu });
    if (!a) return s;
    const site: Site = { ...s, sparse24: { speedup: a.speedup, range: a.range, verdict: a.verdict, text: a.text, basis: a.basis, tokens } };
    site.message = siteMessage(site, opts.capabilities ?? null);
    return site;
  });
  // The same array when no site got advice, so callers can tell nothing changed.
  return out.some((s, i) => s !== sites[i]) ? out : sites;
}
