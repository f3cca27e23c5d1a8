/**
 * `membit scan PATH... [--json]`: the static scanner over files and folders.
 *
 * JSON output (schema `membit.scan/1`, stable; fields are added, never renamed):
 *
 *   { "schema": "membit.scan/1",
 *     "files":   [ { "file", "status": "ok"|"skipped"|"error", "sites", "message"?,
 *                    "partial": { "reason": "time-budget"|"match-limit", "message", "lines": [ { "start", "end" } ] } | null } ],
 *     "sites":   [ { "file", "line", "column", "endLine", "endColumn", "cell",
 *                    "kind", "class", "function", "callee", "resolved", "binding", "aliasOf",
 *                    "args": { "<param>": "<as written>" },
 *                    "estimate": { "source", "elements", "maskBytes", "packedBytes", "perSample", "shape", "note", "stateBytes" },
 *                    "code", "message", "remedy", "ffn",
 *                    "advice": { "lever", "savingBytes", "basis", "cost", "requires", "unavailable", "docs" },
 *                    "attention": { "form", "scoresLine", "maskLine", "softmaxLine", "dropoutLine", "outputLine",
 *                                   "funcName", "setting", "valueText", "defaultLine" },
 *                    "severity": "information"|"hint" } ],
 *     "summary": { "files", "scanned", "skipped", "errors", "partial", "sites", "byKind": { "<kind>": n } },
 *     "capabilities": { "schema": "membit.capabilities/1", "torch", "features" } | null }
 *
 * `advice` is set for the memory advisor's kinds (eager-attn, no-autocast, checkpoint,
 * optimizer) and attention masks; `attention` for eager-attn; lines inside them are 1-based.
 * `capabilities` is what `--python PY` reported (null without it, or when it failed).
 *
 * Lines, columns and cells are 1-based (columns count UTF-16 code units, as
 * editors do); `file` is relative to the working directory when inside it.
 * Absent values are null. `partial` says which lines were not read within the scan's
 * budget (see ScanResult.partial); argument texts longer than 240 characters are cut
 * with "…", so the output stays linear in the input. Exit status: 0 scanned (sites or not), 1 a file could
 * not be read or the parser could not load, 2 usage errors (a path that does not exist).
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import {
  createScanner,
  DEFAULT_BUDGET_MS,
  formatHint,
  probeCapabilities,
  type ScanOptions,
  type ScanPartial,
  type ScanResult,
  type ShapeSettings,
  SITE_KINDS,
  type Site,
  scanNotebook,
  shapeHintsFromReport,
  siteSeverity,
  type TorchCapabilities,
} from '../scan';
import { formatBytes } from '../units';
import { type ParsedArgs, UsageError } from './args';
import type { Io, Subcommand } from './command';
import { loadAdviceTables } from '../advice/load';
import { bundledKernelsDir } from './profile';
import { sortedEntries } from '../run/files';

/** Folders never worth scanning: VCS data, dependencies, caches, virtual environments. */
const SKIP_DIRS = new Set([
  '.git', '.hg', '.svn', 'node_modules', '__pycache__', '.venv', 'venv', '.tox', '.nox', '.mypy_cache', '.pytest_cache',
  '.ruff_cache', '.ipynb_checkpoints', 'site-packages', '.eggs',
]);

const DEFAULT_MAX_KB = 2048;

function isVenv(dir: string): boolean {
  try {
    return statSync(join(dir, 'pyvenv.cfg')).isFile();
  } catch {
    return false;
  }
}

/** Files named on the command line, folders expanded; a missing path is a usage error. */
export function expandPaths(paths: readonly string[], cwd: string): string[] {
  const files: string[] = [];
  for (const p of paths) {
    const abs = resolve(cwd, p);
    let st;
    try {
      st = statSync(abs);
    } catch {
      throw new UsageError(`no such file or folder: ${p}`);
    }
    if (st.isDirectory()) collectFiles(abs, files);
    else files.push(abs);
  }
  return files;
}

