"""SparseLinear24: nn.Linear with a transposable 2:4 mask, refreshed during training.

Following Hu et al. ("Accelerating Transformer Pre-training with 2:4 Sparsity"):
- dense master weights W are kept; the layer computes with W * M;
- M is transposable (both W * M and its transpose are 2:4 along rows), so the same mask
  serves forward (X @ (W*M)^T) and the input gradient (dY @ (W*M));
- M is the best of the 90 transposable 4x4 patterns per 4x4 block, by sum of |w| kept;
- M is recomputed every `refresh_every` training steps; the fraction of entries that changed
  (flip rate) is recorded, since a high flip rate means training has not settled on a mask;
- masked decay: decay * W * (1 - M) is added to W's gradient, pulling pruned weights
  towards zero so that the mask stabilises.

Runtime: the forward is a dense matmul with W * M on every device (the masked dense fallback).
The sparse-tensor-core path (cuSPARSELt) is not built in this version, so there is no speedup;
the layer warns once per process. Note PyTorch's runtime pruning helper
(`_sparse_semi_structured_tile`) was measured to decode wrong values on H100, so a future
kernel path must compress masks computed here, never prune at runtime.
"""

import itertools
import math
import warnings
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SparseLinear24", "densify", "transposable_mask", "transposable_patterns"]


_PATTERNS = None


def transposable_patterns() -> torch.Tensor:
    """The 90 4x4 0/1 matrices with exactly two ones in every row and every column, as [90, 16] float32."""
    global _PATTERNS
    if _PATTERNS is None:
        rows = [r for r in itertools.product((0, 1), repeat=4) if sum(r) == 2]  # 6 rows
        pats = []
        for combo in itertools.product(rows, repeat=4):
            m = torch.tensor(combo, dtype=torch.float32)
            if bool((m.sum(0) == 2).all()):
                pats.append(m.reshape(16))
        _PATTERNS = torch.stack(pats)
        assert _PATTERNS.shape == (90, 16)
    return _PATTERNS


def transposable_mask(w: torch.Tensor) -> torch.Tensor:
    """Transposable 2:4 mask of a 2-D tensor: same shape and dtype as w, values 0/1.

    Each 4x4 block gets the pattern keeping the largest sum of |w|. Shapes that are not
    multiples of 4 are padded with zeros and cropped, so edge blocks are still 2:4 inside the
    padded block (a cropped row or column may keep fewer than 2 of its < 4 entries).
    """
    if w.dim() != 2:
        raise ValueError(f"transposable_mask takes a 2-D weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    pr, pc = (-rows) % 4, (-cols) % 4
    # float32 for the scores: bf16 sums of |w| would tie or mis-rank close patterns.
    a = w.detach().abs().to(torch.float32)
    if pr or pc:
        a = F.pad(a, (0, pc, 0, pr))
    R, C = a.shape
    blocks = a.reshape(R // 4, 4, C // 4, 4).permute(0, 2, 1, 3).reshape(-1, 16)
    pats = transposable_patterns().to(a.device)
    best = (blocks @ pats.t()).argmax(dim=1)  # [nblocks]
    m = pats[best].reshape(R // 4, C // 4, 4, 4).permute(0, 2, 1, 3).reshape(R, C)
    return m[:rows, :cols].to(dtype=w.dtype).contiguous()


class _MaskWithDecay(torch.autograd.Function):
    """W -> W * M, whose backward adds the masked decay term decay * W * (1 - M) to dW."""

    @staticmethod
    def forward(ctx, weight, mask, decay):
        ctx.decay = decay
        ctx.save_for_backward(weight, mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        gw = grad * mask
        if ctx.decay:
            gw = gw + ctx.decay * (weight * (1 - mask))
        return gw, None, None


_WARNED = False


def _warn_fallback_once() -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(
            "membit SparseLinear24 runs the masked dense fallback (dense matmul with W * M): "
            "2:4 sparsity is applied to the numerics but gives no speedup in this version",
            RuntimeWarning, stacklevel=3)


class SparseLinear24(nn.Linear):
    """Drop-in nn.Linear with a transposable 2:4 weight mask (masked dense fallback).

    Parameters and state_dict keys are nn.Linear's (`weight`, `bias`); the mask is a
    non-persistent buffer recomputed from the weight, so nn.Linear checkpoints load with
    strict=True and vice versa.

    refresh_every: recompute the mask every this many training forwards (forward calls with
      the module in training mode and grad enabled, i.e. one per optimizer step without
      gradient accumulation; call refresh_mask() yourself otherwise).
    decay: masked decay coefficient; decay * W * (1 - M) is added to dW in each backward
      (so k accumulated micro-batches add it k times).
    mvue: unbiased 2:4 weight gradient (Hu et al.); not available in this version.

    Limitation: refreshes are counted in forward, so activation checkpointing (which calls
    forward again during backward) counts a step twice and could refresh the mask between the
    forward and its recomputation; call refresh_mask() from the training loop in that case
    (with refresh_every set very large).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 refresh_every: int = 40, decay: float = 2e-4, mvue: bool = False):
        if mvue:
            raise NotImplementedError("SparseLinear24(mvue=True): the MVUE 2:4 weight gradient is not available in this version")
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.refresh_every = int(refresh_every)
        self.decay = float(decay)
        self.mvue = False
        self.dense = False
        self.flip_rates: List[float] = []
        self._train_calls = 0
        self.register_buffer("mask", transposable_mask(self.weight), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "SparseLinear24":
        """A SparseLinear24 sharing `linear`'s weight and bias Parameters (same values, dtype, device).

        Sharing (rather than copying) keeps optimizers built on the original parameters
        working, and lets unpatch() hand back a Linear holding the trained weights.
        """
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device="meta", dtype=w.dtype, **kwargs)
        new.weight = w
        if linear.bias is not None:
            new.bias = linear.bias
        new.mask = transposable_mask(w)
        new.train(linear.training)
        return new

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "mask"):
            self.mask = transposable_mask(self.weight)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        # The mask is not saved: derive it from the loaded weights (not a refresh; no flip rate).
        if not self.dense:
            self.mask = transposable_mask(self.weight)

    @torch.no_grad()
    def refresh_mask(self) -> float:
        """Recompute the mask from |W|; records and returns the fraction of mask entries that changed."""
        if self.dense:
            return 0.0
        new = transposable_mask(self.weight)
        rate = (new != self.mask).to(torch.float32).mean().item()
        self.mask = new
        self.flip_rates.append(rate)
        return rate

    def densify(self) -> None:
        """Switch to dense: mask all ones (W used as is), no refreshes or flip tracking."""
        self.dense = True
        self.mask = torch.ones_like(self.weight, dtype=self.weight.dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return F.linear(input, self.weight, self.bias)
        _warn_fallback_once()
        if self.training and torch.is_grad_enabled():
            self._train_calls += 1
            if self._train_calls % self.refresh_every == 0:
                self.refresh_mask()
        mask = self.mask
        if mask.dtype != self.weight.dtype or mask.device != self.weight.device:
            mask = mask.to(device=self.weight.device, dtype=self.weight.dtype)
        w = _MaskWithDecay.apply(self.weight, mask, self.decay)
        return F.linear(input, w, self.bias)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        if self.dense:
            return base + ", sparsity=dense (densified)"
        return (base + f", sparsity=2:4 transposable, refresh_every={self.refresh_every}, "
                f"decay={self.decay:g}, runtime=masked dense fallback")


def densify(model: nn.Module) -> int:
    """Switch every SparseLinear24 in `model` to dense (e.g. for the final fine-tuning steps); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, SparseLinear24):
            m.densify()
            n += 1
    return n
