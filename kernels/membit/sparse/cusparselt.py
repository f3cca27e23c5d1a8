"""cuSPARSELt 2:4 matmuls through PyTorch's private ops, with per-shape algorithm search.

Only three ops are used: `torch._cslt_compress` (a dense row-major matrix that is already
2:4 along its rows -> cuSPARSELt's compressed form), `torch._cslt_sparse_mm` (compressed A
[m, k] times dense B [k, n]; a transposed view of a contiguous tensor is accepted as B, and
`transpose_result=True` returns the [n, m] product directly) and `torch._cslt_sparse_mm_search`
(which algorithm is fastest for one problem). Masks are always computed and applied by
membit itself: PyTorch's runtime pruning helpers (`_sparse_semi_structured_tile`,
`prune_dense_static_sort`) were measured to decode wrong values on H100 and are never called.

Every (device, dtype) is checked once against a dense masked matmul before it is used
(`check`); a failure turns the sparse path off for that pair with the reason, so a broken
driver or library degrades to the masked dense fallback instead of training on wrong numbers.
"""

import os
import threading
from typing import Dict, Optional, Tuple

import torch

__all__ = ["available", "check", "compress", "spmm", "padded", "ALIGN", "clear_caches", "algorithm_cache"]

# Rows and columns of every operand are padded to multiples of ALIGN: cuSPARSELt needs 16-bit
# operands in multiples of 16 (and the 2:4 groups of 4); 64 keeps every problem on its fast tiles.
ALIGN = 64
# Token counts (the n of every product) are padded to a multiple of this.
TOKEN_ALIGN = 16

SPARSE_DTYPES = (torch.bfloat16,)
# fp16 is kept off the sparse path: on an H200 with torch 2.11.0+cu130 cuSPARSELt's fp16 algorithm
# search failed with an internal error and left the CUDA context unusable (every later launch
# failed), which no in-process check can recover from. fp16 layers run the masked dense path.
FP16_REASON = ("fp16 2:4 products are off: cuSPARSELt's fp16 search failed and broke the CUDA context "
               "on H200 with torch 2.11; use bf16 (bf16 weights or bf16 autocast)")

_lock = threading.Lock()
_algs: Dict[tuple, Tuple[int, int, int]] = {}
_checked: Dict[tuple, Tuple[bool, str]] = {}


def padded(n: int, to: int = ALIGN) -> int:
    return n + (-n) % to


def algorithm_cache() -> Dict[tuple, Tuple[int, int, int]]:
    """(device, dtype, m, k, n, b transposed, transpose_result, bias) -> (algorithm, split_k, split_k_mode) searched for it."""
    return dict(_algs)


def clear_caches() -> None:
    with _lock:
        _algs.clear()
        _checked.clear()


def _search_enabled() -> bool:
    return os.environ.get("MEMBIT_CSLT_SEARCH", "1") not in ("0", "")


def available(device: torch.device, dtype: torch.dtype) -> Tuple[bool, str]:
    """Whether this torch and GPU can run cuSPARSELt 2:4 products in dtype; the reason when not."""
    if device.type != "cuda":
        return False, f"{device.type} has no sparse tensor cores"
    if dtype == torch.float16:
        return False, FP16_REASON
    if dtype not in SPARSE_DTYPES:
        return False, f"{str(dtype).replace('torch.', '')} has no exact 2:4 kernel (use bf16, e.g. bf16 autocast)"
    for op in ("_cslt_compress", "_cslt_sparse_mm", "_cslt_sparse_mm_search"):
        if not hasattr(torch, op):
            return False, f"this torch ({torch.__version__}) has no torch.{op}"
    lt = getattr(torch.backends, "cusparselt", None)
    if lt is None or not lt.is_available():
        return False, f"this torch ({torch.__version__}) was built without cuSPARSELt"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return False, f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}) has no sparse tensor cores (needs sm_80 or newer)"
    return True, ""


def compress(a: torch.Tensor) -> torch.Tensor:
    """Compressed form of a contiguous [m, k] matrix that is 2:4 along its rows."""
    return torch._cslt_compress(a)


