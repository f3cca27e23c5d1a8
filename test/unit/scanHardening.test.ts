/**
 * The scanner against pathological inputs: it never hangs (a budget, then `partial` with
 * the reason and the lines), its output is linear in its input, and `membit scan` ends
 * quietly when its reader goes away. Time limits here are hang guards only; the speed
 * figures live in the fuzz benchmark (test/bench/scanFuzzBench.ts).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/core/cli/main';
import { MAX_ARG_CHARS } from '../../src/core/scan/args';
import { capture } from './cliCapture';
import { repoRoot, scanner } from './scanSupport';

const DROPOUT_AFTER = '\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.1)\n';

test('a 60 KB attribute chain is cut at its budget; the statements after it are still read', { timeout: 120_000 }, async () => {
  const s = await scanner();
  // `torch.nn.nn.….Dropout(0.1)`: over 30 s for the query cursor before the budget.
  const text = `import torch\nimport torch.nn as nn\nx = torch.${'nn.'.repeat(20_000)}Dropout(0.1)${DROPOUT_AFTER}`;
  // Room to parse it even on a loaded machine; the query of that one statement needs 30 s.
  const r = s.scan(text, 'chain.py', { budgetMs: 4000 });
  assert.equal(r.error, undefined);
  assert.equal(r.partial?.reason, 'time-budget');
  assert.deepEqual(r.partial.lines, [{ start: 2, end: 2 }]);
  assert.match(r.partial.message, /^Membit: partially scanned, line 3 not read within the 4000 ms scan budget/);
  assert.ok(r.sites.some((x) => x.kind === 'dropout' && x.range.startLine === 7), JSON.stringify(r.sites.map((x) => [x.kind, x.range.startLine])));
});

test('a 20,000-term sum is read under the match limit, and the scan says so', { timeout: 120_000 }, async () => {
  const s = await scanner();
  const text = `import torch.nn as nn\nx = ${Array(20_000).fill('1').join('+')}${DROPOUT_AFTER}`;
  const r = s.scan(text, 'sum.py');
  assert.equal(r.error, undefined);
  assert.equal(r.partial?.reason, 'match-limit');
  assert.deepEqual(r.partial.lines, [{ start: 1, end: 1 }]);
  assert.ok(r.sites.some((x) => x.kind === 'dropout'));
});

test('a budget too small to parse gives a partial result that says the file was not scanned', async () => {
  const s = await scanner();
  const text = `x = ${Array(20_000).fill('(1').join('+')}${')'.repeat(20_000)}\n`;
  const r = s.scan(text, 'p.py', { budgetMs: 1 });
  assert.equal(r.error, undefined);
  assert.equal(r.partial?.reason, 'time-budget');
  assert.match(r.partial.message, /not scanned|not read/);
  // The same text through a document: no exception, the same answer, and it recovers.
  const doc = s.open('p.py', text, { budgetMs: 1 });
  assert.equal(doc.result.partial?.reason, 'time-budget');
  assert.equal(doc.update('import torch.nn as nn\nd = nn.Dropout(0.1)\n', {}).sites.length, 1);
  doc.dispose();
});

test('nested calls: output is linear in the input (arguments are cut), and the batch keeps every file', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-nested-'));
  try {
    // 3,000 deep made 84 MB of JSON (each site repeated the whole nest); 10,000 deep failed
    // with "Invalid string length" and lost the other files' output.
    const depth = 3000;
    const nested = `import torch.nn.functional as F\ny = ${'F.dropout('.repeat(depth)}x${', 0.1)'.repeat(depth)}\n`;
    writeFileSync(join(dir, 'nested.py'), nested);
    writeFileSync(join(dir, 'plain.py'), `import torch.nn as nn${DROPOUT_AFTER}`);
    const io = capture(dir);
    assert.equal(await main(['scan', '--json', '--budget-ms', '0', 'nested.py', 'plain.py'], io), 0, io.stderr);
    const doc = JSON.parse(io.stdout) as { files: { file: string; sites: number }[]; sites: { file: string; args: Record<string, string> }[] };
    assert.equal(doc.files.length, 2);
    assert.ok(doc.sites.some((x) => x.file === 'plain.py'));
    assert.ok(doc.files.find((f) => f.file === 'nested.py')?.sites === depth, JSON.stringify(doc.files));
    for (const site of doc.sites) for (const v of Object.values(site.args)) assert.ok(v.length <= MAX_ARG_CHARS, `${v.length}`);
    assert.ok(io.stdout.length < 400 * nested.length, `${io.stdout.length} bytes of JSON for ${nested.length} bytes of input`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a class with 20,000 Linear pairs is paired in linear time (was 57 s and 521 MB)', { timeout: 90_000 }, async () => {
  const s = await scanner();
  const lines = ['import torch.nn as nn', '', 'class Big(nn.Module):', '    def __init__(self, d):', '        super().__init__()'];
  for (let i = 0; i < 20_000; i++) lines.push(`        self.fc1_${i} = nn.Linear(d, ${i + 2} * d)`, `        self.fc2_${i} = nn.Linear(${i + 2} * d, d)`);
  const r = s.scan(`${lines.join('\n')}\n`, 'big.py', { maxBytes: 8 << 20 });
  assert.equal(r.error, undefined);
  const ffns = r.sites.filter((x) => x.kind === 'ffn');
  // Each fc1_i widens to its own width and fc2_i comes back from it: 20,000 plain pairs.
  assert.equal(ffns.length, 20_000);
  assert.ok(ffns.every((x) => x.ffn?.form === 'pair' && x.ffn.up?.name?.replace('fc1_', '') === x.ffn.down?.name?.replace('fc2_', '')));
});

test('membit scan --json | head: no EPIPE stack trace, the SIGPIPE status', { timeout: 120_000 }, async () => {
  const cli = join(repoRoot(), 'dist', 'cli.js');
  assert.ok(existsSync(cli), `${cli} missing: run node esbuild.mjs --tests`);
  const dir = mkdtempSync(join(tmpdir(), 'membit-epipe-'));
  try {
    const body = Array.from({ length: 3000 }, (_, i) => `        self.d${i} = nn.Dropout(0.1)`).join('\n');
    writeFileSync(join(dir, 'm.py'), `import torch.nn as nn\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n${body}\n`);
    // No budget: all 3,000 sites (3 MB of JSON, far over a pipe's buffer) must be written.
    const child = spawn(process.execPath, [cli, 'scan', '--json', '--budget-ms', '0', 'm.py'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // What `head -c 100` does: read a little, then close the pipe.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    assert.equal(code, 141, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Error|at /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('membit scan reports a partial file in its summary and JSON', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-partial-'));
  try {
    writeFileSync(join(dir, 'chain.py'), `import torch\nx = torch.${'nn.'.repeat(20_000)}Dropout(0.1)\n`);
    const io = capture(dir);
    assert.equal(await main(['scan', '--budget-ms', '4000', 'chain.py'], io), 0, io.stderr);
    assert.match(io.stdout, /chain\.py: partially scanned, line 2 not read within the 4000 ms scan budget/);
    const js = capture(dir);
    assert.equal(await main(['scan', '--json', '--budget-ms', '4000', 'chain.py'], js), 0, js.stderr);
    const doc = JSON.parse(js.stdout) as { files: { partial: { reason: string; lines: { start: number; end: number }[] } | null }[]; summary: { partial: number } };
    assert.equal(doc.files[0]?.partial?.reason, 'time-budget');
    assert.deepEqual(doc.files[0].partial.lines, [{ start: 2, end: 2 }]);
    assert.equal(doc.summary.partial, 1);
    const bad = capture(dir);
    assert.equal(await main(['scan', '--budget-ms', 'soon', 'chain.py'], bad), 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
