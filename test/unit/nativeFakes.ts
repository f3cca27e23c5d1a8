/**
 * What the native tests share: the fake NVML library (built here with cc from
 * fixtures/native/fake_nvml.c), the fake nvidia-smi, scenario files both read, and
 * small waiting helpers. Not a test file itself.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { GpuSample } from '../../src/native/types';
import { itemAt } from '../../src/core/arrays';
import { defined } from '../defined';

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

function findRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native', 'binding.gyp'))) return dir;
  }
  throw new Error(`no repository root above ${from}`);
}

export const repoRoot = findRoot(__dirname);
const fixtures = join(repoRoot, 'test', 'unit', 'fixtures', 'native');

/** The built addon; a missing build is a failure, with the command that makes it. */
export function addonBinary(): string {
  const p = join(repoRoot, 'native', 'build', 'Release', 'membit_nvml.node');
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build:native\` (it also runs at npm install)`);
  return p;
}

/** A temp folder removed when the process exits. */
export function tempDir(tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `membit-${tag}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export type FakeVariant = 'current' | 'old-driver' | 'no-uuid';

/** Compiles the fake libnvidia-ml into `dir`. */
export function buildFakeNvml(dir: string, variant: FakeVariant = 'current'): string {
  const out = join(dir, `libfake-nvml-${variant}.so`);
  const defines = variant === 'old-driver' ? ['-DFAKE_OLD_DRIVER'] : variant === 'no-uuid' ? ['-DFAKE_NO_UUID'] : [];
  execFileSync('cc', ['-shared', '-fPIC', '-O1', ...defines, '-o', out, join(fixtures, 'fake_nvml.c')], { stdio: 'pipe' });
  return out;
}

/** Puts the fake nvidia-smi in `dir`/bin under its real name; returns its path. */
export function installFakeSmi(dir: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  const path = join(bin, 'nvidia-smi');
  copyFileSync(join(fixtures, 'fake-nvidia-smi.sh'), path);
  chmodSync(path, 0o755);
  return path;
}

/**
 * The scenario file both fakes read ($FAKE_NVML_STATE). Written whole and renamed
 * into place, so a reader never sees half of it.
 */
export class Scenario {
  readonly path: string;
  private n = 0;

  constructor(dir: string, text: string) {
    this.path = join(dir, 'scenario.txt');
    this.write(text);
    process.env['FAKE_NVML_STATE'] = this.path;
  }

  write(text: string): void {
    const tmp = `${this.path}.${this.n++}`;
    writeFileSync(tmp, text);
    renameSync(tmp, this.path);
  }
}

/** Two GPUs, like a workstation with an H100 and a T4; all sizes whole MiB so nvidia-smi's MiB lose nothing. */
export function twoGpus(extra = ''): string {
  return [
    `gpu 0 ${81559 * MIB} ${1200 * MIB} ${79800 * MIB} 9 0 GPU-6f2a0c1e-0000-4000-8000-000000000000 NVIDIA H100 80GB HBM3`,
    `gpu 1 ${15360 * MIB} ${300 * MIB} ${14900 * MIB} 7 5 GPU-7a1b2c3d-1111-4111-8111-111111111111 Tesla T4`,
    `proc 0 4242 ${700 * MIB}`,
    `proc 0 4343 ${256 * MIB}`,
    `proc 1 4242 ${100 * MIB}`,
    extra,
  ].join('\n');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with the first sample that satisfies `pred`, from the list `samples` grows into. */
export async function waitForSample(samples: GpuSample[], pred: (s: GpuSample) => boolean, timeoutMs = 4000, what = 'a matching sample'): Promise<GpuSample> {
  const deadline = Date.now() + timeoutMs;
  let seen = 0;
  for (;;) {
    for (; seen < samples.length; seen++) if (pred(itemAt(samples, seen))) return itemAt(samples, seen);
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last sample: ${JSON.stringify(samples[samples.length - 1])}`);
    }
    await sleep(10);
  }
}

export async function waitFor(pred: () => boolean, timeoutMs = 4000, what = 'a condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A real process tree below this process: a child and the grandchild it started. */
export interface ChildTree {
  child: number;
  grandchild: number;
  /** Ends both (each also ends by itself after 20 s). */
  kill: () => void;
}

/** Starts a child that starts a grandchild and prints its pid; resolves once that pid is known. */
export async function childWithGrandchild(): Promise<ChildTree> {
  const child = spawn(
    process.execPath,
    ['-e', `const c = require('child_process').spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' }); console.log(c.pid); setTimeout(() => c.kill(), 20000);`],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitFor(() => /\d+\n/.test(out), 5000, 'the grandchild pid');
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const grandchild = Number(out.trim());
  return {
    child: defined(child.pid, 'pid of the child'),
    grandchild,
    kill: () => {
      child.kill('SIGKILL');
      try {
        process.kill(grandchild, 'SIGKILL');
      } catch {
        // Already gone.
      }
    },
  };
}
