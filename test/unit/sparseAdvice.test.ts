import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { loadAdviceTables } from '../../src/core/advice/load';
import { adviseSparse24, parseAdviceTable, type SparseAdviceTable } from '../../src/core/advice/sparse24';
import { parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import { buildView } from '../../src/core/report/view';
import { formatHint, formatHover } from '../../src/core/scan';
import { repoRoot, scanner } from './scanSupport';
import { reportFixture } from './reportFixtures';

// The table measured on an H200 and shipped with the package: the tests read their expectations off it.
const KERNELS = resolve(__dirname, '..', '..', '..', 'kernels');
const loaded = loadAdviceTables(KERNELS);
const h200 = loaded.tables.find((t) => t.device.name === 'NVIDIA H200');

function entry(t: SparseAdviceTable, d: number, h: number, gated: boolean, tokens: number) {
  const e = t.entries.find((x) => x.d_model === d && x.d_ff === h && x.gated === gated && x.tokens === tokens);
  assert.ok(e, `no entry ${d}x${h} gated=${gated} at ${tokens}`);
  return e;
}

test('advice tables: the shipped H200 table loads and validates', () => {
  assert.deepEqual(loaded.errors, []);
  assert.ok(h200, `tables: ${loaded.tables.map((t) => t.device.name).join(', ')}`);
  assert.ok(h200.entries.length >= 20);
});

test('advice: a measured shape and token count reads its own speedup and says what it means', () => {
  assert.ok(h200);
  const e = entry(h200, 768, 3072, false, 16384);
  const a = adviseSparse24([h200], { dModel: 768, dFF: 3072, tokens: 16384, gpu: 'NVIDIA H200' });
  assert.ok(a);
  assert.equal(a.speedup, e.speedup);
  assert.equal(a.otherGpu, false);
  const want = e.speedup >= 1.1 ? 'faster' : e.speedup >= 0.95 ? 'no-gain' : 'slower';
  assert.equal(a.verdict, want);
  assert.ok(a.text.startsWith(`2:4 here: ${e.speedup.toFixed(2)}x`), a.text);
  if (want === 'slower') assert.match(a.text, /not worth it/);
  assert.match(a.basis, /768→3072 at 16k tokens\/step, on NVIDIA H200/);
});

test('advice: between two measured token counts the speedup is interpolated in log(tokens)', () => {
  assert.ok(h200);
  const lo = entry(h200, 4096, 16384, false, 16384).speedup;
  const hi = entry(h200, 4096, 16384, false, 32768).speedup;
  const a = adviseSparse24([h200], { dModel: 4096, dFF: 16384, tokens: 24576 });
  assert.ok(a);
  const t = Math.log2(24576 / 16384);
  assert.ok(Math.abs(a.speedup - (lo + t * (hi - lo))) < 1e-12);
  // Beyond the measured range the nearest end is used, and the basis says so.
  const big = adviseSparse24([h200], { dModel: 4096, dFF: 16384, tokens: 1 << 20 });
  assert.equal(big?.speedup, hi);
  assert.match(big.basis, /measured 4k–32k/);
});

test('advice: an unmeasured width uses the nearest measured FFN, gated with gated', () => {
  assert.ok(h200);
  const a = adviseSparse24([h200], { dModel: 4000, dFF: 16000, tokens: 32768 });
  assert.deepEqual(a && [a.nearest.dModel, a.nearest.dFF, a.nearest.gated], [4096, 16384, false]);
  assert.match(a?.basis ?? '', /nearest measured FFN 4096→16384/);
  const g = adviseSparse24([h200], { dModel: 4096, dFF: 11008, gated: true, tokens: 32768 });
  assert.equal(g?.speedup, entry(h200, 4096, 11008, true, 32768).speedup);
});

test('advice: without a token count the range over measured counts is given', () => {
  assert.ok(h200);
  const a = adviseSparse24([h200], { dModel: 1024, dFF: 4096 });
  const speeds = h200.entries.filter((e) => e.d_model === 1024 && e.d_ff === 4096 && !e.gated).map((e) => e.speedup);
  assert.deepEqual(a?.range, [Math.min(...speeds), Math.max(...speeds)]);
  assert.match(a.text, /^2:4 here: \d\.\d\d–\d\.\d\dx/);
  assert.match(a.basis, /batch × length unknown/);
});

test('advice: another GPU gets the shipped table, marked as measured elsewhere', () => {
  assert.ok(h200);
  const a = adviseSparse24([h200], { dModel: 1024, dFF: 4096, tokens: 8192, gpu: 'NVIDIA A100-SXM4-80GB' });
  assert.equal(a?.otherGpu, true);
  assert.match(a.basis, /NVIDIA H200 \(no table for NVIDIA A100-SXM4-80GB\)/);
});

test('advice: verdicts follow the thresholds; a fast shape says so', () => {
  const t: SparseAdviceTable = {
    schema: 'membit.sparse-advice/1', device: { name: 'Test GPU' }, torch: 'x', date: '2026-01-01', method: 'synthetic',
    entries: [
      { tokens: 8192, d_model: 8192, d_ff: 32768, gated: false, dtype: 'bfloat16', dense_ms: 14, sparse_ms: 10, speedup: 1.4 },
      { tokens: 8192, d_model: 1024, d_ff: 4096, gated: false, dtype: 'bfloat16', dense_ms: 1, sparse_ms: 1, speedup: 1.0 },
    ],
  };
  assert.equal(adviseSparse24([t], { dModel: 8192, dFF: 32768, tokens: 8192 })?.text, '2:4 here: 1.40x faster');
  assert.equal(adviseSparse24([t], { dModel: 1024, dFF: 4096, tokens: 8192 })?.text, '2:4 here: 1.00x — no real gain');
  assert.equal(adviseSparse24([], { dModel: 1024, dFF: 4096 }), undefined);
  assert.equal(adviseSparse24([t], { dModel: 0, dFF: 4096 }), undefined);
});

test('advice tables: a malformed file is reported and the others still load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-advice-'));
  const adv = join(dir, 'membit', 'sparse', 'advice');
  mkdirSync(adv, { recursive: true });
  writeFileSync(join(adv, 'a.json'), '{ not json');
  writeFileSync(join(adv, 'b.json'), JSON.stringify({ schema: 'membit.sparse-advice/1', device: { name: 'G' }, entries: [{ tokens: -1 }] }));
  writeFileSync(join(adv, 'c.json'), JSON.stringify({ schema: 'membit.sparse-advice/1', device: { name: 'G' }, torch: '', date: '', method: '',
    entries: [{ tokens: 1, d_model: 1, d_ff: 1, gated: false, dtype: 'bfloat16', dense_ms: 1, sparse_ms: 1, speedup: 1 }] }));
  const r = loadAdviceTables(dir);
  assert.equal(r.tables.length, 1);
  assert.equal(r.errors.length, 2);
  assert.match(r.errors.join('\n'), /a\.json: .*JSON/);
  assert.match(r.errors.join('\n'), /b\.json: entries\[0\] needs positive tokens/);
  const other = parseAdviceTable({ schema: 'other' });
  assert.ok(other instanceof Error);
  assert.match(other.message, /expected "membit.sparse-advice\/1"/);
  assert.match(loadAdviceTables(join(dir, 'missing')).errors.join('\n'), /no 2:4 advice tables/);
});

