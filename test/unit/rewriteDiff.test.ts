/**
 * The unified diffs behind `membit convert --diff`: exact output on small cases, and on
 * random texts a patch that `git apply` accepts and that reproduces the new text byte
 * for byte.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { patchHeaderPath, unifiedDiff } from '../../src/core/rewrite';
import { itemAt } from '../../src/core/arrays';

const P = { oldPath: 'a/m.py', newPath: 'b/m.py' };

/** Lines as git reads them: each up to and with its \\n (a CR is part of the line). */
function splitLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

test('equal texts give no diff', () => {
  assert.equal(unifiedDiff('a\nb\n', 'a\nb\n', P), '');
});

test('one changed line with three lines of context, and hunk headers', () => {
  const a = 'l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\nl9\n';
  const b = a.replace('l5', 'L5');
  assert.equal(unifiedDiff(a, b, P), '--- a/m.py\n+++ b/m.py\n@@ -2,7 +2,7 @@\n l2\n l3\n l4\n-l5\n+L5\n l6\n l7\n l8\n');
});

test('changes far apart make two hunks, close ones share one', () => {
  const lines = Array.from({ length: 30 }, (_, i) => `x${i}`);
  const a = `${lines.join('\n')}\n`;
  const far = a.replace('x2\n', 'y2\n').replace('x25\n', 'y25\n');
  const d = unifiedDiff(a, far, P);
  assert.deepEqual(d.match(/^@@.*@@$/gm), ['@@ -1,6 +1,6 @@', '@@ -23,7 +23,7 @@']);
  const near = a.replace('x2\n', 'y2\n').replace('x8\n', 'y8\n');
  assert.deepEqual(unifiedDiff(a, near, P).match(/^@@.*@@$/gm), ['@@ -1,12 +1,12 @@']);
});

test('insertion at the top, into an empty file, and deletion of everything', () => {
  assert.equal(unifiedDiff('b\n', 'a\nb\n', P), '--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n+a\n b\n');
  assert.equal(unifiedDiff('', 'a\n', P), '--- a/m.py\n+++ b/m.py\n@@ -0,0 +1 @@\n+a\n');
  assert.equal(unifiedDiff('a\nb\n', '', P), '--- a/m.py\n+++ b/m.py\n@@ -1,2 +0,0 @@\n-a\n-b\n');
});

test('a missing final newline is marked on the side that lacks it', () => {
  assert.equal(unifiedDiff('a\nb', 'a\nb\n', P), '--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n');
  assert.equal(unifiedDiff('a\n', 'a\nc', P), '--- a/m.py\n+++ b/m.py\n@@ -1 +1,2 @@\n a\n+c\n\\ No newline at end of file\n');
});

