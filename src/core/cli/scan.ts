import type { Subcommand } from './command';
import { notYetAvailable } from './notYet';

export const scanCommand: Subcommand = {
  name: 'scan',
  summary: 'find dropout, attention-mask and FFN sites in Python files and estimate their memory',
  usage: 'membit scan PATH... [--json]',
  flags: [{ name: 'json', help: 'print JSON instead of a table' }],
  run: async (_args, io) => notYetAvailable(io, '`membit scan`'),
};
