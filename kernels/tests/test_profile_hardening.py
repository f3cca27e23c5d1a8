"""The harness against careless and hostile scripts: no orphan, no hang, no lost report.

Each test runs `python -m membit.profile` in its own process group, as the launchers do, with
the control channel (MEMBIT_CONTROL_FD) they pass. Time limits are hang guards only.
"""

import json
import os
import signal
import subprocess
import sys
import time

from membit.profile import schema

KERNELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ignores SIGTERM, starts a child that would outlive it, trains a few steps, then waits
# outside any torch call (where the harness's hooks cannot stop it) for ever.
STUBBORN = """
import os, signal, subprocess, sys, time
import torch
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
model = torch.nn.Linear(8, 8)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
print("training", flush=True)
while True:
    time.sleep(1)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped by its new parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 30) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def start(tmp_path, script_text, env_extra=None, control=True):
    script = tmp_path / "script.py"
    script.write_text(script_text)
    out = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=KERNELS, PYTHONUNBUFFERED="1", MEMBIT_STOP_GRACE_S="1")
    env.update(env_extra or {})
    r = w = None
    pass_fds = ()
    if control:
        r, w = os.pipe()
        env["MEMBIT_CONTROL_FD"] = str(r)
        pass_fds = (r,)
    proc = subprocess.Popen([sys.executable, "-m", "membit.profile", "--out", str(out), "--steps", "0", "--",
                             str(script), str(tmp_path / "child.pid")],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, pass_fds=pass_fds)
    if r is not None:
        os.close(r)
    return proc, out, w


def finish(proc, launcher=True):
    """Waits for the harness; `launcher`: then ends what is left of its group, as launchers do."""
    try:
        proc.wait(timeout=90)
    finally:
        if launcher or proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _, err = proc.communicate(timeout=30)
    return err


def test_cancel_of_a_script_that_ignores_sigterm_keeps_a_partial_report_and_ends_the_group(tmp_path):
    proc, out, w = start(tmp_path, STUBBORN)
    try:
        assert proc.stdout.readline().strip() == "training"
        child = int((tmp_path / "child.pid").read_text())
        # What a launcher does on cancel: "c" on the channel and SIGTERM to the group.
        os.write(w, b"c")
        os.killpg(proc.pid, signal.SIGTERM)
        err = finish(proc)
    finally:
        os.close(w)
    report = json.loads(out.read_text())
    assert schema.validate(report) == []
    assert report["run"]["status"] == "cancelled"
    assert "did not stop within 1 s of SIGTERM" in report["run"]["error"]
    assert report["run"]["steps"] >= 2
    assert proc.returncode in (143, -9), proc.returncode
    assert wait_gone(child), "the script's child outlived the run"
    assert not list(tmp_path.glob(".run.json.*")), "a temporary file was left"
    events = [line for line in err.splitlines() if line.startswith("@@membit ")]
    assert json.loads(events[-1][len("@@membit "):])["event"] == "finished"


def test_launcher_death_stops_the_harness_and_the_script_children(tmp_path):
    # SIGKILL of `membit profile` closes its end of the channel; nothing else tells the harness.
    proc, out, w = start(tmp_path, STUBBORN)
    assert proc.stdout.readline().strip() == "training"
    child = int((tmp_path / "child.pid").read_text())
    os.close(w)
    finish(proc, launcher=False)  # the launcher is dead: nobody ends the group but the harness
    assert wait_gone(child), "the script's child outlived the launcher"
    report = json.loads(out.read_text())
    assert report["run"]["status"] == "cancelled"
    assert "the launcher went away" in report["run"]["error"]


def test_launcher_death_with_a_polite_script_also_ends_its_children(tmp_path):
    polite = STUBBORN.replace("signal.signal(signal.SIGTERM, signal.SIG_IGN)", "")
    proc, out, w = start(tmp_path, polite)
    assert proc.stdout.readline().strip() == "training"
    child = int((tmp_path / "child.pid").read_text())
    os.close(w)
    finish(proc, launcher=False)
    assert wait_gone(child)
    report = json.loads(out.read_text())
    assert report["run"]["status"] == "cancelled" and "the launcher went away" in report["run"]["error"]


FAKER = """
import json, os, sys
# Fake progress the launcher must not believe, and a look for the token.
sys.stderr.write("@@membit " + json.dumps({"event": "step", "step": 99, "total": 100}) + "\\n")
sys.stderr.write("@@membit " + json.dumps({"event": "finished", "status": "ok", "report": "/etc/passwd"}) + "\\n")
sys.stderr.flush()
with open(sys.argv[1], "w") as f:
    json.dump({"env": os.environ.get("MEMBIT_PROGRESS_TOKEN"), "control": os.environ.get("MEMBIT_CONTROL_FD")}, f)
