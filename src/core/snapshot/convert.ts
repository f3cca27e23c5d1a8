/**
 * A compacted snapshot (see read.ts) as a `membit.report/1` document: the allocated and
 * reserved timeline replayed from the trace, the peak and its largest live blocks with
 * their frames, bytes live at the peak per source line (the innermost frame in the
 * workspace), out-of-memory events, and the segments at the dump.
 *
 * The replay follows the harness's (kernels/membit/profile/allocator.py) so that a
 * snapshot of a harness run gives the harness's own peak and holders: blocks are the
 * requested size rounded up to 512 bytes, a block counts as freed at `free_requested`,
 * blocks alive at the dump take their exact size from the snapshot's segments, and blocks
 * freed without a recorded allocation were alive before the trace began.
 */
import { bucketMaxima, itemAt } from '../arrays';
import type { Frame, Holder, LineEntry, OomEvent, Report, ReportSource, SegmentRow, SegmentsView } from '../report/types';
import { formatBytes as fmt } from '../units';
import type { PyDict, PyValue } from './pickle';
import { framesValue, OTHER_ACTION, stackFrames, type SnapshotData } from './read';
import type { PathMapper } from './paths';

const ROUND = 512;
const A = { alloc: 0, freeRequested: 1, freeCompleted: 2, segAlloc: 3, segFree: 4, segMap: 5, segUnmap: 6, snapshot: 7, oom: 8, free: 9 };

export type SnapshotSource = Required<ReportSource>;

/** The report with the optional fields a snapshot adds. */
export type SnapshotReport = Report & { source: SnapshotSource; segments: SegmentsView; oom_events: OomEvent[] };

export interface ConvertOptions {
  mapPath: PathMapper;
  /** The snapshot's file name (for the run's label). */
  file: string;
  /** Absolute workspace folder that report paths are relative to. */
  root: string;
  /** File modification time, for `started` when the trace has no clock. */
  mtimeMs?: number;
  /** Device to report; default: the one with the most trace entries (or reserved bytes). */
  device?: number;
  rank?: number | null;
  topHolders?: number;
  timelinePoints?: number;
  membitVersion?: string;
}

interface Block {
  addr: number;
  size: number;
  allocIdx: number;
  freeIdx: number;
  stack: number;
  /** Frame ids for blocks known only from the segments. */
  frames: number[] | null;
}

function n(v: PyValue | undefined): number {
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0;
}

function roundBlock(size: number): number {
  return Math.max(ROUND, Math.ceil(size / ROUND) * ROUND);
}

const LIVE_STATES = new Set(['active_allocated', 'active_awaiting_free', 'active_pending_free']);

