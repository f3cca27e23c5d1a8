"""End to end: HF BertForMaskedLM (from config) with stock vs packed vs recompute dropout.

TinyBERT (4L/312H), BERT-base and BERT-large at seq 512, bf16 autocast, AdamW, eager and SDPA
attention. For each: peak allocated memory over the timed steps, median step time and
samples/s; variants of one model share one process and alternate round by round, so they
see the same machine state. Then, for BERT-large, the largest batch each variant fits,
found by bisection on CUDA OOM in a fresh subprocess per variant, and a direct check in
fresh subprocesses that stock dropout OOMs at the batch packed dropout fits.

Input: masked-LM batches cut from the Python standard library's own source text (bytes
mapped to token ids), 15% of positions masked. No accuracy is claimed here: memory and speed.

    python benchmarks/bench_models.py                       # everything -> results/models_<gpu>.json
    python benchmarks/bench_models.py --smoke               # TinyBERT eager, 2 steps, small probe
"""

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import membit  # noqa: E402
import benchenv  # noqa: E402  (beside this script: GPU, versions, date and commit of a result)

RESULTS = os.path.join(HERE, "results")
MODELS = {
    # name: (layers, hidden, heads, intermediate, default batch)
    "tinybert": (4, 312, 12, 1200, 64),
    "bert-base": (12, 768, 12, 3072, 32),
    "bert-large": (24, 1024, 16, 4096, 16),
}
VARIANTS = ("stock", "packed", "recompute")
SEQ = 512


def build(name, attn):
    import transformers

    layers, hidden, heads, inter, _ = MODELS[name]
    cfg = transformers.BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=SEQ, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, attn_implementation=attn)
    torch.manual_seed(0)
    with torch.device("cuda"):  # initialise on the GPU: seconds faster for BERT-large
        model = transformers.BertForMaskedLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    return model, opt


_TEXT = None


def mlm_batch(batch, step):
    """[batch, SEQ] token ids from stdlib source bytes, 15% replaced by [MASK] with labels."""
    global _TEXT
    if _TEXT is None:
        root = sysconfig.get_paths()["stdlib"]
        chunks, total = [], 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests", "__pycache__"))
            for f in sorted(filenames):
                if f.endswith(".py"):
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        data = fh.read()
                    chunks.append(data)
                    total += len(data)
            if total > 8_000_000:
                break
        _TEXT = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(step)
    starts = torch.randint(0, _TEXT.numel() - SEQ, (batch,), generator=g)
    ids = torch.stack([_TEXT[s:s + SEQ] for s in starts.tolist()]) + 1000  # bytes -> ids 1000..1255
    ids[:, 0] = 101  # [CLS]
    masked = torch.rand(batch, SEQ, generator=g) < 0.15
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    ids = torch.where(masked, torch.full_like(ids, 103), ids)  # [MASK]
    return ids.cuda(non_blocking=True), labels.cuda(non_blocking=True)


def train_step(model, opt, ids, labels):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def apply_variant(model, variant):
    if variant != "stock":
        return membit.patch(model, dropout=variant)
    return None


def measure(model, opt, variant, batch, steps, warmup, step0):
    rec = apply_variant(model, variant)
    try:
        batches = [mlm_batch(batch, step0 + i) for i in range(warmup + steps)]
        for i in range(warmup):
            train_step(model, opt, *batches[i])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            train_step(model, opt, *batches[warmup + i])
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return {"peak_allocated": torch.cuda.max_memory_allocated(), "peak_reserved": torch.cuda.max_memory_reserved(),
                "step_ms": times}
    finally:
        if rec is not None:
            membit.unpatch(model)


