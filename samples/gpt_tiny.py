"""A small character-level GPT trained on the Python standard library's own source.

Eager attention with a materialized causal mask and attention-probability dropout,
residual dropouts and a 4x MLP: every site Membit scans for, in a script that trains
on real text that is already on every machine with Python.

    python samples/gpt_tiny.py --steps 50 --batch-size 16 --seq-len 128
"""

import argparse
import math
import os
import sysconfig
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 128
    vocab_size: int = 256  # bytes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # Materialized [1, 1, L, L] causal mask, as in many eager GPT implementations.
        self.register_buffer(
            "bias",
            torch.tril(torch.ones(config.block_size, config.block_size)).view(1, 1, config.block_size, config.block_size),
        )

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
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


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx, targets=None):
        _, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def stdlib_text(max_bytes: int) -> bytes:
    """The standard library's .py sources, in a fixed order, up to max_bytes."""
    root = sysconfig.get_paths()["stdlib"]
    chunks, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "test", "tests", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            chunks.append(data)
            total += len(data)
            if total >= max_bytes:
                return b"".join(chunks)[:max_bytes]
    if total == 0:
        raise SystemExit(f"no Python sources found under {root}")
    return b"".join(chunks)


def get_batch(data: torch.Tensor, batch_size: int, seq_len: int, gen: torch.Generator, device):
    ix = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=gen)
    x = torch.stack([data[i : i + seq_len] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + seq_len] for i in ix.tolist()])
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv=None, prepare=None):
    """prepare(model) -> the model to train (samples/gpt_compiled.py compiles it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=GPTConfig.n_layer)
    ap.add_argument("--n-head", type=int, default=GPTConfig.n_head)
    ap.add_argument("--n-embd", type=int, default=GPTConfig.n_embd)
    ap.add_argument("--dropout", type=float, default=GPTConfig.dropout)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data-bytes", type=int, default=4_000_000)
    ap.add_argument("--eval-batches", type=int, default=8, help="held-out batches evaluated at the end (0: none)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate on held-out text every N steps (0: only at the end)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing", action="store_true",
                    help="print each step's wall time (the loss print syncs the device) and, on CUDA, max_memory_allocated")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    raw = stdlib_text(args.data_bytes)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]

    config = GPTConfig(
        block_size=args.seq_len, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout
    )
    model = GPT(config).to(device)
    if prepare is not None:
        # e.g. samples/gpt_compiled.py compiles it; the optimizer below holds the same Parameters.
        model = prepare(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"gpt_tiny: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{len(train)} train bytes, device {device}", flush=True)

    def evaluate(batches: int = 8) -> float:
        model.eval()
        egen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            losses = [model(*get_batch(val, args.batch_size, args.seq_len, egen, device))[1].item() for _ in range(batches)]
        model.train()
        return sum(losses) / len(losses)

    t0 = time.time()
    for step in range(1, args.steps + 1):
        ts = time.perf_counter()
        x, y = get_batch(train, args.batch_size, args.seq_len, gen, device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item():.4f}", flush=True)
        if args.timing:
            print(f"step_ms {step} {(time.perf_counter() - ts) * 1000:.3f}", flush=True)
        if args.eval_every and step % args.eval_every == 0:
            print(f"step {step} val_loss {evaluate():.4f}", flush=True)
    if args.timing and device.type == "cuda":
        print(f"max_memory_allocated {torch.cuda.max_memory_allocated(device)}", flush=True)
    if args.eval_batches > 0:
        print(f"val_loss {evaluate(args.eval_batches):.4f} time {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
