/**
 * Text for sites: the diagnostic message, the short end-of-line hint, the hover
 * markdown and the per-class CodeLens summary. Pure functions, so the VS Code
 * adapter only maps them onto its API and the CLI prints the same words.
 */
import { BERT_LARGE_SDPA, COMPILED_DROPOUT, describeMeasured, signedPercent } from '../advice/measured';
import type { AdviceLever, ClassInfo, Estimate, Site, SiteKind, SiteRange, TorchCapabilities } from './types';
import { ADVISOR_KINDS } from './types';
import { formatBytes } from '../units';

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
  'eager-attn': 'eager attention',
  'no-autocast': 'fp32 training step',
  checkpoint: 'no activation checkpointing',
  optimizer: 'optimizer state',
};

/** The levers as users know them. */
export const LEVER_TITLE: Record<AdviceLever, string> = {
  sdpa: 'fused attention (F.scaled_dot_product_attention)',
  'is-causal': 'is_causal=True (no mask)',
  autocast: 'bf16 autocast',
  checkpoint: 'activation checkpointing',
  'fused-optimizer': 'fused / foreach AdamW',
};

const isAdvisor = (k: SiteKind) => ADVISOR_KINDS.includes(k);

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

/** `~1.2 GiB/sample`, `768 KiB` (measured), or undefined when the saving is unknown. */
function savingBytesText(site: Site): string | undefined {
  const a = site.advice;
  if (a?.savingBytes === undefined) return undefined;
  return `${a.basis === 'measured' ? '' : '~'}${formatBytes(a.savingBytes)}${perSample(site.estimate)}`;
}

/** `(estimate @ B=32 L=512)` or `(measured)`. */
function basisLabel(site: Site): string {
  return site.advice?.basis === 'measured' ? '(measured)' : `(estimate${shapeLabel(site.estimate)})`;
}

function adviceHint(site: Site): string {
  const a = site.advice;
  const saving = savingBytesText(site);
  const off = !!a?.unavailable;
  switch (site.kind) {
    case 'eager-attn': {
      const what = site.attention?.form === 'hf-eager' || site.attention?.dropoutLine !== undefined ? 'probs+mask' : 'probs';
      if (off) return `eager attention${saving ? `: ${saving} ${what}` : ''} (fused attention unavailable here)`;
      if (!saving) return 'eager attention → fused SDPA: shape unknown';
      return `eager attention: ${saving} ${what} → fused SDPA ${basisLabel(site)}`;
    }
    case 'no-autocast':
      if (off) return 'fp32 training (bf16 autocast unavailable here)';
      if (!saving) return 'fp32 training: bf16 autocast halves most activations';
      return `fp32 training: bf16 autocast saves ${saving} ${basisLabel(site)}`;
    case 'checkpoint':
      if (off) return 'no activation checkpointing (unavailable here)';
      if (!saving) return 'activation checkpointing: shape unknown · ~+20–35% step time';
      return `activation checkpointing saves ${saving}, ~+20–35% step time ${basisLabel(site)}`;
    case 'optimizer': {
      const e = site.estimate;
      const state = e.stateBytes !== undefined ? `${a?.basis === 'measured' ? '' : '~'}${formatBytes(e.stateBytes)}` : '8 B/param';
      const flag = a?.requires?.includes('adamw-foreach') ? 'foreach=True' : 'fused=True';
      return `${site.callee.slice(site.callee.lastIndexOf('.') + 1)} state ${state}${e.stateBytes !== undefined ? ` (8 B/param${a?.basis === 'measured' ? ', measured' : ''})` : ''}${off ? '' : ` · ${flag}: faster step`}`;
    }
    default:
      return '';
  }
}

