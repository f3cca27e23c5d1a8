"""2:4 structured-sparse linear layers (transposable masks, masked decay).

This version runs the masked dense fallback everywhere: the forward is a dense matmul with
W * M. It is numerically what a sparse-tensor-core kernel would compute, but gives no speedup;
the cuSPARSELt path is not built in this version (see SparseLinear24).
"""

from .linear import SparseLinear24, densify, transposable_mask, transposable_patterns

__all__ = ["SparseLinear24", "densify", "transposable_mask", "transposable_patterns"]
