// Pure parts of remote runs: quoting, the ssh command line, error messages, ssh config
// hosts, which files are uploaded, the tar stream, the preflight's verdicts, the
// run state machine. The real-sshd end-to-end tests are in sshd.test.ts.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hashFiles, listPackageFiles, listWorkspaceFiles, treeHash, UploadTooLargeError } from '../../src/core/run/files';
import { interpretPreflight, treeManifest } from '../../src/core/run/remote';
import { remoteCommand, shellQuote } from '../../src/core/run/quote';
import { isFinal, RUN_TRANSITIONS, RunStateMachine, type RunState } from '../../src/core/run/runState';
import { classifySshFailure, RunError, sshArgv, type SshOptions } from '../../src/core/run/ssh';
import { expandInclude, listSshHosts, newHostProblem, parseSshConfig, splitConfigLine, sshTargets } from '../../src/core/run/sshConfig';
import { tarEnd, tarEntry } from '../../src/core/run/tar';
import { createRun, sitesForRemote, type RunEvent } from '../../src/core/run/target';
import { itemAt } from '../../src/core/arrays';

/** Names that break naive quoting: spaces, quotes, expansions, globs, newlines, non-ASCII. */
const HOSTILE = [
  '',
  'plain',
  'with space',
  "it's",
  "''",
  '"double" quotes',
  '$(touch /tmp/membit-pwned)',
  '`touch /tmp/membit-pwned`',
  '$HOME ${HOME} $((1+1))',
  'semi; rm -rf / && echo | cat > x',
  'glob * ? [a-z] ~ ~root',
  'line\nbreak\r\n\ttab',
  'back\\slash \\\' \\n',
  'ünïcødé 日本語 😀',
  '-n',
  'A=b',
  '#comment',
  '!bang {a,b}',
];

test('shellQuote leaves simple words bare and wraps the rest in single quotes', () => {
  assert.equal(shellQuote('python3'), 'python3');
  assert.equal(shellQuote('/usr/bin/python3.12'), '/usr/bin/python3.12');
  assert.equal(shellQuote('--steps'), '--steps');
  assert.equal(shellQuote(''), "''");
  assert.equal(shellQuote('a b'), "'a b'");
  assert.equal(shellQuote("it's"), "'it'\\''s'");
  assert.equal(shellQuote('A=b'), "'A=b'");
  assert.equal(shellQuote('~/x'), "'~/x'");
  assert.throws(() => shellQuote('a\0b'), /NUL/);
  assert.throws(() => remoteCommand([]), /empty/);
});

test('remoteCommand round-trips hostile words through a real sh -c, unchanged and unexpanded', () => {
  const marker = join(tmpdir(), 'membit-pwned');
  const words = HOSTILE.map((w) => w.replace('/tmp/membit-pwned', marker));
  // printf prints each argument NUL-terminated, so any byte sequence survives the trip.
  const line = remoteCommand(['printf', '%s\\0', ...words]);
  for (const shell of ['sh', 'bash']) {
    const out = execFileSync(shell, ['-c', line], { cwd: tmpdir() });
    assert.deepEqual(out.toString('utf8').split('\0').slice(0, -1), words, shell);
  }
  assert.equal(spawnSync('test', ['-e', marker]).status, 1, 'no command substitution ran');
});

