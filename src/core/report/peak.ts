/**
 * What the report types need beyond the schema: the schema describes stored fields, and this
 * is derived from them. The types themselves are generated (types.generated.ts).
 */
import type { MembitProfileReport } from './types.generated';

/**
 * The peak the overlays measure shares against: the allocator's peak on CUDA; on CPU,
 * which has no allocator record, what the harness could name at the peak.
 */
export function peakBytes(r: MembitProfileReport): number {
  return r.summary.peak_allocated ?? r.summary.tracked_at_peak;
}
