/**
 * The small, Node-free shapes of a run set that travel to the report view (webview) and the
 * status bar: per-rank facts, never the ranks' full reports. runset.ts builds them.
 */
import type { RunSetDoc } from '../run/runSetTypes';

export type RankStatus = 'ok' | 'oom' | 'error' | 'cancelled' | 'missing';

export interface RankPeaks {
  peaks: { rank: number; peak: number | null; status: RankStatus; host: string | null }[];
  max?: { rank: number; peak: number };
  min?: { rank: number; peak: number };
  mean?: number;
  /** max / mean − 1 over the ranks with a report: 0 when all ranks peak alike. */
  imbalance?: number;
  /** The rank that ran out of memory first (by its failure time), if any did. */
  firstOom?: { rank: number; at: number | null; host: string | null };
}

/** One rank as the report view and status bar see it: small, whatever the report's size. */
export interface RankSummary {
  rank: number;
  host: string | null;
  device: string | null;
  status: RankStatus;
  peak: number | null;
  /** The peak is what the harness named (CPU) rather than the allocator's. */
  named: boolean;
  params: number | null;
  grads: number | null;
  optimizer_state: number | null;
  activations: number | null;
  unsharded_params_max: number | null;
  ddp_buckets: number | null;
  outside_allocator: number | null;
  error: string | null;
}

/** What the editor keeps of a run set: the per-rank facts and timelines, never the full reports. */
export interface RunSetInfo {
  file: string;
  id: string;
  script: string;
  variant: string;
  launcher: RunSetDoc['launcher'];
  world_size: number;
  status: RunSetDoc['status'];
  message: string | null;
  ranks: RankSummary[];
  peaks: RankPeaks;
  timelines: { rank: number; t_ms: number[]; bytes: number[]; source: 'allocator' | 'steps' }[];
}

