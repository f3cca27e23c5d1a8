/** The `membit` executable: runs the CLI on the process's argv and sets the exit code. */
import type { Io } from './command';
import { main } from './main';

// A reader that stops early (`membit scan --json | head`) closes the pipe: stop quietly
// with the status a shell gives a process ended by SIGPIPE (128 + 13), not a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(141);
    throw e;
  });
}

const io: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  cwd: process.cwd(),
};

main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`membit: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  },
);
