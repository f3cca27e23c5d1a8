"""CUDA, faked on a machine without one: the script's "cuda" tensors are meta tensors, counted with CUDA's rules.

Why meta and not FakeTensorMode's fake CUDA device: with a CPU-only PyTorch, autograd builds
each node's input metadata through the device guard of the tensor's device, and there is no
guard for CUDA in such a build; the process aborts on the first backward (and in weight init,
`.to("cuda")`, an embedding under `autocast("cuda")`). The meta device has a guard, a kernel
for nearly every op (shapes and dtypes, no data), and autograd runs on it. So:

  * `_FunctionMode` (a TorchFunctionMode) rewrites every "cuda" device a script asks for into
    "meta", answers host reads of meta tensors (`.item()`, `.tolist()`, `bool(t)`, `.cpu()`),
    and applies CUDA's autocast rules (meta tensors have no autocast of their own; CPU's op lists
    differ from CUDA's, e.g. CUDA runs softmax and layer_norm in float32);
  * `Accountant` (a TorchDispatchMode) sees every op's outputs; a meta output with a storage it
    has not seen is an allocation of the storage's bytes, freed when that storage is freed
    (a weakref finalizer on the storage). It writes the same trace the CUDA caching allocator
    writes (alloc / free_requested with the Python stack), so the harness's allocator replay
    and attribution turn it into a report unchanged;
  * small integer/bool tensors that come from real data (token ids, attention masks) keep a CPU
    "shadow" with their values, computed op by op, so `mask.all()` or `ids.max().item()` steer
    control flow exactly as on the GPU; a host read of a value that has no shadow (a loss, a
    norm) cannot be known: the script gets a placeholder and the report lists where.

Target-GPU semantics applied here: dropout keeps a bool mask (`native_dropout`, as CUDA's
F.dropout does, not CPU's float mask); `scaled_dot_product_attention` picks flash,
memory-efficient or math by CUDA's rules for the dtype, head size and mask (flash and
memory-efficient keep no probabilities); optimizers default to their foreach kernels, as they do
on CUDA (their temporaries are part of the step's peak).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

from ..profile.frames import CodeFilter
from . import scratch

META = torch.device("meta")
aten = torch.ops.aten

# Largest shadow (elements) computed on the CPU to keep a fake tensor's values.
SHADOW_LIMIT = 1 << 22
_SHADOW_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def is_cuda_device(d) -> bool:
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d == "cuda" or d.startswith("cuda:")
    return False


def _map_device(d):
    return META if is_cuda_device(d) else d


@dataclass
class HostRead:
    """A read of a fake tensor's value that the prediction could not know."""

    what: str
    file: str
    line: int
    user: bool  # in the user's code (may steer control flow) rather than a library's
    assumed: str
    count: int = 1


@dataclass
class Event:
    action: str
    addr: int
    size: int
    time_us: int
    frames: list = field(default_factory=list)
    # "rename": the block allocated as `prev` is from now on the storage `addr` (a gradient summed
    # in place: see Accountant._free). No memory moves.
    prev: int | None = None

    def doc(self) -> dict:
        d = {"action": self.action, "addr": self.addr, "size": self.size, "time_us": self.time_us, "frames": self.frames}
        if self.prev is not None:
            d["prev"] = self.prev
        return d


class AutocastState:
    """CUDA autocast as the script asked for it: a stack of (enabled, dtype, cache)."""

    def __init__(self):
        self.stack: list[tuple[bool, torch.dtype, bool]] = []
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.nesting = 0

    @property
    def enabled(self) -> bool:
        return bool(self.stack) and self.stack[-1][0]

    @property
    def dtype(self) -> torch.dtype:
        return self.stack[-1][1] if self.stack else torch.float16


# CUDA autocast's op lists (aten/src/ATen/autocast_mode.cpp), at the Python entry points that reach them.
def _lower_ops():
    T = torch.Tensor
    names = [F.linear, F.bilinear, torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mm, T.mm, torch.bmm, T.bmm,
             torch.baddbmm, T.baddbmm, torch.addmm, T.addmm, torch.addbmm, T.addbmm, torch.addmv, T.addmv,
             torch.addr, torch.mv, T.mv, torch.einsum, torch.chain_matmul, torch.linalg.multi_dot,
             torch.linalg.vecdot, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
             F.conv_transpose3d, F.prelu, torch.prelu, torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_tbc]
    return set(names)


def _fp32_ops():
    T = torch.Tensor
    names = [F.layer_norm, F.group_norm, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, T.softmax,
             T.log_softmax, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.kl_div,
             F.binary_cross_entropy_with_logits, F.soft_margin_loss, F.multilabel_margin_loss, F.margin_ranking_loss,
             F.hinge_embedding_loss, F.poisson_nll_loss, F.cosine_embedding_loss, F.triplet_margin_loss,
             torch.exp, T.exp, torch.expm1, T.expm1, torch.log, T.log, torch.log10, torch.log2, torch.log1p, T.log1p,
             torch.reciprocal, T.reciprocal, torch.rsqrt, T.rsqrt, torch.pow, T.pow, T.__pow__, torch.acos, torch.asin,
             torch.cosh, torch.sinh, torch.tan, torch.erfinv, F.softplus, torch.norm, T.norm, torch.cumsum, T.cumsum,
             torch.cumprod, T.cumprod, torch.logsumexp, T.logsumexp, torch.dist, torch.cdist, torch.renorm,
             F.cosine_similarity, torch.prod, T.prod, torch.sum if False else None]
    return {n for n in names if n is not None}


_PROMOTE = None


def _promote_ops():
    return {torch.cat, torch.stack, torch.addcdiv, torch.addcmul, torch.atan2, torch.cross, torch.dot,
            torch.index_put, torch.scatter_add, torch.tensordot}


