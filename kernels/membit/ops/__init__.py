"""Membit's ops: Triton kernels with a pure-torch reference behind one host API each."""

from . import packed_dropout  # noqa: F401
