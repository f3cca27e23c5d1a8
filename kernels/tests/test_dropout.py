"""Packed / recompute dropout: kernel vs reference, masks, gradients, statistics, memory.

Every test that takes `device` runs on the CPU (the reference path) and, where CUDA is
available, on the GPU (the Triton kernels), where the reference computed on the same device
is the oracle: the mask is a pure function of (seed, index, p), so kernel and reference must
agree bit for bit.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from membit.nn import PackedDropout
from membit.nn.functional import packed_dropout
from membit.ops import packed_dropout as pd
from membit.ops.utils import cdiv, has_custom_op, storage_key

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
MODES = ["packed", "recompute"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1,), (7,), (16,), (1023,), (4097,), (3, 5, 7), (64, 96), (2, 3, 16, 17)]


def _seed_of_next_call(device, s):
    """The Philox key the next dropout call will draw after torch.manual_seed(s)."""
    torch.manual_seed(s)
    return pd.draw_seed(device)


def _keep(seed, n, p):
    return pd.unpack_mask(pd.keep_words_reference(seed, n, p), n)


# ---------------------------------------------------------------------------------------------
# The random numbers and the mask format
# ---------------------------------------------------------------------------------------------

# Random123's published known-answer vectors for Philox4x32-10.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_philox_reference_matches_random123(device, ctr, key, expected):
    t = [torch.tensor([v], dtype=torch.int64, device=device) for v in ctr + key]
    out = pd.philox4x32(*t)
    assert tuple(int(o.item()) for o in out) == expected


def test_effective_p_is_within_2_pow_minus_17():
    for i in range(0, 1001):
        p = i / 1000
        assert abs(pd.effective_p(p) - p) <= 2.0 ** -17 + 1e-15
    assert pd.effective_p(0.0) == 0.0 and pd.effective_p(1.0) == 1.0
    assert pd.effective_p(0.1) == 6554 / 65536


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 105, 1023, 4097])
def test_pack_unpack_round_trip_is_bit_exact(n, seed):
    keep = torch.rand(n) < 0.5
    words = pd.pack_mask(keep)
    assert words.dtype == torch.int16 and words.numel() == cdiv(n, 16)
    assert torch.equal(pd.unpack_mask(words, n), keep)
    # Padding bits are zero, so a word is determined by the n real elements alone.
    full = pd.pack_mask(torch.ones(n, dtype=torch.bool))
    last = int(full[-1].item()) & 0xFFFF
    assert last == (1 << (n - 16 * (full.numel() - 1))) - 1


def test_pack_uses_bit_j_for_element_j():
    keep = torch.zeros(32, dtype=torch.bool)
    keep[[0, 3, 15, 16, 31]] = True
    words = pd.pack_mask(keep).to(torch.int32) & 0xFFFF
    assert words.tolist() == [(1 << 0) | (1 << 3) | (1 << 15), (1 << 0) | (1 << 15)]


# ---------------------------------------------------------------------------------------------
# Forward / backward against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(device, dtype, shape, seed):
    p = 0.3
    x = torch.randn(shape, device=device).to(dtype)
    n = x.numel()
    y, words, s = pd.packed_dropout_forward(x, p, store_mask=True)
    # The mask words are exactly the reference's for this seed (kernel Philox == reference Philox)...
    assert torch.equal(words, pd.keep_words_reference(s, n, p))
    # ...and the output is the reference applied with the kernel's own unpacked mask.
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.equal(y, pd.apply_mask_reference(x, pd.unpack_mask(words, n), p))
    # Recompute mode writes no mask and the same output for the same seed.
    y2, words2, _ = pd.packed_dropout_forward(x, p, store_mask=False, seed=s)
    assert words2.numel() == 0 and torch.equal(y2, y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1,), (7,), (1023,), (4097,), (3, 5, 7)])
def test_backward_uses_exactly_the_forward_mask(device, dtype, mode, shape):
    p = 0.4
    x = torch.randn(shape, device=device).to(dtype).requires_grad_()
    s = _seed_of_next_call(device, 99)
    torch.manual_seed(99)
    y = packed_dropout(x, p, mode=mode)
    keep = _keep(s, x.numel(), p).view(shape)
    assert torch.equal(y, pd.apply_mask_reference(x.detach(), keep, p))
    g = torch.randn(shape, device=device).to(dtype)
    y.backward(g)
    assert torch.equal(x.grad, pd.apply_mask_reference(g, keep, p))
    # Zeros of y and of the gradient coincide with the dropped elements.
    assert torch.equal(y.detach() != 0, keep) and torch.equal(x.grad != 0, keep & (g != 0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_inputs_and_grads(device, mode):
    p = 0.25
    leaf = torch.randn(33, 40, device=device, requires_grad=True)
    for x in (leaf.t(), leaf[:, ::3], leaf.unsqueeze(0).expand(2, 33, 40)):
        assert not x.is_contiguous()
        s = _seed_of_next_call(device, 5)
        torch.manual_seed(5)
        y = packed_dropout(x, p, mode=mode)
        # The mask follows the logical (row-major) order of x, whatever its strides.
        keep = _keep(s, x.numel(), p).view(x.shape)
        assert torch.equal(y, pd.apply_mask_reference(x.detach().contiguous(), keep, p))
        g = torch.randn(x.shape[::-1], device=device).transpose(0, -1)
        assert not g.is_contiguous()
        (gx,) = torch.autograd.grad(y, x, g)
        assert torch.equal(gx, pd.apply_mask_reference(g.contiguous(), keep, p))


@pytest.mark.parametrize("device", DEVICES)
def test_recompute_and_packed_give_identical_results(device):
    x = torch.randn(4097, device=device, requires_grad=True)
    g = torch.randn(4097, device=device)
    grads, outs = [], []
    for mode in MODES:
        torch.manual_seed(3)
        y = packed_dropout(x, 0.5, mode=mode)
        (gx,) = torch.autograd.grad(y, x, g)
        outs.append(y)
        grads.append(gx)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------
# Statistics of the mask
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1 / 3])
def test_keep_rate_is_1_minus_effective_p(device, p, seed):
    n = (1 << 24) if device == "cuda" else (1 << 20)
    _, words, _ = pd.packed_dropout_forward(torch.ones(n, device=device), p)
    keep = pd.unpack_mask(words, n).view(-1, 16).to(torch.float64)
    q = 1.0 - pd.effective_p(p)
    assert abs(pd.effective_p(p) - p) <= 2.0 ** -17
    # Overall, and per bit position in the word (catches a mis-wired random-number slice).
    z = (keep.mean().item() - q) / math.sqrt(q * (1 - q) / n)
    assert abs(z) < 5, f"keep rate z-score {z:.2f}"
    lane = keep.mean(0)
    z_lane = (lane - q) / math.sqrt(q * (1 - q) / (n // 16))
    assert z_lane.abs().max().item() < 5, f"per-lane z-scores {z_lane.tolist()}"
    # Neighbours are independent: P(both kept) = q^2, within and across words.
    flat = keep.reshape(-1)
    both = (flat[:-1] * flat[1:]).mean().item()
    var = q * q * (1 - q * q) * (1 + 2 * q / (1 + q)) / (n - 1)  # overlapping pairs: inflated variance
    assert abs(both - q * q) < 5 * math.sqrt(var), f"pair rate {both} vs {q * q}"


@pytest.mark.parametrize("device", DEVICES)
def test_successive_calls_draw_independent_masks(device, seed):
    n, p = 1 << 18, 0.5
    a = pd.unpack_mask(pd.packed_dropout_forward(torch.ones(n, device=device), p)[1], n).double()
    b = pd.unpack_mask(pd.packed_dropout_forward(torch.ones(n, device=device), p)[1], n).double()
    agree = (a == b).double().mean().item()
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / n)


# ---------------------------------------------------------------------------------------------
# Semantics of the drop-in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_eval_p0_identity_and_p1_zeros(device, mode):
    x = torch.randn(5, 7, device=device, requires_grad=True)
    assert packed_dropout(x, 0.5, training=False, mode=mode) is x
    assert packed_dropout(x, 0.0, mode=mode) is x
    m = PackedDropout(0.5, mode=mode).eval()
    assert m(x) is x
    y = packed_dropout(x, 1.0, mode=mode)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.empty(0, 3, device=device)
    assert packed_dropout(empty, 0.5, mode=mode) is empty


@pytest.mark.parametrize("device", DEVICES)
def test_manual_seed_reproduces_and_seeds_differ(device):
    x = torch.randn(1000, device=device)
    torch.manual_seed(11)
    a = packed_dropout(x, 0.5)
    torch.manual_seed(11)
    b = packed_dropout(x, 0.5)
    torch.manual_seed(12)
    c = packed_dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_activation_checkpointing_regenerates_the_same_mask(device, mode):
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), PackedDropout(0.3, mode=mode), nn.Linear(64, 32)).to(device)
    x = torch.randn(16, 32, device=device)

    def run(use_ckpt):
        net.zero_grad()
        torch.manual_seed(42)
        out = checkpoint(net, x, use_reentrant=False) if use_ckpt else net(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in net.parameters()]

    out_a, grads_a = run(False)
    out_b, grads_b = run(True)
    assert torch.equal(out_a, out_b)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_module_is_a_drop_in_for_nn_dropout():
    for p, inplace in [(0.5, False), (0.1, True)]:
        ours, theirs = PackedDropout(p, inplace), nn.Dropout(p, inplace)
        assert repr(ours) == repr(theirs).replace("Dropout", "PackedDropout")
        assert isinstance(ours, nn.Dropout)
        assert list(ours.parameters()) == [] and list(ours.buffers()) == [] and ours.state_dict() == {}
    assert repr(PackedDropout(0.2, mode="recompute")) == "PackedDropout(p=0.2, inplace=False, mode='recompute')"
    assert repr(PackedDropout()) == repr(nn.Dropout()).replace("Dropout", "PackedDropout")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            PackedDropout(bad)
        with pytest.raises(ValueError):
            packed_dropout(torch.ones(3), bad)
    with pytest.raises(ValueError):
        PackedDropout(0.5, mode="bits")
    with pytest.raises(TypeError):
        packed_dropout(torch.ones(3, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("device", DEVICES)
def test_inplace_matches_out_of_place_and_backprops(device):
    a = torch.randn(257, device=device, requires_grad=True)
    torch.manual_seed(8)
    ref = packed_dropout(a * 2, 0.3)
    (g_ref,) = torch.autograd.grad(ref.sum(), a)
    torch.manual_seed(8)
    b = a * 2
    out = packed_dropout(b, 0.3, inplace=True)
    assert out is b and torch.equal(out, ref)
    (g,) = torch.autograd.grad(out.sum(), a)
    assert torch.equal(g, g_ref)
    with torch.no_grad():
        c = torch.randn(100, device=device)
        assert PackedDropout(0.5, inplace=True)(c) is c


def test_cpu_autocast_bf16():
    lin = nn.Linear(16, 16)
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = packed_dropout(lin(x), 0.2)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


# ---------------------------------------------------------------------------------------------
# Gradients in float64
# ---------------------------------------------------------------------------------------------


def _fixed_seed(fn):
    # gradcheck calls the function many times: pin the seed so every call draws the same mask.
    def wrapped(x):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2024)
            return fn(x)

    return wrapped


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["op", "function"])
def test_gradcheck_and_gradgradcheck_float64(mode, impl):
    x = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    if impl == "op":
        if not pd.uses_custom_op():
            pytest.skip("torch.library.custom_op needs torch >= 2.4; this torch has only the Function")
        fn = _fixed_seed(lambda t: pd._op(t, 0.35, mode == "packed")[0])
    else:
        fn = _fixed_seed(lambda t: pd.PackedDropoutFunction.apply(t, 0.35, mode == "packed"))
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_function_and_custom_op_paths_agree(mode):
    if not pd.uses_custom_op():
        pytest.skip("torch.library.custom_op needs torch >= 2.4; this torch has only the Function")
    x = torch.randn(1023, requires_grad=True)
    g = torch.randn(1023)
    torch.manual_seed(1)
    a = pd.PackedDropoutFunction.apply(x, 0.2, mode == "packed")
    (ga,) = torch.autograd.grad(a, x, g)
    torch.manual_seed(1)
    b = pd._op(x, 0.2, mode == "packed")[0]
    (gb,) = torch.autograd.grad(b, x, g)
    assert torch.equal(a, b) and torch.equal(ga, gb)


# ---------------------------------------------------------------------------------------------
# Memory saved for backward, measured with saved-tensor hooks
# ---------------------------------------------------------------------------------------------


def saved_bytes(fn, x):
    """Bytes of the tensors autograd saves while running fn(x), each storage counted once."""
    seen = {}

    def pack(t):
        seen.setdefault(storage_key(t), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return sum(seen.values()), out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1,), (7,), (1023,), (4097,), (3, 5, 7), (128, 768)])
def test_saved_bytes_per_call(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    n = x.numel()
    paths = [lambda t, m: packed_dropout(t, 0.1, mode=m)]
    if pd.uses_custom_op():  # the torch.library op that torch.compile traces
        paths.append(lambda t, m: pd._op(t, 0.1, m == "packed")[0])
    for fn in paths:
        packed, _ = saved_bytes(lambda t: fn(t, "packed"), x)
        assert packed == 2 * cdiv(n, 16)  # ceil(n/8) bytes rounded up to the 16-bit mask word
        assert packed >= math.ceil(n / 8)
        recompute, _ = saved_bytes(lambda t: fn(t, "recompute"), x)
        assert recompute == 8  # the int64 Philox key
    stock, _ = saved_bytes(lambda t: F.dropout(t, 0.1), x)
    # PyTorch saves a float32 mask on CPU (4 B/element) and a bool mask on CUDA (1 B/element).
    assert stock == (4 * n if device == "cpu" else n)


# ---------------------------------------------------------------------------------------------
# torch.compile, torch.library, and life without Triton
# ---------------------------------------------------------------------------------------------


def _has_filelock():
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True


# torch's compile stack (dynamo, AOTAutograd, opcheck) imports `filelock`, a dependency that an
# offline `pip install --no-deps` of the torch wheel leaves out; the GPU machine has it.
needs_compile_stack = pytest.mark.skipif(
    not has_custom_op() or not _has_filelock(),
    reason="needs torch.library.custom_op (torch >= 2.4) and the 'filelock' package torch.compile imports",
)


@needs_compile_stack
def test_registered_as_custom_op_and_passes_opcheck():
    assert pd.uses_custom_op()
    x = torch.randn(37, 5, requires_grad=True)
    torch.library.opcheck(
        torch.ops.membit.packed_dropout.default, (x, 0.3, True),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    g = torch.randn(37, 5)
    m = torch.zeros(cdiv(185, 16), dtype=torch.int16)
    torch.library.opcheck(
        torch.ops.membit.packed_dropout_backward.default, (g, m, torch.zeros(1, dtype=torch.int64), 0.3, True),
        test_utils=("test_schema", "test_faketensor"),
    )


@needs_compile_stack
def test_torch_compile_does_not_graph_break(monkeypatch):
    """The custom-op formulation (MEMBIT_COMPILE_DROPOUT=op) under compile: no graph break, and
    the op's own reference draws the same mask compiled and eager. The fused formulation
    (MEMBIT_COMPILE_DROPOUT=fused) draws its mask from torch's RNG instead, and the default is
    torch's own dropout (tests/test_compile.py checks both)."""
    import torch._dynamo as dynamo

    monkeypatch.setenv("MEMBIT_COMPILE_DROPOUT", "op")

    lin = nn.Linear(24, 24)

    def f(x):
        return packed_dropout(lin(x), 0.3).sum()

    x = torch.randn(9, 24)
    dynamo.reset()
    explain = dynamo.explain(f)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    # Compiled forward+backward (no C++ compiler needed with aot_eager) equals eager, same seed.
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.manual_seed(4)
    out_c = compiled(x)
    (gc,) = torch.autograd.grad(out_c, lin.weight)
    torch.manual_seed(4)
    out_e = f(x)
    (ge,) = torch.autograd.grad(out_e, lin.weight)
    assert torch.equal(out_c, out_e)
    torch.testing.assert_close(gc, ge)


