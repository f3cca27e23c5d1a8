/**
 * Which workspace files travel to a remote target. In a git work tree git decides
 * (`git ls-files -co --exclude-standard`: tracked plus untracked-but-not-ignored, so
 * .gitignore, .git/info/exclude and the global excludes all apply exactly). Elsewhere
 * a walk applies the .gitignore files it finds, with the common subset of the syntax:
 * comments, `!` negation, a trailing `/` for folders, a leading or inner `/` to anchor
 * to the .gitignore's folder, `*`, `?`, `[...]` and `**`.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { formatBytes } from '../units';

/** Never uploaded, whatever the ignore files say: VCS data, environments, our own runs. */
export const ALWAYS_SKIPPED_DIRS = new Set(['.git', '.hg', '.svn', 'node_modules', '.venv', 'venv', '.membit', '__pycache__', '.mypy_cache', '.pytest_cache', '.ruff_cache', '.tox']);

/** Default upload cap: big enough for code and small data, small enough to notice a checkpoint. */
export const DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024;

export interface LocalFile {
  /** Path relative to the tree's root, with `/` separators. */
  path: string;
  /** Absolute local path to read from. */
  abs: string;
  size: number;
  executable: boolean;
}

export interface HashedFile extends LocalFile {
  sha256: string;
}

function toPosix(p: string): string {
  return sep === '/' ? p : p.split(sep).join('/');
}

function skippedPath(rel: string): boolean {
  return rel.split('/').some((part) => ALWAYS_SKIPPED_DIRS.has(part)) || rel.endsWith('.pyc');
}

