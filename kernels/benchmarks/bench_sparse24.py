"""2:4 sparse FFN training speed on CUDA: dense cuBLAS vs membit SparseLinear24 (cuSPARSELt), side by side.

Three parts, each written to JSON with the GPU, the software versions and the date:

  --ffn      FFN block forward+backward (up, activation, down; SwiGLU for gated shapes) at
             transformer shapes and 4k-32k tokens, bf16 (and fp16 for the named shapes at 16k).
             The sparse time includes everything a training step pays: masking and compressing
             W and W^T of every linear (weights change every step), the cuSPARSELt products for
             the forward and the input gradient, the dense weight gradient, masked decay, and the
             mask refresh every 40 steps. Dense and sparse alternate in rounds in one process.
  --e2e      a whole GPT training step (bf16 autocast, AdamW, SDPA attention) at GPT-2 medium and
             GPT-2 XL widths, dense vs membit.patch(model, ffn="2:4").
  --advice   the --ffn grid written as the speed-advice table the editor reads:
             membit/sparse/advice/<gpu>.json (speedup per tokens, d_model, d_ff, dtype).

    python benchmarks/bench_sparse24.py --ffn --e2e --advice        # -> results/sparse24_<gpu>.json
    python benchmarks/bench_sparse24.py --smoke                     # tiny shapes, any device (no timing claims)

Target (issue): >= 1.3x FFN fwd+bwd for d_model, d_ff >= 4096 at >= 16k tokens, compression included.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import membit  # noqa: E402
from membit.ops.sparse24 import _Cslt  # noqa: E402
from membit.sparse import SparseLinear24, cusparselt  # noqa: E402
import benchenv  # noqa: E402  (beside this script: GPU, versions, date and commit of a result)

RESULTS = os.path.join(HERE, "results")
ADVICE_DIR = os.path.join(HERE, "..", "membit", "sparse", "advice")

# (name, d_model, d_ff, gated)
NAMED = [
    ("BERT-base", 768, 3072, False),
    ("BERT-large / GPT-2 medium", 1024, 4096, False),
    ("GPT-2 XL", 1600, 6400, False),
    ("7B-class plain (4096 x 16384)", 4096, 16384, False),
    ("LLaMA-7B SwiGLU (4096 x 11008)", 4096, 11008, True),
]
GRID_PLAIN = [768, 1024, 1600, 2048, 2560, 4096, 5120, 8192]
GRID_GATED = [(2048, 5632), (4096, 11008), (5120, 13824), (8192, 22016)]
TOKENS = [4096, 8192, 16384, 32768]
DTYPES = {"bf16": torch.bfloat16}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def environment():
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": benchenv.commit()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count, cuda=torch.version.cuda,
                   cusparselt=getattr(torch.backends.cusparselt, "version", lambda: None)())
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            env["driver"] = None
    else:
        env["gpu"] = "cpu"
    return env


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def timed(fn, warmup, iters, device):
    """Median and spread of fn() in ms: CUDA events on a GPU, perf_counter elsewhere."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return times


class FFN(nn.Module):
    """up -> GELU -> down, or SwiGLU (silu(gate) * up -> down) when gated."""

    def __init__(self, d, h, gated, device, dtype):
        super().__init__()
        self.gated = gated
        self.up = nn.Linear(d, h, bias=not gated, device=device, dtype=dtype)
        self.down = nn.Linear(h, d, bias=not gated, device=device, dtype=dtype)
        if gated:
            self.gate = nn.Linear(d, h, bias=False, device=device, dtype=dtype)

    def forward(self, x):
        if self.gated:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x), approximate="tanh"))


def sparse_copy(ffn: FFN, backend: str) -> FFN:
    import copy

    s = copy.deepcopy(ffn)
    for name in ("up", "down", "gate"):
        lin = getattr(s, name, None)
        if lin is not None:
            setattr(s, name, SparseLinear24.from_linear(lin, backend=backend))
    return s


