// Variant names and the run side of the sdpa lever: names parsed and spelled like the
// harness does, the schema's and the settings' patterns accepting exactly the canonical
// names, overlay argv entries that survive hostile file names, and the search for files
// the advisor can rewrite. The last test runs the real harness on the GPT sample through
// the same ProfileRun the extension uses, from a folder whose names need quoting.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { compareRuns, comparisonMarkdown } from '../../src/core/report/compare';
import { validate } from '../../src/core/report/jsonSchema';
import { parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { harnessArgv } from '../../src/core/run/harness';
import { findSdpaOverlays, replacementName, writeOverlays } from '../../src/core/run/overlays';
import { createRun, type RunEvent } from '../../src/core/run/target';
import { ADVISOR_LEVERS, ALL_ADVISOR_LEVERS, canonicalVariant, describeVariant, hasLever, LEVERS, parseVariant, VariantError, variantName } from '../../src/core/run/variants';
import { reportFixture } from './reportFixtures';
import { itemAt } from '../../src/core/arrays';

const REPO = resolve(__dirname, '..', '..', '..');
const GPT = join(REPO, 'samples', 'gpt_tiny.py');
const NANOGPT = join(REPO, 'test', 'fixtures', 'scan', 'nanogpt_style.py');
// Eager attention only: nanoGPT's own is the fallback of its SDPA path and is left alone.
const MINGPT = join(REPO, 'test', 'fixtures', 'scan', 'mingpt_style.py');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');

test('variant names: canonical order, old names unchanged, any order accepted', () => {
  for (const old of ['baseline', 'packed', 'recompute', 'sparse24', 'packed+sparse24']) assert.equal(canonicalVariant(old), old);
  assert.equal(canonicalVariant('bf16+sdpa+checkpoint'), ALL_ADVISOR_LEVERS);
  assert.equal(canonicalVariant(' checkpoint+packed '), 'packed+checkpoint');
  assert.deepEqual(parseVariant('sparse24+recompute+bf16'), ['recompute', 'sparse24', 'bf16']);
  assert.deepEqual(parseVariant('baseline'), []);
  assert.equal(variantName(['bf16', 'sdpa']), 'sdpa+bf16');
  assert.equal(variantName([]), 'baseline');
  assert.deepEqual(ADVISOR_LEVERS, ['sdpa', 'checkpoint', 'bf16']);
  assert.equal(hasLever('checkpoint+sdpa', 'sdpa'), true);
  assert.equal(hasLever('packed', 'sdpa'), false);
  assert.equal(hasLever('nonsense', 'sdpa'), false);
  assert.equal(describeVariant('sdpa+bf16'), 'fused attention (SDPA) + bf16 autocast');
  assert.equal(canonicalVariant('compile+packed'), 'packed+compile');
  assert.equal(describeVariant('compile'), 'torch.compile of the forward');
});

test('bad variant names say what is wrong and what to write', () => {
  const cases: [string, RegExp][] = [
    ['', /write "baseline" or levers joined by "\+"/],
    ['sdpa+', /write "baseline"/],
    ['flash', /unknown lever\(s\) "flash"/],
    ['baseline+sdpa', /"baseline" stands alone/],
    ['sdpa+sdpa', /names sdpa twice/],
    ['packed+recompute', /pick one/],
  ];
  for (const [bad, says] of cases) assert.throws(() => parseVariant(bad), (e: unknown) => e instanceof VariantError && says.test(e.message), bad);
});

/** Every valid set of levers (packed and recompute exclusive). */
function allLeverSets(): string[][] {
  const out: string[][] = [];
  for (let mask = 1; mask < 1 << LEVERS.length; mask++) {
    const set = LEVERS.filter((_, i) => mask & (1 << i));
    if (set.includes('packed') && set.includes('recompute')) continue;
    out.push(set);
  }
  return out;
}

test("the report schema's variant pattern accepts exactly the canonical names, and package.json's is the same", () => {
  const run = (REPORT_SCHEMA as { properties: { run: { properties: { variant: { pattern: string } } } } }).properties.run.properties.variant;
  const re = new RegExp(run.pattern, 'u');
  const sets = allLeverSets();
  assert.equal(sets.length, 95);
  for (const set of sets) {
    const name = variantName(set as never[]);
    assert.ok(re.test(name), name);
    if (set.length > 1) assert.equal(re.test([...set].reverse().join('+')), false, `non-canonical ${[...set].reverse().join('+')}`);
  }
  for (const bad of ['', 'baseline+sdpa', 'packed+recompute', 'sdpa+', 'sdpa+sdpa', 'x']) assert.equal(re.test(bad), false, bad);
  assert.ok(re.test('baseline'));
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
    contributes: { configuration: { properties: Record<string, { items: { properties: { variants: { items: { pattern: string } } } } }> } };
  };
  assert.equal(pkg.contributes.configuration.properties['membit.runs']?.items.properties.variants.items.pattern, run.pattern);
});

