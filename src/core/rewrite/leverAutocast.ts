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
import type { Node } from 'web-tree-sitter';
import { type Ctx, type Found, indentUnit, shortText, skipAt, torchName } from './leverCommon';
import { lineEnd, lineOf } from './lines';
import { assignOf, boundNames, exprOf, hasMultilineString, prevSibling, type Stmt, uses } from './statements';
import { afterDot, argsOf, dottedName, field, outermost, walk, within } from './syntax';
import { defined, itemAt } from '../arrays';

const LOW_PRECISION = new Set(['autocast', 'GradScaler', 'half', 'bfloat16', 'float16']);

/** The first sign that the file already trains in reduced precision: its text and line. */
function mixedPrecision(ctx: Ctx): { what: string; line: number } | undefined {
  const strings = outermost(ctx.root.descendantsOfType('string').filter((x): x is Node => x !== null));
  for (const id of ctx.root.descendantsOfType('identifier')) {
    if (!id || !LOW_PRECISION.has(id.text) || within(strings, id)) continue;
    // `half`/`bfloat16`/`float16` count only as attributes (`torch.bfloat16`, `.half()`), not as a variable's name.
    if (id.text !== 'autocast' && id.text !== 'GradScaler' && !afterDot(id)) continue;
    return { what: id.text, line: lineOf(ctx.lineStarts, id.startIndex) };
  }
  return undefined;
}

/** Dotted names whose `.parameters()` / `.named_parameters()` the file calls: the models it trains. */
function trainedModels(ctx: Ctx): Set<string> {
  const out = new Set<string>();
  const strings = outermost(ctx.root.descendantsOfType('string').filter((x): x is Node => x !== null));
  for (const call of ctx.root.descendantsOfType('call')) {
    const fn = call?.childForFieldName('function');
    if (!call || fn?.type !== 'attribute' || within(strings, call)) continue;
    const name = fn.childForFieldName('attribute')?.text;
    const obj = field(fn, 'object');
    if ((name !== 'parameters' && name !== 'named_parameters') || !obj) continue;
    const model = dottedName(obj);
    if (model !== undefined) out.add(model);
  }
  return out;
}

/** The call of a trained model inside an expression, or undefined. */
function modelCall(e: Node, models: ReadonlySet<string>): Node | undefined {
  for (const n of walk(e)) {
    if (n.type === 'call') {
      const fn = field(n, 'function');
      const d = fn ? dottedName(fn) : undefined;
      if (d !== undefined && models.has(d)) return n;
    }
  }
  return undefined;
}

/** `<obj>.<method>(...)`: the attribute node of the callee, when the method is `name`. */
function methodCall(e: Node | undefined, name: string): Node | undefined {
  const fn = e?.type === 'call' ? field(e, 'function') : undefined;
  return fn?.type === 'attribute' && fn.childForFieldName('attribute')?.text === name ? fn : undefined;
}

function isZeroGrad(s: Stmt): boolean {
  return !!methodCall(exprOf(s), 'zero_grad');
}

const MAX_STEP = 8;

