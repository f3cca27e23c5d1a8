"""Command line of the predictor.

    python -m membit.predict --out pred.json [--gpu H100-80GB] [--variant V] [--steps 2]
                             [--ranks N] [--root DIR] -- script.py ARGS...

    ... --find-max-batch [--batch-arg=--batch-size] [--max N] [--variants baseline,packed,...]

Runs the script as __main__ for its first --steps optimizer steps with CUDA faked (meta tensors,
no GPU needed, nothing computed) and writes a membit.report marked predicted (run.prediction).
The first step creates the optimizer's state; the second runs with it, so 2 is the default.

--find-max-batch predicts at growing values of --batch-arg, each in a fresh process, and
bisects the largest that fits the GPU (run.prediction.max_batch, per variant with --variants).

Exit codes: 0 the prediction is complete, 4 it is partial (the fake run could not follow the
whole step: the report says where and why), 1 the predictor failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import os

from ..profile.cli import parse_with_script
from ..profile.levers import VariantError, canonical
from . import gpus

EXIT_PARTIAL = 4


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m membit.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="GPUs: " + ", ".join(gpus.keys()) + " (or a capacity such as 24GB)")
    ap.add_argument("--out", required=True, help="report file to write (JSON)")
    ap.add_argument("--gpu", default="H100-80GB", help="target GPU (default H100-80GB)")
    ap.add_argument("--variant", default="baseline", help="levers to apply, as for membit.profile (e.g. packed, sdpa+bf16)")
    ap.add_argument("--variants", default=None, help="comma-separated variants to predict and compare (each in a fresh process)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps to follow (default 2)")
    ap.add_argument("--ranks", type=int, default=1, help="FSDP ranks: estimate the per-rank peak (default 1)")
    ap.add_argument("--root", default=None, help="folder report paths are relative to (default: working directory)")
    ap.add_argument("--find-max-batch", action="store_true", help="search the largest batch that fits the GPU")
    ap.add_argument("--batch-arg", default="--batch-size", help="the script's batch flag (or --seq-len, ...)")
    ap.add_argument("--min", type=int, default=1, dest="lo", help="smallest value to try (default 1)")
    ap.add_argument("--max", type=int, default=4096, dest="hi", help="largest value to try (default 4096)")
    ap.add_argument("script", nargs="?", help="the training script (after --)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return ap


def parse_gpu(text: str) -> gpus.Gpu | None:
    g = gpus.lookup(text)
    if g is not None:
        return g
    from ..profile.cli import _bytes

    try:
        return gpus.custom(_bytes(text))
    except (argparse.ArgumentTypeError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    ns = parse_with_script(ap, argv, "python -m membit.predict --out pred.json -- script.py ARGS...")
    gpu = parse_gpu(ns.gpu)
    if gpu is None:
        ap.error(f"--gpu: unknown GPU {ns.gpu!r}; known: {', '.join(gpus.keys())}, or a capacity such as 24GB")
    if ns.steps < 1:
        ap.error("--steps must be at least 1")
    if ns.ranks < 1:
        ap.error("--ranks must be at least 1")
    variants = []
    for v in (ns.variants or ns.variant).split(","):
        if v.strip():
            try:
                variants.append(canonical(v.strip()))
            except VariantError as e:
                ap.error(f"--variant: {e}")
    if not variants:
        ap.error("--variants: no variant given")
    root = os.path.realpath(ns.root or os.getcwd())
    if ns.find_max_batch or len(variants) > 1:
        if ns.lo < 1 or ns.hi < ns.lo:
            ap.error("need 1 <= --min <= --max")
        from . import fit

        return fit.run(out=ns.out, script=ns.script, args=list(ns.args), gpu=ns.gpu, variants=variants, steps=ns.steps,
                       ranks=ns.ranks, root=root, search=ns.find_max_batch, batch_arg=ns.batch_arg, lo=ns.lo, hi=ns.hi)
    from ..profile.harness import Options
    from .predictor import predict

    opts = Options(script=ns.script, args=list(ns.args), out=ns.out, variant=variants[0], steps=ns.steps, warmup=0,
                   root=root)
    code = predict(opts, gpu, ns.ranks)
    import json

    try:
        with open(ns.out, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return code or 1
    pred = doc["run"].get("prediction")
    if pred is None:
        return code or 1  # the predictor itself failed: the fallback report says why
    # A script the fake could not follow to the end still gives the part it could.
    return 0 if pred["complete"] else EXIT_PARTIAL
