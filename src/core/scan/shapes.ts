/**
 * Static memory estimates. Shapes come, in order, from the latest measured report,
 * the `membit.shapes` setting, and literal defaults written in the file; a
 * dimension found nowhere leaves the estimate "shape unknown" — never a guess.
 */
import type { ConfigValue, Estimate, EstimateShape, FileConfig, MeasuredLine, MeasuredModule, MeasuredRun, ShapeHints, ShapeSettings } from './types';

/** Names under which model code writes each dimension, most specific first. */
const ROLE_NAMES: Record<keyof FileConfig | 'imgSize' | 'patchSize', readonly string[]> = {
  hidden: ['n_embd', 'n_embed', 'hidden_size', 'd_model', 'embed_dim', 'emb_dim', 'embedding_dim', 'model_dim', 'd_embed', 'dim', 'width'],
  seqLen: [
    'block_size', 'seq_len', 'seq_length', 'max_seq_len', 'max_seq_length', 'sequence_length', 'max_position_embeddings', 'n_positions',
    'n_ctx', 'context_length', 'context_len', 'ctx_len',
  ],
  heads: ['n_head', 'n_heads', 'num_heads', 'num_attention_heads', 'nhead', 'num_head', 'heads', 'n_attn_heads'],
  batch: ['batch_size', 'micro_batch_size', 'train_batch_size', 'per_device_train_batch_size', 'mini_batch_size', 'batch'],
  intermediate: ['intermediate_size', 'd_ff', 'dim_feedforward', 'ffn_dim', 'ffn_hidden_size', 'mlp_dim', 'n_inner', 'hidden_dim'],
  mlpRatio: ['mlp_ratio'],
  layers: ['n_layer', 'n_layers', 'num_layers', 'num_hidden_layers', 'n_blocks', 'num_blocks', 'num_encoder_layers', 'depth', 'layers'],
  vocab: ['vocab_size', 'n_vocab', 'num_tokens', 'ntoken'],
  imgSize: ['img_size', 'image_size'],
  patchSize: ['patch_size'],
};

/** Smallest plausible value per role: `dim=1` is an axis, not a width. */
const MIN_VALUE: Partial<Record<keyof typeof ROLE_NAMES, number>> = { hidden: 16, intermediate: 16, seqLen: 4, imgSize: 8, patchSize: 1 };
const GENERIC = new Set(['dim', 'width', 'heads', 'batch', 'hidden_dim', 'depth', 'layers']);

export interface RawConfig {
  name: string;
  value: number;
  /** Lower is more trustworthy: 0 class/dataclass field, 1 module global, 2 body assignment, 3 parameter default, 4 call keyword. */
  rank: number;
  line: number;
  /**
   * The file it was read from when that is not the scanned file: the defaults of a config class
   * the file imports from its folder (see related.ts). Any value of the file itself wins.
   */
  from?: string;
}

/** Trust: the scanned file's own values before any imported default, then by rank. Lower is better. */
const trust = (r: RawConfig) => (r.from ? 100 : 0) + r.rank;

function better(a: RawConfig, b: RawConfig): boolean {
  return trust(a) < trust(b) || (trust(a) === trust(b) && a.line < b.line);
}

export interface ConfigTable {
  file: FileConfig;
  /** Every literal name → value (best rank, first in the file), for evaluating widths such as `4 * config.n_embd`. */
  values: Map<string, number>;
  /**
   * Values for bare names (`dim`, `sz`): only class fields and module globals. A
   * parameter default of one function says nothing about another function's parameter.
   */
  bareValues: Map<string, number>;
  /**
   * Fields of a config (`config.attention_dropout`): the file's class fields and module
   * globals, then the defaults of the config classes it imports.
   */
  fieldValues: Map<string, number>;
  /** Names in `fieldValues` that came from another file, with that file (for notes). */
  fieldFiles: Map<string, string>;
  imgSize?: ConfigValue;
  patchSize?: ConfigValue;
}

