/**
 * Conversions: scanner sites in, text edits out. Only the callee changes (plus the
 * `mode="recompute"` keyword for mask-free dropout); arguments, comments and
 * formatting stay as written. Each site is re-validated against the current text
 * first, so a site that changed since the scan is skipped with a reason, never
 * blindly edited.
 *
 *   nn.Dropout(p)                  → membit.nn.PackedDropout(p)
 *   F.dropout(x, p, training)      → membit.nn.functional.packed_dropout(x, p, training)
 *   torch.dropout(x, p, train)     → membit.nn.functional.packed_dropout(x, p, train)
 *   nn.Linear(d, 4 * d)  (an FFN)  → membit.sparse.SparseLinear24(d, 4 * d)
 *   Dropout(p)  (imported by name) → PackedDropout(p), with `from membit.nn import PackedDropout`
 *
 * A callee written with a module prefix gets `import membit.nn` (or `membit.sparse`);
 * a bare name imported from torch gets the bare Membit name and a `from` import, so
 * each call keeps the style the file already uses.
 */
import { COMPILED_DROPOUT_REASON } from '../scan/format';
import type { FfnMember, Site, SiteRange } from '../scan/types';
import { canMark, findMembitCalls, importFor, markText, type MembitCall, lineMark, MEMBIT_BARE, membitCallee, originalsOnLine, STOCK, type TargetKind, dottedAt } from './calls';
import { type OffsetEdit, offsetOf, type TextEdit, toTextEdits } from './edits';
import { eolOf, IMPORT_MARK, importAnchor, type Imports, MEMBIT_IMPORTS, type MembitImport, missingImports, readImports, resolveCallee, type Style, stockSpelling, boundToMembit } from './imports';
import { lineEnd, lineOf } from './lines';
import { matchingClose, nextCode, prevCode, tokenAt, tokText, type Tokens, tokenize } from './tokens';
import { itemAt } from '../arrays';

export type DropoutMode = 'packed' | 'recompute';
export type FfnMode = '2:4';

export interface ConvertOptions {
  /** Convert dropout sites (`dropout`, `dropout-call`, `attn-dropout`) to this mode; null or absent: leave them. */
  dropout?: DropoutMode | null;
  /** Convert FFN sites to 2:4 sparse linears; null or absent: leave them. */
  ffn?: FfnMode | null;
}

/** Why a site was left alone. */
export type SkipCode =
  /** The text at the site no longer is the call the scanner saw. */
  | 'stale'
  /** Channel-wise dropout (Dropout1d/2d/3d, dropout1d/2d/3d): no element-wise equivalent. */
  | 'channel-dropout'
  /** AlphaDropout / FeatureAlphaDropout and their functional forms: different maths. */
  | 'alpha-dropout'
  /** Other torch dropout functions (`torch.dropout_`, `torch.feature_dropout`, `torch.native_dropout`). */
  | 'other-dropout'
  /** `torch.dropout(..., train=...)` or `**kwargs`: the flag is named differently in membit. */
  | 'keyword-args'
  /** A call through a local variable (`drop = F.dropout if p > 0 else None; drop(x, p)`): the converter rewrites direct calls only. */
  | 'local-alias'
  /** The callee does not resolve to a torch name (for FFNs: not `nn.Linear`). */
  | 'not-linear'
  | 'unresolved'
  /** An FFN given as an instance of an MLP module defined elsewhere. */
  | 'module-ffn'
  /** The callee is written over several tokens with spaces or comments in between. */
  | 'spaced-callee'
  /** The original spelling needs a mark, and the line cannot take a comment. */
  | 'no-mark'
  /** An FFN member in another notebook cell than the site. */
  | 'other-cell'
  /** Already a Membit call (nothing to do). */
  | 'converted'
  /** attn-mask and fused-attn-dropout sites: nothing to convert. */
  | 'not-a-target'
  /** A dropout site in a file that calls torch.compile: packing is not applied there (measured). */
  | 'compiled';

