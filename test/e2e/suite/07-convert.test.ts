import assert from 'node:assert/strict';
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands } from '../../../src/commands';
import { hoverText, openSample, screenshot, waitFor, workspaceDir } from './util';
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

  it('in a file that calls torch.compile, offers no packing and says why, with the measured figures', async () => {
    const name = 'compiled_block_e2e.py';
    const file = join(workspaceDir(), name);
    writeFileSync(
      file,
      [
        'import torch',
        'import torch.nn as nn',
        '',
        'class Block(nn.Module):',
        '    def __init__(self):',
        '        super().__init__()',
        '        self.fc = nn.Linear(64, 64)',
        '        self.drop = nn.Dropout(0.1)',
        '',
        '    def forward(self, x):',
        '        return self.drop(self.fc(x))',
        '',
        'model = Block()',
        'model = torch.compile(model)',
        '',
      ].join('\n'),
    );
    try {
      const editor = await openSample(name);
      const doc = editor.document;
      const lines = doc.getText().split('\n');
      const line = lines.findIndex((l) => l.includes('self.drop = nn.Dropout(0.1)'));
      const diag = await waitFor('the dropout diagnostic', () => vscode.languages.getDiagnostics(doc.uri).find((d) => d.source === 'Membit' && d.range.start.line === line));
      assert.match(diag.message, /Compiled \(torch\.compile\): packing is not proposed here\. Measured on an NVIDIA H100/);
      const fixes = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', doc.uri, diag.range, vscode.CodeActionKind.QuickFix.value);
      const titles = fixes.map((a) => a.title);
      assert.ok(!titles.some((t) => /packed|mask-free/.test(t)), titles.join(' | '));
      const hover = hoverText(await vscode.commands.executeCommand<vscode.Hover[]>('vscode.executeHoverProvider', doc.uri, new vscode.Position(line, lines[line]?.indexOf('Dropout') ?? 0)));
      assert.match(hover, /This file calls torch\.compile \(`torch\.compile\(\.\.\.\)` at line 14\)\. .*no conversion is offered/);
      assert.match(hover, /MEMBIT_COMPILE_DROPOUT=fused/);
      assert.doesNotMatch(hover, /Quick fix/);
      const modelLine = lines.findIndex((l) => l.startsWith('model = Block()'));
      const refactors = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', doc.uri, new vscode.Range(modelLine, 0, modelLine, 0), vscode.CodeActionKind.RefactorRewrite.value);
      assert.ok(!refactors.some((a) => a.title.startsWith('Insert membit.patch')), refactors.map((a) => a.title).join(' | '));
      await screenshot('07-compiled-file');
      // The same file without its torch.compile call gets the conversions back.
      const compileLine = lines.findIndex((l) => l.startsWith('model = torch.compile'));
      const edit = new vscode.WorkspaceEdit();
      edit.delete(doc.uri, new vscode.Range(compileLine, 0, compileLine + 1, 0));
      assert.ok(await vscode.workspace.applyEdit(edit));
      const eager = await waitFor('the rescanned diagnostic', () =>
        vscode.languages.getDiagnostics(doc.uri).find((d) => d.source === 'Membit' && d.range.start.line === line && !d.message.includes('torch.compile')),
      );
      const eagerFixes = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', doc.uri, eager.range, vscode.CodeActionKind.QuickFix.value);
      assert.ok(eagerFixes.some((a) => a.title === 'Convert to packed dropout (1 bit per element)'), eagerFixes.map((a) => a.title).join(' | '));
      const eagerRefactors = await vscode.commands.executeCommand<vscode.CodeAction[]>('vscode.executeCodeActionProvider', doc.uri, new vscode.Range(modelLine, 0, modelLine, 0), vscode.CodeActionKind.RefactorRewrite.value);
      assert.ok(eagerRefactors.some((a) => a.title.startsWith('Insert membit.patch(model')), eagerRefactors.map((a) => a.title).join(' | '));
      await doc.save();
    } finally {
      await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
      unlinkSync(file);
    }
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
