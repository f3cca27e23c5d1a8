import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  diffEdit,
  formatBytes,
  formatHint,
  formatHover,
  type ScanResult,
  type Site,
  sanitizeCell,
  scanCells,
  shapeHintsFromReport,
  summarizeClasses,
} from '../../src/core/scan';
import { evalDim } from '../../src/core/scan/shapes';
import { fixture, scanner } from './scanSupport';
import { itemAt } from '../../src/core/arrays';
import { defined } from '../defined';

const only = (r: ScanResult, kind?: string): Site[] => r.sites.filter((s) => !kind || s.kind === kind);

test('import styles resolve: aliases, from-imports, functional modules, nn.functional', async () => {
  const s = await scanner();
  const r = s.scan(
    [
      'import torch.nn as nn2',
      'from torch import nn',
      'from torch.nn import Dropout as D',
      'import torch.nn.functional as F',
      'from torch.nn import functional',
      'x = nn2.Dropout(0.1)',
      'y = D(0.2)',
      'z = F.dropout(t, 0.3)',
      'w = functional.dropout(t, p=0.4)',
      'v = nn.functional.dropout(t, p=0.5, training=True, inplace=True)',
    ].join('\n'),
    'a.py',
  );
  assert.deepEqual(
    r.sites.map((x) => [x.range.startLine, x.kind, x.resolved]),
    [
      [5, 'dropout', 'torch.nn.Dropout'],
      [6, 'dropout', 'torch.nn.Dropout'],
      [7, 'dropout-call', 'torch.nn.functional.dropout'],
      [8, 'dropout-call', 'torch.nn.functional.dropout'],
      [9, 'dropout-call', 'torch.nn.functional.dropout'],
    ],
  );
});

test('arguments are read as written: p positional or keyword, training=, inplace=, dropout_p=', async () => {
  const s = await scanner();
  const r = s.scan(
    [
      'import torch, torch.nn as nn, torch.nn.functional as F',
      'a = nn.Dropout(cfg.p, True)',
      'b = nn.Dropout(p = 0.1, inplace=False)',
      'c = F.dropout(x, self.p, self.training)',
      'd = F.scaled_dot_product_attention(q, k, v, None, 0.1 if train else 0.0)',
      'e = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p, is_causal=True)',
      'f = torch.dropout(x, 0.2, train=False)',
    ].join('\n'),
    'a.py',
  );
  assert.deepEqual(
    r.sites.map((x) => x.args),
    [
      { p: 'cfg.p', inplace: 'True' },
      { p: '0.1', inplace: 'False' },
      { input: 'x', p: 'self.p', training: 'self.training' },
      { query: 'q', key: 'k', value: 'v', attn_mask: 'None', dropout_p: '0.1 if train else 0.0' },
      { query: 'q', key: 'k', value: 'v', dropout_p: 'self.p', is_causal: 'True' },
      { input: 'x', p: '0.2', train: 'False' },
    ],
  );
  assert.deepEqual(
    r.sites.map((x) => x.callee),
    ['nn.Dropout', 'nn.Dropout', 'F.dropout', 'F.scaled_dot_product_attention', 'F.scaled_dot_product_attention', 'torch.dropout'],
  );
});

test('arguments are read from the parsed argument nodes: a comma, `=` or bracket inside a string splits nothing', async () => {
  const s = await scanner();
  const r = s.scan(
    [
      'import torch, torch.nn as nn, torch.nn.functional as F',
      'DTYPES = {"fp32,cuda": torch.float32}',
      'class Block(nn.Module):',
      '    def __init__(self, cfg):',
      '        super().__init__()',
      '        self.drop = nn.Dropout(p=float("0,1".replace(",", ".")), inplace=False)',
      '        self.head_drop = nn.Dropout(cfg["attn,p=0.1"])',
      '',
      '    def forward(self, q, k, v, cfg):',
      '        mask = torch.full((cfg["n,ctx)"], cfg["n,ctx)"]), float("-inf"))',
      '        att = (q @ k.transpose(-2, -1)) + mask',
      '        att = F.softmax(att, dim=-1, dtype=DTYPES["fp32,cuda"])',
      '        return self.drop(att @ v)',
    ].join('\n'),
    'a.py',
    { shapes: { seqLen: 128 } },
  );
  assert.deepEqual(
    r.sites.map((x) => [x.range.startLine, x.kind, x.args]),
    [
      [5, 'dropout', { p: 'float("0,1".replace(",", "."))', inplace: 'False' }],
      [6, 'attn-dropout', { p: 'cfg["attn,p=0.1"]' }],
      [9, 'attn-mask', { arg0: '(cfg["n,ctx)"], cfg["n,ctx)"])', arg1: 'float("-inf")' }],
      [11, 'eager-attn', { input: 'att', dim: '-1', dtype: 'DTYPES["fp32,cuda"]' }],
    ],
  );
  // Two dimensions (a bracket in a string no longer hides the comma between them), the same
  // length twice: an L×L float32 mask, L from the settings.
  const mask = defined(only(r, 'attn-mask')[0], 'attn-mask site');
  assert.equal(mask.estimate.elements, 128 * 128);
  assert.equal(mask.estimate.maskBytes, 128 * 128 * 4);
});

