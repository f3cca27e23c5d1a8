import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validate, type Schema } from '../../src/core/report/jsonSchema';
import { LineMapper } from '../../src/core/report/lineMap';
import { heatBucket, indexReport, inlineText, parseReport, showsInline } from '../../src/core/report/model';
import type { Report } from '../../src/core/report/types';
import { defined } from '../defined';

const schema: Schema = {
  type: 'object',
  required: ['schema', 'n'],
  properties: {
    schema: { const: 'membit.report/1' },
    n: { type: 'integer', minimum: 0 },
    kind: { enum: ['a', 'b'] },
    list: { type: 'array', items: { $ref: '#/$defs/item' } },
    maybe: { anyOf: [{ type: 'null' }, { type: 'string', minLength: 1 }] },
  },
  additionalProperties: false,
  $defs: { item: { type: 'object', required: ['x'], properties: { x: { type: 'number' } } } },
};

test('jsonSchema: a valid document has no errors', () => {
  assert.deepEqual(validate(schema, { schema: 'membit.report/1', n: 3, kind: 'a', list: [{ x: 1.5 }], maybe: null }), []);
});

test('jsonSchema: errors name the path and the problem', () => {
  const errs = validate(schema, { schema: 'membit.report/1', n: -1.5, kind: 'c', list: [{ y: 1 }], extra: 1, maybe: '' });
  const text = errs.map((e) => `${e.path} ${e.message}`);
  assert.ok(text.includes('$.n should be integer, got number'), text.join('\n'));
  assert.ok(text.includes('$.kind should be one of "a", "b", got "c"'));
  assert.ok(text.includes('$.list[0] is missing required field "x"'));
  assert.ok(text.includes('$.extra is not allowed here'));
  assert.ok(text.includes('$.maybe does not match any of the allowed shapes'));
});

function miniReport(lines: Report['lines'], peak = 1_000_000): Report {
  return {
    schema: 'membit.report/1',
    run: {
      id: 'r', script: 'gpt_tiny.py', argv: [], variant: 'baseline', target: { kind: 'local', host: null },
      device: { name: 'cpu', type: 'cpu', index: null, total_bytes: null, capability: null }, python: '3.11', torch: '2.13',
      membit: '0.1.0', started: '2026-11-22T10:00:00Z', duration_s: 1, steps: 1, warmup: 0, steps_requested: 1, status: 'ok',
      error: null, error_at: null, root: '/w', pid: 1, patched: [], skipped: [], notes: [],
    },
    summary: {
      peak_allocated: peak, peak_reserved: null, device_used_peak: null, params: 0, buffers: 0, grads: 0, optimizer_state: 0,
      saved_bytes: 0, mask_bytes: 0, saved_outside_modules: 0, params_at_peak: 0, buffers_at_peak: 0, grads_at_peak: 0,
      optimizer_state_at_peak: 0, activations_at_peak: 0, masks_at_peak: 0, unattributed_at_peak: 0, tracked_at_peak: 0,
      step_time_s: null, samples_per_s: null, batch_size: null,
    },
    lines, modules: [], sites: [], timeline: null,
    peak: { t_ms: null, step: null, phase: null, source: 'tensors', replay_bytes: null, top: [] }, oom: null,
  };
}

function lineEntry(file: string, line: number, saved: number, mask: number, module: string): Report['lines'][number] {
  return { file, line, func: 'forward', module, saved_bytes: saved, mask_bytes: mask, at_peak_bytes: saved, tensors: 1, ops: [] };
}

test('parseReport: malformed input gets a message that says what is wrong', () => {
  const bad = parseReport('{"schema": "membit.report/1", "n"', schema, 'run.json');
  assert.equal(bad.ok, false);
  assert.match((bad as { error: string }).error, /^run\.json is not valid JSON .*cut off/);
  const future = parseReport('{"schema": "membit.report/9"}', schema, 'run.json');
  assert.match((future as { error: string }).error, /uses membit\.report\/9, which this version of Membit does not read/);
  const wrong = parseReport('{"schema": "membit.report/1", "n": "3"}', schema, 'run.json');
  assert.match((wrong as { error: string }).error, /\$\.n should be integer, got string/);
});

test('heat buckets are shares of the run peak', () => {
  assert.equal(heatBucket(0, 100), undefined);
  assert.equal(heatBucket(1, 100), 'low');
  assert.equal(heatBucket(2, 100), 'medium');
  assert.equal(heatBucket(10, 100), 'high');
  assert.equal(heatBucket(5, 0), undefined);
});

test('indexReport sums entries per line, ranks lines, and writes the inline text', () => {
  const idx = indexReport(miniReport([
    lineEntry('./m.py', 10, 200_000, 50_000, 'a'),
    lineEntry('m.py', 10, 40_000, 0, 'b'),
    lineEntry('m.py', 20, 30_000, 0, 'a'),
    lineEntry('m.py', 30, 1_000, 0, 'a'),
  ]));
  const m = idx.files.get('m.py');
  assert.ok(m);
  const l10 = m.get(10);
  assert.equal(l10?.savedBytes, 240_000);
  assert.equal(l10.maskBytes, 50_000);
  assert.equal(l10.rank, 0);
  assert.equal(l10.bucket, 'high');
  assert.equal(m.get(20)?.bucket, 'medium');
  assert.equal(inlineText(l10), '▲ 234 KiB kept for backward · mask 48.8 KiB');
  assert.equal(showsInline(defined(m.get(30), 'line 30')), false);
});

test('LineMapper: insertions shift, deletions drop, in-line edits keep', () => {
  const lm = new LineMapper([2, 5, 9]);
  // Insert two lines above line 2.
  lm.apply([{ startLine: 2, startCol: 0, endLine: 2, endCol: 0, text: 'a\nb\n' }]);
  assert.deepEqual([lm.current(2), lm.current(5), lm.current(9)], [4, 7, 11]);
  // Edit inside line 7 (orig 5): stays.
  lm.apply([{ startLine: 7, startCol: 4, endLine: 7, endCol: 8, text: 'xy' }]);
  assert.equal(lm.current(5), 7);
  // Delete lines 6..8 joined into 6: orig 5 (now 7) is gone, orig 9 (now 11) moves up 2.
  lm.apply([{ startLine: 6, startCol: 3, endLine: 8, endCol: 0, text: '' }]);
  assert.equal(lm.current(5), undefined);
  assert.equal(lm.current(9), 9);
  // Two changes in one event are applied bottom-up.
  lm.apply([
    { startLine: 0, startCol: 0, endLine: 0, endCol: 0, text: '\n' },
    { startLine: 9, startCol: 0, endLine: 9, endCol: 0, text: '\n\n' },
  ]);
  assert.equal(lm.current(2), 5);
  assert.equal(lm.current(9), 12);
  // Deleting whole lines (from column 0 to column 0 of a later line) drops them and pulls the rest up.
  const whole = new LineMapper([3, 4, 5, 8]);
  whole.apply([{ startLine: 4, startCol: 0, endLine: 5, endCol: 0, text: '' }]);
  assert.deepEqual([whole.current(3), whole.current(4), whole.current(5), whole.current(8)], [3, undefined, 4, 7]);
  // Replacing a block with new lines keeps the line the range ends at, after the new text.
  const repl = new LineMapper([2, 3, 4]);
  repl.apply([{ startLine: 2, startCol: 0, endLine: 4, endCol: 0, text: 'x\ny\nz\n' }]);
  assert.deepEqual([repl.current(2), repl.current(3), repl.current(4)], [undefined, undefined, 5]);
});
