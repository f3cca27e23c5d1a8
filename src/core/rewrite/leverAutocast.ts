/**
 * The autocast lever: the forward and the loss of a training step run under bf16
 * autocast, so matmuls compute and save activations in bf16 (half the bytes).
 *
 * In a loop body ending
 *
 *     _, loss = model(x, y)               # or: logits = model(x)
 *     optimizer.zero_grad(set_to_none=True)   #     loss = F.cross_entropy(logits, y)
 *     loss.backward()
 *
 * the statements from the model call to the loss go into
 * `with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):`; `backward()`
 * and the optimizer stay outside, as PyTorch's AMP recipe has it (autocast's backward
 * runs in the dtypes the forward chose). Between the loss and `backward()` only
 * `zero_grad()` calls may stand: they do not read what the forward computed, so they
 * can stay outside the block. Anything else there (a print, a clip, a second loss) is
 * left alone with the reason.
 *
 * The model is recognised as a name whose `.parameters()` the file uses (what an
 * optimizer is built from), so `criterion(out, y)` is never taken for the forward.
 * Files that already use reduced precision (autocast, GradScaler, `.half()`,
 * bf16/fp16 dtypes) are left alone. bf16 changes the numerics: the proof tests
 * bound the loss and gradient differences against fp32.
 */
import { type Ctx, type Found, indentUnit, shortText, skipAt, torchName } from './leverCommon';
import { dottedName, type Expr, src, walk } from './pyexpr';
import { assignOf, boundNames, exprOf, hasMultilineString, prevSibling, type Stmt, uses } from './structure';
import { lineEnd } from './lines';
import { type Tok, tokText } from './tokens';

const LOW_PRECISION = new Set(['autocast', 'GradScaler', 'half', 'bfloat16', 'float16']);

/** The first sign that the file already trains in reduced precision: its text and line. */
function mixedPrecision(ctx: Ctx): { what: string; line: number } | undefined {
  const t = ctx.t;
  for (let k = 0; k < t.toks.length; k++) {
    const tok = t.toks[k] as Tok;
    if (tok.type !== 'name') continue;
    const w = tokText(t, k);
    if (!LOW_PRECISION.has(w)) continue;
    // `half`/`bfloat16`/`float16` count only as attributes (`torch.bfloat16`, `.half()`), not as a variable's name.
    if (w !== 'autocast' && w !== 'GradScaler' && !(k > 0 && tokText(t, k - 1) === '.')) continue;
    let line = 0;
    while (line + 1 < t.lineStarts.length && (t.lineStarts[line + 1] as number) <= tok.start) line++;
    return { what: w, line };
  }
  return undefined;
}

/** Dotted names whose `.parameters()` / `.named_parameters()` the file calls: the models it trains. */
function trainedModels(ctx: Ctx): Set<string> {
  const t = ctx.t;
  const out = new Set<string>();
  for (let k = 2; k + 1 < t.toks.length; k++) {
    const w = tokText(t, k);
    if ((w !== 'parameters' && w !== 'named_parameters') || tokText(t, k - 1) !== '.' || tokText(t, k + 1) !== '(') continue;
    const parts: string[] = [];
    let j = k - 2;
    while (j >= 0 && (t.toks[j] as Tok).type === 'name') {
      parts.unshift(tokText(t, j));
      if (j >= 2 && tokText(t, j - 1) === '.' && (t.toks[j - 2] as Tok).type === 'name') j -= 2;
      else break;
    }
    if (parts.length) out.add(parts.join('.'));
  }
  return out;
}

/** The call of a trained model inside an expression, or undefined. */
function modelCall(e: Expr, models: ReadonlySet<string>): (Expr & { k: 'call' }) | undefined {
  for (const n of walk(e)) {
    if (n.k === 'call') {
      const d = dottedName(n.fn);
      if (d !== undefined && models.has(d)) return n;
    }
  }
  return undefined;
}

function isZeroGrad(ctx: Ctx, s: Stmt): boolean {
  const e = exprOf(ctx.st, s);
  return e?.k === 'call' && e.fn.k === 'attr' && e.fn.name === 'zero_grad';
}

const MAX_STEP = 8;

