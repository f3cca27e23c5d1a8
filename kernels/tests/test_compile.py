"""torch.compile: membit's dropout in its fusable form, and the harness on a compiled script.

CPU only. Compiled code is traced with the aot_eager backend: dynamo and AOTAutograd (joint
graph, min-cut partitioner, saved tensors) exactly as Inductor gets them, without Inductor's
code generation, which takes minutes on two CPU cores. One test compiles the op through
Inductor itself.
"""

import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

try:
    import filelock  # noqa: F401  (torch.compile imports it; the offline torch wheel install skips it)
except ImportError as e:  # CI must not skip these: say what to install
    raise ImportError("torch.compile needs the filelock package: pip install filelock, or Debian's python3-filelock") from e

import membit  # noqa: E402
from membit.ops.compiled_dropout import compiled_dropout, pack_bits, unpack_bits  # noqa: E402
from membit.profile.compiled import dotted  # noqa: E402
from test_profile import assert_consistent, assert_valid, line_of, run_harness  # noqa: E402

KERNELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(KERNELS)
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
COMPILED = os.path.join(REPO, "samples", "gpt_compiled.py")
COMPILED_ARGS = ["--steps", "20", "--batch-size", "2", "--seq-len", "32", "--n-layer", "2", "--n-embd", "32",
                 "--n-head", "2", "--data-bytes", "100000", "--dropout", "0.1", "--device", "cpu",
                 "--backend", "aot_eager"]


