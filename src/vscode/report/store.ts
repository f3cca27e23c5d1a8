import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { notify } from '../notify';
import { parseRunFileName } from '../../core/run/history';
import { indexReport, indexReportInTurns, parseReport, type ReportIndex } from '../../core/report/model';
import { REPORT_SCHEMA } from '../../core/report/schema';
import { runBrief, type RunBrief } from '../../core/report/runLabel';
import { leverDeltas, type LeverMeasurement } from '../../core/report/leverDeltas';
import { isRunSetText, type RunSetInfo } from '../../core/report/runset';
import { RunSetClient, yieldToLoop } from './runSetProtocol';
import type { Report } from '../../core/report/types';
import type { Log } from '../log';
import { getSettings, onSettingsChanged } from '../settings';
import type { DisposableLike } from '../disposables';

export interface LoadedReport {
  /** For a run set: the report the overlays show (the max over ranks, or the picked rank's). */
  index: ReportIndex;
  /** A run set (torchrun/SLURM job): its ranks, and which one is picked (undefined: the max over ranks). */
  set?: { info: RunSetInfo; pick: number | undefined };
  /** The report file. */
  uri: vscode.Uri;
  /** Workspace folder the report's relative paths resolve against. */
  root: vscode.Uri;
  /** The file's modification time when it was read. */
  mtimeMs: number | undefined;
}

/** A run of the unchanged code, by its file name (`…_baseline.json`). */
export function isBaseline(uri: vscode.Uri): boolean {
  return parseRunFileName(uri.path.split('/').pop() ?? '')?.variant === 'baseline';
}