test('a conditional width is read from its parsed arms, whatever its strings hold', async () => {
  const s = await scanner();
  const r = s.scan(
    [
      'import torch.nn as nn',
      'class Mlp(nn.Module):',
      '    def __init__(self, cfg):',
      '        super().__init__()',
      '        self.fc1 = nn.Linear(cfg["d"], cfg["ff"] * 2 if cfg["glu if gated else plain"] else cfg["ff"])',
      '        self.fc2 = nn.Linear(cfg["ff"], cfg["d"])',
    ].join('\n'),
    'm.py',
  );
  const ffn = only(r, 'ffn');
  assert.deepEqual(
    ffn.map((x) => [x.range.startLine, x.ffn?.form, x.ffn?.up?.name, x.ffn?.down?.name]),
    [[4, 'pair', 'fc1', 'fc2']],
  );
});

test('sites carry 0-based ranges in UTF-16 columns, the enclosing class and function, a code and a message', async () => {
  const s = await scanner();
  const r = s.scan('import torch.nn as nn\nclass Ünïcode(nn.Module):\n    def __init__(self):\n        self.d = nn.Dropout(0.1)  # é\n', 'u.py');
  const [site] = r.sites;
  assert.ok(site);
  assert.deepEqual(site.range, { startLine: 3, startCol: 17, endLine: 3, endCol: 32 });
  assert.equal(site.className, 'Ünïcode');
  assert.equal(site.funcName, '__init__');
  assert.equal(site.binding, 'self.d');
  assert.equal(site.code, 'membit.dropout');
  assert.equal(site.form, 'construct');
  assert.match(site.message, /1-byte-per-element mask/);
  assert.deepEqual(r.classes.map((c) => c.name), ['Ünïcode']);
});

test('estimates: settings beat literal config, config is used when settings are silent, never invented', async () => {
  const s = await scanner();
  const text = fixture('mingpt_style.py');
  const fromConfig = s.scan(text, 'm.py');
  const attn = defined(only(fromConfig, 'attn-dropout')[0], 'attn-dropout site');
  // block_size = 1024, n_head = 12 from the dataclass; no batch: per sample.
  assert.equal(attn.estimate.source, 'config');
  assert.equal(attn.estimate.elements, 12 * 1024 * 1024);
  assert.equal(attn.estimate.maskBytes, 12 * 1024 * 1024);
  assert.equal(attn.estimate.packedBytes, (12 * 1024 * 1024) / 8);
  assert.equal(attn.estimate.perSample, true);
  assert.equal(formatHint(attn), 'attn dropout mask 12 MiB/sample → 1.5 MiB/sample packed @ H=12 L=1024');

  const withSettings = s.scan(text, 'm.py', { shapes: { batch: 32, seqLen: 512 } });
  const drop = defined(only(withSettings, 'dropout')[0], 'dropout site');
  assert.equal(drop.estimate.source, 'settings');
  assert.equal(drop.estimate.elements, 32 * 512 * 768);
  assert.equal(drop.estimate.perSample, undefined);
  assert.equal(formatHint(drop), 'dropout mask 12 MiB → 1.5 MiB packed @ B=32 L=512');

  const unknown = s.scan('import torch.nn as nn\nd = nn.Dropout(0.1)\n', 'n.py');
  const u = defined(unknown.sites[0], 'site');
  assert.equal(u.estimate.source, 'unknown');
  assert.equal(u.estimate.maskBytes, undefined);
  assert.match(u.estimate.note ?? '', /shape unknown/);
  assert.equal(formatHint(u), 'dropout mask: shape unknown');
});

