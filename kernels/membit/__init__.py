"""Membit: memory-lean training kernels and a memory profiler for PyTorch.

Public entry points:
  membit.nn.PackedDropout, membit.nn.functional.packed_dropout   -- 1-bit / mask-free dropout
  membit.patch(model, ...), membit.unpatch(model)                 -- one-line model conversion
  python -m membit.profile                                        -- the profiling harness
"""

__version__ = "0.1.0"
