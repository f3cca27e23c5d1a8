"""The predictor's trace, event by event, against what the CUDA caching allocator recorded.

Where blocks land in the allocator's segments depends on the order of allocations and frees, not
only on their sizes: the reserved peak (and so whether a batch fits) moved by 5% on the GPT
sample when the order was off. Each rule here was read off the allocator's own trace of the GPT
sample's step on an H100 (torch 2.11, `torch.cuda.memory._record_memory_history`), and the
figures in these tests are that trace's.
"""

import glob
import itertools
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from membit.predict import gpus, scratch
from membit.predict.fakecuda import FakeCuda
from membit.profile import allocator
from membit.profile.frames import CodeFilter

MIB = 1 << 20


@pytest.fixture
def fake():
    env = FakeCuda(gpus.lookup("H100-80GB"), CodeFilter(), itertools.count().__next__)
    env.install()
    try:
        with env.active():
            yield env
    finally:
        env.uninstall()


def allocs(env, since=0):
    return [e.size for e in env.accountant.events[since:] if e.action == "alloc"]


@pytest.mark.parametrize("rows, outputs, expected", [
    # (rows, outputs): the bias gradients of the GPT sample's linears at batch 8 and 88 x 1024
    # tokens, and layer norm's partial sums at batch 88: buffer and semaphore bytes as traced.
    (8192, 768, [50_331_648, 24]), (8192, 3072, [138_412_032, 96]), (8192, 2304, [139_198_464, 72]),
    (90112, 768, [138_412_032, 24]), (90112, 3072, [138_412_032, 96]), (90112, 2304, [139_198_464, 72]),
    (1365, 768, [8_650_752, 24]),
])
def test_reduction_scratch_is_the_h100_trace(rows, outputs, expected):
    # float32 and bfloat16 inputs alike: both accumulate in float32 (4 bytes).
    assert scratch.reduce_scratch((rows, outputs), (outputs, 1), 4, [0], 132, 2048) == expected


def test_reductions_that_stay_in_a_block_take_no_scratch():
    assert scratch.reduce_scratch((64, 768), (768, 1), 4, [0], 132, 2048) == []
    assert scratch.reduce_scratch((8192, 768), (768, 1), 4, [1], 132, 2048) == []  # along the rows
    # Fewer SMs, fewer blocks per output: the buffer follows the card.
    assert scratch.reduce_scratch((8192, 768), (768, 1), 4, [0], 58, 1536)[0] < 50_331_648


def test_a_sum_allocates_its_output_then_buffer_and_semaphores(fake):
    g = torch.empty(8192, 768, device="cuda")
    n = len(fake.accountant.events)
    g.sum(0)
    ev = [(e.action, e.size) for e in fake.accountant.events[n:]]
    # The output; the staging buffer and semaphores, freed last first; then the output, unused.
    assert ev[:5] == [("alloc", 3072), ("alloc", 50_331_648), ("alloc", 24), ("free_requested", 24),
                      ("free_requested", 50_331_648)]


def test_autocast_casts_the_last_argument_first(fake):
    # F.linear under bf16: the bias's cast, then the weight's, then the input's, then the output.
    lin = torch.nn.Linear(512, 256).cuda()
    x = torch.empty(1024, 512, device="cuda")
    n = len(fake.accountant.events)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        lin(x)
    assert allocs(fake, n)[:4] == [256 * 2, 256 * 512 * 2, 1024 * 512 * 2, 1024 * 256 * 2]


def test_dropout_allocates_its_mask_before_its_output(fake):
    x = torch.empty(1024, 1024, device="cuda")
    n = len(fake.accountant.events)
    F.dropout(x, 0.1)
    assert allocs(fake, n) == [1024 * 1024, 1024 * 1024 * 4]  # bool mask, then float output


