"""The launcher's control channel, and what the harness does when it must stop.

A launcher (the extension, `membit profile`, the remote supervisor) passes one end of a pipe
as an inherited file descriptor and names it in MEMBIT_CONTROL_FD. The harness watches it
from a daemon thread:
  - a "c" byte asks for a cancel;
  - end of file means the launcher is gone (killed with SIGKILL, its ssh connection lost):
    nobody is left to stop this run, so it stops itself.
Either way the harness first asks politely (SIGTERM to itself, which raises Cancelled in the
script between two operations) and, if the script has not stopped after a grace period
(it ignores SIGTERM, or sits in a C call), writes the partial report from the watchdog
thread and ends its whole process group with SIGKILL.

The descriptor is duplicated to a non-inheritable one and the original closed, and the
variable is removed from the environment, so the script's own child processes never hold
the channel (an orphan holding it would hide the launcher's death).
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Callable, Optional

_FD_ENV = "MEMBIT_CONTROL_FD"
_GRACE_ENV = "MEMBIT_STOP_GRACE_S"


def grace_seconds() -> float:
    try:
        return max(0.5, float(os.environ.get(_GRACE_ENV, "5")))
    except ValueError:
        return 5.0


class Control:
    """Watches the control descriptor; calls on_stop(reason) once, from its own thread."""

    def __init__(self, fd: int, on_stop: Callable[[str], None]):
        self.fd = fd
        self.on_stop = on_stop
        self._thread = threading.Thread(target=self._watch, name="membit-control", daemon=True)

    @classmethod
    def from_env(cls, on_stop: Callable[[str], None]) -> Optional["Control"]:
        raw = os.environ.pop(_FD_ENV, None)
        if not raw:
            return None
        try:
            inherited = int(raw)
            # Only a pipe or socket is a channel: a stale variable must not take over a file.
            if not (stat.S_ISFIFO(os.fstat(inherited).st_mode) or stat.S_ISSOCK(os.fstat(inherited).st_mode)):
                return None
            fd = os.dup(inherited)  # os.dup makes a non-inheritable descriptor (PEP 446)
            os.close(inherited)
        except (ValueError, OSError):
            return None
        return cls(fd, on_stop)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 64)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                self.on_stop("the launcher went away (membit profile or the editor was killed, or the connection was lost)")
                return
            if b"c" in data:
                self.on_stop("cancelled")
                return
