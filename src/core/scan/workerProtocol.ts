/** Messages between the scan worker (worker.ts, bundled as dist/scanWorker.js) and its client. */
import type { CellInput } from './notebook';
import type { ScanOptions, ScanResult } from './types';

export interface ScanWorkerData {
  /** Where the grammar's .wasm files and queries are (the extension's dist/); the package's own when absent. */
  assetDir?: string;
}

export type ScanAsk =
  /** Scans a document's text; the worker keeps its tree, so the next text of `key` parses incrementally. */
  | { type: 'scan'; key: string; file: string; text: string; opts: ScanOptions }
  /** Scans a notebook's Python cells as one text (see scanCells). */
  | { type: 'cells'; file: string; cells: CellInput[]; opts: ScanOptions }
  /** Drops what the worker keeps for `key` (the document closed). */
  | { type: 'forget'; key: string };

export type ScanRequest = ScanAsk & { id: number };

export type ScanResponse =
  | { id: number; ok: true; result?: ScanResult }
  /** `retry`: this request did nothing wrong; the thread was ended for another one. */
  | { id: number; ok: false; error: string; retry?: boolean };

/** Sent once the grammar has loaded (or failed to): from then on requests are answered in order. */
export interface ScanReady {
  type: 'ready';
}
