"""SIGTERM that arrives before the harness is ready.

Starting a rank means importing torch: seconds, more on a loaded node. A launcher that stops
the job in that window (torchrun after another rank failed, scancel, a cancel from the editor)
would otherwise kill the rank with Python's default action, before it has written a report.
This handler is installed before anything heavy is imported and only remembers the signal; the
harness then ends the run as cancelled, with its report, instead of starting the script.
Imports nothing beyond the standard library, on purpose.
"""

from __future__ import annotations

import signal
import threading

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
