import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError } from './args';
import type { Subcommand } from './command';
import { compareRuns, comparisonMarkdown } from '../report/compare';
import { parseReport } from '../report/model';
import { REPORT_SCHEMA } from '../report/schema';
import { peakBytes, type Report } from '../report/types';
import { formatBytes } from '../run/harness';
import { EstimateError, estimateFsdp } from '../report/fsdpEstimate';
import { isRunSetText, loadRunSet, rankPeaks, runSetText } from '../report/runset';
import type { ParsedArgs } from './args';
import type { Io } from './command';

function load(path: string): Report {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const r = parseReport(text, REPORT_SCHEMA, path);
  if (!r.ok) throw new Error(r.error);
  return r.report;
}

/** A plain-text summary of one report: the answer to "what was the peak, and who held it". */
export function summaryText(r: Report, topLines = 10): string {
  const s = r.summary;
  const out: string[] = [];
  const cpu = s.peak_allocated === null;
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
  if (s.step_time_s !== null) out.push(`step ${(s.step_time_s * 1000).toFixed(1)} ms${s.samples_per_s !== null ? ` · ${s.samples_per_s.toFixed(1)} samples/s` : ''}`);
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
  usage: 'membit report REPORT.json [MORE.json...] [--json|--markdown]',
  flags: [
    { name: 'json', help: 'print the validated summary (one report) or the comparison (several) as JSON' },
    { name: 'markdown', help: 'print the comparison as a Markdown table (the first report is the baseline)' },
    { name: 'rank', value: true, metavar: 'N', help: "with a run set: show rank N's own report" },
    { name: 'fsdp', value: true, metavar: 'N,M,...', help: 'estimate per-rank memory under FSDP for these world sizes from a single-GPU or DDP report (labelled an estimate)' },
  ],
  details:
    'With several reports, the first is the baseline and the others are compared against it.\n' +
    'A run set (membit profile --nproc-per-node) shows every rank: peaks side by side, the imbalance,\n' +
    'the rank that ran out of memory first, and per line the most any rank held (naming the rank).',
  async run(args, io) {
    if (args.positionals.length === 0) throw new UsageError('no report given');
    const first = resolve(io.cwd, args.positionals[0] as string);
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
      if (args.flags.get('json')) {
        io.out(`${JSON.stringify(est, null, 2)}\n`);
        return 0;
      }
      const head = ['ranks', 'params', 'grads', 'optimizer', 'unsharded units', 'reduce-scatter', 'activations', 'rest', 'per rank'];
      const rows = est.rows.map((r) => [String(r.worldSize), ...[r.params, r.grads, r.optimizerState, r.unshardedUnits, r.reduceScatter, r.activations, r.rest, r.perRank].map(formatBytes)]);
      const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
      const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i] as number)).join('  ');
      io.out(`${est.label}\n${est.unit ? `unit: ${est.unit.module} (${formatBytes(est.unit.params)} of parameters)` : 'no unit found: the unsharded layer is left out'}\nmeasured on one process: ${formatBytes(est.rows[0]?.measured ?? 0)}\n\n${fmt(head)}\n${rows.map(fmt).join('\n')}\n`);
      return 0;
    }
    const reports = args.positionals.map((p) => ({ label: p.split('/').pop() ?? p, report: load(resolve(io.cwd, p)) }));
    if (args.flags.get('json')) {
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
