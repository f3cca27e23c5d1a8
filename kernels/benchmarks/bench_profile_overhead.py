"""What profiling costs: BERT-base at seq 512, profiled vs unprofiled, side by side.

Rounds alternate a plain run (bench_profile_plain.py: CUDA events after each optimizer step,
nothing else) and a run under `python -m membit.profile` (its summary.step_time_s comes from
the same events at the same place), each in a fresh process on the same steps. Reported:
median step time of each and their ratio (target <= 1.10), and the peak allocated memory of
each (target: the profiled peak within 2% of the plain one).

    python benchmarks/bench_profile_overhead.py [--rounds 2] [--batch-size 32] [--out-dir DIR]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bench_profile_truth import HERE, device_info, run

WARMUP, STEPS = 3, 10


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--extra", default="", help="extra harness options for the profiled runs, space-separated")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ns = ap.parse_args()
    script = "samples/bert_mlm.py"
    args = ["--size", "base", "--attn", "eager", "--bf16", "--batch-size", str(ns.batch_size), "--seq-len", "512",
            "--steps", "100"]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(ns.rounds):
            out = os.path.join(tmp, "plain.json")
            t0 = time.perf_counter()
            run([sys.executable, os.path.join(HERE, "bench_profile_plain.py"), "--out", out, "--warmup", str(WARMUP),
                 "--steps", str(STEPS), "--", script, *args])
            with open(out) as f:
                plain = json.load(f)
            t1 = time.perf_counter()
            rep_path = os.path.join(tmp, "report.json")
            run([sys.executable, "-m", "membit.profile", "--out", rep_path, "--warmup", str(WARMUP), "--steps", str(STEPS),
                 *ns.extra.split(), "--", script, *args])
            with open(rep_path) as f:
                rep = json.load(f)
            t2 = time.perf_counter()
            s = rep["summary"]
            row = {"round": k, "plain_step_time_s": plain["step_time_s"], "profiled_step_time_s": s["step_time_s"],
                   "plain_step_times_s": plain["step_times_s"],
                   "plain_peak_allocated": plain["max_memory_allocated"], "profiled_peak_allocated": s["peak_allocated"],
                   "plain_wall_s": round(t1 - t0, 1), "profiled_wall_s": round(t2 - t1, 1),
                   "report_notes": rep["run"]["notes"]}
            rounds.append(row)
            print(f"round {k}: step {row['plain_step_time_s'] * 1000:.2f} ms plain, "
                  f"{row['profiled_step_time_s'] * 1000:.2f} ms profiled; peak {row['plain_peak_allocated'] / 1e9:.3f} GB "
                  f"plain, {row['profiled_peak_allocated'] / 1e9:.3f} GB profiled; wall {row['plain_wall_s']} s / "
                  f"{row['profiled_wall_s']} s", flush=True)
    plain_t = statistics.median(r["plain_step_time_s"] for r in rounds)
    prof_t = statistics.median(r["profiled_step_time_s"] for r in rounds)
    plain_m = max(r["plain_peak_allocated"] for r in rounds)
    prof_m = max(r["profiled_peak_allocated"] for r in rounds)
    doc = dict(device_info(), benchmark="profile_overhead", case="bert-base seq 512 bf16 eager AdamW",
               batch_size=ns.batch_size, warmup=WARMUP, steps=STEPS, harness_options=ns.extra, rounds=rounds,
               plain_step_time_s=plain_t, profiled_step_time_s=prof_t, time_ratio=prof_t / plain_t,
               plain_peak_allocated=plain_m, profiled_peak_allocated=prof_m,
               memory_overhead=(prof_m - plain_m) / plain_m,
               pass_time=prof_t / plain_t <= 1.10, pass_memory=(prof_m - plain_m) / plain_m <= 0.02)
    os.makedirs(ns.out_dir, exist_ok=True)
    suffix = "_" + "_".join(x.strip("-") for x in ns.extra.split()) if ns.extra else ""
    path = os.path.join(ns.out_dir, f"profile_overhead_{doc['gpu'].replace(' ', '_')}{suffix}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nstep time: {plain_t * 1000:.2f} ms plain, {prof_t * 1000:.2f} ms profiled: {doc['time_ratio']:.3f}x "
          f"({'ok' if doc['pass_time'] else 'FAIL'} <= 1.10)")
    print(f"peak: {plain_m / 1e9:.3f} GB plain, {prof_m / 1e9:.3f} GB profiled: {100 * doc['memory_overhead']:+.2f}% "
          f"({'ok' if doc['pass_memory'] else 'FAIL'} <= 2%)")
    print("wrote", path)


if __name__ == "__main__":
    main()
