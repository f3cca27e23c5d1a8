/**
 * Reads a PyTorch memory snapshot (`torch.cuda.memory._dump_snapshot`, plain or gzip)
 * through the restricted unpickler, compacting as it goes: each trace entry becomes one
 * row of typed arrays, each frame one row of a frame table, and each stack one node of a
 * prefix tree (stacks share their outer frames). A snapshot of a million entries then
 * costs tens of MB instead of the GBs its objects would take.
 *
 * Layout (torch/cuda/memory.py `_snapshot`, the C++ allocator's `TraceEntry` and
 * `SegmentInfo`): a dict with `segments` (each with `blocks`) and `device_traces`, one
 * list per device of entries {action, addr, size, stream, time_us, frames, ...}; frames are
 * {filename, line, name}, innermost first. Older snapshots have `history` on blocks and
 * no traces.
 */
import { createReadStream, openSync, readSync, closeSync, statSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { PickleError, SKIP, Unpickler, type PyDict, type PyValue } from './pickle';

export const ACTIONS = [
  'alloc',
  'free_requested',
  'free_completed',
  'segment_alloc',
  'segment_free',
  'segment_map',
  'segment_unmap',
  'snapshot',
  'oom',
  'free',
] as const;
export type Action = (typeof ACTIONS)[number];
/** Code of an action this reader does not know (counted, then ignored). */
export const OTHER_ACTION = 255;
const ACTION_CODE = new Map<string, number>(ACTIONS.map((a, i) => [a, i]));

export class SnapshotError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotError';
  }
}

/** Growable typed column. */
class Column<T extends Float64Array | Int32Array | Uint8Array | Uint16Array> {
  data: T;
  length = 0;
  constructor(private readonly make: (n: number) => T) {
    this.data = make(1024);
  }
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = this.make(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
  view(): T {
    return this.data.subarray(0, this.length) as T;
  }
}

/** Trace entries as columns; row i is entry i in file order. */
export interface Trace {
  length: number;
  action: Uint8Array;
  addr: Float64Array;
  size: Float64Array;
  /** Microseconds (allocator clock); NaN where the entry had none. */
  time: Float64Array;
  /** Stack node (see Stacks), -1 without frames. */
  stack: Int32Array;
  /** Device index of the entry's trace list. */
  device: Uint16Array;
  /** `device_free` of oom entries, by row. */
  deviceFree: Map<number, number>;
  /** Actions this reader does not know, with their counts. */
  unknownActions: Map<string, number>;
}

export interface FrameTable {
  file: string[];
  line: number[];
  name: string[];
}

/** Stacks as a prefix tree from the outermost frame; a stack is its innermost node. */
export interface Stacks {
  parent: Int32Array;
  frame: Int32Array;
}

export interface SnapshotData {
  /** The snapshot dict, with every trace list emptied (its entries are in `trace`). */
  top: PyDict;
  trace: Trace;
  frames: FrameTable;
  stacks: Stacks;
  /** Bytes read from the file (compressed, if it was gzip). */
  fileBytes: number;
  gzip: boolean;
  pickleProtocol: number;
}

/** Frame ids of a stack node, innermost first. */
export function stackFrames(stacks: Stacks, node: number): number[] {
  const out: number[] = [];
  for (let n = node; n >= 0; n = stacks.parent[n] as number) out.push(stacks.frame[n] as number);
  return out;
}

const FRAME_LIMIT = 1 << 24;

/** The compactor: an `onAppend` for the unpickler that keeps trace entries as rows. */
class Compactor {
  readonly action = new Column((n) => new Uint8Array(n));
  readonly addr = new Column((n) => new Float64Array(n));
  readonly size = new Column((n) => new Float64Array(n));
  readonly time = new Column((n) => new Float64Array(n));
  readonly stack = new Column((n) => new Int32Array(n));
  readonly list = new Column((n) => new Uint16Array(n));
  readonly deviceFree = new Map<number, number>();
  readonly unknownActions = new Map<string, number>();
  readonly frames: FrameTable = { file: [], line: [], name: [] };
  private readonly frameIds = new Map<string, number>();
  readonly nodeParent = new Column((n) => new Int32Array(n));
  readonly nodeFrame = new Column((n) => new Int32Array(n));
  private readonly nodes = new Map<number, number>();
  /** Trace lists by identity, in the order their first entry arrived. */
  readonly lists = new Map<PyValue[], number>();
  u!: Unpickler;