class FakeCuda:
    """The environment: installed for the script's run, removed after (see install/uninstall)."""

    def __init__(self, gpu, code: CodeFilter, now: Callable[[], int], ranks: int = 1):
        self.gpu = gpu
        self.code = code
        self.now = now
        self.ranks = ranks
        self.autocast = AutocastState()
        self.host_reads: dict[tuple[str, int, str], HostRead] = {}
        self.sdpa_backends: dict[str, int] = {}
        self.matmuls = 0
        self.accountant = Accountant(self)
        self.fmode = _FunctionMode(self)
        self._restore: list = []
        self._lower = _lower_ops()
        self._fp32 = _fp32_ops()
        self._promote = _promote_ops()
        self.shadows: weakref.WeakKeyDictionary = None  # set in install (needs torch.utils.weak)
        # Storages of parameters a script built on the CPU: made meta at once (see
        # _patch_parameters) but allocated, as on a GPU, only when moved there (see place).
        self.unplaced: dict[int, weakref.ref] = {}
        self.deferring = False

    def place(self, t) -> None:
        """A parameter built on the CPU reaches the GPU: its allocation is counted now, where a
        CUDA run makes it (model.to's module order: children, then parameters, then buffers)."""
        if not self.unplaced or not isinstance(t, torch.Tensor) or t.device.type != "meta":
            return
        try:
            key = t.untyped_storage()._cdata
        except Exception:  # noqa: BLE001
            return
        if self.unplaced.pop(key, None) is not None:
            self.accountant._see(t)

    def place_all(self) -> None:
        """Every parameter still waiting is counted: a script that computes with them without a
        move this run recognises (model.to / .cuda) still holds them on the GPU."""
        for key, ref in list(self.unplaced.items()):
            st = ref()
            if st is not None and self.unplaced.pop(key, None) is not None:
                self.accountant.see_storage(st)

    # -- host reads -------------------------------------------------------------------------

    def note_read(self, what: str, assumed: str, depth: int = 3) -> None:
        f = sys._getframe(depth)
        user = self.code.user_frames(f, limit=1)
        fr = user[0] if user else (f.f_code.co_filename, f.f_lineno, f.f_code.co_name)
        is_user = bool(user) and not self.code.is_library(fr[0])
        key = (fr[0], fr[1], what)
        hr = self.host_reads.get(key)
        if hr is None:
            self.host_reads[key] = HostRead(what, fr[0], int(fr[1]), is_user, assumed)
        else:
            hr.count += 1

    # -- shadows ----------------------------------------------------------------------------

    def shadow(self, t) -> torch.Tensor | None:
        try:
            return self.shadows.get(t)
        except TypeError:
            return None

    def drop_shadow(self, t) -> None:
        try:
            self.shadows.pop(t, None)
        except TypeError:
            pass

    def set_shadow(self, t, value) -> None:
        try:
            self.shadows[t] = value
        except TypeError:
            pass

    # -- install ----------------------------------------------------------------------------

    def _replace(self, owner, name, new) -> None:
        original = getattr(owner, name)
        setattr(owner, name, new)
        self._restore.append((owner, name, original))

    def install(self) -> None:
        from torch.utils.weak import WeakTensorKeyDictionary

        self.shadows = WeakTensorKeyDictionary()
        try:
            # Build dynamo's rule map from the real functions (torch.frombuffer and others import it).
            import torch._dynamo.trace_rules as rules

            rules.get_torch_obj_rule_map()
        except Exception:  # noqa: BLE001 - no dynamo in this torch
            pass
        self._patch_cuda_module()
        self._patch_autocast()
        self._patch_functions()
        self._patch_optimizers()
        self._patch_parameters()
        self._patch_membit_kernels()

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

    @contextlib.contextmanager
    def active(self):
        """The modes, for the script's run (the caller installs the patches)."""
        with self.fmode, self.accountant:
            yield

    def _patch_cuda_module(self) -> None:
        gpu, acc = self.gpu, self.accountant
        cuda = torch.cuda
        major, minor = (int(x) for x in gpu.capability.split("."))

        class Props:
            name = gpu.name
            total_memory = gpu.total_bytes
            major_, minor_ = major, minor
            multi_processor_count = gpu.sms
            max_threads_per_multi_processor = gpu.threads_per_sm
            is_integrated = False
            is_multi_gpu_board = False
            L2_cache_size = 50 * 1024 * 1024

            def __repr__(self):
                return f"_CudaDeviceProperties(name='{gpu.name}', total_memory={gpu.total_bytes // (1 << 20)}MB (predicted))"

        props = Props()
        props.major, props.minor = major, minor

        class _Event:
            def __init__(self, *a, **k):
                pass

            def record(self, *a, **k):
                pass

            def synchronize(self):
                pass

            def query(self):
                return True

            def elapsed_time(self, other):
                return 0.0

        class _Stream:
            def __init__(self, *a, **k):
                pass

            def wait_stream(self, *a, **k):
                pass

            def synchronize(self):
                pass

            def record_event(self, *a, **k):
                return _Event()

            def wait_event(self, *a, **k):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

        def noop(*a, **k):
            return None

        patches = {
            "is_available": lambda: True,
            "device_count": lambda: self.ranks,
            "current_device": lambda: 0,
            "set_device": noop,
            "init": noop,
            "is_initialized": lambda: True,
            "synchronize": noop,
            "empty_cache": noop,
            "manual_seed": noop,
            "manual_seed_all": noop,
            "seed": noop,
            "seed_all": noop,
            "get_device_name": lambda *a, **k: gpu.name,
            "get_device_capability": lambda *a, **k: (major, minor),
            "get_device_properties": lambda *a, **k: props,
            "is_bf16_supported": lambda *a, **k: gpu.bf16,
            "memory_allocated": lambda *a, **k: acc.current,
            "max_memory_allocated": lambda *a, **k: acc.peak,
            "memory_reserved": lambda *a, **k: acc.current,
            "max_memory_reserved": lambda *a, **k: acc.peak,
            "reset_peak_memory_stats": noop,
            "reset_max_memory_allocated": noop,
            "reset_accumulated_memory_stats": noop,
            "mem_get_info": lambda *a, **k: (max(0, gpu.total_bytes - gpu.context_bytes - acc.current), gpu.total_bytes),
            "Event": _Event,
            "Stream": _Stream,
            "current_stream": lambda *a, **k: _Stream(),
            "default_stream": lambda *a, **k: _Stream(),
            "stream": lambda *a, **k: contextlib.nullcontext(),
            "device": lambda *a, **k: contextlib.nullcontext(),
            "get_rng_state": lambda *a, **k: torch.zeros(16, dtype=torch.uint8),
            "set_rng_state": noop,
            "get_rng_state_all": lambda *a, **k: [torch.zeros(16, dtype=torch.uint8)],
            "set_rng_state_all": noop,
        }
        def fresh(fn):
            # One function object per name: torch._dynamo's trace rules reject one object under two names.
            if isinstance(fn, type):
                return fn
            return lambda *a, **k: fn(*a, **k)

        patches = {name: fresh(fn) for name, fn in patches.items()}
        for name, fn in patches.items():
            if hasattr(cuda, name):
                self._replace(cuda, name, fn)
        # torch.utils.checkpoint and others reach the device module through torch.cuda's submodules too.
        if hasattr(cuda, "random"):
            for name in ("get_rng_state", "set_rng_state", "manual_seed", "manual_seed_all"):
                if hasattr(cuda.random, name):
                    self._replace(cuda.random, name, fresh(patches[name]))
        if hasattr(cuda, "memory"):
            for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
                         "reset_peak_memory_stats", "empty_cache", "mem_get_info"):
                if hasattr(cuda.memory, name):
                    self._replace(cuda.memory, name, fresh(patches[name]))
        try:
            import torch.backends.cuda as bcuda

            self._replace(bcuda, "is_built", lambda: True)
        except Exception:  # noqa: BLE001
            pass

    def _patch_autocast(self) -> None:
        env = self
        original = torch.amp.autocast_mode.autocast

        class autocast(original):
            """torch.autocast: CUDA (and meta) regions go to the prediction's own autocast."""

            def __init__(self, device_type="cuda", dtype=None, enabled=True, cache_enabled=None):
                self._fake = device_type in ("cuda", "meta")
                if not self._fake:
                    super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
                    return
                self.device = "cuda"
                self.fast_dtype = dtype if dtype is not None else torch.float16
                self._enabled = bool(enabled)
                self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)

            def __enter__(self):
                if not self._fake:
                    return super().__enter__()
                st = env.autocast
                st.stack.append((self._enabled, self.fast_dtype, self._cache_enabled))
                st.nesting += 1
                return self

            def __exit__(self, *exc):
                if not self._fake:
                    return super().__exit__(*exc)
                st = env.autocast
                st.stack.pop()
                st.nesting -= 1
                if st.nesting == 0:
                    # As CUDA autocast: the cast weights live until the outermost region exits.
                    st.cache.clear()
                return False

            def __call__(self, func):
                @functools.wraps(func)
                def wrapped(*a, **k):
                    with self:
                        return func(*a, **k)
                return wrapped

        def cuda_amp_autocast(enabled=True, dtype=torch.float16, cache_enabled=True):
            return autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

        self._replace(torch.amp.autocast_mode, "autocast", autocast)
        self._replace(torch.amp, "autocast", autocast)
        self._replace(torch, "autocast", autocast)
        if hasattr(torch.cuda, "amp") and hasattr(torch.cuda.amp, "autocast"):
            self._replace(torch.cuda.amp, "autocast", cuda_amp_autocast)
        orig_enabled = torch.is_autocast_enabled

        def is_autocast_enabled(device_type=None):
            if device_type is None or device_type in ("cuda", "meta"):
                return env.autocast.enabled
            return orig_enabled(device_type)

        self._replace(torch, "is_autocast_enabled", is_autocast_enabled)
        # Activation checkpointing re-enters autocast for its recompute only where the device type
        # has one: the fake GPU's must count, or the recompute runs in float32 and fails its check.
        orig_avail = getattr(torch.amp, "is_autocast_available", None)
        if orig_avail is not None:
            def is_autocast_available(device_type):
                return device_type in ("cuda", "meta") or orig_avail(device_type)

            self._replace(torch.amp, "is_autocast_available", is_autocast_available)
            if getattr(torch.amp.autocast_mode, "is_autocast_available", None) is orig_avail:
                self._replace(torch.amp.autocast_mode, "is_autocast_available", is_autocast_available)
        if hasattr(torch, "get_autocast_dtype"):
            orig_dtype = torch.get_autocast_dtype

            def get_autocast_dtype(device_type):
                if device_type in ("cuda", "meta"):
                    return env.autocast.dtype
                return orig_dtype(device_type)

            self._replace(torch, "get_autocast_dtype", get_autocast_dtype)
        if hasattr(torch, "get_autocast_gpu_dtype"):
            self._replace(torch, "get_autocast_gpu_dtype", lambda: env.autocast.dtype)
        # GradScaler: unscaling checks for infs with a host read that steers the step; a scaler
        # that scales the loss (a tensor the size of the loss) and always steps keeps the memory.
        if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
            self._replace(torch.amp, "GradScaler", _PassScaler)
            if hasattr(torch.cuda.amp, "GradScaler"):
                self._replace(torch.cuda.amp, "GradScaler", _PassScaler)

    def _patch_parameters(self) -> None:
        # Parameters are meta from the moment they are made: a model built on the CPU and then
        # moved would otherwise be initialised for real (half a minute for GPT-2 medium on 2 cores)
        # only to be replaced by meta tensors at .to("cuda"). Their allocation waits for that move
        # (see place): the order of a model's blocks in the allocator's segments is model.to's,
        # buffers among parameters, and it decides where later blocks fit.
        env = self
        original = torch.nn.Parameter.__new__

        def new(cls, data=None, requires_grad=True):
            if isinstance(data, torch.Tensor) and data.device.type == "cpu" and data.is_floating_point() \
                    and not isinstance(data, torch.nn.Parameter):
                env.deferring = True
                try:
                    data = data.to(META)
                finally:
                    env.deferring = False
            return original(cls, data, requires_grad)

        self._replace(torch.nn.Parameter, "__new__", staticmethod(new))

    def _patch_membit_kernels(self) -> None:
        # membit's packed dropout runs its Triton kernels on CUDA; on meta it would take the pure-torch
        # reference, whose temporaries (random words per element) no GPU run allocates. These keep
        # exactly the kernels' allocations: the output, the int16 mask words (or none) and the seed.
        try:
            from ..ops import packed_dropout as pd
        except ImportError:
            return
        fwd, bwd = pd.packed_dropout_forward, pd.packed_dropout_backward

        def forward(x, p, store_mask=True, seed=None, config=None):
            if x.device.type != "meta":
                return fwd(x, p, store_mask, seed, config)
            if seed is None:
                seed = torch.empty((1,), dtype=torch.int64, device=x.device)
            xc = x.contiguous()
            y = torch.empty_like(xc, memory_format=torch.contiguous_format)
            nwords = pd.cdiv(x.numel(), pd.MASK_WORD_BITS)
            mask = torch.empty((nwords if store_mask else 0,), dtype=torch.int16, device=x.device)
            return y, mask, seed

        def backward(grad, mask, seed, p, packed=True, config=None):
            if grad.device.type != "meta":
                return bwd(grad, mask, seed, p, packed, config)
            return torch.empty_like(grad.contiguous(), memory_format=torch.contiguous_format)

        self._replace(pd, "packed_dropout_forward", forward)
        self._replace(pd, "packed_dropout_backward", backward)

    def _patch_functions(self) -> None:
        env = self
        original_dropout = F.dropout

        def dropout(input, p=0.5, training=True, inplace=False):
            # CUDA's F.dropout is native_dropout: a bool mask, 1 byte per element (CPU keeps a float mask).
            if isinstance(input, torch.Tensor) and input.device.type == "meta" and training and 0.0 < p < 1.0:
                out = torch.native_dropout(input, p, True)[0]
                if inplace:
                    return input.copy_(out)
                return out
            return original_dropout(input, p, training, inplace)

        dropout.__wrapped__ = original_dropout
        self._replace(F, "dropout", dropout)

        # Activation checkpointing recomputes in backward, on autograd's thread, where this
        # thread's function modes are not on the stack: the recompute gets ours back (device
        # mapping, CUDA autocast), or it would run other ops than the forward it repeats.
        import torch.utils.checkpoint as ckpt

        orig_ckpt = ckpt.checkpoint

        def checkpoint(function, *args, **kwargs):
            def run(*a, **k):
                if any(m is env.fmode for m in torch.overrides._get_current_function_mode_stack()):
                    return function(*a, **k)
                with env.fmode:
                    return function(*a, **k)
            return orig_ckpt(run, *args, **kwargs)

        checkpoint.__wrapped__ = orig_ckpt
        self._replace(ckpt, "checkpoint", checkpoint)

        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None:
            def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                             scale=None, enable_gqa=False, **kw):
                if not (isinstance(query, torch.Tensor) and query.device.type == "meta"):
                    return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                scale=scale, **({"enable_gqa": enable_gqa} if enable_gqa else {}), **kw)
                return env._sdpa(sdpa, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)

            scaled_dot_product_attention.__wrapped__ = sdpa
            self._replace(F, "scaled_dot_product_attention", scaled_dot_product_attention)

    def _sdpa(self, sdpa, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        """CUDA's backend choice (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, simplified)."""
        st = self.autocast
        if st.enabled:
            # scaled_dot_product_attention is on CUDA autocast's lower-precision list.
            dt = st.dtype
            q, k, v = (x.to(dt) if x.is_floating_point() and x.dtype != dt and x.dtype != torch.float64 else x
                       for x in (q, k, v))
        if enable_gqa and q.dim() == 4 and k.shape[-3] != q.shape[-3]:
            rep = q.shape[-3] // k.shape[-3]
            k = k.repeat_interleave(rep, dim=-3)
            v = v.repeat_interleave(rep, dim=-3)
        backend = self.sdpa_backend(q, k, v, attn_mask, dropout_p)
        self.sdpa_backends[backend] = self.sdpa_backends.get(backend, 0) + 1
        if backend == "flash":
            out = aten._scaled_dot_product_flash_attention(q, k, v, float(dropout_p), bool(is_causal), False, scale=scale)
            return out[0]
        if backend == "efficient":
            bias = attn_mask
            if bias is not None and bias.dtype is torch.bool:
                # As sdp_utils' convert_boolean_attn_mask: a float mask of the query's dtype.
                bias = torch.zeros_like(bias, dtype=q.dtype).masked_fill_(bias.logical_not(), float("-inf"))
            if bias is not None and bias.dim() == 4 and bias.shape[-3] == 1 and q.shape[-3] != 1:
                bias = bias.expand(bias.shape[0], q.shape[-3], bias.shape[-2], bias.shape[-1])
            needs_grad = q.requires_grad or k.requires_grad or v.requires_grad
            out = aten._scaled_dot_product_efficient_attention(q, k, v, bias, needs_grad, float(dropout_p),
                                                               bool(is_causal), scale=scale)
            return out[0]
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)

    def sdpa_backend(self, q, k, v, attn_mask, dropout_p) -> str:
        bk = torch.backends.cuda
        flash_on = bk.flash_sdp_enabled() if hasattr(bk, "flash_sdp_enabled") else True
        eff_on = bk.mem_efficient_sdp_enabled() if hasattr(bk, "mem_efficient_sdp_enabled") else True
        math_on = bk.math_sdp_enabled() if hasattr(bk, "math_sdp_enabled") else True
        dims_ok = q.dim() == 4 and k.dim() == 4 and v.dim() == 4
        d = q.shape[-1]
        dv = v.shape[-1]
        major = self.gpu.major
        if flash_on and dims_ok and major >= 8 and q.dtype in (torch.float16, torch.bfloat16) and attn_mask is None \
                and d == dv and d % 8 == 0 and d <= 256 and k.dtype == q.dtype and v.dtype == q.dtype:
            return "flash"
        align = 4 if q.dtype is torch.float32 else 8
        if eff_on and dims_ok and major >= 5 and q.dtype in (torch.float16, torch.bfloat16, torch.float32) \
                and d % align == 0 and dv % align == 0 and k.dtype == q.dtype and v.dtype == q.dtype \
                and not (q.dtype is torch.bfloat16 and major < 8):
            return "efficient"
        if not math_on:
            raise RuntimeError("scaled_dot_product_attention: no CUDA backend is enabled for these inputs")
        return "math"

    def _patch_optimizers(self) -> None:
        import torch.optim.optimizer as optmod

        original = optmod._default_to_fused_or_foreach

        def default_to_fused_or_foreach(params, differentiable, use_fused=False):
            # On CUDA, optimizers take their foreach (multi-tensor) path by default; on meta they would not.
            if not differentiable and params and all(isinstance(p, torch.Tensor) and p.device.type == "meta"
                                                     for p in params if p is not None):
                return (bool(use_fused), not use_fused)
            return original(params, differentiable, use_fused)

        self._replace(optmod, "_default_to_fused_or_foreach", default_to_fused_or_foreach)
        for name in ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adamax", "nadam", "radam", "asgd", "adadelta", "lion"):
            try:
                mod = __import__(f"torch.optim.{name}", fromlist=["_default_to_fused_or_foreach"])
            except ImportError:
                continue
            if getattr(mod, "_default_to_fused_or_foreach", None) is original:
                self._replace(mod, "_default_to_fused_or_foreach", default_to_fused_or_foreach)
        # The foreach kernels' device check: the meta device counts as CUDA here.
        try:
            from torch.utils import _foreach_utils as fu

            orig_sup = fu._get_foreach_kernels_supported_devices
            self._replace(fu, "_get_foreach_kernels_supported_devices", lambda: list(orig_sup()) + ["meta"])
            orig_fused = fu._get_fused_kernels_supported_devices
            self._replace(fu, "_get_fused_kernels_supported_devices", lambda: list(orig_fused()) + ["meta"])
        except (ImportError, AttributeError):
            pass

    # -- autocast at the function level -----------------------------------------------------

    def autocast_args(self, func, args, kwargs):
        st = self.autocast
        if not st.enabled:
            return args, kwargs
        if func in self._lower:
            dt = st.dtype
            cache = st.cache if st.stack[-1][2] else None

            def cast(x):
                if isinstance(x, torch.Tensor) and x.device.type == "meta" and x.is_floating_point() \
                        and x.dtype != dt and x.dtype != torch.float64:
                    if cache is not None and x.is_leaf and x.requires_grad:
                        hit = cache.get(id(x))
                        if hit is not None and hit[0] is x:
                            return hit[1]
                        y = x.to(dt)
                        cache[id(x)] = (x, y)
                        return y
                    return x.to(dt)
                return x
            self.matmuls += 1
            return _map_right_to_left(cast, args, kwargs)
        if func in self._fp32:
            if func in _SET_OPT_DTYPE and _dtype_arg(func, args, kwargs) is not None:
                return args, kwargs  # an explicit dtype is kept (autocast's fp32_set_opt_dtype policy)

            def up(x):
                if isinstance(x, torch.Tensor) and x.device.type == "meta" and x.dtype in (torch.float16, torch.bfloat16):
                    return x.float()
                return x
            return _map_right_to_left(up, args, kwargs)
        if func in self._promote:
            ts = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor) and x.is_floating_point()]
            if len({x.dtype for x in ts}) > 1:
                widest = functools.reduce(torch.promote_types, [x.dtype for x in ts])

                def conv(x):
                    return x.to(widest) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

                return tree_map(conv, args), tree_map(conv, kwargs)
        return args, kwargs