test('sshArgv: batch mode, timeouts, keep-alive, no tty, host after --, one quoted command', () => {
  const argv = sshArgv({ host: 'gpu1', configFile: '/t/ssh config' }, ['python3', '-c', 'print(1)', 'a b']);
  assert.deepEqual(argv, [
    'ssh', '-F', '/t/ssh config',
    '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=10', '-o', 'ServerAliveCountMax=3',
    '-T', '--', 'gpu1', "python3 -c 'print(1)' 'a b'",
  ]);
  assert.ok(!argv.join(' ').includes('StrictHostKeyChecking'));
  const custom = sshArgv({ host: 'u@h', connectTimeout: 3, serverAliveInterval: 1, serverAliveCountMax: 2 }, ['true']);
  assert.deepEqual(custom.slice(1, 11), ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=3', '-o', 'ServerAliveInterval=1', '-o', 'ServerAliveCountMax=2', '-T', '--']);
});

test('sshArgv refuses option-like hosts and takes no free-form ssh options at all', () => {
  assert.throws(() => sshArgv({ host: '-oProxyCommand=evil' }, ['true']), /not an ssh host/);
  assert.throws(() => sshArgv({ host: 'a b' }, ['true']), /not an ssh host/);
  // The old guard let these through (ssh -G shows each turns checking off or reads another
  // config): there is no path for extra options any more, whatever an object carries.
  const sneaky = [
    ['-o', 'StrictHostKeyChecking=false'],
    ['-o', 'StrictHostKeyChecking="no"'],
    ['-o', 'UserKnownHostsFile=/dev//null'],
    ['-o', 'UserKnownHostsFile="/dev/null"'],
    ['-F', '/tmp/evil_config'],
  ];
  for (const extra of sneaky) {
    const argv = sshArgv({ host: 'h', extraArgs: extra, options: extra } as SshOptions, ['true']);
    assert.deepEqual(argv.slice(0, argv.indexOf('--')), ['ssh', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=10', '-o', 'ServerAliveCountMax=3', '-T'], extra.join(' '));
  }
  // Timeouts are numbers, not a place for more words.
  assert.throws(() => sshArgv({ host: 'h', connectTimeout: '5 -oStrictHostKeyChecking=no' as unknown as number }, ['true']), /whole number of seconds/);
  assert.throws(() => sshArgv({ host: 'h', serverAliveCountMax: 0 }, ['true']), /whole number of seconds/);
});

test("classifySshFailure turns ssh's stderr into the message a user can act on", () => {
  const kind = (stderr: string) => classifySshFailure(stderr, 'gpu1');
  const unknown = kind('No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n');
  assert.equal(unknown?.code, 'host-key-unknown');
  assert.match(unknown.message, /^host key for gpu1 not trusted: connect once with ssh gpu1/);
  assert.equal(kind('@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.')?.code, 'host-key-changed');
  const auth = kind('root@127.0.0.1: Permission denied (publickey,password).');
  assert.equal(auth?.code, 'auth');
  assert.match(auth.message, /^ssh could not log in to gpu1 \(tried publickey,password\): no key was accepted/);
  assert.match(kind('ssh: connect to host 127.0.0.1 port 1: Connection refused')?.message ?? '', /could not reach gpu1: connection refused/);
  assert.equal(kind('ssh: connect to host 10.1.1.1 port 22: Connection timed out')?.code, 'timeout');
  assert.equal(kind('Connection timed out during banner exchange')?.code, 'timeout');
  assert.equal(kind('ssh: Could not resolve hostname gpu1: Name or service not known')?.code, 'resolve');
  assert.equal(kind('ssh: connect to host 10.0.0.9 port 22: No route to host')?.code, 'unreachable');
  assert.equal(kind('Connection to 127.0.0.1 closed by remote host.')?.code, 'lost');
  assert.equal(kind('Timeout, server 127.0.0.1 not responding.')?.code, 'lost');
  assert.equal(kind('client_loop: send disconnect: Broken pipe')?.code, 'lost');
  assert.equal(kind('/t/cfg: line 3: Bad configuration option: frobnicate')?.code, 'config');
  assert.equal(kind('Traceback (most recent call last):\nValueError: x'), undefined);
  assert.ok(unknown instanceof RunError);
});

test('ssh config: concrete Host names, Include files, quoted and = syntax, comments', () => {
  assert.deepEqual(splitConfigLine('  HostName = 10.0.0.1 # lab'), { key: 'hostname', args: ['10.0.0.1'] });
  assert.deepEqual(splitConfigLine('Host "my box" other'), { key: 'host', args: ['my box', 'other'] });
  assert.equal(splitConfigLine('# Host nope'), undefined);
  const parsed = parseSshConfig('Host gpu1 gpu2 *.lab !bad\n  HostName x\nhost Gpu3\nMatch host foo\nInclude config.d/* ~/extra\nHost *\n');
  assert.deepEqual(parsed, [{ host: 'gpu1' }, { host: 'gpu2' }, { host: 'Gpu3' }, { include: 'config.d/*' }, { include: '~/extra' }]);

  const home = mkdtempSync(join(tmpdir(), 'membit-home-'));
  mkdirSync(join(home, '.ssh', 'config.d'), { recursive: true });
  writeFileSync(join(home, '.ssh', 'config'), 'Include config.d/*.conf\nHost main\nInclude ~/.ssh/config\n');
  writeFileSync(join(home, '.ssh', 'config.d', 'a.conf'), 'Host a1 a2\n');
  writeFileSync(join(home, '.ssh', 'config.d', 'b.conf'), 'Host b1 main\n');
  writeFileSync(join(home, '.ssh', 'config.d', 'ignored.txt'), 'Host nope\n');
  assert.deepEqual(listSshHosts(join(home, '.ssh', 'config'), home), ['a1', 'a2', 'b1', 'main']);
  assert.deepEqual(listSshHosts(join(home, 'missing'), home), []);
  assert.deepEqual(expandInclude('/abs/file', '/h/.ssh', '/h'), ['/abs/file']);
  assert.deepEqual(expandInclude('rel', '/h/.ssh', '/h'), ['/h/.ssh/rel']);
});

test('sshTargets: settings first with their values, then config hosts with defaults, no duplicates', () => {
  const list = sshTargets([{ host: 'gpu1', python: '/opt/py/bin/python', env: { A: '1' } }, { host: 'gpu1' }], ['gpu1', 'gpu2']);
  assert.deepEqual(list, [
    { host: 'gpu1', python: '/opt/py/bin/python', workdir: '~/.cache/membit', env: { A: '1' }, source: 'membit.targets' },
    { host: 'gpu2', python: 'python3', workdir: '~/.cache/membit', env: {}, source: 'ssh config' },
  ]);
});

function git(cwd: string, ...args: string[]): void {
  execFileSync('git', args, { cwd, stdio: 'ignore', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } });
}

function makeWorkspace(): string {
  const ws = mkdtempSync(join(tmpdir(), 'membit-ws-'));
  const files: Record<string, string> = {
    'train.py': 'print(1)\n',
    'my file $(x) `y` \'q\' "d" ü.py': 'print(2)\n',
    'data/keep.txt': 'k',
    'data/big.bin': 'x'.repeat(5000),
    'logs/run.log': 'l',
    'pkg/__pycache__/m.cpython-312.pyc': 'c',
    'pkg/mod.py': 'm',
    'pkg/mod.pyc': 'c',
    'node_modules/x/index.js': 'n',
    '.venv/bin/python': 'v',
    '.membit/runs/r.json': '{}',
    'sub/.gitignore': '*.tmp\n!keep.tmp\n',
    'sub/a.tmp': 't',
    'sub/keep.tmp': 't',
    'sub/deep/b.tmp': 't',
    'weights/w.pt': 'w',
  };
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(ws, p, '..'), { recursive: true });
    writeFileSync(join(ws, p), text);
  }
  writeFileSync(join(ws, '.gitignore'), '# outputs\nlogs/\n/weights\n*.bin\n!data/keep.txt\n');
  chmodSync(join(ws, 'train.py'), 0o755);
  symlinkSync('train.py', join(ws, 'link.py'));
  symlinkSync('/etc/hostname', join(ws, 'outside-link'));
  return ws;
}