export interface Skipped {
  site: Site;
  /** For FFN sites: the projection that blocked the conversion. */
  member?: 'gate' | 'up' | 'down';
  code: SkipCode;
  reason: string;
}

export interface Converted {
  site: Site;
  member?: 'gate' | 'up' | 'down';
  /** 0-based line of the callee. */
  line: number;
  from: string;
  to: string;
}

export interface ConvertResult {
  /** Sorted, non-overlapping edits against the input text: apply them together (one WorkspaceEdit). */
  edits: TextEdit[];
  converted: Converted[];
  skipped: Skipped[];
  /** Import lines added (without their mark). */
  imports: string[];
}

/** One call to rewrite. */
interface Plan {
  site: Site;
  member?: 'gate' | 'up' | 'down';
  start: number;
  end: number;
  line: number;
  original: string;
  kind: TargetKind;
  style: Style;
  callee: string;
  /** Where `mode="recompute"` goes, and how. */
  mode?: OffsetEdit;
}

/** A call located in the current text: callee offsets and parenthesis tokens. */
interface Located {
  start: number;
  end: number;
  open: number;
  close: number;
}

const CHANNEL = new Set(['Dropout1d', 'Dropout2d', 'Dropout3d', 'dropout1d', 'dropout2d', 'dropout3d']);
const ALPHA = new Set(['AlphaDropout', 'FeatureAlphaDropout', 'alpha_dropout', 'feature_alpha_dropout', 'alpha_dropout_', 'feature_alpha_dropout_']);

function isOp(t: Tokens, k: number, op: string): boolean {
  const tok = t.toks[k];
  return !!tok && tok.type === 'op' && t.text.slice(tok.start, tok.end) === op;
}

/**
 * Finds the call at `range` in the current text and checks it is still `callee(...)`
 * spanning exactly that range. Returns the location or why not.
 */
function locate(t: Tokens, range: SiteRange, callee: string): Located | { code: SkipCode; reason: string } {
  const start = offsetOf(t.text, t.lineStarts, range.startLine, range.startCol);
  const end = offsetOf(t.text, t.lineStarts, range.endLine, range.endCol);
  const where = `line ${range.startLine + 1}`;
  if (start === undefined || end === undefined) return { code: 'stale', reason: `${where} is no longer in the file` };
  const k = tokenAt(t, start);
  if (k < 0 || itemAt(t.toks, k).type !== 'name') return { code: 'stale', reason: `\`${callee}\` is no longer at ${where}, column ${range.startCol + 1} (the text changed since the scan)` };
  const before = prevCode(t, k);
  if (before >= 0 && isOp(t, before, '.')) return { code: 'stale', reason: `\`${callee}\` at ${where} is now part of a longer name` };
  const d = dottedAt(t, k);
  if (d.name !== callee) return { code: 'stale', reason: `the call at ${where} now reads \`${d.name}\`, not \`${callee}\`` };
  const calleeEnd = itemAt(t.toks, d.last).end;
  if (t.text.slice(start, calleeEnd) !== callee) return { code: 'spaced-callee', reason: `\`${callee}\` is written with spaces or line breaks inside the name; convert it by hand` };
  const open = nextCode(t, d.last);
  if (open < 0 || !isOp(t, open, '(')) return { code: 'stale', reason: `\`${callee}\` at ${where} is no longer called` };
  const close = matchingClose(t, open);
  if (close < 0 || itemAt(t.toks, close).end !== end) return { code: 'stale', reason: `the arguments of \`${callee}(...)\` at ${where} changed since the scan` };
  return { start, end: calleeEnd, open, close };
}

/** Top-level arguments of a call: [first, last] token index of each, trivia excluded. */
function argumentsOf(t: Tokens, open: number, close: number): [number, number][] {
  const out: [number, number][] = [];
  const depth = itemAt(t.toks, open).depth + 1;
  let first = -1;
  let last = -1;
  for (let k = nextCode(t, open); k >= 0 && k < close; k = nextCode(t, k)) {
    const tok = itemAt(t.toks, k);
    if (tok.depth === depth && isOp(t, k, ',')) {
      if (first >= 0) out.push([first, last]);
      first = -1;
      continue;
    }
    if (first < 0) first = k;
    last = k;
  }
  if (first >= 0) out.push([first, last]);
  return out;
}

