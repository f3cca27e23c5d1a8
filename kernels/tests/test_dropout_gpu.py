"""CUDA-only checks of the Triton kernels: launch variants, huge tensors, graphs, compile.

The device-generic tests in test_dropout.py also run on CUDA; these need a GPU by nature.
"""

import os

import pytest
import torch

from membit.nn.functional import packed_dropout
from membit.ops import packed_dropout as pd
from membit.ops.utils import cdiv, triton_available

pytestmark = pytest.mark.gpu


def _needs_triton():
    if not triton_available():
        pytest.fail("CUDA is available but `import triton` fails: the kernels cannot be tested")


@pytest.mark.parametrize("cfg", [
    pd.KernelConfig(rows=128, num_warps=2), pd.KernelConfig(rows=1024, num_warps=8), pd.KernelConfig(rounds=7),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 4097, 3 * 5 * 7 * 11 * 13, 1 << 20])
def test_launch_variants_match_their_reference(cfg, dtype, n, seed):
    _needs_triton()
    x = torch.randn(n, device="cuda").to(dtype)
    p = 0.15
    y, words, s = pd.packed_dropout_forward(x, p, config=cfg)
    assert torch.equal(words, pd.keep_words_reference(s, n, p, cfg.rounds))
    keep = pd.unpack_mask(words, n)
    assert torch.equal(y, pd.apply_mask_reference(x, keep, p))
    g = torch.randn(n, device="cuda").to(dtype)
    for packed in (True, False):
        dx = pd.packed_dropout_backward(g, words, s, p, packed=packed, config=cfg)
        assert torch.equal(dx, pd.apply_mask_reference(g, keep, p))


def test_cpu_and_gpu_draw_the_same_mask_for_the_same_seed():
    _needs_triton()
    n, p = 100_003, 0.3
    seed = torch.tensor([0x1234_5678_9ABC_DEF], dtype=torch.int64)
    _, w_gpu, _ = pd.packed_dropout_forward(torch.ones(n, device="cuda"), p, seed=seed.cuda())
    _, w_cpu, _ = pd.packed_dropout_forward(torch.ones(n), p, seed=seed)
    assert torch.equal(w_gpu.cpu(), w_cpu)


def test_reference_path_on_cuda_equals_the_kernel(monkeypatch):
    _needs_triton()
    x = torch.randn(5000, device="cuda", dtype=torch.bfloat16)
    seed = pd.draw_seed("cuda")
    y_k, w_k, _ = pd.packed_dropout_forward(x, 0.2, seed=seed)
    monkeypatch.setenv("MEMBIT_DISABLE_TRITON", "1")
    y_r, w_r, _ = pd.packed_dropout_forward(x, 0.2, seed=seed)
    assert torch.equal(w_k, w_r) and torch.equal(y_k, y_r)


def test_more_than_2_pow_31_elements_index_in_int64():
    _needs_triton()
    free, _ = torch.cuda.mem_get_info()
    n = (1 << 31) + 37
    if free < 4 * n * 2 + (1 << 30):
        pytest.skip(f"needs ~{4 * n * 2 / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    x = torch.randn(n, device="cuda", dtype=torch.float16)
    p = 0.5
    y, words, s = pd.packed_dropout_forward(x, p)
    nw = cdiv(n, 16)
    first = nw - 4096
    ref = pd.keep_words_reference(s, n, p, words=(first, nw))
    assert torch.equal(words[first:], ref)
    keep_tail = pd.unpack_mask(words[first:], n - 16 * first)
    assert torch.equal(y[16 * first:], pd.apply_mask_reference(x[16 * first:], keep_tail, p))
    dx = pd.packed_dropout_backward(x, words, s, p)
    assert torch.equal(dx[16 * first:], y[16 * first:])
    del x, y, dx, words


def test_cuda_graph_replays_draw_fresh_masks():
    _needs_triton()
    x = torch.randn(1 << 16, device="cuda")
    static_out = None
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm up (compile) outside the capture
            packed_dropout(x, 0.5)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = packed_dropout(x, 0.5)
    graph.replay()
    a = static_out.clone()
    graph.replay()
    b = static_out.clone()
    assert not torch.equal(a, b)
    for out in (a, b):
        assert abs((out == 0).float().mean().item() - 0.5) < 0.02


def test_inductor_compiles_through_the_op(monkeypatch):
    """The custom-op formulation under Inductor (MEMBIT_COMPILE_DROPOUT=op): the op's own
    kernels draw the same mask compiled and eager. The default formulation under compile
    draws its mask with Inductor's Philox instead (test_compile_gpu.py checks that one)."""
    _needs_triton()
    if not pd.uses_custom_op():
        pytest.skip("torch.library.custom_op needs torch >= 2.4")
    import torch._dynamo as dynamo

    monkeypatch.setenv("MEMBIT_COMPILE_DROPOUT", "op")

    lin = torch.nn.Linear(256, 256).cuda()

    def f(x):
        return packed_dropout(torch.relu(lin(x)), 0.2, mode="recompute").square().sum()

    x = torch.randn(64, 256, device="cuda")
    dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    torch.manual_seed(9)
    out_c = compiled(x)
    (gc,) = torch.autograd.grad(out_c, lin.weight)
    torch.manual_seed(9)
    out_e = f(x)
    (ge,) = torch.autograd.grad(out_e, lin.weight)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-3)


def test_autocast_bf16_on_cuda():
    _needs_triton()
    lin = torch.nn.Linear(64, 64).cuda()
    x = torch.randn(32, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = lin(x)
        y = packed_dropout(h, 0.1)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_no_env_override_left_over():
    # The other tests must see the kernels, not the forced reference path.
    assert os.environ.get("MEMBIT_DISABLE_TRITON", "") in ("", "0")
