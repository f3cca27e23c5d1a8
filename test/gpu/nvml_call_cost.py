"""What the NVML calls the sampler makes cost on this machine, called straight
through ctypes (a few hundred nanoseconds of Python around each call), and which
memory figure nvidia-smi's memory.used is (v1 counts the driver's reservation, v2
does not). Prints one JSON object."""
import ctypes
import json
import subprocess
import time

N = 2000


class MemoryV1(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class MemoryV2(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("total", ctypes.c_ulonglong), ("reserved", ctypes.c_ulonglong),
                ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class Process(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong), ("gi", ctypes.c_uint), ("ci", ctypes.c_uint)]


def timed(fn):
    fn()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(N):
        rc = fn()
        if rc != 0:
            return {"error": rc}
    return {"wallUsPerCall": round((time.perf_counter() - w0) / N * 1e6, 2),
            "cpuUsPerCall": round((time.process_time() - c0) / N * 1e6, 2)}


def main():
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    assert lib.nvmlInit_v2() == 0
    dev = ctypes.c_void_p()
    assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(dev)) == 0
    v1 = MemoryV1()
    v2 = MemoryV2()
    v2.version = ctypes.sizeof(MemoryV2) | (2 << 24)
    procs = (Process * 64)()
    count = ctypes.c_uint(64)

    def get_procs():
        count.value = 64
        return lib.nvmlDeviceGetComputeRunningProcesses_v3(dev, ctypes.byref(count), procs)

    out = {
        "nvmlDeviceGetMemoryInfo": timed(lambda: lib.nvmlDeviceGetMemoryInfo(dev, ctypes.byref(v1))),
        "nvmlDeviceGetMemoryInfo_v2": timed(lambda: lib.nvmlDeviceGetMemoryInfo_v2(dev, ctypes.byref(v2))),
        "nvmlDeviceGetComputeRunningProcesses_v3": timed(get_procs),
    }
    smi = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=memory.total,memory.reserved,memory.used,memory.free",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout.strip()
    lib.nvmlDeviceGetMemoryInfo(dev, ctypes.byref(v1))
    lib.nvmlDeviceGetMemoryInfo_v2(dev, ctypes.byref(v2))
    mib = 1 << 20
    out["memoryMiB"] = {
        "v1": {"total": v1.total / mib, "used": v1.used / mib, "free": v1.free / mib},
        "v2": {"total": v2.total / mib, "reserved": v2.reserved / mib, "used": v2.used / mib, "free": v2.free / mib},
        "nvidiaSmi(total,reserved,used,free)": smi,
    }
    out["processesNow"] = count.value
    lib.nvmlShutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
