/**
 * Runs the same end-to-end suite under @vscode/test-electron, for machines that can
 * download desktop VS Code. The packaged .vsix is installed into a fresh extensions
 * folder first, so both runners test the build users get.
 *
 *   node out/test/e2e/runTest.js
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { downloadAndUnzipVSCode, resolveCliArgsFromVSCodeExecutablePath, runTests } from '@vscode/test-electron';

async function main(): Promise<void> {
  const repo = resolve(__dirname, '..', '..', '..');
  const tmp = mkdtempSync(join(tmpdir(), 'membit-electron-'));
  const workspace = join(tmp, 'workspace');
  cpSync(join(repo, 'samples'), workspace, { recursive: true, filter: (s) => !/__pycache__|[\\/]\.membit|[\\/]\.vscode/.test(s.slice(join(repo, 'samples').length)) });
  const extDir = join(tmp, 'extensions');
  const exe = await downloadAndUnzipVSCode('stable');
  const [cli, ...cliArgs] = resolveCliArgsFromVSCodeExecutablePath(exe);
  if (!cli) throw new Error(`no VS Code command line next to ${exe}`);
  const vsix = join(repo, 'dist-vsix', 'membit.vsix');
  const r = spawnSync(cli, [...cliArgs, '--extensions-dir', extDir, '--install-extension', vsix], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`installing ${vsix} failed`);
  const installed = spawnSync(cli, [...cliArgs, '--extensions-dir', extDir, '--list-extensions', '--show-versions'], {
    encoding: 'utf8',
  }).stdout.split('\n').find((l) => l.startsWith('membit.membit@'));
  if (!installed) throw new Error('the .vsix did not install as membit.membit');
  await runTests({
    vscodeExecutablePath: exe,
    extensionDevelopmentPath: join(extDir, installed.replace('@', '-')),
    extensionTestsPath: join(repo, 'out', 'test', 'e2e', 'suite', 'index.js'),
    extensionTestsEnv: { MEMBIT_E2E_REPO: repo, MEMBIT_TEST_HOOKS: '1' },
    launchArgs: [workspace, '--extensions-dir', extDir, '--disable-workspace-trust'],
  });
}

main().catch((e: unknown) => {
  console.error(e);
  console.log('e2e: 0 passed, 1 failed');
  process.exit(1);
});
