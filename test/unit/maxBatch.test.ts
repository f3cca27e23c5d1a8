import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseWorldSizes, runSetVerdict, searchLargest, withBatch, type ProbeRow } from '../../src/core/run/maxBatch';

test('withBatch sets the flag where it is, in either spelling, or appends it', () => {
  assert.deepEqual(withBatch(['--steps', '5', '--batch-size', '4'], '--batch-size', 9), ['--steps', '5', '--batch-size', '9']);
  assert.deepEqual(withBatch(['--batch-size=4', '--x'], '--batch-size', 9), ['--batch-size=9', '--x']);
  assert.deepEqual(withBatch(['--steps', '5'], '--batch-size', 9), ['--steps', '5', '--batch-size', '9']);
  assert.deepEqual(withBatch(['--batch-size'], '--batch-size', 9), ['--batch-size', '--batch-size', '9'], 'a flag without a value is left as it was');
});

/** A probe against a fixed capacity: memory grows linearly with the batch. */
function capacity(cap: number, perSample: number, fail?: number) {
  const asked: number[] = [];
  const probe = async (b: number): Promise<ProbeRow> => {
    asked.push(b);
    if (b === fail) return { batch: b, fits: false, status: 'error', peak: null, rank: 0, error: 'rank 0 error: ValueError: bad shape' };
    const peak = 100 + b * perSample;
    return { batch: b, fits: peak <= cap, status: peak <= cap ? 'ok' : 'over_limit', peak, rank: 0, error: null };
  };
  return { probe, asked };
}

test('search: doubling then bisection finds the boundary exactly, each size probed once', async () => {
  for (const cap of [100 + 10 * 1, 100 + 10 * 7, 100 + 10 * 8, 100 + 10 * 13, 100 + 10 * 64]) {
    const c = capacity(cap, 10);
    const r = await searchLargest(c.probe, 1, null);
    const want = Math.floor((cap - 100) / 10);
    assert.equal(r.largest, want, `capacity for ${want}`);
    assert.equal(new Set(c.asked).size, c.asked.length, 'no size probed twice');
    assert.ok(r.probes.some((p) => p.batch === want && p.fits));
    if (want < 64) assert.ok(r.probes.some((p) => p.batch === want + 1 && !p.fits), 'the next size was seen not to fit');
  }
  assert.equal((await searchLargest(capacity(50, 10).probe, 1, null)).largest, null, 'nothing fits');
  const capped = capacity(100000, 10);
  assert.equal((await searchLargest(capped.probe, 1, 12)).largest, 12, 'stops at the maximum asked for');
  assert.ok(Math.max(...capped.asked) <= 12);
});

test('search: a probe that fails for another reason ends the search with its error; cancel is asked between probes', async () => {
  const r = await searchLargest(capacity(1000, 10, 4).probe, 1, null);
  assert.equal(r.status, 'error');
  assert.equal(r.largest, null);
  assert.match(r.error ?? '', /^batch 4: rank 0 error: ValueError: bad shape$/);
  let n = 0;
  const c = await searchLargest(async (b) => (n++, { batch: b, fits: true, status: 'ok', peak: b, rank: 0, error: null }), 1, null, () => n >= 3);
  assert.equal(c.status, 'cancelled');
  assert.equal(n, 3);
});

const rank = (r: number, status: 'ok' | 'oom' | 'error', peak: number | null, error?: string) => ({
  rank: r, status, host: null, device: null, peak, ...(error ? { report: { run: { error } } } : {}),
});
const set = (status: 'ok' | 'error' | 'oom', ranks: ReturnType<typeof rank>[]) => ({ doc: { status, message: null }, ranks }) as never;

test('a probe fits when every rank ended ok within the limit; the fullest or failing rank is named', () => {
  assert.deepEqual(runSetVerdict(set('ok', [rank(0, 'ok', 90), rank(1, 'ok', 120)]), 4, null), { batch: 4, fits: true, status: 'ok', peak: 120, rank: 1, error: null });
  assert.deepEqual(runSetVerdict(set('ok', [rank(0, 'ok', 90), rank(1, 'ok', 120)]), 4, 100), { batch: 4, fits: false, status: 'over_limit', peak: 120, rank: 1, error: null });
  assert.equal(runSetVerdict(set('oom', [rank(0, 'ok', 90), rank(1, 'oom', 120)]), 4, null).status, 'oom');
  const err = runSetVerdict(set('error', [rank(0, 'error', 10, 'Traceback\nValueError: bad shape\n'), rank(1, 'ok', 9)]), 4, null);
  assert.equal(err.status, 'error');
  assert.equal(err.error, 'rank 0 error: ValueError: bad shape');
});

test('world sizes: a comma list of whole numbers, duplicates dropped', () => {
  assert.deepEqual(parseWorldSizes('1, 2,4,2'), [1, 2, 4]);
  for (const bad of ['0', '2.5', 'two', '', '1,,2', '-1']) assert.throws(() => parseWorldSizes(bad), /a world size is a whole number/, bad);
});
