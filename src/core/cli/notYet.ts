import type { Io } from './command';

/**
 * The answer of a subcommand whose feature has not landed: it says so and fails,
 * so no script mistakes it for a result.
 */
export function notYetAvailable(io: Io, what: string): number {
  io.err(`membit: ${what} is not available in this version yet.\n`);
  return 3;
}
