import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { RenderedSummary } from '../../../media/report/messages';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import { openSample, screenshot, waitFor, webview, workspaceDir } from './util';

/**
 * A real PyTorch memory snapshot (recorded on an H100 from the GPT sample, committed in
 * test/fixtures/snapshots) opened in the editor: overlays on the sample's lines, the
 * report view with segments, the read-only custom editor, and a refused malicious pickle.
 */
describe('PyTorch memory snapshots', function () {
  this.timeout(180_000);
  let snap = '';

  before(() => {
    const repo = process.env['MEMBIT_E2E_REPO'];
    assert.ok(repo, 'MEMBIT_E2E_REPO names the checkout with the fixtures');
    const dir = join(workspaceDir(), 'snapshots');
    mkdirSync(dir, { recursive: true });
    snap = join(dir, 'gpt_python.pickle');
    copyFileSync(join(repo, 'test', 'fixtures', 'snapshots', 'gpt_python.pickle'), snap);
  });

  it('opens a snapshot: its lines are painted in the sample with "live at peak"', async () => {
    const editor = await openSample('gpt_tiny.py');
    await vscode.commands.executeCommand(Commands.openSnapshot, vscode.Uri.file(snap));
    const applied = await waitFor(
      'snapshot overlays on gpt_tiny.py',
      async () => {
        const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
        return all.find((a) => a.file === editor.document.uri.fsPath && a.inline.some((i) => i.text.includes('live at peak')));
      },
      60_000,
    );
    // The snapshot's largest line: the fused q/k/v projection (line 50 of the sample as recorded).
    const text = editor.document.lineAt(49).text;
    assert.match(text, /q, k, v = self\.c_attn\(x\)/);
    const top = applied.inline.find((i) => i.line === 50);
    assert.ok(top, `no text on line 50: ${JSON.stringify(applied.inline)}`);
    assert.match(top.text, /▲ [\d.]+ (?:[KMG]i)?B live at peak$/);
    editor.revealRange(new vscode.Range(40, 0, 60, 0), vscode.TextEditorRevealType.AtTop);
    await screenshot('30-snapshot-overlays');
  });

  it('shows the report view: peak, lines, segments', async () => {
    const rendered = await waitFor('the snapshot report view', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r?.tables['segments-table'] ? r : undefined;
    });
    assert.match(rendered.peakText, /^peak [\d.]+ (?:[KMG]i)?B$/);
    assert.ok((rendered.tables['lines-table'] ?? 0) > 0);
    assert.ok(rendered.charts.includes('timeline'));
    const src = await webview('30-source', 'count', '#snapshot-source');
    assert.equal(src.error, undefined, src.error);
    assert.match(src.texts[0] ?? '', /From the PyTorch memory snapshot gpt_python\.pickle/);
    await screenshot('31-snapshot-report-view');
  });

  it('opens *.pickle with the read-only custom editor', async () => {
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(snap), 'membit.snapshot');
    const rendered = await waitFor('the custom editor to render', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r?.tables['segments-table'] ? r : undefined;
    }, 60_000);
    assert.ok((rendered.tables['summary-table'] ?? 0) >= 3);
    await screenshot('32-snapshot-custom-editor');
  });

  it('refuses a pickle that would run a command, and nothing runs', async () => {
    const ws = workspaceDir();
    const evil = join(ws, 'snapshots', 'evil.pickle');
    // pickle.dumps of an object whose __reduce__ is (os.system, ('touch MEMBIT_PWNED',)).
    writeFileSync(evil, Buffer.from('8004953e000000000000007d948c087365676d656e7473945d948c05706f736978948c0673797374656d9493948c12746f756368204d454d4249545f50574e4544948594529461732e', 'hex'));
    await vscode.commands.executeCommand(Commands.openSnapshot, vscode.Uri.file(evil));
    const note = await waitFor('the refusal', async () => {
      const notes = (await vscode.commands.executeCommand<{ kind: string; text: string }[] | undefined>(InternalCommands.recentlyShown)) ?? [];
      return notes.find((n) => n.text.includes('posix.system'));
    });
    assert.equal(note.kind, 'warning');
    assert.match(note.text, /ran nothing from it/);
    assert.equal(existsSync(join(ws, 'MEMBIT_PWNED')), false);
  });
});
