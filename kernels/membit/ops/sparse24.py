"""2:4 sparsity: transposable masks, masked weight copies, the unbiased 2:4 gradient, and the
autograd Function of the 2:4 linear layer that runs on them.

Three ops, each a Triton kernel on CUDA with a pure-torch reference that computes the same
function bit for bit (the tests' oracle, and the path on every other device):

transposable_mask(w)
    A 0/1 mask M with W * M 2:4 along rows *and* columns, so one mask serves the forward
    (X @ (W*M)^T, sparse along in_features) and the input gradient (dY @ (W*M), sparse along
    out_features). Each 4x4 block takes the one of the 90 transposable patterns (two ones in
    every row and column) that keeps the largest sum of |w| (Hu et al., arXiv 2404.01847).
    Scores are float32 sums accumulated in pattern-element order 0..15 in both the kernel
    and the reference (an exact product by 0/1 then one rounding per add), and ties go to the
    lowest pattern index, so the two agree exactly.

masked_weights(w, mask, dtype, rows_to, cols_to)
    W * M cast to the compute dtype, zero-padded to (rows_to, cols_to), and its transpose,
    both contiguous: the two dense operands cuSPARSELt compresses every step. One pass reads
    W and M once and writes both copies.

mvue24(g, u)
    An unbiased 2:4 sparsification of g^T (pairs along g's rows, i.e. along tokens for a
    [tokens, features] gradient): in each pair (a, b) keep a with probability |a| / (|a|+|b|)
    and write sign(a) * (|a|+|b|), else the same for b. E[out] = g^T exactly, and each group of
    four keeps at most two. This is the minimum-variance unbiased estimator for 1:2 applied to
    the two halves of every group of four (Chmiel et al., ICLR 2023); it is unbiased and 2:4,
    but not the minimum-variance 2:4 estimator. The uniform numbers u are drawn by the caller
    (torch.rand), so kernel and reference see the same randomness.

_Sparse24Linear.apply(x, weight, bias, mask, dtype, use_cslt, decay, mvue)
    The autograd Function of membit.sparse.SparseLinear24: y = x @ (W*M)^T + b, with the
    straight-through weight gradient plus masked decay. With use_cslt, the forward and the
    input gradient are cuSPARSELt 2:4 products of masked_weights' two copies (and with mvue,
    the weight gradient a 2:4 product of mvue24's output); without it, the same maths as masked
    dense matmuls, which is the reference.
"""

import itertools
from typing import Optional, Tuple

import torch
from torch.nn import functional as F

from .utils import cdiv, triton_available, use_triton

__all__ = [
    "transposable_patterns", "transposable_mask", "transposable_mask_reference",
    "masked_weights", "masked_weights_reference", "mvue24", "mvue24_reference", "mvue24_uniforms",
]

# Pattern table padded to a power of two for the kernel; padding columns score -1 so they
# never win (real scores are sums of |w| >= 0).
NPAT = 90
NPAT_PADDED = 128

_PATTERNS = {}


def transposable_patterns(device=None) -> torch.Tensor:
    """The 90 4x4 0/1 matrices with two ones in every row and column, [90, 16] float32, fixed order."""
    key = str(device or "cpu")
    if key not in _PATTERNS:
        rows = [r for r in itertools.product((0, 1), repeat=4) if sum(r) == 2]  # the 6 rows with two ones
        pats = [torch.tensor(c, dtype=torch.float32) for c in itertools.product(rows, repeat=4)]
        pats = [p.reshape(16) for p in pats if bool((p.sum(0) == 2).all())]
        table = torch.stack(pats)
        assert table.shape == (NPAT, 16)
        _PATTERNS[key] = table.to(device) if device is not None else table
    return _PATTERNS[key]


def _kernel_table(device) -> torch.Tensor:
    """[17, 128] float32: rows 0..15 are pattern element j of each pattern, row 16 the start scores."""
    key = ("kernel", str(device))
    if key not in _PATTERNS:
        t = torch.zeros(17, NPAT_PADDED, dtype=torch.float32)
        t[:16, :NPAT] = transposable_patterns().t()
        t[16, NPAT:] = -1.0
        _PATTERNS[key] = t.to(device)
    return _PATTERNS[key]


