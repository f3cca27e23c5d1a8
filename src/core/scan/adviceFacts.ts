/**
 * Facts of one chunk for the memory advisor: eager attention chains, block loops,
 * `.backward()` calls, what the chunk says about precision, checkpointing and the
 * attention implementation. Like the rest of a chunk's facts they depend only on
 * its text (rows relative to the chunk, columns absolute), so they are cached with it.
 */
import type { Node, QueryMatch } from 'web-tree-sitter';
import type { AdviceFacts, AttnChainFact } from './factTypes';
import { argFact, capture, finalName, rel } from './nodes';

export function emptyAdvice(): AdviceFacts {
  return { chains: [], loops: [], backward: [], attnImpl: [], eager: [], amp: [], ckpt: [], dispatch: false, compile: [] };
}

const SOFTMAX = /softmax/i;
const NOT_SOFTMAX = /log_?softmax|gumbel/i;
/** Methods that keep scores scores and probabilities probabilities. */
const PASS = new Set([
  // fairseq transposes (B*H, T, S) scores around a padding mask and back.
  'transpose', 'permute',
  'to', 'type', 'type_as', 'float', 'half', 'bfloat16', 'double', 'contiguous', 'masked_fill', 'masked_fill_', 'clone', 'view', 'reshape',
  'view_as', 'nan_to_num', 'mul', 'mul_', 'div', 'div_', 'add', 'add_', 'cuda', 'squeeze', 'unsqueeze', 'clamp', 'clamp_',
]);
const MATMUL = new Set(['matmul', 'bmm', 'mm']);
const AMP_CALLS = new Set(['autocast', 'GradScaler', 'ShardedGradScaler', 'half', 'bfloat16']);
const CKPT_CALLS = new Set([
  'checkpoint', 'checkpoint_sequential', 'gradient_checkpointing_enable', '_gradient_checkpointing_func', 'checkpoint_wrapper',
  'apply_activation_checkpointing', 'enable_gradient_checkpointing',
]);
const LOW_PRECISION = /bfloat16|float16|\bhalf\b|bf16|fp16|16-mixed|mixed/;
const MODEL_BUILDERS = /^(from_pretrained|_from_config|from_config|to)$/;

function positional(args: Node | null): Node[] {
  if (args?.type !== 'argument_list') return [];
  return args.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment' && c.type !== 'keyword_argument' && c.type !== 'list_splat' && c.type !== 'dictionary_splat');
}

function keyword(args: Node | null, name: string): Node | undefined {
  if (args?.type !== 'argument_list') return undefined;
  for (const c of args.namedChildren) {
    if (c?.type === 'keyword_argument' && c.childForFieldName('name')?.text === name) return c.childForFieldName('value') ?? undefined;
  }
  return undefined;
}

/** What a value holds on the way through an attention block. */
type Cls =
  | { k: 'scores'; row: number; maskRow?: number; mixed?: boolean }
  | { k: 'probs'; chain: AttnChainFact; dropoutRow?: number; dropoutP?: string }
  | undefined;

/**
 * Reads the eager attention chains of one chunk. Per scope, in source order, names
 * are followed from scores (a product of two tensors) to probabilities (their
 * softmax), through dropout, to the product that consumes them.
 */
