"""Predicted vs measured: membit.predict's peak and largest batch against the GPU's own numbers.

For every case, in the same run on the GPU machine: the prediction (`python -m membit.predict`,
fake CUDA on the machine's CPUs, several at a time) and the measurement (`python -m
membit.profile --warmup 0 --steps 2`, the harness on the GPU, one at a time, each in a fresh
process): `torch.cuda.max_memory_allocated` from the script's start through its second optimizer
step, which is what the prediction covers. For the largest-batch cases the prediction's own
search runs, then the GPU checks the predicted largest batch and the next one up.

    python benchmarks/bench_predict.py --out results/predict_<gpu>.json      # on a GPU machine
    python benchmarks/bench_predict.py --only "gpt sample" --keep DIR         # one case, every report kept,
                                                                              # measured with allocator history
    python benchmarks/bench_predict.py --fit-only                             # only the largest-batch checks
    python benchmarks/bench_predict.py --speed [--out X.json]                 # CPU: GPT-2 medium timing
    python benchmarks/bench_predict.py --phases --out results/X.json          # CPU: the GPT sample's
                                                                              # predicted maximum per phase
    python benchmarks/bench_predict.py --against results/LOG --out results/X.json
                                   # CPU: predict again the rows a GPU run measured (its log's JSON
                                   # lines), against those measurements: the measured side does not
                                   # depend on the predictor

Each result row says the case, the variant, predicted and measured bytes, and the error.
"""

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
VIT = os.path.join(REPO, "samples", "vit_digits.py")
BERT = os.path.join(REPO, "samples", "bert_mlm.py")
HF_GPT2 = os.path.join(HERE, "hf_gpt2_train.py")
sys.path.insert(0, KERNELS)  # membit from this tree, as the probes get it through PYTHONPATH

GPT_ARGS = ["--n-layer", "6", "--n-embd", "768", "--n-head", "12", "--seq-len", "1024", "--steps", "3",
            "--data-bytes", "2000000"]
# (case, script, args, variants); the order is the priority when time runs short.
CASES = [
    ("hf-gpt2-medium eager s1024 b8", HF_GPT2, ["--attn", "eager", "--batch-size", "8"], ["bf16", "packed+bf16", "recompute+bf16", "checkpoint+bf16"]),
    ("hf-gpt2-medium sdpa s1024 b8", HF_GPT2, ["--attn", "sdpa", "--batch-size", "8"], ["bf16"]),
    ("gpt sample 6L/768 s1024 b8", GPT, GPT_ARGS + ["--batch-size", "8"], ["baseline", "bf16", "packed", "recompute", "checkpoint"]),
    ("hf-bert-large eager s512 b16", BERT, ["--size", "large", "--attn", "eager", "--batch-size", "16", "--steps", "3"], ["bf16", "packed+bf16"]),
    ("hf-bert-large sdpa s512 b16", BERT, ["--size", "large", "--attn", "sdpa", "--batch-size", "16", "--steps", "3"], ["bf16"]),
    ("vit sample b512", VIT, ["--batch-size", "512", "--steps", "3"], ["baseline", "bf16"]),
    ("hf-gpt2-medium eager s1024 b4", HF_GPT2, ["--attn", "eager", "--batch-size", "4"], ["baseline"]),
    ("hf-gpt2-medium sdpa s1024 b4", HF_GPT2, ["--attn", "sdpa", "--batch-size", "4"], ["baseline"]),
    ("hf-bert-large eager s512 b8", BERT, ["--size", "large", "--attn", "eager", "--batch-size", "8", "--steps", "3"], ["baseline"]),
]
# Largest-batch cases: (case, script, args, variant).
FIT = [
    ("hf-gpt2-medium eager s1024", HF_GPT2, ["--attn", "eager", "--batch-size", "8"], "bf16"),
    ("gpt sample 6L/768 s1024", GPT, GPT_ARGS + ["--batch-size", "8"], "bf16"),
]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, e.get("PYTHONPATH")) if x)
    e["MEMBIT_PROGRESS"] = "0"
    e["PYTHONUNBUFFERED"] = "1"
    return e