test('scanner: FFN sites carry the measured 2:4 advice for their widths and tokens, in message, hint and hover', async () => {
  assert.ok(h200);
  const s = await scanner();
  const text = readFileSync(join(repoRoot(), 'samples', 'gpt_tiny.py'), 'utf8');
  const plain = s.scan(text, 'gpt_tiny.py', { shapes: { batch: 64, seqLen: 256 } });
  const withAdvice = s.scan(text, 'gpt_tiny.py', { shapes: { batch: 64, seqLen: 256 }, sparse24: { tables: [h200] } });
  const ffn = withAdvice.sites.find((x) => x.kind === 'ffn');
  const before = plain.sites.find((x) => x.kind === 'ffn');
  assert.ok(ffn?.sparse24 && before && !before.sparse24);
  // The sample's MLP is 128 -> 512 (GPTConfig defaults); 64 x 256 tokens per step.
  const want = adviseSparse24([h200], { dModel: 128, dFF: 512, tokens: 64 * 256 });
  assert.equal(ffn.sparse24.speedup, want?.speedup);
  assert.equal(ffn.sparse24.tokens, 16384);
  assert.ok(ffn.message.includes(want?.text ?? '?'), ffn.message);
  assert.ok(formatHint(ffn).includes(want?.text.replace('2:4 here', '2:4') ?? '?'), formatHint(ffn));
  assert.match(formatHover(ffn), /measured FFN forward\+backward/);
  // Other sites are the same objects' values: the advice touches FFNs only.
  assert.deepEqual(withAdvice.sites.filter((x) => x.kind !== 'ffn'), plain.sites.filter((x) => x.kind !== 'ffn'));
  // Without a batch size the range over measured token counts is given.
  const noBatch = s.scan(text, 'gpt_tiny.py', { sparse24: { tables: [h200] } });
  const f2 = noBatch.sites.find((x) => x.kind === 'ffn');
  assert.ok(f2?.sparse24?.range && f2.sparse24.tokens === undefined);
});

