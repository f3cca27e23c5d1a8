"""The advisor's levers as harness variants (sdpa, checkpoint, bf16), end to end on CPU.

Each run is the real `python -m membit.profile` on the GPT sample at tiny sizes; figures are
checked against what the sample's shapes say they must be:

- checkpoint: each checkpointed block keeps exactly its input (B·T·C·4 bytes) and nothing
  inside it; what is saved outside the blocks is unchanged; so the saving is at least the
  attention probabilities, their dropout mask and dropped copy, and the MLP's two hidden
  tensors of every block, minus the block inputs. Replays in backward count no second
  forward: batch size, dropout calls and module calls equal the baseline's.
- bf16: every Linear saves its input in bf16 (N·in·2 instead of N·in·4, half) plus autocast's
  bf16 copy of its weight (in·out·2).
- sdpa: the GPT sample's eager attention rewritten by the real rewriter (`membit convert
  --lever sdpa`, the CLI the extension ships) runs through --overlay under the sample's own
  file name; lines map back onto the sample; without an overlay the run fails and says what
  to do.
- --overlay itself: the replacement's text runs as the script and as an imported module,
  under the original's name; bad arguments fail with the problem named.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from membit.profile.levers import VariantError, canonical, parse_variant
from membit.profile.overlay import LineMap, OverlayError, parse_overlay_arg

from test_profile import GPT, GPT_ARGS, GPT_SHAPE, REPO, assert_consistent, assert_valid, line_of, progress_events, run_harness

CLI = Path(REPO) / "dist" / "cli.js"
from conftest import HAS_SDPA, cpu_bf16_autocast  # noqa: E402



def checkpoint_saves_its_inputs():
    """Whether non-reentrant checkpointing keeps a block's inputs as saved tensors (torch >= 2.1),
    which saved-tensor hooks see, or by reference (earlier), which they do not."""
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(3, requires_grad=True)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = checkpoint(lambda v: (v * v).sum(), x, use_reentrant=False)
    y.backward()
    return any(t is x or (t.shape == x.shape and t.data_ptr() == x.data_ptr()) for t in packed)


def first_loss(stdout):
    for line in stdout.splitlines():
        if line.startswith("step 1 loss"):
            return line
    raise AssertionError(f"no 'step 1 loss' line in:\n{stdout[-2000:]}")


def modules_by_path(report):
    return {m["path"]: m for m in report["modules"]}


def run_variant(tmp, variant, *opts, name=None):
    proc, report = run_harness(tmp, "samples/gpt_tiny.py", GPT_ARGS, "--variant", variant, "--steps", "2",
                               "--warmup", "1", *opts, name=name or f"{variant.replace('+', '_')}.json")
    return proc, report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """variant -> (process, report) for the runs several tests read."""
    tmp = tmp_path_factory.mktemp("variants")
    out = {}
    for v in ("baseline", "checkpoint"):
        out[v] = run_variant(tmp, v)
    if cpu_bf16_autocast():
        out["bf16"] = run_variant(tmp, "bf16")
    return out


@pytest.fixture(scope="module")
def gpt_sdpa_overlay(tmp_path_factory):
    """The GPT sample rewritten to SDPA by the real CLI (`membit convert --lever sdpa`)."""
    node = shutil.which("node")
    assert node, "node is not on PATH: `membit convert` cannot run"
    assert CLI.is_file(), f"{CLI} is missing: build it with `node esbuild.mjs`"
    root = tmp_path_factory.mktemp("sdpa-overlay")
    shutil.copyfile(GPT, root / "gpt_tiny.py")
    proc = subprocess.run([node, str(CLI), "convert", ".", "--lever", "sdpa"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (root / "gpt_tiny.py").read_text(encoding="utf-8")
    assert "scaled_dot_product_attention" in text, proc.stdout
    return root / "gpt_tiny.py"


# -- variant names --------------------------------------------------------------------------

def test_variant_names_are_canonical_and_old_names_still_work():
    for old in ("baseline", "packed", "recompute", "sparse24", "packed+sparse24"):
        assert canonical(old) == old
    assert canonical("bf16+sdpa+checkpoint") == "sdpa+checkpoint+bf16"
    assert canonical(" checkpoint+packed ") == "packed+checkpoint"
    assert parse_variant("baseline") == ()
    assert parse_variant("sparse24+recompute+bf16") == ("recompute", "sparse24", "bf16")


@pytest.mark.parametrize("bad, says", [
    ("", "write 'baseline' or levers"),
    ("sdpa+", "write 'baseline' or levers"),
    ("flash", "unknown lever(s) 'flash'"),
    ("baseline+sdpa", "'baseline' stands alone"),
    ("sdpa+sdpa", "names sdpa twice"),
    ("packed+recompute", "pick one"),
])
def test_bad_variant_names_say_why(bad, says):
    with pytest.raises(VariantError) as e:
        parse_variant(bad)
    assert says in str(e.value)


def test_bad_variant_on_the_command_line_is_a_usage_error(tmp_path):
    proc, report = run_harness(tmp_path, "samples/gpt_tiny.py", GPT_ARGS, "--variant", "packed+recompute")
    assert proc.returncode == 2 and report is None
    assert "--variant" in proc.stderr and "pick one" in proc.stderr


# -- checkpoint -----------------------------------------------------------------------------

def test_checkpoint_keeps_only_block_inputs_and_counts_no_replay(runs):
    (_, base), (proc, ck) = runs["baseline"], runs["checkpoint"]
    for r in (base, ck):
        assert_valid(r)
        assert_consistent(r)
        assert r["run"]["status"] == "ok", r["run"]["error"]
    assert ck["run"]["variant"] == "checkpoint"
    (lever,) = ck["run"]["levers"]
    assert lever == {"lever": "checkpoint", "how": "torch.utils.checkpoint (use_reentrant=False) on h (2 Block blocks)"}
    assert base["run"]["levers"] == [] and base["run"]["overlays"] == []

    b, t, n, c, h = (GPT_SHAPE[k] for k in ("batch", "seq", "layers", "embd", "heads"))
    f32 = 4
    # Older torch keeps the inputs alive by reference, where no saved-tensor hook sees them.
    block_input = b * t * c * f32 if checkpoint_saves_its_inputs() else 0
    mb, mc = modules_by_path(base), modules_by_path(ck)
    for i in range(n):
        assert mc[f"h.{i}"]["saved_bytes"] == block_input
        inside = [p for p in mc if p.startswith(f"h.{i}.")]
        assert inside and all(mc[p]["saved_bytes"] == 0 for p in inside)
    outside = {p for p in mb if not p.startswith("h.")}
    assert {p: mc[p]["saved_bytes"] for p in outside} == {p: mb[p]["saved_bytes"] for p in outside}

    # What each block no longer keeps, at least: attention probabilities, their (float, on CPU)
    # dropout mask and the dropped probabilities that multiply v; the MLP's hidden before and after GELU.
    per_block = 3 * b * h * t * t * f32 + 2 * b * t * 4 * c * f32
    least = n * (per_block - block_input)
    saved_b, saved_c = base["summary"]["saved_bytes"], ck["summary"]["saved_bytes"]
    assert saved_b - saved_c >= least, (saved_b, saved_c, least)
    assert saved_c <= saved_b * (1 - least / saved_b)

    # The replayed forwards in backward count nothing a second time.
    assert ck["summary"]["batch_size"] == base["summary"]["batch_size"] == b
    calls = [sorted((s["file"], s["line"], s["calls"], s["elements"]) for s in r["sites"]) for r in (base, ck)]
    assert calls[0] == calls[1] and len(calls[0]) == 4
    assert all(mc[p]["calls"] == mb[p]["calls"] for p in mb)
    # Same maths: non-reentrant checkpointing replays the RNG, so the first step's loss is identical.
    assert first_loss(proc.stdout) == first_loss(runs["baseline"][0].stdout)


def test_checkpoint_without_blocks_fails_and_says_what_to_do(tmp_path):
    script = tmp_path / "flat.py"
    script.write_text(
        "import torch\n"
        "model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for _ in range(3):\n"
        "    loss = model(torch.randn(4, 8)).sum()\n"
        "    opt.zero_grad()\n"
        "    loss.backward()\n"
        "    opt.step()\n", encoding="utf-8")
    proc, report = run_harness(tmp_path, str(script), (), "--variant", "checkpoint", "--warmup", "0", "--steps", "1")
    assert proc.returncode == 1
    assert_valid(report)
    err = report["run"]["error"]
    assert report["run"]["status"] == "error"
    assert "checkpoint: Sequential has no nn.ModuleList of 2 or more blocks" in err and "code action" in err


# -- bf16 -----------------------------------------------------------------------------------

@pytest.mark.skipif(not cpu_bf16_autocast(), reason="this torch has no CPU bf16 autocast")
def test_bf16_halves_what_linears_save(runs):
    (_, base), (_, bf) = runs["baseline"], runs["bf16"]
    assert_valid(bf)
    assert_consistent(bf)
    assert bf["run"]["status"] == "ok", bf["run"]["error"]
    assert bf["run"]["levers"] == [{"lever": "bf16", "how": "torch.autocast('cpu', dtype=torch.bfloat16) around GPT.forward"}]
    b, t, c = (GPT_SHAPE[k] for k in ("batch", "seq", "embd"))
    tokens = b * t
    mb, mf = modules_by_path(base), modules_by_path(bf)
    linears = [p for p, m in mb.items() if m["type"] == "Linear"]
    assert len(linears) == 4 * GPT_SHAPE["layers"] + 1
    model = _gpt_model()
    for p in linears:
        m = model.get_submodule(p)
        fp32_input = tokens * m.in_features * 4
        assert mb[p]["saved_bytes"] == fp32_input, p
        # Half the input's bytes, plus the bf16 copy of the weight autocast makes for backward.
        assert mf[p]["saved_bytes"] == fp32_input // 2 + m.in_features * m.out_features * 2, p
    assert bf["summary"]["saved_bytes"] < base["summary"]["saved_bytes"]


def _gpt_model():
    """The sample's model at the test sizes, for the shapes of its layers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpt_tiny_shapes", GPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    cfg = mod.GPTConfig(block_size=GPT_SHAPE["seq"], n_layer=GPT_SHAPE["layers"], n_head=GPT_SHAPE["heads"],
                        n_embd=GPT_SHAPE["embd"])
    return mod.GPT(cfg)


