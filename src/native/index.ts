/**
 * GPU inventory and memory sampling for local runs: the NVML addon, the nvidia-smi
 * fallback, and the pid-tree helper, behind one interface. Plain Node (no VS Code),
 * so the extension and the CLI share it.
 */
export type {
  GpuBackend,
  GpuBackendKind,
  GpuInfo,
  GpuProcess,
  GpuReading,
  GpuSample,
  GpuSampler,
  LoadedGpuBackend,
  SampleListener,
  SamplerErrorListener,
  SamplerOptions,
} from './types';
export { loadGpuBackend, findAddon, NoGpuBackend, ADDON_RELATIVE_PATH, type LoadGpuBackendOptions } from './loader';
export { AddonBackend, loadAddon, type NvmlAddon, type NvmlStatus } from './addon';
export { SmiBackend, NvidiaSmiError } from './smi';
export { pidTree, PidTreeReader, descendants, parseStatPpid } from './pidTree';
