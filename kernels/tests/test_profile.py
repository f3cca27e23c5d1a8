"""The profiling harness, end to end on CPU (as CI runs it), plus its pure parts.

End-to-end tests run `python -m membit.profile` in a subprocess exactly as the extension
does, and check the report against the schema and against independent counts.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from membit.profile import allocator, schema
from membit.profile.accounting import storage_key
from membit.profile.maxbatch import with_batch
from membit.profile.report import _wildcard
from membit.profile.saved import op_name

KERNELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(KERNELS)
GPT = os.path.join(REPO, "samples", "gpt_tiny.py")
# Small enough for two CPU cores; dropout p > 0 so every dropout saves a mask.
GPT_SHAPE = dict(batch=2, seq=32, layers=2, embd=32, heads=2)
GPT_ARGS = ["--steps", "20", "--batch-size", "2", "--seq-len", "32", "--n-layer", "2", "--n-embd", "32",
            "--n-head", "2", "--data-bytes", "100000", "--dropout", "0.1", "--device", "cpu"]


def run_harness(tmp_path, script, script_args=(), *opts, name="run.json", timeout=120, env_extra=None):
    out = os.path.join(str(tmp_path), name)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, env.get("PYTHONPATH")) if x)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MEMBIT_PROGRESS", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "membit.profile", "--out", out, *opts, "--", script, *script_args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    report = None
    if os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            report = json.load(f)
        keep = os.environ.get("MEMBIT_TEST_ARTIFACTS")
        if keep:  # keep reports written on a machine that will not be there later
            test = os.environ.get("PYTEST_CURRENT_TEST", "run").split("::")[-1].split(" ")[0]
            shutil.copy(out, os.path.join(keep, f"{test}-{name}"))
    return proc, report


def progress_events(stderr: str):
    return [json.loads(line[len("@@membit "):]) for line in stderr.splitlines() if line.startswith("@@membit ")]


def assert_valid(report):
    errors = schema.validate(report)
    assert errors == [], errors[:5]
    try:
        import jsonschema
    except ImportError:
        return
    # Where jsonschema is installed, it must agree with our validator.
    jsonschema.Draft202012Validator(schema.load_schema()).validate(report)


def assert_consistent(report):
    s, lines, mods = report["summary"], report["lines"], report["modules"]
    assert sum(e["saved_bytes"] for e in lines) == s["saved_bytes"]
    assert sum(e["mask_bytes"] for e in lines) == s["mask_bytes"]
    assert sum(m["saved_bytes"] for m in mods) + s["saved_outside_modules"] == s["saved_bytes"]
    assert sum(m["mask_bytes"] for m in mods) <= s["mask_bytes"]
    assert sum(e["at_peak_bytes"] for e in lines) == s["activations_at_peak"] + s["masks_at_peak"]
    assert sum(m["params"] for m in mods) == s["params"]
    assert sum(m["grads"] for m in mods) == s["grads"]
    named = ("params_at_peak", "buffers_at_peak", "grads_at_peak", "optimizer_state_at_peak",
             "activations_at_peak", "masks_at_peak")
    assert sum(s[k] for k in named) == s["tracked_at_peak"]
    if s["peak_allocated"] is not None:
        assert s["tracked_at_peak"] + s["unattributed_at_peak"] >= s["peak_allocated"]
    for e in lines:
        assert e["mask_bytes"] <= e["saved_bytes"] and e["at_peak_bytes"] <= e["saved_bytes"]
        assert sum(o["bytes"] for o in e["ops"]) == e["saved_bytes"]


def line_of(path, text):
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if text in line:
                return i
    raise AssertionError(f"{text!r} not in {path}")


def load_gpt_module():
    spec = importlib.util.spec_from_file_location("gpt_tiny_for_tests", GPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt")
    proc, report = run_harness(tmp, "samples/gpt_tiny.py", GPT_ARGS, "--steps", "2", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, report


# -- GPT sample, end to end ----------------------------------------------------------------

def test_gpt_report_validates_and_adds_up(gpt):
    _, report = gpt
    assert_valid(report)
    assert_consistent(report)
    run = report["run"]
    assert run["status"] == "ok" and run["error"] is None
    assert run["steps"] == 2 and run["warmup"] == 1
    assert run["script"] == "samples/gpt_tiny.py"  # relative to --root (the working directory)
    assert run["device"]["type"] == "cpu"
    assert report["timeline"] is None and report["summary"]["peak_allocated"] is None


def test_gpt_report_hashes_every_attributed_source_and_keeps_each_step_time(gpt):
    import hashlib
    _, report = gpt
    sources = {s["file"]: s for s in report["sources"]}
    # The script and every file under the root that a line, site or module names; never
    # the standard library or site-packages (absolute paths).
    named = {e["file"] for e in report["lines"]} | {s["file"] for s in report["sites"]}
    named |= {m["created_at"]["file"] for m in report["modules"] if m["created_at"]}
    assert {f for f in named if not os.path.isabs(f)} <= set(sources), sorted(named)
    assert "samples/gpt_tiny.py" in sources and all(not os.path.isabs(f) for f in sources)
    with open(GPT, "rb") as fh:
        data = fh.read()
    assert sources["samples/gpt_tiny.py"] == {"file": "samples/gpt_tiny.py", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    times = report["summary"]["step_times_s"]
    assert len(times) == report["run"]["steps"]
    assert report["summary"]["step_time_s"] == pytest.approx(sorted(times)[len(times) // 2] if len(times) % 2 else sum(sorted(times)[len(times) // 2 - 1:len(times) // 2 + 1]) / 2, rel=1e-4)


def test_source_hashes_skip_a_byte_order_mark(tmp_path):
    import hashlib
    from membit.profile.report import source_hashes
    (tmp_path / "a.py").write_bytes(b"\xef\xbb\xbfx = 1\n")
    doc = {"run": {"script": "a.py"}, "lines": [{"file": "/usr/lib/python3/os.py"}], "sites": [], "modules": [],
           "peak": {"top": []}, "oom": None}
    assert source_hashes(doc, str(tmp_path)) == [{"file": "a.py", "sha256": hashlib.sha256(b"x = 1\n").hexdigest(), "bytes": 6}]


def test_gpt_progress_lines_and_passthrough(gpt):
    proc, report = gpt
    events = progress_events(proc.stderr)
    assert events[0]["event"] == "started" and events[0]["steps"] == 2 and events[0]["warmup"] == 1
    assert isinstance(events[0]["pid"], int) and events[0]["device"] == "cpu"
    steps = [e for e in events if e["event"] == "step"]
    assert [(e["phase"], e["step"], e["total"]) for e in steps] == [("warmup", 1, 1), ("profiling", 1, 2), ("profiling", 2, 2)]
    assert all(e["allocated"] > 0 and e["peak"] >= e["allocated"] for e in steps)
    # On CPU the live peak is the tracked one: the progress line and the report show one figure.
    # The sample registers a causal-mask buffer, which the live figure once left out.
    assert report["summary"]["buffers"] > 0
    assert steps[-1]["peak"] == report["summary"]["tracked_at_peak"]
    assert events[-1] == {"event": "finished", "status": "ok", "report": os.path.join(str(os.path.dirname(events[-1]["report"])), "run.json")}
    # The script's own output passes through, and the run ended after warmup + steps.
    assert "gpt_tiny:" in proc.stdout and "step 2 loss" in proc.stdout and "step 4 loss" not in proc.stdout
    assert not any(line.startswith("@@membit") for line in proc.stdout.splitlines())


def test_gpt_dropout_lines_hold_exactly_their_masks(gpt):
    _, report = gpt
    b, t, n, c, h = (GPT_SHAPE[k] for k in ("batch", "seq", "layers", "embd", "heads"))
    fp32 = 4  # CPU dropout saves a float32 mask (MulBackward0); CUDA would save 1-byte bool
    expected = {
        line_of(GPT, "x = self.drop(self.wte(idx) + self.wpe(pos))"): b * t * c * fp32,
        line_of(GPT, "att = self.attn_dropout(att)"): n * b * h * t * t * fp32,
        line_of(GPT, "return self.resid_dropout(self.c_proj(y))"): n * b * t * c * fp32,
        line_of(GPT, "return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))"): n * b * t * c * fp32,
    }
    by_line = {e["line"]: e for e in report["lines"] if e["file"] == "samples/gpt_tiny.py"}
    for line, mask in expected.items():
        assert by_line[line]["mask_bytes"] == mask, (line, by_line[line])
        dropout_ops = [o for o in by_line[line]["ops"] if o["op"] == "dropout"]
        assert dropout_ops and dropout_ops[0]["bytes"] == mask
    sites = {s["line"]: s for s in report["sites"]}
    att = sites[line_of(GPT, "att = self.attn_dropout(att)")]
    assert att["kind"] == "attn-dropout" and att["module"] == "h.*.attn.attn_dropout"
    assert att["elements"] == n * b * h * t * t and att["mask_bytes"] == n * b * h * t * t * fp32
    assert att["saving_if_packed"] == att["mask_bytes"] - att["elements"] // 8
    assert sites[line_of(GPT, "return self.resid_dropout(self.c_proj(y))")]["kind"] == "dropout"
    # The causal mask compare saves a bool tensor for masked_fill: a mask by dtype.
    masked = by_line[line_of(GPT, "att = att.masked_fill(")]
    assert masked["mask_bytes"] == n * t * t


def test_gpt_matches_independent_counts(gpt):
    _, report = gpt
    s = report["summary"]
    mod = load_gpt_module()
    torch.manual_seed(0)
    cfg = mod.GPTConfig(block_size=GPT_SHAPE["seq"], n_layer=GPT_SHAPE["layers"], n_head=GPT_SHAPE["heads"],
                        n_embd=GPT_SHAPE["embd"], dropout=0.1)
    model = mod.GPT(cfg)
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    assert s["params"] == param_bytes
    assert s["grads"] == param_bytes  # every parameter gets a gradient
    # AdamW: exp_avg and exp_avg_sq per parameter, plus a float32 step counter each on CPU.
    assert s["optimizer_state"] == 2 * param_bytes + 4 * len(params)
    assert s["buffers"] == sum(b.numel() * b.element_size() for b in model.buffers())

    # A plain saved-tensor count over one training forward, storages counted once.
    persistent = {storage_key(t)[0] for t in params + list(model.buffers())}
    seen = {}

    def pack(x):
        ptr, nbytes = storage_key(x)  # untyped_storage() where torch has it (>= 2.0)
        if ptr not in persistent:
            seen[ptr] = nbytes
        return x

    idx = torch.randint(0, 256, (GPT_SHAPE["batch"], GPT_SHAPE["seq"]))
    targets = torch.randint(0, 256, (GPT_SHAPE["batch"], GPT_SHAPE["seq"]))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        _, loss = model(idx, targets)
    assert s["saved_bytes"] == sum(seen.values())
    # At the CPU "peak" (start of backward) everything saved is alive; grads were set to None.
    assert s["activations_at_peak"] + s["masks_at_peak"] == s["saved_bytes"]
    assert s["grads_at_peak"] == 0 and s["optimizer_state_at_peak"] == s["optimizer_state"]
    assert s["batch_size"] == GPT_SHAPE["batch"] and s["step_time_s"] > 0


def test_gpt_modules_know_where_they_come_from(gpt):
    _, report = gpt
    mods = {m["path"]: m for m in report["modules"]}
    drop = mods["h.0.attn.attn_dropout"]
    assert drop["type"] == "Dropout"
    assert drop["created_at"] == {"file": "samples/gpt_tiny.py", "line": line_of(GPT, "self.attn_dropout = nn.Dropout(")}
    attn = mods["h.1.attn"]
    assert attn["type"] == "CausalSelfAttention"
    assert attn["defined_at"] == {"file": "samples/gpt_tiny.py", "line": line_of(GPT, "class CausalSelfAttention")}
    assert attn["created_at"]["line"] == line_of(GPT, "self.attn = CausalSelfAttention(config)")
    assert mods[""]["type"] == "GPT" and mods["h.0.mlp.c_fc"]["params"] == (32 * 128 + 128) * 4
    assert mods["h.0"]["fwd_ms"] > 0 and mods["h.0"]["calls"] == 1
    line = {e["line"]: e for e in report["lines"]}[line_of(GPT, "att = self.attn_dropout(att)")]
    assert line["module"] == "h.*.attn.attn_dropout" and line["func"] == "forward"


# -- failures ------------------------------------------------------------------------------

CRASH = """\
import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)