def predict(tmp, tag, script, args, variant, gpu, find=False):
    out = os.path.join(tmp, f"pred-{tag}.json")
    cmd = [sys.executable, "-m", "membit.predict", "--out", out, "--gpu", gpu, "--variant", variant, "--root", REPO]
    if find:
        cmd += ["--find-max-batch", "--max", "512"]
    cmd += ["--", script] + args
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    secs = time.perf_counter() - t0
    try:
        with open(out) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {"error": f"no prediction (exit {r.returncode}): {r.stderr[-400:]}", "seconds": secs}
    p = doc["run"]["prediction"]
    return {"peak": p["peak_allocated"], "peak_reserved": p.get("peak_reserved"), "fits": p.get("fits"),
            "out_of_memory": p.get("out_of_memory"), "complete": p["complete"], "partial_reason": p["partial_reason"],
            "categories": p["categories"], "sdpa": p["sdpa_backends"], "seconds": round(secs, 1),
            "max_batch": (p["max_batch"] or {}).get("largest") if find else None,
            "probes": [(x["value"], x["fits"], x["device_need"]) for x in (p["max_batch"] or {}).get("probes", [])] if find else None}


def phases(tmp, variant):
    """The GPT sample predicted (no GPU): the highest point of each phase (forward, backward,
    optimizer) over the predicted steps, from the report's timeline, before the fixed costs
    (CUDA context, cuBLAS workspaces) the report adds to the peak."""
    out = os.path.join(tmp, f"phases-{variant}.json")
    cmd = [sys.executable, "-m", "membit.predict", "--out", out, "--gpu", "H100-80GB", "--variant", variant,
           "--root", REPO, "--", GPT] + GPT_ARGS + ["--batch-size", "8"]
    subprocess.run(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900, check=True)
    with open(out) as f:
        doc = json.load(f)
    tl = doc["timeline"]
    best = {}
    for t, phase, allocated in zip(tl["t_ms"], tl["phase"], tl["allocated"]):
        if allocated > best.get(phase, (0, None))[0]:
            best[phase] = (allocated, t)
    return {"variant": variant, "peak_allocated": doc["summary"]["peak_allocated"],
            "peak": {k: doc["peak"][k] for k in ("step", "phase", "replay_bytes")},
            "phase_max_before_fixed_costs": {k: {"bytes": v[0], "t_ms": v[1]} for k, v in sorted(best.items())},
            "timeline_points": len(tl["t_ms"])}


def measure(tmp, tag, script, args, variant, timeout=120, history=False):
    out = os.path.join(tmp, f"meas-{tag}.json")
    # Without the allocator's history the report's holders at the peak are the tracker's estimate
    # of the peak's instant; with it they are the allocator's, the same instant the prediction's
    # replay names, so kept reports compare line by line. The peak itself is
    # max_memory_allocated either way.
    quick = [] if history else ["--no-allocator-history"]
    cmd = [sys.executable, "-m", "membit.profile", "--out", out, "--variant", variant, "--warmup", "0", "--steps", "2",
           *quick, "--nvml-interval", "0", "--no-module-timing", "--root", REPO, "--", script] + args
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "peak": None, "seconds": timeout}
    try:
        with open(out) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {"status": "no report", "peak": None, "seconds": round(time.perf_counter() - t0, 1)}
    return {"status": doc["run"]["status"], "peak": doc["summary"]["peak_allocated"],
            "seconds": round(time.perf_counter() - t0, 1), "device": doc["run"]["device"]["name"],
            "error": (doc["run"]["error"] or "")[-700:] or None}


