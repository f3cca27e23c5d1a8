import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { UsageError } from './args';
import type { Subcommand } from './command';
import { compareRuns, comparisonMarkdown } from '../report/compare';
import { parseReport } from '../report/model';
import { REPORT_SCHEMA } from '../report/schema';
import { peakBytes, type Report } from '../report/types';
import { formatBytes } from '../units';
import { formatStepTime, stepStats } from '../report/stepTime';
import { jsonTerminalSafe, terminalSafe } from '../untrusted';
import { EstimateError, estimateFsdp } from '../report/fsdpEstimate';
import { isRunSetText, loadRunSet, rankPeaks, runSetText } from '../report/runset';
import { isSnapshotName, openSnapshot, SnapshotError } from '../snapshot';
import { writeFileAtomic } from '../atomicWrite';
import type { ParsedArgs } from './args';
import type { Io } from './command';
import { itemAt } from '../arrays';

function load(path: string): Report {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const r = parseReport(text, REPORT_SCHEMA, path);
  // The error can quote the report's strings: no control character reaches the terminal.
  if (!r.ok) throw new Error(terminalSafe(r.error));
  return r.report;
}

/** Reads a memory snapshot (never unpickled: see src/core/snapshot) as a report. */
async function loadSnapshot(path: string, root: string): Promise<Report> {
  try {
    return await openSnapshot(path, { root });
  } catch (e) {
    if (e instanceof SnapshotError) throw new Error(e.message, { cause: e });
    throw e;
  }
}

/** What only a snapshot's report has: its source, OOM events and segments. */
function snapshotText(r: Report): string[] {
  const out: string[] = [];
  const src = r.source;
  if (!src) return out;
  const seg = r.segments;
  if (seg) {
    out.push('', `segments at the dump: ${seg.count} · reserved ${formatBytes(seg.reserved)} · allocated ${formatBytes(seg.allocated)} · reserved but free ${formatBytes(seg.free)} (largest free block ${formatBytes(seg.largest_free)})`);
  }
  for (const e of r.oom_events ?? []) {
    const at = e.frames[0];
    out.push(`out of memory${e.t_ms !== null ? ` at ${(e.t_ms / 1000).toFixed(3)} s` : ''}: asked for ${formatBytes(e.requested_bytes)} with ${formatBytes(e.allocated)} allocated, ${formatBytes(e.reserved)} reserved${at ? ` at ${at.file}:${at.line}` : ''}`);
  }
  for (const n of r.run.notes) out.push(`note: ${n}`);
  return out;
}

