"""The CUDA caching allocator's own record: history, snapshot, and a replay of it.

The allocator's trace lists every alloc and free with the Python stack that made it; the
snapshot at the end lists what is still allocated. Replaying the trace from the state it
implies at its start gives the live blocks at any moment, in particular at the peak and at
an out-of-memory failure. Everything here except `start_history`/`take_snapshot`/`Marker`
is plain Python over dicts, so it is tested on CPU with hand-made traces.

Two facts about the trace shape this file:
  * an "alloc" entry records the requested size, while the allocated-bytes statistic counts
    whole blocks; blocks are requested sizes rounded up to 512 bytes (large blocks can keep up
    to 1 MB more when the allocator does not split them), so the replay rounds to 512 and the
    report keeps the allocator's own peak as the truth;
  * the allocated statistic drops at "free_requested", the block returns to the pool at
    "free_completed" (later when other streams still use it), so the replay frees at the first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

ROUND = 512
_FREE_ACTIONS = ("free_requested", "free")
_SEGMENT_GROW = ("segment_alloc", "segment_map")
_SEGMENT_SHRINK = ("segment_free", "segment_unmap")
# The marker's requested size: odd enough that no tensor of a training step asks for it.
MARKER_BYTES = 509


def round_block(size: int) -> int:
    return max(ROUND, (int(size) + ROUND - 1) // ROUND * ROUND)


@dataclass
class Block:
    addr: int
    size: int
    requested: int
    alloc_idx: int  # -1: allocated before the trace begins
    free_idx: int  # len(events): still allocated when the snapshot was taken
    alloc_t: Optional[int] = None  # allocator clock, microseconds
    free_t: Optional[int] = None
    frames: list = field(default_factory=list)


@dataclass
class Replay:
    events: list
    blocks: List[Block]
    allocated: List[int]  # after each event
    reserved: List[int]
    times: List[Optional[int]]
    initial_allocated: int
    initial_reserved: int
    oom_indices: List[int]

    def peak_index(self, start: int = 0) -> int:
        """Index of the event after which the most bytes were allocated (first such), or -1."""
        best, best_i = None, -1
        for i in range(max(0, start), len(self.allocated)):
            if best is None or self.allocated[i] > best:
                best, best_i = self.allocated[i], i
        return best_i

    def allocated_at(self, idx: int) -> int:
        return self.initial_allocated if idx < 0 else self.allocated[idx]

    def live_at(self, idx: int) -> List[Block]:
        """Blocks allocated after event `idx` has happened."""
        return [b for b in self.blocks if b.alloc_idx <= idx < b.free_idx]

    def index_at_time(self, t: int) -> int:
        """Index of the last event at or before allocator time `t` (-1: before all)."""
        if not self.times or self.times[0] is None:
            return -1
        return bisect.bisect_right(self.times, t) - 1


def replay(events: Sequence[dict], final_blocks: Iterable[dict], final_reserved: int) -> Replay:
    """Replays a device trace.

    final_blocks: the snapshot's allocated blocks ({"address", "size", "requested_size",
    "frames"}), used for blocks that the trace never saw allocated and for exact block sizes.
    final_reserved: the snapshot's reserved bytes (sum of segment sizes).
    """
    events = list(events)
    n = len(events)
    final = {int(b["address"]): b for b in final_blocks}
    open_blocks: Dict[int, Block] = {}
    blocks: List[Block] = []
    initial: List[Block] = []
    oom: List[int] = []
    delta_alloc: List[int] = []
    delta_res: List[int] = []
    times: List[Optional[int]] = []
    for i, ev in enumerate(events):
        action = ev.get("action")
        t = ev.get("time_us")
        times.append(int(t) if t is not None else None)
        da = dr = 0
        if action == "alloc":
            addr = int(ev["addr"])
            b = Block(addr, round_block(ev["size"]), int(ev["size"]), i, n, times[-1], None, ev.get("frames") or [])
            prev = open_blocks.get(addr)
            if prev is not None:  # a free we never saw (ring buffer edge): close it here
                prev.free_idx, prev.free_t = i, times[-1]
                da -= prev.size
            open_blocks[addr] = b
            blocks.append(b)
            da += b.size
        elif action in _FREE_ACTIONS or action == "free_completed":
            addr = int(ev["addr"])
            b = open_blocks.pop(addr, None)
            if b is not None:
                b.free_idx, b.free_t = i, times[-1]
                da -= b.size
            elif action != "free_completed":
                # Allocated before the trace began; its size comes from this event.
                b = Block(addr, round_block(ev["size"]), int(ev["size"]), -1, i, None, times[-1], ev.get("frames") or [])
                initial.append(b)
                da -= b.size
        elif action == "rename":
            # Written by the predictor only: a gradient summed in place keeps its block under the
            # sum's storage address, which the block's later events and records name.
            b = open_blocks.pop(int(ev.get("prev", -1)), None)
            if b is not None:
                b.addr = int(ev["addr"])
                open_blocks[b.addr] = b
        elif action in _SEGMENT_GROW:
            dr = int(ev["size"])
        elif action in _SEGMENT_SHRINK:
            dr = -int(ev["size"])
        elif action == "oom":
            oom.append(i)
        delta_alloc.append(da)
        delta_res.append(dr)
    # Blocks still open are in the snapshot: take their exact sizes from it.
    for addr, b in open_blocks.items():
        fb = final.get(addr)
        if fb is not None and int(fb.get("size", 0)) >= b.size:
            grow = int(fb["size"]) - b.size
            b.size = int(fb["size"])
            delta_alloc[b.alloc_idx] += grow
    for addr, fb in final.items():
        if addr not in open_blocks:
            initial.append(Block(addr, int(fb["size"]), int(fb.get("requested_size", fb["size"])), -1, n, None, None,
                                 fb.get("frames") or []))
    initial_allocated = sum(b.size for b in initial)
    initial_reserved = int(final_reserved) - sum(delta_res)
    allocated, reserved = [], []
    a, r = initial_allocated, initial_reserved
    for da, dr in zip(delta_alloc, delta_res):
        a += da
        r += dr
        allocated.append(a)
        reserved.append(r)
    return Replay(events, initial + blocks, allocated, reserved, times, initial_allocated, initial_reserved, oom)


# ---------------------------------------------------------------------------------------------
# Attribution of live blocks
# ---------------------------------------------------------------------------------------------

@dataclass
class Identity:
    """What an address held at one moment, as the harness saw it (our clock)."""

    t: int
    category: str  # param | buffer | grad | optimizer
    nbytes: int


def _alive_at(block: Block, t: int, delta: int) -> bool:
    """Whether `block` was allocated at allocator time `t`, give or take the clocks' `delta`."""
    return (block.alloc_t is None or block.alloc_t <= t + delta) and (block.free_t is None or block.free_t >= t - delta)


