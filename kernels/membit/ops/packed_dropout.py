"""Dropout that keeps a 1-bit mask ("packed") or no mask at all ("recompute").

The mask is a pure function of (seed, element index, p): Philox4x32-10 keyed by a 64-bit seed
that is drawn from torch's own generator of the input's device. So the same seed gives the
same mask on every device, `torch.manual_seed` reproduces it, and activation checkpointing
(which restores the RNG state before recomputing) regenerates it.

Layout. Elements are taken in row-major (contiguous) order and grouped in words of 16:
word g covers elements 16g .. 16g+15, element 16g+j is bit j. Word g draws two Philox blocks,
counter (lo32(g), hi32(g), h, 0) for h = 0, 1, i.e. 8 x 32 random bits, cut into sixteen
16-bit numbers r_j: j = 8h + 2k + s takes the low (s = 0) or high (s = 1) half of output k of
block h. Element j is kept iff r_j >= round(p * 2^16). Bits past the end of the tensor are 0.
So one Philox block serves the 8 elements of one byte of the mask (byte 2g + h, little-endian),
which is how the kernel works: one thread owns rows of 8 contiguous elements (one 16-byte
load in fp16/bf16), draws that row's Philox block and writes that row's mask byte, and never
needs another thread's random numbers.

Honest probability. Comparing 16-bit numbers against round(p * 2^16) drops with probability
p_eff = round(p * 2^16) / 2^16, which differs from p by at most 2^-17 (7.6e-6): e.g. p = 0.1
gives p_eff = 0.10000610. The kept values are scaled by 1 / (1 - p), like F.dropout, so E[y]
differs from x by the same relative 2^-17 / (1 - p). `effective_p(p)` returns p_eff; the
statistical tests check the keep rate against it. 16 bits per element cost one Philox call per
8 elements; 8 bits would halve the RNG work but put p_eff up to 2^-9 away from p (TransformerEngine
takes that route and requires p to be a multiple of 1/256).

Three layers: the Triton kernels (CUDA, fp16/bf16/fp32), the pure-torch reference (every other
device and dtype, and the tests' oracle), and the autograd op, registered as a torch.library
custom op where the installed torch has custom_op (2.4+) so torch.compile does not graph-break.
"""

import os
import threading
from typing import Optional, Tuple

import torch

from .utils import MASK_WORD_BITS, cdiv, has_custom_op, triton_available, use_triton

MODES = ("packed", "recompute")

# Random bits compared per element (fixed by the layout above), and Philox rounds: 10 is the
# standard Philox4x32-10 that curand and PyTorch use. The kernels take the rounds as a
# compile-time constant and the reference takes the same argument, so a variant has an oracle.
RAND_BITS = 16
PHILOX_ROUNDS = 10

# Philox4x32 constants (Salmon et al., SC'11; Random123).
_PHILOX_M0 = 0xD2511F53
_PHILOX_M1 = 0xCD9E8D57
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_M32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# Probability quantisation
# ----------------------------------------------------------------------------------------------


def keep_threshold(p: float) -> int:
    """Integer threshold t: an element whose 16-bit random number is < t is dropped."""
    t = int(float(p) * (1 << RAND_BITS) + 0.5)
    return min(max(t, 0), 1 << RAND_BITS)


def effective_p(p: float) -> float:
    """The drop probability the kernels actually realise for nominal p (|p_eff - p| <= 2^-17)."""
    return keep_threshold(p) / float(1 << RAND_BITS)


