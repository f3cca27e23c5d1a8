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
import { itemAt } from '../arrays';
import { PickleError, Ref, SKIP, Unpickler, type PyDict, type PyValue, type Stack } from './pickle';

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
  for (let n = node; n >= 0; n = itemAt(stacks.parent, n)) out.push(itemAt(stacks.frame, n));
  return out;
}

const FRAME_LIMIT = 1 << 24;

/**
 * The stack tree's child index: (parent node, frame) → child node, open addressing over
 * typed arrays. A Map keyed by the pair costs ~10x more per lookup, and a snapshot of a
 * million entries with stacks of 80 frames does 80 million of them.
 */
class ChildTable {
  private parent = new Int32Array(1 << 16);
  private frame = new Int32Array(1 << 16);
  private child = new Int32Array(1 << 16).fill(-1);
  private size = 0;

  get(parent: number, frame: number): number {
    const mask = this.child.length - 1;
    let i = hash(parent, frame) & mask;
    for (;;) {
      const c = itemAt(this.child, i);
      if (c < 0) return -1;
      if (this.parent[i] === parent && this.frame[i] === frame) return c;
      i = (i + 1) & mask;
    }
  }

  set(parent: number, frame: number, child: number): void {
    if ((this.size + 1) * 2 > this.child.length) this.grow();
    this.insert(parent, frame, child);
    this.size++;
  }

  private insert(parent: number, frame: number, child: number): void {
    const mask = this.child.length - 1;
    let i = hash(parent, frame) & mask;
    while (itemAt(this.child, i) >= 0) i = (i + 1) & mask;
    this.parent[i] = parent;
    this.frame[i] = frame;
    this.child[i] = child;
  }

  private grow(): void {
    const { parent, frame, child } = this;
    const cap = child.length * 2;
    this.parent = new Int32Array(cap);
    this.frame = new Int32Array(cap);
    this.child = new Int32Array(cap).fill(-1);
    child.forEach((c, i) => {
      if (c >= 0) this.insert(itemAt(parent, i), itemAt(frame, i), c);
    });
  }
}

function hash(a: number, b: number): number {
  let h = Math.imul(a ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(b, 0x85ebca77);
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) >>> 0;
}

/** A frame's stand-in: one object per distinct frame, shared by every reference to it. */
const FrameRef = Ref;
type FrameRef = Ref;

/** A trace entry's stand-in after its fields went into the columns (one shared object). */
const ENTRY = Object.freeze(Object.create(null) as PyDict);