def _blocks(w: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
    """|w| as float32 [nblocks, 16] (4x4 blocks row-major, elements row-major), zero-padded to multiples of 4."""
    rows, cols = w.shape
    a = w.detach().abs().to(torch.float32)
    pr, pc = (-rows) % 4, (-cols) % 4
    if pr or pc:
        a = F.pad(a, (0, pc, 0, pr))
    R, C = a.shape
    return a.reshape(R // 4, 4, C // 4, 4).permute(0, 2, 1, 3).reshape(-1, 16), R, C


# Blocks scored per chunk in the reference: bounds its [chunk, 90] float32 temporaries (~23 MB).
_REF_CHUNK = 1 << 16


def transposable_mask_reference(w: torch.Tensor) -> torch.Tensor:
    """Reference for transposable_mask: bool mask of w's shape (see the module docstring)."""
    if w.dim() != 2:
        raise ValueError(f"transposable_mask takes a 2-D weight, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    blocks, R, C = _blocks(w)
    pats = transposable_patterns(blocks.device)  # [90, 16]
    best = torch.empty(blocks.shape[0], dtype=torch.int64, device=blocks.device)
    for s in range(0, blocks.shape[0], _REF_CHUNK):
        b = blocks[s:s + _REF_CHUNK]
        scores = torch.zeros(b.shape[0], NPAT, dtype=torch.float32, device=b.device)
        for j in range(16):  # same order and rounding as the kernel's accumulation
            scores += b[:, j:j + 1] * pats[:, j]
        best[s:s + _REF_CHUNK] = scores.argmax(dim=1)  # first maximum on ties
    m = pats[best].to(torch.bool).reshape(R // 4, C // 4, 4, 4).permute(0, 2, 1, 3).reshape(R, C)
    return m[:rows, :cols].contiguous()


def masked_weights_reference(w: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype,
                             rows_to: Optional[int] = None, cols_to: Optional[int] = None):
    """Reference for masked_weights: ((W*M) as dtype, zero-padded, and its transpose), both contiguous."""
    rows, cols = w.shape
    rows_to, cols_to = rows_to or rows, cols_to or cols
    wm = torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device)).to(dtype)
    if rows_to != rows or cols_to != cols:
        wm = F.pad(wm, (0, cols_to - cols, 0, rows_to - rows))
    return wm.contiguous(), wm.t().contiguous()


def mvue24_reference(g: torch.Tensor, u: torch.Tensor, rows_to: Optional[int] = None,
                     cols_to: Optional[int] = None) -> torch.Tensor:
    """Reference for mvue24: [features, tokens] (padded) unbiased 2:4 sparsification of g^T.

    g: [tokens, features]; u: float32 uniforms [cols_to // 2, rows_to] (one per pair of tokens
    and feature), laid out so the kernel reads them coalesced.
    """
    T, N = g.shape
    rows_to, cols_to = rows_to or N, cols_to or T
    if cols_to % 2 or T > cols_to or N > rows_to:
        raise ValueError("mvue24: padded sizes must cover g and the token count must be even")
    gt = torch.zeros(cols_to, rows_to, dtype=torch.float32, device=g.device)
    gt[:T, :N] = g.to(torch.float32)
    a, b = gt[0::2], gt[1::2]  # [pairs, features]
    s = a.abs() + b.abs()
    keep_a = u[:, :rows_to] * s < a.abs()
    zero = torch.zeros((), dtype=torch.float32, device=g.device)
    out_a = torch.where(keep_a, torch.where(a < 0, -s, s), zero)
    out_b = torch.where(keep_a, zero, torch.where(b < 0, -s, s))
    out = torch.stack([out_a, out_b], dim=1).reshape(cols_to, rows_to)
    return out.t().to(g.dtype).contiguous()


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _transposable_mask_kernel(w_ptr, m_ptr, tab_ptr, rows, cols, stride_w, nbc, nblocks,
                                  BLOCKS: tl.constexpr, NP: tl.constexpr):
        # One program scores BLOCKS 4x4 blocks against all patterns: acc[b, p] = sum_j |w_bj| * P[j, p].
        pid = tl.program_id(0)
        b = pid.to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
        live = b < nblocks
        br = b // nbc
        bc = b % nbc
        p = tl.arange(0, NP)
        acc = tl.zeros([BLOCKS, NP], dtype=tl.float32) + tl.load(tab_ptr + 16 * NP + p)[None, :]
        for j in tl.static_range(16):
            r = br * 4 + j // 4
            c = bc * 4 + j % 4
            ok = live & (r < rows) & (c < cols)
            a = tl.abs(tl.load(w_ptr + r * stride_w + c, mask=ok, other=0.0).to(tl.float32))
            acc += a[:, None] * tl.load(tab_ptr + j * NP + p)[None, :]
        best = tl.argmax(acc, axis=1, tie_break_left=True)
        for j in tl.static_range(16):
            r = br * 4 + j // 4
            c = bc * 4 + j % 4
            ok = live & (r < rows) & (c < cols)
            keep = tl.load(tab_ptr + j * NP + best, mask=live, other=0.0)
            tl.store(m_ptr + r * cols + c, keep.to(tl.uint8), mask=ok)

    @triton.jit
    def _masked_weights_kernel(w_ptr, m_ptr, out_ptr, out_t_ptr, rows, cols, rows_to, cols_to, stride_w,
                               BR: tl.constexpr, BC: tl.constexpr):
        # Tile (BR x BC) of W*M, cast, written row-major to out and transposed to out_t; the grid
        # covers the padded shape so padding is written as zeros.
        r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
        c = tl.program_id(1).to(tl.int64) * BC + tl.arange(0, BC)
        inside = (r < rows)[:, None] & (c < cols)[None, :]
        w = tl.load(w_ptr + r[:, None] * stride_w + c[None, :], mask=inside, other=0.0)
        m = tl.load(m_ptr + r[:, None] * cols + c[None, :], mask=inside, other=0)
        v = tl.where(m != 0, w, 0.0).to(out_ptr.dtype.element_ty)
        dst = (r < rows_to)[:, None] & (c < cols_to)[None, :]
        tl.store(out_ptr + r[:, None] * cols_to + c[None, :], v, mask=dst)
        tl.store(out_t_ptr + c[:, None] * rows_to + r[None, :], tl.trans(v), mask=tl.trans(dst))

    @triton.jit
    def _mvue24_kernel(g_ptr, u_ptr, out_ptr, T, N, rows_to, cols_to,
                       BP: tl.constexpr, BN: tl.constexpr):
        # Pairs of tokens (2i, 2i+1) x features: read g rows coalesced, write out = [features, tokens].
        i = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)  # pair index
        n = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)  # feature index
        t0 = 2 * i
        t1 = t0 + 1
        nf = n < N
        a = tl.load(g_ptr + t0[:, None] * N + n[None, :], mask=(t0 < T)[:, None] & nf[None, :], other=0.0).to(tl.float32)
        b = tl.load(g_ptr + t1[:, None] * N + n[None, :], mask=(t1 < T)[:, None] & nf[None, :], other=0.0).to(tl.float32)
        pairs_ok = (t0 < cols_to)[:, None] & (n < rows_to)[None, :]
        u = tl.load(u_ptr + i[:, None] * rows_to + n[None, :], mask=pairs_ok, other=1.0)
        s = tl.abs(a) + tl.abs(b)
        keep_a = u * s < tl.abs(a)
        out_a = tl.where(keep_a, tl.where(a < 0, -s, s), 0.0).to(out_ptr.dtype.element_ty)
        out_b = tl.where(keep_a, 0.0, tl.where(b < 0, -s, s)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + n[None, :] * cols_to + t0[:, None], out_a, mask=pairs_ok)
        tl.store(out_ptr + n[None, :] * cols_to + t1[:, None], out_b, mask=pairs_ok)


