"""`siambench run` with LAUNCHER.NAME slurm against a real SLURM (the ``slurm_cluster`` fixture).

The tiny pipeline of the quick demo (width-8 R50, 1 pretraining step, 3 detection iterations)
plus a scratch entry, so that one transfer step needs nothing and runs beside the pretraining:
4 steps, 4 jobs. Every job asks 1 CPU of the 2 x 2 the cluster has, no GPU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siambench.benchmarks.cli import main as cli_main
from siambench.benchmarks.launchers.slurm import read_events
from siambench.benchmarks.pipeline.pipeline import main as run_main

TIMEOUT_S = 300
TRANSFER_OPTS = """[SOLVER.MAX_ITER, 3, SOLVER.STEPS, "(2,)", SOLVER.WARMUP_ITERS, 1, SOLVER.CHECKPOINT_PERIOD, 100,
         SOLVER.IMS_PER_BATCH, 2, TEST.PRECISE_BN.NUM_ITER, 1, MODEL.RPN.POST_NMS_TOPK_TEST, 20,
         INPUT.MIN_SIZE_TEST, 96, MODEL.RESNETS.DEPTH, 50, MODEL.RESNETS.STEM_OUT_CHANNELS, 8,
         MODEL.RESNETS.RES2_OUT_CHANNELS, 32, MODEL.RESNETS.WIDTH_PER_GROUP, 8]"""
HEAD = sys.modules["siambench_tests_slurm_cluster"].PIPELINE_HEAD + \
    "TRANSFER: {{TASKS: [synth_voc07], TRIALS: 1, OPTS: " + TRANSFER_OPTS + "}}\n"  # loaded by tests/conftest.py
SIMSIAM = """  simsiam:
    KIND: simsiam
    LABEL: SimSiam (ours)
    CONFIG: configs/pretrain/synth_r18.yaml
    OPTS: [SOLVER.EPOCHS, 1, SOLVER.BATCH_SIZE, 8, TRAIN.MAX_STEPS_PER_EPOCH, 1, MONITOR.KNN_PERIOD, 0,
           MODEL.DIM, 64, MODEL.PRED_DIM, 16, MONITOR.TENSORBOARD, False{extra}]
"""
TINY = HEAD + "ENTRIES:\n" + SIMSIAM + "  scr: {{KIND: scratch, LABEL: scratch}}\n"


@pytest.fixture
def one_thread(monkeypatch):
    """Jobs inherit the submitting environment: one torch thread each (4 jobs on 4 CPUs of 2 cores)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")


def write_pipeline(tmp_path: Path, root: Path, name: str, text: str = TINY, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(out=tmp_path / name, root=root, extra=extra))
    return path


def state_of(out: Path) -> dict:
    return json.loads((out / "pipeline_state.json").read_text())


def job_ids(out: Path) -> dict[str, str]:
    return {k: s["job"]["job_id"] for k, s in state_of(out)["steps"].items() if "job" in s}


def span(out: Path, key: str, job_id: str) -> tuple[float, float]:
    """(first start, last exit) of a step's job, from its events file."""
    events = read_events(out / "logs" / f"{key.replace('/', '.')}.log.events", job_id)
    return (min(e.time for e in events if e.kind == "start"), max(e.time for e in events if e.kind == "exit"))


def table_rows(out: Path) -> list[str]:
    """The rows of the printed transfer table (numbers and labels; no paths or times)."""
    return [line for line in (out / "tables.md").read_text().splitlines() if line.startswith("| ")]


def finished_jobs(cluster, prefix: str = "siambench:") -> list[dict]:
    deadline = time.monotonic() + 10  # jobcomp lines come when the controller records each end
    while time.monotonic() < deadline:
        done = [r for r in cluster.jobcomp() if r.get("Name", r.get("JobName", "")).startswith(prefix)]
        if done:
            return done
        time.sleep(0.2)
    return []


@pytest.mark.slow
def test_tiny_pipeline_through_slurm_equals_local(slurm_cluster, synth_root, tmp_path, one_thread, capsys):
    t0 = time.monotonic()
    assert run_main([str(write_pipeline(tmp_path, synth_root, "local")), "--launcher", "local"]) == 0
    local_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert run_main([str(write_pipeline(tmp_path, synth_root, "slurm"))]) == 0, capsys.readouterr()
    slurm_s = time.monotonic() - t0
    out = tmp_path / "slurm"
    assert table_rows(out) == table_rows(tmp_path / "local") and table_rows(out)
    for key in ("simsiam", "scr"):
        trial = f"{key}/transfer/synth_voc07/trial0/results.json"
        assert json.loads((out / trial).read_text())["results"] == \
            json.loads((tmp_path / "local" / trial).read_text())["results"]
    ids = job_ids(out)
    assert len(ids) == 4 and len(set(ids.values())) == 4  # every step its own job
    states = {slurm_cluster.job_info(i).get("JobState") for i in ids.values()}
    assert states == {"COMPLETED"}, states
    pre, scr = span(out, "simsiam/pretrain", ids["simsiam/pretrain"]), span(out, "scr/transfer/synth_voc07/trial0",
                                                                            ids["scr/transfer/synth_voc07/trial0"])
    assert scr[0] < pre[1] and pre[0] < scr[1]  # independent steps ran at the same time
    print(f"\nMEASURED tiny pipeline: local {local_s:.1f} s, slurm {slurm_s:.1f} s, {len(ids)} jobs")
    assert cli_main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 done" in printed and ids["simsiam/pretrain"] in printed


