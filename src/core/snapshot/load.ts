/**
 * Runs snapshot reading in a worker thread (dist/snapshotWorker.js) and collects the
 * reports: the caller's thread only receives the finished reports, which are small
 * (a bounded timeline, the top holders and lines). Cancelling terminates the worker.
 */
import { Worker } from 'node:worker_threads';
import type { SnapshotReport } from './convert';
import type { WorkerIn, WorkerOut } from './workerTypes';

export interface LoadedSnapshot {
  path: string;
  report?: SnapshotReport;
  error?: string;
  ms?: number;
  heapMb?: number;
}

export interface LoadOptions extends WorkerIn {
  /** Path of the bundled worker script. */
  workerPath: string;
  onProgress?: (index: number, path: string, fraction: number) => void;
  /** Called as each file's report arrives (the first overlay need not wait for the others). */
  onReport?: (loaded: LoadedSnapshot) => void;
  signal?: AbortSignal;
  /** Worker heap limit in MB; a 2 GB snapshot needs a few hundred. */
  maxHeapMb?: number;
}

export function loadSnapshotsInWorker(opts: LoadOptions): Promise<LoadedSnapshot[]> {
  const { workerPath, onProgress, onReport, signal, maxHeapMb = 4096, ...job } = opts;
  return new Promise((resolve, reject) => {
    const out: LoadedSnapshot[] = job.paths.map((path) => ({ path }));
    const w = new Worker(workerPath, { workerData: job, resourceLimits: { maxOldGenerationSizeMb: maxHeapMb } });
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', abort);
      void w.terminate();
      if (err) reject(err);
      else resolve(out);
    };
    const abort = () => finish(new Error('cancelled'));
    signal?.addEventListener('abort', abort);
    w.on('message', (m: WorkerOut) => {
      switch (m.type) {
        case 'progress':
          onProgress?.(m.index, m.path, m.fraction);
          break;
        case 'report': {
          const loaded: LoadedSnapshot = { path: m.path, report: m.report, ms: m.ms, heapMb: m.heapMb };
          out[m.index] = loaded;
          onReport?.(loaded);
          break;
        }
        case 'error': {
          const failed: LoadedSnapshot = { path: m.path, error: m.message };
          out[m.index] = failed;
          onReport?.(failed);
          break;
        }
        case 'done':
          finish();
          break;
      }
    });
    w.on('error', (e) => finish(new Error(/heap|memory/i.test(e.message) ? `reading the snapshot ran out of memory (${e.message})` : e.message)));
    w.on('exit', (code) => finish(code === 0 ? undefined : new Error(`the snapshot reader stopped (exit code ${code})`)));
  });
}
