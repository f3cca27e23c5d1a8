/**
 * `membit convert PATH... [--dropout packed|recompute] [--ffn 2:4] [--lever sdpa|checkpoint|autocast] [--dry-run|--diff] [--revert] [--budget-ms MS]`:
 * the rewriter over files and folders, with the same engine as the editor's code actions.
 * `--lever` applies one of the memory advisor's rewrites (fused attention, activation
 * checkpointing, bf16 autocast) wherever it provably applies, and lists where it did not and why.
 *
 * Safety. A file is refused, and left untouched, when it holds git conflict markers,
 * is not valid UTF-8, or changed on disk between our read and our write (mtime, size
 * or content: an editor saved it, a formatter ran). The CLI cannot see editor buffers;
 * unsaved editor changes are the extension's business (it edits the open document
 * through a WorkspaceEdit instead of the file).
 *
 * Writes go to a temporary file in the same folder, renamed over the original, so a
 * failed write never leaves half a file; a file with several hard links is refused.
 *
 * Exit status: 0 done (sites may have been skipped, with reasons), 1 a file was
 * refused or could not be read or written, 2 usage errors.
 */
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, relative, sep } from 'node:path';
import { applyEdits, applyLever, convertAll, type ConvertOptions, type ConvertResult, type Lever, LEVERS, type LeverResult, patchHeaderPath, revertAll, type RevertResult, unifiedDiff } from '../rewrite';
import { atomicWriteRefusal, writeFileAtomic } from '../atomicWrite';
import { createScanner, DEFAULT_BUDGET_MS, DEFAULT_MAX_BYTES, type Scanner } from '../scan';
import { type ParsedArgs, UsageError } from './args';
import type { Io, Subcommand } from './command';
import { expandPaths } from './scan';

export type ConvertAction =
  | { kind: 'convert'; options: ConvertOptions }
  | { kind: 'revert' }
  /** `scaleKwarg`: allow `scale=` in scaled_dot_product_attention calls (torch >= 2.1). */
  | { kind: 'lever'; lever: Lever; scaleKwarg?: boolean };

export interface FileReport {
  /** Path as shown (relative to the working directory when inside it, with `/`). */
  file: string;
  status: 'changed' | 'unchanged' | 'skipped' | 'refused' | 'error';
  message?: string;
  before?: string;
  after?: string;
  conversion?: ConvertResult;
  reversion?: RevertResult;
  lever?: LeverResult;
  /** The file had syntax errors: only sites outside them were converted. */
  syntaxErrors?: boolean;
  /** Part of the file was not read within the scan budget (the scanner's message): sites there were left alone. */
  partial?: string;
}

export interface FileHooks {
  /** Called after the file was read and converted, before it is written (tests change the file here). */
  beforeWrite?(abs: string): void;
}

const CONFLICT = /^(<{7}|>{7})( |$)/m;

function displayPath(abs: string, cwd: string): string {
  const rel = relative(cwd, abs);
  const shown = rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
  return shown.split(sep).join('/');
}

