"""membit.patch(model, ...) / membit.unpatch(model): convert a model in place, and back.

patch() swaps modules for membit's in place (same attribute names, so state_dict keys and
checkpoints are unchanged) and returns a PatchRecord saying what it replaced and what it left
alone and why. Each conversion is a matcher run over every (parent, attribute, child) place
of the model by `_convert`; a later conversion (2:4 sparse FFNs) adds its own matcher and
shares the record, undo and reporting.

Functional dropout. Code such as HF transformers' eager attention calls
`nn.functional.dropout(...)` rather than a module. While any patched model exists,
torch.nn.functional.dropout is a thin router: a call goes to membit's dropout when one of the
calling frames (up to _MAX_FRAMES up, nearest first) is a method of one of the patched model's
modules (`self`) or was handed one as `module` (HF's `eager_attention_forward(module, ...)`),
and to the original function otherwise. Deciding by the call stack rather than by forward
hooks keeps no state: it is right in every thread, after a forward that raised, and when
activation checkpointing recomputes a layer during backward (outside the model's forward), so
the recomputation draws the same kind of mask as the forward did. Call sites that bound the
function before patching (`from torch.nn.functional import dropout`) keep the original.
"""

import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from .nn.dropout import PackedDropout
from .nn.functional import packed_dropout
from .ops.packed_dropout import MODES

__all__ = ["patch", "unpatch", "PatchRecord", "Replacement", "Skipped"]

DROPOUT_MODES = MODES
FFN_MODES = ("2:4",)


@dataclass
class Replacement:
    """One module swapped by patch(): `old` was at every (parent, attribute) in `places`."""

    name: str
    kind: str
    old: nn.Module
    new: nn.Module
    places: List[Tuple[nn.Module, str]] = field(default_factory=list, repr=False)


@dataclass
class Skipped:
    """A module patch() saw and deliberately left alone."""

    name: str
    type: str
    reason: str


@dataclass
class PatchRecord:
    """What membit.patch did to a model; membit.unpatch uses it to undo exactly that."""

    dropout: Optional[str]
    ffn: Optional[str]
    replaced: List[Replacement] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)
    # Functions routed while the model's forward runs, e.g. ["torch.nn.functional.dropout"].
    functional: List[str] = field(default_factory=list)
    _handles: list = field(default_factory=list, repr=False)  # hooks a conversion registered
    _routed_modules: list = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.replaced)

    def __iter__(self):
        return iter(self.replaced)

    def summary(self) -> str:
        """One line per kind of change, for logs and the CLI."""
        lines = []
        by_type = {}
        for r in self.replaced:
            key = (r.kind, type(r.old).__name__, type(r.new).__name__)
            by_type[key] = by_type.get(key, 0) + 1
        for (kind, old, new), count in sorted(by_type.items()):
            mode = f" (mode={self.dropout})" if kind == "dropout" else ""
            lines.append(f"replaced {count} x {old} -> {new}{mode}")
        for fn in self.functional:
            lines.append(f"routed {fn} -> membit (mode={self.dropout}) inside the model's forward")
        for s in self.skipped:
            lines.append(f"skipped {s.name} ({s.type}): {s.reason}")
        return "\n".join(lines) if lines else "nothing to patch"


# Patched models -> their records. Weak, so patching never keeps a model alive.
_RECORDS: "weakref.WeakKeyDictionary[nn.Module, PatchRecord]" = weakref.WeakKeyDictionary()


