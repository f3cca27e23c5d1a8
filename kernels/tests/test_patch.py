"""membit.patch / membit.unpatch on the GPT sample and on small hand-made models."""

import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import membit
from membit.nn import PackedDropout
from membit.ops import packed_dropout as pd
from membit.patching import PatchRecord

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "samples"))
import gpt_tiny  # noqa: E402  (samples/gpt_tiny.py, imported unchanged)


def small_gpt(device="cpu", dropout=0.1, n_layer=2):
    cfg = gpt_tiny.GPTConfig(block_size=32, n_layer=n_layer, n_head=2, n_embd=32, dropout=dropout)
    return gpt_tiny.GPT(cfg).to(device)


class MaskRecorder:
    """Wraps the op's host forward to keep every keep-mask it draws, in call order."""

    def __init__(self, monkeypatch):
        self.masks = []
        original = pd.packed_dropout_forward

        def recording(x, p, store_mask=True, seed=None, config=None):
            y, words, s = original(x, p, store_mask, seed, config)
            n = x.numel()
            # Packed: the kernel's own words. Recompute: the words its seed defines.
            w = words if store_mask else pd.keep_words_reference(s, n, p)
            self.masks.append(pd.unpack_mask(w, n).view(x.shape).clone())
            return y, words, s

        monkeypatch.setattr(pd, "packed_dropout_forward", recording)


class FedDropout(nn.Module):
    """Stock dropout arithmetic (x * mask * 1/(1-p), autograd saves the mask) fed recorded masks."""

    def __init__(self, p, masks):
        super().__init__()
        self.p, self.masks = p, masks

    def forward(self, x):
        if not self.training:
            return x
        keep = self.masks.pop(0)
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


