"""What every benchmark result records about where it ran: the GPU and its driver, the
software versions, the date and the commit measured.

The commit comes from MEMBIT_COMMIT when set (a benchmark run from a copy of the tree
without its .git folder, as on a rented GPU box), else from `git rev-parse HEAD` with
"-dirty" appended when the tree has uncommitted changes, else None.
"""
import datetime
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def commit():
    if os.environ.get("MEMBIT_COMMIT"):
        return os.environ["MEMBIT_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=20)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=20).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or fails to import on this machine
        return None


def environment():
    import torch

    env = {"torch": str(torch.__version__), "triton": _version("triton"), "transformers": _version("transformers"),
           "python": platform.python_version(), "cuda": torch.version.cuda,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
           "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count, total_bytes=props.total_memory)
        cslt = getattr(torch.backends, "cusparselt", None)
        try:
            env["cusparselt"] = cslt.version() if cslt is not None else None
        except Exception:
            env["cusparselt"] = None
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env
