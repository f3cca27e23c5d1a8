"""Runs a training script's first steps with CUDA faked, and writes a report marked predicted.

The profiling harness does the rest: its module, saved-tensor and optimizer hooks attribute
what the fake run saves, and its allocator replay turns the accountant's trace (see
fakecuda.py) into the peak, the holders at the peak and the timeline, exactly as it does
with the CUDA allocator's own trace on a GPU. The harness's clock is replaced by a counter for
the run, so that trace and hooks agree to the event (no time passes in a fake run worth
reporting: figures of time are left out).
"""

from __future__ import annotations

import torch

from ..profile import allocator, levers, report
from ..profile import tracker as tracker_mod
from ..profile.harness import EXIT_ERROR, Harness, Options
from . import gpus, segments
from .fakecuda import META, FakeCuda


class LogicalClock:
    """Stands in for time.time_ns while predicting: each reading is one microsecond later."""

    def __init__(self, start_ns: int):
        self.t = start_ns

    def __call__(self) -> int:
        self.t += 1000
        return self.t


def _meta_data_ptr(original):
    def data_ptr(self):
        # Meta storages have no address; the storage's own identity stands in for one (unique while alive).
        if self.device.type == "meta":
            return int(self._cdata)
        return original(self)
    return data_ptr


class Predictor(Harness):
    def __init__(self, opts: Options, gpu: gpus.Gpu, ranks: int = 1):
        opts.module_timing = False
        opts.allocator_history = False
        opts.nvml_interval = 0
        self._saved_clock = tracker_mod._now_ns
        self.clock = LogicalClock(tracker_mod._now_ns())
        tracker_mod._now_ns = self.clock
        super().__init__(opts)
        self.gpu = gpu
        self.ranks = ranks
        self.env = FakeCuda(gpu, self.code, tracker_mod.now_us, ranks)
        # Even where a GPU exists, a prediction touches none of it.
        self.cuda = False
        self.tracker.snapshots = False
        self.prediction: dict = {}
        # Set by _collect from the segment replay: the CUDA context's bytes, and the first
        # allocation the card could not hold (None: the step fits).
        self.context_bytes = 0
        self.replay_oom: segments.OutOfMemory | None = None
        self.fake_cuda = True
        self._orig_data_ptr = None
        self._orig_bf16 = None

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        try:
            return super().run()
        finally:
            tracker_mod._now_ns = self._saved_clock
            self.env.uninstall()
            if self._orig_data_ptr is not None:
                torch.UntypedStorage.data_ptr = self._orig_data_ptr
                self._orig_data_ptr = None
            if self._orig_bf16 is not None:
                levers.bf16_autocast = self._orig_bf16
                self._orig_bf16 = None

    def _start(self) -> None:
        self._orig_data_ptr = torch.UntypedStorage.data_ptr
        torch.UntypedStorage.data_ptr = _meta_data_ptr(self._orig_data_ptr)
        env = self.env
        self._orig_bf16 = levers.bf16_autocast

        def bf16_autocast(device, model_name):
            if not self.gpu.bf16:
                raise levers.LeverError(f"bf16: {self.gpu.name} does not support bfloat16 (needs compute capability 8.0 "
                                        "or later); try the other levers")

            def factory():
                return torch.autocast(device_type="cuda", dtype=torch.bfloat16)

            return factory, f"torch.autocast('cuda', dtype=torch.bfloat16) around {model_name}.forward"

        levers.bf16_autocast = bf16_autocast
        # Before the tracker: its wrappers of F.dropout and SDPA must sit above ours.
        env.install()
        super()._start()

    def _run_script(self) -> None:
        with self.env.active():
            super()._run_script()

    def _on_step(self, info) -> None:
        acc = self.env.accountant
        self.progress.emit("step", step=info.index, total=self.opts.steps, allocated=int(acc.current),
                           peak=int(acc.peak), phase="predicting")

    def _device(self):
        return META

    def _collect(self) -> None:
        acc = self.env.accountant
        events = [e.doc() for e in acc.events]
        self.replay = allocator.replay(events, [], 0)
        self.clock_offset = 0
        self.clock_delta = 0
        self.history = True
        tensors_peak = max(self.replay.allocated) if self.replay.allocated else 0
        self.fixed = gpus.fixed_costs(self.gpu, len(acc.workspace_after))
        in_alloc = sum(f["bytes"] for f in self.fixed if f["in_allocator"])
        self.tensors_peak = int(tensors_peak)
        self.peak_allocated = int(tensors_peak + in_alloc)
        # Reserved memory: the trace through the caching allocator's segment rules, first without
        # a limit, then, if that outgrows the card, on the card (where cached segments go back to
        # the driver before an out-of-memory error).
        # The workspaces enter the replay where the CUDA run takes them: each thread's first matrix
        # product (measured on an H100: right after that product's output), since where a block
        # lands decides where later ones fit.
        workspaces: dict[int, list[int]] = {}
        for at in acc.workspace_after.values():
            workspaces.setdefault(at, []).append(self.gpu.cublas_workspace_bytes)
        self.context_bytes = sum(f["bytes"] for f in self.fixed if not f["in_allocator"])
        free_run = segments.replay(acc.events, None, inserted=workspaces)
        capacity = self.gpu.total_bytes - self.context_bytes
        on_card = free_run if free_run.peak_reserved <= capacity else segments.replay(acc.events, capacity, inserted=workspaces)
        self.replay_oom = on_card.oom
        # The replay that got through the whole trace (on the card when the step fits, else
        # without a limit) gives the reserved peak and, event for event as the allocator replay,
        # the timeline's reserved series.
        whole = on_card if self.replay_oom is None else free_run
        self.peak_reserved = int(whole.peak_reserved)
        if len(whole.reserved) == len(self.replay.reserved):
            self.replay.reserved = list(whole.reserved)

    # -- the report -------------------------------------------------------------------------

    def run_doc(self, dev) -> dict:
        doc = super().run_doc(dev)
        doc["device"] = {"name": self.gpu.name, "type": "cuda", "index": 0, "total_bytes": int(self.gpu.total_bytes),
                         "capability": self.gpu.capability}
        doc["target"] = {"kind": "local", "host": None}
        doc["notes"] = [n for n in doc["notes"] if "no optimizer step" not in n]
        return doc

    def _categories_at_peak(self) -> dict:
        rp = self.replay
        out = {k: 0 for k in ("params", "buffers", "grads", "optimizer_state", "activations", "masks", "temporaries",
                              "before_step")}
        if rp is None or not rp.allocated:
            return out
        idx = rp.peak_index()
        t = rp.times[idx]
        tr = self.tracker
        step, _ = tr.step_and_phase_at(t)
        start = tr.steps_info[step].start_t if step in tr.steps_info else None
        sums, rows = allocator.attribute(rp.live_at(idx), report.identities(self), report.records_by_ptr(tr), t, 0, 0,
                                         start)
        out["params"], out["buffers"], out["grads"] = sums["param"], sums["buffer"], sums["grad"]
        out["optimizer_state"], out["activations"], out["masks"] = sums["optimizer"], sums["activation"], sums["mask"]
        for b, cat, nbytes, rec in rows:
            if cat == "temporary":
                out["temporaries"] += nbytes
            elif cat == "other":
                out["before_step"] += nbytes
        return out

    def _fsdp(self, cats: dict) -> dict | None:
        n = self.ranks
        if n <= 1:
            return None
        largest = 0
        for root in self.tracker.roots:
            for m in root.modules():
                if isinstance(m, torch.nn.ModuleList):
                    for child in m:
                        largest = max(largest, sum(p.numel() * p.element_size() for p in child.parameters()))
        persistent = cats["params"] + cats["grads"] + cats["optimizer_state"]
        sharded = persistent // n
        # All-gathered parameters of the block running and of the one prefetched, and one block's
        # unsharded grads waiting for their reduce-scatter.
        gathered = 3 * largest
        per_rank = self.peak_allocated - persistent + sharded + gathered
        return {"ranks": n, "per_rank_peak": int(per_rank), "largest_block_params": int(largest),
                "how": f"estimated from this one-rank prediction: params, grads and optimizer state at the peak divided "
                       f"by {n}, plus 3 x the largest block's parameters ({largest} bytes) for FSDP2's all-gather, "
                       "prefetch and reduce-scatter buffers; activations stay per rank"}

    def finish_doc(self, doc: dict) -> dict:
        s = doc["summary"]
        s["step_time_s"] = None
        s["samples_per_s"] = None
        cats = self._categories_at_peak()
        complete = self.status == "ok" and self.tracker.primary_opt is not None
        partial = None
        if self.status != "ok":
            partial = (f"the fake run stopped ({self.status}): figures cover the script up to "
                       + (f"{self.error_at['file']}:{self.error_at['line']}" if self.error_at else "the failure")
                       + "; the real peak is at least this")
        elif self.tracker.primary_opt is None:
            partial = "no optimizer step was seen: the step's end (grads, optimizer state) was not followed"
        steps_done = max(0, self.tracker.step - 1)
        if complete and steps_done < self.opts.steps:
            complete = False
            partial = f"the script ended after {steps_done} of the {self.opts.steps} steps asked for"
        ctx = self.context_bytes
        oom = self.replay_oom
        reserved = self.peak_reserved
        need = reserved + ctx
        fragmentation = round(reserved / self.peak_allocated - 1, 4) if self.peak_allocated else 0.0
        reads = sorted(self.env.host_reads.values(), key=lambda r: (not r.user, r.file, r.line))
        fsdp = self._fsdp(cats)
        per_rank_need = None if fsdp is None else int(fsdp["per_rank_peak"] * (1 + fragmentation)) + ctx
        out_of_memory = None
        if oom is not None:
            ev = self.env.accountant.events[oom.index] if 0 <= oom.index < len(self.env.accountant.events) else None
            fr = next((f for f in (ev.frames if ev is not None else []) if not self.code.is_library(f["filename"])), None)
            out_of_memory = {"request": int(oom.request), "allocated": int(oom.allocated), "reserved": int(oom.reserved),
                             "file": self.paths(fr["filename"]) if fr else None, "line": int(fr["line"]) if fr else None}
        doc["run"]["prediction"] = {
            "gpu": self.gpu.doc(),
            "complete": bool(complete),
            "partial_reason": partial,
            "steps": steps_done,
            "peak_allocated": int(self.peak_allocated),
            "tensors_peak": int(self.tensors_peak),
            "fixed": self.fixed,
            "peak_reserved": reserved,
            "fragmentation": fragmentation,
            "device_need": need,
            "fits": (oom is None and need <= self.gpu.total_bytes) if fsdp is None else (per_rank_need <= self.gpu.total_bytes),
            "out_of_memory": out_of_memory,
            "categories": cats,
            "host_reads": [{"what": r.what, "file": self.paths(r.file), "line": r.line, "user": r.user,
                            "assumed": r.assumed, "count": r.count} for r in reads],
            "sdpa_backends": dict(self.env.sdpa_backends),
            "timeline_axis": "events",
            "fsdp": fsdp,
            "max_batch": None,
            "variants": [],
        }
        return doc


def predict(opts: Options, gpu: gpus.Gpu, ranks: int = 1) -> int:
    """Runs the prediction and writes opts.out; returns the exit code."""
    p = Predictor(opts, gpu, ranks)
    orig_build = report.build

    def build(h):
        return h.finish_doc(orig_build(h))

    report.build = build
    try:
        code = p.run()
    finally:
        report.build = orig_build
    # The fake run's failure is the prediction's partial result, not a failed prediction.
    return code if code != EXIT_ERROR else EXIT_ERROR
