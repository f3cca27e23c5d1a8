import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import type { Shown } from '../../../src/vscode/notify';
import { openSample, screenshot, uiShows, waitFor, workspaceDir } from './util';

async function screenshotWithNotifications(name: string): Promise<void> {
  // The test-driver mode hides toasts; the notifications center shows them.
  await vscode.commands.executeCommand('notifications.showList');
  await screenshot(name);
}

describe('Profile Training Run from the command palette', function () {
  this.timeout(300_000);

  it('runs the harness on the local target with a progress notification, then loads the report', async () => {
    const ws = workspaceDir();
    const editor = await openSample('gpt_tiny.py');
    // The local interpreter comes from membit.python (set in the e2e profile) — the
    // same resolution the palette flow uses. Arguments are passed the way the flow
    // would after asking for them; a slow-ish run so the notification is on screen.
    const running = vscode.commands.executeCommand<string | undefined>(Commands.profileRun, {
      script: join(ws, 'gpt_tiny.py'),
      args: ['--steps', '40', '--batch-size', '8', '--seq-len', '128', '--n-layer', '2', '--n-embd', '64', '--n-head', '2', '--data-bytes', '300000', '--device', 'cpu'],
      steps: 20,
      warmup: 1,
    });
    const progress = await waitFor('the progress notification with step counts', async () => {
      const shown = (await vscode.commands.executeCommand<Shown[] | undefined>(InternalCommands.recentlyShown)) ?? [];
      return shown.find((s) => s.kind === 'progress' && s.text.startsWith('Membit: profiling gpt_tiny.py') && (s.updates ?? []).some((u) => /^step \d+\/20/.test(u)));
    }, 120_000);
    await screenshotWithNotifications('20-profile-progress');
    const out = await running;
    assert.ok(out, 'the run did not finish with a report');
    assert.ok(existsSync(out), `${out} was not written`);
    assert.ok(progress.updates?.some((u) => u.startsWith('step 20/20')), `progress never reached 20/20: ${progress.updates?.slice(-3).join(' | ')}`);
    const report = JSON.parse(readFileSync(out, 'utf8')) as { run: { status: string; steps: number; target: { kind: string } } };
    assert.equal(report.run.status, 'ok');
    assert.equal(report.run.steps, 20);
    assert.equal(report.run.target.kind, 'local');
    // The new report is the one painted into the editor.
    const applied = await waitFor('overlays from the new run', async () => {
      const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
      return all.find((a) => a.file === editor.document.uri.fsPath && a.inline.length > 0);
    });
    assert.ok(applied.inline.length > 0);
    const peakShown = await uiShows('21-status-peak', 'statusbar', 'Membit: peak');
    if (peakShown !== undefined) assert.equal(peakShown, true, 'no peak in the status bar');
    // The run history can be pruned from the UI; only history files are ever deleted.
    const outside = join(ws, 'gpt_tiny.py');
    const deleted = await vscode.commands.executeCommand<number>(Commands.deleteRuns, [vscode.Uri.file(out), vscode.Uri.file(outside)]);
    assert.equal(deleted, 1);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(outside), true);
  });

  it('names the problem when the interpreter lacks torch', async () => {
    const ws = workspaceDir();
    const cfg = vscode.workspace.getConfiguration('membit');
    const before = cfg.get<string>('python');
    // A Python that exists but has no torch: a fresh venv without the system's packages.
    const bare = join(mkdtempSync(join(tmpdir(), 'membit-bare-')), 'venv');
    execFileSync('python3', ['-m', 'venv', '--without-pip', bare]);
    const py = join(bare, 'bin', 'python');
    await cfg.update('python', py, vscode.ConfigurationTarget.Workspace);
    try {
      const out = await vscode.commands.executeCommand<string | undefined>(Commands.profileRun, { script: join(ws, 'gpt_tiny.py'), args: ['--steps', '2'] });
      assert.equal(out, undefined);
      const err = await waitFor('an error naming the missing torch', async () => {
        const shown = (await vscode.commands.executeCommand<Shown[] | undefined>(InternalCommands.recentlyShown)) ?? [];
        return shown.find((s) => s.kind === 'error' && s.text.includes(`torch not installed in ${py}`));
      });
      assert.match(err.text, /install PyTorch there \(pip install torch\)/);
      await screenshotWithNotifications('22-no-torch');
    } finally {
      await cfg.update('python', before === '' ? undefined : before, vscode.ConfigurationTarget.Workspace);
    }
  });
});
