/**
 * PyTorch memory snapshots: the restricted pickle reader, the conversion to a report and
 * `membit report` on them, with real snapshots recorded on an H100 from the GPT sample
 * (test/fixtures/snapshots, see its README) and hand-made bad input.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { validate } from '../../src/core/report/jsonSchema';
import { indexReport, inlineText, parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { openSnapshot, SnapshotError } from '../../src/core/snapshot';
import { loadSnapshotsInWorker } from '../../src/core/snapshot/load';
import { workspaceMapper } from '../../src/core/snapshot/paths';
import { PickleError, Unpickler, unpickle } from '../../src/core/snapshot/pickle';
import { groupRunSets, rankOf } from '../../src/core/snapshot/runSet';
import { defined } from '../defined';

const repo = join(__dirname, '..', '..', '..');
const dir = join(repo, 'test', 'fixtures', 'snapshots');
const fx = (name: string) => join(dir, name);
const open = (name: string) => openSnapshot(fx(name), { root: repo });

function valid(r: Report): void {
  const errors = validate(REPORT_SCHEMA, JSON.parse(JSON.stringify(r)), 5);
  assert.deepEqual(errors, [], JSON.stringify(errors));
}

async function refusal(bytes: Uint8Array | string, name = 'bad.pickle'): Promise<string> {
  const d = mkdtempSync(join(tmpdir(), 'membit-snap-'));
  const p = join(d, name);
  writeFileSync(p, bytes);
  await assert.rejects(openSnapshot(p, { root: d }), SnapshotError);
  try {
    await openSnapshot(p, { root: d });
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

test('a snapshot taken during a harness run gives the harness its own peak and top holders', async () => {
  const harness = parseReport(readFileSync(fx('harness_gpt.report.json'), 'utf8'), REPORT_SCHEMA, 'harness report');
  assert.ok(harness.ok, harness.ok ? '' : harness.error);
  const h = harness.report;
  const r = await open('harness_gpt.pickle.gz');
  valid(r);
  assert.equal(r.summary.peak_allocated, h.summary.peak_allocated);
  assert.equal(r.peak.replay_bytes, h.peak.replay_bytes);
  assert.equal(r.summary.peak_reserved, h.summary.peak_reserved);
  // The same blocks, largest first, allocated at the same workspace frames.
  const n = Math.min(h.peak.top.length, 10);
  assert.ok(n >= 5);
  assert.deepEqual(
    r.peak.top.slice(0, n).map((x) => x.bytes),
    h.peak.top.slice(0, n).map((x) => x.bytes),
  );
  const inner = (top: Report['peak']['top']) => top.slice(0, n).map((x) => (x.frames[0] ? `${x.frames[0].file}:${x.frames[0].line}` : '-')).sort();
  assert.deepEqual(inner(r.peak.top), inner(h.peak.top));
  // Optimizer state is certain from its frames (Adam's _init_group): the harness counted the same bytes.
  assert.equal(r.summary.optimizer_state_at_peak, h.summary.optimizer_state_at_peak);
  assert.equal(r.source.kind, 'snapshot');
});

test('python stacks, plain pickle: timeline, peak, lines by the innermost workspace frame, segments', async () => {
  const r = await open('gpt_python.pickle');
  valid(r);
  // The overlays' text says what a snapshot's line figure is.
  const idx = indexReport(r);
  const first = idx.files.get('samples/gpt_tiny.py')?.get(r.lines[0]?.line ?? -1);
  assert.ok(first);
  assert.match(inlineText(first, 'cuda', true), /^▲ [\d.]+ (?:[KMG]i)?B live at peak$/);
  assert.equal(r.source.stacks, 'python');
  assert.equal(r.source.history, true);
  assert.ok(r.source.entries > 1000);
  assert.ok(r.timeline && r.timeline.t_ms.length === r.timeline.allocated.length && r.timeline.allocated.length > 100);
  const peak = defined(r.summary.peak_allocated, 'peak');
  assert.equal(Math.max(...r.timeline.allocated), peak);
  assert.ok(defined(r.summary.peak_reserved, 'reserved peak') >= peak);
  // Every line maps onto a workspace file, and the lines never hold more than the peak.
  assert.ok(r.lines.length > 0);
  for (const l of r.lines) assert.ok(existsSync(join(repo, l.file)), l.file);
  assert.ok(r.lines.some((l) => l.file === 'samples/gpt_tiny.py'));
  assert.ok(r.lines.reduce((a, l) => a + l.saved_bytes, 0) <= peak);
  // The peak's holders sum to at most the peak, largest first.
  const top = r.peak.top.map((x) => x.bytes);
  assert.deepEqual(top, [...top].sort((a, b) => b - a));
  assert.equal(r.summary.unattributed_at_peak, peak - r.summary.tracked_at_peak);
  // Segments: reserved splits into allocated blocks and free blocks.
  const s = r.segments;
  assert.ok(s.count > 0);
  assert.equal(s.reserved, s.allocated + s.free);
  assert.equal(s.items.reduce((a, x) => a + x.total, 0), s.reserved);
});

test('stacks="all" (gzip): C++ frames are read, Python frames still map to the workspace', async () => {
  const r = await open('gpt_all.pickle.gz');
  valid(r);
  assert.equal(r.source.stacks, 'all');
  assert.ok(r.lines.some((l) => l.file === 'samples/gpt_tiny.py'));
  assert.ok(r.peak.top[0]?.frames.length);
});

test('an OOM dump: the failure, what it asked for, and what held the memory', async () => {
  const r = await open('gpt_oom.pickle.gz');
  valid(r);
  assert.equal(r.run.status, 'oom');
  assert.equal(r.oom_events.length, 1);
  const o = r.oom;
  assert.ok(o);
  assert.equal(o.requested_bytes, 256 * 2 ** 20);
  assert.ok(defined(o.device_free, 'device_free') > 0);
  assert.ok(o.top.length > 0 && o.lines.length > 0);
  assert.ok(o.lines.every((l) => l.file === 'samples/gpt_tiny.py'));
  assert.match(o.message, /tried to allocate 256 MiB/);
  assert.ok(r.run.error_at?.file === 'samples/gpt_tiny.py');
});

test('a snapshot without history: no timeline, the state at the dump, and a note that says so', async () => {
  const r = await open('gpt_nohistory.pickle');
  valid(r);
  assert.equal(r.timeline, null);
  assert.equal(r.source.history, false);
  assert.match(r.run.notes.join(' '), /no allocation history.*_record_memory_history/);
  assert.equal(r.summary.peak_allocated, r.segments.allocated);
  assert.ok(r.peak.top.length > 0);
});

test('a pickle that would run a command is refused, naming what it asked for, and nothing runs', async () => {
  const d = mkdtempSync(join(tmpdir(), 'membit-evil-'));
  const marker = join(d, 'MEMBIT_PWNED');
  // pickle.dumps({'segments': [E()]}) where E.__reduce__ returns (os.system, ('touch MEMBIT_PWNED',)):
  // protocol 2 (GLOBAL) and protocol 4 (STACK_GLOBAL).
  const evil = {
    GLOBAL: '80027d710058080000007365676d656e747371015d710263706f7369780a73797374656d0a71035812000000746f756368204d454d4249545f50574e4544710485710552710661732e',
    STACK_GLOBAL: '8004953e000000000000007d948c087365676d656e7473945d948c05706f736978948c0673797374656d9493948c12746f756368204d454d4249545f50574e4544948594529461732e',
  };
  for (const [op, hex] of Object.entries(evil)) {
    const bytes = Buffer.from(hex, 'hex');
    assert.throws(() => unpickle(bytes), (e: unknown) => e instanceof PickleError && e.kind === 'refused' && e.message.includes(`${op} posix.system`));
    const p = join(d, `${op}.pickle`);
    writeFileSync(p, bytes);
    await assert.rejects(openSnapshot(p, { root: d }), /asks to import or call a Python object \(.*posix\.system\).*ran nothing/);
  }
  assert.equal(existsSync(marker), false);
  assert.equal(existsSync(join(process.cwd(), 'MEMBIT_PWNED')), false);
});

test('bad input gets a clear message: truncated, another pickle, a future protocol, not a pickle', async () => {
  const whole = readFileSync(fx('gpt_python.pickle'));
  assert.match(await refusal(whole.subarray(0, Math.floor(whole.length / 2))), /ends early .* truncated/);
  const gz = readFileSync(fx('gpt_oom.pickle.gz'));
  assert.match(await refusal(gz.subarray(0, gz.length - 40), 'cut.pickle.gz'), /gzip data is cut off|truncated/);
  // pickle.dumps(['not', 'a', 'snapshot'], protocol=4)
  assert.match(await refusal(Buffer.from('8004951a000000000000005d94288c036e6f74948c0161948c08736e617073686f7494652e', 'hex')), /is a pickle, but not a PyTorch memory snapshot: it holds a list/);
  // The same data under a protocol this reader does not know yet.
  const future = Buffer.from(whole);
  future[1] = 6;
  assert.match(await refusal(future), /protocol 6, newer than this reader knows/);
  assert.match(await refusal('{"schema": "membit.report/1"}'), /is JSON, not a pickle/);
  assert.match(await refusal(Buffer.from('504b0304', 'hex')), /zip archive \(torch\.save/);
  assert.match(await refusal(''), /is empty/);
  assert.match(await refusal('hello'), /not a pickle of protocol 2 or newer/);
});

test('the reader takes plain data opcodes: ints of every width, floats, text, tuples', () => {
  const v = unpickle(makePickle());
  assert.deepEqual(JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x))) as unknown, { a: [1, -2, 3.5, null, true, 'é', [1, 2]], big: `${2n ** 60n}n`, neg: -(2 ** 40) });
});

/** A protocol-2 pickle, opcode by opcode: {'a': [1, -2, 3.5, None, True, 'é', (1, 2)], 'big': 2**60, 'neg': -(2**40)}. */
function makePickle(): Buffer {
  const parts: Buffer[] = [];
  const op = (...b: number[]) => parts.push(Buffer.from(b));
  const u = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(Buffer.from([0x58]), len, b);
  };
  op(0x80, 2, 0x7d, 0x28); // PROTO 2, EMPTY_DICT, MARK
  u('a');
  op(0x5d, 0x28); // EMPTY_LIST, MARK
  op(0x4b, 1); // BININT1 1
  op(0x4a, 0xfe, 0xff, 0xff, 0xff); // BININT -2
  const f = Buffer.alloc(9);
  f[0] = 0x47;
  f.writeDoubleBE(3.5, 1);
  parts.push(f);
  op(0x4e, 0x88); // NONE, NEWTRUE
  u('é');
  op(0x4b, 1, 0x4b, 2, 0x86); // (1, 2)
  op(0x65); // APPENDS
  u('big');
  op(0x8a, 8, 0, 0, 0, 0, 0, 0, 0, 0x10); // LONG1 2**60
  u('neg');
  op(0x8a, 6, 0, 0, 0, 0, 0, 0xff); // LONG1 -(2**40)
  op(0x75, 0x2e); // SETITEMS, STOP
  return Buffer.concat(parts);
}