export function snapshotToReport(data: SnapshotData, opts: ConvertOptions): SnapshotReport {
  const { trace, frames } = data;
  const notes: string[] = [];
  const segments = (Array.isArray(data.top['segments']) ? data.top['segments'] : []).filter((s): s is PyDict => !!s && typeof s === 'object' && !Array.isArray(s));

  // Which device: the one with the most entries, else the most reserved.
  const counts = new Uint32Array(65536);
  for (const dev of trace.device.subarray(0, trace.length)) counts[dev] = (counts[dev] ?? 0) + 1;
  const perDevice = new Map<number, number>();
  counts.forEach((c, dev) => {
    if (c) perDevice.set(dev, c);
  });
  const reservedBy = new Map<number, number>();
  for (const s of segments) reservedBy.set(n(s['device']), (reservedBy.get(n(s['device'])) ?? 0) + n(s['total_size']));
  const devices = new Set([...perDevice.keys(), ...reservedBy.keys()]);
  let device = opts.device;
  device ??= [...devices].sort((a, b) => (perDevice.get(b) ?? 0) - (perDevice.get(a) ?? 0) || (reservedBy.get(b) ?? 0) - (reservedBy.get(a) ?? 0))[0] ?? 0;
  if (devices.size > 1) notes.push(`the snapshot covers devices ${[...devices].sort().join(', ')}; this report shows device ${device}`);
  for (const [a, c] of trace.unknownActions) notes.push(`${c} trace entries with action "${a}", unknown to this version of Membit, were skipped`);

  // The dump's state: live blocks and segments of the device.
  const finalBlocks = new Map<number, { size: number; frames: number[] }>();
  const segRows: SegmentRow[] = [];
  let finalReserved = 0;
  let legacyHistory = false;
  for (const s of segments) {
    if (n(s['device']) !== device) continue;
    const total = n(s['total_size']);
    finalReserved += total;
    let addr = n(s['address']);
    const row: SegmentRow = { address: addr, stream: n(s['stream']), type: typeof s['segment_type'] === 'string' ? s['segment_type'] : '', total, allocated: 0, requested: 0, free: 0, largest_free: 0, blocks: 0 };
    for (const b of Array.isArray(s['blocks']) ? s['blocks'] : []) {
      if (!b || typeof b !== 'object' || Array.isArray(b)) continue;
      const size = n(b['size']);
      // Older snapshots leave block addresses implicit: blocks tile their segment in order.
      const baddr = b['address'] !== undefined ? n(b['address']) : addr;
      const state = typeof b['state'] === 'string' ? b['state'] : '';
      row.blocks++;
      if (LIVE_STATES.has(state)) {
        let fr: number[];
        let requested: number;
        if (b['frames'] !== undefined) {
          fr = framesValue(data, b['frames']);
          requested = b['requested_size'] !== undefined ? n(b['requested_size']) : size;
        } else if (Array.isArray(b['history']) && b['history'][0] && typeof b['history'][0] === 'object' && !Array.isArray(b['history'][0])) {
          legacyHistory = true;
          const h = b['history'][0];
          fr = framesValue(data, h['frames']);
          requested = n(h['real_size']);
        } else {
          fr = [];
          requested = b['requested_size'] !== undefined ? n(b['requested_size']) : size;
        }
        row.allocated += size;
        row.requested += requested;
        finalBlocks.set(baddr, { size, frames: fr });
      } else {
        row.free += size;
        row.largest_free = Math.max(row.largest_free, size);
      }
      addr = baddr + size;
    }
    segRows.push(row);
  }
  if (legacyHistory) notes.push('an older snapshot format (block history): frames come from each block\'s first history record');

  // Replay the device's trace.
  // Rows of the device's known entries (all rows, in the usual one-device snapshot).
  let rows: Int32Array | Uint32Array;
  let count = 0;
  for (let i = 0; i < trace.length; i++) if (trace.device[i] === device && trace.action[i] !== OTHER_ACTION) count++;
  if (count === trace.length) rows = identity(count);
  else {
    rows = new Int32Array(count);
    let k = 0;
    for (let i = 0; i < trace.length; i++) if (trace.device[i] === device && trace.action[i] !== OTHER_ACTION) rows[k++] = i;
  }
  const nEv = rows.length;
  const history = nEv > 0;
  const open = new Map<number, Block>();
  const blocks: Block[] = [];
  const initial: Block[] = [];
  const oomAt: number[] = [];
  const dAlloc = new Float64Array(nEv);
  const dRes = new Float64Array(nEv);
  for (let k = 0; k < nEv; k++) {
    const i = itemAt(rows, k);
    const act = itemAt(trace.action, i);
    const addr = itemAt(trace.addr, i);
    // The change in allocated bytes at this event.
    let d = 0;
    if (act === A.alloc) {
      const b: Block = { addr, size: roundBlock(itemAt(trace.size, i)), allocIdx: k, freeIdx: nEv, stack: itemAt(trace.stack, i), frames: null };
      const prev = open.get(addr);
      if (prev) {
        // A free we never saw (the history's ring buffer dropped it): close it here.
        prev.freeIdx = k;
        d -= prev.size;
      }
      open.set(addr, b);
      blocks.push(b);
      d += b.size;
    } else if (act === A.freeRequested || act === A.free || act === A.freeCompleted) {
      const b = open.get(addr);
      if (b) {
        open.delete(addr);
        b.freeIdx = k;
        d -= b.size;
      } else if (act !== A.freeCompleted) {
        // Allocated before the trace began; its size comes from this entry.
        const size = roundBlock(itemAt(trace.size, i));
        initial.push({ addr, size, allocIdx: -1, freeIdx: k, stack: itemAt(trace.stack, i), frames: null });
        d -= size;
      }
    } else if (act === A.segAlloc || act === A.segMap) dRes[k] = itemAt(trace.size, i);
    else if (act === A.segFree || act === A.segUnmap) dRes[k] = -itemAt(trace.size, i);
    else if (act === A.oom) oomAt.push(k);
    dAlloc[k] = d;
  }
  for (const [addr, b] of open) {
    const fb = finalBlocks.get(addr);
    if (fb && fb.size >= b.size) {
      dAlloc[b.allocIdx] = itemAt(dAlloc, b.allocIdx) + (fb.size - b.size);
      b.size = fb.size;
    }
  }
  for (const [addr, fb] of finalBlocks) {
    if (!open.has(addr)) initial.push({ addr, size: fb.size, allocIdx: -1, freeIdx: nEv, stack: -1, frames: fb.frames });
  }
  const all = initial.concat(blocks);
  let initialAllocated = 0;
  for (const b of initial) initialAllocated += b.size;
  let sumRes = 0;
  for (const x of dRes) sumRes += x;
  const allocated = new Float64Array(nEv);
  const reserved = new Float64Array(nEv);
  let a = initialAllocated;
  let r = finalReserved - sumRes;
  let peakIdx = -1;
  let peakAlloc = a;
  let peakRes = r;
  for (let k = 0; k < nEv; k++) {
    a += itemAt(dAlloc, k);
    r += itemAt(dRes, k);
    allocated[k] = a;
    reserved[k] = r;
    if (peakIdx < 0 || a > peakAlloc) {
      peakIdx = k;
      peakAlloc = a;
    }
    if (r > peakRes) peakRes = r;
  }
  const allocatedAt = (k: number) => (k < 0 ? initialAllocated : itemAt(allocated, k));
  const reservedAt = (k: number) => (k < 0 ? finalReserved - sumRes : itemAt(reserved, k));
  const liveAt = (k: number) => all.filter((b) => b.allocIdx <= k && k < b.freeIdx);
  if (!history) {
    notes.push(
      'the snapshot has no allocation history (it was dumped without torch.cuda.memory._record_memory_history), so there is no timeline: figures are the memory at the moment of the dump',
    );
  }

  // Clock: the allocator's time_us is wall-clock microseconds; without it, entry order.
  const t0 = nEv > 0 ? itemAt(trace.time, itemAt(rows, 0)) : NaN;
  const timed = Number.isFinite(t0);
  if (history && !timed) notes.push('the trace has no timestamps: the timeline is in trace entries, not milliseconds');
  const tMs = (k: number) => (timed ? (itemAt(trace.time, itemAt(rows, k)) - t0) / 1000 : k);

  // Frames.
  // Frame ids come from this snapshot's own frame table.
  const fileOf = (fid: number) => itemAt(frames.file, fid);
  const lineOf = (fid: number) => itemAt(frames.line, fid);
  const nameOf = (fid: number) => itemAt(frames.name, fid);
  const frameOf = (fid: number): Frame => ({ file: fileOf(fid), line: lineOf(fid), name: nameOf(fid) });
  const framesOfBlock = (b: Block) => (b.frames ?? (b.stack >= 0 ? stackFrames(data.stacks, b.stack) : []));
  const mapped = new Map<number, string | null>();
  const mapFrame = (fid: number): string | null => {
    let m = mapped.get(fid);
    if (m === undefined) mapped.set(fid, (m = opts.mapPath(fileOf(fid))));
    return m;
  };
  const userFrames = (ids: number[], limit = 6): Frame[] => {
    const user: Frame[] = [];
    for (const fid of ids) {
      const m = mapFrame(fid);
      if (m !== null) user.push({ file: m, line: lineOf(fid), name: nameOf(fid) });
      if (user.length >= limit) break;
    }
    if (user.length) return user;
    // No workspace frame: the innermost Python frames still say where.
    return ids.filter((fid) => fileOf(fid).endsWith('.py')).slice(0, 3).map(frameOf);
  };
  /** The innermost frame that maps into the workspace, with its mapped file. */
  const innermostMapped = (ids: number[]): { fid: number; file: string } | undefined => {
    for (const fid of ids) {
      const file = mapFrame(fid);
      if (file !== null) return { fid, file };
    }
    return undefined;
  };
  let stacksKind: SnapshotSource['stacks'] = 'none';
  for (const f of frames.file) {
    stacksKind = 'python';
    if (!f.endsWith('.py') && !f.startsWith('<')) {
      stacksKind = 'all';
      break;
    }
  }
  // Categories only where the frames make them certain.
  const category = (ids: number[]): Holder['category'] => {
    for (const fid of ids) {
      const file = fileOf(fid);
      const name = nameOf(fid);
      if (name === '_init_group' && /[\\/]torch[\\/]optim[\\/]/.test(file)) return 'optimizer';
      if (name.includes('AccumulateGrad')) return 'grad';
    }
    return 'other';
  };

  const topN = opts.topHolders ?? 20;
  const holdersOf = (live: Block[]): Holder[] =>
    [...live]
      .sort((x, y) => y.size - x.size)
      .slice(0, topN)
      .map((b) => {
        const ids = framesOfBlock(b);
        return { bytes: b.size, category: category(ids), frames: userFrames(ids), saved_at: null, shape: null, dtype: null };
      });

  // The peak: the replayed maximum, or the dump's state without history.
  const peakLive = history ? liveAt(peakIdx) : all;
  const peakBytes = history ? allocatedAt(peakIdx) : initialAllocated;
  const sums = { optimizer: 0, grad: 0 };
  const lines = new Map<string, LineEntry>();
  for (const b of peakLive) {
    const ids = framesOfBlock(b);
    const cat = category(ids);
    if (cat === 'optimizer') sums.optimizer += b.size;
    else if (cat === 'grad') sums.grad += b.size;
    const inner = innermostMapped(ids);
    if (inner === undefined) continue;
    const { fid, file } = inner;
    const line = lineOf(fid);
    const key = `${file}:${line}`;
    let e = lines.get(key);
    if (!e) lines.set(key, (e = { file, line, func: nameOf(fid), module: null, saved_bytes: 0, mask_bytes: 0, at_peak_bytes: 0, tensors: 0, ops: [] }));
    e.saved_bytes += b.size;
    e.at_peak_bytes += b.size;
    e.tensors++;
  }
  const tracked = sums.optimizer + sums.grad;

  // OOM events.
  const oomEvents: OomEvent[] = oomAt.map((k) => {
    const i = itemAt(rows, k);
    const stack = itemAt(trace.stack, i);
    return {
      t_ms: history ? tMs(k) : null,
      requested_bytes: itemAt(trace.size, i),
      device_free: trace.deviceFree.get(i) ?? null,
      allocated: allocatedAt(k - 1),
      reserved: reservedAt(k - 1),
      frames: userFrames(stack >= 0 ? stackFrames(data.stacks, stack) : []),
    };
  });
  let oom: Report['oom'] = null;
  const lastOom = oomAt.at(-1);
  const ev = oomEvents.at(-1);
  if (lastOom !== undefined && ev) {
    const live = liveAt(lastOom - 1);
    const oomLines = new Map<string, { file: string; line: number; bytes: number }>();
    for (const b of live) {
      const inner = innermostMapped(framesOfBlock(b));
      if (inner === undefined) continue;
      const { fid, file } = inner;
      const key = `${file}:${lineOf(fid)}`;
      const l = oomLines.get(key) ?? { file, line: lineOf(fid), bytes: 0 };
      l.bytes += b.size;
      oomLines.set(key, l);
    }
    oom = {
      message: `CUDA out of memory: tried to allocate ${fmt(ev.requested_bytes)}${ev.device_free !== null ? ` with ${fmt(ev.device_free)} free on the device` : ''}, ${fmt(ev.allocated)} allocated, ${fmt(ev.reserved)} reserved by PyTorch`,
      requested_bytes: ev.requested_bytes,
      device_free: ev.device_free,
      device_total: null,
      allocated: ev.allocated,
      reserved: ev.reserved,
      step: 0,
      phase: 'other',
      top: holdersOf(live),
      lines: [...oomLines.values()].sort((x, y) => y.bytes - x.bytes).slice(0, 50),
    };
  }

  // Timeline: at most `timelinePoints`, keeping each bucket's highest point so peaks survive.
  const limit = opts.timelinePoints ?? 20000;
  const keep = bucketMaxima(allocated, limit);

  const lineList = [...lines.values()].sort((x, y) => y.saved_bytes - x.saved_bytes);
  const fileBytes = new Map<string, number>();
  for (const l of lineList) fileBytes.set(l.file, (fileBytes.get(l.file) ?? 0) + l.saved_bytes);
  const script = [...fileBytes.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] ?? opts.file;

  const startedMs = timed && t0 > 1.4e15 && t0 < Date.now() * 1000 + 86_400e6 ? t0 / 1000 : (opts.mtimeMs ?? Date.now());
  const lastT = nEv > 0 ? itemAt(trace.time, itemAt(rows, nEv - 1)) : NaN;
  const segItems = [...segRows].sort((x, y) => y.free - x.free || y.total - x.total).slice(0, 500);
  const segView: SegmentsView = {
    reserved: segRows.reduce((s, x) => s + x.total, 0),
    allocated: segRows.reduce((s, x) => s + x.allocated, 0),
    requested: segRows.reduce((s, x) => s + x.requested, 0),
    free: segRows.reduce((s, x) => s + x.free, 0),
    largest_free: segRows.reduce((s, x) => Math.max(s, x.largest_free), 0),
    count: segRows.length,
    items: segItems,
  };
  if (!history && segRows.length === 0) notes.push('the snapshot holds no segments for this device: nothing was allocated when it was dumped');
  const errorAt = ev?.frames.find((f) => !f.file.startsWith('/'));

  return {
    schema: 'membit.report/1',
    run: {
      id: `snapshot-${opts.file.replace(/[^A-Za-z0-9._-]/g, '_')}`,
      script,
      argv: [],
      variant: 'baseline',
      target: { kind: 'local', host: null },
      device: { name: `CUDA device ${device}`, type: 'cuda', index: device, total_bytes: null, capability: null },
      python: '',
      torch: 'unknown',
      membit: opts.membitVersion ?? '',
      started: new Date(startedMs).toISOString(),
      duration_s: timed && Number.isFinite(lastT) ? (lastT - t0) / 1e6 : 0,
      steps: 0,
      warmup: 0,
      steps_requested: 0,
      status: oom ? 'oom' : 'ok',
      error: oom ? oom.message : null,
      error_at: errorAt ? { file: errorAt.file, line: errorAt.line } : null,
      root: opts.root,
      pid: 0,
      patched: [],
      skipped: [],
      notes,
    },
    summary: {
      peak_allocated: peakBytes,
      peak_reserved: history ? peakRes : finalReserved,
      device_used_peak: null,
      params: 0,
      buffers: 0,
      grads: 0,
      optimizer_state: 0,
      saved_bytes: 0,
      mask_bytes: 0,
      saved_outside_modules: 0,
      params_at_peak: 0,
      buffers_at_peak: 0,
      grads_at_peak: sums.grad,
      optimizer_state_at_peak: sums.optimizer,
      activations_at_peak: 0,
      masks_at_peak: 0,
      unattributed_at_peak: peakBytes - tracked,
      tracked_at_peak: tracked,
      step_time_s: null,
      samples_per_s: null,
      batch_size: null,
    },
    lines: lineList,
    modules: [],
    sites: [],
    timeline: history
      ? {
          t_ms: keep.map(tMs),
          allocated: keep.map((k) => itemAt(allocated, k)),
          reserved: keep.map((k) => Math.max(0, itemAt(reserved, k))),
          device_used: [],
          phase: [],
        }
      : null,
    peak: { t_ms: history ? tMs(peakIdx) : null, step: null, phase: null, source: 'allocator', replay_bytes: peakBytes, top: holdersOf(peakLive) },
    oom,
    source: { kind: 'snapshot', files: [opts.file], stacks: stacksKind, history, entries: nEv, device, rank: opts.rank ?? null },
    segments: segView,
    oom_events: oomEvents,
  };
}

function identity(n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
