"""The caching allocator's segment rules (membit.predict.segments), on hand-made traces whose
reserved bytes follow from PyTorch's CUDACachingAllocator rules by hand."""

from membit.predict.segments import MIB, CachingAllocator, replay, round_size, segment_size


def test_sizes_round_as_the_allocator_does():
    assert round_size(1) == 512 and round_size(512) == 512 and round_size(513) == 1024
    assert segment_size(1 * MIB) == 2 * MIB  # small pool
    assert segment_size(1 * MIB + 512) == 20 * MIB  # large, under 10 MiB
    assert segment_size(10 * MIB) == 10 * MIB
    assert segment_size(10 * MIB + 1) == 12 * MIB  # rounded up to 2 MiB


def test_freed_blocks_are_split_reused_and_merged():
    a = CachingAllocator()
    x = a.malloc(100 * MIB)
    a.free(x)
    y = a.malloc(30 * MIB)  # best fit: the cached 100 MiB block, split
    assert a.reserved == 100 * MIB and a.allocated == 30 * MIB
    z = a.malloc(80 * MIB)  # the 70 MiB rest is too small: a new segment
    assert a.reserved == 180 * MIB
    w = a.malloc(70 * MIB)  # exactly the split-off rest
    assert a.reserved == 180 * MIB
    for b in (y, w):
        a.free(b)
    assert a.malloc(100 * MIB) is not None and a.reserved == 180 * MIB  # merged back into one block
    a.free(z)
    assert a.peak_reserved == 180 * MIB and a.peak_allocated == 180 * MIB


def test_a_rest_of_one_mib_or_less_stays_with_the_block():
    a = CachingAllocator()
    x = a.malloc(20 * MIB)
    a.free(x)
    y = a.malloc(19 * MIB + 512)  # rest 512 KiB - 512: not split in the large pool
    assert a.allocated == 20 * MIB and y.size == 20 * MIB


def test_small_requests_share_two_mib_segments():
    a = CachingAllocator()
    blocks = [a.malloc(1000) for _ in range(4096)]  # 1024 bytes each after rounding
    assert a.reserved == 2 * 2 * MIB and a.allocated == 4096 * 1024
    for b in blocks:
        a.free(b)
    assert a.allocated == 0 and a.reserved == 4 * MIB


def test_on_a_card_cached_segments_go_back_before_an_out_of_memory():
    events = [{"action": "alloc", "addr": 1, "size": 60 * MIB}, {"action": "free_requested", "addr": 1, "size": 60 * MIB},
              {"action": "alloc", "addr": 2, "size": 70 * MIB}]
    # Unlimited: the 60 MiB block is cached and a 70 MiB one needs a segment of its own.
    assert replay(events).peak_reserved == 130 * MIB
    # On a 100 MiB card the cached segment is released first: it fits.
    on_card = replay(events, limit=100 * MIB)
    assert on_card.oom is None and on_card.peak_reserved == 70 * MIB
    # On a 64 MiB card the 70 MiB request cannot be held.
    small = replay(events, limit=64 * MIB)
    assert small.oom is not None and small.oom.index == 2 and small.oom.request == 70 * MIB
    assert small.oom.allocated == 0 and small.oom.reserved == 0


def test_a_split_segment_cannot_go_back():
    events = [{"action": "alloc", "addr": 1, "size": 60 * MIB}, {"action": "free_requested", "addr": 1, "size": 60 * MIB},
              {"action": "alloc", "addr": 2, "size": 20 * MIB},  # carved from the cached 60 MiB segment
              {"action": "alloc", "addr": 3, "size": 50 * MIB}]  # the 40 MiB rest is too small
    r = replay(events, limit=100 * MIB)
    assert r.oom is not None and r.oom.index == 3 and r.oom.reserved == 60 * MIB and r.oom.allocated == 20 * MIB


def test_preallocated_blocks_stay():
    r = replay([{"action": "alloc", "addr": 1, "size": 4 * MIB}], None, [32 * MIB, 32 * MIB])
    assert r.peak_allocated == 68 * MIB and r.peak_reserved == 32 * MIB + 32 * MIB + 20 * MIB


def test_an_empty_request_takes_one_block():
    a = CachingAllocator()
    a.malloc(0)
    assert a.allocated == 512 and a.reserved == 2 * MIB


def test_inserted_blocks_land_where_the_trace_puts_them():
    # A 32 MiB block taken after event 1 (as a cuBLAS workspace at a thread's first product)
    # fits in the 60 MiB block freed just before it; taken first, it has a segment of its own.
    events = [{"action": "alloc", "addr": 1, "size": 60 * MIB}, {"action": "free_requested", "addr": 1, "size": 60 * MIB},
              {"action": "alloc", "addr": 2, "size": 20 * MIB}]
    late = replay(events, inserted={1: [32 * MIB]})
    assert late.peak_reserved == 60 * MIB and late.peak_allocated == 60 * MIB
    first = replay(events, None, [32 * MIB])
    assert first.peak_reserved == 92 * MIB


def test_a_renamed_block_is_freed_by_its_new_name():
    # The predictor's in-place gradient sum: block 1 is from then on storage 2.
    events = [{"action": "alloc", "addr": 1, "size": 30 * MIB}, {"action": "rename", "addr": 2, "prev": 1, "size": 30 * MIB},
              {"action": "free_requested", "addr": 2, "size": 30 * MIB}, {"action": "alloc", "addr": 3, "size": 30 * MIB}]
    r = replay(events)
    assert r.peak_allocated == 30 * MIB and r.peak_reserved == 30 * MIB
    # Unrenamed, the free names no live block: the memory would stay allocated.
    stale = replay([e for e in events if e["action"] != "rename"])
    assert stale.peak_allocated == 60 * MIB
