/**
 * Unified diffs (the `diff -u` / `git diff` format) for `membit convert --diff`. The hunks
 * come from jsdiff (Myers' diff over lines, the `\ No newline at end of file` marker); the
 * `---`/`+++` and `@@` lines are written here, in git's own form: the paths are the ones
 * patchHeaderPath makes (jsdiff would quote an already quoted name again), and a range of
 * one line is written without its length. Lines keep their own line breaks, so a CRLF file
 * diffs as CRLF; a lone CR stays inside its line, as git reads it.
 */
import { structuredPatch } from 'diff';

export interface DiffOptions {
  /** Paths shown after `--- ` and `+++ ` (e.g. `a/x.py`, `b/x.py`). */
  oldPath: string;
  newPath: string;
  /** Lines of context around each change; default 3. */
  context?: number;
}

/**
 * A hunk's range from jsdiff's 1-based start: `start,len`, `start` alone for one line; an
 * empty range names the line before it (0 at the top of the file).
 */
function rangeText(start: number, len: number): string {
  if (len === 0) return `${start - 1},0`;
  return len === 1 ? `${start}` : `${start},${len}`;
}

/** A unified diff of two texts; '' when they are equal. */
export function unifiedDiff(oldText: string, newText: string, opts: DiffOptions): string {
  if (oldText === newText) return '';
  // The rewriter changes a few lines of a file, so the edit distance stays small and
  // Myers' O(ND) search is quick without a limit.
  const patch = structuredPatch('', '', oldText, newText, undefined, undefined, { context: opts.context ?? 3 });
  let out = `--- ${opts.oldPath}\n+++ ${opts.newPath}\n`;
  for (const h of patch.hunks) {
    out += `@@ -${rangeText(h.oldStart, h.oldLines)} +${rangeText(h.newStart, h.newLines)} @@\n`;
    for (const line of h.lines) out += `${line}\n`;
  }
  return out;
}

// eslint-disable-next-line no-control-regex -- git quotes a path holding a control character
const NEEDS_QUOTE = /[\x00-\x1f"\\\x7f]/;
const C_ESCAPES: Record<string, string> = { '\x07': '\\a', '\b': '\\b', '\t': '\\t', '\n': '\\n', '\v': '\\v', '\f': '\\f', '\r': '\\r', '"': '\\"', '\\': '\\\\' };

/**
 * A path for a `--- a/…` / `+++ b/…` header that `git apply` reads back: a path outside the
 * current folder (absolute) is written from the filesystem root without its leading `/`
 * (`a/home/u/m.py`, apply from `/`), never `a//home/…`, which git rejects; a name with a
 * newline, tab, quote, backslash or control character is C-quoted the way git writes it
 * (`"a/odd\nname.py"`).
 */
export function patchHeaderPath(prefix: 'a' | 'b', file: string): string {
  const rel = file.replace(/^[A-Za-z]:[\\/]/, (m) => `${m[0]}/`).replace(/^\/+/, '');
  const full = `${prefix}/${rel}`;
  if (!NEEDS_QUOTE.test(full)) return full;
  let out = '"';
  for (const ch of full) {
    const esc = C_ESCAPES[ch];
    if (esc) out += esc;
    else if (ch < ' ' || ch === '\x7f') out += `\\${ch.charCodeAt(0).toString(8).padStart(3, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}
