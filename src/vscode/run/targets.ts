import * as vscode from 'vscode';
import { Commands } from '../../commands';
import { DEFAULT_REMOTE_PYTHON, DEFAULT_REMOTE_WORKDIR, listSshHosts, newHostProblem, sshTargets, type SshTargetInfo } from '../../core/run/sshConfig';
import { preflight } from '../../core/run/remote';
import { notify } from '../notify';
import type { RunTarget } from '../../core/run/target';
import { getSettings, onSettingsChanged } from '../settings';
import { resolveLocalPython } from './python';
import { checkSlurmTarget, type SlurmTarget } from '../../core/run/slurm';
import type { DisposableLike } from '../disposables';

const TARGET_KEY = 'membit.target';
const ADD_HOST = '\u0000add';

/** Extra GPU facts for the local entry of the picker (from NVML or nvidia-smi when present). */
export type LocalGpuLister = () => Promise<string[]>;

/**
 * The run target (local or an SSH host), shown in the status bar and switched with
 * "Select Run Target". The choice is remembered per workspace.
 */
export class TargetSelection implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('membit.target', vscode.StatusBarAlignment.Left, 49);
  private readonly disposables: DisposableLike[] = [this.item];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly gpus: LocalGpuLister,
  ) {
    this.item.name = 'Membit run target';
    this.item.command = Commands.selectRunTarget;
    this.disposables.push(onSettingsChanged(['targets'], () => this.render()));
    this.render();
  }

  /** The remembered choice: 'local' or an SSH host alias. */
  get choice(): string {
    return this.context.workspaceState.get<string>(TARGET_KEY, 'local');
  }

  sshTargetsNow(): SshTargetInfo[] {
    let hosts: string[] = [];
    try {
      hosts = listSshHosts();
    } catch {
      // An unreadable ~/.ssh/config just offers no hosts from it.
    }
    return sshTargets(getSettings().targets, hosts);
  }

  /** The chosen target, resolved to what a run needs; undefined when the host is gone. */
  async resolve(resource?: vscode.Uri): Promise<RunTarget | undefined> {
    const c = this.choice;
    if (c === 'local') return { kind: 'local', python: (await resolveLocalPython(resource)).python };
    const t = this.sshTargetsNow().find((x) => x.host === c);
    if (!t) return undefined;
    return { kind: 'ssh', host: t.host, python: t.python, workdir: t.workdir, env: t.env };
  }

  /** The SLURM target for a chosen host (a membit.targets entry with kind "slurm"), checked; undefined for plain SSH. */
  slurm(host: string): SlurmTarget | undefined {
    const raw = getSettings().targets.find((t) => t.host === host && t.kind === 'slurm');
    return raw ? checkSlurmTarget(raw) : undefined;
  }

  async pick(): Promise<string | undefined> {
    type Item = vscode.QuickPickItem & { value: string };
    const gpus = await this.gpus().catch(() => [] as string[]);
    const local = await resolveLocalPython();
    const items: Item[] = [
      {
        label: '$(device-desktop) Local',
        description: `${local.python} (${local.source})`,
        detail: gpus.length ? gpus.join(' · ') : 'no NVIDIA GPU found: runs on the CPU',
        value: 'local',
      },
      ...this.sshTargetsNow().map((t) => ({
        label: `${getSettings().targets.some((x) => x.host === t.host && x.kind === 'slurm') ? '$(server-environment) SLURM' : '$(remote)'} ${t.host}`,
        description: `${t.python} · ${t.workdir}`,
        detail: `from ${t.source}`,
        value: t.host,
      })),
    ];
    for (const i of items) if (i.value === this.choice) i.label += '  $(check)';
    items.push({ label: '$(add) Add SSH host…', detail: 'a GPU machine you reach with ssh: checked, then saved in membit.targets', value: ADD_HOST });
    const picked = await vscode.window.showQuickPick(items, {
      title: 'Membit: where to run',
      placeHolder: 'SSH hosts come from membit.targets and ~/.ssh/config',
    });
    if (!picked) return undefined;
    const value = picked.value === ADD_HOST ? await this.addHost() : picked.value;
    if (!value) return undefined;
    await this.context.workspaceState.update(TARGET_KEY, value);
    this.render();
    return value;
  }

  /**
   * Asks for a host, its python and work folder, checks them over ssh (login, python,
   * torch, GPUs, a writable folder) and saves the target in membit.targets. A failed check
   * says why and offers to save it anyway (the host may be down right now).
   */
  private async addHost(): Promise<string | undefined> {
    const known = this.sshTargetsNow().map((t) => t.host);
    const host = (
      await vscode.window.showInputBox({
        title: 'Membit: add an SSH host (1/3)',
        prompt: 'A Host alias from ~/.ssh/config, or user@hostname. Ports, keys and jump hosts go in ~/.ssh/config.',
        placeHolder: 'gpu1 or me@gpu1.example.org',
        validateInput: (v) => newHostProblem(v, known),
        ignoreFocusOut: true,
      })
    )?.trim();
    if (!host) return undefined;
    const python = (await vscode.window.showInputBox({ title: `Membit: add ${host} (2/3)`, prompt: `The Python on ${host} that has torch`, value: DEFAULT_REMOTE_PYTHON, ignoreFocusOut: true, validateInput: (v) => (v.trim() ? undefined : 'A python command or path, e.g. python3 or ~/venv/bin/python') }))?.trim();
    if (!python) return undefined;
    const workdir = (await vscode.window.showInputBox({ title: `Membit: add ${host} (3/3)`, prompt: `A folder on ${host} for Membit's uploads and run files`, value: DEFAULT_REMOTE_WORKDIR, ignoreFocusOut: true, validateInput: (v) => (v.trim() ? undefined : 'A folder, e.g. ~/.cache/membit') }))?.trim();
    if (!workdir) return undefined;
    let verdict: string;
    if (!vscode.workspace.isTrusted) {
      verdict = 'not checked: the workspace is not trusted';
    } else {
      const checked = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Membit: checking ${host} (ssh, python, torch, GPUs)…`, cancellable: true },
        async (_p, token) => {
          const abort = new AbortController();
          const sub = token.onCancellationRequested(() => abort.abort());
          try {
            const info = await preflight({ host }, { python, workdir, allowCpu: true, timeoutMs: 60_000, signal: abort.signal });
            return { ok: true as const, text: `torch ${info.torch ?? '?'}${info.cuda ? `, ${info.gpus.length} GPU${info.gpus.length === 1 ? '' : 's'}` : ', no CUDA GPU (runs would use the CPU)'}` };
          } catch (e) {
            return { ok: false as const, text: token.isCancellationRequested ? 'check cancelled' : e instanceof Error ? e.message : String(e) };
          } finally {
            sub.dispose();
          }
        },
      );
      if (!checked.ok) {
        const keep = 'Add Anyway';
        const choice = await notify.warn(`Membit: ${host} did not pass the check: ${checked.text}`, keep);
        if (choice !== keep) return undefined;
      }
      verdict = checked.ok ? checked.text : 'not reachable when added';
    }
    const scope = vscode.workspace.workspaceFolders?.length ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
    const config = vscode.workspace.getConfiguration('membit');
    const current = config.get<unknown[]>('targets') ?? [];
    const entry: Record<string, string> = { host };
    if (python !== DEFAULT_REMOTE_PYTHON) entry['python'] = python;
    if (workdir !== DEFAULT_REMOTE_WORKDIR) entry['workdir'] = workdir;
    await config.update('targets', [...current, entry], scope);
    void notify.info(`Membit: added ${host} to membit.targets (${scope === vscode.ConfigurationTarget.Workspace ? 'workspace' : 'user'} settings): ${verdict}.`);
    return host;
  }

  private render(): void {
    const c = this.choice;
    this.item.text = c === 'local' ? '$(device-desktop) Membit: local' : `$(remote) Membit: ${c}`;
    this.item.tooltip = 'Where Membit profiles runs. Click to change.';
    this.item.show();
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}

export function registerTargets(context: vscode.ExtensionContext, gpus: LocalGpuLister): TargetSelection {
  const sel = new TargetSelection(context, gpus);
  context.subscriptions.push(sel);
  return sel;
}