def _on_device(t: torch.Tensor):
    # Triton launches on the current device; switch only when t lives elsewhere.
    import contextlib

    if t.device.index is not None and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def transposable_mask(w: torch.Tensor) -> torch.Tensor:
    """Transposable 2:4 mask of a 2-D tensor as bool, same shape (Triton on CUDA, else the reference).

    Shapes that are not multiples of 4 are scored as if zero-padded and then cropped, so a
    cropped edge row or column may keep fewer than two of its (< 4) entries.
    """
    if w.dim() != 2:
        raise ValueError(f"transposable_mask takes a 2-D weight, got shape {tuple(w.shape)}")
    if not use_triton(w):
        return transposable_mask_reference(w)
    w = w.detach()
    if w.stride(1) != 1:
        w = w.contiguous()
    rows, cols = w.shape
    nbr, nbc = cdiv(rows, 4), cdiv(cols, 4)
    nblocks = nbr * nbc
    m = torch.empty(rows, cols, dtype=torch.uint8, device=w.device)
    if nblocks:
        blocks = 32
        with _on_device(w):
            _transposable_mask_kernel[(cdiv(nblocks, blocks),)](
                w, m, _kernel_table(w.device), rows, cols, w.stride(0), nbc, nblocks,
                BLOCKS=blocks, NP=NPAT_PADDED, num_warps=4)
    return m.view(torch.bool)


