"""Runs a user's training script under the profiler and always leaves a report behind.

The script runs as __main__ in this process (its own sys.argv, sys.path[0] = its folder, the
caller's working directory). The run ends in one of four ways, each with a report:
  ok         the last profiled step finished (StopScript from the optimizer hook) or the script ended;
  oom        CUDA ran out of memory: allocator state and holders at the failure are kept;
  error      the script raised (or the harness could not apply the variant or an overlay): traceback kept;
  cancelled  SIGTERM or Ctrl-C, a cancel on the launcher's control channel, or the launcher's death
             (see control.py); a script that does not stop within the grace period still gets a
             partial report, written by the watchdog, and its process group is ended.

Exit codes (cli.py) say how the harness ended only together with its report and its
`finished` event: a script can end the process itself with any status (os._exit(3)), and
then there is neither.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import runpy
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from . import allocator, distributed, early, levers, report
from .compiled import is_compiling
from .frames import CodeFilter, PathMapper
from .nvml import NvmlSampler
from .overlay import OverlayError, Overlays
from .control import Control, grace_seconds
from .progress import Progress
from .accounting import tensor_bytes
from .tracker import Cancelled, HarnessAbort, StopScript, Tracker, TrackerHooks, now_us

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_OOM = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
# Seconds a failed rank of a multi-rank job waits for the SIGTERM that the launcher sends every
# rank on a cancel, before it reports its error as its own (see Harness._settle_peer_stop).
PEER_STOP_SETTLE_S = 3.0

# Allocator trace entries kept (a ring buffer): a few profiled steps of a large model fit.
HISTORY_ENTRIES = 400_000


@dataclass
class Options:
    script: str
    args: List[str]
    out: str
    variant: str = "baseline"
    steps: int = 3
    warmup: int = 1
    sites: Optional[str] = None
    root: str = field(default_factory=os.getcwd)
    module_timing: bool = True
    allocator_history: bool = True
    nvml_interval: float = 0.2
    # (original file, replacement file): run the replacement's text under the original's name.
    overlays: List[Tuple[str, str]] = field(default_factory=list)


def is_oom(e: BaseException) -> bool:
    for name in ("OutOfMemoryError",):
        cls = getattr(torch.cuda, name, None) or getattr(torch, name, None)
        if isinstance(cls, type) and isinstance(e, cls):
            return True
    # torch 1.13 raises a plain RuntimeError.
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower() and "cuda" in str(e).lower()


def load_sites(path: Optional[str], paths: PathMapper):
    """{(relative file, line)} from a sites file: a list of {"file", "line"} (1-based) or {"sites": [...]}."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    items = doc.get("sites", []) if isinstance(doc, dict) else doc
    out = set()
    for it in items:
        file, line = it.get("file"), it.get("line")
        if not isinstance(file, str) or not isinstance(line, int):
            raise ValueError(f"{path}: each site needs a string 'file' and an integer 'line', got {it!r}")
        if not os.path.isabs(file):
            file = os.path.join(paths.root, file)
        out.add((paths(file), line))
    return out


