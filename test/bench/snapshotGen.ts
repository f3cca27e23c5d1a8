/**
 * Writes a large synthetic PyTorch memory snapshot, laid out as torch writes one
 * (`pickle.dump` protocol 4 of `_snapshot()`): memoised key and frame dicts shared by
 * reference, one fresh frames list per trace entry, addresses and clocks as LONG1. The
 * trace is a training loop: each step allocates activations in the forward, frees them
 * in the backward and allocates and frees temporaries, so the timeline has a peak per
 * step. Stacks look like `stacks="all"`: ~80 outer frames per call site (Python and C++)
 * plus a varying inner tail, so entries cost ~500 bytes as in real deep-model snapshots.
 *
 * Streaming: the file is written in 4 MB pieces, never held whole.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { itemAt } from '../../src/core/arrays';

class Out {
  private buf = Buffer.alloc(4 << 20);
  private n = 0;
  written = 0;
  constructor(private readonly fd: number) {}
  private room(k: number): void {
    if (this.n + k > this.buf.length) this.flush();
  }
  flush(): void {
    writeSync(this.fd, this.buf, 0, this.n);
    this.written += this.n;
    this.n = 0;
  }
  op(...b: number[]): void {
    this.room(b.length);
    for (const x of b) this.buf[this.n++] = x;
  }
  str(s: string): void {
    const len = Buffer.byteLength(s);
    this.room(len + 5);
    if (len < 256) {
      this.buf[this.n++] = 0x8c;
      this.buf[this.n++] = len;
    } else {
      this.buf[this.n++] = 0x58;
      this.buf.writeUInt32LE(len, this.n);
      this.n += 4;
    }
    this.n += this.buf.write(s, this.n);
  }
  int(v: number): void {
    this.room(10);
    if (v >= 0 && v < 256) {
      this.buf[this.n++] = 0x4b;
      this.buf[this.n++] = v;
    } else if (v >= 0 && v < 2 ** 31) {
      this.buf[this.n++] = 0x4a;
      this.buf.writeInt32LE(v, this.n);
      this.n += 4;
    } else {
      // LONG1, 8 bytes little-endian (positive values below 2^53 here).
      this.buf[this.n++] = 0x8a;
      this.buf[this.n++] = 8;
      this.buf.writeUInt32LE(v % 4294967296, this.n);
      this.buf.writeUInt32LE(Math.floor(v / 4294967296), this.n + 4);
      this.n += 8;
    }
  }
  get(i: number): void {
    this.room(5);
    if (i < 256) {
      this.buf[this.n++] = 0x68;
      this.buf[this.n++] = i;
    } else {
      this.buf[this.n++] = 0x6a;
      this.buf.writeUInt32LE(i, this.n);
      this.n += 4;
    }
  }
}

export interface GenStats {
  bytes: number;
  entries: number;
  /** The peak of allocated bytes the generator's own bookkeeping saw (blocks rounded to 512). */
  peak: number;
}

