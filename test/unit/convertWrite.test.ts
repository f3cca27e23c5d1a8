/**
 * `membit convert` never loses a file: writes are temp file + rename (checked under a
 * real `ulimit -f` in a child process), the mode is kept, hard links are refused,
 * symlinks stay links, and the summary counts only what reached the disk.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, linkSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeFileAtomic } from '../../src/core/atomicWrite';
import { main } from '../../src/core/cli/main';
import { capture } from './cliCapture';

const CLI = join(__dirname, '..', '..', '..', 'dist', 'cli.js');

/** A module with `n` dropout sites: each conversion makes the file longer. */
function dropouts(n: number): string {
  const lines = ['import torch.nn as nn', '', '', 'class M(nn.Module):', '    def __init__(self):', '        super().__init__()'];
  for (let i = 0; i < n; i++) lines.push(`        self.drop${i} = nn.Dropout(0.1)  # ${'pad '.repeat(10)}`);
  return `${lines.join('\n')}\n`;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'membit-write-'));
}

test('under ulimit -f the failed write leaves the original byte-exact and no temporary file; the summary counts only the written file', { timeout: 120_000 }, () => {
  assert.ok(existsSync(CLI), `${CLI} missing: run node esbuild.mjs --tests`);
  const dir = tmp();
  try {
    // bash's `ulimit -f` counts 1024-byte blocks: 8 allows 8,192 bytes per file.
    const big = dropouts(95);
    assert.ok(Buffer.byteLength(big) < 8192 && Buffer.byteLength(big) > 7000, `${Buffer.byteLength(big)}`);
    const small = dropouts(4);
    writeFileSync(join(dir, 'big.py'), big);
    writeFileSync(join(dir, 'small.py'), small);
    const r = spawnSync('bash', ['-c', 'ulimit -f 8 && exec "$0" "$1" convert big.py small.py', process.execPath, CLI], { cwd: dir, encoding: 'utf8', timeout: 100_000 });
    assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /big\.py: error: cannot write: .*EFBIG/);
    assert.equal(readFileSync(join(dir, 'big.py'), 'utf8'), big, 'the original was damaged');
    assert.deepEqual(readdirSync(dir).sort(), ['big.py', 'small.py'], 'a temporary file was left behind');
    assert.match(readFileSync(join(dir, 'small.py'), 'utf8'), /membit\.nn\.PackedDropout/);
    // 4 calls were written; big.py's 95 were not.
    assert.match(r.stdout, /^4 calls converted in 1 file, 1 file refused or failed$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a converted file keeps its mode', async () => {
  const dir = tmp();
  try {
    const f = join(dir, 'a.py');
    writeFileSync(f, dropouts(2));
    chmodSync(f, 0o751);
    const io = capture(dir);
    assert.equal(await main(['convert', 'a.py'], io), 0, io.stderr);
    assert.match(readFileSync(f, 'utf8'), /PackedDropout/);
    assert.equal(statSync(f).mode & 0o7777, 0o751);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a file with several hard links is refused with the reason, and every name keeps its text', async () => {
  const dir = tmp();
  try {
    const text = dropouts(2);
    writeFileSync(join(dir, 'a.py'), text);
    linkSync(join(dir, 'a.py'), join(dir, 'b.py'));
    const io = capture(dir);
    assert.equal(await main(['convert', 'a.py'], io), 1);
    assert.match(io.stdout, /a\.py: refused: has 2 hard links: .*copy it to a file of its own/);
    assert.match(io.stdout, /^0 calls converted in 0 files, 1 file refused or failed$/m);
    assert.equal(readFileSync(join(dir, 'a.py'), 'utf8'), text);
    assert.equal(readFileSync(join(dir, 'b.py'), 'utf8'), text);
    // --dry-run writes nothing, so it still says what would change.
    const dry = capture(dir);
    assert.equal(await main(['convert', 'a.py', '--dry-run'], dry), 0, dry.stderr);
    assert.match(dry.stdout, /2 calls to be converted in 1 file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a symlink stays a link and the file it points to is converted', async () => {
  const dir = tmp();
  try {
    writeFileSync(join(dir, 'real.py'), dropouts(1));
    symlinkSync('real.py', join(dir, 'link.py'));
    const io = capture(dir);
    assert.equal(await main(['convert', 'link.py'], io), 0, io.stderr);
    assert.ok(lstatSync(join(dir, 'link.py')).isSymbolicLink());
    assert.match(readFileSync(join(dir, 'real.py'), 'utf8'), /PackedDropout/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFileAtomic cleans up after a failed rename and leaves the target as it was', () => {
  const dir = tmp();
  try {
    const f = join(dir, 'x.py');
    writeFileSync(f, 'old\n');
    // A folder is not a regular file: refused before anything is created.
    assert.throws(() => writeFileAtomic(dir, 'new'), /not a regular file/);
    writeFileAtomic(f, 'new\n');
    assert.equal(readFileSync(f, 'utf8'), 'new\n');
    assert.deepEqual(readdirSync(dir), ['x.py']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
