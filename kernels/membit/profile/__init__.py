"""Membit's profiling harness: run a training script and measure where its memory goes.

    python -m membit.profile --out run.json [--variant V] [--steps N] [--warmup K] -- script.py ARGS...

Writes one `membit.report/1` document (schema: report.schema.json beside this file): memory
per source line, per module and per category (params, grads, optimizer state, activations
saved for backward, masks), the allocator's peak and timeline on CUDA, and what was alive at
an out-of-memory failure. See cli.py for the options and harness.py for how a run ends.
"""

from .schema import SCHEMA_ID, SCHEMA_PATH, load_schema, validate

__all__ = ["SCHEMA_ID", "SCHEMA_PATH", "load_schema", "validate", "main"]


def main(argv=None) -> int:
    from .cli import main as _main

    return _main(argv)