test('overlays become one argv entry each, whatever the file names hold', () => {
  const hostile = ["/w/a b/$(rm -rf ~)/x'y\"z.py", '/w/new\nline=odd.py', '/w/ünï;|&.py'];
  const overlays = hostile.map((orig, i) => ({ orig, replacement: `/tmp/ov dir/${replacementName(i, orig)}` }));
  const argv = harnessArgv({ python: 'python3', script: itemAt(hostile, 0), scriptArgs: ['--x', '$HOME'], out: '/o/r.json', variant: 'sdpa', overlays });
  const at = argv.indexOf('--');
  assert.deepEqual(argv.slice(at), ['--', hostile[0], '--x', '$HOME']);
  const flags = argv.slice(0, at);
  assert.deepEqual(
    flags.filter((_, i) => flags[i - 1] === '--overlay'),
    overlays.map((o) => `${o.orig}=${o.replacement}`),
  );
  assert.equal(flags.filter((a) => a === '--overlay').length, 3);
  // Replacement names are ours: never an '=' (the harness splits on it) nor anything that needs quoting.
  for (const [i, orig] of hostile.entries()) assert.match(replacementName(i, orig), /^\d+-[A-Za-z0-9._-]+$/);
  assert.equal(replacementName(1, '/w/new\nline=odd.py'), '1-new_line_odd.py');
});

test('the sdpa search rewrites eager attention in the script and the files beside it, bounded', async () => {
  const ws = mkdtempSync(join(tmpdir(), 'membit-variants-'));
  mkdirSync(join(ws, 'train'), { recursive: true });
  mkdirSync(join(ws, 'models'), { recursive: true });
  mkdirSync(join(ws, '.venv', 'lib'), { recursive: true });
  cpSync(GPT, join(ws, 'train', 'run.py'));
  cpSync(MINGPT, join(ws, 'models', 'nano.py'));
  cpSync(NANOGPT, join(ws, '.venv', 'lib', 'vendored.py'));
  writeFileSync(join(ws, 'models', 'plain.py'), 'def f(x):\n    return x.softmax(-1)\n');
  // A link is not followed: it may lead out of the workspace.
  symlinkSync(NANOGPT, join(ws, 'models', 'linked.py'));
  writeFileSync(join(ws, 'huge.py'), readFileSync(NANOGPT, 'utf8') + '#'.repeat(64 * 1024));
  const found = await findSdpaOverlays(join(ws, 'train', 'run.py'), ws, { maxBytes: 32 * 1024 });
  assert.deepEqual(found.overlays.map((o) => o.orig), [join(ws, 'train', 'run.py'), join(ws, 'models', 'nano.py')]);
  for (const o of found.overlays) {
    assert.match(o.text, /scaled_dot_product_attention/);
    assert.notEqual(o.text, readFileSync(o.orig, 'utf8'));
    assert.ok(o.changes.length >= 1 && o.changes.every((c) => /^line \d+: /.test(c)), o.changes.join('; '));
  }
  assert.deepEqual(found.tooLarge, [join(ws, 'huge.py')]);
  assert.equal(found.truncated, false);
  // The user's files are untouched by the search.
  assert.equal(readFileSync(join(ws, 'train', 'run.py'), 'utf8'), readFileSync(GPT, 'utf8'));
  // At most maxFiles files are read, the script first.
  const few = await findSdpaOverlays(join(ws, 'train', 'run.py'), ws, { maxFiles: 1 });
  assert.equal(few.searched, 1);
  assert.equal(few.truncated, true);
  assert.deepEqual(few.overlays.map((o) => o.orig), [join(ws, 'train', 'run.py')]);
  // Written to a private folder, removed on dispose.
  const w = writeOverlays(found.overlays);
  assert.deepEqual(readdirSync(w.dir).sort(), ['0-run.py', '1-nano.py']);
  assert.equal(readFileSync(join(w.dir, '0-run.py'), 'utf8'), found.overlays[0]?.text);
  w.dispose();
  assert.equal(existsSync(w.dir), false);
});

