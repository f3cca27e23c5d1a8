/**
 * A torchrun job in the editor: the real CLI runs the distributed sample under torchrun with
 * gloo on two CPU ranks; the report view shows per-rank peaks and the rank picker, the overlays
 * name the rank each line's figure comes from, and picking a rank in the view repaints both.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { RenderedSummary } from '../../../media/report/messages';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import { EXTENSION_ID, openSample, screenshot, waitFor, webview, workspaceDir } from './util';
import { defined } from '../../defined';

async function overlaysOf(file: string): Promise<AppliedOverlays | undefined> {
  const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
  return all.find((a) => a.file === file);
}

const rendered = () => vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);

describe('a torchrun job: per-rank reports in one view', function () {
  this.timeout(400_000);
  let setFile = '';

  before(() => {
    const ext = vscode.extensions.getExtension(EXTENSION_ID);
    assert.ok(ext);
    const ws = workspaceDir();
    // Outside the run history, so the other suites' newest-baseline choice is untouched.
    setFile = join(ws, 'dist-run', 'ddp.json');
    execFileSync(
      process.execPath,
      [
        join(ext.extensionPath, 'dist', 'cli.js'), 'profile', '--python', defined(process.env['MEMBIT_PYTHON'], 'MEMBIT_PYTHON'), '--root', ws, '--nproc-per-node', '2',
        '--steps', '2', '--out', setFile, '--', join(ws, 'gpt_dist.py'), '--parallel', 'ddp', '--steps', '6', '--batch-size', '4', '--seq-len', '32',
        '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '200000',
      ],
      { cwd: ws, stdio: 'inherit', timeout: 300_000 },
    );
  });

  after(async () => {
    await vscode.commands.executeCommand(Commands.selectRun, 'auto');
  });

  it('shows every rank side by side, the max over ranks in the editor, and repaints for a picked rank', async () => {
    const doc = JSON.parse(readFileSync(setFile, 'utf8')) as { schema: string; world_size: number; ranks: { rank: number; status: string }[] };
    assert.equal(doc.schema, 'membit.runset/1');
    assert.deepEqual(doc.ranks.map((r) => [r.rank, r.status]), [[0, 'ok'], [1, 'ok']]);
    // The model's lines are in gpt_tiny.py, which gpt_dist.py trains: the code on the left, the view beside it.
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    const model = (await openSample('gpt_tiny.py')).document.uri.fsPath;
    await vscode.commands.executeCommand(Commands.showReport, vscode.Uri.file(setFile));
    const first = await waitFor('the run set in the report view', async () => {
      const r = await rendered();
      return r?.tables['ranks-table'] === 2 && r.charts.includes('rank-peaks') ? r : undefined;
    });
    assert.equal(first.rankPick, null, 'the view starts at the max over ranks');
    const rows = await webview('26-rank-rows', 'count', '#ranks-table tbody tr');
    assert.equal(rows.count, 2, rows.error);
    assert.match(rows.texts[0] ?? '', /^0\s/);
    assert.match(rows.texts[1] ?? '', /^1\s/);
    const options = await webview('26-rank-options', 'count', '#rank-picker option');
    assert.deepEqual(options.texts.map((t) => t.split(' · ')[0]), ['max over ranks', 'rank 0', 'rank 1']);

    // Each figure on the model's lines names the rank it comes from.
    const max = await waitFor('overlays naming the rank of each figure', async () => {
      const a = await overlaysOf(model);
      return a && a.inline.length > 0 ? a : undefined;
    });
    for (const i of max.inline) assert.match(i.text, / · rank [01] \(max over ranks\)$/, i.text);
    await screenshot('26-runset-max');

    // Picking rank 1 in the view's picker repaints the view and the editor with rank 1's own figures.
    const picked = await webview('26-pick-rank-1', 'select=1', '#rank-picker');
    assert.equal(picked.error, undefined, picked.error);
    await waitFor('the view to show rank 1', async () => (await rendered())?.rankPick === 1);
    const one = await waitFor('overlays of rank 1', async () => {
      const a = await overlaysOf(model);
      return a && a.inline.length > 0 && a.inline.every((i) => i.text.endsWith(' · rank 1')) ? a : undefined;
    });
    assert.ok(one.inline.length > 0);
    await screenshot('26-runset-rank-1');

    // And back to the max over ranks.
    assert.equal((await webview('26-pick-max', 'select=max', '#rank-picker')).error, undefined);
    await waitFor('the view to show the max over ranks', async () => (await rendered())?.rankPick === null);
  });
});
