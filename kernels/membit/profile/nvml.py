"""Device-wide used memory from NVML through ctypes (pynvml is not a dependency).

Optional: where libnvidia-ml is missing or the device cannot be matched, `NvmlSampler.open`
returns None and the report's device_used fields stay null.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import List, Optional, Tuple


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class NvmlSampler:
    def __init__(self, lib, handle):
        self._lib = lib
        self._handle = handle
        self.samples: List[Tuple[int, int]] = []  # (wall-clock µs, used bytes)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def open(cls, torch_index: int) -> Optional["NvmlSampler"]:
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            return None
        try:
            if lib.nvmlInit_v2() != 0:
                return None
            handle = ctypes.c_void_p()
            if not cls._match(lib, torch_index, handle):
                return None
            sampler = cls(lib, handle)
            return sampler if sampler.used() is not None else None
        except (AttributeError, OSError):
            return None

    @staticmethod
    def _match(lib, torch_index: int, handle) -> bool:
        """Finds NVML's handle for torch's device (CUDA_VISIBLE_DEVICES may renumber them)."""
        import torch

        props = torch.cuda.get_device_properties(torch_index)
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            text = str(uuid)
            for cand in (text, "GPU-" + text):
                if lib.nvmlDeviceGetHandleByUUID(cand.encode(), ctypes.byref(handle)) == 0:
                    return True
        bus = getattr(props, "pci_bus_id", None)
        dev = getattr(props, "pci_device_id", None)
        dom = getattr(props, "pci_domain_id", None)
        if bus is not None and dev is not None and dom is not None:
            busid = f"{dom:08x}:{bus:02x}:{dev:02x}.0".encode()
            if lib.nvmlDeviceGetHandleByPciBusId_v2(busid, ctypes.byref(handle)) == 0:
                return True
        if not os.environ.get("CUDA_VISIBLE_DEVICES"):
            return lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(torch_index), ctypes.byref(handle)) == 0
        return False

    def used(self) -> Optional[int]:
        mem = _Memory()
        if self._lib.nvmlDeviceGetMemoryInfo(self._handle, ctypes.byref(mem)) != 0:
            return None
        return int(mem.used)

    def start(self, period_s: float = 0.2) -> None:
        def loop():
            while not self._stop.is_set():
                u = self.used()
                if u is not None:
                    self.samples.append((time.time_ns() // 1000, u))
                self._stop.wait(period_s)

        self._thread = threading.Thread(target=loop, name="membit-nvml", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
