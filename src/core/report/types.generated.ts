/**
 * GENERATED from kernels/membit/profile/report.schema.json by scripts/gen-report-types.mjs: do not edit.
 * Change the schema, then run `npm run gen:report-types`; test/unit/reportTypes.test.ts fails while this
 * file and the schema disagree. Hand-written additions live in peak.ts, re-exported by types.ts.
 */

export type BytesOrNull = number | null;
export type RunStatus = 'ok' | 'oom' | 'error' | 'cancelled';
export type Bytes = number;
export type Phase = 'forward' | 'backward' | 'optimizer' | 'other';

/**
 * One training run measured by `python -m membit.profile`. Byte counts are integers. Paths are relative to run.root when the file lies under it (posix separators), absolute otherwise. 'Step' means one call of the (first) optimizer's step(). 'At peak' means: on CUDA, the moment the allocator's replayed history reached its maximum; on CPU, which has no allocator record, the start of the backward pass that held the most.
 */
export interface MembitProfileReport {
  schema: 'membit.report/1';
  run: RunInfo;
  summary: Summary;
  /**
   * Per source line (innermost user-code frame when the tensor was saved), largest first.
   */
  lines: LineEntry[];
  /**
   * Every module of the model(s). Figures are the module's own (not its children's): they sum to the summary.
   */
  modules: ModuleEntry[];
  /**
   * Dropout calls seen at run time, per source line.
   */
  sites: SiteEntry[];
  /**
   * Allocator history over the profiled steps (CUDA only; null on CPU).
   */
  timeline: null | Timeline;
  peak: {
    /**
     * Since the first profiled step began.
     */
    t_ms: number | null;
    step: number | null;
    phase: Phase | null;
    /**
     * allocator: live blocks from the CUDA allocator's history; tensors: what the hooks saw (CPU).
     */
    source: 'allocator' | 'tensors';
    /**
     * Bytes live at the peak in the replayed history (requested sizes rounded to blocks).
     */
    replay_bytes: number | null;
    top: Holder[];
  };
  oom: null | Oom;
  /**
   * Feed-forward blocks found by the rule membit.patch(ffn='2:4') uses: widths, the tokens per step and compute dtype of their first training forward, whether they already run 2:4, and where the block was built. The editor reads the measured 2:4 speed tables for them. Absent when the model has none.
   */
  ffn?: FfnEntry[];
  /**
   * sha256 of every file under run.root that the report attributes a line to, hashed when the report was written, as UTF-8 text without a byte-order mark. The editor shows a file's figures as current exactly when its text hashes the same. Absent in reports of earlier versions.
   */
  sources?: SourceHash[];
  /**
   * Mask flip rates of the 2:4 layers (SparseLinear24): the training step of each refresh and, per layer, the fraction of mask entries that changed. Absent without 2:4 layers.
   */
  flip_rate?: {
    step: number[];
    layers: {
      [k: string]: number[];
    };
  };
  source?: ReportSource;
  segments?: SegmentsView;
  /**
   * Every out-of-memory entry of a snapshot's trace (oom holds the last one in full). Absent in harness reports.
   */
  oom_events?: OomEvent[];
}
export interface RunInfo {
  id: string;
  /**
   * The script, relative to root when under it.
   */
  script: string;
  /**
   * The script's own arguments.
   */
  argv: string[];
  /**
   * baseline, or the levers applied joined by '+' in the order packed|recompute, sparse24, sdpa, checkpoint, bf16, compile (e.g. packed+sparse24, sdpa+checkpoint+bf16).
   */
  variant: string;
  target: {
    kind: 'local' | 'ssh';
    host: string | null;
  };
  device: {
    name: string;
    /**
     * torch device type the model ran on: cuda or cpu.
     */
    type: string;
    index: number | null;
    total_bytes: BytesOrNull;
    capability: string | null;
  };
  python: string;
  torch: string;
  membit: string;
  /**
   * ISO-8601, UTC.
   */
  started: string;
  duration_s: number;
  /**
   * Profiled steps completed (after warmup).
   */
  steps: number;
  warmup: number;
  /**
   * --steps; 0 = until the script ends.
   */
  steps_requested: number;
  status: RunStatus;
  /**
   * What went wrong: the exception and the last lines of its traceback.
   */
  error: string | null;
  /**
   * Innermost user-code frame of the failure.
   */
  error_at: FileLine | null;
  /**
   * Absolute folder that paths are relative to.
   */
  root: string;
  pid: number;
  /**
   * Modules the variant replaced.
   */
  patched: {
    path: string;
    kind: string;
    from: string;
    to: string;
  }[];
  /**
   * Modules the variant saw and left alone, with why.
   */
  skipped: {
    path: string;
    type: string;
    reason: string;
  }[];
  /**
   * What the harness could not measure on this machine, and why.
   */
  notes: string[];
  distributed?: DistributedRun;
  /**
   * Present only in reports written by `python -m membit.predict`: the step was run with CUDA faked (meta tensors, nothing computed) and every figure is predicted for this GPU, not measured. Absent in measured reports.
   */
  prediction?: {
    gpu: {
      key: string;
      name: string;
      total_bytes: Bytes;
      capability: string;
      [k: string]: unknown;
    };
    /**
     * false: the fake run could not follow the whole step; figures are a lower bound up to where it stopped (partial_reason).
     */
    complete: boolean;
    partial_reason: string | null;
    /**
     * Optimizer steps followed.
     */
    steps: number;
    /**
     * Predicted torch.cuda.max_memory_allocated: the tensors' peak (512-byte blocks) plus the allocator-side entries of fixed.
     */
    peak_allocated: number;
    /**
     * The fake run's own peak, tensors only.
     */
    tensors_peak: number;
    /**
     * What fake tensors cannot see, from the per-GPU table (each entry says so in source).
     */
    fixed: {
      what: string;
      bytes: Bytes;
      in_allocator: boolean;
      source: string;
      [k: string]: unknown;
    }[];
    /**
     * Reserved memory at its highest: the trace replayed through the caching allocator's segment rules (on the card, where cached segments are released before an out-of-memory error).
     */
    peak_reserved?: number;
    /**
     * peak_reserved / peak_allocated - 1.
     */
    fragmentation?: number;
    /**
     * peak_reserved plus the CUDA context: what the card must hold.
     */
    device_need: number;
    fits: boolean;
    out_of_memory?: null | {
      request: Bytes;
      allocated: Bytes;
      reserved: Bytes;
      file: string | null;
      line: number | null;
      [k: string]: unknown;
    };
    /**
     * Bytes live at the predicted peak by kind (params, buffers, grads, optimizer_state, activations, masks, temporaries, before_step).
     */
    categories: {
      [k: string]: unknown;
    };
    /**
     * Reads of fake tensors' values the prediction could not know (.item(), .tolist(), bool(t), .cpu()); the script got the assumed value.
     */
    host_reads: {
      what: string;
      file: string;
      line: number;
      user: boolean;
      assumed: string;
      count: number;
      [k: string]: unknown;
    }[];
    /**
     * scaled_dot_product_attention calls by the CUDA backend the prediction chose (flash, efficient, math).
     */
    sdpa_backends?: {
      [k: string]: unknown;
    };
    /**
     * 'events': the timeline's t_ms counts allocator events, not time.
     */
    timeline_axis?: string;
    fsdp?: null | {
      ranks: number;
      per_rank_peak: Bytes;
      /**
       * Parameter bytes of the largest block (a ModuleList child): the all-gather and reduce-scatter buffers of the estimate are sized by it.
       */
      largest_block_params?: number;
      how: string;
      [k: string]: unknown;
    };
    max_batch?: null | {
      variant?: string;
      arg: string;
      largest: number | null;
      /**
       * partial: a probe's fake run could not follow the whole step (error names it); largest counts only the complete probes before it.
       */
      status?: 'ok' | 'partial';
      error?: string | null;
      probes: unknown[];
      [k: string]: unknown;
    };
    /**
     * With --variants: each variant's prediction (and largest batch with --find-max-batch).
     */
    variants?: unknown[];
    [k: string]: unknown;
  };
  /**
   * What each lever of the variant did, in the order applied (one entry per lever and model). Absent in reports of earlier versions.
   */
  levers?: LeverRecord[];
  compile?: CompileRecord;
  /**
   * Files whose text was replaced for this run (--overlay). Line figures in them are mapped back onto the original's lines. Absent in reports of earlier versions.
   */
  overlays?: OverlayRecord[];
}
export interface FileLine {
  file: string;
  line: number;
}
/**
 * One rank of a distributed job (torchrun, SLURM): who it was. Absent when the run was a single process.
 */