function readChains(
  out: AdviceFacts,
  assigns: readonly { node: Node; names: string[]; right: Node; si: number; ei: number; scope: number }[],
  consumers: readonly { node: Node; si: number; scope: number; operands: Node[] }[],
  baseRow: number,
): void {
  const chains = new Map<number, AttnChainFact>();
  const rowOf = (n: Node) => n.startPosition.row - baseRow;
  let state = new Map<string, Cls>();
  let scope = -2;

  const chainAt = (call: Node, callee: string, args: Node | null, input: Cls, sc: number): Cls => {
    if (!input) return undefined;
    // `if mask is not None: attn = softmax(attn + mask) else: attn = softmax(attn)` (Swin): read in source
    // order, the second branch's softmax sees the first branch's probabilities. One chain.
    if (input.k === 'probs' && !input.chain.via && SOFTMAX.test(callee)) return input;
    const scoresRow = input.k === 'scores' ? input.row : input.chain.via ? input.chain.scoresRow : undefined;
    if (scoresRow === undefined) return undefined;
    let chain = chains.get(call.startIndex);
    if (!chain) {
      chain = {
        pos: rel(call, baseRow),
        scope: sc,
        callee,
        args: args?.type === 'argument_list' ? args.namedChildren.filter((c): c is Node => c !== null && c.type !== 'comment').map(argFact) : [],
        scoresRow,
      };
      if (input.k === 'scores' && input.mixed) chain.headsMixed = true;
      const maskRow = input.k === 'scores' ? input.maskRow : input.chain.maskRow;
      if (maskRow !== undefined) chain.maskRow = maskRow;
      chains.set(call.startIndex, chain);
    }
    return { k: 'probs', chain };
  };

  const classify = (n: Node | null, sc: number, depth = 0): Cls => {
    if (!n || depth > 12) return undefined;
    switch (n.type) {
      case 'identifier':
        return state.get(n.text);
      case 'parenthesized_expression':
        return classify(n.namedChild(0), sc, depth + 1);
      case 'subscript':
        return classify(n.childForFieldName('value'), sc, depth + 1);
      case 'binary_operator': {
        const op = n.childForFieldName('operator')?.type;
        const l = classify(n.childForFieldName('left'), sc, depth + 1);
        const r = classify(n.childForFieldName('right'), sc, depth + 1);
        if (op === '@') return l?.k === 'probs' || r?.k === 'probs' ? undefined : { k: 'scores', row: rowOf(n) };
        const s = l?.k === 'scores' ? l : r?.k === 'scores' ? r : undefined;
        if (s) {
          const other = s === l ? n.childForFieldName('right') : n.childForFieldName('left');
          if ((op === '+' || op === '-') && other && /mask|bias/i.test(other.text)) return { ...s, maskRow: rowOf(n) };
          return s;
        }
        return l?.k === 'probs' ? l : r?.k === 'probs' ? r : undefined;
      }
      case 'call': {
        const fn = n.childForFieldName('function');
        const args = n.childForFieldName('arguments');
        if (!fn) return undefined;
        const pos = positional(args);
        if (fn.type === 'call') {
          // nn.Softmax(dim=-1)(scores)
          const inner = finalName(fn.childForFieldName('function')?.text ?? '');
          if (SOFTMAX.test(inner) && !NOT_SOFTMAX.test(inner)) return chainAt(n, fn.text.replace(/\s+/g, ''), args, classify(pos[0] ?? null, sc, depth + 1), sc);
          return undefined;
        }
        const callee = fn.text.replace(/\s+/g, '');
        const final = finalName(callee);
        const obj = fn.type === 'attribute' ? fn.childForFieldName('object') : null;
        const objCls = obj && obj.type !== 'identifier' ? classify(obj, sc, depth + 1) : obj ? state.get(obj.text) : undefined;
        if (SOFTMAX.test(final) && !NOT_SOFTMAX.test(final)) {
          // `att.softmax(-1)` takes its object; F.softmax / torch.softmax / self.softmax their first argument.
          const input = objCls ?? classify(pos[0] ?? keyword(args, 'input') ?? null, sc, depth + 1);
          return chainAt(n, callee, args, input, sc);
        }
        if (/drop/i.test(final)) {
          const c = objCls?.k === 'probs' ? objCls : classify(pos[0] ?? keyword(args, 'input') ?? null, sc, depth + 1);
          if (c?.k !== 'probs') return c;
          const p = pos[1] ?? keyword(args, 'p');
          const out: Cls = { k: 'probs', chain: c.chain, dropoutRow: rowOf(n) };
          if (p) out.dropoutP = p.text;
          return out;
        }
        if (final === 'einsum' && pos[0] && mixesHeads(pos[0].text)) {
          const c = pos.slice(1).map((o) => classify(o, sc, depth + 1)).find((x) => x !== undefined);
          if (c?.k === 'probs') c.chain.headsMixed = true;
          return c?.k === 'scores' ? { ...c, mixed: true } : c;
        }
        if (MATMUL.has(final) || final === 'einsum' || final === 'baddbmm') {
          const operands = final === 'einsum' ? pos.slice(1) : obj && MATMUL.has(final) && !/^(torch|th)$/.test(obj.text) ? [obj, ...pos] : pos;
          if (operands.some((o) => classify(o, sc, depth + 1)?.k === 'probs')) return undefined;
          return operands.length >= 2 ? { k: 'scores', row: rowOf(n) } : undefined;
        }
        if (obj && PASS.has(final)) {
          const c = objCls;
          if (c?.k === 'scores' && final.startsWith('masked_fill')) return { ...c, maskRow: rowOf(n) };
          return c;
        }
        if (final === 'where' || final === 'masked_fill') {
          const c = classify(pos[final === 'where' ? 1 : 0] ?? null, sc, depth + 1);
          return c?.k === 'scores' ? { ...c, maskRow: rowOf(n) } : c;
        }
        if (obj?.type === 'identifier' && obj.text === 'self') {
          // A member applied to scores may be an nn.Softmax (`self.attend(dots)`): the analyzer confirms it.
          const c = classify(pos[0] ?? null, sc, depth + 1);
          // `self.proj_l(attn.permute(0, 2, 3, 1))`: a Linear over the heads (talking heads).
          if (c && pos[0] && /\.permute\(\s*0\s*,\s*2\s*,\s*3\s*,\s*1\s*\)\s*$/.test(pos[0].text)) {
            if (c.k === 'probs') c.chain.headsMixed = true;
            return c.k === 'scores' ? { ...c, mixed: true } : c;
          }
          if (c?.k === 'probs') return c;
          // `self.apply_sparse_mask(scores, ...)`, `self.add_rel_pos_bias(scores)`: still scores, not a softmax.
          if (c?.k === 'scores' && /mask|bias|pos/i.test(final)) return c;
          if (c?.k === 'scores') {
            const r = chainAt(n, callee, args, c, sc);
            if (r?.k === 'probs' && r.chain.via === undefined && !SOFTMAX.test(final)) r.chain.via = callee;
            return r;
          }
        }
        return undefined;
      }
      default:
        return undefined;
    }
  };

  const events: { at: number; assign?: (typeof assigns)[number]; consumer?: (typeof consumers)[number] }[] = [];
  for (const a of assigns) if (a.names.length > 0) events.push({ at: a.ei, assign: a });
  for (const c of consumers) events.push({ at: c.si, consumer: c });
  // Scope first, then position: each scope's names start empty.
  events.sort((x, y) => ((x.assign ?? x.consumer)?.scope ?? 0) - ((y.assign ?? y.consumer)?.scope ?? 0) || x.at - y.at);
  for (const e of events) {
    const sc = (e.assign ?? e.consumer)?.scope ?? -1;
    if (sc !== scope) {
      scope = sc;
      state = new Map();
    }
    if (e.consumer) {
      for (const o of e.consumer.operands) {
        const c = classify(o, sc);
        if (c?.k !== 'probs') continue;
        c.chain.outputRow ??= rowOf(e.consumer.node);
        if (c.dropoutRow !== undefined) c.chain.dropoutRow ??= c.dropoutRow;
        if (c.dropoutP !== undefined) c.chain.dropoutP ??= c.dropoutP;
        break;
      }
    } else if (e.assign) {
      const a = e.assign;
      const c = a.names.length === 1 ? classify(a.right, sc) : undefined;
      for (const name of a.names) {
        if (c) state.set(name, c);
        else state.delete(name);
      }
    }
  }
  for (const c of chains.values()) out.chains.push(c);
}