export function buildConfig(raw: readonly RawConfig[]): ConfigTable {
  const best = new Map<string, RawConfig>();
  for (const r of raw) {
    if (!Number.isFinite(r.value) || r.value < 0) continue;
    const prev = best.get(r.name);
    if (!prev || better(r, prev)) best.set(r.name, r);
  }
  const specific = new Set(Object.values(ROLE_NAMES).flat().filter((n) => !GENERIC.has(n)));
  const values = new Map<string, number>();
  const bareValues = new Map<string, number>();
  const fieldValues = new Map<string, number>();
  const fieldFiles = new Map<string, string>();
  for (const [k, v] of best) {
    // An imported config's field or default is a field wherever it is (dropout rates of 0 included).
    if (v.from) {
      fieldValues.set(k, v.value);
      fieldFiles.set(k, v.from);
    }
    // Keywords of arbitrary calls (`dim=1`, `size=3`) are not model widths; config-looking names are.
    if (v.rank >= 4 && !specific.has(k)) continue;
    if (GENERIC.has(k) && v.value < 16) continue;
    values.set(k, v.value);
    // A bare name (`dim`) is one of this file's own: another file's defaults say nothing of it.
    if (v.rank <= 1 && !v.from) {
      bareValues.set(k, v.value);
      fieldValues.set(k, v.value);
    }
  }
  const pick = (role: keyof typeof ROLE_NAMES, integer = true): ConfigValue | undefined => {
    let found: RawConfig | undefined;
    for (const name of ROLE_NAMES[role]) {
      const r = best.get(name);
      if (!r || (integer && (!Number.isInteger(r.value) || r.value < (MIN_VALUE[role] ?? 1)))) continue;
      // `torch.cat(xs, dim=1)` is not a model width: generic names count only where defined.
      if (r.rank >= 4 && GENERIC.has(name)) continue;
      // A better-ranked definition under a less specific name beats a worse-ranked one.
      if (!found || trust(r) < trust(found)) found = r;
    }
    if (!found) return undefined;
    const v: ConfigValue = { value: found.value, name: found.name, line: found.line };
    if (found.from) v.file = found.from;
    return v;
  };
  const file: FileConfig = {};
  for (const role of ['hidden', 'seqLen', 'heads', 'batch', 'intermediate', 'layers', 'vocab'] as const) {
    const v = pick(role);
    if (v) file[role] = v;
  }
  const ratio = pick('mlpRatio', false);
  if (ratio) file.mlpRatio = ratio;
  const table: ConfigTable = { file, values, bareValues, fieldValues, fieldFiles };
  const img = pick('imgSize');
  const patch = pick('patchSize');
  if (img) table.imgSize = img;
  if (patch) table.patchSize = patch;
  return table;
}

/**
 * Evaluates a width as written (`4 * config.n_embd`, `int(dim * mlp_ratio)`) with the
 * literal values of the file. Undefined when any name is unknown.
 */
