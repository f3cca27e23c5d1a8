/**
 * The run-set worker (runSetWorker.ts) and its client: requests carry an id, answers echo it.
 * The client lives as long as the run set it shows; dispose() ends the thread.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { RunSetInfo } from '../../core/report/runset';
import type { Report } from '../../core/report/types';

type Ask = { type: 'load'; file: string; pick?: number } | { type: 'pick'; pick?: number };
export type RunSetRequest = Ask & { id: number };
export type RunSetResponse = { id: number; ok: true; info?: RunSetInfo; overlay: Report | null } | { id: number; ok: false; error: string };

export class RunSetClient {
  private readonly worker: Worker;
  private next = 1;
  private readonly waiting = new Map<number, { resolve(r: RunSetResponse): void; reject(e: Error): void }>();

  /** `script`: the bundled worker (dist/runSetWorker.js beside the extension bundle by default). */
  constructor(script = join(__dirname, 'runSetWorker.js')) {
    this.worker = new Worker(script);
    this.worker.on('message', (r: RunSetResponse) => {
      this.waiting.get(r.id)?.resolve(r);
      this.waiting.delete(r.id);
    });
    const fail = (e: Error) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the run-set worker stopped (exit ${code})`)));
  }

  private ask(req: Ask): Promise<RunSetResponse> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  async load(file: string, pick?: number): Promise<{ info: RunSetInfo; overlay: Report | null }> {
    const r = await this.ask(pick === undefined ? { type: 'load', file } : { type: 'load', file, pick });
    if (!r.ok) throw new Error(r.error);
    return { info: r.info as RunSetInfo, overlay: r.overlay };
  }

  async pick(rank: number | undefined): Promise<Report | null> {
    const r = await this.ask(rank === undefined ? { type: 'pick' } : { type: 'pick', pick: rank });
    if (!r.ok) throw new Error(r.error);
    return r.overlay;
  }

  dispose(): void {
    void this.worker.terminate();
  }
}
