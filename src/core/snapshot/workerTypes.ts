import type { SnapshotReport } from './convert';

export interface WorkerIn {
  paths: string[];
  root: string;
  device?: number;
}

export type WorkerOut =
  | { type: 'progress'; index: number; path: string; fraction: number }
  | { type: 'report'; index: number; path: string; report: SnapshotReport; ms: number; heapMb: number }
  | { type: 'error'; index: number; path: string; message: string }
  | { type: 'done' };
