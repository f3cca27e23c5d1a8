/**
 * Restricted Mode: in a workspace the user has not trusted, Membit scans and shows static
 * estimates, but runs nothing from the workspace and reads no report found in it (a report
 * is data the workspace carries). A real report is written into the workspace by the CLI
 * first; the trusted suite (test/e2e/suite/10-report) shows that the same report is painted
 * once the workspace is trusted.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import { RUNS_CODE } from '../../../src/vscode/commandTable';
import type { Shown } from '../../../src/vscode/notify';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import { codeOf, openSample, profileSampleWithCli, screenshot, waitFor, workspaceDir } from '../suite/util';

const shownSince = async (n: number) => ((await vscode.commands.executeCommand<Shown[] | undefined>(InternalCommands.recentlyShown)) ?? []).slice(n);

describe('an untrusted workspace (Restricted Mode)', function () {
  this.timeout(300_000);
  let report = '';

  before(() => {
    assert.equal(vscode.workspace.isTrusted, false, 'this suite needs a window whose workspace is not trusted');
    report = profileSampleWithCli();
  });

  it('still scans: static diagnostics on the GPT sample', async () => {
    const editor = await openSample('gpt_tiny.py');
    const diags = await waitFor('the scan', () => {
      const d = vscode.languages.getDiagnostics(editor.document.uri).filter((x) => x.source === 'Membit');
      return d.length > 0 ? d : undefined;
    }, 60_000);
    assert.ok(diags.some((d) => codeOf(d).startsWith('membit.dropout')), diags.map(codeOf).join(' '));
    await screenshot('untrusted-scan');
  });

  it('reads no report from the workspace: no overlays, no measured CodeLens, Show Report says why', async () => {
    const editor = await openSample('gpt_tiny.py');
    // Give the report store every chance to have picked the report up.
    await new Promise((r) => setTimeout(r, 3000));
    const overlays = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
    const painted = overlays.filter((o) => o.inline.length > 0 || Object.values(o.gutter).some((lines) => lines.length > 0));
    assert.deepEqual(painted.map((o) => o.file), []);
    const lenses = (await vscode.commands.executeCommand<vscode.CodeLens[] | undefined>('vscode.executeCodeLensProvider', editor.document.uri)) ?? [];
    const measured = lenses.filter((l) => l.command?.title.startsWith('Measured:'));
    assert.deepEqual(measured.map((l) => l.command?.title), []);
    const before = ((await vscode.commands.executeCommand<Shown[] | undefined>(InternalCommands.recentlyShown)) ?? []).length;
    await vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(report));
    const said = await waitFor('the refusal', async () => (await shownSince(before)).find((s) => s.kind === 'error'));
    assert.match(said.text, /shown only once you trust it/);
  });

  for (const id of RUNS_CODE) {
    it(`refuses ${id}: says how to trust the workspace, and runs nothing`, async () => {
      const ws = workspaceDir();
      const runsBefore = readdirSync(join(ws, '.membit', 'runs')).length;
      const before = ((await vscode.commands.executeCommand<Shown[] | undefined>(InternalCommands.recentlyShown)) ?? []).length;
      // The refusal waits for the user's answer (its button opens Manage Workspace Trust).
      const pending = vscode.commands.executeCommand(id, { script: join(ws, 'gpt_tiny.py'), args: ['--device', 'cpu'] });
      const said = await waitFor('the refusal', async () => (await shownSince(before)).find((s) => s.kind === 'error'));
      assert.match(said.text, /disabled until you trust the workspace/);
      await vscode.commands.executeCommand('notifications.clearAll');
      assert.equal(await pending, undefined);
      assert.equal(readdirSync(join(ws, '.membit', 'runs')).length, runsBefore, 'no run or prediction was written');
    });
  }
});
