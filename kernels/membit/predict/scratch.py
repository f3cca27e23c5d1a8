"""Scratch memory that CUDA kernels take from the caching allocator and give back before they
return: invisible to meta kernels, which allocate only outputs, but real blocks in the
allocator's segments, where they decide what fits later.

Reductions (sum, mean) are the common case. ATen's TensorIterator reduction (Reduce.cuh,
`setReduceConfig` and `ReduceConfig::global_memory_size`) splits a long reduction over several
thread blocks per output when each thread would otherwise sum too many values; the blocks then
meet in a global staging buffer and a semaphore array, both allocated after the output. A bias
gradient (`grad.sum(0)` over batch x tokens rows) is exactly such a reduction: measured on an
H100 in the GPT sample's step (torch 2.11, the allocator's own trace), its buffers were 50.3 MB
for 768 outputs over 8,192 rows and 138.4 MB for 3,072 outputs, the sizes `reduce_scratch`
gives for a card of 132 SMs (tests/test_predict_scratch.py holds those measurements).
"""

from __future__ import annotations

import math

MAX_NUM_THREADS = 512  # mnt_wrapper: 256 for complex double only
MIN_VALUES_PER_THREAD = 16
MAX_VALUES_PER_THREAD = 256
INPUT_VEC_SIZE = 4
WARP = 32


def _last_pow2(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


def reduce_scratch(shape, strides, acc_size: int, reduce_dims, sms: int, threads_per_sm: int) -> list[int]:
    """Bytes of the (staging buffer, semaphores) a CUDA sum/mean over `reduce_dims` allocates,
    or [] when the reduction stays inside each thread block.

    `acc_size`: the accumulator's bytes (float for float, half and bfloat16 inputs, double for
    double); the input's own dtype does not enter (the vector widths are in elements). The tensor is taken as TensorIterator sees it after
    dropping size-1 dimensions: the reduced dimensions against the kept ones."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    red = [d for d in dims if d in set(reduce_dims)]
    keep = [d for d in dims if d not in set(reduce_dims)]
    num_outputs = math.prod(shape[d] for d in keep)
    inputs_per_output = math.prod(shape[d] for d in red)
    if not red or inputs_per_output <= 1 or num_outputs == 0:
        return []
    fastest = min(dims, key=lambda d: strides[d])
    on_fastest = not keep or fastest in red
    dim0, dim1 = (inputs_per_output, num_outputs) if on_fastest else (num_outputs, inputs_per_output)
    output_vec = 1
    if strides[fastest] == 1:
        # Reduced dimensions that lie next to each other in memory coalesce into one.
        red_sorted = sorted(red, key=lambda d: strides[d])
        coalesced = all(strides[b] == strides[a] * shape[a] for a, b in zip(red_sorted, red_sorted[1:]))
        if on_fastest and dim0 > 128 and coalesced:
            dim0 //= INPUT_VEC_SIZE  # vectorised along the input
        elif not on_fastest:
            # Vectorised along the output: 4, halved until the output extent and every stride divide.
            output_vec = 4
            for n in [shape[fastest]] + [strides[d] for d in dims if d != fastest]:
                while n % output_vec:
                    output_vec //= 2
            dim0 //= output_vec
    max_threads = MAX_NUM_THREADS // output_vec
    d0 = _last_pow2(dim0) if dim0 < max_threads else max_threads
    d1 = _last_pow2(dim1) if dim1 < max_threads else max_threads
    block_width = min(d0, WARP)
    block_height = min(d1, max_threads // block_width)
    block_width = min(d0, max_threads // block_height)
    num_threads = block_width * block_height

    step_input = step_output = 1
    if on_fastest:
        step_input *= block_width  # lanes split the input: reduced across the block's x
    else:
        step_output *= block_width
    values = -(-inputs_per_output // step_input)
    split_warps = values >= min(block_height * MIN_VALUES_PER_THREAD, MAX_VALUES_PER_THREAD)
    if split_warps:
        step_input *= block_height
    else:
        step_output *= block_height
    target_grid = sms * (threads_per_sm // num_threads)
    grid_x = -(-(num_outputs // output_vec) // step_output)
    values = -(-inputs_per_output // step_input)
    if not (split_warps and values >= MAX_VALUES_PER_THREAD and grid_x <= target_grid):
        return []
    ctas = max(min(-(-target_grid // grid_x), -(-values // MIN_VALUES_PER_THREAD)),
               -(-values // MAX_VALUES_PER_THREAD))
    if ctas <= 1:
        return []
    size = acc_size * num_outputs * ctas
    if not on_fastest:
        size *= block_width * output_vec
    return [size, 4 * grid_x]
