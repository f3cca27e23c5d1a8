// torchrun launches: the pure argv and checks, and real 2-rank jobs (gloo on CPU) through the
// CLI and through the ProfileRun the extension uses: one report per rank, a run set merging
// them, `membit report` on it, cancel reaching every rank, a dying rank named.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { loadRunSet, overlayReport, parseRunSet, rankPeaks, type RankedLine } from '../../src/core/report/runset';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import { createRun } from '../../src/core/run/target';
import { generateLargeReport, MB } from '../bench/largeReport';
import { indexReport, indexReportInTurns } from '../../src/core/report/model';
import { overlayText, parseOverlay, RunSetClient } from '../../src/vscode/report/runSetProtocol';
import { checkLauncher, describeRankFailures, LauncherError, rankOutPattern, rankReportPath, torchrunArgv, type RunSetDoc } from '../../src/core/run/torchrun';

const REPO = resolve(__dirname, '..', '..', '..');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');
const SMALL = ['--batch-size', '4', '--seq-len', '32', '--n-layer', '2', '--n-embd', '32', '--n-head', '2', '--data-bytes', '200000'];

/** A workspace whose folder name needs quoting, holding the distributed sample. */
function workspace(): string {
  const ws = join(mkdtempSync(join(tmpdir(), 'membit-torchrun-')), "my ws; $(x) 'q'");
  mkdirSync(ws, { recursive: true });
  for (const f of ['gpt_dist.py', 'gpt_tiny.py']) cpSync(join(REPO, 'samples', f), join(ws, f));
  return ws;
}

test('launcher settings are checked, naming the field and the fix', () => {
  assert.deepEqual(checkLauncher({ kind: 'torchrun', nprocPerNode: 4 }), { kind: 'torchrun', nprocPerNode: 4, nnodes: 1 });
  assert.throws(() => checkLauncher({ kind: 'mpirun', nprocPerNode: 2 }), /launcher.kind must be "torchrun"/);
  assert.throws(() => checkLauncher({ kind: 'torchrun' }), /nprocPerNode is required/);
  assert.throws(() => checkLauncher({ kind: 'torchrun', nprocPerNode: 0 }), /nprocPerNode must be a whole number from 1/);
  assert.throws(() => checkLauncher({ kind: 'torchrun', nprocPerNode: 2, nnodes: 2 }), /give launcher.rdzvEndpoint/);
  assert.throws(() => checkLauncher({ kind: 'torchrun', nprocPerNode: 2, nnodes: 2, rdzvEndpoint: 'h;rm -rf /:1' }), LauncherError);
  assert.throws(() => checkLauncher({ kind: 'torchrun', nprocPerNode: 2, nnodes: 2, nodeRank: 2, rdzvEndpoint: 'h:1' }), /nodeRank must be a whole number from 0 to 1/);
});

test('torchrunArgv runs the harness as a module in every rank, with no restarts', () => {
  const harness = [PYTHON, '-m', 'membit.profile', '--out', '/r/x.ranks/rank{rank}.json', '--', 'a b.py', '--x'];
  assert.deepEqual(torchrunArgv({ kind: 'torchrun', nprocPerNode: 2 }, harness, 'id1'), [
    PYTHON, '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--nnodes', '1', '--standalone', '--max-restarts', '0',
    '-m', 'membit.profile', '--out', '/r/x.ranks/rank{rank}.json', '--', 'a b.py', '--x',
  ]);
  const multi = torchrunArgv({ kind: 'torchrun', nprocPerNode: 8, nnodes: 2, nodeRank: 1, rdzvEndpoint: 'node0:29500' }, harness, 'id1');
  assert.deepEqual(multi.slice(3, 15), ['--nproc-per-node', '8', '--nnodes', '2', '--rdzv-backend', 'c10d', '--rdzv-endpoint', 'node0:29500', '--rdzv-id', 'id1', '--node-rank', '1']);
  assert.equal(rankOutPattern('/w/.membit/runs/a.json'), '/w/.membit/runs/a.ranks/rank{rank}.json');
});

