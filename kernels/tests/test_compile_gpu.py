"""torch.compile on CUDA through Inductor: what packed and recompute dropout save, and that the
backward applies the forward's mask. (Speed and peak: benchmarks/bench_compile.py.)"""

import pytest
import torch

try:
    import filelock  # noqa: F401  (torch.compile imports it; the offline torch wheel install skips it)
except ImportError as e:  # CI must not skip these: say what to install
    raise ImportError("torch.compile needs the filelock package: pip install filelock, or Debian's python3-filelock") from e

from membit.ops.compiled_dropout import compiled_dropout  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("mode,saved_bytes", [("packed", 64 * 1024 // 8), ("recompute", None)])
def test_inductor_saves_bits_or_only_a_seed_and_backward_matches(mode, saved_bytes):
    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    fn = torch.compile(lambda t: compiled_dropout(t, 0.25, mode))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fn(x)
    total = sum(t.numel() * t.element_size() for t in saved)
    if mode == "packed":
        assert total == saved_bytes and all(t.dtype == torch.uint8 for t in saved)
    else:
        assert total <= 16 and all(t.dtype == torch.int64 for t in saved)  # seed (and offset)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert torch.equal(x.grad, (kept.to(torch.bfloat16) * (1 / 0.75)).to(torch.bfloat16))
    assert abs((1 - kept.float().mean().item()) - 0.25) < 0.01
