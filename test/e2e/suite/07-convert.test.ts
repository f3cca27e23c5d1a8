import assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { Commands } from '../../../src/commands';
import { openSample, screenshot, waitFor } from './util';
import { itemAt } from '../../../src/core/arrays';

describe('Convert to packed dropout from the editor', () => {
  it('rewrites the dropout under the cursor, adds the import once, and undo restores the file', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const lines = original.split('\n');
    const line = lines.findIndex((l) => l.includes('self.resid_dropout = nn.Dropout(config.dropout)'));
    assert.ok(line > 0);
    // Wait until the scan marked the site, as a user would see it before right-clicking.
    await waitFor('the dropout diagnostic', () => vscode.languages.getDiagnostics(doc.uri).some((d) => d.source === 'Membit' && d.range.start.line === line));
    const col = itemAt(lines, line).indexOf('nn.Dropout');
    editor.selection = new vscode.Selection(line, col + 4, line, col + 4);
    // The context-menu entry runs this command with no arguments: the cursor decides.
    await vscode.commands.executeCommand(Commands.convertToPackedDropout);
    await waitFor('the edit', () => doc.getText() !== original);
    const after = doc.getText().split('\n');
    const importLines = after.filter((l) => /^import membit\.nn\b/.test(l));
    assert.equal(importLines.length, 1, `expected one membit import:\n${after.slice(0, 25).join('\n')}`);
    const converted = after.find((l) => l.includes('self.resid_dropout ='));
    assert.equal(converted?.trim(), 'self.resid_dropout = membit.nn.PackedDropout(config.dropout)');
    // Only that site changed: the attention dropout is still stock.
    assert.ok(after.some((l) => l.includes('self.attn_dropout = nn.Dropout(config.dropout)')));
    // The added import comes right after the torch imports.
    const torchImport = after.findIndex((l) => l.startsWith('from torch.nn import functional as F'));
    assert.ok(after.findIndex((l) => /^import membit\.nn\b/.test(l)) === torchImport + 1);
    editor.revealRange(new vscode.Range(line - 3, 0, line + 3, 0), vscode.TextEditorRevealType.InCenter);
    await screenshot('07-converted');
    await vscode.commands.executeCommand('undo');
    await waitFor('undo to restore the original', () => doc.getText() === original);
    assert.equal(doc.getText(), original);
    await doc.save();
  });

  it('offers packed and mask-free quick fixes on a dropout diagnostic', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const line = doc.getText().split('\n').findIndex((l) => l.includes('self.attn_dropout = nn.Dropout'));
    const diag = await waitFor('the diagnostic', () => vscode.languages.getDiagnostics(doc.uri).find((d) => d.source === 'Membit' && d.range.start.line === line));
    const actions = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', doc.uri, diag.range, vscode.CodeActionKind.QuickFix.value);
    const titles = actions.map((a) => a.title);
    assert.ok(titles.includes('Convert to packed dropout (1 bit per element)'), titles.join(' | '));
    assert.ok(titles.includes('Convert to mask-free dropout (recompute, no mask stored)'), titles.join(' | '));
  });

  it('converts a whole file and reverts it back to the exact original', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    await waitFor('diagnostics', () => vscode.languages.getDiagnostics(doc.uri).some((d) => d.source === 'Membit'));
    await vscode.commands.executeCommand(Commands.convertAllInFile, doc.uri, { preview: false });
    await waitFor('the file edit', () => doc.getText() !== original);
    assert.ok(!/\bnn\.Dropout\(/.test(doc.getText()), 'a dropout was left unconverted');
    await vscode.commands.executeCommand(Commands.revertConversions, doc.uri);
    await waitFor('revert', () => doc.getText() === original);
    await doc.save();
  });

  it('converts the FFN under the cursor to 2:4 sparse linears, both projections, and undo restores it', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const line = original.split('\n').findIndex((l) => l.includes('self.c_fc = nn.Linear'));
    await waitFor('the FFN diagnostic', () => vscode.languages.getDiagnostics(doc.uri).some((d) => d.source === 'Membit' && d.code === 'membit.ffn'));
    editor.selection = new vscode.Selection(line, 8, line, 8);
    await vscode.commands.executeCommand(Commands.convertFfnToSparse24);
    await waitFor('the edit', () => doc.getText() !== original);
    const after = doc.getText().split('\n');
    assert.equal(after.find((l) => l.includes('self.c_fc ='))?.trim(), 'self.c_fc = membit.sparse.SparseLinear24(config.n_embd, 4 * config.n_embd)');
    assert.equal(after.find((l) => l.includes('self.c_proj = ') && l.includes('4 * config.n_embd'))?.trim(), 'self.c_proj = membit.sparse.SparseLinear24(4 * config.n_embd, config.n_embd)');
    assert.equal(after.filter((l) => /^import membit\.sparse\b/.test(l)).length, 1);
    await vscode.commands.executeCommand('undo');
    await waitFor('undo', () => doc.getText() === original);
    await doc.save();
  });
});
