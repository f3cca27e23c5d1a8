/**
 * The report reader, view model and comparison on reports the real harness wrote
 * (test/fixtures/reports: the GPT sample on CPU, baseline and packed dropout).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { compareRuns, comparisonMarkdown, formatPct } from '../../src/core/report/compare';
import { parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { buildView, downsampleIndices, phaseSpans } from '../../src/core/report/view';

const dir = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'reports');
const baselinePath = join(dir, 'gpt_tiny_cpu_baseline.json');
const packedPath = join(dir, 'gpt_tiny_cpu_packed.json');

function load(p: string): Report {
  const r = parseReport(readFileSync(p, 'utf8'), REPORT_SCHEMA, p);
  assert.ok(r.ok, r.ok ? '' : r.error);
  return r.report;
}


test('harness reports validate against the shared schema', () => {
  const r = load(baselinePath);
  assert.equal(r.run.variant, 'baseline');
  assert.equal(load(packedPath).run.variant, 'packed');
});

test('membit report prints the peak, the categories and the top lines', async () => {
  const io = capture(dir);
  assert.equal(await main(['report', 'gpt_tiny_cpu_baseline.json'], io), 0, io.stderr);
  assert.match(io.stdout, /^gpt_tiny\.py · baseline · .* · ok$/m);
  assert.match(io.stdout, /^peak [\d.]+ [KMG]iB \(named by the harness/m);
  assert.match(io.stdout, /^ {2}gpt_tiny\.py:\d+ +[\d.]+ (?:[KMG]i)?B {2}mask /m);
});

test('membit report compares runs as Markdown against the first', async () => {
  const io = capture(dir);
  assert.equal(await main(['report', 'gpt_tiny_cpu_baseline.json', 'gpt_tiny_cpu_packed.json'], io), 0, io.stderr);
  const rows = io.stdout.trim().split('\n');
  assert.equal(rows.length, 4);
  assert.match(rows[2] as string, /\| baseline \| ok \| .* \| ±0\.0% \|/);
  // Packed dropout holds less at the peak than the baseline: the Δpeak is negative.
  assert.match(rows[3] as string, /\| packed \| ok \| [\d.]+ [KMG]iB \| −[\d.]+% \|/);
});

test('membit report refuses malformed files with the reason', async () => {
  const io = capture(dir);
  io.cwd = __dirname;
  assert.equal(await main(['report', 'nope.json'], io), 2);
  assert.match(io.stderr, /cannot read .*nope\.json: ENOENT/);
});

test('comparison maths: relative deltas against the baseline', () => {
  const base = load(baselinePath);
  const packed = load(packedPath);
  const c = compareRuns([
    { label: 'b', report: base },
    { label: 'p', report: packed },
  ]);
  const tracked = (r: Report) => r.summary.tracked_at_peak;
  assert.equal(c.rows[0]?.dPeak, 0);
  assert.ok(Math.abs((c.rows[1]?.dPeak ?? 0) - (tracked(packed) - tracked(base)) / tracked(base)) < 1e-12);
  assert.ok(packed.summary.masks_at_peak < base.summary.masks_at_peak / 8, 'packed masks are at least 8x smaller');
  assert.ok(c.modules.length > 0, 'per-module differences are listed');
  assert.match(comparisonMarkdown(c), /^\| run \| variant/);
  assert.equal(formatPct(-0.0612), '−6.1%');
  assert.equal(formatPct(null), '—');
});

test('view model: bounded timeline keeps the peak; phases become spans', () => {
  const values = Array.from({ length: 100_000 }, (_, i) => (i === 77_777 ? 1e9 : i % 1000));
  const keep = downsampleIndices(values, 2000);
  assert.ok(keep.length <= 2000);
  assert.ok(keep.includes(77_777), 'the peak sample survives');
  assert.deepEqual(phaseSpans([0, 1, 2, 3, 4], ['forward', 'forward', 'backward', 'backward', 'optimizer']), [
    { phase: 'forward', start_ms: 0, end_ms: 1 },
    { phase: 'backward', start_ms: 2, end_ms: 3 },
    { phase: 'optimizer', start_ms: 4, end_ms: 4 },
  ]);
  const v = buildView(load(baselinePath), 'b');
  assert.equal(v.timeline.t_ms.length, 0, 'CPU runs have no timeline');
  assert.equal(v.peakBytes, load(baselinePath).summary.tracked_at_peak);
  assert.ok(v.lines.length > 0 && v.lines.every((l, i, a) => i === 0 || (a[i - 1]?.saved_bytes ?? 0) >= l.saved_bytes));
});

import { classTotals } from '../../src/core/report/classes';

test('class totals: every instance of a class, its whole subtree, and the packing saving inside it', () => {
  const r = load(baselinePath);
  const totals = classTotals(r, 'gpt_tiny.py');
  const attn = [...totals.values()].find((t) => t.type === 'CausalSelfAttention');
  assert.ok(attn, [...totals.values()].map((t) => t.type).join(', '));
  const blocks = r.modules.filter((m) => m.type === 'CausalSelfAttention');
  assert.equal(attn.instances, blocks.length);
  const subtree = r.modules.filter((m) => blocks.some((b) => m.path === b.path || m.path.startsWith(`${b.path}.`)));
  assert.equal(attn.masks, subtree.reduce((a, m) => a + m.mask_bytes, 0));
  assert.equal(attn.params, subtree.reduce((a, m) => a + m.params, 0));
  // The attention dropout and the residual dropout live inside the attention block.
  const inside = r.sites.filter((s) => s.module && /\.attn\./.test(s.module));
  assert.equal(attn.savingIfPacked, inside.reduce((a, s) => a + s.saving_if_packed, 0));
  // The model class holds everything: its masks are the run's masks.
  const gpt = [...totals.values()].find((t) => t.type === 'GPT');
  assert.equal(gpt?.masks, r.modules.reduce((a, m) => a + m.mask_bytes, 0));
});
