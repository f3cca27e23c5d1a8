"""Does the profiler tell the truth? Its report against independent measurements.

For each case, one run under `python -m membit.profile` and one plain run of the same
script and steps (bench_profile_plain.py), in fresh processes:

  summary.peak_allocated   vs torch.cuda.max_memory_allocated (plain run, same steps)
  summary.params / grads / optimizer_state   vs sizes read off the model and optimizer
  summary.saved_bytes      vs a plain saved-tensor count (unique storages per step)

each within 5%. With --categories, BERT-large's split at the peak (params, optimizer state,
grads, activations, the rest) against torch.profiler's memory timeline categories, within 10%.

Cases: the GPT sample, and HF BertForMaskedLM (samples/bert_mlm.py, from config) at seq 512,
bf16 autocast, eager attention, AdamW.

    python benchmarks/bench_profile_truth.py [--cases gpt,bert-base,bert-large] [--categories] [--out-dir DIR]
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import benchenv  # noqa: E402  (beside this script: GPU, versions, date and commit of a result)

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
WARMUP, STEPS = 2, 3
CASES = {
    "gpt": ("samples/gpt_tiny.py", ["--steps", "100", "--batch-size", "32", "--seq-len", "256", "--n-layer", "6",
                                    "--n-embd", "384", "--n-head", "6", "--device", "cuda"]),
    "bert-base": ("samples/bert_mlm.py", ["--size", "base", "--attn", "eager", "--bf16", "--batch-size", "32",
                                          "--seq-len", "512", "--steps", "100"]),
    "bert-large": ("samples/bert_mlm.py", ["--size", "large", "--attn", "eager", "--bf16", "--batch-size", "16",
                                           "--seq-len", "512", "--steps", "100"]),
}


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, e.get("PYTHONPATH")) if x)
    e["PYTHONUNBUFFERED"] = "1"
    e["MEMBIT_PROGRESS"] = "0"
    return e


def run(cmd, timeout=600):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {p.returncode}:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def plain(script, args, tmp, *extra):
    out = os.path.join(tmp, "plain.json")
    run([sys.executable, os.path.join(HERE, "bench_profile_plain.py"), "--out", out, "--warmup", str(WARMUP),
         "--steps", str(STEPS), *extra, "--", script, *args])
    with open(out) as f:
        return json.load(f)


def profiled(script, args, tmp, *extra):
    out = os.path.join(tmp, "report.json")
    run([sys.executable, "-m", "membit.profile", "--out", out, "--warmup", str(WARMUP), "--steps", str(STEPS), *extra,
         "--", script, *args])
    with open(out) as f:
        return json.load(f)


def rel(a, b):
    if a is None or b is None:
        return None
    return (a - b) / b if b else (0.0 if a == b else float("inf"))


def compare_case(name, tmp):
    script, args = CASES[name]
    ref = plain(script, args, tmp, "--count-saved")
    rep = profiled(script, args, tmp)
    s = rep["summary"]
    rows = []
    for metric, ours, theirs in [
        ("peak_allocated", s["peak_allocated"], ref["max_memory_allocated"]),
        ("params", s["params"], ref["params"]),
        ("grads", s["grads"], ref["grads"]),
        ("optimizer_state", s["optimizer_state"], ref["optimizer_state"]),
        ("saved_bytes (activations+masks per step)", s["saved_bytes"], ref["saved_bytes"]),
    ]:
        r = rel(ours, theirs)
        rows.append({"metric": metric, "membit": ours, "independent": theirs, "rel_diff": r,
                     "pass": r is not None and abs(r) <= 0.05})
    return {
        "case": name, "script": script, "args": args, "warmup": WARMUP, "steps": STEPS, "rows": rows,
        "report_summary": s, "report_notes": rep["run"]["notes"], "report_status": rep["run"]["status"],
        "peak": {k: rep["peak"][k] for k in ("step", "phase", "replay_bytes")},
        "plain_step_time_s": ref["step_time_s"],
    }, rep


def compare_categories(tmp, rep_large):
    script, args = CASES["bert-large"]
    ref = plain(script, args, tmp, "--profiler-categories")
    cats = ref["profiler_categories"]
    s = rep_large["summary"]
    theirs = {
        "params": cats["parameter"],
        "optimizer_state": cats["optimizer_state"],
        "grads": cats["gradient"],
        "activations+masks": cats["activation"] + cats["autograd_detail"],
        "rest (temporary, input, unknown)": cats["temporary"] + cats["input"] + cats["unknown"],
    }
    ours = {
        "params": s["params_at_peak"] + s["buffers_at_peak"],
        "optimizer_state": s["optimizer_state_at_peak"],
        "grads": s["grads_at_peak"],
        "activations+masks": s["activations_at_peak"] + s["masks_at_peak"],
        "rest (temporary, input, unknown)": s["unattributed_at_peak"],
    }
    peak = s["peak_allocated"]
    rows = []
    for k in theirs:
        r = rel(ours[k], theirs[k])
        share = abs(ours[k] - theirs[k]) / peak
        # A category under 1% of the peak passes on its share of the peak.
        rows.append({"category": k, "membit": ours[k], "torch_profiler": theirs[k], "rel_diff": r,
                     "diff_share_of_peak": share,
                     "pass": (r is not None and abs(r) <= 0.10) or (theirs[k] < 0.01 * peak and share <= 0.01)})
    return {"case": "bert-large", "profiler_peak_total": cats["total"], "membit_peak_allocated": peak,
            "profiler_raw": cats, "profiler_analysis_s": ref["profiler_analysis_s"], "rows": rows}


def device_info():
    import torch

    try:
        import transformers
        tv = transformers.__version__
    except ImportError:
        tv = None
    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "transformers": tv,
            "cuda": torch.version.cuda, "date": datetime.date.today().isoformat(), "commit": benchenv.commit()}


def fmt(x):
    if isinstance(x, int) and x > 10_000:
        return f"{x / 1e9:.3f} GB"
    return str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="gpt,bert-base,bert-large")
    ap.add_argument("--categories", action="store_true", help="also BERT-large vs torch.profiler categories")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ns = ap.parse_args()
    import tempfile

    info = device_info()
    doc = dict(info, benchmark="profile_truth", cases=[], categories=None)
    os.makedirs(ns.out_dir, exist_ok=True)
    gpu = info["gpu"].replace(" ", "-")
    path = os.path.join(ns.out_dir, f"profile_truth_{gpu}.json")
    large = None
    for name in [c for c in ns.cases.split(",") if c]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            try:
                row, rep = compare_case(name, tmp)
            except Exception as e:  # noqa: BLE001 - record and go on to the next case
                row, rep = {"case": name, "error": str(e)}, None
            row["seconds"] = round(time.perf_counter() - t0, 1)
            doc["cases"].append(row)
            if name == "bert-large":
                large = rep
        print(f"\n== {name} ({row['seconds']} s)")
        for r in row.get("rows", []):
            print(f"  {r['metric']:<42} membit {fmt(r['membit']):>12}  independent {fmt(r['independent']):>12}  "
                  f"diff {100 * (r['rel_diff'] or 0):+6.2f}%  {'ok' if r['pass'] else 'FAIL'}")
        if "error" in row:
            print("  error:", row["error"][-2000:])
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    if ns.categories and large is not None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                doc["categories"] = compare_categories(tmp, large)
            except Exception as e:  # noqa: BLE001
                doc["categories"] = {"error": str(e)}
        print("\n== bert-large categories at the peak, vs torch.profiler")
        for r in (doc["categories"] or {}).get("rows", []):
            print(f"  {r['category']:<34} membit {fmt(r['membit']):>12}  profiler {fmt(r['torch_profiler']):>12}  "
                  f"diff {100 * (r['rel_diff'] or 0):+6.2f}% ({100 * r['diff_share_of_peak']:.2f}% of peak)  "
                  f"{'ok' if r['pass'] else 'FAIL'}")
        if "error" in (doc["categories"] or {}):
            print("  error:", doc["categories"]["error"][-2000:])
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    print("\nwrote", path)


if __name__ == "__main__":
    main()
