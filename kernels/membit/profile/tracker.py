"""What the harness sees of a training run while it happens.

Hooks, all installed for the whole run and removed at its end:
  * global module forward pre/post hooks: the module stack (for per-layer attribution), the
    forward phase, dropout modules, per-module forward time, and the first call of each
    top-level model (where a variant is applied). A forward that activation checkpointing
    runs again during backward is seen as a replay: it keeps the stack balanced and counts
    nothing (no root call, sample, dropout site or timing a second time);
  * saved-tensor hooks: every tensor autograd keeps for backward, deduplicated by storage,
    with the user line and module that saved it, and released when autograd drops it;
  * optimizer step pre/post hooks: step boundaries, grads and optimizer state;
  * wrappers around F.dropout and F.scaled_dot_product_attention: they tag what those calls
    save as masks and describe the call site (elements, kind).

Inside code that torch.compile traces, every hook and wrapper returns at once (dynamo inlines
them, and a hook that touched the module stack broke its side-effect tracking): a compiled
graph runs as one autograd Function, and what it saves is attributed through its FX graph by
compiled.CompileWatch.

Timestamps are wall-clock microseconds (time.time_ns() // 1000): the CUDA allocator stamps its
trace with the same epoch, which is what lets allocator blocks be matched to what we saw.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .compiled import CompileWatch, is_compiling
from .frames import CodeFilter

_now_ns = time.time_ns


def now_us() -> int:
    return _now_ns() // 1000


class StopScript(BaseException):
    """Raised after the last profiled step: ends the user's script (not caught by `except Exception`)."""


class Cancelled(BaseException):
    """Raised from the SIGTERM handler (and re-raised by hooks if the first one was swallowed)."""


class HarnessAbort(BaseException):
    """The harness cannot go on (e.g. the variant is unavailable); the message goes into run.error."""


class Record:
    """One storage saved for backward."""

    __slots__ = ("ptr", "nbytes", "dtype", "shape", "cuda", "frames", "module", "mask", "op", "site",
                 "step", "phase", "t_pack", "t_release", "refs", "graph", "mapped")

    def __init__(self, ptr, nbytes, dtype, shape, cuda, frames, module, mask, site, step, phase, t_pack):
        self.ptr = ptr
        self.nbytes = nbytes
        self.dtype = dtype
        self.shape = shape
        self.cuda = cuda
        self.frames = frames
        self.module = module
        self.mask = mask
        self.op: Optional[str] = None
        self.site = site
        self.step = step
        self.phase = phase
        self.t_pack = t_pack
        self.t_release: Optional[int] = None
        self.refs = 0
        # Saved by a compiled graph (its AOTAutograd id), and whether its FX node gave the line.
        self.graph: Optional[int] = None
        self.mapped = False


class SiteCall:
    """One dropout (or fused-attention dropout) call; what it saved is its mask."""

    __slots__ = ("kind", "frame", "module", "elements", "mask_bytes", "step", "fused")

    def __init__(self, kind, frame, module, elements, step, fused=False):
        self.kind = kind
        self.frame = frame
        self.module = module
        self.elements = elements
        self.mask_bytes = 0
        self.step = step
        self.fused = fused


# Set by the active tracker; _Packed.__del__ calls it when autograd drops a saved tensor.
_release_hook: Optional[Callable] = None


class _Packed:
    """What autograd stores in place of a saved tensor while we profile."""

    __slots__ = ("t", "rec")

    def __init__(self, t, rec):
        self.t = t
        self.rec = rec

    def __del__(self):
        hook = _release_hook
        if hook is not None:
            hook(self.rec)


def unwrap_compiled(module):
    """The model behind torch.compile's OptimizedModule wrapper (paths stay the model's own).

    The wrapper's call runs eagerly (hooks fire for it, not for the model inside, whose
    forward is compiled): the tracker sees it as the model itself.
    """
    inner = getattr(module, "_orig_mod", None)
    if inner is not None and type(module).__name__ == "OptimizedModule":
        return inner
    return module


def _storage(t):
    # untyped_storage() (torch >= 2.0) avoids TypedStorage's deprecation warning.
    fn = getattr(t, "untyped_storage", None)
    return fn() if fn is not None else t.storage()


