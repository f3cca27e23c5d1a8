/**
 * Picks the GPU backend: the NVML addon where its binary loads and NVML answers,
 * else nvidia-smi, else "no GPU" (an answer, not a failure).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AddonBackend, loadAddon } from './addon';
import { NvidiaSmiError, runSmi, SmiBackend } from './smi';
import type { GpuBackend, GpuInfo, GpuProcess, GpuSampler, LoadedGpuBackend } from './types';

/** Where node-gyp puts the addon, relative to the repository or the unpacked .vsix. */
export const ADDON_RELATIVE_PATH = join('native', 'build', 'Release', 'membit_nvml.node');

export interface LoadGpuBackendOptions {
  /** The addon binary to use instead of searching for it. */
  addonPath?: string;
  /** Folder to search upward from for native/build/Release/membit_nvml.node; default: this bundle's folder. */
  searchFrom?: string;
  /** The NVML library to open instead of the driver's libnvidia-ml.so.1 ($MEMBIT_NVML_LIB also works). */
  nvmlLibrary?: string;
  /** nvidia-smi to run for the fallback; default "nvidia-smi" from PATH. */
  nvidiaSmi?: string;
  /** Skip the addon (settings, tests). */
  noAddon?: boolean;
  /** Skip the nvidia-smi fallback. */
  noNvidiaSmi?: boolean;
}

/**
 * The addon binary near `from`: the extension bundle is dist/extension.js and the
 * .vsix ships native/build/Release/*.node beside dist/, test bundles sit deeper in
 * out/test/…, so a few folders up are searched.
 */
export function findAddon(from: string): string | undefined {
  let dir = from;
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, ADDON_RELATIVE_PATH);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

/** The backend where there is none: lists no GPU, and says why wherever it is asked for more. */
export class NoGpuBackend implements GpuBackend {
  readonly kind = 'none' as const;

  constructor(readonly reason: string) {}

  listGpus(): Promise<GpuInfo[]> {
    return Promise.resolve([]);
  }

  processesOn(gpuIndex: number): Promise<GpuProcess[]> {
    return Promise.reject(new RangeError(`processesOn: no GPU ${gpuIndex} (${this.reason})`));
  }

  startSampler(): GpuSampler {
    throw new Error(`cannot sample GPU memory: ${this.reason}`);
  }

  dispose(): void {
    // Without a GPU there is nothing to release.
  }
}

export async function loadGpuBackend(options: LoadGpuBackendOptions = {}): Promise<LoadedGpuBackend> {
  const why: string[] = [];

  if (!options.noAddon) {
    const path = options.addonPath ?? findAddon(options.searchFrom ?? __dirname);
    if (!path) {
      why.push(`no addon binary (${ADDON_RELATIVE_PATH} not built)`);
    } else {
      try {
        const addon = loadAddon(path);
        const status = options.nvmlLibrary ? addon.init(options.nvmlLibrary) : addon.status();
        if (status.available) {
          const reason = `${status.reason} through the addon`;
          return { backend: new AddonBackend(addon, reason), kind: 'addon', reason };
        }
        why.push(status.reason);
      } catch (e) {
        why.push(`addon ${path} did not load: ${(e as Error).message}`);
      }
    }
  }

  if (!options.noNvidiaSmi) {
    const command = options.nvidiaSmi ?? 'nvidia-smi';
    try {
      // The cheapest query that proves the driver answers.
      await runSmi(command, ['--query-gpu=index', '--format=csv,noheader,nounits']);
      const reason = why.length > 0 ? `nvidia-smi (${why.join('; ')})` : 'nvidia-smi';
      return { backend: new SmiBackend(command, reason), kind: 'nvidia-smi', reason };
    } catch (e) {
      why.push(e instanceof NvidiaSmiError && e.code === 'ENOENT' ? 'nvidia-smi not found' : (e as Error).message);
    }
  }

  const reason = `no GPU: ${why.join('; ') || 'every backend is turned off'}`;
  return { backend: new NoGpuBackend(reason), kind: 'none', reason };
}
