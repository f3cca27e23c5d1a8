"""Command line of the profiling harness.

    python -m membit.profile --out run.json [--variant V] [--steps N] [--warmup K]
                             [--sites sites.json] [--root DIR] [--overlay ORIG=REPLACEMENT]...
                             -- script.py ARGS...

    python -m membit.profile --find-max-batch --out maxbatch.json [--batch-arg=--batch-size]
                             [--variants baseline,packed] [--min 1] [--max N] [--memory-limit BYTES]
                             [--steps N] [--warmup K] [--root DIR] -- script.py ARGS...

Exit codes: 0 ok, 1 the script failed, 2 bad command line, 3 CUDA out of memory,
130/143 cancelled by SIGINT/SIGTERM. The report is written before the process exits. A code
means this only when the report exists and the last progress event is "finished": the
script runs in this process and can end it with any status itself (os._exit(3) is not an
out-of-memory), and then it leaves neither.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional

from .levers import LEVERS, VariantError, canonical
from .overlay import OverlayError, parse_overlay_arg

VARIANT_HELP = ("baseline, or levers joined by '+' from " + ", ".join(LEVERS) +
                " (packed and recompute exclusive), e.g. sdpa+checkpoint+bf16")

EPILOG = """\
Progress goes to stderr, one line per event: '@@membit ' then a JSON object whose "event" is
"started", "step" (also "probe" with --find-max-batch) or "finished". The script's own
output passes through unchanged.

--find-max-batch bisects the value of --batch-arg, running each probe in a fresh process.
A probe fits when it ends without running out of memory and, with --memory-limit, when its
peak is at most that many bytes. CPU has no out-of-memory, so there --memory-limit is
required (the peak is then the tensors the harness tracks): this is how the search is tested
on machines without a GPU.

Variants: """ + VARIANT_HELP + """. packed, recompute and sparse24
convert modules with membit.patch; sdpa switches a transformers model to SDPA attention (other
models need the rewritten source through --overlay); checkpoint checkpoints the model's blocks
(transformers: gradient_checkpointing_enable); bf16 runs the model's forward under bf16 autocast;
compile runs the model's forward through torch.compile (MEMBIT_COMPILE_BACKEND, default inductor).
The report's run.levers says how each lever was applied.