/** The keyword of an argument (`p` in `p=0.1`), `*`/`**` for splats, or null. */
function keywordOf(t: Tokens, arg: [number, number]): string | null {
  const [first] = arg;
  if (isOp(t, first, '*') || isOp(t, first, '**')) return tokText(t, first);
  const eq = nextCode(t, first);
  if (itemAt(t.toks, first).type === 'name' && eq >= 0 && isOp(t, eq, '=')) return tokText(t, first);
  return null;
}

/** Where `mode="recompute"` goes: after the last argument (before a trailing comma), or inside empty parentheses. */
function modeInsertion(t: Tokens, open: number, close: number): OffsetEdit {
  const last = prevCode(t, close);
  if (last === open) {
    const at = itemAt(t.toks, open).end;
    return { start: at, end: at, newText: 'mode="recompute"' };
  }
  const anchor = isOp(t, last, ',') ? prevCode(t, last) : last;
  const at = itemAt(t.toks, anchor).end;
  return { start: at, end: at, newText: ', mode="recompute"' };
}

function finalName(q: string): string {
  return q.slice(q.lastIndexOf('.') + 1);
}

/** Which stock dropout a site is, or why it is not converted. */
function dropoutKind(site: Site): { kind: TargetKind; torchDropout?: boolean } | { code: SkipCode; reason: string } {
  if (site.compiled) return { code: 'compiled', reason: COMPILED_DROPOUT_REASON };
  // The variable may stand for something else on another path, and rewriting the call
  // would leave its assignment as it was: call the dropout directly to convert it.
  if (site.aliasOf) {
    return { code: 'local-alias', reason: `\`${site.callee}\` is a local variable bound to \`${site.aliasOf}\`; only direct calls are converted` };
  }
  const q = site.resolved;
  const name = q ? finalName(q) : '';
  if (q === 'torch.nn.Dropout') return { kind: 'Dropout' };
  if (q === 'torch.nn.functional.dropout') return { kind: 'dropout' };
  if (q === 'torch.dropout') return { kind: 'dropout', torchDropout: true };
  if (CHANNEL.has(name)) {
    return { code: 'channel-dropout', reason: `\`${site.callee}\` drops whole channels; membit's dropout is element-wise and has no channel-wise variant, so there is no drop-in` };
  }
  if (ALPHA.has(name)) {
    return { code: 'alpha-dropout', reason: `\`${site.callee}\` keeps SELU's mean and variance with its own formula; membit has no alpha-dropout variant` };
  }
  if (q && name.includes('dropout')) {
    return { code: 'other-dropout', reason: `\`${site.callee}\` (${q}) has no membit equivalent; only nn.Dropout, F.dropout and torch.dropout are converted` };
  }
  return { code: 'unresolved', reason: `\`${site.callee}\` does not resolve to a torch dropout through the file's imports` };
}

/** Names used anywhere in the code, to avoid taking a bare name the file already uses for something else. */
function codeNames(t: Tokens): Set<string> {
  const names = new Set<string>();
  for (let k = 0; k < t.toks.length; k++) if (itemAt(t.toks, k).type === 'name') names.add(tokText(t, k));
  return names;
}

const DROPOUT_KINDS = new Set(['dropout', 'dropout-call', 'attn-dropout']);

/**
 * Converts the given sites in `text`. Sites of kinds that `opts` does not ask for
 * are ignored (not reported); so are `attn-mask` and `fused-attn-dropout` sites,
 * which have nothing to convert. Sites carrying a notebook `cell` must be given
 * with that cell's text: ranges are then cell-relative, as the scanner reports them.
 */
