"""The multi-GPU check: per-rank truth, memory outside the allocator, overhead, faults and the
FSDP estimate, for DDP and FSDP2 under torchrun, every run a fresh job.

    python benchmarks/bench_dist.py run --nproc 2,4 --out RESULT.json --reports REPORTS.tgz   # from kernels/
    python benchmarks/bench_dist.py estimate RESULT.json REPORTS.tgz --cli ../dist/cli.js [--ranks 2,4,8] [--out E.json]

`run` trains `dist_train.py` (default: HF GPT-2 medium from its config, seq 1024, bf16 autocast,
AdamW) at each world size and wrapper, twice side by side: plain (each rank's own
`max_memory_allocated`, synchronised step times and local shard bytes) and under the harness
(`torchrun -m membit.profile`, one report per rank), on the same number of steps. While a job
runs, nvidia-smi's per-process table is polled, so each rank's NVML figure in its report can be
set against nvidia-smi's. Then the faults, at the smallest world size of two or more: one rank
given a batch too large for its card (out of memory: its report must name the rank and its
holders, and every other rank must end with a report, no hang), and one rank killed with
SIGKILL (the job must end, the survivors with reports); with one GPU only the out-of-memory
fault runs, on the one rank. Last, one process without a wrapper is
profiled: the single-GPU run the FSDP estimate is made from.

`estimate` runs `membit report ONE_RANK.json --fsdp N,...` (the extension's CLI, Node) on that
report and sets each world size's estimate against every rank's measured FSDP2 peak.

On a machine without CUDA the ranks run on the CPU with gloo (pass a smaller model: --model gpt
with --script-args); there nothing runs out of memory, so the out-of-memory fault is not run,
and step times are the CPU's.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from benchenv import environment

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
TRAIN = os.path.join(HERE, "dist_train.py")
WARMUP, STEPS = 2, 5  # the harness's; the plain run trains WARMUP + STEPS steps and times the last STEPS


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class SmiPoller:
    """nvidia-smi's per-process used memory, polled while a job runs: the most each pid held."""

    def __init__(self, interval=0.5):
        self.max_by_pid = {}
        self.available = None
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=20)
            except (OSError, subprocess.SubprocessError):
                self.available = False
                return
            self.available = out.returncode == 0
            for line in out.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    pid, mib = int(parts[0]), int(parts[1])
                    self.max_by_pid[pid] = max(self.max_by_pid.get(pid, 0), mib * 2**20)
            self._stop.wait(self._interval)