test('report view: a real sparse24 run lists its FFNs with the 2:4 advice and plots the flip rates', () => {
  assert.ok(h200);
  const path = reportFixture('gpt_tiny_cpu_sparse24.json');
  const parsed = parseReport(readFileSync(path, 'utf8'), REPORT_SCHEMA, 'gpt_tiny_cpu_sparse24.json');
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  const report = parsed.report;
  assert.ok(report.ffn?.length === 2);
  const view = buildView(report, 'sparse24', { sparse24: [h200] });
  assert.equal(view.ffn.length, 2);
  for (const f of view.ffn) {
    const want = adviseSparse24([h200], { dModel: f.d_model, dFF: f.d_ff, gated: f.gated, tokens: f.tokens ?? undefined });
    assert.equal(f.advice?.text, want?.text);
    assert.equal(f.converted, true);
    assert.ok(f.created_at && f.created_at.line > 0);
  }
  assert.deepEqual(view.flipRate?.step, report.flip_rate?.step);
  assert.deepEqual(view.flipRate?.series.map((s) => s.name).sort(), Object.keys(report.flip_rate?.layers ?? {}).sort());
  // Without tables the FFNs are still listed, with no advice; old reports have none.
  assert.equal(buildView(report, 'x').ffn[0]?.advice, null);
  // A baseline run lists the same FFN blocks, not converted.
  const baseJson = JSON.parse(readFileSync(reportFixture('gpt_tiny_cpu_baseline.json'), 'utf8')) as Record<string, unknown>;
  const base = parseReport(JSON.stringify(baseJson), REPORT_SCHEMA, 'baseline');
  assert.ok(base.ok, base.ok ? '' : base.error);
  assert.deepEqual(buildView(base.report, 'baseline', { sparse24: [h200] }).ffn.map((f) => f.converted), [false, false]);
  // A report written before FFN blocks were recorded has no `ffn` field: no rows, no error.
  delete baseJson['ffn'];
  const old = parseReport(JSON.stringify(baseJson), REPORT_SCHEMA, 'old');
  assert.ok(old.ok, old.ok ? '' : old.error);
  assert.deepEqual(buildView(old.report, 'old', { sparse24: [h200] }).ffn, []);
});
