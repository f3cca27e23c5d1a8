/**
 * The system OpenSSH client, driven with argv arrays. Using `ssh` itself (not a JS SSH
 * library) means the user's ~/.ssh/config, agent, keys, ProxyJump and known_hosts apply
 * exactly as in their terminal. Everything is non-interactive (BatchMode): a prompt
 * for a password or an unknown host key would hang a background run, so ssh fails
 * instead and we turn its stderr into a sentence.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { remoteCommand } from './quote';

/** How to call ssh for one target. */
export interface SshOptions {
  /** Host alias from the ssh config, or user@host. */
  host: string;
  /** An ssh config file used instead of ~/.ssh/config (`ssh -F`); tests use their own. */
  configFile?: string;
  /** Seconds to wait for the TCP connection and handshake (ConnectTimeout). Default 10. */
  connectTimeout?: number;
  /** Seconds between keep-alive probes (ServerAliveInterval). Default 10. */
  serverAliveInterval?: number;
  /** Unanswered probes before ssh gives up (ServerAliveCountMax). Default 3. */
  serverAliveCountMax?: number;
  /** The ssh program; default `ssh` from PATH. */
  sshPath?: string;
}

/**
 * argv for `ssh … host <remote command>`; the remote command comes from remoteCommand().
 *
 * There is deliberately no way to add free-form ssh options: a guard over them cannot be
 * made right (ssh reads `StrictHostKeyChecking=false`, quoted values, `/dev//null`, `-F`
 * and `-o` abbreviations its own way), and nothing needs them. Ports, keys, jump hosts
 * and the like go in the user's ssh config, where they apply to their terminal too.
 * `configFile` (`membit profile --ssh-config`) is a config file the user names.
 */
export function sshArgv(o: SshOptions, remoteArgv: readonly string[]): [string, ...string[]] {
  if (!o.host || o.host.startsWith('-') || /\s/.test(o.host)) throw new Error(`not an ssh host: "${o.host}"`);
  const seconds = (name: string, v: number | undefined, dflt: number): number => {
    const n = v ?? dflt;
    if (!Number.isInteger(n) || n < 1 || n > 86_400) throw new Error(`${name} must be a whole number of seconds from 1 to 86400, got ${String(v)}`);
    return n;
  };
  const argv: [string, ...string[]] = [o.sshPath ?? 'ssh'];
  if (o.configFile) argv.push('-F', o.configFile);
  argv.push(
    '-o', 'BatchMode=yes',
    '-o', `ConnectTimeout=${seconds('connectTimeout', o.connectTimeout, 10)}`,
    '-o', `ServerAliveInterval=${seconds('serverAliveInterval', o.serverAliveInterval, 10)}`,
    '-o', `ServerAliveCountMax=${seconds('serverAliveCountMax', o.serverAliveCountMax, 3)}`,
    // No terminal: binary stdin/stdout stay clean, and ssh never waits for keyboard input.
    '-T',
    '--',
    o.host,
    remoteCommand(remoteArgv),
  );
  return argv;
}

/** What went wrong with ssh itself (not with the remote command). */
export type SshFailureKind =
  | 'host-key-unknown'
  | 'host-key-changed'
  | 'auth'
  | 'refused'
  | 'timeout'
  | 'resolve'
  | 'unreachable'
  | 'lost'
  | 'config'
  | 'ssh-missing';

/**
 * Why a run could not go on. `ssh`: another ssh failure; `upload`: the files could not
 * be sent (too large, changed meanwhile); `request`: the script or folder cannot run
 * there (e.g. outside the workspace); `remote`: a remote step failed; `report`: no
 * usable report came back.
 */
export type RunErrorCode = SshFailureKind | RemoteProblem | 'ssh' | 'upload' | 'request' | 'remote' | 'report' | 'cancelled';

/** A run failure with a code the UI can switch on (e.g. offer "Run on CPU" for no-cuda). */
export class RunError extends Error {
  constructor(
    readonly code: RunErrorCode,
    message: string,
    /** The raw lines behind the message, for the output channel. */
    readonly detail: readonly string[] = [],
  ) {
    super(message);
    this.name = 'RunError';
  }
}

/** Problems found by the remote preflight; see remote.ts. */
export type RemoteProblem = 'python-missing' | 'torch-missing' | 'torch-broken' | 'no-cuda' | 'workdir';