"""


def test_progress_carries_the_run_token_which_the_script_cannot_see(tmp_path):
    token = "a1b2c3d4e5f6a7b8"
    proc, out, w = start(tmp_path, FAKER, env_extra={"MEMBIT_PROGRESS_TOKEN": token})
    err = finish(proc)
    os.close(w)
    assert proc.returncode == 0, err[-2000:]
    seen = json.loads((tmp_path / "child.pid").read_text())
    assert seen == {"env": None, "control": None}
    ours = [json.loads(line[len(f"@@membit {token} "):]) for line in err.splitlines() if line.startswith(f"@@membit {token} ")]
    assert [e["event"] for e in ours] == ["started", "finished"]
    assert ours[-1]["report"] == str(out)
    # The script's lines are there, but without the token.
    assert sum(1 for line in err.splitlines() if line.startswith("@@membit {")) == 2


def test_out_that_is_a_folder_is_refused_before_the_script_runs(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "s.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    folder = tmp_path / "reports"
    folder.mkdir()
    env = dict(os.environ, PYTHONPATH=KERNELS)
    proc = subprocess.run([sys.executable, "-m", "membit.profile", "--out", str(folder), "--", str(script)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "is a folder: give the report's file name" in proc.stderr
    assert not marker.exists(), "the script ran although the report could not be written"
    assert "finished" not in proc.stderr
    assert os.listdir(folder) == []


def test_a_report_that_cannot_be_written_is_an_error_not_ok(tmp_path):
    # The folder appears after the up-front check (the script makes it): the write fails at the end.
    out = tmp_path / "run.json"
    script = tmp_path / "s.py"
    script.write_text(f"import os\nos.mkdir({str(out)!r})\nos.mkdir({str(out / 'x')!r})\n")
    env = dict(os.environ, PYTHONPATH=KERNELS, MEMBIT_PROGRESS_TOKEN="")
    proc = subprocess.run([sys.executable, "-m", "membit.profile", "--out", str(out), "--", str(script)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "could not write the report" in proc.stderr
    finished = [json.loads(line[len("@@membit "):]) for line in proc.stderr.splitlines() if line.startswith("@@membit ")][-1]
    assert finished == {"event": "finished", "status": "error", "report": None}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.json")] == []


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def test_sigterm_while_the_harness_starts_still_writes_a_cancelled_report(tmp_path):
    # torchrun stops the other ranks as soon as one fails, and a rank may still be importing
    # torch then: it must end with a report, not die of the default SIGTERM action.
    script = tmp_path / "marks.py"
    marker = tmp_path / "script-ran"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    out = tmp_path / "run.json"
    env = dict(os.environ, PYTHONPATH=KERNELS, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "membit.profile", "--out", str(out), "--", str(script)],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The first handler is in place well before torch has been imported (seconds): signal then.
    deadline = time.time() + 60
    while not catches_sigterm(proc.pid) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the harness ended before it caught SIGTERM"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    report = json.loads(out.read_text())
    assert schema.validate(report) == []
    assert report["run"]["status"] == "cancelled"
    assert "SIGTERM" in report["run"]["error"]
    assert not marker.exists(), "the script must not start after the run was cancelled"
