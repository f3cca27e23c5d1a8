import * as vscode from 'vscode';

/** The "Membit" output channel, with timestamps from the LogOutputChannel. */
export interface Log {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  channel: vscode.LogOutputChannel;
}

export function createLog(context: vscode.ExtensionContext): Log {
  const channel = vscode.window.createOutputChannel('Membit', { log: true });
  context.subscriptions.push(channel);
  return {
    channel,
    info: (m) => channel.info(m),
    warn: (m) => channel.warn(m),
    error: (m) => channel.error(m),
  };
}