def test_cross_entropy_under_autocast_as_cuda_runs_it(fake):
    # log_softmax keeps the logits' half precision; nll_loss casts its input to float32.
    logits = torch.empty(4096, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    target = torch.zeros(4096, dtype=torch.long, device="cuda")
    n = len(fake.accountant.events)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(logits, target)
    assert loss.dtype == torch.float32
    big = [s for s in allocs(fake, n) if s >= 4096 * 256]
    assert big == [4096 * 256 * 2, 4096 * 256 * 4]


def test_cross_entropy_with_label_smoothing_under_autocast(fake):
    # The same two blocks, then the smoothing term's float32 sum over classes (one per row).
    logits = torch.empty(4096, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    target = torch.zeros(4096, dtype=torch.long, device="cuda")
    n = len(fake.accountant.events)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(logits, target, label_smoothing=0.1)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    sizes = allocs(fake, n)
    assert [s for s in sizes if s >= 4096 * 256] == [4096 * 256 * 2, 4096 * 256 * 4]
    assert 4096 * 4 in sizes
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16


def test_parameters_are_allocated_where_the_model_moves(fake):
    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(64, 32)  # weight 8 KiB, bias 128 B
            self.register_buffer("mask", torch.ones(16, 16))  # 1 KiB

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.head = torch.nn.Linear(32, 8)  # 1 KiB, 32 B

    n = len(fake.accountant.events)
    model = Outer()
    assert allocs(fake, n) == []  # built on the CPU: nothing on the GPU yet
    model.to("cuda")
    # model.to's order: children first, each module's parameters, then its buffers.
    assert allocs(fake, n) == [64 * 32 * 4, 32 * 4, 16 * 16 * 4, 32 * 8 * 4, 8 * 4]


def test_parameters_never_moved_are_counted_when_used(fake):
    lin = torch.nn.Linear(64, 32)
    x = torch.empty(8, 64, device="cuda")
    n = len(fake.accountant.events)
    lin(x)
    assert sorted(allocs(fake, n)[:2]) == [32 * 4, 64 * 32 * 4]


def test_gradients_of_one_tensor_are_summed_in_place(fake):
    # h feeds two branches; its two gradients meet in autograd's input buffer. The engine holds
    # the only reference to the first, so CUDA adds the second into it (no new block).
    x = torch.empty(1024, 1024, device="cuda", requires_grad=True)
    h = x * 2
    loss = (h * 3).sum() + (h * 5).sum()
    n = len(fake.accountant.events)
    loss.backward()
    ev = fake.accountant.events[n:]
    renames = [e for e in ev if e.action == "rename"]
    assert len(renames) == 1
    mib4 = 1024 * 1024 * 4
    # h's two gradients and x's: three blocks of 4 MiB, not four.
    assert [s for s in allocs(fake, n) if s == mib4] == [mib4] * 3
    # The allocator replay follows the rename to the block's free: it ends where the accountant
    # does, and the old gradient's block is closed by the free that names the sum.
    docs = [e.doc() for e in fake.accountant.events]
    rep = allocator.replay(docs, [], 0)
    assert rep.allocated[-1] == fake.accountant.current
    at = next(i for i, d in enumerate(docs) if d["action"] == "rename")
    # The one block open across the rename under the sum's address (storage addresses are reused
    # over a run, but two live storages never share one).
    block = next(b for b in rep.blocks if b.alloc_idx < at < b.free_idx and b.addr == renames[0].addr)
    assert block.size == mib4 and block.free_idx < len(docs)
    assert docs[block.free_idx]["action"] == "free_requested" and docs[block.free_idx]["addr"] == renames[0].addr


def test_each_thread_takes_its_workspace_at_its_first_product(fake):
    lin = torch.nn.Linear(256, 256).cuda()
    x = torch.empty(64, 256, device="cuda", requires_grad=True)
    lin(x).sum().backward()
    acc = fake.accountant
    assert set(acc.workspace_after) == {"script", "autograd"}
    first_out = acc.events[acc.workspace_after["script"]]
    assert first_out.action == "alloc" and first_out.size == 64 * 256 * 4  # the forward's addmm output
    assert acc.workspace_after["autograd"] > acc.workspace_after["script"]


RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")
TRACES = sorted(glob.glob(os.path.join(RESULTS, "alloc_trace_gpt_*_NVIDIA-H100-80GB-HBM3.json.gz")))
sys.path.insert(0, os.path.dirname(RESULTS))
import alloc_trace  # noqa: E402


@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_the_segment_rules_replay_the_cards_own_trace(path):
    # The allocator's trace recorded on the H100 (benchmarks/alloc_trace.py record), replayed by
    # the predictor's segment rules: the card's max_memory_reserved, to the byte.
    doc = alloc_trace.load(path)
    assert alloc_trace.replay_rows(doc["rows"]).peak_reserved == doc["max_reserved"]


def test_the_predicted_trace_reaches_the_cards_reserved_peak():
    doc = alloc_trace.load(next(p for p in TRACES if "_bf16_8_" in p))
    rows = alloc_trace.predicted_rows(doc["variant"], doc["batch"], "H100-80GB")
    predicted = alloc_trace.replay_rows(rows).peak_reserved
    assert abs(predicted - doc["max_reserved"]) <= 0.001 * doc["max_reserved"], (predicted, doc["max_reserved"])