/** The short end-of-line hint, e.g. `dropout mask 96 MiB → 12 MiB packed @ B=32 L=512`. */
export function formatHint(site: Site): string {
  if (isAdvisor(site.kind)) return adviceHint(site);
  const e = site.estimate;
  const measured = measuredLabel(e);
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
  const sp = site.sparse24;
  return `FFN${widths ? ` ${widths}` : ''}${weights} · ${sp ? sp.text.replace(/^2:4 here/, '2:4') : '2:4 candidate'}`;
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

function adviceMessage(site: Site, caps: TorchCapabilities | null | undefined): string {
  const a = site.advice;
  const saving = savingBytesText(site);
  const fig = saving ? ` (${saving}${a?.basis === 'measured' ? ' measured' : `${shapeLabel(site.estimate)}, estimate`})` : '';
  /** `~4.5 MiB/sample (estimate @ H=4 L=128)`, for "would save …". */
  const inline = saving ? ` ${saving} ${basisLabel(site)}` : '';
  const off = !!a?.unavailable;
  const cost = a?.cost && !off && site.kind === 'checkpoint' ? ` Cost: ${a.cost}.` : '';
  const tail = `${site.remedy ? ` ${site.remedy}` : ''}${cost}${caps ? '' : ' Not checked against an installed torch.'}`;
  switch (site.kind) {
    case 'eager-attn': {
      if (site.attention?.form === 'hf-eager') {
        return `Model built with eager attention: every layer keeps the B×H×L×L attention probabilities and their dropout masks for backward${fig}.${tail}`;
      }
      const mask = site.attention?.dropoutLine !== undefined ? ', their dropout mask and the dropped copy' : '';
      return `Eager attention keeps the B×H×L×L probabilities${mask} for backward${fig}.${tail}`;
    }
    case 'no-autocast':
      return `Training step in fp32: no autocast or other mixed precision in this file${off || !saving ? '' : `; bf16 autocast would save${inline}`}.${tail}`;
    case 'checkpoint': {
      const what = site.callee === 'for' ? `\`for ${site.args['target']} in ${site.args['iter']}\` keeps every block's activations for backward` : 'HF model trained without gradient checkpointing: every layer keeps its activations for backward';
      return `${what}${off || !saving ? '' : `; checkpointing would free${inline}`}.${tail}`;
    }
    case 'optimizer': {
      const e = site.estimate;
      const measured = a?.basis === 'measured';
      const params = e.elements !== undefined ? ` for ${measured ? '' : '~'}${formatCount(e.elements)} parameters` : '';
      const state = e.stateBytes !== undefined ? ` (${measured ? '' : '≈'}${formatBytes(e.stateBytes)}${params}, ${measured ? 'measured' : 'estimate'})` : '';
      return `${site.callee.slice(site.callee.lastIndexOf('.') + 1)} keeps 2 fp32 moments per parameter, 8 B per parameter${state}.${tail}`;
    }
    default:
      return '';
  }
}

/** A dropout that keeps no mask: p is 0 as written or in the config, or it sits on a fallback path. */
function noMaskMessage(what: string, e: Site['estimate']): string {
  if (e.note && !e.note.includes('as written')) return `${what} ${e.note}.`;
  return `${what} with p=0 as written: no mask is kept.`;
}

/**
 * One sentence for the diagnostic: what the site is and what it costs. `caps`: what
 * the installed torch can do, for the advisor's kinds (null or absent: not checked).
 */
export function siteMessage(site: Site, caps?: TorchCapabilities | null): string {
  if (isAdvisor(site.kind)) return adviceMessage(site, caps);
  const e = site.estimate;
  const fig =
    e.maskBytes !== undefined && e.maskBytes > 0
      ? ` (≈${formatBytes(e.maskBytes)}${perSample(e)}${shapeLabel(e)}${e.packedBytes !== undefined ? `, ${formatBytes(e.packedBytes)}${perSample(e)} packed` : ''})`
      : '';
  const underCompile = site.compiled ? ` ${COMPILED_DROPOUT_SHORT}` : '';
  switch (site.kind) {
    case 'dropout':
    case 'dropout-call':
      if (e.maskBytes === 0 && e.source !== 'report') return noMaskMessage('Dropout', e);
      return `Dropout keeps a 1-byte-per-element mask for backward on CUDA${fig}; packed dropout keeps 1 bit per element.${underCompile}`;
    case 'attn-dropout':
      if (e.maskBytes === 0 && e.source !== 'report') return noMaskMessage('Attention dropout', e);
      return `Dropout on attention probabilities keeps a B×H×L×L mask, the largest in the model${fig}; packed dropout keeps 1 bit per element.${site.remedy ? ` ${site.remedy}` : ''}${underCompile}`;
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
      const sp = site.sparse24;
      if (sp) return `${what}${w}: ${sp.text} (${sp.basis}).`;
      return `${what}${w}: a 2:4 structured-sparsity candidate.`;
    }
    default:
      return '';
  }
}

/**
 * Dropout in a file that calls torch.compile: not converted, since no formulation of packing
 * held step time on every compiled model measured; the figures come from the committed results
 * (advice/measured.ts).
 */
