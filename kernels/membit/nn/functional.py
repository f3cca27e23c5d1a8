"""Functional forms of membit's modules, with the signatures of their torch.nn.functional twins."""

import torch

from ..ops import packed_dropout as _pd

__all__ = ["packed_dropout"]


def packed_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
                   mode: str = "packed") -> torch.Tensor:
    """F.dropout with a 1-bit saved mask (mode="packed") or none at all (mode="recompute").

    Same semantics as torch.nn.functional.dropout: zeroes each element with probability p
    (realised as effective_p(p), within 2^-17 of p) and scales the rest by 1 / (1 - p).
    Eval mode (training=False) and p = 0 return `input` itself; p = 1 gives zeros.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if mode not in _pd.MODES:
        raise ValueError(f"mode must be one of {_pd.MODES}, got {mode!r}")
    if not training or p == 0.0 or input.numel() == 0:
        return input
    if not input.is_floating_point():
        raise TypeError(f"dropout needs a floating-point input, got {input.dtype}")
    if p == 1.0:
        # As torch does: multiply by zero (NaN stays NaN), no mask and nothing saved.
        return input.mul_(0.0) if inplace else input * 0.0
    out = _pd.packed_dropout(input, p, mode)
    if inplace:
        # The op never saves its input, so overwriting it is safe for autograd.
        return input.copy_(out)
    return out
