import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { InternalCommands } from '../../../src/commands';
import { openSample, screenshot, waitFor, webview, workspaceDir } from './util';
import { defined } from '../../defined';

function membitDiagnostic(doc: vscode.TextDocument, code: string, line?: number): vscode.Diagnostic | undefined {
  return vscode.languages.getDiagnostics(doc.uri).find((d) => d.source === 'Membit' && d.code === code && (line === undefined || d.range.start.line === line));
}

async function actionsAt(doc: vscode.TextDocument, range: vscode.Range, kind: vscode.CodeActionKind): Promise<vscode.CodeAction[]> {
  return (await vscode.commands.executeCommand<vscode.CodeAction[] | undefined>('vscode.executeCodeActionProvider', doc.uri, range, kind.value)) ?? [];
}

async function run(action: vscode.CodeAction): Promise<unknown> {
  assert.ok(action.command, `${action.title} has no command`);
  return vscode.commands.executeCommand(action.command.command, ...((action.command.arguments ?? []) as unknown[]));
}

/** Waits until the finding's message no longer says it was not checked against an installed torch (the probe finished). */
async function capabilitiesChecked(doc: vscode.TextDocument, code: string, line: number): Promise<boolean> {
  const unchecked = () => (membitDiagnostic(doc, code, line)?.message ?? 'Not checked against an installed torch').includes('Not checked against an installed torch');
  return waitFor('the advice checked against the installed torch', () => !unchecked(), 60_000).catch(() => false);
}

/** Undo until the document is back to `original` (one step expected), then save. */
async function undoTo(doc: vscode.TextDocument, original: string): Promise<void> {
  await vscode.commands.executeCommand('undo');
  await waitFor('undo to restore the original', () => doc.getText() === original);
  assert.equal(doc.getText(), original);
  await doc.save();
}

