import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { type FlagValue, type ParsedArgs, UsageError } from './args';
import type { Io, Subcommand } from './command';
import { formatBytes } from '../units';
import { runFileName } from '../run/history';
import { DEFAULT_REMOTE_PYTHON, DEFAULT_REMOTE_WORKDIR } from '../run/sshConfig';
import { createRun, targetLabel, type RunTarget } from '../run/target';
import { checkSlurmTarget, createSlurmRun, type SlurmTarget } from '../run/slurm';
import { checkLauncher, LauncherError, type Launcher } from '../run/torchrun';
import { canonicalVariant, LEVERS, VariantError } from '../run/variants';
import { shown } from '../untrusted';

/** The membit Python package shipped beside the bundle (dist/kernels), or the source tree's. */
export function bundledKernelsDir(): string {
  for (const dir of [join(__dirname, 'kernels'), resolve(__dirname, '..', 'kernels'), resolve(__dirname, '..', '..', '..', 'kernels')]) {
    if (existsSync(join(dir, 'membit', '__init__.py'))) return dir;
  }
  throw new Error('the bundled membit Python package is missing; rebuild with `npm run build`');
}

/** A whole-number flag of at least `min`, or undefined when not given. */
export function intFlag(v: FlagValue | undefined, name: string, min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be a whole number ≥ ${min} (got "${String(v)}")`);
  return n;
}

/** The script after `--`, its arguments, --root and --variant, checked: shared by the commands that run a script. */
export function scriptOf(args: ParsedArgs, io: Io, command: string): { script: string; scriptArgs: string[]; scriptPath: string; root: string; variant: string } {
  const [script, ...scriptArgs] = args.rest.length ? args.rest : args.positionals;
  if (!script) throw new UsageError(`no script given: membit ${command} -- train.py [args]`);
  const root = resolve(io.cwd, String(args.flags.get('root') ?? '.'));
  const scriptPath = isAbsolute(script) ? script : resolve(io.cwd, script);
  if (!existsSync(scriptPath)) throw new UsageError(`script not found: ${scriptPath}`);
  try {
    return { script, scriptArgs, scriptPath, root, variant: canonicalVariant(String(args.flags.get('variant') ?? 'baseline')) };
  } catch (e) {
    if (e instanceof VariantError) throw new UsageError(`--variant: ${e.message}`);
    throw e;
  }
}

export const profileCommand: Subcommand = {
  name: 'profile',
  summary: 'run a training script under the Membit harness and write a report',
  usage: 'membit profile [options] -- SCRIPT.py [ARGS...]',
  flags: [
    { name: 'python', value: true, metavar: 'PY', help: 'Python interpreter with PyTorch (default: $MEMBIT_PYTHON or python3; with --target, python3 on the target)' },
    { name: 'out', value: true, metavar: 'FILE', help: 'report path (default: .membit/runs/<time>_<target>_<variant>.json under --root)' },
    { name: 'variant', value: true, metavar: 'V', help: `what to change for this run: baseline, or levers joined by + (${LEVERS.join(', ')}), e.g. sdpa+checkpoint+bf16` },
    { name: 'steps', value: true, metavar: 'N', help: 'training steps to profile (0: run to the end; default 3)' },
    { name: 'warmup', value: true, metavar: 'K', help: 'steps to skip first (default 1)' },
    { name: 'root', value: true, metavar: 'DIR', help: 'folder report paths are relative to, uploaded for --target (default: current folder)' },
    { name: 'target', value: true, metavar: 'HOST', help: 'run on this ssh host (an alias from your ssh config, or user@host)' },
    { name: 'ssh-config', value: true, metavar: 'FILE', help: 'ssh config file to use instead of ~/.ssh/config' },
    { name: 'workdir', value: true, metavar: 'DIR', help: `remote folder for the upload cache and runs (default ${DEFAULT_REMOTE_WORKDIR})` },
    { name: 'cpu', help: 'with --target: run even if the target has no CUDA GPU' },
    { name: 'slurm', help: 'with --target: the host is a SLURM login node; submit the run as a job (see the resource flags below)' },
    { name: 'partition', value: true, metavar: 'P', help: 'with --slurm: partition' },
    { name: 'account', value: true, metavar: 'A', help: 'with --slurm: account to charge' },
    { name: 'nodes', value: true, metavar: 'N', help: 'with --slurm: nodes (default 1)' },
    { name: 'gpus-per-node', value: true, metavar: 'G', help: 'with --slurm: GPUs per node (--gres=gpu:G)' },
    { name: 'ranks-per-node', value: true, metavar: 'R', help: 'with --slurm: ranks per node (default: GPUs per node, else 1)' },
    { name: 'time', value: true, metavar: 'T', help: 'with --slurm: time limit (e.g. 00:30:00)' },
    { name: 'launch', value: true, choices: ['torchrun', 'srun'], metavar: 'HOW', help: 'with --slurm: torchrun per node (default) or one srun task per rank' },
    { name: 'pending-timeout', value: true, metavar: 'S', help: 'with --slurm: cancel the job if it is still pending after S seconds (default 600)' },
    { name: 'target-env', value: true, repeat: true, metavar: 'K=V', help: 'with --target: environment for the remote commands and the run (repeatable; e.g. SLURM_CONF=/etc/slurm/x.conf)' },
    { name: 'nproc-per-node', value: true, metavar: 'N', help: 'run the script under torchrun with N ranks on this host, the harness in every rank (one report per rank, merged in a run set)' },
    { name: 'nnodes', value: true, metavar: 'M', help: 'with --nproc-per-node: hosts in the job (run the same command on each; needs --rdzv-endpoint)' },
    { name: 'node-rank', value: true, metavar: 'I', help: "with --nnodes: this host's index" },
    { name: 'rdzv-endpoint', value: true, metavar: 'HOST:PORT', help: 'with --nnodes: the rendezvous (c10d) address, on the first host' },
    { name: 'rdzv-id', value: true, metavar: 'ID', help: 'with --nnodes: the job id at the rendezvous (the same on every host)' },
  ],
  details:
    'The script runs unchanged as __main__; everything after -- is passed to it.\n' +
    'With --target, the files under --root (minus .gitignore\'d ones) and the membit package are\n' +
    'uploaded over ssh (BatchMode: keys or an agent, a known host key) and the report comes back.\n' +
    'A variant with sdpa runs the advisor\'s SDPA rewrite of the script and the .py files under its\n' +
    'folder and --root where eager attention is found (transformers models are switched at run time);\n' +
    'your files are not changed. The report\'s run.levers says how each lever was applied.\n' +
    'With --nproc-per-node, the script runs under torchrun (python -m torch.distributed.run) and\n' +
    '--out names the run-set file; each rank writes <out>.ranks/rankN.json. A rank that fails ends\n' +
    'the job; the others still write their reports. `membit report RUNSET.json` shows them merged.\n' +
    'Exit code: 0 ok, 1 the run failed (the report still says why), 2 usage error.',
  async run(args, io) {
    const { script, scriptArgs, scriptPath, root, variant } = scriptOf(args, io, 'profile');
    const host = args.flags.get('target') as string | undefined;
    const python = String(args.flags.get('python') ?? (host ? DEFAULT_REMOTE_PYTHON : (process.env['MEMBIT_PYTHON'] ?? 'python3')));
    const targetEnv: Record<string, string> = {};
    for (const kv of (args.flags.get('target-env') as string[] | undefined) ?? []) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(kv);
      const name = m?.[1];
      const value = m?.[2];
      if (name === undefined || value === undefined) throw new UsageError(`--target-env takes NAME=VALUE (got "${kv}")`);
      targetEnv[name] = value;
    }
    const target: RunTarget = host
      ? {
          kind: 'ssh',
          host,
          python,
          workdir: String(args.flags.get('workdir') ?? DEFAULT_REMOTE_WORKDIR),
          ssh: args.flags.get('ssh-config') ? { configFile: resolve(io.cwd, String(args.flags.get('ssh-config'))) } : {},
          ...(Object.keys(targetEnv).length ? { env: targetEnv } : {}),
        }
      : { kind: 'local', python };
    // Numbers for checkLauncher/checkSlurmTarget, which name what is wrong with them.
    const num = (k: string) => (args.flags.get(k) === undefined ? undefined : Number(args.flags.get(k)));
    let launcher: Launcher | undefined;
    if (args.flags.get('nproc-per-node') !== undefined) {
      if (host) throw new UsageError('--nproc-per-node runs torchrun on this machine; it does not combine with --target');
      try {
        launcher = checkLauncher({
          kind: 'torchrun',
          nprocPerNode: num('nproc-per-node'),
          nnodes: num('nnodes'),
          nodeRank: num('node-rank'),
          rdzvEndpoint: args.flags.get('rdzv-endpoint'),
          rdzvId: args.flags.get('rdzv-id'),
        });
      } catch (e) {
        if (e instanceof LauncherError) throw new UsageError(e.message.replace(/launcher\.(\w+)/g, (_m, k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`));
        throw e;
      }
    } else {
      for (const k of ['nnodes', 'node-rank', 'rdzv-endpoint', 'rdzv-id']) if (args.flags.get(k) !== undefined) throw new UsageError(`--${k} needs --nproc-per-node`);
    }
    let slurm: SlurmTarget | undefined;
    if (args.flags.get('slurm')) {
      if (!host) throw new UsageError('--slurm needs --target LOGIN-NODE');
      if (launcher) throw new UsageError('--slurm launches the ranks itself: use --nodes/--ranks-per-node instead of --nproc-per-node');
      try {
        slurm = checkSlurmTarget({
          kind: 'slurm', host, python, workdir: String(args.flags.get('workdir') ?? DEFAULT_REMOTE_WORKDIR), env: targetEnv,
          partition: args.flags.get('partition'), account: args.flags.get('account'), nodes: num('nodes'), gpusPerNode: num('gpus-per-node'),
          ranksPerNode: num('ranks-per-node'), time: args.flags.get('time'), launch: args.flags.get('launch'), pendingTimeoutS: num('pending-timeout'),
        });
      } catch (e) {
        throw new UsageError((e instanceof Error ? e.message : String(e)).replace(/^membit.targets "[^"]*": /, ''));
      }
      if (args.flags.get('ssh-config')) slurm.ssh = { configFile: resolve(io.cwd, String(args.flags.get('ssh-config'))) };
    } else {
      for (const k of ['partition', 'account', 'nodes', 'gpus-per-node', 'ranks-per-node', 'time', 'launch', 'pending-timeout']) if (args.flags.get(k) !== undefined) throw new UsageError(`--${k} needs --slurm`);
    }
    const out = args.flags.get('out')
      ? resolve(io.cwd, String(args.flags.get('out')))
      : join(root, '.membit', 'runs', runFileName({ started: new Date(), target: targetLabel(target), variant }));
    // Found now, not after the whole run (the harness checks too, before the script starts).
    if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a folder: give the report's file name (e.g. ${join(out, 'run.json')})`);
    mkdirSync(dirname(out), { recursive: true });
    const request = {
      workspace: root,
      script: scriptPath,
      args: scriptArgs,
      // Remote runs can only start inside the uploaded folder; elsewhere they start at its top.
      cwd: host && (relative(root, io.cwd).startsWith('..') || isAbsolute(relative(root, io.cwd))) ? undefined : io.cwd,
      out,
      variant,
      steps: intFlag(args.flags.get('steps'), 'steps') ?? 3,
      warmup: intFlag(args.flags.get('warmup'), 'warmup') ?? 1,
    };
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    const options = { kernelsDir: bundledKernelsDir(), signal: ac.signal };
    const run = slurm
      ? createSlurmRun(slurm, request, options)
      : createRun(target, { ...request, ...(launcher ? { launcher } : {}) }, { ...options, allowCpu: !!args.flags.get('cpu') });
    run.onEvent((e) => {
      if (e.type === 'output') (e.stream === 'stdout' ? io.out : io.err)(`${e.line}\n`);
      else if (e.type === 'log' && (host || e.notice)) io.err(`membit: ${e.message}\n`);
      else if (e.type === 'progress') {
        const p = e.event;
        // Ranks of a torchrun job tag their events: every rank's progress is shown, named.
        const rank = (p as { rank?: unknown }).rank;
        const who = typeof rank === 'number' ? `rank ${rank}: ` : '';
        if (p.event === 'started') io.err(`membit: ${who}profiling ${script} (${shown(p.device ?? 'device ?')}, variant ${variant})\n`);
        else if (p.event === 'step' && typeof p.step === 'number') {
          const mem = typeof p.peak === 'number' ? ` · peak ${formatBytes(p.peak)}` : '';
          io.err(`membit: ${who}step ${p.step}/${shown(p.total)}${p.phase === 'warmup' ? ' (warm-up)' : ''}${mem}\n`);
        } else if (p.event === 'finished' && who) io.err(`membit: ${who}finished (${shown(p.status)})\n`);
        else if (p.event === 'queued' && typeof p['state'] === 'string') io.err(`membit: job ${shown(p['job'])} ${p['state'] === 'PENDING' ? 'pending in queue' : p['state'].toLowerCase()}${p['reason'] ? ` (${shown(p['reason'])})` : ''}\n`);
      }
    });
    let outcome;
    try {
      outcome = await run.start();
    } finally {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
    if (outcome.report && existsSync(outcome.report)) io.err(`membit: ${launcher || slurm ? 'run set' : 'report'} ${outcome.report} (status ${outcome.status ?? 'unknown'})\n`);
    if (outcome.state === 'done') return 0;
    const hint = outcome.error?.code === 'no-cuda' ? ' (add --cpu to run on it anyway)' : '';
    io.err(`membit profile: ${outcome.state === 'cancelled' ? 'cancelled' : (outcome.message ?? 'the run failed')}${hint}\n`);
    return 1;
  },
};