export function evalDim(text: string, values: ReadonlyMap<string, number>, bareValues: ReadonlyMap<string, number> = values): number | undefined {
  // Widths are short; anything long is not one (and deep nesting would only cost stack).
  if (text.length > 200) return undefined;
  const toks = text.match(/\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|[A-Za-z_][\w.]*|\/\/|\*\*|[-+*/%(),]/g);
  if (toks?.join('').length !== text.replace(/\s+/g, '').length) return undefined;
  let i = 0;
  const peek = () => toks[i];
  const expr = (): number | undefined => {
    let v = term();
    while (v !== undefined && (peek() === '+' || peek() === '-')) {
      const op = toks[i++];
      const r = term();
      if (r === undefined) return undefined;
      v = op === '+' ? v + r : v - r;
    }
    return v;
  };
  const term = (): number | undefined => {
    let v = unary();
    while (v !== undefined && ['*', '/', '//', '%'].includes(peek() ?? '')) {
      const op = toks[i++];
      const r = unary();
      if (r === undefined || (op !== '*' && r === 0)) return undefined;
      v = op === '*' ? v * r : op === '/' ? v / r : op === '//' ? Math.floor(v / r) : v % r;
    }
    return v;
  };
  const unary = (): number | undefined => {
    if (peek() === '-') {
      i++;
      const v = unary();
      return v === undefined ? undefined : -v;
    }
    if (peek() === '+') i++;
    const base = atom();
    if (base !== undefined && peek() === '**') {
      i++;
      const e = unary();
      return e === undefined ? undefined : base ** e;
    }
    return base;
  };
  const atom = (): number | undefined => {
    const t = toks[i++];
    if (t === undefined) return undefined;
    if (t === '(') {
      const v = expr();
      return toks[i++] === ')' ? v : undefined;
    }
    if (/^\d/.test(t)) return Number(t);
    if (/^[A-Za-z_]/.test(t)) {
      if (peek() === '(') {
        // int(...), round(...), max(a, b): the usual wrappers around a width.
        if (!['int', 'round', 'max', 'min'].includes(t)) return undefined;
        i++;
        const args: number[] = [];
        for (;;) {
          const v = expr();
          if (v === undefined) return undefined;
          args.push(v);
          if (peek() === ',') {
            i++;
            continue;
          }
          break;
        }
        if (toks[i++] !== ')') return undefined;
        if (t === 'max') return Math.max(...args);
        if (t === 'min') return Math.min(...args);
        const [first] = args;
        if (first === undefined) return undefined;
        return t === 'round' ? Math.round(first) : Math.trunc(first);
      }
      const dot = t.lastIndexOf('.');
      return dot < 0 ? bareValues.get(t) : values.get(t.slice(dot + 1));
    }
    return undefined;
  };
  const v = expr();
  return i === toks.length && v !== undefined && Number.isFinite(v) ? v : undefined;
}

/** `n_embd (line 12)`, or `hidden_size (configuration_bert.py line 45)` for an imported config's default. */
export function configLabel(c: ConfigValue): string {
  return `${c.name} (${c.file ? `${c.file} ` : ''}line ${c.line + 1})`;
}

/** One dimension and where it came from. */
export interface Dim {
  value: number;
  origin: 'settings' | 'config';
  /** For the note: `membit.shapes.batch`, `n_embd (line 12)`. */
  label: string;
}

export type Role = 'batch' | 'seqLen' | 'hidden' | 'heads';

export class ShapeContext {
  constructor(
    readonly settings: ShapeSettings,
    readonly config: ConfigTable,
    readonly hints: ShapeHints | undefined,
    /** Added to the lines passed to `measured` (callers may count rows from a group start). */
    readonly rowOffset = 0,
  ) {}

  /** A dimension only the file's literals give (`n_layer`, `vocab_size`, `intermediate_size`). */
  configDim(role: 'layers' | 'vocab' | 'intermediate'): Dim | undefined {
    const c = this.config.file[role];
    return c && Number.isInteger(c.value) && c.value >= 1 ? { value: c.value, origin: 'config', label: configLabel(c) } : undefined;
  }

  dim(role: Role): Dim | undefined {
    const s = this.settings[role];
    if (typeof s === 'number' && Number.isFinite(s) && s >= 1) return { value: Math.floor(s), origin: 'settings', label: `membit.shapes.${role}` };
    const c = this.config.file[role];
    if (c) return { value: c.value, origin: 'config', label: configLabel(c) };
    if (role === 'seqLen' && this.config.imgSize && this.config.patchSize && this.config.patchSize.value > 0) {
      // A ViT sees (img/patch)² patches plus the class token.
      const n = Math.floor(this.config.imgSize.value / this.config.patchSize.value);
      return { value: n * n + 1, origin: 'config', label: `(${this.config.imgSize.name}/${this.config.patchSize.name})²+1` };
    }
    return undefined;
  }

