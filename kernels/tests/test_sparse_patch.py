"""membit.patch(model, ffn="2:4") on CPU: which linears become SparseLinear24, training, unpatch.

On CPU the converted layers run the masked dense path; test_sparse_gpu.py covers cuSPARSELt.
"""

import copy
import os
import sys
import warnings

import pytest
import torch
from torch import nn

import membit
from membit.sparse import SparseLinear24

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "samples"))
import gpt_tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_fallback_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="membit SparseLinear24 runs the masked dense fallback")
        yield


def _gpt():
    torch.manual_seed(7)
    cfg = gpt_tiny.GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return gpt_tiny.GPT(cfg), cfg


def test_patch_ffn_converts_only_mlp_linears():
    model, cfg = _gpt()
    keys = list(model.state_dict().keys())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    originals = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    rec = membit.patch(model, dropout=None, ffn="2:4")
    conv = sorted(r.name for r in rec.replaced)
    assert conv == sorted(f"h.{i}.mlp.{a}" for i in range(cfg.n_layer) for a in ("c_fc", "c_proj"))
    assert all(r.kind == "ffn" for r in rec.replaced)
    for n, m in model.named_modules():
        if ".attn" in n or n == "lm_head":
            assert not isinstance(m, SparseLinear24)
    assert sum(isinstance(m, SparseLinear24) for m in model.modules()) == 2 * cfg.n_layer
    assert list(model.state_dict().keys()) == keys
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.dtype == before[n].dtype and p.device == before[n].device
    assert "SparseLinear24" in rec.summary()

    # One training step on CPU.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    # Reference: the unpatched architecture with every FFN weight replaced by W*M (dropout is 0).
    ref = gpt_tiny.GPT(cfg)
    ref.load_state_dict(model.state_dict(), strict=True)
    masked = {}
    for i in range(cfg.n_layer):
        for a in ("c_fc", "c_proj"):
            sp = getattr(model.h[i].mlp, a)
            wm = (sp.weight.detach() * sp.mask).requires_grad_(True)
            getattr(ref.h[i].mlp, a).weight = nn.Parameter(wm)
            masked[(i, a)] = (sp, getattr(ref.h[i].mlp, a).weight)
    _, loss = model(idx, idx)
    _, ref_loss = ref(idx, idx)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    for sp, wm in masked.values():
        # Straight-through gradient of W*M on every entry, plus masked decay on the pruned ones.
        want = wm.grad + sp.decay * torch.where(sp.mask, torch.zeros(()), sp.weight.detach())
        torch.testing.assert_close(sp.weight.grad, want)
        assert bool((sp.weight.grad[~sp.mask] != sp.decay * sp.weight.detach()[~sp.mask]).any())
    opt.step()
    trained = model.h[0].mlp.c_fc.weight.detach().clone()

    membit.unpatch(model)
    for n, m in model.named_modules():
        if n in originals:
            assert m is originals[n]
    assert not any(isinstance(m, SparseLinear24) for m in model.modules())
    assert list(model.state_dict().keys()) == keys
    # Parameters were shared, so the restored Linear holds the trained weights.
    assert torch.equal(model.h[0].mlp.c_fc.weight, trained)
    assert not torch.equal(trained, before["h.0.mlp.c_fc.weight"])


def test_patch_ffn_with_dropout_and_checkpoints():
    model, cfg = _gpt()
    sd = copy.deepcopy(model.state_dict())
    rec = membit.patch(model, ffn="2:4")
    kinds = {r.kind for r in rec.replaced}
    assert kinds == {"dropout", "ffn"}
    model.load_state_dict(sd, strict=True)  # a dense checkpoint loads into the patched model
    dense = gpt_tiny.GPT(cfg)
    dense.load_state_dict(model.state_dict(), strict=True)
    membit.unpatch(model)


class _Gated(nn.Module):
    def __init__(self, d=8, h=24):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(d, h), nn.Linear(d, h), nn.Linear(h, d)


class BertIntermediate(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.dense = nn.Linear(d, h)


class BertOutput(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.dense = nn.Linear(h, d)
        self.LayerNorm = nn.LayerNorm(d)


class BertSelfOutput(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dense = nn.Linear(d, d)


class _Layer(nn.Module):
    def __init__(self, d=8, h=32):
        super().__init__()
        self.attention = nn.ModuleDict({"output": BertSelfOutput(d)})
        self.intermediate = BertIntermediate(d, h)
        self.output = BertOutput(d, h)
        self.mlp = _Gated(d)
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)  # timm-style pair
        self.qk = nn.Module()
        self.qk.q, self.qk.k = nn.Linear(d, d), nn.Linear(d, d)  # d -> d pair: not an FFN


def test_patch_ffn_gated_hf_and_timm_shapes():
    layer = _Layer()
    rec = membit.patch(layer, dropout=None, ffn="2:4")
    assert sorted(r.name for r in rec.replaced) == sorted([
        "intermediate.dense", "output.dense", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "fc1", "fc2"])
    assert type(layer.attention["output"].dense) is nn.Linear
    assert type(layer.qk.q) is nn.Linear
    membit.unpatch(layer)
    assert not any(isinstance(m, SparseLinear24) for m in layer.modules())
