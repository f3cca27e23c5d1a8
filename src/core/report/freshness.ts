/**
 * Whether the text on screen is the code a run measured, decided by content: the report
 * records the sha256 of every file it attributes (`sources`), and a document whose text
 * hashes the same is current, whatever edits, undos and saves happened in between.
 * Reports of earlier versions carry no hashes; for them the caller falls back to times.
 */
import { createHash } from 'node:crypto';
import type { MeasuredLine, MeasuredModule, ShapeHints } from '../scan/types';
import { normalizePath } from './model';
import type { Report } from './types';

/** sha256 of a document's text as UTF-8 (an editor buffer holds no byte-order mark). */
export function textSha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** The hash the run recorded for a file (relative to the run root); undefined when none. */
export function profiledHash(report: Report, relativePath: string): string | undefined {
  const rel = normalizePath(relativePath);
  const hit = report.sources?.find((s) => normalizePath(s.file) === rel);
  return hit && /^[0-9a-f]{64}$/.test(hit.sha256) ? hit.sha256 : undefined;
}

export type Freshness = 'current' | 'edited' | 'unknown';

/**
 * `current`: the text is what ran; `edited`: it differs; `unknown`: the report has no
 * hash for the file (a report of an earlier version, or a file outside the run's root).
 */
export function freshness(report: Report, relativePath: string, text: string): Freshness {
  const want = profiledHash(report, relativePath);
  if (!want) return 'unknown';
  return textSha256(text) === want ? 'current' : 'edited';
}

/**
 * Moves the measured figures of a file onto the lines they sit on now (`at` maps a
 * 1-based report line to a 1-based current line, undefined where that line's text is
 * gone), so hints on construction lines follow edits just as the overlays do.
 */
export function remapShapeHints(hints: ShapeHints, at: (reportLine: number) => number | undefined): ShapeHints {
  const byLine = new Map<number, MeasuredLine>();
  for (const [l, m] of hints.byLine) {
    const cur = at(l);
    if (cur !== undefined) byLine.set(cur, m);
  }
  const out: ShapeHints = { byLine };
  if (hints.savedByLine) {
    const saved = new Map<number, number>();
    for (const [l, b] of hints.savedByLine) {
      const cur = at(l);
      if (cur !== undefined) saved.set(cur, (saved.get(cur) ?? 0) + b);
    }
    out.savedByLine = saved;
  }
  if (hints.modules) {
    out.modules = hints.modules.map((m): MeasuredModule => {
      if (m.createdLine === undefined) return m;
      const cur = at(m.createdLine);
      const { createdLine: _drop, ...rest } = m;
      return cur === undefined ? rest : { ...rest, createdLine: cur };
    });
  }
  if (hints.run) out.run = hints.run;
  return out;
}