  /** Sums what the report measured on these 0-based lines (the site's lines, or the lines that use it). */
  measured(lines: readonly number[]): MeasuredLine | undefined {
    if (!this.hints) return undefined;
    let elements = 0;
    let maskBytes = 0;
    let hit = false;
    let haveElements = true;
    let instances = 0;
    let device: string | undefined;
    const seen = new Set<number>();
    for (const l of lines) {
      if (seen.has(l)) continue;
      seen.add(l);
      const m = this.hints.byLine.get(l + this.rowOffset + 1);
      if (!m) continue;
      hit = true;
      if (m.elements !== undefined) elements += m.elements;
      else haveElements = false;
      if (m.maskBytes !== undefined) maskBytes += m.maskBytes;
      else if (m.elements !== undefined) maskBytes += m.elements;
      instances = Math.max(instances, m.instances ?? 0);
      device ??= m.device;
    }
    if (!hit) return undefined;
    const out: MeasuredLine = haveElements ? { elements, maskBytes } : { maskBytes };
    if (instances > 0) out.instances = instances;
    if (device) out.device = device;
    return out;
  }
}

const SYMBOL: Record<Role, string> = { batch: 'B', seqLen: 'L', hidden: 'd', heads: 'H' };

/**
 * Builds an estimate from the product of dimensions (`count` repeats: L·L).
 * Without a batch size the figure is per sample; without any other dimension, unknown.
 */
export function fromDims(
  ctx: ShapeContext,
  roles: readonly Role[],
  bytesPerElement: number,
  packable: boolean,
  what: string,
): Estimate {
  const used: Partial<Record<Role, Dim>> = {};
  const missing: Role[] = [];
  for (const r of new Set(roles)) {
    const d = ctx.dim(r);
    if (d) used[r] = d;
    else if (r !== 'batch') missing.push(r);
  }
  if (missing.length > 0) {
    return {
      source: 'unknown',
      note: `shape unknown: no ${missing.map((r) => `${SYMBOL[r]} (${r})`).join(', ')} in the file; set membit.shapes`,
    };
  }
  let elements = 1;
  for (const r of roles) {
    const d = used[r];
    if (d) elements *= d.value;
  }
  const shape: EstimateShape = {};
  for (const [r, d] of Object.entries(used)) shape[r as Role] = d.value;
  const origins = Object.values(used).map((d) => d.origin);
  const perSample = roles.includes('batch') && !used.batch;
  const est: Estimate = {
    elements,
    maskBytes: elements * bytesPerElement,
    source: origins.includes('settings') ? 'settings' : 'config',
    shape,
    note: `${what} = ${roles.map((r) => SYMBOL[r]).join('·')}; ${Object.entries(used)
      .map(([r, d]) => `${SYMBOL[r as Role]}=${d.value} from ${d.label}`)
      .join(', ')}${perSample ? '; per sample (no batch size known)' : ''}`,
  };
  if (packable) est.packedBytes = Math.ceil(elements / 8);
  if (perSample) est.perSample = true;
  return est;
}

/** An estimate straight from the report. */
export function fromReport(m: MeasuredLine, packable: boolean): Estimate {
  const est: Estimate = { source: 'report' };
  if (m.instances !== undefined) est.scope = { instances: m.instances, device: m.device ?? 'unknown' };
  if (m.elements !== undefined) est.elements = m.elements;
  if (m.maskBytes !== undefined) est.maskBytes = m.maskBytes;
  if (packable) {
    const n = m.elements ?? m.maskBytes;
    if (n !== undefined) est.packedBytes = Math.ceil(n / 8);
  }
  return est;
}

/** Bytes per element of a dtype as written (`torch.bool`, `dtype`); undefined when not literal. */
export function dtypeBytes(text: string | undefined): number | undefined {
  if (!text) return undefined;
  const t = text.replace(/^(torch|np|numpy)\./, '');
  if (/^(bool|uint8|int8|float8\w*)$/.test(t)) return 1;
  if (/^(float16|half|bfloat16|int16|short)$/.test(t)) return 2;
  if (/^(float32|float|int32|int)$/.test(t)) return 4;
  if (/^(float64|double|int64|long)$/.test(t)) return 8;
  return undefined;
}

