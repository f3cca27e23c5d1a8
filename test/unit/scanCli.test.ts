import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { collectFiles, type ScanJson } from '../../src/core/cli/scan';
import { FIXTURES } from './scanSupport';
import { itemAt } from '../../src/core/arrays';


function workspace(): string {
  const dir = mkdtempSync(join(tmpdir(), 'membit-scan-'));
  const drop = 'import torch.nn as nn\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.d = nn.Dropout(0.1)\n';
  writeFileSync(join(dir, 'a.py'), drop);
  mkdirSync(join(dir, 'pkg', 'sub'), { recursive: true });
  writeFileSync(join(dir, 'pkg', 'sub', 'b.py'), 'import torch.nn.functional as F\ny = F.dropout(x, 0.2)\n');
  writeFileSync(join(dir, 'pkg', 'notes.txt'), 'nn.Dropout(0.1)\n');
  // Not scanned: VCS data, dependencies, virtual environments.
  for (const d of ['.git', 'node_modules/pkg', 'env']) {
    mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, d, 'c.py'), drop);
  }
  writeFileSync(join(dir, 'env', 'pyvenv.cfg'), 'home = /usr/bin\n');
  // Invalid UTF-8 in a comment must not stop the scan.
  writeFileSync(join(dir, 'latin1.py'), Buffer.concat([Buffer.from('# caf\xe9 \xff\xfe\n', 'latin1'), Buffer.from(drop)]));
  writeFileSync(join(dir, 'nb.ipynb'), readFileSync(join(FIXTURES(), 'notebook_style.ipynb')));
  return dir;
}

test('membit scan --json over a folder: stable shape, 1-based positions, skipped folders', async () => {
  const dir = workspace();
  try {
    const io = capture(dir);
    assert.equal(await main(['scan', '.', '--json', '--batch', '4', '--seq-len', '128'], io), 0, io.stderr);
    const doc = JSON.parse(io.stdout) as ScanJson;
    assert.equal(doc.schema, 'membit.scan/1');
    assert.deepEqual(
      doc.files.map((f: { file: string; status: string }) => [f.file, f.status]),
      [
        ['a.py', 'ok'],
        ['latin1.py', 'ok'],
        ['nb.ipynb', 'ok'],
        ['pkg/sub/b.py', 'ok'],
      ],
    );
    const a = doc.sites.find((s) => s.file === 'a.py');
    assert.ok(a);
    assert.deepEqual(Object.keys(a), [
      'file', 'line', 'column', 'endLine', 'endColumn', 'cell', 'kind', 'class', 'function', 'callee', 'resolved', 'binding', 'aliasOf', 'args', 'estimate', 'code', 'message', 'remedy', 'ffn',
      // Added with the memory advisor (fields are only ever added).
      'advice', 'attention', 'severity',
    ]);
    assert.deepEqual([a.line, a.column, a.kind, a.class, a.function, a.args, a.cell], [6, 18, 'dropout', 'M', '__init__', { p: '0.1' }, null]);
    assert.deepEqual(Object.keys(a.estimate), ['source', 'elements', 'maskBytes', 'packedBytes', 'perSample', 'shape', 'note', 'stateBytes']);
    assert.equal(a.estimate.source, 'unknown');
    const nb = doc.sites.filter((s) => s.file === 'nb.ipynb');
    assert.ok(nb.length >= 5);
    assert.ok(nb.every((s) => s.cell !== null && s.cell >= 1));
    const ffn = nb.find((s) => s.kind === 'ffn')?.ffn;
    assert.ok(ffn);
    assert.equal(ffn.form, 'pair');
    assert.equal(ffn.up?.name, 'net.0');
    assert.equal(doc.summary.sites, doc.sites.length);
    assert.equal((doc.summary.byKind['dropout'] ?? 0) >= 2, true);
    assert.equal(doc.sites.find((s) => s.file === 'latin1.py')?.line, 7);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('membit scan prints a table by default, and names files it skipped', async () => {
  const dir = workspace();
  try {
    writeFileSync(join(dir, 'big.py'), `import torch.nn as nn\n${'d = nn.Dropout(0.1)\n'.repeat(200)}`);
    const io = capture(dir);
    assert.equal(await main(['scan', 'a.py', 'big.py', 'pkg', '--max-size-kb', '1'], io), 0, io.stderr);
    const lines = io.stdout.split('\n');
    assert.match(itemAt(lines, 0), /^LOCATION\s+KIND\s+CLASS\s+CALL\s+ESTIMATE$/);
    assert.match(io.stdout, /^a\.py:6:18\s+dropout\s+M\s+nn\.Dropout\(p=0\.1\)\s+dropout mask: shape unknown$/m);
    assert.match(io.stdout, /^pkg\/sub\/b\.py:2:5\s+dropout-call\s+-\s+F\.dropout\(p=0\.2\)/m);
    assert.match(io.stdout, /^2 sites in 2 files \(1 dropout, 1 dropout-call\)$/m);
    assert.match(io.stdout, /big\.py: skipped: [\d.]+ KiB is over the 1 KiB limit/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('membit scan: a missing path is a usage error naming it; no path at all too', async () => {
  const io = capture(process.cwd());
  assert.equal(await main(['scan', 'does/not/exist.py'], io), 2);
  assert.match(io.stderr, /no such file or folder: does\/not\/exist\.py/);
  const io2 = capture(process.cwd());
  assert.equal(await main(['scan'], io2), 2);
  assert.match(io2.stderr, /give at least one file or folder/);
  const io3 = capture(process.cwd());
  assert.equal(await main(['scan', '.', '--batch', 'many'], io3), 2);
  assert.match(io3.stderr, /--batch needs a positive integer/);
});

test('membit scan --report uses measured figures for the files it names', async () => {
  const dir = workspace();
  try {
    writeFileSync(join(dir, 'r.json'), JSON.stringify({ schema: 'membit.report/1', sites: [{ kind: 'dropout', file: 'a.py', line: 6, elements: 1048576, mask_bytes: 1048576 }] }));
    const io = capture(dir);
    assert.equal(await main(['scan', 'a.py', '--json', '--report', 'r.json'], io), 0, io.stderr);
    const [site] = (JSON.parse(io.stdout) as ScanJson).sites;
    assert.ok(site);
    assert.deepEqual([site.estimate.source, site.estimate.maskBytes, site.estimate.packedBytes], ['report', 1048576, 131072]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('collectFiles lists .py and .ipynb files in name order and follows no link', () => {
  const dir = workspace();
  const outside = mkdtempSync(join(tmpdir(), 'membit-scan-outside-'));
  try {
    writeFileSync(join(outside, 'far.py'), 'x = 1\n');
    symlinkSync(outside, join(dir, 'linked-folder'));
    symlinkSync(join(dir, 'a.py'), join(dir, 'z-link.py'));
    writeFileSync(join(dir, 'B.py'), 'x = 1\n');
    const rel = collectFiles(dir).map((f) => f.slice(dir.length + 1));
    assert.deepEqual(rel, ['B.py', 'a.py', 'latin1.py', 'nb.ipynb', join('pkg', 'sub', 'b.py')]);
    assert.deepEqual(collectFiles(join(dir, 'missing')), [], 'a folder that is gone lists nothing');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});
