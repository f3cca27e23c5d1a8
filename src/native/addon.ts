/**
 * The NVML addon (native/src/nvml.cc) behind the GpuBackend interface.
 */
import { SamplerSet, type RawBatch } from './sampler';
import type { GpuBackend, GpuInfo, GpuProcess, GpuSampler, SampleListener, SamplerErrorListener, SamplerOptions } from './types';

/** The addon's own status(). */
export interface NvmlStatus {
  available: boolean;
  /** "NVML ready (driver …)", or why not: "no NVML: libnvidia-ml.so.1 not found", an init error. */
  reason: string;
  /** The library it opened or tried to open. */
  library: string;
  driverVersion: string | null;
}

/** The addon's exports, as nvml.cc defines them. */
export interface NvmlAddon {
  status(): NvmlStatus;
  /** Closes NVML (stopping samplers) and opens it again from `library` or the default. */
  init(library?: string): NvmlStatus;
  /** Stops samplers and closes NVML; false if a sampler thread did not end in time. */
  shutdown(): boolean;
  listGpus(): GpuInfo[];
  processesOn(gpuIndex: number): GpuProcess[];
  /** rootPid: also follow that process's descendants (the thread asks /proc about each GPU process once). */
  startSampler(
    options: { intervalMs: number; batchMs?: number; pids?: number[]; rootPid?: number | undefined },
    callback: (batch: RawBatch) => void,
  ): { stop(): void; setPids(pids: number[]): void; readonly running: boolean };
}

const loaded = new Map<string, NvmlAddon>();

/**
 * Loads the addon binary at `path` (once per process: a second dlopen of the same
 * file would share its state anyway). process.dlopen rather than require, so no
 * bundler tries to follow the path. Throws when the file is missing or unloadable.
 */
export function loadAddon(path: string): NvmlAddon {
  const cached = loaded.get(path);
  if (cached) return cached;
  const mod = { exports: {} as unknown };
  process.dlopen(mod, path);
  const addon = mod.exports as NvmlAddon;
  for (const fn of ['status', 'init', 'shutdown', 'listGpus', 'processesOn', 'startSampler'] as const) {
    if (typeof addon[fn] !== 'function') throw new Error(`${path} is not the Membit NVML addon (no ${fn}())`);
  }
  loaded.set(path, addon);
  return addon;
}

export class AddonBackend implements GpuBackend {
  readonly kind = 'addon' as const;
  private readonly samplers = new SamplerSet();

  constructor(
    readonly addon: NvmlAddon,
    readonly reason: string,
  ) {}

  // The addon answers synchronously; a throw becomes a rejection, as the interface promises.
  listGpus(): Promise<GpuInfo[]> {
    return new Promise((resolve) => {
      resolve(this.addon.listGpus());
    });
  }

  processesOn(gpuIndex: number): Promise<GpuProcess[]> {
    return new Promise((resolve) => {
      resolve(this.addon.processesOn(gpuIndex));
    });
  }

  startSampler(options: SamplerOptions, onSamples: SampleListener, onError?: SamplerErrorListener): GpuSampler {
    return this.samplers.start(
      (o, deliver) => {
        const raw = this.addon.startSampler(o, deliver);
        return { setPids: (p) => raw.setPids(p), stop: () => raw.stop(), followsTree: true };
      },
      options,
      onSamples,
      onError,
    );
  }

  dispose(): void {
    this.samplers.stopAll();
  }
}
