"""membit.patch on HF transformers' BertForMaskedLM (built from a config: no download).

transformers is not installed where CI runs; the GPU machine has it, and runs these tests.
"""

import copy

import pytest
import torch
from torch import nn

import membit
from membit.nn import PackedDropout
from membit.ops import packed_dropout as pd

try:
    import transformers
except ImportError:  # pragma: no cover - depends on the machine
    transformers = None

pytestmark = pytest.mark.skipif(
    transformers is None, reason="transformers is not installed on this machine (the GPU machine has it)")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
LAYERS, HEADS, SEQ, BATCH = 2, 4, 24, 3


def tiny_bert(attn, device):
    cfg = transformers.BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=128, max_position_embeddings=64,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, attn_implementation=attn)
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(cfg).to(device).train()


def batch(device):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 512, (BATCH, SEQ), generator=g)
    labels = torch.where(torch.rand(BATCH, SEQ, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    labels[:, 0] = ids[:, 0]  # at least one predicted token per row
    return ids.to(device), labels.to(device)


class ShapeRecorder:
    def __init__(self, monkeypatch):
        self.shapes = []
        original = pd.packed_dropout_forward

        def recording(x, *args, **kwargs):
            self.shapes.append(tuple(x.shape))
            return original(x, *args, **kwargs)

        monkeypatch.setattr(pd, "packed_dropout_forward", recording)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_modules_replaced_and_eager_attention_dropout_routed(device, attn, monkeypatch):
    model = tiny_bert(attn, device)
    keys = list(model.state_dict().keys())
    n_dropout = sum(type(m) is nn.Dropout for m in model.modules())
    rec = membit.patch(model)
    assert len(rec) == n_dropout > 0
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert list(model.state_dict().keys()) == keys

    shapes = ShapeRecorder(monkeypatch)
    ids, labels = batch(device)
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    attn_probs = [s for s in shapes.shapes if s == (BATCH, HEADS, SEQ, SEQ)]
    # Eager attention calls nn.functional.dropout on the probabilities once per layer, and it
    # is routed to membit; SDPA's fused dropout stores no mask and is left to PyTorch.
    assert len(attn_probs) == (LAYERS if attn == "eager" else 0)
    assert len(shapes.shapes) - len(attn_probs) >= 1 + 2 * LAYERS  # embeddings + 2 per layer

    membit.unpatch(model)
    assert sum(type(m) is nn.Dropout for m in model.modules()) == n_dropout
    assert not any(isinstance(m, PackedDropout) for m in model.modules())
    calls = len(shapes.shapes)
    model(input_ids=ids, labels=labels)
    assert len(shapes.shapes) == calls  # unpatched: nothing reaches membit


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["packed", "recompute"])
def test_bert_gradient_checkpointing_gives_the_same_gradients(device, mode):
    plain = tiny_bert("eager", device)
    ckpt = copy.deepcopy(plain)
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    membit.patch(plain, dropout=mode)
    membit.patch(ckpt, dropout=mode)
    ids, labels = batch(device)
    grads, losses = [], []
    for model in (plain, ckpt):
        torch.manual_seed(5)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    membit.unpatch(plain)
    membit.unpatch(ckpt)
