"""Proofs that the advisor's rewrites keep the maths.

The real CLI (`node dist/cli.js convert --lever ...`, built by `node esbuild.mjs`)
rewrites copies of samples/gpt_tiny.py and the nanoGPT fixture. Both versions are
imported, built with the same seed, and the rewritten model loads the original's
state_dict strictly (so parameter and buffer names are unchanged). Then:

- sdpa: outputs and every parameter gradient match, in train mode with dropout 0 and
  in eval mode, float32 and float64 (also the ViT sample, whose non-default scale
  becomes scale= with --sdpa-scale). Tolerance, per tensor: max|new - old| <= tol *
  max|old|, tol = 1e-5 in float32 and 1e-12 in float64 (SDPA computes the same
  softmax(q kᵀ / sqrt(E)) v with another summation order; measured 6e-7 and 9e-16).
  With attention dropout on, SDPA draws its own mask, so the check is that it is
  active (two forwards differ, eval is deterministic) and that the model trains.
- checkpoint: outputs and gradients are bit-for-bit equal with dropout active
  (non-reentrant checkpointing replays the RNG state), and far fewer bytes are saved
  for backward.
- autocast: the rewritten training loop runs the forward in bf16 (Linear outputs are
  bf16), the first step's loss is within 1e-2 relative and its gradient within 2e-2
  relative L2 of the float32 run (measured 2e-5 and 3e-3), and it trains on the
  sample's real text as the float32 run does (final losses within 0.1).
- HF: attn_implementation "eager" -> "sdpa" on a BERT from its config with a padding
  mask, where `transformers` is installed: logits within 1e-5 and gradients within 1e-5
  of their scale (at least 1e-4 of the largest gradient: the key bias's gradient is
  exactly 0, rounding noise only). Passed with torch 2.11 and transformers 5.17.

The CLI and node are required: a missing one fails these tests (CI builds before pytest).
"""

import contextlib
import importlib.util
import inspect
import io
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "dist" / "cli.js"
GPT = REPO / "samples" / "gpt_tiny.py"
NANOGPT = REPO / "test" / "fixtures" / "scan" / "nanogpt_style.py"
MINGPT = REPO / "test" / "fixtures" / "scan" / "mingpt_style.py"

from conftest import HAS_SDPA, cpu_bf16_autocast  # noqa: E402
needs_sdpa = pytest.mark.skipif(not HAS_SDPA, reason="this torch has no F.scaled_dot_product_attention (added in 2.0)")



def convert(files, lever, root, extra=()):
    """Copies `files` into `root` and rewrites them there with the real CLI; returns its stdout."""
    node = shutil.which("node")
    assert node, "node is not on PATH: `membit convert` cannot run"
    assert CLI.is_file(), f"{CLI} is missing: build it with `node esbuild.mjs`"
    root.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, root / Path(f).name)
    proc = subprocess.run([node, str(CLI), "convert", ".", "--lever", lever, *extra], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    """lever -> folder holding the rewritten gpt_tiny.py, nanogpt_style.py and mingpt_style.py."""
    out = {}
    for lever in ("sdpa", "checkpoint", "autocast"):
        root = tmp_path_factory.mktemp(f"lever-{lever}")
        convert([GPT, NANOGPT, MINGPT], lever, root)
        out[lever] = root
    return out


_loaded = 0


def plain(text):
    """The rewritten text without the comment record of the replaced lines (what --revert reads)."""
    return "".join(line for line in text.splitlines(keepends=True) if not re.match(r"[ \t]*(# membit: (sdpa|checkpoint|autocast) rewrote |#\|)", line))


def load(path):
    """Imports a file as a fresh module (dataclasses need it in sys.modules while building)."""
    global _loaded
    _loaded += 1
    name = f"advisor_{Path(path).stem}_{_loaded}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pair(old_mod, new_mod, dtype=torch.float32, **cfg):
    """The original and the rewritten GPT with the same weights, loaded strictly."""
    torch.manual_seed(0)
    a = old_mod.GPT(old_mod.GPTConfig(**cfg)).to(dtype)
    b = new_mod.GPT(new_mod.GPTConfig(**cfg)).to(dtype)
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict(), strict=True)
    return a, b


