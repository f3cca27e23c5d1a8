"""Steps and phases: which training step is running, what each one left behind, and when
forward, backward and the optimizer took turns.

A step ends at the primary optimizer's step; the first `warmup` steps are not profiled. Phases
are logged only while profiling (or from the start when there is no warmup), with the
timestamps that place the allocator's peak in a step and a phase.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple


class StepInfo:
    """What one training step left behind (kept for the steps the report may need)."""

    __slots__ = ("index", "records", "sites", "timings", "grads", "bwd_snapshot", "samples", "end_t", "start_t",
                 "end_event", "wall_s")

    def __init__(self, index, start_t):
        self.index = index
        self.records: list = []  # saved.Record
        self.sites: list = []  # saved.SiteCall
        self.timings: list = []  # (module, start, end): perf_counter floats or CUDA events
        self.grads: Dict[int, int] = {}  # id(param) -> grad bytes, at the optimizer step
        self.bwd_snapshot = None
        self.samples = 0
        self.start_t = start_t
        self.end_t: Optional[int] = None
        self.end_event = None
        self.wall_s: Optional[float] = None

    def keep_snapshot(self, snap: "BwdSnapshot") -> None:
        """Keeps the backward start of this step that held the most saved bytes."""
        if self.bwd_snapshot is None or snap.saved > self.bwd_snapshot.saved:
            self.bwd_snapshot = snap


class BwdSnapshot:
    """The state at the start of a backward pass: on CPU, the moment the report calls the peak."""

    __slots__ = ("t", "records", "grads", "state", "saved")

    def __init__(self, t, records, grads, state):
        self.t = t
        self.records = records
        self.grads = grads
        self.state = state
        self.saved = sum(r.nbytes for r in records)


class StepLog:
    KEEP_STEPS = 8

    def __init__(self, warmup: int, clock: Callable[[], int]):
        self.warmup = warmup
        # The tracker's clock, read at each call: membit.predict swaps in a logical one.
        self._clock = clock
        self.index = 1  # the step in progress, 1-based
        self.profiling = False
        self.profile_start_t: Optional[int] = None
        # The step whose module forwards are timed: the first profiled one.
        self.timed_step: Optional[int] = None
        self.phase = "other"
        self.phase_log: List[Tuple[int, str]] = []
        self.infos: Dict[int, StepInfo] = {}
        # On CUDA: the step in which max_memory_allocated last rose, i.e. the step holding the
        # allocator's peak (the first one to reach it): its records must outlive KEEP_STEPS, or
        # the peak's saved tensors (a compiled graph's, in steady state) read as unattributed.
        self._max_step: Optional[int] = None
        self._max_seen = 0
        self.current = self._open(1)

    def _open(self, index: int) -> StepInfo:
        info = StepInfo(index, self._clock())
        self.infos[index] = info
        # Keep the last few steps and any step the report may still want (the one with the
        # largest backward-start state); older steps' records are dropped to bound memory.
        if len(self.infos) > self.KEEP_STEPS:
            best = self.best_bwd_step()
            for k in sorted(self.infos)[: len(self.infos) - self.KEEP_STEPS]:
                if k != best and k != self._max_step:
                    del self.infos[k]
        return info

    def set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            if self.profiling or self.warmup == 0:
                self.phase_log.append((self._clock(), phase))

    def start_profiling(self) -> None:
        self.profiling = True
        self.timed_step = self.warmup + 1
        self.profile_start_t = self._clock()
        self.phase_log = [(self.profile_start_t, self.phase)]

    def end_current(self) -> StepInfo:
        cur = self.current
        cur.end_t = self._clock()
        return cur

    def advance(self) -> None:
        self.index += 1
        self.current = self._open(self.index)

    def note_max_allocated(self, nbytes: int) -> None:
        """The allocator's max_memory_allocated at the end of the current step."""
        if nbytes > self._max_seen:
            self._max_seen, self._max_step = nbytes, self.index

    # -- reading ----------------------------------------------------------------------------

    def best_bwd_step(self) -> Optional[int]:
        """The profiled step whose backward start held the most (saved, grads and state)."""
        best, best_k = None, None
        for k, info in self.infos.items():
            if k <= self.warmup or info.bwd_snapshot is None:
                continue
            s = info.bwd_snapshot
            total = s.saved + sum(s.grads.values()) + s.state
            if best is None or total > best:
                best, best_k = total, k
        return best_k

    def step_and_phase_at(self, t: Optional[int]) -> Tuple[Optional[int], Optional[str]]:
        """The step (among those kept) and the phase running at time t."""
        if t is None:
            return None, None
        step = None
        for k, info in sorted(self.infos.items()):
            if info.start_t <= t and (info.end_t is None or t <= info.end_t):
                step = k
        phase = None
        for tp, ph in self.phase_log:
            if tp <= t:
                phase = ph
        return step, phase
