"""Launchers without a cluster: the LAUNCHER config, sbatch options, batch script, status rules."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fvcore.common.config import CfgNode

from siambench.benchmarks.launchers import JobHandle, JobState, LauncherError, Resources, SlurmLauncher
from siambench.benchmarks.launchers.config import (add_launcher_config, build_slurm_launcher,
                                                   check_launcher_config, slurm_resources)
from siambench.benchmarks.launchers.slurm import (Event, decide_status, parse_duration, parse_scontrol,
                                                  read_events, render_script, sbatch_options)
from siambench.pretrain.utils.config import ConfigError


def launcher_cfg(*opts: str) -> CfgNode:
    cfg = add_launcher_config(CfgNode())
    cfg.merge_from_list(list(opts))
    return cfg


def test_defaults_are_local_with_documented_slurm_values():
    cfg = launcher_cfg()
    check_launcher_config(cfg, "p.yaml")
    s = cfg.LAUNCHER.SLURM
    assert cfg.LAUNCHER.NAME == "local"
    assert (s.GPUS_PER_NODE, s.CPUS_PER_GPU, s.MEM_PER_GPU_GB) == (8, 10, 40)
    assert (s.MAX_REQUEUES, s.SIGNAL_DELAY_S, s.MAX_JOBS, s.TIME_LIMIT_MIN) == (3, 120, 0, 0)
    lines = Path(sys.modules[add_launcher_config.__module__].__file__).read_text().splitlines()
    for key in s:  # every key explained where it is defined: on its line or the one above
        i = next(i for i, ln in enumerate(lines) if f"s.{key} = " in ln)
        assert "  # " in lines[i] or lines[i - 1].strip().startswith("# "), key


@pytest.mark.parametrize("opts, message", [
    (("LAUNCHER.NAME", "pbs"), "LAUNCHER.NAME 'pbs' is not one of local, slurm"),
    (("LAUNCHER.SLURM.MAX_REQUEUES", -1), "LAUNCHER.SLURM.MAX_REQUEUES must be an integer >= 0"),
    (("LAUNCHER.SLURM.EXTRA", ["exclusive"]), "LAUNCHER.SLURM.EXTRA entries are sbatch options"),
    (("LAUNCHER.SLURM.TIME_LIMIT_MIN", 2),
     "LAUNCHER.SLURM.SIGNAL_DELAY_S \\(120 s\\) must be shorter than TIME_LIMIT_MIN \\(2 min\\)"),
])
def test_bad_values_name_the_key(opts, message):
    with pytest.raises(ConfigError, match="^p.yaml: " + message):
        check_launcher_config(launcher_cfg(*opts), "p.yaml")


def test_yaml_values_merge_with_their_types(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("LAUNCHER:\n  NAME: slurm\n  SLURM:\n    MEM_PER_GPU_GB: 80\n    EXTRA: ['--exclusive']\n")
    cfg = launcher_cfg()
    cfg.merge_from_file(str(path))
    check_launcher_config(cfg, "p.yaml")
    s = cfg.LAUNCHER.SLURM
    assert (cfg.LAUNCHER.NAME, s.MEM_PER_GPU_GB, s.EXTRA) == ("slurm", 80, ["--exclusive"])


def test_step_resources_from_config():
    cfg = launcher_cfg("LAUNCHER.SLURM.PARTITION", "gpu", "LAUNCHER.SLURM.TIME_LIMIT_MIN", 600,
                       "LAUNCHER.SLURM.EXTRA", ["--exclusive"], "LAUNCHER.SLURM.GPUS_PER_NODE", 4)
    gpu = slurm_resources(cfg, nodes=2, tasks_per_node=4, time_min=900)
    assert (gpu.nodes, gpu.num_tasks, gpu.gpus_per_node, gpu.cpus_per_gpu, gpu.mem_per_gpu_gb) == (2, 8, 4, 10, 40)
    assert (gpu.time_min, gpu.partition, gpu.extra) == (600, "gpu", ("--exclusive",))  # capped by TIME_LIMIT_MIN
    assert slurm_resources(cfg, time_min=30).time_min == 30
    assert slurm_resources(cfg).time_min == 600
    cpu = slurm_resources(cfg, gpus=False)
    assert (cpu.gpus_per_node, cpu.cpus_per_task, cpu.mem_gb) == (0, 10, 40)
    launcher = build_slurm_launcher(launcher_cfg("LAUNCHER.SLURM.MAX_JOBS", 16))
    assert (launcher.max_jobs, launcher.max_requeues, launcher.signal_delay_s) == (16, 3, 120)


def test_sbatch_options_gpu_and_cpu():
    gpu = Resources(nodes=2, tasks_per_node=8, gpus_per_node=8, cpus_per_gpu=10, mem_per_gpu_gb=40, time_min=90,
                    partition="p", account="a", qos="q", constraint="volta32gb", extra=("--exclusive",))
    opts = sbatch_options(gpu, name="siambench:x", log=Path("/o/x.log"), cwd=Path("/o"), signal_delay_s=120)
    assert opts == ["--job-name=siambench:x", "--output=/o/x.log", "--open-mode=append", "--chdir=/o", "--nodes=2",
                    "--ntasks-per-node=8", "--requeue", "--signal=B:USR1@120", "--gpus-per-node=8",
                    "--cpus-per-gpu=10", "--mem-per-gpu=40960M", "--time=90", "--partition=p", "--account=a",
                    "--qos=q", "--constraint=volta32gb", "--exclusive"]
    cpu = sbatch_options(Resources(cpus_per_task=4, mem_gb=1.5), name="n", log=Path("l"), cwd=Path("."),
                         signal_delay_s=60)
    assert cpu[-2:] == ["--cpus-per-task=4", "--mem=1536M"] and not any("gpu" in o for o in cpu)


def test_batch_script_is_valid_bash_and_quotes_everything(tmp_path):
    argv = ["python", "-m", "siambench.benchmarks.cli", "pretrain", "OUTPUT_DIR", "a dir/with 'quotes'"]
    one = render_script(argv, options=["--nodes=1", "--output=/a b/x.log", "--exclusive"], events=tmp_path / "e v",
                        env={"X": "$HOME; rm -rf /"},
                        max_requeues=2, num_tasks=1)
    many = render_script(argv, options=[], events=tmp_path / "e", env={}, max_requeues=2, num_tasks=4)
    for text in (one, many):
        path = tmp_path / "s.sh"
        path.write_text(text)
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert "export X='$HOME; rm -rf /'" in one and "max_requeues=2" in one
    assert "#SBATCH --nodes=1\n#SBATCH --output='/a b/x.log'\n#SBATCH --exclusive\n" in one
    assert "command=(python -m" in one and "srun" not in one.split("command=")[1].split("\n")[0]
    assert "command=(srun --kill-on-bad-exit=1 python" in many


def test_events_of_one_job_skip_torn_and_foreign_lines(tmp_path):
    path = tmp_path / "x.log.events"
    path.write_text("7 100 0 start node1\n8 100 0 start node2\n7 101 0 exit 143\n7 1\n7 102 0 requeue time limit\n"
                    "7 150 1 start node1\n7 160 1 exit 0\n7 160 1 done\n7 16")
    events = read_events(path, "7")
    assert [(e.restarts, e.kind, e.detail) for e in events] == [
        (0, "start", "node1"), (0, "exit", "143"), (0, "requeue", "time limit"), (1, "start", "node1"),
        (1, "exit", "0"), (1, "done", "")]
    assert read_events(tmp_path / "missing", "7") == []


NOW = -1.0  # an event stamped when the test runs (parameters are built at collection, minutes earlier)


def ev(restarts: int, kind: str, detail: str = "", t: float = 100.0) -> Event:
    return Event(t, restarts, kind, detail)


@pytest.mark.parametrize("info, events, state, reason", [
    ({"JobState": "PENDING", "Restarts": "0", "Reason": "Priority"}, [], JobState.PENDING, "Priority"),
    ({"JobState": "PENDING", "Restarts": "1", "Reason": "BeginTime"}, [ev(0, "start", "n"), ev(0, "requeue")],
     JobState.REQUEUED, "BeginTime"),
    ({"JobState": "RUNNING", "Restarts": "1"}, [ev(0, "failed", "old run"), ev(1, "start", "n")], JobState.RUNNING, ""),
    ({"JobState": "COMPLETING", "Restarts": "0"}, [ev(0, "exit", "0"), ev(0, "done")], JobState.DONE, ""),
    ({"JobState": "CANCELLED", "Restarts": "0"}, [ev(0, "stopped")], JobState.FAILED, "cancelled"),
    ({"JobState": "TIMEOUT", "Restarts": "0", "Reason": "TimeLimit", "ExitCode": "0:15"}, [], JobState.FAILED,
     "TIMEOUT (reason TimeLimit, exit code 0:15)"),
    ({}, [ev(0, "start", "n"), ev(0, "exit", "2")], JobState.FAILED, "exit code 2"),
    # requeued a moment ago: the controller still shows the stopped run's end, with the new restart count
    ({"JobState": "FAILED", "Restarts": "1", "Reason": "NonZeroExitCode", "ExitCode": "1:0"},
     [ev(0, "start", "n"), ev(0, "exit", "143", t=NOW), ev(0, "stopped", t=NOW)],
     JobState.REQUEUED, "requeue in progress"),
    ({"JobState": "COMPLETED", "Restarts": "1"}, [ev(0, "requeue", "time limit", t=NOW)],
     JobState.REQUEUED, "requeue in progress"),
    ({"JobState": "FAILED", "Restarts": "1", "Reason": "NonZeroExitCode", "ExitCode": "1:0"},
     [ev(0, "stopped", t=100.0)], JobState.FAILED, "FAILED (reason NonZeroExitCode, exit code 1:0)"),
    ({}, [], JobState.FAILED, "SLURM no longer knows job 5 and the job wrote no result"),
    ({}, [ev(2, "failed", "requeued 2 times, more than the 1 allowed")], JobState.FAILED,
     "requeued 2 times, more than the 1 allowed"),
])
def test_status_rules(info, events, state, reason):
    now = time.time()
    events = [dataclasses.replace(e, time=now) if e.time == NOW else e for e in events]
    status = decide_status(info, events, "5")
    assert (status.state, status.reason) == (state, reason)


def test_status_fields_from_scontrol():
    line = ("JobId=12 JobName=siambench:x JobState=RUNNING Reason=None Restarts=2 RunTime=1-02:03:04 "
            "BatchHost=gpu17 NodeList=gpu[17-18]\nJobId=13 JobState=PENDING\n")
    jobs = parse_scontrol(line)
    assert set(jobs) == {"12", "13"}
    status = decide_status(jobs["12"], [], "12")
    assert (status.requeues, status.node, status.elapsed_s) == (2, "gpu17", 93784.0)
    assert json.loads(json.dumps(status.to_json()))["state"] == "running"
    assert parse_duration("05:06") == 306.0 and parse_duration("INVALID") is None


def test_handle_round_trip_and_attach_checks_the_launcher():
    handle = JobHandle(launcher="slurm", job_id="42", name="pretrain_x", log="/o/logs/x.log", submitted_at=1.5)
    data = json.loads(json.dumps(handle.to_json()))
    assert SlurmLauncher().attach(data) == handle
    with pytest.raises(ValueError, match="submitted by the 'local' launcher, not 'slurm'"):
        SlurmLauncher().attach({**data, "launcher": "local"})


def test_cluster_skip_is_one_line_naming_the_install(monkeypatch):
    cluster = sys.modules["siambench_tests_slurm_cluster"]
    monkeypatch.setattr(cluster, "_which", lambda name: None)
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    reason = cluster._skip_reason()
    assert "\n" not in reason and reason.startswith("SLURM tests skipped: munged, slurmctld")
    assert "apt-get install -y slurm-wlm munge" in reason


def test_without_slurm_commands_the_error_says_where_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LauncherError, match="^sbatch not found: LAUNCHER.NAME slurm runs on a SLURM cluster"):
        SlurmLauncher().submit("x", ["true"], log=tmp_path / "x.log")
