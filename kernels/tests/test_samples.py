"""The bundled samples train on real data and print finite, falling losses."""

import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "samples")


def run_sample(name, *args, timeout=300):
    proc = subprocess.run(
        [sys.executable, os.path.join(SAMPLES, name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(m) for m in re.findall(r"^step \d+ loss ([-\d.eE+nainf]+)$", proc.stdout, re.M)]
    return proc.stdout, losses


def test_gpt_tiny_trains_on_stdlib_text():
    out, losses = run_sample(
        "gpt_tiny.py", "--steps", "30", "--batch-size", "8", "--seq-len", "64", "--n-layer", "2",
        "--n-embd", "64", "--n-head", "2", "--data-bytes", "300000", "--device", "cpu",
    )
    assert len(losses) == 30
    assert all(math.isfinite(x) for x in losses)
    # Byte-level text starts near ln(256) = 5.5; real text is learnable, so loss falls.
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    assert re.search(r"^val_loss [\d.]+", out, re.M)


def test_gpt_tiny_help_lists_the_common_flags():
    proc = subprocess.run([sys.executable, os.path.join(SAMPLES, "gpt_tiny.py"), "--help"], capture_output=True, text=True)
    for flag in ("--steps", "--batch-size", "--seq-len"):
        assert flag in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed (the digits data ships with it)")
def test_vit_digits_trains():
    out, losses = run_sample("vit_digits.py", "--steps", "40", "--batch-size", "32", "--device", "cpu")
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert re.search(r"^test_accuracy [\d.]+", out, re.M)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_bert_mlm_trains_from_config():
    _, losses = run_sample("bert_mlm.py", "--size", "tiny", "--steps", "3", "--batch-size", "2", "--seq-len", "64", "--device", "cpu")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_samples_without_optional_packages_say_what_to_install():
    # Run with a blocked import so the message path is tested on every machine.
    for name, pkg, block in (("vit_digits.py", "scikit-learn", "sklearn"), ("bert_mlm.py", "transformers", "transformers")):
        code = (
            "import sys, runpy; sys.modules[%r] = None; sys.argv = [%r, '--steps', '1'];"
            "runpy.run_path(%r, run_name='__main__')" % (block, name, os.path.join(SAMPLES, name))
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0
        assert "pip install %s" % pkg in proc.stderr