def run_timings(models, attns, steps, warmup, rounds, log, deadline):
    out = []
    for name in models:
        for attn in attns:
            if time.time() > deadline:
                log(f"skip {name} {attn}: time budget spent")
                out.append({"model": name, "attn": attn, "skipped": "time budget"})
                continue
            batch = MODELS[name][4]
            model, opt = build(name, attn)
            per = {v: {"peak_allocated": 0, "peak_reserved": 0, "step_ms": []} for v in VARIANTS}
            for r in range(rounds):
                for v in VARIANTS:
                    m = measure(model, opt, v, batch, steps, warmup, step0=1000 * r)
                    per[v]["peak_allocated"] = max(per[v]["peak_allocated"], m["peak_allocated"])
                    per[v]["peak_reserved"] = max(per[v]["peak_reserved"], m["peak_reserved"])
                    per[v]["step_ms"] += m["step_ms"]
            base = per["stock"]
            for v in VARIANTS:
                d = per[v]
                med = statistics.median(d["step_ms"])
                row = {"model": name, "attn": attn, "variant": v, "batch": batch, "seq": SEQ,
                       "peak_allocated": d["peak_allocated"], "peak_reserved": d["peak_reserved"],
                       "step_ms_median": med, "step_ms_all": d["step_ms"], "samples_per_s": batch / (med / 1e3),
                       "peak_vs_stock": d["peak_allocated"] / base["peak_allocated"] - 1,
                       "step_vs_stock": med / statistics.median(base["step_ms"]) - 1}
                out.append(row)
                log(f"{name:10s} {attn:5s} {v:9s} b{batch:<3d} peak {row['peak_allocated'] / 2**30:6.2f} GiB "
                    f"({row['peak_vs_stock']:+.1%}) step {med:7.2f} ms ({row['step_vs_stock']:+.1%}) "
                    f"{row['samples_per_s']:7.1f} samples/s")
            del model, opt
            gc.collect()
            torch.cuda.empty_cache()
    return out


# -- max batch: bisection on OOM, one fresh process per (model, attn, variant) -------------------

def _oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e)


def probe_max(name, attn, variant, lo, cap):
    model, opt = build(name, attn)
    apply_variant(model, variant)
    train_step(model, opt, *mlm_batch(2, 0))  # optimizer state exists before any probe

    def fits(b):
        ok = True
        try:
            train_step(model, opt, *mlm_batch(b, b))
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            if not _oom(e):
                raise
            ok = False
        opt.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        return ok

    probes = []
    good, bad = 0, None
    b = lo
    while b <= cap:  # grow by 1.5x until the first OOM
        ok = fits(b)
        probes.append((b, ok))
        if not ok:
            bad = b
            break
        good, b = b, int(b * 1.5) + 1
    if bad is None:
        return {"max_batch": good, "probes": probes, "capped": True}
    while bad - good > 1:
        mid = (good + bad) // 2
        ok = fits(mid)
        probes.append((mid, ok))
        good, bad = (mid, bad) if ok else (good, mid)
    return {"max_batch": good, "probes": probes, "capped": False}


def probe_one(name, attn, variant, batch):
    model, opt = build(name, attn)
    apply_variant(model, variant)
    train_step(model, opt, *mlm_batch(2, 0))
    torch.cuda.reset_peak_memory_stats()
    try:
        train_step(model, opt, *mlm_batch(batch, 1))
        torch.cuda.synchronize()
        return {"fits": True, "peak_allocated": torch.cuda.max_memory_allocated()}
    except Exception as e:  # noqa: BLE001
        if not _oom(e):
            raise
        return {"fits": False, "peak_allocated": None}


def _child(args_list, timeout):
    cmd = [sys.executable, os.path.abspath(__file__)] + args_list
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout)[-2000:]}
    return json.loads(lines[-1])


def run_max_batch(models, attns, lo, cap, log, deadline):
    out = []
    for name in models:
        for attn in attns:
            found = {}
            for v in VARIANTS:
                if time.time() > deadline:
                    log(f"skip max batch {name} {attn} {v}: time budget spent")
                    continue
                t0 = time.time()
                r = _child(["--probe-max", name, attn, v, str(lo), str(cap)], timeout=max(30, deadline - time.time()))
                r.update({"model": name, "attn": attn, "variant": v, "seconds": round(time.time() - t0, 1)})
                out.append(r)
                found[v] = r.get("max_batch")
                log(f"max batch {name} {attn} {v}: {r.get('max_batch')} {r.get('error', '')[:300]}")
            # The configuration stock cannot fit: packed's max batch, each in a fresh process.
            b = found.get("packed")
            if b and found.get("stock") and b > found["stock"] and time.time() < deadline:
                for v in ("stock", "packed"):
                    r = _child(["--probe-one", name, attn, v, str(b)], timeout=max(30, deadline - time.time()))
                    r.update({"model": name, "attn": attn, "variant": v, "batch": b, "check": "fresh process"})
                    out.append(r)
                    log(f"check {name} {attn} {v} at batch {b}: fits={r.get('fits')} {r.get('error', '')[:300]}")
    return out