export function convertAll(text: string, sites: readonly Site[], opts: ConvertOptions = { dropout: 'packed' }): ConvertResult {
  const t = tokenize(text);
  const imports = readImports(t);
  const names = codeNames(t);
  const plans: Plan[] = [];
  const skipped: Skipped[] = [];
  const seen = new Set<number>();

  const styleFor = (callee: string, kind: TargetKind): Style => {
    if (callee.includes('.')) return 'qualified';
    const bare = MEMBIT_BARE[kind];
    return names.has(bare) && !boundToMembit(imports, bare) ? 'qualified' : 'bare';
  };

  for (const site of sites) {
    if (opts.dropout && DROPOUT_KINDS.has(site.kind)) {
      const dk = dropoutKind(site);
      if ('code' in dk) {
        skipped.push({ site, code: dk.code, reason: dk.reason });
        continue;
      }
      const loc = locate(t, site.range, site.callee);
      if ('code' in loc) {
        skipped.push({ site, code: loc.code, reason: loc.reason });
        continue;
      }
      if (seen.has(loc.start)) continue;
      const args = argumentsOf(t, loc.open, loc.close);
      const keywords = args.map((a) => keywordOf(t, a));
      if (dk.torchDropout && (keywords.includes('train') || keywords.includes('**'))) {
        skipped.push({
          site,
          code: 'keyword-args',
          reason: '`torch.dropout` names its flag `train=`, membit\'s packed_dropout names it `training=`: converting would change more than the callee',
        });
        continue;
      }
      if (keywords.includes('mode')) {
        skipped.push({ site, code: 'converted', reason: 'the call already passes `mode=`' });
        continue;
      }
      seen.add(loc.start);
      const style = styleFor(site.callee, dk.kind);
      const plan: Plan = {
        site,
        start: loc.start,
        end: loc.end,
        line: lineOf(t.lineStarts, loc.start),
        original: site.callee,
        kind: dk.kind,
        style,
        callee: membitCallee(dk.kind, style),
      };
      if (opts.dropout === 'recompute') plan.mode = modeInsertion(t, loc.open, loc.close);
      plans.push(plan);
    } else if (opts.ffn && site.kind === 'ffn' && site.ffn) {
      const info = site.ffn;
      if (info.form === 'module') {
        skipped.push({
          site,
          code: 'module-ffn',
          reason: `\`${site.callee}(...)\` is an MLP module defined elsewhere: convert the Linear layers where it is defined, or call membit.patch(model, ffn="2:4")`,
        });
        continue;
      }
      const members: ['gate' | 'up' | 'down', FfnMember][] = [];
      for (const role of ['gate', 'up', 'down'] as const) {
        const m = info[role];
        if (m) members.push([role, m]);
      }
      const sitePlans: Plan[] = [];
      let blocked: Skipped | undefined;
      for (const [role, m] of members) {
        if (m.cell !== site.cell) {
          blocked = { site, member: role, code: 'other-cell', reason: `the ${role} projection is in another notebook cell; convert that cell's Linear layers together` };
          break;
        }
        const q = resolveCallee(imports, m.callee);
        if (q !== 'torch.nn.Linear') {
          blocked = { site, member: role, code: 'not-linear', reason: ffnReason(m.callee, q) };
          break;
        }
        const loc = locate(t, m.range, m.callee);
        if ('code' in loc) {
          blocked = { site, member: role, code: loc.code, reason: loc.reason };
          break;
        }
        if (seen.has(loc.start)) continue;
        const style = styleFor(m.callee, 'Linear');
        sitePlans.push({ site, member: role, start: loc.start, end: loc.end, line: lineOf(t.lineStarts, loc.start), original: m.callee, kind: 'Linear', style, callee: membitCallee('Linear', style) });
      }
      // Half an FFN converted would mix sparse and dense projections by accident: all or nothing.
      if (blocked) {
        skipped.push(blocked);
        continue;
      }
      for (const p of sitePlans) seen.add(p.start);
      plans.push(...sitePlans);
    }
  }

  // Dropping a call for want of a mark changes the marks of its line, and drops the
  // rest of its FFN: repeat until nothing more is dropped.
  let kept = plans;
  let marks: OffsetEdit[];
  for (;;) {
    const dropped = new Set<Plan>();
    marks = markEdits(t, imports, kept, dropped, skipped);
    if (dropped.size === 0) break;
    const ffns = new Set([...dropped].filter((p) => p.kind === 'Linear').map((p) => p.site));
    kept = kept.filter((p) => !dropped.has(p) && !ffns.has(p.site));
  }
  const out: OffsetEdit[] = [];
  for (const p of kept) {
    out.push({ start: p.start, end: p.end, newText: p.callee });
    if (p.mode) out.push(p.mode);
  }
  out.push(...marks);

  const needed = new Set<MembitImport>(kept.map((p) => importFor(p.kind, p.style)));
  const added = kept.length ? missingImports(imports, needed) : [];
  if (added.length) out.push(importEdit(t, imports, added, kept.map((p) => p.line)));

  return {
    edits: toTextEdits(text, out, t.lineStarts),
    converted: kept.map((p) => {
      const c: Converted = { site: p.site, line: p.line, from: p.original, to: p.callee };
      if (p.member) c.member = p.member;
      return c;
    }),
    skipped,
    imports: added.map((k) => MEMBIT_IMPORTS[k]),
  };
}

