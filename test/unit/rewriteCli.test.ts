/**
 * `membit convert` end to end on temporary folders: diffs that apply, writes that
 * revert exactly, refusals that leave files untouched, exit codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { capture } from './cliCapture';
import { convertFile } from '../../src/core/cli/convert';
import { main } from '../../src/core/cli/main';
import { FIXTURES, scanner } from './scanSupport';


const A = `import torch.nn as nn


class M(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)
`;
const B = 'import torch.nn.functional as F\n\n\ndef f(x):\n    return F.dropout(x, 0.2)\n';

function workspace(): string {
  const dir = mkdtempSync(join(tmpdir(), 'membit-convert-'));
  writeFileSync(join(dir, 'a.py'), A);
  mkdirSync(join(dir, 'pkg'), { recursive: true });
  // A BOM and CRLF line breaks survive a conversion.
  writeFileSync(join(dir, 'pkg', 'b.py'), `\uFEFF${B.replace(/\n/g, '\r\n')}`);
  mkdirSync(join(dir, '.git'), { recursive: true });
  writeFileSync(join(dir, '.git', 'c.py'), A);
  writeFileSync(join(dir, 'nb.ipynb'), readFileSync(join(FIXTURES(), 'notebook_style.ipynb')));
  return dir;
}

function read(dir: string, f: string): string {
  return readFileSync(join(dir, f), 'utf8');
}

test('--diff prints a patch that git apply turns into exactly what a write produces, and writes nothing', async () => {
  const dir = workspace();
  const copy = mkdtempSync(join(tmpdir(), 'membit-convert-copy-'));
  try {
    const io = capture(dir);
    assert.equal(await main(['convert', '.', '--diff'], io), 0, io.stderr);
    assert.equal(read(dir, 'a.py'), A, '--diff wrote a file');
    assert.match(io.stdout, /^--- a\/a\.py\n\+\+\+ b\/a\.py\n@@ /);
    assert.match(io.stdout, /^\+import membit\.nn {2}# added by membit$/m);
    assert.doesNotMatch(io.stdout, /\.git\/c\.py|nb\.ipynb/);
    assert.match(io.stderr, /nb\.ipynb: skipped: notebooks are converted in the editor/);
    assert.match(io.stderr, /2 calls to be converted in 2 files \(nothing written\)/);

    cpSync(dir, copy, { recursive: true });
    writeFileSync(join(copy, 'p.diff'), io.stdout);
    const applied = spawnSync('git', ['apply', '--whitespace=nowarn', 'p.diff'], { cwd: copy, encoding: 'utf8' });
    assert.equal(applied.status, 0, applied.stderr);
    const w = capture(dir);
    assert.equal(await main(['convert', '.'], w), 0, w.stderr);
    for (const f of ['a.py', 'pkg/b.py']) assert.equal(readFileSync(join(copy, f), 'utf8'), read(dir, f), f);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(copy, { recursive: true, force: true });
  }
});

test('--diff round-trips through git apply --check in a repository: nested, CRLF, odd names, absolute paths', async () => {
  const repo = mkdtempSync(join(tmpdir(), 'membit-convert-repo-'));
  const written = mkdtempSync(join(tmpdir(), 'membit-convert-written-'));
  const elsewhere = mkdtempSync(join(tmpdir(), 'membit-convert-cwd-'));
  const git = (...argv: string[]) => spawnSync('git', ['-c', 'user.name=m', '-c', 'user.email=m@example.com', '-c', 'core.autocrlf=false', ...argv], { cwd: repo, encoding: 'utf8' });
  try {
    writeFileSync(join(repo, 'a.py'), A);
    mkdirSync(join(repo, 'pkg'));
    writeFileSync(join(repo, 'pkg', 'b.py'), `\uFEFF${B.replace(/\n/g, '\r\n')}`);
    writeFileSync(join(repo, 'odd\nname "x".py'), A);
    for (const argv of [['init', '-q'], ['add', '-A'], ['commit', '-qm', 'models']]) assert.equal(git(...argv).status, 0, argv.join(' '));
    cpSync(repo, written, { recursive: true });
    const w = capture(written);
    assert.equal(await main(['convert', '.'], w), 0, w.stderr);

    const io = capture(repo);
    assert.equal(await main(['convert', '.', '--diff'], io), 0, io.stderr);
    assert.match(io.stdout, /^--- "a\/odd\\nname \\"x\\"\.py"$/m);
    const patch = join(elsewhere, 'p.diff');
    writeFileSync(patch, io.stdout);
    const check = git('apply', '--check', '--index', patch);
    assert.equal(check.status, 0, check.stderr);
    const applied = git('apply', '--index', patch);
    assert.equal(applied.status, 0, applied.stderr);
    for (const f of ['a.py', 'pkg/b.py', 'odd\nname "x".py']) assert.equal(readFileSync(join(repo, f), 'utf8'), readFileSync(join(written, f), 'utf8'), f);

    // A file outside the current folder is named from the filesystem root: with the
    // repository's own components stripped, git applies it from the repository's top.
    assert.equal(git('reset', '-q', '--hard').status, 0);
    const abs = capture(elsewhere);
    assert.equal(await main(['convert', join(repo, 'pkg', 'b.py'), '--diff'], abs), 0, abs.stderr);
    assert.match(abs.stdout, new RegExp(`^--- a${repo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/pkg/b\\.py$`, 'm'));
    writeFileSync(patch, abs.stdout);
    const strip = `-p${1 + repo.split('/').filter(Boolean).length}`;
    const absCheck = git('apply', '--check', strip, patch);
    assert.equal(absCheck.status, 0, absCheck.stderr);
  } finally {
    for (const d of [repo, written, elsewhere]) rmSync(d, { recursive: true, force: true });
  }
});

test('write, convert again (nothing), then --revert restores every byte', async () => {
  const dir = workspace();
  try {
    const before = { a: read(dir, 'a.py'), b: readFileSync(join(dir, 'pkg', 'b.py')) };
    const io = capture(dir);
    assert.equal(await main(['convert', 'a.py', 'pkg', '--dropout', 'recompute', '--ffn', '2:4'], io), 0, io.stderr);
    assert.match(io.stdout, /a\.py:9:21: converted nn\.Dropout -> membit\.nn\.PackedDropout/);
    assert.match(io.stdout, /a\.py:7:\d+: converted nn\.Linear -> membit\.sparse\.SparseLinear24 \(up projection\)/);
    assert.match(io.stdout, /4 calls converted in 2 files/);
    assert.match(read(dir, 'a.py'), /self\.drop = membit\.nn\.PackedDropout\(0\.1, mode="recompute"\)/);
    const b = readFileSync(join(dir, 'pkg', 'b.py'), 'utf8');
    assert.ok(b.startsWith('\uFEFFimport torch.nn.functional as F\r\nimport membit.nn  # added by membit\r\n'), JSON.stringify(b));

    const again = capture(dir);
    assert.equal(await main(['convert', '.', '--dropout', 'recompute', '--ffn', '2:4'], again), 0);
    assert.match(again.stdout, /0 calls converted in 0 files/);

    const back = capture(dir);
    assert.equal(await main(['convert', '.', '--revert'], back), 0, back.stderr);
    assert.match(back.stdout, /reverted membit\.nn\.PackedDropout -> nn\.Dropout/);
    assert.equal(read(dir, 'a.py'), before.a);
    assert.ok(readFileSync(join(dir, 'pkg', 'b.py')).equals(before.b));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('defaults: no flag converts dropout only; --ffn alone converts FFNs only; --dry-run writes nothing', async () => {
  const dir = workspace();
  try {
    const dry = capture(dir);
    assert.equal(await main(['convert', 'a.py', '--dry-run'], dry), 0);
    assert.match(dry.stdout, /would convert nn\.Dropout -> membit\.nn\.PackedDropout/);
    assert.doesNotMatch(dry.stdout, /Linear/);
    assert.equal(read(dir, 'a.py'), A);
    const ffn = capture(dir);
    assert.equal(await main(['convert', 'a.py', '--ffn', '2:4'], ffn), 0);
    assert.match(read(dir, 'a.py'), /membit\.sparse\.SparseLinear24\(d, 4 \* d\)/);
    assert.match(read(dir, 'a.py'), /self\.drop = nn\.Dropout\(0\.1\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('refused, untouched, exit 1: git conflict markers, invalid UTF-8; the other files are still converted', async () => {
  const dir = workspace();
  try {
    const conflict = `import torch.nn as nn\n<<<<<<< HEAD\nd = nn.Dropout(0.1)\n=======\nd = nn.Dropout(0.2)\n>>>>>>> branch\n`;
    writeFileSync(join(dir, 'conflict.py'), conflict);
    const latin = Buffer.concat([Buffer.from('# caf\xe9\n', 'latin1'), Buffer.from(A)]);
    writeFileSync(join(dir, 'latin1.py'), latin);
    const io = capture(dir);
    assert.equal(await main(['convert', '.'], io), 1);
    assert.match(io.stdout, /conflict\.py: refused: has git conflict markers/);
    assert.match(io.stdout, /latin1\.py: refused: not valid UTF-8/);
    assert.match(io.stdout, /2 files refused or failed/);
    assert.equal(read(dir, 'conflict.py'), conflict);
    assert.ok(readFileSync(join(dir, 'latin1.py')).equals(latin));
    assert.match(read(dir, 'a.py'), /PackedDropout/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a file that changes between read and write is refused and keeps the newer content', async () => {
  const dir = workspace();
  try {
    const file = join(dir, 'a.py');
    const s = await scanner();
    const edited = `${A}# saved by an editor meanwhile\n`;
    const r = await convertFile(file, 'a.py', { kind: 'convert', options: { dropout: 'packed' } }, s, true, {
      beforeWrite: (abs) => {
        writeFileSync(abs, edited);
        // Same size and mtime would fool a stat check alone: the content is compared too.
        utimesSync(abs, new Date(), new Date(Date.now() + 5000));
      },
    });
    assert.equal(r.status, 'refused');
    assert.match(r.message ?? '', /changed on disk/);
    assert.equal(read(dir, 'a.py'), edited);
    const ok = await convertFile(file, 'a.py', { kind: 'convert', options: { dropout: 'packed' } }, s, true);
    assert.equal(ok.status, 'changed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('usage errors exit 2', async () => {
  const dir = workspace();
  try {
    for (const argv of [['convert'], ['convert', 'a.py', '--diff', '--dry-run'], ['convert', 'missing.py'], ['convert', 'a.py', '--revert', '--dropout', 'packed'], ['convert', 'a.py', '--ffn', '1:2']]) {
      const io = capture(dir);
      assert.equal(await main(argv, io), 2, argv.join(' '));
      assert.match(io.stderr, /Usage: membit convert/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a pathological file is bounded by the scan budget: what was read is converted, what was not is named', { timeout: 180_000 }, async () => {
  const ws = workspace();
  // A 60 KB attribute chain: reading it whole takes the query cursor over 30 s.
  const chain = `import torch\nimport torch.nn as nn\nx = torch.${'nn.'.repeat(20_000)}Dropout(0.1)\n\n\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.1)\n`;
  writeFileSync(join(ws, 'chain.py'), chain);
  const io = capture(ws);
  assert.equal(await main(['convert', '--budget-ms', '3000', 'chain.py'], io), 0, io.stderr);
  assert.match(io.stdout, /chain\.py: partially scanned, line 3 not read within the 3000 ms scan budget[^\n;]*; sites there were not converted\n/);
  const after = readFileSync(join(ws, 'chain.py'), 'utf8');
  assert.match(after, /self\.drop = membit\.nn\.PackedDropout\(0\.1\)/, 'the site after the chain was converted');
  assert.ok(after.includes(`x = torch.${'nn.'.repeat(20_000)}Dropout(0.1)`), 'the unread line is untouched');
  const bad = capture(ws);
  assert.equal(await main(['convert', '--budget-ms', 'soon', 'chain.py'], bad), 2);
  assert.match(bad.stderr, /--budget-ms must be a whole number of milliseconds/);
});
