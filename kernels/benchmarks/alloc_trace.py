"""The CUDA caching allocator's own trace of a harness run, and the predictor's trace against it.

On a GPU machine, `record` runs the harness on the GPT sample with the allocator's history kept
from its first event (never cleared) and writes every alloc / free_requested / segment_alloc /
segment_free with its size and the innermost frame outside torch, as JSON (gzip):

    python benchmarks/alloc_trace.py record OUT.json.gz --variant bf16 --batch-size 8   # from kernels/

Anywhere, `compare` predicts the same step (fake CUDA) and replays both traces through the
predictor's segment rules (membit/predict/segments.py): the measured trace checks the rules (its
replay must give the card's own max_memory_reserved), the predicted one checks the trace:

    python benchmarks/alloc_trace.py compare results/alloc_trace_gpt_bf16_88_862dd22_*.json.gz [--out X.json]

The traces are read as JSON written by `record`; nothing is unpickled.
"""

import argparse
import gzip
import itertools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
sys.path.insert(0, KERNELS)
sys.path.insert(0, HERE)  # benchenv
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
GPT_ARGS = ["--n-layer", "6", "--n-embd", "768", "--n-head", "12", "--seq-len", "1024", "--steps", "3",
            "--data-bytes", "2000000"]
ACTIONS = ("alloc", "free_requested", "segment_alloc", "segment_free")


def record(ns) -> int:
    import torch  # noqa: PLC0415
    from membit.profile import allocator, cli  # noqa: PLC0415

    start = allocator.start_history
    # Never cleared (the harness clears at profiling's start): the replay needs every block.
    allocator.start_history = lambda n, clear=False: start(2_000_000, False)
    snapshot = torch.cuda.memory._snapshot
    kept = {}

    def keep(*a, **k):
        s = snapshot(*a, **k)
        events = (s.get("device_traces") or [[]])[0]
        if len(events) >= kept.get("n", -1):
            rows = []
            for e in events:
                if e["action"] not in ACTIONS:
                    continue
                where = ""
                for f in e.get("frames") or []:
                    fn = f.get("filename", "")
                    if "/torch/" not in fn and "membit/profile" not in fn:
                        where = f"{os.path.basename(fn)}:{f.get('line')}:{f.get('name')}"
                        break
                rows.append([e["action"], int(e.get("addr", 0)), int(e.get("size", 0)), where])
            kept.update(n=len(events), rows=rows, max_reserved=torch.cuda.max_memory_reserved(),
                        max_allocated=torch.cuda.max_memory_allocated())
        return s

    torch.cuda.memory._snapshot = keep
    report = ns.out + ".report.json"
    rc = cli.main(["--out", report, "--variant", ns.variant, "--warmup", "0", "--steps", "2", "--nvml-interval", "0",
                   "--no-module-timing", "--root", REPO, "--", GPT, *GPT_ARGS, "--batch-size", str(ns.batch_size)])
    with open(report, encoding="utf-8") as f:
        status = json.load(f)["run"]["status"]
    os.remove(report)
    doc = {"variant": ns.variant, "batch": ns.batch_size, "status": status, "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "max_reserved": kept.get("max_reserved"), "max_allocated": kept.get("max_allocated"),
           "rows": kept.get("rows", [])}
    with gzip.open(ns.out, "wt", encoding="utf-8") as f:
        json.dump(doc, f)
    print(json.dumps({k: v for k, v in doc.items() if k != "rows"}))
    return rc


def predicted_rows(variant: str, batch: int, gpu: str):
    """The predictor's trace of the same step, as `record`'s rows, its cuBLAS workspaces in place."""
    from membit.predict import cli, segments  # noqa: PLC0415

    replay = segments.replay
    out = {}

    def capture(events, limit=None, preallocated=(), inserted=None):
        if "rows" not in out:
            ids, fresh = {}, itertools.count(1)
            rows = [["alloc", -(i + 1), n, "preallocated"] for i, n in enumerate(preallocated)]
            for i, e in enumerate(events):
                where = ""
                if e.frames:
                    f = e.frames[0]
                    where = f"{os.path.basename(f['filename'])}:{f['line']}:{f['name']}"
                if e.action == "alloc":
                    ids[e.addr] = next(fresh)
                    rows.append(["alloc", ids[e.addr], e.size, where])
                elif e.action == "free_requested":
                    rows.append(["free_requested", ids.pop(e.addr, -1), e.size, where])
                elif e.action == "rename":
                    ids[e.addr] = ids.pop(e.prev)
                for n in (inserted or {}).get(i, ()):
                    rows.append(["alloc", -(len(preallocated) + i + 1), n, "cuBLAS workspace"])
            out["rows"] = rows
        # Predictors from before the workspaces were placed in the trace pass no `inserted`.
        return replay(events, limit, preallocated, **({} if inserted is None else {"inserted": inserted}))

    segments.replay = capture
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"membit-alloc-trace-{os.getpid()}.json")
    try:
        cli.main(["--out", tmp, "--gpu", gpu, "--variant", variant, "--root", REPO, "--", GPT, *GPT_ARGS,
                  "--batch-size", str(batch)])
    finally:
        segments.replay = replay
        if os.path.exists(tmp):
            os.remove(tmp)
    return out["rows"]


def load(path: str) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def replay_rows(rows):
    """A trace's rows (recorded or predicted) through the predictor's segment rules."""
    from membit.predict import segments  # noqa: PLC0415

    return segments.replay([{"action": r[0], "addr": r[1], "size": r[2]} for r in rows if r[0] in ("alloc", "free_requested")])


def compare(ns) -> int:
    measured = load(ns.trace)
    real = replay_rows(measured["rows"])
    pred = replay_rows(predicted_rows(measured["variant"], measured["batch"], ns.gpu))
    out = {"trace": os.path.basename(ns.trace), "variant": measured["variant"], "batch": measured["batch"],
           "card_max_reserved": measured["max_reserved"], "replay_of_measured_trace": real.peak_reserved,
           "replay_of_predicted_trace": pred.peak_reserved,
           "predicted_error_pct": round(100.0 * (pred.peak_reserved - measured["max_reserved"]) / measured["max_reserved"], 2),
           "card_max_allocated": measured["max_allocated"], "predicted_allocated": pred.peak_allocated}
    print(json.dumps(out))
    if ns.out:
        from benchenv import environment  # noqa: PLC0415

        rows = []
        if os.path.exists(ns.out):
            with open(ns.out, encoding="utf-8") as f:
                rows = json.load(f)["rows"]
        with open(ns.out, "w", encoding="utf-8") as f:
            json.dump({"meta": environment(), "rows": rows + [out]}, f, indent=1)
    return 0 if real.peak_reserved == measured["max_reserved"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="on a GPU: the allocator's trace of the GPT sample's two steps")
    r.add_argument("out")
    r.add_argument("--variant", default="bf16")
    r.add_argument("--batch-size", type=int, default=8)
    c = sub.add_parser("compare", help="the predictor's trace against a recorded one, both replayed")
    c.add_argument("trace")
    c.add_argument("--gpu", default="H100-80GB")
    c.add_argument("--out", default=None, help="add the comparison to this JSON file (with the environment)")
    ns = ap.parse_args()
    return record(ns) if ns.cmd == "record" else compare(ns)


if __name__ == "__main__":
    sys.exit(main())
