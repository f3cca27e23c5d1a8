/**
 * The fallback GpuBackend: the same answers as the addon, read from the `nvidia-smi`
 * command line tool. Used where the addon binary cannot load (no build for this
 * platform, an odd libc). Every call runs nvidia-smi with an argv array, never
 * through a shell.
 */
import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { SamplerSet, type RawBatch, type RawSampler } from './sampler';
import type {
  GpuBackend,
  GpuInfo,
  GpuProcess,
  GpuReading,
  GpuSample,
  GpuSampler,
  SampleListener,
  SamplerErrorListener,
  SamplerOptions,
} from './types';

const MIB = 1024 * 1024;
const CALL_TIMEOUT_MS = 15000;
const CSV = '--format=csv,noheader,nounits';
const GPU_FIELDS = ['index', 'name', 'uuid', 'memory.total', 'memory.used', 'memory.free'];
/** Looping mode queries this; the bus id maps error lines ("… for GPU 00000000:41:00.0: GPU is lost") to a GPU. */
const LOOP_QUERY = '--query-gpu=index,pci.bus_id,memory.used';
/** The looping mode lists no process, so per-process figures are polled; no more often than this. */
const PROCESS_POLL_MIN_MS = 250;

/** nvidia-smi's way to say a value is missing: "[N/A]", "[Not Supported]", "[GPU is lost]". */
function missing(value: string): string | undefined {
  const m = /^\[(.*)\]$/.exec(value.trim());
  return m ? m[1] : undefined;
}

function mibToBytes(value: string): number | undefined {
  const v = value.trim();
  if (!/^\d+(\.\d+)?$/.test(v)) return undefined;
  return Math.round(Number(v) * MIB);
}

function lines(text: string): string[] {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
}

/** Bus ids appear as "00000000:41:00.0" and "0000:41:00.0": compare bus:device.function only. */
function busKey(text: string): string | undefined {
  return /([0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f])\b/i.exec(text)?.[1]?.toLowerCase();
}

/**
 * Parses `--query-gpu=index,name,uuid,memory.total,memory.used,memory.free[,compute_cap]`
 * in csv,noheader,nounits form. A GPU nvidia-smi could not open prints an error line
 * instead of its row; it is listed with that error at the index its row would have had.
 */
export function parseGpuList(text: string, withComputeCap: boolean): GpuInfo[] {
  const tail = withComputeCap ? 5 : 4; // fields after the name
  const gpus: GpuInfo[] = [];
  const errors: string[] = [];
  for (const line of lines(text)) {
    const raw = line.split(',');
    const parts = raw.map((p) => p.trim());
    const index = Number(parts[0]);
    if (parts.length < 2 + tail || !/^\d+$/.test(parts[0] ?? '')) {
      errors.push(line);
      continue;
    }
    const rest = parts.slice(parts.length - tail);
    const [uuid, total, used, free, cc = ''] = rest as [string, string, string, string, string?];
    const problems: string[] = [];
    const bytes = (label: string, v: string): number => {
      const b = mibToBytes(v);
      if (b === undefined) problems.push(`${label}: ${missing(v) ?? v}`);
      return b ?? 0;
    };
    const capability = missing(cc) === undefined && /^\d+\.\d+$/.test(cc) ? cc : '';
    const gpu: GpuInfo = {
      index,
      name: raw.slice(1, raw.length - tail).join(',').trim(),
      uuid: missing(uuid) === undefined ? uuid : '',
      totalBytes: bytes('memory.total', total),
      usedBytes: bytes('memory.used', used),
      freeBytes: bytes('memory.free', free),
      computeCapability: capability,
      sparse24: capability !== '' && Number(capability.split('.')[0]) >= 8,
    };
    if (problems.length > 0) gpu.error = problems.join('; ');
    gpus.push(gpu);
  }
  // Error lines stand for the GPUs whose rows are missing, in order.
  const present = new Set(gpus.map((g) => g.index));
  for (let i = 0; i < gpus.length + errors.length; i++) {
    if (present.has(i)) continue;
    const error = errors.shift();
    if (error === undefined) break;
    gpus.push({ index: i, name: '', uuid: '', totalBytes: 0, usedBytes: 0, freeBytes: 0, computeCapability: '', sparse24: false, error });
  }
  return gpus.sort((a, b) => a.index - b.index);
}

/** Parses `--query-compute-apps=pid,used_memory` (csv,noheader,nounits). */
export function parseProcessList(text: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const line of lines(text)) {
    const [, pid, used] = /^(\d+)\s*,\s*(.+)$/.exec(line) ?? [];
    if (pid === undefined || used === undefined) continue; // "No running processes found" and the like
    out.push({ pid: Number(pid), usedBytes: mibToBytes(used) ?? null });
  }
  return out;
}

/** One row of `--query-compute-apps=gpu_bus_id,pid,used_memory`. */
interface BusProcess {
  bus: string;
  pid: number;
  usedBytes: number | null;
}

