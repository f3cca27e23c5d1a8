/**
 * Lists what the packaged .vsix contains and checks it: the bundles and the Python
 * package are in; sources, tests, samples, node_modules, kernel tests and benchmarks
 * are out. Needs `npm run package` first (scripts/test-all.sh does that).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const repo = join(__dirname, '..', '..', '..');
const vsix = join(repo, 'dist-vsix', 'membit.vsix');

/** Names in a zip's central directory (no dependency: the format is simple). */
export function zipEntries(buf: Buffer): string[] {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65_557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('not a zip file: no end-of-central-directory record');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const names: string[] = [];
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error('corrupt central directory');
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    names.push(buf.toString('utf8', p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return names;
}

test('the .vsix holds what runs and nothing else', () => {
  assert.ok(existsSync(vsix), `${vsix} is missing: run npm run package first`);
  const names = zipEntries(readFileSync(vsix)).filter((n) => n.startsWith('extension/')).map((n) => n.slice('extension/'.length));
  console.log(`vsix: ${(statSync(vsix).size / 1024).toFixed(1)} KiB, ${names.length} files:\n  ${names.sort().join('\n  ')}`);
  for (const required of [
    'package.json',
    'readme.md',
    'LICENSE.txt',
    'dist/extension.js',
    'dist/cli.js',
    'dist/snapshotWorker.js',
    'dist/tree-sitter.wasm',
    'dist/tree-sitter-python.wasm',
    'dist/kernels/pyproject.toml',
    'dist/kernels/membit/__init__.py',
    'dist/media/report.js',
    'dist/media/report.css',
    'dist/queries/facts.scm',
    // The NVML addon, built at install for linux-x64 (the loader falls back to nvidia-smi elsewhere).
    ...(process.platform === 'linux' && process.arch === 'x64' ? ['native/build/Release/membit_nvml.node'] : []),
  ]) {
    assert.ok(names.some((n) => n.toLowerCase() === required.toLowerCase()), `${required} missing from the .vsix`);
  }
  const forbidden = [/^src\//, /^test\//, /^samples\//, /^node_modules\//, /^kernels\//, /\/tests?\//, /benchmarks\//, /\.map$/, /\.ts$/, /__pycache__/, /\.pyc$/];
  for (const n of names) {
    for (const f of forbidden) assert.ok(!f.test(n), `${n} should not be in the .vsix (${f})`);
  }
  assert.ok(statSync(vsix).size < 5 * 1024 * 1024, 'the .vsix grew past 5 MiB');
});

test('the zip reader rejects what is not a zip', () => {
  assert.throws(() => zipEntries(Buffer.alloc(100)), /not a zip/);
});
