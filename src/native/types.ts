/**
 * The GPU backend's one interface, implemented by the NVML addon and by the
 * nvidia-smi fallback alike (and by "no GPU"). Plain Node: no VS Code here.
 */

/** Which implementation answers. */
export type GpuBackendKind = 'addon' | 'nvidia-smi' | 'none';

/** One GPU as NVML numbers it (PCI bus order, the order nvidia-smi uses). */
export interface GpuInfo {
  index: number;
  name: string;
  /** `GPU-…`: the stable identity; CUDA may number GPUs differently than NVML. */
  uuid: string;
  totalBytes: number;
  /** Memory in use, the driver's own reservation excluded (nvidia-smi's memory.used). */
  usedBytes: number;
  freeBytes: number;
  /** CUDA compute capability, e.g. "9.0"; "" when the driver does not say. */
  computeCapability: string;
  /** Has 2:4 sparse tensor cores (compute capability 8.0 and later). */
  sparse24: boolean;
  /** Set when this GPU could not be read fully (e.g. "GPU is lost"); the rest is what could be read. */
  error?: string;
}

/** A compute process holding memory on one GPU. */
export interface GpuProcess {
  pid: number;
  /** null when the driver cannot attribute memory to processes (some containers, vGPU). */
  usedBytes: number | null;
}

/** One GPU in one sample. */
export interface GpuReading {
  index: number;
  /** null when this GPU could not be read at that instant. */
  usedBytes: number | null;
  /** Memory of the followed pids on this GPU; null when none are followed or unknown. */
  pidUsedBytes: number | null;
}

/** One sampling instant. */
export interface GpuSample {
  /** Wall-clock time of the reading, ms since the epoch (comparable with Date.now()). */
  tMs: number;
  gpus: GpuReading[];
  /** Memory of the followed pids over all GPUs; null when none are followed or unknown. */
  pidUsedBytes: number | null;
}

export interface SamplerOptions {
  /** Time between readings, ms (10 to 100 is the useful range; 1 to 60000 accepted). */
  intervalMs: number;
  /** How often batches are delivered, ms; default max(intervalMs, 250). */
  batchMs?: number;
  /** Follow exactly these pids. */
  pids?: readonly number[];
  /**
   * Follow this pid and all its descendants as they come and go: the addon asks /proc
   * about the ancestry of each process holding GPU memory; the fallback re-reads the
   * process table every treeRefreshMs.
   */
  rootPid?: number;
  /** nvidia-smi fallback only: how often rootPid's descendants are re-read, ms; default 500. */
  treeRefreshMs?: number;
}

/** A running sampler. Disposable, so it can sit in a run's or the extension's cleanup list. */
export interface GpuSampler {
  /** False once stop() was called or the sampler ended on its own (an error). */
  readonly running: boolean;
  /** Replaces the followed pids (a rootPid, if given, keeps being followed as well). */
  setPids(pids: readonly number[]): void;
  /** Stops sampling; resolves once the last batch has been delivered. Never waits on the driver. */
  stop(): Promise<void>;
  dispose(): void;
}

export type SampleListener = (samples: GpuSample[]) => void;
/** Problems while sampling (a GPU lost, a driver error); sampling goes on where it can. */
export type SamplerErrorListener = (error: Error) => void;

export interface GpuBackend {
  readonly kind: GpuBackendKind;
  /** What answers, or why nothing does ("no NVML: libnvidia-ml.so.1 not found; …"). */
  readonly reason: string;
  /** The GPUs; [] where there are none or no backend works. */
  listGpus(): Promise<GpuInfo[]>;
  /** Compute processes on one GPU; rejects for an index that is not a GPU. */
  processesOn(gpuIndex: number): Promise<GpuProcess[]>;
  /** Starts sampling off the extension host's thread; throws where there is no GPU backend. */
  startSampler(options: SamplerOptions, onSamples: SampleListener, onError?: SamplerErrorListener): GpuSampler;
  /** Stops every sampler this backend started. */
  dispose(): void;
}

/** What loadGpuBackend() found. */
export interface LoadedGpuBackend {
  backend: GpuBackend;
  kind: GpuBackendKind;
  /** Why this kind: what answered, or why the better ones did not. */
  reason: string;
}
