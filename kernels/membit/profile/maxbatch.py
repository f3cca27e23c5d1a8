"""Largest batch size that fits: bisection over fresh profiled runs.

Each probe is a new `python -m membit.profile` process, so one probe's OOM (and the
fragmentation it leaves) never affects the next. A probe fits when its run ends "ok" and,
with --memory-limit, its peak is within the limit. The peak is the allocator's
(summary.peak_allocated) on CUDA; CPU has no allocator and no OOM, so there the limit is
required and the peak is what the harness tracks (summary.tracked_at_peak), which makes the
search testable on any machine.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

from .frames import PathMapper
from .progress import Progress
from .report import write_atomic


def with_batch(args: List[str], flag: str, value: int) -> List[str]:
    """The script's arguments with `flag` set to `value` (replaced in place, or appended)."""
    out, i, found = [], 0, False
    while i < len(args):
        a = args[i]
        if a == flag and i + 1 < len(args):
            out += [flag, str(value)]
            i += 2
            found = True
            continue
        if a.startswith(flag + "="):
            out.append(f"{flag}={value}")
            found = True
        else:
            out.append(a)
        i += 1
    if not found:
        out += [flag, str(value)]
    return out


class Prober:
    def __init__(self, *, script, args, batch_arg, steps, warmup, root, sites, memory_limit, progress: Progress,
                 timeout: Optional[float] = None, overlays=()):
        self.script, self.args, self.batch_arg = script, args, batch_arg
        self.steps, self.warmup, self.root, self.sites = steps, warmup, root, sites
        self.memory_limit = memory_limit
        self.progress = progress
        self.timeout = timeout
        self.overlays = list(overlays)
        self.measure: Optional[str] = None
        self.device: Optional[dict] = None
        self.tmp = tempfile.mkdtemp(prefix="membit-maxbatch-")

    def probe(self, variant: str, batch: int) -> dict:
        out = os.path.join(self.tmp, f"{variant.replace('+', '_')}-{batch}.json")
        cmd = [sys.executable, "-m", "membit.profile", "--out", out, "--variant", variant, "--steps", str(self.steps),
               "--warmup", str(self.warmup), "--root", self.root]
        if self.sites:
            cmd += ["--sites", self.sites]
        for orig, repl in self.overlays:
            cmd += ["--overlay", f"{orig}={repl}"]
        cmd += ["--", self.script] + with_batch(self.args, self.batch_arg, batch)
        env = dict(os.environ)
        env["MEMBIT_PROGRESS"] = "0"  # the probes' own progress lines would confuse our reader
        env.pop("MEMBIT_CONTROL_FD", None)  # the channel is ours; the probe does not inherit its descriptor
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(x for x in (pkg_parent, env.get("PYTHONPATH")) if x)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, timeout=self.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
        row = {"batch": batch, "status": "error", "fits": False, "peak": None, "exit_code": rc,
               "seconds": round(time.perf_counter() - t0, 2), "error": None}
        try:
            with open(out, encoding="utf-8") as f:
                rep = json.load(f)
        except (OSError, ValueError):
            row["error"] = "timed out" if rc is None else f"no report (exit code {rc})"
            return row
        run, summary = rep["run"], rep["summary"]
        self.device = self.device or run["device"]
        peak = summary.get("peak_allocated")
        measure = "peak_allocated"
        if peak is None:
            peak, measure = summary.get("tracked_at_peak"), "tracked_at_peak"
        self.measure = self.measure or measure
        row["peak"] = peak
        row["status"] = run["status"]
        if run["status"] == "ok":
            if self.memory_limit is not None and peak is not None and peak > self.memory_limit:
                row["status"] = "over_limit"
            else:
                row["fits"] = True
        elif run["status"] != "oom":
            lines = (run.get("error") or "").strip().splitlines()
            row["error"] = lines[-1] if lines else f"status {run['status']}"
        try:
            os.remove(out)
        except OSError:
            pass
        return row


def search(prober: Prober, variant: str, lo: int, hi: Optional[int]) -> dict:
    """Doubling from `lo` until a probe fails (or `hi`), then bisection between the last fit and the first failure."""
    probes: Dict[int, dict] = {}

    def fits(b: int) -> bool:
        if b not in probes:
            row = prober.probe(variant, b)
            probes[b] = row
            prober.progress.emit("probe", variant=variant, batch=b, status=row["status"], fits=row["fits"], peak=row["peak"])
            if row["status"] == "error":
                raise _ProbeError(row)
        return probes[b]["fits"]

    result = {"variant": variant, "largest": None, "status": "ok", "error": None, "probes": []}
    try:
        if fits(lo):
            good, bad = lo, None
            while bad is None:
                nxt = good * 2
                if hi is not None:
                    nxt = min(nxt, hi)
                if nxt <= good:
                    break
                if fits(nxt):
                    good = nxt
                else:
                    bad = nxt
            if bad is not None:
                while bad - good > 1:
                    mid = (good + bad) // 2
                    if fits(mid):
                        good = mid
                    else:
                        bad = mid
            result["largest"] = good
    except _ProbeError as e:
        result["status"] = "error"
        result["error"] = f"batch {e.row['batch']}: {e.row['error'] or 'the run failed'}"
    result["probes"] = [probes[b] for b in sorted(probes)]
    return result


class _ProbeError(Exception):
    def __init__(self, row):
        super().__init__(row.get("error"))
        self.row = row


def run(*, out, script, args, batch_arg, variants, lo, hi, memory_limit, steps, warmup, root, sites, timeout,
        overlays=()) -> int:
    import torch

    progress = Progress()
    progress.install()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    if memory_limit is None and not torch.cuda.is_available():
        progress.uninstall()
        print("membit.profile: --find-max-batch on a machine without CUDA needs --memory-limit BYTES "
              "(there is no out-of-memory on CPU)", file=sys.stderr)
        return 2
    progress.emit("started", pid=os.getpid(), device="cuda" if torch.cuda.is_available() else "cpu", steps=steps,
                  warmup=warmup)
    prober = Prober(script=script, args=args, batch_arg=batch_arg, steps=steps, warmup=warmup, root=root, sites=sites,
                    memory_limit=memory_limit, progress=progress, timeout=timeout, overlays=overlays)
    results = [search(prober, v, lo, hi) for v in variants]
    doc = {
        "schema": "membit.maxbatch/1",
        "script": PathMapper(root)(os.path.abspath(script)),
        "argv": list(args),
        "batch_arg": batch_arg,
        "min": lo,
        "max": hi,
        "memory_limit": memory_limit,
        "measure": prober.measure,
        "device": prober.device,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "started": started,
        "duration_s": round(time.perf_counter() - t0, 2),
        "variants": results,
    }
    write_atomic(out, doc)
    ok = all(r["status"] == "ok" for r in results)
    progress.emit("finished", status="ok" if ok else "error", report=os.path.abspath(out))
    progress.uninstall()
    try:
        os.rmdir(prober.tmp)
    except OSError:
        pass
    return 0 if ok else 1