function ffnReason(callee: string, q: string | null): string {
  const name = q ? finalName(q) : finalName(callee);
  if (name === 'Conv1D') {
    return 'HF `Conv1D` stores its weight as [in, out] where nn.Linear stores [out, in]: a SparseLinear24 would not load existing checkpoints; use membit.patch(model, ffn="2:4")';
  }
  if (/^Conv[123]d$/.test(name)) return `\`${callee}\` is a convolution, not a Linear layer; 2:4 sparsity here needs a sparse convolution`;
  if (name.includes('Parallel')) return `\`${callee}\` is a tensor-parallel layer with sharded weights; SparseLinear24 replaces plain nn.Linear only`;
  return `\`${callee}\` does not resolve to torch.nn.Linear through the file's imports`;
}

/**
 * The mark edits for every line that gets a converted call: the line's mark lists
 * the original spelling of each converted call on it (old and new) when any of them
 * differs from the file's usual spelling. A line that needs a mark but cannot take
 * a comment loses its unusual new conversions (reported as `no-mark`).
 */
function markEdits(t: Tokens, imports: Imports, plans: readonly Plan[], dropped: Set<Plan>, skipped: Skipped[]): OffsetEdit[] {
  const byLine = new Map<number, Plan[]>();
  for (const p of plans) byLine.set(p.line, [...(byLine.get(p.line) ?? []), p]);
  const existing = findMembitCalls(t, imports);
  const out: OffsetEdit[] = [];
  for (const [line, linePlans] of byLine) {
    const old = existing.filter((c) => c.line === line);
    const oldOriginals = originalsOnLine(t, imports, old);
    const entries: { at: number; original: string; usual: string; plan?: Plan }[] = [
      ...old.map((c: MembitCall, i) => ({ at: c.start, original: itemAt(oldOriginals, i), usual: stockSpelling(imports, STOCK[c.kind], c.style) })),
      ...linePlans.map((p) => ({ at: p.start, original: p.original, usual: stockSpelling(imports, STOCK[p.kind], p.style), plan: p })),
    ].sort((a, b) => a.at - b.at);
    const needed = entries.some((e) => e.original !== e.usual);
    if (needed && !canMark(t, line)) {
      for (const e of entries) {
        if (!e.plan || e.original === e.usual) continue;
        dropped.add(e.plan);
        skipped.push({
          site: e.plan.site,
          ...(e.plan.member ? { member: e.plan.member } : {}),
          code: 'no-mark',
          reason: `line ${line + 1} ends inside a string or with a backslash, so it cannot record that the call was \`${e.original}\`; convert it by hand or use membit.patch`,
        });
      }
      continue;
    }
    const mark = lineMark(t, line);
    const text = needed ? markText(entries.map((e) => e.original)) : '';
    if (mark) out.push({ start: mark.start, end: mark.end, newText: text });
    else if (text) {
      const at = lineEnd(t.text, t.lineStarts, line);
      out.push({ start: at, end: at, newText: text });
    }
  }
  return out;
}