# Functions that compute with a module's weights (beside autocast's lists, which hold the rest).
_USES_WEIGHTS = {F.embedding, F.embedding_bag, F.batch_norm, F.instance_norm, F.layer_norm, F.group_norm,
                 *((F.rms_norm,) if hasattr(F, "rms_norm") else ())}


def _map_right_to_left(fn, args, kwargs):
    """Applies fn to every argument, last first. CUDA autocast casts a call's arguments in the
    argument list of a C++ call (autocast_mode.h's `(*F)(cached_cast(args)...)`), whose order of
    evaluation GCC makes right to left: measured on an H100 (torch 2.11), F.linear under bf16
    allocates the bias's cast, then the weight's, then the input's. The order moves where each
    block lands in the caching allocator's segments, and the autograd nodes of the casts run in
    reverse order of creation in the backward."""
    leaves, spec = tree_flatten((args, kwargs))
    out = [None] * len(leaves)
    for i in range(len(leaves) - 1, -1, -1):
        out[i] = fn(leaves[i])
    return tree_unflatten(out, spec)


# Ops under autocast's fp32_set_opt_dtype policy: with a dtype given, nothing is cast.
_SET_OPT_DTYPE = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax,
                  torch.Tensor.log_softmax, torch.cumsum, torch.Tensor.cumsum, torch.cumprod, torch.Tensor.cumprod,
                  torch.prod, torch.Tensor.prod}


