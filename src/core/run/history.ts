/**
 * Where run reports live: `<workspace>/<folder>/<stamp>_<target>_<variant>.json`.
 * The name carries what the history list shows, so listing needs no file reads.
 */

export interface RunName {
  started: Date;
  target: string;
  /** A variant (see Variant), or any name the caller gives the run. */
  variant: string;
}

/** Keeps a name to letters, digits, dot, dash and plus: safe on every file system. */
export function safeNamePart(s: string): string {
  const cleaned = s.replace(/[^A-Za-z0-9.+-]+/g, '-').replace(/^-+|-+$/g, '');
  return cleaned.slice(0, 60) || 'x';
}

export function runFileName(r: RunName): string {
  const stamp = r.started.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${stamp}_${safeNamePart(r.target)}_${safeNamePart(r.variant)}.json`;
}

export function parseRunFileName(name: string): RunName | undefined {
  const [, s, target, variant] = /^(\d{8}T\d{6}Z)_([A-Za-z0-9.+-]+)_([A-Za-z0-9.+-]+)\.json$/.exec(name) ?? [];
  if (s === undefined || target === undefined || variant === undefined) return undefined;
  const iso = `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}Z`;
  const started = new Date(iso);
  if (Number.isNaN(started.getTime())) return undefined;
  return { started, target, variant };
}