def masked_weights(w: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype,
                   rows_to: Optional[int] = None, cols_to: Optional[int] = None):
    """((W*M) as dtype zero-padded to [rows_to, cols_to], and its transpose), both contiguous."""
    rows, cols = w.shape
    rows_to, cols_to = rows_to or rows, cols_to or cols
    if rows_to < rows or cols_to < cols:
        raise ValueError(f"masked_weights: padded shape ({rows_to}, {cols_to}) is smaller than {tuple(w.shape)}")
    if mask.shape != w.shape or mask.dtype != torch.bool:
        raise ValueError("masked_weights: mask must be a bool tensor of the weight's shape")
    if not use_triton(w):
        return masked_weights_reference(w, mask, dtype, rows_to, cols_to)
    w = w.detach()
    if w.stride(1) != 1:
        w = w.contiguous()
    mask = mask.contiguous()
    out = torch.empty(rows_to, cols_to, dtype=dtype, device=w.device)
    out_t = torch.empty(cols_to, rows_to, dtype=dtype, device=w.device)
    br, bc = 64, 64
    with _on_device(w):
        _masked_weights_kernel[(cdiv(rows_to, br), cdiv(cols_to, bc))](
            w, mask.view(torch.uint8), out, out_t, rows, cols, rows_to, cols_to, w.stride(0),
            BR=br, BC=bc, num_warps=4)
    return out, out_t