const [GPT6, GPT2M] = COMPILED_DROPOUT;
const compiledFigures = (pick: 'packed' | 'recompute') => COMPILED_DROPOUT.map((m) => signedPercent(m[pick].step)).join(' and ');
export const COMPILED_DROPOUT_SHORT =
  `Compiled (torch.compile): packing is not proposed here. Measured on an ${GPT6?.device ?? 'GPU'}, packed cost ${compiledFigures('packed')} step time ` +
  `on ${GPT6?.model ?? ''} and ${GPT2M?.model ?? ''}, recompute ${compiledFigures('recompute')}; membit.patch keeps torch's dropout inside compiled code.`;
/** The hover's paragraph for a dropout site in a compiled file; `what` and `line` (1-based) name the compile call. */
export function compiledDropoutHover(what: string, line: number): string {
  return [
    `This file calls torch.compile (\`${what}\` at line ${line}). Inside compiled code membit.patch keeps torch's own dropout (Inductor fuses it), and no conversion is offered: ` +
      'no formulation of packing held step time on every compiled model measured. Packed and recompute in ops Inductor fuses ' +
      '(`MEMBIT_COMPILE_DROPOUT=fused` opts in), against stock compiled, bf16 autocast, AdamW, 8×1024:',
    '',
    ...COMPILED_DROPOUT.map(
      (m) =>
        `- ${m.model}, ${m.device} (${m.date}): packed ${signedPercent(m.packed.step)} step, ${signedPercent(m.packed.peak)} peak; ` +
        `recompute ${signedPercent(m.recompute.step)} step, ${signedPercent(m.recompute.peak)} peak (\`${m.source}\`)`,
    ),
  ].join('\n');
}
export const COMPILED_DROPOUT_REASON = `the file calls torch.compile, where packing did not hold step time on every model measured (${COMPILED_DROPOUT.map((m) => `${m.model}: packed ${signedPercent(m.packed.step)}, recompute ${signedPercent(m.recompute.step)} step`).join('; ')}); membit.patch keeps torch's dropout in compiled code unless MEMBIT_COMPILE_DROPOUT=fused`;

export type SiteSeverity = 'information' | 'hint';

/**
 * How loud a site's diagnostic is. Information: every scanner site, and the advisor's
 * proposals that save at least 1% of the measured peak (or any proposal while no peak
 * is measured: the estimate cannot be compared yet). Hint: advisor findings that
 * propose nothing here (the installed torch lacks the feature), the optimizer note
 * (fused/foreach saves time, not memory), and proposals under 1% of the measured peak.
 */
export function siteSeverity(site: Site, peakBytes?: number): SiteSeverity {
  if (!isAdvisor(site.kind)) return 'information';
  const a = site.advice;
  if (!a || a.unavailable || a.lever === 'fused-optimizer') return 'hint';
  if (peakBytes && peakBytes > 0 && a.savingBytes !== undefined && !site.estimate.perSample) return a.savingBytes >= peakBytes / 100 ? 'information' : 'hint';
  return 'information';
}

/** ` (measured, 4× summed, CPU)`: a measured figure's scope, short enough for the end of a line. */
export function measuredLabel(e: Estimate): string {
  if (e.source !== 'report') return '';
  const parts = ['measured'];
  if (e.scope && e.scope.instances > 1) parts.push(`${e.scope.instances}× summed`);
  if (e.scope?.device === 'cpu') parts.push('CPU');
  else if (e.scope?.device === 'cuda') parts.push('CUDA');
  return ` (${parts.join(', ')})`;
}

/** `summed over 4 instances, measured on CPU (4 B per mask element there, 1 B on CUDA)`. */
function scopeText(e: Estimate): string {
  const sc = e.scope;
  if (!sc) return '';
  const n = sc.instances > 1 ? `, summed over ${sc.instances} instances (layers or calls)` : ', one instance';
  const dev = sc.device === 'cpu' ? ', on CPU: dropout masks take 4 B per element there (1 B on CUDA)' : sc.device === 'cuda' ? ', on CUDA: dropout masks take 1 B per element' : '';
  return `${n}${dev}`;
}

