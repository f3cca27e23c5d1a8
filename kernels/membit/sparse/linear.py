"""SparseLinear24: nn.Linear trained with a transposable 2:4 weight mask.

Following Hu et al. ("Accelerating Transformer Pre-training with 2:4 Sparsity", arXiv 2404.01847):
- dense master weights W are kept; the layer computes with W * M;
- M is transposable (W * M is 2:4 along rows and along columns), so one mask serves the
  forward X @ (W*M)^T (2:4 along in_features) and the input gradient dY @ (W*M) (2:4 along
  out_features); M keeps, per 4x4 block, the best of the 90 transposable patterns by |w|;
- M is recomputed every `refresh_every` training steps, and the fraction of mask entries that
  changed (flip rate) is recorded: it should rise early in training and then decay;
- the weight gradient is the straight-through one (the dense gradient of W*M, applied to every
  entry of W, so pruned weights can grow back), plus masked decay decay * W * (1 - M), which
  pulls pruned weights towards zero so the mask settles;
- `densify(model)` switches to dense for the final fine-tuning steps.

Runtime. On GPUs with sparse tensor cores (sm_80+) and a bf16 compute dtype (bf16 weights,
or fp32 weights under bf16 autocast), the forward and the input gradient are
cuSPARSELt 2:4 products of W*M and (W*M)^T, compressed in every training forward (the weights
change every step) with the algorithm searched once per shape; the weight gradient is a dense
cuBLAS product, or with mvue=True a 2:4 product of an unbiased 2:4 sparsification of dY^T.
Everywhere else (CPU, older GPUs, fp32 without autocast, fp16, torch without cuSPARSELt) the same
maths runs as a masked dense matmul — correct, no speedup — and the first such use warns once
with the reason. Masks are computed and applied by membit; PyTorch's runtime pruning helpers,
measured to decode wrong values on H100, are never used.
"""

import warnings
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..ops.sparse24 import _Sparse24Linear, transposable_mask, transposable_patterns
from . import cusparselt

__all__ = ["SparseLinear24", "densify", "transposable_mask", "transposable_patterns", "BACKENDS", "flip_rate_series"]

BACKENDS = ("auto", "cusparselt", "masked-dense")

_WARNED = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype active for device_type, or None; works on torch 1.13 through 2.x."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return None
    get = getattr(torch, "get_autocast_dtype", None)
    if get is not None:
        return get(device_type)
    return torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.get_autocast_cpu_dtype()


class SparseLinear24(nn.Linear):
    """Drop-in nn.Linear with a transposable 2:4 weight mask (cuSPARSELt where it runs, else masked dense).

    Parameters and state_dict keys are nn.Linear's (`weight`, `bias`); the mask is a
    non-persistent bool buffer recomputed from the weight, so nn.Linear checkpoints load with
    strict=True and vice versa.

    refresh_every: recompute the mask every this many training forwards (forward calls with
      the module in training mode and grad enabled, i.e. one per optimizer step without
      gradient accumulation; call refresh_mask() yourself otherwise).
    decay: masked decay coefficient; decay * W * (1 - M) is added to dW in each backward.
    mvue: compute dW from an unbiased 2:4 sparsification of dY^T (a 2:4 product on sparse
      tensor cores) instead of the dense dY^T @ X; unbiased, with more variance.
    backend: "auto" (cuSPARSELt where it runs, else masked dense with a one-time warning),
      "cusparselt" (raise where it cannot run) or "masked-dense".

    Activation checkpointing calls forward again during backward, which would count a step
    twice; with checkpointing, refresh from the training loop (refresh_every very large, then
    refresh_mask() every k steps).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 refresh_every: int = 40, decay: float = 2e-4, mvue: bool = False, backend: str = "auto"):
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.refresh_every = int(refresh_every)
        self.decay = float(decay)
        self.mvue = bool(mvue)
        self.backend = backend
        self.dense = False
        self.flip_rates: List[float] = []
        self.flip_steps: List[int] = []
        self.last_backend: Optional[str] = None
        self._train_calls = 0
        self.register_buffer("mask", self._new_mask(), persistent=False)

    def _new_mask(self) -> torch.Tensor:
        if self.weight.device.type == "meta":
            return torch.ones(self.weight.shape, dtype=torch.bool, device="meta")
        return transposable_mask(self.weight)

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
            self.mask = self._new_mask()

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
        self.flip_steps.append(self._train_calls)
        return rate

    def densify(self) -> None:
        """Switch to dense: W used as is, no refreshes or flip tracking."""
        self.dense = True
        self.mask = torch.ones(self.weight.shape, dtype=torch.bool, device=self.weight.device)

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        amp = _autocast_dtype(x.device.type)
        if amp is not None and self.weight.dtype.is_floating_point:
            return amp
        if x.dtype != self.weight.dtype:
            raise RuntimeError(f"SparseLinear24: input dtype {x.dtype} does not match weight dtype {self.weight.dtype} "
                               "(as for nn.Linear: cast one of them, or run under autocast)")
        return x.dtype

    def _use_cusparselt(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        if self.backend == "masked-dense":
            return False
        ok, why = cusparselt.check(x.device, dtype) if x.is_cuda else (False, f"{x.device.type} has no sparse tensor cores")
        if ok and x.shape[-1] != self.in_features:
            ok, why = False, "input width does not match in_features"
        if not ok:
            if self.backend == "cusparselt":
                raise RuntimeError(f"SparseLinear24(backend='cusparselt') cannot run here: {why}")
            _warn_once(f"membit SparseLinear24 runs the masked dense fallback: {why}. "
                       "The 2:4 numerics are applied, with no speedup.")
        return ok

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.dense:
            self.last_backend = "dense"
            return F.linear(input, self.weight, self.bias)
        if self.training and torch.is_grad_enabled():
            self._train_calls += 1
            if self._train_calls % self.refresh_every == 0:
                self.refresh_mask()
        dtype = self._compute_dtype(input)
        use = self._use_cusparselt(input, dtype)
        self.last_backend = "cusparselt" if use else "masked-dense"
        mask = self.mask
        if mask.device != self.weight.device:
            mask = mask.to(self.weight.device)
        return _Sparse24Linear.apply(input, self.weight, self.bias, mask, dtype, use, self.decay, self.mvue)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        if self.dense:
            return base + ", sparsity=dense (densified)"
        return (base + f", sparsity=2:4 transposable, refresh_every={self.refresh_every}, "
                f"decay={self.decay:g}, mvue={self.mvue}, backend={self.backend}")


def densify(model: nn.Module) -> int:
    """Switch every SparseLinear24 in `model` to dense (e.g. for the final fine-tuning steps); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, SparseLinear24):
            m.densify()
            n += 1
    return n


def flip_rate_series(model: nn.Module) -> Tuple[List[int], dict]:
    """(steps, {module name: flip rates}) of every SparseLinear24 in model, for plots and reports."""
    layers, steps = {}, []
    for name, m in model.named_modules():
        if isinstance(m, SparseLinear24) and m.flip_rates:
            layers[name] = list(m.flip_rates)
            if len(m.flip_steps) > len(steps):
                steps = list(m.flip_steps)
    return steps, layers