def check_largest(tmp, tag, script, args, variant, predicted, max_probes=10):
    """Measure around the predicted largest batch b until the real largest m is known.

    b fits and b + 1 runs out of memory: m = b. Otherwise the search goes on in the direction
    the probes point, doubling its stride until a probe crosses over, then bisects, so a miss
    is measured rather than only flagged. `max_probes` bounds the GPU time; a search it cuts
    short leaves m unknown and says between which batches it lies.
    """
    from membit.profile.maxbatch import with_batch  # noqa: PLC0415

    probes = {}

    def probe(batch):
        if batch < 1:
            return "oom"
        if batch not in probes:
            m = measure(tmp, f"{tag}-b{batch}", script, with_batch(args, "--batch-size", batch), variant, timeout=180)
            probes[batch] = {"status": m["status"], "peak": m.get("peak")}
            if m["status"] != "ok" and m.get("error"):
                probes[batch]["error"] = m["error"]  # CUDA's out-of-memory text: free, reserved, in use
        return probes[batch]["status"]

    b = predicted
    at = probe(b)
    if at not in ("ok", "oom"):
        return {"measured_probes": probes, "measured_largest": None, "within_one": False, "statuses_ok": False}
    # lo fits (or is 0), hi does not: the largest lies in [lo, hi - 1].
    if at == "ok":
        lo, hi, stride = b, None, 1
        while hi is None and len(probes) < max_probes:
            s = probe(lo + stride)
            if s == "oom":
                hi = lo + stride
            elif s == "ok":
                lo, stride = lo + stride, stride * 2
            else:
                break
    else:
        lo, hi, stride = None, b, 1
        while lo is None and len(probes) < max_probes:
            s = probe(hi - stride)
            if s == "ok" or hi - stride < 1:
                lo = max(hi - stride, 0)
            elif s == "oom":
                hi, stride = hi - stride, stride * 2
            else:
                break
    while lo is not None and hi is not None and hi - lo > 1 and len(probes) < max_probes:
        mid = (lo + hi) // 2
        s = probe(mid)
        if s == "ok":
            lo = mid
        elif s == "oom":
            hi = mid
        else:
            break
    largest = lo if lo is not None and hi is not None and hi - lo == 1 else None
    return {"measured_probes": probes, "measured_largest": largest,
            "within_one": largest is not None and abs(largest - predicted) <= 1,
            "measured_bounds": [lo, hi],
            "statuses_ok": all(p["status"] in ("ok", "oom") for p in probes.values())}


def gpu_key(name):
    n = name.upper()
    if "H200" in n:
        return "H200"
    if "H100" in n:
        return "H100-80GB"
    if "A100" in n:
        return "A100-80GB" if "80" in n else "A100-40GB"
    return "H100-80GB"


def kept_reserved(path):
    """(case, variant) -> measured peak_reserved, from a --keep folder or its .tgz (JSON reports only)."""
    import tarfile  # noqa: PLC0415

    docs = []
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.startswith("meas-") and name.endswith(".json"):
                with open(os.path.join(path, name), encoding="utf-8") as f:
                    docs.append(json.load(f))
    else:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base.startswith("meas-") and base.endswith(".json"):
                    docs.append(json.load(tar.extractfile(member)))
    out = {}
    for d in docs:
        run = d.get("run") or {}
        script = os.path.basename(run.get("script") or "")
        case = next((c for c, sc, a, _ in CASES if os.path.basename(sc) == script and list(a) == list(run.get("argv") or [])), None)
        reserved = (d.get("summary") or {}).get("peak_reserved")
        if case is not None and isinstance(reserved, int):
            out[(case, d["run"].get("variant"))] = reserved
    return out