/** Writes a snapshot with about `entries` trace entries to `path`. */
export function generateSnapshot(path: string, entries: number, seed = 1): GenStats {
  const fd = openSync(path, 'w');
  const o = new Out(fd);
  let memo = 0;
  const memoize = () => {
    o.op(0x94);
    return memo++;
  };
  let rnd = seed;
  const rand = () => {
    rnd = (rnd * 1103515245 + 12345) % 2147483648;
    return rnd / 2147483648;
  };
  const keys = new Map<string, number>();
  const key = (k: string) => {
    const m = keys.get(k);
    if (m !== undefined) o.get(m);
    else {
      o.str(k);
      keys.set(k, memoize());
    }
  };
  // Frames: a pool of dicts, each written once, then referenced.
  const frameMemo = new Map<number, number>();
  const frameText = (id: number): [string, number, string] =>
    id % 3 === 0
      ? [`/home/user/project/model/layer_${id % 97}.py`, 10 + (id % 400), `forward_${id % 13}`]
      : id % 3 === 1
        ? ['/opt/venv/lib/python3.12/site-packages/torch/nn/modules/module.py', 1700 + (id % 90), '_call_impl']
        : ['', 0, `at::native::op_${id}(at::Tensor const&)`];
  const frame = (id: number) => {
    const m = frameMemo.get(id);
    if (m !== undefined) {
      o.get(m);
      return;
    }
    const [file, line, name] = frameText(id);
    o.op(0x7d);
    frameMemo.set(id, memoize());
    o.op(0x28);
    key('name');
    o.str(name);
    key('filename');
    o.str(file === '' ? '??' : file);
    key('line');
    o.int(line);
    o.op(0x75);
  };
  const SITES = 2000;
  const OUTER = 80;
  const siteFrames = Array.from({ length: SITES }, (_, s) => Array.from({ length: OUTER }, (_, k) => (s * 7 + k * 131) % 5000));
  const stack = (site: number) => {
    o.op(0x5d);
    memoize();
    o.op(0x28);
    const tail = Math.floor(rand() * 64);
    for (let k = 0; k < 12; k++) frame(5000 + ((tail * 12 + k) % 700));
    for (const f of itemAt(siteFrames, site)) frame(f);
    o.op(0x65);
  };
  const str = (v: string) => key(v);
  const entry = (action: string, addr: number, size: number, t: number, site: number) => {
    o.op(0x7d);
    memoize();
    o.op(0x28);
    key('action');
    str(action);
    key('addr');
    o.int(addr);
    key('size');
    o.int(size);
    key('stream');
    o.int(0);
    key('time_us');
    o.int(t);
    key('compile_context');
    str('N/A');
    key('user_metadata');
    str('');
    key('frames');
    stack(site);
    o.op(0x75);
  };

  o.op(0x80, 4);
  o.op(0x7d);
  memoize();
  o.op(0x28);
  // device_traces first (pickle writes dict items in insertion order; either order is read).
  key('device_traces');
  o.op(0x5d);
  memoize();
  o.op(0x28);
  o.op(0x5d);
  memoize();
  o.op(0x28);
  const base = 0x7f0000000000;
  let t = 1_796_000_000_000_000;
  let n = 0;
  let inBatch = 0;
  const emit = (action: string, addr: number, size: number, site: number) => {
    entry(action, addr, size, t, site);
    t += 3 + Math.floor(rand() * 20);
    n++;
    if (++inBatch === 1000) {
      o.op(0x65, 0x28);
      inBatch = 0;
    }
  };
  let allocated = 0;
  let peak = 0;
  const round = (s: number) => Math.max(512, Math.ceil(s / 512) * 512);
  let next = 0;
  // Parameters: live for the whole trace.
  for (let i = 0; i < 200; i++) {
    const size = 4 << 20;
    emit('alloc', base + next, size, i % SITES);
    next += round(size);
    allocated += round(size);
  }
  while (n < entries) {
    // Forward: activations, freed in reverse in the backward; temporaries in between.
    const acts: [number, number, number][] = [];
    for (let i = 0; i < 400 && n < entries; i++) {
      const size = (1 + Math.floor(rand() * 64)) << 16;
      const addr = base + next;
      next += round(size);
      const site = Math.floor(rand() * SITES);
      emit('alloc', addr, size, site);
      allocated += round(size);
      acts.push([addr, size, site]);
      if (rand() < 0.5) {
        const tmp = base + next;
        next += round(8192);
        emit('alloc', tmp, 8192, site);
        emit('free_requested', tmp, 8192, site);
        emit('free_completed', tmp, 8192, site);
      }
      peak = Math.max(peak, allocated);
    }
    for (const [addr, size, site] of acts.reverse()) {
      if (n >= entries) break;
      emit('free_requested', addr, size, site);
      emit('free_completed', addr, size, site);
      allocated -= round(size);
    }
    next = 200 * (4 << 20);
  }
  o.op(0x65); // last APPENDS of the device's list
  o.op(0x65); // APPENDS of device_traces
  key('segments');
  o.op(0x5d);
  memoize();
  o.op(0x28);
  // One segment holding the parameters, as the dump would show them.
  o.op(0x7d);
  memoize();
  o.op(0x28);
  key('device');
  o.int(0);
  key('address');
  o.int(base);
  key('total_size');
  o.int(200 * (4 << 20));
  key('stream');
  o.int(0);
  key('segment_type');
  str('large');
  key('blocks');
  o.op(0x5d);
  memoize();
  o.op(0x28);
  for (let i = 0; i < 200; i++) {
    o.op(0x7d);
    memoize();
    o.op(0x28);
    key('address');
    o.int(base + i * (4 << 20));
    key('size');
    o.int(4 << 20);
    key('requested_size');
    o.int(4 << 20);
    key('state');
    str('active_allocated');
    key('frames');
    o.op(0x5d, 0x75);
  }
  o.op(0x65, 0x75); // APPENDS blocks, SETITEMS segment
  o.op(0x65); // APPENDS segments
  o.op(0x75, 0x2e); // SETITEMS top, STOP
  o.flush();
  closeSync(fd);
  return { bytes: o.written, entries: n, peak };
}
