// Opens a URL in headless Chromium (Debian's) through playwright-core and saves a
// screenshot once VS Code's workbench has rendered. Used by `demo.sh --check`.
//   node screenshot.mjs URL OUT.png E2E_HOME
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [url, out, e2eHome] = process.argv.slice(2);
const require = createRequire(join(e2eHome, 'node_modules', 'noop.js'));
const { chromium } = require('playwright-core');
const ctx = await chromium.launchPersistentContext('', {
  executablePath: process.env.MEMBIT_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = ctx.pages()[0] ?? (await ctx.newPage());
await page.goto(url);
await page.waitForSelector('.monaco-workbench', { timeout: 60_000 });
await page.waitForSelector('.monaco-editor .view-lines', { timeout: 60_000 });
// The extension host starts after the workbench: wait for Membit's status bar peak.
const wait = process.env.MEMBIT_SCREENSHOT_WAIT_FOR ?? 'Membit: peak';
await page.getByText(wait).first().waitFor({ timeout: 60_000 });
await page.waitForTimeout(2000);
await page.screenshot({ path: out });
await ctx.close();
