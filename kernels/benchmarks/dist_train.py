"""The data-parallel training script of the multi-GPU check (`bench_dist.py`): HF GPT-2 built
from its config, or the GPT sample, under no wrapper, DDP or FSDP2 (`fully_shard` per block),
AdamW, optional bf16 autocast. One process per GPU under torchrun (NCCL), or processes on the
CPU (gloo).

    torchrun --nproc-per-node 2 benchmarks/dist_train.py --model gpt2-medium --parallel fsdp --bf16

With --stats-out (JSON, {rank} replaced) each rank writes, after its last step, what it measured
itself: `max_memory_allocated` and `max_memory_reserved` over every step, the median of the
synchronised step times from --timed-from on, and its local parameter, gradient and
optimizer-state bytes on its device, counted from its own tensors (FSDP2: each DTensor's local
shard).
--rank-batch R=N gives rank R a batch of N (the out-of-memory fault of the check).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "samples"))
from gpt_dist import local_bytes  # noqa: E402
from gpt_tiny import GPT, GPTConfig, get_batch, stdlib_text  # noqa: E402
from hf_gpt2_train import SIZES, build_model  # noqa: E402

HF_MODELS = {f"gpt2-{size}": size for size in SIZES}


def build(args, device):
    """The model and its blocks (one fully_shard each), the same initial weights on every rank."""
    if args.model in HF_MODELS:
        model = build_model(HF_MODELS[args.model], args.attn, args.seq_len, device)
        return model, model.transformer.h
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=args.seq_len, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(cfg).to(device)
    return model, model.h


def rank_batch(spec, rank, default):
    """--rank-batch R=N: rank R's batch size; every other rank keeps the default."""
    if not spec:
        return default
    r, _, n = spec.partition("=")
    return int(n) if int(r) == rank else default


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("gpt", *sorted(HF_MODELS)), default="gpt2-medium")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="eager", help="HF attention implementation")
    ap.add_argument("--parallel", choices=("none", "ddp", "fsdp"), default="ddp")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast around the forward")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rank-batch", default=None, metavar="R=N", help="give rank R a batch of N")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--n-layer", type=int, default=6, help="--model gpt only")
    ap.add_argument("--n-embd", type=int, default=768, help="--model gpt only")
    ap.add_argument("--n-head", type=int, default=12, help="--model gpt only")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--timed-from", type=int, default=3, help="first step whose time counts (steps before warm up)")
    ap.add_argument("--stats-out", default=None)
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    model, blocks = build(args, device)
    if args.parallel == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    elif args.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in blocks:
            fully_shard(block)
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    data = torch.frombuffer(bytearray(stdlib_text(2_000_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(1000 + rank)
    batch = rank_batch(args.rank_batch, rank, args.batch_size)
    hf = args.model in HF_MODELS
    times = []
    for step in range(1, args.steps + 1):
        x, y = get_batch(data, batch, args.seq_len, gen, device)
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=x, labels=y).loss if hf else model(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        if step >= args.timed_from:
            times.append(time.perf_counter() - t0)
        if rank == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    if args.stats_out:
        params = list(model.parameters())
        # On the rank's device only: AdamW keeps its step counters on the CPU unless fused or capturable.
        state = [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor) and v.device == device]
        doc = {"rank": rank, "world": world, "pid": os.getpid(), "parallel": args.parallel, "batch": batch,
               "device": torch.cuda.get_device_name(device) if cuda else "cpu",
               "max_allocated": torch.cuda.max_memory_allocated(device) if cuda else None,
               "max_reserved": torch.cuda.max_memory_reserved(device) if cuda else None,
               "step_s_median": statistics.median(times) if times else None, "steps_timed": len(times),
               "params": sum(local_bytes(p) for p in params),
               "grads": sum(local_bytes(p.grad) for p in params if p.grad is not None),
               "optimizer_state": sum(local_bytes(v) for v in state)}
        path = args.stats_out.replace("{rank}", str(rank))
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