def test_import_and_run_without_triton():
    # A fresh interpreter in which `import triton` fails: membit must import and run its reference.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, membit\n"
        "from membit.nn import PackedDropout\n"
        "from membit.ops.utils import triton_available\n"
        "assert not triton_available()\n"
        "x = torch.randn(100, requires_grad=True)\n"
        "PackedDropout(0.5)(x).sum().backward()\n"
        "m = torch.nn.Sequential(torch.nn.Dropout(0.1)); r = membit.patch(m); assert len(r) == 1\n"
        "print('ok')\n"
    )
    root = os.path.join(os.path.dirname(__file__), "..")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


class _SaysCuda(torch.overrides.TorchFunctionMode):
    """What membit.predict's fake CUDA does: meta tensors answer is_cuda."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func == torch.Tensor.is_cuda.__get__:  # a new method-wrapper each time: compared, not identical
            return True
        return func(*args, **(kwargs or {}))


def test_fake_cuda_tensors_never_reach_the_kernels(monkeypatch):
    """On a GPU machine (Triton present) a prediction's meta tensors say is_cuda; the op must still
    take the path the predictor replaces, never a Triton launch on storage that does not exist."""
    from membit.ops import utils

    monkeypatch.setattr(utils, "triton_available", lambda: True)

    def launched(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched on a meta tensor")

    monkeypatch.setattr(pd, "_kernel_forward", launched)
    monkeypatch.setattr(pd, "_kernel_backward", launched)
    monkeypatch.setattr(pd, "next_key", lambda device: 12345)
    seen = []

    def forward(x, p, store_mask=True, seed=None, config=None):
        seen.append("forward")
        n = x.numel()
        words = torch.empty((cdiv(n, pd.MASK_WORD_BITS) if store_mask else 0,), dtype=torch.int16, device=x.device)
        return torch.empty_like(x), words, torch.empty((1,), dtype=torch.int64, device=x.device)

    def backward(grad, mask, seed, p, packed=True, config=None):
        seen.append("backward")
        return torch.empty_like(grad)

    monkeypatch.setattr(pd, "packed_dropout_forward", forward)
    monkeypatch.setattr(pd, "packed_dropout_backward", backward)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        x = torch.empty(3, 67, dtype=dtype, device="meta", requires_grad=True)
        with _SaysCuda():
            assert x.is_cuda
            assert not utils.use_triton(x)
            for store_mask in (True, False):
                seen.clear()
                y = pd.PackedDropoutFunction.apply(x, 0.1, store_mask)
                y.sum().backward()
                assert y.device.type == "meta" and y.shape == x.shape
                assert seen == ["forward", "backward"], seen