/** Relative paths from `git ls-files`, or undefined when the folder is not in a git work tree. */
function gitListing(root: string): string[] | undefined {
  try {
    const inside = execFileSync('git', ['rev-parse', '--is-inside-work-tree'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    if (inside.trim() !== 'true') return undefined;
    // -z: names come raw (no C-quoting of spaces, quotes or UTF-8), NUL-separated.
    const out = execFileSync('git', ['ls-files', '-z', '-c', '-o', '--exclude-standard'], {
      cwd: root,
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return [...new Set(out.split('\0').filter(Boolean))];
  } catch {
    return undefined;
  }
}

interface IgnoreRule {
  re: RegExp;
  negate: boolean;
  dirOnly: boolean;
}

/** One .gitignore glob as a regex over paths relative to the .gitignore's folder. */
export function globToRegExp(pattern: string): { re: RegExp; dirOnly: boolean } {
  let p = pattern;
  const dirOnly = p.endsWith('/');
  if (dirOnly) p = p.slice(0, -1);
  // A slash anywhere but the end anchors the pattern to the .gitignore's folder.
  const anchored = p.includes('/');
  if (p.startsWith('/')) p = p.slice(1);
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i] as string;
    if (c === '*' && p[i + 1] === '*') {
      const slashAfter = p[i + 2] === '/';
      const atStart = i === 0 || p[i - 1] === '/';
      if (atStart && slashAfter) {
        re += '(?:.*/)?'; // `**/` : zero or more folders
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = p.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        const body = p.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\');
        re += `[${body}]`;
        i = end;
      }
    } else if (c === '\\' && i + 1 < p.length) {
      re += (p[++i] as string).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return { re: new RegExp(`^${anchored ? '' : '(?:.*/)?'}${re}$`), dirOnly };
}

export function parseGitignore(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.replace(/(?<!\\)\s+$/, '');
    if (!line || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1);
    if (line.startsWith('\\#') || line.startsWith('\\!')) line = line.slice(1);
    const { re, dirOnly } = globToRegExp(line);
    rules.push({ re, negate, dirOnly });
  }
  return rules;
}

/**
 * The last matching rule decides, as in git; rules of outer folders come first.
 * The walk tests a folder before entering it, so an ignored folder's files are never
 * seen (git cannot re-include them either).
 */
function ignored(rules: readonly { base: string; rule: IgnoreRule }[], rel: string, isDir: boolean): boolean {
  let result = false;
  for (const { base, rule } of rules) {
    if (base && !rel.startsWith(`${base}/`)) continue;
    if (rule.dirOnly && !isDir) continue;
    if (rule.re.test(base ? rel.slice(base.length + 1) : rel)) result = !rule.negate;
  }
  return result;
}

/** Files under root by walking, honouring .gitignore files on the way down. */
function walkListing(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string, rules: { base: string; rule: IgnoreRule }[]) => {
    let here = rules;
    const gi = join(dir, '.gitignore');
    if (existsSync(gi)) {
      try {
        here = [...rules, ...parseGitignore(readFileSync(gi, 'utf8')).map((rule) => ({ base: rel, rule }))];
      } catch {
        // An unreadable .gitignore ignores nothing.
      }
    }
    for (const ent of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const childRel = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) {
        if (ALWAYS_SKIPPED_DIRS.has(ent.name) || ignored(here, childRel, true)) continue;
        walk(join(dir, ent.name), childRel, here);
      } else if ((ent.isFile() || ent.isSymbolicLink()) && !ignored(here, childRel, false)) out.push(childRel);
    }
  };
  walk(root, '', []);
  return out;
}

export class UploadTooLargeError extends Error {
  constructor(
    readonly total: number,
    readonly cap: number,
    readonly largest: readonly { path: string; size: number }[],
  ) {
    super(
      `the workspace upload is ${formatBytes(total)}, over the ${formatBytes(cap)} cap; largest files: ${largest
        .map((f) => `${f.path} (${formatBytes(f.size)})`)
        .join(', ')}. Add what the run does not need to .gitignore (data can stay on the remote).`,
    );
    this.name = 'UploadTooLargeError';
  }
}

/**
 * The files of a workspace to upload: regular files only (a symlink counts when it
 * points at a file inside the workspace; others are skipped, so nothing outside the
 * folder leaks out), sorted by path, within the size cap.
 */
export function listWorkspaceFiles(root: string, maxBytes = DEFAULT_MAX_UPLOAD_BYTES): LocalFile[] {
  const realRoot = realpathSync(root);
  const names = gitListing(root) ?? walkListing(root);
  const files: LocalFile[] = [];
  for (const name of names) {
    const rel = toPosix(name);
    if (skippedPath(rel)) continue;
    const abs = join(root, name);
    let st;
    try {
      const l = lstatSync(abs);
      if (l.isSymbolicLink()) {
        const target = realpathSync(abs);
        if (!(target === realRoot || target.startsWith(realRoot + sep))) continue;
      }
      st = statSync(abs);
    } catch {
      continue; // tracked but deleted, or a dangling link
    }
    if (!st.isFile()) continue; // submodules show up as folders
    files.push({ path: rel, abs, size: st.size, executable: (st.mode & 0o111) !== 0 });
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const total = files.reduce((s, f) => s + f.size, 0);
  if (total > maxBytes) {
    const largest = [...files].sort((a, b) => b.size - a.size).slice(0, 5).map((f) => ({ path: f.path, size: f.size }));
    throw new UploadTooLargeError(total, maxBytes, largest);
  }
  return files;
}

/** The files of a Python package folder (e.g. dist/kernels/membit) under `prefix/`. */
export function listPackageFiles(dir: string, prefix: string): LocalFile[] {
  const out: LocalFile[] = [];
  const walk = (d: string) => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const abs = join(d, ent.name);
      if (ent.isDirectory()) {
        if (!ALWAYS_SKIPPED_DIRS.has(ent.name) && !ent.name.endsWith('.egg-info')) walk(abs);
      } else if (ent.isFile() && !ent.name.endsWith('.pyc')) {
        const st = statSync(abs);
        out.push({ path: `${prefix}/${toPosix(relative(dir, abs))}`, abs, size: st.size, executable: (st.mode & 0o111) !== 0 });
      }
    }
  };
  walk(dir);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function hashFiles(files: readonly LocalFile[]): HashedFile[] {
  return files.map((f) => ({ ...f, sha256: sha256(readFileSync(f.abs)) }));
}

/**
 * A tree's identity: the hash of its sorted (path, mode, content hash) list. Same
 * files, same id, on any machine; one changed byte or name, a new id.
 */
export function treeHash(files: readonly HashedFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.path}\0${f.executable ? 'x' : '-'}\0${f.sha256}\n`);
  return h.digest('hex');
}