export function findAutocast(ctx: Ctx): Found[] {
  const st = ctx.st;
  const out: Found[] = [];
  let mp: { what: string; line: number } | undefined | null = null;
  let models: Set<string> | undefined;
  for (const b of st.stmts) {
    const backward = methodCall(exprOf(b), 'backward');
    if (!backward) continue;
    if (mp === null) mp = mixedPrecision(ctx);
    if (mp) {
      out.push(skipAt(b, 'mixed-precision', `the file already uses reduced precision (\`${mp.what}\` at line ${mp.line + 1})`));
      continue;
    }
    const lossExpr = defined(field(backward, 'object'), 'field(backward, "object")');
    if (lossExpr.type !== 'identifier') {
      out.push(skipAt(b, 'backward-form', `\`${lossExpr.text}.backward()\` is not called on a plain loss variable`));
      continue;
    }
    const loss = lossExpr.text;
    const loop = st.stmts[b.parent];
    if (!loop || !(loop.kind === 'for_statement' || loop.kind === 'while_statement')) {
      out.push(skipAt(b, 'backward-form', `\`${loss}.backward()\` is not directly in the body of a training loop`));
      continue;
    }
    let p = prevSibling(st, b);
    while (p && isZeroGrad(p)) p = prevSibling(st, p);
    const pa = p ? assignOf(p) : undefined;
    if (!p || !pa?.targets.some((tg) => boundNames(tg)?.includes(loss))) {
      out.push(
        skipAt(
          b,
          p ? 'between' : 'no-forward',
          p
            ? `\`${shortText(ctx, p)}\` (line ${p.startLine + 1}) stands between the computation of \`${loss}\` and backward(): only zero_grad() calls may`
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
      const head = itemAt(group, 0);
      const q = prevSibling(st, head);
      const qa = q ? assignOf(q) : undefined;
      const bound = qa ? qa.targets.map(boundNames) : [];
      if (!q || !qa || bound.some((n) => n === undefined) || group.length >= MAX_STEP) {
        why = models.size
          ? `no call of the trained model (${[...models].map((m) => `\`${m}\``).join(', ')}) among the assignments that compute \`${loss}\``
          : `no model whose .parameters() the file uses is called where \`${loss}\` is computed`;
        break;
      }
      const names = bound.flat() as string[];
      if (!names.some((n) => group.some((g) => uses(g, n).length))) {
        why = `the assignments before \`${loss}\` (from line ${head.startLine + 1}) do not call the trained model`;
        break;
      }
      group.unshift(q);
      call = modelCall(qa.value, models);
    }
    const first = itemAt(group, 0);
    const lines = { first: first.startLine, last: b.endLine };
    if (!call) {
      out.push(skipAt(b, 'no-forward', defined(why, 'why'), lines.first, lines.last));
      continue;
    }
    const unit = indentUnit(loop, first);
    if (unit === undefined || group.some((g) => hasMultilineString(g))) {
      out.push(skipAt(b, 'layout', unit === undefined ? 'the loop body is not indented under its header' : 'a statement of the step holds a string over several lines', lines.first, lines.last));
      continue;
    }
    const model = defined(dottedName(defined(field(call, 'function'), 'the called function')), 'a dotted name for the called function');
    const input = argsOf(call)[0];
    const plain = input && input.kw === undefined && !input.star && [...walk(input.value)].every((n) => PLAIN.has(n.type));
    const device = plain ? `${input.value.text}.device.type` : `next(${model}.parameters()).device.type`;
    const torch = torchName(ctx);
    const last = itemAt(group, group.length - 1);
    const start = first.start;
    const edits = [{ start, end: start, newText: `with ${torch.name}.autocast(device_type=${device}, dtype=${torch.name}.bfloat16):${ctx.eol}${first.indent}${unit}` }];
    for (let l = first.startLine + 1; l <= last.endLine; l++) {
      const at = itemAt(ctx.lineStarts, l);
      if (ctx.text.slice(at, lineEnd(ctx.text, ctx.lineStarts, l)).trim() === '') continue;
      edits.push({ start: at, end: at, newText: unit });
    }
    out.push({
      ...lines,
      line: b.startLine,
      edits,
      ...(torch.add ? { imports: [torch.add] } : {}),
      form: 'autocast',
      description: `forward and loss (${first.startLine === last.endLine ? `line ${first.startLine + 1}` : `lines ${first.startLine + 1}-${last.endLine + 1}`}) under ${torch.name}.autocast(bf16); backward and the optimizer step outside`,
    });
  }
  return out;
}

/** What a model's input may be for `<input>.device.type` to name its device: names, attributes, subscripts, literals. */
const PLAIN = new Set(['identifier', 'attribute', 'subscript', 'integer', 'float', 'string', 'concatenated_string', 'true', 'false', 'none', 'ellipsis']);
