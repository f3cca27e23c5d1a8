/**
 * The command line of the profiling harness (`python -m membit.profile`) and the
 * progress lines it prints. Pure: local and SSH runs build the same argv and only
 * differ in what they put in front of it.
 */
import type { Variant } from '../settings';

/**
 * An overlay as the harness takes it (`--overlay ORIG=REPLACEMENT`): both paths on the machine
 * that runs. Declared here, not in overlays.ts, so the webview's build (no Node types) can import
 * this module.
 */
export interface OverlayArg {
  orig: string;
  replacement: string;
}

export interface HarnessOptions {
  python: string;
  script: string;
  scriptArgs: readonly string[];
  out: string;
  variant?: Variant | undefined;
  steps?: number | undefined;
  warmup?: number | undefined;
  /** Folder that report paths are made relative to. */
  root?: string;
  /** JSON file of file:line sites to convert (chosen in the editor). */
  sites?: string | undefined;
  /** Files to run in place of the user's (the sdpa lever's rewritten source), paths as the target sees them. */
  overlays?: readonly OverlayArg[];
}

/** argv for the harness; never a shell string, so file names need no quoting here. */
export function harnessArgv(o: HarnessOptions): [string, ...string[]] {
  const argv: [string, ...string[]] = [o.python, '-m', 'membit.profile', '--out', o.out];
  if (o.variant) argv.push('--variant', o.variant);
  if (o.steps !== undefined) argv.push('--steps', String(o.steps));
  if (o.warmup !== undefined) argv.push('--warmup', String(o.warmup));
  if (o.root) argv.push('--root', o.root);
  if (o.sites) argv.push('--sites', o.sites);
  // One argv entry each: a name with spaces, quotes or '=' stays whole (the harness
  // resolves an '=' inside a name by which split names existing files).
  for (const ov of o.overlays ?? []) argv.push('--overlay', `${ov.orig}=${ov.replacement}`);
  argv.push('--', o.script, ...o.scriptArgs);
  return argv;
}

export type ProgressEvent =
  | { event: 'started'; pid?: number; device?: string; steps?: number; warmup?: number }
  | { event: 'step'; step: number; total: number; allocated?: number; peak?: number; phase?: string }
  | { event: 'finished'; status: 'ok' | 'oom' | 'error' | 'cancelled'; report?: string }
  | { event: string; [k: string]: unknown };

/** Lines the harness writes to stderr for us start with this; the user's own lines do not. */
export const PROGRESS_PREFIX = '@@membit ';

/**
 * Environment variable that gives the harness a per-run token: its progress lines are then
 * `@@membit TOKEN {json}`, and only those are believed. The harness removes it from its
 * environment before the script runs, so a script (or a log it replays) cannot fake progress.
 */
export const PROGRESS_TOKEN_ENV = 'MEMBIT_PROGRESS_TOKEN';

/**
 * Parses one stderr line; undefined for the user's own output or a malformed line. With a
 * `token`, only lines that carry it count: `@@membit {…}` without it is the script's output.
 */
export function parseProgressLine(line: string, token?: string): ProgressEvent | undefined {
  const prefix = token ? `${PROGRESS_PREFIX}${token} ` : PROGRESS_PREFIX;
  if (!line.startsWith(prefix)) return undefined;
  try {
    const v = JSON.parse(line.slice(prefix.length)) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v) && typeof (v as { event?: unknown }).event === 'string') return v as ProgressEvent;
  } catch {
    // A truncated line (process killed mid-write) is not progress.
  }
  return undefined;
}

/** Splits a byte stream into lines, keeping the unfinished tail for the next chunk. */
export class LineSplitter {
  private tail = '';
  push(chunk: string): string[] {
    const parts = (this.tail + chunk).split(/\r?\n/);
    this.tail = parts.pop() ?? '';
    return parts;
  }
  flush(): string[] {
    const t = this.tail;
    this.tail = '';
    return t ? [t] : [];
  }
}