/** Reads, converts (or reverts) and, when `write`, writes one file. Never throws. */
export async function convertFile(abs: string, file: string, action: ConvertAction, scanner: Scanner | undefined, write: boolean, hooks: FileHooks = {}, budgetMs = DEFAULT_BUDGET_MS): Promise<FileReport> {
  let bytes: Buffer;
  let st;
  try {
    st = statSync(abs);
    bytes = readFileSync(abs);
  } catch (e) {
    return { file, status: 'error', message: `cannot read: ${e instanceof Error ? e.message : String(e)}` };
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return { file, status: 'refused', message: 'not valid UTF-8: refusing to rewrite it' };
  }
  // TextDecoder drops a leading BOM; keep it so the written file differs only where we edited.
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? '\uFEFF' : '';

  if (CONFLICT.test(text)) return { file, status: 'refused', message: 'has git conflict markers (<<<<<<< / >>>>>>>): resolve the conflict first' };

  // before/after hold the whole file (its BOM included) so a diff of them applies to it.
  const report: FileReport = { file, status: 'unchanged', before: bom + text };
  let after: string;
  if (action.kind === 'revert') {
    const r = revertAll(text);
    report.reversion = r;
    after = applyEdits(text, r.edits);
  } else if (action.kind === 'lever') {
    const r = await applyLever(text, action.lever, { scaleKwarg: action.scaleKwarg === true });
    report.lever = r;
    after = r.text;
  } else {
    if (!scanner) return { file, status: 'error', message: 'no scanner' };
    // The scan budget bounds a pathological file as in `membit scan`; what was found is converted.
    const result = scanner.scan(text, file, budgetMs > 0 ? { maxBytes: DEFAULT_MAX_BYTES, budgetMs } : { maxBytes: DEFAULT_MAX_BYTES });
    if (result.skipped) return { file, status: 'skipped', message: result.skipped.message };
    if (result.error && result.sites.length === 0) return { file, status: 'error', message: result.error };
    if (result.hasSyntaxErrors) report.syntaxErrors = true;
    if (result.partial) report.partial = result.partial.message;
    const c = convertAll(text, result.sites, action.options);
    report.conversion = c;
    after = applyEdits(text, c.edits);
  }
  report.after = bom + after;
  if (after === text) return report;
  report.status = 'changed';
  if (!write) return report;
  try {
    const refusal = atomicWriteRefusal(abs);
    if (refusal) return { ...report, status: 'refused', message: `${refusal}: nothing written` };
  } catch (e) {
    return { ...report, status: 'error', message: `cannot write: ${e instanceof Error ? e.message : String(e)}` };
  }

  hooks.beforeWrite?.(abs);
  try {
    const now = statSync(abs);
    const same = now.mtimeMs === st.mtimeMs && now.size === st.size && readFileSync(abs).equals(bytes);
    if (!same) return { ...report, status: 'refused', message: 'changed on disk while it was being converted: nothing written, run again' };
    // Temporary file + rename: a failed write (full disk, EFBIG) leaves the original whole.
    writeFileAtomic(abs, bom + after);
  } catch (e) {
    return { ...report, status: 'error', message: `cannot write: ${e instanceof Error ? e.message : String(e)}` };
  }
  return report;
}

function siteLine(file: string, line: number, col: number): string {
  return `${file}:${line + 1}:${col + 1}`;
}

/** Human lines for one file: what changed and what was skipped, and why. */
function describe(r: FileReport, verb: string): string[] {
  const out: string[] = [];
  if (r.status === 'refused' || r.status === 'error' || r.status === 'skipped') {
    out.push(`${r.file}: ${r.status === 'skipped' ? 'skipped' : r.status === 'refused' ? 'refused' : 'error'}: ${r.message}`);
    return out;
  }
  if (r.syntaxErrors) out.push(`${r.file}: has syntax errors; only sites outside them were converted`);
  if (r.partial) out.push(`${r.file}: ${r.partial.replace(/^Membit: /, '').replace(/;\s*sites there may be missing\.?$/, '')}; sites there were not converted`);
  for (const c of r.conversion?.converted ?? []) {
    const m = c.member ? (c.site.ffn?.[c.member] ?? undefined) : undefined;
    const col = m ? m.range.startCol : c.site.range.startCol;
    out.push(`${siteLine(r.file, c.line, col)}: ${verb} ${c.from} -> ${c.to}${c.member ? ` (${c.member} projection)` : ''}`);
  }
  for (const s of r.conversion?.skipped ?? []) {
    out.push(`${siteLine(r.file, s.site.range.startLine, s.site.range.startCol)}: skipped ${s.site.callee}: ${s.reason}`);
  }
  for (const c of r.lever?.changes ?? []) out.push(`${r.file}:${c.line + 1}: ${verb === 'converted' ? 'rewrote' : 'would rewrite'} ${c.description}`);
  for (const s of r.lever?.skipped ?? []) out.push(`${r.file}:${s.line + 1}: skipped: ${s.reason}`);
  for (const v of r.reversion?.reverted ?? []) out.push(`${r.file}:${v.line + 1}: ${verb} ${v.from} -> ${v.to}`);
  for (const l of r.reversion?.patchCalls ?? []) out.push(`${r.file}:${l + 1}: removed membit.patch(...)`);
  for (const w of r.reversion?.warnings ?? []) out.push(`${r.file}: warning: ${w}`);
  const imports = r.conversion?.imports ?? r.reversion?.imports ?? r.lever?.imports ?? [];
  for (const i of imports) out.push(`${r.file}: ${r.reversion ? 'removed' : verb === 'would convert' ? 'would add' : 'added'} \`${i}\``);
  return out;
}

