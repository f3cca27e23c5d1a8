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
/**
 * The overlay report travels as JSON text: a string crosses the thread boundary as one copy, and
 * V8's JSON.parse reads it several times faster than structured clone rebuilds the same objects,
 * so the extension host's share of the work stays short parses.
 */
export type RunSetResponse = { id: number; ok: true; info?: RunSetInfo; overlay: OverlayText | null } | { id: number; ok: false; error: string };

/**
 * A report as JSON text in pieces: the report without its long top-level arrays, then each
 * long array in chunks. The host parses one piece per turn of its event loop, so no single
 * parse of a 64-rank overlay holds it up.
 */
export interface OverlayText {
  head: string;
  chunks: { key: string; text: string }[];
}

const CHUNK = 1000;

/** Splits a report's JSON for {@link parseOverlay}; runs in the worker. */
export function overlayText(report: object): OverlayText {
  const head: Record<string, unknown> = { ...report };
  const chunks: OverlayText['chunks'] = [];
  for (const [key, value] of Object.entries(report)) {
    if (!Array.isArray(value) || value.length <= CHUNK) continue;
    head[key] = [];
    for (let i = 0; i < value.length; i += CHUNK) chunks.push({ key, text: JSON.stringify(value.slice(i, i + CHUNK)) });
  }
  return { head: JSON.stringify(head), chunks };
}

/** Lets the event loop run (input, timers) between two pieces of host-side work. */
export const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Rebuilds the report from {@link overlayText}'s pieces, one parse per event-loop turn. */
export async function parseOverlay(o: OverlayText): Promise<Report> {
  const report = JSON.parse(o.head) as Record<string, unknown>;
  for (const c of o.chunks) {
    await yieldToLoop();
    const part = JSON.parse(c.text) as unknown[];
    const into = report[c.key];
    if (!Array.isArray(into)) throw new Error(`run-set worker: the overlay's ${c.key} is not a list`);
    for (const x of part) into.push(x);
  }
  return report as unknown as Report;
}

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
    if (!r.info) throw new Error(`the run-set worker read ${file} but sent no ranks`);
    const info = r.info;
    await yieldToLoop();
    return { info, overlay: r.overlay === null ? null : await parseOverlay(r.overlay) };
  }

  async pick(rank: number | undefined): Promise<Report | null> {
    const r = await this.ask(rank === undefined ? { type: 'pick' } : { type: 'pick', pick: rank });
    if (!r.ok) throw new Error(r.error);
    await yieldToLoop();
    return r.overlay === null ? null : await parseOverlay(r.overlay);
  }

  dispose(): void {
    void this.worker.terminate();
  }
}
