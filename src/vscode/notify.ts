import * as vscode from 'vscode';

/** One message or progress notification Membit showed, kept for the e2e suite. */
export interface Shown {
  kind: 'info' | 'warning' | 'error' | 'progress';
  text: string;
  /** Progress only: the step messages it showed. */
  updates?: string[];
}

const MAX = 100;
const shown: Shown[] = [];

function remember(s: Shown): Shown {
  shown.push(s);
  if (shown.length > MAX) shown.shift();
  return s;
}

/** What Membit showed lately, oldest first. */
export function recentlyShown(): readonly Shown[] {
  return shown;
}

/**
 * Membit's notifications go through here so the end-to-end suite can read what was
 * shown (the workbench hides toasts in its test-driver mode, so screenshots alone
 * cannot prove them).
 */
export const notify = {
  info<T extends string>(text: string, ...actions: T[]): Thenable<T | undefined> {
    remember({ kind: 'info', text });
    return vscode.window.showInformationMessage(text, ...actions);
  },
  warn<T extends string>(text: string, ...actions: T[]): Thenable<T | undefined> {
    remember({ kind: 'warning', text });
    return vscode.window.showWarningMessage(text, ...actions);
  },
  error<T extends string>(text: string, ...actions: T[]): Thenable<T | undefined> {
    remember({ kind: 'error', text });
    return vscode.window.showErrorMessage(text, ...actions);
  },
  progress<R>(
    options: { title: string; cancellable: boolean },
    task: (progress: vscode.Progress<{ message?: string; increment?: number }>, token: vscode.CancellationToken) => Thenable<R>,
  ): Thenable<R> {
    const entry = remember({ kind: 'progress', text: options.title, updates: [] });
    return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, ...options }, (p, token) =>
      task(
        {
          report: (v) => {
            if (v.message) entry.updates?.push(v.message);
            p.report(v);
          },
        },
        token,
      ),
    );
  },
};
