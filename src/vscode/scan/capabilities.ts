import { isAbsolute, join } from 'node:path';
import * as vscode from 'vscode';
import { probeCapabilities, type TorchCapabilities } from '../../core/scan';
import type { Log } from '../log';
import { resolveLocalPython } from '../run/python';
import { onSettingsChanged } from '../settings';
import type { DisposableLike } from '../disposables';

/** Long enough for a cold `import torch` on a slow disk. */
const PROBE_TIMEOUT_MS = 60_000;

/**
 * What the local interpreter's torch can do, for the advisor. Asked once per
 * interpreter with `python -m membit.capabilities` (the bundled package first on
 * PYTHONPATH), and only in a trusted workspace: in an untrusted one nothing runs and
 * the advice says it was not checked. A failure (no Python, no torch) is logged
 * once and leaves the capabilities unknown; it is never shown as an error.
 */
export class TorchCapabilityProvider implements vscode.Disposable {
  /** Interpreter path → its answer; null when it could not answer. */
  private readonly byPython = new Map<string, TorchCapabilities | null>();
  /** Workspace folder (or '') → the interpreter chosen for it. */
  private readonly pythonFor = new Map<string, string>();
  private readonly pending = new Set<string>();
  private readonly changed = new vscode.EventEmitter<void>();
  private readonly abort = new AbortController();
  private readonly disposables: DisposableLike[] = [this.changed];
  /** Fires when capabilities became known or may have changed: rescan. */
  readonly onDidChange = this.changed.event;

  constructor(
    private readonly kernelsDir: string,
    private readonly log: Log,
  ) {
    this.disposables.push(
      vscode.workspace.onDidGrantWorkspaceTrust(() => this.changed.fire()),
      onSettingsChanged(['python'], () => {
        // Another interpreter may have been chosen; answers already known per path stay valid.
        this.pythonFor.clear();
        this.changed.fire();
      }),
    );
  }

  /** The known capabilities for this resource's interpreter; starts finding them out when needed. */
  get(resource: vscode.Uri): TorchCapabilities | undefined {
    if (!vscode.workspace.isTrusted || this.abort.signal.aborted) return undefined;
    const key = vscode.workspace.getWorkspaceFolder(resource)?.uri.toString() ?? '';
    const python = this.pythonFor.get(key);
    if (python === undefined) {
      void this.resolve(resource, key);
      return undefined;
    }
    const known = this.byPython.get(python);
    if (known === undefined) void this.probe(python);
    return known ?? undefined;
  }

  private async resolve(resource: vscode.Uri, key: string): Promise<void> {
    if (this.pending.has(`folder:${key}`)) return;
    this.pending.add(`folder:${key}`);
    try {
      let { python } = await resolveLocalPython(resource);
      // The probe runs in the kernels folder: a relative `membit.python` means one in the workspace.
      const folder = vscode.workspace.getWorkspaceFolder(resource);
      if (/[\\/]/.test(python) && !isAbsolute(python) && folder) python = join(folder.uri.fsPath, python);
      this.pythonFor.set(key, python);
      if (this.byPython.has(python)) this.changed.fire();
      else await this.probe(python);
    } finally {
      this.pending.delete(`folder:${key}`);
    }
  }

  private async probe(python: string): Promise<void> {
    if (this.pending.has(python) || this.byPython.has(python)) return;
    this.pending.add(python);
    try {
      const r = await probeCapabilities(python, { kernelsDir: this.kernelsDir, timeoutMs: PROBE_TIMEOUT_MS, signal: this.abort.signal });
      if (this.abort.signal.aborted) return;
      this.byPython.set(python, r.capabilities ?? null);
      if (r.capabilities) {
        const missing = Object.entries(r.capabilities.features)
          .filter(([, v]) => !v)
          .map(([k]) => k);
        this.log.info(`torch ${r.capabilities.torch} in ${python}${missing.length ? `; not available: ${missing.join(', ')}` : ''}`);
      } else {
        this.log.warn(`memory advice not checked against an installed torch: ${r.error}`);
      }
      this.changed.fire();
    } finally {
      this.pending.delete(python);
    }
  }

  dispose(): void {
    this.abort.abort();
    for (const d of this.disposables) d.dispose();
  }
}
