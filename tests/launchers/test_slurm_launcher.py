"""SlurmLauncher against a real SLURM (the ``slurm_cluster`` fixture: two slurmd on this host).

Every job is a tiny python command; each test takes seconds. A requeued job is held by SLURM
for about 2 minutes before it may start again, so the tests release it with
``scontrol update StartTime=now`` once they have seen it requeued.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siambench.benchmarks.launchers import JobHandle, JobState, LauncherError, Resources, SlurmLauncher

TIMEOUT_S = 40

# Counts its runs in a file (its "checkpoint"), prints them, and keeps running (until SLURM
# stops it) while it has run fewer than STOP_AT times.
COUNTER = """
import os, pathlib, sys, time
path, stop_at = pathlib.Path(sys.argv[1]), int(sys.argv[2])
n = int(path.read_text()) + 1 if path.exists() else 1
path.write_text(str(n))
print(f"run {n} SLURM_RESTART_COUNT={os.environ.get('SLURM_RESTART_COUNT', '-')}", flush=True)
while n < stop_at:
    time.sleep(0.2)
"""


def wait_for(launcher, handle, cluster, states, timeout=TIMEOUT_S, until=lambda: True):
    """Poll until the job is in one of ``states`` (and ``until()``); fail with the logs otherwise."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = launcher.poll(handle)
        if status.state in states and until():
            return status
        time.sleep(0.2)
    log = Path(handle.log)
    pytest.fail(f"job {handle.job_id} not {states} after {timeout} s: {status}\n"
                f"{cluster.job_info(handle.job_id)}\n--- job log\n"
                f"{log.read_text() if log.exists() else '(none)'}\n{cluster.log_tails()}")


def counter_job(launcher, tmp_path, stop_at, name="counter"):
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    count = tmp_path / "runs.txt"
    handle = launcher.submit(name, [sys.executable, str(script), str(count), str(stop_at)],
                             log=tmp_path / "logs" / f"{name}.log", cwd=tmp_path)
    return handle, count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release(cluster, job_id):
    """Let a requeued job start now instead of after SLURM's requeue hold."""
    time.sleep(3)  # at once, SLURM may kill the start as "non-startable: job credential revoked"
    cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")