def classify_block(block: Block, identities: Dict[int, List[Identity]], records_by_ptr: Dict[int, list],
                   t_at: Optional[int], offset: Optional[int], delta: int):
    """(category, nbytes, record) for a block live at allocator time `t_at`, or (None, 0, None).

    A block is a parameter (or grad, ...) if the harness saw that address hold one while this
    very block was allocated. It is a saved tensor if a saved-tensor record for its address was
    packed while this block was allocated (one block per address at a time, so it is the
    record's own storage) and the record was not released before `t_at`; a tensor allocated
    at the peak and saved just after it counts as saved. Times are compared on the
    allocator's clock (ours + offset), with `delta` for the clocks' disagreement. Without
    timestamps (old torch) the address alone decides.
    """
    timed = offset is not None and t_at is not None
    for ident in identities.get(block.addr, ()):
        if not timed or _alive_at(block, ident.t + offset, delta):
            return ident.category, ident.nbytes, None
    for rec in reversed(records_by_ptr.get(block.addr, ())):
        if not timed:
            return ("mask" if rec.mask else "activation"), rec.nbytes, rec
        released = None if rec.t_release is None else rec.t_release + offset
        if _alive_at(block, rec.t_pack + offset, delta) and (released is None or released >= t_at - delta):
            return ("mask" if rec.mask else "activation"), rec.nbytes, rec
    return None, 0, None


def attribute(live: List[Block], identities, records_by_ptr, t_at, offset, delta, step_start_t=None):
    """Classifies live blocks; returns (sums by category, [(block, category, nbytes, record)])."""
    sums = {k: 0 for k in ("param", "buffer", "grad", "optimizer", "activation", "mask")}
    rows = []
    for b in live:
        cat, nbytes, rec = classify_block(b, identities, records_by_ptr, t_at, offset, delta)
        if cat is None:
            fresh = step_start_t is not None and b.alloc_t is not None and offset is not None and b.alloc_t >= step_start_t + offset
            rows.append((b, "temporary" if fresh else "other", b.size, None))
            continue
        sums[cat] += nbytes
        rows.append((b, cat, nbytes, rec))
    return sums, rows


