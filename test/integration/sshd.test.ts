// Remote runs against a real OpenSSH server: Debian's sshd started on 127.0.0.1 with a
// generated host key and user key, reached through the system ssh client with a test
// ssh_config (Host aliases, known_hosts, identity), exactly as a user's config would.
// The "remote" Python is this repository's .venv (CPU torch), so the GPT sample runs
// end to end through the same ProfileRun the extension uses.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { main } from '../../src/core/cli/main';
import { hashFiles, listWorkspaceFiles, treeHash } from '../../src/core/run/files';
import { runFileName } from '../../src/core/run/history';
import { uploadTrees, type RemoteInfo } from '../../src/core/run/remote';
import { sshExec } from '../../src/core/run/ssh';
import { createRun, type RunEvent, type RunOutcome, type RunRequest, type SshTarget } from '../../src/core/run/target';
import { defined } from '../defined';

const REPO = resolve(__dirname, '..', '..', '..');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');
const KERNELS = join(REPO, 'kernels');
const GPT_ARGS = ['--steps', '5', '--batch-size', '2', '--seq-len', '32', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '100000', '--device', 'cpu'];

interface Server {
  proc: ChildProcess;
  port: number;
}

let dir = '';
let sshConfig = '';
let workdir = '';
let hostKeyPub = '';
/** The first successful preflight, reused by later runs as back-to-back runs in the UI would. */
let knownInfo: RemoteInfo | undefined;
const servers = new Set<ChildProcess>();



/** Starts sshd in the foreground (-D), logging to stderr (-e); resolves once it listens. */
async function startSshd(): Promise<Server> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const cfg = join(dir, `sshd_config_${port}`);
    writeFileSync(
      cfg,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(dir, 'host_ed25519')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        `PidFile ${join(dir, `sshd_${port}.pid`)}`,
        'UsePAM no',
        'StrictModes no',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'PrintMotd no',
        'LogLevel INFO',
        '',
      ].join('\n'),
    );
    // sshd's privilege separation needs this folder when it runs as root.
    if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true });
    const proc = spawn(sshdPath(), ['-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    servers.add(proc);
    let log = '';
    const ok = await new Promise<boolean>((res) => {
      const t = setTimeout(() => res(false), 10_000);
      proc.stderr.setEncoding('utf8').on('data', (d: string) => {
        log += d;
        if (log.includes('Server listening on')) {
          clearTimeout(t);
          res(true);
        }
      });
      proc.once('exit', () => {
        clearTimeout(t);
        res(false);
      });
    });
    if (ok) return { proc, port };
    stopSshd(proc);
    if (attempt >= 2 || !/Address already in use|Bind to port/.test(log)) throw new Error(`sshd did not start:\n${log}`);
  }
}

function stopSshd(proc: ChildProcess): void {
  for (const pid of sshdTree(proc.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  servers.delete(proc);
}

/** pid → parent pid, from /proc. */
function parents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: the ppid follows the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      m.set(Number(name), ppid);
    } catch {
      /* exited meanwhile */
    }
  }
  return m;
}

/** An sshd listener and its per-connection sshd processes (not the shells they started). */
function sshdTree(root: number | undefined): number[] {
  if (root === undefined) return [];
  const pp = parents();
  const out: number[] = [];
  const walk = (pid: number) => {
    let comm: string;
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return;
    }
    if (comm !== 'sshd') return;
    out.push(pid);
    for (const [child, parent] of pp) if (parent === pid) walk(child);
  };
  walk(root);
  return out;
}

