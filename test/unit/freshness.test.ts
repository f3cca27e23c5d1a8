import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { freshness, profiledHash, remapShapeHints, textSha256 } from '../../src/core/report/freshness';
import { LineMapper } from '../../src/core/report/lineMap';
import { runBrief, runDetail, runName } from '../../src/core/report/runLabel';
import type { Report } from '../../src/core/report/types';
import { shapeHintsFromReport } from '../../src/core/scan';
import { repoRoot } from './nativeFakes';

const fixture = (name: string) => JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'reports', name), 'utf8')) as Report;
const sample = readFileSync(join(repoRoot, 'samples', 'gpt_tiny.py'), 'utf8');

function withSource(r: Report, file: string, text: string): Report {
  return { ...r, sources: [{ file, sha256: createHash('sha256').update(Buffer.from(text, 'utf8')).digest('hex'), bytes: Buffer.byteLength(text) }] };
}

test('freshness: the text that ran is current; any other text is edited; no hash is unknown', () => {
  const r = withSource(fixture('gpt_tiny_cpu_baseline.json'), 'gpt_tiny.py', sample);
  assert.equal(freshness(r, 'gpt_tiny.py', sample), 'current');
  assert.equal(freshness(r, './gpt_tiny.py', sample), 'current');
  const edited = sample.replace('import math', 'import math\nimport os');
  assert.equal(freshness(r, 'gpt_tiny.py', edited), 'edited');
  // Undo: the same text again is current again, whatever happened in between.
  assert.equal(freshness(r, 'gpt_tiny.py', edited.replace('import math\nimport os', 'import math')), 'current');
  assert.equal(freshness(fixture('gpt_tiny_cpu_baseline.json'), 'gpt_tiny.py', sample), 'unknown');
  assert.equal(textSha256('x = 1\n'), createHash('sha256').update('x = 1\n').digest('hex'));
  // A hash that is not one (untrusted report) is ignored rather than compared.
  assert.equal(profiledHash({ ...r, sources: [{ file: 'gpt_tiny.py', sha256: 'nope', bytes: 1 }] }, 'gpt_tiny.py'), undefined);
});

test('remapShapeHints: construction-line figures move with the lines they were measured on', () => {
  const r = fixture('gpt_tiny_cpu_baseline.json');
  const hints = shapeHintsFromReport(r, 'gpt_tiny.py');
  const attn = r.modules.find((m) => m.path === 'h.0.attn.attn_dropout')?.created_at?.line as number;
  const resid = r.modules.find((m) => m.path === 'h.0.attn.resid_dropout')?.created_at?.line as number;
  assert.ok(hints.byLine.has(attn) && hints.byLine.has(resid));
  // One line inserted at the top (a conversion's import): every report line moves down one.
  const mapper = new LineMapper(Array.from({ length: 200 }, (_, i) => i));
  mapper.apply([{ startLine: 0, startCol: 0, endLine: 0, endCol: 0, text: 'import membit\n' }]);
  const moved = remapShapeHints(hints, (l) => {
    const cur = mapper.current(l - 1);
    return cur === undefined ? undefined : cur + 1;
  });
  assert.deepEqual(moved.byLine.get(attn + 1), hints.byLine.get(attn));
  assert.deepEqual(moved.byLine.get(resid + 1), hints.byLine.get(resid));
  // attn_dropout's old line now holds the line above it, not resid_dropout's figure.
  assert.notDeepEqual(moved.byLine.get(resid), hints.byLine.get(resid));
  assert.equal(moved.modules?.find((m) => m.path === 'h.0.attn.attn_dropout')?.createdLine, attn + 1);
  assert.equal(mapper.reportLineAt(attn), attn - 1);
  // A deleted line takes its figures with it.
  const gone = remapShapeHints(hints, (l) => (l === attn ? undefined : l));
  assert.equal(gone.byLine.has(attn), false);
});

test('run labels name the variant, target, time, peak, device and arguments', () => {
  const b = runBrief(fixture('gpt_tiny_cpu_baseline.json'));
  assert.ok(b);
  assert.match(runName(b), /^baseline · local \d\d:\d\d:\d\d$/);
  assert.match(runDetail(b), /^peak [\d.]+ (?:[KMG]i)?B · CPU · --steps/);
  assert.equal(runBrief({ run: 'x' }), undefined);
  assert.equal(runBrief(null), undefined);
});
