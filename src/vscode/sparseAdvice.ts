/** The measured 2:4 speed tables shipped in dist/kernels, read once per extension host for every feature. */
import * as vscode from 'vscode';
import { loadAdviceTables } from '../core/advice/load';
import type { SparseAdviceTable } from '../core/advice/sparse24';
import type { Log } from './log';

let loaded: SparseAdviceTable[] | undefined;

export function sparseAdviceTables(extensionUri: vscode.Uri, log: Log): SparseAdviceTable[] {
  if (!loaded) {
    const r = loadAdviceTables(vscode.Uri.joinPath(extensionUri, 'dist', 'kernels').fsPath);
    for (const e of r.errors) log.warn(`2:4 speed advice: ${e}`);
    loaded = r.tables;
  }
  return loaded;
}
