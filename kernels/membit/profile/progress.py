"""Progress events on stderr: one line each, `@@membit ` then a compact JSON object.

When the launcher sets MEMBIT_PROGRESS_TOKEN (a random word per run), every line is
`@@membit TOKEN {json}` and the launcher believes only lines with its token: a script that
prints `@@membit ...` itself (or logs a harness's output it captured) cannot fake progress.
The variable is removed from the environment when this module loads, before the script
runs, so neither the script's os.environ nor the processes it starts carry it.

The user's own output passes through untouched. The one thing we add: if the user's last write
to stderr left a line unfinished (tqdm redraws its bar with \\r and no newline), an event line
starts with a newline, so that every event still begins a line of its own.
"""

from __future__ import annotations

import json
import os
import sys
import threading

PREFIX = "@@membit "
_TOKEN = os.environ.pop("MEMBIT_PROGRESS_TOKEN", None) or None
if _TOKEN is not None and not (8 <= len(_TOKEN) <= 64 and _TOKEN.isalnum() and _TOKEN.isascii()):
    _TOKEN = None


class _TrackingStderr:
    """sys.stderr as it was, plus a note of whether its last write ended a line."""

    def __init__(self, stream):
        object.__setattr__(self, "_stream", stream)
        object.__setattr__(self, "_at_line_start", True)

    def write(self, s):
        if s:
            object.__setattr__(self, "_at_line_start", s.endswith("\n"))
        return self._stream.write(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __setattr__(self, name, value):
        setattr(self._stream, name, value)


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled and os.environ.get("MEMBIT_PROGRESS", "1") != "0"
        self._lock = threading.Lock()
        self._proxy = None

    def install(self) -> None:
        if self.enabled and not isinstance(sys.stderr, _TrackingStderr) and sys.stderr is not None:
            self._proxy = _TrackingStderr(sys.stderr)
            sys.stderr = self._proxy

    def uninstall(self) -> None:
        if self._proxy is not None and sys.stderr is self._proxy:
            sys.stderr = self._proxy._stream
        self._proxy = None

    def emit(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        payload = {"event": event}
        payload.update(fields)
        line = PREFIX + (_TOKEN + " " if _TOKEN else "") + json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            lead = ""
            for stream in (sys.stderr, sys.__stderr__):
                try:
                    if stream is not None:
                        stream.flush()
                except Exception:  # noqa: BLE001 - a closed or odd stream must not stop the run
                    pass
            proxy = self._proxy
            if proxy is not None and not proxy._at_line_start:
                lead = "\n"
                object.__setattr__(proxy, "_at_line_start", True)
            data = (lead + line).encode("utf-8")
            # Straight to fd 2 in one write, so the line is never split by the user's buffering.
            try:
                while data:
                    n = os.write(2, data)
                    data = data[n:]
            except OSError:
                pass