test('describeRankFailures names the rank that failed first, then the rest', () => {
  const msg = describeRankFailures([
    { rank: 0, status: 'cancelled' },
    { rank: 1, status: 'oom', error: 'Traceback...\ntorch.OutOfMemoryError: CUDA out of memory', failedAt: 20, host: 'n1' },
    { rank: 2, status: 'error', error: 'RuntimeError: Connection closed by peer', failedAt: 21 },
    { rank: 3, status: 'missing' },
  ]);
  assert.equal(msg, 'rank 1 on n1 ran out of memory first: torch.OutOfMemoryError: CUDA out of memory; rank 3 wrote no report (killed, or never started); then rank 0 was stopped, rank 2 error');
  assert.equal(describeRankFailures([{ rank: 0, status: 'ok' }]), undefined);
});

test('a run-set file is untrusted: report paths must stay in its folder', () => {
  const doc = (report: string | null) => JSON.stringify({ schema: 'membit.runset/1', world_size: 1, ranks: [{ rank: 0, status: 'ok', report }] });
  assert.equal(parseRunSet(doc('x.ranks/rank0.json')).ok, true);
  for (const bad of ['../../etc/passwd', '/etc/passwd', 'x/../../y.json']) {
    const r = parseRunSet(doc(bad));
    assert.equal(r.ok, false);
    assert.match((r as { error: string }).error, /must be a path inside the run set's folder/);
  }
  assert.match((parseRunSet('{"schema":"membit.report/1"}') as { error: string }).error, /not a membit.runset\/1 document/);
});

test('membit profile --nproc-per-node 2: FSDP2 under torchrun, a report per rank, merged by membit report', { timeout: 300_000 }, async () => {
  const ws = workspace();
  const out = join(ws, 'runs', 'fsdp.json');
  const io = capture(ws);
  const code = await main(['profile', '--python', PYTHON, '--nproc-per-node', '2', '--steps', '2', '--out', out, '--', 'gpt_dist.py', '--parallel', 'fsdp', '--steps', '6', ...SMALL], io);
  assert.equal(code, 0, io.stderr.slice(-3000));
  // Every rank's progress, named.
  for (const rank of [0, 1]) assert.match(io.stderr, new RegExp(`^membit: rank ${rank}: step 2/2 · peak`, 'm'));
  assert.match(io.stderr, /membit: run set .*fsdp\.json \(status ok\)/);
  const set = loadRunSet(out, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA);
  assert.equal(set.doc.world_size, 2);
  assert.equal(set.doc.status, 'ok');
  assert.deepEqual(set.ranks.map((r) => [r.rank, r.status, r.file]), [[0, 'ok', rankReportPath(out, 0)], [1, 'ok', rankReportPath(out, 1)]]);
  for (const r of set.ranks) {
    const d = r.report?.run.distributed;
    assert.equal(d?.rank, r.rank);
    assert.equal(d.world_size, 2);
    assert.equal(d.launcher, 'torchrun');
    assert.equal(d.run_set, set.doc.id, 'the harness takes the run-set id from MEMBIT_RUN_SET');
    assert.equal(r.report?.run.script, 'gpt_dist.py');
    assert.ok((r.report.summary.distributed?.fsdp_units.length ?? 0) >= 3);
  }
  const peaks = rankPeaks(set);
  assert.equal(peaks.peaks.length, 2);
  assert.ok(peaks.imbalance !== undefined && peaks.imbalance >= 0);
  // The overlay view: per line, the largest rank's figure, naming it.
  const merged = overlayReport(set);
  const line = merged?.lines[0] as RankedLine;
  const own = set.ranks.find((r) => r.rank === line.rank)?.report?.lines.find((l) => l.file === line.file && l.line === line.line && l.module === line.module);
  assert.equal(line.saved_bytes, own?.saved_bytes);
  for (const r of set.ranks) {
    const other = r.report?.lines.find((l) => l.file === line.file && l.line === line.line && l.module === line.module);
    assert.ok((other?.saved_bytes ?? 0) <= line.saved_bytes);
  }
  assert.deepEqual(overlayReport(set, 1)?.lines.map((l) => l.saved_bytes), set.ranks[1]?.report?.lines.map((l) => l.saved_bytes));

  // The editor reads the same run set in its worker thread (the bundled dist/runSetWorker.js).
  const client = new RunSetClient(join(REPO, 'dist', 'runSetWorker.js'));
  try {
    const w = await client.load(out);
    assert.deepEqual(w.info.ranks.map((r) => [r.rank, r.status, r.peak]), set.ranks.map((r) => [r.rank, r.status, r.peak]));
    assert.deepEqual(w.info.peaks, peaks);
    assert.deepEqual(w.info.timelines.map((t) => [t.rank, t.source]), [[0, 'steps'], [1, 'steps']]);
    assert.deepEqual(w.overlay?.lines, merged?.lines);
    assert.deepEqual((await client.pick(1))?.lines, overlayReport(set, 1)?.lines);
  } finally {
    client.dispose();
  }

  const text = capture(ws);
  assert.equal(await main(['report', out], text), 0, text.stderr);
  assert.match(text.stdout, /^gpt_dist\.py · baseline · torchrun, 2 ranks · ok$/m);
  assert.match(
    text.stdout,
    peaks.max?.peak === peaks.min?.peak ? /^every rank peaked at [\d.]+ (?:[KMG]i)?B: no imbalance$/m : /^peak .* on rank ([01]), lowest .* on rank (?!\1)[01]; imbalance [\d.]+% \(max \/ mean − 1\)$/m,
  );
  assert.match(text.stdout, /^0 +\S+ +CPU .* ok /m);
  assert.match(text.stdout, /^1 +\S+ +CPU .* ok /m);
  assert.match(text.stdout, /rank [01] {2}/);
  const md = capture(ws);
  assert.equal(await main(['report', out, '--markdown'], md), 0);
  assert.match(md.stdout, /^\| rank \| host \| device \| status \|/m);
  const one = capture(ws);
  assert.equal(await main(['report', out, '--rank', '1'], one), 0);
  assert.match(one.stdout, /^gpt_dist\.py · baseline · CPU/m);
  const bad = capture(ws);
  assert.equal(await main(['report', out, '--rank', '7'], bad), 2);
  assert.match(bad.stderr, /the run set has ranks 0, 1/);
});

test('cancel stops every rank; each writes a cancelled report', { timeout: 300_000 }, async () => {
  const ws = workspace();
  const out = join(ws, 'runs', 'cancel.json');
  const run = createRun(
    { kind: 'local', python: PYTHON },
    { workspace: ws, script: 'gpt_dist.py', args: ['--parallel', 'ddp', '--steps', '100000', ...SMALL], out, steps: 0, warmup: 0, launcher: { kind: 'torchrun', nprocPerNode: 2 } },
    { kernelsDir: join(REPO, 'kernels') },
  );
  const pids = new Map<number, number>();
  const stepped = new Set<number>();
  run.onEvent((e) => {
    if (e.type !== 'progress') return;
    const ev = e.event as { event: string; rank?: number; pid?: number };
    if (ev.event === 'started' && typeof ev.rank === 'number' && typeof ev.pid === 'number') pids.set(ev.rank, ev.pid);
    if (ev.event === 'step' && typeof ev.rank === 'number') {
      stepped.add(ev.rank);
      if (stepped.size === 2) run.cancel();
    }
  });
  const outcome = await run.start();
  assert.equal(outcome.state, 'cancelled', outcome.message);
  assert.equal(pids.size, 2);
  for (const pid of pids.values()) assert.throws(() => process.kill(pid, 0), /ESRCH/, `rank process ${pid} still alive`);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as RunSetDoc;
  assert.equal(doc.status, 'cancelled');
  assert.deepEqual(doc.ranks.map((r) => r.status), ['cancelled', 'cancelled']);
});

test('a rank that dies ends the job: the failure names it and the survivor reports', { timeout: 300_000 }, async () => {
  const ws = workspace();
  writeFileSync(
    join(ws, 'dies.py'),
    [
      'import os, signal',
      'import torch, torch.distributed as dist',
      'dist.init_process_group("gloo")',
      'model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(32, 32))',
      'opt = torch.optim.SGD(model.parameters(), lr=0.01)',
      'x = torch.linspace(-1, 1, 8 * 32).reshape(8, 32)',
      'for step in range(1, 40):',
      '    if dist.get_rank() == 1 and step == 3:',
      '        raise RuntimeError("rank one gives up")',
      '    loss = model(x).square().mean()',
      '    opt.zero_grad()',
      '    loss.backward()',
      '    opt.step()',
      '',
    ].join('\n'),
  );
  const out = join(ws, 'runs', 'dies.json');
  const io = capture(ws);
  const code = await main(['profile', '--python', PYTHON, '--nproc-per-node', '2', '--steps', '0', '--out', out, '--', 'dies.py'], io);
  assert.equal(code, 1);
  assert.match(io.stderr, /membit profile: rank 1 on \S+ failed first: RuntimeError: rank one gives up/);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as RunSetDoc;
  assert.equal(doc.status, 'failed');
  assert.equal(doc.ranks[1]?.status, 'error');
  assert.ok(doc.ranks[0]?.report && existsSync(join(ws, 'runs', doc.ranks[0].report)), 'the surviving rank wrote its report');
  assert.ok(['error', 'cancelled'].includes(doc.ranks[0].status));
});

test('membit profile: bad launcher flags are usage errors', async () => {
  const ws = workspace();
  const io = capture(ws);
  assert.equal(await main(['profile', '--nproc-per-node', '0', '--', 'gpt_dist.py'], io), 2);
  assert.match(io.stderr, /--nproc-per-node must be a whole number from 1/);
  const io2 = capture(ws);
  assert.equal(await main(['profile', '--nnodes', '2', '--', 'gpt_dist.py'], io2), 2);
  assert.match(io2.stderr, /--nnodes needs --nproc-per-node/);
  const io3 = capture(ws);
  assert.equal(await main(['profile', '--nproc-per-node', '2', '--target', 'gpu1', '--', 'gpt_dist.py'], io3), 2);
  assert.match(io3.stderr, /does not combine with --target/);
});

test('the run-set overlay crosses threads as JSON pieces and comes back equal', async () => {
  const { report } = generateLargeReport({ targetBytes: 8 * MB, seed: 5 });
  assert.ok(report.lines.length > 1000 && report.modules.length > 0, `${report.lines.length} lines`);
  const pieces = overlayText(report);
  assert.ok(pieces.chunks.length >= 2, 'long lists are split');
  assert.ok(pieces.chunks.every((c) => (JSON.parse(c.text) as unknown[]).length <= 1000));
  assert.deepEqual(await parseOverlay(pieces), JSON.parse(JSON.stringify(report)));
  await assert.rejects(parseOverlay({ head: '{"lines":3}', chunks: [{ key: 'lines', text: '[1]' }] }), /overlay's lines is not a list/);
});

test('the overlay index built a slice at a time equals the one built at once', async () => {
  const { report } = generateLargeReport({ targetBytes: 4 * MB, seed: 9 });
  assert.ok(report.lines.length > 300);
  const once = indexReport(report);
  const turns = await indexReportInTurns(report, 97);
  assert.equal(turns.peak, once.peak);
  assert.deepEqual([...turns.files.keys()], [...once.files.keys()]);
  for (const [f, lines] of once.files) assert.deepEqual([...(turns.files.get(f) ?? new Map())].sort((a, b) => a[0] - b[0]), [...lines].sort((a, b) => a[0] - b[0]));
});