/** Accepts any object shaped like a `membit.report/1` document. */
export interface ReportLike {
  sites?: readonly (SiteLike | null)[];
  modules?: readonly ({ path?: unknown; type?: unknown; created_at?: { file?: unknown; line?: unknown } | null; mask_bytes?: unknown; saved_bytes?: unknown; at_peak_bytes?: unknown } | null)[];
  lines?: readonly ({ file?: unknown; line?: unknown; mask_bytes?: unknown; saved_bytes?: unknown; at_peak_bytes?: unknown; ops?: unknown } | null)[];
  run?: { script?: unknown; device?: { type?: unknown } | null } | null;
  summary?: { peak_allocated?: unknown; tracked_at_peak?: unknown; optimizer_state?: unknown; params?: unknown; activations_at_peak?: unknown } | null;
}

interface SiteLike {
  kind?: unknown;
  file?: unknown;
  line?: unknown;
  elements?: unknown;
  mask_bytes?: unknown;
  module?: unknown;
  calls?: unknown;
}

/** A report's array field, typed by ReportLike; anything else (reports are untrusted) reads as empty. */
function listOf<T>(v: readonly T[] | null | undefined): readonly T[] {
  const isList = (x: unknown): x is readonly unknown[] => Array.isArray(x);
  return isList(v) ? v : [];
}

function sameFile(reportPath: unknown, file: string): boolean {
  if (typeof reportPath !== 'string' || reportPath.length === 0) return false;
  const a = reportPath.replace(/\\/g, '/');
  const b = file.replace(/\\/g, '/');
  // Report paths are relative to the run's root; the editor knows absolute ones.
  return a === b || b.endsWith(`/${a}`) || a.endsWith(`/${b}`);
}

function scopeOf(instances: number, device: string | undefined): Pick<MeasuredLine, 'instances' | 'device'> {
  return device ? { instances, device } : { instances };
}

/** Whether a module path (`h.0.attn.drop`) is one a site's path names (`h.*.attn.drop`; `*` is one segment). */
function globMatches(pattern: string, path: string): boolean {
  const a = pattern.split('.');
  const b = path.split('.');
  return a.length === b.length && a.every((seg, i) => seg === '*' || seg === b[i]);
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);

/**
 * Measured figures for `file` from a report: its `sites` first, then modules by the
 * line that created them, then per-line mask bytes.
 */
