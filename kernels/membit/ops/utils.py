"""Helpers shared by membit's ops: optional Triton, feature detection, launch sizes.

Nothing here imports Triton at module import time, and nothing needs CUDA: on a machine
without either, every op runs its pure-torch reference path.
"""

import functools
import os

import torch

# Mask words hold 16 elements: the packed mask of n elements takes ceil(n / 16) int16 words,
# i.e. ceil(n / 8) bytes rounded up to an even number.
MASK_WORD_BITS = 16

# Dtypes the Triton kernels take; anything else (float64, say) runs the reference on any device.
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def cdiv(a, b):
    """Ceiling division that also works on SymInts (torch.compile's symbolic sizes)."""
    return (a + b - 1) // b


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when `import triton` works. Any failure (absent, broken install) means 'no'."""
    if os.environ.get("MEMBIT_DISABLE_TRITON", "") not in ("", "0"):
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on `t` should launch the Triton kernel rather than the reference.

    Read per call (not cached) for the environment variable, so tests can force the
    reference path on a GPU machine with MEMBIT_DISABLE_TRITON=1.
    """
    # The device's type, not is_cuda: membit.predict's fake CUDA tensors are meta tensors that
    # answer is_cuda, and a kernel launched on one writes through a null pointer.
    if t.device.type != "cuda" or t.dtype not in TRITON_DTYPES:
        return False
    if os.environ.get("MEMBIT_DISABLE_TRITON", "") not in ("", "0"):
        return False
    return triton_available()


def has_custom_op() -> bool:
    """torch.library.custom_op (torch >= 2.4) lets torch.compile trace through our op."""
    lib = getattr(torch, "library", None)
    return lib is not None and hasattr(lib, "custom_op") and hasattr(lib, "register_fake")


def storage_key(t: torch.Tensor):
    """A key identifying the storage behind `t`, on torch 1.13 (storage()) and 2.x (untyped_storage())."""
    if hasattr(t, "untyped_storage"):
        s = t.untyped_storage()
    else:  # torch < 2.0
        s = t.storage()
    return (t.device.type, t.device.index, s.data_ptr())


def storage_nbytes(t: torch.Tensor) -> int:
    if hasattr(t, "untyped_storage"):
        return t.untyped_storage().nbytes()
    return t.storage().nbytes()
