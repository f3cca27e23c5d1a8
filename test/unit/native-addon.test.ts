/**
 * The addon's own API over the fake libnvidia-ml: "no NVML" as a clean state, init
 * failures, every NVML error code, old drivers, argument checks, and the sampler
 * thread's life (stop, re-init under it, a GPU that comes back).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { loadAddon, type NvmlAddon } from '../../src/native/addon';
import type { RawBatch } from '../../src/native/sampler';
import { addonBinary, buildFakeNvml, childWithGrandchild, GIB, MIB, Scenario, sleep, tempDir, twoGpus, waitFor } from './nativeFakes';
import { itemAt } from '../../src/core/arrays';

const dir = tempDir('native-addon');
const scenario = new Scenario(dir, twoGpus());
let addon: NvmlAddon;
let fakeLib: string;

before(() => {
  addon = loadAddon(addonBinary());
  fakeLib = buildFakeNvml(dir);
});

/** Error codes NVML defines, and the names thrown errors carry. */
const CODES: [number, string][] = [
  [1, 'NVML_ERROR_UNINITIALIZED'], [2, 'NVML_ERROR_INVALID_ARGUMENT'], [3, 'NVML_ERROR_NOT_SUPPORTED'],
  [4, 'NVML_ERROR_NO_PERMISSION'], [5, 'NVML_ERROR_ALREADY_INITIALIZED'], [6, 'NVML_ERROR_NOT_FOUND'],
  [8, 'NVML_ERROR_INSUFFICIENT_POWER'], [9, 'NVML_ERROR_DRIVER_NOT_LOADED'], [10, 'NVML_ERROR_TIMEOUT'],
  [11, 'NVML_ERROR_IRQ_ISSUE'], [12, 'NVML_ERROR_LIBRARY_NOT_FOUND'], [13, 'NVML_ERROR_FUNCTION_NOT_FOUND'],
  [14, 'NVML_ERROR_CORRUPTED_INFOROM'], [15, 'NVML_ERROR_GPU_IS_LOST'], [16, 'NVML_ERROR_RESET_REQUIRED'],
  [17, 'NVML_ERROR_OPERATING_SYSTEM'], [18, 'NVML_ERROR_LIB_RM_VERSION_MISMATCH'], [19, 'NVML_ERROR_IN_USE'],
  [20, 'NVML_ERROR_MEMORY'], [21, 'NVML_ERROR_NO_DATA'], [22, 'NVML_ERROR_VGPU_ECC_NOT_ENABLED'],
  [23, 'NVML_ERROR_INSUFFICIENT_RESOURCES'], [24, 'NVML_ERROR_FREQ_NOT_SUPPORTED'],
  [25, 'NVML_ERROR_ARGUMENT_VERSION_MISMATCH'], [26, 'NVML_ERROR_DEPRECATED'], [27, 'NVML_ERROR_NOT_READY'],
  [28, 'NVML_ERROR_GPU_NOT_FOUND'], [29, 'NVML_ERROR_INVALID_STATE'], [999, 'NVML_ERROR_UNKNOWN'],
];

test('no library is a clean state: no GPUs, and status says why', () => {
  const s = addon.init('/nonexistent/libnvidia-ml.so.1');
  assert.deepEqual(s, { available: false, reason: 'no NVML: /nonexistent/libnvidia-ml.so.1 not found', library: '/nonexistent/libnvidia-ml.so.1', driverVersion: null });
  assert.deepEqual(addon.listGpus(), []);
  assert.throws(() => addon.processesOn(0), /no GPU 0 \(no NVML: \/nonexistent\/libnvidia-ml.so.1 not found\)/);
  assert.throws(() => addon.startSampler({ intervalMs: 10 }, () => {}), /startSampler: no NVML/);
});

test('by default it opens libnvidia-ml.so.1, or $MEMBIT_NVML_LIB', () => {
  delete process.env['MEMBIT_NVML_LIB'];
  const s = addon.init();
  assert.equal(s.library, 'libnvidia-ml.so.1');
  // This machine may or may not have a driver; without one the answer is exact.
  if (!s.available) assert.equal(s.reason, 'no NVML: libnvidia-ml.so.1 not found');
  process.env['MEMBIT_NVML_LIB'] = fakeLib;
  try {
    const e = addon.init();
    assert.equal(e.library, fakeLib);
    assert.equal(e.available, true);
    assert.equal(e.reason, 'NVML ready (driver 999.99.99-fake)');
    assert.equal(e.driverVersion, '999.99.99-fake');
  } finally {
    delete process.env['MEMBIT_NVML_LIB'];
  }
});