def _dtype_arg(func, args, kwargs):
    if kwargs.get("dtype") is not None:
        return kwargs["dtype"]
    return next((a for a in args[1:] if isinstance(a, torch.dtype)), None)


def autocast_cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,  # noqa: A002
                           reduction="mean", label_smoothing=0.0):
    """F.cross_entropy as CUDA autocast runs it on a float16 / bfloat16 input.

    cross_entropy is a composite of ATen ops, and autocast acts on those: log_softmax is given
    the input's own dtype explicitly (so it stays in half precision), then nll_loss, on autocast's
    float32 list, casts the log-probabilities to float32 and keeps that copy for its backward.
    Measured on an H100 (torch 2.11, bf16): the GPT sample's loss allocates the half-precision
    log-probabilities, then their float32 copy, and no float32 copy of the logits. Probability
    targets stay in half precision throughout."""
    if not (isinstance(input, torch.Tensor) and input.dtype in (torch.float16, torch.bfloat16)) \
            or (isinstance(target, torch.Tensor) and target.is_floating_point()):
        return F.cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    class_dim = 0 if input.dim() == 1 else 1
    logp = torch.log_softmax(input, class_dim, dtype=input.dtype)
    w = weight.float() if isinstance(weight, torch.Tensor) and weight.is_floating_point() else weight
    nll = F.nll_loss(logp.float(), target, w, ignore_index=ignore_index, reduction=reduction)
    if not label_smoothing:
        return nll
    # The smoothing term, as ATen's cross_entropy_loss_label_smoothing forms it (sum, on autocast's
    # fp32_set_opt_dtype list, reduces straight to float32).
    smooth = -(logp if w is None else logp * w.view([-1] + [1] * (logp.dim() - class_dim - 1))).sum(class_dim, dtype=torch.float32)
    keep = target != ignore_index
    smooth = smooth * keep
    if reduction == "mean":
        smooth = smooth.sum() / keep.sum() if w is None else smooth.sum() / w.gather(0, target.masked_fill(~keep, 0).flatten()).sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / input.shape[class_dim])


