"""2:4 structured-sparse linear layers for training (transposable masks, masked decay).

`SparseLinear24` runs cuSPARSELt 2:4 products on GPUs with sparse tensor cores (bf16/fp16),
and the same maths as a masked dense matmul everywhere else (no speedup; it warns once).
`advice` reads the measured dense-vs-2:4 speed tables shipped in `advice/`.
"""

from ..ops.sparse24 import transposable_patterns
from .linear import BACKENDS, SparseLinear24, densify, flip_rate_series, transposable_mask

__all__ = ["SparseLinear24", "densify", "flip_rate_series", "transposable_mask", "transposable_patterns", "BACKENDS"]
