// SLURM targets: the job script, sbatch's flags and the queue's answers as pure functions, then
// real jobs on a one-node SLURM cluster on localhost (scripts/slurm-local.sh: munged,
// slurmctld, slurmd) reached through a real sshd as the login node, through the CLI.
// The real part needs root and Debian's slurm-wlm, munge and openssh-server.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { capture } from '../unit/cliCapture';
import { freePort, sshdPath } from './sshdSupport';
import { main } from '../../src/core/cli/main';
import { loadRunSet } from '../../src/core/report/runset';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import { harnessArgv } from '../../src/core/run/harness';
import { checkSlurmTarget, createSlurmRun, explainRejection, jobName, jobScript, parseJobEnd, parseSqueue, sbatchArgv } from '../../src/core/run/slurm';
import type { RunSetDoc } from '../../src/core/run/torchrun';

const REPO = resolve(__dirname, '..', '..', '..');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');
const SMALL = ['--batch-size', '4', '--seq-len', '32', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '200000'];
const HOSTILE = "w s; $(touch /tmp/pwned) `x` 'q' \"d\"";

test('slurm targets are checked, naming the field', () => {
  const t = checkSlurmTarget({ kind: 'slurm', host: 'login1', partition: 'gpu', nodes: 2, gpusPerNode: 8, time: '01:00:00' });
  assert.equal(t.python, 'python3');
  assert.throws(() => checkSlurmTarget({ kind: 'slurm', host: '-oProxyCommand=x' }), /host must be the login node/);
  assert.throws(() => checkSlurmTarget({ kind: 'slurm', host: 'l', partition: 'gpu; rm -rf /' }), /partition must be a SLURM name/);
  assert.throws(() => checkSlurmTarget({ kind: 'slurm', host: 'l', time: 'soon' }), /time must be a SLURM time limit/);
  assert.throws(() => checkSlurmTarget({ kind: 'slurm', host: 'l', nodes: 0 }), /nodes must be a whole number ≥ 1/);
  assert.throws(() => checkSlurmTarget({ kind: 'slurm', host: 'l', env: { 'A B': 'x' } }), /env must map variable names/);
});

test('sbatch flags come from the target; job names are made safe', () => {
  const t = checkSlurmTarget({ kind: 'slurm', host: 'l', partition: 'gpu', account: 'proj1', nodes: 2, gpusPerNode: 4, time: '30' });
  assert.deepEqual(sbatchArgv(t, { name: 'membit-x', rundir: '/w/r', script: '/w/r/job.sh' }), [
    'sbatch', '--parsable', '--job-name=membit-x', '--output=/w/r/slurm-%j.out', '--nodes=2', '--ntasks-per-node=1', '--cpus-per-task=4', '--gres=gpu:4', '--partition=gpu', '--account=proj1', '--time=30', '/w/r/job.sh',
  ]);
  assert.equal(jobName('dir/my train;$(x).py'), 'membit-my_train___x_.py');
  assert.match(jobName(`dir/${HOSTILE}.py`), /^membit-[A-Za-z0-9._-]+\.py$/);
});

