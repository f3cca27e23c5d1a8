/**
 * The part of a sampler both backends share: following a pid tree, stop() that
 * waits for the last batch, and listeners that cannot break the sampler.
 */
import { PidTreeReader } from './pidTree';
import type { GpuSample, GpuSampler, SampleListener, SamplerErrorListener, SamplerOptions } from './types';

/** What a backend's own sampler delivers. */
export interface RawBatch {
  samples: GpuSample[];
  errors: string[];
  /** The last batch: the sampler has ended. */
  final: boolean;
}

/** A backend's own sampler. */
export interface RawSampler {
  setPids(pids: number[]): void;
  /** Asks it to end; it then delivers one batch with final set. */
  stop(): void;
  /** It follows rootPid's descendants itself; else they are read from /proc here and passed as pids. */
  readonly followsTree?: boolean;
}

export interface RawSamplerOptions {
  intervalMs: number;
  batchMs: number;
  pids: number[];
  rootPid?: number | undefined;
}

export type RawSamplerFactory = (options: RawSamplerOptions, deliver: (b: RawBatch) => void) => RawSampler;

/** Bounds a stop(): a backend that never delivers its final batch must not hang the caller. */
const STOP_TIMEOUT_MS = 3000;

export function validateSamplerOptions(o: SamplerOptions): void {
  if (!Number.isFinite(o.intervalMs) || o.intervalMs < 1 || o.intervalMs > 60000) {
    throw new RangeError('startSampler: intervalMs must be between 1 and 60000');
  }
  if (o.batchMs !== undefined && (!Number.isFinite(o.batchMs) || o.batchMs < 0 || o.batchMs > 600000)) {
    throw new RangeError('startSampler: batchMs must be between 0 and 600000');
  }
  for (const p of [...(o.pids ?? []), ...(o.rootPid === undefined ? [] : [o.rootPid])]) {
    if (!Number.isInteger(p) || p < 0 || p > 0xffffffff) throw new TypeError(`startSampler: ${p} is not a process id`);
  }
  if (o.rootPid === 0) throw new TypeError('startSampler: rootPid 0 is not a process');
}

export class ManagedSampler implements GpuSampler {
  private raw: RawSampler | undefined;
  private ended = false;
  private stopRequested = false;
  private explicitPids: number[];
  private treePids: number[] = [];
  private followed = '';
  private treeTimer: NodeJS.Timeout | undefined;
  private readonly tree = new PidTreeReader();
  private readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    factory: RawSamplerFactory,
    private readonly options: SamplerOptions,
    private readonly onSamples: SampleListener,
    private readonly onError?: SamplerErrorListener,
    private readonly onEnd?: (s: ManagedSampler) => void,
  ) {
    validateSamplerOptions(options);
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.explicitPids = [...(options.pids ?? [])];
    if (options.rootPid !== undefined) this.treePids = [options.rootPid];
    const pids = this.currentPids();
    this.followed = pids.join(',');
    const raw = factory(
      { intervalMs: options.intervalMs, batchMs: options.batchMs ?? Math.max(options.intervalMs, 250), pids, rootPid: options.rootPid },
      (b) => this.deliver(b),
    );
    this.raw = raw;
    if (options.rootPid !== undefined && !raw.followsTree) {
      const every = Math.max(50, options.treeRefreshMs ?? 500);
      this.treeTimer = setInterval(() => this.refreshTree(), every);
      this.refreshTree();
    }
  }

  get running(): boolean {
    return !this.ended && !this.stopRequested;
  }

  setPids(pids: readonly number[]): void {
    validateSamplerOptions({ intervalMs: 1, pids });
    this.explicitPids = [...pids];
    this.push();
  }

  stop(): Promise<void> {
    if (!this.stopRequested && !this.ended) {
      this.stopRequested = true;
      this.clearTree();
      try {
        this.raw?.stop();
      } catch (e) {
        this.report(e);
      }
      const timer = setTimeout(() => this.finish(), STOP_TIMEOUT_MS);
      timer.unref();
      void this.done.then(() => clearTimeout(timer));
    }
    return this.done;
  }

  dispose(): void {
    void this.stop();
  }

  private currentPids(): number[] {
    return [...new Set([...this.explicitPids, ...this.treePids])].sort((a, b) => a - b);
  }

  /** Hands the pid set to the backend only when it changed: a change makes it re-read processes at once. */
  private push(): void {
    const pids = this.currentPids();
    const key = pids.join(',');
    if (key === this.followed || !this.running) return;
    this.followed = key;
    this.raw?.setPids(pids);
  }

  private refreshTree(): void {
    if (this.options.rootPid === undefined) return;
    try {
      this.treePids = this.tree.read(this.options.rootPid);
      this.push();
    } catch (e) {
      this.report(e);
    }
  }

  private deliver(b: RawBatch): void {
    if (this.ended) return;
    if (b.samples.length > 0) {
      try {
        this.onSamples(b.samples);
      } catch (e) {
        // A listener's bug must not stop sampling; it is reported like a sampling error.
        this.report(e);
      }
    }
    for (const message of b.errors) this.report(new Error(message));
    if (b.final) this.finish();
  }

  private report(e: unknown): void {
    if (!this.onError) return;
    try {
      this.onError(e instanceof Error ? e : new Error(String(e)));
    } catch {
      // Nowhere left to report to.
    }
  }

  private clearTree(): void {
    if (this.treeTimer) clearInterval(this.treeTimer);
    this.treeTimer = undefined;
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTree();
    this.raw = undefined;
    this.resolveDone();
    this.onEnd?.(this);
  }
}

/**
 * The samplers one backend has running: each leaves the set when it ends, and
 * stopAll() (the backend's dispose) stops the rest. Both backends keep one.
 */
export class SamplerSet {
  private readonly running = new Set<ManagedSampler>();

  start(factory: RawSamplerFactory, options: SamplerOptions, onSamples: SampleListener, onError?: SamplerErrorListener): GpuSampler {
    const s = new ManagedSampler(factory, options, onSamples, onError, (ended) => this.running.delete(ended));
    if (s.running) this.running.add(s);
    return s;
  }

  stopAll(): void {
    for (const s of this.running) void s.stop();
    this.running.clear();
  }
}
