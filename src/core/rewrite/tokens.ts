/**
 * A small Python tokenizer, kept for what must work from the text alone. New rewrites read
 * tree-sitter's syntax tree (syntax.ts, statements.ts), as the levers do. This stays where
 * Membit's own edits are found again and undone: that must work on any text, however
 * broken the rest of the file is, and a token-level reading stays local (what is a string,
 * a comment, a bracket) where a parser's error recovery may fold a broken region into one
 * error node. What writes those edits reads them the same way, so the two agree:
 *
 *   revert.ts   finds converted calls, their `mode=` keyword, `membit.patch(...)` statements
 *               and the imports Membit added, in text that may not parse any more;
 *   calls.ts    converted calls and the per-line `# membit: was ...` marks: revert reads
 *               them, and convert writes them by the same reading so they round-trip;
 *   imports.ts  what the imports bind and where an added import goes: revert decides which
 *               imports to drop with it, and convert, patch.ts and the levers (leverCommon.ts)
 *               resolve names and place their imports through the same model;
 *   convert.ts  locates each scanned call again, its arguments and where `mode=` goes;
 *   patch.ts    the statement on a line and the name it assigns.
 *
 * convert.ts and patch.ts have not moved to the tree yet (their APIs would turn asynchronous,
 * as the levers' did): what they write, calls.ts and revert find again from the text.
 *
 * It is error tolerant like the scanner: an unterminated string ends at its line
 * (or at the end of the file for a triple-quoted one), stray closers are ignored.
 * Offsets are indices into the JS string, so columns are UTF-16 code units, the
 * convention of `SiteRange` and of VS Code.
 */
import { lineOf, lineStartsOf } from './lines';
import { itemAt } from '../arrays';

type TokType = 'name' | 'number' | 'string' | 'op' | 'comment' | 'newline' | 'nl' | 'cont' | 'error';

export interface Tok {
  type: TokType;
  start: number;
  end: number;
  /** Bracket depth before this token ((, [ and { count). */
  depth: number;
}

/** One logical line: the tokens of one statement line, `newline` excluded. */
export interface LogicalLine {
  /** Index of the first and last token (inclusive) in `Tokens.toks`. */
  first: number;
  last: number;
  /** Column of the first token: 0 for top-level statements. */
  indent: number;
  startLine: number;
  endLine: number;
}

export interface Tokens {
  text: string;
  toks: Tok[];
  lines: LogicalLine[];
  /** Offset of the first character of each physical line. */
  lineStarts: number[];
}

