/**
 * Local runs through the real harness against careless and hostile scripts: a child left
 * running does not hang the run and does not survive it, fake progress lines are not
 * believed, os._exit(3) is not an out-of-memory, a SIGKILLed `membit profile` leaves
 * nothing training. Time limits here are hang guards only.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/core/cli/main';
import { createRun, type RunEvent } from '../../src/core/run/target';
import { capture } from './cliCapture';
import { repoRoot } from './scanSupport';

const KERNELS = join(repoRoot(), 'kernels');
const CLI = join(repoRoot(), 'dist', 'cli.js');

function torchPython(): string {
  const env = process.env['MEMBIT_PYTHON'];
  if (env) return env;
  const venv = join(repoRoot(), '.venv', 'bin', 'python');
  assert.ok(existsSync(venv), 'no Python with torch: set MEMBIT_PYTHON');
  return venv;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A zombie waiting for its new parent to reap it is gone for our purpose.
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop()?.trim().split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms = 30_000): Promise<boolean> {
  for (let t = 0; t < ms; t += 100) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function waitFor(path: string, ms = 120_000): Promise<string> {
  for (let t = 0; t < ms; t += 100) {
    if (existsSync(path)) {
      const text = readFileSync(path, 'utf8');
      if (text.endsWith('\n')) return text;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${path} never appeared`);
}

async function run(script: string, dir: string) {
  writeFileSync(join(dir, 'train.py'), script);
  const r = createRun({ kind: 'local', python: torchPython() }, { workspace: dir, script: 'train.py', out: join(dir, 'out', 'r.json'), steps: 0 }, { kernelsDir: KERNELS });
  const events: RunEvent[] = [];
  r.onEvent((e) => events.push(e));
  return { outcome: await r.start(), events };
}

test('a child the script leaves running neither hangs the run nor outlives it', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-orphan-'));
  try {
    const { outcome } = await run(
      ['import subprocess, sys', 'child = subprocess.Popen(["sleep", "300"])', `open(${JSON.stringify(join(dir, 'child.pid'))}, "w").write(str(child.pid) + "\\n")`, 'print("done", flush=True)'].join('\n'),
      dir,
    );
    assert.equal(outcome.state, 'done', outcome.message);
    const child = Number(readFileSync(join(dir, 'child.pid'), 'utf8'));
    assert.ok(child > 0);
    assert.ok(await waitGone(child), 'the script\'s child outlived the run');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('progress lines the script prints are its output, not progress', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-fake-progress-'));
  try {
    const { outcome, events } = await run(
      [
        'import json, sys',
        'sys.stderr.write("@@membit " + json.dumps({"event": "step", "step": 99, "total": 100}) + "\\n")',
        'sys.stderr.write("@@membit " + json.dumps({"event": "finished", "status": "oom"}) + "\\n")',
        'sys.stderr.flush()',
      ].join('\n'),
      dir,
    );
    assert.equal(outcome.state, 'done', outcome.message);
    const progress = events.flatMap((e) => (e.type === 'progress' ? [e.event] : []));
    assert.deepEqual(progress.map((e) => e.event), ['started', 'finished']);
    assert.ok(!progress.some((e) => e.event === 'step' && (e as { step?: number }).step === 99));
    assert.equal(events.filter((e) => e.type === 'output' && e.line.startsWith('@@membit {')).length, 2, 'shown as the script\'s own output');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('os._exit(3) from the script is not taken for an out-of-memory', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-exit3-'));
  try {
    const { outcome } = await run('import os\nos._exit(3)\n', dir);
    assert.equal(outcome.state, 'failed');
    assert.equal(outcome.exitCode, 3);
    assert.equal(outcome.status, undefined);
    assert.equal(outcome.report, undefined);
    assert.match(outcome.message ?? '', /ended with status 3 before the harness wrote a report: the script ended the process itself .* says nothing about memory/);
    assert.doesNotMatch(outcome.message ?? '', /memory;|out of (GPU )?memory/i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGKILL of membit profile stops the harness and what the script started', { timeout: 240_000 }, async () => {
  assert.ok(existsSync(CLI), `${CLI} missing: run node esbuild.mjs --tests`);
  const dir = mkdtempSync(join(tmpdir(), 'membit-killed-'));
  try {
    const pids = join(dir, 'pids');
    writeFileSync(
      join(dir, 'train.py'),
      [
        'import os, subprocess, time',
        'child = subprocess.Popen(["sleep", "300"])',
        `open(${JSON.stringify(pids)}, "w").write("%d %d\\n" % (os.getpid(), child.pid))`,
        'while True:',
        '    time.sleep(1)',
      ].join('\n'),
    );
    const cli = spawn(process.execPath, [CLI, 'profile', '--python', torchPython(), '--out', join(dir, 'r.json'), '--', 'train.py'], { cwd: dir, stdio: 'ignore' });
    const [harness, child] = (await waitFor(pids)).trim().split(' ').map(Number) as [number, number];
    assert.ok(alive(harness) && alive(child));
    cli.kill('SIGKILL');
    assert.ok(await waitGone(harness), 'the harness kept running after membit profile was killed');
    assert.ok(await waitGone(child), 'the script\'s child kept running after membit profile was killed');
    const report = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8')) as { run: { status: string; error: string } };
    assert.equal(report.run.status, 'cancelled');
    assert.match(report.run.error, /the launcher went away/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('membit profile --out FOLDER is refused before anything runs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-outdir-'));
  try {
    mkdirSync(join(dir, 'reports'));
    writeFileSync(join(dir, 'train.py'), 'raise SystemExit(1)\n');
    const io = capture(dir);
    assert.equal(await main(['profile', '--out', 'reports', '--', 'train.py'], io), 2);
    assert.match(io.stderr, /--out .*reports is a folder: give the report's file name/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
