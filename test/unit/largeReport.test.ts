import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validate } from '../../src/core/report/jsonSchema';
import { indexReport, parseReport, showsInline } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import { buildView } from '../../src/core/report/view';
import { generateLargeReport, MB } from '../bench/largeReport';

test('the large-report generator writes a valid membit.report/1 document of the size asked for', () => {
  const g = generateLargeReport({ targetBytes: 2 * MB });
  assert.deepEqual(validate(REPORT_SCHEMA, g.report, 5), []);
  const parsed = parseReport(g.text, REPORT_SCHEMA);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  assert.ok(Math.abs(g.bytes - 2 * MB) < 0.02 * MB, `size ${g.bytes}`);
  assert.ok(g.counts.timeline > 20_000 && g.counts.lines > 100 && g.counts.modules > 50 && g.counts.sites > 10, JSON.stringify(g.counts));
  assert.equal(g.report.timeline?.allocated.length, g.counts.timeline);
});

test('the large report is deterministic and its gpt_tiny.py lines get overlays and a view', () => {
  const a = generateLargeReport({ targetBytes: 1 * MB });
  const b = generateLargeReport({ targetBytes: 1 * MB });
  assert.equal(a.text, b.text);
  const index = indexReport(a.report);
  const gpt = index.files.get('gpt_tiny.py');
  assert.ok(gpt && [...gpt.values()].some((info) => showsInline(info)), 'no inline overlay on gpt_tiny.py');
  for (const line of gpt.keys()) assert.ok(line >= 1 && line <= 203, `line ${line} is outside gpt_tiny.py`);
  const view = buildView(a.report, 'large');
  assert.ok(view.timeline.allocated.length <= 2000 && view.timeline.peak);
  assert.equal(view.timeline.peak.bytes, a.report.summary.peak_allocated);
});
