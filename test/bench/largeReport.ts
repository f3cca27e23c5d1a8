/**
 * A generated `membit.report/1` report of a chosen size (default 50 MB), for the
 * large-report benchmarks: many line, module and site entries and a long CUDA-style
 * allocator timeline. Paths point at samples/gpt_tiny.py lines (the real fixture's
 * lines come first and hold the most), so the overlays apply to that file.
 *
 * Pure and deterministic: the same options give the same text.
 */
import fixture from '../fixtures/reports/gpt_tiny_cpu_baseline.json';
import type { Holder, LineEntry, ModuleEntry, Phase, Report, SiteEntry, Timeline } from '../../src/core/report/types';
import { itemAt } from '../../src/core/arrays';

export interface LargeReportOptions {
  /** Target size of the JSON text in bytes; the result lands within about 1%. */
  targetBytes?: number;
  /** run.root (the folder paths are relative to). */
  root?: string;
  /** Share of the bytes spent on the timeline (the rest: lines, modules, sites). */
  timelineShare?: number;
  seed?: number;
}

export interface LargeReport {
  report: Report;
  text: string;
  bytes: number;
  counts: { lines: number; modules: number; sites: number; timeline: number };
}

export const MB = 1_000_000;

/** mulberry32: a small seeded PRNG, so the report is the same on every machine. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GPT_LINES: number[] = [...new Set((fixture.lines as { line: number }[]).map((l) => l.line))];
const GPT_FILE = 'gpt_tiny.py';
/** Lines of gpt_tiny.py that anything may point at (the file has 203 lines). */
const GPT_MAX_LINE = 200;
const OPS = ['addmm', 'gelu', 'dropout', 'softmax', 'layer_norm', 'bmm', 'mul', 'view', 'native_dropout', 'scaled_dot_product_attention'];
const MODULE_TYPES = ['Block', 'CausalSelfAttention', 'Linear', 'Dropout', 'LayerNorm', 'MLP', 'GELU', 'Embedding'];
const SITE_KINDS: SiteEntry['kind'][] = ['dropout', 'dropout-call', 'attn-dropout', 'fused-attn-dropout'];
const GiB = 1024 ** 3;

function lineEntry(r: () => number, i: number): LineEntry {
  // The first entries are the fixture's real gpt_tiny.py lines, largest first, so the
  // overlays have something clearly above the heat thresholds; the rest spread over the
  // file and a few generated library files.
  const real = i < GPT_LINES.length;
  const inGpt = real || i % 4 === 0;
  const file = inGpt ? GPT_FILE : `models/layers_${String(i % 97).padStart(2, '0')}.py`;
  const line = real ? itemAt(GPT_LINES, i) : inGpt ? 1 + (i % GPT_MAX_LINE) : 1 + Math.floor(r() * 5000);
  const saved = real ? Math.round((2.5 - i * 0.15) * GiB) : Math.floor(r() * 4 * 1024 * 1024) * 4;
  const mask = i % 3 === 0 ? Math.floor(saved / 8) : 0;
  const nOps = 1 + (i % 3);
  const ops = Array.from({ length: nOps }, (_, k) => ({ op: itemAt(OPS, (i + k) % OPS.length), bytes: Math.floor(saved / nOps), count: 1 + ((i + k) % 7) }));
  return {
    file,
    line,
    func: inGpt ? 'forward' : `layer_fn_${i % 211}`,
    module: i % 5 === 0 ? null : `h.${i % 48}.mlp.c_fc`,
    saved_bytes: saved,
    mask_bytes: mask,
    at_peak_bytes: Math.floor(saved * 0.9),
    tensors: 1 + (i % 9),
    ops,
  };
}

function moduleEntry(r: () => number, i: number): ModuleEntry {
  const layer = Math.floor(i / 8);
  const type = itemAt(MODULE_TYPES, i % MODULE_TYPES.length);
  const params = Math.floor(r() * 64 * 1024 * 1024) * 2;
  const saved = Math.floor(r() * 32 * 1024 * 1024) * 4;
  return {
    path: i === 0 ? '' : `h.${layer}.${type.toLowerCase()}_${i % 8}`,
    type,
    defined_at: { file: GPT_FILE, line: 1 + ((i * 7) % GPT_MAX_LINE) },
    created_at: i % 11 === 0 ? null : { file: GPT_FILE, line: 1 + ((i * 13) % GPT_MAX_LINE) },
    params,
    grads: params,
    saved_bytes: saved,
    mask_bytes: i % 4 === 0 ? Math.floor(saved / 8) : 0,
    at_peak_bytes: Math.floor(saved * 0.8),
    fwd_ms: i % 6 === 0 ? null : Math.round(r() * 50_000) / 1000,
    calls: 1 + (i % 4),
  };
}