export function parseBusProcessList(text: string): BusProcess[] {
  const out: BusProcess[] = [];
  for (const line of lines(text)) {
    const [, busText, pid, used] = /^([^,]+),\s*(\d+)\s*,\s*(.+)$/.exec(line) ?? [];
    const bus = busText === undefined ? undefined : busKey(busText);
    if (!bus || pid === undefined || used === undefined) continue;
    out.push({ bus, pid: Number(pid), usedBytes: mibToBytes(used) ?? null });
  }
  return out;
}

/** An nvidia-smi run that failed: not found, a non-zero exit, a timeout. */
export class NvidiaSmiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly exitCode?: number,
  ) {
    super(message);
    this.name = 'NvidiaSmiError';
  }
}

export function runSmi(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: CALL_TIMEOUT_MS, maxBuffer: 8 * MIB, windowsHide: true }, (err, stdout, stderr) => {
      if (!err) {
        resolve(stdout);
        return;
      }
      const e = err as NodeJS.ErrnoException & { killed?: boolean };
      if (e.code === 'ENOENT') {
        reject(new NvidiaSmiError(`${command} not found`, 'ENOENT'));
        return;
      }
      if (e.killed) {
        reject(new NvidiaSmiError(`${command} did not answer within ${CALL_TIMEOUT_MS / 1000} s`, 'ETIMEDOUT'));
        return;
      }
      // nvidia-smi prints its own errors on stdout ("NVIDIA-SMI has failed because …").
      const said = lines(`${stderr}\n${stdout}`)[0] ?? e.message;
      const exitCode = typeof e.code === 'number' ? e.code : undefined;
      reject(new NvidiaSmiError(`nvidia-smi: ${said}`, 'EXIT', exitCode));
    });
  });
}

export class SmiBackend implements GpuBackend {
  readonly kind = 'nvidia-smi' as const;
  private readonly samplers = new SamplerSet();
  /** Drivers before about R510 have no compute_cap field; learnt on the first call. */
  private computeCap = true;

  constructor(
    readonly command = 'nvidia-smi',
    readonly reason = `nvidia-smi (${command})`,
  ) {}

  async listGpus(): Promise<GpuInfo[]> {
    if (this.computeCap) {
      try {
        return parseGpuList(await runSmi(this.command, [`--query-gpu=${[...GPU_FIELDS, 'compute_cap'].join(',')}`, CSV]), true);
      } catch (e) {
        if (!(e instanceof NvidiaSmiError) || !e.message.includes('compute_cap')) throw e;
        this.computeCap = false;
      }
    }
    return parseGpuList(await runSmi(this.command, [`--query-gpu=${GPU_FIELDS.join(',')}`, CSV]), false);
  }

  async processesOn(gpuIndex: number): Promise<GpuProcess[]> {
    if (!Number.isInteger(gpuIndex) || gpuIndex < 0) throw new RangeError(`processesOn: no GPU ${gpuIndex}`);
    return parseProcessList(await runSmi(this.command, ['-i', String(gpuIndex), '--query-compute-apps=pid,used_memory', CSV]));
  }

  startSampler(options: SamplerOptions, onSamples: SampleListener, onError?: SamplerErrorListener): GpuSampler {
    return this.samplers.start((o, deliver) => new SmiLoopSampler(this.command, o, deliver), options, onSamples, onError);
  }

  dispose(): void {
    this.samplers.stopAll();
  }
}

/**
 * nvidia-smi in looping mode (-lms) for device memory, parsed line by line as it
 * comes, plus a one-shot process query repeated for the followed pids: the looping
 * mode prints nothing for an iteration without processes, so it cannot tell "no
 * process any more" from "not yet".
 */
class SmiLoopSampler implements RawSampler {
  private readonly child: ChildProcessByStdio<null, Readable, Readable>;
  private pids: Set<number>;
  private pending: GpuSample[] = [];
  private errors: string[] = [];
  private readonly reported = new Set<string>();
  private group: GpuReading[] = [];
  /** GPUs per iteration, learnt from the first whole one. */
  private perIteration = 0;
  private readonly busToIndex = new Map<string, number>();
  private processes: BusProcess[] | undefined;
  private processError = false;
  private polling = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private partial = '';
  private stopping = false;
  private closed = false;

  constructor(
    private readonly command: string,
    private readonly o: { intervalMs: number; batchMs: number; pids: number[] },
    private readonly deliver: (b: RawBatch) => void,
  ) {
    this.pids = new Set(o.pids);
    this.child = spawn(command, [LOOP_QUERY, CSV, '-lms', String(Math.max(1, Math.round(o.intervalMs)))], {
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => this.onData(d));
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => {
      for (const l of lines(d)) this.error(`nvidia-smi: ${l}`);
    });
    this.child.on('error', (e: NodeJS.ErrnoException) => {
      this.error(e.code === 'ENOENT' ? `${command} not found` : `${command}: ${e.message}`);
      this.onClose();
    });
    this.child.on('close', (code, signal) => {
      if (!this.stopping) this.error(`nvidia-smi stopped sampling (${signal ?? `exit code ${code}`})`);
      this.onClose();
    });
    if (o.batchMs > 0) this.flushTimer = setInterval(() => this.flush(false), o.batchMs);
    if (this.pids.size > 0) void this.poll();
  }

