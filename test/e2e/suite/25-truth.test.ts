/**
 * What the editor shows must be true for the code on screen: the right run, on the right
 * lines, in one unit, with noise called noise. Each case fails on the behaviour before the
 * fix (a variant run painted on unconverted code, "⚠ stale" forever after an undo,
 * construction-line hints left on old line numbers, kB in one place and KiB in another,
 * a percentage printed for identical configurations).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import { sameConfiguration } from '../../../src/core/report/compare';
import { indexReport, inlineText } from '../../../src/core/report/model';
import type { Report } from '../../../src/core/report/types';
import { formatBytes } from '../../../src/core/units';
import type { AppliedOverlays } from '../../../src/vscode/report/overlays';
import type { ScanState } from '../../../src/vscode/scan';
import type { RenderedSummary } from '../../../media/report/messages';
import { hoverText, openSample, screenshot, waitFor, webview, workspaceDir } from './util';
import { itemAt } from '../../../src/core/arrays';
import { defined } from '../../defined';

const ARGS = ['--steps', '30', '--batch-size', '2', '--seq-len', '64', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '200000', '--device', 'cpu'];

const lineOf = (doc: vscode.TextDocument, re: RegExp) => doc.getText().split('\n').findIndex((l) => re.test(l)) + 1;

async function overlaysOf(file: string): Promise<AppliedOverlays | undefined> {
  const all = (await vscode.commands.executeCommand<AppliedOverlays[] | undefined>(InternalCommands.appliedOverlays)) ?? [];
  return all.find((a) => a.file === file);
}

async function statusBar(): Promise<{ text: string; tooltip: string; report?: string }> {
  return (await vscode.commands.executeCommand<{ text: string; tooltip: string; report?: string } | undefined>(InternalCommands.statusBar)) ?? { text: '', tooltip: '' };
}

const load = (u: vscode.Uri) => JSON.parse(readFileSync(u.fsPath, 'utf8')) as Report;

describe('what the editor shows is true for the code on screen', function () {
  this.timeout(400_000);
  let baseline: vscode.Uri;
  let packed: vscode.Uri;

  before(async () => {
    // Both runs of the baseline configuration (here and in the "within noise" test) run with no
    // editor or report view open: a webview rendering in a headless browser beside a run on two
    // cores changes its step times, which is the machine's doing, not the code's.
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    const reports = await vscode.commands.executeCommand<vscode.Uri[] | undefined>(Commands.compareVariants, {
      script: join(workspaceDir(), 'gpt_tiny.py'),
      args: ARGS,
      steps: 8,
      warmup: 1,
      variants: ['baseline', 'packed'],
    });
    assert.equal(reports?.length, 2, 'one report per variant');
    [baseline, packed] = reports as [vscode.Uri, vscode.Uri];
    assert.equal(load(packed).run.variant, 'packed');
  });

  it('after Compare Variants, the status bar and the overlays show the baseline, not the newer variant run', async () => {
    const editor = await openSample('gpt_tiny.py');
    const file = editor.document.uri.fsPath;
    const base = load(baseline);
    const attnCall = lineOf(editor.document, /att = self\.attn_dropout\(att\)/);
    const info = indexReport(base).files.get('gpt_tiny.py')?.get(attnCall);
    assert.ok(info, `the baseline measured line ${attnCall}`);
    const want = inlineText(info, 'cpu');
    const applied = await waitFor('overlays from the baseline run', async () => {
      const a = await overlaysOf(file);
      return a?.inline.find((i) => i.line === attnCall)?.text === want ? a : undefined;
    }, 60_000);
    // The packed run kept a 1-bit mask: its figure must not be on the unconverted line.
    const packedInfo = indexReport(load(packed)).files.get('gpt_tiny.py')?.get(attnCall);
    if (packedInfo) assert.notEqual(inlineText(packedInfo, 'cpu'), want, 'the variants differ on this line');
    assert.equal(applied.stale, false);
    const status = await statusBar();
    assert.equal(status.report, baseline.fsPath);
    assert.match(status.text, /Membit: peak [\d.]+ (?:[KMG]i)?B · baseline · local \d\d:\d\d:\d\d/);
    assert.match(status.tooltip, /newest baseline run/);
    editor.revealRange(new vscode.Range(attnCall - 10, 0, attnCall + 6, 0), vscode.TextEditorRevealType.AtTop);
    await screenshot('25-baseline-after-compare');
  });

  it('Show Run in Editor pins a run, and the automatic choice comes back', async () => {
    await vscode.commands.executeCommand(Commands.selectRun, packed);
    await waitFor('the packed run shown', async () => (await statusBar()).report === packed.fsPath);
    assert.match((await statusBar()).text, /· packed · local .*\$\(pinned\)/);
    await vscode.commands.executeCommand(Commands.selectRun, 'auto');
    await waitFor('the baseline shown again', async () => (await statusBar()).report === baseline.fsPath);
  });

  it('edit, undo and save: the marks are current again, on the lines the run measured', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const file = doc.uri.fsPath;
    const before = await waitFor('overlays', () => overlaysOf(file));
    const marks = (a: AppliedOverlays) => JSON.stringify(a.inline);
    await editor.edit((e) => e.insert(new vscode.Position(0, 0), '# an edit\n'));
    const edited = await waitFor('the edit to mark the file stale', async () => {
      const a = await overlaysOf(file);
      return a?.stale ? a : undefined;
    });
    // Staleness is said once, not on every line.
    assert.ok(edited.inline.every((i) => !i.text.includes('stale')), JSON.stringify(edited.inline));
    assert.match((await statusBar()).text, /file edited/);
    await vscode.commands.executeCommand('undo');
    await waitFor('undo', () => !doc.getText().startsWith('# an edit'));
    await doc.save();
    const after = await waitFor('the marks to be current again', async () => {
      const a = await overlaysOf(file);
      return a && !a.stale ? a : undefined;
    });
    assert.equal(marks(after), marks(before));
    assert.doesNotMatch((await statusBar()).text, /file edited/);
    // Closing and reopening judges the text afresh: still current.
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
    await openSample('gpt_tiny.py');
    const reopened = await waitFor('overlays after reopening', () => overlaysOf(file));
    assert.equal(reopened.stale, false);
  });

  it('after a conversion adds an import line, each construction-line hint stays on its own line', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const hintAt = (s: ScanState, re: RegExp) => {
      const line = lineOf(doc, re);
      return s.sites.find((x) => x.line === line)?.hint;
    };
    const attnCtor = /self\.attn_dropout = nn\.Dropout/;
    const residCtor = /self\.resid_dropout = nn\.Dropout/;
    const ready = await waitFor('measured hints on the construction lines', async () => {
      const s = await vscode.commands.executeCommand<ScanState | undefined>(InternalCommands.scanState, doc.uri);
      return s && (hintAt(s, attnCtor) ?? '').includes('(measured') && (hintAt(s, residCtor) ?? '').includes('(measured') ? s : undefined;
    }, 60_000);
    const attnHint = defined(hintAt(ready, attnCtor), 'attention dropout hint');
    const residHint = defined(hintAt(ready, residCtor), 'residual dropout hint');
    assert.notEqual(attnHint, residHint);
    // Convert the embedding dropout (self.drop): the edit adds `import membit.nn` above every class.
    const lines = original.split('\n');
    const drop = lines.findIndex((l) => l.includes('self.drop = nn.Dropout'));
    assert.ok(drop > 0);
    editor.selection = new vscode.Selection(drop, itemAt(lines, drop).indexOf('nn.Dropout') + 4, drop, itemAt(lines, drop).indexOf('nn.Dropout') + 4);
    await waitFor('the dropout diagnostic', () => vscode.languages.getDiagnostics(doc.uri).some((d) => d.source === 'Membit' && d.range.start.line === drop));
    await vscode.commands.executeCommand(Commands.convertToPackedDropout);
    await waitFor('the import line', () => /^import membit\.nn\b/m.test(doc.getText()));
    const after = await waitFor('hints to follow the edit', async () => {
      const s = await vscode.commands.executeCommand<ScanState | undefined>(InternalCommands.scanState, doc.uri);
      return s && hintAt(s, attnCtor) === attnHint ? s : undefined;
    }, 30_000);
    assert.equal(hintAt(after, residCtor), residHint);
    const attnLine = lineOf(doc, attnCtor);
    editor.revealRange(new vscode.Range(attnLine - 4, 0, attnLine + 4, 0), vscode.TextEditorRevealType.InCenter);
    await screenshot('25-hints-after-convert');
    await vscode.commands.executeCommand('undo');
    await waitFor('undo to restore the original', () => doc.getText() === original);
    await doc.save();
  });

  it('one quantity reads the same in the hint, the end-of-line text, the hover and the report view', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const base = load(baseline);
    const site = base.sites.find((s) => s.kind === 'attn-dropout');
    assert.ok(site, 'the baseline measured the attention dropout');
    const figure = formatBytes(site.mask_bytes);
    assert.match(figure, /^[\d.]+ (?:[KMG]i)?B$/);
    const ctor = lineOf(doc, /self\.attn_dropout = nn\.Dropout/);
    const call = lineOf(doc, /att = self\.attn_dropout\(att\)/);
    const state = await waitFor('the measured hint', async () => {
      const s = await vscode.commands.executeCommand<ScanState | undefined>(InternalCommands.scanState, doc.uri);
      return s?.sites.find((x) => x.line === ctor && x.hint.includes('(measured'));
    }, 60_000);
    assert.match(state.hint, new RegExp(`mask ${figure.replace('.', '\\.')} → .* \\(measured, 2× summed, CPU\\)$`));
    // The previous test's revert re-maps the overlays; wait until they show the call line's mask.
    let seen = '';
    const inline = await waitFor('the mask on the call line', async () => {
      seen = (await overlaysOf(doc.uri.fsPath))?.inline.find((i) => i.line === call)?.text ?? '';
      return seen.includes(`mask ${figure}`) ? seen : undefined;
    }).catch((e: unknown) => {
      throw new Error(`${e instanceof Error ? e.message : String(e)}; the call line showed "${seen}"`);
    });
    assert.ok(inline.endsWith('(2× summed, CPU)'), inline);
    const hovers = await vscode.commands.executeCommand<vscode.Hover[]>('vscode.executeHoverProvider', doc.uri, new vscode.Position(call - 1, 12));
    const hover = hoverText(hovers);
    assert.ok(hover.includes(`masks of ${figure} in all`), hover);
    assert.doesNotMatch(hover, / a \d/);
    assert.match(hover, /Measured in run baseline · local/);
    await vscode.commands.executeCommand(Commands.showReport, baseline);
    await waitFor('the report view', () => vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered));
    const rows = await webview('25-sites-rows', 'count', '#sites-table tbody tr');
    assert.ok(rows.texts.some((t) => t.includes(figure)), rows.texts.join(' | '));
  });

  it('comparing two runs of the same configuration says "within noise", not a percentage', async () => {
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    const again = await vscode.commands.executeCommand<string>(Commands.profileRun, { script: join(workspaceDir(), 'gpt_tiny.py'), args: ARGS, steps: 8, warmup: 1 });
    assert.ok(again, 'the second baseline run finished');
    // The two runs are recognised as one configuration (same code, arguments, steps, device),
    // so however the machine's load moved the step times between them, that is noise.
    assert.equal(sameConfiguration(load(baseline), load(vscode.Uri.file(again))), true);
    await vscode.commands.executeCommand(Commands.compareRuns, [baseline, vscode.Uri.file(again)]);
    await waitFor('the comparison', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r?.tables['comparison-table'] === 2;
    }, 60_000);
    const rows = await webview('25-noise-rows', 'count', '#comparison-table tbody tr');
    assert.match(rows.texts[1] ?? '', /within noise/, rows.texts.join(' | '));
    assert.doesNotMatch(rows.texts[1] ?? '', /ms[^|]*\s[+−]\d+\.\d%/);
    await screenshot('25-within-noise');
  });
});
