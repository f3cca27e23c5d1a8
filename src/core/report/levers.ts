/**
 * Every lever on one list, largest saving first: what the variant runs measured against
 * the shown baseline, what the scanner estimates for levers not yet measured, and what
 * packing the dropout masks would save by this run's own mask sizes. The report view shows
 * it, so the biggest lever is on top whatever its kind. Pure.
 */
import type { AdviceLever } from '../scan/types';
import { formatBytes } from '../units';
import { contradicts, NO_SAVING, type LeverMeasurement } from './leverDeltas';

/** A scanner finding's estimated saving, at the line it was found. */
export interface LeverEstimate {
  lever: AdviceLever;
  savingBytes: number;
  file: string;
  line: number;
}

export interface LeverRow {
  /** The variant that applies the lever (`sdpa`, `bf16`, …), or the advice-only lever's name. */
  lever: string;
  title: string;
  /** Bytes saved at the peak; negative when the lever cost memory; null when unknown. */
  savedBytes: number | null;
  /** savedBytes / the baseline's peak. */
  share: number | null;
  /** `measured, run sdpa · local 14:05:12`, `estimate (scan of gpt.py)`, `this run's mask sizes`. */
  basis: string;
  measured: boolean;
  where: { file: string; line: number } | null;
  note: string | null;
}

const TITLES: Record<string, string> = {
  sdpa: 'Fused attention (SDPA)',
  bf16: 'bf16 autocast',
  checkpoint: 'Activation checkpointing',
  packed: 'Packed 1-bit dropout masks',
  recompute: 'Mask-free dropout (recompute)',
  sparse24: '2:4 sparse FFN',
  'fused-optimizer': 'Fused optimizer step',
};

/** The variant that measures an advice lever (is_causal is measured by the sdpa variant). */
function variantOf(lever: AdviceLever): string {
  switch (lever) {
    case 'autocast':
      return 'bf16';
    case 'is-causal':
      return 'sdpa';
    default:
      return lever;
  }
}

export function leverTitle(variant: string): string {
  return TITLES[variant] ?? variant;
}

export function rankLevers(input: {
  peak: number;
  measured: ReadonlyMap<string, LeverMeasurement>;
  estimates: readonly LeverEstimate[];
  /** What packing every measured dropout mask would save, from this run's sites; null without sites. */
  packSaving: number | null;
  /** The scanned file, named in estimate rows. */
  scanned?: string;
}): LeverRow[] {
  const { peak, measured } = input;
  const share = (b: number | null) => (b === null || peak <= 0 ? null : b / peak);
  const est = new Map<string, { bytes: number; where: { file: string; line: number }; sites: number }>();
  for (const e of input.estimates) {
    if (!(e.savingBytes > 0)) continue;
    const v = variantOf(e.lever);
    const prev = est.get(v);
    if (prev) {
      prev.bytes += e.savingBytes;
      prev.sites += 1;
    } else est.set(v, { bytes: e.savingBytes, where: { file: e.file, line: e.line }, sites: 1 });
  }
  const rows: LeverRow[] = [];
  for (const m of measured.values()) {
    const e = est.get(m.variant);
    const notes: string[] = [];
    if (Math.abs(m.rel) < NO_SAVING) notes.push('no saving: the peak moved by less than 1%');
    if (e) notes.push(`estimated ${formatBytes(e.bytes)}${contradicts(m, e.bytes) ? '; the measurement contradicts the estimate' : ''}`);
    rows.push({
      lever: m.variant,
      title: leverTitle(m.variant),
      savedBytes: m.savedBytes,
      share: share(m.savedBytes),
      basis: `measured, run ${m.run}`,
      measured: true,
      where: e?.where ?? null,
      note: notes.length ? notes.join('; ') : null,
    });
  }
  for (const [v, e] of est) {
    if (measured.has(v)) continue;
    rows.push({
      lever: v,
      title: leverTitle(v),
      savedBytes: e.bytes,
      share: share(e.bytes),
      basis: `estimate${input.scanned ? ` (scan of ${input.scanned})` : ''}`,
      measured: false,
      where: e.where,
      note: e.sites > 1 ? `${e.sites} sites` : null,
    });
  }
  if (input.packSaving !== null && input.packSaving > 0 && !measured.has('packed')) {
    rows.push({
      lever: 'packed',
      title: leverTitle('packed'),
      savedBytes: input.packSaving,
      share: share(input.packSaving),
      basis: "this run's mask sizes",
      measured: false,
      where: null,
      note: 'see the sites below',
    });
  }
  return rows.sort((a, b) => (b.savedBytes ?? -Infinity) - (a.savedBytes ?? -Infinity) || a.title.localeCompare(b.title));
}