export function findAutocast(ctx: Ctx): Found[] {
  const st = ctx.st;
  const out: Found[] = [];
  let mp: { what: string; line: number } | undefined | null = null;
  let models: Set<string> | undefined;
  for (const b of st.stmts) {
    const e = exprOf(st, b);
    if (e?.k !== 'call' || e.fn.k !== 'attr' || e.fn.name !== 'backward') continue;
    if (mp === null) mp = mixedPrecision(ctx);
    if (mp) {
      out.push(skipAt(b, 'mixed-precision', `the file already uses reduced precision (\`${mp.what}\` at line ${mp.line + 1})`));
      continue;
    }
    const lossExpr = e.fn.obj;
    if (lossExpr.k !== 'name') {
      out.push(skipAt(b, 'backward-form', `\`${src(ctx.t, lossExpr)}.backward()\` is not called on a plain loss variable`));
      continue;
    }
    const loss = lossExpr.id;
    const loop = st.stmts[b.parent];
    if (!loop || !(loop.head === 'for' || loop.head === 'while' || (loop.head === 'async' && tokText(ctx.t, loop.line.first + 1) === 'for'))) {
      out.push(skipAt(b, 'backward-form', `\`${loss}.backward()\` is not directly in the body of a training loop`));
      continue;
    }
    let p = prevSibling(st, b);
    while (p && isZeroGrad(ctx, p)) p = prevSibling(st, p);
    const pa = p ? assignOf(st, p) : undefined;
    if (!p || !pa || !pa.targets.some((tg) => boundNames(tg)?.includes(loss))) {
      out.push(
        skipAt(
          b,
          p ? 'between' : 'no-forward',
          p
            ? `\`${shortText(ctx, p)}\` (line ${p.line.startLine + 1}) stands between the computation of \`${loss}\` and backward(): only zero_grad() calls may`
            : `nothing before \`${loss}.backward()\` in the loop computes \`${loss}\``,
        ),
      );
      continue;
    }
    models ??= trainedModels(ctx);
    const group: Stmt[] = [p];
    let call = modelCall(pa.value, models);
    let why: string | undefined;
    while (!call) {
      const head = group[0] as Stmt;
      const q = prevSibling(st, head);
      const qa = q ? assignOf(st, q) : undefined;
      const bound = qa ? qa.targets.map(boundNames) : [];
      if (!q || !qa || bound.some((n) => n === undefined) || group.length >= MAX_STEP) {
        why = models.size
          ? `no call of the trained model (${[...models].map((m) => `\`${m}\``).join(', ')}) among the assignments that compute \`${loss}\``
          : `no model whose .parameters() the file uses is called where \`${loss}\` is computed`;
        break;
      }
      const names = bound.flat() as string[];
      if (!names.some((n) => group.some((g) => uses(st, g, n).length))) {
        why = `the assignments before \`${loss}\` (from line ${head.line.startLine + 1}) do not call the trained model`;
        break;
      }
      group.unshift(q);
      call = modelCall(qa.value, models);
    }
    const first = group[0] as Stmt;
    const lines = { first: first.line.startLine, last: b.line.endLine };
    if (!call) {
      out.push(skipAt(b, 'no-forward', why as string, lines.first, lines.last));
      continue;
    }
    const unit = indentUnit(loop, first);
    if (unit === undefined || group.some((g) => hasMultilineString(st, g))) {
      out.push(skipAt(b, 'layout', unit === undefined ? 'the loop body is not indented under its header' : 'a statement of the step holds a string over several lines', lines.first, lines.last));
      continue;
    }
    const model = dottedName(call.fn) as string;
    const input = call.args[0];
    const plain = input && input.kw === undefined && !input.star && [...walk(input.value)].every((n) => n.k === 'name' || n.k === 'attr' || n.k === 'sub' || n.k === 'num' || n.k === 'str');
    const device = plain ? `${src(ctx.t, (input as { value: Expr }).value)}.device.type` : `next(${model}.parameters()).device.type`;
    const torch = torchName(ctx);
    const t = ctx.t;
    const last = group[group.length - 1] as Stmt;
    const start = (t.toks[first.line.first] as Tok).start;
    const edits = [{ start, end: start, newText: `with ${torch.name}.autocast(device_type=${device}, dtype=${torch.name}.bfloat16):${ctx.eol}${first.indent}${unit}` }];
    for (let l = first.line.startLine + 1; l <= last.line.endLine; l++) {
      const at = t.lineStarts[l] as number;
      if (t.text.slice(at, lineEnd(t.text, t.lineStarts, l)).trim() === '') continue;
      edits.push({ start: at, end: at, newText: unit });
    }
    out.push({
      ...lines,
      line: b.line.startLine,
      edits,
      ...(torch.add ? { imports: [torch.add] } : {}),
      form: 'autocast',
      description: `forward and loss (${first.line.startLine === last.line.endLine ? `line ${first.line.startLine + 1}` : `lines ${first.line.startLine + 1}-${last.line.endLine + 1}`}) under ${torch.name}.autocast(bf16); backward and the optimizer step outside`,
    });
  }
  return out;
}
