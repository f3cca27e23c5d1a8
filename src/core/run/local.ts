/**
 * Runs the harness as a local child process in its own process group, so cancel
 * ends the script and everything it started, and streams its progress.
 */
import { spawn } from 'node:child_process';
import { LineSplitter, parseProgressLine, type ProgressEvent } from './harness';

export interface LocalRunOptions {
  argv: readonly string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  onProgress?(e: ProgressEvent): void;
  /** The child's own stdout/stderr lines (progress lines excluded). */
  onOutput?(line: string, stream: 'stdout' | 'stderr'): void;
  signal?: AbortSignal;
}

export interface LocalRunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  cancelled: boolean;
  /** The last `finished` event, if the harness got to write one. */
  finished?: Extract<ProgressEvent, { event: 'finished' }>;
  /** The last stderr lines, for error messages (a traceback's tail). */
  stderrTail: string[];
}

const TAIL_LINES = 40;

export function runLocal(o: LocalRunOptions): Promise<LocalRunResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = o.argv;
    if (!cmd) {
      reject(new Error('empty command'));
      return;
    }
    // detached: the child leads a new process group; killing -pid reaches the script's children too.
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const stderrTail: string[] = [];
    let finished: LocalRunResult['finished'];
    let cancelled = false;
    let killTimer: NodeJS.Timeout | undefined;

    const split = { stdout: new LineSplitter(), stderr: new LineSplitter() };
    const onLines = (stream: 'stdout' | 'stderr', lines: string[]) => {
      for (const line of lines) {
        const ev = stream === 'stderr' ? parseProgressLine(line) : undefined;
        if (ev) {
          if (ev.event === 'finished') finished = ev as LocalRunResult['finished'];
          o.onProgress?.(ev);
          continue;
        }
        if (stream === 'stderr') {
          stderrTail.push(line);
          if (stderrTail.length > TAIL_LINES) stderrTail.shift();
        }
        o.onOutput?.(line, stream);
      }
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => onLines('stdout', split.stdout.push(d)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => onLines('stderr', split.stderr.push(d)));

    const cancel = () => {
      if (child.exitCode !== null || child.pid === undefined) return;
      cancelled = true;
      // SIGTERM first: the harness writes a partial report; SIGKILL if it does not exit.
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      killTimer = setTimeout(() => {
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          /* already gone */
        }
      }, 10_000);
    };
    if (o.signal?.aborted) cancel();
    o.signal?.addEventListener('abort', cancel, { once: true });

    child.on('error', (e) => {
      o.signal?.removeEventListener('abort', cancel);
      reject(new Error(`could not start ${cmd}: ${e.message}`));
    });
    child.on('close', (exitCode, signal) => {
      if (killTimer) clearTimeout(killTimer);
      o.signal?.removeEventListener('abort', cancel);
      onLines('stdout', split.stdout.flush());
      onLines('stderr', split.stderr.flush());
      resolve({ exitCode, signal, cancelled, finished, stderrTail });
    });
  });
}
