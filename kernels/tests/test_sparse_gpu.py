"""membit.sparse on CUDA: the Triton kernels against their references (bit for bit), and
SparseLinear24's cuSPARSELt path against a dense masked matmul, over odd and power-of-two
shapes in bf16 and fp16."""

import copy
import os
import sys
import warnings

import pytest
import torch
from torch import nn

from membit.ops import sparse24
from membit.sparse import SparseLinear24, cusparselt, densify
from membit.sparse import linear as sparse_linear

from test_sparse import KNOWN_WRONG, _OpLog, check_24

pytestmark = pytest.mark.gpu

DTYPES = [torch.bfloat16, torch.float16]
# Relative Frobenius error of a 16-bit product against float32 maths on the same 16-bit operands:
# one rounding of the output (2^-8 bf16, 2^-11 fp16) plus accumulation-order differences.
TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
# The dtypes that take the cuSPARSELt path (fp16 runs masked dense, see cusparselt.FP16_REASON).
SPARSE = [torch.bfloat16]


@pytest.fixture(autouse=True)
def _fresh_warnings():
    with warnings.catch_warnings():
        # A fallback to masked dense on the GPU machine is a failure, not a warning.
        warnings.filterwarnings("error", message="membit SparseLinear24 runs the masked dense fallback")
        yield


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", [(4, 4), (1, 7), (13, 4), (17, 31), (64, 96), (257, 130), (1024, 4096), (3072, 768)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mask_kernel_equals_reference(shape, dtype):
    torch.manual_seed(0)
    w = torch.randn(*shape, device="cuda").to(dtype)
    got = sparse24.transposable_mask(w)
    want = sparse24.transposable_mask_reference(w)
    assert got.dtype == torch.bool and torch.equal(got, want)
    check_24(got)
    # Non-contiguous rows (a column slice) and all-zero blocks (ties: first pattern).
    wide = torch.randn(shape[0], shape[1] + 8, device="cuda").to(dtype)[:, 3:3 + shape[1]]
    assert torch.equal(sparse24.transposable_mask(wide), sparse24.transposable_mask_reference(wide))
    z = torch.zeros(*shape, device="cuda", dtype=dtype)
    assert torch.equal(sparse24.transposable_mask(z), sparse24.transposable_mask_reference(z))


@pytest.mark.parametrize("shape,pad", [((64, 128), (64, 128)), ((100, 300), (128, 320)), ((3, 5), (64, 64)), ((1024, 4096), (1024, 4096))])
@pytest.mark.parametrize("src,dst", [(torch.float32, torch.bfloat16), (torch.float32, torch.float16), (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)])
def test_masked_weights_kernel_equals_reference(shape, pad, src, dst):
    torch.manual_seed(1)
    w = torch.randn(*shape, device="cuda").to(src)
    m = sparse24.transposable_mask(w)
    # Poison the allocator's free blocks of this size, so an unwritten element shows as NaN.
    junk = [torch.full(pad, float("nan"), device="cuda", dtype=dst) for _ in range(2)]
    del junk
    got, got_t = sparse24.masked_weights(w, m, dst, *pad)
    want, want_t = sparse24.masked_weights_reference(w, m, dst, *pad)
    assert got.shape == pad and got_t.shape == pad[::-1] and got.dtype == dst
    assert torch.equal(got, want) and torch.equal(got_t, want_t)


@pytest.mark.parametrize("T,N", [(64, 64), (77, 100), (4096, 1024), (1000, 3072)])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float32])
def test_mvue_kernel_equals_reference(T, N, dtype):
    torch.manual_seed(2)
    g = torch.randn(T, N, device="cuda").to(dtype)
    Np, Tp = cusparselt.padded(N), cusparselt.padded(T)
    u = sparse24.mvue24_uniforms(Tp, Np, "cuda")
    got = sparse24.mvue24(g, u, Np, Tp)
    assert torch.equal(got, sparse24.mvue24_reference(g, u, Np, Tp))
    assert bool(((got != 0).reshape(Np, -1, 2).sum(-1) <= 1).all())


def test_cusparselt_numeric_check_passes():
    ok, why = cusparselt.check(torch.device("cuda"), torch.bfloat16)
    major, _ = torch.cuda.get_device_capability()
    if major >= 8:
        assert ok, why
    else:
        assert not ok and "sparse tensor cores" in why


