import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { comparisonMarkdown, compareRuns, sameConfiguration } from '../../src/core/report/compare';
import { compareSteps, formatStepTime, formatVerdict, stepStats } from '../../src/core/report/stepTime';
import type { Report } from '../../src/core/report/types';
import { repoRoot } from './nativeFakes';

const fixture = (name: string) => JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'reports', name), 'utf8')) as Report;

test('stepStats: median and half the interquartile range (full range under 4 steps)', () => {
  assert.equal(stepStats([]), null);
  assert.equal(stepStats(undefined), null);
  const three = stepStats([0.3, 0.1, 0.2]);
  assert.equal(three?.median, 0.2);
  assert.equal(three.n, 3);
  assert.ok(Math.abs(three.halfSpread - 0.1) < 1e-12);
  const s = stepStats([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 5]);
  assert.equal(s?.median, 0.1);
  // One slow step (a stall) does not widen the spread.
  assert.equal(s.halfSpread, 0);
  assert.equal(formatStepTime(stepStats([0.084, 0.081, 0.087]), 0.084), '84.0 ms ± 3.0 (3 steps)');
  assert.equal(formatStepTime(null, 0.05), '50.0 ms (no spread recorded)');
});

test('compareSteps: inside the spread is noise, outside is a change, few steps say nothing', () => {
  const a = stepStats([0.1, 0.11, 0.09, 0.1, 0.105]);
  const same = stepStats([0.102, 0.098, 0.1, 0.104, 0.099]);
  const slower = stepStats([0.2, 0.21, 0.19, 0.2, 0.205]);
  assert.equal(compareSteps(a, same).kind, 'noise');
  assert.equal(formatVerdict(compareSteps(a, same)), 'within noise');
  const v = compareSteps(a, slower);
  assert.equal(v.kind, 'change');
  assert.equal(formatVerdict(v), '+100.0%');
  // Twice the step time is half the throughput.
  assert.equal(formatVerdict(v, true), '−50.0%');
  assert.equal(formatVerdict(compareSteps(stepStats([0.088, 0.405]), stepStats([1.089, 1.0]))), 'too few steps (2)');
  assert.equal(formatVerdict(compareSteps(null, a)), '—');
});

test('a comparison of two identical configurations says "within noise", never a percentage', () => {
  const base = fixture('gpt_tiny_cpu_baseline.json');
  const times = [0.84, 0.86, 0.83, 0.9, 0.85, 0.84, 0.88, 0.86];
  const again = [0.87, 0.83, 0.85, 0.86, 0.84, 0.89, 0.85, 0.86];
  const a = { ...base, summary: { ...base.summary, step_times_s: times } };
  const b = { ...base, summary: { ...base.summary, step_times_s: again, step_time_s: 0.855 } };
  const c = compareRuns([{ label: 'first', report: a }, { label: 'second', report: b }]);
  assert.equal(c.rows[1]?.dStepText, 'within noise');
  const md = comparisonMarkdown(c);
  assert.match(md.split('\n')[3] ?? '', /\| within noise \|/);
  assert.doesNotMatch(md.split('\n')[3] ?? '', /[+−]\d+\.\d%\s*\|\s*[\d.]+\s*\|\s*[+−]/);
  // Reports of earlier versions carry no per-step times: no verdict is made up.
  const old = compareRuns([{ label: 'a', report: base }, { label: 'b', report: base }]);
  assert.equal(old.rows[1]?.dStepText, '—');
});

test('the same code and settings: a difference in step time is the machine\'s, called noise however large', () => {
  const base = fixture('gpt_tiny_cpu_baseline.json');
  const sources = [{ file: 'gpt_tiny.py', sha256: 'a'.repeat(64), bytes: 100 }];
  // Step times from two runs of one configuration on a loaded two-core machine.
  const quick = [0.012, 0.026, 0.05, 0.02, 0.031, 0.026, 0.06, 0.019];
  const slow = [0.06, 0.068, 0.09, 0.055, 0.07, 0.069, 0.1, 0.064];
  const a: Report = { ...base, sources, summary: { ...base.summary, step_times_s: quick } };
  const b: Report = { ...base, sources: [...sources], summary: { ...base.summary, step_times_s: slow } };
  assert.equal(compareSteps(stepStats(quick), stepStats(slow)).kind, 'change', 'the spreads alone call it a change');
  assert.equal(sameConfiguration(a, b), true);
  const c = compareRuns([{ label: 'first', report: a }, { label: 'second', report: b }]);
  assert.equal(c.rows[1]?.dStepText, 'within noise (same code and settings)');
  assert.equal(c.rows[1].dSamplesText, 'within noise (same code and settings)');

  // Anything that could change the step time makes it a comparison of two configurations.
  const edited: Report = { ...b, sources: [{ file: 'gpt_tiny.py', sha256: 'b'.repeat(64), bytes: 100 }] };
  const moreFiles: Report = { ...b, sources: [...sources, { file: 'model.py', sha256: 'c'.repeat(64), bytes: 10 }] };
  const otherArgs: Report = { ...b, run: { ...b.run, argv: [...b.run.argv, '--batch-size', '64'] } };
  const otherVariant: Report = { ...b, run: { ...b.run, variant: 'packed' } };
  const otherDevice: Report = { ...b, run: { ...b.run, device: { ...b.run.device, name: 'other' } } };
  const unhashed: Report = { ...b };
  delete unhashed.sources;
  for (const [why, r] of Object.entries({ edited, moreFiles, otherArgs, otherVariant, otherDevice, unhashed })) {
    assert.equal(sameConfiguration(a, r), false, why);
    const row = compareRuns([{ label: 'first', report: a }, { label: why, report: r }]).rows[1];
    assert.match(row?.dStepText ?? '', /^\+\d+\.\d%$/, why);
  }
});
