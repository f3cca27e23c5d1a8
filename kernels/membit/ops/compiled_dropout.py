"""Packed and recompute dropout written in plain tensor ops, for torch.compile.

Under torch.compile the Triton op of packed_dropout.py is a custom op: opaque to Inductor, so
its input and output are materialised and nothing fuses with it. Stock dropout, by contrast,
decomposes into rand / compare / multiply, which Inductor fuses into its neighbours' kernels.
This module gives the same two memory modes in that decomposable form:

  * packed: keep = rand >= p; y = x * keep * scale; the keep-mask is packed 8 elements a byte
    (a size-8 sum of shifted bits, which Inductor fuses with the random draw) and only those
    n/8 bytes are saved. The backward unpacks a bit per element inside its own pointwise kernel.
    AOTAutograd's partitioner cannot recompute random ops, so it must save something that
    determines the mask; the packed bytes are the smallest such tensor (rand is 4 B/element,
    the bool mask 1 B), so its min-cut keeps exactly those.
  * recompute (CUDA): the random numbers come from Philox keyed by a saved seed
    (torch.ops.rngprims.philox_rand, the op behind functionalised RNG, which Inductor lowers
    to tl.rand(seed, offset + index) inside the fused kernel), so the backward regenerates
    the mask from 8 bytes. Off CUDA that op has no eager implementation: recompute there
    falls back to the packed formulation (1 bit a element).

The mask comes from torch's (or Inductor's) RNG, not from the Philox layout of the Triton
kernels: same distribution (drop with probability p, kept values scaled by 1/(1-p), as
F.dropout), different bits. Eager code keeps using the Triton op.
"""

import torch

def pack_bits(keep: torch.Tensor) -> torch.Tensor:
    """Flat uint8 bytes, element 8i+j of `keep` (row-major) in bit j of byte i; padding bits 0."""
    flat = keep.reshape(-1)
    n = flat.numel()
    pad = (-n) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(8, dtype=torch.uint8, device=keep.device)
    return (flat.view(-1, 8).to(torch.uint8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of pack_bits: n bools."""
    shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
    return ((words[:, None] >> shifts) & 1).to(torch.bool).reshape(-1)[:n]


class _PackedBits(torch.autograd.Function):
    """Forward draws the mask with torch.rand, saves it as bits; backward unpacks them."""

    @staticmethod
    def forward(ctx, x, p):
        keep = torch.rand(x.shape, device=x.device, dtype=torch.float32) >= p
        ctx.p = p
        ctx.save_for_backward(pack_bits(keep))
        # The same arithmetic as the aten decomposition of native_dropout.
        return x * keep * (1.0 / (1.0 - p))

    @staticmethod
    def backward(ctx, g):
        (words,) = ctx.saved_tensors
        keep = unpack_bits(words, g.numel()).view(g.shape)
        return g * keep * (1.0 / (1.0 - ctx.p)), None


def _philox_uniform(shape, seed: torch.Tensor, device) -> torch.Tensor:
    offset = torch.zeros((), dtype=torch.int64, device=device)
    return torch.ops.rngprims.philox_rand(list(shape), seed, offset, None, device, torch.float32)[0]


class _RecomputeSeed(torch.autograd.Function):
    """Forward keeps only a seed; backward regenerates the same uniforms from it."""

    @staticmethod
    def forward(ctx, x, p):
        # tl.rand takes an int32 seed: draw it in that range.
        seed = torch.randint(0, 2 ** 31 - 1, (), dtype=torch.int64, device=x.device)
        keep = _philox_uniform(x.shape, seed, x.device) >= p
        ctx.p = p
        ctx.save_for_backward(seed)
        return x * keep * (1.0 / (1.0 - p))

    @staticmethod
    def backward(ctx, g):
        (seed,) = ctx.saved_tensors
        # `seed + 0`: a node of its own, so common-subexpression elimination does not merge
        # this draw with the forward's (the partitioner would then save the forward's mask,
        # since random ops are never recomputed). Same value, same uniforms.
        keep = _philox_uniform(g.shape, seed + 0, g.device) >= ctx.p
        return g * keep * (1.0 / (1.0 - ctx.p)), None


def recompute_supported(device) -> bool:
    """Whether the seed-only formulation runs on `device` (philox_rand is CUDA-only)."""
    return torch.device(device).type == "cuda" and hasattr(torch.ops, "rngprims") \
        and hasattr(torch.ops.rngprims, "philox_rand")


def compiled_dropout(x: torch.Tensor, p: float, mode: str = "packed") -> torch.Tensor:
    """Training-mode dropout, 0 < p < 1, in ops Inductor fuses; see the module docstring."""
    if mode == "recompute" and recompute_supported(x.device):
        return _RecomputeSeed.apply(x, float(p))
    return _PackedBits.apply(x, float(p))