/** Non-empty lines of ssh's stderr: its own diagnostics, mixed with the remote command's stderr. */
function sshLines(stderr: string): string[] {
  return stderr
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

/**
 * Recognizes ssh's own failures in its stderr (exit status 255) and says what to do.
 * Undefined when nothing known matched: the caller then reports the raw tail.
 */
export function classifySshFailure(stderr: string, host: string): RunError | undefined {
  const lines = sshLines(stderr);
  const find = (re: RegExp) => lines.find((l) => re.test(l));
  const err = (kind: SshFailureKind, msg: string) => new RunError(kind, msg, lines.slice(-12));
  if (find(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/i)) {
    return err('host-key-changed', `the host key of ${host} has changed since you last connected: check with your admin, then fix known_hosts (ssh-keygen -R) and connect once with ssh ${host}`);
  }
  if (find(/Host key verification failed|No (ED25519|ECDSA|RSA|DSA)?\s*host key is known for/i)) {
    return err('host-key-unknown', `host key for ${host} not trusted: connect once with ssh ${host} in a terminal and accept the key, then run again`);
  }
  const denied = find(/Permission denied \(|Too many authentication failures|no mutual signature|Authentication failed/i);
  if (denied) {
    const methods = /\(([^)]*)\)/.exec(denied)?.[1];
    return err('auth', `ssh could not log in to ${host}${methods ? ` (tried ${methods})` : ''}: no key was accepted; check IdentityFile in your ssh config or load the key into ssh-agent (Membit cannot type a password or passphrase)`);
  }
  if (find(/Could not resolve hostname|Name or service not known|nodename nor servname/i)) {
    return err('resolve', `ssh could not resolve ${host}: check the name, or add a Host entry with HostName to ~/.ssh/config`);
  }
  if (find(/Connection refused/i)) {
    return err('refused', `ssh could not reach ${host}: connection refused (is sshd running there, on that port?)`);
  }
  if (find(/Connection timed out|Operation timed out|timed out during banner exchange|Connection timed out during banner/i)) {
    return err('timeout', `ssh could not reach ${host}: the connection timed out (host down, firewall, or VPN not connected?)`);
  }
  if (find(/No route to host|Network is unreachable|Host is down/i)) {
    return err('unreachable', `ssh could not reach ${host}: ${(find(/No route to host|Network is unreachable|Host is down/i) ?? '').replace(/^ssh: /, '')}`);
  }
  if (find(/Timeout, server .* not responding|Connection to .* closed by remote host|Connection closed by|Connection reset|Broken pipe|client_loop: send disconnect|packet_write_wait|Received disconnect/i)) {
    return err('lost', `the connection to ${host} was lost (${(find(/Timeout, server|closed|reset|Broken pipe|disconnect|packet_write_wait/i) ?? '').replace(/^ssh: /, '')})`);
  }
  if (find(/Bad configuration option|Can't open user config file|configuration file .* line|Unsupported option|garbage at end of line/i)) {
    return err('config', `ssh rejected its configuration: ${find(/Bad configuration option|Can't open user config file|line \d+|Unsupported option|garbage/i) ?? ''}`);
  }
  return undefined;
}

export interface SshExecOptions {
  /** Bytes for the remote command's stdin; absent: stdin is empty. */
  input?: Buffer | string;
  /** Writes the remote command's stdin as a stream (e.g. a tar archive); must end it. */
  feed?(stdin: NodeJS.WritableStream): Promise<void>;
  /** Whole-call limit in ms; the ssh process is killed after it. */
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

export interface SshExecResult {
  /** The remote command's exit status; 255 is ssh's own failure (see error). */
  code: number | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
  aborted: boolean;
}

/** Runs one remote command to completion. Rejects only when ssh cannot be started. */
export function sshExec(o: SshOptions, remoteArgv: readonly string[], e: SshExecOptions = {}): Promise<SshExecResult> {
  const [cmd, ...args] = sshArgv(o, remoteArgv);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    const stop = () => killSoftly(child);
    const timer = e.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          stop();
        }, e.timeoutMs)
      : undefined;
    const onAbort = () => {
      aborted = true;
      stop();
    };
    if (e.signal?.aborted) onAbort();
    e.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      // Keep the end: ssh's own diagnosis comes last.
      stderr = (stderr + d).slice(-64_000);
    });
    // The remote side may exit before reading all input (e.g. it failed): not our error.
    child.stdin.on('error', () => undefined);
    if (e.feed) e.feed(child.stdin).catch((err: unknown) => {
      stderr += `\nmembit: ${err instanceof Error ? err.message : String(err)}\n`;
      stop();
    });
    else child.stdin.end(e.input ?? '');
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      e.signal?.removeEventListener('abort', onAbort);
      reject(spawnError(err, cmd));
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      e.signal?.removeEventListener('abort', onAbort);
      resolve({ code, stdout: Buffer.concat(out), stderr, timedOut, aborted });
    });
  });
}

/** An error for an ssh that could not be started at all. */
export function spawnError(err: Error, cmd: string): RunError {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
    return new RunError('ssh-missing', `${cmd} not found: install the OpenSSH client (ssh) to run on remote targets`);
  }
  return new RunError('ssh', `could not start ${cmd}: ${err.message}`);
}

/** SIGTERM, then SIGKILL if ssh has not gone in a few seconds. */
export function killSoftly(child: ChildProcess, graceMs = 3000): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, graceMs);
  t.unref();
  child.once('close', () => clearTimeout(t));
}

/**
 * The error for a finished sshExec that did not succeed: ssh's own failure when its
 * stderr says so, a timeout, or the remote command's tail.
 */
export function execFailure(r: SshExecResult, host: string, what: string): RunError {
  if (r.aborted) return new RunError('cancelled', `${what} on ${host} was cancelled`);
  const known = r.code === 255 || r.code === null ? classifySshFailure(r.stderr, host) : undefined;
  if (known) return known;
  if (r.timedOut) return new RunError('timeout', `${what} on ${host} did not answer in time`, sshLines(r.stderr).slice(-12));
  const tail = sshLines(r.stderr).slice(-6);
  return new RunError(r.code === 255 ? 'ssh' : 'remote', `${what} on ${host} failed (exit ${r.code ?? 'signal'})${tail.length ? `: ${tail.join(' | ')}` : ''}`, tail);
}
