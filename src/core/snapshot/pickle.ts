/**
 * A restricted, streaming reader for Python pickles of plain data: None, booleans,
 * integers, floats, strings, lists, tuples and dicts. It is what PyTorch's memory
 * snapshots hold (`torch.cuda.memory._dump_snapshot` writes `pickle.dump` of a dict of
 * such values), so nothing more is needed to read them.
 *
 * Why our own reader and not Python's: `pickle.load` calls whatever callable a file names
 * (GLOBAL/STACK_GLOBAL then REDUCE, BUILD, INST, OBJ, NEWOBJ), so loading a file from
 * someone else can run code. This reader implements only the data opcodes of protocols
 * 2–5 (pickletools' documentation lists them) and refuses every opcode that names or calls
 * a Python object, and persistent ids and extension codes, with a message that says so.
 * No Python runs at all: the file is read as bytes by JavaScript.
 *
 * Streaming: `feed` takes chunks as they arrive (from disk or a gunzip stream), so a file
 * of several GB is never held whole. Hooks let the caller turn containers into compact
 * stand-ins while they are built, straight from the stack (the snapshot reader keeps each
 * trace entry as a row of typed arrays and each stack as one number): a stand-in replaces
 * the container on the stack and in the memo, so later back-references get the stand-in
 * and the container is never filled at all.
 */

/**
 * Byte `i` of `b`, where the parser has already checked that the opcode's bytes are all
 * there; a RangeError (a bug in that check), never an `undefined` read as a number.
 */
function byteAt(b: Buffer, i: number): number {
  const v = b[i];
  return v ?? pastEnd(b, i);
}

function pastEnd(b: Buffer, i: number): never {
  throw new RangeError(`byte ${i} is past the end of the buffer (${b.length} bytes)`);
}

export type PickleErrorKind = 'refused' | 'truncated' | 'malformed' | 'unsupported';

export class PickleError extends Error {
  constructor(
    message: string,
    readonly kind: PickleErrorKind,
    /** Byte offset of the opcode in the (decompressed) stream. */
    readonly offset: number,
  ) {
    super(message);
    this.name = 'PickleError';
  }
}

/** A Python dict: a prototype-less object, so no key can reach Object.prototype. */
export interface PyDict { [key: string]: PyValue }
export type PyValue = null | boolean | number | bigint | string | PyValue[] | PyDict;

/** Names of the opcodes that import or call Python objects; each is refused. */
const CALLS: Record<number, string> = {
  0x63: 'GLOBAL',
  0x93: 'STACK_GLOBAL',
  0x52: 'REDUCE',
  0x62: 'BUILD',
  0x69: 'INST',
  0x6f: 'OBJ',
  0x81: 'NEWOBJ',
  0x92: 'NEWOBJ_EX',
  0x50: 'PERSID',
  0x51: 'BINPERSID',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
};

const MARK = Symbol('mark');
/** Largest single string or bytes value accepted: snapshots hold file names and function names. */
const MAX_STRING = 64 * 1024 * 1024;
/** Strings up to this many bytes are interned: file and function names repeat across frames. */
const INTERN_MAX = 256;
const INTERN_LIMIT = 1_000_000;

/** The stack the hooks read: `stack[from]`, `stack[from + 1]`, … up to `to` (exclusive). */
export type Stack = readonly unknown[];

export interface UnpicklerOptions {
  /**
   * Called for each item appended to a list (APPEND, LIST, and APPENDS when `onAppends`
   * left it); returns what to store instead, or `SKIP` to store nothing.
   */
  onAppend?: (list: PyValue[], item: PyValue) => PyValue | typeof SKIP;
  /**
   * Called for APPENDS with the items on the stack. Returns undefined to append them one by
   * one (through onAppend), SKIP to append nothing, or a stand-in for the list itself
   * (only while the list is empty).
   */
  onAppends?: (list: PyValue[], stack: Stack, from: number, to: number) => PyValue | typeof SKIP | undefined;
  /**
   * Called for SETITEMS with the keys and values on the stack (key, value, key, …).
   * Returns undefined to set them on the dict, or a stand-in for the dict itself.
   */
  onSetItems?: (dict: PyDict, stack: Stack, from: number, to: number) => PyValue | undefined;
  /**
   * Called for a list pickled as back-references only (`EMPTY_LIST MEMOIZE MARK BINGET…
   * APPENDS`), with two independent 32-bit hashes of the memo indices it names and their
   * count; `resolve` fills `ids` with the Refs' ids (-1 when one is not a Ref). Returns a
   * stand-in for the list, or undefined to read it opcode by opcode.
   */
  onRefList?: (h1: number, h2: number, n: number, resolve: (ids: Int32Array) => number) => PyValue | undefined;
}

