"""Runs a training script without the harness and measures it the plain way.

The independent side of the profiler's truth and overhead benchmarks: some twenty lines of
hooks that anyone could write, nothing shared with membit.profile.

  * step times from CUDA events recorded after each optimizer step;
  * torch.cuda.max_memory_allocated / max_memory_reserved over steps K+1..K+N;
  * parameter, gradient and optimizer-state sizes (unique storages on the GPU);
  * with --count-saved: a plain saved-tensor count (unique storages saved per step,
    parameters excluded);
  * with --profiler-categories: torch.profiler's memory timeline for step K+1, split by
    its categories at its own peak.

    python benchmarks/bench_profile_plain.py --out plain.json --warmup 2 --steps 3 -- samples/gpt_tiny.py ...
"""

import argparse
import json
import os
import runpy
import statistics
import sys
import time

import torch


def unique_bytes(tensors):
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.device.type != "cuda":
            continue
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
    return total


def profiler_categories(prof, device_index):
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

    timeline = MemoryProfileTimeline(prof._memory_profile())
    times, sizes = timeline._coalesce_timeline(f"cuda:{device_index}")
    totals = [sum(s) for s in sizes]
    i = max(range(len(totals)), key=totals.__getitem__)
    out = {("unknown" if c is None else c.name.lower()): int(sizes[i][k + 1]) for c, k in _CATEGORY_TO_INDEX.items()}
    out["total"] = int(totals[i])
    return out


def main():
    argv = sys.argv[1:]
    k = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--count-saved", action="store_true")
    ap.add_argument("--profiler-categories", action="store_true")
    ns = ap.parse_args(argv[:k])
    script, script_args = argv[k + 1], argv[k + 2:]
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    st = {"step": 0, "primary": None, "events": [], "saved": [], "grads": 0, "params": 0, "prof": None,
          "categories": None, "categories_s": None}
    saved, params = {}, set()

    def pre(opt, args, kwargs):
        if st["primary"] is None:
            st["primary"] = opt
        if opt is not st["primary"]:
            return
        ps = [p for g in opt.param_groups for p in g["params"]]
        params.clear()
        params.update(p.untyped_storage().data_ptr() for p in ps)
        if st["step"] >= ns.warmup:
            st["params"] = unique_bytes(ps)
            st["grads"] = max(st["grads"], unique_bytes(p.grad for p in ps))

    def post(opt, args, kwargs):
        if opt is not st["primary"]:
            return
        st["step"] += 1
        s = st["step"]
        if ns.count_saved and s > ns.warmup:
            st["saved"].append(sum(saved.values()))
        saved.clear()
        if s == ns.warmup:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if s >= ns.warmup:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            st["events"].append(ev)
        if ns.profiler_categories and s == ns.warmup:
            act = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            st["prof"] = torch.profiler.profile(activities=act, profile_memory=True, record_shapes=True, with_stack=True)
            st["prof"].__enter__()
        if ns.profiler_categories and s == ns.warmup + 1:
            st["prof"].__exit__(None, None, None)
            t0 = time.perf_counter()
            st["categories"] = profiler_categories(st["prof"], torch.cuda.current_device())
            st["categories_s"] = round(time.perf_counter() - t0, 1)
        if s == ns.warmup + ns.steps:
            finish()

    def finish():
        torch.cuda.synchronize()
        ev = st["events"]
        times = [ev[i - 1].elapsed_time(ev[i]) / 1000.0 for i in range(1, len(ev))]
        opt = st["primary"]
        state = unique_bytes(v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))
        doc = {
            "step_times_s": times,
            "step_time_s": statistics.median(times) if times else None,
            "max_memory_allocated": torch.cuda.max_memory_allocated(),
            "max_memory_reserved": torch.cuda.max_memory_reserved(),
            "params": st["params"], "grads": st["grads"], "optimizer_state": state,
            "saved_per_step": st["saved"], "saved_bytes": max(st["saved"]) if st["saved"] else None,
            "profiler_categories": st["categories"], "profiler_analysis_s": st["categories_s"],
        }
        with open(ns.out, "w") as f:
            json.dump(doc, f, indent=1)
        raise SystemExit(0)

    register_optimizer_step_pre_hook(pre)
    register_optimizer_step_post_hook(post)
    if ns.count_saved:
        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() and s.data_ptr() not in params and t.is_cuda:
                saved[s.data_ptr()] = s.nbytes()
            return t

        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t).__enter__()
    sys.argv = [script] + script_args
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    raise SystemExit(f"the script ended before {ns.warmup + ns.steps} optimizer steps")


if __name__ == "__main__":
    main()
