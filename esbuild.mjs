// Builds every bundle Membit ships, plus the test bundles.
//   node esbuild.mjs               development build (source maps, no minify)
//   node esbuild.mjs --production  minified, no source maps (what the .vsix ships)
//   node esbuild.mjs --watch       rebuild on change
//   node esbuild.mjs --tests       also bundle test/ into out/test
// Type checking is separate: `npm run typecheck` (tsc --noEmit, strict).
import * as esbuild from 'esbuild';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');
const tests = process.argv.includes('--tests');

const common = {
  bundle: true,
  minify: production,
  sourcemap: production ? false : 'linked',
  sourcesContent: false,
  logLevel: 'warning',
  legalComments: 'none',
};

/** Node-side bundles: the extension host code and the CLI. */
const nodeBuilds = [
  {
    ...common,
    entryPoints: { extension: 'src/extension.ts', runSetWorker: 'src/vscode/report/runSetWorker.ts' },
    outdir: 'dist',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['vscode'],
  },
  {
    // Read memory snapshots and scan Python off the extension host's (and the CLI's) thread.
    ...common,
    entryPoints: { snapshotWorker: 'src/core/snapshot/worker.ts', scanWorker: 'src/core/scan/worker.ts' },
    outdir: 'dist',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
  },
  {
    ...common,
    entryPoints: { cli: 'src/core/cli/bin.ts' },
    outdir: 'dist',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
  },
];

/** Browser bundle for the report webview; chart.js is bundled in, never fetched. */
const webBuilds = existsSync(join(root, 'media/report/main.ts'))
  ? [{
      ...common,
      entryPoints: { report: 'media/report/main.ts' },
      outdir: 'dist/media',
      platform: 'browser',
      format: 'iife',
      target: 'es2022',
    }]
  : [];

/**
 * @param {string} dir
 * @param {string[]} out
 * @returns {string[]}
 */
function listTs(dir, out = []) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) listTs(p, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Tests: unit tests and benches run in plain Node; the e2e suite runs inside VS Code. */
function testBuilds() {
  const entries = {};
  for (const f of [...listTs(join(root, 'test/unit')), ...listTs(join(root, 'test/integration')), ...listTs(join(root, 'test/bench')), ...listTs(join(root, 'test/e2e'))]) {
    const rel = relative(join(root, 'test'), f).replace(/\.ts$/, '');
    entries[rel] = f;
  }
  return [{
    ...common,
    minify: false,
    sourcemap: 'linked',
    entryPoints: entries,
    outdir: 'out/test',
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // Test runners and drivers come from node_modules (or the e2e tool folder) at run time.
    external: ['vscode', 'mocha', 'playwright-core', '@vscode/test-electron'],
  }];
}

/** Files the bundles load at run time: the parser's WASM, queries, and the Python package. */
function copyAssets() {
  mkdirSync(join(root, 'dist'), { recursive: true });
  cpSync(join(root, 'node_modules/web-tree-sitter/tree-sitter.wasm'), join(root, 'dist/tree-sitter.wasm'));
  cpSync(join(root, 'node_modules/tree-sitter-python/tree-sitter-python.wasm'), join(root, 'dist/tree-sitter-python.wasm'));
  mkdirSync(join(root, 'dist/media'), { recursive: true });
  cpSync(join(root, 'media/report/report.css'), join(root, 'dist/media/report.css'));
  const queries = join(root, 'src/core/scan/queries');
  if (existsSync(queries)) cpSync(queries, join(root, 'dist/queries'), { recursive: true });
  const kernelsOut = join(root, 'dist/kernels/membit');
  rmSync(kernelsOut, { recursive: true, force: true });
  cpSync(join(root, 'kernels/membit'), kernelsOut, {
    recursive: true,
    filter: (src) => !/(__pycache__|\.pyc$|\.egg-info)/.test(src),
  });
  cpSync(join(root, 'kernels/pyproject.toml'), join(root, 'dist/kernels/pyproject.toml'));
}

const builds = [...nodeBuilds, ...webBuilds, ...(tests ? testBuilds() : [])];
// A production build starts clean so no development source maps reach the .vsix.
if (production) rmSync(join(root, 'dist'), { recursive: true, force: true });
if (watch) {
  copyAssets();
  for (const b of builds) await (await esbuild.context(b)).watch();
  console.log('esbuild: watching');
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
  copyAssets();
  console.log(`esbuild: built ${builds.length} bundle set(s)${production ? ' (production)' : ''}`);
}