export const SKIP = Symbol('skip');

/**
 * A stand-in with a numeric id (the snapshot reader's frames). A list that holds only
 * back-references to Refs (`EMPTY_LIST MEMOIZE MARK BINGET… APPENDS`, how torch's frames
 * lists are pickled) goes to `onRefList` in one tight loop instead of opcode by opcode.
 */
export class Ref {
  constructor(readonly id: number) {}
}

type StackItem = PyValue | typeof MARK;

export class Unpickler {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  /** Bytes consumed before `buf` starts. */
  private base = 0;
  private stack: StackItem[] = [];
  private marks: number[] = [];
  private memo: StackItem[] = [];
  private done = false;
  private result: PyValue = null;
  private protocol = 0;
  private readonly intern = new Map<string, string>();
  /** Memo index of the object at each stack position, set by MEMOIZE (checked before use). */
  private memoAt: number[] = [];
  private readonly onAppend: UnpicklerOptions['onAppend'];
  private readonly onAppends: UnpicklerOptions['onAppends'];
  private readonly onSetItems: UnpicklerOptions['onSetItems'];
  private readonly onRefList: UnpicklerOptions['onRefList'];

  constructor(opts: UnpicklerOptions = {}) {
    this.onRefList = opts.onRefList;
    this.onAppend = opts.onAppend;
    this.onAppends = opts.onAppends;
    this.onSetItems = opts.onSetItems;
  }

  /** Bytes read so far (decompressed). */
  get offset(): number {
    return this.base + this.pos;
  }

  get finished(): boolean {
    return this.done;
  }

  get pickleProtocol(): number {
    return this.protocol;
  }

  /** Puts `value` where the container at stack position `i` was, on the stack and in the memo. */
  private standIn(i: number, value: PyValue): void {
    const obj = this.stack[i];
    const idx = this.memoAt[i];
    if (idx !== undefined && this.memo[idx] === obj) this.memo[idx] = value;
    this.stack[i] = value;
  }

  /** Feeds the next chunk; parses every complete opcode in it. */
  feed(chunk: Uint8Array): void {
    if (this.done) {
      if (chunk.length) this.trailing();
      return;
    }
    const rest = this.buf.length - this.pos;
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    if (rest > 0) {
      // An opcode was cut at the chunk's edge. Finish it in a small joined buffer and go
      // on in the new chunk itself, rather than copying the whole chunk behind the tail.
      this.base += this.pos;
      const joined = Buffer.concat([this.buf.subarray(this.pos), c.subarray(0, 1 << 16)]);
      this.buf = joined;
      this.pos = 0;
      this.run(rest);
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- run() sets `done` at STOP; TypeScript keeps the narrowing from the top
      if (this.done) return;
      if (this.pos < rest) {
        // A value longer than the joined part (a very long string): join it all.
        this.buf = Buffer.concat([this.buf.subarray(this.pos, rest), c]);
        this.base += this.pos;
        this.pos = 0;
        this.run();
        return;
      }
      this.base += rest;
      this.pos -= rest;
    } else {
      this.base += this.buf.length;
      this.pos = 0;
    }
    this.buf = c;
    this.run();
  }

  /** Ends the input: the value, or an error saying the file stopped early. */
  end(): PyValue {
    if (!this.done) {
      throw new PickleError(
        `the pickle ends early after ${this.offset.toLocaleString('en-US')} bytes (no STOP opcode): the file is truncated, or was still being written`,
        'truncated',
        this.offset,
      );
    }
    return this.result;
  }

  private trailing(): void {
    // pickle.load stops at STOP and ignores what follows; so do we.
  }

  private fail(kind: PickleErrorKind, message: string, at: number): never {
    throw new PickleError(message, kind, this.base + at);
  }

  private popMark(at: number): StackItem[] {
    const m = this.marks.pop();
    if (m === undefined) this.fail('malformed', 'the pickle pops a mark that was never set', at);
    const items = this.stack.splice(m);
    return items;
  }

