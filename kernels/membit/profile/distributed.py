"""The harness inside one rank of a distributed job (torchrun, SLURM).

Every rank runs the whole harness and writes its own report. This module adds what only a
rank knows:

- who it is: rank, local rank, world size, host and launcher, from the variables torchrun
  (RANK, LOCAL_RANK, WORLD_SIZE, TORCHELASTIC_RUN_ID) or SLURM (SLURM_PROCID, ...) set;
- where its report goes: `{rank}` in --out becomes the rank, so one --out serves all ranks;
- what the distributed machinery holds, measured where it is made:
    FSDP2's unsharded parameters, from the moment a parameter group is gathered until it is
    resharded (FSDPParamGroup._to_unsharded / _to_sharded*), per FSDP unit;
    FSDP2's all-gather and reduce-scatter buffers, at their allocation (the comm's allocate());
    DDP's gradient buckets, from DDP's own logging data (bucket_sizes);
    memory outside PyTorch's allocator (NCCL, the CUDA context), from NVML's per-process usage;
  the sharded parameters, gradients and optimizer state themselves are counted by the tracker
  from each DTensor's local shard (accounting.local_tensor);
- faults that would otherwise hang or mislead: a world_size the script asks for that differs
  from the launcher's (init_process_group would wait for ranks that never come), and a script
  that never calls init_process_group (every rank then trains alone).

torch internals are feature-detected: where a hook point is missing, the figure is null and a
note says why, never a guess.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import socket
import time
from typing import Callable, Dict, List, Optional

import torch

from .accounting import tensor_bytes
from .tracker import HarnessAbort

RANK_PLACEHOLDER = "{rank}"


def env_info(env=os.environ) -> Optional[dict]:
    """Who this process is in a distributed job; None when it is not one."""

    def num(name) -> Optional[int]:
        v = env.get(name)
        try:
            return int(v) if v is not None and v.strip() != "" else None
        except ValueError:
            return None

    if num("RANK") is not None and num("WORLD_SIZE") is not None:
        rank, world = num("RANK"), num("WORLD_SIZE")
        local = num("LOCAL_RANK")
        local_world = num("LOCAL_WORLD_SIZE")
        node = num("GROUP_RANK")
    elif num("SLURM_PROCID") is not None and (num("SLURM_NTASKS") or 1) > 1:
        rank, world = num("SLURM_PROCID"), num("SLURM_NTASKS")
        local, local_world, node = num("SLURM_LOCALID"), num("SLURM_NTASKS_PER_NODE"), num("SLURM_NODEID")
    else:
        return None
    launcher = "torchrun" if env.get("TORCHELASTIC_RUN_ID") else ("slurm" if env.get("SLURM_JOB_ID") else "env")
    return {
        "rank": rank,
        "local_rank": local if local is not None else rank,
        "world_size": world,
        "local_world_size": local_world,
        "node_rank": node,
        "host": socket.gethostname(),
        "launcher": launcher,
        "run_set": env.get("MEMBIT_RUN_SET") or env.get("TORCHELASTIC_RUN_ID") or env.get("SLURM_JOB_ID") or None,
        "slurm_job": env.get("SLURM_JOB_ID") or None,
    }


def rank_out(out: str, rank: int) -> str:
    """--out with {rank} replaced. Without the placeholder, rank N > 0 writes beside it (name.rankN.json)
    so ranks never overwrite each other's report."""
    if RANK_PLACEHOLDER in out:
        return out.replace(RANK_PLACEHOLDER, str(rank))
    if rank == 0:
        return out
    base, ext = os.path.splitext(out)
    return f"{base}.rank{rank}{ext or '.json'}"


class _Patch:
    """One attribute replaced, and put back."""

    def __init__(self, owner, name: str, make: Callable):
        self.owner, self.name = owner, name
        self.orig = owner.__dict__[name] if name in getattr(owner, "__dict__", {}) else getattr(owner, name)
        setattr(owner, name, make(getattr(owner, name)))

    def undo(self) -> None:
        setattr(self.owner, self.name, self.orig)


