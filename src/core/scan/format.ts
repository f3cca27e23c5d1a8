/**
 * Text for sites: the diagnostic message, the short end-of-line hint, the hover
 * markdown and the per-class CodeLens summary. Pure functions, so the VS Code
 * adapter only maps them onto its API and the CLI prints the same words.
 */
import type { ClassInfo, Estimate, Site, SiteKind, SiteRange } from './types';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Binary units, three significant digits: `96 MiB`, `1.5 GiB`, `512 B`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${Number(v.toFixed(digits))} ${UNITS[u]}`;
}

/** `4.7M`, `38K`, `512`. */
export function formatCount(n: number): string {
  if (n >= 1e9) return `${Number((n / 1e9).toPrecision(3))}B`;
  if (n >= 1e6) return `${Number((n / 1e6).toPrecision(3))}M`;
  if (n >= 1e3) return `${Number((n / 1e3).toPrecision(3))}K`;
  return String(n);
}

export const KIND_TITLE: Record<SiteKind, string> = {
  dropout: 'dropout',
  'dropout-call': 'functional dropout',
  'attn-dropout': 'attention dropout',
  'fused-attn-dropout': 'fused attention dropout',
  'attn-mask': 'attention mask',
  ffn: 'dense FFN',
};

const isDropout = (k: SiteKind) => k === 'dropout' || k === 'dropout-call' || k === 'attn-dropout';

/** `@ B=32 L=512` for the dimensions the estimate used (heads shown for attention). */
export function shapeLabel(e: Estimate): string {
  const s = e.shape;
  if (!s) return '';
  const parts: string[] = [];
  if (s.batch !== undefined) parts.push(`B=${s.batch}`);
  if (s.heads !== undefined) parts.push(`H=${s.heads}`);
  if (s.seqLen !== undefined) parts.push(`L=${s.seqLen}`);
  return parts.length ? ` @ ${parts.join(' ')}` : '';
}

function perSample(e: Estimate): string {
  return e.perSample ? '/sample' : '';
}

function ffnWidths(site: Site): string {
  const f = site.ffn;
  if (!f) return '';
  if (f.inWidth !== undefined && f.hiddenWidth !== undefined) return `${f.inWidth}→${f.hiddenWidth}→${f.inWidth}`;
  const d = (t: string | undefined) => (t ? t.replace(/\s+/g, '') : '?');
  if (f.form === 'module') return f.inFeatures || f.hiddenFeatures ? `${d(f.inFeatures)}→${d(f.hiddenFeatures)}→${d(f.inFeatures)}` : '';
  return [f.gate?.name, f.up?.name, f.down?.name].filter(Boolean).join('/');
}

/** The short end-of-line hint, e.g. `dropout mask 96 MiB → 12 MiB packed @ B=32 L=512`. */
export function formatHint(site: Site): string {
  const e = site.estimate;
  const measured = e.source === 'report' ? ' (measured)' : '';
  if (isDropout(site.kind)) {
    const label = site.kind === 'attn-dropout' ? 'attn dropout mask' : 'dropout mask';
    if (e.maskBytes === 0 && e.source !== 'report') return `${label}: none (p=0)`;
    if (e.maskBytes === undefined) return `${label}: shape unknown`;
    const packed = e.packedBytes !== undefined ? ` → ${formatBytes(e.packedBytes)}${perSample(e)} packed` : '';
    return `${label} ${formatBytes(e.maskBytes)}${perSample(e)}${packed}${shapeLabel(e)}${measured}`;
  }
  if (site.kind === 'fused-attn-dropout') return 'fused attn dropout: no mask stored ✓';
  if (site.kind === 'attn-mask') {
    const fix = site.remedy?.startsWith('Pass is_causal') ? ' · is_causal=True removes it' : '';
    if (e.maskBytes === undefined) return `attn mask: shape unknown${fix}`;
    return `attn mask ${formatBytes(e.maskBytes)}${perSample(e)}${shapeLabel(e)}${measured}${fix}`;
  }
  const widths = ffnWidths(site);
  const weights = e.elements !== undefined ? ` · ${formatCount(e.elements)} weights` : '';
  return `FFN${widths ? ` ${widths}` : ''}${weights} · 2:4 candidate`;
}

function where(site: Site): string {
  if (site.className && site.funcName) return ` in \`${site.className}.${site.funcName}\``;
  if (site.className) return ` in \`${site.className}\``;
  if (site.funcName) return ` in \`${site.funcName}\``;
  return '';
}

function argsText(site: Site): string {
  // The tensor a dropout is applied to says nothing about the site; a mask's input does.
  const keep = Object.entries(site.args).filter(([k]) => k !== 'input' || !isDropout(site.kind));
  return keep.map(([k, v]) => (k.startsWith('arg') ? v : `${k}=${v}`)).join(', ');
}

