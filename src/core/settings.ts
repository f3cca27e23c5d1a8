/**
 * Membit's settings, mirroring `contributes.configuration` in package.json
 * (a unit test keeps the two in step). Pure data: the VS Code adapter reads
 * them, the CLI takes the same shapes from flags.
 */

/** `baseline` or levers joined by `+` (packed+sparse24, sdpa+checkpoint+bf16); core/run/variants.ts parses them. */
export type Variant = string;

/** A SLURM job's resources, as a `membit.targets` entry of kind `slurm` gives them (core/run/slurm.ts checks them). */
export interface SlurmJobSetting {
  partition?: string;
  account?: string;
  /** Nodes for the job (default 1). */
  nodes?: number;
  /** GPUs per node (`--gres=gpu:N`); 0 or absent: none requested. */
  gpusPerNode?: number;
  /** Ranks per node (default gpusPerNode, else 1). */
  ranksPerNode?: number;
  /** CPUs per rank (`--cpus-per-task`). */
  cpusPerTask?: number;
  /** Time limit as sbatch takes it (e.g. "00:30:00"). */
  time?: string;
  /** `torchrun`: srun starts one torchrun per node; `srun`: one task per rank (RANK from SLURM_PROCID). */
  launch?: 'torchrun' | 'srun';
  /** Seconds the job may wait in the queue before Membit cancels it (default 600). */
  pendingTimeoutS?: number;
}

/** An SSH run target (`membit.targets`). */
export interface SshTargetSetting extends SlurmJobSetting {
  /** Host alias from ~/.ssh/config, or user@host. */
  host: string;
  /** Python on the remote; default `python3`. */
  python?: string;
  /** Remote folder for the upload cache and runs; default `~/.cache/membit`. */
  workdir?: string;
  /** Extra environment for the run. */
  env?: Record<string, string>;
  /** `slurm`: host is a login node and runs are submitted as jobs, with the SlurmJobSetting fields. */
  kind?: 'ssh' | 'slurm';
}

/** How the ranks are launched (`membit.runs[].launcher`, `membit profile --nproc-per-node`); core/run/torchrun.ts checks it. */
export interface TorchrunLauncher {
  kind: 'torchrun';
  /** Ranks on this host (torchrun --nproc-per-node). */
  nprocPerNode: number;
  /** Hosts in the job (default 1; more need a rendezvous endpoint, and the same command on each host). */
  nnodes?: number;
  /** This host's index among nnodes (static rendezvous). */
  nodeRank?: number;
  /** host:port of the rendezvous (c10d) when nnodes > 1. */
  rdzvEndpoint?: string;
  /** The job's id at the rendezvous (default: the run set's id). */
  rdzvId?: string;
}

/** A saved run configuration (`membit.runs`). */
export interface RunSetting {
  name?: string;
  script: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string>;
  steps?: number;
  variants?: Variant[];
  /** Run under torchrun, the harness in every rank (checked by core/run/torchrun.ts checkLauncher). */
  launcher?: TorchrunLauncher;
}

/** Shapes for static estimates (`membit.shapes`). */
export interface ShapeSetting {
  batch?: number;
  seqLen?: number;
  hidden?: number;
  heads?: number;
}

export interface MembitSettings {
  /** Interpreter for local runs; empty: the Python extension's choice, else python3. */
  python: string;
  targets: SshTargetSetting[];
  runs: RunSetting[];
  profile: {
    /** Training steps to profile; 0 runs the script to its end. */
    steps: number;
    /** Steps skipped before profiling starts. */
    warmup: number;
  };
  shapes: ShapeSetting;
  scan: { maxFileSizeKB: number };
  /** `estimateSeverity`: how loud a finding whose figure is an estimate (not measured) is. */
  diagnostics: { enabled: boolean; estimateSeverity: 'hint' | 'information' | 'warning' };
  hints: { enabled: boolean };
  codeLens: { enabled: boolean };
  hover: { enabled: boolean };
  overlays: { gutter: boolean; inline: boolean; overviewRuler: boolean };
  runHistory: { folder: string };
}

export const DEFAULT_SETTINGS: MembitSettings = {
  python: '',
  targets: [],
  runs: [],
  profile: { steps: 10, warmup: 1 },
  shapes: {},
  scan: { maxFileSizeKB: 2048 },
  diagnostics: { enabled: true, estimateSeverity: 'hint' },
  hints: { enabled: true },
  codeLens: { enabled: true },
  hover: { enabled: true },
  overlays: { gutter: true, inline: true, overviewRuler: true },
  runHistory: { folder: '.membit/runs' },
};

/** Dotted setting keys (below `membit.`) and their defaults, flattened like package.json. */
export function flattenDefaults(obj: object = DEFAULT_SETTINGS, prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    const key = prefix ? `${prefix}.${k}` : k;
    // Objects whose keys are free-form (shapes) or arrays are one setting each.
    if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0) {
      for (const [k2, v2] of flattenDefaults(v, key)) out.set(k2, v2);
    } else out.set(key, v);
  }
  return out;
}

/**
 * Reads settings through a getter (VS Code's `WorkspaceConfiguration.get`, or a
 * plain object in tests), falling back to defaults for anything missing or of the
 * wrong type, so a hand-edited settings.json never breaks the extension.
 */
export function readSettings(get: (key: string) => unknown): MembitSettings {
  const pick = <T>(key: string, def: T, ok: (v: unknown) => boolean): T => {
    const v = get(key);
    return v !== undefined && ok(v) ? (v as T) : def;
  };
  const isInt = (min: number) => (v: unknown) => Number.isInteger(v) && (v as number) >= min;
  const isBool = (v: unknown) => typeof v === 'boolean';
  const isArr = (v: unknown) => Array.isArray(v);
  const d = DEFAULT_SETTINGS;
  return {
    python: pick('python', d.python, (v) => typeof v === 'string'),
    targets: pick<unknown[]>('targets', d.targets, isArr).filter(
      (t): t is SshTargetSetting => !!t && typeof t === 'object' && typeof (t as SshTargetSetting).host === 'string',
    ),
    runs: pick<unknown[]>('runs', d.runs, isArr).filter(
      (r): r is RunSetting => !!r && typeof r === 'object' && typeof (r as RunSetting).script === 'string',
    ),
    profile: {
      steps: pick('profile.steps', d.profile.steps, isInt(0)),
      warmup: pick('profile.warmup', d.profile.warmup, isInt(0)),
    },
    shapes: pick('shapes', d.shapes, (v) => !!v && typeof v === 'object' && !Array.isArray(v)),
    scan: { maxFileSizeKB: pick('scan.maxFileSizeKB', d.scan.maxFileSizeKB, isInt(1)) },
    diagnostics: {
      enabled: pick('diagnostics.enabled', true, isBool),
      estimateSeverity: pick('diagnostics.estimateSeverity', d.diagnostics.estimateSeverity, (v) => v === 'hint' || v === 'information' || v === 'warning'),
    },
    hints: { enabled: pick('hints.enabled', true, isBool) },
    codeLens: { enabled: pick('codeLens.enabled', true, isBool) },
    hover: { enabled: pick('hover.enabled', true, isBool) },
    overlays: {
      gutter: pick('overlays.gutter', true, isBool),
      inline: pick('overlays.inline', true, isBool),
      overviewRuler: pick('overlays.overviewRuler', true, isBool),
    },
    runHistory: { folder: pick('runHistory.folder', d.runHistory.folder, (v) => typeof v === 'string' && v.length > 0) },
  };
}
