import { existsSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { UsageError } from './args';
import type { Subcommand } from './command';
import { explainFailure } from '../run/errors';
import { formatBytes, harnessArgv } from '../run/harness';
import { runFileName } from '../run/history';
import { runLocal } from '../run/local';
import type { Variant } from '../settings';

const VARIANTS = ['baseline', 'packed', 'recompute', 'sparse24', 'packed+sparse24'] as const;

/** The membit Python package shipped beside the bundle (dist/kernels), or the source tree's. */
export function bundledKernelsDir(): string {
  for (const dir of [join(__dirname, 'kernels'), resolve(__dirname, '..', 'kernels'), resolve(__dirname, '..', '..', '..', 'kernels')]) {
    if (existsSync(join(dir, 'membit', '__init__.py'))) return dir;
  }
  throw new Error('the bundled membit Python package is missing; rebuild with `npm run build`');
}

function intFlag(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number ≥ 0 (got "${String(v)}")`);
  return n;
}

export const profileCommand: Subcommand = {
  name: 'profile',
  summary: 'run a training script under the Membit harness and write a report',
  usage: 'membit profile [options] -- SCRIPT.py [ARGS...]',
  flags: [
    { name: 'python', value: true, metavar: 'PY', help: 'Python interpreter with PyTorch (default: $MEMBIT_PYTHON or python3)' },
    { name: 'out', value: true, metavar: 'FILE', help: 'report path (default: .membit/runs/<time>_local_<variant>.json under --root)' },
    { name: 'variant', value: true, choices: VARIANTS, metavar: 'V', help: 'what to convert for this run' },
    { name: 'steps', value: true, metavar: 'N', help: 'training steps to profile (0: run to the end; default 3)' },
    { name: 'warmup', value: true, metavar: 'K', help: 'steps to skip first (default 1)' },
    { name: 'root', value: true, metavar: 'DIR', help: 'folder report paths are relative to (default: current folder)' },
  ],
  details: 'The script runs unchanged as __main__; everything after -- is passed to it.\nExit code: 0 ok, 1 the run failed (the report still says why), 2 usage error.',
  async run(args, io) {
    const [script, ...scriptArgs] = args.rest.length ? args.rest : args.positionals;
    if (!script) throw new UsageError('no script given: membit profile -- train.py [args]');
    const root = resolve(io.cwd, String(args.flags.get('root') ?? '.'));
    const scriptPath = isAbsolute(script) ? script : resolve(io.cwd, script);
    if (!existsSync(scriptPath)) throw new UsageError(`script not found: ${scriptPath}`);
    const variant = (args.flags.get('variant') as Variant | undefined) ?? 'baseline';
    const python = String(args.flags.get('python') ?? process.env.MEMBIT_PYTHON ?? 'python3');
    const out = args.flags.get('out')
      ? resolve(io.cwd, String(args.flags.get('out')))
      : join(root, '.membit', 'runs', runFileName({ started: new Date(), target: 'local', variant }));
    mkdirSync(dirname(out), { recursive: true });
    const argv = harnessArgv({
      python,
      script: scriptPath,
      scriptArgs,
      out,
      variant,
      steps: intFlag(args.flags.get('steps'), 'steps') ?? 3,
      warmup: intFlag(args.flags.get('warmup'), 'warmup') ?? 1,
      root,
    });
    const kernels = bundledKernelsDir();
    const env = { ...process.env, PYTHONPATH: [kernels, process.env.PYTHONPATH].filter(Boolean).join(':'), PYTHONUNBUFFERED: '1' };
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    let result;
    try {
      result = await runLocal({
        argv,
        cwd: io.cwd,
        env,
        signal: ac.signal,
        onOutput: (line, stream) => (stream === 'stdout' ? io.out(`${line}\n`) : io.err(`${line}\n`)),
        onProgress: (e) => {
          if (e.event === 'started') io.err(`membit: profiling ${script} (${String(e.device ?? 'device ?')}, variant ${variant})\n`);
          else if (e.event === 'step' && typeof e.step === 'number') {
            const mem = typeof e.peak === 'number' ? ` · peak ${formatBytes(e.peak)}` : '';
            io.err(`membit: step ${e.step}/${String(e.total)}${e.phase === 'warmup' ? ' (warm-up)' : ''}${mem}\n`);
          }
        },
      });
    } catch (e) {
      io.err(`membit profile: ${explainFailure({ python, where: 'local', exitCode: null, stderrTail: [], spawnError: String(e) })}\n`);
      return 1;
    } finally {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
    const status = result.finished?.status ?? (result.cancelled ? 'cancelled' : 'error');
    if (existsSync(out)) io.err(`membit: report ${out} (status ${status})\n`);
    if (status === 'ok' && result.exitCode === 0) return 0;
    io.err(`membit profile: ${explainFailure({ python, where: 'local', exitCode: result.exitCode, stderrTail: result.stderrTail })}\n`);
    return 1;
  },
};