class Distributed:
    def __init__(self, harness, info: dict):
        self.h = harness
        self.info = info
        self.notes: List[str] = []
        self._patches: List[_Patch] = []
        self.pg_initialized = False
        self.backend: Optional[str] = None
        # FSDP2: bytes of each parameter group while unsharded, and the most held at once.
        self._unsharded_now: Dict[int, int] = {}
        self.unsharded_max = 0
        self.unsharded_max_units: List[str] = []
        self.units: Dict[int, dict] = {}
        self.all_gather_max: Optional[int] = None
        self.reduce_scatter_max: Optional[int] = None
        self.fsdp_hooked = False
        # Per step: (ms since the run started, bytes allocated, peak so far), from the step events.
        self.step_series: List[list] = []
        self._t0 = time.time()
        self.failed_at: Optional[float] = None
        self.nvml_process_max: Optional[int] = None
        self._nvml_proc = None

    # -- set-up -----------------------------------------------------------------------------

    def install(self) -> None:
        self._wrap_progress()
        self._wrap_init_process_group()
        self._hook_fsdp()

    def uninstall(self) -> None:
        while self._patches:
            self._patches.pop().undo()

    def _wrap_progress(self) -> None:
        """Every progress event names its rank; step events also feed the per-rank memory series."""
        progress = self.h.progress
        emit = progress.emit
        tags = {"rank": self.info["rank"], "world_size": self.info["world_size"]}

        def tagged(event, **fields):
            for k, v in tags.items():
                fields.setdefault(k, v)
            if event == "step":
                self.step_series.append([round((time.time() - self._t0) * 1000.0, 1), fields.get("allocated"), fields.get("peak")])
                self._sample_nvml()
            elif event == "finished" and self.h.status != "ok" and self.failed_at is None:
                self.failed_at = time.time()
            emit(event, **fields)

        progress.emit = tagged

    def _wrap_init_process_group(self) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            self.notes.append("torch.distributed is not available in this build")
            return
        c10d = dist.distributed_c10d
        orig = c10d.init_process_group
        sig = inspect.signature(orig)
        world, rank = self.info["world_size"], self.info["rank"]
        launcher = self.info["launcher"]

        def checked(*args, **kwargs):
            try:
                bound = sig.bind_partial(*args, **kwargs)
            except TypeError:
                bound = None
            asked = bound.arguments.get("world_size") if bound is not None else None
            asked_rank = bound.arguments.get("rank") if bound is not None else None
            if isinstance(asked, int) and asked not in (-1, world):
                # init_process_group would wait (30 minutes by default) for ranks that never start.
                raise HarnessAbort(
                    f"the script asks init_process_group for world_size={asked}, but {launcher} started {world} "
                    f"rank(s): launch it with as many ranks (--nproc-per-node × --nnodes = {asked}) or let the "
                    f"script read WORLD_SIZE from the environment (init_process_group() without world_size)")
            if isinstance(asked_rank, int) and asked_rank not in (-1, rank):
                raise HarnessAbort(f"the script asks init_process_group for rank={asked_rank}, but {launcher} started "
                                   f"this process as rank {rank}: read RANK from the environment")
            out = orig(*args, **kwargs)
            self.pg_initialized = True
            try:
                self.backend = str(dist.get_backend())
            except Exception:  # noqa: BLE001
                pass
            return out

        for owner in (c10d, dist):
            if getattr(owner, "init_process_group", None) is orig:
                self._patches.append(_Patch(owner, "init_process_group", lambda _f: checked))

    def _hook_fsdp(self) -> None:
        try:
            from torch.distributed.fsdp._fully_shard import _fsdp_collectives as coll
            from torch.distributed.fsdp._fully_shard import _fsdp_param_group as pg
        except Exception:  # noqa: BLE001 - no FSDP2 in this torch
            return
        group_cls = getattr(pg, "FSDPParamGroup", None)
        if group_cls is None or not all(hasattr(group_cls, n) for n in ("_to_unsharded", "_to_sharded")):
            self.notes.append("this torch's FSDP2 has no hook point for unsharded parameters: not measured")
            return
        me = self

        def on_unsharded(orig):
            def wrapper(group, *a, **k):
                out = orig(group, *a, **k)
                me._note_unsharded(group)
                return out
            return wrapper

        def on_sharded(orig):
            def wrapper(group, *a, **k):
                out = orig(group, *a, **k)
                me._unsharded_now.pop(id(group), None)
                return out
            return wrapper

        self._patches.append(_Patch(group_cls, "_to_unsharded", on_unsharded))
        for name in ("_to_sharded", "_to_sharded_post_forward"):
            if hasattr(group_cls, name):
                self._patches.append(_Patch(group_cls, name, on_sharded))
        self.fsdp_hooked = True

        gather_types = tuple(c for c in (getattr(coll, "AllGather", None),) if isinstance(c, type))
        scatter_types = tuple(c for c in (getattr(coll, "ReduceScatter", None),) if isinstance(c, type))

        def on_allocate(orig):
            def wrapper(comm, size, *a, **k):
                t = orig(comm, size, *a, **k)
                try:
                    n = tensor_bytes(t)
                    if gather_types and isinstance(comm, gather_types):
                        me.all_gather_max = max(me.all_gather_max or 0, n)
                    elif scatter_types and isinstance(comm, scatter_types):
                        me.reduce_scatter_max = max(me.reduce_scatter_max or 0, n)
                except Exception:  # noqa: BLE001 - a measurement must never break the run
                    pass
                return t
            return wrapper

        for name in ("DefaultAllocMixin", "ProcessGroupAllocMixin", "SymmMemAllocMixin"):
            mixin = getattr(coll, name, None)
            if isinstance(mixin, type) and "allocate" in mixin.__dict__:
                self._patches.append(_Patch(mixin, "allocate", on_allocate))

    def _note_unsharded(self, group) -> None:
        try:
            total = 0
            for fp in getattr(group, "fsdp_params", []):
                t = getattr(fp, "_unsharded_param", None)
                if isinstance(t, torch.Tensor):
                    total += tensor_bytes(t)
            name = getattr(group, "_module_fqn", None) or ""
        except Exception:  # noqa: BLE001
            return
        self._unsharded_now[id(group)] = total
        unit = self.units.setdefault(id(group), {"module": name, "unsharded_bytes": 0, "sharded_bytes": None})
        unit["unsharded_bytes"] = max(unit["unsharded_bytes"], total)
        now = sum(self._unsharded_now.values())
        if now > self.unsharded_max:
            self.unsharded_max = now
            self.unsharded_max_units = sorted(self.units[g]["module"] for g in self._unsharded_now if g in self.units)

    # -- NVML: this process's device memory, allocator or not --------------------------------

    def _sample_nvml(self) -> None:
        used = self._nvml_process_used()
        if used is not None:
            self.nvml_process_max = max(self.nvml_process_max or 0, used)

    def _nvml_process_used(self) -> Optional[int]:
        nvml = getattr(self.h, "nvml", None)
        if nvml is None:
            return None
        lib, handle = nvml._lib, nvml._handle
        fn = getattr(lib, "nvmlDeviceGetComputeRunningProcesses_v3", None) or getattr(lib, "nvmlDeviceGetComputeRunningProcesses_v2", None)
        if fn is None:
            return None

        class _Proc(ctypes.Structure):
            _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong),
                        ("gpuInstanceId", ctypes.c_uint), ("computeInstanceId", ctypes.c_uint)]

        count = ctypes.c_uint(64)
        procs = (_Proc * 64)()
        try:
            if fn(handle, ctypes.byref(count), procs) != 0:
                return None
        except OSError:
            return None
        pid = os.getpid()
        for i in range(min(count.value, 64)):
            if procs[i].pid == pid:
                used = int(procs[i].usedGpuMemory)
                # NVML's "not available" value (e.g. in containers without PID namespace access).
                return None if used >= 2 ** 64 - 1 else used
        return None

    # -- after the run ----------------------------------------------------------------------

    def _ddp(self) -> Optional[dict]:
        try:
            from torch.nn.parallel import DistributedDataParallel as DDP
        except Exception:  # noqa: BLE001
            return None
        seen, sizes, views, wrappers = set(), [], False, 0
        for root in self.h.tracker.roots:
            for m in root.modules():
                if isinstance(m, DDP) and id(m) not in seen:
                    seen.add(id(m))
                    wrappers += 1
                    try:
                        data = m._get_ddp_logging_data()
                    except Exception:  # noqa: BLE001
                        continue
                    text = str(data.get("bucket_sizes", "") or "")
                    sizes += [int(x) for x in text.split(",") if x.strip().isdigit()]
                    views = views or bool(data.get("gradient_as_bucket_view", 0))
        if not wrappers:
            return None
        return {"wrappers": wrappers, "buckets": len(sizes), "bucket_bytes": sum(sizes) if sizes else None,
                "bucket_sizes": sizes, "grads_are_bucket_views": views}

    def _fsdp_units(self) -> List[dict]:
        """Per FSDP unit: its sharded (local) parameter bytes and the most it held unsharded."""
        try:
            from torch.distributed.fsdp import FSDPModule
        except Exception:  # noqa: BLE001
            return []
        out = []
        for root in self.h.tracker.roots:
            for name, m in root.named_modules():
                if not isinstance(m, FSDPModule):
                    continue
                try:
                    group = m._get_fsdp_state()._fsdp_param_group
                except Exception:  # noqa: BLE001
                    group = None
                if group is None:
                    continue
                sharded = 0
                for fp in getattr(group, "fsdp_params", []):
                    p = getattr(fp, "sharded_param", None)
                    if isinstance(p, torch.Tensor):
                        sharded += tensor_bytes(p)
                unit = self.units.get(id(group), {})
                out.append({"module": name or type(m).__name__, "params": len(getattr(group, "fsdp_params", [])),
                            "sharded_bytes": sharded, "unsharded_bytes": unit.get("unsharded_bytes")})
        return out

    def decorate(self, doc: dict) -> dict:
        """Adds run.distributed and summary.distributed to a built (or fallback) report."""
        h = self.h
        run = doc.get("run") or {}
        if h.status != "ok" and self.failed_at is None:
            self.failed_at = time.time()
        try:
            import torch.distributed as dist

            initialized = dist.is_available() and dist.is_initialized()
        except Exception:  # noqa: BLE001
            initialized = False
        notes = list(self.notes)
        if not (initialized or self.pg_initialized):
            notes.append(f"{self.info['launcher']} started this process as rank {self.info['rank']} of "
                         f"{self.info['world_size']}, but the script never called torch.distributed.init_process_group: "
                         "each rank trained alone, with nothing sharded or synchronised")
        self._sample_nvml()
        run["distributed"] = {
            **{k: self.info[k] for k in ("rank", "local_rank", "world_size", "local_world_size", "node_rank", "host",
                                         "launcher", "run_set", "slurm_job")},
            "process_group": bool(initialized or self.pg_initialized),
            "backend": self.backend,
            "failed_at": round(self.failed_at, 3) if self.failed_at is not None else None,
            "notes": notes,
        }
        ddp = None
        units: List[dict] = []
        try:
            ddp = self._ddp()
            units = self._fsdp_units()
        except Exception as e:  # noqa: BLE001 - a measurement must never cost the report
            notes.append(f"could not read DDP/FSDP state: {type(e).__name__}: {e}")
        summary = doc.get("summary") or {}
        reserved = summary.get("peak_reserved")
        summary["distributed"] = {
            "fsdp_units": units,
            "unsharded_params_max": self.unsharded_max if self.fsdp_hooked and units else None,
            "unsharded_params_max_units": self.unsharded_max_units if self.fsdp_hooked and units else [],
            "all_gather_buffer_max": self.all_gather_max,
            "reduce_scatter_buffer_max": self.reduce_scatter_max,
            "ddp": ddp,
            "nvml_process_used_max": self.nvml_process_max,
            # What the process held on the device beyond the allocator's reservation: NCCL's buffers
            # and the CUDA context; null where NVML or the allocator figure is missing.
            "outside_allocator": max(0, self.nvml_process_max - reserved) if (self.nvml_process_max is not None and isinstance(reserved, int)) else None,
            "step_memory": self.step_series[-200:],
        }
        return doc


def attach(harness) -> Optional[Distributed]:
    """Sets the harness up for a rank when this process is one; None otherwise."""
    info = env_info()
    if info is None:
        return None
    harness.opts.out = rank_out(harness.opts.out, info["rank"])
    d = Distributed(harness, info)
    d.install()
    return d
