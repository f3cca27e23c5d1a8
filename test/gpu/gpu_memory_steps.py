"""A PyTorch process whose GPU memory the NVML check drives step by step.

Reads one command per line on stdin and answers each with one JSON line on stdout,
after the GPU has finished the work, so the checker knows what the device must show:

    alloc NAME MIB    keep a new tensor of exactly MIB MiB (written, so it is real)
    free NAME         drop it and return the memory to the driver (empty_cache)
    churn SECONDS     allocate and free 256 MiB blocks for that long (memory moving
                      all the time, the sampler's most expensive case)
    quit
"""
import json
import sys
import time

import torch

MIB = 1 << 20


def answer(what: str, **extra) -> None:
    torch.cuda.synchronize()
    print(json.dumps({
        "ok": what,
        "tMs": time.time() * 1000,
        "reserved": torch.cuda.memory_reserved(),
        "allocated": torch.cuda.memory_allocated(),
        **extra,
    }), flush=True)


def main() -> None:
    torch.zeros(1, device="cuda")  # create the CUDA context first: it is part of the baseline
    torch.cuda.empty_cache()  # and give back the small block that took, so it stays out of the steps
    held = {}
    answer("ready", torch=torch.__version__, device=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "alloc":
            held[cmd[1]] = torch.empty(int(cmd[2]) * MIB, dtype=torch.uint8, device="cuda")
            held[cmd[1]].fill_(7)  # no other name may keep the tensor alive after "free"
        elif cmd[0] == "free":
            del held[cmd[1]]
            torch.cuda.empty_cache()
        elif cmd[0] == "churn":
            end = time.time() + float(cmd[1])
            n = 0
            while time.time() < end:
                torch.empty(256 * MIB, dtype=torch.uint8, device="cuda").fill_(1)
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                n += 1
                time.sleep(0.01)
            answer(f"churn {n}")
            continue
        elif cmd[0] == "quit":
            answer("quit")
            return
        answer(line.strip())


if __name__ == "__main__":
    main()
