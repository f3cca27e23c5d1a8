/**
 * The client of the scan worker (worker.ts): scans in a worker thread with a heap limit and a
 * deadline. The scanner's own budget (ScanOptions.budgetMs) keeps a scan near a second; the
 * deadline here is the guard behind it: a scan that still has not answered is ended by
 * terminating the thread, and the next scan starts a fresh one. Deadlines start once the
 * thread has loaded the grammar, which is not a scan and may take seconds on a loaded machine. Every pending request is
 * answered, with a result or an error that says what happened. Pure Node: no VS Code.
 */
import { Worker } from 'node:worker_threads';
import type { CellInput } from './notebook';
import type { ScanOptions, ScanResult } from './types';
import type { ScanAsk, ScanReady, ScanRequest, ScanResponse, ScanWorkerData } from './workerProtocol';

export interface ScanWorkerOptions extends ScanWorkerData {
  /** Path of the bundled worker script (dist/scanWorker.js). */
  workerPath: string;
  /** Milliseconds one request may take before the thread is ended (default 15 s). */
  deadlineMs?: number;
  /** The thread's JavaScript heap limit in MB (default 512); the grammar's WASM memory is apart. */
  maxHeapMb?: number;
  /** Told when the thread was ended or died, with why (for the log). */
  onRestart?: (why: string) => void;
}

export const DEFAULT_DEADLINE_MS = 15_000;

/**
 * A copy of scan options the structured clone accepts. They are data (numbers, strings, arrays,
 * Maps of shape hints), but callers may hand over objects the clone refuses: VS Code's
 * configuration values are Proxies. Maps and Sets stay Maps and Sets (JSON would flatten them).
 */
export function cloneable<T>(v: T): T {
  const copy = (x: unknown): unknown => {
    if (x === null || typeof x !== 'object') return typeof x === 'function' ? undefined : x;
    if (x instanceof Map) return new Map([...x].map(([k, val]) => [copy(k), copy(val)]));
    if (x instanceof Set) return new Set([...x].map(copy));
    if (Array.isArray(x)) return x.map(copy);
    return Object.fromEntries(Object.entries(x).map(([k, val]) => [k, copy(val)]));
  };
  return copy(v) as T;
}

/** The scan was ended because another file's scan stopped the thread: scan this one again. */
export class ScanRestartedError extends Error {}

interface Pending {
  resolve(r: ScanResponse): void;
  what: string;
}

export class ScanWorker {
  private worker: Worker | undefined;
  private next = 1;
  /** In the order sent, which is the order the worker answers in. */
  private readonly pending = new Map<number, Pending>();
  /** The deadline of the request the worker is on (the oldest pending one). */
  private timer: { id: number; handle: NodeJS.Timeout } | undefined;
  /** The thread has loaded the grammar: deadlines run only from then (a loaded machine may take seconds). */
  private loaded = false;
  private disposed = false;

  constructor(private readonly options: ScanWorkerOptions) {}

  /** Scans a document's text (incrementally after the first scan of `key`). */
  async scan(key: string, file: string, text: string, opts: ScanOptions): Promise<ScanResult> {
    return this.result(await this.ask({ type: 'scan', key, file, text, opts }, file));
  }

  /** Scans a notebook's Python cells. */
  async scanCells(file: string, cells: CellInput[], opts: ScanOptions): Promise<ScanResult> {
    return this.result(await this.ask({ type: 'cells', file, cells, opts }, file));
  }

  /** Drops the worker's tree for `key`. */
  forget(key: string): void {
    if (this.worker) void this.ask({ type: 'forget', key }, key);
  }

  dispose(): void {
    this.disposed = true;
    this.stop('the scanner was closed');
  }

  private result(r: ScanResponse): ScanResult {
    if (!r.ok) throw r.retry ? new ScanRestartedError(r.error) : new Error(r.error);
    if (!r.result) throw new Error('the scan worker answered without a result');
    return r.result;
  }

  private ask(req: ScanAsk, what: string): Promise<ScanResponse> {
    if (this.disposed) return Promise.resolve({ id: 0, ok: false, error: 'the scanner was closed' });
    const worker = this.start();
    const id = this.next++;
    return new Promise((resolve) => {
      let message: ScanRequest;
      try {
        message = 'opts' in req ? { ...req, opts: cloneable(req.opts), id } : { ...req, id };
        worker.postMessage(message);
      } catch (e) {
        resolve({ id, ok: false, error: `could not send ${what} to the scanner: ${e instanceof Error ? e.message : String(e)}` });
        return;
      }
      this.pending.set(id, { resolve, what });
      this.armHead();
    });
  }

  /** The deadline runs for the request the worker is on, not for those queued behind it. */
  private armHead(): void {
    if (!this.loaded) return;
    const head = this.pending.keys().next();
    if (head.done) {
      if (this.timer) clearTimeout(this.timer.handle);
      this.timer = undefined;
      return;
    }
    if (this.timer?.id === head.value) return;
    if (this.timer) clearTimeout(this.timer.handle);
    const id = head.value;
    const deadline = this.options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    this.timer = {
      id,
      handle: setTimeout(() => {
        // If this thread was itself blocked past the deadline, the answer may already be queued:
        // look once more after pending I/O (the worker's messages) before ending the thread.
        setImmediate(() => {
          if (!this.pending.has(id)) return;
          const what = this.pending.get(id)?.what ?? 'a file';
          const why = `the scan of ${what} did not finish within ${Math.round(deadline / 1000)} s, so it was stopped; the file is scanned again when it changes`;
          this.options.onRestart?.(why);
          this.stop(why, id);
        });
      }, deadline),
    };
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const data: ScanWorkerData = this.options.assetDir ? { assetDir: this.options.assetDir } : {};
    const w = new Worker(this.options.workerPath, { workerData: data, resourceLimits: { maxOldGenerationSizeMb: this.options.maxHeapMb ?? 512 } });
    // The thread must not keep a CLI or a test process alive once nothing waits on it.
    w.unref();
    w.on('message', (r: ScanResponse | ScanReady) => {
      if ('type' in r) {
        this.loaded = true;
        this.armHead();
        return;
      }
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      this.armHead();
      p.resolve(r);
    });
    const died = (why: string) => {
      if (this.worker !== w) return;
      this.options.onRestart?.(why);
      this.stop(why, this.pending.keys().next().value);
    };
    w.on('error', (e) => died(/heap|memory/i.test(e.message) ? `the scan ran out of memory (${e.message})` : `the scan worker failed: ${e.message}`));
    w.on('exit', (code) => died(`the scan worker stopped (exit code ${code})`));
    this.worker = w;
    this.loaded = false;
    return w;
  }

  /**
   * Ends the thread. The request that caused it (`culprit`) is answered with `why`; the others
   * were only queued behind it and are answered "scan again" (ScanRestartedError).
   */
  private stop(why: string, culprit?: number): void {
    const w = this.worker;
    this.worker = undefined;
    if (w) void w.terminate();
    if (this.timer) clearTimeout(this.timer.handle);
    this.timer = undefined;
    for (const [id, p] of this.pending) {
      p.resolve(id === culprit || culprit === undefined ? { id, ok: false, error: why } : { id, ok: false, error: `the scanner restarted (${why})`, retry: true });
    }
    this.pending.clear();
  }
}
