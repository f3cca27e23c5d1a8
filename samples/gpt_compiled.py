"""samples/gpt_tiny.py's GPT trained through torch.compile, optionally under bf16 autocast.

The same model, data and loop as gpt_tiny.py (imported from beside this file); only the
model is wrapped by torch.compile before training, as most training scripts now do.

    python samples/gpt_compiled.py --steps 50 --batch-size 16 --seq-len 128 [--bf16] [--backend aot_eager]

--backend aot_eager traces and partitions the graphs exactly as the default (Inductor) does,
without generating kernels: minutes faster on a CPU.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_tiny  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    ap.add_argument("--bf16", action="store_true", help="forward and loss under torch.autocast(dtype=torch.bfloat16)")
    args, rest = ap.parse_known_args(argv)
    gpt_tiny.main(
        rest,
        prepare=lambda model: torch.compile(model, backend=args.backend),
        autocast_for=(lambda device: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else None,
    )


if __name__ == "__main__":
    main()
