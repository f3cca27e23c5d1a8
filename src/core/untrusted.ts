/**
 * Showing strings that come from untrusted data (reports, snapshots, files in the
 * workspace) without letting them act: no Markdown link or command in a hover, no
 * terminal escape sequence on stdout, no path that leaves the workspace.
 *
 * Written here rather than taken from a library because each is a few lines over
 * well-defined rules (CommonMark backslash escapes and code spans; ECMA-48 control
 * characters), and the extension host loads no Markdown parser.
 */
import { realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';

/**
 * C0 controls (ESC, BEL, CR, …), DEL, C1 controls (CSI is U+009B, OSC U+009D), and the
 * bidirectional overrides/isolates that reorder what is shown. Tab and newline are kept
 * by `terminalSafe`, mapped to spaces by the Markdown helpers.
 */
// eslint-disable-next-line no-control-regex -- these patterns match control characters on purpose
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function hex(c: string): string {
  const n = c.codePointAt(0) ?? 0;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
}

/**
 * A value read from untrusted JSON, for a message: primitives as `String` writes them,
 * objects and arrays as JSON instead of `[object Object]`.
 */
export function shown(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' || v === undefined || v === null) return String(v);
  return JSON.stringify(v);
}

/**
 * Text for a terminal: control characters are shown as `\x1b`-style escapes instead of
 * being sent, so a report cannot move the cursor, retitle the window, write to the
 * clipboard (OSC 52) or hide text. Newlines and tabs pass.
 */
export function terminalSafe(s: string): string {
  return s.replace(CONTROLS, hex);
}

/**
 * JSON text for a terminal: the same characters as `\u` escapes, so the document still
 * parses to exactly the same strings (JSON.stringify escapes C0 controls but not C1 or bidi).
 */
export function jsonTerminalSafe(json: string): string {
  return json.replace(CONTROLS, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`);
}

/** One line of text: line breaks and tabs become spaces, other controls are escaped visibly. */
function oneLine(s: string): string {
  return terminalSafe(s.replace(/[\r\n\t\u2028\u2029]+/g, ' '));
}

/**
 * Plain Markdown text: every ASCII punctuation character backslash-escaped (CommonMark
 * allows that for all of them), so `[x](command:…)`, `<…>`, `*`, `|` and HTML show as typed.
 */
export function mdText(s: string): string {
  return oneLine(s).replace(/[!-/:-@[-`{-~]/g, '\\$&');
}

/**
 * A Markdown code span showing `s` literally, whatever it holds: the fence is one backtick
 * longer than the longest run inside, so the string cannot close it and continue as
 * Markdown. `table`: inside a GFM table cell, where `|` would end the cell even in a code
 * span unless escaped (GFM spec, tables extension).
 */
export function mdCode(s: string, opts: { table?: boolean } = {}): string {
  let body = oneLine(s);
  if (opts.table) body = body.replace(/\|/g, '\\|');
  let longest = 0;
  for (const m of body.matchAll(/`+/g)) longest = Math.max(longest, m[0].length);
  const fence = '`'.repeat(longest + 1);
  // A space on each side keeps a leading/trailing backtick off the fence; CommonMark strips one each side.
  const pad = body.startsWith('`') || body.endsWith('`') || body === '' ? ' ' : '';
  return `${fence}${pad}${body}${pad}${fence}`;
}

/** `realpath` of the longest existing prefix of `p`, with the rest appended (a file need not exist yet). */
function realish(p: string): string {
  let head = p;
  const tail: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...tail.reverse());
    } catch {
      const up = dirname(head);
      if (up === head) return p;
      tail.push(head.slice(up.length).replace(/^[\\/]+/, ''));
      head = up;
    }
  }
}

/**
 * `file` (relative to `root`, or absolute) as an absolute path, only when it lies inside
 * `root` after resolving symlinks: a link in the workspace that points outside it is
 * outside. Undefined otherwise.
 */
export function resolveInside(root: string, file: string): string | undefined {
  if (file.includes('\0')) return undefined;
  const abs = isAbsolute(file) ? file : resolve(root, file);
  const realRoot = realish(resolve(root));
  const real = realish(abs);
  const rel = relative(realRoot, real);
  if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) return undefined;
  return abs;
}
