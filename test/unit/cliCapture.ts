import type { Io } from '../../src/core/cli/command';

/** An Io that keeps what a CLI subcommand writes, for assertions. */
export function capture(cwd: string = process.cwd()): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    cwd,
    out(t: string) {
      io.stdout += t;
    },
    err(t: string) {
      io.stderr += t;
    },
  };
  return io;
}
