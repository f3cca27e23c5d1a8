/**
 * The SSH hosts a user can pick as run targets: the `membit.targets` setting plus the
 * Host entries of their OpenSSH client config. Membit never resolves a host itself;
 * it only lists aliases and lets `ssh` apply the config, so this parser only has to
 * find names, not understand every option.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import type { SshTargetSetting } from '../settings';

export const DEFAULT_REMOTE_PYTHON = 'python3';
/** `~` is expanded by the remote side, so the default follows each user's home. */
export const DEFAULT_REMOTE_WORKDIR = '~/.cache/membit';

/** Splits one config line into keyword and arguments (`Key value`, `Key=value`, "quoted args"). */
export function splitConfigLine(line: string): { key: string; args: string[] } | undefined {
  const trimmed = line.trim();
  if (!trimmed || trimmed.startsWith('#')) return undefined;
  const [, key, rest = ''] = /^([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*)$/.exec(trimmed) ?? /^([A-Za-z][A-Za-z0-9]*)()$/.exec(trimmed) ?? [];
  if (key === undefined) return undefined;
  const args: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  let a: RegExpExecArray | null;
  while ((a = re.exec(rest)) !== null) {
    const word = a[1] ?? a[2] ?? '';
    if (a[2]?.startsWith('#')) break; // a trailing comment
    args.push(word);
  }
  return { key: key.toLowerCase(), args };
}

/** Host patterns that name one host: no wildcards, no negation. */
function isConcreteHost(pattern: string): boolean {
  return pattern.length > 0 && !/[*?!%]/.test(pattern);
}

/** One config file's Host names and Include arguments, in file order. */
export type ConfigItem = { host: string } | { include: string };

export function parseSshConfig(text: string): ConfigItem[] {
  const items: ConfigItem[] = [];
  for (const line of text.split(/\r?\n/)) {
    const parsed = splitConfigLine(line);
    if (!parsed) continue;
    if (parsed.key === 'host') for (const h of parsed.args.filter(isConcreteHost)) items.push({ host: h });
    else if (parsed.key === 'include') for (const f of parsed.args) items.push({ include: f });
  }
  return items;
}

/**
 * Expands one Include argument the way ssh does for the user config: `~` is the home
 * folder, a relative path is relative to ~/.ssh, and `*` / `?` may appear in the last
 * path component (e.g. `config.d/*`). Wildcards in folder names are not supported.
 */
export function expandInclude(arg: string, sshDir: string, home: string): string[] {
  let p = arg.startsWith('~/') ? join(home, arg.slice(2)) : arg;
  if (!isAbsolute(p)) p = join(sshDir, p);
  const name = basename(p);
  if (!/[*?]/.test(name)) return [p];
  const dir = dirname(p);
  if (!existsSync(dir)) return [];
  const re = new RegExp(`^${name.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return readdirSync(dir)
    .filter((f) => re.test(f))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * Host aliases from an OpenSSH config file and the files it includes (depth-limited
 * like ssh's own), without duplicates, in file order. A missing file gives none.
 */
export function listSshHosts(configPath = join(homedir(), '.ssh', 'config'), home = homedir()): string[] {
  const seen = new Set<string>();
  const visited = new Set<string>();
  const sshDir = join(home, '.ssh');
  const visit = (file: string, depth: number) => {
    if (depth > 16 || visited.has(file)) return;
    visited.add(file);
    let text: string;
    try {
      if (!statSync(file).isFile()) return;
      text = readFileSync(file, 'utf8');
    } catch {
      return;
    }
    // An Include's hosts come where the Include is, as ssh reads them.
    for (const item of parseSshConfig(text)) {
      if ('host' in item) seen.add(item.host);
      else for (const f of expandInclude(item.include, sshDir, home)) visit(f, depth + 1);
    }
  };
  visit(configPath, 0);
  return [...seen];
}

/** A fully specified SSH target: settings filled with defaults. */
export interface SshTargetInfo {
  host: string;
  python: string;
  workdir: string;
  env: Record<string, string>;
  /** Where the target came from, for the picker's description. */
  source: 'membit.targets' | 'ssh config';
}

/**
 * The targets to offer: every `membit.targets` entry (they win on the same host) and
 * then every ssh-config host not already listed, with default python and workdir.
 */
export function sshTargets(settings: readonly SshTargetSetting[], configHosts: readonly string[]): SshTargetInfo[] {
  const out: SshTargetInfo[] = [];
  const have = new Set<string>();
  for (const t of settings) {
    if (!t.host || have.has(t.host)) continue;
    have.add(t.host);
    out.push({
      host: t.host,
      python: t.python || DEFAULT_REMOTE_PYTHON,
      workdir: t.workdir || DEFAULT_REMOTE_WORKDIR,
      env: { ...(t.env ?? {}) },
      source: 'membit.targets',
    });
  }
  for (const h of configHosts) {
    if (have.has(h)) continue;
    have.add(h);
    out.push({ host: h, python: DEFAULT_REMOTE_PYTHON, workdir: DEFAULT_REMOTE_WORKDIR, env: {}, source: 'ssh config' });
  }
  return out;
}

/**
 * What is wrong with a host typed into "Add SSH host…", or undefined when ssh can take it:
 * an alias from the ssh config, a hostname or address, optionally `user@` before it.
 * Ports, keys and jump hosts belong in ~/.ssh/config, where the terminal uses them too.
 */
export function newHostProblem(input: string, known: readonly string[]): string | undefined {
  const h = input.trim();
  if (!h) return 'Type a Host alias from ~/.ssh/config, or user@hostname.';
  if (h.startsWith('-')) return 'A host cannot start with "-" (ssh would read it as an option).';
  if (/\s/.test(h)) return 'A host has no spaces: put options such as a port in ~/.ssh/config (Host … / Port …) and type the alias here.';
  if ((h.match(/@/g) ?? []).length > 1) return 'At most one "@": user@hostname.';
  const name = h.includes('@') ? h.slice(h.indexOf('@') + 1) : h;
  if (!name) return 'The hostname after "@" is missing.';
  if (/^[^@]*:\d+$/.test(h) || /^[^:]+:\d+$/.test(name)) return 'ssh takes no port after ":": add `Port` for this host in ~/.ssh/config and type its alias here.';
  if (!/^[A-Za-z0-9_][A-Za-z0-9._%:-]*$/.test(name) || (h.includes('@') && !/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(h.slice(0, h.indexOf('@'))))) {
    return 'Only letters, digits and . _ - (and : for IPv6 addresses) may appear in a user or host name.';
  }
  if (known.includes(h)) return `${h} is already a target.`;
  return undefined;
}
