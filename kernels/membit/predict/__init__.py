"""Predicts a training step's GPU memory without a GPU: `python -m membit.predict` (see cli.py)."""