def calibrate(events: Sequence[dict], markers: List[Tuple[int, int, int]]):
    """Offset (allocator clock minus ours, µs) and its uncertainty from marker allocations.

    Each marker is (our time before, our time after, address) around a MARKER_BYTES
    allocation. Returns (offset, uncertainty) or (None, None) without timestamps or markers.
    """
    found = []
    for t0, t1, addr in markers:
        best = None
        for ev in events:
            if ev.get("action") == "alloc" and int(ev.get("addr", -1)) == addr and int(ev.get("size", -1)) == MARKER_BYTES:
                t = ev.get("time_us")
                if t is None:
                    return None, None
                mid = (t0 + t1) // 2
                if best is None or abs(int(t) - mid - 0) < abs(best[0] - mid):
                    best = (int(t), mid, (t1 - t0) // 2 + 1)
        if best is not None:
            found.append((best[0] - best[1], best[2]))
    if not found:
        return None, None
    offsets = [o for o, _ in found]
    spread = max(offsets) - min(offsets)
    return sum(offsets) // len(offsets), max(u for _, u in found) + spread


# ---------------------------------------------------------------------------------------------
# Talking to torch (CUDA only)
# ---------------------------------------------------------------------------------------------

def start_history(max_entries: int, clear: bool = False) -> Optional[str]:
    """Starts (or restarts, clearing) the allocator history with Python stacks.

    Returns None on success, or why it is unavailable (the report says so in run.notes).
    """
    rec = getattr(torch.cuda.memory, "_record_memory_history", None)
    if rec is None:
        return "this torch has no allocator history (torch.cuda.memory._record_memory_history)"
    attempts = [
        dict(context="alloc", stacks="python", max_entries=max_entries, clear_history=clear, skip_actions=["free_completed"]),
        dict(context="alloc", stacks="python", max_entries=max_entries, clear_history=clear),
    ]
    last = None
    for kw in attempts:
        try:
            rec("all", **kw)
            return None
        except TypeError as e:  # an older signature: try the next form
            last = e
        except Exception as e:  # noqa: BLE001 - any failure only loses the allocator view
            return f"allocator history could not start: {e}"
    return f"allocator history could not start: {last}"


def stop_history() -> None:
    try:
        torch.cuda.memory._record_memory_history(None)
    except Exception:  # noqa: BLE001
        pass


def take_snapshot(device_index: int):
    """(device trace events, allocated blocks, reserved bytes) for one device, or None."""
    try:
        snap = torch.cuda.memory._snapshot()
    except Exception:  # noqa: BLE001
        return None
    traces = snap.get("device_traces") or []
    events = traces[device_index] if device_index < len(traces) else []
    blocks, reserved = [], 0
    for seg in snap.get("segments", []):
        if int(seg.get("device", device_index)) != device_index:
            continue
        reserved += int(seg.get("total_size", 0))
        addr = int(seg.get("address", 0))
        for b in seg.get("blocks", []):
            # Older snapshots leave block addresses implicit: blocks tile their segment in order.
            baddr = int(b.get("address", addr))
            if b.get("state") in ("active_allocated", "active_awaiting_free"):
                blocks.append({"address": baddr, "size": int(b["size"]),
                               "requested_size": int(b.get("requested_size", b["size"])),
                               "frames": b.get("frames") or []})
            addr = baddr + int(b["size"])
    return events, blocks, reserved


class Marker:
    """A tiny allocation whose trace entry ties our clock to the allocator's."""

    @staticmethod
    def place(device, now) -> Tuple[int, int, int]:
        t0 = now()
        x = torch.empty(MARKER_BYTES, dtype=torch.uint8, device=device)
        addr = x.data_ptr()
        t1 = now()
        del x
        return t0, t1, addr


def downsample(xs: List[int], limit: int) -> List[int]:
    """Indices to keep from a series: at most `limit`, always the maximum of each bucket."""
    n = len(xs)
    if n <= limit:
        return list(range(n))
    out = []
    step = n / float(limit)
    for k in range(limit):
        lo, hi = int(k * step), max(int((k + 1) * step), int(k * step) + 1)
        seg = range(lo, min(hi, n))
        out.append(max(seg, key=lambda i: xs[i]))
    return out
