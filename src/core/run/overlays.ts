/**
 * Rewritten source for a run: the `sdpa` lever on a model whose eager attention is written
 * in the user's own code (nanoGPT style) cannot be switched at run time, so the run executes
 * the advisor's rewrite of those files instead (`python -m membit.profile --overlay
 * ORIG=REPLACEMENT`). The user's files are never written: replacements live in a temporary
 * folder (local runs) or travel with the upload (SSH runs).
 *
 * Which files: the script, then the .py files under the script's folder, then under the
 * workspace root, bounded (200 files of 1 MiB at most, 2000 folders; VCS, environment and
 * hidden folders skipped).
 */
import { mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { applyLever } from '../rewrite';
import { ALWAYS_SKIPPED_DIRS, sortedEntries } from './files';

export const OVERLAY_MAX_FILES = 200;
export const OVERLAY_MAX_BYTES = 1024 * 1024;
/** Folders read while looking for .py files (a data folder of many subfolders stops the walk early). */
export const OVERLAY_MAX_DIRS = 2000;

/** One file of the run replaced by its rewritten text. */
export interface OverlayFile {
  /** Absolute path of the user's file. */
  orig: string;
  text: string;
  /** What the rewrite did there, one line per place (from the rewriter). */
  changes: string[];
}

export type { OverlayArg } from './harness';

export interface OverlaySearch {
  overlays: OverlayFile[];
  /** .py files read. */
  searched: number;
  /** Folders searched, as given (script folder, workspace root). */
  folders: string[];
  /** Files left out for their size. */
  tooLarge: string[];
  /** The file limit stopped the search. */
  truncated: boolean;
}

/** Up to `limit` .py files under `dir` (sorted, depth first), skipping VCS/environment folders and links. */
function pyFiles(dir: string, limit: number, seenDirs: Set<string>, maxDirs: number): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    if (out.length >= limit || seenDirs.size >= maxDirs) return;
    let real: string;
    try {
      real = realpathSync(d);
    } catch {
      return;
    }
    if (seenDirs.has(real)) return;
    seenDirs.add(real);
    const sub: string[] = [];
    for (const ent of sortedEntries(d)) {
      if (out.length >= limit) return;
      const p = join(d, ent.name);
      if (ent.isDirectory()) {
        if (!ALWAYS_SKIPPED_DIRS.has(ent.name) && ent.name !== 'site-packages' && !ent.name.startsWith('.')) sub.push(p);
      } else if (ent.isFile() && ent.name.endsWith('.py')) out.push(p);
    }
    for (const s of sub) walk(s);
  };
  walk(dir);
  return out;
}

/**
 * The advisor's SDPA rewrite of every file (script first) where it applies. Pure in effect:
 * reads files, writes nothing; a file that cannot be read is skipped.
 */
export async function findSdpaOverlays(script: string, workspace: string, o: { maxFiles?: number; maxBytes?: number } = {}): Promise<OverlaySearch> {
  const maxFiles = o.maxFiles ?? OVERLAY_MAX_FILES;
  const maxBytes = o.maxBytes ?? OVERLAY_MAX_BYTES;
  const scriptAbs = resolve(workspace, script);
  const folders = [...new Set([dirname(scriptAbs), resolve(workspace)])];
  const seenDirs = new Set<string>();
  const seenFiles = new Set<string>();
  const candidates: string[] = [];
  const add = (p: string): void => {
    let real: string;
    try {
      real = realpathSync(p);
    } catch {
      return;
    }
    if (!seenFiles.has(real) && candidates.length < maxFiles) {
      seenFiles.add(real);
      candidates.push(p);
    }
  };
  add(scriptAbs);
  let truncated = false;
  for (const f of folders) {
    for (const p of pyFiles(f, maxFiles + 1, seenDirs, OVERLAY_MAX_DIRS)) add(p);
    if (candidates.length >= maxFiles || seenDirs.size >= OVERLAY_MAX_DIRS) truncated = true;
  }
  const overlays: OverlayFile[] = [];
  const tooLarge: string[] = [];
  for (const p of candidates) {
    let text: string;
    try {
      if (statSync(p).size > maxBytes) {
        tooLarge.push(p);
        continue;
      }
      text = readFileSync(p, 'utf8');
    } catch {
      continue;
    }
    // The rewriter needs one of these; most files have neither, and are not analysed.
    if (!text.includes('softmax') && !text.includes('attn_implementation')) continue;
    const r = await applyLever(text, 'sdpa');
    if (r.applied > 0 && r.text !== text) overlays.push({ orig: p, text: r.text, changes: r.changes.map((c) => `line ${c.line + 1}: ${c.description}`) });
  }
  return { overlays, searched: candidates.length, folders, tooLarge, truncated };
}

/** A file name for a replacement: no '=' (the harness splits ORIG=REPLACEMENT) and nothing odd. */
export function replacementName(index: number, orig: string): string {
  return `${index}-${basename(orig).replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/** Writes the replacements into a fresh temporary folder; `dispose` removes it. */
export function writeOverlays(files: readonly OverlayFile[]): { dir: string; names: string[]; dispose: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'membit-overlays-'));
  const names = files.map((f, i) => {
    const name = replacementName(i, f.orig);
    writeFileSync(join(dir, name), f.text);
    return name;
  });
  return { dir, names, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One line for logs: what the search found, in the user's terms. */
export function describeSearch(s: OverlaySearch, workspace: string): string {
  const rel = (p: string) => relative(workspace, p) || '.';
  if (s.overlays.length) {
    const places = s.overlays.reduce((n, o) => n + o.changes.length, 0);
    return `sdpa: this run uses the advisor's rewrite of ${s.overlays.map((o) => rel(o.orig)).join(', ')} (${places} eager attention block(s) → scaled_dot_product_attention); your files are unchanged`;
  }
  const large = s.tooLarge.length ? `; ${s.tooLarge.length} file(s) over 1 MiB skipped` : '';
  const cut = s.truncated ? ` (stopped at ${s.searched} files)` : '';
  return `sdpa: no eager attention Membit can rewrite in ${s.searched} .py file(s) under ${s.folders.map(rel).join(' and ')}${cut}${large}; a transformers model is switched to SDPA at run time`;
}
