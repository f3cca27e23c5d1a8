// The sdpa lever over SSH: the advisor's rewrite travels as its own upload tree and the
// harness on the target runs it in place of the uploaded script. Against a real OpenSSH
// server on 127.0.0.1 (generated host and user keys, a test ssh_config), with this
// repository's .venv as the target's Python, through the ProfileRun the extension uses.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { validate } from '../../src/core/report/jsonSchema';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { createRun, type RunEvent } from '../../src/core/run/target';
import { freePort, sshdPath } from './sshdSupport';

const REPO = resolve(__dirname, '..', '..', '..');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');
const GPT_ARGS = ['--steps', '5', '--batch-size', '2', '--seq-len', '32', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '100000', '--device', 'cpu'];

let dir = '';
let sshd: ChildProcess | undefined;
let sshConfig = '';



before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'membit-variants-ssh-'));
  chmodSync(dir, 0o755);
  for (const key of ['host_ed25519', 'id_user']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, key)]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'id_user.pub')));
  const port = await freePort();
  const cfg = join(dir, 'sshd_config');
  writeFileSync(
    cfg,
    [`Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_ed25519')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`, 'UsePAM no', 'StrictModes no', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password', 'PrintMotd no', ''].join('\n'),
  );
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true });
  sshd = spawn(sshdPath(), ['-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const up = await new Promise<boolean>((res) => {
    const t = setTimeout(() => res(false), 10_000);
    sshd?.stderr?.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      if (log.includes('Server listening on')) {
        clearTimeout(t);
        res(true);
      }
    });
    sshd?.once('exit', () => {
      clearTimeout(t);
      res(false);
    });
  });
  assert.ok(up, `sshd did not start:\n${log}`);
  writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${readFileSync(join(dir, 'host_ed25519.pub'), 'utf8')}`);
  sshConfig = join(dir, 'ssh_config');
  writeFileSync(
    sshConfig,
    ['Host membit-variants', '  HostName 127.0.0.1', `  Port ${port}`, `  User ${userInfo().username}`, `  IdentityFile ${join(dir, 'id_user')}`,
      '  IdentitiesOnly yes', '  IdentityAgent none', `  UserKnownHostsFile ${join(dir, 'known_hosts')}`, ''].join('\n'),
  );
});

after(() => {
  // Only the listener is ours to stop; its per-connection children end with their sessions.
  if (sshd?.pid !== undefined) sshd.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('an SSH sdpa run uploads the rewrite as its own tree and runs it under the workspace file name', async () => {
  const ws = mkdtempSync(join(dir, "ws 'x'=y "));
  mkdirSync(join(ws, 'src dir'));
  cpSync(join(REPO, 'samples', 'gpt_tiny.py'), join(ws, 'src dir', 'gpt tiny.py'));
  const workdir = join(dir, 'remote work');
  const logs: string[] = [];
  const out = join(ws, '.membit', 'runs', 'sdpa.json');
  const run = createRun(
    { kind: 'ssh', host: 'membit-variants', python: PYTHON, workdir, ssh: { configFile: sshConfig, connectTimeout: 5 } },
    { workspace: ws, script: join(ws, 'src dir', 'gpt tiny.py'), args: GPT_ARGS, steps: 1, warmup: 1, variant: 'sdpa', out },
    { kernelsDir: join(REPO, 'kernels'), allowCpu: true, graceS: 5 },
  );
  run.onEvent((e: RunEvent) => {
    if (e.type === 'log') logs.push(e.message);
  });
  const outcome = await run.start();
  assert.equal(outcome.state, 'done', `${outcome.message ?? ''}\n${outcome.stderrTail.join('\n')}\n${logs.join('\n')}`);
  const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
  assert.deepEqual(validate(REPORT_SCHEMA, report), []);
  // Paths are the workspace's, as on a local run: the overlays land on the user's file.
  assert.equal(report.run.script, 'src dir/gpt tiny.py');
  assert.equal(report.run.target.kind, 'ssh');
  assert.match(report.run.levers?.[0]?.how ?? '', /^eager attention rewritten to scaled_dot_product_attention in src dir\/gpt tiny\.py \(--overlay\); 2 scaled_dot_product_attention call\(s\) in the first forward$/);
  assert.equal(report.run.overlays?.[0]?.file, 'src dir/gpt tiny.py');
  assert.equal(report.run.overlays[0].used, true);
  // The replacement ran from the target's upload cache: its own tree beside the workspace's and the package's.
  const replacement = report.run.overlays[0].replacement;
  assert.ok(replacement.startsWith(join(workdir, 'trees')), replacement);
  assert.equal(readFileSync(replacement, 'utf8').includes('F.scaled_dot_product_attention('), true);
  assert.equal(readdirSync(join(workdir, 'trees')).filter((n) => !n.endsWith('.json')).length, 3);
  // Nothing of the user's changed, locally or in the uploaded copy.
  assert.equal(readFileSync(join(ws, 'src dir', 'gpt tiny.py'), 'utf8'), readFileSync(join(REPO, 'samples', 'gpt_tiny.py'), 'utf8'));
  assert.ok(logs.some((l) => l.startsWith("sdpa: this run uses the advisor's rewrite of src dir/gpt tiny.py")), logs.join('\n'));
});