  setPids(pids: number[]): void {
    this.pids = new Set(pids);
    if (pids.length > 0 && !this.polling) {
      if (this.pollTimer) clearTimeout(this.pollTimer);
      void this.poll();
    }
  }

  stop(): void {
    if (this.stopping || this.closed) return;
    this.stopping = true;
    this.child.kill('SIGTERM');
    this.killTimer = setTimeout(() => this.child.kill('SIGKILL'), 1000);
  }

  private error(message: string): void {
    // The same message at every iteration would flood the listener: once is enough.
    if (this.reported.has(message)) return;
    this.reported.add(message);
    this.errors.push(message);
    if (this.o.batchMs === 0) this.flush(false);
  }

  private onData(chunk: string): void {
    const text = this.partial + chunk;
    const parts = text.split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    for (const l of parts) if (l.trim()) this.onLine(l.trim());
  }

  private onLine(line: string): void {
    const [, indexText, busText, usedText] = /^(\d+)\s*,\s*([^,]*?)\s*,\s*(.*)$/.exec(line) ?? [];
    let reading: GpuReading | undefined;
    if (indexText !== undefined && busText !== undefined && usedText !== undefined) {
      const index = Number(indexText);
      const bus = busKey(busText);
      if (bus) this.busToIndex.set(bus, index);
      const used = mibToBytes(usedText);
      if (used === undefined) this.error(`GPU ${index}: memory.used: ${missing(usedText) ?? usedText}`);
      reading = { index, usedBytes: used ?? null, pidUsedBytes: null };
    } else {
      const bus = busKey(line);
      const index = bus === undefined ? undefined : this.busToIndex.get(bus);
      this.error(index === undefined ? `nvidia-smi: ${line}` : `GPU ${index}: ${line}`);
      if (index !== undefined) reading = { index, usedBytes: null, pidUsedBytes: null };
    }
    if (!reading) return;
    const last = this.group[this.group.length - 1];
    if (last && reading.index <= last.index) this.endIteration();
    this.group.push(reading);
    if (this.perIteration > 0 && this.group.length >= this.perIteration) this.endIteration();
  }

  private endIteration(): void {
    if (this.group.length === 0) return;
    this.perIteration = Math.max(this.perIteration, this.group.length);
    const gpus = this.group;
    this.group = [];
    let total: number | null = null;
    if (this.pids.size > 0 && this.processes && !this.processError) {
      let anyRead = false;
      let sum: number | null = 0;
      for (const g of gpus) {
        if (g.usedBytes === null) continue;
        g.pidUsedBytes = 0;
        for (const p of this.processes) {
          if (this.busToIndex.get(p.bus) !== g.index || !this.pids.has(p.pid)) continue;
          g.pidUsedBytes = g.pidUsedBytes === null || p.usedBytes === null ? null : g.pidUsedBytes + p.usedBytes;
        }
        anyRead = true;
        sum = sum === null || g.pidUsedBytes === null ? null : sum + g.pidUsedBytes;
      }
      total = anyRead ? sum : null;
    }
    this.pending.push({ tMs: Date.now(), gpus, pidUsedBytes: total });
    if (this.o.batchMs === 0) this.flush(false);
  }

  private async poll(): Promise<void> {
    if (this.stopping || this.closed || this.pids.size === 0) return;
    this.polling = true;
    const started = Date.now();
    try {
      this.processes = parseBusProcessList(await runSmi(this.command, ['--query-compute-apps=gpu_bus_id,pid,used_memory', CSV]));
      this.processError = false;
    } catch (e) {
      this.processError = true;
      this.error(`process query: ${(e as Error).message}`);
    } finally {
      this.polling = false;
    }
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- stop() may have run during the await above
    if (this.stopping || this.closed) return;
    const wait = Math.max(0, Math.max(this.o.intervalMs, PROCESS_POLL_MIN_MS) - (Date.now() - started));
    this.pollTimer = setTimeout(() => void this.poll(), wait);
  }

  private flush(final: boolean): void {
    if (!final && this.pending.length === 0 && this.errors.length === 0) return;
    const b: RawBatch = { samples: this.pending, errors: this.errors, final };
    this.pending = [];
    this.errors = [];
    this.deliver(b);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.partial.trim()) this.onLine(this.partial.trim());
    this.partial = '';
    // Once the GPU count is known, whole iterations were emitted as they completed:
    // what is left is one cut short by the kill, and is dropped.
    if (this.perIteration === 0) this.endIteration();
    for (const t of [this.flushTimer, this.pollTimer, this.killTimer]) if (t) clearTimeout(t);
    this.flush(true);
  }
}