function siteEntry(r: () => number, i: number): SiteEntry {
  const elements = Math.floor(r() * 16 * 1024 * 1024);
  return {
    kind: itemAt(SITE_KINDS, i % SITE_KINDS.length),
    file: GPT_FILE,
    line: 1 + ((i * 17) % GPT_MAX_LINE),
    module: i % 7 === 0 ? null : `h.${i % 48}.attn.attn_dropout`,
    elements,
    mask_bytes: elements,
    saving_if_packed: elements - Math.ceil(elements / 8),
    calls: 1 + (i % 3),
  };
}

/**
 * A CUDA-style allocator history: steps of forward (activations pile up), backward
 * (they are freed while gradients appear) and optimizer, with allocator noise.
 */
function timeline(r: () => number, points: number, base: number, activations: number): Timeline {
  const t_ms = new Array<number>(points);
  const allocated = new Array<number>(points);
  const reserved = new Array<number>(points);
  const device_used = new Array<number | null>(points);
  const phase = new Array<Phase>(points);
  const perStep = 20_000;
  let t = 0;
  let res = base;
  for (let i = 0; i < points; i++) {
    const s = (i % perStep) / perStep;
    let p: Phase;
    let level: number;
    if (s < 0.45) {
      p = 'forward';
      level = s / 0.45;
    } else if (s < 0.9) {
      p = 'backward';
      level = 1 - (s - 0.45) / 0.45;
    } else {
      p = 'optimizer';
      level = 0.05;
    }
    t += 0.001 + Math.floor(r() * 20) / 1000;
    const a = base + Math.floor(level * activations) + Math.floor(r() * 64) * 512 * 1024;
    res = Math.max(res, a + 256 * 1024 * 1024);
    t_ms[i] = Math.round(t * 1000) / 1000;
    allocated[i] = a;
    reserved[i] = res;
    device_used[i] = i % 1000 === 999 ? null : res + 600 * 1024 * 1024;
    phase[i] = p;
  }
  return { t_ms, allocated, reserved, device_used, phase };
}

function holder(i: number, bytes: number): Holder {
  const line = itemAt(GPT_LINES, i % GPT_LINES.length);
  return {
    bytes,
    category: i % 3 === 0 ? 'mask' : 'activation',
    frames: [
      { file: GPT_FILE, line, name: 'forward' },
      { file: GPT_FILE, line: 105, name: 'forward' },
    ],
    saved_at: { file: GPT_FILE, line },
    shape: [32, 1024, 4096],
    dtype: 'bfloat16',
  };
}

function sum(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s;
}