  private top(at: number): PyValue {
    const v = this.stack[this.stack.length - 1];
    if (v === undefined || v === MARK) this.fail('malformed', 'the pickle reads an empty stack', at);
    return v;
  }

  private pop(at: number): PyValue {
    const v = this.stack.pop();
    if (v === undefined || v === MARK) this.fail('malformed', 'the pickle reads an empty stack', at);
    return v;
  }

  private str(start: number, end: number): string {
    const s = this.buf.toString('utf8', start, end);
    if (end - start > INTERN_MAX) return s;
    const known = this.intern.get(s);
    if (known !== undefined) return known;
    if (this.intern.size < INTERN_LIMIT) this.intern.set(s, s);
    return s;
  }

  private memoize(v: StackItem, idx: number, at: number): void {
    if (idx > this.memo.length) this.fail('malformed', `the pickle stores memo entry ${idx} out of order`, at);
    this.memoAt[this.stack.length - 1] = idx;
    this.memo[idx] = v;
  }

  private get(idx: number, at: number): void {
    if (idx >= this.memo.length) this.fail('malformed', `the pickle refers to memo entry ${idx}, which it never stored`, at);
    this.stack.push(this.memo[idx] as StackItem);
  }

  private append(list: PyValue[], item: PyValue): void {
    if (this.onAppend) {
      const v = this.onAppend(list, item);
      if (v === SKIP) return;
      list.push(v);
    } else list.push(item);
  }

  private setItems(d: PyValue, items: StackItem[], at: number): void {
    if (d === null || typeof d !== 'object' || Array.isArray(d)) this.fail('malformed', 'the pickle sets items on something that is not a dict', at);
    const dict = d;
    for (let i = 0; i + 1 < items.length; i += 2) dict[this.key(items[i] as StackItem, at)] = items[i + 1] as PyValue;
  }

  private key(k: StackItem, at: number): string {
    if (typeof k === 'string') return k;
    if (typeof k === 'number' || typeof k === 'bigint' || typeof k === 'boolean' || k === null) return String(k);
    return this.fail('unsupported', 'the pickle has a dict key that is a list, tuple or dict; memory snapshots use text keys', at);
  }

