import * as vscode from 'vscode';
import { formatBytes } from '../core/run/harness';
import { loadGpuBackend, type LoadedGpuBackend } from '../native';
import type { Log } from './log';

/**
 * The local GPUs, read through the NVML addon or nvidia-smi, loaded on first use so
 * activation never waits on the driver. "No GPU" is an answer, not an error.
 */
export function localGpuLister(context: vscode.ExtensionContext, log: Log): () => Promise<string[]> {
  let loaded: Promise<LoadedGpuBackend> | undefined;
  context.subscriptions.push({ dispose: () => void loaded?.then((l) => l.backend.dispose()) });
  return async () => {
    loaded ??= loadGpuBackend({ searchFrom: vscode.Uri.joinPath(context.extensionUri, 'dist').fsPath }).then((l) => {
      log.info(`GPU backend: ${l.kind} (${l.reason})`);
      return l;
    });
    const l = await loaded;
    if (l.kind === 'none') return [];
    try {
      const gpus = await l.backend.listGpus();
      return gpus.map((g) => `GPU ${g.index}: ${g.name}, ${formatBytes(g.usedBytes)} / ${formatBytes(g.totalBytes)} used${g.sparse24 ? ', 2:4 sparse' : ''}`);
    } catch (e) {
      log.warn(`listing GPUs failed: ${e instanceof Error ? e.message : String(e)}`);
      return [];
    }
  };
}
