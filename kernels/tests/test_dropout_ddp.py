"""PackedDropout under DistributedDataParallel: two real processes on the gloo backend.

DDP must see an ordinary module: gradients all-reduced across ranks equal the average of
each rank's own gradients computed without DDP with the same dropout masks.
"""

import copy
import gc
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from membit.nn import PackedDropout

WORLD = 2


class Net(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.fc1 = nn.Linear(33, 64)
        self.drop = PackedDropout(0.3, mode=mode)
        self.fc2 = nn.Linear(64, 5)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def _worker(rank, init_file, mode):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _train(rank, mode)
        # DDP's reducer holds the process group and gloo work with tensors in them: dropped here,
        # while the interpreter is whole, not in its finalisation at the process's exit, where
        # gloo's threads can abort the process ("terminate called without an active exception").
        gc.collect()
        # Both ranks finish their collectives before either tears the group down; a rank
        # leaving early can abort the other inside gloo.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _train(rank, mode):
    """Three DDP steps against a plain copy, then the ranks' parameters compared."""
    torch.manual_seed(0)
    model = Net(mode)
    ref = copy.deepcopy(model)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(3):
        x = torch.randn(7, 33, generator=torch.Generator().manual_seed(10 * step + rank))
        torch.manual_seed(1000 + 10 * step + rank)  # the same masks for both copies
        loss = ddp(x).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.manual_seed(1000 + 10 * step + rank)
        ref_loss = ref(x).square().mean()
        ref_opt.zero_grad()
        ref_loss.backward()
        assert torch.isfinite(loss) and torch.equal(loss, ref_loss)
        for p in ref.parameters():
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        for a, b in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
        opt.step()
        ref_opt.step()
    # Ranks stay in step: the same parameters everywhere.
    for p in model.parameters():
        others = [torch.empty_like(p) for _ in range(WORLD)]
        dist.all_gather(others, p.detach())
        for o in others:
            torch.testing.assert_close(o, p.detach())


@pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("mode", ["packed", "recompute"])
def test_ddp_two_processes_gloo(mode):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(os.path.join(d, "init"), mode), nprocs=WORLD, join=True)