def train_losses(model, steps, device, seed=0):
    data = torch.frombuffer(bytearray(gpt_tiny.stdlib_text(200_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        x, y = gpt_tiny.get_batch(data, 4, 32, gen, device)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["packed", "recompute"])
def test_training_matches_stock_dropout_fed_the_same_masks(device, mode, monkeypatch):
    steps = 5
    torch.manual_seed(0)
    ours = small_gpt(device)
    stock = copy.deepcopy(ours)
    control = copy.deepcopy(ours)

    rec = MaskRecorder(monkeypatch)
    membit.patch(ours, dropout=mode)
    losses_ours = train_losses(ours, steps, device)
    n_drop = 1 + 3 * 2  # embedding dropout + (attn, resid, mlp) per layer
    assert len(rec.masks) == steps * n_drop

    masks = list(rec.masks)
    for name, m in list(stock.named_modules()):
        for attr, child in list(m._modules.items()):
            if type(child) is nn.Dropout:
                setattr(m, attr, FedDropout(child.p, masks))
    losses_stock = train_losses(stock, steps, device)
    assert masks == []  # every recorded mask consumed, in order

    tol = 1e-6 if device == "cpu" else 1e-4  # CUDA embedding backward sums with atomics
    torch.testing.assert_close(torch.tensor(losses_ours), torch.tensor(losses_stock), rtol=tol, atol=tol)
    for a, b in zip(ours.parameters(), stock.parameters()):
        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)

    # The comparison has teeth: stock dropout with its own masks follows another trajectory.
    losses_control = train_losses(control, steps, device)
    assert max(abs(a - b) for a, b in zip(losses_ours[1:], losses_control[1:])) > 1e-4


def test_patch_replaces_every_dropout_and_keeps_names():
    model = small_gpt()
    keys = list(model.state_dict().keys())
    model.h[1].eval()
    rec = membit.patch(model)
    assert isinstance(rec, PatchRecord) and len(rec) == 7
    names = sorted(r.name for r in rec)
    assert names == sorted(["drop"] + [f"h.{i}.{s}" for i in range(2)
                                       for s in ("attn.attn_dropout", "attn.resid_dropout", "mlp.dropout")])
    for r in rec:
        assert type(r.old) is nn.Dropout and isinstance(r.new, PackedDropout)
        assert r.new.p == r.old.p == 0.1 and r.new.mode == "packed" and r.new.training == r.old.training
        assert model.get_submodule(r.name) is r.new
    assert not model.h[1].attn.attn_dropout.training
    assert list(model.state_dict().keys()) == keys
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert "replaced 7 x Dropout -> PackedDropout (mode=packed)" in rec.summary()

    back = membit.unpatch(model)
    assert back is rec
    for r in rec:
        assert model.get_submodule(r.name) is r.old
    assert list(model.state_dict().keys()) == keys
    # A state_dict saved from the patched model loads into the original and vice versa.
    membit.patch(model, dropout="recompute")
    sd = model.state_dict()
    assert all(m.mode == "recompute" for m in model.modules() if isinstance(m, PackedDropout))
    membit.unpatch(model)
    model.load_state_dict(sd)


def test_patch_arguments_and_double_patching():
    model = small_gpt()
    # A bad argument is refused before anything is converted: nothing half-done.
    with pytest.raises(ValueError):
        membit.patch(model, dropout="bits", ffn="2:4")
    assert not any(isinstance(m, PackedDropout) for m in model.modules())
    assert not any(type(m).__name__ == "SparseLinear24" for m in model.modules())
    with pytest.raises(ValueError):
        membit.patch(model, ffn="dense")
    with pytest.raises(ValueError):
        membit.patch(model, dropout="bits")
    with pytest.raises(ValueError):
        membit.unpatch(model)
    membit.patch(model)
    with pytest.raises(RuntimeError, match="already patched"):
        membit.patch(model)
    membit.unpatch(model)
    rec = membit.patch(model, dropout=None)
    assert len(rec) == 0 and rec.functional == [] and F.dropout is torch.nn.functional.dropout
    membit.unpatch(model)


class MyDropout(nn.Dropout):
    pass


class OwnForwardDropout(nn.Dropout):
    def forward(self, x):
        return x


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.Dropout(0.2)
        self.a = shared
        self.b = nn.Sequential(nn.Linear(4, 4), shared)
        self.c2 = nn.Dropout2d(0.5)
        self.alpha = nn.AlphaDropout(0.1)
        self.sub = MyDropout(0.3)
        self.own = OwnForwardDropout(0.3)
        self.already = PackedDropout(0.1)

    def forward(self, x):
        return self.own(self.sub(self.a(self.b(x))))


def test_patch_skips_channel_and_custom_dropouts_and_keeps_sharing():
    model = Mixed()
    rec = membit.patch(model, dropout="recompute")
    replaced = {r.name: r for r in rec}
    assert set(replaced) == {"a", "sub"}
    shared = replaced["a"]
    assert len(shared.places) == 2 and model.a is model.b[1] and isinstance(model.a, PackedDropout)
    assert model.a.mode == "recompute" and model.a.p == 0.2
    skipped = {s.name: s for s in rec.skipped}
    assert set(skipped) == {"c2", "alpha", "own", "already"}
    assert "channel" in skipped["c2"].reason and "own forward" in skipped["own"].reason
    model(torch.randn(3, 4)).sum().backward()
    membit.unpatch(model)
    assert type(model.a) is nn.Dropout and model.a is model.b[1] and type(model.sub) is MyDropout


class FunctionalDropoutNet(nn.Module):
    """Calls torch.nn.functional.dropout itself, as HF transformers' eager attention does."""

    def __init__(self, checkpoint_inner=False):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.out = nn.Linear(16, 16)
        self.checkpoint_inner = checkpoint_inner

    def block(self, x):
        return torch.nn.functional.dropout(self.inner(x), p=0.3, training=self.training)

    def forward(self, x):
        if self.checkpoint_inner:
            from torch.utils.checkpoint import checkpoint

            h = checkpoint(self.block, x, use_reentrant=False)
        else:
            h = self.block(x)
        return self.out(h)


class CallCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = pd.packed_dropout_forward

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(pd, "packed_dropout_forward", counting)


def test_functional_dropout_is_routed_only_inside_the_patched_forward(monkeypatch):
    original = torch.nn.functional.dropout
    counter = CallCounter(monkeypatch)
    net, other = FunctionalDropoutNet(), FunctionalDropoutNet()
    x = torch.randn(8, 16)
    rec = membit.patch(net)
    assert rec.functional == ["torch.nn.functional.dropout"]
    net(x)
    assert counter.calls == 1
    other(x)  # not patched: stock dropout
    torch.nn.functional.dropout(x, 0.5)
    assert counter.calls == 1
    # A second patched model; unpatching one keeps the other routed.
    membit.patch(other)
    membit.unpatch(net)
    other(x)
    assert counter.calls == 2
    membit.unpatch(other)
    assert torch.nn.functional.dropout is original
    net(x)
    assert counter.calls == 2


def test_routing_survives_an_exception_in_forward(monkeypatch):
    counter = CallCounter(monkeypatch)

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(4, 4), Boom())
    membit.patch(model)
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(2, 4))
    torch.nn.functional.dropout(torch.randn(4), 0.5)  # outside any patched forward
    membit.unpatch(model)
    assert counter.calls == 0


@pytest.mark.parametrize("mode", ["packed", "recompute"])
def test_checkpointed_functional_dropout_regenerates_its_mask(mode):
    torch.manual_seed(0)
    plain = FunctionalDropoutNet()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_inner = True
    membit.patch(plain, dropout=mode)
    membit.patch(ckpt, dropout=mode)
    x = torch.randn(8, 16)
    grads = []
    for net in (plain, ckpt):
        torch.manual_seed(7)
        net(x).square().sum().backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    membit.unpatch(plain)
    membit.unpatch(ckpt)


def _dropout_helper(h, training):
    # A free function (no `self`, no `module`) between the module and the dropout call.
    return torch.nn.functional.dropout(torch.tanh(h), p=0.3, training=training)


class HelperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 16)
        self.out = nn.Linear(16, 16)

    def block(self, x):
        return _dropout_helper(self.lin(x), self.training)

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        return self.out(checkpoint(self.block, x, use_reentrant=False))


def test_checkpointed_helper_function_is_routed_on_recompute(monkeypatch):
    counter = CallCounter(monkeypatch)
    torch.manual_seed(0)
    net = HelperNet()
    plain = copy.deepcopy(net)
    plain.forward = lambda x: plain.out(plain.block(x))
    membit.patch(net)
    membit.patch(plain)
    x = torch.randn(8, 16)
    grads = []
    for m in (plain, net):
        torch.manual_seed(3)
        m(x).square().sum().backward()
        grads.append([p.grad for p in m.parameters()])
    assert counter.calls == 3  # plain forward, checkpointed forward, its recompute in backward
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    membit.unpatch(net)
    membit.unpatch(plain)