test('streaming: the same value whatever the chunk boundaries', async () => {
  const bytes = readFileSync(fx('gpt_nohistory.pickle'));
  const whole = JSON.stringify(unpickle(bytes));
  for (const size of [1, 7, 64, 1000]) {
    const u = new Unpickler();
    for (let i = 0; i < bytes.length; i += size) u.feed(bytes.subarray(i, i + size));
    assert.equal(JSON.stringify(u.end()), whole, `chunks of ${size}`);
  }
  // gzip of the same bytes reads the same.
  const d = mkdtempSync(join(tmpdir(), 'membit-gz-'));
  writeFileSync(join(d, 'a.pickle.gz'), gzipSync(bytes));
  const r = await openSnapshot(join(d, 'a.pickle.gz'), { root: d });
  assert.equal(r.summary.peak_allocated, (await open('gpt_nohistory.pickle')).summary.peak_allocated);
});

test('frame paths map onto the workspace by their longest relative tail; library files never map', () => {
  const files = new Set(['/ws/samples/gpt_tiny.py', '/ws/functional.py', '/ws/train/model.py']);
  const m = workspaceMapper('/ws', (p) => files.has(p));
  assert.equal(m('/home/user/membit/samples/gpt_tiny.py'), 'samples/gpt_tiny.py');
  assert.equal(m('/opt/venv/lib/python3.12/site-packages/torch/nn/functional.py'), null);
  assert.equal(m('/scratch/job7/train/model.py'), 'train/model.py');
  assert.equal(m('train/model.py'), 'train/model.py');
  assert.equal(m('../outside/model.py'), null);
  assert.equal(m('??'), null);
  assert.equal(m('<frozen runpy>'), null);
});