test('estimates: the measured report wins, on the site line or the lines that call the module', async () => {
  const s = await scanner();
  const text = fixture('mingpt_style.py');
  const lineOf = (needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;
  const report = {
    sites: [{ kind: 'dropout', file: 'pkg/m.py', line: lineOf('self.resid_dropout = nn.Dropout'), elements: 8_000_000, mask_bytes: 8_000_000 }],
    modules: [],
    lines: [{ file: 'pkg/m.py', line: lineOf('att = self.attn_dropout(att)'), mask_bytes: 50_331_648 }],
  };
  const hints = shapeHintsFromReport(report, '/work/ws/pkg/m.py');
  const r = s.scan(text, '/work/ws/pkg/m.py', { hints, shapes: { batch: 4, seqLen: 64 } });
  const resid = defined(r.sites.find((x) => x.binding === 'self.resid_dropout'), 'self.resid_dropout site');
  assert.equal(resid.estimate.source, 'report');
  assert.equal(resid.estimate.maskBytes, 8_000_000);
  assert.equal(resid.estimate.packedBytes, 1_000_000);
  assert.match(formatHint(resid), /\(measured\)$/);
  const attn = defined(r.sites.find((x) => x.binding === 'self.attn_dropout'), 'self.attn_dropout site');
  assert.equal(attn.estimate.source, 'report');
  assert.equal(attn.estimate.maskBytes, 50_331_648);
  // A report for another file changes nothing.
  const other = shapeHintsFromReport(report, 'other.py');
  assert.equal(other.byLine.size, 0);
});

test('p=0 as written keeps no mask; fused attention keeps none either', async () => {
  const s = await scanner();
  const r = s.scan('import torch.nn as nn, torch.nn.functional as F\na = nn.Dropout(0.0)\nb = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)\n', 'z.py', {
    shapes: { batch: 2, seqLen: 8, hidden: 16, heads: 2 },
  });
  const [a, b] = r.sites as [Site, Site];
  assert.equal(a.estimate.maskBytes, 0);
  assert.equal(formatHint(a), 'dropout mask: none (p=0)');
  assert.equal(b.kind, 'fused-attn-dropout');
  assert.equal(b.estimate.maskBytes, 0);
  assert.equal(b.estimate.elements, 2 * 2 * 8 * 8);
  assert.match(b.remedy ?? '', /Already optimal/);
});

test('attention masks: O(L²) size with the dtype as written, and the is_causal remedy', async () => {
  const s = await scanner();
  const r = s.scan(fixture('hf_gpt2_style.py'), 'g.py', { shapes: { seqLen: 1024 } });
  const buf = defined(only(r, 'attn-mask')[0], 'attn-mask site');
  // torch.ones((max_positions, max_positions), dtype=torch.bool): L = max_position_embeddings is unknown in
  // this file, so the setting's L is used for the square: 1024² bool = 1 MiB.
  assert.equal(buf.estimate.elements, 1024 * 1024);
  assert.equal(buf.estimate.maskBytes, 1024 * 1024);
  assert.match(buf.remedy ?? '', /is_causal=True/);
  const nano = s.scan(fixture('nanogpt_style.py'), 'n.py');
  const tril = defined(only(nano, 'attn-mask')[0], 'attn-mask site');
  // block_size² float32 = 4 MiB, and the file already has an is_causal path.
  assert.equal(tril.estimate.maskBytes, 1024 * 1024 * 4);
  assert.match(tril.remedy ?? '', /already does so on another path/);
});

test('FFN sites name their members for the rewriter: pair, gated, fused, split, module', async () => {
  const s = await scanner();
  const llama = s.scan(fixture('hf_llama_style.py'), 'l.py');
  const [gated, fused] = only(llama, 'ffn') as [Site, Site];
  assert.equal(gated.ffn?.form, 'gated');
  assert.deepEqual([gated.ffn.gate?.name, gated.ffn.up?.name, gated.ffn.down?.name], ['gate_proj', 'up_proj', 'down_proj']);
  assert.equal(gated.ffn.down?.line, (gated.ffn.gate?.line ?? 0) + 2);
  assert.equal(fused.ffn?.form, 'fused-gated');
  const bert = defined(only(s.scan(fixture('hf_bert_style.py'), 'b.py'), 'ffn')[0], 'ffn site');
  assert.equal(bert.ffn?.form, 'split');
  assert.deepEqual([bert.ffn.up?.className, bert.ffn.down?.className], ['ToyBertIntermediate', 'ToyBertOutput']);
  assert.equal(bert.ffn.inWidth, 768);
  assert.equal(bert.ffn.hiddenWidth, 3072);
  assert.equal(bert.estimate.elements, 2 * 768 * 3072);
  assert.match(formatHint(bert), /^FFN 768→3072→768 · 4\.72M weights · 2:4 candidate$/);
  const research = only(s.scan(fixture('research_style.py'), 'r.py'), 'ffn');
  assert.deepEqual(
    research.map((x) => [x.ffn?.up?.name, x.ffn?.down?.name]),
    [
      ['w_1', 'w_2'],
      ['net.1', 'net.4'],
    ],
  );
  const timm = only(s.scan(fixture('timm_style.py'), 't.py'), 'ffn');
  assert.deepEqual(
    timm.map((x) => [x.ffn?.form, x.callee, x.args['hidden_features']]),
    [
      ['module', 'mlp_layer', 'int(dim * mlp_ratio)'],
      ['module', 'Mlp', 'int(dim * mlp_ratio)'],
    ],
  );
});

test('an empty file, a comment-only file and whitespace give no sites and no error', async () => {
  const s = await scanner();
  for (const text of ['', '# nothing\n', '\n\n   \n', '"""nn.Dropout(0.1)"""']) {
    const r = s.scan(text, 'e.py');
    assert.deepEqual(r.sites, []);
    assert.equal(r.error, undefined);
  }
});

test('files over the size limit are skipped with a message, not scanned', async () => {
  const s = await scanner();
  const text = 'import torch.nn as nn\nd = nn.Dropout(0.1)\n'.repeat(100);
  const r = s.scan(text, 'big.py', { maxBytes: 1000 });
  assert.equal(r.skipped?.reason, 'too-large');
  assert.equal(r.skipped.bytes, Buffer.byteLength(text));
  assert.match(r.skipped.message, /not scanned.*over the 1000 B limit/);
  assert.deepEqual(r.sites, []);
  const doc = s.open('big.py', text, { maxBytes: 1000 });
  assert.equal(doc.result.skipped?.reason, 'too-large');
  assert.equal(doc.update(text, { maxBytes: 1 << 20 }).sites.length, 100);
  doc.dispose();
});

test('syntax errors mid-file: sites after them are still found', async () => {
  const s = await scanner();
  const r = s.scan(fixture('broken_style.py'), 'x.py');
  assert.equal(r.hasSyntaxErrors, true);
  assert.ok(r.sites.some((x) => x.className === 'Tail' && x.kind === 'dropout'));
});

test('a 50k-line file scans without error and finds every repeated site', async () => {
  const s = await scanner();
  const block = fixture('nanogpt_style.py');
  const reps = Math.ceil(50_000 / block.split('\n').length);
  const text = Array.from({ length: reps }, () => block).join('\n');
  const one = s.scan(block, 'one.py').sites.length;
  const r = s.scan(text, 'big.py', { maxBytes: 64 << 20 });
  assert.equal(r.error, undefined);
  assert.ok(r.stats.lines >= 50_000);
  assert.equal(r.sites.length, one * reps);
});

test('incremental rescans equal a fresh scan after many edits, and reuse unchanged statements', async () => {
  const s = await scanner();
  let text = fixture('hf_llama_style.py') + fixture('research_style.py');
  const doc = s.open('inc.py', text);
  const key = (r: ScanResult) => JSON.stringify(r.sites.map((x) => [x.kind, x.range, x.args, x.ffn?.form, x.className]));
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const snippets = ['\n', 'x', '    self.extra = nn.Dropout(0.3)\n', '(', ')', '#', '"', 'nn.', '\n\nclass Z(nn.Module):\n    pass\n', ''];
  for (let i = 0; i < 60; i++) {
    const at = rnd(text.length + 1);
    const del = rnd(4) === 0 ? rnd(40) : 0;
    text = text.slice(0, at) + itemAt(snippets, rnd(snippets.length)) + text.slice(at + del);
    const inc = doc.update(text);
    const fresh = s.scan(text, 'inc.py');
    assert.equal(key(inc), key(fresh), `edit ${i} at ${at}`);
  }
  doc.dispose();
  // A one-line edit inside one method of a clean file re-reads only that statement.
  const clean = fixture('research_style.py');
  const doc2 = s.open('clean.py', clean);
  const lines = clean.split('\n');
  lines.splice(lines.findIndex((l) => l.includes('self.w_2 = nn.Linear')), 0, '        self.tmp = 1');
  const r = doc2.update(lines.join('\n'));
  assert.equal(r.stats.reusedChunks, r.stats.chunks - 1);
  assert.equal(key(r), key(s.scan(lines.join('\n'), 'clean.py')));
  doc2.dispose();
});

test('diffEdit gives the single edit between two texts, with rows and columns', () => {
  const e = diffEdit('ab\ncd\nef', 'ab\ncXd\nef');
  assert.deepEqual(e, {
    startIndex: 4,
    oldEndIndex: 4,
    newEndIndex: 5,
    startPosition: { row: 1, column: 1 },
    oldEndPosition: { row: 1, column: 1 },
    newEndPosition: { row: 1, column: 2 },
  });
  assert.equal(diffEdit('same', 'same'), null);
  const long = 'x'.repeat(5000);
  const d = diffEdit(`${long}\nA\n${long}`, `${long}\nBB\nC\n${long}`);
  assert.deepEqual([d?.startIndex, d?.oldEndIndex, d?.newEndIndex, d?.newEndPosition.row], [5001, 5002, 5005, 2]);
});

test('notebooks: cells scanned as one module, sites mapped back to cell and line; magics hidden', async () => {
  const s = await scanner();
  assert.equal(sanitizeCell('%matplotlib inline\nx = 1\n!ls\nfiles = !ls\nmodel?'), '#matplotlib inline\nx = 1\n#ls\n#iles = !ls\n#odel?');
  assert.equal(sanitizeCell('%%bash\nnn.Dropout(0.1)'), '#%bash\n#n.Dropout(0.1)');
  const r = scanCells(
    s,
    [
      { index: 0, text: 'import torch.nn as nn\nseq_len = 128\nn_embd = 64' },
      { index: 2, text: '%time y = 1\nclass M(nn.Module):\n    def __init__(self):\n        self.d = nn.Dropout(0.1)' },
    ],
    'nb.ipynb',
    { shapes: { batch: 1 } },
  );
  const [site] = r.sites;
  assert.equal(site?.cell, 2);
  assert.deepEqual(site.range, { startLine: 3, startCol: 17, endLine: 3, endCol: 32 });
  assert.equal(site.estimate.elements, 128 * 64);
  assert.deepEqual(r.classes.map((c) => [c.name, c.cell, c.range.startLine]), [['M', 2, 1]]);
});

test('format: bytes, hover markdown and per-class summaries for CodeLens', async () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(96 * 1024 * 1024), '96 MiB');
  assert.equal(formatBytes(3.25 * 1024 ** 3), '3.25 GiB');
  const s = await scanner();
  const r = s.scan(fixture('mingpt_style.py'), 'n.py', { shapes: { batch: 8 } });
  const attn = defined(only(r, 'attn-dropout')[0], 'attn-dropout site');
  const hover = formatHover(attn);
  assert.match(hover, /^\*\*Membit · attention dropout\*\* `membit.attn-dropout`/);
  assert.match(hover, /\| mask \| 96 MiB \| 12 MiB \| 84 MiB \|/);
  assert.match(hover, /Convert to Packed Dropout/);
  const lenses = summarizeClasses(r);
  assert.deepEqual(
    lenses.map((l) => [l.className, l.range.startLine, l.sites]),
    [
      ['CausalSelfAttention', 27, 5],
      ['MLP', 61, 2],
      // The embedding dropout and the advisor's `for block in self.transformer.h` (no checkpointing in the file).
      ['GPT', 102, 2],
    ],
  );
  assert.match(lenses[0]?.title ?? '', /^Membit: 1 dropout · 1 attn dropout · 2 attn mask · 1 eager attn — masks 107 MiB, dropout 102 MiB → 12.8 MiB packed; fused attention saves ~10.1 GiB$/);
  const ffnHover = formatHover(defined(only(r, 'ffn')[0], 'ffn site'));
  assert.match(ffnHover, /\| up \| `c_fc` \| config.n_embd → 4 \* config.n_embd \| 65 \|/);
});

