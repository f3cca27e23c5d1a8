import type { FlagSpec } from './args';

/** Where a subcommand writes; injectable so tests capture output without spawning. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  cwd: string;
}

/** One `membit` subcommand. `run` returns the process exit code. */
export interface Subcommand {
  name: string;
  summary: string;
  usage: string;
  flags: readonly FlagSpec[];
  /** Extra help text after the flag table. */
  details?: string;
  run(args: import('./args').ParsedArgs, io: Io): Promise<number>;
}

export const HELP_FLAG: FlagSpec = { name: 'help', short: 'h', help: 'show this help' };
