"""Convergence of 2:4 sparse FFN training on the GPT sample: dense vs 2:4 vs 2:4 + dense fine-tune.

Trains samples/gpt_tiny.py's model (character level, the Python standard library's own source
as text) under bf16 autocast with AdamW and a warmup + cosine learning rate, in one of three
variants, and writes the training and validation loss curves, the per-layer mask flip rates and
the step time as JSON:

  dense      the model as written;
  sparse     membit.patch(model, ffn="2:4"): SparseLinear24 FFNs (transposable masks refreshed
             every 40 steps, masked decay);
  sparse-ft  the same, switched to dense (membit.sparse.densify) for the last sixth of the steps.

    python benchmarks/train_sparse24.py --variant sparse --steps 3000 --out results/conv_sparse.json
    python benchmarks/plot_sparse24.py results/conv_*.json   # combined JSON + PNG

The issue's bar: validation loss within 2% of dense; the flip rate rises, then decays.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "..", "samples"))

import gpt_tiny  # noqa: E402
import membit  # noqa: E402
from membit.sparse import SparseLinear24, densify, flip_rate_series  # noqa: E402

VARIANTS = ("dense", "sparse", "sparse-ft")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-embd", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--data-bytes", type=int, default=8_000_000)
    ap.add_argument("--decay", type=float, default=2e-4, help="masked decay of SparseLinear24")
    ap.add_argument("--refresh-every", type=int, default=40)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    device = gpt_tiny.pick_device(args.device)
    raw = gpt_tiny.stdlib_text(args.data_bytes)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    cfg = gpt_tiny.GPTConfig(block_size=args.seq_len, n_layer=args.n_layer, n_head=args.n_head,
                             n_embd=args.n_embd, dropout=args.dropout)
    model = gpt_tiny.GPT(cfg).to(device)
    converted = 0
    if args.variant != "dense":
        rec = membit.patch(model, dropout=None, ffn="2:4")
        for r in rec.replaced:
            r.new.decay, r.new.refresh_every = args.decay, args.refresh_every
        converted = len(rec.replaced)
    ft_start = args.steps - args.steps // 6 if args.variant == "sparse-ft" else None
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))

    def lr_at(step):
        if step <= args.warmup:
            return args.lr * step / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", dtype=torch.bfloat16)

    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            losses = []
            for _ in range(args.eval_batches):
                x, y = gpt_tiny.get_batch(val, args.batch_size, args.seq_len, g, device)
                with amp:
                    losses.append(model(x, y)[1].item())
        model.train()
        return sum(losses) / len(losses)

    gen = torch.Generator().manual_seed(args.seed)
    curve = {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "lr": []}
    step_ms = []
    backend = None
    t_start = time.time()
    for step in range(1, args.steps + 1):
        if ft_start is not None and step == ft_start + 1:
            densify(model)
        for g_ in opt.param_groups:
            g_["lr"] = lr_at(step)
        x, y = gpt_tiny.get_batch(train, args.batch_size, args.seq_len, gen, device)
        record = step % 10 == 0 or step == 1
        if record and device.type == "cuda":
            torch.cuda.synchronize()  # time this step alone, not the queue before it
        t0 = time.perf_counter()
        with amp:
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if record:
            lv = loss.item()  # syncs, so the step time below is the device's
            step_ms.append((time.perf_counter() - t0) * 1e3)
            curve["step"].append(step)
            curve["train_loss"].append(lv)
            curve["lr"].append(lr_at(step))
            if not math.isfinite(lv):
                raise SystemExit(f"train_sparse24: loss is {lv} at step {step}")
        if backend is None:
            backend = next((m.last_backend for m in model.modules() if isinstance(m, SparseLinear24)), "dense")
        if step % args.eval_every == 0 or step == args.steps:
            v = evaluate()
            curve["val_step"].append(step)
            curve["val_loss"].append(v)
            print(f"{args.variant} step {step} train {curve['train_loss'][-1]:.4f} val {v:.4f}", flush=True)
    flip_steps, flip_layers = flip_rate_series(model)
    doc = {"schema": "membit.bench.sparse24-convergence/1", "variant": args.variant, "args": vars(args),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "params": sum(p.numel() for p in model.parameters()), "converted_linears": converted, "backend": backend,
           "dense_fine_tune_from": ft_start, "curve": curve, "final_val_loss": curve["val_loss"][-1],
           "flip_rate": {"step": flip_steps, "layers": flip_layers}, "median_step_ms": statistics.median(step_ms),
           "wall_s": time.time() - t_start}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f)
    print(f"{args.variant}: final val loss {doc['final_val_loss']:.4f}, median step {doc['median_step_ms']:.1f} ms, "
          f"backend {backend}, {doc['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
