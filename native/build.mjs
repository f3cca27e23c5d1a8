// Builds the NVML addon (native/build/Release/membit_nvml.node) with node-gyp.
//
//   node native/build.mjs           what `npm install` runs: a failed build is a
//                                   warning, since Membit then reads GPU memory
//                                   through nvidia-smi (no compiler is needed to use it)
//   node native/build.mjs --strict  a failed build fails (CI, packaging)
//
// The addon uses Node-API only, so the headers of whichever Node builds it serve for
// every Node and Electron that loads it. Where npm names no header folder, the
// running Node's own (<prefix>/include/node) is used, so no download is needed.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const strict = process.argv.includes('--strict');

function fail(message) {
  if (strict) {
    console.error(`build-native: ${message}`);
    process.exit(1);
  }
  console.warn(`membit: the NVML addon was not built (${message}).`);
  console.warn('membit: GPU memory will be read through nvidia-smi instead; `npm run build:native` retries.');
  process.exit(0);
}

let gyp;
try {
  gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
} catch {
  fail('node-gyp is not installed');
}
const args = [gyp, 'rebuild', '--directory', here];
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
}
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
if (r.error) fail(r.error.message);
if (r.status !== 0) fail(`node-gyp exited with code ${r.status}; a C++ compiler and make are needed`);
if (!existsSync(join(here, 'build', 'Release', 'membit_nvml.node'))) fail('node-gyp made no membit_nvml.node');
console.log('build-native: native/build/Release/membit_nvml.node');
