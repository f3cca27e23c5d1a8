"""What a prediction adds for the target GPU: capacity, capability, and the costs fake tensors cannot see.

A fake run counts the tensors a step allocates. Three things on a real card are not tensors:
  * the CUDA context (driver, kernels' code, cuDNN/cuBLAS handles): device memory that no
    allocator statistic includes, but that the card's capacity must hold;
  * cuBLAS workspaces: PyTorch takes them from its caching allocator, so they *are* inside
    `max_memory_allocated`. PyTorch's default size is 4096 KiB x 8 on compute capability 9.0
    and 4096 KiB x 2 + 16 KiB x 8 elsewhere (aten/src/ATen/cuda/CublasHandlePool.cpp,
    `parseChosenWorkspaceSize`); one per (handle, stream), and autograd's backward runs on a
    thread of its own with its own handle, so a training step holds two;
  * the caching allocator's slack between reserved and allocated memory (fragmentation):
    not a table entry but a replay of the trace through the allocator's segment rules
    (segments.py), since an out-of-memory happens when *reserved* memory cannot grow.

SM counts and threads per SM are the cards' `multiProcessorCount` and `maxThreadsPerMultiProcessor`
(NVIDIA's product specifications and the CUDA C++ Programming Guide's table of compute
capabilities; the H100's 132 SMs also reproduce the reduction buffers measured on it, see
scratch.py). A GPU given by capacity alone takes the H100's.

Capacities are `torch.cuda.get_device_properties(i).total_memory` as the card reports it (the
H100 and H200 figures were read on the cards this package's benchmarks ran on: the H100's with torch
2.11 and driver 580.159.04, benchmarks/results/predict_fit_2ef0e04_NVIDIA-H100-80GB-HBM3.json; the others are the
usual driver-reported sizes, a little under the marketing size). Context sizes are typical for
CUDA 12 with lazy module loading, except the H100's and H200's, measured (H100_CONTEXT); they
vary by driver and by how many kernels a run touches.
Every figure here is labelled in the report as coming from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Gpu:
    key: str  # what --gpu takes
    name: str  # as torch.cuda.get_device_name reports it
    total_bytes: int
    capability: str  # "9.0"
    context_bytes: int  # CUDA context etc.: outside the allocator
    note: str = ""
    # multiProcessorCount and maxThreadsPerMultiProcessor: CUDA reductions size their scratch
    # buffers by them (scratch.py).
    sms: int = 132
    threads_per_sm: int = 2048
    context_source: str = "typical CUDA 12 context"

    @property
    def major(self) -> int:
        return int(self.capability.split(".")[0])

    @property
    def cublas_workspace_bytes(self) -> int:
        """One cuBLAS workspace (PyTorch's default for this capability)."""
        return 4096 * 8 * 1024 if self.capability == "9.0" else 4096 * 1024 * 2 + 16 * 1024 * 8

    @property
    def bf16(self) -> bool:
        return self.major >= 8

    def doc(self) -> dict:
        return {"key": self.key, "name": self.name, "total_bytes": self.total_bytes, "capability": self.capability}


# Device memory a training process holds outside PyTorch's reservation on an H100 (CUDA context,
# loaded kernels, cuBLAS and cuDNN handles), measured with torch 2.11, CUDA 13.0 and driver
# 580.159.04: "non-PyTorch memory" of 0.72 GiB in both out-of-memory errors of the largest-batch
# checks (benchmarks/results/predict_fit_1a05c60_NVIDIA-H100-80GB-HBM3.json), and 778 MB outside
# the allocator per NVML in a one-rank run (dist1_none_1a05c60_*.json). The H200, same stack,
# takes the same figure. The other cards' entries are typical CUDA 12 sizes, not measured here.
H100_CONTEXT = 740 * MiB
H100_CONTEXT_SOURCE = "measured on an H100 with torch 2.11 and CUDA 13.0"

GPUS: list[Gpu] = [
    Gpu("H100-80GB", "NVIDIA H100 80GB HBM3", 85_017_493_504, "9.0", H100_CONTEXT, sms=132, context_source=H100_CONTEXT_SOURCE),
    Gpu("H200", "NVIDIA H200", 150_754_820_096, "9.0", H100_CONTEXT, sms=132, context_source=H100_CONTEXT_SOURCE),
    Gpu("A100-80GB", "NVIDIA A100-SXM4-80GB", 85_097_971_712, "8.0", 470 * MiB, sms=108),
    Gpu("A100-40GB", "NVIDIA A100-SXM4-40GB", 42_505_273_344, "8.0", 470 * MiB, sms=108),
    Gpu("L4", "NVIDIA L4", 23_580_639_232, "8.9", 400 * MiB, sms=58, threads_per_sm=1536),
    Gpu("L40S", "NVIDIA L40S", 47_697_362_944, "8.9", 430 * MiB, sms=142, threads_per_sm=1536),
    Gpu("RTX4090", "NVIDIA GeForce RTX 4090", 25_393_692_672, "8.9", 420 * MiB, sms=128, threads_per_sm=1536),
    Gpu("RTX3090", "NVIDIA GeForce RTX 3090", 25_438_126_080, "8.6", 420 * MiB, sms=82, threads_per_sm=1536),
    Gpu("A10G", "NVIDIA A10G", 23_836_033_024, "8.6", 400 * MiB, sms=80, threads_per_sm=1536),
    Gpu("T4", "Tesla T4", 15_642_329_088, "7.5", 380 * MiB, sms=40, threads_per_sm=1024),
    Gpu("V100-32GB", "Tesla V100-SXM2-32GB", 34_089_730_048, "7.0", 380 * MiB, sms=80),
]

_BY_KEY: dict[str, Gpu] = {g.key.lower(): g for g in GPUS}
_ALIASES = {"h100": "h100-80gb", "a100": "a100-80gb", "4090": "rtx4090", "3090": "rtx3090", "v100": "v100-32gb",
            "h200-141gb": "h200"}


def keys() -> list[str]:
    return [g.key for g in GPUS]


def lookup(text: str) -> Gpu | None:
    k = text.strip().lower()
    k = _ALIASES.get(k, k)
    return _BY_KEY.get(k)


def custom(total_bytes: int, capability: str = "9.0") -> Gpu:
    """A GPU given by its capacity (--gpu 24GB): context from the table's smallest entry."""
    return Gpu(f"{total_bytes / GiB:.1f}GiB", f"GPU with {total_bytes / GiB:.1f} GiB", total_bytes, capability, 400 * MiB,
               note="capacity given on the command line")


def fixed_costs(gpu: Gpu, workspaces: int) -> list[dict]:
    """What the prediction adds from this table, each labelled (see the module's doc).
    `workspaces`: the cuBLAS handles the run used (the script's thread, autograd's)."""
    out = []
    if workspaces:
        out.append({"what": "cuBLAS workspaces", "bytes": workspaces * gpu.cublas_workspace_bytes,
                    "in_allocator": True,
                    "source": f"per-GPU table: PyTorch's default workspace for capability {gpu.capability} "
                              f"({gpu.cublas_workspace_bytes // 1024} KiB) x {workspaces} "
                              f"({'the script and autograd threads' if workspaces > 1 else 'one thread'}), "
                              f"each taken at its thread's first matrix product"})
    out.append({"what": "CUDA context", "bytes": gpu.context_bytes, "in_allocator": False,
                "source": f"per-GPU table: {gpu.context_source} on {gpu.name} (driver memory, not in max_memory_allocated)"})
    return out