test('per-rank files group into one run set per step, ordered by rank', () => {
  const sets = groupRunSets([
    'snaps/iteration_2/rank1_memory_snapshot.pickle',
    'snaps/iteration_2/rank0_memory_snapshot.pickle',
    'snaps/iteration_4/rank0_memory_snapshot.pickle',
    'out/000001_step_10.pickle',
    'out/000000_step_10.pickle',
    'lone.pickle',
  ]);
  assert.deepEqual(
    sets.map((s) => [s.step, s.members.map((m) => m.rank)]),
    [
      [2, [0, 1]],
      [4, [0]],
      [10, [0, 1]],
      [null, [null]],
    ],
  );
  assert.equal(rankOf('x/rank12.pickle.gz').rank, 12);
  assert.equal(rankOf('x/rank12.pickle.gz').key, 'x/rank*.pickle.gz');
  assert.equal(rankOf('x/000003_step_7.pickle').rank, 3);
  assert.equal(rankOf('x/mem.pickle').rank, null);
});

test('the rank files of the fixture are read as ranks 0 and 1', async () => {
  const base = 'ranks/memory_snapshot/iteration_2';
  const [set] = groupRunSets([fx(`${base}/rank0_memory_snapshot.pickle`), fx(`${base}/rank1_memory_snapshot.pickle`)]);
  assert.equal(set?.members.length, 2);
  const r1 = await open(`${base}/rank1_memory_snapshot.pickle`);
  assert.equal(r1.source.rank, 1);
});