test('evalDim evaluates widths as written with the file literals, and refuses unknown names', () => {
  const v = new Map([
    ['n_embd', 768],
    ['mlp_ratio', 4],
  ]);
  assert.equal(evalDim('4 * config.n_embd', v), 3072);
  assert.equal(evalDim('int(n_embd * mlp_ratio)', v), 3072);
  assert.equal(evalDim('(n_embd + 255) // 256 * 256', v), 768);
  assert.equal(evalDim('hidden', v), undefined);
  assert.equal(evalDim('f(n_embd)', v), undefined);
  assert.equal(evalDim('2 ** 10', v), 1024);
});

test('estimates: a dropout whose p is 0 in the config defaults, or used only on the fallback branch, keeps no mask', async () => {
  const s = await scanner();
  const text = fixture('nanogpt_style.py');
  const zero = s.scan(text, 'n.py');
  for (const site of [...only(zero, 'attn-dropout'), ...only(zero, 'dropout')]) {
    assert.equal(site.estimate.maskBytes, 0, `line ${site.range.startLine + 1}`);
    assert.match(site.estimate.note ?? '', /config defaults/);
    assert.doesNotMatch(site.message, /largest|≈/);
  }
  // With p = 0.1, the attention dropout still runs only where SDPA is missing (`else` of `if self.flash:`).
  const live = s.scan(text.replace('dropout: float = 0.0', 'dropout: float = 0.1'), 'n.py');
  const attn = defined(only(live, 'attn-dropout')[0], 'attn-dropout site');
  assert.equal(attn.estimate.maskBytes, 0);
  assert.match(attn.estimate.note ?? '', /only on the fallback path/);
  assert.match(attn.message, /only on the fallback path/);
  assert.doesNotMatch(attn.message, /largest/);
  // The residual dropout runs on every path and keeps its mask.
  const resid = defined(live.sites.find((x) => x.binding === 'self.resid_dropout'), 'self.resid_dropout site');
  assert.ok((resid.estimate.maskBytes ?? 0) > 0);
  // `if not self.flash:` guards the fallback too; a condition about something else does not.
  const guarded = s.scan(
    'import torch.nn as nn\nimport torch.nn.functional as F\nclass A(nn.Module):\n    def f(self, a):\n        if not self.flash:\n            a = F.dropout(F.softmax(a, dim=-1), 0.1, self.training)\n        if self.training:\n            a = F.dropout(a, 0.1, True)\n        return a\n',
    'g.py',
  );
  const [first, second] = guarded.sites.filter((x) => x.kind === 'attn-dropout' || x.kind === 'dropout-call');
  assert.match(first?.estimate.note ?? '', /fallback/);
  assert.doesNotMatch(second?.estimate.note ?? '', /fallback/);
});