export function shapeHintsFromReport(report: ReportLike | null | undefined, file: string): ShapeHints {
  const byLine = new Map<number, MeasuredLine>();
  if (!report || typeof report !== 'object') return { byLine };
  const put = (line: unknown, m: MeasuredLine) => {
    const l = num(line);
    if (l === undefined || byLine.has(l)) return;
    if (m.elements === undefined && m.maskBytes === undefined) return;
    byLine.set(l, m);
  };
  const clean = (elements: unknown, maskBytes: unknown): MeasuredLine => {
    const m: MeasuredLine = {};
    const e = num(elements);
    const b = num(maskBytes);
    if (e !== undefined) m.elements = e;
    if (b !== undefined) m.maskBytes = b;
    return m;
  };
  const device = report.run && typeof report.run.device === 'object' && report.run.device && typeof report.run.device.type === 'string' ? report.run.device.type : undefined;
  const siteList = listOf(report.sites).filter((s): s is SiteLike => !!s && typeof s === 'object');
  for (const s of siteList) if (sameFile(s.file, file)) put(s.line, { ...clean(s.elements, s.mask_bytes), ...scopeOf(num(s.calls) ?? 1, device) });
  // Construction lines: every module built on the line, summed (one per layer), with the
  // elements of the sites those modules ran as; never one layer's figure for all of them.
  const built = new Map<number, { instances: number; maskBytes: number; sites: Set<SiteLike> }>();
  for (const m of listOf(report.modules)) {
    const line = num(m?.created_at?.line);
    if (!m?.created_at || line === undefined || !sameFile(m.created_at.file, file) || !num(m.mask_bytes) || typeof m.path !== 'string') continue;
    const b = built.get(line) ?? { instances: 0, maskBytes: 0, sites: new Set<SiteLike>() };
    b.instances++;
    b.maskBytes += num(m.mask_bytes) ?? 0;
    const path = m.path;
    for (const s of siteList) if (typeof s.module === 'string' && globMatches(s.module, path)) b.sites.add(s);
    built.set(line, b);
  }
  for (const [line, b] of built) {
    const sites = [...b.sites];
    const elements = sites.reduce((a, s) => a + (num(s.elements) ?? 0), 0);
    const maskBytes = sites.reduce((a, s) => a + (num(s.mask_bytes) ?? 0), 0);
    // The sites cover exactly these modules' masks: use their elements; else the modules' bytes.
    const m = sites.length && maskBytes === b.maskBytes ? clean(elements, maskBytes) : clean(undefined, b.maskBytes);
    put(line, { ...m, ...scopeOf(b.instances, device) });
  }
  for (const l of listOf(report.lines)) if (l && sameFile(l.file, file) && num(l.mask_bytes)) put(l.line, clean(undefined, l.mask_bytes));
  const hints: ShapeHints = { byLine };

  // For the advisor: what each line and module kept at the peak, and the run's totals.
  const savedByLine = new Map<number, number>();
  let softmaxBytes = 0;
  for (const l of listOf(report.lines)) {
    if (!l) continue;
    const bytes = num(l.at_peak_bytes) ?? num(l.saved_bytes);
    const line = num(l.line);
    if (bytes !== undefined && line !== undefined && sameFile(l.file, file)) savedByLine.set(line, (savedByLine.get(line) ?? 0) + bytes);
    if (Array.isArray(l.ops)) {
      for (const op of l.ops as ({ op?: unknown; bytes?: unknown } | null)[]) if (op && typeof op.op === 'string' && op.op.includes('softmax')) softmaxBytes += num(op.bytes) ?? 0;
    }
  }
  if (savedByLine.size) hints.savedByLine = savedByLine;
  const modules: MeasuredModule[] = [];
  for (const m of listOf(report.modules)) {
    if (!m || typeof m.path !== 'string') continue;
    const mm: MeasuredModule = { path: m.path, savedBytes: num(m.at_peak_bytes) ?? num(m.saved_bytes) ?? 0 };
    if (typeof m.type === 'string') mm.type = m.type;
    const createdLine = num(m.created_at?.line);
    if (m.created_at && sameFile(m.created_at.file, file) && createdLine !== undefined) mm.createdLine = createdLine;
    modules.push(mm);
  }
  if (modules.length) hints.modules = modules;
  const sum = report.summary && typeof report.summary === 'object' ? report.summary : undefined;
  if (sum || report.run) {
    const run: MeasuredRun = { thisFile: !!report.run && sameFile(report.run.script, file) };
    const peak = num(sum?.peak_allocated) ?? num(sum?.tracked_at_peak);
    if (peak) run.peakBytes = peak;
    const put2 = (k: 'optimizerState' | 'params' | 'activationsAtPeak', v: unknown) => {
      const n = num(v);
      if (n !== undefined) run[k] = n;
    };
    put2('optimizerState', sum?.optimizer_state);
    put2('params', sum?.params);
    put2('activationsAtPeak', sum?.activations_at_peak);
    if (softmaxBytes > 0) run.softmaxBytes = softmaxBytes;
    let attnMask = 0;
    for (const st of listOf(report.sites)) if (st?.kind === 'attn-dropout') attnMask += num(st.mask_bytes) ?? 0;
    if (attnMask > 0) run.attnMaskBytes = attnMask;
    hints.run = run;
  }
  return hints;
}