const EXPECTED = ['.gitignore', 'data/keep.txt', 'link.py', 'my file $(x) `y` \'q\' "d" ü.py', 'pkg/mod.py', 'sub/.gitignore', 'sub/keep.tmp', 'train.py'];

test('listWorkspaceFiles without git applies .gitignore files and always skips env and cache folders', () => {
  const ws = makeWorkspace();
  const files = listWorkspaceFiles(ws);
  assert.deepEqual(files.map((f) => f.path), EXPECTED);
  assert.equal(files.find((f) => f.path === 'train.py')?.executable, true);
  assert.equal(files.find((f) => f.path === 'pkg/mod.py')?.executable, false);
});

test('listWorkspaceFiles in a git repository asks git (tracked + untracked, not ignored)', () => {
  const ws = makeWorkspace();
  git(ws, 'init', '-q');
  git(ws, 'add', 'train.py');
  git(ws, 'commit', '-q', '-m', 'x');
  // Tracked but deleted later is not uploaded.
  writeFileSync(join(ws, 'gone.py'), 'g');
  git(ws, 'add', 'gone.py');
  execFileSync('rm', [join(ws, 'gone.py')]);
  assert.deepEqual(listWorkspaceFiles(ws).map((f) => f.path), EXPECTED);
});

test('the upload cap names the largest files', () => {
  const ws = makeWorkspace();
  writeFileSync(join(ws, 'huge.npy'), Buffer.alloc(40_000));
  writeFileSync(join(ws, 'mid.npy'), Buffer.alloc(20_000));
  assert.throws(
    () => listWorkspaceFiles(ws, 50_000),
    (e: unknown) => e instanceof UploadTooLargeError && e.message.includes('over the 48.8 KiB cap; largest files: huge.npy (39.1 KiB), mid.npy (19.5 KiB)') && e.message.includes('.gitignore'),
  );
});

