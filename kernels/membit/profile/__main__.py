"""python -m membit.profile: see membit/profile/cli.py for the command line."""

from .early import run_main


def _load():
    from .cli import main

    return main


run_main(_load)