def patch(model: nn.Module, dropout: Optional[str] = "packed", ffn: Optional[str] = None, *,
          functional: bool = True) -> PatchRecord:
    """Convert `model` in place to membit's memory-lean layers; returns a PatchRecord.

    dropout: "packed" (1-bit mask), "recompute" (no mask; regenerated in backward) or None.
      Every nn.Dropout becomes a PackedDropout with the same p, inplace and training flag.
      Channel-wise (Dropout1d/2d/3d) and alpha dropouts are left alone (see record.skipped).
    ffn: None, or "2:4": the Linear layers of feed-forward blocks become SparseLinear24
      (transposable 2:4 mask, masked decay), sharing the original weight and bias Parameters.
      They run cuSPARSELt 2:4 products on GPUs with sparse tensor cores in bf16, a masked dense
      matmul elsewhere (see membit.sparse, and its speed advice: 2:4 pays only on large FFNs).
    functional: also route torch.nn.functional.dropout calls made inside the model's forward
      (e.g. HF transformers' eager attention) to membit's dropout.
    """
    if dropout is not None and dropout not in DROPOUT_MODES:
        raise ValueError(f"dropout must be one of {DROPOUT_MODES} or None, got {dropout!r}")
    if ffn is not None and ffn not in FFN_MODES:
        raise ValueError(f"ffn must be one of {FFN_MODES} or None, got {ffn!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch() takes an nn.Module, got {type(model).__name__}")
    if model in _RECORDS:
        raise RuntimeError("this model is already patched by membit.patch; call membit.unpatch(model) first")

    record = PatchRecord(dropout=dropout, ffn=ffn)
    if dropout is not None:
        _convert(model, "dropout", _dropout_matcher(dropout), record)
        if functional:
            _route_functional_dropout(model, dropout, record)
    if ffn == "2:4":
        _convert(model, "ffn", _ffn_matcher(model), record)
    _RECORDS[model] = record
    return record


def unpatch(model: nn.Module) -> PatchRecord:
    """Undo membit.patch(model): put every original module back and stop routing. Returns the record."""
    record = _RECORDS.pop(model, None)
    if record is None:
        raise ValueError("this model was not patched by membit.patch (or was already unpatched)")
    for handle in record._handles:
        handle.remove()
    record._handles.clear()
    for r in reversed(record.replaced):
        r.old.train(r.new.training)  # follow any model.train()/eval() made while patched
        for parent, attr in r.places:
            setattr(parent, attr, r.old)
    if record.functional:
        for m in record._routed_modules:
            _router.modules.pop(m, None)
        record._routed_modules = []
        _router.release()
    return record


# ----------------------------------------------------------------------------------------------
# Module conversion
# ----------------------------------------------------------------------------------------------

# A matcher maps a child module to None (not ours to touch), a new module, or a Skipped reason.
Matcher = Callable[[nn.Module], object]


def _convert(model: nn.Module, kind: str, matcher: Matcher, record: PatchRecord) -> None:
    names = {}
    for name, mod in model.named_modules():
        names.setdefault(id(mod), name)
    done = {}  # id(old) -> Replacement: a module shared by several parents is replaced once
    for parent in list(model.modules()):
        for attr, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) in done:
                rep = done[id(child)]
                setattr(parent, attr, rep.new)
                rep.places.append((parent, attr))
                continue
            result = matcher(child)
            if result is None:
                continue
            name = names.get(id(child), attr)
            if isinstance(result, str):
                if all(s.name != name for s in record.skipped):
                    record.skipped.append(Skipped(name, type(child).__name__, result))
                continue
            result.train(child.training)
            setattr(parent, attr, result)
            rep = Replacement(name=name, kind=kind, old=child, new=result, places=[(parent, attr)])
            done[id(child)] = rep
            record.replaced.append(rep)


def _channel_dropout_types():
    types = []
    for n in ("Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"):
        t = getattr(nn, n, None)
        if t is not None:
            types.append(t)
    return tuple(types)


def _dropout_matcher(mode: str) -> Matcher:
    channel_types = _channel_dropout_types()

    def match(m: nn.Module):
        if isinstance(m, PackedDropout):
            return "already a membit PackedDropout"
        if isinstance(m, channel_types):
            # Their masks are per channel (N x C values, not one per element) or, for alpha
            # dropout, not a plain 0/scale mask: small already, and not what our kernel computes.
            return "channel-wise or alpha dropout: mask is not per element; left as is"
        if isinstance(m, nn.Dropout):
            if type(m).forward is not nn.Dropout.forward:
                return "subclass of nn.Dropout with its own forward; left as is"
            return PackedDropout(p=m.p, inplace=m.inplace, mode=mode)
        return None

    return match


