/**
 * Sources of the config classes a modeling file imports from its own folder
 * (`from .configuration_bert import BertConfig`). HF modeling files read every width and
 * dropout rate from `config.*`; the numbers are the defaults of that class, in the sibling
 * file. Reading is bounded: only `<folder>/<module>.py` for single-dot imports, never a path
 * that resolves outside the folder, at most MAX_FILES files of at most MAX_BYTES each, and a
 * file that cannot be read is skipped.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { RelatedSource } from './types';

export const RELATED_MAX_BYTES = 2 * 1024 * 1024;
export const RELATED_MAX_FILES = 4;

/** A module of the same folder (`.configuration_bert`), not of a parent package (`..utils`). */
const SIBLING = /^\.([A-Za-z_]\w*)$/;

/**
 * The last text read per path, kept while the file's size and mtime stay the same: the editor
 * rescans on every pause in typing, and the config next to the file rarely changes.
 */
const cache = new Map<string, { size: number; mtimeMs: number; text: string }>();
const CACHE_ENTRIES = 32;

/**
 * Reads the sibling modules named (`.configuration_bert`) from `dir`. Returns what could be
 * read, in the order asked, at most `maxFiles`.
 */
export function readRelated(dir: string, modules: readonly string[], maxBytes = RELATED_MAX_BYTES, maxFiles = RELATED_MAX_FILES): RelatedSource[] {
  const out: RelatedSource[] = [];
  let realDir: string | undefined;
  for (const module of new Set(modules)) {
    if (out.length >= maxFiles) break;
    const m = SIBLING.exec(module);
    if (!m) continue;
    const name = `${m[1]}.py`;
    const path = join(dir, name);
    try {
      realDir ??= realpathSync(dir);
      // A link that leads out of the folder is not read.
      if (dirname(realpathSync(path)) !== realDir) continue;
      const st = statSync(path);
      if (!st.isFile() || st.size > maxBytes) continue;
      let hit = cache.get(path);
      if (hit?.size !== st.size || hit.mtimeMs !== st.mtimeMs) {
        hit = { size: st.size, mtimeMs: st.mtimeMs, text: readFileSync(path, 'utf8').replace(/^\uFEFF/, '') };
        cache.delete(path);
        cache.set(path, hit);
        const oldest = cache.keys().next();
        if (cache.size > CACHE_ENTRIES && !oldest.done) cache.delete(oldest.value);
      }
      out.push({ module, file: name, text: hit.text });
    } catch {
      // Missing, unreadable or vanished between the calls: the scan goes on without it.
    }
  }
  return out;
}