/**
 * The compactor: unpickler hooks that keep trace entries as rows, frames as FrameRefs and
 * frames lists as stack nodes, reading them off the stack before any object is filled.
 */
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
  private readonly frameIds = new Map<string, FrameRef>();
  readonly nodeParent = new Column((n) => new Int32Array(n));
  readonly nodeFrame = new Column((n) => new Int32Array(n));
  private readonly children = new ChildTable();
  /** Whole stacks by their hashes → their innermost node. */
  private readonly whole = new ChildTable();
  /** Trace lists by identity, in the order their first entry arrived. */
  readonly lists = new Map<PyValue[], number>();
  /** Rows not yet appended to a trace list (entries are appended in the order they were built). */
  private assigned = 0;

  onSetItems = (_d: PyDict, st: Stack, from: number, to: number): PyValue | undefined => {
    // Entries: {action, addr, size, stream, time_us, frames, …}; frames: {name, filename, line}.
    let action: unknown;
    let filename: unknown;
    for (let k = from; k < to; k += 2) {
      const key = st[k];
      if (key === 'action') action = st[k + 1];
      else if (key === 'filename') filename = st[k + 1];
    }
    if (typeof action === 'string') return this.entry(st, from, to, action);
    if (typeof filename === 'string') {
      let line = 0;
      let name = '';
      for (let k = from; k < to; k += 2) {
        if (st[k] === 'line') line = num(st[k + 1] as PyValue);
        else if (st[k] === 'name') name = String(st[k + 1]);
      }
      return this.frame(filename, line, name) as unknown as PyValue;
    }
    return undefined;
  };

  onAppends = (list: PyValue[], st: Stack, from: number, to: number): PyValue | typeof SKIP | undefined => {
    const first = st[from];
    if (first instanceof FrameRef) {
      // A frames list, whole in one batch (pickle batches 1000 items): intern it as a stack.
      if (list.length || to - from >= 1000) return undefined;
      return this.intern(st, from, to);
    }
    if (first === ENTRY) {
      for (let k = from; k < to; k++) if (st[k] === ENTRY) this.assign(list);
      return SKIP;
    }
    return undefined;
  };

  /** Frames lists by the hashes of the memo indices they name → their stack node. */
  private readonly byMemo = new ChildTable();
  private readonly ids = new Int32Array(1000);

  onRefList = (h1: number, h2: number, _n: number, resolve: (ids: Int32Array) => number): PyValue | undefined => {
    const known = this.byMemo.get(h1, h2);
    if (known >= 0) return known;
    const n = resolve(this.ids);
    if (n <= 0) return undefined;
    const node = this.internIds(this.ids, n);
    this.byMemo.set(h1, h2, node);
    return node;
  };

  /** `intern` for frame ids already off the stack (the unpickler's fast path for frames lists). */
  private internIds(ids: Int32Array, n: number): number {
    let h1 = 0x811c9dc5;
    let h2 = n;
    for (const f of ids.subarray(0, n)) {
      h1 = Math.imul(h1 ^ f, 0x01000193);
      h2 = Math.imul(h2 + f, 0x9e3779b1) ^ (h2 >>> 13);
    }
    const known = this.whole.get(h1, h2);
    if (known >= 0) return known;
    let node = -1;
    for (let k = n - 1; k >= 0; k--) node = this.child(node, itemAt(ids, k));
    this.whole.set(h1, h2, node);
    return node;
  }

  onAppend = (list: PyValue[], item: PyValue): PyValue | typeof SKIP => {
    if (item === ENTRY) {
      this.assign(list);
      return SKIP;
    }
    if ((item as unknown) instanceof FrameRef) return (item as unknown as FrameRef).id;
    return item;
  };

  private assign(list: PyValue[]): void {
    let li = this.lists.get(list);
    if (li === undefined) this.lists.set(list, (li = this.lists.size));
    if (this.assigned < this.list.length) this.list.data[this.assigned++] = li;
  }

  frame(file: string, line: number, name: string): FrameRef {
    const key = `${file}\u0000${line}\u0000${name}`;
    let ref = this.frameIds.get(key);
    if (ref === undefined) {
      const id = this.frames.file.length;
      if (id >= FRAME_LIMIT) throw new SnapshotError('the snapshot has more than 16 million distinct frames; Membit cannot read it');
      this.frameIds.set(key, (ref = new FrameRef(id)));
      this.frames.file.push(file);
      this.frames.line.push(line);
      this.frames.name.push(name);
    }
    return ref;
  }

  /**
   * Interns frames (FrameRefs at st[from..to), innermost first) as a stack node. Whole
   * stacks are looked up first by two independent 32-bit hashes of their frame ids (a
   * false match needs both to collide, ~1e-8 for a million distinct stacks); the tree
   * walk runs only for stacks not seen before.
   */
  private intern(st: Stack, from: number, to: number): number | undefined {
    let h1 = 0x811c9dc5;
    let h2 = to - from;
    for (let k = from; k < to; k++) {
      const r = st[k];
      // Not all frames (not a frames list after all): let the items be appended one by one.
      if (!(r instanceof FrameRef)) return undefined;
      const f = r.id;
      h1 = Math.imul(h1 ^ f, 0x01000193);
      h2 = Math.imul(h2 + f, 0x9e3779b1) ^ (h2 >>> 13);
    }
    const known = this.whole.get(h1, h2);
    if (known >= 0) return known;
    let node = -1;
    for (let k = to - 1; k >= from; k--) node = this.child(node, (st[k] as FrameRef).id);
    this.whole.set(h1, h2, node);
    return node;
  }

  private child(node: number, fid: number): number {
    let next = this.children.get(node, fid);
    if (next < 0) {
      next = this.nodeParent.length;
      this.nodeParent.push(node);
      this.nodeFrame.push(fid);
      this.children.set(node, fid, next);
    }
    return next;
  }

  /** A frames value: a stack node (interned list), a list of frame ids, or nothing. */
  stackOf(v: unknown): number {
    if (typeof v === 'number') return v;
    if (!Array.isArray(v) || v.length === 0) return -1;
    let node = -1;
    for (let i = v.length - 1; i >= 0; i--) {
      const f: unknown = v[i];
      if (typeof f === 'number') node = this.child(node, f);
    }
    return node;
  }

  private entry(st: Stack, from: number, to: number, action: string): PyValue {
    let code = ACTION_CODE.get(action);
    if (code === undefined) {
      code = OTHER_ACTION;
      this.unknownActions.set(action, (this.unknownActions.get(action) ?? 0) + 1);
    }
    let addr = 0;
    let size = 0;
    let time = NaN;
    let stack = -1;
    let free: number | undefined;
    for (let k = from; k < to; k += 2) {
      const v = st[k + 1] as PyValue;
      switch (st[k]) {
        case 'addr':
          addr = num(v);
          break;
        case 'size':
          size = num(v);
          break;
        case 'time_us':
          if (typeof v === 'number' || typeof v === 'bigint') time = Number(v);
          break;
        case 'frames':
          stack = this.stackOf(v);
          break;
        case 'device_free':
          free = num(v);
          break;
      }
    }
    const row = this.action.length;
    this.action.push(code);
    this.addr.push(addr);
    this.size.push(size);
    this.time.push(time);
    this.stack.push(stack);
    this.list.push(0);
    if (code === 8 && free !== undefined) this.deviceFree.set(row, free);
    return ENTRY;
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
  if (head[0] !== 0x80) return new SnapshotError(`${what} is not a pickle of protocol 2 or newer (it starts with byte 0x${head.readUInt8(0).toString(16).padStart(2, '0')}); PyTorch writes memory snapshots with pickle protocol 4 or 5`);
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
  const u = new Unpickler({ onAppend: c.onAppend, onAppends: c.onAppends, onSetItems: c.onSetItems, onRefList: c.onRefList });
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
  if (top === null || typeof top !== 'object' || Array.isArray(top) || !Array.isArray(top['segments'])) {
    const kind = top === null ? 'None' : Array.isArray(top) ? 'a list' : typeof top === 'object' ? `a dict with keys ${Object.keys(top).slice(0, 8).map((k) => JSON.stringify(k)).join(', ') || '(none)'}` : `a ${typeof top}`;
    throw new SnapshotError(`${path} is a pickle, but not a PyTorch memory snapshot: it holds ${kind}, where a snapshot is a dict with a "segments" list (written by torch.cuda.memory._dump_snapshot)`);
  }
  opts.onProgress?.(1);
  // Device index of each trace list: its position in device_traces.
  const devOfList = new Uint16Array(Math.max(1, c.lists.size));
  const traces = top['device_traces'];
  if (Array.isArray(traces)) {
    traces.forEach((l, dev) => {
      const li = Array.isArray(l) ? c.lists.get(l) : undefined;
      if (li !== undefined) devOfList[li] = dev;
    });
  }
  const list = c.list.view();
  const device = new Uint16Array(list.length);
  for (let i = 0; i < list.length; i++) device[i] = itemAt(devOfList, itemAt(list, i));
  return {
    top: top,
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
