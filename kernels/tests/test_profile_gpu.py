"""The profiling harness on a CUDA device: allocator history, timeline, and a real OOM.

Skipped only where torch.cuda.is_available() is False (see conftest.py).
"""

import pytest
import torch

from test_profile import GPT, assert_consistent, assert_valid, line_of, progress_events, run_harness

pytestmark = pytest.mark.gpu

B, T, C, H, N = 8, 64, 64, 4, 2
GPT_CUDA = ["--steps", "20", "--batch-size", str(B), "--seq-len", str(T), "--n-layer", str(N), "--n-embd", str(C),
            "--n-head", str(H), "--data-bytes", "200000", "--dropout", "0.1", "--device", "cuda"]


def test_gpt_on_cuda_uses_the_allocator_record(tmp_path):
    proc, report = run_harness(tmp_path, "samples/gpt_tiny.py", GPT_CUDA, "--steps", "3", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(report)
    assert_consistent(report)
    run, s = report["run"], report["summary"]
    assert run["device"]["type"] == "cuda" and run["device"]["total_bytes"] > 0
    assert not [n for n in run["notes"] if "NVML" not in n], run["notes"]
    assert s["peak_allocated"] > 0 and s["peak_reserved"] >= s["peak_allocated"]
    assert s["tracked_at_peak"] + s["unattributed_at_peak"] == s["peak_allocated"]
    assert s["params_at_peak"] == s["params"] and s["optimizer_state_at_peak"] == s["optimizer_state"]
    peak = report["peak"]
    assert peak["source"] == "allocator" and peak["phase"] in ("forward", "backward", "optimizer")
    # The replay counts requested sizes rounded to 512-byte blocks: at most the allocator's peak.
    assert 0.9 * s["peak_allocated"] <= peak["replay_bytes"] <= s["peak_allocated"]
    # Saved tensors name where they were allocated and saved; blocks from before the profiled
    # steps (e.g. the matmul library's workspace) may have no stack and stay unattributed.
    saved = [h for h in peak["top"] if h["category"] in ("activation", "mask")]
    assert saved and all(h["frames"] and h["saved_at"] for h in saved)
    assert s["grads_at_peak"] in (0, s["grads"])  # grads are all alive or none (zero_grad set_to_none)
    tl = report["timeline"]
    assert len(tl["t_ms"]) > 20 and max(tl["allocated"]) == peak["replay_bytes"]
    assert {"forward", "backward", "optimizer"} <= set(tl["phase"])
    assert tl["t_ms"] == sorted(tl["t_ms"])
    # CUDA dropout saves a bool mask: one byte per element.
    by_line = {e["line"]: e for e in report["lines"] if e["file"] == "samples/gpt_tiny.py"}
    assert by_line[line_of(GPT, "att = self.attn_dropout(att)")]["mask_bytes"] == N * B * H * T * T
    assert by_line[line_of(GPT, "return self.resid_dropout(self.c_proj(y))")]["mask_bytes"] == N * B * T * C
    ops = {o["op"] for o in by_line[line_of(GPT, "att = self.attn_dropout(att)")]["ops"]}
    assert ops == {"native_dropout"}
    mods = {m["path"]: m for m in report["modules"]}
    assert mods["h.0.mlp"]["fwd_ms"] > 0 and mods["h.0.mlp"]["calls"] == 1
    assert s["step_time_s"] > 0 and s["batch_size"] == B


OOM = """\
import torch

W = 1024
# Each [B, W] float32 activation takes 40% of the card: the third one cannot fit.
B = int(0.4 * torch.cuda.get_device_properties(0).total_memory) // (W * 4)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(W, W)
        self.out = torch.nn.Linear(W, 1)

    def forward(self, x):
        h = self.inp(x)
        h = torch.relu(h)
        return self.out(h).sum()


model = Net().cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(3):
    x = torch.randn(B, W, device="cuda")
    loss = model(x)
    loss.backward()
    opt.step()
    opt.zero_grad()
"""


def test_real_oom_names_the_holders_and_the_lines(tmp_path):
    script = tmp_path / "oom.py"
    script.write_text(OOM)
    proc, report = run_harness(tmp_path, str(script), (), "--steps", "2", "--warmup", "1", "--root", str(tmp_path))
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert_valid(report)
    assert_consistent(report)
    run, oom = report["run"], report["oom"]
    assert run["status"] == "oom" and "out of memory" in run["error"].lower()
    relu = line_of(str(script), "h = torch.relu(h)")
    saved_by = line_of(str(script), "h = self.inp(x)")
    made_at = line_of(str(script), "x = torch.randn(B, W")
    assert run["error_at"] == {"file": "oom.py", "line": relu}
    total = torch.cuda.get_device_properties(0).total_memory
    act = (int(0.4 * total) // 4096) * 4096
    assert oom["requested_bytes"] >= act and oom["device_total"] == total
    assert oom["step"] == 1 and oom["phase"] == "forward"
    # The two 40% blocks: the input, saved for backward by the first Linear, and its output.
    first, second = oom["top"][0], oom["top"][1]
    assert first["bytes"] >= act and second["bytes"] >= act
    holders = {h["category"]: h for h in (first, second)}
    assert set(holders) == {"activation", "temporary"}, holders
    assert holders["activation"]["saved_at"] == {"file": "oom.py", "line": saved_by}
    assert {"file": "oom.py", "line": made_at, "name": "<module>"} in holders["activation"]["frames"]
    assert any(f["file"] == "oom.py" and f["line"] == saved_by for f in holders["temporary"]["frames"])
    assert oom["lines"][0] == {"file": "oom.py", "line": saved_by, "bytes": act}
    assert any(e["line"] == saved_by and e["saved_bytes"] >= act for e in report["lines"])
    assert progress_events(proc.stderr)[-1]["status"] == "oom"