test('the job script survives hostile paths and arguments (bash parses it; every word stays whole)', () => {
  const t = checkSlurmTarget({ kind: 'slurm', host: 'l', launch: 'srun', ranksPerNode: 2 });
  const harness = harnessArgv({ python: `/opt/${HOSTILE}/python`, script: `/ws/${HOSTILE}.py`, scriptArgs: ['--name', HOSTILE], out: `/runs/${HOSTILE}/report.ranks/rank{rank}.json` });
  for (const launch of ['srun', 'torchrun'] as const) {
    const text = jobScript({ ...t, launch }, { harness, cwd: `/ws/${HOSTILE}`, rundir: `/runs/${HOSTILE}`, env: { MEMBIT_X: HOSTILE } });
    const r = spawnSync('bash', ['-n'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!existsSync('/tmp/pwned'));
  }
});

test('queue answers and rejections are read', () => {
  assert.deepEqual(parseSqueue('PENDING|Resources|\n'), { state: 'PENDING', reason: 'Resources', nodes: '' });
  assert.deepEqual(parseSqueue('RUNNING|None|node1\n'), { state: 'RUNNING', reason: '', nodes: 'node1' });
  assert.equal(parseSqueue('\n'), undefined);
  assert.deepEqual(parseJobEnd('JobId=7 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0'), { state: 'FAILED', exit: '1:0' });
  assert.deepEqual(parseJobEnd('CANCELLED by 0|0:15\n'), { state: 'CANCELLED', exit: '0:15' });
  const t = checkSlurmTarget({ kind: 'slurm', host: 'login1', partition: 'nosuch' });
  assert.match(explainRejection('sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified', t), /partition "nosuch" does not exist on login1; set partition/);
  assert.match(explainRejection('sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user\'s size and/or time limits) QOSMaxSubmitJobPerUserLimit', t), /over a limit of your account or QOS/);
});

// -- a real cluster ---------------------------------------------------------------------

const canRun = process.getuid?.() === 0 && ['slurmctld', 'slurmd', 'munged', 'sshd'].every((b) => spawnSync('sh', ['-c', `command -v ${b} || test -x /usr/sbin/${b}`]).status === 0);
const real = { skip: canRun ? false : 'needs root and slurm-wlm, munge, openssh-server (the CI machine has them)', timeout: 300_000 };

let dir = '';
let slurmDir = '';
let slurmConf = '';
let sshConfig = '';
let sshd: ChildProcess | undefined;

before(async () => {
  if (!canRun) return;
  dir = mkdtempSync(join(tmpdir(), 'membit-slurm-test-'));
  chmodSync(dir, 0o755);
  slurmDir = join(dir, 'cluster');
  const up = spawnSync(join(REPO, 'scripts', 'slurm-local.sh'), ['start', slurmDir], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(up.status, 0, `the local SLURM cluster did not start: ${up.stderr}`);
  slurmConf = (/SLURM_CONF=(.*)/.exec(up.stdout)?.[1] ?? '').trim();
  for (const key of ['host_ed25519', 'id_user']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, key)]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'id_user.pub')));
  const port = await freePort();
  writeFileSync(join(dir, 'sshd_config'), [`Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_ed25519')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, `PidFile ${join(dir, 'sshd.pid')}`, 'UsePAM no', 'StrictModes no', 'PasswordAuthentication no', 'PermitRootLogin prohibit-password', ''].join('\n'));
  mkdirSync('/run/sshd', { recursive: true });
  sshd = spawn(sshdPath(), ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((res, rej) => {
    let log = '';
    const t = setTimeout(() => rej(new Error(`sshd did not start: ${log}`)), 10_000);
    sshd?.stderr?.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      if (log.includes('Server listening on')) {
        clearTimeout(t);
        res();
      }
    });
  });
  writeFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${readFileSync(join(dir, 'host_ed25519.pub'), 'utf8')}`);
  sshConfig = join(dir, 'ssh_config');
  const common = (p: number) => `  HostName 127.0.0.1\n  Port ${p}\n  User ${userInfo().username}\n  IdentityFile ${join(dir, 'id_user')}\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile ${join(dir, 'known_hosts')}\n  ConnectTimeout 5\n`;
  writeFileSync(sshConfig, `Host login\n${common(port)}Host login-down\n${common(await freePort())}`);
});

