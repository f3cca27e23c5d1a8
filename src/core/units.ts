/**
 * The one place that turns byte counts (and relative changes) into text. Every surface (hints, diagnostics,
 * hovers, CodeLens, status bar, report view, CLI, Markdown export) formats memory through
 * this module, so one quantity reads the same everywhere.
 *
 * Binary units (KiB, MiB, GiB: powers of 1024), as PyTorch's memory tools and
 * `torch.cuda.memory_summary` print them. Three significant digits.
 *
 * DOM-safe: no Node or VS Code imports, so the webview bundle uses it too.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** `96 MiB`, `1.5 GiB`, `512 B`; negative sizes keep their sign (`−2 MiB`); '?' when not a number. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const sign = n < 0 ? '−' : '';
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  // Three significant digits; rounding 1023.6 KiB up would print "1024 KiB", so carry into the next unit.
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  let rounded = Number(v.toFixed(digits));
  if (rounded >= 1024 && u < UNITS.length - 1) {
    u++;
    rounded = Number((rounded / 1024).toFixed(2));
  }
  return `${sign}${rounded} ${UNITS[u]}`;
}

/** A signed difference: `+2 MiB`, `−512 KiB`, `±0 B`. */
export function formatBytesDelta(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n === 0) return '±0 B';
  return n > 0 ? `+${formatBytes(n)}` : formatBytes(n);
}

/**
 * A relative change (a fraction: -0.074 for −7.4%) as a signed percentage with one decimal:
 * `+1.9%`, `−7.4%`, and `±0.0%` when it rounds to zero (a real minus sign, as formatBytes).
 */
export function formatPercentChange(rel: number): string {
  if (!Number.isFinite(rel)) return '?';
  const tenths = Math.round(rel * 1000);
  if (tenths === 0) return '±0.0%';
  return `${tenths > 0 ? '+' : '−'}${(Math.abs(tenths) / 10).toFixed(1)}%`;
}
