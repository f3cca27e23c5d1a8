/**
 * Which workspace files travel to a remote target. In a git work tree git decides
 * (`git ls-files -co --exclude-standard`: tracked plus untracked-but-not-ignored, so
 * .gitignore, .git/info/exclude and the global excludes all apply exactly). Elsewhere
 * a walk applies the .gitignore files it finds, matched by the `ignore` package.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { type Dirent, existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ignore, { type Ignore } from 'ignore';
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

/** One folder's .gitignore, matched by the `ignore` package (git's own rules and edge cases). */
interface IgnoreLevel {
  /** The folder holding the .gitignore, relative to the root ('' for the root). */
  base: string;
  rules: Ignore;
}

/**
 * Whether a path is ignored: the deepest .gitignore with a matching rule decides, as in git
 * (an inner `!keep.tmp` re-includes what an outer `*.tmp` ignored, and the reverse). The walk
 * tests a folder before entering it, so an ignored folder's files are never seen (git cannot
 * re-include them either).
 */
function ignored(levels: readonly IgnoreLevel[], rel: string, isDir: boolean): boolean {
  let result = false;
  for (const { base, rules } of levels) {
    if (base && !rel.startsWith(`${base}/`)) continue;
    const local = (base ? rel.slice(base.length + 1) : rel) + (isDir ? '/' : '');
    const r = rules.test(local);
    if (r.ignored) result = true;
    else if (r.unignored) result = false;
  }
  return result;
}

/** Files under root by walking, honouring .gitignore files on the way down. */
function walkListing(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string, levels: IgnoreLevel[]) => {
    let here = levels;
    const gi = join(dir, '.gitignore');
    if (existsSync(gi)) {
      try {
        here = [...levels, { base: rel, rules: ignore().add(readFileSync(gi, 'utf8')) }];
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

/**
 * A folder's entries sorted by name, with their types as the folder lists them (links are
 * links, never followed); none when it cannot be read (gone, or not ours to read), so a
 * walker skips it.
 */
export function sortedEntries(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  } catch {
    return [];
  }
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