test('lines keep their CRLF breaks; a lone CR is inside its line, as git reads it', () => {
  assert.deepEqual(splitLines('a\r\nb\nc'), ['a\r\n', 'b\n', 'c']);
  assert.equal(unifiedDiff('a\r\nb\r\n', 'a\r\nc\r\n', P), '--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n');
  assert.equal(unifiedDiff('a\rb\nc\n', 'a\rB\nc\n', P), '--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n-a\rb\n+a\rB\n c\n');
  const dir = mkdtempSync(join(tmpdir(), 'membit-diff-'));
  try {
    writeFileSync(join(dir, 'm.py'), 'x = 1\r# old mac break\ny = 2\n');
    writeFileSync(join(dir, 'p.diff'), unifiedDiff('x = 1\r# old mac break\ny = 2\n', 'x = 1\r# old mac break\ny = 3\n', P));
    const r = spawnSync('git', ['apply', 'p.diff'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(dir, 'm.py'), 'utf8'), 'x = 1\r# old mac break\ny = 3\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the edit script is minimal on a textbook case', () => {
  // Myers' example: ABCABBA -> CBABAC has 5 differences.
  const d = unifiedDiff('A\nB\nC\nA\nB\nB\nA\n', 'C\nB\nA\nB\nA\nC\n', P);
  assert.equal(d.split('\n').filter((l) => /^[-+][A-C]$/.test(l)).length, 5);
});

test('fuzz: git apply accepts every patch and reproduces the new text exactly', () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-diff-'));
  try {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const words = ['import torch', 'x = 1', '', 'def f():', '    return 2', 'y = nn.Dropout(0.1)', '# note', 'z = 3'];
    const text = (n: number) => {
      const lines = Array.from({ length: n }, () => itemAt(words, rnd(words.length)));
      return lines.join(rnd(5) === 0 ? '\r\n' : '\n') + (rnd(4) === 0 ? '' : '\n');
    };
    for (let i = 0; i < 40; i++) {
      const a = text(rnd(40));
      const lines = splitLines(a);
      // Mutate: replace, insert and delete a few lines.
      for (let k = 0; k < 1 + rnd(5); k++) {
        const at = rnd(lines.length + 1);
        const what = rnd(3);
        if (what === 0) lines.splice(at, 0, `${words[rnd(words.length)]}\n`);
        else if (what === 1 && lines.length) lines.splice(Math.min(at, lines.length - 1), 1);
        else if (lines.length) lines[Math.min(at, lines.length - 1)] = `changed ${k}\n`;
      }
      if (rnd(6) === 0 && lines.length) lines[lines.length - 1] = itemAt(lines, lines.length - 1).replace(/\r?\n$/, '');
      const b = lines.join('');
      if (a === b) continue;
      writeFileSync(join(dir, 'm.py'), a);
      writeFileSync(join(dir, 'p.diff'), unifiedDiff(a, b, P));
      const r = spawnSync('git', ['apply', '--whitespace=nowarn', 'p.diff'], { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, `git apply failed (${r.error?.message ?? r.stderr}) on case ${i}:\n${JSON.stringify(a)}\n${JSON.stringify(b)}`);
      assert.equal(readFileSync(join(dir, 'm.py'), 'utf8'), b, `case ${i}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('patch headers: an absolute path is named from the root, odd names are C-quoted, and git apply takes both', () => {
  assert.equal(patchHeaderPath('a', '/home/u/m.py'), 'a/home/u/m.py');
  assert.equal(patchHeaderPath('b', 'C:/work/m.py'), 'b/C/work/m.py');
  assert.equal(patchHeaderPath('a', 'pkg/m.py'), 'a/pkg/m.py');
  assert.equal(patchHeaderPath('a', 'odd\nname "x"\\.py'), '"a/odd\\nname \\"x\\"\\\\.py"');
  assert.equal(patchHeaderPath('b', 'bell\x07.py'), '"b/bell\\a.py"');
  const dir = mkdtempSync(join(tmpdir(), 'membit-diff-'));
  try {
    for (const name of ['odd\nname.py', 'tab\there.py', 'quote"d.py', 'back\\slash.py', 'plain.py']) {
      writeFileSync(join(dir, name), 'a\nb\n');
      const patch = unifiedDiff('a\nb\n', 'a\nB\n', { oldPath: patchHeaderPath('a', name), newPath: patchHeaderPath('b', name) });
      writeFileSync(join(dir, 'p.diff'), patch);
      const r = spawnSync('git', ['apply', 'p.diff'], { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, `git apply failed for ${JSON.stringify(name)}: ${r.error?.message ?? r.stderr}\n${patch}`);
      assert.equal(readFileSync(join(dir, name), 'utf8'), 'a\nB\n');
    }
    // An absolute path: the patch applies from the filesystem root's view, here from a folder standing in for it.
    const abs = join(dir, 'root', 'home', 'u');
    mkdirSync(abs, { recursive: true });
    writeFileSync(join(abs, 'm.py'), 'x\n');
    writeFileSync(join(dir, 'q.diff'), unifiedDiff('x\n', 'y\n', { oldPath: patchHeaderPath('a', '/home/u/m.py'), newPath: patchHeaderPath('b', '/home/u/m.py') }));
    const r = spawnSync('git', ['apply', join(dir, 'q.diff')], { cwd: join(dir, 'root'), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(abs, 'm.py'), 'utf8'), 'y\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