test('outside git, .gitignore files apply per folder: anchoring, **, folders, classes, negation', () => {
  const ws = mkdtempSync(join(tmpdir(), 'membit-gi-'));
  const files: Record<string, string> = {
    '.gitignore': '*.log\n/x.txt\na/**/b.txt\n**/cache/\nfile[0-9].dat\nd?t.bin\nbuild/\n',
    'deep/er/c.log': '', 'x.txt': '', 'a/x.txt': '', 'a/b.txt': '', 'a/m/n/b.txt': '', 'a/b.txt.keep': '',
    'deep/er/cache/k.py': '', 'cache.py': '', 'file7.dat': '', 'fileX.dat': '', 'dat.bin': '', 'd/t.bin': '',
    'build/o.py': '', 'src/build': '',
    'sub/.gitignore': '!keep.log\nonly-here.py\n', 'sub/keep.log': '', 'sub/drop.log': '', 'sub/only-here.py': '', 'only-here.py': '',
  };
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(ws, p, '..'), { recursive: true });
    writeFileSync(join(ws, p), text);
  }
  assert.deepEqual(listWorkspaceFiles(ws).map((f) => f.path), [
    '.gitignore', 'a/b.txt.keep', 'a/x.txt', 'cache.py', 'd/t.bin', 'fileX.dat', 'only-here.py',
    'src/build', 'sub/.gitignore', 'sub/keep.log',
  ]);
});

test('tree hashes depend on names, modes and contents only', () => {
  const ws = makeWorkspace();
  const a = hashFiles(listWorkspaceFiles(ws));
  const b = hashFiles(listWorkspaceFiles(ws));
  assert.equal(treeHash(a), treeHash(b));
  writeFileSync(join(ws, 'pkg/mod.py'), 'm2');
  assert.notEqual(treeHash(hashFiles(listWorkspaceFiles(ws))), treeHash(a));
  const manifest = JSON.parse(treeManifest({ label: 'w', files: a, hash: treeHash(a) }).toString('utf8')) as { files: { path: string; x?: boolean }[] };
  assert.equal(manifest.files.find((f) => f.path === 'train.py')?.x, true);
});

test('listPackageFiles prefixes paths and leaves caches out', () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-pkg-'));
  mkdirSync(join(dir, 'ops', '__pycache__'), { recursive: true });
  writeFileSync(join(dir, '__init__.py'), '');
  writeFileSync(join(dir, 'ops', 'a.py'), '');
  writeFileSync(join(dir, 'ops', '__pycache__', 'a.pyc'), '');
  assert.deepEqual(listPackageFiles(dir, 'membit').map((f) => f.path), ['membit/__init__.py', 'membit/ops/a.py']);
});

