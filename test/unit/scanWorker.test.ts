/**
 * The scan worker (dist/scanWorker.js, the real bundle) and its client: scans happen off the
 * caller's thread, documents update incrementally there, and a scan that does not answer by
 * its deadline is ended with the thread, while the caller's event loop keeps running. Time
 * limits here are deadlines of the component under test or hang guards, never speed targets.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cloneable, ScanRestartedError, ScanWorker } from '../../src/core/scan/workerClient';
import { shapeHintsFromReport, type ReportLike } from '../../src/core/scan';
import { repoRoot, scanner } from './scanSupport';

const dist = join(repoRoot(), 'dist');
const workerPath = join(dist, 'scanWorker.js');
const MODEL = 'import torch.nn as nn\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.1)\n';
// `torch.nn.nn.….Dropout(0.1)`: the query cursor needs over 30 s for it without a budget.
const CHAIN = `import torch\nx = torch.${'nn.'.repeat(40_000)}Dropout(0.1)\n`;

test('the worker bundle is built', () => {
  assert.ok(existsSync(workerPath), `${workerPath} is missing: run node esbuild.mjs first`);
});

test('scans in the worker, and a document updates there incrementally', async () => {
  const w = new ScanWorker({ workerPath, assetDir: dist });
  try {
    const first = await w.scan('doc', 'm.py', MODEL, {});
    assert.deepEqual(first.sites.map((s) => [s.kind, s.range.startLine]), [['dropout', 5]]);
    const edited = MODEL.replace('super().__init__()\n', 'super().__init__()\n        self.more = nn.Dropout(0.2)\n');
    const second = await w.scan('doc', 'm.py', edited, {});
    assert.deepEqual(second.sites.map((s) => [s.kind, s.range.startLine]), [['dropout', 5], ['dropout', 6]]);
    assert.ok(second.stats.reusedChunks > 0, `the second scan reused the first one's work: ${JSON.stringify(second.stats)}`);
    w.forget('doc');
    const again = await w.scan('doc', 'm.py', edited, {});
    assert.equal(again.stats.reusedChunks, 0, 'after forget the document starts afresh');
    const cells = await w.scanCells('n.ipynb', [{ index: 0, text: 'import torch.nn as nn' }, { index: 1, text: 'd = nn.Dropout(0.1)' }], {});
    assert.deepEqual(cells.sites.map((s) => s.cell), [1]);
  } finally {
    w.dispose();
  }
});

test('a scan past its deadline is ended with its thread; the caller never waits on it, and the next scan works', { timeout: 120_000 }, async () => {
  const restarts: string[] = [];
  const w = new ScanWorker({ workerPath, assetDir: dist, deadlineMs: 3000, onRestart: (why) => restarts.push(why) });
  try {
    await w.scan('warm', 'm.py', MODEL, {}); // the grammar is loaded before the deadline counts
    let ticks = 0;
    const tick = setInterval(() => (ticks += 1), 50);
    // No budget: only the deadline can end this scan. A second request waits behind it.
    const slow = w.scan('chain', 'chain.py', CHAIN, {});
    const queued = w.scan('other', 'other.py', MODEL, {});
    await assert.rejects(slow, /the scan of chain\.py did not finish within 3 s, so it was stopped/);
    clearInterval(tick);
    assert.ok(ticks > 0, 'the caller\'s event loop ran while the scan was under way');
    await assert.rejects(queued, (e: unknown) => e instanceof ScanRestartedError && e.message.includes('the scanner restarted'));
    assert.equal(restarts.length, 1, restarts.join('\n'));
    const after = await w.scan('doc', 'm.py', MODEL, {});
    assert.equal(after.sites.length, 1, 'a fresh thread scans the next file');
  } finally {
    w.dispose();
  }
});

test('a disposed client answers with an error instead of starting a thread', async () => {
  const w = new ScanWorker({ workerPath, assetDir: dist });
  w.dispose();
  await assert.rejects(w.scan('k', 'm.py', MODEL, {}), /the scanner was closed/);
});

test('options that the structured clone refuses (a Proxy, as VS Code settings are) are sent as data, Maps kept', async () => {
  const w = new ScanWorker({ workerPath, assetDir: dist });
  try {
    const shapes = new Proxy({ batch: 8, seqLen: 128 }, {});
    assert.throws(() => structuredClone(shapes), /could not be cloned/);
    // Shape hints from a report are Maps: they must arrive as Maps, not as {} (JSON would do that).
    const hints = { byLine: new Map([[5, { batch: 3 }]]), byModule: new Map(), fromReport: true };
    const copy = cloneable({ shapes, hints });
    assert.ok(copy.hints.byLine instanceof Map && copy.hints.byLine.get(5)?.batch === 3);
    const r = await w.scan('p', 'm.py', MODEL, { shapes, hints } as never);
    assert.equal(r.sites.length, 1);
  } finally {
    w.dispose();
  }
});

test('with a real report\'s shape hints the worker finds what the scanner finds in this thread', async () => {
  const report = JSON.parse(readFileSync(join(repoRoot(), 'test', 'fixtures', 'reports', 'gpt_tiny_cpu_baseline.json'), 'utf8')) as ReportLike;
  const text = readFileSync(join(repoRoot(), 'samples', 'gpt_tiny.py'), 'utf8');
  const opts = { hints: shapeHintsFromReport(report, 'gpt_tiny.py') };
  assert.ok(opts.hints.byLine.size > 0, 'the report has measured lines for the sample');
  const here = (await scanner()).scan(text, 'gpt_tiny.py', opts);
  const w = new ScanWorker({ workerPath, assetDir: dist });
  try {
    const there = await w.scan('gpt', 'gpt_tiny.py', text, opts);
    assert.equal(there.error, undefined);
    assert.ok(there.sites.some((s) => s.estimate.source === 'report'), 'measured figures reached the worker');
    assert.deepEqual(there.sites, here.sites);
  } finally {
    w.dispose();
  }
});