/** One sentence for the diagnostic: what the site is and what it costs. */
export function siteMessage(site: Site): string {
  const e = site.estimate;
  const fig =
    e.maskBytes !== undefined && e.maskBytes > 0
      ? ` (≈${formatBytes(e.maskBytes)}${perSample(e)}${shapeLabel(e)}${e.packedBytes !== undefined ? `, ${formatBytes(e.packedBytes)}${perSample(e)} packed` : ''})`
      : '';
  switch (site.kind) {
    case 'dropout':
    case 'dropout-call':
      if (e.maskBytes === 0 && e.source !== 'report') return `Dropout with p=0 as written: no mask is kept.`;
      return `Dropout keeps a 1-byte-per-element mask for backward on CUDA${fig}; packed dropout keeps 1 bit per element.`;
    case 'attn-dropout':
      if (e.maskBytes === 0 && e.source !== 'report') return `Attention dropout with p=0 as written: no mask is kept.`;
      return `Dropout on attention probabilities keeps a B×H×L×L mask, the largest in the model${fig}; packed dropout keeps 1 bit per element.`;
    case 'fused-attn-dropout':
      return 'Attention dropout inside a fused kernel: no mask is stored, already optimal.';
    case 'attn-mask':
      return `Materialised attention mask (O(L²))${fig}. ${site.remedy ?? ''}`.trim();
    case 'ffn': {
      const f = site.ffn;
      const what =
        f?.form === 'module'
          ? `MLP module \`${site.callee}\``
          : `${f?.form === 'gated' || f?.form === 'fused-gated' ? 'Gated FFN' : 'FFN'} ${ffnWidths(site)}${f?.form === 'split' ? ` (split over ${f.up?.className} and ${f.down?.className})` : ''}`;
      const w = e.elements !== undefined ? ` with ${formatCount(e.elements)} weights` : '';
      return `${what}${w}: a 2:4 structured-sparsity candidate.`;
    }
  }
}

function sourceText(e: Estimate): string {
  switch (e.source) {
    case 'report':
      return 'measured in the latest profile run';
    case 'settings':
      return 'from `membit.shapes` (and the file where the setting is silent)';
    case 'config':
      return 'from literal values in this file';
    default:
      return 'shape unknown';
  }
}

const WHY: Record<SiteKind, string> = {
  dropout:
    'On CUDA, dropout keeps a bool mask (1 byte per element; 4 bytes on CPU) alive until backward. A packed mask keeps 1 bit per element, 8× less.',
  'dropout-call':
    'On CUDA, dropout keeps a bool mask (1 byte per element; 4 bytes on CPU) alive until backward. A packed mask keeps 1 bit per element, 8× less.',
  'attn-dropout':
    'Dropout after the softmax masks the B×H×L×L attention probabilities: the largest mask in a transformer, growing with the square of the sequence length. A packed mask keeps 1 bit per element, 8× less.',
  'fused-attn-dropout':
    'The fused attention kernel (scaled_dot_product_attention, flash-attn, xformers) applies dropout inside the kernel and regenerates it in backward from an RNG seed: no mask is stored.',
  'attn-mask':
    'This builds an attention mask with one entry per query–key pair: its size grows with L². Fused kernels can apply causal masking without it.',
  ffn: 'A dense up/down projection pair holds most of a transformer block\'s weights and matmul time. 2:4 structured sparsity halves the weights and runs on sparse tensor cores.',
};

const ACTION: Partial<Record<SiteKind, string>> = {
  dropout: 'Quick fix: **Convert to Packed Dropout**.',
  'dropout-call': 'Quick fix: **Convert to Packed Dropout**.',
  'attn-dropout': 'Quick fix: **Convert to Packed Dropout**.',
  ffn: 'Quick fix: **Convert FFN to 2:4 Sparse**.',
};

/** Markdown for a hover over the site. */
export function formatHover(site: Site): string {
  const e = site.estimate;
  const lines: string[] = [];
  lines.push(`**Membit · ${KIND_TITLE[site.kind]}** \`${site.code}\``);
  lines.push('');
  const args = argsText(site);
  lines.push(`\`${site.callee}(${args.length > 80 ? `${args.slice(0, 77)}…` : args})\`${where(site)}${site.binding ? `, bound to \`${site.binding}\`` : ''}.`);
  lines.push('');
  lines.push(WHY[site.kind]);
  lines.push('');
  if (site.kind === 'ffn' && site.ffn) {
    const f = site.ffn;
    const row = (label: string, m: typeof f.up) => (m ? `| ${label} | \`${m.name ?? '?'}\` | ${m.inFeatures ?? '?'} → ${m.outFeatures ?? '?'} | ${m.line + 1} |` : '');
    if (f.form !== 'module') {
      lines.push('| | member | widths | line |', '|---|---|---|---|');
      for (const r of [row('gate', f.gate), row('up', f.up), row('down', f.down)]) if (r) lines.push(r);
      lines.push('');
    }
    if (e.elements !== undefined) lines.push(`Weights: ${e.elements.toLocaleString('en-US')} (${formatBytes(e.elements * 2)} in bf16; about half with 2:4).`);
    else lines.push('Weights: widths not known from this file.');
  } else if (e.maskBytes !== undefined) {
    if (e.packedBytes !== undefined) {
      lines.push('| | now | packed | saved |', '|---|---|---|---|');
      lines.push(`| mask${perSample(e)} | ${formatBytes(e.maskBytes)} | ${formatBytes(e.packedBytes)} | ${formatBytes(e.maskBytes - e.packedBytes)} |`);
    } else if (site.kind === 'fused-attn-dropout') {
      if (e.elements !== undefined) lines.push(`An eager dropout here would keep ${formatBytes(e.elements)}${perSample(e)}${shapeLabel(e)}.`);
    } else {
      lines.push(`Size: **${formatBytes(e.maskBytes)}${perSample(e)}**${shapeLabel(e)}.`);
    }
  } else {
    lines.push('Size: shape unknown. Set `membit.shapes` (batch, seqLen, hidden, heads) or profile a run.');
  }
  lines.push('');
  lines.push(`_${sourceText(e)}${e.note ? `: ${e.note}` : ''}._`);
  if (site.remedy) {
    lines.push('');
    lines.push(site.remedy);
  }
  const action = ACTION[site.kind];
  if (action && !(e.maskBytes === 0 && e.source !== 'report' && site.kind !== 'ffn')) {
    lines.push('');
    lines.push(action);
  }
  return lines.join('\n');
}