def against(ns, tmp):
    """Predicts again, here, every peak row a GPU run logged, and compares with its measurement."""
    from benchenv import environment  # noqa: PLC0415

    measured = []
    gpu = None
    with open(ns.against, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("measured"), int) and "variant" in row:
                measured.append(row)
            elif isinstance(row, dict) and "gpu_key" in row:
                gpu = row
    if gpu is None or not measured:
        raise SystemExit(f"{ns.against}: no environment line (gpu_key) or no measured rows: not a bench_predict log")
    by_case = {case: (script, args) for case, script, args, _ in CASES}
    pool = cf.ThreadPoolExecutor(ns.jobs)
    jobs = []
    for i, m in enumerate(measured):
        if m["case"] not in by_case or (ns.only and not any(w.strip() in m["case"] for w in ns.only.split(","))):
            continue
        script, args = by_case[m["case"]]
        jobs.append((m, pool.submit(predict, tmp, f"again{i}", script, args, m["variant"], gpu["gpu_key"])))
    reserved = kept_reserved(ns.kept) if ns.kept else {}
    fit_jobs = []
    for path in ns.fits or []:
        with open(path, encoding="utf-8") as f:
            for row in json.load(f).get("max_batch", []):
                script, args = next(((sc, a) for c, sc, a, _ in FIT if c == row["case"]), (None, None))
                if script is None:
                    continue
                for value, probe in sorted((row.get("measured_probes") or {}).items(), key=lambda kv: int(kv[0])):
                    a = list(args)
                    a[a.index("--batch-size") + 1] = str(value)
                    fit_jobs.append((row, int(value), probe, pool.submit(predict, tmp, f"fit-{row['case']}-{value}".replace(" ", "_").replace("/", "_"),
                                                                          script, a, row["variant"], gpu["gpu_key"])))
    rows = []
    for m, fut in jobs:
        p = fut.result()
        err = round(100.0 * (p["peak"] - m["measured"]) / m["measured"], 2) if p.get("peak") else None
        row = {"case": m["case"], "variant": m["variant"], "predicted": p.get("peak"), "measured": m["measured"],
               "error_pct": err, "complete": p.get("complete"), "prediction": p}
        mr = reserved.get((m["case"], m["variant"]))
        if mr is not None and p.get("peak_reserved"):
            row.update({"predicted_reserved": p["peak_reserved"], "measured_reserved": mr,
                        "reserved_error_pct": round(100.0 * (p["peak_reserved"] - mr) / mr, 2)})
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("case", "variant", "predicted", "measured", "error_pct", "complete",
                                                  "predicted_reserved", "measured_reserved", "reserved_error_pct")}), flush=True)
    fit_rows = []
    for row, value, probe, fut in fit_jobs:
        p = fut.result()
        oom = p.get("out_of_memory") or {}
        fit_rows.append({"case": row["case"], "variant": row["variant"], "value": value, "predicted_fits": p.get("fits"),
                         "measured_status": probe.get("status"), "measured_peak": probe.get("peak"),
                         "predicted_oom_allocated": oom.get("allocated"), "predicted_peak": p.get("peak"),
                         "agree": (p.get("fits") is True) == (probe.get("status") == "ok")})
        print(json.dumps(fit_rows[-1]), flush=True)
    doc = {"meta": {**environment(), "cpus": os.cpu_count(), "measured_by": {k: gpu.get(k) for k in ("gpu", "torch", "date", "commit")},
                    "measured_log": os.path.basename(ns.against), "kept": os.path.basename(ns.kept) if ns.kept else None,
                    "fits": [os.path.basename(x) for x in ns.fits or []]}, "rows": rows, "fit_probes": fit_rows}
    if ns.out:
        with open(ns.out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget", type=float, default=480, help="seconds of measuring before the rest is skipped")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--speed", action="store_true", help="CPU only: time GPT-2 medium's prediction")
    ap.add_argument("--phases", action="store_true", help="CPU only: the GPT sample's predicted maximum per phase")
    ap.add_argument("--against", default=None, metavar="LOG",
                    help="CPU: predict the rows of this GPU run's log again, against its measured bytes")
    ap.add_argument("--kept", default=None, metavar="DIR|TGZ",
                    help="with --against: the GPU run's kept reports, to compare predicted and measured reserved memory")
    ap.add_argument("--fits", action="append", metavar="JSON",
                    help="with --against: a --fit-only result; every batch it measured is predicted again (fits or not)")
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only the cases whose name has one")
    ap.add_argument("--no-fit", action="store_true", help="skip the largest-batch checks")
    ap.add_argument("--fit-only", action="store_true", help="only the largest-batch checks (no peak rows)")
    ap.add_argument("--keep", default=None, help="copy every prediction and measured report into this folder "
                    "(the peak rows are then measured with the allocator's history on, for holders at the peak)")
    ns = ap.parse_args()
    if ns.fit_only and ns.no_fit:
        ap.error("--fit-only and --no-fit leave nothing to run")
    import torch

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    commit = open(os.path.join(REPO, "COMMIT")).read().strip() if os.path.exists(os.path.join(REPO, "COMMIT")) else None
    tmp = tempfile.mkdtemp(prefix="bench-predict-")
    if ns.phases:
        from benchenv import environment  # noqa: PLC0415

        doc = {"meta": {**environment(), "cpus": os.cpu_count(), "case": "gpt sample 6L/768 s1024 b8"},
               "rows": [phases(tmp, v) for v in ("baseline", "bf16")]}
        print(json.dumps(doc, indent=1), flush=True)
        if ns.out:
            with open(ns.out, "w") as f:
                json.dump(doc, f, indent=1)
        return
    if ns.against:
        against(ns, tmp)
        return
    if ns.speed:
        rows = []
        for attn in ("eager", "sdpa"):
            r = predict(tmp, f"speed-{attn}", HF_GPT2, ["--attn", attn, "--batch-size", "8"], "bf16", "H100-80GB")
            rows.append({"case": f"hf-gpt2-medium {attn} s1024 b8 bf16", **r})
            print(json.dumps(rows[-1]), flush=True)
        from benchenv import environment  # noqa: PLC0415

        meta = {**environment(), "cpus": os.cpu_count()}
        print(json.dumps(meta))
        if ns.out:
            with open(ns.out, "w", encoding="utf-8") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)
        return
    name = torch.cuda.get_device_name(0)
    key = gpu_key(name)
    meta = {"gpu": name, "gpu_key": key, "total_bytes": torch.cuda.get_device_properties(0).total_memory,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "driver": subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip(),
            "date": started, "commit": commit}
    try:
        import transformers
        meta["transformers"] = transformers.__version__
    except ImportError:
        pass
    print(json.dumps(meta), flush=True)
    jobs = []
    pool = cf.ThreadPoolExecutor(ns.jobs)
    def wanted(case):
        return not ns.only or any(w.strip() in case for w in ns.only.split(","))

    for case, script, args, variants in CASES:
        if ns.fit_only or not wanted(case):
            continue
        for v in variants:
            tag = f"{len(jobs)}"
            jobs.append((case, script, args, v, tag, pool.submit(predict, tmp, tag, script, args, v, key)))
    fits = []
    for case, script, args, v in FIT:
        if ns.no_fit or not wanted(case):
            continue
        tag = f"fit{len(fits)}"
        fits.append((case, script, args, v, tag, pool.submit(predict, tmp, tag, script, args, v, key, True)))
    t_start = time.perf_counter()
    rows = []
    for case, script, args, v, tag, fut in jobs:
        if time.perf_counter() - t_start > ns.budget:
            rows.append({"case": case, "variant": v, "skipped": "measuring budget spent"})
            continue
        m = measure(tmp, tag, script, args, v, history=bool(ns.keep))
        p = fut.result()
        err = None
        if m.get("peak") and p.get("peak"):
            err = round(100.0 * (p["peak"] - m["peak"]) / m["peak"], 2)
        row = {"case": case, "variant": v, "predicted": p.get("peak"), "measured": m.get("peak"), "error_pct": err,
               "measure_status": m["status"], "prediction": p, "measure": m}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("case", "variant", "predicted", "measured", "error_pct", "measure_status")}), flush=True)
    fit_rows = []
    for case, script, args, v, tag, fut in fits:
        p = fut.result()
        row = {"case": case, "variant": v, "predicted_largest": p.get("max_batch"), "probes": p.get("probes"),
               "prediction_error": p.get("error")}
        b = p.get("max_batch")
        if b and time.perf_counter() - t_start < ns.budget + 60:
            row.update(check_largest(tmp, tag, script, args, v, b))
        fit_rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"meta": meta, "rows": rows, "max_batch": fit_rows}
    if ns.keep:
        import shutil  # noqa: PLC0415

        os.makedirs(ns.keep, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".json"):
                shutil.copy(os.path.join(tmp, name), ns.keep)
    if ns.out:
        os.makedirs(os.path.dirname(os.path.abspath(ns.out)), exist_ok=True)
        with open(ns.out, "w") as f:
            json.dump(doc, f, indent=1)
    print("done", flush=True)


if __name__ == "__main__":
    main()
