/**
 * Lists what the packaged .vsix contains and checks it: the bundles and the Python
 * package are in; sources, tests, samples, node_modules, kernel tests and benchmarks
 * are out. Needs `npm run package` first (scripts/test-all.sh does that).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import yauzl from 'yauzl';

const repo = join(__dirname, '..', '..', '..');
const vsix = join(repo, 'dist-vsix', 'membit.vsix');

/** Names in a zip's central directory, read by yauzl. */
export function zipEntries(buf: Buffer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, zip) => {
      if (err) {
        reject(err);
        return;
      }
      const names: string[] = [];
      zip.on('entry', (e: yauzl.Entry) => {
        names.push(e.fileName);
        zip.readEntry();
      });
      zip.on('end', () => resolve(names));
      zip.on('error', reject);
      zip.readEntry();
    });
  });
}

test('the .vsix holds what runs and nothing else', async () => {
  assert.ok(existsSync(vsix), `${vsix} is missing: run npm run package first`);
  const names = (await zipEntries(readFileSync(vsix))).filter((n) => n.startsWith('extension/')).map((n) => n.slice('extension/'.length));
  console.log(`vsix: ${(statSync(vsix).size / 1024).toFixed(1)} KiB, ${names.length} files:\n  ${names.sort().join('\n  ')}`);
  for (const required of [
    'package.json',
    'readme.md',
    'LICENSE.txt',
    'dist/extension.js',
    'dist/cli.js',
    'dist/snapshotWorker.js',
    'dist/scanWorker.js',
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

test('the zip reader rejects what is not a zip', async () => {
  await assert.rejects(zipEntries(Buffer.alloc(100)), /central directory record signature not found/i);
});
