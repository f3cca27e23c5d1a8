"""Membit: memory-lean training kernels and a memory profiler for PyTorch.

Public entry points:
  membit.nn.PackedDropout, membit.nn.functional.packed_dropout   -- 1-bit / mask-free dropout
  membit.patch(model, ...), membit.unpatch(model)                 -- one-line model conversion
  python -m membit.profile                                        -- the profiling harness
"""

__version__ = "0.1.0"

__all__ = ["patch", "unpatch", "__version__"]


def __getattr__(name):
    # Lazy, so `import membit` (e.g. to read __version__) needs neither torch nor Triton.
    if name in ("patch", "unpatch"):
        from . import patching

        return getattr(patching, name)
    raise AttributeError(f"module 'membit' has no attribute {name!r}")
