import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { itemAt } from '../../../src/core/arrays';

export const EXTENSION_ID = 'membit.membit';

/** Waits until `check` returns a truthy value, or throws with `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | null | undefined | false | PromiseLike<T | null | undefined | false>,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last instanceof Error ? String(last) : JSON.stringify(last)}` : ''}`);
}

/** Folder of the workspace the suite runs in (a copy of samples/). */
/** The text of hovers, one line per content part (Membit writes MarkdownString, never the deprecated { language, value } form). */
export function hoverText(hovers: readonly vscode.Hover[]): string {
  return hovers.flatMap((h) => h.contents.map((c) => (typeof c === 'string' ? c : c instanceof vscode.MarkdownString ? c.value : ''))).join('\n');
}

/** A diagnostic's code as text (a code can also be a number or a { value, target } link). */
export function codeOf(d: vscode.Diagnostic): string {
  return typeof d.code === 'object' ? String(d.code.value) : String(d.code);
}

export function workspaceDir(): string {
  const f = vscode.workspace.workspaceFolders?.[0];
  if (!f) throw new Error('the e2e suite needs a workspace folder');
  return f.uri.fsPath;
}

export async function openSample(name: string): Promise<vscode.TextEditor> {
  const doc = await vscode.workspace.openTextDocument(vscode.Uri.file(join(workspaceDir(), name)));
  return vscode.window.showTextDocument(doc, { preview: false });
}

/**
 * Puts `original` back into the document and saves it, then waits until the editor is clean.
 * The file on disk already holds `original`, so this writes nothing new; unlike
 * `workbench.action.files.revert`, it does not depend on which editor has focus, which under
 * load left a broken sample dirty for every later suite to inherit.
 */
export async function restoreText(doc: vscode.TextDocument, original: string): Promise<void> {
  if (doc.getText() !== original) {
    const edit = new vscode.WorkspaceEdit();
    edit.replace(doc.uri, new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length)), original);
    assert.ok(await vscode.workspace.applyEdit(edit), `could not restore ${doc.uri.fsPath}`);
  }
  if (doc.isDirty) await doc.save();
  await waitFor(`${doc.uri.fsPath} restored and saved`, () => !doc.isDirty && doc.getText() === original);
}

/**
 * Asks the driver for a screenshot of the whole window and waits until it is on
 * disk. Where no driver listens (desktop test-electron), it returns at once.
 */
export async function screenshot(name: string): Promise<string | undefined> {
  const dir = process.env['MEMBIT_E2E_ARTIFACTS'];
  if (!dir) return undefined;
  const file = join(dir, `${name}.png`);
  // Let the workbench paint what the test just did.
  await new Promise((r) => setTimeout(r, 1500));
  console.log(`@@screenshot ${name}`);
  await waitFor(`screenshot ${name}`, () => existsSync(file), 20_000);
  return file;
}

/**
 * Asks the driver whether `text` becomes visible in the workbench within a minute
 * (a notification, a status bar entry); resolves true or false, with a screenshot.
 * Where no driver listens (desktop test-electron) it resolves undefined.
 */
export async function uiShows(name: string, where: 'statusbar', text: string): Promise<boolean | undefined> {
  const dir = process.env['MEMBIT_E2E_ARTIFACTS'];
  if (!dir) return undefined;
  const selector = { statusbar: '.statusbar-item' }[where];
  console.log(`@@ui-wait ${name} ${selector} ${text}`);
  return waitFor(`the driver's answer about "${text}"`, () =>
    existsSync(join(dir, `${name}.found`)) ? true : existsSync(join(dir, `${name}.missing`)) ? 'missing' : undefined,
    90_000,
  ).then((v) => v === true);
}

/**
 * Reads (count) or clicks the report view's DOM through the driver, inside the webview's
 * frames. Undefined where no driver listens.
 */
export async function webview(name: string, action: 'count' | 'click' | `select=${string}`, selector: string): Promise<{ count: number; texts: string[]; error?: string }> {
  const dir = process.env['MEMBIT_E2E_ARTIFACTS'];
  // Without the driver the webview's DOM cannot be read: fail, so a check is never passed
  // by not being made.
  if (!dir) throw new Error(`no UI driver to read the webview (${selector}): run the suite with test/e2e/codeServer.js`);
  console.log(`@@webview ${name} ${action} ${selector}`);
  const file = join(dir, `${name}.result.json`);
  await waitFor(`the driver's answer about ${selector}`, () => existsSync(file), 60_000);
  return JSON.parse(readFileSync(file, 'utf8')) as { count: number; texts: string[]; error?: string };
}

/**
 * A real run written by the test, not the extension: the installed extension's CLI runs the
 * real harness on CPU PyTorch over the GPT sample. Returns the one report in .membit/runs.
 */
export function profileSampleWithCli(): string {
  const ext = vscode.extensions.getExtension(EXTENSION_ID);
  assert.ok(ext);
  const python = process.env['MEMBIT_PYTHON'];
  assert.ok(python, 'MEMBIT_PYTHON must name a Python with torch for the e2e suite');
  const ws = workspaceDir();
  execFileSync(
    process.execPath,
    [
      join(ext.extensionPath, 'dist', 'cli.js'), 'profile', '--python', python, '--root', ws, '--steps', '2', '--warmup', '1', '--',
      join(ws, 'gpt_tiny.py'), '--steps', '5', '--batch-size', '4', '--seq-len', '64', '--n-layer', '2', '--n-embd', '64', '--n-head', '2',
      '--data-bytes', '200000', '--device', 'cpu',
    ],
    { cwd: ws, stdio: 'inherit', timeout: 240_000 },
  );
  const runs = join(ws, '.membit', 'runs');
  const files = readdirSync(runs).filter((f) => f.endsWith('.json'));
  assert.equal(files.length, 1, `expected one report in ${runs}`);
  return join(runs, itemAt(files, 0));
}
