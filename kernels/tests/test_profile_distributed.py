"""The harness in every rank of a real torchrun job: gloo on CPU, DDP and FSDP2 (fully_shard).

Each test launches `python -m torch.distributed.run ... -m membit.profile --out 'r_{rank}.json'`
exactly as `membit profile --nproc-per-node` does, and checks each rank's report against what
that rank counted itself from its own tensors (samples/gpt_dist.py --shards-out).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from membit.profile import schema
from membit.profile.distributed import env_info, rank_out

KERNELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(KERNELS)
GPT_DIST = os.path.join(REPO, "samples", "gpt_dist.py")
SMALL = ["--batch-size", "4", "--seq-len", "32", "--n-layer", "2", "--n-embd", "32", "--n-head", "2",
         "--data-bytes", "200000"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not in this build")


def torchrun(tmp_path, script, script_args=(), nproc=2, harness=("--steps", "2", "--warmup", "1"), timeout=240):
    out = os.path.join(str(tmp_path), "r_{rank}.json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (KERNELS, env.get("PYTHONPATH")) if x)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MEMBIT_PROGRESS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "membit.profile", "--out", out, *harness, "--", script, *script_args]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=timeout)
    reports = {}
    for r in range(nproc):
        path = out.replace("{rank}", str(r))
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                reports[r] = json.load(f)
    return proc, reports


def progress(proc):
    events = []
    for line in proc.stderr.splitlines():
        if line.startswith("@@membit "):
            events.append(json.loads(line[len("@@membit "):]))
    return events


def check_valid(doc):
    errors = schema.validate(doc)
    assert errors == [], errors[:5]


def shards(tmp_path, rank):
    with open(os.path.join(str(tmp_path), f"sh{rank}.json"), encoding="utf-8") as f:
        return json.load(f)


def test_fsdp2_each_rank_reports_its_local_shards(tmp_path):
    proc, reports = torchrun(tmp_path, GPT_DIST, ["--parallel", "fsdp", "--steps", "6", *SMALL,
                                                  "--shards-out", os.path.join(str(tmp_path), "sh{rank}.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(reports) == [0, 1]
    for rank, doc in reports.items():
        check_valid(doc)
        d = doc["run"]["distributed"]
        assert (d["rank"], d["local_rank"], d["world_size"], d["launcher"]) == (rank, rank, 2, "torchrun")
        assert d["process_group"] is True and d["backend"] == "gloo" and d["host"]
        assert doc["run"]["status"] == "ok"
        # The script counted its own DTensors' local shards after its last step.
        own = shards(tmp_path, rank)
        s = doc["summary"]
        assert own["params"] < own["full_params"]  # really sharded
        assert s["params"] == own["params"]
        assert s["grads"] == own["grads"]
        assert s["optimizer_state"] == own["optimizer_state"]
        dist = s["distributed"]
        units = dist["fsdp_units"]
        assert {u["module"] for u in units} >= {"h.0", "h.1"}
        assert sum(u["sharded_bytes"] for u in units) == own["params"]
        # Gathered units hold the full parameters: at least the largest unit, at most all of them.
        largest = max(u["unsharded_bytes"] for u in units)
        assert largest > max(u["sharded_bytes"] for u in units)
        assert largest <= dist["unsharded_params_max"] <= own["full_params"]
        assert dist["all_gather_buffer_max"] > 0 and dist["reduce_scatter_buffer_max"] > 0
        assert dist["ddp"] is None
        assert len(dist["step_memory"]) >= 2
    assert reports[0]["run"]["distributed"]["run_set"] == reports[1]["run"]["distributed"]["run_set"]
    ranks = {e.get("rank") for e in progress(proc) if e["event"] == "step"}
    assert ranks == {0, 1}


def test_ddp_reports_full_replicas_and_gradient_buckets(tmp_path):
    proc, reports = torchrun(tmp_path, GPT_DIST, ["--parallel", "ddp", "--steps", "6", *SMALL,
                                                  "--shards-out", os.path.join(str(tmp_path), "sh{rank}.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank, doc in reports.items():
        check_valid(doc)
        own = shards(tmp_path, rank)
        s = doc["summary"]
        assert s["params"] == own["params"] == own["full_params"]
        assert s["grads"] == own["grads"]
        assert s["optimizer_state"] == own["optimizer_state"]
        ddp = s["distributed"]["ddp"]
        assert ddp["wrappers"] == 1 and ddp["buckets"] >= 1
        # DDP buckets every trainable parameter's gradient once (fp32 here).
        assert ddp["bucket_bytes"] == own["full_params"]
        assert ddp["grads_are_bucket_views"] is False
        assert s["distributed"]["fsdp_units"] == [] and s["distributed"]["unsharded_params_max"] is None


def test_world_size_mismatch_fails_at_once_with_the_fix(tmp_path):
    proc, reports = torchrun(tmp_path, GPT_DIST, ["--parallel", "ddp", "--world-size", "4", *SMALL], timeout=180)
    assert proc.returncode != 0
    # Every rank writes a report: torchrun stops the others as soon as one rank fails, and a rank
    # stopped that way (even while still importing torch) reports itself cancelled.
    assert sorted(reports) == [0, 1], proc.stderr[-3000:]
    failed = [doc for doc in reports.values() if doc["run"]["status"] == "error"]
    assert failed, [doc["run"]["status"] for doc in reports.values()]
    for doc in reports.values():
        check_valid(doc)
        assert doc["run"]["status"] in ("error", "cancelled")
        assert doc["run"]["distributed"]["failed_at"] is not None
    for doc in failed:
        assert "world_size=4" in doc["run"]["error"] and "started 2 rank(s)" in doc["run"]["error"]


def test_script_without_init_process_group_is_named(tmp_path):
    script = tmp_path / "alone.py"
    script.write_text(textwrap.dedent("""
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.linspace(-1, 1, 8 * 16).reshape(8, 16)
        for _ in range(5):
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    """))
    proc, reports = torchrun(tmp_path, str(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for doc in reports.values():
        check_valid(doc)
        d = doc["run"]["distributed"]
        assert d["process_group"] is False
        assert any("never called torch.distributed.init_process_group" in n for n in d["notes"])


FAULTY = """
import os, signal, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.linspace(-1, 1, 16 * 64).reshape(16, 64)
for step in range(1, 40):
    if rank == 1 and step == 4:
        {fault}
    loss = model(x).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


