import * as vscode from 'vscode';
import { readSettings, type MembitSettings } from '../core/settings';

/** The current Membit settings for a resource (or the window). */
export function getSettings(scope?: vscode.ConfigurationScope): MembitSettings {
  const cfg = vscode.workspace.getConfiguration('membit', scope);
  return readSettings((key) => cfg.get(key));
}

/**
 * Calls `onChange` when any of the given `membit.*` sections change; filtering
 * with affectsConfiguration keeps unrelated edits from rebuilding features.
 */
export function onSettingsChanged(sections: readonly string[], onChange: () => void): vscode.Disposable {
  return vscode.workspace.onDidChangeConfiguration((e) => {
    if (sections.some((s) => e.affectsConfiguration(`membit.${s}`))) onChange();
  });
}
