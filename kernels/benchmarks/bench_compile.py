"""Membit's dropout under torch.compile, its eager host cost on SDPA models, and the harness on a compiled model.

Every measurement runs in a fresh process (a model kept alive by an earlier variant pollutes
max_memory_allocated), one after another on the same GPU, in this order of priority:

  gpt6-compiled      6-layer GPT (samples/gpt_tiny.py: d 768, 12 heads, eager attention with
                     attention dropout, vocab 256), 8 x 1024 tokens, bf16 autocast, AdamW,
                     torch.compile: stock vs membit.patch(dropout="packed") vs "recompute",
                     the latter two with MEMBIT_COMPILE_DROPOUT=fused (membit.patch alone keeps
                     torch's dropout inside torch.compile)
  harness            samples/gpt_compiled.py --bf16 at the same size: plain vs under
                     python -m membit.profile (peak equality and step-time overhead)
  sdpa-eager         HF BERT-large SDPA b16 s512 and HF GPT-2 medium SDPA b8 s1024, eager, bf16
                     autocast, AdamW: stock vs packed vs recompute (step time); sdpa-bert and
                     sdpa-gpt2m run one of the two
  gpt2m-compiled     HF GPT-2 medium, eager attention, b8 s1024, bf16 autocast, AdamW,
                     torch.compile: stock vs packed vs recompute (fused, as above)
  gpt6-compiled-op   the 6-layer GPT with the previous formulation under compile (the opaque
                     custom op, MEMBIT_COMPILE_DROPOUT=op), for reference

Inputs are real text (the Python standard library's source bytes). Per run: peak allocated
over the timed steps (after warmup, which includes compilation), the median step time of the
timed steps (each step synchronised), samples/s from it, and dynamo's graph-break count.

    python benchmarks/bench_compile.py --out results/compile.json [--cases gpt6-compiled,harness] [--budget-s 500]
    python benchmarks/bench_compile.py --cases sdpa-bert --rounds 3 [--baseline-kernels ../other/kernels]
    python benchmarks/bench_compile.py --smoke            # CPU, tiny sizes, aot_eager: checks the plumbing
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
# MEMBIT_BENCH_KERNELS: the membit package of another checkout (--baseline-kernels), for a
# child that measures it beside this checkout's.
sys.path.insert(0, os.environ.get("MEMBIT_BENCH_KERNELS") or KERNELS)

CASES = ("gpt6-compiled", "harness", "sdpa-eager", "gpt2m-compiled", "gpt6-compiled-op", "sdpa-bert", "sdpa-gpt2m")


# -- one measurement, in its own process ------------------------------------------------------

def _stdlib_bytes(n: int) -> bytes:
    root = sysconfig.get_paths()["stdlib"]
    out, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests", "__pycache__"))
        for f in sorted(filenames):
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    data = fh.read()
                out.append(data)
                total += len(data)
                if total >= n:
                    return b"".join(out)[:n]
    return b"".join(out)


def _batches(batch, seq, vocab, device, count=4):
    import torch

    raw = _stdlib_bytes(batch * (seq + 1) * count + 1)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long() % vocab
    out = []
    for i in range(count):
        chunk = data[i * batch * (seq + 1):(i + 1) * batch * (seq + 1)].view(batch, seq + 1)
        out.append((chunk[:, :-1].contiguous().to(device), chunk[:, 1:].contiguous().to(device)))
    return out


def _model(model_name, device, smoke):
    import torch

    if model_name == "gpt6":
        sys.path.insert(0, os.path.join(REPO, "samples"))
        import gpt_tiny

        cfg = gpt_tiny.GPTConfig(block_size=1024, n_layer=6, n_head=12, n_embd=768, dropout=0.1)
        if smoke:
            cfg = gpt_tiny.GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
        torch.manual_seed(0)
        model = gpt_tiny.GPT(cfg).to(device)

        def loss_fn(m, x, y):
            return m(x, y)[1]

        return model, loss_fn, 256
    import transformers

    if model_name.startswith("gpt2m"):
        attn = "sdpa" if model_name.endswith("sdpa") else "eager"
        kw = dict(n_layer=24, n_embd=1024, n_head=16) if not smoke else dict(n_layer=2, n_embd=64, n_head=2)
        cfg = transformers.GPT2Config(n_positions=1024, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                                      attn_implementation=attn, **kw)
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(cfg).to(device)

        def loss_fn(m, x, y):
            return m(input_ids=x, labels=x).loss

        return model, loss_fn, cfg.vocab_size
    if model_name == "bertl-sdpa":
        kw = dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
        if smoke:
            kw = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
        cfg = transformers.BertConfig(vocab_size=30522, max_position_embeddings=512, hidden_dropout_prob=0.1,
                                      attention_probs_dropout_prob=0.1, attn_implementation="sdpa", **kw)
        torch.manual_seed(0)
        model = transformers.BertForMaskedLM(cfg).to(device)

        def loss_fn(m, x, y):
            labels = torch.where(torch.rand(x.shape, device=x.device) < 0.15, y, torch.full_like(y, -100))
            return m(input_ids=x, labels=labels).loss

        return model, loss_fn, cfg.vocab_size
    raise SystemExit(f"unknown model {model_name}")


def measure(model_name, variant, compiled, batch, seq, steps, warmup, smoke):
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    model, loss_fn, vocab = _model(model_name, device, smoke)
    model.train()
    if variant in ("packed", "recompute"):
        import membit

        membit.patch(model, dropout=variant)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    run_model = torch.compile(model, backend="aot_eager" if smoke else "inductor") if compiled else model
    batches = _batches(batch, seq, vocab, device)
    dtype = torch.bfloat16

    def step(i):
        x, y = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=dtype):
            loss = loss_fn(run_model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_compile = time.perf_counter()
    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_compile = time.perf_counter() - t_compile
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step(warmup + i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    out = {"model": model_name, "variant": variant, "compiled": compiled, "batch": batch, "seq": seq,
           "steps": steps, "warmup": warmup, "warmup_s": round(t_compile, 1),
           "step_ms_median": round(statistics.median(times), 3), "step_ms_min": round(min(times), 3),
           "step_ms_max": round(max(times), 3),
           "samples_per_s": round(batch / (statistics.median(times) / 1000), 2),
           "peak_allocated": int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
           "loss": float(loss.item())}
    if compiled:
        from torch._dynamo.utils import counters

        out["graph_breaks"] = int(sum(counters["graph_break"].values()))
        out["unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
    return out


# -- the harness on a compiled model ------------------------------------------------------------

def _gpt_cmd(smoke, steps):
    size = (["--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--seq-len", "64", "--batch-size", "2",
             "--backend", "aot_eager", "--device", "cpu"] if smoke else
            ["--n-layer", "6", "--n-embd", "768", "--n-head", "12", "--seq-len", "1024", "--batch-size", "8"])
    return ["samples/gpt_compiled.py", "--steps", str(steps), "--bf16", "--timing", "--eval-batches", "0",
            "--data-bytes", "2000000", *size]


def _step_ms(stdout, skip):
    ms = []
    for line in stdout.splitlines():
        if line.startswith("step_ms "):
            _, k, v = line.split()
            if int(k) > skip:
                ms.append(float(v))
    return ms


# Profiled runs beside the plain one: the default harness, then each costly part switched off,
# so the overhead is split between module timing, the allocator's history and the rest (the
# saved-tensor hooks).
HARNESS_FLAGS = {"default": [], "no-module-timing": ["--no-module-timing"],
                 "no-allocator-history": ["--no-allocator-history"],
                 "neither": ["--no-module-timing", "--no-allocator-history"]}


def harness_case(smoke, log, timeout, flag_sets=("default",)):
    """Plain run vs profiled runs of the compiled sample, each in a fresh process."""
    env = dict(os.environ, PYTHONPATH=KERNELS, PYTHONUNBUFFERED="1")
    warm, prof = (1, 2) if smoke else (6, 20)
    rows = []
    t = time.time()
    plain = subprocess.run([sys.executable, *_gpt_cmd(smoke, warm + prof)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=timeout)
    if plain.returncode != 0:
        return [{"case": "harness", "error": plain.stderr[-2000:]}]
    peak = [int(x.split()[1]) for x in plain.stdout.splitlines() if x.startswith("max_memory_allocated ")]
    ms = _step_ms(plain.stdout, warm)
    rows.append({"run": "plain", "peak_allocated": peak[0] if peak else None,
                 "step_ms_median": round(statistics.median(ms), 3) if ms else None, "wall_s": round(time.time() - t, 1)})
    log(f"  harness plain: {rows[-1]}")
    for name in flag_sets:
        rows.append(_harness_run(name, smoke, env, warm, prof, timeout, log))
    return rows


def _harness_run(name, smoke, env, warm, prof, timeout, log):
    flags = HARNESS_FLAGS[name]
    suffix = "" if name == "default" else "_" + name
    out = os.path.join(os.environ.get("OUT", "/tmp"), f"harness_compiled{suffix}.json")
    t = time.time()
    prof_run = subprocess.run([sys.executable, "-m", "membit.profile", "--out", out, "--warmup", str(warm),
                               "--steps", str(prof), *flags, "--", *_gpt_cmd(smoke, warm + prof + 5)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    ms = _step_ms(prof_run.stdout, warm)
    row = {"run": "harness", "flags": flags, "returncode": prof_run.returncode,
           "step_ms_median": round(statistics.median(ms), 3) if ms else None, "wall_s": round(time.time() - t, 1)}
    try:
        with open(out, encoding="utf-8") as f:
            rep = json.load(f)
        s = rep["summary"]
        comp = rep["run"].get("compile") or {}
        row.update({"status": rep["run"]["status"], "peak_allocated": s["peak_allocated"],
                    "unattributed_at_peak": s["unattributed_at_peak"], "saved_bytes": s["saved_bytes"],
                    "mask_bytes": s["mask_bytes"], "graph_breaks": comp.get("graph_breaks"),
                    "graphs": comp.get("graphs"), "per_graph": comp.get("per_graph"),
                    "top_lines": [{k: e.get(k) for k in ("line", "module", "saved_bytes", "mask_bytes", "compiled_bytes", "graph_only_bytes")}
                                  for e in rep["lines"][:8]],
                    "error": (rep["run"]["error"] or "")[-1500:] or None})
    except (OSError, ValueError, KeyError) as e:
        row["error"] = f"{e}: {prof_run.stderr[-1500:]}"
    log(f"  harness profiled: { {k: v for k, v in row.items() if k not in ('per_graph', 'top_lines')} }")
    return row


# -- driver -------------------------------------------------------------------------------------

def environment():
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": os.environ.get("MEMBIT_COMMIT", "unknown"), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


# Compiled packed/recompute rows measure the fused formulation: membit.patch alone keeps torch's
# dropout inside torch.compile (MEMBIT_COMPILE_DROPOUT defaults to stock).
FUSED = {"MEMBIT_COMPILE_DROPOUT": "fused"}


def plan(cases, smoke, rounds=1, baseline=None):
    steps, warmup = (3, 2) if smoke else (20, 3)
    b_gpt, s_gpt = (2, 64) if smoke else (8, 1024)
    b_bert, s_bert = (2, 64) if smoke else (16, 512)
    out = []
    for case in cases:
        if case == "gpt6-compiled":
            out += [("gpt6", v, True, b_gpt, s_gpt, steps, warmup, FUSED if v != "stock" else {}) for v in ("stock", "packed", "recompute")]
        elif case == "gpt6-compiled-op":
            out += [("gpt6", v, True, b_gpt, s_gpt, steps, warmup, {"MEMBIT_COMPILE_DROPOUT": "op"}) for v in ("packed",)]
        elif case == "gpt2m-compiled":
            out += [("gpt2m-eager", v, True, b_gpt, s_gpt, steps, warmup, FUSED if v != "stock" else {}) for v in ("stock", "packed", "recompute")]
        elif case in ("sdpa-eager", "sdpa-bert", "sdpa-gpt2m"):
            models = {"sdpa-eager": (("bertl-sdpa", b_bert, s_bert), ("gpt2m-sdpa", b_gpt, s_gpt)),
                      "sdpa-bert": (("bertl-sdpa", b_bert, s_bert),),
                      "sdpa-gpt2m": (("gpt2m-sdpa", b_gpt, s_gpt),)}[case]
            # Rounds interleave the variants, so a drift of the GPU's clocks over the run
            # lands on every variant alike.
            for _ in range(rounds):
                for m, b, s in models:
                    out += [(m, v, False, b, s, steps + 5, warmup, {}) for v in ("stock", "packed", "recompute")]
                    if baseline:
                        out.append((m, "packed", False, b, s, steps + 5, warmup, {"MEMBIT_BENCH_KERNELS": baseline}))
        elif case == "harness":
            out.append(("harness",))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--budget-s", type=float, default=500, help="start no new measurement after this many seconds")
    ap.add_argument("--timeout-s", type=float, default=300, help="per measurement")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="sdpa cases: interleaved rounds of every variant")
    ap.add_argument("--baseline-kernels", default=None,
                    help="sdpa cases: also measure packed with the membit package of this kernels/ folder")
    ap.add_argument("--harness-flags", default="default",
                    help="harness case: comma-separated profiled runs, from " + ", ".join(HARNESS_FLAGS))
    ap.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        m, v, c, b, s, st, w, smoke = args.child
        print("@@result " + json.dumps(measure(m, v, c == "1", int(b), int(s), int(st), int(w), smoke == "1")), flush=True)
        return 0

    start = time.time()
    env = environment()
    print(json.dumps(env), flush=True)
    results = {"environment": env, "runs": [], "skipped": []}

    def log(msg):
        print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)

    def save():
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            tmp = args.out + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
            os.replace(tmp, args.out)

    baseline = os.path.abspath(args.baseline_kernels) if args.baseline_kernels else None
    for job in plan([c for c in args.cases.split(",") if c], args.smoke, args.rounds, baseline):
        if time.time() - start > args.budget_s:
            results["skipped"].append(list(job[:3]))
            log(f"budget spent: skipped {job[:3]}")
            continue
        if job[0] == "harness":
            for row in harness_case(args.smoke, log, args.timeout_s, [f for f in args.harness_flags.split(",") if f]):
                results["runs"].append(dict(row, case="harness"))
            save()
            continue
        m, v, c, b, s, st, w, extra = job
        t = time.time()
        child_env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", m, v, "1" if c else "0",
                                   str(b), str(s), str(st), str(w), "1" if args.smoke else "0"],
                                  env=child_env, capture_output=True, text=True, timeout=args.timeout_s)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("@@result ")]
            row = json.loads(lines[-1][9:]) if lines else {"model": m, "variant": v, "compiled": c,
                                                          "error": proc.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            row = {"model": m, "variant": v, "compiled": c, "error": f"timed out after {args.timeout_s}s"}
        row.update(extra and {"env": extra} or {})
        row["wall_s"] = round(time.time() - t, 1)
        results["runs"].append(row)
        log(f"{m} {v} compiled={c}: " + json.dumps({k: row.get(k) for k in ("step_ms_median", "peak_allocated", "graph_breaks", "warmup_s", "wall_s", "error")}))
        save()

    # Table: against the stock run of the same model and mode.
    print("\nmodel | variant | compiled | median step ms | peak GiB | vs stock step | vs stock peak | graph breaks")
    base = {(r["model"], r.get("compiled")): r for r in results["runs"] if r.get("variant") == "stock" and "error" not in r}
    for r in results["runs"]:
        if "model" not in r:
            continue
        if "error" in r:
            print(f"{r['model']} | {r['variant']} | {r.get('compiled')} | ERROR {r['error'][-300:]}")
            continue
        b = base.get((r["model"], r["compiled"]))
        ds = f"{100 * (r['step_ms_median'] / b['step_ms_median'] - 1):+.1f}%" if b else "-"
        dp = (f"{100 * (r['peak_allocated'] / b['peak_allocated'] - 1):+.1f}%"
              if b and r["peak_allocated"] and b["peak_allocated"] else "-")
        peak = f"{r['peak_allocated'] / 2**30:.2f}" if r["peak_allocated"] else "-"
        env = r.get("env") or {}
        tag = (" (op)" if env.get("MEMBIT_COMPILE_DROPOUT") == "op" else " (baseline)" if env.get("MEMBIT_BENCH_KERNELS")
               else "")
        print(f"{r['model']} | {r['variant']}{tag} | {r['compiled']} | {r['step_ms_median']} | {peak} | {ds} | {dp} | {r.get('graph_breaks', '-')}")
    for r in results["runs"]:
        if r.get("case") == "harness":
            print("harness:", {k: v for k, v in r.items() if k not in ("per_graph", "top_lines")})
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
