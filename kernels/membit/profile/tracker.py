"""What the harness sees of a training run while it happens.

The Tracker coordinates four parts, each in its own module:
  * patches.TorchPatches: the hooks and wrappers installed into torch for the whole run;
  * steps.StepLog: steps and phases, and what each step left behind;
  * saved.SavedTensorStore: every tensor autograd keeps for backward, while it is kept;
  * accounting.ParamAccounting: the models, optimizers, params, grads and optimizer state.

What is left here is what ties them together: the module stack (for per-layer attribution),
the forward phase, dropout sites and their masks, per-module forward time, and the first call
of each top-level model (where a variant is applied). A forward that activation checkpointing
runs again during backward is seen as a replay: it keeps the stack balanced and counts nothing
(no root call, sample, dropout site or timing a second time).

Inside code that torch.compile traces, every hook and wrapper returns at once (see
patches.py): a compiled graph runs as one autograd Function, and what it saves is attributed
through its FX graph by compiled.CompileWatch.

Timestamps are wall-clock microseconds (time.time_ns() // 1000): the CUDA allocator stamps its
trace with the same epoch, which is what lets allocator blocks be matched to what we saw.
"""

from __future__ import annotations

import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .accounting import ParamAccounting
from .compiled import CompileWatch, is_compiling
from .frames import CodeFilter, FrameT
from .patches import TorchPatches
from .saved import Packed, Record, SavedTensorStore, SiteCall, current_autograd_node, from_softmax
from .steps import BwdSnapshot, StepInfo, StepLog

# membit.predict replaces this with a logical clock for its run: every timestamp the tracker
# and its parts take goes through now_us, which reads it at each call.
_now_ns = time.time_ns


def now_us() -> int:
    return _now_ns() // 1000


class StopScript(BaseException):
    """Raised after the last profiled step: ends the user's script (not caught by `except Exception`)."""


class Cancelled(BaseException):
    """Raised from the SIGTERM handler (and re-raised by hooks if the first one was swallowed)."""


class HarnessAbort(BaseException):
    """The harness cannot go on (e.g. the variant is unavailable); the message goes into run.error."""


@dataclass
class TrackerHooks:
    """What the harness does at the tracker's moments; each one is optional."""

    # A training step ended (its StepInfo); the tracker then opens the next one.
    on_step: Optional[Callable[[StepInfo], None]] = None
    # The warmup steps are over: profiling starts now.
    on_profiling_start: Optional[Callable[[], None]] = None
    # A top-level model's first forward, before it runs (where a variant is applied).
    on_first_call: Optional[Callable[[torch.nn.Module], None]] = None
    # Every top-level forward, around it (not a checkpoint's replay); the output is None when
    # the forward raised.
    on_root_enter: Optional[Callable[[torch.nn.Module], None]] = None
    on_root_exit: Optional[Callable[[torch.nn.Module, Any], None]] = None
    # For an F.dropout call at a user line: a function to call instead of F.dropout, or None.
    route_dropout: Optional[Callable[[FrameT], Optional[Callable]]] = None


def unwrap_compiled(module):
    """The model behind torch.compile's OptimizedModule wrapper (paths stay the model's own).

    The wrapper's call runs eagerly (hooks fire for it, not for the model inside, whose
    forward is compiled): the tracker sees it as the model itself.
    """
    inner = getattr(module, "_orig_mod", None)
    if inner is not None and type(module).__name__ == "OptimizedModule":
        return inner
    return module


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