class _PassScaler:
    """GradScaler with the memory of one: scale() multiplies the loss; step() always steps."""

    def __init__(self, *a, **k):
        self._scale = 65536.0
        self._enabled = k.get("enabled", True)

    def scale(self, outputs):
        if not self._enabled:
            return outputs
        return tree_map(lambda x: x * self._scale if isinstance(x, torch.Tensor) else x, outputs)

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer, *a, **k):
        return optimizer.step(*a, **k)

    def update(self, new_scale=None):
        pass

    def get_scale(self):
        return self._scale

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        return {"scale": self._scale}

    def load_state_dict(self, sd):
        pass


_PLACEHOLDER = {torch.bool: True}


class _FunctionMode(TorchFunctionMode):
    def __init__(self, env: FakeCuda):
        super().__init__()
        self.env = env
        T = torch.Tensor
        self._reads = {T.item: "item", T.tolist: "tolist", T.__bool__: "bool", T.__int__: "int", T.__float__: "float",
                       T.__index__: "index", T.numpy: "numpy"}
        self._to_host = {T.cpu, T.to}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        env = self.env
        T = torch.Tensor
        dev = kwargs.get("device")
        if dev is not None and is_cuda_device(dev) or isinstance(dev, int) and func is not T.to and not isinstance(dev, bool):
            kwargs = dict(kwargs, device=META)
        if func is T.cuda or func is T.to or func is T.cpu or func in self._reads:
            return self._tensor_method(func, args, kwargs)
        if func in (T.is_cuda.__get__,):
            return args[0].device.type in ("meta", "cuda")
        if env.unplaced and (func in env._lower or func in env._fp32 or func in _USES_WEIGHTS):
            # Parameters used on the GPU without a move this run saw: counted from here on.
            env.place_all()
        if func is F.cross_entropy and env.autocast.enabled:
            return autocast_cross_entropy(*args, **kwargs)
        if env.autocast.stack:
            args, kwargs = env.autocast_args(func, args, kwargs)
        elif func in env._lower:
            env.matmuls += 1
        return func(*args, **kwargs)

    def _tensor_method(self, func, args, kwargs):
        env = self.env
        T = torch.Tensor
        t = args[0] if args else None
        if func is T.cuda:
            kw = {k: v for k, v in kwargs.items() if k in ("non_blocking", "memory_format")}
            return self._to_meta(t, **kw)
        if func is T.to:
            rest = list(args[1:])
            target = kwargs.get("device")
            for i, a in enumerate(rest):
                if is_cuda_device(a) or (isinstance(a, int) and not isinstance(a, bool)) or (isinstance(a, torch.device) and a.type == "meta"):
                    target = META
                    rest[i] = META
                elif isinstance(a, torch.Tensor):
                    if a.device.type == "meta" and t.device.type != "meta":
                        dt = rest[i + 1] if i + 1 < len(rest) and isinstance(rest[i + 1], torch.dtype) else a.dtype
                        return self._to_meta(t, dtype=dt)
            if target is not None and is_cuda_device(target):
                target = META
                kwargs = dict(kwargs, device=META)
            if isinstance(t, torch.Tensor) and t.device.type != "meta" and target is not None and \
                    (target == META or (isinstance(target, torch.device) and target.type == "meta")):
                dtype = kwargs.get("dtype") or next((a for a in rest if isinstance(a, torch.dtype)), None)
                return self._to_meta(t, dtype=dtype)
            if isinstance(t, torch.Tensor) and t.device.type == "meta" and target is not None and \
                    torch.device(target).type == "cpu":
                return self._to_cpu(t, ".to('cpu')")
            out = func(*([t] + rest), **kwargs)
            if out is t and target is not None:
                env.place(t)  # a parameter built on the CPU, moved as it is: allocated now
            return out
        if func is T.cpu:
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                return self._to_cpu(t, ".cpu()")
            return func(*args, **kwargs)
        # Host reads.
        if not (isinstance(t, torch.Tensor) and t.device.type == "meta"):
            return func(*args, **kwargs)
        sh = env.shadow(t)
        if sh is not None:
            return func(sh, *args[1:], **kwargs)
        what = self._reads[func]
        if what == "tolist":
            env.note_read(".tolist()", "zeros")
            return torch.zeros(t.shape, dtype=t.dtype).tolist()
        if what == "numpy":
            env.note_read(".numpy()", "zeros")
            return torch.zeros(t.shape, dtype=t.dtype).numpy()
        if what == "bool":
            env.note_read("bool(tensor)", "True")
            return True
        value = torch.zeros((), dtype=t.dtype)
        if t.dtype is torch.bool:
            value = torch.ones((), dtype=torch.bool)
        env.note_read(f".{what}()" if what in ("item",) else f"{what}(tensor)", str(value.item()))
        return func(value, *args[1:], **kwargs) if what != "item" else value.item()

    def _to_meta(self, t, dtype=None, non_blocking=False, memory_format=None):
        """A real tensor copied to the (fake) GPU: an allocation; small integer data keeps its values."""
        env = self.env
        if not isinstance(t, torch.Tensor):
            return t
        if t.device.type == "meta":
            if dtype is None or dtype == t.dtype:
                env.place(t)
                return t
            return t.to(dtype)
        out = t.to(device=META, dtype=dtype) if dtype is not None else t.to(META)
        if out.dtype in _SHADOW_DTYPES and t.numel() <= SHADOW_LIMIT:
            env.set_shadow(out, t.to(dtype) if dtype is not None else t)
        return out

    def _to_cpu(self, t, what):
        env = self.env
        sh = env.shadow(t)
        if sh is not None:
            return sh.clone()
        env.note_read(what, "zeros")
        return torch.zeros(t.shape, dtype=t.dtype)


