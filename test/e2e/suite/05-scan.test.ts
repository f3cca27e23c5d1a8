import assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { InternalCommands } from '../../../src/commands';
import type { ScanState } from '../../../src/vscode/scan';
import { codeOf, hoverText, openSample, restoreText, screenshot, waitFor } from './util';
import { itemAt } from '../../../src/core/arrays';

describe('static scan in the editor', () => {
  it('puts diagnostics with codes, end-of-line estimates and class CodeLenses on the GPT sample', async () => {
    const editor = await openSample('gpt_tiny.py');
    const uri = editor.document.uri;
    const text = editor.document.getText().split('\n');
    const lineOf = (re: RegExp) => text.findIndex((l) => re.test(l));
    const diags = await waitFor('Membit diagnostics', () => {
      const d = vscode.languages.getDiagnostics(uri).filter((x) => x.source === 'Membit');
      return d.length >= 5 ? d : undefined;
    });
    const codeAt = (line: number) => diags.filter((d) => d.range.start.line === line).map((d) => codeOf(d));
    assert.ok(codeAt(lineOf(/self\.attn_dropout = nn\.Dropout/)).includes('membit.attn-dropout') || codeAt(lineOf(/att = self\.attn_dropout\(att\)/)).includes('membit.attn-dropout'), 'attention dropout is found');
    assert.ok(codeAt(lineOf(/self\.resid_dropout = nn\.Dropout/)).includes('membit.dropout'));
    assert.ok(diags.some((d) => d.code === 'membit.attn-mask'), 'the materialized causal mask is found');
    assert.ok(diags.some((d) => d.code === 'membit.ffn'), 'the MLP is found as an FFN');
    // The memory advisor: eager attention at the softmax, the biggest lever, as an Information diagnostic.
    const softmax = lineOf(/att = F\.softmax\(att, dim=-1\)/);
    const eager = diags.find((d) => d.code === 'membit.eager-attn');
    assert.ok(eager, `no eager-attn diagnostic: ${diags.map((d) => `${d.range.start.line}:${codeOf(d)}`).join(' ')}`);
    assert.equal(eager.range.start.line, softmax);
    // No run yet: its figure is an estimate, so it is a quiet Hint (membit.diagnostics.estimateSeverity).
    assert.equal(eager.severity, vscode.DiagnosticSeverity.Hint);
    assert.match(eager.message, /F\.scaled_dot_product_attention/);
    assert.ok(codeAt(lineOf(/for block in self\.h:/)).includes('membit.checkpoint'));
    assert.ok(codeAt(lineOf(/loss\.backward\(\)/)).includes('membit.no-autocast'));
    // Before any run every figure is an estimate: all Hints, no squiggles.
    for (const d of diags) assert.equal(d.severity, vscode.DiagnosticSeverity.Hint, `${codeOf(d)} on line ${d.range.start.line + 1}`);

    const state = await waitFor('scan state', () => vscode.commands.executeCommand<ScanState>(InternalCommands.scanState, uri));
    const eagerHint = state.sites.find((s) => s.kind === 'eager-attn');
    assert.match(eagerHint?.hint ?? '', /^eager attention: ~?[\d.]+ \w+(\/sample)? probs\+mask → fused SDPA \((estimate @ .*L=\d+|measured)\)$/);
    const eagerHover = await vscode.commands.executeCommand<vscode.Hover[]>('vscode.executeHoverProvider', uri, new vscode.Position(softmax, itemAt(text, softmax).indexOf('softmax') + 2));
    assert.match(hoverText(eagerHover), /fused attention \(F\.scaled_dot_product_attention\)/);
    const resid = state.sites.find((s) => s.line === lineOf(/self\.resid_dropout = nn\.Dropout/) + 1);
    assert.ok(resid, JSON.stringify(state.sites));
    // The sample's dataclass gives literal shapes (block_size, n_embd), so the hint carries a size, not "unknown".
    assert.match(resid.hint, /\d/);

    const lenses = await waitFor('CodeLenses', async () => {
      const l = (await vscode.commands.executeCommand<vscode.CodeLens[] | undefined>('vscode.executeCodeLensProvider', uri)) ?? [];
      const mine = l.filter((x) => x.command?.title.startsWith('Membit'));
      return mine.length >= 2 ? mine : undefined;
    });
    const attnClass = lineOf(/^class CausalSelfAttention/);
    assert.ok(lenses.some((l) => l.range.start.line === attnClass), `no lens on CausalSelfAttention: ${lenses.map((l) => `${l.range.start.line}:${l.command?.title}`).join(' | ')}`);

    const hovers = await vscode.commands.executeCommand<vscode.Hover[]>('vscode.executeHoverProvider', uri, new vscode.Position(lineOf(/self\.resid_dropout = nn\.Dropout/), itemAt(text, lineOf(/self\.resid_dropout = nn\.Dropout/)).indexOf('nn.Dropout') + 3));
    assert.match(hoverText(hovers), /packed/i);

    editor.revealRange(new vscode.Range(attnClass, 0, attnClass + 30, 0), vscode.TextEditorRevealType.AtTop);
    await screenshot('05-scan-hints');
  });

  it('keeps scanning while the user types, and never fails on broken code', async () => {
    const editor = await openSample('gpt_tiny.py');
    const uri = editor.document.uri;
    const key = (d: vscode.Diagnostic, shift: number) => `${d.range.start.line + shift}:${codeOf(d)}`;
    const original = editor.document.getText();
    const before = vscode.languages.getDiagnostics(uri).filter((x) => x.source === 'Membit');
    assert.ok(before.length > 0, 'the sample has findings before the edit');
    // A syntax error in two new lines at the top: only a rescan puts findings two lines further
    // down (the diagnostics VS Code holds are not moved by edits), and the sites after the error
    // are still found.
    const expected = before.map((d) => key(d, 2));
    await editor.edit((e) => e.insert(new vscode.Position(0, 0), 'def broken(:\n    x = (\n'));
    try {
      // The unclosed `(` may swallow the statement after it; the other findings must be found
      // again, and at least one of them two lines further down (proof of a rescan).
      await waitFor('the findings found again by a rescan after a syntax error', () => {
        const now = vscode.languages.getDiagnostics(uri).filter((x) => x.source === 'Membit');
        const keys = new Set(now.map((d) => key(d, 0)));
        return expected.some((k) => keys.has(k)) && now.length >= before.length - 1;
      });
    } finally {
      // Later suites open the same file (and save it): never leave the broken text in the
      // editor. The original text is put back by an edit and saved, so no focus or timing can
      // hand a broken file to a later suite.
      await restoreText(editor.document, original);
    }
  });
});
