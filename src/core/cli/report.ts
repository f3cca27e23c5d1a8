import type { Subcommand } from './command';
import { notYetAvailable } from './notYet';

export const reportCommand: Subcommand = {
  name: 'report',
  summary: 'summarize or compare profile reports (membit.report/1 JSON)',
  usage: 'membit report REPORT.json [MORE.json...] [--json|--markdown]',
  flags: [
    { name: 'json', help: 'print the validated summary as JSON' },
    { name: 'markdown', help: 'print a comparison table as Markdown' },
  ],
  run: async (_args, io) => notYetAvailable(io, '`membit report`'),
};
