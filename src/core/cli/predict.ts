import { formatBytes } from '../units';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { type FlagValue, UsageError } from './args';
import type { Io, Subcommand } from './command';
import { bundledKernelsDir } from './profile';
import { runFileName } from '../run/history';
import { canonicalVariant, VariantError } from '../run/variants';
import { parseReport } from '../report/model';
import { REPORT_SCHEMA } from '../report/schema';
import { predictArgv, PREDICT_GPUS, readPrediction, statusLabel } from '../report/prediction';

function positiveInt(v: FlagValue | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a whole number ≥ 1 (got "${String(v)}")`);
  return n;
}

function variantList(text: string): string[] {
  return text
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean)
    .map((v) => {
      try {
        return canonicalVariant(v);
      } catch (e) {
        if (e instanceof VariantError) throw new UsageError(`--variant: ${e.message}`);
        throw e;
      }
    });
}

/** Prints what a finished prediction says: the label, what was added from the GPU table, what could not be followed. */
export function describePrediction(text: string, io: Io, where: string): number {
  const parsed = parseReport(text, REPORT_SCHEMA, where);
  if (!parsed.ok) {
    io.err(`membit predict: ${parsed.error}\n`);
    return 1;
  }
  const report = parsed.report;
  const p = readPrediction(report);
  if (!p) {
    io.err(`membit predict: ${where} is not a predicted report (run.prediction is missing or malformed)\n`);
    return 1;
  }
  io.out(`${statusLabel(report)}\n`);
  const reserved = p.peakReserved !== undefined ? `reserved ${formatBytes(p.peakReserved)} (the caching allocator's segments over the step)` : 'peak allocated + allocator slack';
  io.out(`  needs ${formatBytes(p.deviceNeed)} of ${formatBytes(p.totalBytes)} on ${p.gpuName}: ${reserved} + CUDA context\n`);
  const oom = p.outOfMemory;
  if (oom) {
    const at = oom.file !== null && oom.line !== null ? ` at ${oom.file}:${oom.line}` : '';
    io.out(`  does not fit: out of memory asking for ${formatBytes(oom.request)}${at}, with ${formatBytes(oom.allocated)} allocated and ${formatBytes(oom.reserved)} reserved\n`);
  }
  for (const f of p.fixed) io.out(`  + ${f.what} ${formatBytes(f.bytes)}: ${f.source}\n`);
  if (!p.complete) io.out(`  PARTIAL: ${p.partialReason ?? 'the step was not followed to its end'}\n`);
  for (const r of p.userHostReads) io.out(`  not followed: ${r.what} at ${r.file}:${r.line} (its value is unknown without a GPU; the script got a placeholder)\n`);
  return p.complete ? 0 : 4;
}

export const predictCommand: Subcommand = {
  name: 'predict',
  summary: 'predict a training step\'s peak GPU memory without a GPU (CUDA faked)',
  usage: 'membit predict [options] -- SCRIPT.py [ARGS...]',
  flags: [
    { name: 'gpu', value: true, metavar: 'GPU', help: `target GPU: ${PREDICT_GPUS.join(', ')}, or a capacity such as 24GB (default H100-80GB)` },
    { name: 'variant', value: true, metavar: 'V', help: 'levers to apply as for membit profile (baseline, packed, sdpa+bf16, ...); comma-separated to compare several' },
    { name: 'find-max-batch', help: 'search the largest batch that fits the GPU (by predictions, seconds each)' },
    { name: 'batch-arg', value: true, metavar: 'FLAG', help: 'the script\'s flag to search (default --batch-size; e.g. --seq-len)' },
    { name: 'max', value: true, metavar: 'N', help: 'largest value to try (default 4096)' },
    { name: 'ranks', value: true, metavar: 'N', help: 'FSDP ranks: estimate the per-rank peak' },
    { name: 'steps', value: true, metavar: 'N', help: 'optimizer steps to follow (default 2: the second has the optimizer state)' },
    { name: 'python', value: true, metavar: 'PY', help: 'Python interpreter with PyTorch (default: $MEMBIT_PYTHON or python3); no GPU needed' },
    { name: 'out', value: true, metavar: 'FILE', help: 'report path (default: .membit/runs/<time>_predicted-<gpu>_<variant>.json under --root)' },
    { name: 'root', value: true, metavar: 'DIR', help: 'folder report paths are relative to (default: current folder)' },
  ],
  details:
    'The script runs as __main__ for its first steps with CUDA faked: tensors on "cuda" are\n' +
    'shapes without data, counted with the GPU\'s rules (1-byte dropout masks, the SDPA backend\n' +
    'CUDA would pick, CUDA autocast\'s op lists). Nothing is computed and no GPU is needed, but it\n' +
    'runs your code: only for scripts you trust. The report is marked predicted until a measured\n' +
    'run replaces it. What fakes cannot follow (a custom CUDA extension, a value read with .item()\n' +
    'that steers the code) is named; a partial prediction is a lower bound and says so.\n' +
    'Exit code: 0 complete, 4 partial, 1 the predictor failed, 2 usage error.',
  async run(args, io) {
    const [script, ...scriptArgs] = args.rest.length ? args.rest : args.positionals;
    if (!script) throw new UsageError('no script given: membit predict -- train.py [args]');
    const root = resolve(io.cwd, String(args.flags.get('root') ?? '.'));
    const scriptPath = isAbsolute(script) ? script : resolve(io.cwd, script);
    if (!existsSync(scriptPath)) throw new UsageError(`script not found: ${scriptPath}`);
    const gpu = String(args.flags.get('gpu') ?? 'H100-80GB');
    if (!/^[A-Za-z0-9.+-]+$/.test(gpu)) throw new UsageError(`--gpu: "${gpu}" is not a GPU name or capacity (e.g. A100-80GB, 24GB)`);
    const variants = variantList(String(args.flags.get('variant') ?? 'baseline'));
    const [firstVariant] = variants;
    if (firstVariant === undefined) throw new UsageError('--variant: no variant given');
    const python = String(args.flags.get('python') ?? process.env['MEMBIT_PYTHON'] ?? 'python3');
    const out = args.flags.get('out')
      ? resolve(io.cwd, String(args.flags.get('out')))
      : join(root, '.membit', 'runs', runFileName({ started: new Date(), target: `predicted-${gpu}`, variant: firstVariant }));
    mkdirSync(dirname(out), { recursive: true });
    const max = positiveInt(args.flags.get('max'), 'max');
    const steps = positiveInt(args.flags.get('steps'), 'steps');
    const ranks = positiveInt(args.flags.get('ranks'), 'ranks');
    const argv = predictArgv({
      script: scriptPath,
      args: scriptArgs,
      out,
      gpu,
      variants,
      root,
      findMaxBatch: !!args.flags.get('find-max-batch'),
      ...(args.flags.get('batch-arg') !== undefined ? { batchArg: String(args.flags.get('batch-arg')) } : {}),
      ...(max !== undefined ? { max } : {}),
      ...(steps !== undefined ? { steps } : {}),
      ...(ranks !== undefined ? { ranks } : {}),
    });
    const kernels = bundledKernelsDir();
    const env = { ...process.env, PYTHONPATH: [kernels, process.env['PYTHONPATH']].filter(Boolean).join(process.platform === 'win32' ? ';' : ':'), PYTHONUNBUFFERED: '1' };
    io.err(`membit: predicting ${script} on ${gpu} (no GPU used; the script runs with CUDA faked)\n`);
    const code = await new Promise<number>((resolveCode) => {
      const child = spawn(python, argv, { cwd: io.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
      const onSig = () => child.kill('SIGTERM');
      process.once('SIGINT', onSig);
      createInterface({ input: child.stdout }).on('line', (l) => io.out(`${l}\n`));
      createInterface({ input: child.stderr }).on('line', (l) => {
        if (!l.startsWith('@@membit ')) {
          io.err(`${l}\n`);
          return;
        }
        let e: Record<string, unknown>;
        try {
          e = JSON.parse(l.slice(9)) as Record<string, unknown>;
        } catch {
          return undefined;
        }
        if (e['event'] === 'step' && typeof e['peak'] === 'number') io.err(`membit: step ${String(e['step'])} · peak so far ${formatBytes(e['peak'])} (tensors)\n`);
        else if (e['event'] === 'probe') io.err(`membit: ${String(e['variant'])} at ${String(e['batch'])}: ${e['fits'] ? 'fits' : 'does not fit'}\n`);
        return undefined;
      });
      child.on('error', (err) => {
        process.off('SIGINT', onSig);
        io.err(`membit predict: cannot start ${python}: ${err.message} (set --python or MEMBIT_PYTHON)\n`);
        resolveCode(1);
      });
      child.on('close', (c) => {
        process.off('SIGINT', onSig);
        resolveCode(c ?? 1);
      });
    });
    if (!existsSync(out)) {
      io.err(`membit predict: no report was written (exit code ${code})\n`);
      return code === 0 ? 1 : code;
    }
    io.err(`membit: report ${out}\n`);
    return describePrediction(readFileSync(out, 'utf8'), io, out);
  },
};
