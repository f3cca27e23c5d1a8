/** loadGpuBackend: addon, else nvidia-smi, else a clean "no GPU". */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { test } from 'node:test';
import { findAddon, loadGpuBackend } from '../../src/native';
import { addonBinary, buildFakeNvml, installFakeSmi, repoRoot, Scenario, tempDir, twoGpus } from './nativeFakes';

const dir = tempDir('native-loader');
new Scenario(dir, twoGpus());
const fakeLib = buildFakeNvml(dir);
const fakeSmi = installFakeSmi(dir);
const missingLib = join(dir, 'absent', 'libnvidia-ml.so.1');

test('findAddon finds the build from the test bundle, the repository and dist/, and nothing elsewhere', () => {
  const built = addonBinary();
  assert.equal(findAddon(__dirname), built);
  assert.equal(findAddon(repoRoot), built);
  assert.equal(findAddon(join(repoRoot, 'dist')), built);
  assert.equal(findAddon(dir), undefined);
});

test('the addon where NVML answers', async () => {
  const { backend, kind, reason } = await loadGpuBackend({ nvmlLibrary: fakeLib });
  assert.equal(kind, 'addon');
  assert.equal(backend.kind, 'addon');
  assert.equal(reason, 'NVML ready (driver 999.99.99-fake) through the addon');
  assert.equal((await backend.listGpus()).length, 2);
  backend.dispose();
});

test('nvidia-smi from PATH where the addon has no NVML, saying why', async () => {
  const path = process.env['PATH'];
  process.env['PATH'] = `${dirname(fakeSmi)}${delimiter}${path}`;
  try {
    const { backend, kind, reason } = await loadGpuBackend({ nvmlLibrary: missingLib });
    assert.equal(kind, 'nvidia-smi');
    assert.equal(reason, `nvidia-smi (no NVML: ${missingLib} not found)`);
    assert.equal((await backend.listGpus())[0]?.name, 'NVIDIA H100 80GB HBM3');
  } finally {
    process.env['PATH'] = path;
  }
});

test('nvidia-smi where the addon binary does not load', async () => {
  const notAddon = join(dir, 'broken.node');
  writeFileSync(notAddon, 'not an ELF file');
  const { kind, reason } = await loadGpuBackend({ addonPath: notAddon, nvidiaSmi: fakeSmi });
  assert.equal(kind, 'nvidia-smi');
  assert.match(reason, /^nvidia-smi \(addon .*broken\.node did not load: /);
  const none = await loadGpuBackend({ searchFrom: dir, nvidiaSmi: fakeSmi });
  assert.match(none.reason, /no addon binary \(native\/build\/Release\/membit_nvml\.node not built\)/);
});

test('"no GPU" where neither works: an empty list and clear refusals', async () => {
  const { backend, kind, reason } = await loadGpuBackend({ nvmlLibrary: missingLib, nvidiaSmi: join(dir, 'absent', 'nvidia-smi') });
  assert.equal(kind, 'none');
  assert.equal(reason, `no GPU: no NVML: ${missingLib} not found; nvidia-smi not found`);
  assert.deepEqual(await backend.listGpus(), []);
  await assert.rejects(backend.processesOn(0), /no GPU 0 \(no GPU: no NVML/);
  assert.throws(() => backend.startSampler({ intervalMs: 10 }, () => {}), /cannot sample GPU memory: no GPU: /);
  backend.dispose();
  const off = await loadGpuBackend({ noAddon: true, noNvidiaSmi: true });
  assert.equal(off.reason, 'no GPU: every backend is turned off');
});

test('a driver that nvidia-smi cannot reach either: "no GPU" with its message', async () => {
  const scenario = new Scenario(dir, twoGpus('init 18'));
  try {
    const { kind, reason } = await loadGpuBackend({ nvmlLibrary: fakeLib, nvidiaSmi: fakeSmi });
    assert.equal(kind, 'none');
    assert.match(reason, /^no GPU: NVML failed to initialize: RM has detected an NVML\/RM version mismatch\. \(NVML_ERROR_LIB_RM_VERSION_MISMATCH\); nvidia-smi: Failed to initialize NVML: /);
  } finally {
    scenario.write(twoGpus());
  }
});