class Harness:
    def __init__(self, opts: Options):
        self.opts = opts
        self.code = CodeFilter()
        self.paths = PathMapper(opts.root)
        self.progress = Progress()
        self.notes: List[str] = []
        self.cuda = torch.cuda.is_available()
        self.cuda_used = False
        self.status = "ok"
        self.error: Optional[str] = None
        self.error_at: Optional[dict] = None
        self.exit_code = EXIT_OK
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.start_t = now_us()
        self._t0 = time.perf_counter()
        self.markers: list = []
        self.history = False
        self.replay = None
        self.clock_offset: Optional[int] = None
        self.clock_delta = 20
        self.nvml: Optional[NvmlSampler] = None
        self.peak_allocated: Optional[int] = None
        self.peak_reserved: Optional[int] = None
        self.oom_state: Optional[dict] = None
        self.patched: List[dict] = []
        self.skipped: List[dict] = []
        self._patched_roots: list = []
        self._finishing = False
        self._cuda_index = 0
        self.levers = levers.parse_variant(opts.variant)
        self.variant = levers.variant_name(self.levers)
        self.variant_modes = levers.patch_modes(self.levers)
        # What each lever did, in the report as run.levers.
        self.lever_records: List[dict] = []
        self._autocast: Dict[int, object] = {}  # id(root) -> autocast context factory
        self._autocast_open: list = []
        self._sdpa_pending: Dict[int, tuple] = {}
        self._setup_error: Optional[str] = None
        try:
            self.overlays = Overlays(list(opts.overlays))
        except OverlayError as e:
            self.overlays = Overlays([])
            self._setup_error = str(e)
        self.sites = load_sites(opts.sites, self.paths)
        hooks = TrackerHooks(on_step=self._on_step, on_profiling_start=self._on_profiling_start,
                             on_first_call=self._on_first_call, on_root_enter=self._on_root_enter,
                             on_root_exit=self._on_root_exit,
                             route_dropout=self._route_dropout if self.sites else None)
        self.tracker = Tracker(warmup=opts.warmup, steps=opts.steps, code=self.code,
                               module_timing=opts.module_timing, hooks=hooks)
        self.tracker.snapshots = not (self.cuda and opts.allocator_history)
        self._cpu_peak = 0
        # Stopping from the control channel's thread: the report is written once, by
        # whichever thread gets there first.
        self._write_lock = threading.Lock()
        self._report_written = False
        self._done = threading.Event()
        self._stop_reason: Optional[str] = None
        self._script_running = False
        self.control = Control.from_env(self._stop_requested)
        self.ffns: List[dict] = []
        self._probed_roots: list = []
        self.failure_live: list = []
        self.failure_t: Optional[int] = None
        # One rank of a torchrun/SLURM job: its report path, identity and distributed figures.
        self.dist = distributed.attach(self)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        self.progress.install()
        old_term = signal.signal(signal.SIGTERM, self._on_sigterm) if threading.current_thread() is threading.main_thread() else None
        if self.control is not None:
            self.control.start()
        try:
            try:
                self._start()
                try:
                    self._run_script()
                finally:
                    self._finishing = True
                    self.tracker.uninstall()
                self._collect()
                doc = report.build(self)
            except Exception as e:  # noqa: BLE001 - a harness bug must still leave a report
                self._finishing = True
                traceback.print_exc()
                doc = self._fallback_doc(e)
            with self._write_lock:
                if not self._report_written:
                    self._write_report(doc)
                    self._emit_finished()
        finally:
            if self.dist is not None:
                self.dist.uninstall()
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            self.progress.uninstall()
            self._done.set()
        if self._stop_reason is not None and self._stop_reason != "cancelled":
            # The launcher is gone, so nobody else will end what the script started. The control
            # thread would, but this thread may leave the interpreter (and take that daemon thread
            # with it) before it runs again: end the group from here too.
            self._kill_group()
        return self.exit_code

    def _write_report(self, doc: dict) -> None:
        """Writes the report (atomically); a failure is said on stderr and becomes exit status 1."""
        try:
            if self.dist is not None:  # rank, world size, host and the distributed categories
                doc = self.dist.decorate(doc)
            report.write_atomic(self.opts.out, doc)
            self._report_written = True
        except (OSError, ValueError) as e:
            self.exit_code = EXIT_ERROR
            self.status = "error"
            try:
                sys.__stderr__.write(f"membit: could not write the report to {self.opts.out}: {e}\n")
            except Exception:  # noqa: BLE001
                pass

    def _emit_finished(self) -> None:
        if self._report_written:
            self.progress.emit("finished", status=self.status, report=os.path.abspath(self.opts.out))
        else:
            self.progress.emit("finished", status="error", report=None)

    def _stop_requested(self, reason: str) -> None:
        """From the control thread: cancel, or the launcher died. Ask, wait, then force."""
        self._stop_reason = reason
        self.tracker.cancel_requested = True
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except OSError:
            pass
        grace = grace_seconds()
        if self._done.wait(grace):
            if reason != "cancelled":
                self._kill_group()  # nobody is left to end what the script started
            return
        with self._write_lock:
            if not self._report_written:
                self._finishing = True
                self._fail("cancelled", f"{self._cancel_message()}: the script did not stop within {grace:g} s of SIGTERM "
                                        "(it ignores SIGTERM, or is stuck in a call), so the harness wrote this partial "
                                        "report and ended the run's process group", EXIT_SIGTERM)
                try:
                    self.tracker.uninstall()
                    self._collect()
                    doc = report.build(self)
                except Exception as e:  # noqa: BLE001 - the main thread is still in the script: best effort
                    doc = self._fallback_doc(e)
                self._write_report(doc)
                self._emit_finished()
        self._kill_group()

    def _kill_group(self) -> None:
        """SIGKILL to the run's process group when the harness leads it (launched by Membit), else just exit."""
        # os._exit skips Python's own flush: what the script and the harness printed goes out first.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        code = self.exit_code if self.exit_code else EXIT_SIGTERM
        try:
            if os.getpgrp() == os.getpid():
                os.killpg(0, signal.SIGKILL)
        except OSError:
            pass
        os._exit(code)

    def _cancel_message(self) -> str:
        if self._stop_reason and self._stop_reason != "cancelled":
            return f"cancelled: {self._stop_reason}"
        return "cancelled (SIGTERM)"

    def _start(self) -> None:
        device_name = "cpu"
        if self.cuda:
            torch.cuda.init()
            self._cuda_index = torch.cuda.current_device()
            device_name = torch.cuda.get_device_name(self._cuda_index)
            if self.opts.allocator_history:
                why = allocator.start_history(HISTORY_ENTRIES)
                self.history = why is None
                if why:
                    self.notes.append(why)
                    self.tracker.snapshots = True
                else:
                    # Ties the clocks for a failure before profiling starts (an OOM in warmup).
                    self.markers = [allocator.Marker.place(torch.device("cuda", self._cuda_index), now_us)]
            else:
                self.notes.append("allocator history turned off (--no-allocator-history)")
            if self.opts.nvml_interval > 0:
                self.nvml = NvmlSampler.open(self._cuda_index)
                if self.nvml is None:
                    self.notes.append("NVML not available: device-wide used memory not recorded")
                else:
                    self.nvml.start(self.opts.nvml_interval)
        self.progress.emit("started", pid=os.getpid(), device=device_name, steps=self.opts.steps, warmup=self.opts.warmup)
        self.tracker.install()

    def _run_script(self) -> None:
        script = os.path.abspath(self.opts.script)
        if self._setup_error is not None:
            self._fail("error", self._setup_error, EXIT_ERROR)
            return
        if self.tracker.cancel_requested or early.pending():
            self.tracker.cancel_requested = True
            self._fail("cancelled", f"{self._cancel_message()} before the script started", EXIT_SIGTERM)
            return
        saved_argv, saved_path0 = sys.argv, list(sys.path)
        sys.argv = [self.opts.script] + list(self.opts.args)
        sys.path.insert(0, os.path.dirname(script))
        self._script_running = True
        caught: Optional[BaseException] = None
        try:
            try:
                self.overlays.install()
                item = self.overlays.for_file(script)
                if item is not None:
                    self.overlays.run_main(item)
                else:
                    runpy.run_path(script, run_name="__main__")
            except BaseException as e:  # noqa: BLE001 - every end of the script is classified below
                self._script_running = False
                caught = e
        except Cancelled as e:
            # A SIGTERM that landed while the script's own exception was being caught: the run
            # was cancelled (e.__context__ is what the script raised first).
            self._script_running = False
            caught = e
        finally:
            self._script_running = False
            self.overlays.uninstall()
            # A forward that raised (torch without always_call hooks) leaves its autocast entered.
            while self._autocast_open:
                self._autocast_open.pop().__exit__(None, None, None)
            sys.argv = saved_argv
            sys.path[:] = saved_path0
        # Classified with the flag down: no SIGTERM can interrupt the harness's own work from here.
        if caught is not None:
            self._classify(caught)
        if self.status == "error" and self.dist is not None and self.dist.info["world_size"] > 1:
            self._settle_peer_stop()
        if self.tracker.cancel_requested and self.status == "ok":
            self._fail("cancelled", self._cancel_message(), EXIT_SIGTERM)

    def _classify(self, e: BaseException) -> None:
        """The run's status from how the script ended (`e`: what it raised, or what stopped it)."""
        if isinstance(e, OverlayError):
            self._fail("error", str(e), EXIT_ERROR)
        elif isinstance(e, StopScript):
            pass
        elif isinstance(e, Cancelled):
            first = e.__context__
            seen = "" if first is None or isinstance(first, Cancelled) else f"; the script had just raised {type(first).__name__}: {first}"
            self._fail("cancelled", self._cancel_message() + seen, EXIT_SIGTERM)
        elif isinstance(e, KeyboardInterrupt):
            self._fail("cancelled", "cancelled (interrupted)", EXIT_SIGINT)
        elif isinstance(e, HarnessAbort):
            self._fail("error", str(e), EXIT_ERROR)
        elif isinstance(e, SystemExit):
            if e.code not in (None, 0):
                self._fail("error", f"the script exited with status {e.code}", EXIT_ERROR)
        elif is_oom(e):
            self._note_oom(e)
            self._fail("oom", self._format_error(e), EXIT_OOM, e)
        else:
            self._fail("error", self._format_error(e), EXIT_ERROR, e)

    def _settle_peer_stop(self) -> None:
        """A rank whose peer was stopped first fails in its next collective ("connection closed
        by peer") a moment before its own SIGTERM arrives: scancel and torchrun signal every
        rank, but not at the same instant. Wait briefly for that signal; if it comes, this rank
        was cancelled like the others, and its error is kept as what it saw first."""
        deadline = time.monotonic() + PEER_STOP_SETTLE_S
        while not self.tracker.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.tracker.cancel_requested:
            first = (self.error or "").strip().splitlines()
            self.status, self.exit_code = "cancelled", EXIT_SIGTERM
            self.error = f"{self._cancel_message()}; a peer rank had stopped first: {first[-1] if first else 'no error text'}"

    def _fail(self, status, message, code, exc=None) -> None:
        self.status, self.error, self.exit_code = status, message, code
        # What autograd holds now is freed with the exception's traceback: keep the list.
        self.failure_live = self.tracker.live_records()
        self.failure_t = now_us()
        if exc is not None:
            self.error_at = self._user_frame_of(exc)

    def _on_sigterm(self, signum, frame) -> None:
        self.tracker.cancel_requested = True
        # Before the script runs there is nothing to interrupt: _run_script sees the flag and
        # ends the run as cancelled (raising here would escape the harness's own set-up).
        if self._script_running and not self._finishing:
            raise Cancelled()

    # -- hooks' callbacks -------------------------------------------------------------------

    def _device(self):
        d = self.tracker.device
        if d is not None and d.type == "cuda":
            return d
        return torch.device("cuda", self._cuda_index)

    def _on_profiling_start(self) -> None:
        if not self.cuda:
            return
        dev = self._device()
        try:
            torch.cuda.reset_peak_memory_stats(dev)
        except Exception:  # noqa: BLE001
            pass
        if self.history:
            why = allocator.start_history(HISTORY_ENTRIES, clear=True)
            if why:
                self.history = False
                self.tracker.snapshots = True
                self.notes.append(why)
            else:
                self.markers = [allocator.Marker.place(dev, now_us)]

    def _on_step(self, info) -> None:
        tr = self.tracker
        warm = info.index <= tr.warmup
        dev = tr.device
        if dev is not None and dev.type == "cuda":
            self.cuda_used = True
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            info.end_event = ev
            stats = torch.cuda.memory_stats_as_nested_dict(dev)["allocated_bytes"]["all"]
            allocated, peak = stats["current"], stats["peak"]
        else:
            # No allocator on CPU: the tensors the harness knows of, counted as the report counts
            # tracked_at_peak (buffers included), so the live figure and the report's agree.
            persistent = (sum(tensor_bytes(p) for p in tr.params()) + sum(tensor_bytes(b) for b in tr.buffers())
                          + tr.optimizer_state_bytes())
            allocated = persistent + sum(info.grads.values())
            snap = info.bwd_snapshot
            at_bwd = persistent + (snap.saved + sum(snap.grads.values()) if snap is not None else 0)
            self._cpu_peak = max(self._cpu_peak, allocated, at_bwd)
            peak = self._cpu_peak
        if warm:
            step, total, phase = info.index, tr.warmup, "warmup"
        else:
            step, total, phase = info.index - tr.warmup, self.opts.steps, "profiling"
        self.progress.emit("step", step=step, total=total, allocated=int(allocated), peak=int(peak), phase=phase)

    def _on_first_call(self, root) -> None:
        self._apply_levers(root)
        # After the levers: the FFN probe must hook the modules that will run (e.g. SparseLinear24).
        if not any(any(m is root for m in done.modules()) for done in self._probed_roots):
            self._probed_roots.append(root)
            self._probe_ffns(root)

    def _apply_levers(self, root) -> None:
        if not self.levers:
            return
        for done in self._patched_roots:
            if any(m is root for m in done.modules()):
                return  # part of a model already converted
        dropout, ffn = self.variant_modes
        if dropout is not None or ffn is not None:
            self._apply_patch(root, dropout, ffn)
        try:
            if "sdpa" in self.levers:
                self._apply_sdpa(root)
            if "checkpoint" in self.levers:
                self.lever_records.append({"lever": "checkpoint", "how": levers.apply_checkpoint(root)})
            if "bf16" in self.levers:
                factory, how = levers.bf16_autocast(self._device_of(root), type(root).__name__)
                self._autocast[id(root)] = factory
                self.lever_records.append({"lever": "bf16", "how": how})
            if "compile" in self.levers:
                self.lever_records.append({"lever": "compile", "how": levers.apply_compile(root)})
        except levers.LeverError as e:
            raise HarnessAbort(f"variant {self.variant!r}: {e}")
        self._patched_roots.append(root)

    def _probe_ffns(self, root) -> None:
        """Notes each FFN block's widths, and at its first training forward the tokens and dtype it
        computes with, so the report can say whether 2:4 would pay there (see report["ffn"])."""
        try:
            from membit.patching import ffn_groups
        except ImportError:  # the harness can run without the rest of the package importable
            return
        for g in ffn_groups(root, include_sparse=True):
            entry = {"module": g.name, "d_model": g.up.in_features,
                     "d_ff": g.up.out_features, "gated": g.gate is not None, "tokens": None, "dtype": None,
                     "converted": type(g.up).__name__ == "SparseLinear24", "_up": g.up, "_parent": root}
            self.ffns.append(entry)

            def pre(module, args, entry=entry):
                if is_compiling():
                    return  # dynamo would trace it (and break the graph at remove())
                x = args[0] if args else None
                if entry["tokens"] is None and isinstance(x, torch.Tensor) and x.dim() >= 1 and torch.is_grad_enabled():
                    entry["tokens"] = int(x.numel() // max(1, x.shape[-1]))
                    amp = None
                    try:
                        if torch.is_autocast_enabled(x.device.type):
                            amp = torch.get_autocast_dtype(x.device.type)
                    except (TypeError, AttributeError):  # torch < 2.4
                        if x.is_cuda and torch.is_autocast_enabled():
                            amp = torch.get_autocast_gpu_dtype()
                    entry["dtype"] = str(amp or x.dtype).replace("torch.", "")
                    entry["_hook"].remove()

            entry["_hook"] = g.up.register_forward_pre_hook(pre)

    def _device_of(self, root) -> torch.device:
        for t in root.parameters():
            return t.device
        for t in root.buffers():
            return t.device
        return self.tracker.device or torch.device("cpu")

    def _apply_patch(self, root, dropout, ffn) -> None:
        try:
            import membit

            patch = membit.patch
        except (ImportError, AttributeError) as e:
            raise HarnessAbort(f"variant {self.variant!r} is not available: membit.patch cannot be imported ({e})")
        before = len(self.patched)
        try:
            if self.sites is None:
                record = patch(root, dropout=dropout, ffn=ffn)
                self._note_patch(record, prefix="")
            else:
                self._patch_sites(root, patch, dropout, ffn)
        except HarnessAbort:
            raise
        except (NotImplementedError, ValueError, TypeError, RuntimeError) as e:
            raise HarnessAbort(f"variant {self.variant!r} is not available: membit.patch raised "
                               f"{type(e).__name__}: {e}")
        done = self.patched[before:]
        where = " at the chosen sites" if self.sites is not None else ""
        name = type(root).__name__
        if dropout is not None:
            n = sum(1 for r in done if r["kind"] == "dropout")
            # A variant asks to measure this dropout mode: inside torch.compile too, where
            # membit.patch alone keeps torch's dropout (MEMBIT_COMPILE_DROPOUT, ops/packed_dropout.py).
            compiled = os.environ.setdefault("MEMBIT_COMPILE_DROPOUT", "fused")
            self.lever_records.append({"lever": dropout, "how": f"membit.patch({name}, dropout='{dropout}'){where}: "
                                                                  f"{n} dropout module(s) replaced; inside torch.compile: "
                                                                  f"MEMBIT_COMPILE_DROPOUT={compiled}"})
        if ffn is not None:
            n = sum(1 for r in done if r["kind"] == "ffn")
            self.lever_records.append({"lever": "sparse24", "how": f"membit.patch({name}, ffn='2:4'){where}: "
                                                                     f"{n} FFN linear(s) replaced"})

    def _apply_sdpa(self, root) -> None:
        """Switches a HF model to SDPA; other models rely on --overlay. Checked after the first forward."""
        why = levers.sdpa_available()
        if why is not None:
            raise levers.LeverError(f"sdpa: {why}")
        name = type(root).__name__
        if levers.is_hf_model(root):
            kind, how = "hf", levers.switch_hf_sdpa(root)
        elif self.overlays:
            files = ", ".join(self.paths(it.orig) for it in self.overlays.items)
            kind, how = "overlay", f"eager attention rewritten to scaled_dot_product_attention in {files} (--overlay)"
        else:
            kind, how = "none", None
        record = {"lever": "sdpa", "how": (how or "nothing switched yet") + " (not verified: the model's first forward did not finish)"}
        self.lever_records.append(record)
        self._sdpa_pending[id(root)] = (kind, how, self.tracker.sdpa_calls, record, name)

    def _on_root_enter(self, root) -> None:
        factory = self._autocast.get(id(root))
        if factory is not None:
            ctx = factory()
            ctx.__enter__()
            self._autocast_open.append((id(root), ctx))

    def _on_root_exit(self, root, output) -> None:
        if self._autocast_open and self._autocast_open[-1][0] == id(root):
            self._autocast_open.pop()[1].__exit__(None, None, None)
        pending = self._sdpa_pending.pop(id(root), None)
        if pending is None or output is None:
            return
        kind, how, before, record, name = pending
        calls = self.tracker.sdpa_calls - before
        fail = None
        if calls == 0 and kind == "none":
            fail = (f"sdpa: no HF model and no eager attention block Membit can rewrite in {self.paths(os.path.abspath(self.opts.script))}; "
                    "convert it with the code action or write SDPA by hand")
        elif calls == 0 and kind == "hf":
            fail = (f"sdpa: {how}, but {name}'s forward made no scaled_dot_product_attention call: this transformers "
                    "version picks the attention class when the model is built (build it with attn_implementation=\"sdpa\"), "
                    "or the model asks for attention weights")
        elif calls == 0:
            fail = (f"sdpa: the rewritten source ({how}) made no scaled_dot_product_attention call in {name}'s forward: "
                    "the overlay does not cover the attention this model runs")
        if fail is not None:
            record["how"] = f"not applied: {fail}"
            raise HarnessAbort(f"variant {self.variant!r}: {fail}")
        if kind == "none":
            record["how"] = (f"nothing to switch: {name} already calls scaled_dot_product_attention "
                             f"({calls} call(s) in its first forward)")
        else:
            record["how"] = f"{how}; {calls} scaled_dot_product_attention call(s) in the first forward"

    def _patch_sites(self, root, patch, dropout, ffn) -> None:
        """Converts only the modules created at the chosen file:line sites."""
        created = self.tracker.created_at
        for name, module in list(root.named_modules()):
            c = created.get(module)
            if c is None or (self.paths(c[0]), c[1]) not in self.sites:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            if not attr:
                continue
            # patch() converts a model's children: give it a holder whose one child is this module.
            holder = torch.nn.Module()
            holder.add_module(attr, module)
            record = patch(holder, dropout=dropout, ffn=ffn, functional=False)
            new = getattr(holder, attr)
            if new is not module:
                setattr(parent, attr, new)
            self._note_patch(record, prefix=parent_name)

    def _note_patch(self, record, prefix: str) -> None:
        created = self.tracker.created_at
        for r in getattr(record, "replaced", []) or []:
            name = ".".join(x for x in (prefix, getattr(r, "name", "")) if x)
            old, new = getattr(r, "old", None), getattr(r, "new", None)
            self.patched.append({"path": name, "kind": str(getattr(r, "kind", "")),
                                 "from": type(old).__name__, "to": type(new).__name__})
            if old is not None and new is not None and old in created:
                # The replacement was made by the harness; where the user built the original says more.
                created[new] = created[old]
        for s in getattr(record, "skipped", []) or []:
            name = ".".join(x for x in (prefix, getattr(s, "name", "")) if x)
            self.skipped.append({"path": name, "type": str(getattr(s, "type", "")), "reason": str(getattr(s, "reason", ""))})

    def _route_dropout(self, frame):
        dropout = self.variant_modes[0]
        if dropout is None or (self.paths(frame[0]), frame[1]) not in self.sites:
            return None
        from membit.nn.functional import packed_dropout

        return lambda x, p, training, inplace: packed_dropout(x, p, training, inplace, dropout)

    # -- after the script -------------------------------------------------------------------

    def _note_oom(self, e: BaseException) -> None:
        st = {"message": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}
        try:
            dev = self._device()
            st["allocated"] = int(torch.cuda.memory_allocated(dev))
            st["reserved"] = int(torch.cuda.memory_reserved(dev))
            free, total = torch.cuda.mem_get_info(dev)
            st["device_free"], st["device_total"] = int(free), int(total)
        except Exception:  # noqa: BLE001
            pass
        self.oom_state = st

    def _collect(self) -> None:
        """Synchronizes, snapshots the allocator, and stops the samplers."""
        dev = self._device() if self.cuda else None
        if self.tracker.device is not None and self.tracker.device.type == "cuda":
            self.cuda_used = True
        if dev is not None:
            try:
                torch.cuda.synchronize(dev)
            except Exception as e:  # noqa: BLE001 - after a device error; timings are then lost
                self.notes.append(f"could not synchronize the device: {e}")
            try:
                self.peak_allocated = int(torch.cuda.max_memory_allocated(dev))
                self.peak_reserved = int(torch.cuda.max_memory_reserved(dev))
            except Exception:  # noqa: BLE001
                pass
            if self.history:
                try:
                    if self.markers:
                        self.markers.append(allocator.Marker.place(dev, now_us))
                except Exception:  # noqa: BLE001 - no memory left for even a marker after an OOM
                    pass
                snap = allocator.take_snapshot(dev.index if dev.index is not None else self._cuda_index)
                allocator.stop_history()
                if snap is None:
                    self.notes.append("allocator snapshot failed")
                else:
                    events, blocks, reserved = snap
                    if len(events) >= HISTORY_ENTRIES:
                        self.notes.append("allocator history filled its buffer: the oldest events are lost")
                    self.replay = allocator.replay(events, blocks, reserved)
                    offset, unc = allocator.calibrate(events, self.markers)
                    if offset is None:
                        self.notes.append("allocator history has no timestamps or markers: peak attributed by address only")
                    else:
                        self.clock_offset = offset
                        # Twice the markers' bracket (and their disagreement), plus a little:
                        # tens of microseconds, far below the life of a tensor worth naming.
                        self.clock_delta = 2 * unc + 20
        if self.nvml is not None:
            self.nvml.stop()

    def elapsed_ms(self, start, end) -> Optional[float]:
        if isinstance(start, float):
            return (end - start) * 1000.0
        try:
            return float(start.elapsed_time(end))
        except Exception:  # noqa: BLE001 - an event that never ran (the step failed)
            return None

    def step_times(self) -> List[float]:
        tr = self.tracker
        out = []
        steps = tr.steps_info
        for k in sorted(steps):
            info = steps[k]
            if k <= tr.warmup or info.end_t is None:
                continue
            prev = steps.get(k - 1)
            if info.end_event is not None and prev is not None and prev.end_event is not None:
                ms = self.elapsed_ms(prev.end_event, info.end_event)
                if ms is not None:
                    out.append(ms / 1000.0)
                    continue
            start = prev.end_t if prev is not None and prev.end_t is not None else info.start_t
            out.append((info.end_t - start) / 1e6)
        return out

    def device_used_peak(self) -> Optional[int]:
        t0 = self.tracker.profile_start_t
        s = [u for t, u in self.nvml_samples() if t0 is None or t >= t0]
        return max(s) if s else None

    def nvml_samples(self):
        return list(self.nvml.samples) if self.nvml is not None else []

    # -- report pieces ----------------------------------------------------------------------

    def _user_frame_of(self, exc: BaseException) -> Optional[dict]:
        last = None
        for fs in traceback.extract_tb(exc.__traceback__):
            if not self.code.is_library(fs.filename):
                last = fs
        return {"file": self.paths(last.filename), "line": int(last.lineno or 0)} if last else None

    def _format_error(self, exc: BaseException, keep: int = 40) -> str:
        frames = traceback.extract_tb(exc.__traceback__)
        # Start at the user's script: runpy and the harness are noise here.
        for i, fs in enumerate(frames):
            if not self.code.is_library(fs.filename):
                frames = frames[i:]
                break
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
        text += "".join(traceback.format_exception_only(type(exc), exc))
        lines = text.rstrip("\n").splitlines()
        if len(lines) > keep:
            lines = ["Traceback (most recent call last, first lines cut):"] + lines[-keep:]
        return "\n".join(lines)

    def run_doc(self, dev) -> dict:
        import membit

        if dev is not None and dev.type == "cuda":
            idx = dev.index if dev.index is not None else self._cuda_index
            props = torch.cuda.get_device_properties(idx)
            device = {"name": props.name, "type": "cuda", "index": idx, "total_bytes": int(props.total_memory),
                      "capability": f"{props.major}.{props.minor}"}
        else:
            device = {"name": f"CPU ({platform.machine() or 'unknown'})", "type": dev.type if dev else "cpu",
                      "index": None, "total_bytes": None, "capability": None}
        host = os.environ.get("MEMBIT_TARGET_HOST")
        kind = os.environ.get("MEMBIT_TARGET_KIND") or ("ssh" if os.environ.get("SSH_CONNECTION") else "local")
        if kind == "ssh" and not host:
            host = platform.node() or None
        tr = self.tracker
        done = max(0, min(tr.step - 1 - tr.warmup, tr.steps if tr.steps else 10 ** 9))
        return {
            "id": datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
            "script": self.paths(os.path.abspath(self.opts.script)),
            "argv": list(self.opts.args),
            "variant": self.variant,
            "target": {"kind": kind if kind in ("local", "ssh") else "local", "host": host},
            "device": device,
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "membit": getattr(membit, "__version__", "0"),
            "started": self.started,
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "steps": done,
            "warmup": self.opts.warmup,
            "steps_requested": self.opts.steps,
            "status": self.status,
            "error": self.error,
            "error_at": self.error_at,
            "root": self.paths.root,
            "pid": os.getpid(),
            "patched": self.patched,
            "skipped": self.skipped,
            "levers": [dict(r) for r in self.lever_records],
            "overlays": self.overlays.docs(self.paths),
            "notes": list(self.notes) + ([] if tr.primary_opt is not None or self.status != "ok"
                                         else ["no optimizer step was seen: the whole run counts as one step"]),
        }

    def _fallback_doc(self, exc: Exception) -> dict:
        """A valid report with nothing measured in it, when building the real one failed."""
        if self.status == "ok":
            self.status, self.exit_code = "error", EXIT_ERROR
        msg = f"membit could not build the report: {type(exc).__name__}: {exc}"
        self.error = (self.error + "\n" + msg) if self.error else msg
        dev = self.tracker.device
        try:
            run = self.run_doc(dev)
        except Exception:  # noqa: BLE001
            run = self.run_doc(None)
        zero = {k: 0 for k in ("params", "buffers", "grads", "optimizer_state", "saved_bytes", "mask_bytes",
                               "saved_outside_modules", "params_at_peak", "buffers_at_peak", "grads_at_peak",
                               "optimizer_state_at_peak", "activations_at_peak", "masks_at_peak", "tracked_at_peak")}
        summary = dict(zero, peak_allocated=self.peak_allocated, peak_reserved=self.peak_reserved, device_used_peak=None,
                       unattributed_at_peak=None, step_time_s=None, samples_per_s=None, batch_size=None)
        return {"schema": "membit.report/1", "run": run, "summary": summary, "lines": [], "modules": [], "sites": [],
                "timeline": None, "peak": {"t_ms": None, "step": None, "phase": None, "source": "tensors",
                                           "replay_bytes": None, "top": []}, "oom": None}
