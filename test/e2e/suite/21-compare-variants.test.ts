import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { Commands, InternalCommands } from '../../../src/commands';
import type { Report } from '../../../src/core/report/types';
import { variantItems } from '../../../src/vscode/run/variantPicker';
import type { RenderedSummary } from '../../../media/report/messages';
import { openSample, screenshot, waitFor, webview, workspaceDir } from './util';

describe('Profile and Compare Variants with the advisor levers', function () {
  this.timeout(300_000);

  it('offers the levers the scanner found, preselected, beside the conversions', async () => {
    const editor = await openSample('gpt_tiny.py');
    const uri = editor.document.uri;
    await waitFor('the advisor findings on the GPT sample', () =>
      vscode.languages.getDiagnostics(uri).some((d) => d.source === 'Membit' && d.code === 'membit.eager-attn'),
      60_000,
    );
    const items = variantItems(uri);
    const variants = items.filter((i) => i.variant).map((i) => i.variant);
    assert.deepEqual(variants, ['sdpa', 'checkpoint', 'bf16', 'sdpa+checkpoint+bf16', 'packed', 'recompute', 'sparse24', 'packed+sparse24', 'compile', 'packed+compile']);
    const sdpa = items.find((i) => i.variant === 'sdpa');
    assert.equal(sdpa?.picked, true);
    assert.match(sdpa.description ?? '', /found in this file/);
    // The sample has dropout sites, so packed dropout is offered preselected too; recompute is not.
    assert.equal(items.find((i) => i.variant === 'packed')?.picked, true);
    assert.equal(items.find((i) => i.variant === 'recompute')?.picked, false);
    // Eager against compiled is offered, never preselected: it compiles for minutes on a CPU.
    assert.equal(items.find((i) => i.variant === 'compile')?.picked, false);
  });

  it('runs baseline, each lever and all combined, then compares them with how each was applied', async () => {
    const ws = workspaceDir();
    const reports = await vscode.commands.executeCommand<vscode.Uri[] | undefined>(Commands.compareVariants, {
      script: join(ws, 'gpt_tiny.py'),
      args: ['--steps', '20', '--batch-size', '2', '--seq-len', '64', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '200000', '--device', 'cpu'],
      steps: 2,
      warmup: 1,
      variants: ['baseline', 'sdpa', 'checkpoint', 'bf16+checkpoint+sdpa'],
    });
    assert.equal(reports?.length, 4, 'one report per variant');
    const docs = reports.map((u) => JSON.parse(readFileSync(u.fsPath, 'utf8')) as Report);
    assert.deepEqual(docs.map((d) => d.run.variant), ['baseline', 'sdpa', 'checkpoint', 'sdpa+checkpoint+bf16']);
    assert.deepEqual(docs.map((d) => d.run.status), ['ok', 'ok', 'ok', 'ok']);
    // sdpa on the sample's own eager attention ran the advisor's rewrite; the file is unchanged.
    assert.match(docs[1]?.run.levers?.[0]?.how ?? '', /^eager attention rewritten to scaled_dot_product_attention in gpt_tiny\.py/);
    assert.match(readFileSync(join(ws, 'gpt_tiny.py'), 'utf8'), /att = F\.softmax\(att, dim=-1\)/);
    assert.deepEqual(docs[3]?.run.levers?.map((l) => l.lever), ['sdpa', 'checkpoint', 'bf16']);
    const rendered = await waitFor('the comparison of four runs', async () => {
      const r = await vscode.commands.executeCommand<RenderedSummary | undefined>(InternalCommands.reportViewRendered);
      return r?.tables['comparison-table'] === 4 ? r : undefined;
    }, 60_000);
    assert.ok(rendered);
    const how = await webview('21-comparison-levers', 'count', '#comparison-levers li');
    // sdpa 1 + checkpoint 1 + combined 3 levers, plus the rewritten-source notes of the two sdpa runs.
    assert.equal(how.count, 7, how.texts.join(' | '));
    assert.ok(how.texts.some((t) => t.includes('— checkpoint: torch.utils.checkpoint (use_reentrant=False) on h (2 Block blocks)')), how.texts.join(' | '));
    assert.ok(how.texts.some((t) => /ran rewritten source: line figures approximate in gpt_tiny\.py lines \d+–\d+/.test(t)), how.texts.join(' | '));
    const rows = await webview('21-comparison-rows', 'count', '#comparison-table tbody tr');
    // Checkpointing keeps far less for backward: its Δpeak is negative.
    assert.match(rows.texts[2] ?? '', /checkpoint\s+ok\s+[\d.]+ (?:[KMG]i)?B\s+−[\d.]+%/);
    await screenshot('21-compare-variants');
  });
});
