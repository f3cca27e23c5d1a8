"""SIGTERM that arrives before the harness is ready.

Starting a rank means importing torch: seconds, more on a loaded node. A launcher that stops
the job in that window (torchrun after another rank failed, scancel, a cancel from the editor)
would otherwise kill the rank with Python's default action, before it has written a report.
This handler is installed before anything heavy is imported and only remembers the signal; the
harness then ends the run as cancelled, with its report, instead of starting the script.
Imports nothing beyond the standard library, on purpose; `run_main` is the entry of both
`python -m` commands that run a script under the harness.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

_received: list = []


def _remember(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _received.append(signum)


def install() -> None:
    """Remember SIGTERM from now on (signal handlers can only be set from the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _remember)


def pending() -> bool:
    """Whether SIGTERM arrived while only this handler was installed."""
    return bool(_received)


def run_main(load_main: Callable[[], Callable[[], int]]) -> None:
    """The body of `python -m membit.profile` and `python -m membit.predict`: the early handler
    first, then the command line (`load_main` imports it, which pulls in torch), then exit."""
    install()
    code = load_main()()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        # The script was stopped mid-run and left threads that would keep the process alive
        # (its report is already written): leave now.
        os._exit(code)
    sys.exit(code)