def saved_by(fn, *args):
    """What autograd keeps for backward while fn runs: [(shape, dtype)]."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((tuple(t.shape), t.dtype)) or t, lambda t: t):
        out = fn(*args)
    return out, saved


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# -- the op's plain-op formulation ----------------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1000])
def test_pack_bits_round_trips_any_length(n, seed):
    keep = torch.rand(n) > 0.4
    words = pack_bits(keep)
    assert words.dtype == torch.uint8 and words.numel() == (n + 7) // 8
    assert torch.equal(unpack_bits(words, n), keep)
    # Element 8i+j is bit j of byte i, padding bits 0.
    manual = sum(int(keep[j]) << j for j in range(min(8, n)))
    assert int(words[0]) == manual


def test_compiled_dropout_eager_matches_its_own_backward_and_rate(seed):
    x = torch.randn(64, 512, requires_grad=True)
    p = 0.3
    y = compiled_dropout(x, p, "packed")
    y.backward(torch.ones_like(y))
    kept = y != 0
    # Backward unpacked the same mask the forward drew: grad is scale where kept, 0 elsewhere.
    assert torch.equal(x.grad, kept.float() / (1 - p))
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    rate = 1 - kept.float().mean().item()
    assert abs(rate - p) < 0.01  # 32768 draws: 5 sigma is 0.0127 / 2


class TwoDropouts(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(32, 256)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        h = torch.softmax(self.a(x), -1)
        h = self.drop(h)  # module dropout
        return F.dropout(h, 0.25, self.training)  # functional dropout, routed by membit.patch


def test_compiled_models_keep_torch_dropout_unless_asked(seed, monkeypatch):
    # No formulation of packing held step time on every compiled model measured: by default a
    # patched model's dropout runs as torch's own inside torch.compile, and membit says so once.
    import membit.ops.packed_dropout as pd

    monkeypatch.delenv("MEMBIT_COMPILE_DROPOUT", raising=False)
    monkeypatch.setattr(pd, "_stock_noted", False)
    model = TwoDropouts()
    membit.patch(model, dropout="packed")
    x = torch.randn(16, 32, requires_grad=True)
    with pytest.warns(UserWarning, match="MEMBIT_COMPILE_DROPOUT=fused") as caught:
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    assert sum("inside torch.compile runs as torch's own dropout" in str(w.message) for w in caught) == 1
    torch._dynamo.reset()
    _, saved = saved_by(torch.compile(model, backend="aot_eager"), x)
    assert not any(d == torch.uint8 for _, d in saved), saved  # nothing packed
    # Stock dropout keeps a mask of every element (CPU: its own dtype), once per dropout.
    masks = [s for s, _ in saved if s == (16, 256)]
    assert len(masks) >= 2, saved
    # Eager calls of the same model still pack: two masks of 1 bit per element.
    _, eager_saved = saved_by(model, x)
    bits = [s[0] * torch.iinfo(d).bits for s, d in eager_saved if not d.is_floating_point and len(s) == 1]
    assert bits == [16 * 256, 16 * 256], eager_saved


def test_a_bad_compile_formulation_is_named(seed, monkeypatch):
    model = TwoDropouts()
    membit.patch(model, dropout="packed")
    monkeypatch.setenv("MEMBIT_COMPILE_DROPOUT", "packd")
    with pytest.raises(Exception, match=r"MEMBIT_COMPILE_DROPOUT='packd': expected one of stock, fused, op"):
        torch.compile(model, backend="aot_eager")(torch.randn(4, 32, requires_grad=True))


def test_packed_under_compile_saves_bits_and_no_graph_break(seed, monkeypatch):
    monkeypatch.setenv("MEMBIT_COMPILE_DROPOUT", "fused")
    model = TwoDropouts()
    membit.patch(model, dropout="packed")
    x = torch.randn(16, 32, requires_grad=True)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager")
    y, saved = saved_by(compiled, x)
    n = 16 * 256
    assert ((n // 8,), torch.uint8) in [(s, d) for s, d in saved if d == torch.uint8] or \
        ((n // 8, 1), torch.uint8) in saved
    bits = [s for s, d in saved if d == torch.uint8]
    assert len(bits) == 2, saved  # both dropouts keep 1 bit per element
    assert not any(d == torch.bool for _, d in saved), saved  # no byte-per-element mask
    # The compiled backward unpacks what the forward drew: for dropout(dropout(h)), grad
    # w.r.t. the softmax output is nonzero exactly where y is.
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_recompute_off_cuda_falls_back_to_bits(seed):
    # philox_rand has no CPU implementation: recompute keeps the 1-bit form there.
    x = torch.randn(8, 64, requires_grad=True)
    _, saved = saved_by(lambda t: compiled_dropout(t, 0.5, "recompute"), x)
    assert saved == [((64,), torch.uint8)] or saved == [((64, 1), torch.uint8)]


def test_inductor_compiles_the_packed_formulation(seed):
    # One real Inductor compile (C++ codegen on CPU): same keep-rate and self-consistency.
    x = torch.randn(32, 256, requires_grad=True)
    fn = torch.compile(lambda t: compiled_dropout(t, 0.2, "packed"))
    y = fn(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert torch.equal(x.grad, kept.float() / 0.8)
    assert abs((1 - kept.float().mean().item()) - 0.2) < 0.03


def test_dynamo_module_paths_become_model_paths():
    assert dotted("L['self'].h.0.attn") == "h.0.attn"
    assert dotted("L['self']._modules['h']._modules['0']") == "h.0"
    assert dotted("L['self'].h[1].mlp.c_fc") == "h.1.mlp.c_fc"
    assert dotted("L['self']") == ""


# -- the harness on a compiled script -------------------------------------------------------

@pytest.fixture(scope="module")
def compiled_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compiled")
    runs = {}
    for variant in ("baseline", "packed"):
        proc, report = run_harness(tmp, "samples/gpt_compiled.py", COMPILED_ARGS, "--steps", "2", "--warmup", "1",
                                   "--variant", variant, name=f"{variant}.json", timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[variant] = report
    return runs


def test_compiled_script_profiles_with_lines_from_fx_nodes(compiled_runs):
    report = compiled_runs["baseline"]
    assert_valid(report)
    assert_consistent(report)
    assert report["run"]["status"] == "ok"
    comp = report["run"]["compile"]
    assert comp["graph_breaks"] == 0 and comp["graphs"] == 1
    assert comp["calls"][0]["file"] == "samples/gpt_compiled.py"
    assert comp["calls"][0]["line"] == line_of(COMPILED, "torch.compile(model, backend=args.backend)")
    assert comp["calls"][0]["backend"] == "aot_eager"
    graph = comp["per_graph"][0]
    assert graph["saved_bytes"] == report["summary"]["saved_bytes"]
    assert graph["lines_bytes"] + graph["graph_only_bytes"] == graph["saved_bytes"]
    # Nearly everything maps to a line (the graph's inputs kept for backward do not).
    assert graph["lines_bytes"] >= 0.95 * graph["saved_bytes"]
    lines = {e["line"]: e for e in report["lines"] if e["file"] == "samples/gpt_tiny.py"}
    attn = lines[line_of(GPT, "att = self.attn_dropout(att)")]
    # B * H * T * T attention probabilities, one bool byte each under compile.
    assert attn["mask_bytes"] == 2 * 2 * 32 * 32 * 2  # two layers
    assert attn["compiled_bytes"] == attn["saved_bytes"]
    assert attn["module"] == "h.*.attn.attn_dropout"
    assert any(o["op"] == "native_dropout" for o in attn["ops"])
    mods = {m["path"]: m for m in report["modules"]}
    assert mods["h.0.attn.attn_dropout"]["mask_bytes"] == 2 * 2 * 32 * 32
    fc = lines[line_of(GPT, "return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))")]
    assert fc["module"].startswith("h.*.mlp")
    # The compiled module shows under the model's own paths, not torch.compile's wrapper.
    assert not any(p.startswith("_orig_mod") or "OptimizedModule" in p for p in mods)


def test_packed_variant_under_compile_keeps_one_bit_per_mask_element(compiled_runs):
    base, packed = compiled_runs["baseline"], compiled_runs["packed"]
    assert_valid(packed)
    assert packed["run"]["compile"]["graph_breaks"] == 0
    line = line_of(GPT, "att = self.attn_dropout(att)")
    mask = {r["run"]["variant"]: next(e for e in r["lines"] if e["line"] == line and e["file"] == "samples/gpt_tiny.py")["mask_bytes"]
            for r in (base, packed)}
    assert mask["packed"] * 8 == mask["baseline"]
    assert packed["summary"]["mask_bytes"] * 8 == base["summary"]["mask_bytes"]


def test_compile_lever_profiles_the_eager_script_compiled(tmp_path):
    # Compare Variants' `compile` lever: the harness compiles the model's forward itself.
    args = [a for a in COMPILED_ARGS if a not in ("--backend", "aot_eager")]
    proc, report = run_harness(tmp_path, "samples/gpt_tiny.py", args, "--steps", "2", "--warmup", "1",
                               "--variant", "packed+compile", timeout=600,
                               env_extra={"MEMBIT_COMPILE_BACKEND": "aot_eager"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(report)
    assert report["run"]["variant"] == "packed+compile"
    how = {r["lever"]: r["how"] for r in report["run"]["levers"]}
    assert "torch.compile(GPT.forward, backend='aot_eager')" in how["compile"]
    comp = report["run"]["compile"]
    assert comp["graph_breaks"] == 0 and comp["graphs"] == 1
    line = line_of(GPT, "att = self.attn_dropout(att)")
    attn = next(e for e in report["lines"] if e["line"] == line and e["file"] == "samples/gpt_tiny.py")
    # Packed under compile: 1 bit per attention-probability element, attributed through FX.
    assert attn["mask_bytes"] == 2 * 2 * 32 * 32 * 2 // 8
    assert attn["compiled_bytes"] == attn["saved_bytes"]
