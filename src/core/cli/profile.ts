import type { Subcommand } from './command';
import { notYetAvailable } from './notYet';

export const profileCommand: Subcommand = {
  name: 'profile',
  summary: 'run a training script under the Membit harness and write a report',
  usage: 'membit profile [options] -- SCRIPT.py [ARGS...]',
  flags: [],
  run: async (_args, io) => notYetAvailable(io, '`membit profile`'),
};
