import * as vscode from 'vscode';
import { Commands } from '../../commands';
import { listSshHosts, sshTargets, type SshTargetInfo } from '../../core/run/sshConfig';
import type { RunTarget } from '../../core/run/target';
import { registerMembitCommand } from '../commandRegistry';
import type { Log } from '../log';
import { getSettings, onSettingsChanged } from '../settings';
import { resolveLocalPython } from './python';
import { checkSlurmTarget, type SlurmTarget } from '../../core/run/slurm';

const TARGET_KEY = 'membit.target';

/** Extra GPU facts for the local entry of the picker (from NVML or nvidia-smi when present). */
export type LocalGpuLister = () => Promise<string[]>;

/**
 * The run target (local or an SSH host), shown in the status bar and switched with
 * "Select Run Target". The choice is remembered per workspace.
 */
export class TargetSelection implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('membit.target', vscode.StatusBarAlignment.Left, 49);
  private readonly disposables: vscode.Disposable[] = [this.item];

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
    const picked = await vscode.window.showQuickPick(items, {
      title: 'Membit: where to run',
      placeHolder: 'SSH hosts come from membit.targets and ~/.ssh/config',
    });
    if (!picked) return undefined;
    await this.context.workspaceState.update(TARGET_KEY, picked.value);
    this.render();
    return picked.value;
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

export function registerTargets(context: vscode.ExtensionContext, log: Log, gpus: LocalGpuLister): TargetSelection {
  const sel = new TargetSelection(context, gpus);
  context.subscriptions.push(sel);
  registerMembitCommand(context, log, Commands.selectRunTarget, () => sel.pick());
  return sel;
}