def test_job_runs_to_done_with_log_and_env(slurm_cluster, tmp_path):
    launcher = SlurmLauncher()
    cmd = [sys.executable, "-c", "import os; print('hello', os.environ['SIAMBENCH_X'], os.environ['SLURM_JOB_ID'])"]
    handle = launcher.submit("hello", cmd, log=tmp_path / "hello.log", cwd=tmp_path, env={"SIAMBENCH_X": "a b"})
    assert handle.job_id.isdigit()
    status = wait_for(launcher, handle, slurm_cluster, {JobState.DONE})
    assert status.node in slurm_cluster.nodes and status.requeues == 0 and status.reason == ""
    assert f"hello a b {handle.job_id}" in Path(handle.log).read_text()
    deadline = time.monotonic() + 10  # the batch script's own end follows the command's 'done' event
    while slurm_cluster.job_info(handle.job_id)["JobState"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    info = slurm_cluster.job_info(handle.job_id)
    assert info["JobState"] == "COMPLETED" and info["JobName"] == "siambench:hello"
    deadline = time.monotonic() + 10  # jobcomp is written when the controller records the end
    while not any(r.get("JobId") == handle.job_id for r in slurm_cluster.jobcomp()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {"JobState": "COMPLETED"}.items() <= next(r for r in slurm_cluster.jobcomp()
                                                      if r.get("JobId") == handle.job_id).items()
    assert Path(handle.log + ".sbatch").read_text().startswith("#!/bin/bash\n#SBATCH --job-name=siambench:hello")


def test_failing_command_is_failed_with_its_exit_code(slurm_cluster, tmp_path):
    launcher = SlurmLauncher()
    cmd = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    handle = launcher.submit("fails", cmd, log=tmp_path / "fails.log", cwd=tmp_path)
    status = wait_for(launcher, handle, slurm_cluster, {JobState.FAILED})
    assert status.reason == "exit code 3"
    assert "boom" in Path(handle.log).read_text()
    assert slurm_cluster.job_info(handle.job_id)["JobState"] == "FAILED"


def test_cancel_running_job(slurm_cluster, tmp_path):
    launcher = SlurmLauncher()
    handle, count = counter_job(launcher, tmp_path, stop_at=99)
    wait_for(launcher, handle, slurm_cluster, {JobState.RUNNING}, until=count.exists)
    launcher.cancel(handle)
    status = wait_for(launcher, handle, slurm_cluster, {JobState.FAILED})
    assert status.reason == "cancelled"
    deadline = time.monotonic() + 15
    while slurm_cluster.job_info(handle.job_id).get("JobState") != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert slurm_cluster.job_info(handle.job_id)["JobState"] == "CANCELLED"
    assert count.read_text() == "1"


def test_scontrol_requeue_runs_again_then_done(slurm_cluster, tmp_path):
    launcher = SlurmLauncher(max_requeues=3)
    handle, count = counter_job(launcher, tmp_path, stop_at=2)
    wait_for(launcher, handle, slurm_cluster, {JobState.RUNNING}, until=count.exists)
    slurm_cluster.run("scontrol", "requeue", handle.job_id)
    status = wait_for(launcher, handle, slurm_cluster, {JobState.REQUEUED})
    assert status.requeues == 1
    release(slurm_cluster, handle.job_id)
    status = wait_for(launcher, handle, slurm_cluster, {JobState.DONE})
    assert status.requeues == 1 and count.read_text() == "2"
    log = Path(handle.log).read_text()
    assert "run 1 SLURM_RESTART_COUNT=-" in log and "run 2 SLURM_RESTART_COUNT=1" in log


def test_time_limit_signal_requeues_until_max_then_fails(slurm_cluster, tmp_path):
    """The warning before the time limit (sbatch --signal=B:USR1, sent here with scancel) stops the
    command, requeues the job once (max_requeues=1), and at the second warning fails it."""
    launcher = SlurmLauncher(max_requeues=1)
    handle, count = counter_job(launcher, tmp_path, stop_at=99)
    wait_for(launcher, handle, slurm_cluster, {JobState.RUNNING}, until=count.exists)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", handle.job_id)
    assert wait_for(launcher, handle, slurm_cluster, {JobState.REQUEUED}).requeues == 1
    release(slurm_cluster, handle.job_id)
    wait_for(launcher, handle, slurm_cluster, {JobState.RUNNING}, until=lambda: count.read_text() == "2")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", handle.job_id)
    status = wait_for(launcher, handle, slurm_cluster, {JobState.FAILED})
    assert status.reason == "time limit reached after 1 requeues (LAUNCHER.SLURM.MAX_REQUEUES=1)"
    assert count.read_text() == "2"


RANK_TERM = """
import os, signal, sys, time
rank, restart = os.environ["SLURM_PROCID"], os.environ.get("SLURM_RESTART_COUNT", "0")
def on_term(*_):
    print(f"rank {rank} got SIGTERM in run {restart}", flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, on_term)
print(f"rank {rank} started run {restart}", flush=True)
while restart == "0":
    time.sleep(0.2)
"""


def test_time_limit_signal_reaches_every_rank_of_a_two_node_job(slurm_cluster, tmp_path):
    launcher = SlurmLauncher()
    handle = launcher.submit("ranks", [sys.executable, "-c", RANK_TERM], log=tmp_path / "ranks.log", cwd=tmp_path,
                             resources=Resources(nodes=2))
    log = Path(handle.log)
    wait_for(launcher, handle, slurm_cluster, {JobState.RUNNING},
             until=lambda: log.exists() and log.read_text().count("started run 0") == 2)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", handle.job_id)
    wait_for(launcher, handle, slurm_cluster, {JobState.REQUEUED})
    release(slurm_cluster, handle.job_id)
    assert wait_for(launcher, handle, slurm_cluster, {JobState.DONE}).requeues == 1
    text = log.read_text()
    assert "rank 0 got SIGTERM in run 0" in text and "rank 1 got SIGTERM in run 0" in text
    assert "rank 0 started run 1" in text and "rank 1 started run 1" in text


def test_reattach_from_saved_handle_submits_nothing(slurm_cluster, tmp_path):
    handle, count = counter_job(SlurmLauncher(), tmp_path, stop_at=99, name="reattach")
    saved = json.dumps(handle.to_json())
    other = SlurmLauncher()  # a restarted runner
    again = other.attach(json.loads(saved))
    assert again == handle
    wait_for(other, again, slurm_cluster, {JobState.RUNNING}, until=count.exists)
    jobs = slurm_cluster.run("squeue", "-h", "-n", "siambench:reattach", "-o", "%i").stdout.split()
    assert jobs == [handle.job_id]
    other.cancel(again)
    assert wait_for(SlurmLauncher(), handle, slurm_cluster, {JobState.FAILED}).reason == "cancelled"
    with pytest.raises(ValueError, match="not a saved job handle"):
        other.attach({"job_id": "1"})


def test_find_a_job_whose_handle_was_lost(slurm_cluster, tmp_path):
    """The runner died between sbatch and saving the handle: find() returns the job by its script."""
    launcher = SlurmLauncher()
    handle, count = counter_job(launcher, tmp_path, stop_at=99, name="lost")
    (tmp_path / "elsewhere").mkdir()
    other, _ = counter_job(launcher, tmp_path / "elsewhere", stop_at=99, name="lost")  # same step, other dir
    found = launcher.find("lost", Path(handle.log))
    assert [h.job_id for h in found] == [handle.job_id] and found[0].log == handle.log
    for h in (handle, other):
        launcher.cancel(h)
    deadline = time.monotonic() + TIMEOUT_S
    while launcher.find("lost", Path(handle.log)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert launcher.find("lost", Path(handle.log)) == []


def test_two_node_job_runs_one_task_per_node(slurm_cluster, tmp_path):
    launcher = SlurmLauncher()
    cmd = [sys.executable, "-c", "import os; print('rank', os.environ['SLURM_PROCID'], os.environ['SLURMD_NODENAME'],"
           " os.environ['SLURM_NTASKS'], flush=True)"]
    handle = launcher.submit("two", cmd, log=tmp_path / "two.log", cwd=tmp_path, resources=Resources(nodes=2))
    wait_for(launcher, handle, slurm_cluster, {JobState.DONE})
    log = Path(handle.log).read_text()
    first, second = sorted(slurm_cluster.nodes)  # SLURM's order: by name
    assert f"rank 0 {first} 2" in log and f"rank 1 {second} 2" in log
    assert slurm_cluster.job_info(handle.job_id)["NumNodes"] == "2"


def test_two_node_job_joins_one_process_group_through_dist(slurm_cluster, tmp_path):
    """pretrain/utils/dist.py's SLURM path across the two slurmd: one gloo group of 2 ranks."""
    code = ("import torch, torch.distributed as d; from siambench.pretrain.utils import dist; "
            "info = dist.init_distributed_mode(device='cpu'); t = torch.tensor([info.rank + 1.0]); "
            "d.all_reduce(t); print('rank', info.rank, 'of', info.world_size, 'sum', t.item(), flush=True); "
            "d.destroy_process_group()")
    port = free_port()
    handle = SlurmLauncher().submit("gloo", [sys.executable, "-c", code], log=tmp_path / "gloo.log", cwd=tmp_path,
                                    env={"MASTER_PORT": str(port)}, resources=Resources(nodes=2))
    wait_for(SlurmLauncher(), handle, slurm_cluster, {JobState.DONE}, timeout=90)
    log = Path(handle.log).read_text()
    assert "rank 0 of 2 sum 3.0" in log and "rank 1 of 2 sum 3.0" in log


def test_sbatch_refusal_names_the_problem(slurm_cluster, tmp_path):
    with pytest.raises(LauncherError, match="sbatch --parsable failed: .*[Ii]nvalid partition"):
        SlurmLauncher().submit("bad", ["true"], log=tmp_path / "bad.log", resources=Resources(partition="nope"))


def test_cluster_answers_srun(slurm_cluster):
    res = subprocess.run(["srun", "-N2", "-n2", "hostname"], capture_output=True, text=True, timeout=30,
                         env=slurm_cluster.env)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.split()) == 2


def test_job_unknown_to_the_controller_is_failed(slurm_cluster, tmp_path):
    handle = JobHandle(launcher="slurm", job_id="999999", name="gone", log=str(tmp_path / "gone.log"))
    status = SlurmLauncher().poll(handle)
    assert status.state == JobState.FAILED
    assert status.reason == "SLURM no longer knows job 999999 and the job wrote no result"


def test_cluster_stop_leaves_no_process_behind(slurm_cluster, tmp_path):
    """A second cluster with a job still running: stop() ends the job and every daemon."""
    module = sys.modules[type(slurm_cluster).__module__]
    other = module.SlurmCluster(tmp_path / "c", nodes=slurm_cluster.nodes, cpus_per_node=slurm_cluster.cpus_per_node)
    try:
        other.start()
        script = tmp_path / "sleep.sh"
        script.write_text("#!/bin/bash\nsleep 300\n")
        job_id = other.run("sbatch", "--parsable", f"--output={tmp_path / 'sleep.log'}", str(script)).stdout.strip()
        deadline = time.monotonic() + TIMEOUT_S
        while other.job_info(job_id).get("JobState") != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert other.leftover_pids()  # daemons and the job carry its SLURM_CONF
    finally:
        other.stop()
    assert other.leftover_pids() == []
