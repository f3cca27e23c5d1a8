"""python -m membit.predict: see membit/predict/cli.py for the command line."""

import os
import sys
import threading

from .cli import main

code = main()
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except Exception:  # noqa: BLE001
        pass
if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
    os._exit(code)
sys.exit(code)