test('the tar stream extracts with the system tar, byte for byte', () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-tar-'));
  const a = Buffer.from('hello\n');
  const b = Buffer.alloc(1025, 7); // crosses block boundaries
  const empty = Buffer.alloc(0);
  writeFileSync(join(dir, 'x.tar'), Buffer.concat([tarEntry('o/aaaa', a), tarEntry('o/bbbb', b, 0o755), tarEntry('m/e.json', empty), tarEnd()]));
  mkdirSync(join(dir, 'out'));
  execFileSync('tar', ['-x', '-f', join(dir, 'x.tar'), '-C', join(dir, 'out')]);
  assert.deepEqual(readFileSync(join(dir, 'out/o/aaaa')), a);
  assert.deepEqual(readFileSync(join(dir, 'out/o/bbbb')), b);
  assert.equal(readFileSync(join(dir, 'out/m/e.json')).length, 0);
  assert.throws(() => tarEntry('ü', a), /ASCII/);
});

test('interpretPreflight: each problem has its own code and message', () => {
  const o = { python: '/usr/bin/python3', workdir: '~/.cache/membit' };
  const probe = (p: object, extra = '') => `motd noise\n@@membit-python /usr/bin/python3\n${extra}@@membit-probe ${JSON.stringify({ python: '3.11.2', workdir: '/home/u/.cache/membit', ...p })}\n`;
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof RunError ? `${e.code}: ${e.message}` : String(e);
    }
    return 'ok';
  };
  assert.match(code(() => interpretPreflight('@@membit-python /opt/nope\n@@membit-nopython\n', 'gpu1', o)), /^python-missing: \/opt\/nope not found on gpu1/);
  assert.match(code(() => interpretPreflight(probe({ torch_error: "ModuleNotFoundError: No module named 'torch'", torch_missing: true }), 'gpu1', o)), /^torch-missing: torch not installed in \/usr\/bin\/python3 on gpu1/);
  assert.match(code(() => interpretPreflight(probe({ torch_error: 'OSError: libcudart.so.12: cannot open' }), 'gpu1', o)), /^torch-broken: .*libcudart/);
  assert.match(code(() => interpretPreflight(probe({ torch: '2.3.0', cuda: false }), 'gpu1', o)), /^no-cuda: no CUDA GPU on gpu1, run on CPU\?$/);
  assert.match(
    code(() => interpretPreflight(probe({ torch: '2.3.0+cpu', torch_cuda: null, cuda: false }, '@@membit-gpu NVIDIA A100-SXM4-80GB, 81920 MiB\n'), 'gpu1', o)),
    /^no-cuda: no CUDA GPU on gpu1 usable by torch 2\.3\.0\+cpu \(a CPU-only build\), though nvidia-smi sees NVIDIA A100-SXM4-80GB, run on CPU\?$/,
  );
  assert.match(code(() => interpretPreflight(probe({ torch: '2.3.0', cuda: true, workdir_error: 'PermissionError: denied' }), 'gpu1', o)), /^workdir: cannot write to \/home\/u\/.cache\/membit on gpu1/);
  assert.match(code(() => interpretPreflight('@@membit-python python3\n  File "<string>", line 1\nSyntaxError: invalid syntax\n', 'gpu1', o)), /^python-missing: python3 on gpu1 did not run Membit's check: .*SyntaxError/);
  const info = interpretPreflight(probe({ torch: '2.3.0', cuda: true, gpus: ['NVIDIA H100'] }, '@@membit-gpu NVIDIA H100, 81559 MiB\n'), 'gpu1', o);
  assert.deepEqual(info, { host: 'gpu1', python: '/usr/bin/python3', pythonVersion: '3.11.2', workdir: '/home/u/.cache/membit', torch: '2.3.0', cuda: true, gpus: ['NVIDIA H100'], nvidiaSmi: ['NVIDIA H100, 81559 MiB'] });
  assert.equal(interpretPreflight(probe({ torch: '2.3.0', cuda: false }), 'gpu1', { ...o, allowCpu: true }).cuda, false);
});

