/** The nvidia-smi fallback's own parts: its parsers, older drivers, and nvidia-smi failing. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NvidiaSmiError, parseBusProcessList, parseGpuList, parseProcessList, SmiBackend } from '../../src/native/smi';
import type { GpuSample } from '../../src/native/types';
import { installFakeSmi, MIB, Scenario, tempDir, twoGpus, waitFor } from './nativeFakes';
import { itemAt } from '../../src/core/arrays';

const dir = tempDir('native-smi');
const scenario = new Scenario(dir, twoGpus());
const fakeSmi = installFakeSmi(dir);

test('parseGpuList: rows, a name with a comma, missing values and an unopenable GPU', () => {
  const text = [
    '0, NVIDIA H100 80GB HBM3, GPU-aaaa, 81559, 1200, 79800, 9.0',
    '1, Quadro, RTX 8000, GPU-bbbb, [N/A], [N/A], [N/A], [Not Supported]',
    'Unable to determine the device handle for GPU 00000000:03:00.0: GPU is lost. Reboot the system to recover this GPU',
    '',
  ].join('\n');
  const gpus = parseGpuList(text, true);
  assert.equal(gpus.length, 3);
  assert.deepEqual(gpus[0], {
    index: 0, name: 'NVIDIA H100 80GB HBM3', uuid: 'GPU-aaaa', totalBytes: 81559 * MIB, usedBytes: 1200 * MIB,
    freeBytes: 79800 * MIB, computeCapability: '9.0', sparse24: true,
  });
  assert.equal(itemAt(gpus, 1).name, 'Quadro, RTX 8000');
  assert.equal(itemAt(gpus, 1).computeCapability, '');
  assert.equal(itemAt(gpus, 1).error, 'memory.total: N/A; memory.used: N/A; memory.free: N/A');
  assert.equal(itemAt(gpus, 2).index, 2);
  assert.match(itemAt(gpus, 2).error ?? '', /GPU is lost/);
  assert.deepEqual(parseGpuList('0, Tesla V100-SXM2-16GB, GPU-cccc, 16160, 0, 16150\n', false)[0]?.computeCapability, '');
  assert.deepEqual(parseGpuList('', true), []);
});

test('parseProcessList and parseBusProcessList skip what is not a row', () => {
  assert.deepEqual(parseProcessList('4242, 700\n4343, [N/A]\nNo running processes found\n'), [
    { pid: 4242, usedBytes: 700 * MIB },
    { pid: 4343, usedBytes: null },
  ]);
  assert.deepEqual(parseBusProcessList('00000000:41:00.0, 4242, 700\ngarbage\n0000:42:00.0, 1, [N/A]\n'), [
    { bus: '41:00.0', pid: 4242, usedBytes: 700 * MIB },
    { bus: '42:00.0', pid: 1, usedBytes: null },
  ]);
});

test('a driver without the compute_cap field: listed without it, and asked only once', async () => {
  process.env['FAKE_SMI_NO_COMPUTE_CAP'] = '1';
  try {
    scenario.write(twoGpus());
    const b = new SmiBackend(fakeSmi);
    const gpus = await b.listGpus();
    assert.equal(gpus.length, 2);
    assert.equal(itemAt(gpus, 0).computeCapability, '');
    assert.equal(itemAt(gpus, 0).sparse24, false);
    assert.equal((await b.listGpus()).length, 2);
  } finally {
    delete process.env['FAKE_SMI_NO_COMPUTE_CAP'];
  }
});

test('nvidia-smi failures become errors with its own words', async () => {
  const b = new SmiBackend(fakeSmi);
  scenario.write(twoGpus('init 9'));
  await assert.rejects(b.listGpus(), (e: NvidiaSmiError) => {
    assert.equal(e.exitCode, 9);
    assert.match(e.message, /^nvidia-smi: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/);
    return true;
  });
  scenario.write(twoGpus());
  await assert.rejects(b.processesOn(5), /No devices were found/);
  await assert.rejects(b.processesOn(-1), RangeError);
  await assert.rejects(new SmiBackend(`${dir}/missing/nvidia-smi`).listGpus(), { code: 'ENOENT', message: `${dir}/missing/nvidia-smi not found` });
});

test('a sampler whose nvidia-smi exits ends, says why, and stop() still resolves', async () => {
  scenario.write(twoGpus('init 18'));
  const errors: Error[] = [];
  const samples: GpuSample[] = [];
  const s = new SmiBackend(fakeSmi).startSampler({ intervalMs: 10, pids: [1] }, (x) => samples.push(...x), (e) => errors.push(e));
  await waitFor(() => !s.running, 5000, 'the sampler to end');
  const text = errors.map((e) => e.message).join('\n');
  assert.match(text, /version mismatch/);
  assert.match(text, /nvidia-smi stopped sampling \(exit code 18\)/);
  await s.stop();
  assert.deepEqual(samples, []);
  const missing = new SmiBackend(`${dir}/missing/nvidia-smi`).startSampler({ intervalMs: 10 }, () => {}, (e) => errors.push(e));
  await waitFor(() => !missing.running, 5000, 'the sampler to end');
  assert.ok(errors.some((e) => e.message === `${dir}/missing/nvidia-smi not found`));
  scenario.write(twoGpus());
});
