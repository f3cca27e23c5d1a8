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
    kernels draw the same mask compiled and eager. The fused formulation under compile
    (MEMBIT_COMPILE_DROPOUT=fused) draws its mask with Inductor's Philox instead
    (test_compile_gpu.py checks that one); the default is torch's own dropout."""
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["packed", "recompute"])
def test_direct_launch_on_misaligned_and_odd_inputs_matches_the_reference(dtype, mode):
    # The direct launch reuses a binary Triton compiled for one specialisation: after an
    # aligned, multiple-of-16 call has cached one, misaligned views and odd sizes must get
    # their own (a wrong reuse would read out of bounds or vectorise a misaligned load).
    _needs_triton()
    p = 0.3
    leaf = torch.randn(1 << 16, device="cuda").to(dtype).requires_grad_()
    for lo, hi in ((0, 1 << 16), (1, 1 << 16), (3, 4100), (0, 1), (5, 21), (16, 4112)):
        x = leaf[lo:hi]  # contiguous, so the op launches on the view itself, offset and all
        torch.manual_seed(lo + hi)
        seed = pd.draw_seed("cuda")
        torch.manual_seed(lo + hi)
        y = packed_dropout(x, p, mode=mode)
        keep = pd.unpack_mask(pd.keep_words_reference(seed, x.numel(), p), x.numel())
        assert torch.equal(y, pd.apply_mask_reference(x.detach(), keep, p)), (lo, hi)
        g = torch.randn_like(y)
        (gl,) = torch.autograd.grad(y, leaf, g)
        assert torch.equal(gl[lo:hi], pd.apply_mask_reference(g, keep, p)), (lo, hi)


def test_recompute_saves_no_tensor_on_cuda_and_packed_saves_the_words():
    _needs_triton()
    x = torch.randn(4096, 33, device="cuda", requires_grad=True)
    for mode, nbytes in (("recompute", 0), ("packed", 2 * cdiv(x.numel(), 16))):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            packed_dropout(x, 0.2, mode=mode)
        assert sum(t.numel() * t.element_size() for t in saved) == nbytes


def test_launch_hooks_see_every_launch():
    # A profiler's Triton launch hook must see the kernels even though they are launched
    # directly once compiled.
    _needs_triton()
    if not pd._DIRECT:
        pytest.skip("this Triton takes its own launch path: nothing is bypassed")
    from triton import knobs

    names = []

    def hook(metadata):
        names.append(metadata.get()["name"] if hasattr(metadata, "get") else metadata["name"])

    x = torch.randn(1000, device="cuda", requires_grad=True)
    packed_dropout(x, 0.5).sum().backward()  # compiled and cached before the hook is set
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        packed_dropout(x, 0.5).sum().backward()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert any("fwd" in n for n in names) and any("bwd" in n for n in names)


def test_the_generator_advances_like_a_torch_random_op():
    # One dropout call takes one key and moves the CUDA generator on, so the next call (and
    # the next torch random op) gets fresh numbers, and manual_seed reproduces the sequence.
    _needs_triton()
    x = torch.ones(10_000, device="cuda")
    torch.manual_seed(21)
    a, b = packed_dropout(x, 0.5), packed_dropout(x, 0.5)
    r1 = torch.rand(4, device="cuda")
    torch.manual_seed(21)
    a2, b2 = packed_dropout(x, 0.5), packed_dropout(x, 0.5)
    assert not torch.equal(a, b)
    assert torch.equal(a, a2) and torch.equal(b, b2) and torch.equal(r1, torch.rand(4, device="cuda"))


def test_no_env_override_left_over():
    # The other tests must see the kernels, not the forced reference path.
    assert os.environ.get("MEMBIT_DISABLE_TRITON", "") in ("", "0")
