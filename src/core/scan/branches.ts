/**
 * Fallback branches: code that runs only where a fused feature is missing.
 *
 *     if self.flash:                      # or hasattr(F, "scaled_dot_product_attention")
 *         y = F.scaled_dot_product_attention(q, k, v, dropout_p=...)
 *     else:
 *         att = self.attn_dropout(F.softmax(att, dim=-1))   # fallback: never runs on torch >= 2.0
 *
 * A site there costs nothing on a torch that has the feature, and a lever must not rewrite
 * it (it exists for the torch that lacks the feature). Read on tree-sitter nodes.
 */
import type { Node } from 'web-tree-sitter';

/** Names that say "the fused path": the SDPA function, flash/xformers kernels, or a flag for them. */
export const FUSED_FEATURE = /scaled_dot_product_attention|\bsdpa\b|_sdpa\b|flash|fused_attn|use_fused|xformers|memory_efficient_attention/i;

/** The condition tests for the fused feature itself, not for something else that mentions it. */
function testsFeature(cond: Node): { negated: boolean } | undefined {
  let c = cond;
  let negated = false;
  for (;;) {
    const inner = c.type === 'parenthesized_expression' ? c.namedChild(0) : null;
    if (!inner) break;
    c = inner;
  }
  if (c.type === 'not_operator') {
    const arg = c.childForFieldName('argument');
    if (!arg) return undefined;
    negated = true;
    c = arg;
  }
  // `if self.flash`, `if not self.fused_attn`, `if hasattr(F, "scaled_dot_product_attention")`.
  if (!FUSED_FEATURE.test(c.text)) return undefined;
  // Only a plain flag or check (`self.flash`, `hasattr(F, "scaled_dot_product_attention")`): the
  // `else` of `if self.use_sdpa and not output_attentions:` also runs when weights are asked for.
  if (!['attribute', 'identifier', 'call'].includes(c.type)) return undefined;
  return { negated };
}

/**
 * The call sits in the branch of an `if` that runs when the fused feature is absent:
 * the `else:` of `if <feature>:` or the body of `if not <feature>:`.
 */
export function inFallbackBranch(node: Node): boolean {
  for (let p = node.parent, depth = 0; p && depth < 40; p = p.parent, depth++) {
    if (p.type === 'function_definition' || p.type === 'class_definition') return false;
    if (p.type === 'else_clause' && p.parent?.type === 'if_statement') {
      const cond = p.parent.childForFieldName('condition');
      const t = cond ? testsFeature(cond) : undefined;
      if (t && !t.negated) return true;
    }
    if (p.type === 'block' && p.parent?.type === 'if_statement' && p.parent.childForFieldName('consequence')?.equals(p)) {
      const cond = p.parent.childForFieldName('condition');
      const t = cond ? testsFeature(cond) : undefined;
      if (t?.negated) return true;
    }
  }
  return false;
}
