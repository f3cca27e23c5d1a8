// Packages dist/ into dist-vsix/membit.vsix with @vscode/vsce (offline: no dependency
// resolution, since the bundles carry everything they need) and prints its size.
import { mkdirSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist-vsix', 'membit.vsix');
mkdirSync(dirname(out), { recursive: true });
const vsce = join(root, 'node_modules', '@vscode', 'vsce', 'vsce');
execFileSync(process.execPath, [vsce, 'package', '--no-dependencies', '--allow-missing-repository', '--no-rewrite-relative-links', '--out', out], {
  cwd: root,
  stdio: 'inherit',
});
console.log(`package-vsix: ${out} (${(statSync(out).size / 1024).toFixed(1)} KiB)`);