test('calls through a local variable: the name it was last bound to gives the kind; rebinding, other names and other functions do not', async () => {
  const s = await scanner();
  const r = s.scan(
    [
      'import torch.nn.functional as F',
      'from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask',
      'from flash_attn import flash_attn_func',
      'def eager(q, k, v, dropout_p=0.0):',
      '    return q',
      'class M:',
      '    def forward(self, x, cfg):',
      '        mask_fn = create_causal_mask if cfg.sliding_window is None else create_sliding_window_causal_mask',
      '        m = mask_fn(config=cfg, input_embeds=x)',
      '        drop = F.dropout if self.training else (lambda t, p: t)',
      '        x = drop(x, 0.1)',
      '        attn = F.scaled_dot_product_attention if cfg.fused else eager',
      '        y = attn(x, x, x, dropout_p=0.1)',
      '        attn = flash_attn_func if cfg.flash else F.scaled_dot_product_attention',
      '        y = attn(x, x, x, dropout_p=0.1)',
      '        mask_fn = eager',
      '        n = mask_fn(x, x, x)',
      '        with open(cfg.path) as drop:',
      '            pass',
      '        x = drop(x, 0.1)',
      '        return m, n, x, y',
      '    def other(self, x, mask_fn):',
      '        return mask_fn(x)',
      '    def later(self, x):',
      '        for _ in range(2):',
      '            x = g(x)',
      '            g = create_causal_mask',
      '        return x',
    ].join('\n'),
    'a.py',
  );
  assert.deepEqual(
    r.sites.map((x) => [x.range.startLine, x.kind, x.callee, x.aliasOf, x.resolved]),
    [
      [8, 'attn-mask', 'mask_fn', 'create_causal_mask', 'transformers.masking_utils.create_causal_mask'],
      [10, 'dropout-call', 'drop', 'F.dropout', 'torch.nn.functional.dropout'],
      // `sdpa if c else eager` is not "fused on every path": no fused-attention site.
      [14, 'fused-attn-dropout', 'attn', 'flash_attn_func', 'flash_attn.flash_attn_func'],
    ],
  );
  const drop = defined(r.sites[1], 'second site');
  assert.deepEqual(drop.args, { input: 'x', p: '0.1' });
  assert.match(formatHover(drop), /`drop\(.*\)`, through a local variable bound to `F\.dropout` in `M\.forward`/);
});