/** Per-class totals for a CodeLens above the class. */
export interface ClassSummary {
  className: string;
  /** The class statement's range (0-based). */
  range: SiteRange;
  counts: Partial<Record<SiteKind, number>>;
  sites: number;
  /** Sum over sites with a known size (dropout masks and attention masks). */
  maskBytes: number;
  /** What the packable (dropout) masks among them would take packed. */
  packedBytes: number;
  /** Bytes of the packable masks now (so saving = packableBytes - packedBytes). */
  packableBytes: number;
  /** Sites whose size is unknown. */
  unknown: number;
  /** Some figures are per sample (no batch size known). */
  perSample: boolean;
  /** E.g. `Membit: 2 dropout · 1 attn dropout · 1 FFN — masks 48 MiB → 6 MiB packed`. */
  title: string;
}

const SHORT: Record<SiteKind, string> = {
  dropout: 'dropout',
  'dropout-call': 'dropout',
  'attn-dropout': 'attn dropout',
  'fused-attn-dropout': 'fused attn',
  'attn-mask': 'attn mask',
  ffn: 'FFN',
};

/** One summary per class that holds sites (innermost class wins), in file order. */
export function summarizeClasses(result: { sites: readonly Site[]; classes: readonly ClassInfo[] }): ClassSummary[] {
  const out = new Map<string, ClassSummary>();
  const keyOf = (c: ClassInfo) => `${c.name}@${c.range.startLine}`;
  for (const site of result.sites) {
    if (!site.className) continue;
    // The innermost class with that name whose range holds the site.
    let cls: ClassInfo | undefined;
    for (const c of result.classes) {
      if (c.name !== site.className) continue;
      if (c.range.startLine <= site.range.startLine && site.range.startLine <= c.range.endLine) {
        if (!cls || c.range.startLine >= cls.range.startLine) cls = c;
      }
    }
    if (!cls) continue;
    const key = keyOf(cls);
    let s = out.get(key);
    if (!s) {
      s = { className: cls.name, range: cls.range, counts: {}, sites: 0, maskBytes: 0, packedBytes: 0, packableBytes: 0, unknown: 0, perSample: false, title: '' };
      out.set(key, s);
    }
    s.sites++;
    s.counts[site.kind] = (s.counts[site.kind] ?? 0) + 1;
    const e = site.estimate;
    if (site.kind !== 'ffn' && site.kind !== 'fused-attn-dropout') {
      if (e.maskBytes === undefined) s.unknown++;
      else {
        s.maskBytes += e.maskBytes;
        if (e.packedBytes !== undefined) {
          s.packedBytes += e.packedBytes;
          s.packableBytes += e.maskBytes;
        }
        if (e.perSample) s.perSample = true;
      }
    }
  }
  const summaries = [...out.values()].sort((a, b) => a.range.startLine - b.range.startLine);
  for (const s of summaries) {
    // Kinds in a fixed order, so a title does not change when sites move.
    const merged = new Map<string, number>();
    for (const k of Object.keys(SHORT) as SiteKind[]) {
      const n = s.counts[k];
      if (n) merged.set(SHORT[k], (merged.get(SHORT[k]) ?? 0) + n);
    }
    const parts = [...merged].map(([k, n]) => `${n} ${k}`);
    const per = s.perSample ? '/sample' : '';
    let mem = '';
    if (s.maskBytes > 0) {
      mem = ` — masks ${formatBytes(s.maskBytes)}${per}`;
      if (s.packableBytes > 0) mem += `, dropout ${formatBytes(s.packableBytes)}${per} → ${formatBytes(s.packedBytes)}${per} packed`;
    }
    if (s.unknown > 0) mem += `${mem ? ';' : ' —'} ${s.unknown} shape unknown`;
    s.title = `Membit: ${parts.join(' · ')}${mem}`;
  }
  return summaries;
}