  onAppend = (list: PyValue[], item: PyValue): PyValue | typeof SKIP => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return item;
    const d = item as PyDict;
    const action = d.action;
    if (typeof action === 'string' && ('addr' in d || 'size' in d)) {
      this.entry(list, d, action);
      this.u.replace(d, null);
      return SKIP;
    }
    const filename = d.filename;
    if (typeof filename === 'string' && 'line' in d && 'name' in d) {
      const id = this.frame(filename, num(d.line), typeof d.name === 'string' ? d.name : String(d.name));
      this.u.replace(d, id);
      return id;
    }
    return item;
  };

  frame(file: string, line: number, name: string): number {
    const key = `${file}\u0000${line}\u0000${name}`;
    let id = this.frameIds.get(key);
    if (id === undefined) {
      id = this.frames.file.length;
      if (id >= FRAME_LIMIT) throw new SnapshotError('the snapshot has more than 16 million distinct frames; Membit cannot read it');
      this.frameIds.set(key, id);
      this.frames.file.push(file);
      this.frames.line.push(line);
      this.frames.name.push(name);
    }
    return id;
  }

  /** Interns a frames value (list of frame ids/dicts, or a stack id it was replaced by). */
  stackOf(v: PyValue | undefined): number {
    if (typeof v === 'number') return v;
    if (!Array.isArray(v) || v.length === 0) return -1;
    let node = -1;
    for (let i = v.length - 1; i >= 0; i--) {
      const f = v[i];
      const fid = typeof f === 'number' ? f : this.frameOf(f);
      if (fid < 0) continue;
      const key = (node + 1) * FRAME_LIMIT + fid;
      let next = this.nodes.get(key);
      if (next === undefined) {
        next = this.nodeParent.length;
        this.nodeParent.push(node);
        this.nodeFrame.push(fid);
        this.nodes.set(key, next);
      }
      node = next;
    }
    this.u.replace(v, node);
    return node;
  }

  private frameOf(f: PyValue | undefined): number {
    if (f && typeof f === 'object' && !Array.isArray(f) && typeof f.filename === 'string') return this.frame(f.filename, num(f.line), String(f.name ?? ''));
    return -1;
  }

  private entry(list: PyValue[], d: PyDict, action: string): void {
    let code = ACTION_CODE.get(action);
    if (code === undefined) {
      code = OTHER_ACTION;
      this.unknownActions.set(action, (this.unknownActions.get(action) ?? 0) + 1);
    }
    const row = this.action.length;
    this.action.push(code);
    this.addr.push(num(d.addr));
    this.size.push(num(d.size));
    const t = d.time_us;
    this.time.push(typeof t === 'number' ? t : typeof t === 'bigint' ? Number(t) : NaN);
    this.stack.push(this.stackOf(d.frames));
    let li = this.lists.get(list);
    if (li === undefined) this.lists.set(list, (li = this.lists.size));
    this.list.push(li);
    if (code === 8 && d.device_free !== undefined) this.deviceFree.set(row, num(d.device_free));
  }
}

function num(v: PyValue | undefined): number {
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0;
}

