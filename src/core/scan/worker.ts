/**
 * Worker-thread entry (bundled as dist/scanWorker.js): the scanner runs here, off the caller's
 * thread, so a pathological file can slow only its own scan, never the editor. One scanner and
 * one incremental document per key live as long as the worker.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { scanCells } from './notebook';
import { createScanner, type ScanDocument } from './scanner';
import type { ScanReady, ScanRequest, ScanResponse, ScanWorkerData } from './workerProtocol';

const port = parentPort;
if (port) {
  const data = (workerData ?? {}) as ScanWorkerData;
  const ready = createScanner(data.assetDir ? { assetDir: data.assetDir } : {});
  const docs = new Map<string, ScanDocument>();
  const answer = (r: ScanResponse | ScanReady) => port.postMessage(r);
  // Loading the grammar is not a scan: the client starts its deadlines after this.
  ready.then(
    () => answer({ type: 'ready' }),
    () => answer({ type: 'ready' }),
  );
  port.on('message', (req: ScanRequest) => {
    ready.then(
      (scanner) => {
        try {
          switch (req.type) {
            case 'scan': {
              const doc = docs.get(req.key);
              if (doc) {
                answer({ id: req.id, ok: true, result: doc.update(req.text, req.opts) });
                return;
              }
              const opened = scanner.open(req.file, req.text, req.opts);
              docs.set(req.key, opened);
              answer({ id: req.id, ok: true, result: opened.result });
              return;
            }
            case 'cells':
              answer({ id: req.id, ok: true, result: scanCells(scanner, req.cells, req.file, req.opts) });
              return;
            case 'forget':
              docs.get(req.key)?.dispose();
              docs.delete(req.key);
              answer({ id: req.id, ok: true });
              return;
          }
        } catch (e) {
          // A failed update leaves the document's tree unknown: the next scan starts afresh.
          if (req.type === 'scan') {
            docs.get(req.key)?.dispose();
            docs.delete(req.key);
          }
          answer({ id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) });
        }
      },
      (e: unknown) => answer({ id: req.id, ok: false, error: `the Python grammar could not load: ${e instanceof Error ? e.message : String(e)}` }),
    );
  });
}