def spmm(a_c: torch.Tensor, m: int, k: int, b: torch.Tensor, bias: Optional[torch.Tensor] = None,
         transpose_result: bool = False) -> torch.Tensor:
    """A @ B for compressed A [m, k] (from `compress`) and dense B [k, n]; [n, m] when transpose_result.

    The algorithm is searched once per problem and cached (MEMBIT_CSLT_SEARCH=0: the default one).
    """
    n = b.shape[1]
    key = (b.device.index, b.dtype, m, k, n, not b.is_contiguous(), transpose_result, bias is not None)
    cfg = _algs.get(key)
    if cfg is None:
        cfg = _search(a_c, b, bias, transpose_result) if _search_enabled() else (0, 1, -1)
        with _lock:
            _algs[key] = cfg
    alg, split_k, split_k_mode = cfg
    if split_k == 1:
        return torch._cslt_sparse_mm(a_c, b, bias=bias, transpose_result=transpose_result, alg_id=alg)
    return torch._cslt_sparse_mm(a_c, b, bias=bias, transpose_result=transpose_result, alg_id=alg,
                                 split_k=split_k, split_k_mode=split_k_mode)


def _search(a_c, b, bias, transpose_result) -> Tuple[int, int, int]:
    """(algorithm, split_k, split_k_mode) cuSPARSELt finds fastest for this problem."""
    cs = getattr(torch._C, "_cusparselt", None)
    if cs is not None and hasattr(cs, "mm_search"):  # torch >= 2.6 also searches split-k
        found = cs.mm_search(a_c, b, bias, None, None, transpose_result)
        return int(found[0]), int(found[1]), int(found[2])
    found = torch._cslt_sparse_mm_search(a_c, b, bias=bias, transpose_result=transpose_result)
    return int(found[0] if isinstance(found, (tuple, list)) else found), 1, -1


def check(device: torch.device, dtype: torch.dtype) -> Tuple[bool, str]:
    """available() and a once-per-(device, dtype) numeric check of the exact calls SparseLinear24 makes.

    Forward with bias (transposed result), the input gradient through the transposed weight,
    and a compressed left operand with a contiguous right one (the MVUE weight gradient), each
    compared with a dense matmul of the same masked operands.
    """
    ok, why = available(device, dtype)
    if not ok:
        return ok, why
    key = (device.index if device.index is not None else torch.cuda.current_device(), dtype)
    if key in _checked:
        return _checked[key]
    result = (True, "")
    try:
        from ..ops.sparse24 import masked_weights, transposable_mask

        g = torch.Generator(device=device).manual_seed(0)
        out_f, in_f, tokens = 192, 128, 80
        w = torch.randn(out_f, in_f, device=device, generator=g)
        mask = transposable_mask(w)
        wm, wmt = masked_weights(w, mask, dtype)
        x = torch.randn(tokens, in_f, device=device, generator=g).to(dtype)
        bias = torch.randn(out_f, device=device, generator=g).to(dtype)
        dy = torch.randn(tokens, out_f, device=device, generator=g).to(dtype)
        wf, xf, dyf = wm.float(), x.float(), dy.float()
        cases = (
            ("forward", spmm(compress(wm), out_f, in_f, x.t(), bias=bias, transpose_result=True), xf @ wf.t() + bias.float()),
            ("input gradient", spmm(compress(wmt), in_f, out_f, dy.t(), transpose_result=True), dyf @ wf),
            ("weight gradient", spmm(compress(wm), out_f, in_f, x.t().contiguous()), wf @ xf.t()),
        )
        for name, got, want in cases:
            err = ((got.float() - want).norm() / want.norm()).item()
            if not (err < 2e-2):  # also catches NaN
                result = (False, f"cuSPARSELt {name} check failed on {torch.cuda.get_device_name(device)} "
                                  f"({str(dtype).replace('torch.', '')}): relative error {err:.3g}")
                break
    except Exception as e:  # noqa: BLE001  (any failure means: do not use this path)
        result = (False, f"cuSPARSELt is not usable here: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    with _lock:
        _checked[key] = result
    return result