export function generateLargeReport(opts: LargeReportOptions = {}): LargeReport {
  const { targetBytes = 50 * MB, root = '/tmp/ws', timelineShare = 0.85, seed = 0x6d656d } = opts;
  const r = rng(seed);
  // Sizes per entry, measured on samples of the generated entries.
  const perLine = JSON.stringify(lineEntry(rng(1), 1000)).length + 1;
  const perModule = JSON.stringify(moduleEntry(rng(1), 1000)).length + 1;
  const perSite = JSON.stringify(siteEntry(rng(1), 1000)).length + 1;
  const entriesBytes = targetBytes * (1 - timelineShare);
  const nLines = Math.max(GPT_LINES.length, Math.floor((entriesBytes * 0.6) / perLine));
  const nModules = Math.max(1, Math.floor((entriesBytes * 0.3) / perModule));
  const nSites = Math.max(1, Math.floor((entriesBytes * 0.1) / perSite));

  const lines = Array.from({ length: nLines }, (_, i) => lineEntry(r, i));
  const modules = Array.from({ length: nModules }, (_, i) => moduleEntry(r, i));
  const sites = Array.from({ length: nSites }, (_, i) => siteEntry(r, i));

  const savedBytes = sum(lines.map((l) => l.saved_bytes));
  const maskBytes = sum(lines.map((l) => l.mask_bytes));
  const params = 6 * GiB;
  const grads = params;
  const optimizerState = 2 * params;
  const base = params + grads + optimizerState;
  const activations = 20 * GiB;

  const t0 = fixture as unknown as Report;
  const run: Report['run'] = {
    ...t0.run,
    id: '20261122-120000-000000',
    argv: ['--steps', '50', '--batch-size', '32', '--seq-len', '1024', '--device', 'cuda'],
    device: { name: 'NVIDIA H100 80GB HBM3', type: 'cuda', index: 0, total_bytes: 85_520_809_984, capability: '9.0' },
    started: '2026-11-22T12:00:00+00:00',
    duration_s: 812.5,
    steps: 50,
    warmup: 2,
    steps_requested: 50,
    root,
    notes: ['generated: a large synthetic report for the benchmarks'],
  };
  const build = (tl: Timeline | null): Report => {
    const peakAllocated = tl?.allocated.length ? Math.max(...chunkMax(tl.allocated)) : base + activations;
    const peakReserved = tl?.reserved.length ? itemAt(tl.reserved, tl.reserved.length - 1) : peakAllocated;
    const atPeak = { params, buffers: 32 * 1024 * 1024, grads: 0, opt: optimizerState, act: activations, masks: Math.floor(activations / 10) };
    const tracked = atPeak.params + atPeak.buffers + atPeak.grads + atPeak.opt + atPeak.act + atPeak.masks;
    return {
      schema: 'membit.report/1',
      run,
      summary: {
        peak_allocated: peakAllocated,
        peak_reserved: peakReserved,
        device_used_peak: peakReserved + 600 * 1024 * 1024,
        params,
        buffers: atPeak.buffers,
        grads,
        optimizer_state: optimizerState,
        saved_bytes: savedBytes,
        mask_bytes: maskBytes,
        saved_outside_modules: 0,
        params_at_peak: atPeak.params,
        buffers_at_peak: atPeak.buffers,
        grads_at_peak: atPeak.grads,
        optimizer_state_at_peak: atPeak.opt,
        activations_at_peak: atPeak.act,
        masks_at_peak: atPeak.masks,
        unattributed_at_peak: Math.max(0, peakAllocated - tracked),
        tracked_at_peak: tracked,
        step_time_s: 15.2,
        samples_per_s: 2.105,
        batch_size: 32,
      },
      lines,
      modules,
      sites,
      timeline: tl,
      peak: {
        t_ms: 1234.5,
        step: 3,
        phase: 'backward',
        source: 'allocator',
        replay_bytes: peakAllocated,
        top: Array.from({ length: 40 }, (_, i) => holder(i, Math.floor(GiB / (i + 1)))),
      },
      oom: null,
    };
  };

  // Fill what is left of the target with timeline points: estimate, then correct once
  // with the measured size (later timestamps have more digits than a sample's).
  const empty = { t_ms: [], allocated: [], reserved: [], device_used: [], phase: [] };
  const without = JSON.stringify(build(empty)).length;
  const emptyLen = JSON.stringify(empty).length;
  const sample = timeline(rng(seed + 1), 10_000, base, activations);
  let points = Math.max(0, Math.floor((targetBytes - without) / ((JSON.stringify(sample).length - emptyLen) / 10_000)));
  let report = build(timeline(rng(seed + 2), points, base, activations));
  let text = JSON.stringify(report);
  if (points > 0) {
    const perPoint = (text.length - without) / points;
    points = Math.max(0, points + Math.round((targetBytes - text.length) / perPoint));
    report = build(timeline(rng(seed + 2), points, base, activations));
    text = JSON.stringify(report);
  }
  return { report, text, bytes: Buffer.byteLength(text), counts: { lines: nLines, modules: nModules, sites: nSites, timeline: points } };
}

/** Max per chunk (Math.max over a million arguments overflows the stack). */
function chunkMax(xs: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < xs.length; i += 50_000) out.push(Math.max(...xs.slice(i, i + 50_000)));
  return out;
}