export const convertCommand: Subcommand = {
  name: 'convert',
  summary: 'rewrite dropout to packed/mask-free dropout and FFNs to 2:4 sparsity',
  usage: 'membit convert PATH... [--dropout packed|recompute] [--ffn 2:4] [--lever sdpa|checkpoint|autocast [--sdpa-scale]] [--dry-run|--diff] [--revert]',
  flags: [
    { name: 'dropout', value: true, choices: ['packed', 'recompute'], metavar: 'MODE', help: 'convert dropout sites' },
    { name: 'ffn', value: true, choices: ['2:4'], metavar: 'KIND', help: 'convert FFN layers' },
    { name: 'lever', value: true, choices: LEVERS, metavar: 'LEVER', help: 'apply a memory lever: sdpa (fused attention), checkpoint (recompute blocks in backward), autocast (bf16 forward)' },
    { name: 'sdpa-scale', help: 'with --lever sdpa: attention with a non-default scale gets scale= (needs torch >= 2.1 where the code runs)' },
    { name: 'dry-run', help: 'list what would change, write nothing' },
    { name: 'diff', help: 'print a unified diff, write nothing' },
    { name: 'revert', help: 'undo Membit conversions and lever rewrites: back to the original text' },
    { name: 'budget-ms', value: true, metavar: 'MS', help: `time to parse and read each file; sites past it are left alone and named (default ${DEFAULT_BUDGET_MS}; 0: none)` },
  ],
  details: [
    'Without --dropout or --ffn, dropout is converted to packed (1-bit masks). Folders are',
    'searched for .py files like `membit scan`; notebooks are converted in the editor.',
    'Only the callee changes (and `mode="recompute"` is added for mask-free dropout); an',
    'import marked `# added by membit` is added after the torch imports. --revert undoes it',
    'exactly. --diff prints a patch for `git apply` (paths a/ and b/ from here); messages go',
    'to stderr. Files with git conflict markers, not UTF-8, or changed on disk while being',
    'converted are refused. Exit status: 0 done, 1 a file was refused or failed, 2 usage error.',
    '--lever rewrites only where the pattern matches exactly (eager attention chain or',
    'attn_implementation="eager"; a `for block in self.h: x = block(x)` loop or an HF model;',
    'the forward and loss before loss.backward() in a training loop) and says why elsewhere.',
  ].join('\n'),
  async run(args: ParsedArgs, io: Io) {
    if (args.positionals.length === 0) throw new UsageError('give at least one file or folder to convert');
    const diff = args.flags.get('diff') === true;
    const dryRun = args.flags.get('dry-run') === true;
    if (diff && dryRun) throw new UsageError('--dry-run and --diff exclude each other');
    const revert = args.flags.get('revert') === true;
    const dropoutFlag = args.flags.get('dropout');
    const ffnFlag = args.flags.get('ffn');
    const leverFlag = args.flags.get('lever');
    if (revert && (dropoutFlag !== undefined || ffnFlag !== undefined)) throw new UsageError('--revert takes no --dropout or --ffn');
    if (leverFlag !== undefined && (revert || dropoutFlag !== undefined || ffnFlag !== undefined)) {
      throw new UsageError('--lever is applied on its own: run --dropout, --ffn or --revert separately');
    }
    const options: ConvertOptions = {
      dropout: typeof dropoutFlag === 'string' ? (dropoutFlag as NonNullable<ConvertOptions['dropout']>) : ffnFlag === undefined ? 'packed' : null,
      ffn: typeof ffnFlag === 'string' ? (ffnFlag as NonNullable<ConvertOptions['ffn']>) : null,
    };
    const lever = typeof leverFlag === 'string' ? (leverFlag as Lever) : undefined;
    const scaleKwarg = args.flags.get('sdpa-scale') === true;
    if (scaleKwarg && lever !== 'sdpa') throw new UsageError('--sdpa-scale goes with --lever sdpa');
    const action: ConvertAction = revert ? { kind: 'revert' } : lever ? { kind: 'lever', lever, scaleKwarg } : { kind: 'convert', options };
    const budgetFlag = args.flags.get('budget-ms');
    const budgetMs = budgetFlag === undefined ? DEFAULT_BUDGET_MS : Number(budgetFlag);
    if (!Number.isInteger(budgetMs) || budgetMs < 0) throw new UsageError(`--budget-ms must be a whole number of milliseconds ≥ 0 (0: no budget), got "${String(budgetFlag)}"`);

    const files = expandPaths(args.positionals, io.cwd);
    const notes: string[] = [];

    let scanner: Scanner | undefined;
    if (action.kind === 'convert') {
      try {
        scanner = await createScanner();
      } catch (e) {
        io.err(`membit convert: ${e instanceof Error ? e.message : String(e)}\n`);
        return 1;
      }
    }
    const say = diff ? io.err.bind(io) : io.out.bind(io);
    const verb = revert ? (diff || dryRun ? 'would revert' : 'reverted') : diff || dryRun ? 'would convert' : 'converted';
    const reports: FileReport[] = [];
    let outside = false;
    try {
      for (const abs of [...new Set(files)]) {
        const file = displayPath(abs, io.cwd);
        if (abs.endsWith('.ipynb')) {
          notes.push(`${file}: skipped: notebooks are converted in the editor, cell by cell`);
          continue;
        }
        const r = await convertFile(abs, file, action, scanner, !diff && !dryRun, {}, budgetMs);
        reports.push(r);
        if (diff && r.before !== undefined && r.after !== undefined && r.status === 'changed') {
          io.out(unifiedDiff(r.before, r.after, { oldPath: patchHeaderPath('a', file), newPath: patchHeaderPath('b', file) }));
          if (isAbsolute(file)) outside = true;
        }
        for (const l of describe(r, verb)) say(`${l}\n`);
      }
    } finally {
      scanner?.dispose();
    }
    for (const n of notes) say(`${n}\n`);
    if (outside) say('note: files outside the current folder are named from the filesystem root in the patch (a/home/...): run `git apply` from /\n');
    // Count sites only in files that were (or, with --dry-run/--diff, would be) written: a
    // refused or failed file keeps its conversion in the report but none of it reached disk.
    const written = reports.filter((r) => r.status === 'changed' || r.status === 'unchanged');
    const changed = reports.filter((r) => r.status === 'changed').length;
    const failed = reports.filter((r) => r.status === 'refused' || r.status === 'error');
    const sites = written.reduce((n, r) => n + (r.conversion?.converted.length ?? r.reversion?.reverted.length ?? r.lever?.applied ?? 0), 0);
    const skipped = written.reduce((n, r) => n + (r.conversion?.skipped.length ?? r.lever?.skipped.length ?? 0), 0);
    const what = revert ? 'reverted' : 'converted';
    const done = lever
      ? `${sites} ${lever} rewrite${sites === 1 ? '' : 's'} ${diff || dryRun ? 'to apply' : 'applied'}`
      : `${sites} call${sites === 1 ? '' : 's'} ${diff || dryRun ? `to be ${what}` : what}`;
    say(
      `${done} in ${changed} file${changed === 1 ? '' : 's'}` +
        `${skipped ? `, ${skipped} site${skipped === 1 ? '' : 's'} skipped` : ''}${failed.length ? `, ${failed.length} file${failed.length === 1 ? '' : 's'} refused or failed` : ''}` +
        `${diff || dryRun ? ' (nothing written)' : ''}\n`,
    );
    return failed.length > 0 ? 1 : 0;
  },
};