--overlay ORIG=REPLACEMENT (repeatable) runs REPLACEMENT's text wherever the file ORIG would run
(as the script, or imported as a module), compiled under ORIG's name; ORIG is never written.
Report lines in ORIG are mapped back from the rewritten text (run.overlays lists the lines that
are only approximate).
"""


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 8000000000, 8GB, 7.5GiB)")
    value, unit = float(m.group(1)), (m.group(2) or "").lower().rstrip("b")
    scale = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12,
             "ki": 2 ** 10, "mi": 2 ** 20, "gi": 2 ** 30, "ti": 2 ** 40}[unit]
    return int(value * scale)


def _out_problem(out: str) -> Optional[str]:
    """Why the report could not be written at `out`, found before the run rather than after it."""
    path = os.path.abspath(out)
    if os.path.isdir(path):
        return f"is a folder: give the report's file name (e.g. {os.path.join(out, 'run.json')})"
    folder = os.path.dirname(path)
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write in {probe}"
    if os.path.exists(path) and not os.access(path, os.W_OK) and not os.access(folder, os.W_OK):
        return "exists and cannot be replaced"
    return None


def _nonneg(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m membit.profile", description=__doc__.split("\n\n")[0],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="report file to write (JSON)")
    ap.add_argument("--variant", default="baseline", help="what to change for this run: " + VARIANT_HELP)
    ap.add_argument("--steps", type=_nonneg, default=3, help="profiled optimizer steps (0: until the script ends); default 3")
    ap.add_argument("--warmup", type=_nonneg, default=1, help="steps run before profiling starts; default 1")
    ap.add_argument("--sites", help="JSON list of {file, line}: convert only modules created at these lines")
    ap.add_argument("--root", default=None, help="folder report paths are relative to (default: working directory)")
    ap.add_argument("--overlay", action="append", default=[], metavar="ORIG=REPLACEMENT",
                    help="run REPLACEMENT's text in place of the file ORIG, under ORIG's name (repeatable)")
    ap.add_argument("--no-module-timing", action="store_true", help="do not time each module's forward")
    ap.add_argument("--no-allocator-history", action="store_true", help="do not record the CUDA allocator's history")
    ap.add_argument("--nvml-interval", type=float, default=0.2,
                    help="seconds between NVML reads of device-wide used memory (0: none); default 0.2")
    mb = ap.add_argument_group("maximum batch size")
    mb.add_argument("--find-max-batch", action="store_true", help="bisect the largest batch size that fits")
    mb.add_argument("--batch-arg", default="--batch-size", help="the script's batch-size flag (default --batch-size)")
    mb.add_argument("--variants", default=None, help="comma-separated variants to search (default: --variant)")
    mb.add_argument("--min", type=int, default=1, dest="lo", help="smallest batch size to try (default 1)")
    mb.add_argument("--max", type=int, default=None, dest="hi", help="largest batch size to try (default: none)")
    mb.add_argument("--memory-limit", type=_bytes, default=None, help="treat this many bytes as the device's capacity")
    mb.add_argument("--probe-timeout", type=float, default=None, help="seconds before a probe counts as failed")
    ap.add_argument("script", nargs="?", help="the training script (after --)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return ap


def parse_with_script(ap: argparse.ArgumentParser, argv: Optional[List[str]], usage: str) -> argparse.Namespace:
    """Our options, then the script and its arguments (after '--', or as the first positional);
    `usage` is the example named when no script is given. Shared by membit.profile and membit.predict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        k = argv.index("--")
        ours, rest = argv[:k], argv[k + 1:]
    else:
        ours, rest = argv, None
    ns = ap.parse_args(ours)
    if rest is not None:
        if ns.script is not None:
            ap.error("put the script after '--' only")
        if not rest:
            ap.error("no script after '--'")
        ns.script, ns.args = rest[0], rest[1:]
    if not ns.script:
        ap.error(f"no script given: {usage}")
    if not os.path.isfile(ns.script):
        ap.error(f"script not found: {ns.script}")
    return ns


def main(argv: Optional[List[str]] = None) -> int:
    ap = parser()
    ns = parse_with_script(ap, argv, "python -m membit.profile --out run.json -- script.py ARGS...")
    why = _out_problem(ns.out)
    if why:
        ap.error(f"--out {ns.out}: {why}")
    root = os.path.realpath(ns.root or os.getcwd())
    try:
        variant = canonical(ns.variant)
    except VariantError as e:
        ap.error(f"--variant: {e}")
    overlays = []
    for text in ns.overlay:
        try:
            overlays.append(parse_overlay_arg(text))
        except OverlayError as e:
            ap.error(str(e))
    if ns.find_max_batch:
        from . import maxbatch

        variants = []
        for v in (ns.variants or ns.variant).split(","):
            if v.strip():
                try:
                    variants.append(canonical(v.strip()))
                except VariantError as e:
                    ap.error(f"--variants: {e}")
        if ns.lo < 1 or (ns.hi is not None and ns.hi < ns.lo):
            ap.error("need 1 <= --min <= --max")
        return maxbatch.run(out=ns.out, script=ns.script, args=ns.args, batch_arg=ns.batch_arg, variants=variants,
                            lo=ns.lo, hi=ns.hi, memory_limit=ns.memory_limit, steps=ns.steps or 1, warmup=ns.warmup,
                            root=root, sites=ns.sites, timeout=ns.probe_timeout, overlays=overlays)
    from .harness import Harness, Options

    opts = Options(script=ns.script, args=list(ns.args), out=ns.out, variant=variant, steps=ns.steps,
                   warmup=ns.warmup, sites=ns.sites, root=root, module_timing=not ns.no_module_timing,
                   allocator_history=not ns.no_allocator_history, nvml_interval=ns.nvml_interval, overlays=overlays)
    return Harness(opts).run()