def dropout_scale(p: float) -> float:
    """1 / (1 - p), as F.dropout scales kept values; 0 for p = 1 (everything is dropped)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def draw_seed(device) -> torch.Tensor:
    """The 62-bit Philox key the next dropout call on `device` takes, as an int64 [1] tensor there.

    On CUDA the key is `next_key(device)` (made on the host from the generator's seed and
    offset). While a CUDA graph is being captured it is drawn on the device instead, so each
    replay draws a fresh one (torch's CUDA generator is graph-safe) rather than reusing the
    key that was current at capture.
    """
    device = torch.device(device)
    key = next_key(device)
    if key is None:
        return torch.randint(0, 1 << 62, (1,), dtype=torch.int64, device=device)
    return torch.tensor([key], dtype=torch.int64, device=device)


_M64 = (1 << 64) - 1
_KEY_BITS = (1 << 62) - 1
_SEED_LOCK = threading.Lock()


def _mix64(z: int) -> int:
    # splitmix64's finaliser: neighbouring offsets give unrelated keys.
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def next_key(device: torch.device) -> Optional[int]:
    """The next Philox key from torch's generator for `device`, as a Python int (< 2^62).

    CUDA: a function of the generator's seed and Philox offset, and the offset is advanced
    as one of torch's own random kernels would advance it. Nothing runs on the GPU, which
    matters because this is paid on every dropout call (a device-side draw is a kernel
    launch). torch.manual_seed resets both, so it reproduces the masks, and activation
    checkpointing restores both before recomputing, so the recomputation draws the same mask.
    Returns None while a CUDA graph is being captured (a host-made key would be frozen into
    the graph). CPU: drawn from the CPU generator, as every torch CPU random op is.
    """
    if device.type != "cuda":
        return int(torch.randint(0, 1 << 62, (1,), dtype=torch.int64, device=device).item())
    if torch.cuda.is_current_stream_capturing():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    gen = torch.cuda.default_generators[index]
    # Two calls that must not interleave with another thread's: each key is taken once.
    with _SEED_LOCK:
        offset = gen.get_offset()
        gen.set_offset(offset + 4)
    return _mix64(gen.initial_seed() ^ _mix64(offset)) & _KEY_BITS


# ----------------------------------------------------------------------------------------------
# Pure-torch reference: Philox, mask words, packing, application
# ----------------------------------------------------------------------------------------------


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = PHILOX_ROUNDS):
    """Philox4x32-`rounds` on int64 tensors that hold uint32 values; returns 4 such tensors.

    int64 products wrap modulo 2^64, which is exactly the 64-bit product of two uint32s, so
    (prod >> 32) & M32 is its high word even when the int64 came out negative.
    """
    for _ in range(rounds):
        a = c0 * _PHILOX_M0
        b = c2 * _PHILOX_M1
        c0, c1, c2, c3 = ((b >> 32) & _M32) ^ c1 ^ k0, b & _M32, ((a >> 32) & _M32) ^ c3 ^ k1, a & _M32
        k0 = (k0 + _PHILOX_W0) & _M32
        k1 = (k1 + _PHILOX_W1) & _M32
    return c0, c1, c2, c3


def _random_slices(seed: torch.Tensor, first: int, count: int, rounds: int) -> torch.Tensor:
    """[count, 16] int64: the 16-bit random number of every element of words first..first+count-1."""
    device = seed.device
    s = seed.reshape(()).to(torch.int64)
    k0, k1 = s & _M32, (s >> 32) & _M32
    g = torch.arange(first, first + count, dtype=torch.int64, device=device)
    # Both Philox blocks of every word in one pass: counters (g, h) for h = 0 then 1.
    gg = torch.cat([g, g])
    c2 = torch.cat([torch.zeros_like(g), torch.ones_like(g)])
    r = philox4x32(gg & _M32, (gg >> 32) & _M32, c2, torch.zeros_like(gg), k0, k1, rounds)
    cols = []
    for h in range(2):
        for k in range(4):
            rk = r[k][h * count:(h + 1) * count]
            cols += [rk & 0xFFFF, rk >> 16]
    return torch.stack(cols, dim=1)


def _pack_rows(keep_rows: torch.Tensor) -> torch.Tensor:
    """[W, 16] bool -> [W] int16 words, element j of a row in bit j."""
    shifts = torch.arange(MASK_WORD_BITS, dtype=torch.int32, device=keep_rows.device)
    v = (keep_rows.to(torch.int32) << shifts).sum(dim=1, dtype=torch.int32)
    # Bit 15 makes a word >= 2^15: store its two's-complement int16 without relying on
    # out-of-range conversion behaviour.
    return torch.where(v >= 1 << 15, v - (1 << 16), v).to(torch.int16)


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    """Pack a bool keep-mask (any shape, row-major order) into int16 words; padding bits are 0."""
    flat = keep.reshape(-1).to(torch.bool)
    n = flat.numel()
    pad = cdiv(n, MASK_WORD_BITS) * MASK_WORD_BITS - n
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return _pack_rows(flat.view(-1, MASK_WORD_BITS))


def unpack_mask(words: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of pack_mask: int16 words -> flat bool keep-mask of n elements."""
    v = words.to(torch.int32) & 0xFFFF
    shifts = torch.arange(MASK_WORD_BITS, dtype=torch.int32, device=words.device)
    return ((v[:, None] >> shifts) & 1).to(torch.bool).reshape(-1)[:n]


def keep_words_reference(seed: torch.Tensor, n: int, p: float, rounds: int = PHILOX_ROUNDS,
                         words: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """The packed keep-mask (int16 words) the kernels produce for this seed, n and p.

    `words=(first, stop)` computes only that range of words (to check the end of a huge tensor).
    """
    nwords = cdiv(n, MASK_WORD_BITS)
    first, stop = words if words is not None else (0, nwords)
    stop = min(stop, nwords)
    keep = _random_slices(seed, first, stop - first, rounds) >= keep_threshold(p)
    tail = nwords * MASK_WORD_BITS - n
    if tail and stop == nwords and stop > first:
        keep[-1, MASK_WORD_BITS - tail:] = False
    return _pack_rows(keep)


def apply_mask_reference(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """x * keep * 1/(1-p), rounded once from float32 like the kernels (float64 stays float64).

    Multiplying by a 0/scale factor rather than selecting keeps F.dropout's semantics for
    non-finite inputs: a dropped inf or NaN gives NaN, as x * 0 does.
    """
    keep = keep.reshape(x.shape)
    scale = dropout_scale(p)
    if x.dtype == torch.float64:
        return x * (keep.to(torch.float64) * scale)
    # keep.float() * python scalar: the scalar is rounded to float32 first, as the kernel's
    # float32 `scale` argument is.
    return (x.to(torch.float32) * (keep.to(torch.float32) * scale)).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _philox(c0, c1, c2, c3, k0, k1, ROUNDS: tl.constexpr):
        # Philox4x32: per round two 32x32->64 multiplies (one IMAD.WIDE each) and xors.
        # Written with uint64 products rather than umulhi so it compiles on every Triton
        # from 2.1 on; the keys are uniform across the program, so their bumps are scalar.
        for _ in tl.static_range(ROUNDS):
            a = c0.to(tl.uint64) * 0xD2511F53
            b = c2.to(tl.uint64) * 0xCD9E8D57
            c0 = (b >> 32).to(tl.uint32) ^ c1 ^ k0
            c2 = (a >> 32).to(tl.uint32) ^ c3 ^ k1
            c1 = b.to(tl.uint32)
            c3 = a.to(tl.uint32)
            k0 = k0 + 0x9E3779B9
            k1 = k1 + 0xBB67AE85
        return c0, c1, c2, c3

    @triton.jit
    def _keep2(r, thr, SHIFT: tl.constexpr):
        # Two elements from one 32-bit random number: low half -> bit SHIFT, high -> SHIFT+1.
        lo = ((r & 0xFFFF) >= thr).to(tl.int32) << SHIFT
        hi = ((r >> 16) >= thr).to(tl.int32) << (SHIFT + 1)
        return lo | hi

    @triton.jit
    def _keep_bytes(r, seed, n, thr, ROUNDS: tl.constexpr):
        """Mask bytes (int32 in 0..255) of the 1-D vector of row indices r (int64, 8 elements a row).

        Row r is half h = r & 1 of word g = r >> 1: one Philox block, eight 16-bit numbers.
        Built from 1-D vectors; each row's random numbers stay in the thread that owns the row.
        """
        k0 = seed.to(tl.uint32)
        k1 = (seed >> 32).to(tl.uint32)
        g = r >> 1
        c0 = g.to(tl.uint32)
        c1 = (g >> 32).to(tl.uint32)
        c2 = (r & 1).to(tl.uint32)
        r0, r1, r2, r3 = _philox(c0, c1, c2, c0 * 0, k0, k1, ROUNDS)
        byte = _keep2(r0, thr, 0) | _keep2(r1, thr, 2) | _keep2(r2, thr, 4) | _keep2(r3, thr, 6)
        # Clear the bits past element n-1 so the mask depends only on (seed, n, p).
        nvalid = tl.minimum(tl.maximum(n - r * 8, 0), 8)
        one = r * 0 + 1
        return byte & ((one << nvalid) - 1).to(tl.int32)

    @triton.jit
    def _apply_rows(src_ptr, dst_ptr, r, byte, n, scale):
        # dst = src * (bit ? scale : 0), in float32, rounded once, as F.dropout does.
        # The tile is [rows, 8]: a row is 8 contiguous elements, one 16-byte access in 16-bit
        # dtypes, so the thread that drew a row's mask byte also loads and stores that row.
        j = tl.arange(0, 8)
        offs = r[:, None] * 8 + j[None, :]
        inb = offs < n
        src = tl.load(src_ptr + offs, mask=inb, other=0.0)
        keep = ((byte[:, None] >> j[None, :]) & 1) != 0
        dst = src.to(tl.float32) * tl.where(keep, scale, 0.0)
        tl.store(dst_ptr + offs, dst.to(dst_ptr.dtype.element_ty), mask=inb)

    @triton.jit(do_not_specialize=["key_lo", "key_hi"])
    def _dropout_fwd_kernel(x_ptr, y_ptr, mask_ptr, seed_ptr, key_lo, key_hi, n, nrows, thr, scale,
                            ROWS: tl.constexpr, ROUNDS: tl.constexpr, STORE_MASK: tl.constexpr,
                            SEED_FROM_PTR: tl.constexpr):
        # One program: ROWS mask bytes = 8 * ROWS elements. Indices in int64 (n may pass 2^31).
        # mask_ptr is the int16 word buffer viewed as bytes: byte 2g + h of a little-endian word.
        # The key is read from seed_ptr (a device-side draw, e.g. under CUDA-graph capture) or
        # given as two 31-bit halves: always i32 arguments, never specialised on their value,
        # so a new key never compiles a new variant.
        pid = tl.program_id(0)
        r = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS)
        if SEED_FROM_PTR:
            seed = tl.load(seed_ptr)
        else:
            seed = key_lo.to(tl.int64) | (key_hi.to(tl.int64) << 31)
        byte = _keep_bytes(r, seed, n, thr, ROUNDS)
        if STORE_MASK:
            tl.store(mask_ptr + r, byte.to(tl.int8), mask=r < nrows)
        _apply_rows(x_ptr, y_ptr, r, byte, n, scale)

    @triton.jit
    def _dropout_bwd_kernel(g_ptr, dx_ptr, mask_ptr, n, nrows, scale, ROWS: tl.constexpr):
        # dx = g * unpack(mask) * scale; the mask read is n/8 bytes against 2 * n * itemsize of data.
        pid = tl.program_id(0)
        r = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS)
        byte = tl.load(mask_ptr + r, mask=r < nrows, other=0).to(tl.int32) & 0xFF
        _apply_rows(g_ptr, dx_ptr, r, byte, n, scale)


class KernelConfig:
    """Launch parameters: mask bytes (rows of 8 elements) per program, warps, Philox rounds."""

    __slots__ = ("rows", "num_warps", "rounds")

    def __init__(self, rows: int = 512, num_warps: int = 4, rounds: int = PHILOX_ROUNDS):
        self.rows, self.num_warps, self.rounds = rows, num_warps, rounds

    def __repr__(self):
        return f"KernelConfig(rows={self.rows}, num_warps={self.num_warps}, rounds={self.rounds})"


DEFAULT_CONFIG = KernelConfig()


def _launch(kernel, grid, device, *args, **kwargs):
    # Triton launches on the current device: switch only when the tensor lives elsewhere
    # (the context manager costs microseconds on every call otherwise).
    if device.index is not None and device.index != torch.cuda.current_device():
        with torch.cuda.device(device):
            return kernel[grid](*args, **kwargs)
    return kernel[grid](*args, **kwargs)


class _Launcher:
    """Launches one @triton.jit kernel, reusing its compiled binary without Triton's dispatch.

    Triton's `kernel[grid](...)` binds the arguments, works out their specialisation, looks
    the binary up and builds launch metadata on every call: tens of microseconds of host time,
    paid once per dropout call forward and backward, which is what made packed dropout slower
    than F.dropout on models whose step is bound by host time. Here the binary Triton compiled
    is kept under our own key, made of what Triton specialises on (each tensor's dtype and
    16-byte alignment; each int's divisibility by 16, equality to 1 and 32-bit range), and
    launched directly. A key not seen yet, a Triton whose launch interface is not the one
    this was written against, launch hooks (profilers) or MEMBIT_DROPOUT_LAUNCH=jit take
    Triton's own path.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.binaries = {}

    def __call__(self, grid0: int, device: torch.device, args: tuple, consts: tuple, num_warps: int):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if _DIRECT and index == torch.cuda.current_device() and not _launch_hooks():
            key = (index, consts, num_warps) + tuple(_spec(a) for a in args)
            binary = self.binaries.get(key)
            if binary is not None:
                run, function, metadata = binary
                run(grid0, 1, 1, _raw_stream(index), function, metadata, None, None, None, *args, *consts)
                return
            compiled = self.kernel[(grid0,)](*args, *consts, num_warps=num_warps)
            if _direct_launchable(compiled):
                self.binaries[key] = (compiled.run, compiled.function, compiled.packed_metadata)
            return
        _launch(self.kernel, (grid0,), device, *args, *consts, num_warps=num_warps)


def _spec(a):
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() & 15 == 0
    if isinstance(a, int):
        return a & 15 == 0, a == 1, -(1 << 31) <= a < (1 << 31)
    return type(a)


def _launch_interface_known() -> bool:
    # The direct launch passes (grid, stream, function, packed metadata, launch metadata,
    # enter hook, exit hook, *args) to CompiledKernel.run: the interface of Triton 3.3 to 3.6.
    if not triton_available() or os.environ.get("MEMBIT_DROPOUT_LAUNCH", "") == "jit":
        return False
    import triton

    try:
        major, minor = (int(v) for v in triton.__version__.split(".")[:2])
    except ValueError:
        return False
    return (3, 3) <= (major, minor) <= (3, 6) and hasattr(torch._C, "_cuda_getCurrentRawStream")


def _direct_launchable(compiled) -> bool:
    return all(getattr(compiled, a, None) is not None for a in ("run", "function", "packed_metadata"))


def _launch_hooks() -> bool:
    """Whether a Triton launch hook (a profiler's) is set: those launches go through Triton."""
    hook = _KNOBS.launch_enter_hook
    return hook is not None and bool(getattr(hook, "calls", True))


def _raw_stream(index: int) -> int:
    return torch._C._cuda_getCurrentRawStream(index)


_DIRECT = _launch_interface_known()
if _DIRECT:
    from triton import knobs as _triton_knobs

    _KNOBS = _triton_knobs.runtime
_FWD = _Launcher(_dropout_fwd_kernel) if triton_available() else None
_BWD = _Launcher(_dropout_bwd_kernel) if triton_available() else None


# ----------------------------------------------------------------------------------------------
# Host functions
# ----------------------------------------------------------------------------------------------


def packed_dropout_forward(x: torch.Tensor, p: float, store_mask: bool = True,
                           seed: Optional[torch.Tensor] = None,
                           config: Optional[KernelConfig] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode dropout of x (0 < p < 1). Returns (y, mask_words, seed).

    y is contiguous with x's shape. mask_words is int16 [ceil(n/16)] when store_mask, else
    empty; seed is the int64 [1] Philox key on x's device (taken from torch's RNG unless given).
    """
    cfg = config or DEFAULT_CONFIG
    if seed is None:
        seed = draw_seed(x.device)
    xc = x.contiguous()
    if xc.numel() > 0 and use_triton(xc):
        y, mask = _kernel_forward(xc, p, store_mask, cfg, seed_ptr=seed)
        return y, mask, seed
    n = xc.numel()
    words = keep_words_reference(seed, n, p, cfg.rounds)
    y = apply_mask_reference(xc, unpack_mask(words, n), p)
    if not store_mask:
        words = words.new_empty((0,))
    return y, words, seed


def packed_dropout_backward(grad: torch.Tensor, mask: torch.Tensor, seed: torch.Tensor, p: float,
                            packed: bool = True, config: Optional[KernelConfig] = None) -> torch.Tensor:
    """grad * keep * 1/(1-p), keep unpacked from `mask` (packed) or regenerated from `seed`."""
    cfg = config or DEFAULT_CONFIG
    n = grad.numel()
    gc = grad.contiguous()
    if n > 0 and use_triton(gc):
        return _kernel_backward(gc, mask if packed else None, p, cfg, seed_ptr=seed)
    if packed:
        keep = unpack_mask(mask, n)
    else:
        keep = unpack_mask(keep_words_reference(seed, n, p, cfg.rounds), n)
    return apply_mask_reference(gc, keep, p)


def _kernel_forward(xc: torch.Tensor, p: float, store_mask: bool, cfg: KernelConfig,
                    seed_ptr: Optional[torch.Tensor] = None, key: int = 0):
    """The forward kernel on contiguous CUDA xc; the key comes from seed_ptr, or else `key`."""
    n = xc.numel()
    nwords = cdiv(n, MASK_WORD_BITS)
    y = torch.empty_like(xc, memory_format=torch.contiguous_format)
    # Allocated as the bytes the kernel writes; the int16 words are a view of them.
    mask = torch.empty((2 * nwords if store_mask else 0,), dtype=torch.int8, device=xc.device)
    nrows = 2 * nwords  # every byte of the word buffer is written, padding included
    from_ptr = seed_ptr is not None
    _FWD(cdiv(nrows, cfg.rows), xc.device,
         (xc, y, mask if store_mask else y, seed_ptr if from_ptr else y, key & 0x7FFFFFFF, key >> 31,
          n, nrows, keep_threshold(p), dropout_scale(p)),
         (cfg.rows, cfg.rounds, store_mask, from_ptr), cfg.num_warps)
    return y, mask.view(torch.int16)


def _kernel_backward(gc: torch.Tensor, mask: Optional[torch.Tensor], p: float, cfg: KernelConfig,
                     seed_ptr: Optional[torch.Tensor] = None, key: int = 0) -> torch.Tensor:
    """dx from the packed mask words, or (mask None) by redrawing the forward's mask."""
    n = gc.numel()
    nrows = 2 * cdiv(n, MASK_WORD_BITS)
    dx = torch.empty_like(gc, memory_format=torch.contiguous_format)
    grid0 = cdiv(nrows, cfg.rows)
    if mask is not None:
        _BWD(grid0, gc.device, (gc, dx, mask.view(torch.int8), n, nrows, dropout_scale(p)),
             (cfg.rows,), cfg.num_warps)
    else:
        # Dropout is linear in its input: the backward is the forward, same key, on grad.
        from_ptr = seed_ptr is not None
        _FWD(grid0, gc.device,
             (gc, dx, dx, seed_ptr if from_ptr else dx, key & 0x7FFFFFFF, key >> 31,
              n, nrows, keep_threshold(p), dropout_scale(p)),
             (cfg.rows, cfg.rounds, False, from_ptr), cfg.num_warps)
    return dx


# ----------------------------------------------------------------------------------------------
# Autograd: a torch.autograd.Function everywhere, a torch.library custom op where available
# ----------------------------------------------------------------------------------------------


class _PackedDropoutBackward(torch.autograd.Function):
    """The backward as a function of grad; linear, so its own backward is itself."""

    @staticmethod
    def forward(ctx, grad, mask, seed, p, packed):
        ctx.save_for_backward(mask, seed)
        ctx.p, ctx.packed = p, packed
        return packed_dropout_backward(grad, mask, seed, p, packed)

    @staticmethod
    def backward(ctx, gg):
        mask, seed = ctx.saved_tensors
        return _PackedDropoutBackward.apply(gg, mask, seed, ctx.p, ctx.packed), None, None, None, None


class PackedDropoutFunction(torch.autograd.Function):
    """y = dropout(x); saves the int16 mask words (packed), or nothing but a host key (recompute).

    On CUDA with the kernels, the key is a Python int from the generator's state (no device
    draw) and recompute mode saves no tensor at all. Elsewhere (the reference path, and while
    a CUDA graph is captured) the key is an int64 [1] tensor: the mask words or the 8-byte
    seed are saved.
    """

    @staticmethod
    def forward(ctx, x, p, store_mask):
        ctx.p, ctx.packed = p, store_mask
        xc = x.contiguous()
        if xc.is_cuda and use_triton(xc) and xc.numel() > 0:
            key = next_key(xc.device)
            if key is not None:
                y, mask = _kernel_forward(xc, p, store_mask, DEFAULT_CONFIG, key=key)
                ctx.key = key
                if store_mask:
                    ctx.save_for_backward(mask)
                return y
        ctx.key = None
        y, mask, seed = packed_dropout_forward(xc, p, store_mask)
        ctx.save_for_backward(mask if store_mask else seed)
        return y

    @staticmethod
    def backward(ctx, gy):
        key = ctx.key
        if key is not None:
            mask = ctx.saved_tensors[0] if ctx.packed else None
            if not torch.is_grad_enabled():
                return _kernel_backward(gy.contiguous(), mask, ctx.p, DEFAULT_CONFIG, key=key), None, None
            # create_graph: the differentiable backward takes the key as a tensor.
            seed = torch.tensor([key], dtype=torch.int64, device=gy.device)
            words = mask if mask is not None else seed
            return _PackedDropoutBackward.apply(gy, words, seed, ctx.p, ctx.packed), None, None
        # The one saved tensor is the mask (packed) or the seed (recompute); the host
        # function reads only the one it needs, so it is passed in both places.
        (saved,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
            return _PackedDropoutBackward.apply(gy, saved, saved, ctx.p, ctx.packed), None, None
        return packed_dropout_backward(gy, saved, saved, ctx.p, ctx.packed), None, None


_op = None
_bwd_op = None

if has_custom_op():
    try:
        @torch.library.custom_op("membit::packed_dropout", mutates_args=())
        def _packed_dropout_op(x: torch.Tensor, p: float, store_mask: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return packed_dropout_forward(x, p, store_mask)

        @_packed_dropout_op.register_fake
        def _packed_dropout_fake(x, p, store_mask):
            nwords = cdiv(x.numel(), MASK_WORD_BITS) if store_mask else 0
            return (torch.empty(x.shape, dtype=x.dtype, device=x.device),
                    x.new_empty((nwords,), dtype=torch.int16),
                    x.new_empty((1,), dtype=torch.int64))

        @torch.library.custom_op("membit::packed_dropout_backward", mutates_args=())
        def _packed_dropout_bwd_op(grad: torch.Tensor, mask: torch.Tensor, seed: torch.Tensor,
                                   p: float, packed: bool) -> torch.Tensor:
            return packed_dropout_backward(grad, mask, seed, p, packed)

        @_packed_dropout_bwd_op.register_fake
        def _packed_dropout_bwd_fake(grad, mask, seed, p, packed):
            return torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)

        def _fwd_setup(ctx, inputs, output):
            _, p, store_mask = inputs
            _, mask, seed = output
            ctx.p, ctx.packed = p, store_mask
            # Exactly one small tensor is kept for backward: n/8 bytes of mask, or 8 bytes of seed.
            ctx.save_for_backward(mask if store_mask else seed)

        def _fwd_backward(ctx, gy, _gmask, _gseed):
            (saved,) = ctx.saved_tensors
            mask, seed = (saved, saved[:0]) if ctx.packed else (saved[:0], saved)
            return _packed_dropout_bwd_op(gy, mask, seed, ctx.p, ctx.packed), None, None

        _packed_dropout_op.register_autograd(_fwd_backward, setup_context=_fwd_setup)

        def _bwd_setup(ctx, inputs, output):
            _, mask, seed, p, packed = inputs
            ctx.p, ctx.packed = p, packed
            ctx.save_for_backward(mask, seed)

        def _bwd_backward(ctx, gg):
            mask, seed = ctx.saved_tensors
            return _packed_dropout_bwd_op(gg, mask, seed, ctx.p, ctx.packed), None, None, None, None

        _packed_dropout_bwd_op.register_autograd(_bwd_backward, setup_context=_bwd_setup)
        _op, _bwd_op = _packed_dropout_op, _packed_dropout_bwd_op
    except Exception:  # an older or unusual torch whose custom_op rejects this: use the Function
        _op = _bwd_op = None


def uses_custom_op() -> bool:
    """Whether torch.compile sees packed_dropout as the torch.library op membit::packed_dropout."""
    return _op is not None


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    dynamo = getattr(torch, "_dynamo", None)
    return bool(dynamo is not None and hasattr(dynamo, "is_compiling") and dynamo.is_compiling())


# torch's own dropout, as it was when membit was imported: membit.patch later routes
# torch.nn.functional.dropout through membit, and stock dropout under compile must not loop back.
_torch_dropout = torch.nn.functional.dropout

# How membit's dropout runs inside code torch.compile traces (MEMBIT_COMPILE_DROPOUT, read when
# the graph is traced):
#   stock  torch's own dropout (the default). Inductor fuses it; no formulation of packing
#          held the step-time bar on every compiled model measured (RESULTS_compile.md: on an
#          H100, packed cost +1.9% step on a 6-layer GPT and +8.6% on HF GPT-2 medium;
#          recompute +7.0% and -2.0%), so a compiled model is not packed unless asked.
#   fused  the requested mode in plain ops Inductor fuses (compiled_dropout.py);
#   op     the Triton custom op, opaque to Inductor (materialised input and output).
COMPILE_FORMULATIONS = ("stock", "fused", "op")
_stock_noted = False


def compile_formulation() -> str:
    value = os.environ.get("MEMBIT_COMPILE_DROPOUT", "stock").strip().lower() or "stock"
    if value not in COMPILE_FORMULATIONS:
        raise ValueError(f"MEMBIT_COMPILE_DROPOUT={value!r}: expected one of {', '.join(COMPILE_FORMULATIONS)} "
                         "(stock: torch's dropout inside torch.compile; fused: packed/recompute in ops Inductor fuses; "
                         "op: membit's Triton op)")
    return value


def _traced_formulation() -> str:
    """compile_formulation() for code dynamo traces, saying once per process that dropout stays
    torch's own there. Dynamo runs this function for real while tracing and takes its result as
    a constant (assume_constant_result), so the warning is plain Python, not a graph break."""
    global _stock_noted
    how = compile_formulation()
    if how == "stock" and not _stock_noted:
        _stock_noted = True
        import warnings

        warnings.warn("membit: packed/recompute dropout inside torch.compile runs as torch's own dropout: "
                      "packing compiled models did not hold step time on every model measured (see membit's "
                      "README, 'torch.compile'). Set MEMBIT_COMPILE_DROPOUT=fused to pack under compile anyway.",
                      stacklevel=2)
    return how


_assume_constant = getattr(getattr(torch, "_dynamo", None), "assume_constant_result", None)
if _assume_constant is not None:
    _traced_formulation = _assume_constant(_traced_formulation)


def packed_dropout(x: torch.Tensor, p: float, mode: str = "packed") -> torch.Tensor:
    """Training-mode dropout, 0 < p < 1, with a 1-bit ("packed") or no ("recompute") saved mask.

    Argument checks, eval mode and p in {0, 1} live in membit.nn.functional.packed_dropout.
    Eager calls take the autograd.Function (a custom op's Python dispatch costs a few times
    more host time per call). Under torch.compile, MEMBIT_COMPILE_DROPOUT chooses (above):
    torch's own dropout by default, the plain-op formulation of compiled_dropout.py that
    Inductor fuses into its neighbours' kernels ("fused"), or the custom op ("op").
    """
    store_mask = mode == "packed"
    if _is_compiling():
        how = _traced_formulation()
        if how == "stock":
            return _torch_dropout(x, float(p), True)
        if how == "op" and _op is not None:
            return _op(x, float(p), store_mask)[0]
        from .compiled_dropout import compiled_dropout

        return compiled_dropout(x, p, mode)
    return PackedDropoutFunction.apply(x, float(p), store_mask)
