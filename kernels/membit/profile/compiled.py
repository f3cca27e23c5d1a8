"""What the harness needs to see of torch.compile: graphs, their saved tensors, their source lines.

A compiled graph runs as one autograd.Function (AOTAutograd's CompiledFunction): the module
hooks and F.dropout wrappers of the tracker do not run inside it, and every tensor it keeps
for backward is saved at once, after its forward, from the line that called the compiled
module. Attribution therefore goes through the graphs themselves:

  * AOTAutograd splits each joint graph into a forward and a backward module in
    torch._functorch.partitioners._extract_fwd_bwd_modules. Wrapping that function, we read
    the forward's outputs that the backward takes as inputs: the saved tensors, in the order
    CompiledFunction later passes them to ctx.save_for_backward. Each is an FX node whose
    meta holds the user's stack trace (`stack_trace`) and module (`nn_module_stack`).
  * At run time the saved-tensor pack hook fires once per saved tensor, in that order, from
    Function.apply of the graph's CompiledFunction (its class carries the graph's `_aot_id`).
    The i-th pack of a call is the i-th saved node; its shape and dtype must match the node's,
    or the tensor is attributed to the graph alone (the call line), never guessed.

All this is hooked at the script's first torch.compile call (a script that never compiles does
not pay for importing the compiler). From then on the AOTAutograd cache is off (a cache hit
skips the partitioner); Inductor's own FX graph cache stays on. Graph breaks come from dynamo's
counters.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

import torch

from .frames import CodeFilter


def is_compiling() -> bool:
    """True while dynamo traces (the harness's hooks must then do nothing)."""
    compiler = getattr(torch, "compiler", None)
    fn = getattr(compiler, "is_compiling", None) if compiler is not None else None
    return bool(fn is not None and fn())


class SavedNode:
    """One tensor a compiled forward keeps for backward, as the partitioner saw it."""

    __slots__ = ("name", "op", "shape", "dtype", "frames", "module_path", "_resolved", "static_shape")

    def __init__(self, name, op, shape, dtype, frames, module_path):
        self.name = name
        self.op = op
        self.shape = shape
        self.dtype = dtype
        self.frames = frames
        self.module_path = module_path
        # Every size known: the run-time check is one tuple comparison (it runs for every save).
        self.static_shape = tuple(shape) if all(d is not None for d in shape) else None
        self._resolved = None  # (weakref to the root, module or None): resolved once per root

    def module_in(self, root):
        """The module this node ran in, under `root`; None for a node outside modules (an input)."""
        import weakref

        cached = self._resolved
        if cached is not None and cached[0]() is root:
            return cached[1]
        module = None
        if self.module_path is not None:
            try:
                module = root.get_submodule(self.module_path)
            except Exception:  # noqa: BLE001 - a path dynamo spelled differently: outside modules
                module = None
        try:
            self._resolved = (weakref.ref(root), module)
        except TypeError:
            pass
        return module


class Graph:
    """A compiled forward graph (one AOTAutograd id) and what the run saw it save."""

    __slots__ = ("aot_id", "calls", "expected", "saved")

    def __init__(self, aot_id: int, saved: List[SavedNode]):
        self.aot_id = aot_id
        self.saved = saved
        self.calls = 0
        self.expected: Optional[int] = None  # packs per call (tensors saved through save_for_backward)


def _op_of(node) -> str:
    import operator

    target = node.target
    if target is operator.getitem and node.args:
        # The saved value is one output of a multi-output op (native_dropout's mask, say).
        target = getattr(node.args[0], "target", target)
    if node.op == "placeholder":
        return "input"  # a graph input kept for backward (an earlier graph's output, say)
    name = getattr(target, "__name__", None) or str(target)
    # aten.native_dropout.default -> native_dropout
    name = str(getattr(target, "_opname", name))
    return name.split(".")[0]


def _module_path(meta) -> Optional[str]:
    """Dotted path of the innermost module in an FX node's nn_module_stack, relative to the model."""
    stack = meta.get("nn_module_stack") or {}
    if not stack:
        return None
    last = list(stack.values())[-1]
    raw = last[0] if isinstance(last, tuple) else str(last)
    return dotted(raw)


def dotted(raw: str) -> str:
    """"L['self'].h[0].attn" or "L['self']._modules['h']._modules['0']" -> "h.0.attn"."""
    s = raw
    if s.startswith("L[") or s.startswith("G["):
        end = s.find("]")
        s = s[end + 1:] if end >= 0 else ""
    parts: List[str] = []
    token = ""
    i = 0
    while i < len(s):
        c = s[i]
        if c == ".":
            if token:
                parts.append(token)
            token = ""
        elif c == "[":
            if token:
                parts.append(token)
            token = ""
            end = s.find("]", i)
            inner = s[i + 1:end if end >= 0 else len(s)].strip("'\"")
            parts.append(inner)
            i = end if end >= 0 else len(s)
        else:
            token += c
        i += 1
    if token:
        parts.append(token)
    return ".".join(p for p in parts if p != "_modules")


def _frames_of(stack_trace: Optional[str], code: CodeFilter, limit: int = 3) -> list:
    """User frames (innermost first) of an FX node's stack_trace text."""
    if not stack_trace:
        return []
    out = []
    try:
        lines = stack_trace.splitlines()
        for ln in lines:
            ln = ln.strip()
            if not ln.startswith('File "'):
                continue
            q = ln.find('"', 6)
            filename = ln[6:q]
            rest = ln[q + 1:]
            lno = 0
            name = ""
            if ", line " in rest:
                tail = rest.split(", line ", 1)[1]
                num = tail.split(",", 1)[0].strip()
                lno = int(num) if num.isdigit() else 0
                if ", in " in tail:
                    name = tail.split(", in ", 1)[1].strip()
            if filename and not code.is_library(filename):
                out.append((filename, lno, name))
    except Exception:  # noqa: BLE001 - attribution is best effort
        return []
    out.reverse()
    return out[:limit]


class CompileWatch:
    """Installed for the run: records compiled graphs' saved tensors and maps packs to them."""

    def __init__(self, code: CodeFilter):
        self.code = code
        self.graphs: Dict[int, Graph] = {}
        self.compile_calls: List[dict] = []
        self._restore: list = []
        self._last_frame = 0
        self._last_graph = None
        self._index = 0
        self._counters_before: Dict[str, int] = {}
        self._hooked = False

    # -- install ----------------------------------------------------------------------------

    def install(self) -> None:
        """Wraps torch.compile; the compiler's own modules are hooked at the first compile call.

        Importing AOTAutograd's partitioner and dynamo costs seconds of start-up: a script that
        never compiles must not pay it. Every way into compilation that a script uses in practice
        (torch.compile(model), @torch.compile, nn.Module.compile) calls torch.compile first, and
        graphs are only traced later, at their first call.
        """
        compile_fn = getattr(torch, "compile", None)
        if compile_fn is None:
            return
        watch = self

        def compile(model=None, *args, **kwargs):
            try:
                watch._hook_compiler()
                frames = watch.code.user_frames(sys._getframe(1), limit=1)
                backend = kwargs.get("backend", "inductor")
                watch.compile_calls.append({"frame": frames[0] if frames else None,
                                            "backend": backend if isinstance(backend, str) else getattr(backend, "__name__", "custom"),
                                            "mode": kwargs.get("mode")})
            except Exception:  # noqa: BLE001 - never break the user's compile
                pass
            return compile_fn(model, *args, **kwargs)

        compile.__wrapped__ = compile_fn
        compile.__doc__ = compile_fn.__doc__
        self._set(torch, "compile", compile)

    def _hook_compiler(self) -> None:
        if self._hooked:
            return
        self._hooked = True
        self._counters_before = self._counters()
        try:
            import torch._functorch.partitioners as partitioners
        except Exception:  # noqa: BLE001 - a torch without AOTAutograd: nothing to map
            return
        if not hasattr(partitioners, "_extract_fwd_bwd_modules"):
            return
        original = partitioners._extract_fwd_bwd_modules
        watch = self

        def extract(*args, **kwargs):
            fw, bw = original(*args, **kwargs)
            try:
                watch._note_partition(fw, bw, kwargs.get("num_fwd_outputs"), kwargs)
            except Exception:  # noqa: BLE001 - never break the user's compile
                pass
            return fw, bw

        extract.__wrapped__ = original
        self._set(partitioners, "_extract_fwd_bwd_modules", extract)
        cfg = getattr(torch._functorch, "config", None)
        if cfg is not None and hasattr(cfg, "enable_autograd_cache"):
            self._set(cfg, "enable_autograd_cache", False)

    def uninstall(self) -> None:
        for owner, name, original, ours in reversed(self._restore):
            if getattr(owner, name, None) is ours or not callable(ours):
                setattr(owner, name, original)
        self._restore.clear()

    def _set(self, owner, name, value) -> None:
        original = getattr(owner, name)
        setattr(owner, name, value)
        self._restore.append((owner, name, original, value))

    # -- compile time -----------------------------------------------------------------------

    def _note_partition(self, fw, bw, num_fwd_outputs, kwargs) -> None:
        if kwargs.get("omit_aot_autograd_runtime") or num_fwd_outputs is None:
            return  # not a graph that runs as a CompiledFunction
        from torch._functorch._aot_autograd import logging_utils

        names = list(getattr(logging_utils, "graph_being_compiled", []) or [])
        if not names:
            return
        head = names[0].split("_", 1)[0]
        if not head.isdigit():
            return
        aot_id = int(head)
        outs = fw.graph.find_nodes(op="output")[0].args[0]
        bw_inputs = {n.name for n in bw.graph.find_nodes(op="placeholder")}
        # Nodes the partitioner or autograd made (a transpose for the backward's matmul, say)
        # have a stack trace but no module: they take the module of the nearest node of the
        # same source line, preferring one before them in graph order.
        before: Dict[int, Optional[str]] = {}
        by_line: Dict[tuple, Optional[str]] = {}
        after: Dict[tuple, str] = {}
        frames_of: Dict[int, list] = {}
        for n in fw.graph.nodes:
            fr = _frames_of(n.meta.get("stack_trace"), self.code) if hasattr(n, "meta") else []
            frames_of[id(n)] = fr
            key = fr[0][:2] if fr else None
            path = _module_path(n.meta) if hasattr(n, "meta") else None
            if key is not None:
                if path is not None:
                    by_line[key] = path
                    after.setdefault(key, path)
                before[id(n)] = path or by_line.get(key)
        saved = []
        for n in outs[num_fwd_outputs:]:
            val = n.meta.get("val") if hasattr(n, "meta") else None
            if getattr(n, "name", None) not in bw_inputs or not isinstance(val, torch.Tensor):
                continue
            shape = tuple(int(s) if isinstance(s, int) else None for s in val.shape)
            fr = frames_of.get(id(n), [])
            path = before.get(id(n)) or (after.get(fr[0][:2]) if fr else None)
            if path is None and fr:
                path = ""  # code of the compiled module's own forward, outside any child
            saved.append(SavedNode(n.name, _op_of(n), shape, val.dtype, fr, path))
        self.graphs[aot_id] = Graph(aot_id, saved)

    # -- run time ---------------------------------------------------------------------------

    def saved_node(self, t: torch.Tensor, frame) -> Tuple[Optional[Graph], Optional[SavedNode]]:
        """For a pack-hook call: the compiled graph saving `t` and its FX node, if this is one.

        `frame` is the pack hook's caller: Function.apply of the graph's CompiledFunction.
        """
        graph = self._last_graph
        if id(frame) != self._last_frame or graph is None or self._index >= graph.expected:
            # The first save of a call. Reading the apply frame's locals builds a dict, so it is
            # done once per call, not per save: the hook's cost is paid on every saved tensor.
            if frame is None or frame.f_code.co_name != "apply":
                return None, None
            cls = frame.f_locals.get("cls")
            aot_id = getattr(cls, "_aot_id", None)
            if aot_id is None or not hasattr(cls, "compiled_fw"):
                return None, None
            graph = self.graphs.get(aot_id)
            if graph is None:
                graph = self.graphs[aot_id] = Graph(aot_id, [])
            # Packs of one call come one after another from the same apply frame, as many as
            # the tensors saved through ctx.save_for_backward (AOTAutograd keeps the rest on
            # ctx directly, unseen by hooks). Only the frame's id is kept: holding the frame
            # would keep its arguments alive.
            if graph.expected is None:
                meta = getattr(cls, "metadata", None)
                graph.expected = max(1, len(graph.saved) - int(getattr(meta, "num_tensors_saved_with_no_vc_check", 0) or 0))
            self._last_frame = id(frame)
            self._last_graph = graph
            self._index = 0
            graph.calls += 1
        i = self._index
        self._index += 1
        if i >= len(graph.saved):
            return graph, None
        node = graph.saved[i]
        if node.dtype != t.dtype:
            return graph, None
        if node.static_shape is not None:
            return (graph, node) if t.shape == node.static_shape else (graph, None)
        if len(node.shape) != t.dim() or any(s is not None and s != int(d) for s, d in zip(node.shape, t.shape)):
            return graph, None
        return graph, node

    # -- report -----------------------------------------------------------------------------

    @staticmethod
    def _counters() -> Dict[str, int]:
        try:
            from torch._dynamo.utils import counters
        except Exception:  # noqa: BLE001
            return {}
        return {"graph_breaks": int(sum(counters["graph_break"].values())),
                "unique_graphs": int(counters["stats"].get("unique_graphs", 0))}

    def used(self) -> bool:
        return bool(self.compile_calls or self.graphs)

    def doc(self, paths, records) -> Optional[dict]:
        """run.compile: how the script compiled, and per graph what it saved in the report's step.

        `records` are the tracker's records of the step the report's lines describe.
        """
        if not self.used():
            return None
        now = self._counters()
        before = self._counters_before
        per: Dict[int, dict] = {}
        for r in records:
            if r.graph is None:
                continue
            e = per.setdefault(r.graph, {"saved_bytes": 0, "lines_bytes": 0, "lines": set()})
            e["saved_bytes"] += r.nbytes
            if r.mapped:
                e["lines_bytes"] += r.nbytes
                if r.frames:
                    e["lines"].add((r.frames[0][0], r.frames[0][1]))
        graphs = []
        for g in sorted(self.graphs.values(), key=lambda g: g.aot_id):
            if not g.calls:
                continue
            e = per.get(g.aot_id, {"saved_bytes": 0, "lines_bytes": 0, "lines": set()})
            graphs.append({"id": g.aot_id, "saved_tensors": len(g.saved), "calls": g.calls,
                           "saved_bytes": int(e["saved_bytes"]), "lines_bytes": int(e["lines_bytes"]),
                           "graph_only_bytes": int(e["saved_bytes"] - e["lines_bytes"]),
                           "lines": len(e["lines"])})
        calls = []
        for c in self.compile_calls:
            fr = c["frame"]
            calls.append({"file": paths(fr[0]) if fr else None, "line": int(fr[1]) if fr else None,
                          "backend": c["backend"], "mode": c["mode"]})
        return {"calls": calls,
                "graphs": len(graphs),
                "graph_breaks": now.get("graph_breaks", 0) - before.get("graph_breaks", 0),
                "attribution": "fx-stack-trace",
                "per_graph": graphs}
