/**
 * One suite, run against both GpuBackend implementations (the NVML addon over the
 * fake libnvidia-ml, the nvidia-smi fallback over the fake nvidia-smi), both reading
 * the same scenario; then a parity test that puts their answers side by side.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { AddonBackend, loadAddon } from '../../src/native/addon';
import { SmiBackend } from '../../src/native/smi';
import type { GpuBackend, GpuSample } from '../../src/native/types';
import { addonBinary, buildFakeNvml, installFakeSmi, MIB, Scenario, sleep, tempDir, twoGpus, waitFor, waitForSample } from './nativeFakes';
import { itemAt } from '../../src/core/arrays';

const dir = tempDir('native-backends');
const scenario = new Scenario(dir, twoGpus());
const fakeLib = buildFakeNvml(dir);
const fakeSmi = installFakeSmi(dir);

function makeAddon(): GpuBackend {
  const addon = loadAddon(addonBinary());
  const status = addon.init(fakeLib);
  assert.equal(status.available, true, status.reason);
  return new AddonBackend(addon, status.reason);
}

const implementations: [string, () => GpuBackend][] = [
  ['addon', makeAddon],
  ['nvidia-smi', () => new SmiBackend(fakeSmi)],
];

/** Collects a sampler's samples and errors. */
function collect() {
  const samples: GpuSample[] = [];
  const errors: Error[] = [];
  return { samples, errors, onSamples: (s: GpuSample[]) => samples.push(...s), onError: (e: Error) => errors.push(e) };
}

