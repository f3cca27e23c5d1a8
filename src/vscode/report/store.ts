import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { notify } from '../notify';
import { parseRunFileName } from '../../core/run/history';
import { indexReport, parseReport, type ReportIndex } from '../../core/report/model';
import { REPORT_SCHEMA } from '../../core/report/schema';
import { isRunSetText, type RunSetInfo } from '../../core/report/runset';
import { RunSetClient } from './runSetProtocol';
import type { Log } from '../log';
import { getSettings, onSettingsChanged } from '../settings';

export interface LoadedReport {
  /** For a run set: the report the overlays show (the max over ranks, or the picked rank's). */
  index: ReportIndex;
  /** A run set (torchrun/SLURM job): its ranks, and which one is picked (undefined: the max over ranks). */
  set?: { info: RunSetInfo; pick: number | undefined };
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
  /** The worker holding the shown run set's reports; ended when another report is shown. */
  private client: RunSetClient | undefined;

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
    if (isRunSetText(text)) return this.loadRunSet(uri, root, explicit);
    const parsed = parseReport(text, REPORT_SCHEMA, vscode.workspace.asRelativePath(uri));
    if (!parsed.ok) {
      this.complain(uri, parsed.error, explicit);
      return false;
    }
    this.client?.dispose();
    this.client = undefined;
    this.current = { index: indexReport(parsed.report), uri, root };
    this.log.info(`loaded report ${uri.fsPath}`);
    this.changed.fire(this.current);
    return true;
  }

  /** A run set: every rank's report is read and merged in a worker thread, off the extension host's. */
  private async loadRunSet(uri: vscode.Uri, root: vscode.Uri, explicit: boolean): Promise<boolean> {
    const client = new RunSetClient();
    let loaded;
    try {
      loaded = await client.load(uri.fsPath);
    } catch (e) {
      client.dispose();
      this.complain(uri, e instanceof Error ? e.message : String(e), explicit);
      return false;
    }
    if (!loaded.overlay) {
      client.dispose();
      this.complain(uri, `${vscode.workspace.asRelativePath(uri)}: no rank of this job wrote a report${loaded.info.message ? ` (${loaded.info.message})` : ''}`, explicit);
      return false;
    }
    this.client?.dispose();
    this.client = client;
    this.current = { index: indexReport(loaded.overlay), uri, root, set: { info: loaded.info, pick: undefined } };
    this.log.info(`loaded run set ${uri.fsPath} (${loaded.info.ranks.length} ranks)`);
    this.changed.fire(this.current);
    return true;
  }

  /** Shows one rank's figures in the overlays (undefined: the max over ranks, naming the rank). */
  async pickRank(rank: number | undefined): Promise<boolean> {
    const cur = this.current;
    if (!cur?.set || !this.client) return false;
    if (rank !== undefined && !cur.set.info.ranks.some((r) => r.rank === rank && r.status !== 'missing')) return false;
    const overlay = await this.client.pick(rank);
    if (!overlay || this.current !== cur) return false;
    this.current = { ...cur, index: indexReport(overlay), set: { info: cur.set.info, pick: rank } };
    this.changed.fire(this.current);
    return true;
  }

  private complain(uri: vscode.Uri, msg: string, explicit: boolean): void {
    this.log.warn(msg);
    if (explicit || !this.warned.has(uri.fsPath)) {
      this.warned.add(uri.fsPath);
      void notify.warn(`Membit: ${msg}`);
    }
  }

  dispose(): void {
    this.client?.dispose();
    this.watcher?.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
