import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { formatBytes, formatBytesDelta, formatPercentChange } from '../../src/core/units';
import { repoRoot } from './nativeFakes';

test('formatBytes: binary units, three significant digits', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(2 * 1024 * 1024), '2 MiB');
  assert.equal(formatBytes(8_388_608 + 4096), '8 MiB');
  assert.equal(formatBytes(96 * 1024 * 1024), '96 MiB');
  assert.equal(formatBytes(3.25 * 1024 ** 3), '3.25 GiB');
  // 8.39e6 B is 8 MiB, not "8.39 MB": the same mask must read the same in every view.
  assert.equal(formatBytes(8_390_000), '8 MiB');
  // Rounding never prints 1024 of a unit.
  assert.equal(formatBytes(1024 * 1024 - 1), '1 MiB');
  assert.equal(formatBytes(-2 * 1024 * 1024), '−2 MiB');
  assert.equal(formatBytes(Number.NaN), '?');
});

test('formatBytesDelta keeps the sign', () => {
  assert.equal(formatBytesDelta(1024), '+1 KiB');
  assert.equal(formatBytesDelta(-1536), '−1.5 KiB');
  assert.equal(formatBytesDelta(0), '±0 B');
});

test('formatPercentChange: one decimal, a real minus sign, ± when it rounds to zero', () => {
  assert.equal(formatPercentChange(0.0194), '+1.9%');
  assert.equal(formatPercentChange(-0.0744), '−7.4%');
  assert.equal(formatPercentChange(-0.0612), '−6.1%');
  assert.equal(formatPercentChange(0), '±0.0%');
  assert.equal(formatPercentChange(-0.0004), '±0.0%');
  assert.equal(formatPercentChange(0.0005), '+0.1%');
  assert.equal(formatPercentChange(Number.NaN), '?');
});

test('one formatter of relative changes: no hand-rolled signed percentage outside units.ts', () => {
  const offenders: string[] = [];
  for (const f of sources()) {
    if (f === 'src/core/units.ts') continue;
    readFileSync(join(repoRoot, f), 'utf8').split('\n').forEach((line, i) => {
      // The pattern every copy had: a sign chosen by hand, then the magnitude to one decimal and '%'.
      if (/'−'.*toFixed\(1\)\}%/.test(line)) offenders.push(`${f}:${i + 1}`);
    });
  }
  assert.deepEqual(offenders, []);
});

/** Every TypeScript file of the product (extension, CLI, webview). */
function sources(): string[] {
  const root = repoRoot;
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) out.push(p);
    }
  };
  walk(join(root, 'src'));
  walk(join(root, 'media'));
  return out.map((p) => relative(root, p).replace(/\\/g, '/')).sort();
}

test('one unit system: only src/core/units.ts formats bytes', () => {
  const root = repoRoot;
  const files = sources();
  assert.ok(files.includes('src/core/units.ts') && files.length > 50, `walked ${files.length} files`);
  const offenders: string[] = [];
  for (const f of files) {
    if (f === 'src/core/units.ts') continue;
    const text = readFileSync(join(root, f), 'utf8');
    text.split('\n').forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '');
      // A second byte formatter, a unit name as a string of its own, or a size divided for display.
      if (/function\s+format(Bytes|Size|Mem)\b/.test(code)) offenders.push(`${f}:${i + 1}: defines a byte formatter`);
      if (/['"`](kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)['"`]/.test(code)) offenders.push(`${f}:${i + 1}: unit name literal`);
      if (/\/\s*(1e[369]|1024\s*\*\*\s*[23]|\(1024\s*\*\s*1024\))\)?\.toFixed/.test(code)) offenders.push(`${f}:${i + 1}: divides a size for display`);
      if (/import\s*\{[^}]*\bformatBytes\b[^}]*\}\s*from\s*'(?![^']*units')/.test(code)) offenders.push(`${f}:${i + 1}: imports formatBytes from elsewhere`);
    });
  }
  assert.deepEqual(offenders, []);
});