def test_fp16_runs_masked_dense_with_the_reason():
    ok, why = cusparselt.available(torch.device("cuda"), torch.float16)
    assert not ok and why == cusparselt.FP16_REASON
    torch.manual_seed(9)
    layer = SparseLinear24(128, 256, device="cuda", dtype=torch.float16)
    x = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    sparse_linear._WARNED.clear()
    with pytest.warns(RuntimeWarning, match="fp16 2:4 products are off"):  # records instead of the fixture's error
        y = layer(x)
    assert layer.last_backend == "masked-dense"
    exact = x.float() @ (layer.weight.float() * layer.mask).t() + layer.bias.float()
    assert rel(y, exact) < TOL[torch.float16]


def _pair(d_in, d_out, dtype, **kw):
    torch.manual_seed(3)
    sp = SparseLinear24(d_in, d_out, device="cuda", dtype=dtype, decay=0.0, **kw)
    ref = SparseLinear24(d_in, d_out, device="cuda", dtype=dtype, decay=0.0, backend="masked-dense", **kw)
    ref.load_state_dict(sp.state_dict())
    return sp, ref


@pytest.mark.parametrize("tokens,d_in,d_out", [(64, 128, 256), (77, 100, 300), (3, 40, 24), (1000, 768, 3072),
                                                (4096, 1024, 4096), (4097, 3072, 768), (512, 4096, 11008)])
@pytest.mark.parametrize("dtype", SPARSE)
def test_cusparselt_forward_and_gradients_match_masked_dense(tokens, d_in, d_out, dtype):
    sp, ref = _pair(d_in, d_out, dtype)
    x = torch.randn(tokens, d_in, device="cuda", dtype=dtype, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    y, yr = sp(x), ref(xr)
    assert sp.last_backend == "cusparselt" and ref.last_backend == "masked-dense"
    # float32 maths on the same 16-bit operands: the exact masked product.
    wm = (sp.weight.detach().float() * sp.mask)
    exact = x.detach().float() @ wm.t() + sp.bias.detach().float()
    assert rel(y, exact) < TOL[dtype] and rel(yr, exact) < TOL[dtype]
    g = torch.randn_like(y)
    y.backward(g)
    yr.backward(g)
    assert rel(x.grad, g.float() @ wm) < TOL[dtype]
    assert rel(sp.weight.grad, g.float().t() @ x.detach().float()) < TOL[dtype]
    assert rel(sp.bias.grad, g.float().sum(0)) < TOL[dtype]
    assert rel(x.grad, xr.grad) < TOL[dtype] and rel(sp.weight.grad, ref.weight.grad) < TOL[dtype]


def test_autocast_fp32_master_weights_take_the_sparse_path():
    torch.manual_seed(4)
    layer = SparseLinear24(512, 2048, device="cuda", decay=1e-3)
    x = torch.randn(8, 64, 512, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x)
    assert layer.last_backend == "cusparselt" and y.dtype == torch.bfloat16 and y.shape == (8, 64, 2048)
    y.float().square().mean().backward()
    assert x.grad.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    wm = layer.weight.detach().bfloat16().float() * layer.mask
    exact = x.detach().bfloat16().float() @ wm.t() + layer.bias.detach().bfloat16().float()
    assert rel(y, exact) < 1e-2
    # Masked decay lands on the pruned entries only.
    g = layer.weight.grad
    layer.weight.grad = None
    layer.decay = 0.0  # read at forward time
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y2 = layer(x)
    y2.float().square().mean().backward()
    diff = g - layer.weight.grad
    torch.testing.assert_close(diff[~layer.mask], 1e-3 * layer.weight.detach()[~layer.mask], rtol=1e-2, atol=1e-6)
    assert bool((diff[layer.mask].abs() < 1e-5).all())


@pytest.mark.parametrize("dtype", SPARSE)
def test_mvue_on_cusparselt_is_unbiased(dtype):
    torch.manual_seed(5)
    layer = SparseLinear24(256, 512, device="cuda", dtype=dtype, decay=0.0, mvue=True)
    x = torch.randn(384, 256, device="cuda", dtype=dtype)
    g = torch.randn(384, 512, device="cuda", dtype=dtype)
    exact = g.float().t() @ x.float()
    total = torch.zeros_like(exact)
    draws = 200
    for _ in range(draws):
        layer.weight.grad = None
        layer(x).backward(g)
        total += layer.weight.grad.float()
    assert layer.last_backend == "cusparselt"
    one = rel(layer.weight.grad, exact)
    avg = rel(total / draws, exact)
    # One draw is a noisy estimate; averaging shrinks its error like 1/sqrt(draws).
    assert one > 0.05 and avg < 2.5 * one / draws ** 0.5 + TOL[dtype], (one, avg)


def test_training_uses_cusparselt_and_never_runtime_pruning():
    torch.manual_seed(6)
    layer = SparseLinear24(256, 1024, device="cuda", dtype=torch.bfloat16, refresh_every=2)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    log = _OpLog()
    with log:
        for _ in range(4):
            opt.zero_grad()
            layer(torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)).float().square().mean().backward()
            opt.step()
    assert {"_cslt_compress", "_cslt_sparse_mm"} <= log.ops, log.ops
    assert not (log.ops & KNOWN_WRONG), log.ops & KNOWN_WRONG
    assert len(layer.flip_rates) == 2
    check_24(layer.mask)
    # The per-shape algorithm search ran once per problem, not per call.
    keys = cusparselt.algorithm_cache()
    for _ in range(3):
        layer(torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)).sum().backward()
    assert cusparselt.algorithm_cache() == keys


