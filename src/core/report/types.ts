/**
 * The profile report, schema `membit.report/1`. The JSON Schema in
 * kernels/membit/profile/report.schema.json is the authority (and documents each
 * field); these types mirror it for the TypeScript reader.
 */

export type RunStatus = 'ok' | 'oom' | 'error' | 'cancelled';
export type Phase = 'forward' | 'backward' | 'optimizer' | 'other';

export interface FileLine {
  file: string;
  line: number;
}

export interface Frame extends FileLine {
  name: string;
}

export interface RunInfo {
  id: string;
  script: string;
  argv: string[];
  variant: string;
  target: { kind: 'local' | 'ssh'; host: string | null };
  device: { name: string; type: string; index: number | null; total_bytes: number | null; capability: string | null };
  python: string;
  torch: string;
  membit: string;
  started: string;
  duration_s: number;
  steps: number;
  warmup: number;
  steps_requested: number;
  status: RunStatus;
  error: string | null;
  error_at: FileLine | null;
  root: string;
  pid: number;
  patched: { path: string; kind: string; from: string; to: string }[];
  skipped: { path: string; type: string; reason: string }[];
  notes: string[];
  /** What each lever of the variant did (absent in reports of earlier versions). */
  levers?: LeverRecord[];
  /** Files whose rewritten text ran instead (`--overlay`); absent in reports of earlier versions. */
  overlays?: OverlayRecord[];
  /** One rank of a torchrun/SLURM job; absent for a single process. */
  distributed?: DistributedRun;
  /** Present when the script used torch.compile (absent in reports of earlier versions). */
  compile?: CompileRecord;
}

/** Who a rank was (report.schema.json $defs/distributedRun). */
export interface DistributedRun {
  rank: number;
  local_rank: number;
  world_size: number;
  local_world_size: number | null;
  node_rank: number | null;
  host: string;
  launcher: 'torchrun' | 'slurm' | 'env';
  run_set: string | null;
  slurm_job: string | null;
  process_group: boolean;
  backend: string | null;
  /** Unix time (s) the rank's run failed; null when it ended ok. */
  failed_at: number | null;
  notes: string[];
}

/** What the distributed machinery held in a rank (report.schema.json $defs/distributedSummary). */
export interface DistributedSummary {
  fsdp_units: { module: string; params: number; sharded_bytes: number; unsharded_bytes: number | null }[];
  unsharded_params_max: number | null;
  unsharded_params_max_units: string[];
  all_gather_buffer_max: number | null;
  reduce_scatter_buffer_max: number | null;
  ddp: { wrappers: number; buckets: number; bucket_bytes: number | null; bucket_sizes: number[]; grads_are_bucket_views: boolean } | null;
  nvml_process_used_max: number | null;
  outside_allocator: number | null;
  /** [ms since the run started, bytes allocated, peak so far] per step event. */
  step_memory: (number | null)[][];
}

/** How the script compiled, and per compiled graph what it saved in the report's step. */
export interface CompileRecord {
  calls: { file: string | null; line: number | null; backend: string; mode: string | null }[];
  graphs: number;
  graph_breaks: number;
  attribution: 'fx-stack-trace';
  per_graph: {
    id: number;
    saved_tensors: number;
    calls: number;
    saved_bytes: number;
    /** Attributed to source lines through FX node stack traces. */
    lines_bytes: number;
    /** Known only per graph: shown at the graph's call line, never spread. */
    graph_only_bytes: number;
    lines: number;
  }[];
}

export interface LeverRecord {
  lever: 'packed' | 'recompute' | 'sparse24' | 'sdpa' | 'checkpoint' | 'bf16' | 'compile';
  /** e.g. "torch.utils.checkpoint (use_reentrant=False) on h (6 Block blocks)". */
  how: string;
}

export interface OverlayRecord {
  file: string;
  replacement: string;
  used: boolean;
  /** Original lines (1-based, inclusive) the replacement rewrote: figures there are approximate. */
  approximate: { first: number; last: number }[];
}

export interface Summary {
  peak_allocated: number | null;
  peak_reserved: number | null;
  device_used_peak: number | null;
  params: number;
  buffers: number;
  grads: number;
  optimizer_state: number;
  saved_bytes: number;
  mask_bytes: number;
  saved_outside_modules: number;
  params_at_peak: number;
  buffers_at_peak: number;
  grads_at_peak: number;
  optimizer_state_at_peak: number;
  activations_at_peak: number;
  masks_at_peak: number;
  unattributed_at_peak: number | null;
  tracked_at_peak: number;
  /** Distributed categories of a rank's run; absent for a single process. */
  distributed?: DistributedSummary;
  step_time_s: number | null;
  samples_per_s: number | null;
  batch_size: number | null;
  /** Each profiled step's time; absent in reports of earlier versions. */
  step_times_s?: number[];
}

