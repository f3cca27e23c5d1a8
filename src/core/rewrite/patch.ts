/**
 * The model-level alternative: one `membit.patch(model, ...)` line after the line
 * that builds the model, for code the user does not want to touch (a model from a
 * library, a file they do not own). patch() swaps modules in place at run time and
 * keeps parameter names, so checkpoints load as before.
 */
import type { DropoutMode, FfnMode } from './convert';
import { importEdit } from './convert';
import { type OffsetEdit, type TextEdit, toTextEdits } from './edits';
import { eolOf, missingImports, readImports } from './imports';
import { lineEnd } from './lines';
import { type LogicalLine, nextCode, tokText, type Tokens, tokenize } from './tokens';
import { itemAt } from '../arrays';

export interface PatchOptions {
  /** Dropout mode to patch in; null leaves dropout alone. Default "packed". */
  dropout?: DropoutMode | null;
  /** "2:4" to convert FFN linears as well. */
  ffn?: FfnMode | null;
  /** The model expression; default: the target of the assignment on the line. */
  model?: string;
}

export type PatchResult =
  | { ok: true; edits: TextEdit[]; model: string; call: string; imports: string[]; /** 0-based line the call goes on, in the edited text. */ line: number }
  | { ok: false; reason: string };

function isOp(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

const HEADERS = new Set(['def', 'class', 'if', 'elif', 'else', 'for', 'while', 'with', 'try', 'except', 'finally', 'async', 'return', 'import', 'from', '@', 'match', 'case']);

/** The assignment target of a logical line (`model`, `self.model`), or undefined. */
function assignedName(t: Tokens, line: LogicalLine): string | undefined {
  const depth = itemAt(t.toks, line.first).depth;
  let target = '';
  for (let k = line.first; k <= line.last; k = nextCode(t, k)) {
    if (k < 0) return undefined;
    const tok = itemAt(t.toks, k);
    if (tok.depth === depth && (isOp(t, k, '=') || isOp(t, k, ':'))) {
      // `name = ...` or `name: Type = ...`.
      return /^[\p{L}_][\p{L}\p{N}_]*(\.[\p{L}_][\p{L}\p{N}_]*)*$/u.test(target) ? target : undefined;
    }
    if (tok.type === 'name' || isOp(t, k, '.')) target += tokText(t, k);
    else return undefined;
  }
  return undefined;
}

/** The call text patch() is given. */
export function patchCallText(model: string, opts: PatchOptions): string {
  const dropout = opts.dropout === undefined ? 'packed' : opts.dropout;
  const args = [model, `dropout=${dropout === null ? 'None' : `"${dropout}"`}`];
  if (opts.ffn) args.push(`ffn="${opts.ffn}"`);
  return `membit.patch(${args.join(', ')})`;
}

/**
 * Inserts `membit.patch(<model>, dropout=..., ffn=...)` after the statement on
 * `line` (0-based; any line of a multi-line statement), with its indentation, and
 * `import membit` when nothing binds `membit` yet. Inserting twice adds nothing.
 */
export function insertPatchCall(text: string, line: number, opts: PatchOptions = {}): PatchResult {
  if (opts.dropout === null && !opts.ffn) return { ok: false, reason: 'nothing to patch: give a dropout mode or ffn="2:4"' };
  const t = tokenize(text);
  const idx = t.lines.findIndex((l) => l.startLine <= line && line <= l.endLine);
  const stmt = t.lines[idx];
  if (!stmt) return { ok: false, reason: `line ${line + 1} holds no statement` };
  if (HEADERS.has(tokText(t, stmt.first))) return { ok: false, reason: `line ${line + 1} is not an assignment of a model` };
  const model = opts.model ?? assignedName(t, stmt);
  if (!model) return { ok: false, reason: `line ${line + 1} does not assign to a name: say which variable holds the model` };

  const call = patchCallText(model, opts);
  const next = t.lines[idx + 1];
  if (next && tokText(t, next.first) === 'membit' && t.text.slice(itemAt(t.toks, next.first).start).startsWith(`membit.patch(${model},`)) {
    return { ok: true, edits: [], model, call, imports: [], line: next.startLine };
  }
  const lineStart = itemAt(t.lineStarts, stmt.startLine);
  const indent = t.text.slice(lineStart, itemAt(t.toks, stmt.first).start);
  const eol = eolOf(text);
  const at = lineEnd(text, t.lineStarts, stmt.endLine);
  const edits: OffsetEdit[] = [];
  const imports = readImports(t);
  const add = missingImports(imports, new Set(['membit']));
  if (add.length) edits.push(importEdit(t, imports, add, [stmt.startLine]));
  edits.push({ start: at, end: at, newText: `${eol}${indent}${call}` });
  return { ok: true, edits: toTextEdits(text, edits, t.lineStarts), model, call, imports: add.map(() => 'import membit'), line: stmt.endLine + 1 + add.length };
}
