/** Generated model files for the scanner benchmark: varied names, so no two statements are alike. */

/** One model-ish module: config dataclass, attention with masks and dropouts, MLPs, a block. */
function moduleBlock(i: number): string {
  const h = 256 + (i % 8) * 64;
  return `
@dataclass
class Config${i}:
    block_size: int = ${512 + (i % 4) * 256}
    n_head: int = ${4 + (i % 4)}
    n_embd: int = ${h}
    dropout: float = 0.${1 + (i % 8)}


class Attention${i}(nn.Module):
    """Causal self-attention number ${i}; mentions nn.Dropout(0.1) in a docstring."""

    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.register_buffer("bias", torch.tril(torch.ones(config.block_size, config.block_size)).view(1, 1, config.block_size, config.block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Mlp${i}(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc${i}_in = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU()
        self.fc${i}_out = nn.Linear(4 * config.n_embd, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.fc${i}_in(x)
        x = self.act(x)
        x = self.fc${i}_out(x)
        return self.drop(x)


class GatedMlp${i}(nn.Module):
    def __init__(self, dim=${h}, hidden=${h * 3}):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block${i}(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = Attention${i}(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = Mlp${i}(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


def helper_${i}(x, p=0.1, training=True):
    # Functional dropout and a fused path.
    y = F.dropout(x, p, training)
    return F.scaled_dot_product_attention(y, y, y, dropout_p=p if training else 0.0, is_causal=True)
`;
}

const HEADER = 'import math\nfrom dataclasses import dataclass\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n';

export function generate(lines: number): string {
  let text = HEADER;
  for (let i = 0; text.split('\n').length < lines; i++) text += moduleBlock(i);
  return text.split('\n').slice(0, lines).join('\n') + '\n';
}