  private int(start: number, n: number, at: number): number | bigint {
    const b = this.buf;
    if (n === 0) return 0;
    if (n <= 6) {
      let v = 0;
      for (let i = n - 1; i >= 0; i--) v = v * 256 + byteAt(b, start + i);
      if (byteAt(b, start + n - 1) & 0x80) v -= 2 ** (8 * n);
      return v;
    }
    if (n <= 8 && !(byteAt(b, start + n - 1) & 0x80)) {
      // Addresses and microsecond clocks: 6 to 8 bytes, positive, below 2^53.
      let hi = 0;
      for (let i = n - 1; i >= 4; i--) hi = hi * 256 + byteAt(b, start + i);
      if (hi < 2 ** 21) return hi * 4294967296 + b.readUInt32LE(start);
    }
    if (n > 64) this.fail('unsupported', `the pickle holds a ${n}-byte integer; memory snapshots hold 64-bit values at most`, at);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(byteAt(b, start + i));
    if (byteAt(b, start + n - 1) & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** Parses complete opcodes (those starting before `limit`); leaves `pos` at the first incomplete one. */
  private run(limit = Infinity): void {
    const b = this.buf;
    const len = b.length;
    const end = Math.min(len, limit);
    const stack = this.stack;
    let pos = this.pos;
    try {
      while (pos < end) {
        const at = pos;
        const op = byteAt(b, pos);
        switch (op) {
          case 0x80: {
            // PROTO
            if (pos + 2 > len) return;
            const p = byteAt(b, pos + 1);
            if (p > 5) this.fail('unsupported', `the pickle uses protocol ${p}, newer than this reader knows (2 to 5); update Membit`, at);
            this.protocol = p;
            pos += 2;
            break;
          }
          case 0x95: // FRAME: a size hint; the opcodes inside are read as they come
            if (pos + 9 > len) return;
            pos += 9;
            break;
          case 0x2e: {
            // STOP
            this.result = this.pop(at);
            this.done = true;
            pos += 1;
            this.stack = [];
            this.memo = [];
            this.intern.clear();
            return;
          }
          case 0x28: // MARK
            this.marks.push(stack.length);
            stack.push(MARK);
            pos += 1;
            break;
          case 0x30: // POP
            if (stack.pop() === MARK) this.marks.pop();
            pos += 1;
            break;
          case 0x31: // POP_MARK
            this.popMark(at).shift();
            pos += 1;
            break;
          case 0x32: // DUP
            stack.push(this.top(at));
            pos += 1;
            break;
          case 0x4e: // NONE
            stack.push(null);
            pos += 1;
            break;
          case 0x88: // NEWTRUE
            stack.push(true);
            pos += 1;
            break;
          case 0x89: // NEWFALSE
            stack.push(false);
            pos += 1;
            break;
          case 0x4a: // BININT
            if (pos + 5 > len) return;
            stack.push(b.readInt32LE(pos + 1));
            pos += 5;
            break;
          case 0x4b: // BININT1
            if (pos + 2 > len) return;
            stack.push(byteAt(b, pos + 1));
            pos += 2;
            break;
          case 0x4d: // BININT2
            if (pos + 3 > len) return;
            stack.push(b.readUInt16LE(pos + 1));
            pos += 3;
            break;
          case 0x8a: {
            // LONG1
            if (pos + 2 > len) return;
            const n = byteAt(b, pos + 1);
            if (pos + 2 + n > len) return;
            stack.push(this.int(pos + 2, n, at));
            pos += 2 + n;
            break;
          }
          case 0x8b: {
            // LONG4
            if (pos + 5 > len) return;
            const n = b.readInt32LE(pos + 1);
            if (n < 0) this.fail('malformed', 'the pickle has a negative length', at);
            if (n > 64) this.fail('unsupported', `the pickle holds a ${n}-byte integer; memory snapshots hold 64-bit values at most`, at);
            if (pos + 5 + n > len) return;
            stack.push(this.int(pos + 5, n, at));
            pos += 5 + n;
            break;
          }
          case 0x47: // BINFLOAT
            if (pos + 9 > len) return;
            stack.push(b.readDoubleBE(pos + 1));
            pos += 9;
            break;
          case 0x8c: {
            // SHORT_BINUNICODE
            if (pos + 2 > len) return;
            const n = byteAt(b, pos + 1);
            if (pos + 2 + n > len) return;
            stack.push(this.str(pos + 2, pos + 2 + n));
            pos += 2 + n;
            break;
          }
          case 0x58: // BINUNICODE
          case 0x8d: {
            // BINUNICODE8
            const head = op === 0x58 ? 5 : 9;
            if (pos + head > len) return;
            const n = op === 0x58 ? b.readUInt32LE(pos + 1) : Number(b.readBigUInt64LE(pos + 1));
            if (n > MAX_STRING) this.fail('unsupported', `the pickle holds a string of ${n.toLocaleString('en-US')} bytes; memory snapshots hold short names`, at);
            if (pos + head + n > len) return;
            stack.push(this.str(pos + head, pos + head + n));
            pos += head + n;
            break;
          }
          case 0x43: // SHORT_BINBYTES
          case 0x42: // BINBYTES
          case 0x8e: // BINBYTES8
          case 0x54: // BINSTRING
          case 0x55: {
            // SHORT_BINSTRING: bytes are kept as latin-1 text (snapshots hold none)
            const head = op === 0x43 || op === 0x55 ? 2 : op === 0x8e ? 9 : 5;
            if (pos + head > len) return;
            const n = head === 2 ? byteAt(b, pos + 1) : head === 9 ? Number(b.readBigUInt64LE(pos + 1)) : b.readUInt32LE(pos + 1);
            if (n > MAX_STRING) this.fail('unsupported', `the pickle holds ${n.toLocaleString('en-US')} bytes of binary data; memory snapshots hold none`, at);
            if (pos + head + n > len) return;
            stack.push(b.toString('latin1', pos + head, pos + head + n));
            pos += head + n;
            break;
          }
          case 0x5d: {
            // EMPTY_LIST; with MEMOIZE MARK (BINGET|LONG_BINGET)* APPENDS after it, a list of
            // back-references, read in one loop when they all name Refs.
            if (this.onRefList && b[pos + 1] === 0x94 && b[pos + 2] === 0x28) {
              const next = this.refList(pos + 3, len);
              if (next === -1) return; // incomplete: wait for more bytes
              if (next > 0) {
                pos = next;
                break;
              }
            }
            stack.push([]);
            pos += 1;
            break;
          }
          case 0x29: // EMPTY_TUPLE
            stack.push([]);
            pos += 1;
            break;
          case 0x7d: // EMPTY_DICT
            stack.push(Object.create(null) as PyDict);
            pos += 1;
            break;
          case 0x61: {
            // APPEND
            const item = this.pop(at);
            const list = this.top(at);
            if (!Array.isArray(list)) this.fail('malformed', 'the pickle appends to something that is not a list', at);
            this.append(list, item);
            pos += 1;
            break;
          }
          case 0x65: {
            // APPENDS: the items sit above the mark; no intermediate array (hot: every frames list)
            const m = this.marks.pop();
            if (m === undefined || m < 1) this.fail('malformed', 'the pickle pops a mark that was never set', at);
            const list = stack[m - 1];
            if (!Array.isArray(list)) this.fail('malformed', 'the pickle appends to something that is not a list', at);
            const r = this.onAppends ? this.onAppends(list, stack, m + 1, stack.length) : undefined;
            if (r === undefined) {
              const onAppend = this.onAppend;
              for (let k = m + 1; k < stack.length; k++) {
                const it = stack[k] as PyValue;
                if (onAppend) {
                  const v = onAppend(list, it);
                  if (v !== SKIP) list.push(v);
                } else list.push(it);
              }
            }
            stack.length = m;
            if (r !== undefined && r !== SKIP) {
              if (list.length) this.fail('malformed', 'a list was replaced after items were added to it', at);
              this.standIn(m - 1, r);
            }
            pos += 1;
            break;
          }
          case 0x6c: {
            // LIST
            const items = this.popMark(at);
            items.shift();
            const list: PyValue[] = [];
            for (const it of items) this.append(list, it as PyValue);
            stack.push(list);
            pos += 1;
            break;
          }
          case 0x74: {
            // TUPLE
            const items = this.popMark(at);
            items.shift();
            stack.push(items as PyValue[]);
            pos += 1;
            break;
          }
          case 0x85: // TUPLE1
          case 0x86: // TUPLE2
          case 0x87: {
            // TUPLE3
            const n = op - 0x84;
            if (stack.length < n) this.fail('malformed', 'the pickle reads an empty stack', at);
            const items = stack.splice(stack.length - n) as PyValue[];
            if (items.some((x) => (x as unknown) === MARK)) this.fail('malformed', 'the pickle builds a tuple across a mark', at);
            stack.push(items);
            pos += 1;
            break;
          }
          case 0x73: {
            // SETITEM
            const v = this.pop(at);
            const k = this.pop(at);
            this.setItems(this.top(at), [k, v], at);
            pos += 1;
            break;
          }
          case 0x75: {
            // SETITEMS: keys and values sit above the mark (hot: every trace entry)
            const m = this.marks.pop();
            if (m === undefined || m < 1) this.fail('malformed', 'the pickle pops a mark that was never set', at);
            const d = stack[m - 1];
            if (d === null || typeof d !== 'object' || Array.isArray(d)) this.fail('malformed', 'the pickle sets items on something that is not a dict', at);
            const r = this.onSetItems ? this.onSetItems(d, stack, m + 1, stack.length) : undefined;
            if (r === undefined) {
              for (let k = m + 1; k + 1 < stack.length; k += 2) {
                const key = stack[k];
                d[typeof key === 'string' ? key : this.key(key as StackItem, at)] = stack[k + 1] as PyValue;
              }
            }
            stack.length = m;
            if (r !== undefined) this.standIn(m - 1, r);
            pos += 1;
            break;
          }
          case 0x64: {
            // DICT
            const items = this.popMark(at);
            items.shift();
            const d = Object.create(null) as PyDict;
            this.setItems(d, items, at);
            stack.push(d);
            pos += 1;
            break;
          }
          case 0x94: // MEMOIZE
            this.memoize(this.top(at), this.memo.length, at);
            pos += 1;
            break;
          case 0x71: // BINPUT
            if (pos + 2 > len) return;
            this.memoize(this.top(at), byteAt(b, pos + 1), at);
            pos += 2;
            break;
          case 0x72: // LONG_BINPUT
            if (pos + 5 > len) return;
            this.memoize(this.top(at), b.readUInt32LE(pos + 1), at);
            pos += 5;
            break;
          case 0x68: // BINGET
            if (pos + 2 > len) return;
            this.get(byteAt(b, pos + 1), at);
            pos += 2;
            break;
          case 0x6a: // LONG_BINGET
            if (pos + 5 > len) return;
            this.get(b.readUInt32LE(pos + 1), at);
            pos += 5;
            break;
          default: {
            const name = CALLS[op];
            if (name) this.refuse(name, at);
            this.fail(
              'unsupported',
              `the pickle uses opcode 0x${op.toString(16).padStart(2, '0')}${op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : ''}, which plain memory-snapshot data never needs`,
              at,
            );
          }
        }
      }
    } finally {
      this.pos = pos;
    }
  }

  /**
   * The fast path for lists of back-references starting at `q` (after EMPTY_LIST MEMOIZE
   * MARK): the position after APPENDS when taken, 0 to read opcode by opcode, -1 when the
   * bytes end first. Only the memo indices are hashed here; the hook resolves them to
   * Refs only for a list it has not seen.
   */
  private refList(q: number, len: number): number {
    const b = this.buf;
    const start = q;
    let h1 = 0x811c9dc5;
    let h2 = 0;
    let n = 0;
    for (;;) {
      if (q >= len) return -1;
      const op = byteAt(b, q);
      let idx: number;
      if (op === 0x68) {
        if (q + 2 > len) return -1;
        idx = byteAt(b, q + 1);
        q += 2;
      } else if (op === 0x6a) {
        if (q + 5 > len) return -1;
        idx = (byteAt(b, q + 1) | (byteAt(b, q + 2) << 8) | (byteAt(b, q + 3) << 16) | (byteAt(b, q + 4) << 24)) >>> 0;
        q += 5;
      } else if (op === 0x65) break;
      else return 0;
      if (++n >= 1000) return 0;
      h1 = Math.imul(h1 ^ idx, 0x01000193);
      h2 = Math.imul(h2 + idx, 0x9e3779b1) ^ (h2 >>> 13);
    }
    const hook = this.onRefList;
    if (n === 0 || !hook) return 0;
    this.refStart = start;
    const r = hook(h1, h2 ^ n, n, this.resolveRefs);
    if (r === undefined) return 0;
    this.stack.push(r);
    this.memoize(r, this.memo.length, q);
    return q + 1;
  }

  private refStart = 0;

  /** The Refs' ids of the back-reference list at `refStart` (see refList), or -1. */
  private readonly resolveRefs = (ids: Int32Array): number => {
    const b = this.buf;
    const memo = this.memo;
    let q = this.refStart;
    let n = 0;
    for (;;) {
      const op = byteAt(b, q);
      let idx: number;
      if (op === 0x68) {
        idx = byteAt(b, q + 1);
        q += 2;
      } else if (op === 0x6a) {
        idx = b.readUInt32LE(q + 1);
        q += 5;
      } else return n;
      const v = memo[idx];
      if (!(v instanceof Ref) || n === ids.length) return -1;
      ids[n++] = v.id;
    }
  };

  /** Names what the file asked for when it can (the module and name pushed before STACK_GLOBAL). */
  private refuse(name: string, at: number): never {
    let what = '';
    if (name === 'GLOBAL') {
      const b = this.buf;
      const nl1 = b.indexOf(0x0a, at + 1);
      const nl2 = nl1 >= 0 ? b.indexOf(0x0a, nl1 + 1) : -1;
      if (nl2 > 0 && nl2 - at < 512) what = ` ${b.toString('latin1', at + 1, nl1)}.${b.toString('latin1', nl1 + 1, nl2)}`;
    } else if (name === 'STACK_GLOBAL') {
      const [m, n] = this.stack.slice(-2);
      if (typeof m === 'string' && typeof n === 'string') what = ` ${m}.${n}`;
    }
    this.fail(
      'refused',
      `the pickle asks to import or call a Python object (${name}${what}). A PyTorch memory snapshot holds only plain data, so Membit refuses this file and ran nothing from it; it is not a memory snapshot, or it was altered.`,
      at,
    );
  }
}

/** Reads a whole in-memory pickle (tests, small files). */
export function unpickle(data: Uint8Array, opts: UnpicklerOptions = {}): PyValue {
  const u = new Unpickler(opts);
  u.feed(data);
  return u.end();
}