test('run states only move forward along the table', () => {
  const m = new RunStateMachine();
  const seen: string[] = [];
  m.onChange((to, from) => seen.push(`${from}>${to}`));
  for (const s of ['preparing', 'uploading', 'running', 'collecting', 'done'] as RunState[]) m.to(s);
  assert.deepEqual(seen, ['idle>preparing', 'preparing>uploading', 'uploading>running', 'running>collecting', 'collecting>done']);
  assert.throws(() => m.to('failed'), /cannot go from done to failed/);
  const n = new RunStateMachine();
  n.to('preparing');
  n.to('running'); // local runs skip uploading
  assert.throws(() => n.to('uploading'));
  for (const s of Object.keys(RUN_TRANSITIONS) as RunState[]) assert.equal(isFinal(s), ['done', 'failed', 'cancelled'].includes(s));
});

test('sitesForRemote makes workspace paths relative and leaves the rest', () => {
  const ws = '/home/me/proj';
  assert.deepEqual(JSON.parse(sitesForRemote(JSON.stringify([{ file: '/home/me/proj/m/a b.py', line: 3 }, { file: 'rel.py', line: 1 }, { file: '/elsewhere/x.py', line: 2 }]), ws)), [
    { file: 'm/a b.py', line: 3 },
    { file: 'rel.py', line: 1 },
    { file: '/elsewhere/x.py', line: 2 },
  ]);
  assert.deepEqual(JSON.parse(sitesForRemote(JSON.stringify({ sites: [{ file: '/home/me/proj/t.py', line: 9 }] }), ws)), { sites: [{ file: 't.py', line: 9 }] });
});

/**
 * A stand-in `membit` package whose harness only speaks the protocol (progress lines,
 * a report, SIGTERM → cancelled), so ProfileRun's local path is tested in a blink.
 */
function fakeKernels(): string {
  const k = mkdtempSync(join(tmpdir(), 'membit-fake-'));
  mkdirSync(join(k, 'membit', 'profile'), { recursive: true });
  writeFileSync(join(k, 'membit', '__init__.py'), '');
  writeFileSync(join(k, 'membit', 'profile', '__init__.py'), '');
  writeFileSync(
    join(k, 'membit', 'profile', '__main__.py'),
    `import json, os, signal, sys, time
P = "@@membit " + (os.environ["MEMBIT_PROGRESS_TOKEN"] + " " if os.environ.get("MEMBIT_PROGRESS_TOKEN") else "")
a = sys.argv[1:]
out = a[a.index("--out") + 1]
script = a[a.index("--") + 1]
def finish(status, error=None, code=0):
    with open(out, "w") as f:
        json.dump({"schema": "membit.report/1", "run": {"status": status, "error": error, "script": os.path.basename(script), "harness_argv": a}}, f)
    sys.stderr.write(P + '{"event":"finished","status":"%s"}\\n' % status)
    sys.exit(code)
signal.signal(signal.SIGTERM, lambda *_: finish("cancelled", "cancelled (SIGTERM)", 143))
sys.stderr.write(P + '{"event":"started","pid":%d,"device":"cpu"}\\n' % os.getpid())
sys.stderr.flush()
mode = open(script).read().strip()
print("user output")
if mode == "raise":
    sys.stderr.write('Traceback (most recent call last):\\n  File "t.py", line 1\\nValueError: bad lr\\n')
    finish("error", "Traceback (most recent call last):\\nValueError: bad lr", 1)
for step in range(1, 3 if mode == "ok" else 10000):
    sys.stderr.write(P + '{"event":"step","step":%d,"total":2}\\n' % step)
    sys.stderr.flush()
    time.sleep(0.05 if mode == "ok" else 0.2)
finish("ok")
`,
  );
  return k;
}

