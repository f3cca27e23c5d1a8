import * as vscode from 'vscode';
import { formatBytes } from '../core/units';
import { loadGpuBackend, type GpuSampler, type LoadedGpuBackend } from '../native';
import type { Log } from './log';

/**
 * The local GPUs through the NVML addon or nvidia-smi, loaded on first use so
 * activation never waits on the driver. "No GPU" is an answer, not an error.
 */
export class LocalGpus implements vscode.Disposable {
  private loaded: Promise<LoadedGpuBackend> | undefined;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: Log,
  ) {}

  private backend(): Promise<LoadedGpuBackend> {
    this.loaded ??= loadGpuBackend({ searchFrom: vscode.Uri.joinPath(this.context.extensionUri, 'dist').fsPath }).then((l) => {
      this.log.info(`GPU backend: ${l.kind} (${l.reason})`);
      return l;
    });
    return this.loaded;
  }

  /** Which backend answers and why (for the output channel and the e2e suite). */
  async status(): Promise<{ kind: string; reason: string }> {
    const l = await this.backend();
    return { kind: l.kind, reason: l.reason };
  }

  /** One line per GPU for the target picker; empty when there is none. */
  async describe(): Promise<string[]> {
    const l = await this.backend();
    if (l.kind === 'none') return [];
    try {
      const gpus = await l.backend.listGpus();
      return gpus.map((g) => `GPU ${g.index}: ${g.name}, ${formatBytes(g.usedBytes)} / ${formatBytes(g.totalBytes)} used${g.sparse24 ? ', 2:4 sparse' : ''}`);
    } catch (e) {
      this.log.warn(`listing GPUs failed: ${e instanceof Error ? e.message : String(e)}`);
      return [];
    }
  }

  /**
   * Follows a local run's process tree on the GPUs (device-level memory, which sees the
   * CUDA context and library workspaces PyTorch's counters miss). Undefined without a GPU.
   */
  async follow(rootPid: number, onBytes: (bytes: number) => void): Promise<GpuSampler | undefined> {
    const l = await this.backend();
    if (l.kind === 'none') return undefined;
    try {
      return l.backend.startSampler({ intervalMs: 50, rootPid }, (samples) => {
        const last = samples[samples.length - 1];
        if (last && last.pidUsedBytes !== null) onBytes(last.pidUsedBytes);
      }, (e) => this.log.warn(`GPU sampling: ${e.message}`));
    } catch (e) {
      this.log.warn(`GPU sampling unavailable: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  }

  dispose(): void {
    void this.loaded?.then((l) => l.backend.dispose());
  }
}