export interface DistributedRun {
  rank: number;
  local_rank: number;
  world_size: number;
  local_world_size: number | null;
  node_rank: number | null;
  host: string;
  launcher: 'torchrun' | 'slurm' | 'env';
  /**
   * The id all ranks of the job share.
   */
  run_set: string | null;
  slurm_job: string | null;
  /**
   * Whether the script called init_process_group.
   */
  process_group: boolean;
  backend: string | null;
  /**
   * Unix time (s) this rank's run failed (oom, error, cancelled); null when it ended ok.
   */
  failed_at: number | null;
  notes: string[];
}
export interface LeverRecord {
  lever: 'packed' | 'recompute' | 'sparse24' | 'sdpa' | 'checkpoint' | 'bf16' | 'compile';
  /**
   * e.g. 'torch.utils.checkpoint (use_reentrant=False) on h (6 Block blocks)'.
   */
  how: string;
}
/**
 * Present when the script used torch.compile. A compiled graph runs as one autograd Function: what it saves is attributed to lines and modules through its FX nodes' stack traces and module stacks; what cannot be mapped stays a per-graph figure (graph_only_bytes), never spread. Absent in reports of earlier versions.
 */
export interface CompileRecord {
  /**
   * torch.compile calls the script made.
   */
  calls: {
    file: string | null;
    line: number | null;
    backend: string;
    mode: string | null;
  }[];
  /**
   * Compiled forward graphs that ran.
   */
  graphs: number;
  /**
   * Graph breaks dynamo counted during the run.
   */
  graph_breaks: number;
  attribution: 'fx-stack-trace';
  per_graph: {
    /**
     * AOTAutograd graph id.
     */
    id: number;
    saved_tensors: number;
    calls: number;
    /**
     * Saved for backward in the report's step (by storage, as lines count them).
     */
    saved_bytes: number;
    /**
     * Of those, attributed to source lines through FX node stack traces.
     */
    lines_bytes: number;
    /**
     * Of those, known only per graph (shown at the graph's call line).
     */
    graph_only_bytes: number;
    lines: number;
  }[];
}
export interface OverlayRecord {
  /**
   * The original file, as report paths are written.
   */
  file: string;
  /**
   * The file whose text ran in its place (absolute, on the machine that ran).
   */
  replacement: string;
  /**
   * Whether the run executed it (as the script or an import).
   */
  used: boolean;
  /**
   * Original lines (1-based, inclusive) the replacement rewrote: figures there are approximate.
   */
  approximate: {
    first: number;
    last: number;
  }[];
}
export interface Summary {
  /**
   * torch.cuda.max_memory_allocated over the profiled steps; null on CPU.
   */
  peak_allocated: number | null;
  /**
   * torch.cuda.max_memory_reserved over the profiled steps; null on CPU.
   */
  peak_reserved: number | null;
  /**
   * Largest device-wide used memory NVML reported over the profiled steps (all processes; the whole run if profiling never started); null without NVML.
   */
  device_used_peak: number | null;
  params: Bytes;
  buffers: Bytes;
  /**
   * Gradient bytes at the optimizer step of the reported step.
   */
  grads: number;
  optimizer_state: Bytes;
  /**
   * Bytes saved for backward during the reported step, each storage once (masks included). Equals the sum of lines[].saved_bytes.
   */
  saved_bytes: number;
  /**
   * The part of saved_bytes that is dropout and attention masks. Equals the sum of lines[].mask_bytes.
   */
  mask_bytes: number;
  /**
   * Part of saved_bytes saved outside any module's forward; modules[].saved_bytes sum to saved_bytes minus this.
   */
  saved_outside_modules: number;
  params_at_peak: Bytes;
  buffers_at_peak: Bytes;
  grads_at_peak: Bytes;
  optimizer_state_at_peak: Bytes;
  /**
   * Saved-for-backward tensors (not masks) alive at the peak.
   */
  activations_at_peak: number;
  masks_at_peak: Bytes;
  /**
   * peak_allocated minus every category above: temporaries, the batch, the allocator's rounding. Null on CPU.
   */
  unattributed_at_peak: number | null;
  /**
   * Sum of the *_at_peak categories: what the harness can name.
   */
  tracked_at_peak: number;
  /**
   * Median profiled step time (CUDA events on GPU).
   */
  step_time_s: number | null;
  samples_per_s: number | null;
  /**
   * Samples per step: leading dimension of the model's output, summed over its forward calls in the step.
   */
  batch_size: number | null;
  /**
   * Each profiled step's time, in order (step_time_s is their median); readers show the spread and call differences inside it noise. Absent in reports of earlier versions.
   */
  step_times_s?: number[];
  distributed?: DistributedSummary;
}
/**
 * What the distributed machinery held in this rank. Sharded params/grads/optimizer state are the summary's own params/grads/optimizer_state (local shards). These figures are not added to tracked_at_peak: what the allocator held for them stays unattributed.
 */
