import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { notify } from '../notify';
import { parseRunFileName } from '../../core/run/history';
import { indexReport, parseReport, type ReportIndex } from '../../core/report/model';
import { REPORT_SCHEMA } from '../../core/report/schema';
import type { Report } from '../../core/report/types';
import type { Log } from '../log';
import { getSettings, onSettingsChanged } from '../settings';

export interface LoadedReport {
  index: ReportIndex;
  /** The report file. */
  uri: vscode.Uri;
  /** Workspace folder the report's relative paths resolve against. */
  root: vscode.Uri;
}

/**
 * Holds the report the overlays show: the newest one in the run-history folder,
 * reloaded when a run writes a new one, or one the user opens explicitly.
 */
export class ReportStore implements vscode.Disposable {
  private current: LoadedReport | undefined;
  private readonly changed = new vscode.EventEmitter<LoadedReport | undefined>();
  readonly onDidChange = this.changed.event;
  private readonly disposables: vscode.Disposable[] = [this.changed];
  private watcher: vscode.FileSystemWatcher | undefined;
  private readonly warned = new Set<string>();

  constructor(private readonly log: Log) {
    this.disposables.push(onSettingsChanged(['runHistory'], () => void this.rewatch()));
  }

  get report(): LoadedReport | undefined {
    return this.current;
  }

  async start(): Promise<void> {
    await this.rewatch();
  }

  private async rewatch(): Promise<void> {
    this.watcher?.dispose();
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) return;
    const rel = getSettings(folder).runHistory.folder;
    this.watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(folder, `${rel}/*.json`));
    const reload = () => void this.loadLatest();
    this.watcher.onDidCreate(reload);
    this.watcher.onDidChange(reload);
    this.watcher.onDidDelete(reload);
    await this.loadLatest();
  }

  /** The run-history reports of the first workspace folder, newest first. */
  async history(): Promise<vscode.Uri[]> {
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) return [];
    const dir = join(folder.uri.fsPath, getSettings(folder).runHistory.folder);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => parseRunFileName(n))
      .sort()
      .reverse()
      .map((n) => vscode.Uri.file(join(dir, n)));
  }

  async loadLatest(): Promise<void> {
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) return;
    for (const uri of await this.history()) {
      if (await this.load(uri, folder.uri, false)) return;
    }
    // Nothing loadable is left (the history was deleted): stop showing the old run.
    if (this.current) {
      this.current = undefined;
      this.changed.fire(undefined);
    }
  }

  /** Loads a report; a malformed one is reported once and leaves the current one shown. */
  async load(uri: vscode.Uri, root: vscode.Uri, explicit = true): Promise<boolean> {
    let text: string;
    try {
      text = await readFile(uri.fsPath, 'utf8');
    } catch (e) {
      this.complain(uri, `cannot read ${uri.fsPath}: ${String(e)}`, explicit);
      return false;
    }
    const parsed = parseReport(text, REPORT_SCHEMA, vscode.workspace.asRelativePath(uri));
    if (!parsed.ok) {
      this.complain(uri, parsed.error, explicit);
      return false;
    }
    this.current = { index: indexReport(parsed.report), uri, root };
    this.log.info(`loaded report ${uri.fsPath}`);
    this.changed.fire(this.current);
    return true;
  }

  /**
   * Shows a report read elsewhere (a memory snapshot converted off the host thread);
   * it stays until another report is loaded or a run writes a new one.
   */
  showReport(report: Report, uri: vscode.Uri, root: vscode.Uri): void {
    this.current = { index: indexReport(report), uri, root };
    this.log.info(`showing ${uri.fsPath}`);
    this.changed.fire(this.current);
  }

  private complain(uri: vscode.Uri, msg: string, explicit: boolean): void {
    this.log.warn(msg);
    if (explicit || !this.warned.has(uri.fsPath)) {
      this.warned.add(uri.fsPath);
      void notify.warn(`Membit: ${msg}`);
    }
  }

  dispose(): void {
    this.watcher?.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
