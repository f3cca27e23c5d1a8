/**
 * Messages between the report view and the extension. Shared by both sides; the
 * extension validates everything that comes from the webview before acting on it.
 */
import type { Comparison } from '../../src/core/report/compare';
import type { LeverRow } from '../../src/core/report/levers';
import type { RunSetInfo } from '../../src/core/report/runsetTypes';
import type { SiteState } from '../../src/core/report/siteState';
import type { ReportView } from '../../src/core/report/view';

export type ToWebview = ShowMessage | SitesMessage;

/** The sites of the shown report, where they are now: sent again after every edit of their files. */
export interface SitesMessage {
  type: 'sites';
  states: SiteState[];
}

export interface ShowMessage {
  type: 'show';
  views: ReportView[];
  comparison: Comparison | null;
  markdown: string | null;
  /** Report files shown, kept as webview state so the view comes back after a reload. */
  uris: string[];
  /** A run set: every rank's facts and which rank the view (and the editor) shows; null for one report. */
  ranks?: { info: RunSetInfo; pick: number | null } | null;
  /** Per site of the first view (same order): where it is now and whether it was converted. */
  sites?: SiteState[];
  /** Every lever, measured or estimated, largest saving first. */
  levers?: LeverRow[];
  /** The section a command just added or asked for: the view scrolls to it. */
  focus?: string | null;
}

export type FromWebview =
  | { command: 'ready' }
  | { command: 'open'; file: string; line: number }
  | { command: 'convert'; file: string; line: number; kind: string; module: string | null }
  | { command: 'copy'; text: string }
  /** Show this rank of the run set (null: the max over ranks), here and in the editor. */
  | { command: 'pickRank'; rank: number | null }
  | { command: 'rendered'; summary: RenderedSummary };

/** What the view drew, reported back so tests check figures, not pixels. */
export interface RenderedSummary {
  charts: string[];
  tables: Record<string, number>;
  peakText: string;
  /** The per-layer chart's bar labels, top first. */
  layers?: string[];
  /** The per-layer chart's drawn segments. */
  segments?: string[];
  /** Per site row: the line its link opens and what the row offers. */
  sites?: { line: number | null; action: 'convert' | 'converted' | 'gone' }[];
  /** The levers table's rows as drawn. */
  levers?: string[];
  /** A run set's rank the view shows (null: the max over ranks); absent for one report. */
  rankPick?: number | null;
  /** The section scrolled to, and how far its top is from the view's top (px). */
  focused?: { id: string; top: number } | null;
}

/** Validates a message from the webview; anything else is dropped. */
export function parseFromWebview(m: unknown): FromWebview | undefined {
  if (!m || typeof m !== 'object') return undefined;
  const o = m as Record<string, unknown>;
  const okLoc = typeof o['file'] === 'string' && o['file'].length > 0 && o['file'].length < 4096 && Number.isInteger(o['line']) && (o['line'] as number) >= 1;
  switch (o['command']) {
    case 'ready':
      return { command: 'ready' };
    case 'open':
      return okLoc ? { command: 'open', file: o['file'] as string, line: o['line'] as number } : undefined;
    case 'convert':
      return okLoc && typeof o['kind'] === 'string' && (o['module'] === null || (typeof o['module'] === 'string' && o['module'].length < 1000))
        ? { command: 'convert', file: o['file'] as string, line: o['line'] as number, kind: o['kind'], module: o['module'] }
        : undefined;
    case 'pickRank':
      return o['rank'] === null || (Number.isInteger(o['rank']) && (o['rank'] as number) >= 0 && (o['rank'] as number) < 1_000_000) ? { command: 'pickRank', rank: o['rank'] as number | null } : undefined;
    case 'copy':
      return typeof o['text'] === 'string' && o['text'].length < 1_000_000 ? { command: 'copy', text: o['text'] } : undefined;
    case 'rendered': {
      const s = o['summary'] as { charts?: unknown; peakText?: unknown; tables?: unknown } | null | undefined;
      return s && Array.isArray(s.charts) && typeof s.peakText === 'string' && s.tables && typeof s.tables === 'object' ? { command: 'rendered', summary: s as RenderedSummary } : undefined;
    }
    default:
      return undefined;
  }
}