export interface DistributedSummary {
  fsdp_units: {
    module: string;
    params: number;
    sharded_bytes: Bytes;
    unsharded_bytes: BytesOrNull;
  }[];
  /**
   * Most bytes of FSDP2 parameters held unsharded at once (all-gathered, not yet resharded).
   */
  unsharded_params_max: number | null;
  unsharded_params_max_units: string[];
  all_gather_buffer_max: BytesOrNull;
  reduce_scatter_buffer_max: BytesOrNull;
  ddp: {
    wrappers: number;
    buckets: number;
    bucket_bytes: BytesOrNull;
    bucket_sizes: Bytes[];
    grads_are_bucket_views: boolean;
  } | null;
  /**
   * Largest device memory NVML counted for this process (allocator, CUDA context, NCCL).
   */
  nvml_process_used_max: number | null;
  /**
   * nvml_process_used_max minus peak_reserved: NCCL's buffers and the CUDA context.
   */
  outside_allocator: number | null;
  /**
   * Per step event: [ms since the run started, bytes allocated, peak so far].
   */
  step_memory: (number | null)[][];
}
export interface LineEntry {
  file: string;
  line: number;
  func: string;
  /**
   * Module path; '*' stands for the parts that differ when one line runs in several modules (h.*.attn).
   */
  module: string | null;
  saved_bytes: Bytes;
  mask_bytes: Bytes;
  at_peak_bytes: Bytes;
  tensors: number;
  /**
   * Of saved_bytes, saved by torch.compile graphs and attributed here through their FX nodes' stack traces (ops are then the FX nodes' ops). Absent when none.
   */
  compiled_bytes?: number;
  /**
   * Of saved_bytes, saved by a compiled graph but not mappable to a node: a per-graph figure shown at the graph's call line. Absent when none.
   */
  graph_only_bytes?: number;
  /**
   * By the autograd op that first used the tensor in backward (unknown before backward ran).
   */
  ops: OpBytes[];
}
export interface OpBytes {
  op: string;
  bytes: Bytes;
  count: number;
}
export interface ModuleEntry {
  /**
   * Dotted path from the model ('' is the model itself).
   */
  path: string;
  type: string;
  defined_at: FileLine | null;
  created_at: FileLine | null;
  params: Bytes;
  grads: Bytes;
  saved_bytes: Bytes;
  mask_bytes: Bytes;
  at_peak_bytes: Bytes;
  /**
   * Forward time in the first profiled step (the only one timed, so that timing does not slow the others), children included; null when not called or not timed.
   */
  fwd_ms: number | null;
  /**
   * Forward calls in that step.
   */
  calls: number;
}
export interface SiteEntry {
  kind: 'dropout' | 'dropout-call' | 'attn-dropout' | 'fused-attn-dropout';
  file: string;
  line: number;
  module: string | null;
  elements: Bytes;
  mask_bytes: Bytes;
  /**
   * mask_bytes minus a 1-bit mask of the same elements.
   */
  saving_if_packed: number;
  calls: number;
}
export interface Timeline {
  t_ms: number[];
  allocated: Bytes[];
  reserved: Bytes[];
  device_used: BytesOrNull[];
  phase: Phase[];
}
export interface Holder {
  bytes: Bytes;
  /**
   * temporary: allocated during the step and none of the named kinds; other: older than the step and unnamed.
   */
  category: 'param' | 'buffer' | 'grad' | 'optimizer' | 'activation' | 'mask' | 'temporary' | 'other';
  /**
   * Where it was allocated (user frames, innermost first).
   */
  frames: Frame[];
  /**
   * For saved tensors: the line that saved it for backward.
   */
  saved_at: FileLine | null;
  shape: number[] | null;
  dtype: string | null;
}
export interface Frame {
  file: string;
  line: number;
  name: string;
}
export interface Oom {
  message: string;
  requested_bytes: BytesOrNull;
  device_free: BytesOrNull;
  device_total: BytesOrNull;
  /**
   * Allocated when the allocation failed.
   */
  allocated: number | null;
  reserved: BytesOrNull;
  step: number;
  phase: Phase;
  /**
   * Largest blocks alive at the failure.
   */
  top: Holder[];
  /**
   * Source lines holding the most saved tensors at the failure.
   */
  lines: {
    file: string;
    line: number;
    bytes: Bytes;
  }[];
}
export interface FfnEntry {
  module: string;
  d_model: number;
  d_ff: number;
  gated: boolean;
  tokens: number | null;
  dtype: string | null;
  converted: boolean;
  created_at: FileLine | null;
}
export interface SourceHash {
  file: string;
  sha256: string;
  bytes: Bytes;
}
/**
 * Where the report came from when not from a harness run: a PyTorch memory snapshot converted by the editor or `membit report`. Absent in harness reports. For a snapshot, lines[].saved_bytes are the bytes allocated at the line (innermost workspace frame) and still live at the peak, not bytes saved for backward; categories are named only where the frames make them certain.
 */