/** The insertion of Membit's import lines at the anchor importAnchor picks. */
export function importEdit(t: Tokens, imports: Imports, add: readonly MembitImport[], useLines: readonly number[]): OffsetEdit {
  const eol = eolOf(t.text);
  const lines = add.map((k) => `${MEMBIT_IMPORTS[k]}  ${IMPORT_MARK}`);
  const anchor = importAnchor(t, imports, useLines);
  if (anchor.afterLine < 0) return { start: 0, end: 0, newText: lines.map((l) => l + eol).join('') };
  const at = lineEnd(t.text, t.lineStarts, anchor.afterLine);
  return { start: at, end: at, newText: lines.map((l) => eol + l).join('') };
}

function overlaps(a: SiteRange, b: SiteRange): boolean {
  const before = (l1: number, c1: number, l2: number, c2: number) => l1 < l2 || (l1 === l2 && c1 <= c2);
  // Touching counts: a cursor (empty selection) at either end of a call selects it.
  return before(a.startLine, a.startCol, b.endLine, b.endCol) && before(b.startLine, b.startCol, a.endLine, a.endCol);
}

/**
 * The sites a selection (or a cursor: an empty range) touches: the site's own range,
 * or for an FFN any of its projections. For "convert selection" and for the code
 * actions offered at the cursor.
 */
export function sitesIn(sites: readonly Site[], range: SiteRange): Site[] {
  return sites.filter((s) => overlaps(s.range, range) || (s.ffn && [s.ffn.gate, s.ffn.up, s.ffn.down].some((m) => m && m.cell === s.cell && overlaps(m.range, range))));
}

/**
 * Whether a site is a conversion candidate at all, from the scan alone (no text):
 * what the editor needs to decide which actions to offer. `convertAll` still checks
 * the current text and may skip a candidate (stale, or a callee that does not
 * resolve to nn.Linear through the imports).
 */
export function canConvert(site: Site): { ok: true; to: 'dropout' | 'ffn' } | { ok: false; code: SkipCode; reason: string } {
  if (DROPOUT_KINDS.has(site.kind)) {
    const dk = dropoutKind(site);
    return 'code' in dk ? { ok: false, code: dk.code, reason: dk.reason } : { ok: true, to: 'dropout' };
  }
  if (site.kind === 'ffn' && site.ffn) {
    if (site.ffn.form === 'module') return { ok: false, code: 'module-ffn', reason: `\`${site.callee}(...)\` is an MLP module defined elsewhere: convert its Linear layers where it is defined, or call membit.patch(model, ffn="2:4")` };
    for (const m of [site.ffn.gate, site.ffn.up, site.ffn.down]) {
      if (m && finalName(m.callee) !== 'Linear') return { ok: false, code: 'not-linear', reason: ffnReason(m.callee, null) };
    }
    return { ok: true, to: 'ffn' };
  }
  const reason =
    site.kind === 'fused-attn-dropout'
      ? 'fused attention keeps no dropout mask: nothing to convert'
      : 'an attention mask: not a conversion target (see the site\'s remedy)';
  return { ok: false, code: 'not-a-target', reason };
}

/** Converts dropout sites only (`dropout`, `dropout-call`, `attn-dropout`). */
export function convertDropout(text: string, sites: readonly Site[], opts: { mode: DropoutMode } = { mode: 'packed' }): ConvertResult {
  return convertAll(text, sites, { dropout: opts.mode, ffn: null });
}

/** Converts FFN sites only: every projection of each FFN, or none of them. */
export function convertFfn(text: string, sites: readonly Site[]): ConvertResult {
  return convertAll(text, sites, { dropout: null, ffn: '2:4' });
}
