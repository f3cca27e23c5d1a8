import * as vscode from 'vscode';
import { getSettings } from '../settings';

interface PythonExtensionApi {
  environments?: { getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined };
}

/**
 * The interpreter for local runs: the `membit.python` setting when set, else the one
 * chosen in the Python extension (its public API), else `python3`.
 */
export async function resolveLocalPython(resource?: vscode.Uri): Promise<{ python: string; source: string }> {
  const configured = getSettings(resource).python.trim();
  if (configured) return { python: configured, source: 'membit.python' };
  const ext = vscode.extensions.getExtension<PythonExtensionApi | undefined>('ms-python.python');
  if (ext) {
    try {
      const api = ext.isActive ? ext.exports : await ext.activate();
      const p = api?.environments?.getActiveEnvironmentPath(resource)?.path;
      if (p) return { python: p, source: 'the Python extension' };
    } catch {
      // An old or broken Python extension falls through to python3.
    }
  }
  return { python: 'python3', source: 'default' };
}