def _is_plain_linear(m) -> bool:
    from .sparse import SparseLinear24

    return isinstance(m, nn.Linear) and not isinstance(m, SparseLinear24)


@dataclass
class FfnGroup:
    """One feed-forward block: its up (and gate) projection d -> h and its down projection h -> d."""

    name: str  # the module holding the linears (for HF Intermediate/Output pairs: their parent)
    up: nn.Linear
    down: nn.Linear
    gate: Optional[nn.Linear] = None

    @property
    def linears(self) -> List[nn.Linear]:
        return [m for m in (self.gate, self.up, self.down) if m is not None]


def ffn_groups(model: nn.Module, include_sparse: bool = False) -> List[FfnGroup]:
    """The feed-forward blocks of `model`; conservative on purpose.

    An FFN is (a) a module with exactly two Linear children, the first d -> h and the second
    h -> d with h > d (nanoGPT MLP c_fc/c_proj, timm Mlp fc1/fc2), (b) gate_proj/up_proj/down_proj
    Linear children of one module (gated MLPs), or (c) sibling modules whose class names end in
    "Intermediate" and "Output", each with a Linear `dense`, d -> h then h -> d (HF BERT-like).
    Attention projections (d -> 3d then d -> d, or d -> d pairs) match none of these.
    include_sparse: also match linears already converted to SparseLinear24 (to describe a model).
    """
    from .sparse import SparseLinear24

    def ok(m) -> bool:
        return isinstance(m, nn.Linear) and (include_sparse or not isinstance(m, SparseLinear24))

    found: List[FfnGroup] = []
    for name, mod in model.named_modules():
        children = list(mod._modules.items())
        lin = [(n, c) for n, c in children if isinstance(c, nn.Linear)]
        if len(lin) == 2 and all(ok(c) for _, c in lin):
            (_, a), (_, b) = lin
            d, h = a.in_features, a.out_features
            if b.in_features == h and b.out_features == d and h > d:
                found.append(FfnGroup(name, a, b))
        named = {n: c for n, c in lin if ok(c)}
        if all(k in named for k in ("gate_proj", "up_proj", "down_proj")):
            g, u, dn = named["gate_proj"], named["up_proj"], named["down_proj"]
            if (g.in_features == u.in_features == dn.out_features and g.out_features == u.out_features
                    == dn.in_features):
                found.append(FfnGroup(name, u, dn, g))
        inter = [c for _, c in children if c is not None and type(c).__name__.endswith("Intermediate")]
        outs = [c for _, c in children if c is not None and type(c).__name__.endswith("Output")]
        if len(inter) == 1 and len(outs) == 1:
            a, b = getattr(inter[0], "dense", None), getattr(outs[0], "dense", None)
            if ok(a) and ok(b):
                d, h = a.in_features, a.out_features
                if b.in_features == h and b.out_features == d and h > d:
                    found.append(FfnGroup(name, a, b))
    return found


def _ffn_linears(model: nn.Module) -> dict:
    """id(Linear) -> Linear for the linears of feed-forward blocks (see ffn_groups)."""
    return {id(m): m for g in ffn_groups(model) for m in g.linears}


def _ffn_matcher(model: nn.Module) -> Matcher:
    from .sparse import SparseLinear24

    targets = _ffn_linears(model)

    def match(m: nn.Module):
        if id(m) in targets and targets[id(m)] is m:
            if type(m) is not nn.Linear:
                return "subclass of nn.Linear in a feed-forward block; left as is"
            return SparseLinear24.from_linear(m)
        return None

    return match


# ----------------------------------------------------------------------------------------------
# Routing torch.nn.functional.dropout inside patched models' forwards
# ----------------------------------------------------------------------------------------------


