import * as vscode from 'vscode';
import type { TextEdit } from '../../core/rewrite';

export function toRange(r: TextEdit['range']): vscode.Range {
  return new vscode.Range(r.startLine, r.startCol, r.endLine, r.endCol);
}

/** One WorkspaceEdit for a rewrite's edits: one undo step. With a label, they go through the refactor preview. */
export function workspaceEditFor(uri: vscode.Uri, edits: readonly TextEdit[], label?: string): vscode.WorkspaceEdit {
  const we = new vscode.WorkspaceEdit();
  const meta: vscode.WorkspaceEditEntryMetadata | undefined = label ? { label, needsConfirmation: true } : undefined;
  for (const e of edits) {
    if (meta) we.replace(uri, toRange(e.range), e.newText, meta);
    else we.replace(uri, toRange(e.range), e.newText);
  }
  return we;
}

/**
 * Why a document cannot be edited by a rewrite, or undefined when it can.
 * `inNotebook` says what to do instead in a notebook cell.
 */
export function refuse(doc: vscode.TextDocument, inNotebook: string): string | undefined {
  if (doc.uri.scheme === 'vscode-notebook-cell') return inNotebook;
  if (vscode.workspace.fs.isWritableFileSystem(doc.uri.scheme) === false) return `${doc.uri.fsPath} is read-only.`;
  if (doc.languageId !== 'python') return 'Membit converts Python files only.';
  return undefined;
}
