/** Shared by the tests that start a real sshd on 127.0.0.1. */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';

export function sshdPath(): string {
  for (const p of ['/usr/sbin/sshd', '/usr/local/sbin/sshd']) if (existsSync(p)) return p;
  try {
    return execFileSync('sh', ['-c', 'command -v sshd'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('sshd not found: install openssh-server (bash scripts/setup-system.sh --tests does)');
  }
}

/** A loopback port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}
