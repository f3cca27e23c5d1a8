import os
import sys

import pytest

# Tests run against the source tree without installing it.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402  (must fail loudly if torch is missing: CI must not skip)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

HAS_SDPA = hasattr(torch.nn.functional, "scaled_dot_product_attention")


def cpu_bf16_autocast() -> bool:
    """Whether this torch runs CPU matmuls in bf16 under autocast (membit.capabilities' own check)."""
    from membit.capabilities import autocast_bf16_cpu

    try:
        return bool(autocast_bf16_cpu())
    except (RuntimeError, TypeError, AttributeError):
        return False


def pytest_collection_modifyitems(config, items):
    # GPU tests are skipped for exactly one reason: no CUDA device.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed():
    torch.manual_seed(1234)
    return 1234