class _DropoutRouter:
    """Owns the replacement of torch.nn.functional.dropout while any patched model needs it."""

    def __init__(self):
        self.users = 0
        self.original = None
        self.lock = threading.Lock()
        # Every module of every routed model -> its dropout mode.
        self.modules: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()

    def acquire(self) -> None:
        with self.lock:
            if self.users == 0:
                self.original = torch.nn.functional.dropout
                torch.nn.functional.dropout = _routed_dropout
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                # Put the original back only if nobody wrapped ours since; otherwise keep
                # routing harmlessly (with no patched forward running it calls the original).
                if torch.nn.functional.dropout is _routed_dropout:
                    torch.nn.functional.dropout = self.original


_router = _DropoutRouter()


def _routed_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    if _is_compiling():
        mode = _traced_mode()
    else:
        mode = _caller_mode(sys._getframe(1))
    if mode is not None:
        return packed_dropout(input, p, training, inplace, mode)
    return _router.original(input, p, training, inplace)


# A module's forward calls F.dropout directly or through a helper or two; each nested module
# call adds ~3 frames, so 16 frames reach a patched module through a few unpatched ones.
_MAX_FRAMES = 16


def _caller_mode(frame) -> Optional[str]:
    """The mode of the nearest calling frame that belongs to a patched module (`self` or `module`)."""
    if not _router.modules:
        return None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        local = frame.f_locals
        for key in ("self", "module"):
            m = local.get(key)
            if isinstance(m, nn.Module):
                mode = _router.modules.get(m)
                if mode is not None:
                    return mode
        frame = frame.f_back
    return None


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _traced_mode_impl() -> Optional[str]:
    """_caller_mode for code torch.compile traces.

    While dynamo traces, the Python stack holds dynamo's own frames, not the user's: each
    traced function is an instruction translator (the `self` of its frames), whose symbolic
    locals hold the traced `self` / `module` as variable trackers wrapping the real module.
    Walked innermost first, like _caller_mode walks real frames.
    """
    if not _router.modules:
        return None
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslatorBase
    except Exception:  # noqa: BLE001 - another torch: no routing rather than a failure
        return None
    frame, seen, depth = sys._getframe(1), set(), 0
    while frame is not None and depth < 400:
        tx = frame.f_locals.get("self")
        if isinstance(tx, InstructionTranslatorBase) and id(tx) not in seen:
            seen.add(id(tx))
            local = getattr(tx, "symbolic_locals", None) or {}
            for key in ("self", "module"):
                m = _module_of(local.get(key))
                if m is not None:
                    mode = _router.modules.get(m)
                    if mode is not None:
                        return mode
            if len(seen) >= _MAX_FRAMES:
                break
        frame = frame.f_back
        depth += 1
    return None


def _module_of(vt) -> Optional[nn.Module]:
    """The nn.Module behind a dynamo variable tracker, if it wraps one."""
    if vt is None:
        return None
    for attr in ("peek_value", "original_value"):  # LazyVariableTracker: the unrealised value
        fn = getattr(vt, attr, None)
        if fn is not None:
            try:
                v = fn()
            except Exception:  # noqa: BLE001
                continue
            if isinstance(v, nn.Module):
                return v
    v = getattr(vt, "value", None)
    return v if isinstance(v, nn.Module) else None


def _make_traced_mode():
    # Evaluated for real while dynamo traces (not traced itself); the answer is baked into the
    # graph. A model's patch state changes only through patch/unpatch, which users do before
    # compiling; unpatching a compiled model needs torch._dynamo.reset() to take effect.
    dynamo = getattr(torch, "_dynamo", None)
    deco = getattr(dynamo, "assume_constant_result", None) if dynamo is not None else None
    return deco(_traced_mode_impl) if deco is not None else _traced_mode_impl


_traced_mode = _make_traced_mode()


_routed_dropout.__doc__ = "torch.nn.functional.dropout, routed to membit inside models patched by membit.patch."
_routed_dropout.__wrapped__ = torch.nn.functional.dropout


def _route_functional_dropout(model: nn.Module, mode: str, record: PatchRecord) -> None:
    for m in model.modules():
        _router.modules[m] = mode
    record._routed_modules = list(model.modules())
    _router.acquire()
    record.functional.append("torch.nn.functional.dropout")
