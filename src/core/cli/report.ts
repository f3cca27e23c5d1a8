import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError } from './args';
import type { Subcommand } from './command';
import { compareRuns, comparisonMarkdown } from '../report/compare';
import { parseReport } from '../report/model';
import { REPORT_SCHEMA } from '../report/schema';
import { peakBytes, type Report } from '../report/types';
import { formatBytes } from '../units';
import { formatStepTime, stepStats } from '../report/stepTime';
import { jsonTerminalSafe, terminalSafe } from '../untrusted';
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
  // The error can quote the report's strings: no control character reaches the terminal.
  if (!r.ok) throw new Error(terminalSafe(r.error));
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
  usage: 'membit report REPORT.json [MORE.json...] [--json|--markdown]',
  flags: [
    { name: 'json', help: 'print the validated summary (one report) or the comparison (several) as JSON' },
    { name: 'markdown', help: 'print the comparison as a Markdown table (the first report is the baseline)' },
    { name: 'rank', value: true, metavar: 'N', help: "with a run set: show rank N's own report" },
  ],
  details:
    'With several reports, the first is the baseline and the others are compared against it.\n' +
    'A run set (membit profile --nproc-per-node) shows every rank: peaks side by side, the imbalance,\n' +
    'the rank that ran out of memory first, and per line the most any rank held (naming the rank).',
  async run(args, io0) {
    if (args.positionals.length === 0) throw new UsageError('no report given');
    // A report is untrusted: its strings (script, module, error, op names) could carry
    // escape sequences that retitle the terminal, write the clipboard or hide text.
    const json = args.flags.get('json') === true;
    const io: Io = { out: (t: string) => io0.out(json ? jsonTerminalSafe(t) : terminalSafe(t)), err: (t: string) => io0.err(terminalSafe(t)), cwd: io0.cwd };
    const first = resolve(io.cwd, args.positionals[0] as string);
    if (args.positionals.length === 1 && isRunSetFile(first)) return runSetReport(first, args.flags, io);
    if (args.flags.get('rank') !== undefined) throw new UsageError('--rank needs a run set (the file membit profile --nproc-per-node writes)');
    const reports = args.positionals.map((p) => ({ label: p.split('/').pop() ?? p, report: load(resolve(io.cwd, p)) }));
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
