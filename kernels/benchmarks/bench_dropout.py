"""Dropout speed on CUDA: torch's F.dropout vs membit packed / recompute vs the seed's naive packing.

Times forward, backward and both (autograd) for [tokens, hidden] and [B, H, L, L] shapes from
2^20 to 2^28 elements in bf16/fp16/fp32, side by side in one run, with triton's do_bench
(median, L2 flushed before every call), two ways:
  gpu:   each call captured once in a CUDA graph and the graph replayed: device time alone;
  eager: the Python call itself, so host overhead shows wherever it exceeds device time.
Also measures the device-to-device copy bandwidth, each kernel's achieved bandwidth for the
bytes it must move, and the host time per call on a tiny tensor.

    python benchmarks/bench_dropout.py                 # full table -> results/dropout_<gpu>.json
    python benchmarks/bench_dropout.py --quick         # two shapes, bf16
    python benchmarks/bench_dropout.py --variants      # launch-parameter sweep of the kernel

Targets (issue: >= 2^24 elements): packed fwd+bwd <= 0.80x F.dropout, recompute <= 1.0x,
forward >= 85% of the measured copy bandwidth for the bytes it moves.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from membit.nn.functional import packed_dropout  # noqa: E402
from membit.ops import packed_dropout as pd  # noqa: E402
import benchenv  # noqa: E402  (beside this script: GPU, versions, date and commit of a result)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

SHAPES = [
    ("1M", (1024, 1024)),
    ("4M", (4096, 1024)),
    ("BERT-base tokens", (16384, 768)),
    ("BERT-large tokens", (16384, 1024)),
    ("GPT-2 XL tokens", (8192, 1600)),
    ("BERT-base attn b8 s512", (8, 12, 512, 512)),
    ("BERT-large attn b16 s512", (16, 16, 512, 512)),
    ("attn b8 h16 s1024", (8, 16, 1024, 1024)),
    ("attn b16 h16 s1024", (16, 16, 1024, 1024)),
]
QUICK_SHAPES = [SHAPES[3], SHAPES[8]]
ROUNDS = 3
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# -- the seed document's PM-Drop, as written there (a Python loop of shifts over a bool mask) ----

def seed_naive_forward(x, p):
    keep_prob = 1 - p
    mask = torch.rand_like(x) < keep_prob
    flat = mask.flatten()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    flat = flat.view(-1, 8)
    packed = sum((flat[:, i].byte() << i) for i in range(8)).contiguous()
    return x * mask.div(keep_prob), packed


def seed_naive_backward(grad, packed, p):
    bits = (packed.view(-1, 1) >> torch.arange(8, device=packed.device)) & 1
    mask = bits.flatten()[:grad.numel()].view(grad.shape).bool()
    return grad * mask.div(1 - p)


class SeedNaiveDropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        y, packed = seed_naive_forward(x, p)
        ctx.save_for_backward(packed)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx, g):
        (packed,) = ctx.saved_tensors
        return seed_naive_backward(g, packed, ctx.p), None


# ------------------------------------------------------------------------------------------------

def bench(fn, grad_to_none=None, warmup=5, rep=25):
    import triton.testing

    try:
        return triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median")
    except TypeError:  # older triton: no return_mode
        return triton.testing.do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, quantiles=[0.5])[0]


def graph_of(fn):
    """Capture fn (after warm-up on a side stream, as CUDA graphs require) into a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def gpu_ms(fn):
    """Device time of fn: its CUDA graph replayed under do_bench (L2 flushed before each replay)."""
    graph = graph_of(fn)
    ms = bench(graph.replay)
    del graph
    return ms