export interface ReportSource {
  kind: 'snapshot';
  files: string[];
  /**
   * What the frames hold: Python frames, Python and C++ frames, or none.
   */
  stacks?: 'python' | 'all' | 'none';
  /**
   * Whether the snapshot has an allocation history (device_traces); without it, figures are the state at the dump.
   */
  history?: boolean;
  /**
   * Trace entries replayed for the device.
   */
  entries?: number;
  device?: number | null;
  rank?: number | null;
}
/**
 * The allocator's segments when a snapshot was dumped: reserved, allocated (whole blocks), requested (what the tensors asked for), reserved-but-free bytes and the largest free block (fragmentation). Absent in harness reports.
 */
export interface SegmentsView {
  reserved: Bytes;
  allocated: Bytes;
  requested: Bytes;
  free: Bytes;
  largest_free: Bytes;
  count: Bytes;
  /**
   * Segments with the most free bytes first (at most 500).
   */
  items: SegmentRow[];
}
export interface SegmentRow {
  address: Bytes;
  stream: number;
  type: string;
  total: Bytes;
  allocated: Bytes;
  requested: Bytes;
  free: Bytes;
  largest_free: Bytes;
  blocks: Bytes;
}
export interface OomEvent {
  t_ms: number | null;
  requested_bytes: Bytes;
  device_free: BytesOrNull;
  allocated: Bytes;
  reserved: Bytes;
  frames: Frame[];
}