def batch(vocab, block, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, block), generator=g), torch.randint(0, vocab, (n, block), generator=g)


def step(model, idx, targets, train, seed=None):
    """One forward and backward: logits, loss and every parameter's gradient."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    if seed is not None:
        torch.manual_seed(seed)
    logits, loss = model(idx, targets)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close_rel(new, old, tol, what, floor=0.0):
    """max|new - old| <= tol * max|old|; `floor` stands in for max|old| where the exact value is 0 (noise only)."""
    err = (new - old).abs().max().item()
    scale = max(old.abs().max().item(), floor)
    assert err <= tol * scale, f"{what}: max|new - old| = {err:.3g} > {tol:g} * {scale:.3g}"


GPT_CFG = dict(block_size=32, vocab_size=256, n_layer=2, n_head=4, n_embd=64)


@needs_sdpa
def test_sdpa_rewrite_is_the_expected_text(rewritten):
    text = (rewritten["sdpa"] / "gpt_tiny.py").read_text()
    assert "y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_dropout.p if self.training else 0.0, is_causal=True)" in text
    # The replaced lines stay only as the comment record `membit convert --revert` reads.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "att = F.softmax" not in code and "y = att @ v" not in code
    assert "#|        att = F.softmax(att, dim=-1)" in text
    assert "self.register_buffer(" in code


@needs_sdpa
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("train", [True, False], ids=["train-dropout0", "eval"])
def test_sdpa_gpt_outputs_and_gradients_match(rewritten, dtype, tol, train):
    old, new = load(GPT), load(rewritten["sdpa"] / "gpt_tiny.py")
    # Dropout is 0 in train mode (SDPA draws its own mask); eval ignores it.
    a, b = pair(old, new, dtype, dropout=0.0 if train else 0.1, **GPT_CFG)
    idx, tgt = batch(256, 32)
    la, lossa, ga = step(a, idx, tgt, train)
    lb, lossb, gb = step(b, idx, tgt, train)
    assert_close_rel(lb, la, tol, "logits")
    assert_close_rel(lossb, lossa, tol, "loss")
    assert ga.keys() == gb.keys() and len(ga) == len(list(a.parameters()))
    for n in ga:
        assert_close_rel(gb[n], ga[n], tol, f"grad {n}")


def test_sdpa_leaves_the_nanogpt_fallback_branch(rewritten):
    # nanoGPT's eager attention is the `else:` of `if self.flash:`: it runs only where SDPA is
    # missing, so rewriting it to SDPA would break exactly the torch it exists for.
    assert (rewritten["sdpa"] / "nanogpt_style.py").read_text() == NANOGPT.read_text()


@needs_sdpa
def test_sdpa_eager_only_gpt_matches(rewritten):
    old, new = load(MINGPT), load(rewritten["sdpa"] / "mingpt_style.py")
    assert "scaled_dot_product_attention" in (rewritten["sdpa"] / "mingpt_style.py").read_text()
    cfg = dict(block_size=32, vocab_size=128, n_layer=2, n_head=4, n_embd=64, dropout=0.0, bias=True)
    a, b = pair(old, new, **cfg)
    idx, tgt = batch(128, 32)
    for train in (True, False):
        la, _, ga = step(a, idx, tgt, train)
        lb, _, gb = step(b, idx, tgt, train)
        assert_close_rel(lb, la, 1e-5, "logits")
        for n in ga:
            assert_close_rel(gb[n], ga[n], 1e-5, f"grad {n}")


def stdlib_batches(module, steps, batch_size, seq_len, seed=0):
    data = torch.frombuffer(bytearray(module.stdlib_text(400_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(seed)
    return [module.get_batch(data, batch_size, seq_len, gen, "cpu") for _ in range(steps)]


@needs_sdpa
def test_sdpa_with_dropout_keeps_dropout_active_and_trains(rewritten):
    new = load(rewritten["sdpa"] / "gpt_tiny.py")
    torch.manual_seed(0)
    model = new.GPT(new.GPTConfig(dropout=0.0, **GPT_CFG))
    # Only attention dropout on: whatever varies between two forwards is SDPA's dropout_p.
    for block in model.h:
        block.attn.attn_dropout.p = 0.5
    idx, tgt = batch(256, 32)
    model.train()
    with torch.no_grad():
        first, second = model(idx)[0], model(idx)[0]
    assert not torch.equal(first, second), "SDPA's attention dropout is not active in train mode"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], model(idx)[0])

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for x, y in stdlib_batches(new, 40, 8, 32):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        losses.append(loss.item())
    assert statistics.mean(losses[-5:]) < statistics.mean(losses[:5]) - 1.0, losses


def sdpa_takes_scale():
    if not HAS_SDPA:
        return False
    try:
        q = torch.ones(1, 1, 2, 2)
        F.scaled_dot_product_attention(q, q, q, scale=0.5)
        return True
    except TypeError:
        return False


@pytest.mark.skipif(not sdpa_takes_scale(), reason="this torch's scaled_dot_product_attention has no scale= (added in 2.1)")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_sdpa_with_scale_vit_matches(tmp_path, dtype, tol):
    """The ViT sample scales by self.scale (not provably 1/sqrt(E)): --sdpa-scale passes it as scale=."""
    vit = REPO / "samples" / "vit_digits.py"
    convert([vit], "sdpa", tmp_path, extra=("--sdpa-scale",))
    text = (tmp_path / "vit_digits.py").read_text()
    assert "x = (F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=False, scale=self.scale)).transpose(1, 2).reshape(B, N, C)" in text
    old, new = load(vit), load(tmp_path / "vit_digits.py")
    images = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    labels = torch.arange(6) % 10
    for train, drop in ((True, 0.0), (False, 0.1)):
        torch.manual_seed(0)
        a = old.ViT(depth=2, drop=drop).to(dtype)
        b = new.ViT(depth=2, drop=drop).to(dtype)
        b.load_state_dict(a.state_dict(), strict=True)
        res = []
        for m in (a, b):
            m.train(train)
            out = m(images)
            F.cross_entropy(out, labels).backward()
            res.append((out.detach(), {n: p.grad for n, p in m.named_parameters()}))
        (oa, ga), (ob, gb) = res
        assert_close_rel(ob, oa, tol, "logits")
        for n in ga:
            assert_close_rel(gb[n], ga[n], tol, f"grad {n}")


CHECKPOINT_OK = "use_reentrant" in inspect.signature(torch.utils.checkpoint.checkpoint).parameters


def saved_bytes_step(model, idx, tgt, seed):
    """One training step's outputs, gradients and the bytes saved for backward (by storage)."""
    saved = {}

    def pack(t):
        s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        saved[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, loss = model(idx, tgt)
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved.values())