/** .py and .ipynb files under `dir`, sorted, without following symlinked folders. */
export function collectFiles(dir: string, out: string[] = []): string[] {
  for (const ent of sortedEntries(dir)) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) {
      if (SKIP_DIRS.has(ent.name) || ent.name.endsWith('.egg-info') || isVenv(p)) continue;
      collectFiles(p, out);
    } else if (ent.isFile() && (ent.name.endsWith('.py') || ent.name.endsWith('.ipynb'))) out.push(p);
  }
  return out;
}

function displayPath(abs: string, cwd: string): string {
  const rel = relative(cwd, abs);
  const shown = rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
  return shown.split(sep).join('/');
}

function intFlag(args: ParsedArgs, name: string): number | undefined {
  const v = args.flags.get(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} needs a positive integer (got "${String(v)}")`);
  return n;
}

interface FileOutcome {
  file: string;
  status: 'ok' | 'skipped' | 'error';
  result?: ScanResult;
  message?: string;
}

/** The JSON form of one site (see the schema at the top of this file). */
export function siteJson(s: Site, peakBytes?: number) {
  const e = s.estimate;
  const member = (m: NonNullable<Site['ffn']>['up']) =>
    m
      ? { name: m.name, class: m.className, line: m.line + 1, cell: m.cell !== undefined ? m.cell + 1 : null, callee: m.callee, inFeatures: m.inFeatures ?? null, outFeatures: m.outFeatures ?? null }
      : null;
  return {
    file: s.file,
    line: s.range.startLine + 1,
    column: s.range.startCol + 1,
    endLine: s.range.endLine + 1,
    endColumn: s.range.endCol + 1,
    cell: s.cell !== undefined ? s.cell + 1 : null,
    kind: s.kind,
    class: s.className,
    function: s.funcName,
    callee: s.callee,
    resolved: s.resolved,
    binding: s.binding ?? null,
    aliasOf: s.aliasOf ?? null,
    args: s.args,
    estimate: {
      source: e.source,
      elements: e.elements ?? null,
      maskBytes: e.maskBytes ?? null,
      packedBytes: e.packedBytes ?? null,
      perSample: e.perSample ?? false,
      shape: e.shape ?? null,
      note: e.note ?? null,
      stateBytes: e.stateBytes ?? null,
    },
    code: s.code,
    message: s.message,
    remedy: s.remedy ?? null,
    ffn: s.ffn
      ? { form: s.ffn.form, up: member(s.ffn.up), down: member(s.ffn.down), gate: member(s.ffn.gate), inFeatures: s.ffn.inFeatures ?? null, hiddenFeatures: s.ffn.hiddenFeatures ?? null }
      : null,
    advice: s.advice
      ? {
          lever: s.advice.lever,
          savingBytes: s.advice.savingBytes ?? null,
          basis: s.advice.basis,
          cost: s.advice.cost ?? null,
          requires: s.advice.requires ?? [],
          unavailable: s.advice.unavailable ?? null,
          docs: s.advice.docs ?? null,
        }
      : null,
    attention: s.attention ? attentionJson(s.attention) : null,
    severity: siteSeverity(s, peakBytes),
  };
}

export type SiteJson = ReturnType<typeof siteJson>;

/** `membit scan --json`: schema membit.scan/1 (see the top of this file). */
export interface ScanJson {
  schema: 'membit.scan/1';
  files: { file: string; status: FileOutcome['status']; sites: number; message: string | null; partial: ScanPartial | null }[];
  sites: SiteJson[];
  summary: { files: number; scanned: number; skipped: number; errors: number; partial: number; sites: number; byKind: Record<string, number> };
  capabilities: TorchCapabilities | null;
}

function attentionJson(a: NonNullable<Site['attention']>) {
  const line = (l: number | undefined) => (l === undefined ? null : l + 1);
  return {
    form: a.form,
    scoresLine: line(a.scoresLine),
    maskLine: line(a.maskLine),
    softmaxLine: line(a.softmaxLine),
    dropoutLine: line(a.dropoutLine),
    outputLine: line(a.outputLine),
    funcName: a.funcName ?? null,
    setting: a.setting ?? null,
    valueText: a.valueText ?? null,
    defaultLine: line(a.defaultLine),
  };
}

function callText(s: Site): string {
  if (s.kind === 'checkpoint' && s.callee === 'for') return `for ${s.args['target']} in ${s.args['iter']}:`;
  const args = Object.entries(s.args)
    .filter(([k]) => k !== 'input' || !s.kind.includes('dropout'))
    .map(([k, v]) => (/^arg\d+$/.test(k) ? v : `${k}=${v}`))
    .join(', ')
    .replace(/\s+/g, ' ');
  const t = `${s.callee}(${args})`;
  return t.length > 44 ? `${t.slice(0, 43)}…` : t;
}

function table(outcomes: FileOutcome[]): string {
  const rows: string[][] = [];
  for (const o of outcomes) {
    for (const s of o.result?.sites ?? []) {
      const loc = `${s.file}:${s.cell !== undefined ? `cell ${s.cell + 1}:` : ''}${s.range.startLine + 1}:${s.range.startCol + 1}`;
      rows.push([loc, s.kind, s.className ?? '-', callText(s), formatHint(s)]);
    }
  }
  if (rows.length === 0) return '';
  const head = ['LOCATION', 'KIND', 'CLASS', 'CALL', 'ESTIMATE'];
  const widths = head.map((h, i) => Math.min(60, Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length))));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return `${[line(head), ...rows.map(line)].join('\n')}\n`;
}

function summaryLine(outcomes: FileOutcome[]): string {
  const byKind = new Map<string, number>();
  let sites = 0;
  for (const o of outcomes) {
    for (const s of o.result?.sites ?? []) {
      sites++;
      byKind.set(s.kind, (byKind.get(s.kind) ?? 0) + 1);
    }
  }
  const scanned = outcomes.filter((o) => o.status === 'ok').length;
  const kinds = SITE_KINDS.filter((k) => byKind.has(k)).map((k) => `${byKind.get(k)} ${k}`);
  const notes = [
    ...outcomes.filter((o) => o.status !== 'ok').map((o) => `${o.file}: ${o.message}`),
    ...outcomes.filter((o) => o.status === 'ok' && o.result?.partial).map((o) => `${o.file}: ${o.result?.partial?.message.replace(/^Membit: /, '')}`),
  ];
  return [
    `${sites} site${sites === 1 ? '' : 's'} in ${scanned} file${scanned === 1 ? '' : 's'}${kinds.length ? ` (${kinds.join(', ')})` : ''}`,
    ...notes.map((n) => `  ${n}`),
  ].join('\n');
}

export const scanCommand: Subcommand = {
  name: 'scan',
  summary: 'find dropout, attention-mask and FFN sites and the memory advisor\'s levers in Python files, with estimates',
  usage: 'membit scan PATH... [--json] [--batch N] [--seq-len N] [--hidden N] [--heads N] [--report REPORT.json] [--python PY] [--gpu NAME]',
  flags: [
    { name: 'json', help: 'print JSON (schema membit.scan/1) instead of a table' },
    { name: 'batch', value: true, metavar: 'N', help: 'batch size for estimates' },
    { name: 'seq-len', value: true, metavar: 'N', help: 'sequence length for estimates' },
    { name: 'hidden', value: true, metavar: 'N', help: 'hidden size for estimates' },
    { name: 'heads', value: true, metavar: 'N', help: 'attention heads for estimates' },
    { name: 'report', value: true, metavar: 'FILE', help: 'use the measured figures of a profile report (membit.report/1)' },
    { name: 'budget-ms', value: true, metavar: 'MS', help: `time to parse and read each file before it is reported as partially scanned (default ${DEFAULT_BUDGET_MS}; 0: none)` },
    { name: 'max-size-kb', value: true, metavar: 'N', help: `skip files larger than N KiB (default ${DEFAULT_MAX_KB})` },
    { name: 'gpu', value: true, metavar: 'NAME', help: 'read the measured 2:4 speed advice for this GPU (default: the --report run\'s GPU)' },
    { name: 'python', value: true, metavar: 'PY', help: 'check the advisor against what the torch of this interpreter can do (runs PY -m membit.capabilities)' },
  ],
  details: [
    'Folders are searched for .py and .ipynb files; .git, node_modules, caches and virtual',
    'environments are skipped. Estimates use, in order: the report, the shape flags, and',
    'literal defaults in each file (e.g. `n_embd: int = 768`); otherwise "shape unknown".',
    'The advisor (eager-attn, no-autocast, checkpoint, optimizer) says what fused attention,',
    'bf16 autocast, activation checkpointing and fused optimizers would change. With --python',
    'it runs that interpreter once to learn what its torch can do, and marks levers it lacks',
    'as unavailable; without it, advice is "not checked against an installed torch".',
    'JSON lines, columns and cells are 1-based. Exit status: 0 scanned, 1 a file could not',
    'be read, 2 usage error.',
  ].join('\n'),
  async run(args, io: Io) {
    if (args.positionals.length === 0) throw new UsageError('give at least one file or folder to scan');
    const shapes: ShapeSettings = {};
    const batch = intFlag(args, 'batch');
    const seqLen = intFlag(args, 'seq-len');
    const hidden = intFlag(args, 'hidden');
    const heads = intFlag(args, 'heads');
    if (batch) shapes.batch = batch;
    if (seqLen) shapes.seqLen = seqLen;
    if (hidden) shapes.hidden = hidden;
    if (heads) shapes.heads = heads;
    const maxBytes = (intFlag(args, 'max-size-kb') ?? DEFAULT_MAX_KB) * 1024;
    const budgetFlag = args.flags.get('budget-ms');
    const budgetMs = budgetFlag === undefined ? DEFAULT_BUDGET_MS : Number(budgetFlag);
    if (!Number.isInteger(budgetMs) || budgetMs < 0) throw new UsageError(`--budget-ms must be a whole number of milliseconds ≥ 0 (0: no budget), got "${String(budgetFlag)}"`);

    let report: unknown;
    const reportPath = args.flags.get('report');
    if (typeof reportPath === 'string') {
      try {
        report = JSON.parse(readFileSync(resolve(io.cwd, reportPath), 'utf8'));
      } catch (e) {
        throw new UsageError(`cannot read --report ${reportPath}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }

    const files = expandPaths(args.positionals, io.cwd);

    let capabilities: TorchCapabilities | undefined;
    const python = args.flags.get('python');
    if (python !== undefined) {
      if (typeof python !== 'string' || python.trim() === '') throw new UsageError('--python needs an interpreter, e.g. --python python3');
      let kernelsDir: string;
      try {
        kernelsDir = bundledKernelsDir();
      } catch (e) {
        io.err(`membit scan: ${e instanceof Error ? e.message : String(e)}\n`);
        return 1;
      }
      // The interpreter runs in the kernels folder: a relative path means one from here.
      const interpreter = /[\\/]/.test(python) ? resolve(io.cwd, python) : python;
      const probe = await probeCapabilities(interpreter, { kernelsDir });
      if (probe.capabilities) capabilities = probe.capabilities;
      // The scan still runs: the advice is then marked as not checked.
      else io.err(`membit scan: torch capabilities unknown (${probe.error}); advice not checked against an installed torch\n`);
    }

    // The measured 2:4 speed tables, read for the GPU of --gpu, else of the report's run.
    let sparse24: ScanOptions['sparse24'];
    try {
      const adv = loadAdviceTables(bundledKernelsDir());
      const run = (report as { run?: { device?: { type?: string; name?: string } } } | undefined)?.run;
      const gpuFlag = args.flags.get('gpu');
      const gpu = typeof gpuFlag === 'string' && gpuFlag.trim() ? gpuFlag.trim() : run?.device?.type === 'cuda' ? run.device.name : undefined;
      if (adv.tables.length) sparse24 = { tables: adv.tables, gpu };
      for (const e of adv.errors) io.err(`membit scan: 2:4 speed advice: ${e}\n`);
    } catch {
      // No bundled package beside the CLI: FFN sites say "2:4 candidate" without a speed figure.
    }

    let scanner;
    try {
      scanner = await createScanner();
    } catch (e) {
      io.err(`membit scan: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    }
    const outcomes: FileOutcome[] = [];
    try {
      for (const abs of [...new Set(files)]) {
        const file = displayPath(abs, io.cwd);
        // The config classes a modeling file imports from its folder give its shapes (related.ts).
        const opts: ScanOptions = { maxBytes, shapes, relatedDir: dirname(abs) };
        if (budgetMs > 0) opts.budgetMs = budgetMs;
        if (capabilities) opts.capabilities = capabilities;
        if (sparse24) opts.sparse24 = sparse24;
        if (report) opts.hints = shapeHintsFromReport(report, file);
        let text: string;
        try {
          const st = statSync(abs);
          // Notebooks carry outputs (images): their limit applies to the code cells instead.
          if (!abs.endsWith('.ipynb') && st.size > maxBytes) {
            outcomes.push({ file, status: 'skipped', message: `skipped: ${formatBytes(st.size)} is over the ${formatBytes(maxBytes)} limit` });
            continue;
          }
          // Invalid UTF-8 becomes U+FFFD: the scan goes on around it.
          text = readFileSync(abs, 'utf8').replace(/^\uFEFF/, '');
        } catch (e) {
          outcomes.push({ file, status: 'error', message: `cannot read: ${e instanceof Error ? e.message : String(e)}` });
          continue;
        }
        const result = abs.endsWith('.ipynb') ? scanNotebook(scanner, text, file, opts) : scanner.scan(text, file, opts);
        if (result.skipped) outcomes.push({ file, status: 'skipped', result, message: result.skipped.message });
        else if (result.error && result.sites.length === 0) outcomes.push({ file, status: 'error', result, message: result.error });
        else outcomes.push({ file, status: 'ok', result });
      }
    } finally {
      scanner.dispose();
    }

    const readErrors = outcomes.filter((o) => o.status === 'error' && !o.result).length;
    if (args.flags.get('json')) {
      const byKind: Record<string, number> = {};
      const sites: SiteJson[] = [];
      for (const o of outcomes) {
        for (const s of o.result?.sites ?? []) {
          byKind[s.kind] = (byKind[s.kind] ?? 0) + 1;
          sites.push(siteJson(s, o.result?.peakBytes));
        }
      }
      const partialJson = (r: ScanResult | undefined): ScanPartial | null =>
        r?.partial ? { reason: r.partial.reason, message: r.partial.message, lines: r.partial.lines.map((l) => ({ start: l.start + 1, end: l.end + 1 })) } : null;
      const doc: ScanJson = {
        schema: 'membit.scan/1',
        files: outcomes.map((o) => ({ file: o.file, status: o.status, sites: o.result?.sites.length ?? 0, message: o.message ?? null, partial: partialJson(o.result) })),
        sites: [],
        summary: {
          files: outcomes.length,
          scanned: outcomes.filter((o) => o.status === 'ok').length,
          skipped: outcomes.filter((o) => o.status === 'skipped').length,
          errors: outcomes.filter((o) => o.status === 'error').length,
          partial: outcomes.filter((o) => o.result?.partial).length,
          sites: sites.length,
          byKind,
        },
        capabilities: capabilities ?? null,
      };
      // Written site by site: one string for the whole document is what failed with
      // "Invalid string length" on huge inputs, losing every file's output.
      const [head, tail] = JSON.stringify(doc, null, 2).split('"sites": []') as [string, string];
      io.out(`${head}"sites": [`);
      sites.forEach((site, i) => io.out(`${i ? ',' : ''}\n    ${JSON.stringify(site, null, 2).replace(/\n/g, '\n    ')}`));
      io.out(`${sites.length ? '\n  ' : ''}]${tail}\n`);
    } else {
      io.out(table(outcomes));
      io.out(`${summaryLine(outcomes)}\n`);
    }
    return readErrors > 0 ? 1 : 0;
  },
};
