/**
 * Runs the harness as a local child process in its own process group, so cancel
 * ends the script and everything it started, and streams its progress.
 *
 * The run owns its process group: when the harness exits, whatever is left in the group
 * (a child the script started and never waited for) is killed, so nothing outlives the
 * run and no orphan holding the output pipes can keep the run from ending. The child
 * also gets a control channel on fd 3 (MEMBIT_CONTROL_FD, see the harness's control.py):
 * cancel writes "c" there, and if this process dies, the channel's end of file makes the
 * harness stop itself, so a `membit profile` killed with SIGKILL leaves nothing training.
 */
import { spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import { LineSplitter, parseProgressLine, type ProgressEvent } from './harness';

export interface LocalRunOptions {
  argv: readonly string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
  onProgress?(e: ProgressEvent): void;
  /** The child's own stdout/stderr lines (progress lines excluded). */
  onOutput?(line: string, stream: 'stdout' | 'stderr'): void;
  signal?: AbortSignal;
  /** The run's progress token (PROGRESS_TOKEN_ENV): only lines that carry it are progress. */
  token?: string;
  /** Seconds from SIGTERM to SIGKILL of the group on cancel; default 10. */
  killAfterS?: number;
}

export interface LocalRunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  cancelled: boolean;
  /** The last `finished` event, if the harness got to write one. */
  finished?: Extract<ProgressEvent, { event: 'finished' }> | undefined;
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
    const child = spawn(cmd, args, {
      cwd: o.cwd,
      env: { ...(o.env ?? process.env), MEMBIT_CONTROL_FD: '3' },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    // Typed loosely by Node when stdio has a fourth entry; both are pipes here.
    const { stdout, stderr } = child;
    if (!stdout || !stderr) throw new Error('the profiler was started without its output pipes');
    const control = child.stdio[3] as Writable | null;
    control?.on('error', () => undefined);
    const stderrTail: string[] = [];
    let finished: LocalRunResult['finished'];
    let cancelled = false;
    let killTimer: NodeJS.Timeout | undefined;
    let closeTimer: NodeJS.Timeout | undefined;
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

    const split = { stdout: new LineSplitter(), stderr: new LineSplitter() };
    const onLines = (stream: 'stdout' | 'stderr', lines: string[]) => {
      for (const line of lines) {
        const ev = stream === 'stderr' ? parseProgressLine(line, o.token) : undefined;
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
    stdout.setEncoding('utf8').on('data', (d: string) => onLines('stdout', split.stdout.push(d)));
    stderr.setEncoding('utf8').on('data', (d: string) => onLines('stderr', split.stderr.push(d)));

    const killGroup = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        /* the group is gone */
      }
    };
    const cancel = () => {
      if (exit || child.pid === undefined) return;
      cancelled = true;
      // The control channel first (the harness escalates itself and keeps a partial report
      // even when the script ignores SIGTERM), SIGTERM to the group for the script's
      // children, and SIGKILL if the group is still there after the grace period.
      if (control?.writable) control.write('c');
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), (o.killAfterS ?? 10) * 1000);
    };
    if (o.signal?.aborted) cancel();
    o.signal?.addEventListener('abort', cancel, { once: true });

    const finish = () => {
      if (settled || !exit) return;
      settled = true;
      if (killTimer) clearTimeout(killTimer);
      if (closeTimer) clearTimeout(closeTimer);
      o.signal?.removeEventListener('abort', cancel);
      control?.destroy();
      onLines('stdout', split.stdout.flush());
      onLines('stderr', split.stderr.flush());
      resolve({ exitCode: exit.code, signal: exit.signal, cancelled, finished, stderrTail });
    };
    child.on('error', (e) => {
      settled = true;
      o.signal?.removeEventListener('abort', cancel);
      control?.destroy();
      reject(new Error(`could not start ${cmd}: ${e.message}`));
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      // The harness is done: end what is left of its group (children the script left
      // running); their inherited stdout/stderr would otherwise hold 'close' off for ever.
      killGroup('SIGKILL');
      // A process that left the group (setsid) and still holds the pipes: stop waiting.
      closeTimer = setTimeout(() => {
        stdout.destroy();
        stderr.destroy();
        finish();
      }, 5_000);
    });
    child.on('close', () => finish());
  });
}