def ffn_case(d, h, gated, tokens, dtype, device, warmup, iters, rounds, backend):
    torch.manual_seed(0)
    dense = FFN(d, h, gated, device, dtype)
    sparse = sparse_copy(dense, backend)
    x = torch.randn(tokens, d, device=device, dtype=dtype, requires_grad=True)
    gy = torch.randn(tokens, d, device=device, dtype=dtype)

    def step(m):
        def run():
            for p in m.parameters():
                p.grad = None
            x.grad = None
            m(x).backward(gy)
        return run

    def fwd(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    res = {"dense": [], "sparse": [], "dense_fwd": [], "sparse_fwd": []}
    for _ in range(rounds):  # alternate, so drift hits both alike
        res["dense"] += timed(step(dense), warmup, iters, device)
        res["sparse"] += timed(step(sparse), warmup, iters, device)
        res["dense_fwd"] += timed(fwd(dense), 2, max(3, iters // 2), device)
        res["sparse_fwd"] += timed(fwd(sparse), 2, max(3, iters // 2), device)
    backend_used = sparse.up.last_backend
    # What a step pays to mask and compress W and W^T of every linear, and one mask refresh.
    lins = [m for m in sparse.modules() if isinstance(m, SparseLinear24)]
    if backend_used == "cusparselt":
        comp = timed(lambda: [_Cslt(lin.weight, lin.mask, dtype) for lin in lins], 2, max(3, iters // 2), device)
    else:
        comp = [float("nan")]
    refresh = timed(lambda: [lin.refresh_mask() for lin in lins], 1, 3, device)
    med = {k: statistics.median(v) for k, v in res.items()}
    flops = 2 * tokens * d * h * (3 if gated else 2) * 3  # fwd + dX + dW for each linear
    out = {"d_model": d, "d_ff": h, "gated": gated, "tokens": tokens, "dtype": str(dtype).replace("torch.", ""),
           "backend": backend_used, "dense_ms": med["dense"], "sparse_ms": med["sparse"],
           "speedup": med["dense"] / med["sparse"], "dense_fwd_ms": med["dense_fwd"], "sparse_fwd_ms": med["sparse_fwd"],
           "fwd_speedup": med["dense_fwd"] / med["sparse_fwd"], "compress_ms": statistics.median(comp),
           "refresh_ms": statistics.median(refresh), "dense_tflops": flops / (med["dense"] * 1e-3) / 1e12,
           "spread": {k: [min(v), max(v)] for k, v in res.items()}}
    del dense, sparse, x, gy
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# -- end to end ---------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential()  # filled below: two Linear children, d -> 4d -> d (an FFN to membit.patch)
        self.mlp.c_fc, self.mlp.act, self.mlp.c_proj = nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, layers, d, heads, vocab=50304, ctx=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


E2E = [("GPT-2 medium (24 x 1024)", 24, 1024, 16), ("GPT-2 XL width (12 x 1600)", 12, 1600, 25)]


def e2e_case(name, layers, d, heads, batch, seq, steps, device):
    torch.manual_seed(0)
    out = {"model": name, "layers": layers, "d_model": d, "batch": batch, "seq": seq, "tokens": batch * seq}
    times = {}
    state = None
    for variant in ("dense", "2:4", "dense", "2:4"):
        with torch.device(device):  # initialise on the device: a CPU init of 350M+ parameters takes seconds
            model = GPT(layers, d, heads)
        if state is None:
            state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        if variant == "2:4":
            rec = membit.patch(model, dropout=None, ffn="2:4")
            out["converted"] = len(rec.replaced)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator(device=device).manual_seed(1)
        idx = torch.randint(0, 50304, (batch, seq), device=device, generator=g)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(idx, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times.setdefault(variant, []).extend(timed(step, 3, steps, device))
        if device.type == "cuda":
            out[f"{variant}_peak_bytes"] = torch.cuda.max_memory_allocated()
        if variant == "2:4":
            out["backend"] = next(m.last_backend for m in model.modules() if isinstance(m, SparseLinear24))
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["dense_ms"] = statistics.median(times["dense"])
    out["sparse_ms"] = statistics.median(times["2:4"])
    out["speedup"] = out["dense_ms"] / out["sparse_ms"]
    out["spread"] = {k: [min(v), max(v)] for k, v in times.items()}
    return out


def fmt_table(rows):
    lines = ["| FFN | tokens | dtype | dense fwd+bwd | 2:4 fwd+bwd | speedup | fwd only | compress/step | backend |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.get('name', '')} {r['d_model']}x{r['d_ff']}{' gated' if r['gated'] else ''} | {r['tokens']} | {r['dtype']} "
                     f"| {r['dense_ms']:.2f} ms | {r['sparse_ms']:.2f} ms | **{r['speedup']:.2f}x** | {r['fwd_speedup']:.2f}x "
                     f"| {r['compress_ms']:.2f} ms | {r['backend']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ffn", action="store_true", help="named FFN shapes at 8k/16k/32k tokens")
    ap.add_argument("--advice", action="store_true", help="the full grid, written as the advice table")
    ap.add_argument("--e2e", action="store_true", help="whole GPT training steps, dense vs 2:4")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on any device: checks the script, not speed")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--e2e-steps", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=480, help="stop starting new cases after this many seconds")
    ap.add_argument("--out", default=None, help="results JSON (default results/sparse24_<gpu>.json)")
    ap.add_argument("--advice-out", default=None, help="advice JSON (default membit/sparse/advice/<gpu>.json)")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = environment()
    t0 = time.time()
    backend = "cusparselt" if device.type == "cuda" else "masked-dense"
    if device.type == "cuda":
        ok, why = cusparselt.check(device, torch.bfloat16)
        if not ok:
            raise SystemExit(f"bench_sparse24: the 2:4 path cannot run here: {why}")
    doc = {"schema": "membit.bench.sparse24/1", "env": env, "argv": sys.argv[1:], "ffn": [], "grid": [], "e2e": []}

    if args.smoke:
        for d, h, gated in ((64, 256, False), (64, 160, True)):
            doc["ffn"].append(ffn_case(d, h, gated, 128, torch.float32 if device.type == "cpu" else torch.bfloat16,
                                       device, 1, 2, 1, backend))
        doc["e2e"].append(e2e_case("smoke", 2, 64, 4, 2, 32, 2, device))
        print(fmt_table(doc["ffn"]))
        print(json.dumps(doc["e2e"], indent=1))
        return 0

    cases = []
    if args.ffn or args.advice:
        for name, d, h, gated in NAMED:
            for t in (8192, 16384, 32768):
                cases.append((name, d, h, gated, t, "bf16"))
    if args.advice:
        named = {(d, h) for _, d, h, _ in NAMED}
        for d in GRID_PLAIN:
            for t in TOKENS:
                if (d, 4 * d) not in named or t == 4096:
                    cases.append((None, d, 4 * d, False, t, "bf16"))
        for d, h in GRID_GATED:
            for t in TOKENS:
                if (d, h) not in named or t == 4096:
                    cases.append((None, d, h, True, t, "bf16"))
    skipped = []
    for name, d, h, gated, t, dt in cases:
        if time.time() - t0 > args.budget_s:
            skipped.append((name, d, h, gated, t, dt))
            continue
        try:
            r = ffn_case(d, h, gated, t, DTYPES[dt], device, 3, args.iters, args.rounds, backend)
        except torch.cuda.OutOfMemoryError as e:  # noqa: PERF203
            log(f"OOM at {d}x{h} {t} tokens: {e}")
            continue
        if name:
            r["name"] = name
            doc["ffn"].append(r)
        doc["grid"].append(r)
        log(f"{name or ''} {d}x{h}{' gated' if gated else ''} T={t} {dt}: dense {r['dense_ms']:.2f} ms, "
            f"2:4 {r['sparse_ms']:.2f} ms ({r['speedup']:.2f}x; fwd {r['fwd_speedup']:.2f}x; compress {r['compress_ms']:.2f} ms)")
    doc["skipped_for_time"] = skipped

    if args.e2e:
        for name, layers, d, heads in E2E:
            if time.time() - t0 > args.budget_s + 60:
                doc["e2e_skipped_for_time"] = True
                break
            r = e2e_case(name, layers, d, heads, 16, 1024, args.e2e_steps, device)
            doc["e2e"].append(r)
            log(f"e2e {name}: dense {r['dense_ms']:.1f} ms, 2:4 {r['sparse_ms']:.1f} ms ({r['speedup']:.2f}x)")

    gpu = slug(env.get("gpu", "cpu"))
    os.makedirs(RESULTS, exist_ok=True)
    out = args.out or os.path.join(RESULTS, f"sparse24_{gpu}.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"wrote {out}")

    if args.advice and doc["grid"]:
        advice = {"schema": "membit.sparse-advice/1", "device": {"name": env.get("gpu"), "capability": env.get("capability")},
                  "torch": env["torch"], "cusparselt": env.get("cusparselt"), "date": env["date"][:10],
                  "method": "FFN block forward+backward per training step (up, activation, down; SwiGLU when gated): "
                            "dense cuBLAS vs membit SparseLinear24 on cuSPARSELt including masking and compressing "
                            "W and W^T every step, dense dW, masked decay and the mask refresh every 40 steps; "
                            f"median of {args.rounds} x {args.iters} CUDA-event-timed steps",
                  "source": "kernels/benchmarks/bench_sparse24.py --advice",
                  "entries": [{k: r[k] for k in ("tokens", "d_model", "d_ff", "gated", "dtype", "dense_ms", "sparse_ms", "speedup")}
                              for r in doc["grid"]]}
        os.makedirs(ADVICE_DIR, exist_ok=True)
        aout = args.advice_out or os.path.join(ADVICE_DIR, f"{gpu}.json")
        with open(aout, "w") as f:
            json.dump(advice, f, indent=1)
        log(f"wrote {aout}")

    print(f"# {env.get('gpu')} | torch {env['torch']} | cuSPARSELt {env.get('cusparselt')} | {env['date']}")
    print(fmt_table(doc["ffn"]))
    for r in doc["e2e"]:
        print(f"e2e {r['model']} {r['tokens']} tokens: dense {r['dense_ms']:.1f} ms, 2:4 {r['sparse_ms']:.1f} ms, "
              f"{r['speedup']:.2f}x; peak {r.get('dense_peak_bytes', 0) / 2**30:.2f} -> {r.get('2:4_peak_bytes', 0) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