/** A plain-text summary of one report: the answer to "what was the peak, and who held it". */
export function summaryText(r: Report, topLines = 10): string {
  const s = r.summary;
  const out: string[] = [];
  const cpu = s.peak_allocated === null;
  const src = r.source;
  if (src) {
    out.push(`snapshot ${src.files.join(', ')} · ${r.run.device.name}${src.rank !== null && src.rank !== undefined ? ` · rank ${src.rank}` : ''} · ${src.entries ?? 0} trace entries · stacks ${src.stacks ?? 'none'} · ${r.run.status}`);
    out.push(`peak ${formatBytes(peakBytes(r))} allocated${src.history ? ' (replayed from the allocation history)' : ' at the dump (no history recorded)'} · reserved ${formatBytes(s.peak_reserved ?? 0)}`);
    const rows: [string, number][] = [['optimizer state', s.optimizer_state_at_peak]];
    if (src.stacks === 'all') rows.push(['gradients', s.grads_at_peak]);
    rows.push(['unattributed', s.unattributed_at_peak ?? 0]);
    for (const [k, v] of rows) out.push(`  ${k.padEnd(16)}${formatBytes(v).padStart(10)}`);
    if (r.lines.length) {
      out.push('', 'lines whose allocations were live at the peak (innermost workspace frame):');
      for (const l of r.lines.slice(0, topLines)) out.push(`  ${`${l.file}:${l.line}`.padEnd(32)}${formatBytes(l.saved_bytes).padStart(10)}  ${l.tensors} block${l.tensors === 1 ? '' : 's'}  ${l.func}`);
    }
    if (r.peak.top.length) {
      out.push('', 'largest blocks at the peak:');
      for (const h of r.peak.top.slice(0, 5)) {
        const f = h.frames[0];
        out.push(`  ${formatBytes(h.bytes).padStart(10)}  ${h.category === 'other' ? 'unattributed' : h.category}  ${f ? `${f.file}:${f.line} ${f.name}` : '(no frames)'}`);
      }
    }
    out.push(...snapshotText(r));
    return `${out.join('\n')}\n`;
  }
  out.push(`${r.run.script} · ${r.run.variant} · ${r.run.device.name} · torch ${r.run.torch} · ${r.run.status}${r.run.error ? `: ${r.run.error.split('\n').filter(Boolean).slice(-1)[0]}` : ''}`);
  out.push(`peak ${formatBytes(peakBytes(r))}${cpu ? ' (named by the harness; CPU keeps no allocator record)' : ''}`);
  const rows: [string, number | null][] = [
    ['parameters', s.params_at_peak],
    ['gradients', s.grads_at_peak],
    ['optimizer state', s.optimizer_state_at_peak],
    ['activations', s.activations_at_peak],
    ['masks', s.masks_at_peak],
    ['unattributed', s.unattributed_at_peak],
  ];
  for (const [k, v] of rows) if (v !== null) out.push(`  ${k.padEnd(16)}${formatBytes(v).padStart(10)}`);
  if (s.step_time_s !== null) out.push(`step ${formatStepTime(stepStats(s.step_times_s), s.step_time_s)}${s.samples_per_s !== null ? ` · ${s.samples_per_s.toFixed(1)} samples/s` : ''}`);
  if (r.lines.length) {
    out.push('', 'lines holding the most (saved for backward):');
    for (const l of [...r.lines].sort((a, b) => b.saved_bytes - a.saved_bytes).slice(0, topLines)) {
      out.push(`  ${`${l.file}:${l.line}`.padEnd(32)}${formatBytes(l.saved_bytes).padStart(10)}${l.mask_bytes ? `  mask ${formatBytes(l.mask_bytes)}` : ''}  ${l.module ?? ''}`);
    }
  }
  if (r.sites.length) {
    const saving = r.sites.reduce((a, x) => a + x.saving_if_packed, 0);
    out.push('', `packing every dropout mask would save ${formatBytes(saving)}`);
  }
  return `${out.join('\n')}\n`;
}