for (const [name, make] of implementations) {
  describe(`GpuBackend over ${name}`, () => {
    let backend: GpuBackend;
    before(() => {
      scenario.write(twoGpus());
      backend = make();
    });
    after(() => backend.dispose());

    test('lists every GPU with name, uuid, memory, compute capability and 2:4 support', async () => {
      scenario.write(twoGpus());
      const gpus = await backend.listGpus();
      assert.equal(gpus.length, 2);
      assert.deepEqual(gpus[0], {
        index: 0,
        name: 'NVIDIA H100 80GB HBM3',
        uuid: 'GPU-6f2a0c1e-0000-4000-8000-000000000000',
        totalBytes: 81559 * MIB,
        usedBytes: 1200 * MIB,
        freeBytes: 79800 * MIB,
        computeCapability: '9.0',
        sparse24: true,
      });
      assert.equal(itemAt(gpus, 1).computeCapability, '7.5');
      assert.equal(itemAt(gpus, 1).sparse24, false, 'sm75 has no 2:4 sparse tensor cores');
    });

    test('lists the compute processes of one GPU; memory the driver cannot attribute is null', async () => {
      scenario.write(twoGpus(`proc 0 4444 na`));
      assert.deepEqual(await backend.processesOn(0), [
        { pid: 4242, usedBytes: 700 * MIB },
        { pid: 4343, usedBytes: 256 * MIB },
        { pid: 4444, usedBytes: null },
      ]);
      assert.deepEqual(await backend.processesOn(1), [{ pid: 4242, usedBytes: 100 * MIB }]);
    });

    test('rejects processesOn for a GPU that does not exist', async () => {
      scenario.write(twoGpus());
      await assert.rejects(backend.processesOn(7));
    });

    test('a GPU whose memory cannot be read is still listed, with the error', async () => {
      scenario.write(twoGpus('fail nvmlDeviceGetMemoryInfo 1 3'));
      const gpus = await backend.listGpus();
      assert.equal(gpus.length, 2);
      assert.equal(itemAt(gpus, 0).error, undefined);
      assert.match(itemAt(gpus, 1).error ?? '', /Not Supported/);
      assert.equal(itemAt(gpus, 1).name, 'Tesla T4');
    });

    test('a lost GPU is listed with "GPU is lost" and the others are intact', async () => {
      scenario.write(twoGpus('lost 1'));
      const gpus = await backend.listGpus();
      assert.equal(gpus.length, 2);
      assert.equal(itemAt(gpus, 0).usedBytes, 1200 * MIB);
      assert.equal(itemAt(gpus, 1).index, 1);
      assert.match(itemAt(gpus, 1).error ?? '', /GPU is lost/);
    });

    test('a failing driver rejects listGpus with its message', async () => {
      scenario.write(twoGpus('count 18'));
      await assert.rejects(backend.listGpus(), /version mismatch/);
    });

    test('the sampler delivers per-GPU used memory and the followed pids, in batches', async () => {
      scenario.write(twoGpus());
      const c = collect();
      let batches = 0;
      const s = backend.startSampler({ intervalMs: 10, batchMs: 50, pids: [4242] }, (b) => (batches++, c.onSamples(b)), c.onError);
      assert.equal(s.running, true);
      const first = await waitForSample(c.samples, (x) => x.pidUsedBytes === 800 * MIB, 4000, 'pid 4242 on both GPUs');
      assert.deepEqual(first.gpus, [
        { index: 0, usedBytes: 1200 * MIB, pidUsedBytes: 700 * MIB },
        { index: 1, usedBytes: 300 * MIB, pidUsedBytes: 100 * MIB },
      ]);
      assert.ok(Math.abs(first.tMs - Date.now()) < 5000, 'timestamps are wall-clock ms');
      // Sampling goes on after the first sample (a hang guard, not a rate check: rates belong
      // in test/gpu's measurements), and arrives in batches rather than one call per sample.
      const n0 = c.samples.length;
      await waitFor(() => c.samples.length - n0 >= 5, 10_000, 'five more samples');
      assert.ok(batches < c.samples.length, 'samples come in batches, not one call each');
      await s.stop();
      assert.equal(s.running, false);
      assert.deepEqual(c.errors, []);
    });

    test('follows memory as it changes, and setPids changes what is followed', async () => {
      scenario.write(twoGpus());
      const c = collect();
      const s = backend.startSampler({ intervalMs: 10, batchMs: 20, pids: [4343] }, c.onSamples, c.onError);
      await waitForSample(c.samples, (x) => x.pidUsedBytes === 256 * MIB, 4000, 'pid 4343');
      scenario.write(twoGpus().replace(`proc 0 4343 ${256 * MIB}`, `proc 0 4343 ${2304 * MIB}`).replace(`${1200 * MIB} ${79800 * MIB}`, `${3248 * MIB} ${77752 * MIB}`));
      const grown = await waitForSample(c.samples, (x) => x.pidUsedBytes === 2304 * MIB, 4000, 'pid 4343 after growing by 2 GiB');
      assert.equal(itemAt(grown.gpus, 0).usedBytes, 3248 * MIB);
      s.setPids([4242, 4343]);
      await waitForSample(c.samples, (x) => x.pidUsedBytes === (2304 + 800) * MIB, 4000, 'both pids');
      s.setPids([]);
      await waitForSample(c.samples, (x) => x.pidUsedBytes === null, 4000, 'no pid followed');
      await s.stop();
      assert.deepEqual(c.errors, []);
    });

    test('follows a pid tree: the root and its descendants, as they appear', async () => {
      // A real child of this process, whose pid the scenario then gives GPU memory.
      const child: ChildProcess = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
      try {
        scenario.write(twoGpus());
        const c = collect();
        const s = backend.startSampler({ intervalMs: 10, batchMs: 20, rootPid: process.pid, treeRefreshMs: 50 }, c.onSamples, c.onError);
        await waitForSample(c.samples, (x) => x.pidUsedBytes === 0, 4000, 'the tree, holding nothing yet');
        scenario.write(twoGpus(`proc 0 ${child.pid} ${512 * MIB}`));
        await waitForSample(c.samples, (x) => x.pidUsedBytes === 512 * MIB, 4000, 'the child process');
        await s.stop();
        assert.deepEqual(c.errors, []);
      } finally {
        child.kill();
      }
    });

    test('a GPU lost while sampling reads null, is reported once, and the others go on', async () => {
      scenario.write(twoGpus());
      const c = collect();
      const s = backend.startSampler({ intervalMs: 10, batchMs: 20, pids: [4242] }, c.onSamples, c.onError);
      await waitForSample(c.samples, (x) => x.gpus.length === 2 && x.pidUsedBytes === 800 * MIB, 4000, 'both GPUs');
      scenario.write(twoGpus('lost 1'));
      const lost = await waitForSample(c.samples, (x) => x.gpus[1]?.usedBytes === null, 4000, 'GPU 1 lost');
      assert.equal(itemAt(lost.gpus, 0).usedBytes, 1200 * MIB);
      const n = c.samples.length;
      await waitFor(() => c.samples.length > n + 10, 4000, 'sampling to go on');
      await waitFor(() => c.errors.length > 0, 2000, 'the error');
      assert.equal(c.errors.filter((e) => e.message.includes('GPU is lost')).length, 1, c.errors.map((e) => e.message).join('\n'));
      // What is left of the run is on GPU 0.
      await waitForSample(c.samples, (x) => x.gpus[1]?.usedBytes === null && x.pidUsedBytes === 700 * MIB, 4000, 'pid memory on the GPU that is left');
      assert.equal(s.running, true);
      await s.stop();
    });

    test('stop() resolves after the last batch; nothing is delivered after it', async () => {
      scenario.write(twoGpus());
      const c = collect();
      const s = backend.startSampler({ intervalMs: 10, batchMs: 5000 }, c.onSamples, c.onError);
      // Long enough for nvidia-smi to start and print on a busy machine.
      await sleep(300);
      const early = c.samples.length;
      assert.equal(early, 0, 'the first batch is due only after 5000 ms');
      await s.stop();
      const n = c.samples.length;
      assert.ok(n >= 1, 'stop() flushes what was sampled');
      await s.stop();
      s.dispose();
      await sleep(100);
      assert.equal(c.samples.length, n);
    });

    test('dispose() stops every sampler still running; nothing is delivered after', async () => {
      scenario.write(twoGpus());
      const own = make();
      const a = collect();
      const b = collect();
      const sa = own.startSampler({ intervalMs: 10, batchMs: 20 }, a.onSamples, a.onError);
      const sb = own.startSampler({ intervalMs: 10, batchMs: 20 }, b.onSamples, b.onError);
      await waitFor(() => a.samples.length > 0 && b.samples.length > 0, 4000, 'samples from both samplers');
      own.dispose();
      assert.equal(sa.running, false);
      assert.equal(sb.running, false);
      await Promise.all([sa.stop(), sb.stop()]);
      const n = [a.samples.length, b.samples.length];
      await sleep(100);
      assert.deepEqual([a.samples.length, b.samples.length], n);
    });

    test('a listener that throws is reported, and sampling goes on', async () => {
      scenario.write(twoGpus());
      const errors: Error[] = [];
      let calls = 0;
      const s = backend.startSampler(
        { intervalMs: 10, batchMs: 20 },
        () => {
          calls++;
          throw new Error('listener bug');
        },
        (e) => errors.push(e),
      );
      await waitFor(() => calls >= 3, 4000, 'three batches');
      assert.ok(errors.some((e) => e.message === 'listener bug'));
      await s.stop();
    });

    test('rejects bad sampler options before starting anything', () => {
      assert.throws(() => backend.startSampler({ intervalMs: 0 }, () => {}), RangeError);
      assert.throws(() => backend.startSampler({ intervalMs: 10, pids: [-1] }, () => {}), TypeError);
      assert.throws(() => backend.startSampler({ intervalMs: 10, batchMs: -5 }, () => {}), RangeError);
      assert.throws(() => backend.startSampler({ intervalMs: 10, rootPid: 0 }, () => {}), TypeError);
    });
  });
}

test('parity: the addon and nvidia-smi give the same GPUs, processes and samples', async () => {
  scenario.write(twoGpus('proc 1 5555 na'));
  const a = makeAddon();
  const b = new SmiBackend(fakeSmi);
  try {
    assert.deepEqual(await a.listGpus(), await b.listGpus());
    for (const i of [0, 1]) assert.deepEqual(await a.processesOn(i), await b.processesOn(i));
    const ready = (x: GpuSample) => x.gpus.length === 2 && itemAt(x.gpus, 0).pidUsedBytes !== null;
    const strip = (x: GpuSample) => ({ ...x, tMs: 0 });
    const ca = collect();
    const cb = collect();
    const sa = a.startSampler({ intervalMs: 10, batchMs: 20, pids: [4242, 4343] }, ca.onSamples);
    const sb = b.startSampler({ intervalMs: 10, batchMs: 20, pids: [4242, 4343] }, cb.onSamples);
    const [xa, xb] = await Promise.all([waitForSample(ca.samples, ready), waitForSample(cb.samples, ready)]);
    assert.deepEqual(strip(xa), strip(xb));
    await Promise.all([sa.stop(), sb.stop()]);
  } finally {
    a.dispose();
    b.dispose();
  }
});