test('membit report reads snapshots: the peak, the lines, segments, OOM and --out', async () => {
  const io = capture(repo);
  assert.equal(await main(['report', 'test/fixtures/snapshots/gpt_oom.pickle.gz'], io), 0, io.stderr);
  assert.match(io.stdout, /^snapshot gpt_oom\.pickle\.gz · CUDA device 0 · \d+ trace entries · stacks python · oom$/m);
  assert.match(io.stdout, /^peak [\d.]+ (?:[KMG]i)?B allocated \(replayed from the allocation history\)/m);
  assert.match(io.stdout, /^ {2}samples\/gpt_tiny\.py:\d+ +[\d.]+ (?:[KMG]i)?B {2}\d+ blocks? {2}forward$/m);
  assert.match(io.stdout, /^out of memory at [\d.]+ s: asked for 256 MiB with [\d.]+ (?:[KMG]i)?B allocated, [\d.]+ (?:[KMG]i)?B reserved at samples\/gpt_tiny\.py:\d+$/m);
  assert.match(io.stdout, /^segments at the dump: \d+ · reserved /m);
  const d = mkdtempSync(join(tmpdir(), 'membit-out-'));
  const out = join(d, 'r.json');
  const io2 = capture(repo);
  assert.equal(await main(['report', 'test/fixtures/snapshots/gpt_python.pickle', '--out', out], io2), 0, io2.stderr);
  const back = parseReport(readFileSync(out, 'utf8'), REPORT_SCHEMA, out);
  assert.ok(back.ok, back.ok ? '' : back.error);
  assert.equal(back.report.source?.kind, 'snapshot');
  const io3 = capture(repo);
  assert.equal(await main(['report', 'test/fixtures/snapshots/gpt_python.pickle', 'test/fixtures/snapshots/gpt_all.pickle.gz', '--markdown'], io3), 0, io3.stderr);
  assert.match(io3.stdout, /^\| gpt_all\.pickle\.gz \| baseline \| ok \|/m);
  const bad = capture(d);
  writeFileSync(join(d, 'evil.pickle'), Buffer.from('8004953e000000000000007d948c087365676d656e7473945d948c05706f736978948c0673797374656d9493948c12746f756368204d454d4249545f50574e4544948594529461732e', 'hex'));
  assert.equal(await main(['report', 'evil.pickle'], bad), 1);
  assert.match(bad.stderr, /posix\.system/);
  assert.equal(existsSync(join(d, 'MEMBIT_PWNED')), false);
});

test('reading in a worker thread gives the same report, and an error per bad file', async () => {
  const workerPath = join(repo, 'dist', 'snapshotWorker.js');
  assert.ok(existsSync(workerPath), 'build first: node esbuild.mjs');
  const d = mkdtempSync(join(tmpdir(), 'membit-w-'));
  writeFileSync(join(d, 'bad.pickle'), 'nope');
  const got = await loadSnapshotsInWorker({ workerPath, paths: [fx('gpt_python.pickle'), join(d, 'bad.pickle')], root: repo });
  const direct = await open('gpt_python.pickle');
  assert.equal(got[0]?.report?.summary.peak_allocated, direct.summary.peak_allocated);
  assert.deepEqual(got[0].report.lines, direct.lines);
  assert.match(got[1]?.error ?? '', /not a pickle/);
});
