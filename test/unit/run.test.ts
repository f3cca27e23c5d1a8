import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { explainFailure } from '../../src/core/run/errors';
import { harnessArgv, LineSplitter, parseProgressLine } from '../../src/core/run/harness';
import { parseRunFileName, runFileName, safeNamePart } from '../../src/core/run/history';
import { runLocal } from '../../src/core/run/local';

test('harnessArgv keeps hostile file names as single argv entries after --', () => {
  const script = "/w/my $(rm -rf ~) 'x' \"y\" ünï.py";
  const argv = harnessArgv({ python: 'python3', script, scriptArgs: ['--a', '; ls'], out: '/o/r.json', variant: 'packed', steps: 2, warmup: 0 });
  assert.deepEqual(argv, ['python3', '-m', 'membit.profile', '--out', '/o/r.json', '--variant', 'packed', '--steps', '2', '--warmup', '0', '--', script, '--a', '; ls']);
});

test('progress lines: only prefixed JSON objects with an event count', () => {
  assert.deepEqual(parseProgressLine('@@membit {"event":"step","step":2,"total":3}'), { event: 'step', step: 2, total: 3 });
  assert.equal(parseProgressLine('{"event":"step"}'), undefined);
  assert.equal(parseProgressLine('@@membit {"event":"st'), undefined);
  assert.equal(parseProgressLine('@@membit [1,2]'), undefined);
  assert.equal(parseProgressLine('Traceback (most recent call last):'), undefined);
});

test('LineSplitter joins lines split across chunks', () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push('ab'), []);
  assert.deepEqual(s.push('c\r\nde\nf'), ['abc', 'de']);
  assert.deepEqual(s.flush(), ['f']);
});

test('run file names round-trip and stay safe', () => {
  const started = new Date('2026-11-22T10:31:05.123Z');
  const name = runFileName({ started, target: 'user@gpu 1/../x', variant: 'packed+sparse24' });
  assert.match(name, /^20261122T103105Z_user-gpu-1-..-x_packed\+sparse24\.json$/);
  assert.ok(!name.includes('/'));
  const back = parseRunFileName(name);
  assert.equal(back?.started.toISOString(), '2026-11-22T10:31:05.000Z');
  assert.equal(back.variant, 'packed+sparse24');
  assert.equal(safeNamePart('////'), 'x');
  assert.equal(parseRunFileName('notes.json'), undefined);
});

test('explainFailure names the problem and the fix', () => {
  const base = { python: '/usr/bin/python3', where: 'gpu1', exitCode: 1 };
  assert.equal(
    explainFailure({ ...base, stderrTail: ['Traceback (most recent call last):', "ModuleNotFoundError: No module named 'torch'"] }),
    'torch not installed in /usr/bin/python3 on gpu1: install PyTorch there (pip install torch), or point membit.python at an environment that has it.',
  );
  assert.match(explainFailure({ ...base, where: 'local', stderrTail: [], spawnError: 'spawn python9 ENOENT' }), /^\/usr\/bin\/python3 not found: install Python 3/);
  assert.equal(
    explainFailure({ ...base, where: 'local', stderrTail: ['  File "t.py", line 3, in <module>', '    f()', 'ValueError: bad lr'] }),
    'the script failed: File "t.py", line 3, in <module> | f() | ValueError: bad lr',
  );
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('runLocal streams progress and user output apart, and cancel kills the whole process group', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-run-'));
  const script = join(dir, 'slow.py');
  // The script starts a grandchild, reports its pid, then waits: cancel must reach both.
  writeFileSync(
    script,
    [
      'import json, subprocess, sys, time',
      "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])",
      "print('user says hi', flush=True)",
      "sys.stderr.write('@@membit ' + json.dumps({'event': 'started', 'grandchild': child.pid}) + '\\n'); sys.stderr.flush()",
      'time.sleep(60)',
    ].join('\n'),
  );
  const ac = new AbortController();
  const out: string[] = [];
  let grandchild = 0;
  const res = await runLocal({
    argv: ['python3', script],
    cwd: dir,
    signal: ac.signal,
    onOutput: (l) => out.push(l),
    onProgress: (e) => {
      if (e.event === 'started') {
        grandchild = Number((e as { grandchild?: number }).grandchild);
        ac.abort();
      }
    },
  });
  assert.equal(res.cancelled, true);
  assert.deepEqual(out, ['user says hi']);
  assert.ok(grandchild > 0);
  // Give the kernel a moment to reap the grandchild, then check with ps that nothing is left.
  for (let i = 0; i < 50 && alive(grandchild); i++) await new Promise((r) => setTimeout(r, 100));
  const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  assert.ok(!ps.includes(script), `the script is still running:\n${ps}`);
  assert.equal(alive(grandchild), false, 'the grandchild survived cancel');
});

test('runLocal reports a missing interpreter as an error, not a hang', async () => {
  await assert.rejects(runLocal({ argv: ['/nonexistent/python9', 'x.py'], cwd: tmpdir() }), /could not start \/nonexistent\/python9/);
});

import { splitArgs } from '../../src/core/run/argsplit';

test('splitArgs tokenizes like a shell but never runs one', () => {
  assert.deepEqual(splitArgs('--steps 5  --name "my run" --x=\'a b\' plain\\ space'), ['--steps', '5', '--name', 'my run', "--x=a b", 'plain space']);
  assert.deepEqual(splitArgs('$(rm -rf ~) `id` ; ls'), ['$(rm', '-rf', '~)', '`id`', ';', 'ls']);
  assert.deepEqual(splitArgs('""'), ['']);
  assert.deepEqual(splitArgs('  '), []);
  assert.deepEqual(splitArgs('"a \\"q\\" b"'), ['a "q" b']);
  assert.throws(() => splitArgs('--name "open'), /unclosed double quote/);
});
