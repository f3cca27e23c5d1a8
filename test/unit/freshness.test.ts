import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { freshness, profiledHash, remapShapeHints, textSha256 } from '../../src/core/report/freshness';
import { LineMapper } from '../../src/core/report/lineMap';
import { layerCount } from '../../src/core/report/model';
import { contradicts, formatLeverMeasurement, leverDeltas } from '../../src/core/report/leverDeltas';
import { runBrief, runDetail, runName } from '../../src/core/report/runLabel';
import type { Report } from '../../src/core/report/types';
import { formatHint, formatHover, shapeHintsFromReport } from '../../src/core/scan';
import { formatBytes } from '../../src/core/units';
import { scanner } from './scanSupport';
import { repoRoot } from './nativeFakes';
import { defined } from '../defined';

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
  const attn = defined(r.modules.find((m) => m.path === 'h.0.attn.attn_dropout')?.created_at?.line, 'attn_dropout line');
  const resid = defined(r.modules.find((m) => m.path === 'h.0.attn.resid_dropout')?.created_at?.line, 'resid_dropout line');
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

test('scope: a construction line sums every layer built there, in the run device\'s bytes, and says so', async () => {
  const r = fixture('gpt_tiny_cpu_baseline.json');
  const hints = shapeHintsFromReport(r, 'gpt_tiny.py');
  const site = r.sites.find((s) => s.module === 'h.*.attn.attn_dropout');
  const built = r.modules.filter((m) => m.path.endsWith('.attn.attn_dropout'));
  const line = defined(built[0]?.created_at?.line, 'line');
  assert.ok(site && built.length === 2);
  // Both layers, with the elements of the site they ran as: not one layer's bytes.
  assert.deepEqual(hints.byLine.get(line), { elements: site.elements, maskBytes: site.mask_bytes, instances: 2, device: 'cpu' });
  assert.equal(site.mask_bytes, built.reduce((a, m) => a + m.mask_bytes, 0));
  const s = await scanner();
  const res = s.scan(sample, 'gpt_tiny.py', { hints });
  const ctor = res.sites.find((x) => x.range.startLine === line - 1);
  assert.ok(ctor, res.sites.map((x) => `${x.kind}@${x.range.startLine + 1}`).join(', '));
  const hint = formatHint(ctor);
  // The same figure the overlays print for the call line (the report's mask bytes), its packed size from the elements.
  assert.equal(hint, `attn dropout mask ${formatBytes(site.mask_bytes)} → ${formatBytes(Math.ceil(site.elements / 8))} packed (measured, 2× summed, CPU)`);
  const hover = formatHover(ctor, null);
  assert.match(hover, /summed over 2 instances \(layers or calls\), on CPU: dropout masks take 4 B per element there \(1 B on CUDA\)/);
  assert.doesNotMatch(hover, /measured in the (latest profile run|run the editor shows)[^\n]*measured in the/);
  assert.match(hover, /\n\n\| \| now \| packed \| saved \|/);
});

test('leverDeltas: each single-lever variant of the same configuration after the baseline, and contradictions', () => {
  const base = runBrief(fixture('gpt_tiny_cpu_baseline.json'));
  const packed = runBrief(fixture('gpt_tiny_cpu_packed.json'));
  assert.ok(base && packed && base.peak && packed.peak);
  const later = (b: typeof base, variant: string, peak: number, extra: Partial<typeof base> = {}) => ({ ...b, variant, peak, started: new Date(Date.parse(base.started) + 60_000).toISOString(), ...extra });
  const runs = [
    { ...packed, argv: base.argv, started: later(base, 'x', 0).started },
    later(base, 'sdpa', base.peak * 0.999),
    later(base, 'sdpa+bf16', base.peak / 2),
    later(base, 'checkpoint', base.peak / 5, { argv: ['--other'] }),
    later(base, 'bf16', base.peak / 2, { started: new Date(Date.parse(base.started) - 60_000).toISOString() }),
  ];
  const m = leverDeltas(base, runs);
  assert.deepEqual([...m.keys()].sort(), ['packed', 'sdpa']);
  const p = m.get('packed');
  assert.ok(p && p.rel < 0 && p.savedBytes === base.peak - packed.peak);
  const sdpa = m.get('sdpa');
  assert.ok(sdpa);
  assert.match(formatLeverMeasurement(sdpa), /^sdpa: −0\.1% peak \(measured, run sdpa · local \d\d:\d\d:\d\d\)$/);
  // An estimate of 24 MiB saved, measured as no saving: contradicted.
  assert.equal(contradicts(sdpa, 24 * 1024 * 1024), true);
  assert.equal(contradicts(p, 1), false);
});

test('layerCount: a wildcard path counts the layers it sums over, not every child it covers', () => {
  const paths = ['h.0.attn', 'h.0.attn.c_attn', 'h.0.attn.resid_dropout', 'h.1.attn', 'h.1.attn.c_attn', 'h.1.attn.resid_dropout', 'drop'];
  assert.equal(layerCount('h.*.attn', paths), 2);
  assert.equal(layerCount('h.*.attn.*', paths), 2);
  assert.equal(layerCount('*', paths), 1);
  assert.equal(layerCount('nothing.*', paths), 1);
});