test('a file that is not a library, or a library without the entry points, is "no NVML" with the reason', () => {
  const bogus = join(dir, 'not-a-library.so');
  writeFileSync(bogus, 'hello');
  const s = addon.init(bogus);
  assert.equal(s.available, false);
  assert.match(s.reason, /^no NVML: cannot load .*not-a-library\.so: /);
  const t = addon.init(buildFakeNvml(dir, 'no-uuid'));
  assert.equal(t.available, false);
  assert.match(t.reason, /has no nvmlDeviceGetUUID \(driver too old\?\)$/);
  assert.deepEqual(addon.listGpus(), []);
});

test('an init failure (no driver, driver/library mismatch) is "not available" with NVML\'s message', () => {
  scenario.write(twoGpus('init 9'));
  assert.deepEqual(addon.init(fakeLib), {
    available: false,
    reason: 'NVML failed to initialize: Driver Not Loaded (NVML_ERROR_DRIVER_NOT_LOADED)',
    library: fakeLib,
    driverVersion: null,
  });
  assert.deepEqual(addon.listGpus(), []);
  scenario.write(twoGpus('init 18'));
  assert.match(addon.status().reason, /RM has detected an NVML\/RM version mismatch\. \(NVML_ERROR_LIB_RM_VERSION_MISMATCH\)/);
  // Retried on the next call: a driver that loads later is picked up.
  scenario.write(twoGpus());
  assert.equal(addon.status().available, true);
  assert.equal(addon.listGpus().length, 2);
});

test('every NVML error code becomes a JS error with its name and message', () => {
  addon.init(fakeLib);
  for (const [code, name] of CODES) {
    scenario.write(twoGpus(`fail nvmlDeviceGetComputeRunningProcesses 0 ${code}`));
    assert.throws(
      () => addon.processesOn(0),
      (e: Error & { code?: string; nvmlReturn?: number }) => {
        assert.equal(e.code, name);
        assert.equal(e.nvmlReturn, code);
        assert.match(e.message, /^nvmlDeviceGetComputeRunningProcesses\(GPU 0\): \S/);
        return true;
      },
    );
  }
  scenario.write(twoGpus('count 15'));
  assert.throws(() => addon.listGpus(), { code: 'NVML_ERROR_GPU_IS_LOST', message: 'nvmlDeviceGetCount: GPU is lost' });
  scenario.write(twoGpus('fail nvmlDeviceGetHandleByIndex 1 15'));
  assert.throws(() => addon.processesOn(1), { code: 'NVML_ERROR_GPU_IS_LOST', message: 'nvmlDeviceGetHandleByIndex(1): GPU is lost' });
});

test('each GPU query that fails is named in the listed GPU\'s error', () => {
  addon.init(fakeLib);
  for (const fn of ['nvmlDeviceGetName', 'nvmlDeviceGetUUID', 'nvmlDeviceGetMemoryInfo', 'nvmlDeviceGetCudaComputeCapability', 'nvmlDeviceGetHandleByIndex']) {
    scenario.write(twoGpus(`fail ${fn} 0 4`));
    const [g0, g1] = addon.listGpus();
    assert.ok(g0 && g1);
    assert.equal(g0.error, `${fn}: Insufficient Permissions`);
    assert.equal(g1.error, undefined);
  }
});

test('an old driver: unversioned entry points, memory v1, no compute capability, names for messages', () => {
  const old = buildFakeNvml(dir, 'old-driver');
  scenario.write(twoGpus());
  const s = addon.init(old);
  assert.equal(s.available, true);
  assert.equal(s.driverVersion, null);
  const [g0] = addon.listGpus();
  assert.ok(g0);
  // v1 counts the driver's reservation as used: everything that is not free.
  assert.equal(g0.usedBytes, (81559 - 79800) * MIB);
  assert.equal(g0.computeCapability, '');
  assert.equal(g0.sparse24, false);
  assert.deepEqual(addon.processesOn(1), [{ pid: 4242, usedBytes: 100 * MIB }]);
  scenario.write(twoGpus('fail nvmlDeviceGetComputeRunningProcesses 0 15'));
  assert.throws(() => addon.processesOn(0), { message: 'nvmlDeviceGetComputeRunningProcesses(GPU 0): NVML_ERROR_GPU_IS_LOST' });
});