def environment():
    import transformers

    return {"gpu": torch.cuda.get_device_name(0), "total_bytes": torch.cuda.get_device_properties(0).total_memory,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "triton": __import__("triton").__version__ if membit.ops.utils.triton_available() else None,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": benchenv.commit()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tinybert,bert-base,bert-large")
    ap.add_argument("--attn", default="eager,sdpa")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="stock/packed/recompute alternate this many times")
    ap.add_argument("--max-batch-models", default="bert-large")
    ap.add_argument("--max-batch-cap", type=int, default=1024)
    ap.add_argument("--budget-s", type=float, default=520, help="stop starting new work after this many seconds")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--probe-max", nargs=5, metavar=("MODEL", "ATTN", "VARIANT", "LO", "CAP"), help=argparse.SUPPRESS)
    ap.add_argument("--probe-one", nargs=4, metavar=("MODEL", "ATTN", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.probe_max:
        name, attn, v, lo, cap = args.probe_max
        print(json.dumps(probe_max(name, attn, v, int(lo), int(cap))), flush=True)
        return
    if args.probe_one:
        name, attn, v, b = args.probe_one
        print(json.dumps(probe_one(name, attn, v, int(b))), flush=True)
        return

    import membit.ops.utils  # noqa: F401

    t0 = time.time()
    deadline = t0 + args.budget_s

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    if args.smoke:
        args.models, args.attn, args.steps, args.warmup, args.rounds = "tinybert", "eager", 2, 1, 1
        args.max_batch_models, args.max_batch_cap = "tinybert", 100
    env = environment()
    log(f"{env['gpu']} torch {env['torch']} transformers {env['transformers']}")
    models, attns = args.models.split(","), args.attn.split(",")
    timings = run_timings(models, attns, args.steps, args.warmup, args.rounds, log, deadline)
    mb_models = [m for m in args.max_batch_models.split(",") if m]
    max_batch = run_max_batch(mb_models, attns, MODELS[mb_models[0]][4] if mb_models else 1,
                              args.max_batch_cap, log, deadline) if mb_models else []
    result = {"schema": "membit.bench.models/1", "env": env, "seq": SEQ, "autocast": "bf16", "optimizer": "AdamW",
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
              "method": "peak = torch.cuda.max_memory_allocated over the timed steps; step time = median of CUDA-event "
                        "timed steps; max batch = bisection on CUDA OOM after 1.5x growth, one fresh process per variant",
              "timings": timings, "max_batch": max_batch, "elapsed_s": round(time.time() - t0, 1)}
    slug = env["gpu"].replace(" ", "-")
    path = args.out or os.path.join(RESULTS, f"models{'_smoke' if args.smoke else ''}_{slug}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)

    print("\nmodel      attn  variant   batch  peak GiB   vs stock   step ms   vs stock  samples/s")
    for r in timings:
        if "variant" in r:
            print(f"{r['model']:10s} {r['attn']:5s} {r['variant']:9s} {r['batch']:5d} {r['peak_allocated'] / 2**30:8.2f} "
                  f"{r['peak_vs_stock']:+9.1%} {r['step_ms_median']:9.2f} {r['step_vs_stock']:+9.1%} {r['samples_per_s']:9.1f}")
    for r in max_batch:
        if "max_batch" in r:
            print(f"max batch {r['model']} {r['attn']} {r['variant']}: {r['max_batch']}")
        elif "fits" in r:
            print(f"fresh-process check {r['model']} {r['attn']} {r['variant']} batch {r['batch']}: fits={r['fits']}")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
