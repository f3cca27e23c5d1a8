/**
 * Opening PyTorch memory snapshots as Membit reports: read (restricted, streaming),
 * convert, and the names of the files that are snapshots.
 */
import { existsSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { snapshotToReport, type SnapshotReport } from './convert';
import { workspaceMapper } from './paths';
import { readSnapshot, type ReadOptions } from './read';
import { rankOf } from './runSet';

export { SnapshotError } from './read';
export type { SnapshotReport } from './convert';

/** File names PyTorch users give snapshots: `.pickle`/`.pkl`, optionally gzip-compressed. */
export function isSnapshotName(path: string): boolean {
  return /\.(pickle|pkl)(\.gz)?$/i.test(path);
}

export interface OpenOptions extends ReadOptions {
  /** Workspace folder frames are mapped onto (by relative path). */
  root: string;
  device?: number;
  membitVersion?: string;
}

/** Reads one snapshot file and converts it to a report. Throws SnapshotError with a clear message. */
export async function openSnapshot(path: string, opts: OpenOptions): Promise<SnapshotReport> {
  const data = await readSnapshot(path, opts);
  const { rank } = rankOf(path);
  return snapshotToReport(data, {
    mapPath: workspaceMapper(opts.root, existsSync),
    file: basename(path),
    root: opts.root,
    mtimeMs: statSync(path).mtimeMs,
    rank,
    ...(opts.device !== undefined ? { device: opts.device } : {}),
    ...(opts.membitVersion !== undefined ? { membitVersion: opts.membitVersion } : {}),
  });
}
