"""HF transformers BertForMaskedLM, built from a config (random init), trained with
masked-language modelling on the Python standard library's own source text.

Needs the `transformers` package; nothing is downloaded (no weights, no tokenizer):
text is byte-level, so the vocabulary is 256 bytes plus [PAD], [MASK], [CLS], [SEP].

    python samples/bert_mlm.py --size tiny --attn eager --steps 20 --batch-size 16 --seq-len 512
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_tiny import stdlib_text  # noqa: E402  (same real text as the GPT sample)

SIZES = {
    # layers, hidden, heads, intermediate
    "tiny": (4, 312, 12, 1200),  # TinyBERT 4L/312H
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
PAD, MASK, CLS, SEP = 256, 257, 258, 259
VOCAB = 260


def build_model(size: str, attn: str, seq_len: int):
    try:
        from transformers import BertConfig, BertForMaskedLM
    except ImportError:
        raise SystemExit("bert_mlm.py needs the transformers package: pip install transformers")
    layers, hidden, heads, inter = SIZES[size]
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=max(512, seq_len),
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=PAD,
    )
    try:
        return BertForMaskedLM._from_config(config, attn_implementation=attn)
    except TypeError:  # older transformers: no attn_implementation
        return BertForMaskedLM(config)


def mlm_batch(data, batch_size, seq_len, gen, device, mask_prob=0.15):
    ix = torch.randint(len(data) - seq_len, (batch_size,), generator=gen)
    ids = torch.stack([data[i : i + seq_len - 2] for i in ix.tolist()])
    ids = torch.cat([torch.full((batch_size, 1), CLS), ids, torch.full((batch_size, 1), SEP)], dim=1)
    labels = ids.clone()
    chosen = torch.rand(ids.shape, generator=gen) < mask_prob
    chosen[:, 0] = chosen[:, -1] = False
    labels[~chosen] = -100
    ids = ids.masked_fill(chosen, MASK)
    return ids.to(device), labels.to(device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    data = torch.frombuffer(bytearray(stdlib_text(4_000_000)), dtype=torch.uint8).long()
    model = build_model(args.size, args.attn, args.seq_len).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"bert_mlm: {args.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), attention {args.attn}, device {device}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        ids, labels = mlm_batch(data, args.batch_size, args.seq_len, gen, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    print(f"time {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