/** Names of a for-loop target (`block`, `i, block`, `(attn, ff)`). */
function loopTargets(text: string): string[] {
  return text
    .replace(/[()[\]]/g, '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => /^[A-Za-z_]\w*$/.test(t));
}

export interface AdviceInputs {
  matches: readonly QueryMatch[];
  /** Decorators of the chunk (`@torch.compile` without parentheses is no call). */
  decorators?: readonly { text: string; row: number }[];
  /** Every call of the chunk with its callee as written and final name. */
  calls: readonly { node: Node; callee: string; final: string; args: Node | null }[];
  assigns: readonly { node: Node; left: Node; right: Node }[];
  baseRow: number;
  baseIdx: number;
  scopeOf(si: number, ei: number): number;
  /** Names an assignment binds. */
  targetNames(text: string): string[];
}

/**
 * `torch.compile(...)` (any alias of torch) and `model.compile(...)` (nn.Module.compile),
 * but not `re.compile` / `regex.compile` nor Python's builtin `compile(...)`.
 */
export function isCompileCall(callee: string, final: string): boolean {
  if (final !== 'compile' || !callee.includes('.')) return false;
  const receiver = callee.slice(0, callee.length - '.compile'.length);
  return !/^(re|regex|sre_compile|jax|tf|keras|numba|triton)$/.test(receiver) && !/\.(re|regex)$/.test(receiver);
}

/** Reads the advisor's facts of one chunk. */
export function readAdviceFacts(inp: AdviceInputs): AdviceFacts {
  const { baseRow, baseIdx } = inp;
  const out = emptyAdvice();
  for (const d of inp.decorators ?? []) {
    const text = d.text.replace(/^@\s*/, '').replace(/\s+/g, '');
    // `@torch.compile(mode=...)` is a call and is read below; the bare form only here.
    if (/^[A-Za-z_]\w*\.compile$/.test(text) && isCompileCall(text, 'compile')) out.compile.push({ what: `@${text}`, row: d.row - baseRow });
  }
  const consumers: { node: Node; si: number; scope: number; operands: Node[] }[] = [];

  for (const c of inp.calls) {
    const { node, callee, final, args } = c;
    const row = node.startPosition.row - baseRow;
    const si = node.startIndex - baseIdx;
    const ei = node.endIndex - baseIdx;
    if (final === 'backward' && callee.endsWith('.backward') && callee !== 'torch.autograd.backward') {
      const fn = node.childForFieldName('function');
      const receiver = fn?.childForFieldName('object')?.text ?? '';
      out.backward.push({ pos: rel(node, baseRow), scope: inp.scopeOf(si, ei), receiver });
      continue;
    }
    if (AMP_CALLS.has(final)) {
      // `.half()` / `.bfloat16()` take no arguments; `torch.half` as a value is no call.
      if ((final === 'half' || final === 'bfloat16') && positional(args).length > 0) continue;
      out.amp.push({ what: `${callee}(...)`, row });
      continue;
    }
    if (final === 'to' || final === 'set_default_dtype') {
      if (args && positional(args).some((a) => /^(torch\.)?(bfloat16|float16|half)$/.test(a.text.trim()))) out.amp.push({ what: `${callee}(${args.text.slice(1, -1).trim()})`, row });
      continue;
    }
    if (CKPT_CALLS.has(final)) {
      out.ckpt.push({ what: `${callee}(...)`, row });
      continue;
    }
    if (isCompileCall(callee, final)) {
      out.compile.push({ what: `${callee}(...)`, row });
      continue;
    }
    if (MATMUL.has(final) || final === 'einsum') {
      const pos = positional(args);
      const fn = node.childForFieldName('function');
      const obj = fn?.type === 'attribute' ? fn.childForFieldName('object') : null;
      const operands = final === 'einsum' ? pos.slice(1) : obj && !/^(torch|th)$/.test(obj.text) ? [obj, ...pos] : pos;
      if (operands.length >= 2) consumers.push({ node, si, scope: inp.scopeOf(si, ei), operands });
    }
  }

  let gate = consumers.length > 0;
  for (const m of inp.matches) {
    const mm = capture(m, 'mm');
    if (mm) {
      const si = mm.startIndex - baseIdx;
      const l = capture(m, 'mm.left');
      const r = capture(m, 'mm.right');
      if (l && r) consumers.push({ node: mm, si, scope: inp.scopeOf(si, mm.endIndex - baseIdx), operands: [l, r] });
      gate = true;
      continue;
    }
    const forNode = capture(m, 'for');
    if (forNode) {
      const left = capture(m, 'for.left');
      const right = capture(m, 'for.right');
      const colon = forNode.children.find((c) => c?.type === ':');
      if (!left || !right || !colon) continue;
      let iter = right.text.replace(/\s+/g, '');
      const en = /^enumerate\((.*)\)$/.exec(iter);
      if (en?.[1] !== undefined) iter = en[1];
      const si = forNode.startIndex - baseIdx;
      const ei = forNode.endIndex - baseIdx;
      out.loops.push({
        pos: { sr: forNode.startPosition.row - baseRow, sc: forNode.startPosition.column, er: colon.endPosition.row - baseRow, ec: colon.endPosition.column },
        si,
        ei,
        targets: loopTargets(left.text),
        iter,
        scope: inp.scopeOf(si, ei),
      });
      continue;
    }
    const kw = capture(m, 'akw.name');
    if (kw) {
      const value = capture(m, 'akw.value');
      if (!value) continue;
      const name = kw.text;
      const v = value.text;
      const call = kw.parent?.parent?.parent;
      const callee = call?.type === 'call' ? (call.childForFieldName('function')?.text.replace(/\s+/g, '') ?? '') : '';
      const row = value.startPosition.row - baseRow;
      if (name === 'attn_implementation') {
        const si = value.startIndex - baseIdx;
        out.attnImpl.push({ pos: rel(value, baseRow), value: v, callee, scope: inp.scopeOf(si, si + 1) });
      } else if (name === 'gradient_checkpointing') {
        if (!/^(False|None|0)$/.test(v.trim())) out.ckpt.push({ what: `gradient_checkpointing=${v}`, row });
      } else if (name === 'dtype' || name === 'torch_dtype') {
        if ((name === 'torch_dtype' || MODEL_BUILDERS.test(finalName(callee))) && /^(torch\.)?(bfloat16|float16|half)$/.test(v.trim())) out.amp.push({ what: `${name}=${v}`, row });
      } else if (name === 'precision' || name === 'mixed_precision') {
        if (LOW_PRECISION.test(v) && !/^["']?no["']?$/.test(v.trim())) out.amp.push({ what: `${name}=${v}`, row });
      } else if ((name === 'fp16' || name === 'bf16') && !/^(False|None|0)$/.test(v.trim())) {
        out.amp.push({ what: `${name}=${v}`, row });
      }
      continue;
    }
    const attr = capture(m, 'dispatch.attr');
    if (attr) {
      // Reading it picks an implementation at run time; assigning it is a choice (an hf-eager site when "eager").
      const node = attr.parent;
      const asg = node?.parent;
      if (!(asg?.type === 'assignment' && node && asg.childForFieldName('left')?.equals(node))) out.dispatch = true;
      continue;
    }
    const str = capture(m, 'eager.str');
    if (str) {
      const p = str.parent;
      if (!p) continue;
      if (p.type === 'assignment' && p.childForFieldName('right')?.equals(str)) {
        out.eager.push({ pos: rel(str, baseRow), context: 'assign', name: p.childForFieldName('left')?.text.replace(/\s+/g, '') ?? '' });
      } else if ((p.type === 'default_parameter' || p.type === 'typed_default_parameter') && p.childForFieldName('value')?.equals(str)) {
        out.eager.push({ pos: rel(str, baseRow), context: 'default', name: p.childForFieldName('name')?.text ?? '' });
      } else if (p.type === 'keyword_argument' && p.childForFieldName('name')?.text === 'default') {
        // argparse: add_argument("--attn", ..., default="eager") names the flag in its first argument.
        const call = p.parent?.parent;
        const flag = call?.type === 'call' ? positional(call.childForFieldName('arguments')).find((a) => a.type === 'string') : undefined;
        out.eager.push({ pos: rel(str, baseRow), context: 'default', name: flag ? flag.text.replace(/^[rRuU]?["']-*|["']$/g, '').replace(/-/g, '_') : 'default' });
      }
    }
  }

  if (gate && inp.assigns.length + consumers.length > 0) {
    const assigns = inp.assigns.map((a) => {
      const si = a.node.startIndex - baseIdx;
      const ei = a.node.endIndex - baseIdx;
      return { node: a.node, names: inp.targetNames(a.left.text), right: a.right, si, ei, scope: inp.scopeOf(si, ei) };
    });
    readChains(out, assigns, consumers, baseRow);
  }
  return out;
}

/**
 * An einsum that maps the heads of the scores or probabilities onto other heads
 * (`'b h i j, h g -> b g i j'`): the query/key axes stay, the head axis changes.
 */
function mixesHeads(equation: string): boolean {
  const body = /^[rRuU]?["']([^"']*)["']$/.exec(equation.trim())?.[1];
  if (body === undefined) return false;
  const eq = body.replace(/\s+/g, '');
  const arrow = eq.indexOf('->');
  if (arrow < 0) return false;
  const ins = eq.slice(0, arrow).split(',');
  const out = eq.slice(arrow + 2);
  if (ins.length !== 2 || out.length < 3) return false;
  // One 2-D operand of head weights, one with the output's last two axes (i, j).
  const [a, b] = ins as [string, string];
  const big = a.length >= 3 ? a : b;
  const small = big === a ? b : a;
  return small.length === 2 && big.slice(-2) === out.slice(-2) && big !== out && Array.from(small).some((ch) => big.includes(ch)) && Array.from(small).some((ch) => out.includes(ch));
}