test('more processes than the first buffer holds are all listed', () => {
  addon.init(fakeLib);
  const procs = Array.from({ length: 100 }, (_, i) => `proc 0 ${10000 + i} ${(i + 1) * MIB}`).join('\n');
  scenario.write(twoGpus(procs));
  const list = addon.processesOn(0);
  assert.equal(list.length, 102);
  assert.deepEqual(list[101], { pid: 10099, usedBytes: 100 * MIB });
});

test('arguments are checked and thrown as TypeError / RangeError', () => {
  addon.init(fakeLib);
  scenario.write(twoGpus());
  const call = addon.processesOn.bind(addon) as unknown as (...a: unknown[]) => unknown;
  assert.throws(() => call('0'), TypeError);
  assert.throws(() => call(), TypeError);
  assert.throws(() => addon.processesOn(-1), RangeError);
  assert.throws(() => addon.processesOn(1.5), RangeError);
  assert.throws(() => addon.processesOn(7), { name: 'RangeError', message: 'processesOn: no GPU 7 (2 GPUs)' });
  const start = addon.startSampler.bind(addon) as unknown as (...a: unknown[]) => unknown;
  assert.throws(() => start({ intervalMs: 10 }), TypeError);
  assert.throws(() => start({ intervalMs: 0 }, () => {}), RangeError);
  assert.throws(() => start({ intervalMs: 10, batchMs: 'x' }, () => {}), RangeError);
  assert.throws(() => start({ intervalMs: 10, pids: 'x' }, () => {}), TypeError);
  assert.throws(() => start({ intervalMs: 10, pids: [1.5] }, () => {}), TypeError);
  assert.throws(() => start({ intervalMs: 10, rootPid: 0 }, () => {}), TypeError);
  assert.throws(() => start({ intervalMs: 10, rootPid: '1' }, () => {}), TypeError);
  assert.throws(() => addon.init(5 as unknown as string), TypeError);
  const s = addon.startSampler({ intervalMs: 10 }, () => {});
  assert.throws(() => s.setPids('x' as unknown as number[]), TypeError);
  s.stop();
});

/** Starts a raw sampler and collects its batches. */
function rawSampler(o: { intervalMs: number; batchMs?: number; pids?: number[]; rootPid?: number }) {
  const batches: RawBatch[] = [];
  const s = addon.startSampler(o, (b) => batches.push(b));
  const samples = () => batches.flatMap((b) => b.samples);
  const errors = () => batches.flatMap((b) => b.errors);
  const final = () => batches.some((b) => b.final);
  const last = () => {
    const l = samples().at(-1);
    assert.ok(l, 'no sample yet');
    return l;
  };
  return { s, batches, samples, errors, final, last };
}

test('the raw sampler: batches, a final batch after stop(), running false', async () => {
  addon.init(fakeLib);
  scenario.write(twoGpus());
  const r = rawSampler({ intervalMs: 5, batchMs: 30, pids: [4242] });
  assert.equal(r.s.running, true);
  await waitFor(() => r.samples().length >= 10, 4000, 'ten samples');
  r.s.stop();
  assert.equal(r.s.running, false);
  r.s.stop();
  await waitFor(r.final, 2000, 'the final batch');
  assert.equal(r.batches.filter((b) => b.final).length, 1);
  const n = r.samples().length;
  await sleep(60);
  assert.equal(r.samples().length, n, 'nothing after the final batch');
  const t = r.samples().map((x) => x.tMs);
  for (let i = 1; i < t.length; i++) assert.ok(itemAt(t, i) >= itemAt(t, i - 1), 'time goes forward');
  assert.deepEqual(r.errors(), []);
});

