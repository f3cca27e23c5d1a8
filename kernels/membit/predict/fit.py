"""Will it fit? The largest batch (or any integer argument) that fits the GPU, by predictions alone.

Each probe is a fresh `python -m membit.predict` process (a script's state never leaks into the
next probe). Peak memory grows close to linearly in the batch, so after two probes the search
extrapolates to a guess and then walks to the boundary: a few probes instead of a bisection's
dozen. A probe fits when its prediction is complete and its trace, replayed through the caching
allocator's segment rules on the card (segments.py), never needs more than the GPU's capacity
less the CUDA context from the GPU table.
A partial prediction cannot decide, and the search says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from ..profile.maxbatch import with_batch
from ..profile.progress import Progress
from ..profile.report import write_atomic


class Prober:
    def __init__(self, *, script, args, gpu, steps, ranks, root, progress: Progress):
        self.script, self.args, self.gpu = script, list(args), gpu
        self.steps, self.ranks, self.root = steps, ranks, root
        self.progress = progress
        self.tmp = tempfile.mkdtemp(prefix="membit-predict-")
        self.kept: dict[str, str] = {}

    def predict(self, variant: str, args: list[str], tag: str) -> dict | None:
        out = os.path.join(self.tmp, f"{tag}.json")
        cmd = [sys.executable, "-m", "membit.predict", "--out", out, "--gpu", self.gpu, "--variant", variant,
               "--steps", str(self.steps), "--ranks", str(self.ranks), "--root", self.root, "--", self.script] + args
        env = dict(os.environ)
        env["MEMBIT_PROGRESS"] = "0"
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(x for x in (pkg_parent, env.get("PYTHONPATH")) if x)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            with open(out, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def _row(doc: dict | None, value: int) -> dict:
    if doc is None:
        return {"value": value, "fits": False, "complete": False, "peak_allocated": None, "device_need": None,
                "error": "the predictor wrote no report"}
    p = doc["run"]["prediction"]
    need = p["device_need"] if p.get("fsdp") is None else None
    return {"value": value, "fits": bool(p["fits"]) and bool(p["complete"]), "complete": bool(p["complete"]),
            "peak_allocated": p["peak_allocated"], "device_need": need,
            "error": None if p["complete"] else (p["partial_reason"] or "partial prediction")}


def search(prober: Prober, variant: str, batch_arg: str, lo: int, hi: int, capacity: int) -> dict:
    rows: dict[int, dict] = {}

    def probe(b: int) -> dict:
        if b not in rows:
            doc = prober.predict(variant, with_batch(prober.args, batch_arg, b), f"{variant.replace('+', '_')}-{b}")
            rows[b] = _row(doc, b)
            prober.progress.emit("probe", variant=variant, batch=b, fits=rows[b]["fits"], peak=rows[b]["peak_allocated"])
        return rows[b]

    result = {"variant": variant, "arg": batch_arg, "largest": None, "status": "ok", "error": None, "probes": []}

    def done():
        result["probes"] = [rows[b] for b in sorted(rows)]
        return result

    first = probe(lo)
    if not first["complete"]:
        result["status"], result["error"] = "partial", f"{batch_arg} {lo}: {first['error']}"
        return done()
    if not first["fits"]:
        result["largest"] = None
        return done()
    # Secant steps toward the capacity (memory is close to linear in the batch), kept strictly
    # inside the bracket [good, bad); bisection where a secant step would leave it.
    good, bad = lo, None
    pts = [(lo, first["device_need"])]
    for _ in range(40):
        if bad is not None and bad - good <= 1:
            break
        guess = None
        if len(pts) >= 2:
            (b1, n1), (b2, n2) = pts[-2], pts[-1]
            if n1 is not None and n2 is not None and b2 != b1 and n2 != n1:
                slope = (n2 - n1) / float(b2 - b1)
                if slope > 0:
                    guess = int(b2 + (capacity - n2) / slope)
        if guess is None:
            guess = good * 2 if bad is None else (good + bad) // 2
        upper = hi if bad is None else bad - 1
        guess = max(good + 1, min(upper, guess))
        if guess <= good:
            break
        r = probe(guess)
        if not r["complete"]:
            break
        pts.append((guess, r["device_need"]))
        if r["fits"]:
            good = guess
            if bad is None and guess >= hi:
                break
        else:
            bad = guess
    partial = [r for r in rows.values() if not r["complete"]]
    if partial:
        result["status"] = "partial"
        result["error"] = f"{batch_arg} {partial[0]['value']}: {partial[0]['error']}"
    result["largest"] = good
    return done()


def run(*, out, script, args, gpu, variants, steps, ranks, root, search: bool, batch_arg, lo, hi) -> int:
    from .cli import EXIT_PARTIAL, parse_gpu

    progress = Progress()
    progress.install()
    t0 = time.perf_counter()
    g = parse_gpu(gpu)
    prober = Prober(script=script, args=args, gpu=gpu, steps=steps, ranks=ranks, root=root, progress=progress)
    main_doc = None
    summaries = []
    for k, v in enumerate(variants):
        doc = prober.predict(v, list(args), f"main-{k}")
        if doc is None:
            progress.emit("finished", status="error", report=None)
            progress.uninstall()
            print(f"membit.predict: the prediction of variant {v} wrote no report", file=sys.stderr)
            return 1
        p = doc["run"]["prediction"]
        entry = {"variant": v, "peak_allocated": p["peak_allocated"], "device_need": p["device_need"], "fits": p["fits"],
                 "complete": p["complete"], "partial_reason": p["partial_reason"], "categories": p["categories"],
                 "fsdp": p["fsdp"], "max_batch": None}
        if search:
            sr = search_fn(prober, v, batch_arg, lo, hi, g.total_bytes)
            entry["max_batch"] = sr
        summaries.append(entry)
        if main_doc is None:
            main_doc = doc
    p = main_doc["run"]["prediction"]
    p["variants"] = summaries
    p["max_batch"] = summaries[0]["max_batch"]
    main_doc["run"]["duration_s"] = round(time.perf_counter() - t0, 3)
    write_atomic(out, main_doc)
    progress.emit("finished", status=main_doc["run"]["status"], report=os.path.abspath(out))
    progress.uninstall()
    for name in os.listdir(prober.tmp):
        try:
            os.remove(os.path.join(prober.tmp, name))
        except OSError:
            pass
    try:
        os.rmdir(prober.tmp)
    except OSError:
        pass
    return 0 if p["complete"] else EXIT_PARTIAL


search_fn = search