async function localRun(mode: string, cancelAtStep?: number, harnessArgs?: string[]) {
  const ws = mkdtempSync(join(tmpdir(), 'membit-local-'));
  writeFileSync(join(ws, 't.py'), mode);
  const req = { workspace: ws, script: 't.py', args: ['--lr', '1'], out: join(ws, 'out', 'r.json'), harnessArgs };
  const run = createRun({ kind: 'local', python: 'python3' }, req, { kernelsDir: fakeKernels() });
  const events: RunEvent[] = [];
  run.onEvent((e) => {
    events.push(e);
    if (cancelAtStep && e.type === 'progress' && e.event.event === 'step' && e.event.step === cancelAtStep) run.cancel();
  });
  const outcome = await run.start();
  return { outcome, events, states: events.flatMap((e) => (e.type === 'state' ? [e.state] : [])) };
}

test('ProfileRun on the local target: states, progress, output, report', async () => {
  const { outcome, events, states } = await localRun('ok', undefined, ['--find-max-batch', '--max', '64']);
  assert.deepEqual(states, ['preparing', 'running', 'collecting', 'done']);
  assert.equal(outcome.status, 'ok');
  assert.ok(outcome.report && existsSync(outcome.report));
  const argv = (JSON.parse(readFileSync(outcome.report, 'utf8')) as { run: { harness_argv: string[] } }).run.harness_argv;
  assert.deepEqual(argv.slice(argv.indexOf('--find-max-batch')), ['--find-max-batch', '--max', '64', '--', itemAt(argv, argv.length - 3), '--lr', '1']);
  assert.match(itemAt(argv, argv.length - 3), /t\.py$/);
  assert.deepEqual(events.flatMap((e) => (e.type === 'progress' ? [e.event.event] : [])), ['started', 'step', 'step', 'finished']);
  assert.ok(events.some((e) => e.type === 'output' && e.line === 'user output' && e.stream === 'stdout'));
});

test('ProfileRun on the local target: a failing script is explained, cancel keeps the partial report', async () => {
  const failed = await localRun('raise');
  assert.equal(failed.outcome.state, 'failed');
  assert.equal(failed.outcome.status, 'error');
  assert.equal(failed.outcome.message, 'the script failed: Traceback (most recent call last): | File "t.py", line 1 | ValueError: bad lr');
  const cancelled = await localRun('slow', 2);
  assert.deepEqual(cancelled.states, ['preparing', 'running', 'collecting', 'cancelled']);
  assert.equal(cancelled.outcome.status, 'cancelled');
  assert.ok(cancelled.outcome.report && existsSync(cancelled.outcome.report));
  // Cancelling a finished run changes nothing.
  const again = createRun({ kind: 'local', python: 'python3' }, { workspace: tmpdir(), script: 'nope.py', out: join(tmpdir(), 'x.json') }, { kernelsDir: fakeKernels() });
  again.cancel();
  assert.equal((await again.start()).state, 'cancelled');
  const missing = await createRun({ kind: 'local', python: 'python3' }, { workspace: tmpdir(), script: 'nope-missing.py', out: join(tmpdir(), 'x.json') }, { kernelsDir: fakeKernels() }).start();
  assert.equal(missing.state, 'failed');
  assert.match(missing.message ?? '', /script not found/);
});

test('Add SSH host: what ssh can take passes, the rest is refused with the fix', () => {
  for (const ok of ['gpu1', 'me@gpu1.example.org', 'a_b-c.d', '10.0.0.7', 'me@fe80::1']) assert.equal(newHostProblem(ok, []), undefined, ok);
  const cases: [string, RegExp][] = [
    ['', /Host alias/],
    ['   ', /Host alias/],
    ['-oProxyCommand=touch /tmp/x', /start with "-"/],
    ['gpu 1', /no spaces.*~\/\.ssh\/config/],
    ['a@b@c', /one "@"/],
    ['me@', /missing/],
    ['gpu1:2222', /Port/],
    ['me@gpu1:22', /Port/],
    ['gpu1;rm', /Only letters/],
    ['$(id)@gpu1', /Only letters/],
    ['gpu1', /already a target/],
  ];
  for (const [input, re] of cases) assert.match(newHostProblem(input, ['gpu1']) ?? '(accepted)', re, JSON.stringify(input));
});
