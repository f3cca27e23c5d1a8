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
    def prepare(model):
        compiled = torch.compile(model, backend=args.backend)
        return UnderAutocast(compiled, torch.bfloat16) if args.bf16 else compiled

    gpt_tiny.main(rest, prepare=prepare)


class UnderAutocast:
    """Calls the model (forward and loss: the GPT returns both) under autocast; everything else
    (parameters(), train(), eval()) goes to the model itself, so module paths stay its own and
    gpt_tiny's training loop stays the plain loop the advisor's autocast rewrite reads."""

    def __init__(self, model, dtype):
        self._model = model
        self._dtype = dtype

    def __call__(self, *args, **kwargs):
        device = next(self._model.parameters()).device
        with torch.autocast(device.type, dtype=self._dtype):
            return self._model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


if __name__ == "__main__":
    main()