/** Processes (other than this one) whose command line contains `needle`: `ps -eo args | grep`, from /proc. */
function processesWith(needle: string): string[] {
  const hits: string[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ');
      if (args.includes(needle)) hits.push(`${name} ${args.slice(0, 160)}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return hits;
}

/** No process of any run is left: neither the local ssh nor anything on the "remote". */
async function assertNoOrphans(marker: string): Promise<void> {
  const end = Date.now() + 15_000;
  let left = processesWith(marker);
  while (left.length && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    left = processesWith(marker);
  }
  assert.deepEqual(left, [], 'processes left behind');
}

function writeSshConfig(port: number): string {
  const file = join(dir, `ssh_config_${port}`);
  const common = (known: string, key: string) =>
    [
      '  HostName 127.0.0.1',
      `  Port ${port}`,
      `  User ${userInfo().username}`,
      `  IdentityFile ${join(dir, key)}`,
      '  IdentitiesOnly yes',
      '  IdentityAgent none',
      `  UserKnownHostsFile ${join(dir, known)}`,
      `  GlobalKnownHostsFile ${join(dir, 'known_hosts_empty')}`,
      '',
    ].join('\n');
  writeFileSync(
    file,
    `Host membit-ok\n${common('known_hosts', 'id_user')}Host membit-unknown-key\n${common('known_hosts_empty', 'id_user')}Host membit-wrong-key\n${common('known_hosts', 'id_wrong')}`,
  );
  // Trust the generated host key (on this port) for membit-ok and membit-wrong-key only.
  appendFileSync(join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostKeyPub}\n`);
  return file;
}

function target(host: string, over: Partial<SshTarget> = {}, config = sshConfig): SshTarget {
  return {
    kind: 'ssh',
    host,
    python: PYTHON,
    workdir,
    env: {},
    ssh: { configFile: config, connectTimeout: 5, serverAliveInterval: 2, serverAliveCountMax: 3 },
    ...over,
  };
}

function workspace(files: Record<string, string>): string {
  const ws = mkdtempSync(join(dir, 'ws '));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(ws, p, '..'), { recursive: true });
    writeFileSync(join(ws, p), text);
  }
  return ws;
}

function request(ws: string, script: string, over: Partial<RunRequest> = {}): RunRequest {
  return { workspace: ws, script, args: [], steps: 2, warmup: 1, variant: 'baseline', out: join(ws, '.membit', 'runs', runFileName({ started: new Date(), target: 'membit-ok', variant: 'baseline' })), ...over };
}

async function profile(t: SshTarget, req: RunRequest, o: { allowCpu?: boolean; remoteInfo?: RemoteInfo | undefined; onEvent?(e: RunEvent, cancel: () => void): void } = {}) {
  const run = createRun(t, req, { kernelsDir: KERNELS, allowCpu: o.allowCpu ?? true, graceS: 5, remoteInfo: o.remoteInfo });
  const events: RunEvent[] = [];
  run.onEvent((e) => {
    events.push(e);
    o.onEvent?.(e, () => run.cancel());
  });
  const outcome: RunOutcome = await run.start();
  return { outcome, events, states: events.flatMap((e) => (e.type === 'state' ? [e.state] : [])) };
}

/**
 * A training loop that never ends on its own, with a grandchild process in its group
 * whose command line carries argv[1], a marker unique to this test run.
 */
const SLOW_SCRIPT = `import subprocess, sys, time
import torch
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]])
print("grandchild", child.pid, flush=True)
model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(4, 8)
for step in range(100000):
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.2)
`;
import { freePort, sshdPath } from './sshdSupport';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'membit-sshd-'));
  chmodSync(dir, 0o755);
  workdir = join(dir, "remote work ü 'q'");
  for (const key of ['host_ed25519', 'id_user', 'id_wrong']) {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `membit-test-${key}`, '-f', join(dir, key)]);
  }
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'id_user.pub')));
  writeFileSync(join(dir, 'known_hosts_empty'), '');
  hostKeyPub = readFileSync(join(dir, 'host_ed25519.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
  sshConfig = writeSshConfig((await startSshd()).port);
});

