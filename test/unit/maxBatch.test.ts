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
  const probe = (b: number): Promise<ProbeRow> => {
    asked.push(b);
    if (b === fail) return Promise.resolve({ batch: b, fits: false, status: 'error', peak: null, rank: 0, error: 'rank 0 error: ValueError: bad shape' });
    const peak = 100 + b * perSample;
    return Promise.resolve({ batch: b, fits: peak <= cap, status: peak <= cap ? 'ok' : 'over_limit', peak, rank: 0, error: null });
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
  const c = await searchLargest(
    (b) => {
      n++;
      return Promise.resolve({ batch: b, fits: true, status: 'ok', peak: b, rank: 0, error: null });
    },
    1,
    null,
    () => n >= 3,
  );
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

import { cpSync, mkdtempSync, readFileSync as readText } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { main } from '../../src/core/cli/main';
import type { MaxBatchDoc } from '../../src/core/run/maxBatch';
import { capture } from './cliCapture';
import { defined } from '../defined';

const REPO = resolve(__dirname, '..', '..', '..');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');

function workspace(): string {
  const ws = mkdtempSync(join(tmpdir(), 'membit-maxbatch-'));
  for (const f of ['gpt_dist.py', 'gpt_tiny.py']) cpSync(join(REPO, 'samples', f), join(ws, f));
  return ws;
}

test('membit maxbatch per world size: real torchrun probes under FSDP; two ranks fit a larger batch than one', { timeout: 600_000 }, async () => {
  const ws = workspace();
  const limit = 3 * 1024 * 1024;
  const io = capture(ws);
  const code = await main(
    ['maxbatch', '--python', PYTHON, '--nproc-per-node', '1,2', '--memory-limit', String(limit), '--max', '8', '--out', 'mb.json', '--',
      'gpt_dist.py', '--parallel', 'fsdp', '--steps', '3', '--seq-len', '32', '--n-layer', '2', '--n-embd', '64', '--n-head', '2', '--data-bytes', '200000'],
    io,
  );
  assert.equal(code, 0, io.stderr.slice(-3000));
  const doc = JSON.parse(readText(join(ws, 'mb.json'), 'utf8')) as MaxBatchDoc;
  assert.equal(doc.schema, 'membit.maxbatch/1');
  assert.equal(doc.launcher, 'torchrun');
  assert.deepEqual(doc.variants.map((v) => [v.world_size, v.status]), [[1, 'ok'], [2, 'ok']]);
  for (const v of doc.variants) {
    assert.ok(v.largest !== null, `world size ${v.world_size}: something fits`);
    const at = v.probes.find((p) => p.batch === v.largest);
    assert.ok(at?.fits && (at.peak ?? Infinity) <= limit, JSON.stringify(at));
    // The boundary was seen: one more does not fit, and by the limit, not by an error.
    const over = v.probes.find((p) => p.batch === defined(v.largest, 'largest batch') + 1);
    assert.ok(over && !over.fits && over.status === 'over_limit' && (over.peak ?? 0) > limit, JSON.stringify(v.probes));
  }
  const [one, two] = doc.variants;
  assert.ok((two?.largest ?? 0) > (one?.largest ?? 0), `FSDP shards parameters, gradients and optimizer state: ${one?.largest} on one rank, ${two?.largest} on two`);
  assert.match(io.stdout, new RegExp(`^world size 1: batch ${one?.largest} \\(peak [\\d.]+ (?:[KMG]i)?B on rank 0\\)$`, 'm'));
  assert.match(io.stdout, new RegExp(`^world size 2: batch ${two?.largest} \\(peak [\\d.]+ (?:[KMG]i)?B on rank [01]\\)$`, 'm'));
  assert.match(io.stderr, /^membit: world size 2, batch \d+: over the limit \(peak/m);
});

test('membit maxbatch on CPU without a memory limit says why it cannot search; bad flags are named', { timeout: 300_000 }, async () => {
  const ws = workspace();
  const io = capture(ws);
  const code = await main(['maxbatch', '--python', PYTHON, '--max', '1', '--', 'gpt_tiny.py', '--steps', '3', '--seq-len', '32', '--n-layer', '1', '--n-embd', '32', '--n-head', '2', '--data-bytes', '100000', '--device', 'cpu'], io);
  assert.equal(code, 2);
  assert.match(io.stderr, /on the CPU, where nothing runs out of memory: give a memory limit in bytes \(--memory-limit\)/);
  for (const [flags, re] of [
    [['--nproc-per-node', '2,x'], /--nproc-per-node: a world size is a whole number/],
    [['--min', '4', '--max', '2'], /--max 2 is below --min 4/],
    [['--memory-limit', '1.5GB'], /--memory-limit must be a whole number/],
  ] as [string[], RegExp][]) {
    const bad = capture(ws);
    assert.equal(await main(['maxbatch', ...flags, '--', 'gpt_tiny.py'], bad), 2, flags.join(' '));
    assert.match(bad.stderr, re);
  }
});
