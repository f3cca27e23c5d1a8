/**
 * How a run is named wherever the user picks or sees one (status bar, pickers, hovers):
 * its variant, where and when it ran, its peak and its arguments. Pure.
 */
import { formatBytes } from '../units';

/** What a picker shows about a run; read from an untrusted report, so every field is checked. */
export interface RunBrief {
  script: string;
  variant: string;
  target: string;
  started: string;
  status: string;
  device: string;
  /** `cpu`, `cuda`, … as the harness names the device type. */
  deviceType: string;
  peak: number | null;
  argv: string[];
  stepTimeS: number | null;
}

const str = (v: unknown, dflt: string): string => (typeof v === 'string' ? v : dflt);
const numOrNull = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Pulls the brief out of a parsed report; undefined when it is not shaped like one. */
export function runBrief(doc: unknown): RunBrief | undefined {
  if (!doc || typeof doc !== 'object') return undefined;
  const { run, summary } = doc as { run?: Record<string, unknown>; summary?: Record<string, unknown> };
  if (!run || typeof run !== 'object' || !summary || typeof summary !== 'object') return undefined;
  const target = run['target'] && typeof run['target'] === 'object' ? (run['target'] as Record<string, unknown>) : {};
  const device = run['device'] && typeof run['device'] === 'object' ? (run['device'] as Record<string, unknown>) : {};
  return {
    script: str(run['script'], '?'),
    variant: str(run['variant'], '?'),
    target: target['kind'] === 'ssh' ? str(target['host'], 'ssh') : 'local',
    started: str(run['started'], ''),
    status: str(run['status'], '?'),
    device: str(device['name'], 'device unknown'),
    deviceType: str(device['type'], '?'),
    peak: numOrNull(summary['peak_allocated']) ?? numOrNull(summary['tracked_at_peak']),
    argv: Array.isArray(run['argv']) ? run['argv'].filter((a): a is string => typeof a === 'string') : [],
    stepTimeS: numOrNull(summary['step_time_s']),
  };
}

/** `14:03:12`: the local time of a run, short enough for a status bar. */
export function shortTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '?';
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

/** `baseline · local 14:03:12`: which run, for labels. */
export function runName(b: Pick<RunBrief, 'variant' | 'target' | 'started'>): string {
  return `${b.variant} · ${b.target} ${shortTime(b.started)}`;
}

/** `peak 12.3 MiB · CPU · --steps 20 --batch-size 2`: what tells runs apart in a picker. */
export function runDetail(b: RunBrief, maxArgs = 60): string {
  const parts = [b.status === 'ok' ? `peak ${b.peak === null ? '?' : formatBytes(b.peak)}` : `${b.status.toUpperCase()}${b.peak === null ? '' : ` at ${formatBytes(b.peak)}`}`];
  parts.push(b.deviceType === 'cpu' ? 'CPU' : b.device);
  const args = b.argv.join(' ');
  parts.push(args ? (args.length > maxArgs ? `${args.slice(0, maxArgs - 1)}…` : args) : 'no arguments');
  return parts.join(' · ');
}