after(() => {
  // Every sshd this file started goes, whatever happened in the tests.
  for (const proc of [...servers]) stopSshd(proc);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('profiles the GPT sample over ssh end to end; report paths map onto the local workspace', { timeout: 60_000 }, async () => {
  const ws = workspace({});
  mkdirSync(join(ws, 'samples'));
  copyFileSync(join(REPO, 'samples', 'gpt_tiny.py'), join(ws, 'samples', 'gpt_tiny.py'));
  const req = request(ws, join(ws, 'samples', 'gpt_tiny.py'), { args: GPT_ARGS });
  const { outcome, events, states } = await profile(target('membit-ok'), req);
  assert.equal(outcome.state, 'done', outcome.message);
  assert.deepEqual(states, ['preparing', 'uploading', 'running', 'collecting', 'done']);
  assert.equal(outcome.status, 'ok');
  assert.equal(outcome.report, req.out);
  assert.equal(outcome.remote?.cuda, false);
  knownInfo = outcome.remote;
  assert.ok((outcome.upload?.sentFiles ?? 0) > 1, 'the script and the membit package were sent');

  const progress = events.flatMap((e) => (e.type === 'progress' ? [e.event] : []));
  assert.ok(progress.some((p) => p.event === 'remote' && typeof p['pgid'] === 'number'), 'the remote process group was reported');
  assert.ok(progress.some((p) => p.event === 'started'));
  assert.ok(progress.some((p) => p.event === 'step' && p.step === 2));
  assert.ok(events.some((e) => e.type === 'output' && /step \d+ loss/.test(e.line)), "the script's own output streams back");

  const report = JSON.parse(readFileSync(req.out, 'utf8')) as {
    run: { status: string; script: string; target: { kind: string; host: string } };
    lines: { file: string; line: number }[];
  };
  assert.equal(report.run.status, 'ok');
  assert.deepEqual(report.run.target, { kind: 'ssh', host: 'membit-ok' });
  assert.equal(report.run.script, 'samples/gpt_tiny.py');
  assert.ok(report.lines.length > 0);
  for (const l of report.lines) assert.ok(existsSync(join(ws, l.file)), `${l.file} maps onto the local workspace`);
  // The run folder is gone from the target; the upload cache stays for the next run.
  assert.deepEqual(readdirSync(join(workdir, 'runs')), []);
  await assertNoOrphans(workdir);
});

test('hostile argv words reach the remote program unchanged through ssh and the login shell', { timeout: 20_000 }, async () => {
  const words = ['', 'a b', "it's", '"q"', '$(id)', '`id`', '$HOME', '; ls |', '* ~', 'new\nline', 'back\\slash', 'ünï 日本 😀', '-n', 'A=b', '#c'];
  const r = await sshExec({ host: 'membit-ok', configFile: sshConfig }, ['printf', '%s\\0', ...words]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.toString('utf8').split('\0').slice(0, -1), words);
});

test('upload: hostile file names arrive intact, only changed files are re-sent', { timeout: 30_000 }, async () => {
  const names: Record<string, string> = {
    'plain.py': 'print(1)\n',
    "it's a \"quoted\" $(touch pwned) `x` name.txt": 'hostile\n',
    'ünïcødé 日本/data ü.txt': 'ü\n',
    'spaces in dir/  lead and trail  .txt': 's\n',
    'semi;colon&amp|pipe>gt<lt*star?.txt': 'x\n',
  };
  const ws = workspace(names);
  const files = hashFiles(listWorkspaceFiles(ws));
  const tree = { label: 'workspace', files, hash: treeHash(files) };
  const ssh = { host: 'membit-ok', configFile: sshConfig };
  const first = await uploadTrees(ssh, { python: PYTHON, workdir, trees: [tree] });
  assert.equal(first.sentFiles, Object.keys(names).length);
  const remoteDir = defined(first.dirs.get(tree.hash), 'remote folder of the tree');
  for (const [p, text] of Object.entries(names)) assert.equal(readFileSync(join(remoteDir, p), 'utf8'), text, p);
  assert.equal(existsSync(join(remoteDir, 'pwned')), false);
  assert.equal(existsSync(join(ws, 'pwned')), false);

  const second = await uploadTrees(ssh, { python: PYTHON, workdir, trees: [tree] });
  assert.equal(second.sentFiles, 0);
  writeFileSync(join(ws, 'plain.py'), 'print(2)\n');
  const changed = hashFiles(listWorkspaceFiles(ws));
  const tree2 = { label: 'workspace', files: changed, hash: treeHash(changed) };
  const third = await uploadTrees(ssh, { python: PYTHON, workdir, trees: [tree2] });
  assert.equal(third.sentFiles, 1, 'only the edited file travels');
  assert.equal(readFileSync(join(defined(third.dirs.get(tree2.hash), 'remote folder of the second tree'), 'plain.py'), 'utf8'), 'print(2)\n');
  assert.deepEqual(readdirSync(join(workdir, 'incoming')), [], 'no upload leftovers');
});

test("a script that raises, under a hostile name, fails with the traceback's last lines", { timeout: 30_000 }, async () => {
  const name = "my dir/it's \"bad\" $(echo) ü.py";
  const ws = workspace({
    [name]: 'import torch\nprint("about to fail", flush=True)\ndef inner():\n    raise ValueError("boom from the remote script")\ninner()\n',
  });
  const req = request(ws, name);
  const { outcome, events } = await profile(target('membit-ok'), req, { remoteInfo: knownInfo });
  if (knownInfo) assert.ok(!events.some((e) => e.type === 'log' && e.message.startsWith('checking')), 'the earlier preflight was reused');
  assert.equal(outcome.state, 'failed');
  assert.equal(outcome.status, 'error');
  assert.match(outcome.message ?? '', /^the script failed on membit-ok: .*ValueError: boom from the remote script$/);
  assert.match(outcome.message ?? '', /raise ValueError/);
  const report = JSON.parse(readFileSync(req.out, 'utf8')) as { run: { script: string; status: string } };
  assert.equal(report.run.script, name);
  await assertNoOrphans(workdir);
});

test('an unknown host key is refused with the message, and nothing is trusted on the way', { timeout: 20_000 }, async () => {
  const ws = workspace({ 't.py': 'print(1)\n' });
  const { outcome } = await profile(target('membit-unknown-key'), request(ws, 't.py'));
  assert.equal(outcome.state, 'failed');
  assert.equal(outcome.error?.code, 'host-key-unknown');
  assert.match(outcome.message ?? '', /^host key for membit-unknown-key not trusted: connect once with ssh membit-unknown-key/);
  assert.equal(readFileSync(join(dir, 'known_hosts_empty'), 'utf8'), '');
});

test('a key the server does not accept gives the auth message', { timeout: 20_000 }, async () => {
  const ws = workspace({ 't.py': 'print(1)\n' });
  const { outcome } = await profile(target('membit-wrong-key'), request(ws, 't.py'));
  assert.equal(outcome.error?.code, 'auth');
  assert.match(outcome.message ?? '', /^ssh could not log in to membit-wrong-key \(tried publickey\): no key was accepted/);
});

test('missing torch on the target gives the torch message; a missing python its own', { timeout: 20_000 }, async () => {
  // -S leaves site-packages (where torch lives) out: a Python without torch.
  const noTorch = join(dir, 'python without torch');
  writeFileSync(noTorch, `#!/bin/sh\nexec '${PYTHON.replace(/'/g, `'\\''`)}' -S "$@"\n`);
  chmodSync(noTorch, 0o755);
  const ws = workspace({ 't.py': 'print(1)\n' });
  const { outcome } = await profile(target('membit-ok', { python: noTorch }), request(ws, 't.py'));
  assert.equal(outcome.error?.code, 'torch-missing');
  assert.equal(outcome.message?.startsWith(`torch not installed in ${noTorch} on membit-ok`), true, outcome.message);
  const missing = await profile(target('membit-ok', { python: '/nonexistent/python3' }), request(ws, 't.py'));
  assert.equal(missing.outcome.error?.code, 'python-missing');
  assert.match(missing.outcome.message ?? '', /^\/nonexistent\/python3 not found on membit-ok/);
  // A CPU-only target is an error unless the caller agreed to run on CPU.
  const gpuOnly = await profile(target('membit-ok'), request(ws, 't.py'), { allowCpu: false });
  assert.equal(gpuOnly.outcome.error?.code, 'no-cuda');
  assert.match(gpuOnly.outcome.message ?? '', /^no CUDA GPU on membit-ok.*, run on CPU\?$/);
});

test('cancel mid-run stops the remote process group, collects the partial report, leaves no process', { timeout: 40_000 }, async () => {
  const ws = workspace({ 'slow.py': SLOW_SCRIPT });
  const marker = `membit-grandchild-${Date.now()}-${process.pid}`;
  const req = request(ws, 'slow.py', { args: [marker], steps: 0, warmup: 0 });
  let cancelledAt = 0;
  let grandchildren: string[] = [];
  const { outcome, states } = await profile(target('membit-ok'), req, {
    remoteInfo: knownInfo,
    onEvent: (e, cancel) => {
      if (!cancelledAt && e.type === 'progress' && e.event.event === 'step' && (e.event.step as number) >= 1) {
        grandchildren = processesWith(marker).filter((p) => p.includes('time.sleep(300)'));
        cancelledAt = Date.now();
        cancel();
      }
    },
  });
  assert.ok(cancelledAt > 0, 'the run got going');
  assert.equal(grandchildren.length, 1, `the grandchild ran: ${grandchildren.join('; ')}`);
  assert.equal(outcome.state, 'cancelled', outcome.message);
  assert.deepEqual(states.slice(-2), ['collecting', 'cancelled']);
  assert.ok(Date.now() - cancelledAt < 15_000, 'cancel is quick');
  const report = JSON.parse(readFileSync(req.out, 'utf8')) as { run: { status: string } };
  assert.equal(report.run.status, 'cancelled');
  await assertNoOrphans(workdir);
  assert.deepEqual(processesWith(marker), []);
  assert.deepEqual(readdirSync(join(workdir, 'runs')), []);
});

test('killing sshd mid-run fails with a clear error, no hang, no orphan', { timeout: 40_000 }, async () => {
  // A server of its own, so the other tests keep theirs.
  const own = await startSshd();
  const config = writeSshConfig(own.port);
  const ws = workspace({ 'slow.py': SLOW_SCRIPT });
  const marker = `membit-grandchild-${Date.now()}-${process.pid}`;
  let grandchildren: string[] = [];
  let killedAt = 0;
  const { outcome } = await profile(target('membit-ok', {}, config), request(ws, 'slow.py', { args: [marker], steps: 0, warmup: 0 }), {
    remoteInfo: knownInfo,
    onEvent: (e) => {
      if (!killedAt && e.type === 'progress' && e.event.event === 'step' && (e.event.step as number) >= 1) {
        grandchildren = processesWith(marker).filter((p) => p.includes('time.sleep(300)'));
        killedAt = Date.now();
        stopSshd(own.proc);
      }
    },
  });
  assert.ok(killedAt > 0, 'the run got going');
  assert.equal(grandchildren.length, 1, `the grandchild ran: ${grandchildren.join('; ')}`);
  assert.equal(outcome.state, 'failed');
  assert.equal(outcome.error?.code, 'lost');
  assert.match(outcome.message ?? '', /^the connection to membit-ok was lost .*during the run/);
  assert.ok(Date.now() - killedAt < 10_000, `noticed in ${Date.now() - killedAt} ms`);
  await assertNoOrphans(workdir);
  assert.deepEqual(processesWith(marker), []);
});

test('membit profile --target runs through the same code and explains an ssh failure', { timeout: 20_000 }, async () => {
  const ws = workspace({ 't.py': 'print(1)\n' });
  let out = '';
  let err = '';
  const io = { cwd: ws, out: (s: string) => void (out += s), err: (s: string) => void (err += s) };
  const code = await main(['profile', '--target', 'membit-unknown-key', '--ssh-config', sshConfig, '--python', PYTHON, '--workdir', workdir, '--', 't.py'], io);
  assert.equal(code, 1, out + err);
  assert.match(err, /host key for membit-unknown-key not trusted: connect once with ssh membit-unknown-key/);
});