def host_us(fn, n=2000):
    """Host time per call (microseconds) on a tiny tensor: launch + Python/dispatch overhead."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def copy_bandwidth():
    """Device-to-device copy, bytes read + written per second (GB/s), on a 1 GiB buffer."""
    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), rep=100)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def environment():
    import triton

    props = torch.cuda.get_device_properties(0)
    env = {
        "gpu": torch.cuda.get_device_name(0),
        "capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": benchenv.commit(),
    }
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        env["driver"] = None
    return env


def bytes_moved(impl, phase, n, itemsize):
    """The fewest bytes each implementation must move: data in + out, plus its mask traffic."""
    data = 2 * n * itemsize
    mask = {"torch": n, "packed": 2 * ((n + 15) // 16), "recompute": 0, "seed_naive": (n + 7) // 8}[impl]
    return data + mask if phase in ("fwd", "bwd") else 2 * (data + mask)


def run_table(shapes, dtypes, p, copy_gbps, log):
    rows = []
    for label, shape in shapes:
        for dname in dtypes:
            dtype = DTYPES[dname]
            n = 1
            for s in shape:
                n *= s
            x = torch.randn(shape, device="cuda", dtype=dtype)
            g = torch.randn(shape, device="cuda", dtype=dtype)
            xg = x.clone().requires_grad_()
            scale = 1.0 / (1.0 - p)
            _, tmask = torch.native_dropout(x, p, True)
            y_p, words, seed = pd.packed_dropout_forward(x, p, True)
            _, naive_packed = seed_naive_forward(x, p)
            del y_p
            grad = torch.autograd.grad
            impls = {
                "torch": (
                    lambda: torch.native_dropout(x, p, True),
                    lambda: torch.ops.aten.native_dropout_backward(g, tmask, scale),
                    lambda: grad(F.dropout(xg, p), xg, g),
                ),
                "packed": (
                    lambda: pd.packed_dropout_forward(x, p, True),
                    lambda: pd.packed_dropout_backward(g, words, seed, p, True),
                    lambda: grad(packed_dropout(xg, p, mode="packed"), xg, g),
                ),
                "recompute": (
                    lambda: pd.packed_dropout_forward(x, p, False),
                    lambda: pd.packed_dropout_backward(g, words, seed, p, False),
                    lambda: grad(packed_dropout(xg, p, mode="recompute"), xg, g),
                ),
                "seed_naive": (
                    lambda: seed_naive_forward(x, p),
                    lambda: seed_naive_backward(g, naive_packed, p),
                    lambda: grad(SeedNaiveDropoutFn.apply(xg, p), xg, g),
                ),
            }
            # Device time: every (impl, phase) captured once, then replayed in ROUNDS interleaved
            # rounds; the median round is kept, so a passing clock dip cannot pick a winner.
            graphs = {(impl, phase): graph_of(fn) for impl, fns in impls.items()
                      for phase, fn in zip(("fwd", "bwd", "fwd+bwd"), fns)}
            rounds = {k: [] for k in graphs}
            for _ in range(ROUNDS):
                for k, graph in graphs.items():
                    rounds[k].append(bench(graph.replay))
            del graphs
            times, eager, current = {}, {}, []
            for impl, fns in impls.items():
                for phase, fn in zip(("fwd", "bwd", "fwd+bwd"), fns):
                    ms = statistics.median(rounds[(impl, phase)])
                    ms_eager = bench(fn)
                    nbytes = bytes_moved(impl, phase, n, x.element_size())
                    gbps = nbytes / (ms * 1e-3) / 1e9
                    times[(impl, phase)] = ms
                    eager[(impl, phase)] = ms_eager
                    current.append({
                        "label": label, "shape": list(shape), "numel": n, "log2_numel": round(math.log2(n), 2),
                        "dtype": dname, "impl": impl, "phase": phase, "ms": ms, "ms_rounds": rounds[(impl, phase)],
                        "ms_eager": ms_eager, "bytes": nbytes, "GBps": gbps, "frac_copy_bw": gbps / copy_gbps,
                    })
            for r in current:
                r["vs_torch"] = times[(r["impl"], r["phase"])] / times[("torch", r["phase"])]
                r["vs_torch_eager"] = eager[(r["impl"], r["phase"])] / eager[("torch", r["phase"])]
            rows += current
            log(f"{label:26s} {dname:4s} n=2^{rows[-1]['log2_numel']:<5} "
                f"fwd+bwd gpu ms torch {times[('torch', 'fwd+bwd')]:.4f} packed {times[('packed', 'fwd+bwd')]:.4f} "
                f"recompute {times[('recompute', 'fwd+bwd')]:.4f} naive {times[('seed_naive', 'fwd+bwd')]:.4f} | eager ms "
                f"torch {eager[('torch', 'fwd+bwd')]:.4f} packed {eager[('packed', 'fwd+bwd')]:.4f} "
                f"recompute {eager[('recompute', 'fwd+bwd')]:.4f}")
            del x, g, xg, tmask, words, seed, naive_packed
            torch.cuda.empty_cache()
    return rows


def run_variants(p, copy_gbps, log):
    configs = [
        pd.KernelConfig(rows=512, num_warps=4),
        pd.KernelConfig(rows=256, num_warps=4),
        pd.KernelConfig(rows=512, num_warps=8),
        pd.KernelConfig(rows=1024, num_warps=4),
        pd.KernelConfig(rows=1024, num_warps=8),
        pd.KernelConfig(rows=2048, num_warps=8),
        pd.KernelConfig(rows=512, num_warps=4, rounds=7),
    ]
    rows = []
    for dname, shape in (("bf16", (16384, 1024)), ("bf16", (16, 16, 1024, 1024)), ("fp32", (8, 16, 1024, 1024)),
                         ("fp16", (8192, 1600))):
        dtype = DTYPES[dname]
        x = torch.randn(shape, device="cuda", dtype=dtype)
        g = torch.randn(shape, device="cuda", dtype=dtype)
        n = x.numel()
        _, tmask = torch.native_dropout(x, p, True)
        t_fwd = gpu_ms(lambda: torch.native_dropout(x, p, True))
        t_bwd = gpu_ms(lambda: torch.ops.aten.native_dropout_backward(g, tmask, 1 / (1 - p)))
        for cfg in configs:
            _, words, seed = pd.packed_dropout_forward(x, p, True, config=cfg)
            fwd = gpu_ms(lambda: pd.packed_dropout_forward(x, p, True, config=cfg))
            fwd_rc = gpu_ms(lambda: pd.packed_dropout_forward(x, p, False, config=cfg))
            bwd = gpu_ms(lambda: pd.packed_dropout_backward(g, words, seed, p, True, config=cfg))
            bwd_rc = gpu_ms(lambda: pd.packed_dropout_backward(g, words, seed, p, False, config=cfg))
            fb = bytes_moved("packed", "fwd", n, x.element_size())
            row = {"dtype": dname, "shape": list(shape), "numel": n, "config": repr(cfg),
                   "fwd_ms": fwd, "bwd_ms": bwd, "fwd_recompute_ms": fwd_rc, "bwd_recompute_ms": bwd_rc,
                   "torch_fwd_ms": t_fwd, "torch_bwd_ms": t_bwd,
                   "fwd_frac_copy_bw": fb / (fwd * 1e-3) / 1e9 / copy_gbps,
                   "packed_fwd_bwd_vs_torch": (fwd + bwd) / (t_fwd + t_bwd),
                   "recompute_fwd_bwd_vs_torch": (fwd_rc + bwd_rc) / (t_fwd + t_bwd)}
            rows.append(row)
            log(f"{dname} {str(shape):22s} {repr(cfg):45s} fwd {fwd:.4f} ({row['fwd_frac_copy_bw']:.0%} copy) "
                f"bwd {bwd:.4f} rc fwd {fwd_rc:.4f} rc bwd {bwd_rc:.4f} | torch {t_fwd:.4f}/{t_bwd:.4f} "
                f"packed {row['packed_fwd_bwd_vs_torch']:.2f}x rc {row['recompute_fwd_bwd_vs_torch']:.2f}x")
        del x, g, tmask
        torch.cuda.empty_cache()
    return rows


def run_overhead(log):
    """Host microseconds per call on a 4096-element bf16 tensor, where launch costs dominate."""
    x = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)
    grad = torch.autograd.grad
    cases = {
        "torch F.dropout fwd": lambda: F.dropout(x, 0.1),
        "membit packed fwd": lambda: packed_dropout(x, 0.1),
        "torch F.dropout fwd+bwd": lambda: grad(F.dropout(xg, 0.1), xg, g),
        "membit packed fwd+bwd (autograd.Function)": lambda: grad(packed_dropout(xg, 0.1), xg, g),
        "membit recompute fwd+bwd (autograd.Function)": lambda: grad(packed_dropout(xg, 0.1, mode="recompute"), xg, g),
    }
    if pd.uses_custom_op():
        cases["membit packed fwd+bwd (torch.library op)"] = lambda: grad(pd._op(xg, 0.1, True)[0], xg, g)
    out = {}
    for name, fn in cases.items():
        out[name] = host_us(fn)
        log(f"host time {name:48s} {out[name]:7.1f} us/call")
    return out


def run_host_breakdown(log):
    """Where the host time of one packed-dropout call goes (4096-element bf16 tensor)."""
    x = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x)
    y, words, seed = pd.packed_dropout_forward(x, 0.1)
    nrows = 2 * words.numel()
    cfg = pd.DEFAULT_CONFIG
    m8 = words.view(torch.int8)
    grid = (max(1, nrows // cfg.rows),)
    fwd_args = (x, y, m8, y, 1, 2, x.numel(), nrows, 6554, 1.1)
    fwd_consts = (cfg.rows, cfg.rounds, True, False)
    cases = {
        "next_key (host, from the generator's state)": lambda: pd.next_key(x.device),
        "draw_seed (key as a device tensor)": lambda: pd.draw_seed(x.device),
        "empty_like + empty(mask)": lambda: (torch.empty_like(x), torch.empty(2 * words.numel(), dtype=torch.int8, device="cuda")),
        "fwd kernel, Triton's own launch": lambda: pd._dropout_fwd_kernel[grid](
            *fwd_args, *fwd_consts, num_warps=cfg.num_warps),
        "fwd kernel, direct launch": lambda: pd._FWD(grid[0], x.device, fwd_args, fwd_consts, cfg.num_warps),
        "bwd kernel, Triton's own launch": lambda: pd._dropout_bwd_kernel[grid](
            g, y, m8, x.numel(), nrows, 1.1, ROWS=cfg.rows, num_warps=cfg.num_warps),
        "bwd kernel, direct launch": lambda: pd._BWD(grid[0], x.device, (g, y, m8, x.numel(), nrows, 1.1),
                                                     (cfg.rows,), cfg.num_warps),
        "packed_dropout_forward (host fn)": lambda: pd.packed_dropout_forward(x, 0.1),
        "packed_dropout_backward (host fn)": lambda: pd.packed_dropout_backward(g, words, seed, 0.1),
        "functional.packed_dropout fwd (no grad)": lambda: packed_dropout(x, 0.1),
        "functional.packed_dropout fwd (grad)": lambda: packed_dropout(xg, 0.1),
        "F.dropout fwd (grad)": lambda: F.dropout(xg, 0.1),
        "x * 1.0 (one elementwise op)": lambda: x * 1.0,
    }
    out = {}
    for name, fn in cases.items():
        out[name] = host_us(fn)
        log(f"host breakdown {name:42s} {out[name]:7.1f} us/call")
    return out


def summarize(rows, copy_gbps):
    """Targets for >= 2^24 elements, per (shape, dtype)."""
    out = []
    keyed = {(r["label"], r["dtype"], r["impl"], r["phase"]): r for r in rows}
    for (label, dtype, impl, phase), r in keyed.items():
        if impl != "torch" or phase != "fwd+bwd" or r["numel"] < (1 << 24):
            continue
        pk = keyed[(label, dtype, "packed", "fwd+bwd")]
        rc = keyed[(label, dtype, "recompute", "fwd+bwd")]
        nv = keyed[(label, dtype, "seed_naive", "fwd+bwd")]
        pf = keyed[(label, dtype, "packed", "fwd")]
        out.append({
            "label": label, "dtype": dtype, "numel": r["numel"],
            "packed_fwd_bwd_vs_torch": pk["vs_torch"], "packed_met": pk["vs_torch"] <= 0.80,
            "recompute_fwd_bwd_vs_torch": rc["vs_torch"], "recompute_met": rc["vs_torch"] <= 1.0,
            "packed_fwd_frac_copy_bw": pf["frac_copy_bw"], "fwd_bw_met": pf["frac_copy_bw"] >= 0.85,
            "seed_naive_fwd_bwd_vs_torch": nv["vs_torch"],
            "packed_eager": pk["vs_torch_eager"], "recompute_eager": rc["vs_torch_eager"],
        })
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two shapes, bf16 only")
    ap.add_argument("--variants", action="store_true", help="sweep kernel launch parameters instead")
    ap.add_argument("--host", action="store_true", help="only the host-time breakdown of one call")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32")
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="JSON path (default: results/dropout[_variants]_<gpu>.json)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_dropout.py needs a CUDA GPU")

    def log(msg):
        print(msg, flush=True)

    env = environment()
    log(f"{env['gpu']} torch {env['torch']} triton {env['triton']} {env['date']}")
    copy_gbps = copy_bandwidth()
    log(f"copy bandwidth (read + write): {copy_gbps:.0f} GB/s")
    slug = env["gpu"].replace(" ", "-")
    result = {"schema": "membit.bench.dropout/1", "env": env, "p": args.p, "copy_GBps": copy_gbps,
              "default_config": repr(pd.DEFAULT_CONFIG),
              "method": "triton.testing.do_bench median with L2 flushed before each call; 'ms' = device time "
                        "(CUDA-graph replay, median of 3 interleaved rounds), 'ms_eager' = the Python call; "
                        "fwd+bwd = torch.autograd.grad of the op"}
    result["host_us"] = run_overhead(log)
    result["host_breakdown_us"] = run_host_breakdown(log)
    if args.host:
        path = args.out or os.path.join(RESULTS, f"dropout_host_{slug}.json")
    elif args.variants:
        result["variants"] = run_variants(args.p, copy_gbps, log)
        path = args.out or os.path.join(RESULTS, f"dropout_variants_{slug}.json")
    if not args.host and not args.variants:
        shapes = QUICK_SHAPES if args.quick else SHAPES
        dtypes = ["bf16"] if args.quick else args.dtypes.split(",")
        rows = run_table(shapes, dtypes, args.p, copy_gbps, log)
        result["rows"] = rows
        result["targets"] = summarize(rows, copy_gbps)
        path = args.out or os.path.join(RESULTS, f"dropout{'_quick' if args.quick else ''}_{slug}.json")
        log("\n(>= 2^24 elements) fwd+bwd device time vs F.dropout (eager in brackets); forward bandwidth vs copy")
        log(f"{'shape':26s} {'dtype':5s} {'packed':>15s} {'recompute':>15s} {'naive':>7s} {'fwd %copy':>9s}")
        for t in result["targets"]:
            log(f"{t['label']:26s} {t['dtype']:5s} {t['packed_fwd_bwd_vs_torch']:6.2f}x ({t['packed_eager']:5.2f}x) "
                f"{t['recompute_fwd_bwd_vs_torch']:6.2f}x ({t['recompute_eager']:5.2f}x) "
                f"{t['seed_naive_fwd_bwd_vs_torch']:6.1f}x {t['packed_fwd_frac_copy_bw']:8.0%}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
