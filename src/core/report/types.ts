/** The profile report, schema `membit.report/1` (see kernels/membit/profile/report.schema.json). */

export type RunStatus = 'ok' | 'oom' | 'error' | 'cancelled';

export interface Frame {
  file: string;
  line: number;
  name: string;
}

export interface RunInfo {
  id: string;
  script: string;
  argv: string[];
  variant: string;
  target: { kind: 'local' | 'ssh'; host: string | null };
  device: { name: string; total_bytes: number | null; capability: string | null } | null;
  python: string;
  torch: string;
  started: string;
  duration_s: number;
  steps: number;
  status: RunStatus;
  error: string | null;
}

export interface Summary {
  peak_allocated: number;
  peak_reserved: number | null;
  device_used_peak: number | null;
  params: number;
  grads: number;
  optimizer_state: number;
  activations_at_peak: number;
  masks_at_peak: number;
  unattributed_at_peak: number;
  step_time_s: number | null;
  samples_per_s: number | null;
}

export interface OpBytes {
  op: string;
  bytes: number;
  count: number;
}

export interface LineEntry {
  file: string;
  line: number;
  /** Bytes saved for backward by this line (masks included). */
  saved_bytes: number;
  /** The part of saved_bytes that is dropout/attention masks. */
  mask_bytes: number;
  ops: OpBytes[];
  module: string | null;
}

export interface ModuleEntry {
  path: string;
  type: string;
  defined_at: { file: string; line: number } | null;
  created_at: { file: string; line: number } | null;
  params: number;
  grads: number;
  saved_bytes: number;
  mask_bytes: number;
  fwd_ms: number | null;
  bwd_ms: number | null;
}

export interface SiteEntry {
  kind: string;
  file: string;
  line: number;
  module: string | null;
  elements: number;
  mask_bytes: number;
  saving_if_packed: number;
}

export interface Timeline {
  t_ms: number[];
  allocated: number[];
  reserved: number[];
  device_used: (number | null)[];
  phase: string[];
}

export interface Holder {
  bytes: number;
  category: string;
  frames: Frame[];
}

export interface Report {
  schema: 'membit.report/1';
  run: RunInfo;
  summary: Summary;
  lines: LineEntry[];
  modules: ModuleEntry[];
  sites: SiteEntry[];
  timeline: Timeline;
  peak: { t_ms: number | null; top: Holder[] };
  oom: { message: string; top: Holder[]; [k: string]: unknown } | null;
}
