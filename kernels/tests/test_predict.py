"""membit.predict: a training step's GPU memory with CUDA faked, checked against what can be checked here.

The real CPU harness runs the same script and steps: params, grads, optimizer state and what each
line saves for backward must agree, with CUDA's byte sizes substituted where the prediction is
for CUDA (a dropout mask is 1 byte per element there, 4 on CPU). Each prediction and each harness
run is a fresh process, as the extension runs them.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from membit.predict import gpus
from membit.profile.schema import validate

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(HERE)
REPO = os.path.dirname(KERNELS)
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
GPT_ARGS = ["--steps", "3", "--batch-size", "4", "--seq-len", "32", "--n-layer", "2", "--n-embd", "64", "--n-head", "4",
            "--data-bytes", "100000", "--device", "cuda"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, env.get("PYTHONPATH")) if x)
    env["MEMBIT_PROGRESS"] = "0"
    return env


def predict(tmp_path, script, args=(), *opts, name="pred.json", timeout=240):
    out = tmp_path / name
    cmd = [sys.executable, "-m", "membit.predict", "--out", str(out), "--root", REPO, *opts, "--", str(script), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert out.exists(), proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    return proc, doc


def harness(tmp_path, script, args=(), *opts, name="run.json", timeout=240):
    out = tmp_path / name
    cmd = [sys.executable, "-m", "membit.profile", "--out", str(out), "--root", REPO, *opts, "--", str(script), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt")
    proc, pred = predict(tmp, GPT, GPT_ARGS, "--gpu", "A100-80GB")
    cpu_args = [a if a != "cuda" else "cpu" for a in GPT_ARGS]
    meas = harness(tmp, GPT, cpu_args, "--warmup", "0", "--steps", "2")
    return proc, pred, meas


def test_prediction_is_a_valid_report_marked_predicted(gpt_pair):
    proc, pred, _ = gpt_pair
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert validate(pred) == []
    p = pred["run"]["prediction"]
    assert p["complete"] is True and p["partial_reason"] is None
    assert p["steps"] == 2
    assert pred["run"]["device"]["name"] == gpus.lookup("A100-80GB").name
    assert pred["run"]["device"]["type"] == "cuda"
    # The peak is the tensors' peak plus the allocator-side fixed costs, each labelled from the table.
    in_alloc = sum(f["bytes"] for f in p["fixed"] if f["in_allocator"])
    assert p["peak_allocated"] == p["tensors_peak"] + in_alloc == pred["summary"]["peak_allocated"]
    assert all(f["source"].startswith("per-GPU table") for f in p["fixed"])
    assert any(f["what"] == "CUDA context" and not f["in_allocator"] for f in p["fixed"])
    # Categories at the peak add up to no more than the tensors' peak.
    assert 0 < sum(p["categories"].values()) <= p["tensors_peak"]
    assert p["categories"]["params"] > 0 and p["categories"]["activations"] > 0
    # The timeline is the accountant's trace: its maximum is the tensors' peak.
    assert max(pred["timeline"]["allocated"]) == p["tensors_peak"]
    # Reserved memory is the segment replay's, event for event: never below allocated, and its
    # highest point is the prediction's reserved peak; the card's need is that plus the context.
    tl = pred["timeline"]
    assert all(r >= a for r, a in zip(tl["reserved"], tl["allocated"]))
    assert max(tl["reserved"]) <= p["peak_reserved"] == pred["summary"]["peak_reserved"]
    assert p["peak_reserved"] >= p["peak_allocated"]
    context = sum(f["bytes"] for f in p["fixed"] if not f["in_allocator"])
    assert p["device_need"] == p["peak_reserved"] + context
    assert p["fits"] is True and p["out_of_memory"] is None
    # The sample prints loss.item(): a read of a value the fake cannot know, named at its line.
    reads = [r for r in p["host_reads"] if r["what"] == ".item()" and r["user"]]
    assert reads and reads[0]["file"] == "samples/gpt_tiny.py"
    src = open(GPT).read().splitlines()
    assert "loss.item()" in src[reads[0]["line"] - 1]


def test_prediction_matches_the_cpu_harness(gpt_pair):
    """Params, grads, optimizer state (created at the first optimizer step) and saved bytes by line."""
    _, pred, meas = gpt_pair
    ps, ms = pred["summary"], meas["summary"]
    assert ms["params"] > 0
    assert ps["params"] == ms["params"]
    assert ps["grads"] == ms["grads"]
    # Adam's per-parameter step counters are CPU scalars on CUDA too (not capturable): not device
    # memory, so the prediction leaves out the 4 bytes per parameter tensor the CPU run counts.
    sys.path.insert(0, os.path.dirname(GPT))
    from gpt_tiny import GPT as Model
    from gpt_tiny import GPTConfig

    n_tensors = len(list(Model(GPTConfig(block_size=32, n_layer=2, n_head=4, n_embd=64)).parameters()))
    assert ps["optimizer_state"] == ms["optimizer_state"] - 4 * n_tensors > 0
    mlines = {(e["file"], e["line"]): e for e in meas["lines"]}
    plines = {(e["file"], e["line"]): e for e in pred["lines"]}
    assert set(plines) == set(mlines)
    masks = 0
    dropout_lines = {s["line"] for s in meas["sites"]}
    for key, m in mlines.items():
        p = plines[key]
        # Activations are the same bytes on both devices (same dtypes, fp32 here).
        assert p["saved_bytes"] - p["mask_bytes"] == m["saved_bytes"] - m["mask_bytes"], key
        if key[1] in dropout_lines:
            # CPU's dropout keeps a float32 mask (4 B/element), CUDA's a bool one (1 B/element).
            assert p["mask_bytes"] * 4 == m["mask_bytes"], key
            masks += p["mask_bytes"]
        else:
            assert p["mask_bytes"] == m["mask_bytes"], key  # bool masks (masked_fill) are bool on both
    assert masks > 0
    assert {s["line"]: s["elements"] for s in pred["sites"]} == {s["line"]: s["elements"] for s in meas["sites"]}


def test_target_gpu_semantics_sdpa_autocast_and_masks(tmp_path):
    script = tmp_path / "attn.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.nn.functional as F
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.qkv = torch.nn.Linear(64, 192)
                self.ln = torch.nn.LayerNorm(64)
            def forward(self, x):
                q, k, v = self.qkv(x).view(2, 128, 3, 4, 16).permute(2, 0, 3, 1, 4)
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, is_causal=True)
                s = torch.softmax(q @ k.transpose(-1, -2), dim=-1)   # eager probabilities
                return self.ln(y.transpose(1, 2).reshape(2, 128, 64)).float().sum() + s.float().sum()
        m = M().cuda()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = m(torch.randn(2, 128, 64, device="cuda"))
            loss.backward()
            opt.step()
            opt.zero_grad()
    """))
    proc, doc = predict(tmp_path, script, (), "--gpu", "H100-80GB")
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = doc["run"]["prediction"]
    # bf16, no mask, head size 16: flash attention (it keeps no probabilities and no mask).
    assert p["sdpa_backends"] == {"flash": 2}
    by_line = {e["line"]: e for e in doc["lines"]}
    src = script.read_text().splitlines()
    softmax_line = next(i + 1 for i, t in enumerate(src) if "torch.softmax" in t)
    sdpa_line = next(i + 1 for i, t in enumerate(src) if "scaled_dot_product_attention" in t)
    # CUDA autocast runs softmax in float32: it keeps its fp32 output, 2*4*128*128*4 bytes.
    ops = {o["op"]: o["bytes"] for o in by_line[softmax_line]["ops"]}
    assert ops.get("softmax") == 2 * 4 * 128 * 128 * 4
    # Flash keeps q, k, v, out (bf16), the float32 logsumexp and its RNG state, never an L x L matrix.
    qkvo = 4 * (2 * 4 * 128 * 16 * 2)
    assert qkvo + 2 * 4 * 128 * 4 <= by_line[sdpa_line]["saved_bytes"] <= qkvo + 2 * 4 * 128 * 4 + 64
    assert by_line[sdpa_line]["mask_bytes"] == 0