after(() => {
  if (!canRun) return;
  // Only what this file started: the sshd by its pid, the cluster by the pids in its folder.
  if (sshd?.pid) {
    try {
      process.kill(sshd.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  if (slurmDir) spawnSync(join(REPO, 'scripts', 'slurm-local.sh'), ['stop', slurmDir], { timeout: 60_000 });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function workspace(): string {
  const ws = join(mkdtempSync(join(dir, 'ws-')), HOSTILE);
  mkdirSync(ws, { recursive: true });
  for (const f of ['gpt_dist.py', 'gpt_tiny.py']) cpSync(join(REPO, 'samples', f), join(ws, f));
  return ws;
}

function profileArgs(_ws: string, out: string, extra: string[], script: string[] = ['gpt_dist.py', '--parallel', 'ddp', '--steps', '6', ...SMALL]): string[] {
  return ['profile', '--target', 'login', '--ssh-config', sshConfig, '--slurm', '--python', PYTHON, '--workdir', join(dir, `remote ${HOSTILE}`), '--target-env', `SLURM_CONF=${slurmConf}`, '--steps', '2', '--out', out, ...extra, '--', ...script];
}

for (const launch of ['srun', 'torchrun'] as const) {
  test(`a SLURM job (${launch}) runs the harness in every rank; the reports come back as a run set`, real, async () => {
    const ws = workspace();
    const out = join(ws, 'runs', `${launch}.json`);
    const io = capture(ws);
    const code = await main(profileArgs(ws, out, ['--launch', launch, '--ranks-per-node', '2', '--time', '10']), io);
    assert.equal(code, 0, io.stderr.slice(-4000));
    assert.match(io.stderr, /membit: submitted job \d+ on login/);
    for (const rank of [0, 1]) assert.match(io.stderr, new RegExp(`membit: rank ${rank}: step 2/2`));
    const set = loadRunSet(out, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA);
    assert.equal(set.doc.launcher, 'slurm');
    assert.match(set.doc.slurm?.job ?? '', /^\d+$/);
    assert.equal(set.doc.slurm?.state, 'COMPLETED');
    assert.deepEqual(set.ranks.map((r) => [r.rank, r.status]), [[0, 'ok'], [1, 'ok']]);
    for (const r of set.ranks) {
      assert.equal(r.report?.run.distributed?.launcher, launch === 'torchrun' ? 'torchrun' : 'slurm');
      assert.equal(r.report.run.distributed.slurm_job, set.doc.slurm.job);
      assert.equal(r.report.run.distributed.world_size, 2);
      // Paths map back onto the local workspace.
      assert.equal(r.report.run.script, 'gpt_dist.py');
      assert.ok(r.report.lines.some((l) => l.file === 'gpt_tiny.py'));
      assert.equal(r.report.summary.distributed?.ddp?.buckets !== undefined, true);
    }
    assert.ok(!existsSync('/tmp/pwned'));
  });
}

test('a rejected job is explained (bad partition)', real, async () => {
  const ws = workspace();
  const io = capture(ws);
  const code = await main(profileArgs(ws, join(ws, 'runs', 'bad.json'), ['--partition', 'nosuch']), io);
  assert.equal(code, 1);
  assert.match(io.stderr, /SLURM rejected the job: partition "nosuch" does not exist on login; set partition/);
});

test('a job stuck pending is cancelled after the pending timeout, with the reason', real, async () => {
  // Hold every CPU of the one node with a job of our own, so Membit's job has to wait.
  const env = { ...process.env, SLURM_CONF: slurmConf };
  const cpus = execFileSync('sh', ['-c', 'nproc'], { encoding: 'utf8' }).trim();
  const blocker = execFileSync('sbatch', ['--parsable', '--job-name=membit-test-blocker', `--cpus-per-task=${cpus}`, '--output=/dev/null', '--wrap', 'sleep 120'], { env, encoding: 'utf8' }).trim();
  try {
    const ws = workspace();
    const out = join(ws, 'runs', 'pending.json');
    const io = capture(ws);
    const code = await main(profileArgs(ws, out, ['--pending-timeout', '6', '--ranks-per-node', '1']), io);
    assert.equal(code, 1);
    assert.match(io.stderr, /membit: job \d+ pending in queue \((Resources|Priority)\)/);
    assert.match(io.stderr, /was still pending after 6 s \(reason: (Resources|Priority)\); Membit cancelled it/);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as RunSetDoc;
    assert.deepEqual(doc.ranks.map((r) => r.status), ['missing']);
  } finally {
    execFileSync('scancel', [blocker], { env });
  }
});

test('cancel is scancel: every rank stops and writes a cancelled report', real, async () => {
  const ws = workspace();
  const out = join(ws, 'runs', 'cancel.json');
  const t = checkSlurmTarget({ kind: 'slurm', host: 'login', python: PYTHON, workdir: join(dir, `remote ${HOSTILE}`), launch: 'srun', ranksPerNode: 2, env: { SLURM_CONF: slurmConf } });
  t.ssh = { configFile: sshConfig };
  const run = createSlurmRun(t, { workspace: ws, script: 'gpt_dist.py', args: ['--parallel', 'ddp', '--steps', '100000', ...SMALL], out, steps: 0, warmup: 0 }, { kernelsDir: join(REPO, 'kernels') });
  const stepped = new Set<number>();
  run.onEvent((e) => {
    const ev = e.type === 'progress' ? (e.event as { event: string; rank?: number }) : undefined;
    if (ev?.event === 'step' && typeof ev.rank === 'number') {
      stepped.add(ev.rank);
      if (stepped.size === 2) run.cancel();
    }
  });
  const outcome = await run.start();
  assert.equal(outcome.state, 'cancelled', outcome.message);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as RunSetDoc;
  // On failure, say what each rank's own report says.
  const errorOf = (rel: string | null) => (rel ? (JSON.parse(readFileSync(join(ws, 'runs', rel), 'utf8')) as { run: { error: string | null } }).run.error : null);
  const seen = JSON.stringify(doc.ranks.map((r) => ({ rank: r.rank, status: r.status, error: errorOf(r.report) })));
  assert.equal(doc.status, 'cancelled', seen);
  assert.deepEqual(doc.ranks.map((r) => r.status), ['cancelled', 'cancelled'], seen);
  const q = execFileSync('squeue', ['-h', '-j', doc.slurm?.job ?? '0', '-o', '%T'], { env: { ...process.env, SLURM_CONF: slurmConf }, encoding: 'utf8' }).trim();
  assert.equal(q, '', 'the job left the queue');
});

test('an unreachable login node is named', real, async () => {
  const ws = workspace();
  const io = capture(ws);
  const args = profileArgs(ws, join(ws, 'runs', 'down.json'), []).map((a) => (a === 'login' ? 'login-down' : a));
  const code = await main(args, io);
  assert.equal(code, 1);
  assert.match(io.stderr, /login-down/);
  assert.match(io.stderr, /refused|unreachable|could not connect|connect/i);
});
