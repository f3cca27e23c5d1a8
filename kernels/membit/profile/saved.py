"""The saved-tensor store: every tensor autograd keeps for backward, while it is kept.

Each storage is recorded once (deduplicated by address), with the user line and module that
saved it, the step and phase, and whether it is a mask (bool/uint8, or saved inside a dropout
call); it leaves the live set when autograd drops its last reference. Parameters and buffers
are not activations: saves of their storages are left out.

Tensors a compiled graph saves are recorded through its FX graph (compiled.CompileWatch),
with the line and module of the node that produced them when the graph says.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .accounting import storage_of
from .compiled import CompileWatch
from .frames import CodeFilter
from .steps import StepLog

# The autograd node running now (None outside backward); absent from old torch.
current_autograd_node = getattr(torch._C, "_current_autograd_node", None)


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


_SOFTMAX_NAMES = ("SoftmaxBackward", "SafeSoftmaxBackward", "LogSoftmaxBackward")
_PASSTHROUGH = ("ToCopyBackward", "ViewBackward", "CloneBackward", "UnsafeViewBackward", "ExpandBackward",
                "MaskedFillBackward", "DivBackward", "MulBackward")


def from_softmax(t) -> bool:
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


# Set while a store is attached; Packed.__del__ calls it when autograd drops a saved tensor.
_release_hook: Optional[Callable] = None


class Packed:
    """What autograd stores in place of a saved tensor while we profile."""

    __slots__ = ("t", "rec")

    def __init__(self, t, rec):
        self.t = t
        self.rec = rec

    def __del__(self):
        hook = _release_hook
        if hook is not None:
            hook(self.rec)


class SavedTensorStore:
    def __init__(self, code: CodeFilter, compiled: CompileWatch, steps: StepLog, clock: Callable[[], int]):
        self.code = code
        self.compiled = compiled
        self.steps = steps
        # The tracker's clock, read at each call: membit.predict swaps in a logical one.
        self._clock = clock
        self.live: Dict[int, Record] = {}
        self.persistent: Dict[int, str] = {}  # storage ptr -> "param" | "buffer"

    def attach(self) -> None:
        """From now on, a saved tensor that autograd drops leaves the live set."""
        global _release_hook
        _release_hook = self.release

    @staticmethod
    def detach() -> None:
        global _release_hook
        _release_hook = None

    def pack(self, t, caller, module, site: Optional[SiteCall]):
        """The pack hook's work: `caller` is the frame that saved t, `module` the innermost one
        running, `site` the dropout call in progress."""
        graph = node = None
        if self.compiled.graphs or self.compiled.compile_calls:
            # Before any early return: the index of a compiled graph's saves must advance.
            graph, node = self.compiled.saved_node(t, caller)
        try:
            st = storage_of(t)
            ptr = st.data_ptr()
        except Exception:  # noqa: BLE001
            return t
        if not ptr or ptr in self.persistent:
            return t
        rec = self.live.get(ptr)
        if rec is None and graph is not None:
            rec = self._compiled_record(t, st, ptr, graph, node, caller, module)
        if rec is None:
            dtype = t.dtype
            mask = dtype is torch.bool or dtype is torch.uint8
            if site is not None and not site.fused:
                mask = True
            steps = self.steps
            # Meta tensors are a prediction's fake CUDA tensors (membit.predict).
            cuda = t.is_cuda or t.device.type == "meta"
            rec = Record(ptr, st.nbytes(), dtype, tuple(t.shape), cuda,
                         self.code.user_frames(caller, limit=1 if cuda else 3),
                         module, mask, site if mask else None, steps.index, steps.phase, self._clock())
            if site is not None and mask:
                site.mask_bytes += rec.nbytes
            self.live[ptr] = rec
            steps.current.records.append(rec)
        rec.refs += 1
        return Packed(t, rec)

    def _compiled_record(self, t, st, ptr, graph, node, caller, outer) -> Record:
        """A tensor saved by a compiled graph: its line and module from the FX node when mapped."""
        frames = node.frames[:1 if t.is_cuda else 3] if node is not None and node.frames else []
        module = outer
        if node is not None and module is not None:
            module = node.module_in(module)
        mapped = bool(frames)
        if not frames:
            # The graph's figure alone: the line that called the compiled module.
            frames = self.code.user_frames(caller, limit=1 if t.is_cuda else 3)
        dtype = t.dtype
        steps = self.steps
        rec = Record(ptr, st.nbytes(), dtype, tuple(t.shape), t.is_cuda, frames, module,
                     dtype is torch.bool or dtype is torch.uint8, None, steps.index, steps.phase, self._clock())
        rec.graph = graph.aot_id
        rec.mapped = mapped
        if node is not None:
            rec.op = node.op
        self.live[ptr] = rec
        steps.current.records.append(rec)
        return rec

    @staticmethod
    def note_use(rec: Record) -> None:
        """At unpack: the autograd node that reads a saved tensor first names its op."""
        if rec.op is None and current_autograd_node is not None:
            node = current_autograd_node()
            if node is not None:
                rec.op = node.name()

    def release(self, rec: Record) -> None:
        rec.refs -= 1
        if rec.refs <= 0 and rec.t_release is None:
            rec.t_release = self._clock()
            if self.live.get(rec.ptr) is rec:
                del self.live[rec.ptr]
