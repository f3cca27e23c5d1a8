"""HF transformers GPT2LMHeadModel built from a config (random init), trained on the Python
standard library's own source text (bytes as token ids, no download). The predictor benchmark's
GPT-2 case: the same script runs under `membit.predict` and under the measuring harness.

    python benchmarks/hf_gpt2_train.py --size medium --attn eager --batch-size 8 --seq-len 1024
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples"))
from gpt_tiny import (
    get_batch,
    stdlib_text,
)

SIZES = {"small": (12, 768, 12), "medium": (24, 1024, 16), "large": (36, 1280, 20)}


def build_model(size, attn, seq_len, device):
    """GPT2LMHeadModel of this size from its config, seeded so every process builds the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    layers, d, heads = SIZES[size]
    cfg = GPT2Config(vocab_size=50257, n_positions=max(1024, seq_len), n_embd=d, n_layer=layers, n_head=heads)
    torch.manual_seed(0)
    return GPT2LMHeadModel._from_config(cfg, attn_implementation=attn).to(device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast around the forward")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(args.size, args.attn, args.seq_len, device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = torch.frombuffer(bytearray(stdlib_text(2_000_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        x, y = get_batch(data, args.batch_size, args.seq_len, gen, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=x, labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        print(f"step {step} loss {loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