@pytest.mark.parametrize("fault, status", [
    ("os.kill(os.getpid(), signal.SIGKILL)", None),
    # CPU has no out-of-memory: raise the very exception CUDA raises, from the script's own line.
    ("raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')", "oom"),
])
def test_a_dying_rank_ends_the_job_and_the_survivor_still_reports(tmp_path, fault, status):
    if status == "oom" and not hasattr(torch, "OutOfMemoryError"):
        pytest.skip("this torch has no torch.OutOfMemoryError")
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY.replace("{fault}", fault))
    proc, reports = torchrun(tmp_path, str(script), harness=("--steps", "0", "--warmup", "1"), timeout=240)
    assert proc.returncode != 0
    # The survivor either saw its peer's socket close in a collective (error) or was stopped by torchrun.
    assert 0 in reports, proc.stderr[-3000:]
    check_valid(reports[0])
    assert reports[0]["run"]["status"] in ("error", "cancelled")
    assert reports[0]["run"]["distributed"]["failed_at"] is not None
    if status is None:
        assert 1 not in reports  # SIGKILL leaves nothing behind
    else:
        check_valid(reports[1])
        assert reports[1]["run"]["status"] == status
        fault_line = FAULTY.splitlines().index("        {fault}") + 1
        assert reports[1]["run"]["error_at"]["line"] == fault_line


def test_env_info_and_rank_out():
    assert env_info({}) is None
    assert env_info({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"})["launcher"] == "torchrun"
    slurm = env_info({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77"})
    assert (slurm["rank"], slurm["world_size"], slurm["local_rank"], slurm["launcher"], slurm["run_set"]) == (3, 4, 1, "slurm", "77")
    assert env_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert rank_out("/a/r_{rank}.json", 3) == "/a/r_3.json"
    assert rank_out("/a/run.json", 0) == "/a/run.json"
    assert rank_out("/a/run.json", 2) == "/a/run.rank2.json"