def local_tensor(t):
    """The tensor this process holds: a DTensor's (FSDP2, tensor parallel) local shard, else t itself.

    A DTensor is a wrapper with no storage of its own, and its numel() is the global size: each
    rank's memory is its local shard's.
    """
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def tensor_bytes(t) -> int:
    """Bytes of the elements this process holds (a DTensor's local shard)."""
    t = local_tensor(t)
    return t.numel() * t.element_size()


def storage_key(t) -> Tuple[int, int]:
    """(data pointer, bytes) of a tensor's storage (a DTensor's local shard's); (0, 0) when it has none."""
    t = local_tensor(t)
    try:
        st = _storage(t)
        return st.data_ptr(), st.nbytes()
    except Exception:  # noqa: BLE001 - sparse, nested, meta tensors have no plain storage
        return 0, 0


_SOFTMAX_NAMES = ("SoftmaxBackward", "SafeSoftmaxBackward", "LogSoftmaxBackward")
_PASSTHROUGH = ("ToCopyBackward", "ViewBackward", "CloneBackward", "UnsafeViewBackward", "ExpandBackward",
                "MaskedFillBackward", "DivBackward", "MulBackward")


def _from_softmax(t) -> bool:
    """Whether a tensor comes (through casts and views) from a softmax: attention probabilities."""
    fn = getattr(t, "grad_fn", None)
    for _ in range(4):
        if fn is None:
            return False
        name = type(fn).__name__
        if name.startswith(_SOFTMAX_NAMES):
            return True
        if not name.startswith(_PASSTHROUGH):
            return False
        nxt = [f for f, _ in fn.next_functions if f is not None]
        fn = nxt[0] if nxt else None
    return False


