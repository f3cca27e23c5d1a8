/**
 * Fuzz: thousands of mutated fixtures (deletions, random bytes including invalid
 * UTF-8 and lone surrogates, truncations, duplicated spans) through one-shot scans
 * and incremental documents. The scanner must not throw, must not report an
 * internal error, and must stay fast on each input.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { FIXTURES, fixture, scanner } from './scanSupport';
import { mutate, rng } from './fuzzInputs';
import { itemAt } from '../../src/core/arrays';


test('fuzz: 3000 mutated inputs never throw and never error', { timeout: 600_000 }, async () => {
  const s = await scanner();
  const sources = readdirSync(FIXTURES())
    .filter((f) => f.endsWith('.py'))
    .sort()
    .map((f) => fixture(f));
  const r = rng(20261122);
  let worst = 0;
  let total = 0;
  const N = 3000;
  for (let i = 0; i < N; i++) {
    const src = itemAt(sources, r(sources.length));
    // A window of the fixture keeps each input small and the whole test quick.
    const start = r(Math.max(1, src.length - 1500));
    const input = mutate(src.slice(start, start + 300 + r(1500)), r, 4, 200);
    const t0 = performance.now();
    const res = s.scan(input, 'fuzz.py');
    const ms = performance.now() - t0;
    total += ms;
    worst = Math.max(worst, ms);
    assert.equal(res.error, undefined, `input ${i}: ${res.error}\n${JSON.stringify(input)}`);
    assert.ok(Array.isArray(res.sites));
  }
  // Times are for the record only (a test must not fail on a loaded machine): speed is
  // held by the fuzz benchmark, test/bench/scanFuzzBench.ts.
  console.log(`fuzz: ${N} inputs, mean ${(total / N).toFixed(2)} ms, worst ${worst.toFixed(1)} ms`);
});

test('fuzz: incremental documents survive 1000 random edits and match fresh scans', async () => {
  const s = await scanner();
  const r = rng(99);
  let text = fixture('nanogpt_style.py');
  const doc = s.open('fuzz.py', text);
  for (let i = 0; i < 1000; i++) {
    text = r(20) === 0 ? fixture('timm_style.py') : mutate(text, r, 4, 200).slice(0, 20000);
    const inc = doc.update(text);
    assert.equal(inc.error, undefined, `edit ${i}: ${inc.error}`);
    if (i % 50 === 0) {
      const fresh = s.scan(text, 'fuzz.py');
      assert.deepEqual(
        inc.sites.map((x) => [x.kind, x.range]),
        fresh.sites.map((x) => [x.kind, x.range]),
        `edit ${i}`,
      );
    }
  }
  doc.dispose();
});

test('pathological inputs scan completely: deep nesting, one huge line, thousands of sites on a line', { timeout: 300_000 }, async () => {
  const s = await scanner();
  const inputs = [
    `import torch.nn as nn\nx = nn.Linear(${'('.repeat(3000)}1${')'.repeat(3000)}, 4)\n`,
    `import torch.nn as nn\nx = [${'nn.Dropout(0.1), '.repeat(5000)}]\n`,
    `x = "${'a'.repeat(1_000_000)}"\n`,
    `${'if x:\n'.repeat(1)}${Array.from({ length: 400 }, (_, i) => `${' '.repeat(i)}if a:`).join('\n')}\n`,
    '\u0000\uffff\ud800'.repeat(10000),
    `import torch.nn.functional as F\ndef f(x):\n${'    x = F.softmax(x, -1)\n    x = F.dropout(x, 0.1)\n'.repeat(2000)}`,
    // The advisor's attention chains: one 3000-deep product, and 3000 chains in one function.
    `import torch.nn.functional as F\ndef f(q):\n    x = ${Array.from({ length: 3000 }, () => 'q').join(' @ ')}\n    return F.softmax(x, -1) @ q\n`,
    `import torch.nn.functional as F\ndef f(q, k, v):\n${'    s = q @ k\n    p = F.softmax(s, -1)\n    o = p @ v\n'.repeat(3000)}`,
  ];
  for (const [i, text] of inputs.entries()) {
    // No time budget here (the results must be complete) and no timing assertion (the
    // test's timeout is the hang guard); their speed is held by test/bench/scanFuzzBench.ts.
    const r = s.scan(text, 'p.py');
    assert.equal(r.error, undefined, `input ${i}: ${r.error}`);
    // The 3000-deep product exceeds the query's match limit, and says so; its finding stays.
    assert.equal(r.partial?.reason, i === 6 ? 'match-limit' : undefined, `input ${i}: ${r.partial?.message}`);
    if (i === 1) assert.equal(r.sites.length, 5000);
    if (i === 5) assert.ok(r.sites.every((x) => x.kind === 'attn-dropout') && r.sites.length === 2000);
    if (i === 6) assert.deepEqual(r.sites.map((x) => x.kind), ['eager-attn']);
    if (i === 7) assert.ok(r.sites.every((x) => x.kind === 'eager-attn') && r.sites.length === 3000);
  }
});
