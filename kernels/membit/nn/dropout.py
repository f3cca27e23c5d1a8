"""PackedDropout: nn.Dropout with a 1-bit mask, or none."""

import torch
from torch import nn

from ..ops.packed_dropout import MODES
from .functional import packed_dropout


class PackedDropout(nn.Dropout):
    """Drop-in for nn.Dropout(p, inplace) that saves 1 bit per element for backward.

    mode="packed" keeps the mask as int16 words (n/8 bytes, against PyTorch's 1 byte per
    element on CUDA and 4 on CPU); mode="recompute" keeps only the 8-byte Philox seed and
    regenerates the mask in backward. No parameters or buffers, so state_dicts are unchanged.

    It subclasses nn.Dropout so that code looking for dropout layers with
    `isinstance(m, nn.Dropout)` (to change p, or to count them) still finds it.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, mode: str = "packed") -> None:
        super().__init__(p, inplace)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return packed_dropout(input, self.p, self.training, self.inplace, self.mode)

    def extra_repr(self) -> str:
        s = f"p={self.p}, inplace={self.inplace}"
        return s if self.mode == "packed" else f"{s}, mode={self.mode!r}"