# -- sdpa -----------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_SDPA, reason="this torch has no F.scaled_dot_product_attention (added in 2.0)")
def test_sdpa_runs_the_rewritten_sample_under_its_own_name(runs, gpt_sdpa_overlay, tmp_path):
    _, base = runs["baseline"]
    proc, rep = run_variant(tmp_path, "sdpa", "--overlay", f"{GPT}={gpt_sdpa_overlay}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(rep)
    assert_consistent(rep)
    run = rep["run"]
    (lever,) = run["levers"]
    assert lever["lever"] == "sdpa"
    n = GPT_SHAPE["layers"]
    assert lever["how"] == (f"eager attention rewritten to scaled_dot_product_attention in samples/gpt_tiny.py "
                            f"(--overlay); {n} scaled_dot_product_attention call(s) in the first forward")
    # The rewritten region (the eager chain) is where figures are approximate; the rest maps exactly.
    first, last = line_of(GPT, "att = (q @ k.transpose"), line_of(GPT, "y = att @ v")
    (ov,) = run["overlays"]
    assert ov["file"] == "samples/gpt_tiny.py" and ov["used"] is True
    assert ov["approximate"] == [{"first": first, "last": last}]
    assert run["script"] == "samples/gpt_tiny.py"
    sites = {(s["file"], s["line"]): s for s in rep["sites"]}
    fused = sites[("samples/gpt_tiny.py", first)]
    assert fused["kind"] == "fused-attn-dropout" and fused["mask_bytes"] == 0 and fused["calls"] == n
    # Lines outside the rewrite keep the original's numbers: the same lines as the baseline's.
    assert sites[("samples/gpt_tiny.py", line_of(GPT, "return self.resid_dropout(self.c_proj(y))"))]["kind"] == "dropout"
    base_lines = {(e["file"], e["line"]) for e in base["lines"]}
    outside = {(e["file"], e["line"]) for e in rep["lines"] if not (e["file"] == "samples/gpt_tiny.py" and first <= e["line"] <= last)}
    assert outside and outside <= base_lines


@pytest.mark.skipif(not HAS_SDPA, reason="this torch has no F.scaled_dot_product_attention (added in 2.0)")
def test_sdpa_keeps_no_attention_probabilities(gpt_sdpa_overlay, tmp_path):
    # Dropout 0: with attention dropout on, CPU PyTorch runs SDPA through its math kernel,
    # which keeps the probabilities (CUDA's fused kernels do not). Sequence longer than the
    # width, so that the L² probabilities outweigh what SDPA keeps instead.
    b, t, n, c, h = 2, 128, 2, 32, 2
    args = ["--steps", "20", "--batch-size", str(b), "--seq-len", str(t), "--n-layer", str(n), "--n-embd", str(c),
            "--n-head", str(h), "--data-bytes", "100000", "--dropout", "0.0", "--device", "cpu"]
    _, base = run_harness(tmp_path, "samples/gpt_tiny.py", args, "--steps", "2", name="d0-baseline.json")
    proc, rep = run_harness(tmp_path, "samples/gpt_tiny.py", args, "--steps", "2", "--variant", "sdpa",
                            "--overlay", f"{GPT}={gpt_sdpa_overlay}", name="d0-sdpa.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(rep)
    # Eager attention keeps the softmax's B·H·T·T output (and more); SDPA keeps at most its
    # output (B·T·C) and per-row statistics (B·H·T) in its place.
    least = n * (b * h * t * t - b * t * c - b * h * t) * 4
    assert base["summary"]["saved_bytes"] - rep["summary"]["saved_bytes"] >= least
    attn = [p for p in modules_by_path(base) if p.endswith(".attn")]
    assert len(attn) == n
    for p in attn:
        assert modules_by_path(base)[p]["saved_bytes"] - modules_by_path(rep)[p]["saved_bytes"] >= least // n


@pytest.mark.skipif(not HAS_SDPA, reason="this torch has no F.scaled_dot_product_attention (added in 2.0)")
def test_sdpa_without_hf_model_or_overlay_fails_and_says_what_to_do(tmp_path):
    proc, rep = run_variant(tmp_path, "sdpa")
    assert proc.returncode == 1
    assert_valid(rep)
    assert rep["run"]["status"] == "error"
    assert rep["run"]["error"] == ("variant 'sdpa': sdpa: no HF model and no eager attention block Membit can rewrite "
                                   "in samples/gpt_tiny.py; convert it with the code action or write SDPA by hand")
    assert progress_events(proc.stderr)[-1]["status"] == "error"


@pytest.mark.skipif(not HAS_SDPA or not cpu_bf16_autocast(), reason="needs SDPA and CPU bf16 autocast")
def test_all_levers_combined(runs, gpt_sdpa_overlay, tmp_path):
    _, base = runs["baseline"]
    proc, rep = run_variant(tmp_path, "bf16+checkpoint+sdpa", "--overlay", f"{GPT}={gpt_sdpa_overlay}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(rep)
    assert_consistent(rep)
    assert rep["run"]["variant"] == "sdpa+checkpoint+bf16"
    assert [lv["lever"] for lv in rep["run"]["levers"]] == ["sdpa", "checkpoint", "bf16"]
    assert rep["summary"]["batch_size"] == base["summary"]["batch_size"]
    b, t, c = (GPT_SHAPE[k] for k in ("batch", "seq", "embd"))
    mods = modules_by_path(rep)
    # Checkpointed blocks keep their (float32: the residual stream stays float32 under autocast) input.
    for i in range(GPT_SHAPE["layers"]):
        assert mods[f"h.{i}"]["saved_bytes"] == (b * t * c * 4 if checkpoint_saves_its_inputs() else 0)
    # Outside the blocks, bf16 applies: lm_head saves its input in bf16 and its weight's bf16 copy.
    assert mods["lm_head"]["saved_bytes"] == b * t * c * 2 + c * 256 * 2
    assert rep["summary"]["saved_bytes"] < base["summary"]["saved_bytes"]


# -- --overlay ------------------------------------------------------------------------------

def test_overlay_runs_the_replacement_as_script_and_module_under_the_original_name(tmp_path):
    orig = tmp_path / "train.py"
    helper = tmp_path / "helper.py"
    orig.write_text("import helper\nprint('ORIGINAL SCRIPT', helper.name())\n", encoding="utf-8")
    helper.write_text("def name():\n    return 'original helper'\n", encoding="utf-8")
    alt = tmp_path / "alt"
    alt.mkdir()
    (alt / "train.py").write_text(
        "import helper, inspect\n"
        "print('MARKER from replacement', __file__, helper.name(), helper.__file__)\n"
        "print('CODE FILE', inspect.currentframe().f_code.co_filename)\n"
        "def fails():\n"
        "    raise RuntimeError('raised in the replacement')\n"
        "fails()\n", encoding="utf-8")
    (alt / "helper_v2.py").write_text("def name():\n    return 'replaced helper'\n", encoding="utf-8")
    proc, rep = run_harness(tmp_path, str(orig), (), "--root", str(tmp_path), "--warmup", "0",
                            "--overlay", f"{orig}={alt / 'train.py'}", "--overlay", f"{helper}={alt / 'helper_v2.py'}")
    assert "ORIGINAL SCRIPT" not in proc.stdout
    assert f"MARKER from replacement {orig} replaced helper {helper}" in proc.stdout
    assert f"CODE FILE {orig}" in proc.stdout
    assert_valid(rep)
    # The failure points at the original file, at the line the replacement raised from (mapped back).
    assert rep["run"]["status"] == "error"
    assert "raised in the replacement" in rep["run"]["error"]
    assert rep["run"]["error_at"] == {"file": "train.py", "line": 2}
    assert [o["file"] for o in rep["run"]["overlays"]] == ["train.py", "helper.py"]
    assert all(o["used"] for o in rep["run"]["overlays"])
    # The user's files are never written.
    assert orig.read_text(encoding="utf-8").startswith("import helper\nprint('ORIGINAL SCRIPT'")


def test_overlay_that_does_not_compile_fails_the_run_with_the_reason(tmp_path):
    orig = tmp_path / "train.py"
    orig.write_text("print('hi')\n", encoding="utf-8")
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n", encoding="utf-8")
    proc, rep = run_harness(tmp_path, str(orig), (), "--overlay", f"{orig}={bad}")
    assert proc.returncode == 1 and "hi" not in proc.stdout
    assert_valid(rep)
    assert rep["run"]["status"] == "error"
    assert rep["run"]["error"].startswith(f"the overlay {bad} for {orig} does not compile:")


def test_bad_overlay_arguments_name_the_problem(tmp_path):
    orig = tmp_path / "train.py"
    orig.write_text("print('hi')\n", encoding="utf-8")
    repl = tmp_path / "new.py"
    repl.write_text("print('new')\n", encoding="utf-8")
    data = tmp_path / "data.txt"
    data.write_text("x", encoding="utf-8")
    cases = [
        (str(orig), "--overlay needs ORIG=REPLACEMENT"),
        (f"{orig}=", "both files named"),
        (f"{tmp_path / 'missing.py'}={repl}", "the original file"),
        (f"{orig}={tmp_path / 'missing.py'}", "the replacement file"),
        (f"{data}={repl}", "is not a .py file"),
    ]
    for arg, says in cases:
        with pytest.raises(OverlayError) as e:
            parse_overlay_arg(arg)
        assert says in str(e.value), (arg, str(e.value))
        proc, report = run_harness(tmp_path, str(orig), (), "--overlay", arg)
        assert proc.returncode == 2 and report is None, arg
        assert says in proc.stderr, (arg, proc.stderr[-500:])
    proc, report = run_harness(tmp_path, str(orig), (), "--overlay", f"{orig}={repl}", "--overlay", f"{orig}={repl}")
    assert proc.returncode == 1 and "names" in report["run"]["error"] and "twice" in report["run"]["error"]


def test_overlay_names_with_equals_signs_and_spaces(tmp_path):
    odd = tmp_path / "a=b c"
    odd.mkdir()
    orig = odd / "x=1.py"
    orig.write_text("print('original')\n", encoding="utf-8")
    repl = odd / "y.py"
    repl.write_text("print('replacement ran')\n", encoding="utf-8")
    assert parse_overlay_arg(f"{orig}={repl}") == (str(orig), str(repl))
    proc, rep = run_harness(tmp_path, str(orig), (), "--overlay", f"{orig}={repl}")
    assert proc.returncode == 0 and "replacement ran" in proc.stdout and "original" not in proc.stdout


def test_overlay_argument_read_two_ways_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("p", "q=r.py", "p=q", "r.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    with pytest.raises(OverlayError, match="can be read 2 ways"):
        parse_overlay_arg("p=q=r.py")


def test_line_map_is_exact_outside_rewrites_and_approximate_inside():
    original = "a\nb\nc1\nc2\nc3\nd\ne\n"
    rewritten = "import x\na\nb\nC\nd\ne\n"
    m = LineMap(original, rewritten)
    assert [m(k) for k in range(1, 7)] == [1, 1, 2, 3, 6, 7]
    assert m.approximate == [(1, 1), (3, 5)]