@pytest.mark.skipif(not CHECKPOINT_OK, reason="this torch's checkpoint() has no use_reentrant=")
@pytest.mark.parametrize("source", ["gpt_tiny.py", "nanogpt_style.py"])
def test_checkpoint_is_exact_with_dropout_and_saves_less(rewritten, source):
    text = (rewritten["checkpoint"] / source).read_text()
    assert "import torch.utils.checkpoint" in text
    assert "torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)" in text
    old, new = load(GPT if source == "gpt_tiny.py" else NANOGPT), load(rewritten["checkpoint"] / source)
    cfg = dict(GPT_CFG, n_layer=4, dropout=0.1)
    if source == "nanogpt_style.py":
        cfg["bias"] = True
    a, b = pair(old, new, **cfg)
    idx, tgt = batch(256, 32)
    la, ga, sa = saved_bytes_step(a, idx, tgt, seed=5)
    rng_a = torch.get_rng_state()
    lb, gb, sb = saved_bytes_step(b, idx, tgt, seed=5)
    assert torch.equal(lb, la)
    for n in ga:
        assert torch.equal(gb[n], ga[n]), n
    # The recomputation in backward replayed the RNG without advancing it.
    assert torch.equal(torch.get_rng_state(), rng_a)
    assert sb < sa / 2, f"checkpointed model saved {sb} bytes for backward, the original {sa}"
    # Evaluation takes the plain path.
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(idx)[0], b(idx)[0])


