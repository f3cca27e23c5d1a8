/**
 * Unified diffs (the `diff -u` / `git diff` format) for `membit convert --diff`:
 * Myers' shortest edit script over lines, hunks with 3 lines of context, and the
 * `\ No newline at end of file` marker, so `git apply` and `patch -p1` accept it.
 * Lines keep their own line breaks, so a CRLF file diffs as CRLF.
 */

export interface DiffOptions {
  /** Paths shown after `--- ` and `+++ ` (e.g. `a/x.py`, `b/x.py`). */
  oldPath: string;
  newPath: string;
  /** Lines of context around each change; default 3. */
  context?: number;
}

/** Splits text into lines, each with its line break (the last may have none). */
export function splitLines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10 || c === 13) {
      if (c === 13 && text.charCodeAt(i + 1) === 10) i++;
      out.push(text.slice(start, i + 1));
      start = i + 1;
    }
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

type Op = '=' | '-' | '+';

/** Beyond this many differences the script is not minimised any further (still correct). */
const MAX_D = 4000;

/** The edit script turning `a` into `b`: one op per line, in order. */
export function diffLines(a: readonly string[], b: readonly string[]): Op[] {
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
  const A = a.slice(pre, a.length - suf);
  const B = b.slice(pre, b.length - suf);
  const mid = myers(A, B) ?? [...A.map((): Op => '-'), ...B.map((): Op => '+')];
  return [...Array<Op>(pre).fill('='), ...mid, ...Array<Op>(suf).fill('=')];
}

/** Myers' O(ND) algorithm with the trace kept for backtracking; undefined past MAX_D. */
function myers(a: readonly string[], b: readonly string[]): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const max = n + m;
  if (max === 0) return [];
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace: Int32Array[] = [];
  let found = -1;
  for (let d = 0; d <= Math.min(max, MAX_D); d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && (v[offset + k - 1] as number) < (v[offset + k + 1] as number)) ? (v[offset + k + 1] as number) : (v[offset + k - 1] as number) + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) {
        found = d;
        break;
      }
    }
    if (found >= 0) break;
  }
  if (found < 0) return undefined;
  const ops: Op[] = [];
  let x = n;
  let y = m;
  for (let d = found; d > 0; d--) {
    const row = trace[d] as Int32Array;
    // row holds v[-d-1 .. d+1] as it was before step d.
    const at = (k: number) => row[k + d + 1] as number;
    const k = x - y;
    const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
    const prevX = at(prevK);
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) {
      ops.push('=');
      x--;
      y--;
    }
    if (x === prevX) {
      ops.push('+');
      y--;
    } else {
      ops.push('-');
      x--;
    }
  }
  while (x > 0 && y > 0) {
    ops.push('=');
    x--;
    y--;
  }
  return ops.reverse();
}

function emit(prefix: string, line: string): string {
  const ends = line.endsWith('\n') || line.endsWith('\r');
  return ends ? `${prefix}${line}${line.endsWith('\r') ? '\n' : ''}` : `${prefix}${line}\n\\ No newline at end of file\n`;
}

function rangeText(start: number, len: number): string {
  // An empty range names the line before it (0 at the top of the file).
  if (len === 0) return `${start},0`;
  return len === 1 ? `${start + 1}` : `${start + 1},${len}`;
}

/** A unified diff of two texts; '' when they are equal. */
export function unifiedDiff(oldText: string, newText: string, opts: DiffOptions): string {
  if (oldText === newText) return '';
  const context = opts.context ?? 3;
  const a = splitLines(oldText);
  const b = splitLines(newText);
  const ops = diffLines(a, b);
  // Position of each op in a and b.
  const ia: number[] = [];
  const ib: number[] = [];
  let x = 0;
  let y = 0;
  for (const op of ops) {
    ia.push(x);
    ib.push(y);
    if (op !== '+') x++;
    if (op !== '-') y++;
  }
  const changed = ops.map((op, i) => (op !== '=' ? i : -1)).filter((i) => i >= 0);
  let out = `--- ${opts.oldPath}\n+++ ${opts.newPath}\n`;
  let h = 0;
  while (h < changed.length) {
    // A hunk: changes closer than 2 * context lines apart share one.
    let last = h;
    while (last + 1 < changed.length && (changed[last + 1] as number) - (changed[last] as number) <= 2 * context + 1) last++;
    const from = Math.max(0, (changed[h] as number) - context);
    const to = Math.min(ops.length, (changed[last] as number) + context + 1);
    let body = '';
    let la = 0;
    let lb = 0;
    for (let i = from; i < to; i++) {
      const op = ops[i] as Op;
      if (op === '=') {
        body += emit(' ', a[ia[i] as number] as string);
        la++;
        lb++;
      } else if (op === '-') {
        body += emit('-', a[ia[i] as number] as string);
        la++;
      } else {
        body += emit('+', b[ib[i] as number] as string);
        lb++;
      }
    }
    out += `@@ -${rangeText(ia[from] as number, la)} +${rangeText(ib[from] as number, lb)} @@\n${body}`;
    h = last + 1;
  }
  return out;
}

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