def op_name(node_name: Optional[str]) -> Optional[str]:
    """'NativeDropoutBackward0' -> 'native_dropout', 'MmBackward0' -> 'mm'."""
    if not node_name:
        return None
    base = node_name
    i = base.find("Backward")
    if i > 0:
        base = base[:i]
    out = []
    for k, ch in enumerate(base):
        if ch.isupper() and k > 0 and not base[k - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def first_tensor(obj, depth: int = 0):
    if isinstance(obj, torch.Tensor):
        return obj
    if depth > 2:
        return None
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = first_tensor(o, depth + 1)
            if t is not None:
                return t
    return None


def leading_dim(output) -> Optional[int]:
    """Leading dimension of the first tensor of rank >= 1 in a model's output (its batch)."""
    items = output
    if isinstance(output, dict):
        items = list(output.values())
    elif not isinstance(output, (list, tuple)):
        items = [output]
    for o in items:
        t = first_tensor(o)
        if t is not None and t.dim() >= 1:
            return int(t.shape[0])
    return None


class StepInfo:
    """What one training step left behind (kept for the steps the report may need)."""

    __slots__ = ("index", "records", "sites", "timings", "grads", "bwd_snapshot", "samples", "end_t", "start_t",
                 "end_event", "wall_s")

    def __init__(self, index, start_t):
        self.index = index
        self.records: List[Record] = []
        self.sites: List[SiteCall] = []
        self.timings: list = []  # (module, start, end): perf_counter floats or CUDA events
        self.grads: Dict[int, int] = {}  # id(param) -> grad bytes, at the optimizer step
        self.bwd_snapshot = None
        self.samples = 0
        self.start_t = start_t
        self.end_t: Optional[int] = None
        self.end_event = None
        self.wall_s: Optional[float] = None


class BwdSnapshot:
    """The state at the start of a backward pass: on CPU, the moment the report calls the peak."""

    __slots__ = ("t", "records", "grads", "state", "saved")

    def __init__(self, t, records, grads, state):
        self.t = t
        self.records = records
        self.grads = grads
        self.state = state
        self.saved = sum(r.nbytes for r in records)


class Tracker:
    KEEP_STEPS = 8

    def __init__(self, *, warmup: int, steps: int, code: CodeFilter, module_timing: bool = True,
                 on_step: Optional[Callable] = None, on_profiling_start: Optional[Callable] = None,
                 on_first_call: Optional[Callable] = None, route_dropout: Optional[Callable] = None,
                 on_root_enter: Optional[Callable] = None, on_root_exit: Optional[Callable] = None):
        self.warmup = warmup
        self.steps = steps
        self.code = code
        self.module_timing = module_timing
        self.on_step = on_step
        self.on_profiling_start = on_profiling_start
        self.on_first_call = on_first_call
        self.route_dropout = route_dropout
        self.on_root_enter = on_root_enter
        self.on_root_exit = on_root_exit
        self.step = 1  # the step in progress, 1-based
        self.profiling = False
        self.profile_start_t: Optional[int] = None
        self.phase = "other"
        self.phase_log: List[Tuple[int, str]] = []
        self.stack: list = []
        self.roots: List[torch.nn.Module] = []
        self._root_ids = set()
        self.created_at: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self.live: Dict[int, Record] = {}
        self.persistent: Dict[int, str] = {}  # storage ptr -> "param" | "buffer"
        self.in_dropout: Optional[SiteCall] = None
        self.optimizers: list = []
        self.primary_opt = None
        self.identities: Dict[int, list] = {}  # ptr -> [allocator.Identity], profiling window only
        self.steps_info: Dict[int, StepInfo] = {}
        self.cancel_requested = False
        # True while the module stack holds a forward replayed by checkpointing in backward.
        self.replaying = False
        self._backward_depth = 0
        # scaled_dot_product_attention calls so far (the sdpa lever checks that its model makes some).
        self.sdpa_calls = 0
        self.cuda_timing = False
        self.device: Optional[torch.device] = None
        self._refreshed_step = 0
        self._state_sizes: Dict[int, int] = {}
        # The state at each backward start is the CPU's "peak"; on CUDA the allocator record
        # replaces it (the harness turns this off there, which spares a scan per step).
        self.snapshots = True
        self.timed_step: Optional[int] = None
        self._dropout_types: Dict[type, bool] = {}
        self._node = getattr(torch._C, "_current_autograd_node", None)
        self._handles: list = []
        self._restore: list = []
        self._saved_hooks = None
        self.compiled = CompileWatch(code)
        # On CUDA: the step in which max_memory_allocated last rose, i.e. the step holding the
        # allocator's peak (the first one to reach it): its records must outlive KEEP_STEPS, or
        # the peak's saved tensors (a compiled graph's, in steady state) read as unattributed.
        self._max_step: Optional[int] = None
        self._max_seen = 0
        self.cur = self._new_step(1)

    # -- lifecycle --------------------------------------------------------------------------

    def _new_step(self, index: int) -> StepInfo:
        info = StepInfo(index, now_us())
        self.steps_info[index] = info
        # Keep the last few steps and any step the report may still want (the one with the
        # largest backward-start state); older steps' records are dropped to bound memory.
        if len(self.steps_info) > self.KEEP_STEPS:
            best = self.best_bwd_step()
            for k in sorted(self.steps_info)[: len(self.steps_info) - self.KEEP_STEPS]:
                if k != best and k != self._max_step:
                    del self.steps_info[k]
        return info

    def install(self) -> None:
        global _release_hook
        from torch.nn.modules import module as nn_module

        kwargs = {}
        try:
            import inspect

            if "always_call" in inspect.signature(nn_module.register_module_forward_hook).parameters:
                kwargs["always_call"] = True
        except (TypeError, ValueError):
            pass
        self.compiled.install()
        self._handles.append(nn_module.register_module_forward_pre_hook(self._pre))
        self._handles.append(nn_module.register_module_forward_hook(self._post, **kwargs))
        self._install_optimizer_hooks()
        self._patch_module_init()
        self._patch_functions()
        _release_hook = self._release
        self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._saved_hooks.__enter__()
        if self.warmup == 0:
            self._start_profiling()

    def uninstall(self) -> None:
        global _release_hook
        if self._saved_hooks is not None:
            try:
                self._saved_hooks.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - a script that left its own hooks pushed
                pass
            self._saved_hooks = None
        for h in self._handles:
            try:
                h.remove()
            except Exception:  # noqa: BLE001
                pass
        self._handles.clear()
        for owner, name, original, ours in reversed(self._restore):
            # Put the original back only where nobody replaced ours in the meantime.
            if getattr(owner, name, None) is ours:
                setattr(owner, name, original)
        self._restore.clear()
        self.compiled.uninstall()
        _release_hook = None

    def _replace(self, owner, name, new):
        original = getattr(owner, name)
        setattr(owner, name, new)
        self._restore.append((owner, name, original, new))
        return original

    def _install_optimizer_hooks(self) -> None:
        import importlib

        opt_mod = importlib.import_module("torch.optim.optimizer")
        pre = getattr(opt_mod, "register_optimizer_step_pre_hook", None)
        post = getattr(opt_mod, "register_optimizer_step_post_hook", None)
        if pre is not None and post is not None:
            self._handles.append(pre(lambda opt, args, kwargs: self._opt_pre(opt)))
            self._handles.append(post(lambda opt, args, kwargs: self._opt_post(opt)))
            return
        # torch < 2.0: wrap each optimizer's bound step when it is constructed.
        tracker = self
        original_init = torch.optim.Optimizer.__init__

        def init(opt, *args, **kwargs):
            original_init(opt, *args, **kwargs)
            step = opt.step

            def stepped(*a, **k):
                tracker._opt_pre(opt)
                out = step(*a, **k)
                tracker._opt_post(opt)
                return out

            opt.step = stepped

        self._replace(torch.optim.Optimizer, "__init__", init)

    def _patch_module_init(self) -> None:
        tracker = self
        original_init = torch.nn.Module.__init__

        def init(module, *args, **kwargs):
            original_init(module, *args, **kwargs)
            try:
                tracker._note_creation(module, sys._getframe(1))
            except Exception:  # noqa: BLE001 - attribution is best effort, construction is not
                pass

        self._replace(torch.nn.Module, "__init__", init)

    def _note_creation(self, module, frame) -> None:
        if module in self.created_at:
            return
        f = frame
        # Skip this object's own constructor chain (super().__init__ calls) to reach the caller.
        while f is not None and f.f_code.co_name == "__init__" and f.f_locals.get("self") is module:
            f = f.f_back
        frames = self.code.user_frames(f, limit=1)
        if frames:
            self.created_at[module] = frames[0]

    def _patch_functions(self) -> None:
        F = torch.nn.functional
        original_dropout = F.dropout
        tracker = self

        def dropout(input, p=0.5, training=True, inplace=False):
            if is_compiling():
                return original_dropout(input, p, training, inplace)
            if not training or p == 0.0 or tracker.in_dropout is not None or not torch.is_grad_enabled() \
                    or not isinstance(input, torch.Tensor) or not input.requires_grad or tracker.replaying:
                return original_dropout(input, p, training, inplace)
            frame = tracker.code.user_frames(sys._getframe(1), limit=1)[0]
            routed = tracker.route_dropout(frame) if tracker.route_dropout is not None else None
            kind = "attn-dropout" if _from_softmax(input) else "dropout-call"
            call = SiteCall(kind, frame, tracker.stack[-1][0] if tracker.stack else None, input.numel(), tracker.step)
            tracker.cur.sites.append(call)
            tracker.in_dropout = call
            try:
                if routed is not None:
                    return routed(input, p, training, inplace)
                return original_dropout(input, p, training, inplace)
            finally:
                tracker.in_dropout = None

        dropout.__wrapped__ = original_dropout
        dropout.__doc__ = original_dropout.__doc__
        self._replace(F, "dropout", dropout)

        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None:
            def scaled_dot_product_attention(query, key, value, *args, **kwargs):
                if is_compiling():
                    return sdpa(query, key, value, *args, **kwargs)
                if not tracker.replaying:
                    tracker.sdpa_calls += 1
                p = kwargs.get("dropout_p", args[1] if len(args) > 1 else 0.0)
                if not p or tracker.in_dropout is not None or not torch.is_grad_enabled() \
                        or not isinstance(query, torch.Tensor) or not query.requires_grad or tracker.replaying:
                    return sdpa(query, key, value, *args, **kwargs)
                frame = tracker.code.user_frames(sys._getframe(1), limit=1)[0]
                elements = (query.numel() // max(1, query.shape[-1])) * key.shape[-2]
                call = SiteCall("fused-attn-dropout", frame, tracker.stack[-1][0] if tracker.stack else None,
                                int(elements), tracker.step, fused=True)
                tracker.cur.sites.append(call)
                tracker.in_dropout = call
                try:
                    return sdpa(query, key, value, *args, **kwargs)
                finally:
                    tracker.in_dropout = None

            scaled_dot_product_attention.__wrapped__ = sdpa
            scaled_dot_product_attention.__doc__ = sdpa.__doc__
            self._replace(F, "scaled_dot_product_attention", scaled_dot_product_attention)

        # Tensor.backward calls torch.autograd.backward by attribute: the exact backward start.
        original_backward = torch.autograd.backward

        def backward(*args, **kwargs):
            if is_compiling():
                return original_backward(*args, **kwargs)
            tracker.on_backward_start()
            tracker._backward_depth += 1
            try:
                return original_backward(*args, **kwargs)
            finally:
                tracker._backward_depth -= 1

        backward.__wrapped__ = original_backward
        self._replace(torch.autograd, "backward", backward)

    # -- phases and steps -------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            if self.profiling or self.warmup == 0:
                self.phase_log.append((now_us(), phase))

    def _start_profiling(self) -> None:
        self.profiling = True
        self.timed_step = self.warmup + 1
        self.profile_start_t = now_us()
        self.phase_log = [(self.profile_start_t, self.phase)]
        self.identities.clear()
        if self.on_profiling_start is not None:
            self.on_profiling_start()
        # The last warmup step's grads are still alive (zero_grad often comes after the next forward).
        self._checkpoint(grads=True)

    def on_backward_start(self) -> None:
        if self.cancel_requested:
            raise Cancelled()
        if self.phase == "backward":
            return
        self.set_phase("backward")
        if not self.snapshots:
            return
        grads = {}
        for p in self._all_params():
            g = p.grad
            if g is not None:
                grads[id(p)] = tensor_bytes(g)
        snap = BwdSnapshot(now_us(), list(self.live.values()), grads, self.optimizer_state_bytes())
        cur = self.cur
        if cur.bwd_snapshot is None or snap.saved > cur.bwd_snapshot.saved:
            cur.bwd_snapshot = snap

    def _opt_pre(self, opt) -> None:
        if self.cancel_requested:
            raise Cancelled()
        self.set_phase("optimizer")
        if opt not in self.optimizers:
            self.optimizers.append(opt)
        grads = self.cur.grads
        note = self._grad_note() if self.profiling else None
        for group in opt.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    ptr, n = storage_key(g)
                    # The grad's own elements: FSDP2's reduce-scatter output and DDP's bucket views
                    # put many grads in one storage, which would otherwise count once per grad.
                    grads[id(p)] = tensor_bytes(g)
                    if note is not None and ptr:
                        note(ptr, n)

    def _grad_note(self):
        """A function noting that an address holds a grad now (grads get new blocks each step)."""
        from .allocator import Identity

        t = now_us()
        idents = self.identities

        def note(ptr, n):
            lst = idents.setdefault(ptr, [])
            lst.append(Identity(t, "grad", n))
            if len(lst) > 16:
                del lst[0]

        return note

    def _opt_post(self, opt) -> None:
        if self.primary_opt is None:
            self.primary_opt = opt
        if self.profiling and self._state_sizes.get(id(opt)) != len(opt.state):
            self._state_sizes[id(opt)] = len(opt.state)
            self._checkpoint(grads=False, opts=[opt], state_only=True)
        if opt is not self.primary_opt:
            return
        self.set_phase("other")
        self._end_step()

    def _end_step(self) -> None:
        cur = self.cur
        cur.end_t = now_us()
        if self.profiling and self.device is not None and self.device.type == "cuda":
            # A host-side counter of the caching allocator: no device sync.
            m = torch.cuda.max_memory_allocated(self.device)
            if m > self._max_seen:
                self._max_seen, self._max_step = m, self.step
        # Params can move (model.to(...)): re-read their addresses once a step.
        self._refresh_persistent()
        done = self.step
        if self.on_step is not None:
            self.on_step(cur)
        self.step += 1
        self.cur = self._new_step(self.step)
        if not self.profiling and done == self.warmup:
            self._start_profiling()
        elif self.profiling and self.steps > 0 and done - self.warmup >= self.steps:
            raise StopScript()

    def best_bwd_step(self) -> Optional[int]:
        best, best_k = None, None
        for k, info in self.steps_info.items():
            if k <= self.warmup or info.bwd_snapshot is None:
                continue
            s = info.bwd_snapshot
            total = s.saved + sum(s.grads.values()) + s.state
            if best is None or total > best:
                best, best_k = total, k
        return best_k

    # -- module hooks -----------------------------------------------------------------------

    def _in_backward(self) -> bool:
        """Whether autograd is running a backward pass now (a forward now is a checkpoint's replay)."""
        if self._backward_depth > 0:
            return True
        return self._node is not None and self._node() is not None

    def _pre(self, module, args):
        if is_compiling():
            return
        module = unwrap_compiled(module)
        if self.cancel_requested:
            raise Cancelled()
        stack = self.stack
        if not stack:
            self.replaying = self._in_backward()
            if not self.replaying:
                self._root_call(module)
                if self.on_root_enter is not None:
                    self.on_root_enter(module)
        if self.replaying:
            stack.append((module, self.in_dropout, None, None))
            return
        call = None
        t = type(module)
        dl = self._dropout_types.get(t)
        if dl is None:
            dl = self._dropout_types[t] = "Dropout" in t.__name__
        prev = self.in_dropout
        if dl and module.training and prev is None and torch.is_grad_enabled():
            x = first_tensor(args)
            if x is not None and x.requires_grad:
                frame = self.code.user_frames(sys._getframe(1), limit=1)[0]
                call = SiteCall("attn-dropout" if _from_softmax(x) else "dropout", frame, module, x.numel(), self.step)
                self.cur.sites.append(call)
                self.in_dropout = call
        start = None
        if self.module_timing and self.profiling and self.step == self.timed_step:
            if self.cuda_timing:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                start = time.perf_counter()
        stack.append((module, prev, call, start))

    def _post(self, module, args, output):
        if is_compiling():
            return
        module = unwrap_compiled(module)
        stack = self.stack
        while stack:
            m, prev, call, start = stack.pop()
            if m is module:
                break
        else:
            return
        if self.replaying:
            if not stack:
                self.replaying = False
            return
        if call is not None:
            self.in_dropout = prev
        if start is not None:
            if self.cuda_timing:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            else:
                end = time.perf_counter()
            self.cur.timings.append((module, start, end))
        if not stack:
            if torch.is_grad_enabled():
                n = leading_dim(output)
                if n is not None:
                    self.cur.samples += n
            if self.on_root_exit is not None:
                # output is None when the forward raised (hooks with always_call still run).
                self.on_root_exit(module, output)

    def _root_call(self, module) -> None:
        if id(module) not in self._root_ids:
            self._root_ids.add(id(module))
            self.roots.append(module)
            if self.device is None:
                for p in module.parameters():
                    self.device = p.device
                    self.cuda_timing = p.device.type == "cuda" and self.module_timing
                    break
            if self.on_first_call is not None:
                self.on_first_call(module)
        if torch.is_grad_enabled():
            if self.phase != "forward":
                self.set_phase("forward")
            if self._refreshed_step == 0:
                # Later refreshes happen at each optimizer step, while the GPU is still busy:
                # here, after a script's per-step sync, the GPU would wait for us.
                self._refreshed_step = self.step
                self._refresh_persistent()

    # -- saved tensors ----------------------------------------------------------------------

    def _pack(self, t):
        graph = node = None
        if self.compiled.graphs or self.compiled.compile_calls:
            # Before any early return: the index of a compiled graph's saves must advance.
            graph, node = self.compiled.saved_node(t, sys._getframe(1))
        try:
            st = _storage(t)
            ptr = st.data_ptr()
        except Exception:  # noqa: BLE001
            return t
        if not ptr or ptr in self.persistent:
            return t
        rec = self.live.get(ptr)
        if rec is None and graph is not None:
            rec = self._compiled_record(t, st, ptr, graph, node)
        if rec is None:
            call = self.in_dropout
            dtype = t.dtype
            mask = dtype is torch.bool or dtype is torch.uint8
            if call is not None and not call.fused:
                mask = True
            stack = self.stack
            # Meta tensors are a prediction's fake CUDA tensors (membit.predict).
            cuda = t.is_cuda or t.device.type == "meta"
            rec = Record(ptr, st.nbytes(), dtype, tuple(t.shape), cuda,
                         self.code.user_frames(sys._getframe(1), limit=1 if cuda else 3),
                         stack[-1][0] if stack else None, mask, call if mask else None, self.step, self.phase, now_us())
            if call is not None and mask:
                call.mask_bytes += rec.nbytes
            self.live[ptr] = rec
            self.cur.records.append(rec)
        rec.refs += 1
        return _Packed(t, rec)

    def _compiled_record(self, t, st, ptr, graph, node) -> Record:
        """A tensor saved by a compiled graph: its line and module from the FX node when mapped."""
        stack = self.stack
        outer = stack[-1][0] if stack else None
        frames = node.frames[:1 if t.is_cuda else 3] if node is not None and node.frames else []
        module = outer
        if node is not None and module is not None:
            module = node.module_in(module)
        mapped = bool(frames)
        if not frames:
            # The graph's figure alone: the line that called the compiled module.
            frames = self.code.user_frames(sys._getframe(2), limit=1 if t.is_cuda else 3)
        dtype = t.dtype
        rec = Record(ptr, st.nbytes(), dtype, tuple(t.shape), t.is_cuda, frames, module,
                     dtype is torch.bool or dtype is torch.uint8, None, self.step, self.phase, now_us())
        rec.graph = graph.aot_id
        rec.mapped = mapped
        if node is not None:
            rec.op = node.op
        self.live[ptr] = rec
        self.cur.records.append(rec)
        return rec

    def _unpack(self, x):
        if type(x) is not _Packed:
            return x
        rec = x.rec
        if rec.op is None and self._node is not None:
            node = self._node()
            if node is not None:
                rec.op = node.name()
        if self.phase == "forward":
            self.on_backward_start()
        return x.t

    def _release(self, rec) -> None:
        rec.refs -= 1
        if rec.refs <= 0 and rec.t_release is None:
            rec.t_release = now_us()
            if self.live.get(rec.ptr) is rec:
                del self.live[rec.ptr]

    # -- params, grads, optimizer state -----------------------------------------------------

    def _all_params(self):
        seen = set()
        for root in self.roots:
            for p in root.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p
        for opt in self.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        yield p

    def _all_buffers(self):
        seen = set()
        for root in self.roots:
            for b in root.buffers():
                if id(b) not in seen:
                    seen.add(id(b))
                    yield b

    def _refresh_persistent(self) -> None:
        pers = {}
        for b in self._all_buffers():
            ptr, _ = storage_key(b)
            if ptr:
                pers[ptr] = "buffer"
        for p in self._all_params():
            ptr, _ = storage_key(p)
            if ptr:
                pers[ptr] = "param"
        self.persistent = pers

    def state_tensors(self):
        seen = set()
        for opt in self.optimizers:
            for st in opt.state.values():
                if not isinstance(st, dict):
                    continue
                for v in st.values():
                    if isinstance(v, torch.Tensor) and id(v) not in seen:
                        seen.add(id(v))
                        yield v

    def optimizer_state_bytes(self, device_type: Optional[str] = None) -> int:
        seen, total = set(), 0
        for v in self.state_tensors():
            if device_type is not None and v.device.type != device_type:
                continue
            ptr, n = storage_key(v)
            if ptr and ptr not in seen:
                seen.add(ptr)
                total += n
        return total

    def _checkpoint(self, grads: bool, opts=None, state_only: bool = False) -> None:
        """Notes which addresses hold params, buffers, grads and optimizer state right now."""
        from .allocator import Identity

        t = now_us()
        idents = self.identities

        def note(tensor, cat):
            ptr, n = storage_key(tensor)
            if not ptr:
                return
            lst = idents.setdefault(ptr, [])
            if cat != "grad" and lst and lst[-1].category == cat and lst[-1].nbytes == n:
                return  # params, buffers and state keep their block: one sighting is enough
            lst.append(Identity(t, cat, n))
            if len(lst) > 16:
                # Grads get a new block each step (zero_grad(set_to_none)); recent sightings suffice.
                del lst[0]

        if not state_only:
            for b in self._all_buffers():
                note(b, "buffer")
            params = self._all_params() if opts is None else (p for o in opts for g in o.param_groups for p in g["params"])
            for p in params:
                note(p, "param")
                if grads and p.grad is not None:
                    note(p.grad, "grad")
        for v in self.state_tensors():
            note(v, "optimizer")