@pytest.mark.skipif(not cpu_bf16_autocast(), reason="this torch has no bf16 autocast on CPU")
def test_autocast_loop_runs_bf16_within_tolerance_and_trains(rewritten, monkeypatch):
    text = plain((rewritten["autocast"] / "gpt_tiny.py").read_text())
    assert "        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n            _, loss = model(x, y)\n        optimizer.zero_grad(set_to_none=True)\n        loss.backward()\n" in text
    argv = ["--steps", "40", "--batch-size", "8", "--seq-len", "64", "--n-layer", "2", "--n-embd", "64", "--data-bytes", "300000", "--device", "cpu"]
    runs = {}
    for tag, path in (("fp32", GPT), ("bf16", rewritten["autocast"] / "gpt_tiny.py")):
        module = load(path)
        first_grad = []
        linear_dtypes = set()

        class Recording(torch.optim.AdamW):
            def step(self, closure=None):
                if not first_grad:
                    first_grad.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]]))
                return super().step(closure)

        def hook(mod, args, out):
            if isinstance(mod, torch.nn.Linear) and mod.training:
                linear_dtypes.add(out.dtype)

        monkeypatch.setattr(torch.optim, "AdamW", Recording)
        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                module.main(argv)
        finally:
            handle.remove()
            monkeypatch.undo()
        losses = [float(v) for v in re.findall(r"^step \d+ loss ([\d.]+)$", out.getvalue(), re.M)]
        assert len(losses) == 40, out.getvalue()[-2000:]
        runs[tag] = (losses, first_grad[0], linear_dtypes)
    (l32, g32, d32), (l16, g16, d16) = runs["fp32"], runs["bf16"]
    assert d32 == {torch.float32} and d16 == {torch.bfloat16}, (d32, d16)
    assert abs(l16[0] - l32[0]) <= 1e-2 * l32[0], (l16[0], l32[0])
    rel = ((g16 - g32).norm() / g32.norm()).item()
    assert 0 < rel <= 2e-2, f"first-step gradient differs from fp32 by {rel:.3g} (relative L2)"
    assert statistics.mean(l16[-5:]) < statistics.mean(l16[:5]) - 1.0, l16
    assert abs(statistics.mean(l16[-5:]) - statistics.mean(l32[-5:])) <= 0.1, (l16[-5:], l32[-5:])


HF_SCRIPT = '''
from transformers import BertConfig, BertForMaskedLM


def build():
    config = BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM._from_config(config, attn_implementation="eager")
'''


@needs_sdpa
def test_hf_bert_eager_to_sdpa_matches(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed (HF SDPA rewrite needs it to run)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "hf_bert.py").write_text(HF_SCRIPT)
    out = convert([src / "hf_bert.py"], "sdpa", tmp_path / "new")
    assert 'attn_implementation="sdpa"' in (tmp_path / "new" / "hf_bert.py").read_text(), out
    old, new = load(src / "hf_bert.py"), load(tmp_path / "new" / "hf_bert.py")
    torch.manual_seed(0)
    a = old.build()
    b = new.build()
    assert a.config._attn_implementation == "eager" and b.config._attn_implementation == "sdpa"
    b.load_state_dict(a.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 128, (3, 24), generator=g)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, 18:] = 0
    labels = torch.randint(0, 128, (3, 24), generator=g)
    for train in (True, False):
        res = []
        for m in (a, b):
            m.train(train)
            m.zero_grad(set_to_none=True)
            o = m(input_ids=ids, attention_mask=mask, labels=labels)
            o.loss.backward()
            res.append((o.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
        (la, ga), (lb, gb) = res
        assert_close_rel(lb, la, 1e-5, "logits")
        # The key bias's gradient is exactly 0 (softmax ignores a per-row shift): only rounding noise
        # remains, so each gradient's scale is at least 1e-4 of the model's largest gradient.
        floor = 1e-4 * max(g.abs().max().item() for g in ga.values())
        worst = max(((gb[n] - ga[n]).abs().max().item() / max(ga[n].abs().max().item(), floor), n) for n in ga)
        assert worst[0] <= 1e-5, f"train={train}: grad {worst[1]} differs by {worst[0]:.3g} of its scale"
        assert ga.keys() == gb.keys()