test('a local sdpa run executes the rewrite from a folder with hostile names, and leaves no temporary files', async () => {
  const ws = mkdtempSync(join(tmpdir(), "membit ws $(x) 'q'=1 "));
  const dir = join(ws, 'my models=v2');
  mkdirSync(dir);
  const script = join(dir, 'gpt tiny "x".py');
  cpSync(GPT, script);
  const out = join(ws, 'report.json');
  const before = new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('membit-overlays-')));
  const logs: string[] = [];
  const run = createRun(
    { kind: 'local', python: PYTHON },
    {
      workspace: ws,
      script,
      args: ['--steps', '5', '--batch-size', '2', '--seq-len', '32', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '100000', '--device', 'cpu'],
      variant: 'sdpa',
      steps: 1,
      warmup: 1,
      out,
    },
    { kernelsDir: join(REPO, 'kernels') },
  );
  run.onEvent((e: RunEvent) => {
    if (e.type === 'log') logs.push(e.message);
  });
  const outcome = await run.start();
  assert.equal(outcome.state, 'done', `${outcome.message ?? ''}\n${outcome.stderrTail.join('\n')}`);
  const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
  assert.deepEqual(validate(REPORT_SCHEMA, report), []);
  const rel = 'my models=v2/gpt tiny "x".py';
  assert.equal(report.run.variant, 'sdpa');
  assert.equal(report.run.script, rel);
  assert.match(report.run.levers?.[0]?.how ?? '', /^eager attention rewritten to scaled_dot_product_attention in my models=v2\/gpt tiny "x"\.py \(--overlay\); 2 scaled_dot_product_attention call\(s\) in the first forward$/);
  assert.equal(report.run.overlays?.[0]?.file, rel);
  assert.ok(logs.some((l) => l.startsWith("sdpa: this run uses the advisor's rewrite of my models=v2/gpt tiny \"x\".py")), logs.join('\n'));
  // The user's script is unchanged and the replacement folder is gone.
  assert.equal(readFileSync(script, 'utf8'), readFileSync(GPT, 'utf8'));
  assert.deepEqual(readdirSync(tmpdir()).filter((n) => n.startsWith('membit-overlays-') && !before.has(n)), []);

  // The comparison says how the lever was applied and where line figures are approximate,
  // next to a baseline written before levers existed (which the reader still accepts).
  const oldPath = reportFixture('gpt_tiny_cpu_baseline.json');
  const old = parseReport(readFileSync(oldPath, 'utf8'), REPORT_SCHEMA, oldPath);
  assert.ok(old.ok, old.ok ? '' : old.error);
  const c = compareRuns([
    { label: 'baseline', report: old.report },
    { label: 'sdpa', report },
  ]);
  assert.deepEqual(c.rows[0]?.levers, []);
  assert.match(c.rows[1]?.levers[0] ?? '', /^sdpa: eager attention rewritten to scaled_dot_product_attention in /);
  const first = readFileSync(GPT, 'utf8').split('\n').findIndex((l) => l.includes('att = (q @ k.transpose')) + 1;
  const last = readFileSync(GPT, 'utf8').split('\n').findIndex((l) => l.includes('y = att @ v')) + 1;
  assert.deepEqual(c.rows[1]?.approximate, [`${rel} lines ${first}–${last}`]);
  const md = comparisonMarkdown(c).split('\n');
  assert.ok(md.includes(`- sdpa: ${c.rows[1].levers[0] ?? ''}`), md.join('\n'));
  assert.ok(md.includes(`- sdpa: ran rewritten source; line figures approximate in ${rel} lines ${first}–${last}`), md.join('\n'));
});
