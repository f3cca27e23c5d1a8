/**
 * Variant names: `baseline`, or a `+`-joined set of levers the harness applies to the
 * model at its first forward. The same rules as the harness (kernels/membit/profile/levers.py),
 * so a bad name is refused before anything runs, with the same words.
 *
 *   packed | recompute   dropout masks at 1 bit per element / none (exclusive)
 *   sparse24             FFN linears as 2:4 sparse
 *   sdpa                 fused attention (HF switch, or rewritten source through --overlay)
 *   checkpoint           activation checkpointing of the model's blocks
 *   bf16                 the model's forward under bf16 autocast
 *   compile              the model's forward through torch.compile (eager vs compiled)
 */

export const LEVERS = ['packed', 'recompute', 'sparse24', 'sdpa', 'checkpoint', 'bf16', 'compile'] as const;
export type Lever = (typeof LEVERS)[number];

/** The memory advisor's levers: the big ones, measured against the baseline by Compare Variants. */
export const ADVISOR_LEVERS: readonly Lever[] = ['sdpa', 'checkpoint', 'bf16'];

/** Every advisor lever at once. */
export const ALL_ADVISOR_LEVERS = 'sdpa+checkpoint+bf16';

/** The variants Compare Variants offered before the advisor levers (kept working). */
export const CONVERSION_VARIANTS = ['packed', 'recompute', 'sparse24', 'packed+sparse24'] as const;

const EXCLUSIVE: readonly [Lever, Lever][] = [['packed', 'recompute']];

export class VariantError extends Error {}

function isLever(s: string): s is Lever {
  return (LEVERS as readonly string[]).includes(s);
}

/** The levers of a variant in canonical order ([] for baseline); throws VariantError saying what to write. */
export function parseVariant(text: string): Lever[] {
  const name = text.trim();
  if (name === 'baseline') return [];
  const parts = name.split('+');
  if (!name || parts.some((p) => !p)) {
    throw new VariantError(`bad variant "${text}": write "baseline" or levers joined by "+" (from ${LEVERS.join(', ')}), e.g. ${ALL_ADVISOR_LEVERS}`);
  }
  const unknown = parts.filter((p) => !isLever(p));
  if (unknown.length) {
    const hint = unknown.includes('baseline') ? ' ("baseline" stands alone)' : '';
    throw new VariantError(`unknown lever(s) ${unknown.map((u) => `"${u}"`).join(', ')} in variant "${text}"${hint}; levers are ${LEVERS.join(', ')}`);
  }
  const dup = [...new Set(parts.filter((p, i) => parts.indexOf(p) !== i))].sort();
  if (dup.length) throw new VariantError(`variant "${text}" names ${dup.join(', ')} twice`);
  for (const [a, b] of EXCLUSIVE) {
    if (parts.includes(a) && parts.includes(b)) throw new VariantError(`variant "${text}": ${a} and ${b} are two ways to store the same dropout masks; pick one`);
  }
  return LEVERS.filter((l) => parts.includes(l));
}

/** The canonical name of a set of levers. */
export function variantName(levers: readonly Lever[]): string {
  return LEVERS.filter((l) => levers.includes(l)).join('+') || 'baseline';
}

/** The canonical spelling of a variant name (throws VariantError when it is not one). */
export function canonicalVariant(text: string): string {
  return variantName(parseVariant(text));
}

/** Whether a variant includes a lever (false for names that do not parse). */
export function hasLever(variant: string | undefined, lever: Lever): boolean {
  if (!variant) return false;
  try {
    return parseVariant(variant).includes(lever);
  } catch {
    return false;
  }
}

/** What a variant changes, in a few words, for pickers and logs. */
export function describeVariant(text: string): string {
  const words: Record<Lever, string> = {
    packed: 'dropout masks at 1 bit per element',
    recompute: 'no dropout masks (recomputed)',
    sparse24: '2:4 sparse FFNs',
    sdpa: 'fused attention (SDPA)',
    checkpoint: 'activation checkpointing',
    bf16: 'bf16 autocast',
    compile: 'torch.compile of the forward',
  };
  const levers = parseVariant(text);
  return levers.length ? levers.map((l) => words[l]).join(' + ') : 'the script as written';
}
