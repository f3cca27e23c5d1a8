import type { Subcommand } from './command';
import { notYetAvailable } from './notYet';

export const convertCommand: Subcommand = {
  name: 'convert',
  summary: 'rewrite dropout to packed/mask-free dropout and FFNs to 2:4 sparsity',
  usage: 'membit convert PATH... [--dropout packed|recompute] [--ffn 2:4] [--dry-run|--diff]',
  flags: [
    { name: 'dropout', value: true, choices: ['packed', 'recompute'], metavar: 'MODE', help: 'convert dropout sites' },
    { name: 'ffn', value: true, choices: ['2:4'], metavar: 'KIND', help: 'convert FFN layers' },
    { name: 'dry-run', help: 'list what would change, write nothing' },
    { name: 'diff', help: 'print a unified diff, write nothing' },
  ],
  run: async (_args, io) => notYetAvailable(io, '`membit convert`'),
};