def test_sdpa_backend_rules():
    from membit.predict.fakecuda import FakeCuda
    from membit.profile.frames import CodeFilter

    def choice(gpu, dtype, d=64, mask=None):
        env = FakeCuda(gpus.lookup(gpu), CodeFilter(), lambda: 0)
        q = torch.empty(2, 4, 32, d, dtype=dtype, device="meta")
        return env.sdpa_backend(q, q, q, mask, 0.0)

    assert choice("A100-80GB", torch.bfloat16) == "flash"
    assert choice("A100-80GB", torch.float32) == "efficient"
    assert choice("A100-80GB", torch.float16, mask=torch.empty(32, 32, device="meta")) == "efficient"
    assert choice("T4", torch.float16) == "efficient"  # flash needs compute capability 8.0
    assert choice("A100-80GB", torch.float16, d=20) == "math"  # head size not a multiple of 8


def test_partial_prediction_says_where_it_stopped(tmp_path):
    script = tmp_path / "ext.py"
    script.write_text(textwrap.dedent("""
        import torch
        lib = torch.library.Library("extdemo", "DEF")
        lib.define("scale(Tensor x) -> Tensor")
        lib.impl("scale", lambda x: x * 2, "CPU")  # a compiled extension: kernels, no meta kernel
        m = torch.nn.Linear(32, 32).cuda()
        x = m(torch.randn(8, 32).cuda())
        print(float(x.cpu().sum()))
        y = torch.ops.extdemo.scale(x)
        y.sum().backward()
    """))
    proc, doc = predict(tmp_path, script)
    p = doc["run"]["prediction"]
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert p["complete"] is False
    assert "ext.py:9" in p["partial_reason"] and "at least" in p["partial_reason"]
    assert doc["run"]["status"] == "error" and "extdemo" in doc["run"]["error"]
    assert (".cpu()", 8, True) in {(r["what"], r["line"], r["user"]) for r in p["host_reads"]}
    # What it could follow is still there: the Linear's parameters and its output.
    assert p["tensors_peak"] >= (32 * 32 + 32) * 4 + 8 * 32 * 4


