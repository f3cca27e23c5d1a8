/** The pid-tree helper: /proc parsing, the tree walk, and a real process tree. */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { descendants, parseStatPpid, pidTree, PidTreeReader } from '../../src/native/pidTree';
import { childWithGrandchild, tempDir } from './nativeFakes';

test('parseStatPpid reads the parent even when the command name holds spaces and parentheses', () => {
  assert.equal(parseStatPpid('1234 (python3) S 1200 1234 1200 0 -1 4194560'), 1200);
  assert.equal(parseStatPpid('77 (pt_main_thread) R 1 77 77 0'), 1);
  assert.equal(parseStatPpid('88 (a) b) (c d) S 42 88 88 0'), 42);
  assert.equal(parseStatPpid('99 (x'), undefined);
  assert.equal(parseStatPpid(''), undefined);
});

test('descendants walks breadth-first from the root, and survives a cycle', () => {
  const parents = new Map([
    [1, 0], [10, 1], [11, 10], [12, 10], [13, 11], [20, 1], [30, 31], [31, 30],
  ]);
  assert.deepEqual(descendants(10, parents), [10, 11, 12, 13]);
  assert.deepEqual(descendants(13, parents), [13]);
  assert.deepEqual(descendants(99, parents), [], 'a pid that is not running has no tree');
  assert.deepEqual(descendants(30, parents), [30, 31]);
});

test('pidTree reads a /proc-like folder; entries that vanish or are not pids are skipped', () => {
  const proc = tempDir('proc');
  const stat = (pid: number, ppid: number, comm = 'python') => {
    mkdirSync(join(proc, String(pid)));
    writeFileSync(join(proc, String(pid), 'stat'), `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1\n`);
  };
  stat(1, 0, 'init');
  stat(500, 1, 'bash');
  stat(501, 500, 'python train.py');
  stat(502, 501, 'pt_data_worker');
  stat(503, 501, 'pt_data_worker');
  stat(600, 1);
  mkdirSync(join(proc, '700')); // ended between readdir and read: no stat file
  mkdirSync(join(proc, 'self'));
  writeFileSync(join(proc, 'uptime'), '1 2');
  assert.deepEqual(pidTree(501, proc), [501, 502, 503]);
  assert.deepEqual(pidTree(700, proc), []);
  assert.deepEqual(pidTree(42, join(proc, 'missing')), [42], 'without /proc only the root is known');
});

test('PidTreeReader reads each process once, sees new ones, forgets ended ones', () => {
  const proc = tempDir('proc-reader');
  const stat = (pid: number, ppid: number) => {
    mkdirSync(join(proc, String(pid)), { recursive: true });
    writeFileSync(join(proc, String(pid), 'stat'), `${pid} (python) S ${ppid} ${pid} ${pid} 0 -1\n`);
  };
  stat(1, 0);
  stat(10, 1);
  const reader = new PidTreeReader(proc);
  assert.deepEqual(reader.read(10), [10]);
  stat(11, 10);
  stat(12, 11);
  assert.deepEqual(reader.read(10), [10, 11, 12]);
  // Its parent ended and the kernel re-parented it: read again, it has left the tree.
  rmSync(join(proc, '11'), { recursive: true });
  stat(12, 1);
  assert.deepEqual(reader.read(10), [10]);
  assert.equal(reader.size, 3);
  // Parents are not read again while they live: a changed stat file goes unnoticed.
  stat(12, 10);
  assert.deepEqual(reader.read(10), [10]);
  rmSync(join(proc, '12'), { recursive: true });
  assert.deepEqual(reader.read(10), [10]);
  assert.equal(reader.size, 2);
});

test('pidTree follows a real process tree: child and grandchild of this process', async () => {
  const { child, grandchild, kill } = await childWithGrandchild();
  try {
    const tree = pidTree(process.pid);
    assert.equal(tree[0], process.pid);
    assert.ok(tree.includes(child), 'child in the tree');
    assert.ok(tree.includes(grandchild), 'grandchild in the tree');
    assert.ok(tree.indexOf(child) < tree.indexOf(grandchild), 'parents before children');
    assert.deepEqual(pidTree(grandchild), [grandchild]);
  } finally {
    kill();
  }
});
