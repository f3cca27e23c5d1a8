import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import { EXTENSION_ID, openSample, screenshot, uiShows, waitFor, workspaceDir } from './util';

const ARGS = ['--steps', '5', '--batch-size', '4', '--seq-len', '64', '--n-layer', '2', '--n-embd', '64', '--n-head', '2', '--data-bytes', '200000'];

async function overlaysOn(file: string, what: string, ok: (a: AppliedOverlays) => boolean): Promise<AppliedOverlays> {
  return waitFor(what, async () => {
    const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
    return all.find((a) => a.file === file && a.inline.length > 0 && ok(a));
  }, 120_000);
}

describe('predicted memory, then a measured run', function () {
  this.timeout(400_000);

  it('Predict Memory (no GPU) draws predicted overlays on the GPT sample', async () => {
    const ws = workspaceDir();
    const editor = await openSample('gpt_tiny.py');
    const file = editor.document.uri.fsPath;
    // The arguments the palette flow would ask for; the interpreter comes from membit.python.
    const out = await vscode.commands.executeCommand<string | undefined>(Commands.predictMemory, {
      uri: vscode.Uri.file(join(ws, 'gpt_tiny.py')),
      gpu: 'A100-80GB',
      args: [...ARGS, '--device', 'cuda'],
    });
    assert.ok(out && existsSync(out), `no prediction report (${String(out)})`);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { run: { prediction?: { complete: boolean; gpu: { key: string } } } };
    assert.equal(doc.run.prediction?.gpu.key, 'A100-80GB');
    assert.equal(doc.run.prediction.complete, true);
    const applied = await overlaysOn(file, 'predicted overlays on gpt_tiny.py', (a) => a.predicted);
    for (const i of applied.inline) assert.match(i.text, /^≈ [\d.]+ (?:[KMG]i)?B kept for backward.* \(predicted, A100-80GB\)$/);
    // The line the prediction says saves the most carries its figure at the end of the line.
    const lines = (JSON.parse(readFileSync(out, 'utf8')) as { lines: { file: string; line: number; saved_bytes: number }[] }).lines.filter((l) => l.file === 'gpt_tiny.py');
    const top = lines.reduce((a, b) => (b.saved_bytes > a.saved_bytes ? b : a));
    const attnDrop = top.line;
    assert.ok(applied.inline.some((i) => i.line === attnDrop), `no predicted text on line ${attnDrop}, the largest: ${JSON.stringify(applied.inline)}`);
    // The scanner's per-site figures come from the loaded report: now the prediction, and they say so.
    const state = await waitFor('scanner hints from the prediction', async () => {
      const st = await vscode.commands.executeCommand<{ sites: { hint?: string }[] } | undefined>(InternalCommands.scanState, editor.document.uri);
      return st?.sites.some((x) => x.hint?.includes('(predicted)')) ? st : undefined;
    });
    for (const x of state.sites) assert.doesNotMatch(x.hint ?? '', /measured/);
    editor.revealRange(new vscode.Range(Math.max(0, attnDrop - 12), 0, attnDrop + 12, 0), vscode.TextEditorRevealType.AtTop);
    const shown = await uiShows('22-predict-statusbar', 'statusbar', 'predicted peak');
    if (shown !== undefined) assert.ok(shown, 'the status bar does not say "predicted peak"');
    await screenshot('22-predicted-overlays');
  });

  it('a measured run replaces the prediction', async () => {
    const ws = workspaceDir();
    const ext = vscode.extensions.getExtension(EXTENSION_ID);
    assert.ok(ext);
    const python = process.env['MEMBIT_PYTHON'];
    assert.ok(python, 'MEMBIT_PYTHON must name a Python with torch for the e2e suite');
    execFileSync(process.execPath, [join(ext.extensionPath, 'dist', 'cli.js'), 'profile', '--python', python, '--root', ws, '--steps', '2', '--warmup', '1', '--',
      join(ws, 'gpt_tiny.py'), ...ARGS, '--device', 'cpu'], { cwd: ws, stdio: 'inherit', timeout: 240_000 });
    await vscode.commands.executeCommand(InternalCommands.reloadReports);
    const editor = await openSample('gpt_tiny.py');
    const applied = await overlaysOn(editor.document.uri.fsPath, 'measured overlays replacing the prediction', (a) => !a.predicted);
    for (const i of applied.inline) assert.doesNotMatch(i.text, /predicted/);
    await screenshot('22-measured-replaces-predicted');
  });
});