describe('Memory advisor code actions', () => {
  it('replaces eager attention with SDPA from the eager-attn quick fix; undo restores the exact text', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const lines = original.split('\n');
    const softmax = lines.findIndex((l) => l.trim() === 'att = F.softmax(att, dim=-1)');
    assert.ok(softmax > 0);
    const diag = await waitFor('the eager-attn diagnostic at the softmax', () => membitDiagnostic(doc, 'membit.eager-attn', softmax));
    const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
    const titles = actions.map((a) => a.title).join(' | ');
    const fix = actions.find((a) => a.title === 'Use fused attention (scaled_dot_product_attention)');
    assert.ok(fix, titles);
    assert.equal(fix.isPreferred, true);
    assert.ok(actions.some((a) => a.title === 'Show advice: Fused attention (scaled_dot_product_attention)'), titles);

    await run(fix);
    await waitFor('the edit', () => doc.getText() !== original);
    const after = doc.getText();
    assert.ok(after.includes('        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_dropout.p if self.training else 0.0, is_causal=True)\n'), after);
    // The replaced lines survive only in the comment record that lets revert restore them.
    const code = after.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
    assert.match(after, /# membit: sdpa rewrote the \d+ lines? above/);
    for (const gone of ['att = (q @ k.transpose(-2, -1))', 'att = att.masked_fill(', 'att = F.softmax(att, dim=-1)', 'att = self.attn_dropout(att)', 'y = att @ v']) {
      assert.ok(!code.includes(gone), `still there: ${gone}`);
    }
    // The causal buffer stays registered, so checkpoints keep their keys.
    assert.ok(after.includes('self.register_buffer('));
    // The rescan drops the finding the rewrite resolved.
    await waitFor('the eager-attn diagnostic to go', () => !membitDiagnostic(doc, 'membit.eager-attn'));
    editor.revealRange(new vscode.Range(softmax - 6, 0, softmax + 4, 0), vscode.TextEditorRevealType.InCenter);
    editor.selection = new vscode.Selection(softmax - 2, 8, softmax - 2, 8);
    await screenshot('08-sdpa-applied');
    await undoTo(doc, original);
  });

  it('checkpoints the block loop from its diagnostic, adding the import once; undo restores it', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const loop = original.split('\n').findIndex((l) => l.trim() === 'for block in self.h:');
    const diag = await waitFor('the checkpoint diagnostic', () => membitDiagnostic(doc, 'membit.checkpoint', loop));
    const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
    const fix = actions.find((a) => a.title === 'Checkpoint each block (recompute activations in backward)');
    assert.ok(fix, actions.map((a) => a.title).join(' | '));
    await run(fix);
    await waitFor('the edit', () => doc.getText() !== original);
    const after = doc.getText().split('\n');
    assert.equal(after.filter((l) => l === 'import torch.utils.checkpoint').length, 1);
    const at = after.findIndex((l) => l.trim() === 'for block in self.h:');
    assert.deepEqual(after.slice(at + 1, at + 5), [
      '            if self.training and torch.is_grad_enabled():',
      '                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)',
      '            else:',
      '                x = block(x)',
    ]);
    editor.revealRange(new vscode.Range(at - 3, 0, at + 6, 0), vscode.TextEditorRevealType.InCenter);
    await screenshot('08-checkpoint-applied');
    await undoTo(doc, original);
  });

  it('offers the SDPA rewrite from the cursor inside the chain, without a diagnostic there', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const scores = original.split('\n').findIndex((l) => l.trim().startsWith('att = (q @ k.transpose(-2, -1))'));
    await waitFor('the scan', () => membitDiagnostic(doc, 'membit.eager-attn'));
    const cursor = new vscode.Range(scores, 10, scores, 10);
    const actions = await actionsAt(doc, cursor, vscode.CodeActionKind.RefactorRewrite);
    const fix = actions.find((a) => a.title === 'Use fused attention (scaled_dot_product_attention)');
    assert.ok(fix, actions.map((a) => a.title).join(' | '));
    // Nothing else applies on that line.
    assert.ok(!actions.some((a) => /Checkpoint|autocast/.test(a.title)));
    await run(fix);
    await waitFor('the edit', () => doc.getText() !== original);
    assert.ok(doc.getText().includes('scaled_dot_product_attention(q, k, v'));
    await undoTo(doc, original);
  });

  it('bf16 autocast: the quick fix where the installed torch has it, otherwise advice that says why not', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const backward = original.split('\n').findIndex((l) => l.trim() === 'loss.backward()');
    await waitFor('the no-autocast diagnostic', () => membitDiagnostic(doc, 'membit.no-autocast', backward));
    // Whether the lever is offered depends on the installed torch: let the capability probe finish first.
    const checked = await capabilitiesChecked(doc, 'membit.no-autocast', backward);
    const diag = defined(membitDiagnostic(doc, 'membit.no-autocast', backward), 'membit.no-autocast diagnostic');
    const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
    const advice = actions.find((a) => a.title === 'Show advice: bf16 autocast');
    assert.ok(advice?.command, actions.map((a) => a.title).join(' | '));
    const fix = actions.find((a) => a.title === 'Train the forward in bf16 autocast');
    console.log(`autocast lever (torch ${checked ? 'known' : 'unknown'}): ${fix ? 'offered' : `not offered: ${String(advice.command.arguments?.[1])}`}`);
    if (fix) {
      await run(fix);
      await waitFor('the edit', () => doc.getText() !== original);
      // Comment lines (the record revert reads) aside, the forward and loss are under autocast.
      const code = doc.getText().split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
      assert.ok(code.includes('        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n            _, loss = model(x, y)\n        optimizer.zero_grad(set_to_none=True)\n'), doc.getText());
      await undoTo(doc, original);
    } else {
      // The scan found the installed torch lacks what the lever needs: no edit, and the advice says so.
      const reason: unknown = advice.command.arguments?.[1];
      assert.match(String(reason), /installed torch/);
      const shown = (await run(advice)) as { text: string };
      assert.match(shown.text, /Not rewritten here: the installed torch/);
      assert.equal(doc.getText(), original);
    }
  });

  it('advice only for the fused optimizer: an explanation and a docs link, no edit', async () => {
    const editor = await openSample('gpt_tiny.py');
    const doc = editor.document;
    const original = doc.getText();
    const line = original.split('\n').findIndex((l) => l.includes('optimizer = torch.optim.AdamW('));
    const diag = await waitFor('the optimizer diagnostic', () => membitDiagnostic(doc, 'membit.optimizer', line));
    const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
    assert.ok(!actions.some((a) => a.command?.command === InternalCommands.applyLever), actions.map((a) => a.title).join(' | '));
    const advice = actions.find((a) => a.title === 'Show advice: Fused optimizer step');
    assert.ok(advice, actions.map((a) => a.title).join(' | '));
    const shown = (await run(advice)) as { text: string; docs: string; uri: string };
    assert.match(shown.text, /^# Fused optimizer step\n/);
    assert.match(shown.text, /fused=True/);
    assert.ok(shown.text.includes(`*gpt\\_tiny\\.py:${line + 1}*`), `the page names the line it is about: ${shown.text}`);
    assert.match(shown.docs, /^https:\/\/pytorch\.org\/docs\/.*AdamW/);
    // A formatted page beside the code, not a notification.
    await waitFor('the advice preview', () =>
      vscode.window.tabGroups.all.flatMap((g) => g.tabs).find((t) => t.input instanceof vscode.TabInputWebview && t.label.includes('fused-optimizer.md')),
    );
    const page = await vscode.workspace.openTextDocument(vscode.Uri.parse(shown.uri));
    assert.equal(page.getText(), shown.text);
    const notes = await vscode.commands.executeCommand<{ kind: string; text: string }[]>(InternalCommands.recentlyShown);
    assert.ok(!notes.some((n) => n.text.includes('fused=True')), 'no toast carries the advice');
    // Rendered as Markdown: a heading and a link, not the raw text.
    const h = await webview('08-advice-heading', 'count', 'h1');
    assert.equal(h.error, undefined, h.error);
    assert.equal(h.texts[0], 'Fused optimizer step');
    const link = await webview('08-advice-link', 'count', `a[href="${shown.docs}"]`);
    assert.equal(link.count, 1, link.error);
    await screenshot('08-advice-preview');
    await vscode.commands.executeCommand('workbench.action.closeEditorsInOtherGroups');
    assert.equal(doc.getText(), original);
  });

  it('a non-default scale: rewritten with scale= where the installed torch has it, else explained', async () => {
    const editor = await openSample('vit_digits.py');
    const doc = editor.document;
    const original = doc.getText();
    const softmax = original.split('\n').findIndex((l) => l.trim() === 'attn = attn.softmax(dim=-1)');
    await waitFor('the eager-attn diagnostic', () => membitDiagnostic(doc, 'membit.eager-attn', softmax));
    await capabilitiesChecked(doc, 'membit.eager-attn', softmax);
    const diag = defined(membitDiagnostic(doc, 'membit.eager-attn', softmax), 'membit.eager-attn diagnostic');
    const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
    const titles = actions.map((a) => a.title).join(' | ');
    const fix = actions.find((a) => a.title === 'Use fused attention (scaled_dot_product_attention)' && a.command);
    const advice = actions.find((a) => a.title === 'Show advice: Fused attention (scaled_dot_product_attention)');
    assert.ok(advice?.command, titles);
    console.log(`vit scale: ${fix ? 'rewritten with scale=' : `explained: ${String(advice.command.arguments?.[1])}`}`);
    if (fix) {
      await run(fix);
      await waitFor('the edit', () => doc.getText() !== original);
      assert.ok(doc.getText().includes('        x = (F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=False, scale=self.scale)).transpose(1, 2).reshape(B, N, C)\n'));
      await undoTo(doc, original);
    } else {
      assert.match(String(advice.command.arguments?.[1]), /scaled by `self\.scale`.*needs `scale=self\.scale`/);
      assert.equal(doc.getText(), original);
    }
  });

  it('a chain it cannot prove gets no edit, and its advice says why', async () => {
    const uri = vscode.Uri.file(join(workspaceDir(), 'advisor_weights.py'));
    const source = [
      'import math',
      'import torch.nn as nn',
      'import torch.nn.functional as F',
      '',
      '',
      'class Attention(nn.Module):',
      '    def forward(self, q, k, v):',
      '        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))',
      '        att = F.softmax(att, dim=-1)',
      '        y = att @ v',
      '        return y, att',
      '',
    ].join('\n');
    await vscode.workspace.fs.writeFile(uri, new TextEncoder().encode(source));
    try {
      const doc = (await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri))).document;
      const diag = await waitFor('the eager-attn diagnostic', () => membitDiagnostic(doc, 'membit.eager-attn', 8));
      const actions = await actionsAt(doc, diag.range, vscode.CodeActionKind.QuickFix);
      const titles = actions.map((a) => a.title).join(' | ');
      // The rewrite is listed disabled with the reason in the light bulb; never as a runnable edit.
      assert.ok(!actions.some((a) => a.command?.command === InternalCommands.applyLever), titles);
      const advice = actions.find((a) => a.title === 'Show advice: Fused attention (scaled_dot_product_attention)');
      assert.ok(advice?.command, titles);
      assert.match(String(advice.command.arguments?.[1]), /`att` is used again at line 11 \(`return y, att`\)/);
      const shown = (await run(advice)) as { text: string };
      assert.match(shown.text, /## Why Membit did not rewrite it here\n\n\\`att\\` is used again at line 11/);
      assert.equal(doc.getText(), source);
    } finally {
      await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
      await vscode.workspace.fs.delete(uri);
    }
  });

  it('refuses files that are not Python and says so when the pattern is gone; nothing is edited', async () => {
    const gpt = (await openSample('gpt_tiny.py')).document;
    const original = gpt.getText();
    const softmax = original.split('\n').findIndex((l) => l.trim() === 'att = F.softmax(att, dim=-1)');
    const uri = vscode.Uri.file(join(workspaceDir(), 'advisor-notes.txt'));
    await vscode.workspace.fs.writeFile(uri, new TextEncoder().encode(original));
    try {
      const txt = await vscode.workspace.openTextDocument(uri);
      assert.equal(await vscode.commands.executeCommand(InternalCommands.applyLever, uri, 'sdpa', softmax), undefined);
      const notes = await vscode.commands.executeCommand<{ kind: string; text: string }[]>(InternalCommands.recentlyShown);
      assert.equal(notes[notes.length - 1]?.kind, 'warning');
      assert.match(notes[notes.length - 1]?.text ?? '', /Python files only/);
      assert.equal(txt.getText(), original);
    } finally {
      await vscode.workspace.fs.delete(uri);
    }
    // A line with no pattern (the file changed since the action was offered): a message, no edit.
    await vscode.commands.executeCommand(InternalCommands.applyLever, gpt.uri, 'sdpa', 0);
    const notes = await vscode.commands.executeCommand<{ kind: string; text: string }[]>(InternalCommands.recentlyShown);
    assert.match(notes[notes.length - 1]?.text ?? '', /^Membit: nothing rewritten: line 1: no eager attention/);
    assert.equal(gpt.getText(), original);
  });
});
