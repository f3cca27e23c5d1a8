"""`python -m membit.capabilities` against the real torch of this interpreter."""

import inspect
import json
import os
import subprocess
import sys

import torch

from membit import capabilities

KERNELS = os.path.join(os.path.dirname(__file__), "..")
FEATURES = [
    "sdpa", "sdpa-scale", "is-causal", "autocast-bf16-cuda", "autocast-bf16-cpu", "cuda", "cuda-bf16",
    "checkpoint-non-reentrant", "adamw-fused", "adamw-foreach",
]


def run_module(*args, python=sys.executable, env_extra=None):
    env = {**os.environ, "PYTHONPATH": KERNELS, **(env_extra or {})}
    return subprocess.run([python, "-m", "membit.capabilities", *args], capture_output=True, text=True, timeout=120, env=env)


def test_prints_one_json_object_with_every_feature():
    proc = run_module()
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "membit.capabilities/1"
    assert doc["torch"] == str(torch.__version__)
    assert list(doc["features"]) == FEATURES
    assert all(isinstance(v, bool) for v in doc["features"].values())


def test_features_agree_with_what_this_torch_does():
    f = capabilities.detect()["features"]
    F = torch.nn.functional
    # Independent checks, each by use rather than by version.
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    assert f["sdpa"] == has_sdpa
    if has_sdpa:
        q = torch.randn(2, 3, 7, 4)
        probs = torch.softmax((q @ q.transpose(-2, -1)) / 2.0, dim=-1)
        assert torch.allclose(F.scaled_dot_product_attention(q, q, q), probs @ q, atol=1e-5)
        assert f["is-causal"] is True
    else:
        assert f["is-causal"] is False and f["sdpa-scale"] is False
    assert f["cuda"] == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert f["cuda-bf16"] is False
    has_fused = "fused" in inspect.signature(torch.optim.AdamW).parameters
    assert f["adamw-fused"] == has_fused
    assert f["adamw-foreach"] == ("foreach" in inspect.signature(torch.optim.AdamW).parameters)
    if torch.version.cuda is None:
        assert f["autocast-bf16-cuda"] is False, "a CPU-only build has no CUDA autocast"
    if hasattr(torch, "autocast"):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            cpu_bf16 = torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
        assert f["autocast-bf16-cpu"] == cpu_bf16


def test_non_reentrant_checkpoint_is_tried_not_assumed():
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(5, requires_grad=True)
    try:
        checkpoint(torch.sin, x, use_reentrant=False).sum().backward()
        works = torch.allclose(x.grad, torch.cos(x.detach()))
    except TypeError:
        works = False
    assert capabilities.detect()["features"]["checkpoint-non-reentrant"] == works


def test_a_probe_that_fails_reports_the_feature_absent(monkeypatch):
    def broken():
        raise RuntimeError("not in this build")

    monkeypatch.setitem(capabilities.FEATURES, "sdpa", broken)
    assert capabilities.detect()["features"]["sdpa"] is False


def test_without_torch_it_says_so_and_exits_1(tmp_path):
    # A `torch` that cannot be imported, first on the path: the probe must not crash.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    proc = run_module(env_extra={"PYTHONPATH": os.pathsep.join([str(tmp_path), KERNELS])})
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["torch"] is None and doc["features"] == {}
    assert "cannot import torch" in doc["error"] and "no torch here" in doc["error"]