export const reportCommand: Subcommand = {
  name: 'report',
  summary: 'summarize or compare profile reports (membit.report/1 JSON)',
  usage: 'membit report REPORT.json|SNAPSHOT.pickle[.gz] [MORE...] [--json|--markdown] [--out FILE] [--root DIR]',
  flags: [
    { name: 'json', help: 'print the validated summary (one report) or the comparison (several) as JSON' },
    { name: 'markdown', help: 'print the comparison as a Markdown table (the first report is the baseline)' },
    { name: 'rank', value: true, metavar: 'N', help: "with a run set: show rank N's own report" },
    { name: 'fsdp', value: true, metavar: 'N,M,...', help: 'estimate per-rank memory under FSDP for these world sizes from a single-GPU or DDP report (labelled an estimate)' },
    { name: 'out', value: true, metavar: 'FILE', help: 'write the report (of one PyTorch memory snapshot) as membit.report JSON' },
    { name: 'root', value: true, metavar: 'DIR', help: "folder a snapshot's frames are mapped onto by relative path (default: the working directory)" },
  ],
  details:
    'With several reports, the first is the baseline and the others are compared against it.\n' +
    'A run set (membit profile --nproc-per-node) shows every rank: peaks side by side, the imbalance,\n' +
    'the rank that ran out of memory first, and per line the most any rank held (naming the rank).\n' +
    'PyTorch memory snapshots (torch.cuda.memory._dump_snapshot, .pickle/.pkl, optionally .gz) are read by a\n' +
    'restricted reader that accepts plain data only, never unpickled.',
  async run(args, io0) {
    if (args.positionals.length === 0) throw new UsageError('no report given');
    // A report is untrusted: its strings (script, module, error, op names) could carry
    // escape sequences that retitle the terminal, write the clipboard or hide text.
    const json = args.flags.get('json') === true;
    const io: Io = { out: (t: string) => io0.out(json ? jsonTerminalSafe(t) : terminalSafe(t)), err: (t: string) => io0.err(terminalSafe(t)), cwd: io0.cwd };
    const first = resolve(io.cwd, itemAt(args.positionals, 0));
    if (args.positionals.length === 1 && isRunSetFile(first)) return runSetReport(first, args.flags, io);
    if (args.flags.get('rank') !== undefined) throw new UsageError('--rank needs a run set (the file membit profile --nproc-per-node writes)');
    if (args.flags.get('fsdp') !== undefined) {
      if (args.positionals.length !== 1) throw new UsageError('--fsdp takes one report');
      const sizes = String(args.flags.get('fsdp')).split(',').map((x) => Number(x.trim()));
      let est;
      try {
        est = estimateFsdp(load(first), sizes);
      } catch (e) {
        if (e instanceof EstimateError) throw new UsageError(e.message);
        throw e;
      }
      if (json) {
        io.out(`${JSON.stringify(est, null, 2)}\n`);
        return 0;
      }
      const head = ['ranks', 'params', 'grads', 'optimizer', 'unsharded units', 'reduce-scatter', 'activations', 'rest', 'per rank'];
      const rows = est.rows.map((r) => [String(r.worldSize), ...[r.params, r.grads, r.optimizerState, r.unshardedUnits, r.reduceScatter, r.activations, r.rest, r.perRank].map(formatBytes)]);
      const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
      const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i] ?? 0)).join('  ');
      io.out(`${est.label}\n${est.unit ? `unit: ${est.unit.module} (${formatBytes(est.unit.params)} of parameters)` : 'no unit found: the unsharded layer is left out'}\nmeasured on one process: ${formatBytes(est.rows[0]?.measured ?? 0)}\n\n${fmt(head)}\n${rows.map(fmt).join('\n')}\n`);
      return 0;
    }
    const rootFlag = args.flags.get('root');
    const root = resolve(io.cwd, typeof rootFlag === 'string' ? rootFlag : '.');
    const reports: { label: string; report: Report }[] = [];
    for (const p of args.positionals) {
      const abs = resolve(io.cwd, p);
      reports.push({ label: basename(p), report: isSnapshotName(p) ? await loadSnapshot(abs, root) : load(abs) });
    }
    const out = args.flags.get('out');
    if (typeof out === 'string') {
      if (reports.length !== 1 || !reports[0]?.report.source) throw new UsageError('--out writes the report of one memory snapshot: give exactly one .pickle file');
      const dest = resolve(io.cwd, out);
      // Written whole, then renamed: a reader never sees half a report.
      writeFileAtomic(dest, `${JSON.stringify(reports[0].report)}\n`);
      io.err(`wrote ${dest}\n`);
    }
    if (json) {
      io.out(`${JSON.stringify(reports.length === 1 ? (reports[0] as { report: Report }).report.summary : compareRuns(reports), null, 2)}\n`);
      return 0;
    }
    if (reports.length === 1 && !args.flags.get('markdown')) {
      io.out(summaryText((reports[0] as { report: Report }).report));
      return 0;
    }
    io.out(`${comparisonMarkdown(compareRuns(reports))}\n`);
    return 0;
  },
};

function isRunSetFile(path: string): boolean {
  try {
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(200);
      const n = readSync(fd, buf, 0, 200, 0);
      return isRunSetText(buf.subarray(0, n).toString('utf8'));
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}

function runSetReport(file: string, flags: ParsedArgs['flags'], io: Io): number {
  let set;
  try {
    set = loadRunSet(file, (p) => readFileSync(p, 'utf8'), REPORT_SCHEMA);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const pick = flags.get('rank');
  if (pick !== undefined) {
    const n = Number(pick);
    const r = set.ranks.find((x) => x.rank === n);
    if (!r) throw new UsageError(`--rank ${String(pick)}: the run set has ranks ${set.ranks.map((x) => x.rank).join(', ')}`);
    if (!r.report) throw new Error(`rank ${n} has no report${r.error ? `: ${r.error}` : ' (it was killed or never started)'}`);
    io.out(flags.get('json') ? `${JSON.stringify(r.report.summary, null, 2)}\n` : summaryText(r.report));
    return 0;
  }
  if (flags.get('json')) {
    io.out(`${JSON.stringify({ ...set.doc, peaks: rankPeaks(set) }, null, 2)}\n`);
    return 0;
  }
  io.out(runSetText(set, !!flags.get('markdown')));
  return 0;
}