const NAME_START = /[\p{L}\p{Nl}_]/u;
const NAME = /[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*/uy;
const NUMBER = /(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)[jJlL]?/y;
/** String prefixes Python accepts (any case); `t` is 3.14's template strings. */
const PREFIX = /(?:[rR][bBfFtT]?|[bBfFtT][rR]?|[uU])(?=['"])/y;
const OPS3 = new Set(['**=', '//=', '>>=', '<<=', '...', '!=']);
const OPS2 = new Set(['**', '//', '<<', '>>', '<=', '>=', '==', '!=', '->', ':=', '+=', '-=', '*=', '/=', '%=', '&=', '|=', '^=', '@=']);

function isNewline(c: number): boolean {
  return c === 10 || c === 13;
}

/**
 * End of the string literal whose prefix starts at `i` (`quoteAt` is the first
 * quote). f-strings are read with their replacement fields, which may hold strings
 * of the same quote (Python 3.12).
 */
function scanString(text: string, i: number, quoteAt: number): number {
  const prefix = text.slice(i, quoteAt).toLowerCase();
  const formatted = prefix.includes('f') || prefix.includes('t');
  const q = itemAt(text, quoteAt);
  const triple = text.startsWith(q + q + q, quoteAt);
  const closer = triple ? q + q + q : q;
  let j = quoteAt + closer.length;
  const n = text.length;
  while (j < n) {
    const c = itemAt(text, j);
    if (c === '\\') {
      // A backslash escapes the next character, a line break included, even in raw strings.
      j += text.startsWith('\r\n', j + 1) ? 3 : 2;
      continue;
    }
    if (text.startsWith(closer, j)) return j + closer.length;
    if (!triple && isNewline(c.charCodeAt(0))) return j;
    if (formatted && c === '{') {
      if (text[j + 1] === '{') {
        j += 2;
        continue;
      }
      j = scanField(text, j + 1, triple);
      continue;
    }
    j++;
  }
  return n;
}

/** Skips an f-string replacement field from just after its `{`; returns the offset after its `}`. */
function scanField(text: string, i: number, triple: boolean): number {
  let depth = 0;
  let j = i;
  const n = text.length;
  while (j < n) {
    const c = itemAt(text, j);
    if (!triple && isNewline(c.charCodeAt(0))) return j;
    if (c === '"' || c === "'") {
      j = scanString(text, j, j);
      continue;
    }
    if (NAME_START.test(c)) {
      PREFIX.lastIndex = j;
      const m = PREFIX.exec(text);
      if (m) {
        j = scanString(text, j, j + m[0].length);
        continue;
      }
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']') depth = Math.max(0, depth - 1);
    else if (c === '}') {
      if (depth === 0) return j + 1;
      depth--;
    }
    j++;
  }
  return n;
}

export function tokenize(text: string): Tokens {
  const toks: Tok[] = [];
  const lineStarts = lineStartsOf(text);
  const n = text.length;
  let depth = 0;
  let i = 0;
  // Whether the current logical line has a token yet (blank and comment lines are not statements).
  let open = false;
  const push = (type: TokType, start: number, end: number) => {
    toks.push({ type, start, end, depth });
  };
  while (i < n) {
    const c = itemAt(text, i);
    const code = c.charCodeAt(0);
    if (c === ' ' || c === '\t' || c === '\f') {
      i++;
      continue;
    }
    if (isNewline(code)) {
      const end = c === '\r' && text[i + 1] === '\n' ? i + 2 : i + 1;
      push(open && depth === 0 ? 'newline' : 'nl', i, end);
      if (depth === 0) open = false;
      i = end;
      continue;
    }
    if (c === '#') {
      let j = i;
      while (j < n && !isNewline(text.charCodeAt(j))) j++;
      push('comment', i, j);
      i = j;
      continue;
    }
    if (c === '\\' && (text[i + 1] === '\n' || text[i + 1] === '\r')) {
      const end = text.startsWith('\r\n', i + 1) ? i + 3 : i + 2;
      push('cont', i, end);
      i = end;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = scanString(text, i, i);
      push('string', i, end);
      open = true;
      i = end;
      continue;
    }
    if (NAME_START.test(c)) {
      PREFIX.lastIndex = i;
      const pm = PREFIX.exec(text);
      if (pm) {
        const end = scanString(text, i, i + pm[0].length);
        push('string', i, end);
        open = true;
        i = end;
        continue;
      }
      NAME.lastIndex = i;
      const m = NAME.exec(text);
      const end = m ? i + m[0].length : i + 1;
      push('name', i, end);
      open = true;
      i = end;
      continue;
    }
    if ((code >= 48 && code <= 57) || (c === '.' && /\d/.test(text[i + 1] ?? ''))) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      const end = m && m[0].length > 0 ? i + m[0].length : i + 1;
      push('number', i, end);
      open = true;
      i = end;
      continue;
    }
    let len = 1;
    if (OPS3.has(text.slice(i, i + 3))) len = 3;
    else if (OPS2.has(text.slice(i, i + 2))) len = 2;
    if (c === '(' || c === '[' || c === '{') {
      push('op', i, i + 1);
      depth++;
    } else if (c === ')' || c === ']' || c === '}') {
      depth = Math.max(0, depth - 1);
      push('op', i, i + 1);
    } else if ('+-*/%@&|^~<>=.,:;!'.includes(c)) {
      push('op', i, i + len);
    } else {
      push('error', i, i + 1);
      len = 1;
    }
    open = true;
    i += len;
  }
  return { text, toks, lines: logicalLines(toks, lineStarts), lineStarts };
}

function isTrivia(type: TokType): boolean {
  return type === 'comment' || type === 'nl' || type === 'cont';
}

function logicalLines(toks: readonly Tok[], lineStarts: readonly number[]): LogicalLine[] {
  const out: LogicalLine[] = [];
  let first = -1;
  const close = (last: number) => {
    if (first < 0) return;
    // Trailing comments and blank-line tokens inside brackets are not the statement's end.
    let l = last;
    while (l > first && isTrivia((itemAt(toks, l)).type)) l--;
    const ft = itemAt(toks, first);
    const startLine = lineOf(lineStarts, ft.start);
    out.push({ first, last: l, indent: ft.start - (itemAt(lineStarts, startLine)), startLine, endLine: lineOf(lineStarts, Math.max(ft.start, (itemAt(toks, l)).end - 1)) });
    first = -1;
  };
  for (let k = 0; k < toks.length; k++) {
    const t = itemAt(toks, k);
    if (t.type === 'newline') {
      close(k - 1);
      continue;
    }
    if (first < 0 && isTrivia(t.type)) continue;
    if (first < 0) first = k;
  }
  close(toks.length - 1);
  return out;
}

/** Source text of a token. */
export function tokText(t: Tokens, k: number): string {
  const tok = t.toks[k];
  return tok ? t.text.slice(tok.start, tok.end) : '';
}

/** Index of the next token after `k` that is code (not a comment, `nl` or continuation), or -1. */
export function nextCode(t: Tokens, k: number): number {
  for (let j = k + 1; j < t.toks.length; j++) {
    if (!isTrivia((itemAt(t.toks, j)).type)) return j;
  }
  return -1;
}

/** Index of the previous code token before `k`, or -1. */
export function prevCode(t: Tokens, k: number): number {
  for (let j = k - 1; j >= 0; j--) {
    if (!isTrivia((itemAt(t.toks, j)).type)) return j;
  }
  return -1;
}

/** For an opening bracket at token `k`, the index of its closer, or -1 when it never closes. */
export function matchingClose(t: Tokens, k: number): number {
  const open = t.toks[k];
  if (!open) return -1;
  // Tokens inside the brackets are one level deeper; the first one back at the
  // opener's depth is its closer (or the bracket never closed).
  for (let j = k + 1; j < t.toks.length; j++) {
    const tok = itemAt(t.toks, j);
    if (tok.depth <= open.depth) return tok.type === 'op' && ')]}'.includes(itemAt(t.text, tok.start)) ? j : -1;
  }
  return -1;
}

/** Index of the token that starts at `offset`, or -1 (binary search; tokens are in order). */
export function tokenAt(t: Tokens, offset: number): number {
  let lo = 0;
  let hi = t.toks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = (itemAt(t.toks, mid)).start;
    if (s === offset) return mid;
    if (s < offset) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Index of the token whose span holds `offset` (start <= offset < end), or -1. */
export function tokenCovering(t: Tokens, offset: number): number {
  let lo = 0;
  let hi = t.toks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const tok = itemAt(t.toks, mid);
    if (offset < tok.start) hi = mid - 1;
    else if (offset >= tok.end) lo = mid + 1;
    else return mid;
  }
  return -1;
}
