// The FSDP estimate from a single-process report (the GPT sample's real CPU report): its parts
// follow from the report's own figures, it is labelled an estimate, and bad input is refused.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { EstimateError, estimateFsdp } from '../../src/core/report/fsdpEstimate';
import type { Report } from '../../src/core/report/types';
import { itemAt } from '../../src/core/arrays';

const dir = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'reports');
const report = JSON.parse(readFileSync(join(dir, 'gpt_tiny_cpu_baseline.json'), 'utf8')) as Report;

test('per-rank FSDP estimate: shards divide by N, one block is the unit, the rest is the run\'s own', () => {
  const est = estimateFsdp(report, [1, 2, 4, 8]);
  // The unit: the largest ModuleList block, its whole subtree's parameters.
  const blockParams = report.modules.filter((m) => m.path === 'h.0' || m.path.startsWith('h.0.')).reduce((a, m) => a + m.params, 0);
  assert.deepEqual(est.unit, { module: 'h.0', params: blockParams, how: 'block' });
  assert.match(est.label, /^estimate, not measured: per rank under FSDP from gpt_tiny\.py/);
  const s = report.summary;
  for (const r of est.rows) {
    // What the run held at its peak is what gets sharded: gradients not alive then add nothing.
    assert.equal(r.params, Math.ceil(s.params_at_peak / r.worldSize));
    assert.equal(r.grads, Math.ceil(s.grads_at_peak / r.worldSize));
    assert.equal(r.optimizerState, Math.ceil(s.optimizer_state_at_peak / r.worldSize));
    assert.equal(r.unshardedUnits, r.worldSize > 1 ? 2 * blockParams : 0);
    assert.equal(r.perRank, r.params + r.grads + r.optimizerState + s.buffers_at_peak + r.unshardedUnits + r.reduceScatter + r.activations + r.rest);
  }
  // One rank is the run itself: the estimate gives back its measured peak.
  assert.equal(itemAt(est.rows, 0).perRank, itemAt(est.rows, 0).measured);
  const per = est.rows.map((r) => r.perRank);
  assert.ok(itemAt(per, 1) > itemAt(per, 2) && itemAt(per, 2) > itemAt(per, 3), 'more ranks, less per rank');
  assert.throws(() => estimateFsdp(report, [0]), EstimateError);
  const sharded = { ...report, summary: { ...report.summary, distributed: { fsdp_units: [{ module: 'h.0', params: 1, sharded_bytes: 1, unsharded_bytes: 2 }] } } } as unknown as Report;
  assert.throws(() => estimateFsdp(sharded, [2]), /already sharded/);
});

test('membit report --fsdp prints the labelled estimate', async () => {
  const io = capture(dir);
  assert.equal(await main(['report', 'gpt_tiny_cpu_baseline.json', '--fsdp', '2,4'], io), 0, io.stderr);
  assert.match(io.stdout, /^estimate, not measured:/);
  assert.match(io.stdout, /^unit: h\.0 \(/m);
  assert.match(io.stdout, /^ +2 +[\d.]+ (?:[KMG]i)?B/m);
  const bad = capture(dir);
  assert.equal(await main(['report', 'gpt_tiny_cpu_baseline.json', '--fsdp', '2,x'], bad), 2);
  assert.match(bad.stderr, /world sizes must be whole numbers/);
});