async function mtime(uri: vscode.Uri): Promise<number | undefined> {
  try {
    return (await stat(uri.fsPath)).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Holds the report the editor shows. By default the newest *baseline* run of the
 * run history: a variant run (packed, sdpa, checkpoint…) measured code that the
 * harness changed in memory, so its figures are not true for the code on screen.
 * The user can pin another run (Membit: Show Run in Editor…); a pin lasts until the
 * user picks again, the pinned file is deleted, or a new single run is profiled.
 */
export class ReportStore implements vscode.Disposable {
  private current: LoadedReport | undefined;
  private readonly changed = new vscode.EventEmitter<LoadedReport | undefined>();
  readonly onDidChange = this.changed.event;
  private readonly disposables: DisposableLike[] = [this.changed];
  private watcher: vscode.FileSystemWatcher | undefined;
  private readonly warned = new Set<string>();
  /** The run the user chose to see (fsPath); undefined: the newest baseline run. */
  private pinned: string | undefined;
  private leverMap = new Map<string, LeverMeasurement>();
  private readonly briefs = new Map<string, { mtimeMs: number | undefined; brief: RunBrief | undefined }>();
  /** The worker holding the shown run set's reports; ended when another report is shown. */
  private client: RunSetClient | undefined;

  constructor(private readonly log: Log) {
    this.disposables.push(
      onSettingsChanged(['runHistory'], () => void this.rewatch()),
      vscode.workspace.onDidGrantWorkspaceTrust(() => void this.loadLatest()),
    );
  }

  get report(): LoadedReport | undefined {
    return this.current;
  }

  /** What each lever measured against the shown baseline (variant → peak change), from the run history. */
  get levers(): ReadonlyMap<string, LeverMeasurement> {
    return this.leverMap;
  }

  /** Recomputes the lever measurements for the shown run; true when they changed. */
  private async refreshLevers(): Promise<boolean> {
    const cur = this.current;
    const base = cur ? runBrief(cur.index.report) : undefined;
    let next = new Map<string, LeverMeasurement>();
    if (cur && base?.variant === 'baseline') {
      const briefs: RunBrief[] = [];
      for (const u of (await this.history()).slice(0, 40)) {
        if (u.fsPath === cur.uri.fsPath) continue;
        const b = await this.brief(u);
        if (b) briefs.push(b);
      }
      next = leverDeltas(base, briefs);
    }
    const same = next.size === this.leverMap.size && [...next].every(([k, v]) => JSON.stringify(this.leverMap.get(k)) === JSON.stringify(v));
    this.leverMap = next;
    return !same;
  }

  /** Whether the shown run was picked by the user rather than chosen automatically. */
  get isPinned(): boolean {
    return this.pinned !== undefined && this.current?.uri.fsPath === this.pinned;
  }

  /** Shows `uri` until the user picks again; undefined goes back to the newest baseline run. */
  async pin(uri: vscode.Uri | undefined): Promise<boolean> {
    this.pinned = uri?.fsPath;
    if (!uri) {
      await this.loadLatest();
      return this.current !== undefined;
    }
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) return false;
    const ok = await this.load(uri, folder.uri, true);
    if (!ok) this.pinned = undefined;
    return ok;
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
    // A workspace can carry a crafted report: read none until the workspace is trusted.
    if (!folder || !vscode.workspace.isTrusted) return;
    const history = await this.history();
    if (this.pinned) {
      if (history.some((u) => u.fsPath === this.pinned) && (await this.load(vscode.Uri.file(this.pinned), folder.uri, false))) return;
      this.pinned = undefined;
    }
    // The newest baseline run first (file names carry the variant, so no file is read to
    // choose); only a history without any baseline falls back to the newest variant run.
    const ordered = [...history.filter((u) => isBaseline(u)), ...history.filter((u) => !isBaseline(u))];
    for (const uri of ordered) {
      if (this.current?.uri.fsPath === uri.fsPath && (await this.unchanged(uri))) {
        // Same run on screen; a variant run may have just finished: its measurement is news.
        if (await this.refreshLevers()) this.changed.fire(this.current);
        return;
      }
      if (await this.load(uri, folder.uri, false)) return;
    }
    // Nothing loadable is left (the history was deleted): stop showing the old run.
    if (this.current) {
      this.current = undefined;
      this.changed.fire(undefined);
    }
  }

  /** Whether `uri` is a valid report (for "Open Report" on a run the editor does not show). */
  async readable(uri: vscode.Uri): Promise<boolean> {
    try {
      return parseReport(await readFile(uri.fsPath, 'utf8'), REPORT_SCHEMA, vscode.workspace.asRelativePath(uri)).ok;
    } catch {
      return false;
    }
  }

  /** Loads a report; a malformed one is reported once and leaves the current one shown. */
  async load(uri: vscode.Uri, root: vscode.Uri, explicit = true): Promise<boolean> {
    if (!vscode.workspace.isTrusted) {
      this.complain(uri, 'run reports are read only in a trusted workspace (Manage Workspace Trust)', explicit);
      return false;
    }
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
    this.current = { index: indexReport(parsed.report), uri, root, mtimeMs: await mtime(uri) };
    await this.refreshLevers();
    this.log.info(`loaded report ${uri.fsPath}`);
    this.changed.fire(this.current);
    return true;
  }

  /** The shown report's file is as it was loaded (the watcher fires for every new run). */
  private async unchanged(uri: vscode.Uri): Promise<boolean> {
    return this.current !== undefined && this.current.mtimeMs === (await mtime(uri));
  }

  /** What pickers show about a run of the history; cached by file and modification time. */
  async brief(uri: vscode.Uri): Promise<RunBrief | undefined> {
    if (this.current?.uri.fsPath === uri.fsPath) return runBrief(this.current.index.report);
    const m = await mtime(uri);
    const hit = this.briefs.get(uri.fsPath);
    if (hit && hit.mtimeMs === m) return hit.brief;
    let brief: RunBrief | undefined;
    try {
      brief = runBrief(JSON.parse(await readFile(uri.fsPath, 'utf8')));
    } catch {
      brief = undefined;
    }
    this.briefs.set(uri.fsPath, { mtimeMs: m, brief });
    return brief;
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
    // The parse and the index are two short pieces of host work, with typing served in between.
    await yieldToLoop();
    this.current = { index: await indexReportInTurns(loaded.overlay), uri, root, mtimeMs: await mtime(uri), set: { info: loaded.info, pick: undefined } };
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
    await yieldToLoop();
    const index = await indexReportInTurns(overlay);
    // Another run or pick may have come while this one was indexed: the newer one stands.
    if (this.current !== cur) return false;
    this.current = { ...cur, index, set: { info: cur.set.info, pick: rank } };
    this.changed.fire(this.current);
    return true;
  }

  /**
   * Shows a report read elsewhere (a memory snapshot converted off the host thread);
   * it stays until another report is loaded or a run writes a new one.
   */
  showReport(report: Report, uri: vscode.Uri, root: vscode.Uri): void {
    this.current = { index: indexReport(report), uri, root, mtimeMs: undefined };
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
    this.client?.dispose();
    this.watcher?.dispose();
    for (const d of this.disposables) d.dispose();
  }
}