def test_checkpoint_recompute_under_autocast(tmp_path):
    """Checkpointing recomputes in backward on autograd's thread: it must see the same fake CUDA and autocast."""
    script = tmp_path / "ckpt.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch.utils.checkpoint import checkpoint
        lin = torch.nn.Linear(64, 64).cuda()
        opt = torch.optim.SGD(lin.parameters())
        x = torch.randn(32, 64, device="cuda", requires_grad=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = checkpoint(lambda t: lin(t).relu(), x, use_reentrant=False)
        y.float().sum().backward()
        opt.step()
    """))
    proc, doc = predict(tmp_path, script, (), "--steps", "1")
    assert proc.returncode == 0, doc["run"]["error"]
    assert doc["run"]["prediction"]["complete"] is True


def test_values_from_real_data_steer_control_flow(tmp_path):
    """Small integer tensors copied from real data keep their values: no guess is needed."""
    script = tmp_path / "mask.py"
    script.write_text(textwrap.dedent("""
        import torch
        ids = torch.arange(24).view(4, 6).cuda()
        mask = (ids % 5 != 0).cuda()
        assert not bool(mask.all())          # real values: some ids are multiples of 5
        n = int(mask.sum().item())
        assert n == 24 - 5, n
        emb = torch.nn.Embedding(32, 8).cuda()
        opt = torch.optim.Adam(emb.parameters())
        emb(ids[mask].view(-1)).sum().backward()
        opt.step()
    """))
    proc, doc = predict(tmp_path, script, (), "--steps", "1")
    assert proc.returncode == 0, doc["run"]["error"]
    assert doc["run"]["prediction"]["host_reads"] == []


def test_find_max_batch_brackets_the_capacity(tmp_path):
    proc, doc = predict(tmp_path, GPT, GPT_ARGS, "--gpu", "1GiB", "--find-max-batch", "--max", "4096", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mb = doc["run"]["prediction"]["max_batch"]
    assert mb["arg"] == "--batch-size" and mb["status"] == "ok"
    b = mb["largest"]
    rows = {r["value"]: r for r in mb["probes"]}
    assert rows[b]["fits"] and b + 1 in rows and not rows[b + 1]["fits"]
    cap = gpus.custom(1 << 30).total_bytes
    assert rows[b]["device_need"] <= cap < rows[b + 1]["device_need"]


def test_gpu_table():
    assert gpus.lookup("h100").key == "H100-80GB"
    assert gpus.lookup("a100-40gb").total_bytes < gpus.lookup("A100-80GB").total_bytes
    assert gpus.lookup("nope") is None
    h = gpus.lookup("H100-80GB")
    assert h.cublas_workspace_bytes == 32 * 1024 * 1024  # PyTorch's default on compute capability 9.0
    assert gpus.lookup("A100-80GB").cublas_workspace_bytes == 4096 * 1024 * 2 + 16 * 1024 * 8


def test_cuda_kernel_temporaries_are_counted(tmp_path):
    # CUDA's softmax backward computes grad * output into a tensor of its own before its kernel
    # runs (SoftMax.cu, softmax_backward_cuda_out); the meta kernel returns only the gradient.
    # Measured on an H100 (benchmarks/op_transients.py): the op's own peak is its output plus
    # one more tensor of the same size.
    script = tmp_path / "softmax.py"
    script.write_text(textwrap.dedent("""
        import torch
        x = torch.randn(8, 1024, 1024, device="cuda", requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.1)
        for _ in range(2):
            y = torch.softmax(x, dim=-1)
            y.backward(torch.ones_like(y))
            opt.step()
            opt.zero_grad()
    """))
    proc, doc = predict(tmp_path, script, (), "--gpu", "H100-80GB")
    assert proc.returncode == 0, proc.stderr[-2000:]
    mib32 = 8 * 1024 * 1024 * 4
    # x, y (saved), the incoming gradient, the outgoing gradient and CUDA's grad * output.
    assert doc["run"]["prediction"]["complete"]
    assert doc["run"]["prediction"]["tensors_peak"] == 5 * mib32
