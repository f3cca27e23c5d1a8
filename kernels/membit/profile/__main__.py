"""python -m membit.profile: see membit/profile/cli.py for the command line."""

import os
import sys
import threading

from . import early

# Before the command line's imports pull in torch: a SIGTERM from now on ends in a report.
early.install()

from .cli import main  # noqa: E402 - after the early handler, on purpose

code = main()
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
