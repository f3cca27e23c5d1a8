"""The CUDA caching allocator's segments, replayed over a predicted trace: reserved memory, and
whether the step fits a card.

An out-of-memory error happens when *reserved* memory cannot grow, not when allocated memory
reaches the card's size. Between the two lies the allocator's fragmentation: a freed block is
kept in its segment and split for a smaller request, and a segment can go back to the driver
only when every block in it is free. Measured on an H100, reserved exceeded allocated at the
peak by 3.5% to 13.3% on the GPT sample's five variants, and its largest batch under bf16 went
out of memory with 5% of the card still unallocated. So the fake run's trace is replayed here
through the allocator's own rules (PyTorch's c10/cuda/CUDACachingAllocator.cpp, default
settings: no expandable segments, no max_split_size):

  * requests round up to 512 bytes; those of 1 MiB or less come from the small pool, carved
    from 2 MiB segments; larger ones from the large pool, in new segments of 20 MiB below
    10 MiB and rounded up to 2 MiB above;
  * a request takes the smallest free block of its pool that holds it (lowest address on a
    tie); the rest is split off as a free block when it is at least 512 bytes (small pool) or
    more than 1 MiB (large pool);
  * a freed block merges with free neighbours in its segment;
  * when a new segment does not fit the card, every wholly free segment is released and the
    allocation tried again; if it still does not fit, that is the out-of-memory error.

What it leaves out: streams other than the default one (blocks are per stream), the
allocator's garbage-collection threshold (off by default), and expandable segments.

The rules are only as good as the trace they replay. Fed the allocator's own trace of the GPT
sample's step on an H100 (`_record_memory_history`), this replay gives the reserved peak the
card measured to the byte; fed the predictor's trace, within 0.04% at batch 8 and 88 under
bf16 and at batch 8 in float32, once the trace kept CUDA's order (see fakecuda.py: autocast's
casts, dropout's mask, gradients summed in place, parameters placed at model.to, cuBLAS
workspaces and reduction scratch where the kernels take them).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
MIN_BLOCK = 512
SMALL_SIZE = 1 * MIB  # largest request served from the small pool
SMALL_BUFFER = 2 * MIB  # small-pool segment
LARGE_BUFFER = 20 * MIB  # large-pool segment for requests below MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MIB
ROUND_LARGE = 2 * MIB


def round_size(n: int) -> int:
    return MIN_BLOCK if n < MIN_BLOCK else (n + MIN_BLOCK - 1) // MIN_BLOCK * MIN_BLOCK


def segment_size(n: int) -> int:
    if n <= SMALL_SIZE:
        return SMALL_BUFFER
    if n < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return (n + ROUND_LARGE - 1) // ROUND_LARGE * ROUND_LARGE


class _Block:
    __slots__ = ("addr", "size", "free", "prev", "next", "segment", "small")

    def __init__(self, addr, size, segment, small):
        self.addr = addr
        self.size = size
        self.free = True
        self.prev = None
        self.next = None
        self.segment = segment
        self.small = small


class OutOfMemory(Exception):
    def __init__(self, index: int, request: int, reserved: int, allocated: int):
        super().__init__(f"event {index}: {request} bytes requested with {reserved} reserved, {allocated} allocated")
        self.index = index
        self.request = request
        self.reserved = reserved
        self.allocated = allocated


@dataclass
class Result:
    peak_reserved: int
    peak_allocated: int
    # The first request that did not fit (with --limit): index into the trace, bytes, and the
    # reserved and allocated bytes at that moment; None when everything fitted.
    oom: OutOfMemory | None
    # Reserved bytes after each event of the trace (as far as the replay got).
    reserved: list


class CachingAllocator:
    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.reserved = 0
        self.allocated = 0
        self.peak_reserved = 0
        self.peak_allocated = 0
        self._next_addr = 1 << 40
        # Free blocks per pool, sorted by (size, addr): best fit is the first at or above a size.
        self._free = {True: [], False: []}
        self._segments: dict[int, _Block] = {}  # segment base address -> its first block

    def _insert_free(self, b: _Block) -> None:
        b.free = True
        bisect.insort(self._free[b.small], (b.size, b.addr, b))

    def _remove_free(self, b: _Block) -> None:
        lst = self._free[b.small]
        i = bisect.bisect_left(lst, (b.size, b.addr))
        while lst[i][2] is not b:  # same (size, addr) cannot repeat; guards the tuple compare
            i += 1
        del lst[i]
        b.free = False

    def _new_segment(self, size: int, small: bool, index: int, request: int) -> _Block:
        if self.limit is not None and self.reserved + size > self.limit:
            self._release_cached()
            if self.reserved + size > self.limit:
                raise OutOfMemory(index, request, self.reserved, self.allocated)
        b = _Block(self._next_addr, size, self._next_addr, small)
        self._next_addr += size + (1 << 30)
        self._segments[b.addr] = b
        self.reserved += size
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return b

    def _release_cached(self) -> None:
        for base, first in list(self._segments.items()):
            if first.free and first.next is None:
                self._remove_free(first)
                del self._segments[base]
                self.reserved -= first.size

    def malloc(self, nbytes: int, index: int = 0) -> _Block:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        lst = self._free[small]
        i = bisect.bisect_left(lst, (size, -1))
        if i < len(lst):
            block = lst[i][2]
            del lst[i]
            block.free = False
        else:
            block = self._new_segment(segment_size(size), small, index, size)
            block.free = False
        rest = block.size - size
        if (small and rest >= MIN_BLOCK) or (not small and rest > SMALL_SIZE):
            tail = _Block(block.addr + size, rest, block.segment, small)
            tail.prev, tail.next = block, block.next
            if block.next is not None:
                block.next.prev = tail
            block.next = tail
            block.size = size
            self._insert_free(tail)
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: _Block) -> None:
        self.allocated -= block.size
        for other in (block.prev, block.next):
            if other is not None and other.free:
                self._remove_free(other)
                if other is block.prev:
                    other.size += block.size
                    other.next = block.next
                    if block.next is not None:
                        block.next.prev = other
                    block = other
                else:
                    block.size += other.size
                    block.next = other.next
                    if other.next is not None:
                        other.next.prev = block
        self._insert_free(block)


def replay(events, limit: int | None = None, preallocated=(), inserted=None) -> Result:
    """Replays alloc / free_requested / rename events ({action, addr, size[, prev]} dicts or
    objects) in order.

    `preallocated`: sizes allocated first and never freed. `inserted`: {event index: sizes}
    allocated just after that event and never freed (the cuBLAS workspaces, which a handle takes
    at its first matrix product). With `limit`, the replay stops at the first request the card
    cannot hold."""
    a = CachingAllocator(limit)
    live: dict[int, _Block] = {}
    reserved: list[int] = []
    try:
        for n in preallocated:
            a.malloc(n, -1)
        for i, e in enumerate(events):
            action, addr, size = (e["action"], e["addr"], e["size"]) if isinstance(e, dict) else (e.action, e.addr, e.size)
            if action == "alloc":
                live[addr] = a.malloc(size, i)
            elif action == "free_requested":
                b = live.pop(addr, None)
                if b is not None:
                    a.free(b)
            elif action == "rename":
                b = live.pop(e.get("prev") if isinstance(e, dict) else e.prev, None)
                if b is not None:
                    live[addr] = b
            for n in (inserted or {}).get(i, ()):
                a.malloc(n, i)
            reserved.append(a.reserved)
    except OutOfMemory as oom:
        return Result(a.peak_reserved, a.peak_allocated, oom, reserved)
    return Result(a.peak_reserved, a.peak_allocated, None, reserved)