export interface ReadOptions {
  /** Called now and then with the share of the file read (0..1). */
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

/** First bytes of a file, to tell gzip, zip and JSON from a pickle before parsing. */
function sniff(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(8);
    const n = readSync(fd, b, 0, 8, 0);
    return b.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

function notPickle(head: Buffer, what: string): SnapshotError | undefined {
  if (head.length === 0) return new SnapshotError(`${what} is empty`);
  if (head[0] === 0x50 && head[1] === 0x4b) return new SnapshotError(`${what} is a zip archive (torch.save writes these), not a memory snapshot; dump one with torch.cuda.memory._dump_snapshot(path)`);
  if (head[0] === 0x7b || head[0] === 0x5b) return new SnapshotError(`${what} is JSON, not a pickle; if it is a Membit report, open it with Membit: Show Report or \`membit report\``);
  if (head[0] !== 0x80) return new SnapshotError(`${what} is not a pickle of protocol 2 or newer (it starts with byte 0x${(head[0] as number).toString(16).padStart(2, '0')}); PyTorch writes memory snapshots with pickle protocol 4 or 5`);
  return undefined;
}

/** Reads and compacts one snapshot file, streaming. Errors are SnapshotErrors with a clear message. */
export async function readSnapshot(path: string, opts: ReadOptions = {}): Promise<SnapshotData> {
  let total: number;
  try {
    total = statSync(path).size;
  } catch (e) {
    throw new SnapshotError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const head = sniff(path);
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  if (!gzip) {
    const bad = notPickle(head, path);
    if (bad) throw bad;
  }
  const c = new Compactor();
  const u = new Unpickler({ onAppend: c.onAppend });
  c.u = u;
  const file = createReadStream(path, { highWaterMark: 4 << 20 });
  let read = 0;
  file.on('data', (chunk) => {
    read += chunk.length;
  });
  const source = gzip ? file.pipe(createGunzip({ chunkSize: 1 << 20 })) : file;
  let first = true;
  let lastReport = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (opts.signal?.aborted) throw new SnapshotError('cancelled');
      if (first && gzip) {
        const bad = notPickle(chunk, `${path} (inside the gzip)`);
        if (bad) throw bad;
      }
      first = false;
      u.feed(chunk);
      if (u.finished) break;
      if (opts.onProgress && read - lastReport > 8 << 20) {
        lastReport = read;
        opts.onProgress(total ? read / total : 0);
      }
    }
  } catch (e) {
    if (e instanceof PickleError) throw new SnapshotError(`${path}: ${e.message}`);
    if (e instanceof SnapshotError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'Z_BUF_ERROR' || code === 'Z_DATA_ERROR') throw new SnapshotError(`${path}: the gzip data is ${code === 'Z_BUF_ERROR' ? 'cut off (the file is truncated)' : 'corrupt'}`);
    throw new SnapshotError(`${path}: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    file.destroy();
  }
  if (first) throw new SnapshotError(`${path} is empty`);
  let top: PyValue;
  try {
    top = u.end();
  } catch (e) {
    throw new SnapshotError(`${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (top === null || typeof top !== 'object' || Array.isArray(top) || !Array.isArray((top as PyDict).segments)) {
    const kind = top === null ? 'None' : Array.isArray(top) ? 'a list' : typeof top === 'object' ? `a dict with keys ${Object.keys(top).slice(0, 8).map((k) => JSON.stringify(k)).join(', ') || '(none)'}` : `a ${typeof top}`;
    throw new SnapshotError(`${path} is a pickle, but not a PyTorch memory snapshot: it holds ${kind}, where a snapshot is a dict with a "segments" list (written by torch.cuda.memory._dump_snapshot)`);
  }
  opts.onProgress?.(1);
  // Device index of each trace list: its position in device_traces.
  const devOfList = new Uint16Array(Math.max(1, c.lists.size));
  const traces = (top as PyDict).device_traces;
  if (Array.isArray(traces)) {
    traces.forEach((l, dev) => {
      const li = Array.isArray(l) ? c.lists.get(l) : undefined;
      if (li !== undefined) devOfList[li] = dev;
    });
  }
  const list = c.list.view();
  const device = new Uint16Array(list.length);
  for (let i = 0; i < list.length; i++) device[i] = devOfList[list[i] as number] as number;
  return {
    top: top as PyDict,
    trace: {
      length: c.action.length,
      action: c.action.view(),
      addr: c.addr.view(),
      size: c.size.view(),
      time: c.time.view(),
      stack: c.stack.view(),
      device,
      deviceFree: c.deviceFree,
      unknownActions: c.unknownActions,
    },
    frames: c.frames,
    stacks: { parent: c.nodeParent.view(), frame: c.nodeFrame.view() },
    fileBytes: total,
    gzip,
    pickleProtocol: u.pickleProtocol,
  };
}

/** The frame ids of a block's or entry's `frames` value after compaction. */
export function framesValue(data: SnapshotData, v: PyValue | undefined): number[] {
  if (typeof v === 'number') return stackFrames(data.stacks, v);
  if (!Array.isArray(v)) return [];
  return v.filter((x): x is number => typeof x === 'number');
}
