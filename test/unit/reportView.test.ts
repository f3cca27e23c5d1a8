import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { groupLabel, layerChart, peakSegments } from '../../src/core/report/layers';
import type { LeverMeasurement } from '../../src/core/report/leverDeltas';
import { rankLevers } from '../../src/core/report/levers';
import { parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import { siteStates } from '../../src/core/report/siteState';
import { buildView } from '../../src/core/report/view';
import { applyEdits, convertAll, convertedLines } from '../../src/core/rewrite';
import { reportFixture } from './reportFixtures';
import { scanner } from './scanSupport';

function fixture(name: string) {
  const parsed = parseReport(readFileSync(reportFixture(name), 'utf8'), REPORT_SCHEMA, name);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  return parsed.report;
}

test('layers: identical layers are one bar, the root has a label, empty containers are left out', () => {
  const report = fixture('gpt_tiny_cpu_baseline.json');
  const chart = buildView(report, 'baseline').layers;
  const layers = report.modules.filter((m) => /^h\.\d+$/.test(m.path)).length;
  assert.ok(layers >= 2, 'the fixture model has several blocks');
  const drop = chart.groups.find((g) => g.path === 'h.*.attn.attn_dropout');
  assert.ok(drop, chart.groups.map(groupLabel).join('\n'));
  assert.equal(drop.count, layers);
  const each = report.modules.filter((m) => /^h\.\d+\.attn\.attn_dropout$/.test(m.path));
  assert.equal(drop.masks, each.reduce((a, m) => a + m.mask_bytes, 0), 'the group sums its layers');
  assert.match(groupLabel(drop), new RegExp(`^h\\.\\*\\.attn\\.attn_dropout ×${layers} \\(Dropout\\)$`));
  assert.ok(chart.groups.some((g) => g.path === '(model)'), 'the root module is labelled');
  assert.ok(!chart.groups.some((g) => g.path === 'h' || g.path === 'h.*'), 'a ModuleList or a block holding nothing itself is no bar');
  assert.ok(chart.groups.every((g) => g.total > 0));
  for (let i = 1; i < chart.groups.length; i++) assert.ok((chart.groups[i - 1]?.total ?? 0) >= (chart.groups[i]?.total ?? 0), 'largest first');
  for (const g of chart.groups) if (g.path.startsWith('h.*.')) assert.equal(g.count, layers, `${groupLabel(g)}: one bar for the layer in every block`);
  assert.equal(new Set(chart.groups.map((g) => `${g.path} ${g.type}`)).size, chart.groups.length, 'no layer drawn twice');
});

test('layers: only the kinds of memory held at the peak are drawn', () => {
  const report = fixture('gpt_tiny_cpu_baseline.json');
  assert.equal(report.summary.grads_at_peak, 0, 'this run peaks before backward made gradients');
  const segs = peakSegments(report.summary);
  assert.ok(!segs.includes('grads'), segs.join());
  assert.ok(segs.includes('params') && segs.includes('activations') && segs.includes('masks'));
  const chart = layerChart(report.modules.map((m) => ({ path: m.path, type: m.type, params: m.params, grads: m.grads, activations: m.saved_bytes - m.mask_bytes, masks: m.mask_bytes })), report.summary);
  const withGrads = chart.groups.find((g) => g.grads > 0);
  assert.ok(withGrads, 'layers own gradients over the step');
  assert.equal(withGrads.total, withGrads.params + withGrads.activations + withGrads.masks, 'but the bar does not count them');
  assert.deepEqual(peakSegments({ ...report.summary, grads_at_peak: 10 }).includes('grads'), true);
  const none = { ...report.summary, params_at_peak: 0, grads_at_peak: 0, activations_at_peak: 0, masks_at_peak: 0 };
  assert.deepEqual(peakSegments(none), ['params', 'grads', 'activations', 'masks'], 'no category named: draw what there is');
});

test('layers: at most `max` bars, the rest counted', () => {
  const mods = Array.from({ length: 50 }, (_, i) => ({ path: `m${i}`, type: 'Linear', params: 100 + i, grads: 0, activations: 0, masks: 0 }));
  const c = layerChart(mods, { params_at_peak: 1, grads_at_peak: 0, activations_at_peak: 0, masks_at_peak: 0 } as never, 30);
  assert.equal(c.groups.length, 30);
  assert.equal(c.omitted, 20);
  assert.equal(c.groups[0]?.path, 'm49');
});

const m = (variant: string, rel: number, base = 1000): LeverMeasurement => ({ variant, rel, savedBytes: -rel * base, run: `${variant} · local 10:00:00` });

test('levers: measured and estimated levers on one list, largest saving first', () => {
  const rows = rankLevers({
    peak: 1000,
    measured: new Map([
      ['checkpoint', m('checkpoint', -0.8)],
      ['sdpa', m('sdpa', -0.001)],
    ]),
    estimates: [
      { lever: 'sdpa', savingBytes: 240, file: 'gpt.py', line: 40 },
      { lever: 'autocast', savingBytes: 300, file: 'gpt.py', line: 90 },
      { lever: 'autocast', savingBytes: 70, file: 'gpt.py', line: 95 },
    ],
    packSaving: 50,
    scanned: 'gpt.py',
  });
  assert.deepEqual(rows.map((r) => r.lever), ['checkpoint', 'bf16', 'packed', 'sdpa']);
  const [ckpt, bf16, packed, sdpa] = rows;
  assert.equal(ckpt?.savedBytes, 800);
  assert.equal(ckpt.basis, 'measured, run checkpoint · local 10:00:00');
  assert.equal(bf16?.savedBytes, 370, 'estimates of one lever add up over its sites');
  assert.equal(bf16.note, '2 sites');
  assert.equal(bf16.basis, 'estimate (scan of gpt.py)');
  assert.equal(packed?.basis, "this run's mask sizes");
  assert.equal(sdpa?.savedBytes, 1);
  assert.match(sdpa.note ?? '', /no saving/);
  assert.match(sdpa.note ?? '', /contradicts the estimate/, 'a measurement that found no saving contradicts a promised one');
  assert.deepEqual(sdpa.where, { file: 'gpt.py', line: 40 });
});

test('levers: a lever that cost memory sorts last; a measured packing replaces the mask-size figure', () => {
  const rows = rankLevers({ peak: 1000, measured: new Map([['bf16', m('bf16', 0.05)], ['packed', m('packed', -0.02)]]), estimates: [], packSaving: 50 });
  assert.deepEqual(rows.map((r) => [r.lever, r.savedBytes]), [['packed', 20], ['bf16', -50]]);
  assert.equal(rankLevers({ peak: 1000, measured: new Map(), estimates: [], packSaving: null }).length, 0);
});

test('sites: a converted site stops offering Convert; lines follow the mapping; deleted lines are null', async () => {
  const before = 'import torch.nn as nn\n\nclass A(nn.Module):\n    def __init__(self):\n        self.drop = nn.Dropout(0.1)\n        self.other = nn.Dropout(0.1)\n';
  const sites = (await scanner()).scan(before, 'a.py').sites.filter((s) => s.range.startLine === 4);
  const conv = convertAll(before, sites, { dropout: 'packed' });
  assert.equal(conv.converted.length, 1, JSON.stringify(conv));
  const after = applyEdits(before, conv.edits);
  const lines = convertedLines(after);
  const now = after.split('\n').findIndex((l) => l.includes('self.drop =')) + 1;
  assert.ok(lines.has(now), `line ${now} calls the replacement: ${[...lines].join()}`);
  assert.ok(!lines.has(now + 1), 'the untouched dropout is not converted');
  assert.equal(convertedLines('x = "membit.nn.PackedDropout(0.1)"  # membit.nn.PackedDropout(0.1)\n').size, 0, 'strings and comments are no conversion');
  const shift = now - 5;
  const states = siteStates(
    [
      { file: 'a.py', line: 20, builtAt: 5 },
      { file: 'a.py', line: 21, builtAt: 6 },
      { file: 'a.py', line: 30 },
      { file: 'b.py', line: 7 },
    ],
    (f) => (f === 'a.py' ? { current: (l) => (l === 30 ? undefined : l + shift), converted: lines, edited: true } : undefined),
  );
  assert.deepEqual(states, [
    { line: 20 + shift, built: now, converted: true, edited: true },
    { line: 21 + shift, built: now + 1, converted: false, edited: true },
    { line: null, built: null, converted: false, edited: true },
    { line: 7, built: null, converted: false, edited: false },
  ]);
});
