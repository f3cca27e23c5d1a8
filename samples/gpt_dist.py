"""The character-level GPT of gpt_tiny.py trained data-parallel under torchrun: DDP or FSDP2.

Each rank reads its own batches of the standard library's source text (the generator is
seeded with the rank), so ranks differ in data and agree in weights.

    torchrun --nproc-per-node 2 samples/gpt_dist.py --parallel fsdp --steps 20
    membit profile --nproc-per-node 2 -- samples/gpt_dist.py --parallel ddp

--backend auto picks nccl on CUDA and gloo on CPU. --world-size passes an explicit
world_size to init_process_group (as scripts written for a fixed cluster do).
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from gpt_tiny import GPT, GPTConfig, get_batch, stdlib_text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parallel", choices=("ddp", "fsdp", "none"), default="ddp")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data-bytes", type=int, default=1_000_000)
    ap.add_argument("--world-size", type=int, default=None, help="pass this world_size to init_process_group")
    ap.add_argument("--shards-out", default=None,
                    help="write this rank's local parameter, gradient and optimizer-state bytes here (JSON, "
                         "{rank} replaced), counted from the tensors after the last step")
    args = ap.parse_args(argv)

    backend = args.backend if args.backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
    kwargs = {} if args.world_size is None else {"world_size": args.world_size, "rank": int(os.environ["RANK"])}
    dist.init_process_group(backend, **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available() and backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank
    raw = stdlib_text(args.data_bytes)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    config = GPTConfig(block_size=args.seq_len, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config).to(device)
    if args.parallel == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif args.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.h:
            fully_shard(block)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1000 + rank)
    if rank == 0:
        print(f"gpt_dist: {args.parallel} on {world} rank(s), backend {backend}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        x, y = get_batch(data, args.batch_size, args.seq_len, gen, device)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if args.shards_out:
            _write_shards(args.shards_out.replace("{rank}", str(rank)), model, optimizer)
        if rank == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    if rank == 0:
        print(f"time {time.time() - t0:.1f}s", flush=True)
    dist.destroy_process_group()


def local_bytes(t) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _write_shards(path, model, optimizer) -> None:
    """What this rank holds after a step, from its own tensors (FSDP2: the DTensors' local shards)."""
    params = list(model.parameters())
    state = [v for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    doc = {"params": sum(local_bytes(p) for p in params),
           "grads": sum(local_bytes(p.grad) for p in params if p.grad is not None),
           "optimizer_state": sum(local_bytes(v) for v in state),
           "full_params": sum(p.numel() * p.element_size() for p in params)}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