def check(step):
    if step == 2:
        raise ValueError("diverged at step %d" % step)

for step in range(10):
    loss = model(torch.randn(4, 8)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
    check(step)
"""


def test_crashing_script_reports_error_with_traceback(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    proc, report = run_harness(tmp_path, str(script), (), "--steps", "0", "--root", str(tmp_path))
    assert proc.returncode == 1
    assert_valid(report)
    run = report["run"]
    assert run["status"] == "error"
    assert "ValueError: diverged at step 2" in run["error"]
    assert 'File "' in run["error"] and "crash.py" in run["error"] and "check(step)" in run["error"]
    assert "runpy" not in run["error"] and "membit" not in run["error"]
    assert run["error_at"] == {"file": "crash.py", "line": 7}
    assert run["script"] == "crash.py"
    assert progress_events(proc.stderr)[-1]["status"] == "error"


SLEEPY = """\
import sys, time
import torch
model = torch.nn.Linear(16, 16)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(100000):
    model(torch.randn(4, 16)).sum().backward()
    opt.step()
    opt.zero_grad()
    if step == 2:
        print("training", flush=True)
    time.sleep(0.02)
"""


def test_sigterm_gives_cancelled_partial_report(tmp_path):
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY)
    out = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=KERNELS, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "membit.profile", "--out", str(out), "--steps", "0", "--", str(script)],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "training"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    report = json.loads(out.read_text())
    assert_valid(report)
    assert report["run"]["status"] == "cancelled" and "SIGTERM" in report["run"]["error"]
    assert report["run"]["steps"] >= 2
    assert progress_events(err)[-1] == {"event": "finished", "status": "cancelled", "report": str(out)}
    assert not list(tmp_path.glob(".run.json.*"))  # no temporary file left behind


def test_sparse24_variant_converts_the_mlp_linears(tmp_path):
    proc, report = run_harness(tmp_path, "samples/gpt_tiny.py", GPT_ARGS, "--variant", "sparse24", "--steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(report)
    assert report["run"]["status"] == "ok"
    assert report["run"]["variant"] == "sparse24"
    patched = report["run"]["patched"]
    # Exactly the two MLP projections of each block; attention and the head stay dense.
    assert sorted(p["path"] for p in patched) == sorted(f"h.{i}.mlp.{n}" for i in range(GPT_SHAPE["layers"]) for n in ("c_fc", "c_proj"))
    assert {p["to"] for p in patched} == {"SparseLinear24"}


def test_packed_variant_on_chosen_sites_only(tmp_path):
    site = line_of(GPT, "self.attn_dropout = nn.Dropout(")
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps([{"file": "samples/gpt_tiny.py", "line": site}]))
    proc, report = run_harness(tmp_path, "samples/gpt_tiny.py", GPT_ARGS, "--variant", "packed", "--sites", str(sites),
                               "--steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_valid(report)
    assert_consistent(report)
    patched = report["run"]["patched"]
    assert sorted(p["path"] for p in patched) == ["h.0.attn.attn_dropout", "h.1.attn.attn_dropout"]
    assert {p["to"] for p in patched} == {"PackedDropout"}
    b, t, n, c, h = (GPT_SHAPE[k] for k in ("batch", "seq", "layers", "embd", "heads"))
    by_line = {e["line"]: e for e in report["lines"]}
    # The converted site keeps one bit per element; the others still keep float32 masks.
    assert by_line[line_of(GPT, "att = self.attn_dropout(att)")]["mask_bytes"] == n * b * h * t * t // 8
    assert by_line[line_of(GPT, "return self.resid_dropout(self.c_proj(y))")]["mask_bytes"] == n * b * t * c * 4
    # The module keeps the line where the user built the dropout it replaced.
    mods = {m["path"]: m for m in report["modules"]}
    assert mods["h.0.attn.attn_dropout"]["type"] == "PackedDropout"
    assert mods["h.0.attn.attn_dropout"]["created_at"]["line"] == site


PARTIAL = """\
import sys
import torch
model = torch.nn.Linear(4, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    sys.stderr.write("\\rtraining %d%%" % (step * 30))  # a progress bar: no newline
    sys.stderr.flush()
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
print("no optimizer... done", flush=True)
"""


def test_progress_lines_start_a_line_after_partial_user_output(tmp_path):
    script = tmp_path / "bar.py"
    script.write_text(PARTIAL)
    proc, report = run_harness(tmp_path, str(script), (), "--steps", "0", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    events = progress_events(proc.stderr)
    assert [e["event"] for e in events] == ["started", "step", "step", "step", "finished"]
    assert all(not ("@@membit" in line and not line.startswith("@@membit")) for line in lines), lines
    assert "training 0%" in proc.stderr and "training 60%" in proc.stderr  # the user's text is all there
    assert report["run"]["status"] == "ok" and report["run"]["steps"] == 3


def test_find_max_batch_bisects_against_a_memory_limit(tmp_path):
    # CPU has no OOM: --memory-limit stands in for the capacity, against the tracked peak.
    # The GPT's persistent state is ~0.7 MB and each sample adds ~0.25 MB of saved tensors,
    # so this limit falls inside the 1..4 search range; the assertions hold for any limit.
    limit = 1_250_000
    proc, _ = run_harness(tmp_path, "samples/gpt_tiny.py", GPT_ARGS, "--find-max-batch", "--batch-arg=--batch-size",
                          "--variants", "baseline", "--min", "1", "--max", "4", "--memory-limit", str(limit),
                          "--steps", "1", name="maxbatch.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "maxbatch.json").read_text())
    assert doc["schema"] == "membit.maxbatch/1" and doc["measure"] == "tracked_at_peak"
    assert doc["memory_limit"] == limit and doc["batch_arg"] == "--batch-size"
    (v,) = doc["variants"]
    assert v["variant"] == "baseline" and v["status"] == "ok"
    probes = {p["batch"]: p for p in v["probes"]}
    largest = v["largest"]
    assert 1 <= largest < 4, probes
    peaks = [probes[b]["peak"] for b in sorted(probes)]
    assert peaks == sorted(peaks)  # more samples, more memory
    for b, p in probes.items():
        assert p["fits"] == (p["peak"] <= limit)
        assert p["status"] == ("ok" if p["fits"] else "over_limit")
    assert probes[largest]["fits"] and not probes[largest + 1]["fits"]
    events = progress_events(proc.stderr)
    order = [e["batch"] for e in events if e["event"] == "probe"]
    assert order[:3] == [1, 2, 4] and sorted(order) == sorted(probes)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "ok"


# -- pure parts ----------------------------------------------------------------------------

def test_replay_finds_peak_and_attributes_live_blocks():
    class Rec:
        def __init__(self, ptr, nbytes, mask, t_pack, t_release):
            self.ptr, self.nbytes, self.mask, self.t_pack, self.t_release = ptr, nbytes, mask, t_pack, t_release

    offset = 1_000_000  # allocator clock = ours + offset
    def ev(action, addr, size, t):
        return {"action": action, "addr": addr, "size": size, "time_us": t + offset,
                "frames": [{"filename": "/work/train.py", "line": t, "name": "step"}]}
    events = [
        {"action": "segment_alloc", "addr": 0, "size": 1 << 20, "time_us": offset},
        ev("alloc", 0x1000, 5000, 10),  # activation, saved at t=12
        ev("alloc", 0x3000, 1000, 20),  # mask (bool), saved at t=22
        ev("alloc", 0x4000, 100, 30),  # a temporary
        ev("free_requested", 0x4000, 100, 40),
        ev("alloc", 0x5000, 8000, 50),  # grad (seen at the optimizer step, t=90): peak is here
        ev("free_requested", 0x1000, 5000, 60),  # backward released the activation
        ev("alloc", 0x1000, 300, 70),  # the same address, a new block: not the activation
        ev("free_requested", 0x3000, 1000, 80),
    ]
    final = [{"address": 0x2000, "size": 4096, "requested_size": 4096, "frames": []},  # param, never in the trace
             {"address": 0x5000, "size": 8192, "requested_size": 8000, "frames": []},
             {"address": 0x1000, "size": 512, "requested_size": 300, "frames": []}]
    rp = allocator.replay(events, final, 1 << 20)
    assert rp.initial_allocated == 4096
    p = rp.peak_index()
    assert rp.events[p]["addr"] == 0x5000 and rp.allocated_at(p) == 4096 + 5120 + 1024 + 8192
    live = {b.addr: b for b in rp.live_at(p)}
    assert set(live) == {0x1000, 0x2000, 0x3000, 0x5000}
    idents = {0x2000: [allocator.Identity(5, "param", 4096)], 0x5000: [allocator.Identity(90, "grad", 8000)],
              0x1000: [allocator.Identity(75, "grad", 300)]}  # a later grad at a reused address
    recs = {0x1000: [Rec(0x1000, 5000, False, 12, 61)], 0x3000: [Rec(0x3000, 1000, True, 22, 79)]}
    sums, rows = allocator.attribute(rp.live_at(p), idents, recs, rp.times[p], offset, 2, step_start_t=0)
    assert sums == {"param": 4096, "buffer": 0, "grad": 8000, "optimizer": 0, "activation": 5000, "mask": 1000}
    # After the activation's release, its address holds something else: not attributed to it.
    late = rp.index_at_time(75 + offset)
    sums_late, rows_late = allocator.attribute(rp.live_at(late), idents, recs, rp.times[late], offset, 2, 0)
    assert sums_late["activation"] == 0 and sums_late["grad"] == 8000 + 300
    assert rp.reserved[-1] == 1 << 20 and rp.initial_reserved == 0
    assert allocator.calibrate(events, [(9, 11, 0x1000)]) == (None, None)  # no marker-sized entry


def test_calibrate_uses_marker_entries():
    m = allocator.MARKER_BYTES
    # Marker 77 was allocated between our clock's 90 and 110 µs (midpoint 100, half-window 10):
    # the allocator stamped it 5_000_100, so the offset is 5_000_000 ± 11. Marker 88: window
    # 110..150 (mid 130, ± 21), stamped 5_000_134: offset 5_000_004. A second entry at 88 far
    # from its window (an address reused later) must not be picked.
    events = [{"action": "alloc", "addr": 77, "size": m, "time_us": 5_000_100},
              {"action": "alloc", "addr": 88, "size": m, "time_us": 5_000_134},
              {"action": "alloc", "addr": 88, "size": m, "time_us": 9_000_000},
              {"action": "alloc", "addr": 77, "size": m + 512, "time_us": 1}]  # not marker-sized
    offset, unc = allocator.calibrate(events, [(90, 110, 77), (110, 150, 88)])
    # Mean of the two offsets; uncertainty = the widest half-window plus the offsets' spread.
    assert offset == 5_000_002
    assert unc == 21 + 4
    # Markers that disagree widen the uncertainty by their spread, so a bad clock shows.
    offset, unc = allocator.calibrate(events[:2] + [{"action": "alloc", "addr": 99, "size": m, "time_us": 7_000_300}],
                                      [(90, 110, 77), (290, 310, 99)])
    assert offset == (5_000_000 + 7_000_000) // 2 and unc == 11 + 2_000_000
    assert allocator.downsample([1, 5, 2, 9, 3, 3, 7, 1], 4) == [1, 3, 4, 6]


def test_small_helpers():
    assert op_name("NativeDropoutBackward0") == "native_dropout"
    assert op_name("MmBackward0") == "mm" and op_name("AddmmBackward0") == "addmm"
    assert op_name("NativeLayerNormBackward0") == "native_layer_norm"
    assert _wildcard(["h.0.attn.drop", "h.1.attn.drop"]) == "h.*.attn.drop"
    assert _wildcard(["a.b", "a.b.c"]) == "*" and _wildcard([None]) is None
    assert with_batch(["--batch-size", "8", "--x"], "--batch-size", 3) == ["--batch-size", "3", "--x"]
    assert with_batch(["--batch-size=8"], "--batch-size", 3) == ["--batch-size=3"]
    assert with_batch(["--lr", "1"], "--batch-size", 3) == ["--lr", "1", "--batch-size", "3"]


def test_validator_rejects_what_the_schema_forbids(gpt):
    _, report = gpt
    bad = json.loads(json.dumps(report))
    bad["summary"]["params"] = 1.5
    bad["lines"][0]["surprise"] = 1
    del bad["run"]["status"]
    errors = schema.validate(bad)
    assert any("summary.params" in e for e in errors)
    assert any("lines[0].surprise" in e for e in errors)
    assert any("missing required field 'status'" in e for e in errors)
