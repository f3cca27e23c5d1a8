"""python -m membit.predict: see membit/predict/cli.py for the command line."""

from ..profile.early import run_main


def _load():
    from .cli import main

    return main


run_main(_load)
