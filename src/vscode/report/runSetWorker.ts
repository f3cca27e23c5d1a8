/**
 * Worker thread that holds a run set: it reads and validates every rank's report (64 ranks of
 * tens of MB each would block the extension host for seconds), and answers with the small
 * per-rank facts and the one report the overlays show (the max over ranks, or a picked rank).
 * Plain Node (no vscode import): the benchmark starts it exactly as the extension does.
 */
import { readFileSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { loadRunSet, overlayReport, runSetInfo, thinTimeline, type RunSet, type RunSetInfo } from '../../core/report/runset';
import { REPORT_SCHEMA } from '../../core/report/schema';
import { overlayText, type OverlayText, type RunSetRequest, type RunSetResponse } from './runSetProtocol';

let set: RunSet | undefined;

function overlayOf(s: RunSet, pick: number | undefined): OverlayText | null {
  const o = overlayReport(s, pick);
  return o ? overlayText(o) : null;
}

function answer(req: RunSetRequest): RunSetResponse {
  try {
    if (req.type === 'load') {
      set = undefined; // the previous set's memory goes first
      const timelines: RunSetInfo['timelines'] = [];
      // Each rank's timeline is thinned as it is parsed, then dropped: the overlays need lines,
      // modules and sites, and 64 full allocator timelines would hold gigabytes.
      set = loadRunSet(req.file, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA, (rank, r) => {
        const tl = thinTimeline(rank, r);
        if (tl) timelines.push(tl);
        return { ...r, timeline: null };
      });
      timelines.sort((a, b) => a.rank - b.rank);
      return { id: req.id, ok: true, info: runSetInfo(set, timelines), overlay: overlayOf(set, req.pick) };
    }
    if (!set) return { id: req.id, ok: false, error: 'no run set loaded' };
    return { id: req.id, ok: true, overlay: overlayOf(set, req.pick) };
  } catch (e) {
    return { id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

parentPort?.on('message', (req: RunSetRequest) => parentPort?.postMessage(answer(req)));
