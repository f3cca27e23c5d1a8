"""`membit convert` checked by Python: the real CLI (dist/cli.js, built by `node esbuild.mjs`)
rewrites copies of the samples and scanner fixtures, and the converted code must compile,
import, train and load old checkpoints.

The CLI and node are required: a missing one fails these tests (CI builds before pytest).
FFN conversions (membit.sparse.SparseLinear24, the masked dense path on CPU) are run too.
"""

import importlib.util
import io
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from membit.nn import PackedDropout

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "dist" / "cli.js"
FIXTURES = REPO / "test" / "fixtures" / "scan"
SAMPLES = REPO / "samples"

# Fixtures that import with CPU torch alone (the others need timm, einops, xformers,
# a package for their relative imports, or have syntax errors on purpose).
IMPORTABLE = ["aliases_style.py", "nanogpt_style.py", "negatives_style.py", "star_import_style.py", "vision_audio_style.py"]

VARIANTS = {
    "packed": ["--dropout", "packed"],
    "recompute": ["--dropout", "recompute"],
    "all": ["--dropout", "recompute", "--ffn", "2:4"],
}


def originals():
    files = {f"fixtures/{p.name}": p for p in sorted(FIXTURES.glob("*.py"))}
    files.update({f"samples/{p.name}": p for p in sorted(SAMPLES.glob("*.py"))})
    return files


def compiles(path):
    try:
        compile(Path(path).read_bytes(), str(path), "exec")
        return True
    except SyntaxError:
        return False


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """variant -> folder holding converted copies of every fixture and sample."""
    node = shutil.which("node")
    assert node, "node is not on PATH: `membit convert` cannot run"
    assert CLI.is_file(), f"{CLI} is missing: build it with `node esbuild.mjs`"
    out = {}
    for variant, flags in VARIANTS.items():
        root = tmp_path_factory.mktemp(f"convert-{variant}")
        for rel, src in originals().items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / rel)
        proc = subprocess.run([node, str(CLI), "convert", ".", *flags], cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out[variant] = root
    return out


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the class is built.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_converted_file_compiles(converted, variant):
    root = converted[variant]
    files = [root / rel for rel, src in originals().items() if compiles(src)]
    assert len(files) >= 15
    proc = subprocess.run([sys.executable, "-m", "py_compile", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    gpt = (root / "samples" / "gpt_tiny.py").read_text()
    assert "membit.nn.PackedDropout(config.dropout" in gpt
    assert ("membit.sparse.SparseLinear24(" in gpt) == (variant == "all")
    assert ('mode="recompute"' in gpt) == (variant != "packed")


def test_revert_gives_back_every_original_byte(converted, tmp_path):
    root = tmp_path / "back"
    shutil.copytree(converted["all"], root)
    proc = subprocess.run([shutil.which("node"), str(CLI), "convert", ".", "--revert"], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for rel, src in originals().items():
        assert (root / rel).read_bytes() == src.read_bytes(), rel


def modules_of(module):
    return {n: c for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == module.__name__}


@pytest.mark.parametrize("variant", ["packed", "recompute"])
@pytest.mark.parametrize("fixture", IMPORTABLE)
def test_importable_fixtures_import_and_keep_parameter_names(converted, variant, fixture):
    original = load(FIXTURES / fixture, f"orig_{variant}_{fixture[:-3]}")
    new = load(converted[variant] / "fixtures" / fixture, f"conv_{variant}_{fixture[:-3]}")
    built = 0
    for name, cls in modules_of(original).items():
        try:
            torch.manual_seed(0)
            a = cls()
        except TypeError:
            continue  # needs constructor arguments
        torch.manual_seed(0)
        b = modules_of(new)[name]()
        built += 1
        assert list(a.state_dict()) == list(b.state_dict()), name
        # Every stock nn.Dropout became a PackedDropout in the chosen mode, at the same place.
        for (pa, ma), (pb, mb) in zip(a.named_modules(), b.named_modules()):
            assert pa == pb
            if type(ma) is nn.Dropout:
                assert isinstance(mb, PackedDropout) and mb.mode == variant and mb.p == ma.p, pa
    if fixture in ("aliases_style.py", "negatives_style.py", "star_import_style.py"):
        assert built > 0


def test_converted_nanogpt_fixture_trains_and_matches_in_eval(converted):
    original = load(FIXTURES / "nanogpt_style.py", "orig_nanogpt_eval")
    new = load(converted["recompute"] / "fixtures" / "nanogpt_style.py", "conv_nanogpt_eval")
    kw = dict(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
    torch.manual_seed(0)
    a = original.GPT(original.GPTConfig(**kw))
    b = new.GPT(new.GPTConfig(**kw))
    b.load_state_dict(a.state_dict(), strict=True)
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(idx, idx)[0], b(idx, idx)[0])
    b.train()
    _, loss = b(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None for p in b.parameters() if p.requires_grad)


@pytest.mark.parametrize("variant", ["packed", "recompute"])
def test_converted_gpt_tiny_trains_a_step_on_real_text_and_loads_old_checkpoints(converted, variant):
    original = load(SAMPLES / "gpt_tiny.py", f"orig_gpt_tiny_{variant}")
    new = load(converted[variant] / "samples" / "gpt_tiny.py", f"conv_gpt_tiny_{variant}")
    kw = dict(block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.1)

    torch.manual_seed(0)
    old = original.GPT(original.GPTConfig(**kw))
    buf = io.BytesIO()
    torch.save(old.state_dict(), buf)
    buf.seek(0)
    checkpoint = torch.load(buf)

    torch.manual_seed(0)
    model = new.GPT(new.GPTConfig(**kw))
    assert list(model.state_dict()) == list(old.state_dict())
    model.load_state_dict(checkpoint, strict=True)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(isinstance(m, PackedDropout) and m.mode == variant for m in drops)

    # The sample's own loader: the standard library's source text.
    data = torch.frombuffer(bytearray(new.stdlib_text(200_000)), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(0)
    x, y = new.get_batch(data, 8, 64, gen, torch.device("cpu"))

    # Same weights, dropout off: the converted model computes exactly what the original does.
    old.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(old(x, y)[0], model(x, y)[0])

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item()), loss
    # Byte-level text starts near ln(256).
    assert 4.0 < loss.item() < 7.0


def test_converted_gpt_tiny_with_2_4_ffns_trains_and_loads_old_checkpoints(converted):
    from membit.sparse import SparseLinear24

    original = load(SAMPLES / "gpt_tiny.py", "orig_gpt_tiny_all")
    new = load(converted["all"] / "samples" / "gpt_tiny.py", "conv_gpt_tiny_all")
    kw = dict(block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.1)
    torch.manual_seed(0)
    old = original.GPT(original.GPTConfig(**kw))
    torch.manual_seed(0)
    model = new.GPT(new.GPTConfig(**kw))
    # The converted FFN keeps nn.Linear's parameter names: an original checkpoint loads strictly.
    assert list(model.state_dict()) == list(old.state_dict())
    model.load_state_dict(old.state_dict(), strict=True)
    sparse = {n for n, m in model.named_modules() if isinstance(m, SparseLinear24)}
    assert sparse == {f"h.{i}.mlp.{p}" for i in range(2) for p in ("c_fc", "c_proj")}
    data = torch.frombuffer(bytearray(new.stdlib_text(200_000)), dtype=torch.uint8).long()
    x, y = new.get_batch(data, 8, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    assert 4.0 < loss.item() < 7.0
