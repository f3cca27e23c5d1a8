"""Turns what the harness saw into a `membit.report/1` document, and writes it atomically.

Accounting rules (the tests check them on every report):
  * each saved storage counts once, on one line and in one module (or outside all modules);
  * sum(lines.saved_bytes) == summary.saved_bytes
    == sum(modules.saved_bytes) + summary.saved_outside_modules (same for mask_bytes);
  * sum(lines.at_peak_bytes) == summary.activations_at_peak + summary.masks_at_peak;
  * sum(modules.params) == summary.params and sum(modules.grads) == summary.grads when every
    parameter belongs to a module;
  * on CUDA, peak_allocated == tracked_at_peak + unattributed_at_peak: what cannot be named
    stays unattributed, it is never spread over the named categories.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import linecache
import math
import os
import re
import statistics
from typing import Dict, List, Optional

import torch

from . import allocator
from .accounting import local_tensor, storage_key, tensor_bytes, unique_storage_bytes
from .frames import frame_dict, frames_from_allocator
from .saved import Record, op_name
from .tracker import now_us

TOP = 20
TIMELINE_POINTS = 1500


def write_atomic(path: str, doc: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a report."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # No half-written temporary file left behind (a folder at `path`, a full disk).
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _num(x: Optional[float], nd: int = 4) -> Optional[float]:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def _wildcard(paths: List[str]) -> Optional[str]:
    """One pattern for the module paths a line ran in: h.0.attn + h.1.attn -> h.*.attn."""
    uniq = sorted(set(p for p in paths if p is not None))
    if not uniq:
        return None
    if len(uniq) == 1:
        return uniq[0]
    parts = [p.split(".") for p in uniq]
    if len({len(p) for p in parts}) != 1:
        return "*"
    return ".".join(c[0] if len(set(c)) == 1 else "*" for c in zip(*parts))


_SOURCE_CACHE: Dict[type, Optional[tuple]] = {}


def _defined_at(cls: type) -> Optional[tuple]:
    """(file, line) of a class statement.

    inspect.getsourcelines looks the class up through sys.modules[cls.__module__], which for a
    script run as __main__ is no longer the script once it has ended; the code objects of the
    class's own functions still name the file, and the class statement is the nearest one above.
    """
    if cls in _SOURCE_CACHE:
        return _SOURCE_CACHE[cls]
    out = None
    codes = [getattr(v, "__code__", None) for v in vars(cls).values()]
    codes = [c for c in codes if c is not None and c.co_filename and not c.co_filename.startswith("<")]
    if codes:
        filename = codes[0].co_filename
        first = min(c.co_firstlineno for c in codes if c.co_filename == filename)
        try:
            # linecache: an overlaid file's lines are those of the text that ran (see overlay.py).
            text = [ln.rstrip("\r\n") for ln in linecache.getlines(filename)]
            if not text:
                raise OSError(f"cannot read {filename}")
            pat = re.compile(r"^\s*class\s+" + re.escape(cls.__name__) + r"\b")
            for ln in range(min(first, len(text)), 0, -1):
                if pat.match(text[ln - 1]):
                    out = (filename, ln)
                    break
        except OSError:
            out = None
    if out is None:
        try:
            f = inspect.getsourcefile(cls)
            if f:
                out = (f, inspect.getsourcelines(cls)[1])
        except (TypeError, OSError, IndexError):
            out = None
    _SOURCE_CACHE[cls] = out
    return out


class ModuleIndex:
    """Dotted paths for every module of the run's models.

    The model with the most parameter bytes is the main one: its paths have no prefix ('' is
    the model). Other top-level modules (a loss module, a second network) are prefixed by
    their class name.
    """

    def __init__(self, roots: List[torch.nn.Module]):
        def weight(m):
            return sum(tensor_bytes(p) for p in m.parameters())

        ordered = sorted(roots, key=weight, reverse=True)
        self.paths: Dict[int, str] = {}
        self.modules: Dict[str, torch.nn.Module] = {}
        self.param_owner: Dict[int, str] = {}
        self.params: Dict[int, torch.nn.Parameter] = {}
        used_prefixes = set()
        for k, root in enumerate(ordered):
            if id(root) in self.paths:
                continue
            prefix = ""
            if k > 0:
                prefix = type(root).__name__
                n = 2
                while prefix in used_prefixes:
                    prefix = f"{type(root).__name__}#{n}"
                    n += 1
                used_prefixes.add(prefix)
            for name, m in root.named_modules():
                if id(m) in self.paths:
                    continue
                full = ".".join(x for x in (prefix, name) if x)
                self.paths[id(m)] = full
                self.modules[full] = m
            for name, p in root.named_parameters():
                if id(p) in self.param_owner:
                    continue
                owner = name.rsplit(".", 1)[0] if "." in name else ""
                self.param_owner[id(p)] = ".".join(x for x in (prefix, owner) if x)
                self.params[id(p)] = p

    def path_of(self, module) -> Optional[str]:
        if module is None:
            return None
        p = self.paths.get(id(module))
        if p is None:
            # Called inside a forward but not registered as a child of any model.
            base = f"<{type(module).__name__}>"
            p, n = base, 2
            while p in self.modules and self.modules[p] is not module:
                p = f"{base}#{n}"
                n += 1
            self.paths[id(module)] = p
            self.modules[p] = module
        return p


def _holder(bytes_, category, frames, saved_at=None, shape=None, dtype=None) -> dict:
    return {"bytes": int(bytes_), "category": category, "frames": frames, "saved_at": saved_at,
            "shape": [int(x) for x in shape] if shape is not None else None,
            "dtype": str(dtype).replace("torch.", "") if dtype is not None else None}


class PeakView:
    """The state at one moment: categories, the saved records alive, and the largest holders."""

    def __init__(self):
        self.sums = {k: 0 for k in ("param", "buffer", "grad", "optimizer", "activation", "mask")}
        self.records: List[Record] = []
        self.top: List[dict] = []
        self.t_ours: Optional[int] = None
        self.source = "tensors"
        self.replay_bytes: Optional[int] = None


def build(h) -> dict:
    """h: the Harness (see harness.py) after the script has ended."""
    tr = h.tracker
    paths = h.paths
    dev = tr.device
    dev_type = dev.type if dev is not None else ("cuda" if h.cuda_used else "cpu")
    # A prediction (membit.predict) runs "cuda" as meta tensors and replays its own allocator trace.
    on_cuda = dev_type == "cuda" or (dev_type == "meta" and getattr(h, "fake_cuda", False))
    index = ModuleIndex(tr.roots)

    def keep(rec: Record) -> bool:
        return rec.cuda == on_cuda

    # -- persistent sizes -------------------------------------------------------------------
    params_total = unique_storage_bytes(tr.params(), dev_type)
    buffers_total = unique_storage_bytes(tr.buffers(), dev_type)
    state_total = tr.optimizer_state_bytes(dev_type)

    # -- the peak ---------------------------------------------------------------------------
    peak = PeakView()
    replay = h.replay
    oom_view = None
    if replay is not None and len(replay.events):
        peak, oom_view = _allocator_peak(h, replay)
    else:
        peak = _tensor_peak(h, params_total, buffers_total, state_total, keep, index)

    # -- which step the lines describe ------------------------------------------------------
    steps = tr.steps_info
    rep_step = None
    if h.status != "ok" and tr.current.records:
        rep_step = tr.current.index
    if rep_step is None and peak.t_ours is not None:
        for k, info in steps.items():
            if info.start_t <= peak.t_ours and (info.end_t is None or peak.t_ours <= info.end_t) and info.records:
                rep_step = k
    if rep_step is None:
        rep_step = tr.best_bwd_step()
    if rep_step is None:
        with_records = [k for k, info in steps.items() if info.records]
        rep_step = max(with_records) if with_records else tr.current.index
    info = steps.get(rep_step, tr.current)

    peak_ids = {id(r) for r in peak.records}
    records = [r for r in info.records if keep(r)]
    seen = {id(r) for r in records}
    records += [r for r in peak.records if id(r) not in seen and keep(r)]

    # -- grads (same step for the summary and the modules) ----------------------------------
    grads_info = info if info.grads else None
    if grads_info is None:
        with_grads = [k for k, s in steps.items() if s.grads]
        grads_info = steps[max(with_grads)] if with_grads else None
    grads_by_param = grads_info.grads if grads_info is not None else {}
    grads_total = sum(grads_by_param.values())

    # -- lines ------------------------------------------------------------------------------
    lines: Dict[tuple, dict] = {}
    for r in records:
        fr = r.frames[0] if r.frames else ("<unknown>", 0, "")
        key = (paths(fr[0]), fr[1])
        e = lines.get(key)
        if e is None:
            e = lines[key] = {"file": key[0], "line": int(key[1]), "func": fr[2], "_modules": [], "saved_bytes": 0,
                              "mask_bytes": 0, "at_peak_bytes": 0, "tensors": 0, "_ops": {}}
        e["saved_bytes"] += r.nbytes
        e["tensors"] += 1
        if r.graph is not None:
            # Compiled graphs: through an FX node's stack trace, or the graph's call line alone.
            k = "compiled_bytes" if r.mapped else "graph_only_bytes"
            e[k] = e.get(k, 0) + r.nbytes
        if r.mask:
            e["mask_bytes"] += r.nbytes
        if id(r) in peak_ids:
            e["at_peak_bytes"] += r.nbytes
        e["_modules"].append(index.path_of(r.module))
        o = e["_ops"].setdefault(_op_label(r), [0, 0])
        o[0] += r.nbytes
        o[1] += 1
    line_list = []
    for e in lines.values():
        e["module"] = _wildcard(e.pop("_modules"))
        ops = e.pop("_ops")
        e["ops"] = [{"op": k, "bytes": v[0], "count": v[1]} for k, v in sorted(ops.items(), key=lambda kv: -kv[1][0])]
        line_list.append(e)
    line_list.sort(key=lambda e: (-e["saved_bytes"], e["file"], e["line"]))

    # -- modules ----------------------------------------------------------------------------
    mods: Dict[str, dict] = {}

    def mod_entry(path: str) -> dict:
        e = mods.get(path)
        if e is None:
            m = index.modules[path]
            d = _defined_at(type(m))
            c = tr.created_at.get(m)
            e = mods[path] = {"path": path, "type": type(m).__name__,
                              "defined_at": {"file": paths(d[0]), "line": int(d[1])} if d else None,
                              "created_at": {"file": paths(c[0]), "line": int(c[1])} if c else None,
                              "params": 0, "grads": 0, "saved_bytes": 0, "mask_bytes": 0, "at_peak_bytes": 0,
                              "fwd_ms": None, "calls": 0}
        return e

    for path in list(index.modules):
        mod_entry(path)
    for pid, path in index.param_owner.items():
        p = index.params[pid]
        if p.device.type == dev_type:
            mod_entry(path)["params"] += tensor_bytes(p)
        if pid in grads_by_param:
            mod_entry(path)["grads"] += grads_by_param[pid]
    outside = 0
    for r in records:
        path = index.path_of(r.module)
        if path is None:
            outside += r.nbytes
            continue
        e = mod_entry(path)
        e["saved_bytes"] += r.nbytes
        if r.mask:
            e["mask_bytes"] += r.nbytes
        if id(r) in peak_ids:
            e["at_peak_bytes"] += r.nbytes
    timed: Dict[str, float] = {}
    timing_info = steps.get(tr.timed_step) if tr.timed_step in steps else info
    for module, start, end in timing_info.timings:
        path = index.path_of(module)
        e = mod_entry(path)
        e["calls"] += 1
        if start is None or end is None:
            continue
        ms = h.elapsed_ms(start, end)
        if ms is not None:
            timed[path] = timed.get(path, 0.0) + ms
    for path, ms in timed.items():
        mods[path]["fwd_ms"] = _num(ms, 4)
    module_list = sorted(mods.values(), key=lambda e: e["path"])

    # -- sites ------------------------------------------------------------------------------
    sites: Dict[tuple, dict] = {}
    for call in info.sites:
        key = (paths(call.frame[0]), call.frame[1])
        s = sites.get(key)
        if s is None:
            s = sites[key] = {"_kinds": [], "file": key[0], "line": int(key[1]), "_modules": [], "elements": 0,
                              "mask_bytes": 0, "_packed": 0, "calls": 0}
        s["_kinds"].append(call.kind)
        s["_modules"].append(index.path_of(call.module))
        s["elements"] += int(call.elements)
        s["mask_bytes"] += int(call.mask_bytes)
        if not call.fused:
            s["_packed"] += (int(call.elements) + 7) // 8
        s["calls"] += 1
    site_list = []
    for s in sites.values():
        kinds = s.pop("_kinds")
        kind = max(set(kinds), key=kinds.count)
        packed = s.pop("_packed")
        site_list.append({"kind": kind, "file": s["file"], "line": s["line"], "module": _wildcard(s.pop("_modules")),
                          "elements": s["elements"], "mask_bytes": s["mask_bytes"],
                          "saving_if_packed": max(0, s["mask_bytes"] - packed) if kind != "fused-attn-dropout" else 0,
                          "calls": s["calls"]})
    site_list.sort(key=lambda s: (-s["mask_bytes"], s["file"], s["line"]))

    # -- summary ----------------------------------------------------------------------------
    saved_total = sum(e["saved_bytes"] for e in line_list)
    mask_total = sum(e["mask_bytes"] for e in line_list)
    sums = peak.sums
    tracked = sum(sums.values())
    peak_alloc = h.peak_allocated if on_cuda else None
    peak_res = h.peak_reserved if on_cuda else None
    unattributed = max(0, peak_alloc - tracked) if peak_alloc is not None else None
    step_times = h.step_times()
    step_time = statistics.median(step_times) if step_times else None
    samples = [steps[k].samples for k in steps if k > tr.warmup and steps[k].end_t is not None and steps[k].samples]
    batch = int(statistics.median(samples)) if samples else None
    summary = {
        "peak_allocated": peak_alloc, "peak_reserved": peak_res, "device_used_peak": h.device_used_peak(),
        "params": params_total, "buffers": buffers_total, "grads": grads_total, "optimizer_state": state_total,
        "saved_bytes": saved_total, "mask_bytes": mask_total, "saved_outside_modules": outside,
        "params_at_peak": sums["param"], "buffers_at_peak": sums["buffer"], "grads_at_peak": sums["grad"],
        "optimizer_state_at_peak": sums["optimizer"], "activations_at_peak": sums["activation"],
        "masks_at_peak": sums["mask"], "unattributed_at_peak": unattributed, "tracked_at_peak": tracked,
        "step_time_s": _num(step_time, 6), "samples_per_s": _num(batch / step_time, 3) if batch and step_time else None,
        "batch_size": batch,
        # Every profiled step, so readers can show the spread and call small differences noise.
        "step_times_s": [_num(t, 6) for t in step_times],
    }

    t0 = tr.profile_start_t if tr.profile_start_t is not None else h.start_t
    peak_step, peak_phase = tr.step_and_phase_at(peak.t_ours)
    peak_doc = {"t_ms": _num((peak.t_ours - t0) / 1000.0, 3) if peak.t_ours is not None else None,
                "step": peak_step, "phase": peak_phase, "source": peak.source, "replay_bytes": peak.replay_bytes,
                "top": peak.top}

    oom_doc = None
    if h.status == "oom":
        oom_doc = _oom_doc(h, oom_view, keep)

    doc = {
        "schema": "membit.report/1",
        "run": h.run_doc(dev),
        "summary": summary,
        "lines": line_list,
        "modules": module_list,
        "sites": site_list,
        "timeline": _timeline(h, replay) if (replay is not None and on_cuda) else None,
        "peak": peak_doc,
        "oom": oom_doc,
    }
    compiled = tr.compiled.doc(paths, records)
    if compiled is not None:
        doc["run"]["compile"] = compiled
    ffn = _ffn_doc(h, paths)
    if ffn:
        doc["ffn"] = ffn
    flips = _flip_doc(h)
    if flips:
        doc["flip_rate"] = flips
    overlays = getattr(h, "overlays", None)
    if overlays:
        # Lines of rewritten text back onto the user's file (see overlay.py).
        overlays.remap(doc, paths)
    doc["sources"] = source_hashes(doc, paths.root)
    return doc


def _attributed_files(doc: dict) -> set:
    """Every file the report names a line of (relative to the run's root)."""
    files = {doc["run"]["script"]}
    files.update(e["file"] for e in doc["lines"])
    files.update(s["file"] for s in doc["sites"])
    for m in doc["modules"]:
        for k in ("defined_at", "created_at"):
            if m.get(k):
                files.add(m[k]["file"])
    for f in doc.get("ffn") or []:
        if f.get("created_at"):
            files.add(f["created_at"]["file"])
    for top in (doc["peak"]["top"], (doc["oom"] or {}).get("top") or []):
        for holder in top:
            files.update(fr["file"] for fr in holder["frames"])
    return files


def source_hashes(doc: dict, root: str) -> List[dict]:
    """sha256 of the text of every attributed file under the run's root, as the run read it.

    The editor compares these with the text on screen: a file that hashes the same is the
    code that was profiled, whatever edits happened in between. Hashed as UTF-8 text without
    a byte-order mark, which is what an editor buffer holds.
    """
    out = []
    for rel in sorted(_attributed_files(doc)):
        if not rel or rel.startswith("<") or os.path.isabs(rel):
            continue  # the standard library and site-packages: not the user's code
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        out.append({"file": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    return out


def _ffn_doc(h, paths) -> list:
    """FFN blocks with their widths, the tokens per step and dtype they ran with, and where they were built."""
    out = []
    created = h.tracker.created_at
    for e in getattr(h, "ffns", []):
        parent = e["_parent"]
        mod = parent.get_submodule(e["module"]) if e["module"] else parent
        where = created.get(mod) if mod is not None else None
        out.append({"module": e["module"], "d_model": e["d_model"], "d_ff": e["d_ff"], "gated": e["gated"],
                    "tokens": e["tokens"], "dtype": e["dtype"],
                    "converted": e["converted"] or type(e["_up"]).__name__ == "SparseLinear24",
                    "created_at": {"file": paths(where[0]), "line": int(where[1])} if where else None})
    return out


def _flip_doc(h):
    """The 2:4 layers' mask flip rates: {step: [...], layers: {name: [...]}}, or None without any."""
    try:
        from membit.sparse import flip_rate_series
    except ImportError:
        return None
    steps, layers = [], {}
    for root in h.tracker.roots:
        s, per_layer = flip_rate_series(root)
        if len(s) > len(steps):
            steps = s
        layers.update(per_layer)
    return {"step": steps, "layers": layers} if layers else None


def _op_label(r: Record) -> str:
    """The autograd op that first used a saved tensor in backward, named like the aten op."""
    op = op_name(r.op)
    if r.site is not None and r.mask and not r.site.fused and op in (None, "mul"):
        # CPU dropout keeps its mask for a multiply; name the dropout, not the multiply.
        op = "native_dropout" if r.dtype is torch.bool else "dropout"
    return op or "unknown"


def identities(h) -> Dict[int, list]:
    """The tracker's sightings of params/grads/state, plus one taken now (they are still alive)."""
    from .allocator import Identity

    tr = h.tracker
    out = {k: list(v) for k, v in tr.identities.items()}
    t = now_us()

    def note(tensor, cat):
        ptr, n = storage_key(tensor)
        if ptr:
            out.setdefault(ptr, []).append(Identity(t, cat, n))

    for tensor, cat in tr.accounting.persistent_tensors():
        note(tensor, cat)
    return out


def records_by_ptr(tr) -> Dict[int, list]:
    """Every CUDA saved-tensor record the tracker holds, by storage pointer, oldest first.

    Public with `identities`: membit.predict attributes its replayed peak through both.
    """
    out: Dict[int, list] = {}
    recs = []
    for info in tr.steps_info.values():
        recs.extend(info.records)
    recs.extend(tr.live_records())
    seen = set()
    for r in sorted(recs, key=lambda r: r.t_pack):
        if id(r) in seen or not r.cuda:
            continue
        seen.add(id(r))
        out.setdefault(r.ptr, []).append(r)
    return out


def _classified_top(h, rows, limit=TOP) -> List[dict]:
    code, paths = h.code, h.paths
    rows = sorted(rows, key=lambda row: -row[0].size)[:limit]
    out = []
    for b, cat, nbytes, rec in rows:
        saved_at = None
        shape = dtype = None
        if rec is not None:
            fr = rec.frames[0] if rec.frames else None
            saved_at = {"file": paths(fr[0]), "line": int(fr[1])} if fr else None
            shape, dtype = rec.shape, rec.dtype
        out.append(_holder(b.size, cat, frames_from_allocator(b.frames, code, paths), saved_at, shape, dtype))
    return out


def _allocator_peak(h, replay):
    tr = h.tracker
    seen = identities(h)
    by_ptr = records_by_ptr(tr)
    offset, delta = h.clock_offset, h.clock_delta
    start_t = None
    peak = PeakView()
    peak.source = "allocator"
    p_idx = replay.peak_index()
    t_alloc = replay.times[p_idx] if p_idx >= 0 else None
    if offset is not None and t_alloc is not None:
        peak.t_ours = t_alloc - offset
        step, _ = tr.step_and_phase_at(peak.t_ours)
        if step is not None and step in tr.steps_info:
            start_t = tr.steps_info[step].start_t
    sums, rows = allocator.attribute(replay.live_at(p_idx), seen, by_ptr, t_alloc, offset, delta, start_t)
    peak.sums = sums
    peak.records = [rec for _, _, _, rec in rows if rec is not None]
    peak.top = _classified_top(h, rows)
    peak.replay_bytes = int(replay.allocated_at(p_idx))
    oom_view = None
    if replay.oom_indices:
        o_idx = replay.oom_indices[-1]
        t_oom = replay.times[o_idx]
        o_start = None
        if offset is not None and t_oom is not None:
            step, _ = tr.step_and_phase_at(t_oom - offset)
            if step is not None and step in tr.steps_info:
                o_start = tr.steps_info[step].start_t
        _, o_rows = allocator.attribute(replay.live_at(o_idx - 1), seen, by_ptr, t_oom, offset, delta, o_start)
        oom_view = {"event": replay.events[o_idx], "rows": o_rows, "allocated": int(replay.allocated_at(o_idx - 1))}
    return peak, oom_view


def _tensor_peak(h, params_total, buffers_total, state_total, keep, index) -> PeakView:
    """The peak as the hooks saw it: the backward start that held the most (or now)."""
    tr = h.tracker
    peak = PeakView()
    best = tr.best_bwd_step()
    snap = tr.steps_info[best].bwd_snapshot if best is not None else None
    if snap is None:
        for k in sorted(tr.steps_info, reverse=True):
            if tr.steps_info[k].bwd_snapshot is not None:
                snap = tr.steps_info[k].bwd_snapshot
                break
    if snap is not None and h.status == "ok":
        records, grads, state, t = snap.records, sum(snap.grads.values()), snap.state, snap.t
    else:
        # A run that failed: what was alive when it failed (the step that failed, as far as it got).
        records = list(h.failure_live) if h.failure_t is not None else tr.live_records()
        grads = sum(storage_key(p.grad)[1] for p in tr.params() if p.grad is not None)
        state, t = state_total, (h.failure_t or now_us())
        if snap is not None and snap.saved > sum(r.nbytes for r in records):
            records, grads, state, t = snap.records, sum(snap.grads.values()), snap.state, snap.t
    records = [r for r in records if keep(r)]
    peak.records = records
    peak.t_ours = t
    peak.sums["param"] = params_total
    peak.sums["buffer"] = buffers_total
    peak.sums["grad"] = grads
    peak.sums["optimizer"] = state
    for r in records:
        peak.sums["mask" if r.mask else "activation"] += r.nbytes
    holders = []
    paths = h.paths
    for r in records:
        holders.append(_holder(r.nbytes, "mask" if r.mask else "activation",
                               [frame_dict(f, paths) for f in r.frames],
                               {"file": paths(r.frames[0][0]), "line": int(r.frames[0][1])} if r.frames else None,
                               r.shape, r.dtype))
    for p in tr.params():
        # A parameter was allocated where its module was built.
        path = index.param_owner.get(id(p))
        owner = index.modules.get(path) if path is not None else None
        made = tr.created_at.get(owner) if owner is not None else None
        m_frames = [frame_dict(made, paths)] if made else []
        holders.append(_holder(tensor_bytes(p), "param", m_frames, None, tuple(local_tensor(p).shape), p.dtype))
    holders.sort(key=lambda x: -x["bytes"])
    peak.top = holders[:TOP]
    return peak


def _oom_doc(h, oom_view, keep) -> dict:
    tr = h.tracker
    paths = h.paths
    st = h.oom_state or {}
    if oom_view is not None:
        ev = oom_view["event"]
        rows = oom_view["rows"]
        top = _classified_top(h, rows)
        live = [rec for _, _, _, rec in rows if rec is not None]
        requested = int(ev["size"]) if ev.get("size") is not None else st.get("requested")
        device_free = int(ev["device_free"]) if ev.get("device_free") is not None else st.get("device_free")
        allocated = oom_view["allocated"]
    else:
        live = [r for r in (h.failure_live or tr.live_records()) if keep(r)]
        top = [_holder(r.nbytes, "mask" if r.mask else "activation", [frame_dict(f, paths) for f in r.frames],
                       {"file": paths(r.frames[0][0]), "line": int(r.frames[0][1])} if r.frames else None, r.shape, r.dtype)
               for r in sorted(live, key=lambda r: -r.nbytes)[:TOP]]
        requested, device_free, allocated = st.get("requested"), st.get("device_free"), st.get("allocated")
    by_line: Dict[tuple, int] = {}
    for r in live:
        if r.frames:
            key = (paths(r.frames[0][0]), int(r.frames[0][1]))
            by_line[key] = by_line.get(key, 0) + r.nbytes
    oom_lines = [{"file": k[0], "line": k[1], "bytes": v} for k, v in sorted(by_line.items(), key=lambda kv: -kv[1])][:TOP]
    return {"message": st.get("message", ""), "requested_bytes": requested, "device_free": device_free,
            "device_total": st.get("device_total"), "allocated": allocated, "reserved": st.get("reserved"),
            "step": tr.current.index, "phase": tr.phase if tr.phase in ("forward", "backward", "optimizer") else "other",
            "top": top, "lines": oom_lines}


def _timeline(h, replay) -> Optional[dict]:
    offset = h.clock_offset
    if offset is None or not replay.times or replay.times[0] is None:
        return None
    tr = h.tracker
    t0 = tr.profile_start_t if tr.profile_start_t is not None else h.start_t
    keep = allocator.downsample(replay.allocated, TIMELINE_POINTS)
    log = tr.phase_log
    samples = h.nvml_samples()
    t_ms, alloc, res, used, phase = [], [], [], [], []
    li = si = 0
    cur_phase = log[0][1] if log else "other"
    for i in keep:
        t = replay.times[i] - offset
        while li < len(log) and log[li][0] <= t:
            cur_phase = log[li][1]
            li += 1
        while si + 1 < len(samples) and samples[si + 1][0] <= t:
            si += 1
        t_ms.append(_num((t - t0) / 1000.0, 3))
        alloc.append(int(replay.allocated[i]))
        res.append(max(0, int(replay.reserved[i])))
        used.append(int(samples[si][1]) if samples and samples[si][0] <= t + 100_000 else None)
        phase.append(cur_phase if cur_phase in ("forward", "backward", "optimizer") else "other")
    return {"t_ms": t_ms, "allocated": alloc, "reserved": res, "device_used": used, "phase": phase}
