"""For each aten op of the GPT sample's second step on CUDA: allocated before and after, and the
op's own transient peak (max_memory_allocated reset before the op). Ops whose transient exceeds
what they leave allocated hold temporaries a meta kernel cannot show, so membit.predict adds
them (fakecuda._CUDA_TEMPORARIES).

    python kernels/benchmarks/op_transients.py      # on a CUDA machine; the GPT sample 6L/768, 8 x 1024, fp32

The first step runs untraced (it creates AdamW's state); the second is traced op by op, the
backward's ops included (dispatch modes follow autograd onto its thread).
"""
import contextlib
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples"))
import gpt_tiny  # noqa: E402


class Trace(TorchDispatchMode):
    """Per op: (name, allocated before, allocated after, the op's own peak)."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = func(*args, **(kwargs or {}))
        self.rows.append((str(func), before, torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()))
        return out


def main():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = gpt_tiny.GPTConfig(block_size=1024, n_layer=6, n_head=12, n_embd=768, dropout=0.1)
    model = gpt_tiny.GPT(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randint(0, 256, (8, 1024), device=dev)
    y = torch.randint(0, 256, (8, 1024), device=dev)

    def step(trace):
        with trace or contextlib.nullcontext():
            _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    step(None)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    tr = Trace()
    step(tr)
    torch.cuda.synchronize()
    rows = tr.rows
    gi = max(range(len(rows)), key=lambda i: rows[i][3])
    print("ops", len(rows), "start", base, "peak", rows[gi][3], "at op", gi, rows[gi][0])
    print("-- around the peak: op, before, after, op's peak, transient over max(before, after)")
    for i in range(max(0, gi - 12), min(len(rows), gi + 6)):
        name, b, a, p = rows[i]
        print(f"{i:5d} {name:45s} {b:>12d} {a:>12d} {p:>12d} {p - max(a, b):>11d}")
    print("-- ops with a transient over 1 MB (by op: count, max transient)")
    agg = {}
    for name, b, a, p in rows:
        t = p - max(a, b)
        if t > 1 << 20:
            count, most = agg.get(name, (0, 0))
            agg[name] = (count + 1, max(most, t))
    for name, (count, most) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:45s} x{count:<4d} {most}")


if __name__ == "__main__":
    main()