def torchrun(tmp, tag, nproc, train_args, profiled, timeout, kill_after_steps=None):
    """One fresh torchrun job; returns what it left per rank and how it ended."""
    folder = os.path.join(tmp, tag)
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, env.get("PYTHONPATH")) if x)
    env.pop("MEMBIT_PROGRESS", None)
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    if profiled:
        cmd = head + ["-m", "membit.profile", "--out", os.path.join(folder, "r_{rank}.json"), "--warmup", str(WARMUP),
                      "--steps", str(STEPS), "--root", REPO, "--", TRAIN, *train_args]
    else:
        cmd = head + [TRAIN, *train_args, "--steps", str(WARMUP + STEPS), "--timed-from", str(WARMUP + 1),
                      "--stats-out", os.path.join(folder, "s_{rank}.json")]
    t0 = time.time()
    killed = None
    with SmiPoller() if cuda_available() else contextlib.nullcontext() as smi:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        lines, pids, steps = [], [], 0
        fired = []
        timer = threading.Timer(timeout, lambda: (fired.append(True), _kill_group(proc)))
        timer.start()
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("@@membit "):
                try:
                    ev = json.loads(line[len("@@membit "):])
                except ValueError:
                    continue
                if ev.get("event") == "started":
                    pids.append(int(ev["pid"]))
                elif ev.get("event") == "step":
                    steps += 1
                    if kill_after_steps is not None and killed is None and steps >= kill_after_steps and len(pids) >= 2:
                        killed = pids[-1]
                        os.kill(killed, signal.SIGKILL)
        rc = proc.wait()
        timer.cancel()
        hung = bool(fired)
        # Whatever the job started shares its session: none of it may outlive the job.
        time.sleep(1.0)
        left = _alive(proc.pid)
        if left:
            _kill_group(proc)
    out = {"tag": tag, "nproc": nproc, "profiled": profiled, "rc": rc, "seconds": round(time.time() - t0, 1),
           "hung": hung, "left_running": left, "killed_pid": killed, "ranks": {}, "log_tail": "".join(lines[-40:])[-4000:],
           "nvidia_smi_max_by_pid": smi.max_by_pid if smi is not None else None}
    for r in range(nproc):
        path = os.path.join(folder, f"r_{r}.json" if profiled else f"s_{r}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                out["ranks"][r] = json.load(f)
    return out


def _alive(pgid) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def write_json(path, doc) -> None:
    """Whole or not at all: a reader never sees half a result."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def _where(frames):
    """The holder's innermost frame as file:line, or None."""
    f = (frames or [None])[0]
    return f"{f.get('file')}:{f.get('line')}" if isinstance(f, dict) else None


def peak_of(report) -> int:
    s = report["summary"]
    return s["peak_allocated"] if s.get("peak_allocated") is not None else s["tracked_at_peak"]


def pair_rows(plain, prof):
    """Per rank: the plain run's own figures beside its report's."""
    rows = []
    smi = prof.get("nvidia_smi_max_by_pid") or {}
    for r in range(prof["nproc"]):
        s, rep = plain["ranks"].get(r), prof["ranks"].get(r)
        row = {"rank": r, "plain": s is not None, "report": rep is not None}
        if rep is not None:
            summ, d = rep["summary"], rep["summary"].get("distributed") or {}
            pid = rep["run"].get("pid")
            replay = (rep.get("peak") or {}).get("replay_bytes")
            row.update(report_status=rep["run"]["status"], report_peak=peak_of(rep), report_reserved=summ.get("peak_reserved"),
                       # In the rank itself: the allocator's own trace, replayed, against its max_memory_allocated.
                       replay_bytes=replay,
                       replay_equal=(replay == summ["peak_allocated"]) if replay is not None else None,
                       report_params=summ.get("params"), report_grads=summ.get("grads"),
                       report_optimizer_state=summ.get("optimizer_state"),
                       unsharded_params_max=d.get("unsharded_params_max"), all_gather_buffer_max=d.get("all_gather_buffer_max"),
                       reduce_scatter_buffer_max=d.get("reduce_scatter_buffer_max"),
                       nvml_process_used_max=d.get("nvml_process_used_max"), outside_allocator=d.get("outside_allocator"),
                       nvidia_smi_used_max=smi.get(pid) if pid is not None else None,
                       profiled_step_s=summ.get("step_time_s"))
        if s is not None:
            row.update(plain_max_allocated=s["max_allocated"], plain_max_reserved=s["max_reserved"],
                       plain_step_s=s["step_s_median"], shard_params=s["params"], shard_grads=s["grads"],
                       shard_optimizer_state=s["optimizer_state"],
                       plain_nvidia_smi_used_max=(plain.get("nvidia_smi_max_by_pid") or {}).get(s["pid"]))
        if s is not None and rep is not None:
            if s["max_allocated"] is not None:
                # Across processes: the plain run of the same steps. DDP's peak has differed between
                # two such runs on one H100 (by about one gradient's worth), so this can be False
                # while replay_equal, the rank's own truth, holds.
                row["peak_equal"] = row["report_peak"] == s["max_allocated"]
            row["shards_equal"] = (row["report_params"], row["report_grads"], row["report_optimizer_state"]) == (
                s["params"], s["grads"], s["optimizer_state"])
            if s["step_s_median"] and row["profiled_step_s"]:
                row["step_ratio"] = round(row["profiled_step_s"] / s["step_s_median"], 4)
        rows.append(row)
    return rows


def run(ns) -> int:
    cuda = cuda_available()
    env = environment()
    print(json.dumps(env), flush=True)
    train = ns.script_args.split() if ns.script_args else ["--model", "gpt2-medium", "--seq-len", "1024", "--bf16",
                                                             "--batch-size", str(ns.batch_size)]
    sizes = [int(x) for x in ns.nproc.split(",")]
    doc = {"meta": env, "device": "cuda" if cuda else "cpu", "train_args": train, "warmup": WARMUP, "steps": STEPS,
           "jobs": [], "faults": [], "one_rank": None}
    keep = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in ns.parallel.split(","):
            for n in sizes:
                args = [*train, "--parallel", parallel]
                plain = torchrun(tmp, f"{parallel}{n}-plain", n, args, False, ns.timeout)
                prof = torchrun(tmp, f"{parallel}{n}-prof", n, args, True, ns.timeout)
                keep.append(f"{parallel}{n}-prof")
                job = {"parallel": parallel, "nproc": n, "plain_rc": plain["rc"], "profiled_rc": prof["rc"],
                       "nvidia_smi": prof["nvidia_smi_max_by_pid"] is not None, "rows": pair_rows(plain, prof)}
                if plain["rc"] or prof["rc"]:
                    job["log_tail"] = (plain if plain["rc"] else prof)["log_tail"]
                doc["jobs"].append(job)
                print(json.dumps({k: v for k, v in job.items() if k != "log_tail"}), flush=True)
        multi = [n for n in sizes if n >= 2]
        n = min(multi) if multi else min(sizes)
        args = [*train, "--parallel", ns.fault_parallel]
        faults = [("kill", dict(kill_after_steps=2 * n))] if n >= 2 else []
        if cuda:
            faults.insert(0, ("oom", dict()))
        if faults:
            for name, kw in faults:
                a = args + (["--rank-batch", f"{n - 1}={ns.oom_batch}"] if name == "oom" else [])
                f = torchrun(tmp, f"fault-{name}", n, a, True, ns.timeout, **kw)
                keep.append(f"fault-{name}")
                ranks = {r: {"status": rep["run"]["status"], "rank": (rep["run"].get("distributed") or {}).get("rank"),
                             "error": (rep["run"].get("error") or "")[:300],
                             "oom_top": [(t.get("category"), t.get("bytes"), _where(t.get("frames")))
                                         for t in ((rep.get("oom") or {}).get("top") or [])[:5]]}
                         for r, rep in f["ranks"].items()}
                row = {"fault": name, "parallel": ns.fault_parallel, "nproc": n, "rc": f["rc"], "seconds": f["seconds"],
                       "hung": f["hung"], "left_running": f["left_running"], "killed_pid": f["killed_pid"], "reports": ranks}
                doc["faults"].append(row)
                print(json.dumps(row), flush=True)
        one = torchrun(tmp, "one-rank", 1, [*train, "--parallel", "none"], True, ns.timeout)
        keep.append("one-rank")
        rep = one["ranks"].get(0)
        doc["one_rank"] = {"rc": one["rc"], "peak": peak_of(rep) if rep else None,
                           "params": rep["summary"]["params"] if rep else None,
                           "report": "one-rank/r_0.json"}
        if ns.reports:
            with tarfile.open(ns.reports, "w:gz") as t:
                for k in keep:
                    t.add(os.path.join(tmp, k), arcname=k,
                          filter=lambda ti: ti if ti.isdir() or ti.name.endswith(".json") else None)
    write_json(ns.out, doc)
    ok = all(not j["plain_rc"] and not j["profiled_rc"] for j in doc["jobs"]) and doc["one_rank"]["rc"] == 0
    return 0 if ok else 1


def estimate(ns) -> int:
    """The FSDP estimate from the one-rank report against every FSDP2 rank's measured peak."""
    with open(ns.result, encoding="utf-8") as f:
        doc = json.load(f)
    fsdp = [j for j in doc["jobs"] if j["parallel"] == "fsdp"]
    sizes = sorted({int(x) for x in ns.ranks.split(",")}) if ns.ranks else sorted({j["nproc"] for j in fsdp if j["nproc"] >= 2})
    if not sizes:
        print("bench_dist: the result has no FSDP2 job of two or more ranks to compare with; "
              "--ranks N,... gives the estimate alone", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(ns.reports, "r:gz") as t:
        # The archive is data: only the one report is read, never extracted by its own paths.
        member = t.extractfile(doc["one_rank"]["report"])
        one = os.path.join(tmp, "one.json")
        with open(one, "wb") as f:
            f.write(member.read())
        out = subprocess.run(["node", ns.cli, "report", one, "--fsdp", ",".join(map(str, sizes)), "--json"],
                             capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    est = json.loads(out.stdout)
    rows = []
    for e in est["rows"]:
        # World sizes the result did not measure keep empty lists and no error.
        job = next((j for j in fsdp if j["nproc"] == e["worldSize"]), {"rows": []})
        measured = [r["report_peak"] for r in job["rows"] if r.get("report_peak") is not None]
        plain = [r["plain_max_allocated"] for r in job["rows"] if r.get("plain_max_allocated") is not None]
        worst = max(measured) if measured else None
        rows.append({"ranks": e["worldSize"], "estimate": e["perRank"], "measured_per_rank": measured,
                     "plain_max_allocated_per_rank": plain,
                     "error_pct_vs_largest_rank": round(100 * (e["perRank"] - worst) / worst, 2) if worst else None,
                     "estimate_parts": {k: e[k] for k in ("params", "grads", "optimizerState", "unshardedUnits",
                                                          "reduceScatter", "activations", "rest")}})
    res = {"label": est["label"], "unit": est["unit"], "one_rank_peak": doc["one_rank"]["peak"], "rows": rows,
           "device": doc["device"], "meta": doc["meta"]}
    print(json.dumps(res, indent=1))
    if ns.out:
        write_json(ns.out, res)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="the jobs, the faults and the one-rank run")
    r.add_argument("--nproc", default="2,4", help="world sizes, comma-separated (default 2,4)")
    r.add_argument("--parallel", default="ddp,fsdp", help="wrappers, comma-separated (default ddp,fsdp)")
    r.add_argument("--batch-size", type=int, default=8, help="per rank, for the default GPT-2 medium")
    r.add_argument("--script-args", default=None, help="dist_train.py's arguments in place of GPT-2 medium's")
    r.add_argument("--fault-parallel", default="fsdp", help="the wrapper the fault jobs use")
    r.add_argument("--oom-batch", type=int, default=512, help="the batch of the rank made to run out of memory")
    r.add_argument("--timeout", type=float, default=300, help="seconds before a job counts as hung and is killed")
    r.add_argument("--out", required=True)
    r.add_argument("--reports", default=None, help="keep every rank's report in this .tgz")
    e = sub.add_parser("estimate", help="membit report --fsdp on the one-rank run against the measured FSDP2 ranks")
    e.add_argument("result")
    e.add_argument("reports")
    e.add_argument("--cli", default=os.path.join(KERNELS, "..", "dist", "cli.js"))
    e.add_argument("--ranks", default=None, help="world sizes to estimate (default: the FSDP2 jobs' own)")
    e.add_argument("--out", default=None)
    ns = ap.parse_args(argv)
    return run(ns) if ns.cmd == "run" else estimate(ns)


if __name__ == "__main__":
    sys.exit(main())
