import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import type { RenderedSummary } from '../../../media/report/messages';
import { EXTENSION_ID, openSample, profileSampleWithCli, screenshot, waitFor, webview, workspaceDir } from './util';
import { defined } from '../../defined';

/** 1-based numbers of the lines whose text matches. */
function linesMatching(file: string, re: RegExp): number[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((l, i) => (re.test(l) ? [i + 1] : []));
}

describe('measured memory in the editor', function () {
  this.timeout(300_000);
  let reportFile = '';

  before(() => {
    reportFile = profileSampleWithCli();
  });

  it('loads the newest report and marks the dropout lines in the gutter, with mask sizes at the end of the line', async () => {
    const editor = await openSample('gpt_tiny.py');
    await vscode.commands.executeCommand(InternalCommands.reloadReports);
    const applied = await waitFor('overlays on gpt_tiny.py', async () => {
      const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
      return all.find((a) => a.file === editor.document.uri.fsPath && a.inline.length > 0);
    });
    const file = editor.document.uri.fsPath;
    const marked = new Set([...applied.gutter.low, ...applied.gutter.medium, ...applied.gutter.high]);
    // The attention-probability dropout holds the largest mask: it must be marked, with its mask in the text.
    const [attnDrop] = linesMatching(file, /att = self\.attn_dropout\(att\)/);
    assert.ok(attnDrop && marked.has(attnDrop), `line ${attnDrop} (attn_dropout) is not marked: ${JSON.stringify(applied.gutter)}`);
    const attnText = applied.inline.find((i) => i.line === attnDrop);
    assert.ok(attnText, `no end-of-line text on line ${attnDrop}: ${JSON.stringify(applied.inline)}`);
    assert.match(attnText.text, /^▲ [\d.]+ (?:[KMG]i)?B kept for backward · mask [\d.]+ (?:[KMG]i)?B \(2× summed, CPU\)$/);
    // Every marked line is a line the report names, at the same number (nothing misplaced).
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { lines: { file: string; line: number }[] };
    const reported = new Set(report.lines.filter((l) => l.file === 'gpt_tiny.py').map((l) => l.line));
    for (const l of marked) assert.ok(reported.has(l), `line ${l} is marked but not in the report`);
    editor.revealRange(new vscode.Range(attnDrop - 12, 0, attnDrop + 12, 0), vscode.TextEditorRevealType.AtTop);
    await screenshot('10-editor-overlays');
  });

  it('moves the marks with an edit above them, and drops marks on deleted lines', async () => {
    const editor = await openSample('gpt_tiny.py');
    const file = editor.document.uri.fsPath;
    const [attnDrop] = linesMatching(file, /att = self\.attn_dropout\(att\)/);
    assert.ok(attnDrop);
    await editor.edit((e) => e.insert(new vscode.Position(0, 0), '# one\n# two\n'));
    const moved = await waitFor('marks to move down two lines', async () => {
      const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
      const a = all.find((x) => x.file === file);
      return a?.inline.some((i) => i.line === attnDrop + 2) ? a : undefined;
    });
    assert.equal(moved.stale, true);
    // Staleness is said once (status bar, hover), not as a prefix on every line.
    assert.ok(moved.inline.find((i) => i.line === attnDrop + 2)?.text.startsWith('▲ '));
    // Delete the attention-dropout line itself: its mark goes away rather than sliding
    // onto a neighbour, and the marks below move up one line.
    const marks = (a: AppliedOverlays) => new Map(a.inline.map((i) => [i.line, i.text]));
    const before = marks(moved);
    await editor.edit((e) => e.delete(new vscode.Range(attnDrop + 1, 0, attnDrop + 2, 0)));
    const expected = new Map<number, string>();
    for (const [line, text] of before) {
      if (line < attnDrop + 2) expected.set(line, text);
      else if (line > attnDrop + 2) expected.set(line - 1, text);
    }
    await waitFor('the marks to follow the deletion', async () => {
      const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
      const a = all.find((x) => x.file === file);
      return a && JSON.stringify([...marks(a)].sort()) === JSON.stringify([...expected].sort());
    });
    await vscode.commands.executeCommand('undo');
    await vscode.commands.executeCommand('undo');
    await vscode.commands.executeCommand('workbench.action.files.revert');
  });

  it('opens the report view with the summary, the per-layer chart and the sites table', async () => {
    await vscode.commands.executeCommand(Commands.showReport);
    const rendered = await waitFor('the report view to render', () =>
      vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered),
    );
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { sites: unknown[]; summary: { tracked_at_peak: number; peak_allocated: number | null; grads_at_peak: number } };
    assert.ok(rendered.charts.includes('modules'), `charts: ${rendered.charts.join(', ')}`);
    // Identical layers are one labelled bar carrying its figure; the root module has a name.
    const layers = rendered.layers ?? [];
    assert.ok(layers.some((l) => /^h\.\*\.attn\.attn_dropout ×2 \(Dropout\) — [\d.]+ (?:[KMG]i)?B$/.test(l)), layers.join('\n'));
    assert.ok(layers.some((l) => l.startsWith('(model) (GPT) — ')), layers.join('\n'));
    assert.ok(!layers.some((l) => /^h\.\d/.test(l)), 'no layer of one block drawn on its own');
    // Gradients are drawn only when the peak held some.
    assert.equal(rendered.segments?.includes('grads'), report.summary.grads_at_peak > 0, `segments ${rendered.segments?.join()} with ${report.summary.grads_at_peak} B of gradients at the peak`);
    // Every lever on one list: the dropout packing from this run's masks among them.
    assert.ok(rendered.levers?.some((l) => /^Packed 1-bit dropout masks: [\d.]+ (?:[KMG]i)?B \(this run's mask sizes\)$/.test(l)), rendered.levers?.join('\n'));
    assert.equal(rendered.tables['sites-table'], report.sites.length);
    assert.ok((rendered.tables['summary-table'] ?? 0) >= 5);
    assert.match(rendered.peakText, /^peak [\d.]+ (?:[KMG]i)?B$/);
    // Inside the webview's frames: the tables are there with the report's figures.
    const sitesRows = await webview('11-sites-rows', 'count', '#sites-table tbody tr');
    assert.equal(sitesRows.error, undefined, sitesRows.error);
    assert.equal(sitesRows.count, report.sites.length);
    const headline = await webview('11-headline', 'count', '.headline');
    assert.ok(headline.texts[0]?.startsWith(`Peak ${rendered.peakText.slice(5)}`), headline.texts.join(' | '));
    const canvases = await webview('11-charts', 'count', 'canvas');
    assert.ok(canvases.count >= 1);
    await screenshot('11-report-view');
    // Clicking a heading scrolls the view to it (for the pictures of each part).
    assert.equal((await webview('11-layers-scroll', 'click', '#modules h2')).error, undefined);
    await screenshot('11-report-layers');
  });

  it('compares a baseline and a packed run side by side', async () => {
    const ext = vscode.extensions.getExtension(EXTENSION_ID);
    assert.ok(ext);
    const ws = workspaceDir();
    const packed = join(ws, 'packed-run.json');
    execFileSync(
      process.execPath,
      [
        join(ext.extensionPath, 'dist', 'cli.js'), 'profile', '--python', defined(process.env['MEMBIT_PYTHON'], 'MEMBIT_PYTHON'), '--root', ws, '--variant', 'packed',
        '--steps', '2', '--warmup', '1', '--out', packed, '--', join(ws, 'gpt_tiny.py'), '--steps', '5', '--batch-size', '4', '--seq-len', '64',
        '--n-layer', '2', '--n-embd', '64', '--n-head', '2', '--data-bytes', '200000', '--device', 'cpu',
      ],
      { cwd: ws, stdio: 'inherit', timeout: 240_000 },
    );
    await vscode.commands.executeCommand(Commands.compareRuns, [vscode.Uri.file(reportFile), vscode.Uri.file(packed)]);
    const rendered = await waitFor('the comparison to render', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r?.tables['comparison-table'] === 2 ? r : undefined;
    });
    assert.ok((rendered.tables['comparison-modules'] ?? 0) > 0, 'per-layer differences are listed');
    const rows = await webview('13-comparison-rows', 'count', '#comparison-table tbody tr');
    assert.equal(rows.count, 2);
    // Packing holds less at the peak: the second row's Δpeak is negative.
    assert.match(rows.texts[1] ?? '', /packed\s+ok\s+[\d.]+ (?:[KMG]i)?B\s+−[\d.]+%/);
    // The view scrolled to the comparison it just drew, and ranks the packing it measured.
    assert.equal(rendered.focused?.id, 'comparison');
    assert.ok(Math.abs(rendered.focused.top) < 40, `the comparison's top is ${rendered.focused.top} px from the view's top`);
    assert.ok(rendered.levers?.some((l) => /^Packed 1-bit dropout masks: [\d.]+ (?:[KMG]i)?B \(measured, run packed · /.test(l)), rendered.levers?.join('\n'));
    await screenshot('13-comparison');
  });

  it('shows measured totals above the model classes', async () => {
    const editor = await openSample('gpt_tiny.py');
    const lenses = await waitFor('measured CodeLenses', async () => {
      const l = (await vscode.commands.executeCommand<vscode.CodeLens[] | undefined>('vscode.executeCodeLensProvider', editor.document.uri)) ?? [];
      const mine = l.filter((x) => x.command?.title.startsWith('Measured:'));
      return mine.length > 0 ? mine : undefined;
    });
    const attn = lenses.find((l) => l.command?.title.includes('× CausalSelfAttention'));
    assert.ok(attn, lenses.map((l) => l.command?.title).join(' | '));
    assert.match(attn.command?.title ?? '', /^Measured: 2× CausalSelfAttention \(summed, CPU\) — activations [\d.]+ (?:[KMG]i)?B · masks [\d.]+ (?:[KMG]i)?B$/);
    // Short enough for an 80–100 column editor; every figure is in the tooltip.
    for (const l of lenses) assert.ok((l.command?.title.length ?? 0) <= 100, `${l.command?.title.length} characters: ${l.command?.title}`);
    const classLine = editor.document.getText().split('\n').findIndex((l) => l.startsWith('class CausalSelfAttention'));
    assert.equal(attn.range.start.line, classLine);
  });

  it('converts a site from the report view with its Convert button', async () => {
    // The code on the left, the view beside it (as a user would have them).
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    await openSample('gpt_tiny.py');
    await vscode.commands.executeCommand(Commands.showReport);
    // The one report, not the comparison the view drew before: a click must land on the new table.
    await waitFor('the report view of the one run', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r && r.tables['comparison-table'] === undefined && (r.sites?.length ?? 0) > 0 ? r : undefined;
    });
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(join(workspaceDir(), 'gpt_tiny.py')));
    const before = doc.getText();
    const first = (await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered))?.sites ?? [];
    assert.ok(first.length > 1 && first.every((s) => s.action === 'convert'), JSON.stringify(first));
    const clicked = await webview('12-convert-click', 'click', '#sites-table tbody tr button');
    assert.equal(clicked.error, undefined, clicked.error);
    await waitFor('the conversion from the report view', () => doc.getText() !== before, 30_000);
    assert.match(doc.getText(), /membit\.nn\.PackedDropout\(|membit\.nn\.functional\.packed_dropout\(/);
    // The table follows: the converted site no longer offers Convert, and every link opens
    // the line its site is on now (the conversion added an import line above them all).
    const after = await waitFor('the sites table to follow the conversion', async () => {
      const s = (await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered))?.sites;
      return s && s[0]?.action === 'converted' ? s : undefined;
    });
    const text = doc.getText().split('\n');
    const old = before.split('\n');
    const added = text.length - old.length;
    assert.ok(added >= 1, 'the conversion added an import');
    for (const [i, s] of after.entries()) {
      assert.equal(s.line, (first[i]?.line ?? 0) + added, `site ${i} moved with the inserted import`);
      // A site is where it is called; the conversion rewrote where its module is built.
      assert.equal(text[s.line - 1], old[(first[i]?.line ?? 0) - 1], `site ${i}'s link opens the line it was measured on`);
    }
    assert.ok(after.slice(1).some((s) => s.action === 'convert'), 'the other sites still offer Convert');
    assert.equal((await webview('12-sites-scroll', 'click', '#sites h2')).error, undefined);
    await screenshot('12-converted-from-report');
    await vscode.commands.executeCommand(Commands.revertConversions, doc.uri);
    await waitFor('revert', () => doc.getText() === before);
    await doc.save();
    await waitFor('the sites table to offer Convert again after the revert', async () => {
      const s = (await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered))?.sites;
      return s && JSON.stringify(s) === JSON.stringify(first);
    });
  });
});
