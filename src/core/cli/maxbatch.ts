import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { writeFileAtomic } from '../atomicWrite';
import { formatBytes } from '../units';
import { CpuWithoutLimit, describeMaxBatch, parseWorldSizes, runMaxBatch } from '../run/maxBatch';
import { UsageError } from './args';
import type { Subcommand } from './command';
import { bundledKernelsDir, intFlag, scriptOf } from './profile';

export const maxBatchCommand: Subcommand = {
  name: 'maxbatch',
  summary: 'find the largest batch that fits, in one process or per torchrun world size',
  usage: 'membit maxbatch [options] -- SCRIPT.py [ARGS...]',
  flags: [
    { name: 'python', value: true, metavar: 'PY', help: 'Python interpreter with PyTorch (default: $MEMBIT_PYTHON or python3)' },
    { name: 'batch-arg', value: true, metavar: 'FLAG', help: "the script's flag to search (default --batch-size)" },
    { name: 'min', value: true, metavar: 'N', help: 'smallest batch to try (default 1)' },
    { name: 'max', value: true, metavar: 'N', help: 'largest batch to try (default: no limit)' },
    { name: 'memory-limit', value: true, metavar: 'BYTES', help: "a probe fits only if every rank's peak is at most this (required on CPU, where nothing runs out of memory)" },
    { name: 'nproc-per-node', value: true, metavar: 'N[,N...]', help: 'search under torchrun at each of these world sizes on this host (e.g. 1,2,4)' },
    { name: 'variant', value: true, metavar: 'V', help: 'levers to apply in every probe, as for membit profile (default baseline)' },
    { name: 'steps', value: true, metavar: 'N', help: 'profiled steps per probe (default 1)' },
    { name: 'warmup', value: true, metavar: 'K', help: 'steps to skip first in each probe (default 1)' },
    { name: 'root', value: true, metavar: 'DIR', help: 'folder report paths are relative to (default: current folder)' },
    { name: 'out', value: true, metavar: 'FILE', help: 'write the membit.maxbatch/1 result here (default: .membit/maxbatch.json under --root)' },
  ],
  details:
    'Each probe is a fresh profiled run (a torchrun job for a world size), so one probe\'s\n' +
    'out-of-memory never affects the next. A probe fits when every rank ends ok and, with\n' +
    '--memory-limit, every rank\'s peak is within it. The search doubles from --min until a probe\n' +
    'fails, then bisects. Under FSDP the ranks shard parameters, gradients and optimizer state, so\n' +
    'a larger world size can fit a larger batch per rank; under DDP each rank holds everything.\n' +
    'Exit code: 0 every search ended, 1 a probe failed for another reason than memory, 2 usage error.',
  async run(args, io) {
    const { scriptArgs, scriptPath, root, variant } = scriptOf(args, io, 'maxbatch');
    let worldSizes: (number | null)[] = [null];
    const nproc = args.flags.get('nproc-per-node');
    if (nproc !== undefined) {
      try {
        worldSizes = parseWorldSizes(String(nproc));
      } catch (e) {
        throw new UsageError(`--nproc-per-node: ${(e as Error).message}`);
      }
    }
    const lo = intFlag(args.flags.get('min'), 'min', 1) ?? 1;
    const hi = intFlag(args.flags.get('max'), 'max', 1) ?? null;
    if (hi !== null && hi < lo) throw new UsageError(`--max ${hi} is below --min ${lo}`);
    const out = resolve(root, String(args.flags.get('out') ?? join('.membit', 'maxbatch.json')));
    if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a folder: give the result's file name`);
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    process.once('SIGTERM', onSig);
    let doc;
    try {
      doc = await runMaxBatch(
        {
          python: String(args.flags.get('python') ?? process.env['MEMBIT_PYTHON'] ?? 'python3'),
          workspace: root,
          script: scriptPath,
          args: scriptArgs,
          cwd: io.cwd,
          batchArg: String(args.flags.get('batch-arg') ?? '--batch-size'),
          lo,
          hi,
          memoryLimit: intFlag(args.flags.get('memory-limit'), 'memory-limit', 1) ?? null,
          worldSizes,
          steps: intFlag(args.flags.get('steps'), 'steps', 1) ?? 1,
          warmup: intFlag(args.flags.get('warmup'), 'warmup', 0) ?? 1,
          variant,
        },
        {
          kernelsDir: bundledKernelsDir(),
          signal: ac.signal,
          onProbe: (ws, row) =>
            io.err(`membit: ${ws ? `world size ${ws}, ` : ''}batch ${row.batch}: ${row.fits ? 'fits' : row.status === 'over_limit' ? 'over the limit' : row.status}${row.peak !== null ? ` (peak ${formatBytes(row.peak)}${ws && row.rank !== null ? ` on rank ${row.rank}` : ''})` : ''}\n`),
        },
      );
    } catch (e) {
      if (e instanceof CpuWithoutLimit) {
        io.err(`membit maxbatch: ${e.message}\n`);
        return 2;
      }
      throw e;
    } finally {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
    mkdirSync(dirname(out), { recursive: true });
    writeFileAtomic(out, `${JSON.stringify(doc, null, 2)}\n`);
    for (const line of describeMaxBatch(doc, formatBytes)) io.out(`${line}\n`);
    io.err(`membit: result ${out}\n`);
    return doc.variants.every((v) => v.status === 'ok') ? 0 : 1;
  },
};