class Tracker:
    def __init__(self, *, warmup: int, steps: int, code: CodeFilter, module_timing: bool = True,
                 hooks: Optional[TrackerHooks] = None):
        self.warmup = warmup
        self.steps = steps  # profiled steps asked for (0: until the script ends)
        self.code = code
        self.module_timing = module_timing
        self.hooks = hooks if hooks is not None else TrackerHooks()
        self.stack: list = []  # (module, site before it, its site, timing start)
        self.created_at: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self.in_dropout: Optional[SiteCall] = None
        self.cancel_requested = False
        # True while the module stack holds a forward replayed by checkpointing in backward.
        self.replaying = False
        # torch.autograd.backward calls in progress (see patches.py).
        self.backward_depth = 0
        # scaled_dot_product_attention calls so far (the sdpa lever checks that its model makes some).
        self.sdpa_calls = 0
        self.cuda_timing = False
        self.device: Optional[torch.device] = None
        self._refreshed_step = 0
        # The state at each backward start is the CPU's "peak"; on CUDA the allocator record
        # replaces it (the harness turns this off there, which spares a scan per step).
        self.snapshots = True
        self._dropout_types: Dict[type, bool] = {}
        self._patches = TorchPatches()
        self.compiled = CompileWatch(code)
        self.accounting = ParamAccounting(now_us)
        self.step_log = StepLog(warmup, now_us)
        self.saved = SavedTensorStore(code, self.compiled, self.step_log, now_us)

    # -- read accessors (the report, the harness) -------------------------------------------

    @property
    def step(self) -> int:
        """The step in progress, 1-based."""
        return self.step_log.index

    @property
    def current(self) -> StepInfo:
        """The step in progress."""
        return self.step_log.current

    @property
    def steps_info(self) -> Dict[int, StepInfo]:
        """The steps kept (the last few, and those the report may want), by index."""
        return self.step_log.infos

    @property
    def phase(self) -> str:
        return self.step_log.phase

    @property
    def phase_log(self) -> List[Tuple[int, str]]:
        return self.step_log.phase_log

    @property
    def profile_start_t(self) -> Optional[int]:
        return self.step_log.profile_start_t

    @property
    def timed_step(self) -> Optional[int]:
        return self.step_log.timed_step

    def best_bwd_step(self) -> Optional[int]:
        return self.step_log.best_bwd_step()

    def step_and_phase_at(self, t: Optional[int]) -> Tuple[Optional[int], Optional[str]]:
        return self.step_log.step_and_phase_at(t)

    @property
    def roots(self) -> List[torch.nn.Module]:
        """The top-level models, in the order of their first forward."""
        return self.accounting.roots

    @property
    def primary_opt(self):
        return self.accounting.primary_opt

    @property
    def identities(self) -> Dict[int, list]:
        """Storage address -> [allocator.Identity]: what the tracker saw there during profiling."""
        return self.accounting.identities

    def params(self):
        return self.accounting.params()

    def buffers(self):
        return self.accounting.buffers()

    def state_tensors(self):
        return self.accounting.state_tensors()

    def optimizer_state_bytes(self, device_type: Optional[str] = None) -> int:
        return self.accounting.optimizer_state_bytes(device_type)

    def live_records(self) -> List[Record]:
        """The saved tensors autograd still holds."""
        return list(self.saved.live.values())

    # -- lifecycle --------------------------------------------------------------------------

    def install(self) -> None:
        self.compiled.install()
        self._patches.install(self)
        if self.warmup == 0:
            self._start_profiling()

    def uninstall(self) -> None:
        self._patches.uninstall()
        self.compiled.uninstall()

    def note_creation(self, module, frame) -> None:
        """From nn.Module.__init__: the user line that built `module`."""
        if module in self.created_at:
            return
        f = frame
        # Skip this object's own constructor chain (super().__init__ calls) to reach the caller.
        while f is not None and f.f_code.co_name == "__init__" and f.f_locals.get("self") is module:
            f = f.f_back
        frames = self.code.user_frames(f, limit=1)
        if frames:
            self.created_at[module] = frames[0]

    # -- phases and steps -------------------------------------------------------------------

    def _start_profiling(self) -> None:
        self.step_log.start_profiling()
        self.accounting.identities.clear()
        if self.hooks.on_profiling_start is not None:
            self.hooks.on_profiling_start()
        # The last warmup step's grads are still alive (zero_grad often comes after the next forward).
        self.accounting.note_all()

    def on_backward_start(self) -> None:
        if self.cancel_requested:
            raise Cancelled()
        if self.step_log.phase == "backward":
            return
        self.step_log.set_phase("backward")
        if not self.snapshots:
            return
        grads = self.accounting.grad_bytes()
        snap = BwdSnapshot(now_us(), self.live_records(), grads, self.accounting.optimizer_state_bytes())
        self.step_log.current.keep_snapshot(snap)

    def optimizer_pre(self, opt) -> None:
        if self.cancel_requested:
            raise Cancelled()
        self.step_log.set_phase("optimizer")
        self.accounting.add_optimizer(opt)
        self.accounting.collect_grads(opt, self.step_log.current.grads, note_identities=self.step_log.profiling)

    def optimizer_post(self, opt) -> None:
        acc = self.accounting
        if acc.primary_opt is None:
            acc.primary_opt = opt
        if self.step_log.profiling:
            acc.note_new_state(opt)
        if opt is not acc.primary_opt:
            return
        self.step_log.set_phase("other")
        self._end_step()

    def _end_step(self) -> None:
        log = self.step_log
        cur = log.end_current()
        if log.profiling and self.device is not None and self.device.type == "cuda":
            # A host-side counter of the caching allocator: no device sync.
            log.note_max_allocated(torch.cuda.max_memory_allocated(self.device))
        # Params can move (model.to(...)): re-read their addresses once a step.
        self._refresh_persistent()
        done = log.index
        if self.hooks.on_step is not None:
            self.hooks.on_step(cur)
        log.advance()
        if not log.profiling and done == self.warmup:
            self._start_profiling()
        elif log.profiling and self.steps > 0 and done - self.warmup >= self.steps:
            raise StopScript()

    def _refresh_persistent(self) -> None:
        self.saved.persistent = self.accounting.persistent_ptrs()

    # -- module hooks -----------------------------------------------------------------------

    def _in_backward(self) -> bool:
        """Whether autograd is running a backward pass now (a forward now is a checkpoint's replay)."""
        if self.backward_depth > 0:
            return True
        return current_autograd_node is not None and current_autograd_node() is not None

    def innermost_module(self):
        """The module whose forward is running now, or None."""
        stack = self.stack
        return stack[-1][0] if stack else None

    def open_site(self, kind: str, frame, module, elements: int, fused: bool = False) -> SiteCall:
        """A dropout call starts: what is saved until it ends is its mask (see saved.py)."""
        call = SiteCall(kind, frame, module, elements, self.step_log.index, fused)
        self.step_log.current.sites.append(call)
        self.in_dropout = call
        return call

    def module_pre(self, module, args):
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
                if self.hooks.on_root_enter is not None:
                    self.hooks.on_root_enter(module)
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
                call = self.open_site("attn-dropout" if from_softmax(x) else "dropout", frame, module, x.numel())
        start = None
        log = self.step_log
        if self.module_timing and log.profiling and log.index == log.timed_step:
            if self.cuda_timing:
                start = torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                start = time.perf_counter()
        stack.append((module, prev, call, start))

    def module_post(self, module, args, output):
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
            self.step_log.current.timings.append((module, start, end))
        if not stack:
            if torch.is_grad_enabled():
                n = leading_dim(output)
                if n is not None:
                    self.step_log.current.samples += n
            if self.hooks.on_root_exit is not None:
                # output is None when the forward raised (hooks with always_call still run).
                self.hooks.on_root_exit(module, output)

    def _root_call(self, module) -> None:
        if self.accounting.add_root(module):
            if self.device is None:
                for p in module.parameters():
                    self.device = p.device
                    self.cuda_timing = p.device.type == "cuda" and self.module_timing
                    break
            if self.hooks.on_first_call is not None:
                self.hooks.on_first_call(module)
        if torch.is_grad_enabled():
            if self.step_log.phase != "forward":
                self.step_log.set_phase("forward")
            if self._refreshed_step == 0:
                # Later refreshes happen at each optimizer step, while the GPU is still busy:
                # here, after a script's per-step sync, the GPU would wait for us.
                self._refreshed_step = self.step_log.index
                self._refresh_persistent()

    # -- saved-tensor hooks -----------------------------------------------------------------

    def pack(self, t):
        return self.saved.pack(t, sys._getframe(1), self.innermost_module(), self.in_dropout)

    def unpack(self, x):
        if type(x) is not Packed:
            return x
        self.saved.note_use(x.rec)
        if self.step_log.phase == "forward":
            self.on_backward_start()
        return x.t
