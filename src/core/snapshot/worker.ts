/**
 * Worker-thread entry (bundled as dist/snapshotWorker.js): reads and converts snapshot
 * files off the caller's thread, so the extension host never parses a 500 MB pickle
 * itself. Messages: in {paths, root, device?}; out progress, report (one per file), error,
 * done.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openSnapshot } from './index';
import type { WorkerIn, WorkerOut } from './workerTypes';

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const job = workerData as WorkerIn;
  const post = (m: WorkerOut) => port.postMessage(m);
  for (const [i, path] of job.paths.entries()) {
    try {
      const t = performance.now();
      const report = await openSnapshot(path, {
        root: job.root,
        ...(job.device !== undefined ? { device: job.device } : {}),
        onProgress: (fraction) => post({ type: 'progress', index: i, path, fraction }),
      });
      post({ type: 'report', index: i, path, report, ms: performance.now() - t, heapMb: process.memoryUsage().heapUsed / 2 ** 20 });
    } catch (e) {
      post({ type: 'error', index: i, path, message: e instanceof Error ? e.message : String(e) });
    }
  }
  post({ type: 'done' });
}

void main();
