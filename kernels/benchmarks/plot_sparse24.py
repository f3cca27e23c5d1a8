"""Combine train_sparse24.py runs into one JSON and a PNG: validation loss and mask flip rate per step.

    python benchmarks/plot_sparse24.py RUN.json [RUN.json ...] --out results/sparse24_convergence_<gpu>
      -> <out>.json (all curves, the final losses and their gap to dense) and <out>.png
"""

import argparse
import json
import statistics
import sys


def summary(runs):
    by = {r["variant"]: r for r in runs}
    dense = by.get("dense")
    out = {}
    for name, r in by.items():
        s = {"final_val_loss": r["final_val_loss"], "median_step_ms": r["median_step_ms"], "backend": r["backend"]}
        if dense is not None:
            s["vs_dense"] = r["final_val_loss"] / dense["final_val_loss"] - 1.0
        layers = r["flip_rate"]["layers"]
        if layers:
            mean = [statistics.mean(v[i] for v in layers.values() if i < len(v))
                    for i in range(max(len(v) for v in layers.values()))]
            peak = max(range(len(mean)), key=mean.__getitem__)
            s["flip_rate_mean"] = mean
            s["flip_rate_peak"] = {"step": r["flip_rate"]["step"][peak], "rate": mean[peak]}
            s["flip_rate_last"] = {"step": r["flip_rate"]["step"][len(mean) - 1], "rate": mean[-1]}
        out[name] = s
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True, help="path without extension")
    args = ap.parse_args(argv)
    runs = [json.load(open(p)) for p in args.runs]
    doc = {"schema": "membit.bench.sparse24-convergence-summary/1", "device": runs[0]["device"], "torch": runs[0]["torch"],
           "summary": summary(runs), "runs": runs}
    with open(args.out + ".json", "w") as f:
        json.dump(doc, f)
    for name, s in doc["summary"].items():
        gap = f"{100 * s['vs_dense']:+.2f}% vs dense" if "vs_dense" in s else ""
        flip = ""
        if "flip_rate_peak" in s:
            flip = (f"; flip rate peak {s['flip_rate_peak']['rate']:.4f} at step {s['flip_rate_peak']['step']}, "
                    f"last {s['flip_rate_last']['rate']:.4f} at step {s['flip_rate_last']['step']}")
        print(f"{name}: val loss {s['final_val_loss']:.4f} {gap}, step {s['median_step_ms']:.1f} ms ({s['backend']}){flip}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        a.plot(r["curve"]["val_step"], r["curve"]["val_loss"], label=r["variant"])
        if r.get("dense_fine_tune_from"):
            a.axvline(r["dense_fine_tune_from"], color="gray", linestyle=":", linewidth=1)
    a.set_xlabel("step")
    a.set_ylabel("validation loss (nats/char)")
    a.set_title("GPT sample, stdlib text: validation loss")
    a.legend()
    lo = min(min(r["curve"]["val_loss"]) for r in runs)
    a.set_ylim(lo * 0.95, lo * 1.6)
    for name, s in doc["summary"].items():
        if "flip_rate_mean" in s:
            r = next(r for r in runs if r["variant"] == name)
            b.plot(r["flip_rate"]["step"][:len(s["flip_rate_mean"])], s["flip_rate_mean"], label=f"{name} (mean over layers)")
    b.set_xlabel("step")
    b.set_ylabel("flip rate (mask entries changed per refresh)")
    b.set_title("2:4 mask flip rate")
    b.legend()
    fig.suptitle(f"{runs[0]['device']}, torch {runs[0]['torch']}")
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)
    print(f"wrote {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
