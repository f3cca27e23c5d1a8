import * as vscode from 'vscode';

/**
 * Commands the end-to-end suite reads the extension's state through (what the overlays
 * painted, what the report view drew). They are no part of the product: they are registered
 * only when the suite starts the editor with MEMBIT_TEST_HOOKS=1, and are otherwise absent.
 */
export function testHook(id: string, read: (...args: never[]) => unknown): vscode.Disposable {
  if (process.env.MEMBIT_TEST_HOOKS !== '1') return new vscode.Disposable(() => undefined);
  return vscode.commands.registerCommand(id, read as (...args: unknown[]) => unknown);
}
