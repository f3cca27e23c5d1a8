/**
 * `membit`: the command-line face of src/core. No VS Code here; the extension and the
 * CLI share the same scanner, rewriter, run orchestration and report model.
 */
import { formatFlags, parseArgs, UsageError } from './args';
import { HELP_FLAG, type Io, type Subcommand } from './command';
import { SUBCOMMANDS } from './subcommands';

const VERSION = '0.1.0';

export function topHelp(): string {
  const width = Math.max(...SUBCOMMANDS.map((c) => c.name.length)) + 2;
  return [
    'membit — find and cut the GPU memory of PyTorch training scripts',
    '',
    'Usage: membit <command> [options]',
    '',
    'Commands:',
    ...SUBCOMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Options:',
    '  -h, --help     show help (also: membit <command> --help)',
    '  --version      print the version',
    '',
  ].join('\n');
}

export function commandHelp(cmd: Subcommand): string {
  return [`Usage: ${cmd.usage}`, '', cmd.summary, '', 'Options:', formatFlags([...cmd.flags, HELP_FLAG]), cmd.details ? `\n${cmd.details}` : '', ''].join('\n');
}

/** Runs the CLI on argv (without node and script) and returns the exit code. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    if (first === 'help' && rest[0]) return main([rest[0], '--help'], io);
    io.out(topHelp());
    return first === undefined ? 2 : 0;
  }
  if (first === '--version' || first === '-V') {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const cmd = SUBCOMMANDS.find((c) => c.name === first);
  if (!cmd) {
    io.err(`membit: unknown command "${first}". Commands: ${SUBCOMMANDS.map((c) => c.name).join(', ')}. Try membit --help.\n`);
    return 2;
  }
  try {
    const parsed = parseArgs(rest, [...cmd.flags, HELP_FLAG]);
    if (parsed.flags.get('help')) {
      io.out(commandHelp(cmd));
      return 0;
    }
    return await cmd.run(parsed, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`membit ${cmd.name}: ${e.message}\nUsage: ${cmd.usage}\n`);
      return 2;
    }
    io.err(`membit ${cmd.name}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
