"""The multi-GPU check's own tool, run for real on the CPU: two gloo ranks under torchrun with
FSDP2, plain and profiled, a killed rank, the one-rank run, and the FSDP estimate from it
through the extension's CLI (built by the test command before pytest runs)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

KERNELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(KERNELS)
BENCH = os.path.join(KERNELS, "benchmarks", "bench_dist.py")
CLI = os.path.join(REPO, "dist", "cli.js")
TINY = "--model gpt --n-layer 2 --n-embd 64 --n-head 4 --seq-len 64 --batch-size 4"

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not in this build")


def test_bench_dist_on_cpu_ranks(tmp_path):
    out, tgz = str(tmp_path / "dist.json"), str(tmp_path / "reports.tgz")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, BENCH, "run", "--nproc", "2", "--parallel", "fsdp", "--script-args", TINY,
                           "--timeout", "240", "--out", out, "--reports", tgz],
                          cwd=KERNELS, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["device"] == "cpu"
    (job,) = doc["jobs"]
    assert (job["parallel"], job["nproc"], job["plain_rc"], job["profiled_rc"]) == ("fsdp", 2, 0, 0)
    for row in job["rows"]:
        assert row["plain"] and row["report"] and row["report_status"] == "ok"
        # Each rank's report counts the local shards the rank counted from its own tensors.
        assert row["shards_equal"], row
        assert row["unsharded_params_max"] > 0 and row["reduce_scatter_buffer_max"] > 0
    # The shards add up to the whole model the one-rank run held.
    assert sum(r["report_params"] for r in job["rows"]) == doc["one_rank"]["params"]
    (kill,) = doc["faults"]  # no out-of-memory fault on CPU
    assert kill["fault"] == "kill" and kill["killed_pid"] is not None
    assert kill["rc"] != 0 and not kill["hung"] and not kill["left_running"]
    # The killed rank leaves nothing; the survivor ends with a report saying why.
    assert len(kill["reports"]) == 1, kill
    (survivor,) = kill["reports"].values()
    assert survivor["status"] in ("cancelled", "error")
    assert doc["one_rank"]["rc"] == 0 and doc["one_rank"]["peak"] > 0

    assert shutil.which("node") and os.path.exists(CLI), "the estimate needs Node and dist/cli.js: run `npm run package` first"
    est_out = str(tmp_path / "est.json")
    est = subprocess.run([sys.executable, BENCH, "estimate", out, tgz, "--cli", CLI, "--out", est_out],
                         cwd=KERNELS, capture_output=True, text=True, timeout=300)
    assert est.returncode == 0, est.stderr[-3000:]
    with open(est_out, encoding="utf-8") as f:
        res = json.load(f)
    assert res["label"].startswith("estimate, not measured")
    (row,) = res["rows"]
    measured = [r["report_peak"] for r in job["rows"]]
    assert row["ranks"] == 2 and row["measured_per_rank"] == measured
    assert row["error_pct_vs_largest_rank"] == round(100 * (row["estimate"] - max(measured)) / max(measured), 2)
    # Sharding leaves a rank less than the single process held.
    assert row["estimate"] < doc["one_rank"]["peak"]
