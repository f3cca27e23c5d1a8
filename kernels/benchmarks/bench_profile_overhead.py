"""What profiling costs: BERT-base at seq 512, profiled vs unprofiled, side by side.

Rounds alternate a plain run (bench_profile_plain.py: CUDA events after each optimizer step,
nothing else) and a run under `python -m membit.profile` (its summary.step_time_s comes from
the same events at the same place), each in a fresh process on the same steps. Reported:
median step time of each and their ratio (target <= 1.10), and the peak allocated memory of
each (target: the profiled peak within 2% of the plain one).

    python benchmarks/bench_profile_overhead.py [--rounds 3] [--configs 'default;--nvml-interval 0'] [--out-dir DIR]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

from bench_profile_truth import HERE, device_info, run

WARMUP, STEPS = 3, 10


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--configs", default="default",
                    help="harness configurations, ';'-separated option lists ('default' = no options), "
                         "e.g. 'default;--nvml-interval 0'")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ns = ap.parse_args()
    script = "samples/bert_mlm.py"
    args = ["--size", "base", "--attn", "eager", "--bf16", "--batch-size", str(ns.batch_size), "--seq-len", "512",
            "--steps", "100"]
    configs = [c.strip() for c in ns.configs.split(";") if c.strip()]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(ns.rounds):
            out = os.path.join(tmp, "plain.json")
            run([sys.executable, os.path.join(HERE, "bench_profile_plain.py"), "--out", out, "--warmup", str(WARMUP),
                 "--steps", str(STEPS), "--", script, *args])
            with open(out) as f:
                plain = json.load(f)
            row = {"round": k, "plain_step_time_s": plain["step_time_s"], "plain_step_times_s": plain["step_times_s"],
                   "plain_peak_allocated": plain["max_memory_allocated"], "profiled": {}}
            for cfg in configs:
                rep_path = os.path.join(tmp, "report.json")
                opts = [] if cfg == "default" else cfg.split()
                run([sys.executable, "-m", "membit.profile", "--out", rep_path, "--warmup", str(WARMUP), "--steps",
                     str(STEPS), *opts, "--", script, *args])
                with open(rep_path) as f:
                    rep = json.load(f)
                s = rep["summary"]
                row["profiled"][cfg] = {"step_time_s": s["step_time_s"], "peak_allocated": s["peak_allocated"],
                                        "notes": rep["run"]["notes"]}
            rounds.append(row)
            print(f"round {k}: plain {row['plain_step_time_s'] * 1000:.2f} ms; " + "; ".join(
                f"{c} {v['step_time_s'] * 1000:.2f} ms" for c, v in row["profiled"].items()), flush=True)
    plain_t = statistics.median(r["plain_step_time_s"] for r in rounds)
    plain_m = max(r["plain_peak_allocated"] for r in rounds)
    summary = {}
    for cfg in configs:
        t = statistics.median(r["profiled"][cfg]["step_time_s"] for r in rounds)
        m = max(r["profiled"][cfg]["peak_allocated"] for r in rounds)
        ratios = [r["profiled"][cfg]["step_time_s"] / r["plain_step_time_s"] for r in rounds]
        summary[cfg] = {"step_time_s": t, "time_ratio": t / plain_t, "round_ratios": ratios, "peak_allocated": m,
                        "memory_overhead": (m - plain_m) / plain_m, "pass_time": t / plain_t <= 1.10,
                        "pass_memory": (m - plain_m) / plain_m <= 0.02}
    doc = dict(device_info(), benchmark="profile_overhead", case="bert-base seq 512 bf16 eager AdamW",
               script=script, args=args, batch_size=ns.batch_size, warmup=WARMUP, steps=STEPS, rounds=rounds,
               plain_step_time_s=plain_t, plain_peak_allocated=plain_m, configs=summary)
    os.makedirs(ns.out_dir, exist_ok=True)
    path = os.path.join(ns.out_dir, f"profile_overhead_{doc['gpu'].replace(' ', '-')}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nplain: {plain_t * 1000:.2f} ms/step, peak {plain_m / 1e9:.3f} GB")
    for cfg, v in summary.items():
        print(f"{cfg}: {v['step_time_s'] * 1000:.2f} ms/step = {v['time_ratio']:.3f}x "
              f"({'ok' if v['pass_time'] else 'FAIL'} <= 1.10; rounds {', '.join(f'{r:.3f}' for r in v['round_ratios'])}); "
              f"peak {100 * v['memory_overhead']:+.2f}% ({'ok' if v['pass_memory'] else 'FAIL'} <= 2%)")
    print("wrote", path)


if __name__ == "__main__":
    main()
