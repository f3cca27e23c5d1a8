// The checked reads every module leans on: a bound or a guarantee that breaks must fail at
// the read, naming what broke, and the shared search must agree with a linear scan.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bucketMaxima, defined, itemAt, lastAtOrBelow } from '../../src/core/arrays';
import { lineOf, lineStartsOf } from '../../src/core/rewrite/lines';
import { positionOf } from '../../src/core/rewrite/edits';
import { rng } from './fuzzInputs';

test('itemAt reads in range and throws a RangeError past either end', () => {
  assert.equal(itemAt([4, 5, 6], 2), 6);
  assert.equal(itemAt('abc', 0), 'a');
  assert.throws(() => itemAt([4, 5, 6], 3), { name: 'RangeError', message: /index 3 is out of range \(length 3\)/ });
  assert.throws(() => itemAt([], -1), RangeError);
});

test('defined passes a value (0, "" and false included) and names what was missing', () => {
  assert.equal(defined(0, 'zero'), 0);
  assert.equal(defined('', 'empty'), '');
  assert.equal(defined(false, 'false'), false);
  assert.throws(() => defined(undefined, 'the called function'), /internal: expected the called function/);
  assert.throws(() => defined(null, 'a field'), /expected a field/);
});

test('lastAtOrBelow agrees with a linear scan on random sorted tables, duplicates and edges included', () => {
  const r = rng(7);
  for (let round = 0; round < 500; round++) {
    const n = 1 + r(12);
    const sorted: number[] = [];
    let v = r(3);
    for (let i = 0; i < n; i++) {
      sorted.push(v);
      v += r(3);
    }
    for (let x = -2; x <= v + 2; x++) {
      let want = 0;
      for (let i = 0; i < n; i++) if (itemAt(sorted, i) <= x) want = i;
      // Equal starts (an empty line, an empty cell): the last of them holds x.
      assert.equal(lastAtOrBelow(sorted, x), want, `${JSON.stringify(sorted)} x=${x}`);
    }
  }
});

test('lineOf and positionOf find the line of every offset, across \\n, \\r\\n and a lone \\r', () => {
  const text = 'a\nbc\r\n\rdef\n';
  const starts = lineStartsOf(text);
  assert.deepEqual(starts, [0, 2, 6, 7, 11]);
  const lines = [0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4];
  for (let off = 0; off <= text.length; off++) {
    assert.equal(lineOf(starts, off), lines[off], `offset ${off}`);
    const p = positionOf(starts, off);
    assert.equal(p.line, lines[off]);
    assert.equal(p.col, off - itemAt(starts, p.line));
  }
});

test('bucketMaxima keeps every point up to the limit, then each bucket\'s first highest point', () => {
  assert.deepEqual(bucketMaxima([3, 1, 2], 5), [0, 1, 2]);
  assert.deepEqual(bucketMaxima([], 4), []);
  // Buckets of two: the higher of each pair, the first on a tie.
  assert.deepEqual(bucketMaxima([1, 5, 7, 7, 0, -1, 2, 9], 4), [1, 2, 4, 7]);
  const r = rng(11);
  for (let round = 0; round < 200; round++) {
    const n = 1 + r(300);
    const values = Float64Array.from({ length: n }, () => r(1000));
    const buckets = 1 + r(60);
    const keep = bucketMaxima(values, buckets);
    assert.equal(keep.length, Math.min(n, buckets));
    // In order, within range, and the global peak always survives.
    for (let i = 1; i < keep.length; i++) assert.ok(itemAt(keep, i) > itemAt(keep, i - 1));
    const peak = Math.max(...values);
    assert.ok(keep.some((k) => itemAt(values, k) === peak), `n=${n} buckets=${buckets}`);
  }
});
