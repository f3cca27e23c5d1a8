/** The `membit` executable: runs the CLI on the process's argv and sets the exit code. */
import type { Io } from './command';
import { main } from './main';

const io: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  cwd: process.cwd(),
};

main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`membit: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  },
);