function sourceText(e: Estimate): string {
  switch (e.source) {
    case 'report':
      return `measured in the run the editor shows${scopeText(e)}`;
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
  'eager-attn':
    `Eager attention materialises the B×H×L×L scores and probabilities, and autograd keeps the probabilities (and, with dropout, its mask and the dropped copy) until backward: memory that grows with the square of the sequence length, in every layer. A fused kernel (F.scaled_dot_product_attention: flash or memory-efficient) computes the same in tiles and keeps only O(L) per row. ${describeMeasured(BERT_LARGE_SDPA)}.`,
  'no-autocast':
    'Without mixed precision every activation autograd keeps is fp32 (4 bytes). Under bf16 autocast most are kept in 2 bytes, matmuls run on tensor cores, and the weights, gradients and optimizer state stay fp32.',
  checkpoint:
    'Autograd keeps every block\'s activations from the forward pass until its backward. With activation checkpointing a block keeps only its input and recomputes its activations during backward: memory for one block at a time instead of all of them.',
  optimizer:
    'Adam and AdamW keep two fp32 moments per parameter (8 bytes), on top of the parameter and its gradient. fused=True (or foreach=True) changes how the update runs, not what it keeps.',
};

const ACTION: Partial<Record<SiteKind, string>> = {
  dropout: 'Quick fix: **Convert to Packed Dropout**.',
  'dropout-call': 'Quick fix: **Convert to Packed Dropout**.',
  'attn-dropout': 'Quick fix: **Convert to Packed Dropout**.',
  ffn: 'Quick fix: **Convert FFN to 2:4 Sparse**.',
};

function adviceHover(site: Site, caps: TorchCapabilities | null | undefined): string {
  const a = site.advice;
  const e = site.estimate;
  const lines: string[] = [];
  lines.push(`**Membit · ${KIND_TITLE[site.kind]}** \`${site.code}\``);
  lines.push('');
  const call = site.callee === 'for' ? `for ${site.args['target']} in ${site.args['iter']}:` : `${site.callee}(${argsText(site).length > 80 ? `${argsText(site).slice(0, 77)}…` : argsText(site)})`;
  lines.push(`\`${call}\`${where(site)}.`);
  lines.push('');
  lines.push(WHY[site.kind]);
  const at = site.attention;
  if (at?.form === 'eager-block') {
    const parts = [
      ['scores', at.scoresLine],
      ['mask', at.maskLine],
      ['softmax', at.softmaxLine],
      ['dropout', at.dropoutLine],
      ['@ v', at.outputLine],
    ].filter((p): p is [string, number] => p[1] !== undefined);
    lines.push('', `Found: ${parts.map(([k, l]) => `${k} (line ${l + 1})`).join(' → ')}.`);
  } else if (at?.valueText !== undefined && at.defaultLine !== undefined) {
    lines.push('', `\`${at.valueText}\` defaults to "eager" on line ${at.defaultLine + 1}.`);
  }
  if (a) {
    const saving = a.savingBytes !== undefined ? `${a.basis === 'measured' ? '' : '≈'}${formatBytes(a.savingBytes)}${perSample(e)}${shapeLabel(e)}` : site.kind === 'optimizer' ? 'none (the state keeps its size)' : 'shape unknown';
    const needs = (a.requires ?? []).join(', ') || '—';
    lines.push('', '| lever | saving at the peak | basis | cost | needs |', '|---|---|---|---|---|');
    lines.push(`| ${LEVER_TITLE[a.lever]} | ${saving} | ${a.basis} | ${a.cost ?? '—'} | ${needs} |`);
    if (site.kind === 'optimizer' && e.stateBytes !== undefined) lines.push('', `State: **${a.basis === 'measured' ? '' : '≈'}${formatBytes(e.stateBytes)}** (2 × fp32 per parameter).`);
  }
  lines.push('', `_${sourceText(e)}${e.note ? `: ${e.note}` : ''}._`);
  if (a?.unavailable) lines.push('', `**Not available with the installed torch:** ${a.unavailable}.`);
  else if (site.remedy) lines.push('', site.remedy);
  if (!caps) lines.push('', '_Not checked against an installed torch (none found, or the workspace is not trusted)._');
  if (a?.docs) lines.push('', `[Documentation](${a.docs})`);
  return lines.join('\n');
}

/** Markdown for a hover over the site. `caps`: what the installed torch can do (for the advisor's kinds). */
export function formatHover(site: Site, caps?: TorchCapabilities | null): string {
  if (isAdvisor(site.kind)) return adviceHover(site, caps);
  const e = site.estimate;
  const lines: string[] = [];
  lines.push(`**Membit · ${KIND_TITLE[site.kind]}** \`${site.code}\``);
  lines.push('');
  const args = argsText(site);
  const via = site.aliasOf ? `, through a local variable bound to \`${site.aliasOf}\`` : '';
  lines.push(`\`${site.callee}(${args.length > 80 ? `${args.slice(0, 77)}…` : args})\`${via}${where(site)}${site.binding ? `, bound to \`${site.binding}\`` : ''}.`);
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
    if (site.sparse24) {
      lines.push('');
      lines.push(`**${site.sparse24.text}** — ${site.sparse24.basis}.`);
      if (site.sparse24.verdict !== 'faster') {
        lines.push('Training time would not improve here: the 2:4 kernels pay off only on large products, and the weights are compressed again every step.');
      }
    }
  } else if (e.maskBytes !== undefined) {
    if (e.packedBytes !== undefined) {
      // A blank line first: without it the table renders as one run-on paragraph.
      if (lines.length && lines[lines.length - 1] !== '') lines.push('');
      lines.push('| | now | packed | saved |', '|---|---:|---:|---:|');
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
  // The note may repeat the source (an older estimate's note): say it once.
  const src = sourceText(e);
  lines.push(`_${src}${e.note && !src.startsWith(e.note) ? `: ${e.note}` : ''}._`);
  if (site.remedy) {
    lines.push('');
    lines.push(site.remedy);
  }
  if (site.compiled) {
    lines.push('');
    lines.push(compiledDropoutHover(site.compiled.what, site.compiled.line + 1));
  }
  const action = ACTION[site.kind];
  if (action && !site.compiled && !(e.maskBytes === 0 && e.source !== 'report' && site.kind !== 'ffn')) {
    lines.push('');
    lines.push(action);
  }
  return lines.join('\n');
}

/** Which site speaks first on a line: the biggest levers, then the scanner's sites, the optimizer note last. */
const HINT_ORDER: Partial<Record<SiteKind, number>> = { 'eager-attn': 0, checkpoint: 1, 'no-autocast': 2, optimizer: 9 };

/** One site per line for end-of-line hints, in line order. */
export function hintSites(sites: readonly Site[]): Site[] {
  const byLine = new Map<number, Site>();
  const rank = (s: Site) => (s.advice?.unavailable ? 8 : (HINT_ORDER[s.kind] ?? 5));
  for (const s of sites) {
    const cur = byLine.get(s.range.startLine);
    if (!cur || rank(s) < rank(cur)) byLine.set(s.range.startLine, s);
  }
  return [...byLine.values()].sort((a, b) => a.range.startLine - b.range.startLine);
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
  /** What the advisor's levers (fused attention, checkpointing) would save, per lever. */
  savings: Partial<Record<AdviceLever, number>>;
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
  'eager-attn': 'eager attn',
  'no-autocast': 'fp32 step',
  checkpoint: 'checkpointable',
  optimizer: 'optimizer',
};

const LEVER_SHORT: Partial<Record<AdviceLever, string>> = { sdpa: 'fused attention', checkpoint: 'checkpointing', autocast: 'bf16 autocast' };

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
      s = { className: cls.name, range: cls.range, counts: {}, sites: 0, maskBytes: 0, packedBytes: 0, packableBytes: 0, unknown: 0, perSample: false, savings: {}, title: '' };
      out.set(key, s);
    }
    s.sites++;
    s.counts[site.kind] = (s.counts[site.kind] ?? 0) + 1;
    const e = site.estimate;
    const a = site.advice;
    if (isAdvisor(site.kind)) {
      if (a && !a.unavailable && a.savingBytes !== undefined && LEVER_SHORT[a.lever]) {
        s.savings[a.lever] = (s.savings[a.lever] ?? 0) + a.savingBytes;
        if (e.perSample) s.perSample = true;
      }
      continue;
    }
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
    // Levers overlap (fused attention also removes what checkpointing would free): shown side by side, never summed.
    const levers = (Object.entries(s.savings) as [AdviceLever, number][]).map(([l, bytes]) => `${LEVER_SHORT[l]} saves ~${formatBytes(bytes)}${per}`);
    if (levers.length) mem += `${mem ? ';' : ' —'} ${levers.join(', ')}`;
    s.title = `Membit: ${parts.join(' · ')}${mem}`;
  }
  return summaries;
}