test('memory the driver cannot attribute makes the pid figure null, and a failing process query is reported once', async () => {
  addon.init(fakeLib);
  scenario.write(twoGpus('proc 0 6000 na'));
  const r = rawSampler({ intervalMs: 5, batchMs: 20, pids: [6000] });
  await waitFor(() => r.samples().length >= 3, 4000, 'samples');
  assert.equal(r.last().pidUsedBytes, null);
  assert.equal(itemAt(r.last().gpus, 1).pidUsedBytes, 0);
  scenario.write(twoGpus('fail nvmlDeviceGetComputeRunningProcesses 1 3'));
  await waitFor(() => r.errors().length > 0, 4000, 'the process query error');
  await sleep(400); // past the 250 ms re-read: still one report
  assert.deepEqual(r.errors(), ['GPU 1: nvmlDeviceGetComputeRunningProcesses: Not Supported']);
  assert.equal(itemAt(r.last().gpus, 1).pidUsedBytes, null);
  r.s.stop();
  await waitFor(r.final, 2000, 'the final batch');
});

test('rootPid: the thread follows a process tree by asking /proc about each GPU process', async () => {
  addon.init(fakeLib);
  const { child, grandchild, kill } = await childWithGrandchild();
  try {
    // The test runner (this process's parent) holds memory too, but is not in the tree.
    scenario.write(twoGpus(`proc 0 ${child} ${64 * MIB}\nproc 1 ${grandchild} ${32 * MIB}\nproc 0 ${process.ppid} ${999 * MIB}`));
    const r = rawSampler({ intervalMs: 10, batchMs: 20, rootPid: process.pid });
    await waitFor(() => r.samples().some((x) => x.pidUsedBytes === 96 * MIB), 4000, 'child and grandchild');
    const last = r.last();
    assert.deepEqual(last.gpus.map((g) => g.pidUsedBytes), [64 * MIB, 32 * MIB]);
    // Followed pids add to the tree.
    r.s.setPids([4343]);
    await waitFor(() => r.last().pidUsedBytes === (96 + 256) * MIB, 4000, 'tree plus pid 4343');
    r.s.stop();
    await waitFor(r.final, 2000, 'the final batch');
    assert.deepEqual(r.errors(), []);
  } finally {
    kill();
  }
});

test('a lost GPU that comes back is read again', async () => {
  addon.init(fakeLib);
  scenario.write(twoGpus('lost 0'));
  const r = rawSampler({ intervalMs: 10, batchMs: 20 });
  await waitFor(() => r.samples().some((x) => itemAt(x.gpus, 0).usedBytes === null && itemAt(x.gpus, 1).usedBytes === 300 * MIB), 4000, 'GPU 0 lost');
  assert.deepEqual(r.errors(), ['GPU 0: nvmlDeviceGetHandleByIndex: GPU is lost']);
  scenario.write(twoGpus());
  // Handles of lost GPUs are asked for again once a second.
  await waitFor(() => itemAt(r.last().gpus, 0).usedBytes === 1200 * MIB, 3000, 'GPU 0 back');
  r.s.stop();
  await waitFor(r.final, 2000, 'the final batch');
});

test('init() and shutdown() stop running samplers first, which deliver their final batch', async () => {
  addon.init(fakeLib);
  scenario.write(twoGpus());
  const r = rawSampler({ intervalMs: 10 });
  await waitFor(() => r.s.running && r.batches.length > 0, 4000, 'a batch');
  addon.init(fakeLib);
  assert.equal(r.s.running, false);
  await waitFor(r.final, 2000, 'the final batch');
  const q = rawSampler({ intervalMs: 10 });
  assert.equal(addon.shutdown(), true);
  assert.equal(q.s.running, false);
  assert.equal(addon.status().available, true, 'the next call opens NVML again');
  await waitFor(q.final, 2000, 'the final batch');
});

test('large byte counts stay exact', () => {
  addon.init(fakeLib);
  scenario.write(`gpu 0 ${1024 * GIB + 1} ${512 * GIB + 3} ${511 * GIB} 10 0 GPU-big Big GPU\n`);
  const [g] = addon.listGpus();
  assert.ok(g);
  assert.equal(g.totalBytes, 1024 * GIB + 1);
  assert.equal(g.usedBytes, 512 * GIB + 3);
  assert.equal(g.computeCapability, '10.0');
  assert.equal(g.sparse24, true);
});