def wait_state(out: Path, until, timeout: float = TIMEOUT_S, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if until(state_of(out)):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    pytest.fail(f"pipeline state never {what}: {state_of(out) if (out / 'pipeline_state.json').exists() else '-'}")


@pytest.mark.slow
def test_runner_killed_then_started_again_submits_nothing_twice(slurm_cluster, synth_root, tmp_path, one_thread):
    pipe = write_pipeline(tmp_path, synth_root, "kill")
    out = tmp_path / "kill"
    runner = subprocess.Popen([sys.executable, "-m", "siambench.benchmarks.cli", "run", str(pipe)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_state(out, lambda s: len([r for r in s["steps"].values() if r.get("job")]) >= 2, what="with 2 jobs")
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    before = job_ids(out)
    assert set(before) >= {"simsiam/pretrain", "scr/transfer/synth_voc07/trial0"}
    assert run_main([str(pipe)]) == 0
    after = job_ids(out)
    assert {k: after[k] for k in before} == before  # re-attached: the same jobs
    assert len(set(after.values())) == 4
    names = [r.get("Name", r.get("JobName")) for r in finished_jobs(slurm_cluster)
             if r.get("JobId") in set(after.values())]
    assert len(names) == 4 and len(set(names)) == 4  # one job per step, none submitted twice
    ours = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, env=slurm_cluster.env)
    assert "siambench:" not in ours.stdout


def test_failing_step_blocks_its_dependents_and_the_others_finish(slurm_cluster, synth_root, tmp_path, one_thread):
    text = HEAD + "ENTRIES:\n" + SIMSIAM + \
        "  rnd: {{KIND: random_init, CONFIG: configs/pretrain/synth_r18.yaml, TRANSFER: False,\n" \
        "        OPTS: [SOLVER.BATCH_SIZE, 8, MODEL.DIM, 64, MODEL.PRED_DIM, 16, MONITOR.TENSORBOARD, False]}}\n"
    pipe = write_pipeline(tmp_path, synth_root, "bad", text, extra=", MODEL.NO_SUCH_KEY, 1")
    assert run_main([str(pipe)]) == 1
    steps = state_of(tmp_path / "bad")["steps"]
    assert steps["simsiam/pretrain"]["status"] == "failed" and "exit code 2" in steps["simsiam/pretrain"]["reason"]
    assert steps["simsiam/convert"]["status"] == "blocked"
    assert steps["simsiam/transfer/synth_voc07/trial0"]["status"] == "blocked"
    assert steps["rnd/pretrain"]["status"] == "done" and "job" in steps["rnd/pretrain"]
    assert "job" not in steps["simsiam/convert"]  # never submitted


def test_detach_status_and_cancel(slurm_cluster, synth_root, tmp_path, one_thread, capsys):
    pipe = write_pipeline(tmp_path, synth_root, "det")
    out = tmp_path / "det"
    assert run_main([str(pipe), "--detach"]) == 0
    assert "4 job(s) submitted" in capsys.readouterr().out
    ids = job_ids(out)
    assert len(ids) == 4
    dep = slurm_cluster.job_info(ids["simsiam/convert"]).get("Dependency", "")
    assert dep.startswith(f"afterok:{ids['simsiam/pretrain']}"), dep
    assert cli_main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(i in printed for i in ids.values()) and "simsiam/convert" in printed
    assert cli_main(["cancel", str(out), "simsiam"]) == 0
    printed = capsys.readouterr().out
    assert all(f"cancelled job {ids[k]}" in printed for k in ids if k.startswith("simsiam/"))
    steps = state_of(out)["steps"]
    assert {steps[k]["reason"] for k in ids if k.startswith("simsiam/")} == {"cancelled"}
    assert cli_main(["cancel", str(out), "scr/transfer/synth_voc07"]) == 0  # a task: its trials' jobs
    assert f"cancelled job {ids['scr/transfer/synth_voc07/trial0']}" in capsys.readouterr().out
    assert cli_main(["cancel", str(out)]) == 0  # nothing left in flight
    assert cli_main(["status", str(out)]) == 0
    assert "4 failed" in capsys.readouterr().out
    assert cli_main(["status", str(tmp_path / "nothing")]) == 2
    assert "pipeline_state.json: not found" in capsys.readouterr().err