_RANDOM_OR_SHAPELESS = ()


def _softmax_backward_tmp(args, gpu):
    """CUDA's softmax backward (`softmax_backward_cuda_out` in ATen's SoftMax.cu) first computes
    `tmp = grad * output` into a tensor of its own, alive for the whole kernel: one more
    activation-sized buffer at the moment that is often the step's peak (attention's backward)."""
    grad, output = args[0], args[1]
    shape = torch.broadcast_shapes(grad.shape, output.shape)
    return [math.prod(shape) * torch.promote_types(grad.dtype, output.dtype).itemsize]


def _reduction_tmp(args, gpu):
    """A sum or mean's staging buffer and semaphores (scratch.py), when it splits across blocks."""
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.is_complex() or x.dim() == 0:
        return []
    dims = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else None
    red = range(x.dim()) if not dims else [d % x.dim() for d in dims]
    acc = 8 if x.dtype == torch.float64 else 4
    return scratch.reduce_scratch(tuple(x.shape), tuple(x.stride()), acc, red, gpu.sms, gpu.threads_per_sm)


# Temporaries that CUDA kernels allocate from the caching allocator and free before returning
# (byte sizes, in allocation order): meta kernels return only the outputs, so these are added,
# allocated after the op's outputs (structured kernels allocate their outputs first) and freed,
# last first, at once. Measured on an H100 in the GPT sample's step: softmax backward's transient
# peak is exactly its output plus its tensor, and each bias gradient's sum allocates its buffer,
# then its semaphores, after the output.
_CUDA_TEMPORARIES = {aten._softmax_backward_data.default: _softmax_backward_tmp,
                     aten.sum.dim_IntList: _reduction_tmp, aten.sum.default: _reduction_tmp,
                     aten.mean.dim: _reduction_tmp, aten.mean.default: _reduction_tmp}


