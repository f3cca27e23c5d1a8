/**
 * Lines of a text: where each starts and ends, and which holds an offset. Line breaks are
 * `\n`, `\r\n` and a lone `\r`, as Python reads them; offsets are UTF-16 code units.
 */
import { lastAtOrBelow } from '../arrays';

export function lineStartsOf(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) starts.push(i + 1);
    else if (c === 13) {
      if (text.charCodeAt(i + 1) === 10) i++;
      starts.push(i + 1);
    }
  }
  return starts;
}

/** 0-based line of an offset. */
export function lineOf(lineStarts: readonly number[], offset: number): number {
  return lastAtOrBelow(lineStarts, offset);
}

/** Offset of the end of a line's content (before its line break). */
export function lineEnd(text: string, lineStarts: readonly number[], line: number): number {
  const next = lineStarts[line + 1];
  if (next === undefined) return text.length;
  let e = next;
  if (text.charCodeAt(e - 1) === 10) e--;
  if (text.charCodeAt(e - 1) === 13) e--;
  return e;
}