def mvue24_uniforms(tokens_to: int, features_to: int, device) -> torch.Tensor:
    """The uniform numbers mvue24 consumes: [tokens_to // 2, features_to] float32 in [0, 1)."""
    return torch.rand(tokens_to // 2, features_to, dtype=torch.float32, device=device)


def mvue24(g: torch.Tensor, u: torch.Tensor, rows_to: Optional[int] = None, cols_to: Optional[int] = None) -> torch.Tensor:
    """Unbiased 2:4 sparsification of g^T: g [tokens, features] -> [rows_to, cols_to] (features x tokens)."""
    if g.dim() != 2:
        raise ValueError(f"mvue24 takes a 2-D gradient, got shape {tuple(g.shape)}")
    T, N = g.shape
    rows_to, cols_to = rows_to or N, cols_to or T
    if cols_to % 2 or T > cols_to or N > rows_to:
        raise ValueError("mvue24: padded sizes must cover g and the token count must be even")
    if tuple(u.shape) != (cols_to // 2, rows_to) or u.dtype != torch.float32:
        raise ValueError(f"mvue24: u must be float32 of shape ({cols_to // 2}, {rows_to}), got {tuple(u.shape)} {u.dtype}")
    if not use_triton(g):
        return mvue24_reference(g, u, rows_to, cols_to)
    g = g.contiguous()
    out = torch.empty(rows_to, cols_to, dtype=g.dtype, device=g.device)
    bp, bn = 32, 64
    with _on_device(g):
        _mvue24_kernel[(cdiv(cols_to // 2, bp), cdiv(rows_to, bn))](
            g, u.contiguous(), out, T, N, rows_to, cols_to, BP=bp, BN=bn, num_warps=4)
    return out

# ----------------------------------------------------------------------------------------------
# The 2:4 linear layer's autograd Function (membit.sparse.SparseLinear24 runs it)
# ----------------------------------------------------------------------------------------------


def _cusparselt():
    # membit.sparse holds the cuSPARSELt wrappers and imports this module from its __init__:
    # imported at call time, so that importing membit.ops.sparse24 first is not circular.
    from ..sparse import cusparselt

    return cusparselt


class _Cslt:
    """W*M and (W*M)^T compressed for cuSPARSELt, zero-padded to ALIGN, for one forward and its backward."""

    __slots__ = ("out_f", "in_f", "out_p", "in_p", "w_c", "wt_c")

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype):
        cusparselt = _cusparselt()
        self.out_f, self.in_f = weight.shape
        self.out_p, self.in_p = cusparselt.padded(self.out_f), cusparselt.padded(self.in_f)
        wm, wmt = masked_weights(weight, mask, dtype, self.out_p, self.in_p)
        self.w_c = cusparselt.compress(wm)
        self.wt_c = cusparselt.compress(wmt)

    @staticmethod
    def pad(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        # Contiguous always: cuSPARSELt reads a non-contiguous B as the transpose of a
        # contiguous matrix, so any other strides (a slice, an expanded gradient) would be misread.
        r, c = t.shape
        return t.contiguous() if (r, c) == (rows, cols) else F.pad(t, (0, cols - c, 0, rows - r))

    def forward(self, x2: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        cusparselt = _cusparselt()
        T = x2.shape[0]
        tp = cusparselt.padded(T, cusparselt.TOKEN_ALIGN)
        xp = self.pad(x2, tp, self.in_p)
        bp = None if bias is None else F.pad(bias, (0, self.out_p - self.out_f))
        y = cusparselt.spmm(self.w_c, self.out_p, self.in_p, xp.t(), bias=bp, transpose_result=True)
        return y if (tp, self.out_p) == (T, self.out_f) else y[:T, :self.out_f]

    def input_grad(self, g2: torch.Tensor) -> torch.Tensor:
        cusparselt = _cusparselt()
        T = g2.shape[0]
        tp = cusparselt.padded(T, cusparselt.TOKEN_ALIGN)
        gp = self.pad(g2, tp, self.out_p)
        gx = cusparselt.spmm(self.wt_c, self.in_p, self.out_p, gp.t(), transpose_result=True)
        return gx if (tp, self.in_p) == (T, self.in_f) else gx[:T, :self.in_f]

    def weight_grad_mvue(self, g2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        cusparselt = _cusparselt()
        T = g2.shape[0]
        tp = cusparselt.padded(T, cusparselt.ALIGN)
        s = mvue24(g2, mvue24_uniforms(tp, self.out_p, g2.device), self.out_p, tp)  # [out_p, tp], 2:4 along tokens
        gw = cusparselt.spmm(cusparselt.compress(s), self.out_p, tp, self.pad(x2, tp, self.in_p))
        return gw[:self.out_f, :self.in_f]


# The class name is its backward node's (_Sparse24LinearBackward), which profiler reports show
# as the op that saved the layer's input: renaming it changes their op labels.
class _Sparse24Linear(torch.autograd.Function):
    """y = x @ (W*M)^T + b with the straight-through weight gradient plus masked decay."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask, dtype, use_cslt, decay, mvue):
        # detach: a view made here of an input that requires grad would itself require grad,
        # and torch 1.13 cannot save such a leaf under saved-tensor hooks (we do the backward).
        x2 = x.detach().reshape(-1, x.shape[-1]).to(dtype)
        b = None if bias is None else bias.to(dtype)
        if use_cslt:
            ops = _Cslt(weight, mask, dtype)
            y2 = ops.forward(x2, b)
        else:
            ops = None
            y2 = F.linear(x2, torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)).to(dtype), b)
        ctx.ops, ctx.dtype, ctx.decay, ctx.mvue = ops, dtype, decay, mvue
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        # Only the activation goes through save_for_backward (and so through saved-tensor hooks,
        # where profilers count it); the weight and mask are the layer's own tensors, held by
        # reference (torch 1.13 cannot unpack a saved leaf parameter under saved-tensor hooks).
        ctx.save_for_backward(x2)
        ctx.weight, ctx.mask = weight, mask
        return y2.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, gy):
        (x2,) = ctx.saved_tensors
        weight, mask, ops = ctx.weight, ctx.mask, ctx.ops
        g2 = gy.reshape(-1, weight.shape[0]).to(ctx.dtype)
        gx = gw = gb = None
        zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
        if ctx.needs_input_grad[0]:
            if ops is not None:
                gx2 = ops.input_grad(g2)
            else:
                gx2 = g2 @ torch.where(mask, weight, zero).to(ctx.dtype)
            gx = gx2.reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            if ctx.mvue and ops is not None:
                gw = ops.weight_grad_mvue(g2, x2)
            elif ctx.mvue:
                T = g2.shape[0]
                tp = T + T % 2
                s = mvue24(g2, mvue24_uniforms(tp, weight.shape[0], g2.device), weight.shape[0], tp)
                gw = s[:, :T] @ x2
            else:
                gw = g2.t() @ x2
            gw = gw.to(weight.dtype)
            if ctx.decay:
                gw = gw + ctx.decay * torch.where(mask, zero, weight)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            # 16-bit gradients are summed in float32 (T terms each), as cuBLAS accumulates.
            acc = torch.float32 if g2.element_size() < 4 else g2.dtype
            gb = g2.sum(0, dtype=acc).to(ctx.bias_dtype)
        return gx, gw, gb, None, None, None, None, None