def _dense(t) -> bool:
    """Non-overlapping and dense: the strides, sorted, tile the elements with no gap (any order of
    dimensions), as TensorImpl's is_non_overlapping_and_dense."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _block(n: int) -> int:
    """Bytes the caching allocator counts for a storage of n bytes: 512-byte blocks (none for an
    empty storage, which takes no block)."""
    return max(512, (n + 511) // 512 * 512) if n else 0


# Matrix products that run on cuBLAS: a handle's first takes its workspace.
_CUBLAS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.addbmm.default,
           aten.mv.default, aten.addmv.default, aten.dot.default, aten._addmm_activation.default}

# Ops whose CUDA kernel allocates its outputs in the reverse of their order: native_dropout's
# mask before its output (measured on an H100, torch 2.11: the mask's block comes first).
_MASK_FIRST = {aten.native_dropout.default}


class Accountant(TorchDispatchMode):
    """Counts the meta storages a run allocates, as the caching allocator's trace would list them."""

    def __init__(self, env: FakeCuda):
        super().__init__()
        self.env = env
        self.events: list[Event] = []
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.frames_depth = 24
        # The autograd engine's gradient accumulation (see _accumulation): (output's storage,
        # old gradient's storage, the peak before the output was counted).
        self._accum = None
        # Where each cuBLAS handle (the script's thread, autograd's) takes its workspace: the index
        # of the event after which its first matrix product's output was allocated.
        self.workspace_after: dict[str, int] = {}

    def _frames(self) -> list:
        out = []
        f = sys._getframe(3)
        code = self.env.code
        n = 0
        while f is not None and n < self.frames_depth:
            fn = f.f_code.co_filename
            if not code.is_library(fn):
                out.append({"filename": fn, "line": f.f_lineno, "name": f.f_code.co_name})
                if len(out) >= 6:
                    break
            f = f.f_back
            n += 1
        return out

    def _see(self, t) -> None:
        try:
            st = t.untyped_storage()
        except Exception:  # noqa: BLE001 - sparse or nested outputs: not counted
            return
        self.see_storage(st)

    def see_storage(self, st) -> None:
        key = st._cdata
        if key in self.live or key in self.env.unplaced:
            return
        if self.env.deferring:
            self.env.unplaced[key] = weakref.ref(st)
            weakref.finalize(st, self.env.unplaced.pop, key, None)
            return
        n = int(st.nbytes())
        self._accum = None
        self.live[key] = n
        size = _block(n)
        self.current += size
        self.peak = max(self.peak, self.current)
        self.events.append(Event("alloc", key, n, self.env.now(), self._frames()))
        weakref.finalize(st, self._free, key)

    def _free(self, key) -> None:
        acc, self._accum = self._accum, None
        if acc is not None and key == acc[1] and self.events and self.events[-1].action == "alloc" \
                and self.events[-1].addr == acc[0] and acc[0] in self.live and key in self.live:
            # The old gradient died as soon as the sum replaced it: the engine held its last
            # reference, so on CUDA it adds in place (InputBuffer's accumulate, add_) and the sum
            # is the old gradient's block. Under a dispatch mode the engine sees Python-held
            # tensors and adds out of place; the trace is put back as CUDA writes it.
            # The block keeps its place; it is renamed to the sum's storage, whose address later
            # events (its free, saved-tensor records) name.
            self.events.pop()
            out_n = self.live.pop(acc[0])
            n = self.live.pop(key)
            self.current -= _block(out_n)
            self.peak = max(acc[2], self.current)
            self.live[acc[0]] = n
            self.events.append(Event("rename", acc[0], n, self.env.now(), prev=key))
            return
        n = self.live.pop(key, None)
        if n is None:
            return
        self.current -= _block(n)
        self.events.append(Event("free_requested", key, n, self.env.now()))

    @staticmethod
    def _accumulation(func, args, kwargs, out):
        """The storage key of the old gradient when this op is the autograd engine summing two
        gradients of one input (old + new, same shape and dtype, dense), else None."""
        if func is not aten.add.Tensor or kwargs.get("alpha", 1) != 1 or len(args) != 2:
            return None
        old, new = args
        if not (isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and isinstance(out, torch.Tensor)):
            return None
        if old.device.type != "meta" or torch.is_grad_enabled() or torch._C._current_graph_task_id() == -1:
            return None
        if old.shape != out.shape or new.shape != out.shape or old.dtype != out.dtype or new.dtype != out.dtype \
                or not _dense(old):
            return None
        try:
            return old.untyped_storage()._cdata
        except Exception:  # noqa: BLE001
            return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        env = self.env
        if func is aten._local_scalar_dense.default and args[0].device.type == "meta":
            t = args[0]
            sh = env.shadow(t)
            if sh is not None:
                return sh.item()
            env.note_read(".item()", "0", depth=4)
            return False if t.dtype is torch.bool else (0.0 if t.is_floating_point() else 0)
        try:
            out = func(*args, **kwargs)
        except (NotImplementedError, RuntimeError):
            # An op whose output shape depends on values (nonzero, boolean indexing, unique): with
            # every input's values known, the CPU computes it and the result moves to the fake GPU.
            out = self._from_shadows(func, args, kwargs)
            if out is None:
                raise
        metas = [x for x in tree_leaves(out) if isinstance(x, torch.Tensor) and x.device.type == "meta"]
        if func in _MASK_FIRST:
            metas.reverse()
        old_grad = self._accumulation(func, args, kwargs, out)
        peak_before = self.peak
        for x in metas:
            self._see(x)
        if func in _CUBLAS and metas:
            thread = "autograd" if torch._C._current_graph_task_id() != -1 else "script"
            self.workspace_after.setdefault(thread, len(self.events) - 1)
        if old_grad is not None and old_grad in self.live and self.events and self.events[-1].action == "alloc" \
                and self.events[-1].addr == out.untyped_storage()._cdata:
            self._accum = (self.events[-1].addr, old_grad, peak_before)
        if metas:
            temporary = _CUDA_TEMPORARIES.get(func)
            if temporary is not None:
                tmps = [torch.empty(n, dtype=torch.uint8, device=META) for n in temporary(args, env.gpu)]
                for i in range(len(tmps)):
                    self._see(tmps[i])
                while tmps:
                    tmps.pop()  # freed, last first, as the kernel returns: each storage's finalizer writes its free
            self._propagate(func, args, kwargs, out)
        return out

    def _from_shadows(self, func, args, kwargs):
        env = self.env
        ins = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor) and x.device.type == "meta"]
        if not ins or any(env.shadow(x) is None for x in ins):
            return None

        def to_real(x):
            if isinstance(x, torch.Tensor) and x.device.type == "meta":
                return env.shadow(x)
            return x
        try:
            r_out = func(*tree_map(to_real, args), **tree_map(to_real, kwargs))
        except Exception:  # noqa: BLE001
            return None
        pairs = []

        def to_meta(r):
            if isinstance(r, torch.Tensor):
                m = torch.empty_strided(r.shape, r.stride(), dtype=r.dtype, device=META)
                pairs.append((m, r))
                return m
            return r
        out = tree_map(to_meta, r_out)
        for m, r in pairs:
            if r.numel() <= SHADOW_LIMIT:
                env.set_shadow(m, r)
        return out

    def _propagate(self, func, args, kwargs, out) -> None:
        """Computes small outputs on the CPU from their inputs' shadows, when every meta input has one."""
        env = self.env
        ins = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor) and x.device.type == "meta"]
        real: dict[int, torch.Tensor] = {}
        for x in ins:
            sh = env.shadow(x)
            if sh is None:
                if func._schema.is_mutable and args and isinstance(args[0], torch.Tensor):
                    # Written with values we do not know: its old values are no longer its values.
                    env.drop_shadow(args[0])
                return
            real[id(x)] = sh
        outs = [x for x in tree_leaves(out) if isinstance(x, torch.Tensor) and x.device.type == "meta"]
        if any(x.numel() > SHADOW_LIMIT for x in outs):
            return
        if not ins and not all(x.dtype in _SHADOW_DTYPES for x in outs):
            return  # a float factory (zeros/empty of activations' size): not worth values

        def to_real(x):
            if isinstance(x, torch.Tensor) and x.device.type == "meta":
                return real[id(x)]
            if isinstance(x, torch.device) and x.type == "meta":
                return torch.device("cpu")
            return x
        try:
            r_args = tree_map(to_real, args)
            r_kwargs = tree_map(to_real, kwargs)
            r_out = func(*r_args, **r_kwargs)
        except Exception:  # noqa: BLE001 - an op the CPU cannot run on these values: no shadow
            return
        r_outs = [x for x in tree_leaves(r_out) if isinstance(x, torch.Tensor)]
        if len(r_outs) != len(outs):
            return
        for m, r in zip(outs, r_outs):
            if tuple(m.shape) == tuple(r.shape):
                env.set_shadow(m, r)