def test_a_corrupted_compression_is_caught_by_the_check(monkeypatch):
    # The guard that keeps a broken sparse path out of training: compress something that is
    # not the masked weight (its rows shifted by one: still 2:4, wrong values) and check() must refuse.
    cusparselt.clear_caches()
    real = cusparselt.compress
    monkeypatch.setattr(cusparselt, "compress", lambda a: real(a.roll(1, dims=0).contiguous()))
    ok, why = cusparselt.check(torch.device("cuda"), torch.bfloat16)
    assert not ok and "check failed" in why
    monkeypatch.setattr(cusparselt, "compress", real)
    cusparselt.clear_caches()
    assert cusparselt.check(torch.device("cuda"), torch.bfloat16)[0]


def test_densify_on_cuda_is_the_dense_linear():
    torch.manual_seed(7)
    model = nn.Sequential(SparseLinear24(128, 512, device="cuda", dtype=torch.bfloat16), nn.GELU(),
                          SparseLinear24(512, 128, device="cuda", dtype=torch.bfloat16))
    assert densify(model) == 2
    ref = nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128)).cuda().bfloat16()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(model(x), ref(x))


def test_gpt_sample_trains_with_sparse_ffns_under_autocast():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "samples"))
    import gpt_tiny
    import membit

    torch.manual_seed(8)
    cfg = gpt_tiny.GPTConfig(block_size=64, vocab_size=256, n_layer=2, n_head=4, n_embd=256, dropout=0.0)
    model = gpt_tiny.GPT(cfg).cuda()
    dense = copy.deepcopy(model)
    rec = membit.patch(model, dropout=None, ffn="2:4")
    assert len(rec.replaced) == 2 * cfg.n_layer
    data = torch.frombuffer(bytearray(gpt_tiny.stdlib_text(400_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(0)
    losses = {}
    for name, m in (("sparse", model), ("dense", dense)):
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
        gen.manual_seed(0)
        out = []
        for _ in range(60):
            x, y = gpt_tiny.get_batch(data, 16, cfg.block_size, gen, "cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = m(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[name] = out
    assert model.h[0].mlp.c_fc.last_backend == "cusparselt"
    for out in losses.values():
        assert all(map(lambda v: v == v, out)) and sum(out[-10:]) / 10 < sum(out[:10]) / 10 - 1.0
    assert abs(sum(losses["sparse"][-10:]) - sum(losses["dense"][-10:])) / 10 < 0.5


def test_strided_inputs_and_expanded_gradients():
    # A sliced input and the expanded gradient of .sum() are not contiguous; cuSPARSELt must
    # never read them as transposes.
    sp, ref = _pair(256, 512, torch.bfloat16)
    big = torch.randn(96, 300, device="cuda", dtype=torch.bfloat16)
    x = big[:, 20:276].detach().requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    assert not x.is_contiguous()
    y, yr = sp(x), ref(xr)
    assert sp.last_backend == "cusparselt"
    assert rel(y, yr) < TOL[torch.bfloat16]
    y.sum().backward()
    yr.sum().backward()
    assert rel(x.grad, xr.grad) < TOL[torch.bfloat16]
    assert rel(sp.weight.grad, ref.weight.grad) < TOL[torch.bfloat16]
