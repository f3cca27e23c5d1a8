"""What the memory advisor's levers save, measured: baseline vs each lever vs all combined.

Every run goes through the profiling harness exactly as "Profile and Compare Variants" runs it
(`python -m membit.profile --variant V`), one fresh process per run, the same steps each:

  baseline, sdpa, checkpoint, bf16, sdpa+checkpoint+bf16

on the GPT sample (12 layers, 768 wide, 12 heads, sequence 1024, batch 16, eager attention with
attention dropout) and the HF BERT sample (samples/bert_mlm.py --attn eager, base 32 x 512 and
large 16 x 512; needs transformers). Collected from each report: peak allocated (CUDA), the median
step time, samples/s, bytes saved for backward, and how each lever was applied.

The GPT sample's attention is written in its own code: its sdpa variants run the editor's
rewrite of the file, which the team generates beforehand with the real CLI and passes here:

    mkdir -p /tmp/gpt-sdpa && cp samples/gpt_tiny.py /tmp/gpt-sdpa/ \\
      && (cd /tmp/gpt-sdpa && node "$OLDPWD/dist/cli.js" convert . --lever sdpa)
    python kernels/benchmarks/bench_advisor.py --gpt-sdpa-overlay /tmp/gpt-sdpa/gpt_tiny.py

writes kernels/benchmarks/results/advisor_<gpu>.json (device, torch/transformers versions, date,
argv, every run) and prints a Markdown table. --smoke runs the same code path on CPU at tiny
sizes in a few minutes (BERT only where transformers is installed), so that the GPU run cannot
fail on a typo; its results go to a temporary folder unless --out-dir is given.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import benchenv  # noqa: E402  (beside this script: GPU, versions, date and commit of a result)

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
BERT = os.path.join(REPO, "samples", "bert_mlm.py")

VARIANTS = ("baseline", "sdpa", "checkpoint", "bf16", "sdpa+checkpoint+bf16")

# case: (script, args, what one fp32 eager step costs on an H200, in seconds: for the time estimate)
CASES = {
    "gpt": (GPT, ["--steps", "100", "--batch-size", "16", "--seq-len", "1024", "--n-layer", "12", "--n-embd", "768",
                  "--n-head", "12", "--data-bytes", "4000000", "--device", "cuda"], 0.35),
    "bert-base": (BERT, ["--size", "base", "--attn", "eager", "--batch-size", "32", "--seq-len", "512",
                         "--steps", "100", "--device", "cuda"], 0.3),
    "bert-large": (BERT, ["--size", "large", "--attn", "eager", "--batch-size", "16", "--seq-len", "512",
                          "--steps", "100", "--device", "cuda"], 0.45),
}
SMOKE = {
    "gpt": (GPT, ["--steps", "20", "--batch-size", "2", "--seq-len", "64", "--n-layer", "2", "--n-embd", "32",
                  "--n-head", "2", "--data-bytes", "100000", "--dropout", "0.1", "--device", "cpu"], 0.05),
    "bert-tiny": (BERT, ["--size", "tiny", "--attn", "eager", "--batch-size", "2", "--seq-len", "64",
                         "--steps", "20", "--device", "cpu"], 0.3),
}
# Per fresh process on an H200 beyond the steps: interpreter, torch and transformers imports,
# the sample's text, the model, CUDA's context, the report.
PROCESS_OVERHEAD_S = 20.0
BUDGET_S = 8 * 60


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, e.get("PYTHONPATH")) if x)
    e["PYTHONUNBUFFERED"] = "1"
    e["MEMBIT_PROGRESS"] = "0"
    return e


def has_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def versions():
    import torch

    out = {"python": platform.python_version(), "torch": str(torch.__version__), "transformers": None}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    return out


def device_name(smoke):
    import torch

    if smoke or not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name(0)


def slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def check_overlay(path):
    if not path:
        raise SystemExit(
            "bench_advisor: the GPT sample's sdpa variants run the editor's rewrite of samples/gpt_tiny.py, and "
            "--gpt-sdpa-overlay FILE was not given. Make it with the real CLI first:\n"
            "  mkdir -p /tmp/gpt-sdpa && cp samples/gpt_tiny.py /tmp/gpt-sdpa/ && "
            "(cd /tmp/gpt-sdpa && node \"$OLDPWD/dist/cli.js\" convert . --lever sdpa)\n"
            "then pass --gpt-sdpa-overlay /tmp/gpt-sdpa/gpt_tiny.py (or leave the sdpa variants out with --variants).")
    if not os.path.isfile(path):
        raise SystemExit(f"bench_advisor: --gpt-sdpa-overlay {path}: no such file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "scaled_dot_product_attention" not in text:
        raise SystemExit(f"bench_advisor: {path} has no scaled_dot_product_attention call: it is not the sdpa rewrite "
                         "of samples/gpt_tiny.py (membit convert --lever sdpa)")
    return os.path.abspath(path)


def profile(case, script, args, variant, tmp, steps, warmup, overlay, timeout):
    out = os.path.join(tmp, f"{case}-{variant.replace('+', '_')}.json")
    cmd = [sys.executable, "-m", "membit.profile", "--out", out, "--variant", variant, "--steps", str(steps),
           "--warmup", str(warmup), "--root", REPO, "--no-allocator-history", "--nvml-interval", "0"]
    if overlay and "sdpa" in variant.split("+"):
        cmd += ["--overlay", f"{GPT}={overlay}"]
    cmd += ["--", script, *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout} s"
    seconds = time.perf_counter() - t0
    row = {"case": case, "variant": variant, "exit_code": rc, "seconds": round(seconds, 1), "status": "error",
           "error": None, "peak_allocated": None, "tracked_at_peak": None, "step_time_s": None, "samples_per_s": None,
           "saved_bytes": None, "batch_size": None, "levers": [], "argv": cmd[1:]}
    if not os.path.exists(out):
        row["error"] = (err or "")[-2000:] or "no report"
        return row
    with open(out, encoding="utf-8") as f:
        rep = json.load(f)
    s, run = rep["summary"], rep["run"]
    row.update(status=run["status"], error=run["error"], peak_allocated=s["peak_allocated"],
               tracked_at_peak=s["tracked_at_peak"], step_time_s=s["step_time_s"], samples_per_s=s["samples_per_s"],
               saved_bytes=s["saved_bytes"], batch_size=s["batch_size"], levers=run.get("levers", []),
               device=run["device"]["name"])
    return row


def fmt_bytes(n):
    if n is None:
        return "—"
    for size, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def pct(v, base):
    if v is None or not base:
        return "—"
    x = (v - base) / base * 100
    return f"{'+' if x > 0 else '−' if x < 0 else '±'}{abs(x):.1f}%"


def markdown(rows, cpu):
    peak_name = "tracked at peak (CPU)" if cpu else "peak allocated"
    out = [f"| case | variant | status | {peak_name} | Δpeak | step time | Δstep | samples/s | Δsamples/s |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    base = {}
    for r in rows:
        peak = r["tracked_at_peak"] if cpu else r["peak_allocated"]
        if r["variant"] == "baseline":
            base[r["case"]] = (peak, r["step_time_s"], r["samples_per_s"])
        b = base.get(r["case"], (None, None, None))
        step = "—" if r["step_time_s"] is None else f"{r['step_time_s'] * 1000:.1f} ms"
        sps = "—" if r["samples_per_s"] is None else f"{r['samples_per_s']:.1f}"
        out.append(f"| {r['case']} | {r['variant']} | {r['status']} | {fmt_bytes(peak)} | {pct(peak, b[0])} | {step} | "
                   f"{pct(r['step_time_s'], b[1])} | {sps} | {pct(r['samples_per_s'], b[2])} |")
    notes = [f"- {r['case']} {r['variant']}: {lv['lever']}: {lv['how']}" for r in rows for lv in r["levers"]]
    errors = [f"- {r['case']} {r['variant']}: {(r['error'] or '').strip().splitlines()[-1] if r['error'] else r['status']}"
              for r in rows if r["status"] != "ok"]
    return "\n".join(out + ([""] + notes if notes else []) + (["", "Failed runs:"] + errors if errors else []))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpt-sdpa-overlay", help="samples/gpt_tiny.py rewritten by `membit convert --lever sdpa`")
    ap.add_argument("--cases", help="comma-separated cases (default: all; with --smoke: gpt, and bert-tiny where "
                                    "transformers is installed)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated (default {','.join(VARIANTS)})")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per run (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="steps before profiling (default 2)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds before one run counts as failed")
    ap.add_argument("--out-dir", default=None, help="where advisor_<gpu>.json goes (default: benchmarks/results; "
                                                    "with --smoke a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the whole path in minutes")
    a = ap.parse_args(argv)

    table = SMOKE if a.smoke else CASES
    if a.cases:
        cases = [c.strip() for c in a.cases.split(",") if c.strip()]
        bad = [c for c in cases if c not in table]
        if bad:
            raise SystemExit(f"bench_advisor: unknown case(s) {bad}; choose from {sorted(table)}")
    else:
        cases = list(table)
    bert = [c for c in cases if table[c][0] == BERT]
    if bert and not has_transformers():
        if a.smoke and not a.cases:
            print("bench_advisor: transformers is not installed: the BERT case is left out of the smoke run", flush=True)
            cases = [c for c in cases if c not in bert]
        else:
            raise SystemExit(f"bench_advisor: {', '.join(bert)} need the transformers package (pip install transformers)")
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    sys.path.insert(0, KERNELS)
    from membit.profile.levers import VariantError, canonical

    try:
        variants = [canonical(v) for v in variants]
    except VariantError as e:
        raise SystemExit(f"bench_advisor: --variants: {e}")
    overlay = None
    if "gpt" in cases and any("sdpa" in v.split("+") for v in variants):
        overlay = check_overlay(a.gpt_sdpa_overlay)
    if not a.smoke:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench_advisor: no CUDA device: this benchmark measures GPU memory (use --smoke on CPU)")

    runs = [(c, v) for c in cases for v in variants]
    steps_per_run = a.steps + a.warmup
    estimate = sum(PROCESS_OVERHEAD_S + steps_per_run * table[c][2] * (1.4 if "checkpoint" in v else 1.0)
                   for c, v in runs)
    print(f"bench_advisor: {len(runs)} runs ({', '.join(cases)} x {', '.join(variants)}), {a.warmup} warmup + "
          f"{a.steps} profiled steps each; estimated {estimate / 60:.1f} min on an H200"
          f"{' (the smoke run takes what CPU takes)' if a.smoke else ''} (budget {BUDGET_S // 60} min)", flush=True)

    dev = device_name(a.smoke)
    out_dir = a.out_dir or (tempfile.mkdtemp(prefix="membit-advisor-") if a.smoke else os.path.join(HERE, "results"))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="membit-advisor-runs-") as tmp:
        for case, variant in runs:
            script, args, _ = table[case]
            row = profile(case, script, args, variant, tmp, a.steps, a.warmup, overlay if case == "gpt" else None,
                          a.timeout)
            rows.append(row)
            peak = row["tracked_at_peak"] if a.smoke else row["peak_allocated"]
            print(f"  {case:10s} {variant:22s} {row['status']:6s} peak {fmt_bytes(peak):>10s}  "
                  f"step {row['step_time_s'] if row['step_time_s'] is not None else '—'} s  {row['seconds']} s", flush=True)
    elapsed = time.perf_counter() - t0

    doc = {
        "schema": "membit.bench.advisor/1",
        "device": dev,
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": benchenv.commit(),
        "argv": sys.argv if argv is None else ["bench_advisor.py", *argv],
        "smoke": a.smoke,
        "steps": a.steps,
        "warmup": a.warmup,
        "cases": {c: {"script": os.path.relpath(table[c][0], REPO), "args": table[c][1]} for c in cases},
        "gpt_sdpa_overlay": overlay,
        "elapsed_s": round(elapsed, 1),
        "runs": rows,
    }
    name = f"advisor_{slug(dev) if not a.smoke else 'cpu-smoke'}.json"
    path = os.path.join(out_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print()
    print(markdown(rows, a.smoke))
    print()
    print(f"bench_advisor: {elapsed / 60:.1f} min; wrote {path}")
    failed = [r for r in rows if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
