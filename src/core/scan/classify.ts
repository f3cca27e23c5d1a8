/**
 * Dropouts and fused attention: which dropouts act on attention probabilities (their mask is
 * B·H·L² instead of B·L·d), which keep no mask, and which fused kernels drop out inside.
 */
import { argMap } from './args';
import type { GCall, Group } from './context';
import { dropoutEstimate, fusedDropoutEstimate } from './estimates';
import { DROPOUT_CLASSES, DROPOUT_FUNCS, FUSED_ATTENTION, SDPA, SDPA_PARAMS } from './names';

const ATTN_MEMBER = /attn|attention|(^|_)att(_|$)/i;
const ATTN_ARG = /^(p_)?(attn|att|attention)(_?(weights?|probs?|probabilities|scores?|maps?|matrix))?$|_probs$/i;
/** Attention classes: their projections are no FFN (ffn.ts), their unused dropout members go to the attention. */
export const ATTN_CLASS = /(attention|attn)$/i;
/** Dropouts named after the attention block they follow, not its probabilities. */
const AFTER_ATTN = /^(post|after)_?(attn|attention)|(attn|attention)_?(out|output|resid)/i;
/** Dropouts of attention classes that act on the output, not the probabilities. */
const NOT_ATTN_MEMBER = /resid|proj|(^|_)out(put)?(_|$)|hidden|ffn|mlp|fc|emb/i;

/**
 * `classKey|self.member` of the members that are nn.Softmax modules (`self.attend =
 * nn.Softmax(dim=-1)`): what they return is probabilities.
 */
export function softmaxMembers(calls: readonly GCall[]): Set<string> {
  const out = new Set<string>();
  for (const g of calls) if (g.res.qname === 'torch.nn.Softmax' && g.f.binding?.startsWith('self.')) out.add(`${g.classKey}|${g.f.binding}`);
  return out;
}

/** Finds the group's dropouts and fused attention dropouts. `softmax`: see softmaxMembers. */
export function findDropouts(group: Group, softmax: ReadonlySet<string>): void {
  const { calls, usesOf, makeSite } = group;
  // Dropouts right after an nn.Softmax in one Sequential (`nn.Sequential(nn.Softmax(-1), nn.Dropout(p))`).
  const softmaxInSeq = new Map<string, number>();
  for (const g of calls) {
    if (g.res.qname !== 'torch.nn.Softmax' || !g.f.binding || !g.f.path || !/^\d+$/.test(g.f.path)) continue;
    softmaxInSeq.set(`${g.classKey ?? g.funcKey}|${g.f.binding}`, Number(g.f.path));
  }
  const afterSoftmax = (g: GCall) => {
    if (!g.f.binding || !g.f.path || !/^\d+$/.test(g.f.path)) return false;
    const at = softmaxInSeq.get(`${g.classKey ?? g.funcKey}|${g.f.binding}`);
    return at !== undefined && at < Number(g.f.path);
  };
  const probsUse = (u: GCall) => u.f.arg0Probs || (u.f.arg0Via !== undefined && softmax.has(`${u.classKey}|${u.f.arg0Via}`));

  for (const g of calls) {
    const q = g.res.qname;
    if (!q || !g.f.detailed) continue;
    if (DROPOUT_CLASSES.has(q)) {
      const args = argMap(g.f, ['p', 'inplace']);
      const member = g.f.binding ? g.f.binding.slice(g.f.binding.lastIndexOf('.') + 1) : '';
      const used = usesOf(g);
      const attn =
        used.some(probsUse) ||
        afterSoftmax(g) ||
        // `attn_dropout`, but not GPT-NeoX's `post_attention_dropout` (on the attention block's output).
        (member !== '' && !g.f.path && ATTN_MEMBER.test(member) && !AFTER_ATTN.test(member) && !/hidden|resid/i.test(args['p'] ?? '')) ||
        (args['p'] !== undefined && /attn|attention/i.test(args['p'])) ||
        // A dropout member of an attention class that is never called itself is handed to
        // the attention function (`attention(q, k, v, dropout=self.dropout)`).
        (used.length === 0 && member !== '' && !g.f.path && ATTN_CLASS.test(g.className ?? '') && !NOT_ATTN_MEMBER.test(member));
      // Used only where fused attention is missing: no mask on a torch that has it.
      const fallback = used.length > 0 && used.every((u) => u.f.fallback === true);
      makeSite(g, attn ? 'attn-dropout' : 'dropout', 'construct', args, dropoutEstimate(group, g, attn, args['p'], fallback));
      continue;
    }
    const dparams = DROPOUT_FUNCS.get(q);
    if (dparams) {
      const args = argMap(g.f, dparams);
      const arg0 = (g.f.arg0 ?? '').trim();
      const attn = probsUse(g) || ATTN_ARG.test(arg0) || (args['p'] !== undefined && /attn|attention/i.test(args['p']));
      makeSite(g, attn ? 'attn-dropout' : 'dropout-call', 'call', args, dropoutEstimate(group, g, attn, args['p'], g.f.fallback === true));
      continue;
    }
    let fused: { params: readonly string[]; dropout: string } | undefined;
    if (q === SDPA) fused = { params: SDPA_PARAMS, dropout: 'dropout_p' };
    else {
      const f = FUSED_ATTENTION.get(g.res.final);
      if (f && (q.startsWith(f.module) || g.res.binding === 'unbound' || g.res.binding === 'star')) fused = f;
    }
    if (fused) {
      const args = argMap(g.f, fused.params);
      // `dropout_p=0.0` as written: no dropout at all, fused or not.
      const dropoutArg = args[fused.dropout];
      if (dropoutArg === undefined || /^0*\.?0*$/.test(dropoutArg.trim())) continue;
      makeSite(g, 'fused-attn-dropout', 'call', args, fusedDropoutEstimate(group, g), {
        remedy: 'Already optimal: the dropout happens inside the fused kernel, which regenerates it in backward instead of storing a mask.',
      });
    }
  }
}