export interface OpBytes {
  op: string;
  bytes: number;
  count: number;
}

export interface LineEntry extends FileLine {
  func: string;
  module: string | null;
  /** Bytes saved for backward by this line (masks included). */
  saved_bytes: number;
  /** The part of saved_bytes that is dropout/attention masks. */
  mask_bytes: number;
  at_peak_bytes: number;
  tensors: number;
  /** Of saved_bytes, saved by torch.compile graphs and attributed through FX node stack traces. */
  compiled_bytes?: number;
  /** Of saved_bytes, a compiled graph's figure known only per graph (this is its call line). */
  graph_only_bytes?: number;
  ops: OpBytes[];
}

export interface ModuleEntry {
  path: string;
  type: string;
  defined_at: FileLine | null;
  created_at: FileLine | null;
  params: number;
  grads: number;
  saved_bytes: number;
  mask_bytes: number;
  at_peak_bytes: number;
  fwd_ms: number | null;
  calls: number;
}

export interface SiteEntry extends FileLine {
  kind: string;
  module: string | null;
  elements: number;
  mask_bytes: number;
  saving_if_packed: number;
  calls: number;
}

export interface Timeline {
  t_ms: number[];
  allocated: number[];
  reserved: number[];
  device_used: (number | null)[];
  phase: Phase[];
}

export interface Holder {
  bytes: number;
  category: string;
  frames: Frame[];
  saved_at: FileLine | null;
  shape: number[] | null;
  dtype: string | null;
}

export interface Oom {
  message: string;
  requested_bytes: number | null;
  device_free: number | null;
  device_total: number | null;
  allocated: number | null;
  reserved: number | null;
  step: number;
  phase: Phase;
  top: Holder[];
  lines: (FileLine & { bytes: number })[];
}

export interface Report {
  schema: 'membit.report/1';
  run: RunInfo;
  summary: Summary;
  lines: LineEntry[];
  modules: ModuleEntry[];
  sites: SiteEntry[];
  timeline: Timeline | null;
  peak: { t_ms: number | null; step: number | null; phase: Phase | null; source: 'allocator' | 'tensors'; replay_bytes: number | null; top: Holder[] };
  oom: Oom | null;
  /** FFN blocks with the tokens and dtype they ran with; absent in reports of models without one. */
  ffn?: FfnEntry[];
  /** sha256 of each attributed file under the run's root; absent in reports of earlier versions. */
  sources?: SourceHash[];
  /** Mask flip rates of the 2:4 layers; absent without them. */
  flip_rate?: { step: number[]; layers: Record<string, number[]> };
  /** Where the report came from when not from a harness run (a memory snapshot); absent otherwise. */
  source?: ReportSource;
  /** The allocator's segments at a snapshot's dump; absent in harness reports. */
  segments?: SegmentsView;
  /** Every out-of-memory entry of a snapshot's trace; absent in harness reports. */
  oom_events?: OomEvent[];
}

export interface ReportSource {
  kind: 'snapshot';
  files: string[];
  stacks?: 'python' | 'all' | 'none';
  /** Whether the snapshot had an allocation history; without it, figures are the state at the dump. */
  history?: boolean;
  entries?: number;
  device?: number | null;
  rank?: number | null;
}

export interface SegmentRow {
  address: number;
  stream: number;
  type: string;
  total: number;
  allocated: number;
  requested: number;
  /** Reserved but free: the segment's inactive blocks. */
  free: number;
  largest_free: number;
  blocks: number;
}

export interface SegmentsView {
  reserved: number;
  allocated: number;
  requested: number;
  free: number;
  largest_free: number;
  count: number;
  /** The segments with the most free bytes first (at most 500). */
  items: SegmentRow[];
}

export interface OomEvent {
  t_ms: number | null;
  requested_bytes: number;
  device_free: number | null;
  allocated: number;
  reserved: number;
  frames: Frame[];
}

export interface SourceHash {
  file: string;
  /** Of the UTF-8 text without a byte-order mark, as an editor buffer holds it. */
  sha256: string;
  bytes: number;
}

export interface FfnEntry {
  module: string;
  d_model: number;
  d_ff: number;
  gated: boolean;
  /** Tokens per step at the block's first training forward; null when it never trained. */
  tokens: number | null;
  dtype: string | null;
  /** Already SparseLinear24 in this run. */
  converted: boolean;
  created_at: { file: string; line: number } | null;
}

/**
 * The peak the overlays measure shares against: the allocator's peak on CUDA; on CPU,
 * which has no allocator record, what the harness could name at the peak.
 */
export function peakBytes(r: Report): number {
  return r.summary.peak_allocated ?? r.summary.tracked_at_peak;
}
